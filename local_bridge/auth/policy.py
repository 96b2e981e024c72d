"""Who may call which HTTP endpoint: one table keyed by endpoint name, applied to every request
by one ``before_request`` hook while ``LOCAL_BRIDGE_AUTH=token``.

An endpoint missing from the table needs an admin token (fail closed), and a test checks that
every route of the application has its own entry, so a new endpoint is never silently open.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, g, request

from ..api.envelope import api_error
from .revocation import RevocationUnavailable
from .service import Authenticator
from .tokens import Claims, TokenError

OPEN = "open"  # no token: probes, scrapes, static files
TOKEN = "client"  # any valid token: reads, and writes that are not a worker's or an admin's
WORKER = "worker"  # a worker's (or an admin's) token: the job lifecycle of a worker
ADMIN = "admin"  # an admin's token
WEBSOCKET = "websocket"  # checked by the WebSocket handler, so the close code reaches the client

#: endpoint -> what it needs.
POLICY: dict[str, str] = {
    # open: a load balancer's probes, Prometheus' scrape (docs/security.md), static assets
    "system.health": OPEN,
    "system.live": OPEN,
    "metrics": OPEN,
    "static": OPEN,
    "openapi.openapi_json": OPEN,  # the API's shape, as published in the docs: no data
    # the dashboard page: a static shell; what it loads passes this table with the user's token
    "dashboard.index": OPEN,
    "dashboard.dashboard": OPEN,
    # the WebSocket endpoints: 4001 / 4003 after the handshake
    "bus_endpoint": WEBSOCKET,
    "job_stream_endpoint": WEBSOCKET,
    # reads
    "system.status": TOKEN,
    "events.poll": TOKEN,
    "events.stream": TOKEN,
    "workflow.list_sessions": TOKEN,
    "workflow.get_session": TOKEN,
    "workflow.list_session_photos": TOKEN,
    "workflow.get_photo": TOKEN,
    "workflow.approval_queue": TOKEN,
    "workflow.list_jobs": TOKEN,
    "workflow.get_job": TOKEN,
    "workflow.get_export": TOKEN,
    # writes of any bearer
    "workflow.create_session": TOKEN,
    "workflow.update_session": TOKEN,
    "workflow.import_photo": TOKEN,
    "workflow.record_analysis": TOKEN,
    "workflow.record_selection": TOKEN,
    "workflow.approve": TOKEN,
    "workflow.reject": TOKEN,
    "workflow.create_job": TOKEN,
    "workflow.cancel_job": TOKEN,
    "workflow.reprioritize_job": TOKEN,
    "workflow.start_export": TOKEN,
    "workflow.complete_export": TOKEN,
    "workflow.fail_export": TOKEN,
    # a worker's writes
    "workflow.claim_job": WORKER,
    "workflow.report_progress": WORKER,
    "workflow.complete_job": WORKER,
    "workflow.fail_job": WORKER,
    # an administrator's
    "system.publish_system_event": ADMIN,
    "websocket_admin.list_clients": ADMIN,
    "websocket_admin.broadcast": ADMIN,
    "websocket_admin.disconnect": ADMIN,
    "events.batch": ADMIN,
    "auth.revoke": ADMIN,
}


def required(endpoint: str) -> str:
    """What ``endpoint`` needs; an admin token when the table does not name it."""
    return POLICY.get(endpoint, ADMIN)


def bearer_token() -> str | None:
    """The request's token: ``Authorization: Bearer``, else ``?token=`` on a GET (EventSource
    and WebSocket constructors cannot set headers). None when it carries none."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        return value.strip() if scheme.lower() == "bearer" else ""
    if request.method in ("GET", "HEAD"):
        return request.args.get("token")
    return None


def current_claims() -> Claims | None:
    """The verified claims of the request being served (None with auth off)."""
    claims: Claims | None = g.get("auth_claims")
    return claims


def init_app(app: Flask, authenticator: Authenticator) -> None:
    """Check every HTTP request against :data:`POLICY`."""

    @app.before_request
    def require_token() -> Any:
        endpoint = request.endpoint
        if endpoint is None or request.method == "OPTIONS":
            return None  # no such route (404, 405), or a CORS preflight: nothing is served
        need = required(endpoint)
        if need in (OPEN, WEBSOCKET):
            return None
        token = bearer_token()
        if token is None:
            return _unauthorized("this endpoint needs a token (Authorization: Bearer)")
        try:
            claims = authenticator.verify(token)
        except TokenError as exc:
            return _unauthorized(str(exc))
        except RevocationUnavailable as exc:
            return api_error(503, "unavailable", str(exc))
        if not claims.has_role(need):
            return api_error(403, "forbidden", f"this endpoint needs role {need}")
        g.auth_claims = claims
        return None


def _unauthorized(message: str) -> Any:
    response = api_error(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="local_bridge"'
    return response
