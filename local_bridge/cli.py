"""The ``local-bridge`` command."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator

import click

from .auth.cli import CONNECTED_TOKEN_TTL, TOKEN_ENV, TOKEN_HELP, token, token_for
from .catalog import CATALOG
from .config import (
    ENV_PREFIX,
    SETTING_NAMES,
    ConfigError,
    Settings,
    check_bind_allowed,
    load_settings,
)
from .protocol import CHANNELS, CLIENT_TYPE_PATTERN, is_valid_channel


@click.group()
@click.version_option(package_name="local-bridge")
def main() -> None:
    """local_bridge: the real-time event bus of a photo workflow."""


#: Settings without a generated flag: those with a hand-written one, and the secret key, which
#: must not appear in the process list (``ps`` shows every process's arguments to every user).
_NO_GENERATED_FLAG = frozenset({"HOST", "PORT", "WORKER_CLASS", "SECRET_KEY"})


def setting_options(command):
    """Give ``command`` a ``--kebab-name`` flag for every setting (API.md: "environment, or the
    CLI flag of the same name"); values are checked by :func:`load_settings` like the
    environment's."""
    defaults = Settings()
    for name in reversed(SETTING_NAMES):
        if name in _NO_GENERATED_FLAG:
            continue
        default = getattr(defaults, name)
        if isinstance(default, tuple):
            default = ",".join(default) or "see docs"
        elif default is None:
            default = "unset"
        flag = "--" + name.lower().replace("_", "-")
        command = click.option(
            flag, name.lower(), metavar="VALUE", help=f"[{ENV_PREFIX}{name}, default {default}]"
        )(command)
    return command


@main.command()
@click.option("--host", help=f"bind address [{ENV_PREFIX}HOST, default 127.0.0.1]")
@click.option("--port", type=int, help=f"bind port [{ENV_PREFIX}PORT, default 5100]")
@click.option(
    "--worker-class",
    type=click.Choice(["gevent", "gthread"]),
    help=f"gunicorn worker [{ENV_PREFIX}WORKER_CLASS, default gevent]",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="log every HTTP request and WebSocket connection (logger local_bridge.access, info)",
)
@click.option(
    "--insecure",
    is_flag=True,
    help=f"allow a non-loopback --host with {ENV_PREFIX}AUTH=none (anyone who reaches the "
    "port can do anything)",
)
@setting_options
def serve(
    host: str | None,
    port: int | None,
    worker_class: str | None,
    access_log: bool,
    insecure: bool,
    **settings_flags: str | None,
) -> None:
    """Run the server on gunicorn until SIGTERM or SIGINT.

    Every setting has a flag named after its variable (--max-queue for LOCAL_BRIDGE_MAX_QUEUE);
    a flag wins over the environment.
    """
    given = {"HOST": host, "PORT": port, "WORKER_CLASS": worker_class}
    given.update((name.upper(), value) for name, value in settings_flags.items())
    overrides = {name: value for name, value in given.items() if value is not None}
    try:
        settings = load_settings(overrides)
        check_bind_allowed(settings, insecure)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    from .gunicorn_app import BridgeServer
    from .observability.logs import configure_logging

    # The server's own records (a client dropped, a handler failed, the access log) from
    # LOCAL_BRIDGE_LOG_LEVEL up, in LOCAL_BRIDGE_LOG_FORMAT; the worker process inherits this
    # when gunicorn forks it.
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    BridgeServer(settings, overrides, access_log=access_log).run()


@main.group()
def db() -> None:
    """Database schema."""


@db.command()
def upgrade() -> None:
    """Apply schema migrations to LOCAL_BRIDGE_DATABASE_URL (default: the SQLite file in the
    application's instance folder)."""
    from sqlalchemy.exc import SQLAlchemyError

    from . import migrate
    from .app import database_url
    from .db import Database

    def one_line(exc: Exception) -> str:
        lines = str(exc).strip().splitlines()
        return lines[0][:300] if lines else exc.__class__.__name__

    try:
        database = Database(database_url(load_settings()))
    except (ConfigError, SQLAlchemyError) as exc:
        raise click.ClickException(f"cannot migrate: {one_line(exc)}") from None
    except ImportError as exc:  # the URL names a driver that is not installed
        raise click.ClickException(
            f"cannot migrate: the database driver is not installed: {one_line(exc)}"
        ) from None
    where = database.engine.url.render_as_string()
    try:
        revision = migrate.upgrade(database.engine)
    except (migrate.MigrationError, SQLAlchemyError) as exc:
        raise click.ClickException(f"cannot migrate {where}: {one_line(exc)}") from None
    finally:
        database.close()
    click.echo(f"{where}: revision {revision}")


def _server_address(host: str | None, port: int | None) -> str:
    """``host:port`` of the server to talk to, an IPv6 address in brackets."""
    try:
        settings = load_settings({k: v for k, v in {"HOST": host, "PORT": port}.items() if v})
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    host = settings.HOST.strip("[]")
    return f"[{host}]:{settings.PORT}" if ":" in host else f"{host}:{settings.PORT}"


def _unreachable(url: str, exc: OSError) -> click.ClickException:
    """``cannot reach local_bridge at URL: connection refused`` (or timed out, unknown host ...)."""
    reason = exc.strerror or str(exc) or exc.__class__.__name__
    first = reason.split(" ", 1)[0]
    if first[1:].islower():  # "Connection refused", but not "WebSocket upgrade refused"
        reason = reason[:1].lower() + reason[1:]
    return click.ClickException(f"cannot reach local_bridge at {url}: {reason}")


_TOKEN_HINT = f" (pass --token, or set {ENV_PREFIX}TOKEN or {ENV_PREFIX}SECRET_KEY)"


@contextlib.contextmanager
def _rest_errors() -> Iterator[None]:
    """Turn a failed REST call into one line: the server's error (a 401 with a hint where to
    find a token), or why it could not be reached."""
    from .client.rest import ApiError, ServerUnreachable

    try:
        yield
    except ServerUnreachable as exc:
        raise click.ClickException(str(exc)) from None
    except ApiError as exc:
        raise click.ClickException(f"{exc}{_TOKEN_HINT if exc.status == 401 else ''}") from None


_HOST_HELP = f"server address [{ENV_PREFIX}HOST, default 127.0.0.1]"
_PORT_HELP = f"server port [{ENV_PREFIX}PORT, default 5100]"


@main.command()
@click.option(
    "--channel",
    "channels",
    multiple=True,
    default=["jobs"],
    show_default=True,
    help="channel to follow (repeatable)",
)
@click.option(
    "--type",
    "types",
    multiple=True,
    help="print only events of this type (repeatable; shell globs such as 'job_*')",
)
@click.option(
    "--since",
    type=click.IntRange(min=0),
    help="start after this seq: replays what the server's history still holds",
)
@click.option("--epoch", help="the history --since belongs to (default: the server's current one)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line, for piping")
@click.option(
    "--client-type",
    default="gui",
    show_default=True,
    help="register as this type (broadcasts limited to client types go by it)",
)
@click.option("--client-name", default="local-bridge listen", show_default=True)
@click.option("--host", help=_HOST_HELP)
@click.option("--port", type=int, help=_PORT_HELP)
@click.option("--token", "bearer", help=TOKEN_HELP)
def listen(
    channels: tuple[str, ...],
    types: tuple[str, ...],
    since: int | None,
    epoch: str | None,
    as_json: bool,
    client_type: str,
    client_name: str,
    host: str | None,
    port: int | None,
    bearer: str | None,
) -> None:
    """Print the bus's events live, one line each, until interrupted.

    Reconnects by itself and resumes where it was, so nothing is missed across a server
    restart (notices on standard error); a close that reconnecting would not mend (bad
    token, administrator's disconnect ...) ends it with exit status 1.
    """
    from .client import BusError, Unrecoverable
    from .client.backoff import describe
    from .client.bridge import Bridge
    from .listen_view import event_line, lost_notice, resumed_notice, resync_notice, wanted

    # Checked here: the server would answer an error and go on, leaving listen silent.
    unknown = [name for name in channels if not is_valid_channel(name)]
    if unknown:
        raise click.BadParameter(
            f"unknown channel {', '.join(map(repr, unknown))} (channels: "
            f"{', '.join(sorted(CHANNELS))}, or a sub-channel such as jobs:<id>)",
            param_hint="--channel",
        )
    if not CLIENT_TYPE_PATTERN.match(client_type):
        raise click.BadParameter(
            f"{client_type!r} must match ^[a-z][a-z0-9_-]{{0,31}}$", param_hint="--client-type"
        )
    url = f"ws://{_server_address(host, port)}/ws"

    def fresh_token() -> str | None:  # a self-minted one is minted again for each refresh
        return token_for(bearer, "client", client_type, channels, ttl=CONNECTED_TOKEN_TTL)

    first = fresh_token()
    fixed = bearer or os.environ.get(TOKEN_ENV)
    bridge = Bridge(
        url,
        channels=channels,
        client_type=client_type,
        client_name=client_name,
        token=first if first is None or fixed else lambda: fresh_token() or "",
        since=since,
        epoch=epoch,
    )
    bridge.on_resync(lambda message: click.echo(resync_notice(message), err=True))

    def state_changed(state: str) -> None:
        if state == "reconnecting":
            click.echo(lost_notice(describe(bridge.last_close_code)), err=True)
        elif state == "connected" and bridge.reconnects:
            click.echo(resumed_notice(bridge.seq), err=True)

    try:
        bridge.connect()
    except Unrecoverable as exc:
        if exc.code == 4001 and first is None:
            raise click.ClickException(
                "local_bridge requires a token: --token, LOCAL_BRIDGE_TOKEN or "
                "LOCAL_BRIDGE_SECRET_KEY"
            ) from None
        if exc.code == 4001:
            raise click.ClickException("local_bridge refused the token (close code 4001)") from None
        if exc.code == 4004:  # /ws itself is not there
            raise click.ClickException(f"{url}: not a local_bridge bus ({exc.detail})") from None
        raise click.ClickException(_stopped(exc)) from None
    except OSError as exc:  # refused, timed out, upgrade refused (HTTP status)
        raise _unreachable(url, exc) from None
    except (BusError, ValueError) as exc:  # something else than local_bridge answered
        raise click.ClickException(f"{url}: not a local_bridge bus ({exc})") from None
    # Registered after the first connect: the count of reconnects starts now.
    bridge.on_state(state_changed)
    try:
        for event in bridge.events():
            if event.get("type") == "replay_complete" or not wanted(str(event["type"]), types):
                continue
            click.echo(json.dumps(event, ensure_ascii=False) if as_json else event_line(event))
    except Unrecoverable as exc:
        raise click.ClickException(_stopped(exc)) from None
    except KeyboardInterrupt:
        pass
    finally:
        bridge.close()


def _stopped(exc: Exception) -> str:
    """``local_bridge closed the connection: 4009 (disconnected by an administrator)``."""
    from .client.backoff import describe

    detail = getattr(exc, "detail", None)
    why = describe(getattr(exc, "code", None)) + (f": {detail}" if detail else "")
    return f"local_bridge closed the connection: {why}"


@main.command()
@click.argument("event_type")
@click.argument("fields", nargs=-1)
@click.option(
    "--channel", help="channel or sub-channel (default: the type's own; everyone for custom types)"
)
@click.option("--host", help=_HOST_HELP)
@click.option("--port", type=int, help=_PORT_HELP)
@click.option("--token", "bearer", help=TOKEN_HELP + " (role admin)")
def publish(
    event_type: str,
    fields: tuple[str, ...],
    channel: str | None,
    host: str | None,
    port: int | None,
    bearer: str | None,
) -> None:
    """Publish an event: FIELDS are key=value (values parsed as JSON when they can be)."""
    from .client.rest import RestClient

    data = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="FIELDS")
        try:
            data[key] = json.loads(value)
        except ValueError:
            data[key] = value
    if not channel and event_type in CATALOG:
        channel = CATALOG[event_type][0]
    rest = RestClient(f"http://{_server_address(host, port)}", token=token_for(bearer, "admin"))
    with _rest_errors(), rest:
        click.echo(json.dumps(rest.publish(event_type, data, channel=channel)))


main.add_command(token)


@main.command("watch-job")
@click.argument("job_id")
@click.option("--host", help=_HOST_HELP)
@click.option("--port", type=int, help=_PORT_HELP)
@click.option("--token", "bearer", help=TOKEN_HELP)
def watch_job(job_id: str, host: str | None, port: int | None, bearer: str | None) -> None:
    """Show one job's progress live until it ends.

    Exit status: 0 completed, 3 failed, 4 cancelled; 1 when the job is unknown or the
    server cannot be reached or hangs up.
    """
    import itertools
    from urllib.parse import quote

    from .client import BusClient, BusError, ConnectionClosed
    from .client.rest import ApiError, RestClient
    from .job_watch import EXIT_STATUS, JobView, render

    address = _server_address(host, port)
    url = f"ws://{address}/ws/jobs/{quote(job_id, safe='')}"
    bearer = token_for(bearer, "client", channels=[f"jobs:{job_id}"], ttl=CONNECTED_TOKEN_TTL)
    if bearer is None:
        # Without a token, ask over REST first: a server with auth on would hold the stream
        # open for its authentication deadline before refusing it, and a server that is not
        # local_bridge is told apart from one that is.
        try:
            with _rest_errors(), RestClient(f"http://{address}") as rest:
                rest.get_job(job_id)
        except click.ClickException as exc:
            cause = exc.__context__
            if isinstance(cause, ApiError) and cause.code == "not_found":
                raise click.ClickException(f"job {job_id} not found") from None
            raise
    try:
        stream = BusClient(url, token=bearer, greeting="job_status")
    except BusError as exc:
        if exc.reply.get("code") == "job_not_found":
            raise click.ClickException(f"job {job_id} not found") from None
        raise click.ClickException(str(exc)) from None
    except ConnectionClosed as exc:
        if exc.code in (4001, 4003):
            raise click.ClickException(
                f"local_bridge refused the token (close code {exc.code})"
            ) from None
        raise click.ClickException(
            f"local_bridge closed the connection (code {exc.code})"
        ) from None
    except OSError as exc:
        raise _unreachable(url, exc) from None
    live = sys.stdout.isatty()  # a terminal gets one line redrawn, a pipe a line per change
    view = JobView(job_id)
    with stream:
        for message in itertools.chain([stream.hello], stream.events()):
            if not view.apply(message):
                continue
            line = render(view)
            click.echo(f"\r\x1b[2K{line}" if live else line, nl=not live)
            if view.outcome is not None:
                break
    if live:
        click.echo()
    if view.outcome is None:
        raise click.ClickException(
            f"the job stream ended before the job did (close code {stream.close_code})"
        )
    sys.exit(EXIT_STATUS[view.outcome])


@main.command()
@click.option("--host", help=_HOST_HELP)
@click.option("--port", type=int, help=_PORT_HELP)
@click.option("--token", "bearer", help=TOKEN_HELP + " (role admin, for the system events)")
@click.option(
    "--pace",
    type=click.FloatRange(min=0),
    default=None,
    help="seconds between steps [default 0.6: about 30 s in all]",
)
def demo(host: str | None, port: int | None, bearer: str | None, pace: float | None) -> None:
    """Drive a whole workflow against a running server (session, imports, analysis, jobs run
    by a simulated worker, approvals, exports, system events) so that `listen` or the
    dashboard shows every event type."""
    from . import demo as workflow
    from .client.rest import RestClient

    base = f"http://{_server_address(host, port)}"

    def bearer_token() -> str | None:
        # asked before each request: one minted from the secret key lives a minute
        return token_for(bearer, "admin")

    rest = RestClient(base, token=bearer_token)
    with _rest_errors(), rest:
        workflow.run(rest, click.echo, workflow.DEFAULT_PACE if pace is None else pace)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
