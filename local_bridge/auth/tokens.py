"""Bearer tokens: HS256 JWTs signed with ``LOCAL_BRIDGE_SECRET_KEY`` (PROTOCOL.md section 6).

Minting and verifying only; no Flask, no sockets. A token carries ``sub``, ``role`` (client,
worker or admin), ``exp``, and optionally ``client_type``, ``channels`` (shell-style patterns
such as ``jobs``, ``jobs:*``, ``sessions:12``) and ``jti`` (what revocation names).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from ..protocol import CLIENT_TYPE_PATTERN, utc_timestamp

ALGORITHM = "HS256"  # the only one accepted: `none` and every other algorithm are refused
#: Roles, weakest first: each may do what the ones before it may.
ROLES = ("client", "worker", "admin")
#: The longest lifetime a token may have. A revoked ``jti`` is remembered this long, so no
#: token outlives the record of its revocation.
MAX_TOKEN_TTL = 30 * 86400
MAX_TOKEN_LENGTH = 8192
MAX_PATTERNS = 64
_PATTERN = re.compile(r"[A-Za-z0-9_.:*?\[\]!\-]{1,100}")
#: What a ``jti`` may be (revocation takes it in a JSON body and a command line).
JTI_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}\Z")
_TTL = re.compile(r"([0-9]+)([smhd]?)")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenError(ValueError):
    """A token that must be refused (missing, malformed, badly signed, expired, revoked ...);
    the message says which, without repeating the token."""


@dataclass(frozen=True)
class Claims:
    """What a verified token says about its bearer."""

    sub: str
    role: str
    exp: float
    client_type: str | None = None
    #: Channel patterns; None: every channel.
    channels: tuple[str, ...] | None = None
    jti: str | None = None

    def has_role(self, required: str) -> bool:
        """Whether this role is ``required`` or stronger (admin > worker > client)."""
        return ROLES.index(self.role) >= ROLES.index(required)

    def allows(self, channel: str) -> bool:
        """Whether ``channel`` matches one of the token's patterns (always, without any)."""
        if self.channels is None:
            return True
        return any(fnmatchcase(channel, pattern) for pattern in self.channels)

    @property
    def expires_at(self) -> str:
        """``exp`` as an RFC 3339 UTC timestamp."""
        return utc_timestamp(datetime.fromtimestamp(self.exp, UTC))

    def as_dict(self) -> dict[str, Any]:
        """The claims as they stand in the token (absent ones left out)."""
        claims: dict[str, Any] = {"sub": self.sub, "role": self.role, "exp": int(self.exp)}
        if self.client_type is not None:
            claims["client_type"] = self.client_type
        if self.channels is not None:
            claims["channels"] = list(self.channels)
        if self.jti is not None:
            claims["jti"] = self.jti
        return claims


def parse_ttl(text: str) -> int:
    """``90``, ``45s``, ``30m``, ``1h``, ``7d`` as seconds (1 s up to :data:`MAX_TOKEN_TTL`)."""
    match = _TTL.fullmatch(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 90, 45s, 30m, 1h or 7d")
    seconds = int(match.group(1)) * _TTL_UNITS[match.group(2)]
    if not 1 <= seconds <= MAX_TOKEN_TTL:
        raise ValueError(f"a token lives from 1 s to {MAX_TOKEN_TTL // 86400} days, not {text}")
    return seconds


def mint(
    secret: str,
    *,
    sub: str,
    role: str,
    ttl: float,
    client_type: str | None = None,
    channels: Iterable[str] | None = None,
    jti: str | None = "",
    now: float | None = None,
) -> tuple[str, Claims]:
    """Sign a token; return it and its claims. ``jti`` "" (the default) draws a fresh one;
    None leaves it out (such a token cannot be revoked)."""
    now = time.time() if now is None else now
    claims = _checked(
        {
            "sub": sub,
            "role": role,
            "exp": int(now + ttl),
            **({"client_type": client_type} if client_type is not None else {}),
            **({"channels": list(channels)} if channels is not None else {}),
            **({"jti": jti or uuid.uuid4().hex} if jti is not None else {}),
        },
        now,
    )
    payload = {**claims.as_dict(), "iat": int(now)}
    import jwt  # here, not at the top: see verify()

    return jwt.encode(payload, secret, algorithm=ALGORITHM), claims


def verify(token: Any, secret: str, now: float | None = None) -> Claims:
    """The claims of a valid token; :class:`TokenError` for anything else."""
    if not isinstance(token, str) or not token:
        raise TokenError("no token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("token too long")
    now = time.time() if now is None else now
    # PyJWT imports ssl. Imported at the top, it would come in with the command line, before
    # the gevent worker patches the standard library, and gevent warns that ssl was imported
    # unpatched; the first token checked is always inside the worker.
    import jwt

    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != ALGORITHM:
            raise TokenError(f"token algorithm {str(header.get('alg'))[:20]!r} is not allowed")
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "role", "exp"], "verify_sub": False, "verify_jti": False},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except jwt.InvalidSignatureError:
        raise TokenError("token signature is invalid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidAlgorithmError:
        raise TokenError("token algorithm is not allowed") from None
    except jwt.ImmatureSignatureError:
        raise TokenError("token not valid yet") from None
    except jwt.InvalidTokenError:
        raise TokenError("malformed token") from None
    return _checked(payload, now)


def _checked(payload: dict[str, Any], now: float) -> Claims:
    """Claims from a payload whose every claim has the right shape."""
    sub, role, exp = payload.get("sub"), payload.get("role"), payload.get("exp")
    if not isinstance(sub, str) or not 1 <= len(sub) <= 128:
        raise TokenError("token claim 'sub' must be a string of 1 to 128 characters")
    if role not in ROLES:
        raise TokenError(f"token role must be one of {', '.join(ROLES)}")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise TokenError("token claim 'exp' must be a number")
    if exp <= now:
        raise TokenError("token expired")
    if exp - now > MAX_TOKEN_TTL + 60:
        raise TokenError(f"token lives longer than {MAX_TOKEN_TTL // 86400} days")
    client_type = payload.get("client_type")
    if client_type is not None and not (
        isinstance(client_type, str) and CLIENT_TYPE_PATTERN.match(client_type)
    ):
        raise TokenError("token claim 'client_type' must match ^[a-z][a-z0-9_-]{0,31}$")
    channels = payload.get("channels")
    if channels is not None:
        if (
            not isinstance(channels, list)
            or len(channels) > MAX_PATTERNS
            or not all(isinstance(c, str) and _PATTERN.fullmatch(c) for c in channels)
        ):
            raise TokenError(
                f"token claim 'channels' must be a list of at most {MAX_PATTERNS} channel patterns"
            )
        channels = tuple(channels)
    jti = payload.get("jti")
    if jti is not None and not (isinstance(jti, str) and JTI_PATTERN.match(jti)):
        raise TokenError("token claim 'jti' must be 1 to 128 letters, digits or _.:-")
    return Claims(sub, role, float(exp), client_type, channels, jti)
