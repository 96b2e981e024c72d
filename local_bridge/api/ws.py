"""The WebSocket endpoints: plain Flask views that hand the request's socket to the bus.

Admission (shutdown, connection limit, connect rate) is decided before the handshake, so
a refused client gets a plain HTTP answer; an admitted one gets its :class:`Transport` put in
place before simple-websocket writes its first byte. ``Host`` and ``Origin`` are checked before
all of this, for every request, by :mod:`local_bridge.api.browser`.

flask-sock's ``route`` is not used: it builds a response class per connection whose closure
holds the connection's ``Server``, a reference cycle that kept every closed connection (its
outbox, proxy, reader and wsproto state) in memory until a full garbage collection, which the
server runs rarely.
"""

from __future__ import annotations

import contextvars
from typing import Any

import greenlet
from flask import Flask, Response, current_app, g, request
from simple_websocket import Server

from ..auth.policy import bearer_token
from ..bus.connection import BusConnection
from ..bus.facade import Bus
from ..bus.job_stream import JobSnapshot, JobStreamConnection
from ..bus.reader import reader_class
from ..bus.transport import Transport
from ..domain.errors import NotFound
from ..domain.jobs import ProcessingJobLifecycle
from ..limits import ConnectionLimit, ConnectRateLimiter
from ..observability.access_log import websocket_span
from ..state import state_of
from .envelope import api_error

WEBSOCKET_ENDPOINTS = frozenset({"bus_endpoint", "job_stream_endpoint"})

#: ``app.extensions`` key of the gevent worker's ``spawn(function, *args)`` (gunicorn_app): when
#: present, a connection's life after the handshake runs in a greenlet of its own and the
#: request ends. A waiting greenlet's stack is copied to the heap: the request's goes through
#: gunicorn and Flask and, with the request's own objects (parser, headers), cost an idle
#: connection about a third of its memory.
HANDOFF = "local_bridge.websocket_handoff"


def init_app(app: Flask, bus: Bus, jobs: ProcessingJobLifecycle) -> None:
    """Register ``/ws``, ``/ws/jobs/<job_id>`` and their admission checks on ``app``."""
    settings = bus.settings
    snapshot = job_snapshot(jobs)
    app.config["WEBSOCKET_SERVER_OPTIONS"] = {
        "max_message_size": settings.MAX_MESSAGE_SIZE,
        "thread_class": reader_class(),
    }
    connect_limiter = ConnectRateLimiter(settings.CONNECT_RATE)
    connection_limit = ConnectionLimit(
        settings.MAX_CONNECTIONS, lambda: len(bus.hub), lambda c: bus.hub.get(c.client_id) is c
    )
    metrics = state_of(app).metrics
    on_wait = metrics.outbox_waited if metrics is not None else None
    authenticator = state_of(app).auth

    @app.before_request
    def admit_websocket():
        if request.endpoint not in WEBSOCKET_ENDPOINTS:
            return None
        if bus.stopping.is_set():
            return api_error(503, "unavailable", "the server is shutting down")
        ticket = connection_limit.admit()
        if ticket is None:
            return api_error(503, "unavailable", "too many connections")
        g.connection_ticket = ticket  # given back when the request ends
        if not connect_limiter.allow(request.remote_addr or "?"):
            return api_error(429, "rate_limited", "too many new connections from this address")
        if current_app.extensions.get(HANDOFF) is not None:
            # the connection outlives its request, whose end closes gunicorn's socket
            request.environ["gunicorn.socket"] = request.environ["gunicorn.socket"].dup()
            g.connection_owns_socket = True
        holder: list[BusConnection] = []
        transport = Transport(
            request.environ,
            settings.MAX_QUEUE,
            on_overflow=lambda: holder[0].on_overflow() if holder else None,
            on_wait=on_wait,
        )
        # With auth on: the token of the URL (or header), checked now, refused after the
        # handshake (4001); none: the client has AUTH_TIMEOUT seconds to `authenticate`.
        auth = authenticator.connection(bearer_token()) if authenticator is not None else None
        if request.endpoint == "job_stream_endpoint":
            connection = JobStreamConnection(
                bus, transport, request.remote_addr, request.view_args["job_id"], snapshot, auth
            )
        else:
            connection = BusConnection(bus, transport, request.remote_addr, auth)
        holder.append(connection)
        ticket.subject = connection.client
        g.bus_connection = connection
        return None

    @app.teardown_request
    def release_websocket(exc):
        ticket = g.pop("connection_ticket", None)
        if ticket is not None:
            connection_limit.release(ticket)
        connection = g.pop("bus_connection", None)
        if connection is not None:  # idempotent; stops the writer if the handshake failed
            connection.transport.outbox.close()
            if g.pop("connection_owns_socket", False):
                # the request's duplicate of gunicorn's socket: closed once what the library
                # wrote is out (gunicorn's own socket still carries any answer and the end)
                connection.transport.outbox.wait_closed(0.5)
                connection.transport.raw.close()

    options = app.config["WEBSOCKET_SERVER_OPTIONS"]

    def serve(flask_app: Flask, connection: BusConnection, ws: Any) -> None:
        if metrics is None:
            connection.run(ws)
        else:  # the connection's log lines, client id in its records, and its metrics
            with websocket_span(flask_app, metrics, connection, ws):
                connection.run(ws)

    def serve_handed_off(
        flask_app: Flask,
        connection: BusConnection,
        ws: Any,
        ticket: Any,
        environ: dict[str, Any],
        handler: Any,
    ) -> None:
        if handler.dead:
            # gunicorn and Flask are done with the request: its environ (headers, input
            # stream) is not read again (the request's path, address and endpoint, which the
            # log lines use, are attributes of their own).
            environ.clear()
        try:
            serve(flask_app, connection, ws)
        finally:
            if ticket is not None:
                connection_limit.release(ticket)

    def serve_websocket(**view_args):
        """Both endpoints: the handshake, then the connection's protocol until it ends."""
        connection = g.bus_connection
        ws = Server(request.environ, **options)
        flask_app = current_app._get_current_object()  # type: ignore[attr-defined]
        handoff = flask_app.extensions.get(HANDOFF)
        if handoff is None:
            serve(flask_app, connection, ws)
            return WebSocketEnded()
        # From here the connection is the new greenlet's: the request's end must neither give
        # its ticket back nor close it. The greenlet runs in a copy of the request's context
        # (the request and its id for the log lines).
        ticket = g.pop("connection_ticket", None)
        g.pop("bus_connection", None)
        g.pop("connection_owns_socket", None)
        context = contextvars.copy_context()
        handler = greenlet.getcurrent()
        environ = request.environ
        handoff(context.run, serve_handed_off, flask_app, connection, ws, ticket, environ, handler)
        return WebSocketEnded()

    app.add_url_rule("/ws", "bus_endpoint", serve_websocket, websocket=True)
    app.add_url_rule("/ws/jobs/<job_id>", "job_stream_endpoint", serve_websocket, websocket=True)


def job_snapshot(jobs: ProcessingJobLifecycle) -> JobSnapshot:
    """What a job stream reads first: the job's status and, once over, its terminal event;
    None for a job that does not exist."""

    def snapshot(job_id: str):
        try:
            return jobs.snapshot(job_id)
        except NotFound:
            return None

    return snapshot


class WebSocketEnded(Response):
    """The answer of a WebSocket endpoint whose connection is over: nothing more may be written
    to the socket. gunicorn learns it from ``StopIteration`` (it then closes the connection);
    werkzeug's development server writes nothing after an upgrade."""

    def __call__(self, environ, start_response):
        if "gunicorn.socket" in environ:
            raise StopIteration()
        return super().__call__(environ, start_response)
