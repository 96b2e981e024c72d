"""The browser trust boundary: what a web page the user happens to have open may do here.

Any page in the user's browser can send requests to a server on loopback. This module runs
first on every request and WebSocket handshake, in this order:

1. ``Host`` allow-list (``LOCAL_BRIDGE_ALLOWED_HOSTS``): a page that rebound its own DNS name
   to 127.0.0.1 sends its own name as ``Host``: 400, so it can neither read nor write.
2. CORS preflights (``OPTIONS`` with ``Access-Control-Request-Method``) are answered here, for
   the origins of ``LOCAL_BRIDGE_ALLOWED_ORIGINS``, before any check that needs a body or a
   token: a preflight carries neither. Other origins get 403 and no CORS headers.
3. ``Origin`` check (``LOCAL_BRIDGE_ALLOWED_ORIGINS``, by default the request's own host) on
   every state-changing request that carries an Origin, on SSE and on WebSocket handshakes:
   403. ``Origin: null`` (sandboxed frames, ``file:`` pages, some redirects) is never allowed:
   any site can produce it.
4. Fetch metadata: a ``GET`` that another site's page embeds (``<img>``, ``<script>``: mode
   ``no-cors``, cross-site or same-site) is refused; API answers are JSON, never a resource
   to embed, and nothing else lets such a page hold a long poll or time an answer.

Authentication (:mod:`local_bridge.auth.policy`) runs after this hook: a preflight, which
carries no token, is answered here and never reaches it (that hook lets ``OPTIONS`` through as
well), and a request from a refused origin is refused before its token is looked at.

Reads from a disallowed origin in ``cors`` mode are answered without CORS headers, so the
browser keeps the answer from the page. flask-cors adds the headers for the allowed origins on
``/api/...`` (REST and SSE).

``LOCAL_BRIDGE_TRUSTED_PROXIES`` installs werkzeug's ProxyFix, so the client's address and the
host it asked for come from the proxies' ``X-Forwarded-*`` headers; with 0 those headers are
ignored (a client could write anything in them).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

from flask import Flask, Response, request
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from ..config import Settings
from .body import BODY_METHODS
from .envelope import api_error

log = logging.getLogger(__name__)

#: Hosts a loopback server answers to when ``LOCAL_BRIDGE_ALLOWED_HOSTS`` is not set (besides
#: the bind address).
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
#: Request headers an allowed origin may send (a preflight asks for them): JSON bodies, bearer
#: tokens, and the resume point an EventSource sends when it reconnects.
CORS_ALLOW_HEADERS = ("Content-Type", "Authorization", "Last-Event-ID")
CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CORS_PATHS = "/api/"
#: The browser module: a web app served from a listed origin imports it, and module scripts
#: are fetched in cors mode, so it needs the CORS headers too (it holds no data).
CORS_MODULE = "/static/local-bridge.js"
SSE_ENDPOINT = "events.stream"
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def init_app(app: Flask, settings: Settings) -> None:
    """Install the boundary on ``app``; call it before any other ``before_request`` hook."""
    if settings.TRUSTED_PROXIES:
        hops = settings.TRUSTED_PROXIES
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    # a wildcard bind address (0.0.0.0) is no name anyone asks for
    bind_host = () if _is_unspecified(settings.HOST) else (settings.HOST,)
    hosts = HostAllowList(settings.ALLOWED_HOSTS or (*DEFAULT_HOSTS, *bind_host))
    if not settings.ALLOWED_HOSTS and not bind_host:
        log.warning(
            "bound to %s with the default LOCAL_BRIDGE_ALLOWED_HOSTS: only requests for "
            "localhost, 127.0.0.1 or ::1 are answered; list the names clients use",
            settings.HOST,
        )
    origins = settings.ALLOWED_ORIGINS
    cors_patterns = _cors_patterns(origins)

    @app.before_request
    def guard_browser_boundary() -> Response | None:
        if not hosts.allows(request.host):
            return api_error(400, "bad_request", "this server does not answer to that Host")
        origin = request.headers.get("Origin")
        if origin is not None and _is_preflight(origin):
            if not any(pattern.match(origin) for pattern in cors_patterns):
                return api_error(403, "forbidden", "origin not allowed")
            # flask-cors's after_request hook adds the Access-Control-Allow-* headers
            return app.make_default_options_response()
        if _needs_origin_check() and not origin_allowed(
            origin, request.host, origins, request.scheme
        ):
            return api_error(403, "forbidden", "origin not allowed")
        if _embedded_by_another_site():
            return api_error(403, "forbidden", "API answers cannot be embedded by another site")
        return None

    if cors_patterns:
        CORS(
            app,
            resources={CORS_PATHS + "*": {}, re.escape(CORS_MODULE): {}},
            origins=cors_patterns,
            methods=list(CORS_METHODS),
            allow_headers=list(CORS_ALLOW_HEADERS),
            max_age=600,
            always_send=False,  # no Origin, no CORS headers
            intercept_exceptions=False,  # error answers pass through after_request anyway
        )


def origin_allowed(
    origin: str | None, host: str, allowed: tuple[str, ...], scheme: str = "http"
) -> bool:
    """Whether a request from ``origin`` to ``host`` may change state, stream or connect.

    No Origin: not a browser (or a same-origin ``GET``), allowed. ``null``: never. Otherwise the
    origin must be listed in ``allowed`` (``*``: any), or name the request's own ``host`` and
    port (``scheme`` gives the port a ``Host`` without one means).
    """
    if origin is None or origin == "":
        return True
    if origin.strip().lower() == "null":
        return False
    if "*" in allowed or origin.lower() in {o.lower() for o in allowed}:
        return True
    parts = urlsplit(origin.strip())
    try:
        origin_port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:  # a port that is not a number
        return False
    name, port = split_host(host)
    if name is None or not parts.hostname:
        return False
    return (parts.hostname.lower(), origin_port) == (
        name,
        port or _DEFAULT_PORTS.get(scheme.lower()),
    )


class HostAllowList:
    """The names (``name`` for any port, ``name:port`` for one) a ``Host`` header may carry;
    ``*`` allows every Host."""

    def __init__(self, entries: tuple[str, ...]):
        self.any = "*" in entries
        self.entries = {split_host(entry) for entry in entries if entry != "*"}

    def allows(self, host: str) -> bool:
        if self.any:
            return True
        name, port = split_host(host)
        if name is None:
            return False
        return (name, None) in self.entries or (port is not None and (name, port) in self.entries)


def split_host(value: str) -> tuple[str | None, int | None]:
    """``Host`` header -> (lower-case name without brackets or trailing dot, port or None).
    ``(None, None)`` when it is malformed (empty, a port that is not a number)."""
    value = value.strip().lower()
    port_text = ""
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None, None
        port_text = rest[1:]
    elif value.count(":") > 1:  # a bare IPv6 address: no port
        name = value
    else:
        name, _, port_text = value.partition(":")
    name = name.rstrip(".")
    if not name or (port_text and not (port_text.isdigit() and int(port_text) <= 65535)):
        return None, None
    return name, int(port_text) if port_text else None


def _is_preflight(origin: str | None) -> bool:
    return (
        request.method == "OPTIONS"
        and origin is not None
        and "Access-Control-Request-Method" in request.headers
        and request.path.startswith(CORS_PATHS)
    )


def _needs_origin_check() -> bool:
    return (
        request.method in BODY_METHODS
        or request.endpoint == SSE_ENDPOINT
        or request.headers.get("Upgrade", "").lower() == "websocket"
    )


def _embedded_by_another_site() -> bool:
    """A subresource load (``no-cors``) of another site's page; navigations (a link the user
    follows) and ``cors``-mode reads are not refused (the browser withholds the latter's answer
    unless CORS allows it)."""
    return (
        request.method in ("GET", "HEAD")
        and request.headers.get("Sec-Fetch-Mode") == "no-cors"
        and request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site")
    )


def _cors_patterns(origins: tuple[str, ...]) -> list[re.Pattern[str]]:
    """The CORS origins as whole-string patterns: flask-cors would read a listed ``[::1]`` as a
    regular expression, and ``*`` must not let ``null`` in."""
    if "*" in origins:
        return [re.compile(r"(?!null\Z).+\Z", re.IGNORECASE)]
    return [re.compile(re.escape(origin) + r"\Z", re.IGNORECASE) for origin in origins]


def _is_unspecified(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")


__all__ = ["HostAllowList", "init_app", "origin_allowed", "split_host"]
