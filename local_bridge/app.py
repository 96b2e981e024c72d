"""The application factory: settings, database, publish path, bus and HTTP API in one app."""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from typing import Any

from flask import Flask, request
from flask.sessions import NullSession, SessionInterface

from . import migrate
from .api import auth as auth_api
from .api import body as api_body
from .api import browser as browser_api
from .api import dashboard as dashboard_page
from .api import errors as api_errors
from .api import events as events_api
from .api import openapi as openapi_api
from .api import system as system_api
from .api import websocket_admin
from .api import workflow as workflow_api
from .api import ws as ws_api
from .api.envelope import api_error
from .auth import policy as auth_policy
from .auth.service import Authenticator
from .backplane import create_backplane
from .bus.facade import Bus
from .bus.websocket_server import WebSocketServer
from .config import Settings, load_settings
from .db import Database, default_url
from .domain import Domain
from .limits import AddressRateLimiter
from .observability import BridgeMetrics
from .observability import init_app as observe
from .publisher import Publisher
from .state import EXTENSION_KEY, BridgeState, state_of

# Browsers run /static/*.js as module scripts only when served as JavaScript; the system's type
# table (a Windows registry entry, say) may map .js to text/plain.
mimetypes.add_type("text/javascript", ".js")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the local_bridge Flask application.

    ``config`` overrides ``LOCAL_BRIDGE_*`` settings by bare name (``{"MAX_QUEUE": 10}``);
    other keys go to Flask's own config. What it opens (database connections, the backplane's
    threads, the domain's timers) ``state_of(app).close()`` releases.
    """
    settings = load_settings(config)
    app = Flask(__name__)
    app.config.update(settings.extra)
    app.config["MAX_CONTENT_LENGTH"] = settings.MAX_BODY_SIZE
    app.json.sort_keys = False
    # `/api//jobs` is a 404 like any unknown path: merging the slashes answered a 308 whose
    # body is werkzeug's HTML page (routing redirects bypass the JSON error handlers).
    app.url_map.merge_slashes = False
    app.session_interface = NoSessions()

    database = Database(database_url(settings, app))
    if database.is_sqlite:  # a local file is brought up to date (and created) on start
        migrate.upgrade(database.engine)
    publisher = Publisher(create_backplane(settings))
    bus = Bus(settings, publisher)
    domain = Domain.build(database.sessions, bus, settings.PROGRESS_RATE)
    state = app.extensions[EXTENSION_KEY] = BridgeState(
        settings, database, bus, WebSocketServer(bus), domain
    )
    metrics = state.metrics = BridgeMetrics(state)
    publisher.on_published = metrics.event_published
    bus.hub.on_delivered = metrics.event_delivered
    if settings.auth_enabled:
        state.auth = Authenticator(settings)
        state.auth.attach(bus.hub)  # a revoked token's connections are closed

    observe(app, metrics)  # first: every request, even one refused by a hook, is logged
    api_errors.init_app(app)
    # before every other check: Host, CORS preflight, Origin (api/browser.py)
    browser_api.init_app(app, settings)
    _limit_http_rate(app, settings)
    if state.auth is not None:  # before the body checks: no token, no further answer
        auth_policy.init_app(app, state.auth)
    api_body.init_app(app)
    app.register_blueprint(system_api.bp)
    app.register_blueprint(websocket_admin.bp)
    app.register_blueprint(workflow_api.bp)
    app.register_blueprint(events_api.bp)
    app.register_blueprint(auth_api.bp)
    app.register_blueprint(openapi_api.bp)
    app.register_blueprint(dashboard_page.bp)  # the live dashboard page at / (no data)
    ws_api.init_app(app, bus, domain.jobs)
    return app


class NoSessions(SessionInterface):
    """The server keeps no cookie session (a client proves who it is with a token): every
    request shares one empty, read-only session instead of Flask making one for each."""

    _session = NullSession()

    def open_session(self, app: Flask, request: Any) -> NullSession:
        return self._session

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        return None


def database_url(settings: Settings, app: Flask | None = None) -> str:
    """``LOCAL_BRIDGE_DATABASE_URL``, or the SQLite file in the application's instance folder."""
    if settings.DATABASE_URL:
        return settings.DATABASE_URL
    return default_url((app or Flask(__name__)).instance_path)


#: Probes and scrapes: never refused by the HTTP rate limit.
RATE_EXEMPT = frozenset({"system.health", "system.live", "metrics"})


def _limit_http_rate(app: Flask, settings: Settings) -> None:
    """``LOCAL_BRIDGE_HTTP_RATE``: requests per second per remote address (0: off).

    Health checks and metrics are exempt: a load balancer or Prometheus polling them must
    never be refused.
    """
    if settings.HTTP_RATE <= 0:
        return
    limiter = AddressRateLimiter(settings.HTTP_RATE)

    @app.before_request
    def check_http_rate():
        if request.endpoint in RATE_EXEMPT:
            return None
        if not limiter.allow(request.remote_addr or "?"):
            return api_error(429, "rate_limited", "too many requests from this address")
        return None


__all__ = ["BridgeState", "create_app", "database_url", "state_of"]
