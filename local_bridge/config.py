"""Configuration: built-in defaults, overridden by ``LOCAL_BRIDGE_*`` variables, validated once.

Every setting has one name. In the environment it is ``LOCAL_BRIDGE_<NAME>``; in the mapping
passed to :func:`local_bridge.create_app` it is the bare upper-case name (``MAX_QUEUE``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

ENV_PREFIX = "LOCAL_BRIDGE_"


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range."""


@dataclass(frozen=True)
class Settings:
    """Validated server settings; see API.md "Configuration" for the meaning of each."""

    HOST: str = "127.0.0.1"
    PORT: int = 5100
    DATABASE_URL: str | None = None  # None: SQLite file in the instance folder
    REDIS_URL: str | None = None
    REDIS_PREFIX: str = "local_bridge:"  # key prefix: several buses can share one Redis
    AUTH: str = "none"
    SECRET_KEY: str | None = None
    AUTH_TIMEOUT: float = 10.0  # seconds a WebSocket without a token has to `authenticate`
    ALLOWED_ORIGINS: tuple[str, ...] = ()  # empty: same host only
    ALLOWED_HOSTS: tuple[str, ...] = ()  # empty: localhost, 127.0.0.1, ::1 and HOST
    TRUSTED_PROXIES: int = 0  # reverse proxies in front that set X-Forwarded-*
    HEARTBEAT_INTERVAL: float = 30.0
    HISTORY_SIZE: int = 10000
    HISTORY_TTL: float = 600.0
    MAX_QUEUE: int = 1000
    MAX_BODY_SIZE: int = 1048576
    MAX_MESSAGE_SIZE: int = 65536
    MESSAGE_RATE: float = 20.0
    MESSAGE_BURST: int = 50
    CONNECT_RATE: int = 300
    HTTP_RATE: float = 0.0
    MAX_CONNECTIONS: int = 10000
    PROGRESS_RATE: float = 10.0
    MAX_SUBSCRIPTIONS: int = 256
    WORKER_CLASS: str = "gevent"
    SLOW_CLOSE_GRACE: float = 5.0
    LOG_LEVEL: str = "info"
    LOG_FORMAT: str = "text"  # text, or json: one object per line
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def auth_enabled(self) -> bool:
        return self.AUTH == "token"


#: Every setting's bare name, in declaration order.
SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Settings) if f.name != "extra")

_BOUNDS: dict[str, tuple[float, float]] = {
    "PORT": (0, 65535),
    "HEARTBEAT_INTERVAL": (0.05, 86400),
    "HISTORY_SIZE": (0, 10_000_000),
    "HISTORY_TTL": (0, 31 * 86400),
    "MAX_QUEUE": (1, 10_000_000),
    "MAX_BODY_SIZE": (1024, 1 << 30),
    "MAX_MESSAGE_SIZE": (128, 1 << 26),
    "MESSAGE_RATE": (0, 1e6),
    "MESSAGE_BURST": (1, 1_000_000),
    "CONNECT_RATE": (0, 1_000_000),
    "HTTP_RATE": (0, 1e6),
    "MAX_CONNECTIONS": (1, 1_000_000),
    "PROGRESS_RATE": (0.01, 1000),
    "MAX_SUBSCRIPTIONS": (1, 100_000),
    "SLOW_CLOSE_GRACE": (0, 600),
    "AUTH_TIMEOUT": (0.05, 3600),
    "TRUSTED_PROXIES": (0, 10),
}
_CHOICES = {
    "AUTH": ("none", "token"),
    "WORKER_CLASS": ("gevent", "gthread"),
    "LOG_LEVEL": ("debug", "info", "warning", "error", "critical"),
    "LOG_FORMAT": ("text", "json"),
}


def _convert(name: str, raw: Any, kind: type) -> Any:
    if raw is None or (isinstance(raw, str) and raw.strip() == "" and kind is not str):
        return None
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is tuple:
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            if not all(isinstance(item, str) for item in items):
                raise TypeError
            return tuple(item.strip() for item in items if item.strip())
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{ENV_PREFIX}{name} must be {kind.__name__}, got {raw!r}") from None


def _kind_of(name: str) -> type:
    annotation = Settings.__dataclass_fields__[name].type
    for kind in (int, float, tuple, str):
        if annotation.startswith(kind.__name__):
            return kind
    return str


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build :class:`Settings` from defaults, then the environment, then ``overrides``."""
    environ = os.environ if environ is None else environ
    names = SETTING_NAMES
    values: dict[str, Any] = {}
    for name in names:
        if ENV_PREFIX + name in environ:
            values[name] = environ[ENV_PREFIX + name]
    extra: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        key = key.upper().removeprefix(ENV_PREFIX)
        if key in names:
            values[key] = value
        else:
            extra[key] = value
    converted = {}
    for name, raw in values.items():
        value = _convert(name, raw, _kind_of(name))
        if value is not None or name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY"):
            converted[name] = value
    settings = replace(Settings(), **converted, extra=extra)
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    for name, (low, high) in _BOUNDS.items():
        value = getattr(settings, name)
        if not low <= value <= high:
            raise ConfigError(f"{ENV_PREFIX}{name}={value} is outside {low:g}..{high:g}")
    for name, choices in _CHOICES.items():
        if getattr(settings, name) not in choices:
            raise ConfigError(f"{ENV_PREFIX}{name} must be one of {', '.join(choices)}")
    if settings.auth_enabled and not settings.SECRET_KEY:
        raise ConfigError(f"{ENV_PREFIX}AUTH=token needs {ENV_PREFIX}SECRET_KEY")
    for origin in settings.ALLOWED_ORIGINS:
        if origin != "*" and not _ORIGIN_FORMAT.fullmatch(origin):
            raise ConfigError(
                f"{ENV_PREFIX}ALLOWED_ORIGINS: {origin!r} is not an origin "
                "(scheme://host[:port], without path or trailing slash) nor *"
            )
    for host in settings.ALLOWED_HOSTS:
        if host != "*" and not _HOST_FORMAT.fullmatch(host):
            raise ConfigError(
                f"{ENV_PREFIX}ALLOWED_HOSTS: {host!r} is not a host name or address "
                "with an optional :port, nor *"
            )


# The shapes of ALLOWED_ORIGINS and ALLOWED_HOSTS entries (a typo such as a trailing slash
# would otherwise never match, silently); api/browser.py gives them their meaning.
_NAME = r"(?:\[[0-9A-Fa-f:.]+\]|[^\s/?#@\[\]:*]+)"
_ORIGIN_FORMAT = re.compile(rf"[A-Za-z][A-Za-z0-9+.-]*://{_NAME}(?::\d{{1,5}})?")
_HOST_FORMAT = re.compile(rf"{_NAME}(?::\d{{1,5}})?|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f.]*")


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_allowed(settings: Settings, insecure: bool = False) -> None:
    """Refuse a non-loopback bind while authentication is off (PROTOCOL.md section 6), unless
    told ``insecure`` (``local-bridge serve --insecure``)."""
    if not settings.auth_enabled and not insecure and not is_loopback(settings.HOST):
        raise ConfigError(
            f"refusing to bind {settings.HOST} with {ENV_PREFIX}AUTH=none: without "
            "authentication the server listens on loopback only (set "
            f"{ENV_PREFIX}AUTH=token and {ENV_PREFIX}SECRET_KEY, or pass --insecure)"
        )
