"""The live dashboard page at ``/`` and ``/dashboard``.

The page itself holds no data: it is a static HTML shell whose script
(``/static/dashboard.js``, built on ``/static/local-bridge.js``) loads everything over REST and
the bus with the token the user gives, through the normal endpoint policy. So the page is open
(``auth/policy.py``), and it is served with headers that keep it from being turned against its
user: a Content-Security-Policy that allows only this server's own scripts and styles (no
inline script, so injected markup could not run even if it were ever inserted), no framing
(clickjacking), no referrer, no sniffing.

The HTML lives outside ``static/`` so that it is only ever served with these headers.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from flask import Blueprint, Response, request

bp = Blueprint("dashboard", __name__)

#: The page's endpoints: HTML for people, not REST operations (the OpenAPI description and its
#: drift test leave them out, as they do static files and the WebSocket endpoints).
PAGE_ENDPOINTS = frozenset({"dashboard.index", "dashboard.dashboard"})

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
#: What a ``Host`` may look like to be written into the policy (name or address, port).
_PLAIN_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # a new version of the page is picked up at once; it is small
    "Cache-Control": "no-cache",
}


@cache
def _page() -> bytes:
    return (resources.files("local_bridge") / "templates" / "dashboard.html").read_bytes()


def content_security_policy(host: str) -> str:
    """The page's policy. CSP level 3 lets ``'self'`` cover ``ws://`` and ``wss://`` to the
    page's own host; browsers that predate it need the WebSocket origins named, which only a
    plain ``Host`` (already checked against the allow-list) is written as."""
    if not _PLAIN_HOST.fullmatch(host):
        return CONTENT_SECURITY_POLICY
    return CONTENT_SECURITY_POLICY.replace(
        "connect-src 'self'", f"connect-src 'self' ws://{host} wss://{host}"
    )


def _serve() -> Response:
    response = Response(_page(), mimetype="text/html")
    response.headers.update(PAGE_HEADERS)
    response.headers["Content-Security-Policy"] = content_security_policy(request.host)
    return response


@bp.get("/")
def index() -> Response:
    """The dashboard."""
    return _serve()


@bp.get("/dashboard")
def dashboard() -> Response:
    """The dashboard, under its own name."""
    return _serve()


__all__ = ["CONTENT_SECURITY_POLICY", "PAGE_ENDPOINTS", "bp", "content_security_policy"]
