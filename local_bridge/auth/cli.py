"""``local-bridge token create`` / ``token revoke``, and the token the other commands send.

``token revoke`` asks the running server (``POST /api/auth/revoke``), which records the
revocation where every process sharing its Redis sees it and closes the token's connections;
so it works the same with one process in memory and with many on Redis.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import click

from ..config import ENV_PREFIX, ConfigError, load_settings
from .tokens import JTI_PATTERN, ROLES, mint, parse_ttl

TOKEN_ENV = ENV_PREFIX + "TOKEN"
CLI_TOKEN_TTL = 60  # seconds: a token the command line mints for one request of its own
#: seconds: the token a command that stays connected (listen, watch-job) mints; the server
#: closes a connection 4001 when its token expires.
CONNECTED_TOKEN_TTL = 86400
TOKEN_HELP = f"bearer token [{TOKEN_ENV}; default: one minted from {ENV_PREFIX}SECRET_KEY if set]"


def _secret() -> str | None:
    try:
        return load_settings().SECRET_KEY
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def token_for(
    explicit: str | None,
    role: str,
    client_type: str | None = None,
    channels: Iterable[str] | None = None,
    ttl: float = CLI_TOKEN_TTL,
) -> str | None:
    """The token a command sends: ``--token``, else ``LOCAL_BRIDGE_TOKEN``, else one minted
    for ``ttl`` seconds (a minute: one request) with ``role`` when ``LOCAL_BRIDGE_SECRET_KEY`` is
    set (the command runs beside the server), else None (a server with auth off needs none)."""
    token = explicit or os.environ.get(TOKEN_ENV)
    if token:
        return token
    secret = _secret()
    if not secret:
        return None
    token, _ = mint(
        secret,
        sub="local-bridge-cli",
        role=role,
        ttl=ttl,
        client_type=client_type,
        channels=channels,
    )
    return token


@click.group()
def token() -> None:
    """Mint and revoke bearer tokens (LOCAL_BRIDGE_AUTH=token)."""


@token.command()
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--ttl", default="1h", show_default=True, help="lifetime: 90, 45s, 30m, 1h, 7d")
@click.option("--sub", default="local-bridge", show_default=True, help="whom the token names")
@click.option("--client-type", help="the only client_type the bearer may register as")
@click.option(
    "--channel",
    "channels",
    multiple=True,
    help="channel pattern the bearer may follow (repeatable; jobs, jobs:*, sessions:12); "
    "default: every channel",
)
@click.option("--json", "as_json", is_flag=True, help="print {token, claims} as JSON")
def create(
    role: str,
    ttl: str,
    sub: str,
    client_type: str | None,
    channels: tuple[str, ...],
    as_json: bool,
) -> None:
    """Print a token signed with LOCAL_BRIDGE_SECRET_KEY."""
    secret = _secret()
    if not secret:
        raise click.UsageError(f"{ENV_PREFIX}SECRET_KEY is not set: it signs tokens")
    try:
        seconds = parse_ttl(ttl)
        signed, claims = mint(
            secret,
            sub=sub,
            role=role,
            ttl=seconds,
            client_type=client_type,
            channels=channels or None,
        )
    except ValueError as exc:  # TokenError is one too
        raise click.BadParameter(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"token": signed, "claims": claims.as_dict()}))
    else:
        click.echo(signed)


@token.command()
@click.argument("jti")
@click.option("--token", "bearer", help=TOKEN_HELP + " (role admin)")
@click.option("--host", help=f"server address [{ENV_PREFIX}HOST, default 127.0.0.1]")
@click.option("--port", type=int, help=f"server port [{ENV_PREFIX}PORT, default 5100]")
def revoke(jti: str, bearer: str | None, host: str | None, port: int | None) -> None:
    """Refuse every token with this JTI from now on (asks the running server)."""
    from ..cli import _rest_errors, _server_address
    from ..client.rest import RestClient

    if not JTI_PATTERN.match(jti):
        raise click.BadParameter("1 to 128 letters, digits or _.:-", param_hint="JTI")
    admin = token_for(bearer, "admin")
    if admin is None:
        raise click.UsageError(
            f"revoking needs an admin token: --token, {TOKEN_ENV}, or {ENV_PREFIX}SECRET_KEY"
        )
    rest = RestClient(f"http://{_server_address(host, port)}", token=admin)
    with _rest_errors(), rest:
        click.echo(json.dumps(rest.revoke_token(jti)))


__all__ = ["TOKEN_HELP", "token", "token_for"]
