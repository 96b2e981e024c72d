"""The ``local-bridge`` command."""
from __future__ import annotations

import sys

import click

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
