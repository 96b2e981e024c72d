"""The ``local-bridge`` command."""
from __future__ import annotations

import json
import sys

import click

from .catalog import CATALOG
from .config import ENV_PREFIX, ConfigError, check_bind_allowed, load_settings


@click.group()
@click.version_option(package_name="local-bridge")
def main() -> None:
    """local_bridge: the real-time event bus of a photo workflow."""


@main.command()
@click.option("--host", help=f"bind address [{ENV_PREFIX}HOST, default 127.0.0.1]")
@click.option("--port", type=int, help=f"bind port [{ENV_PREFIX}PORT, default 5100]")
@click.option("--worker-class", type=click.Choice(["gevent", "gthread"]),
              help=f"gunicorn worker [{ENV_PREFIX}WORKER_CLASS, default gevent]")
@click.option("--access-log/--no-access-log", default=False, help="log every HTTP request")
def serve(host: str | None, port: int | None, worker_class: str | None, access_log: bool) -> None:
    """Run the server on gunicorn until SIGTERM or SIGINT."""
    overrides = {k: v for k, v in {"HOST": host, "PORT": port, "WORKER_CLASS": worker_class}.items()
                 if v is not None}
    try:
        settings = load_settings(overrides)
        check_bind_allowed(settings)
        if settings.auth_enabled:
            raise ConfigError(f"{ENV_PREFIX}AUTH=token is not available in this release; use none")
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    from .server import BridgeServer

    BridgeServer(settings, overrides, access_log=access_log).run()


@main.group()
def db() -> None:
    """Database schema."""


@db.command()
def upgrade() -> None:
    """Apply schema migrations to LOCAL_BRIDGE_DATABASE_URL (default: the SQLite file in the
    application's instance folder)."""
    from . import migrate
    from .app import database_url
    from .db import Database

    database = Database(database_url(load_settings()))
    try:
        migrate.upgrade(database.engine)
        click.echo(f"{database.engine.url.render_as_string()}: "
                   f"revision {migrate.current_revision(database.engine)}")
    finally:
        database.close()


def _base_url(host: str | None, port: int | None) -> str:
    settings = load_settings({k: v for k, v in {"HOST": host, "PORT": port}.items() if v})
    return f"{settings.HOST}:{settings.PORT}"


@main.command()
@click.option("--channel", "channels", multiple=True, default=["jobs"], show_default=True,
              help="channel to follow (repeatable)")
@click.option("--client-type", default="gui", show_default=True)
@click.option("--client-name", default="local-bridge listen", show_default=True)
@click.option("--host")
@click.option("--port", type=int)
def listen(channels: tuple[str, ...], client_type: str, client_name: str, host: str | None,
           port: int | None) -> None:
    """Connect to the bus and print events live, one JSON line each."""
    from .client import BusClient, BusError

    try:
        with BusClient(f"ws://{_base_url(host, port)}/ws") as bus:
            bus.register(client_type, client_name)
            bus.subscribe(list(channels))
            for event in bus.events():
                click.echo(json.dumps(event, ensure_ascii=False))
            raise click.ClickException(f"connection closed ({bus.close_code})")
    except (BusError, OSError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("event_type")
@click.argument("fields", nargs=-1)
@click.option("--channel", help="channel or sub-channel (default: the type's own; everyone for custom types)")
@click.option("--host")
@click.option("--port", type=int)
def publish(event_type: str, fields: tuple[str, ...], channel: str | None, host: str | None,
            port: int | None) -> None:
    """Publish an event: FIELDS are key=value (values parsed as JSON when they can be)."""
    import urllib.error
    import urllib.request

    data = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="FIELDS")
        try:
            data[key] = json.loads(value)
        except ValueError:
            data[key] = value
    body: dict = {"type": event_type, "data": data}
    if channel:
        body["channel"] = channel
    elif event_type in CATALOG:
        body["channel"] = CATALOG[event_type][0]
    request = urllib.request.Request(f"http://{_base_url(host, port)}/api/websocket/broadcast",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            click.echo(response.read().decode())
    except urllib.error.HTTPError as exc:
        raise click.ClickException(exc.read().decode()) from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
