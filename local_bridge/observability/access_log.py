"""Every HTTP request: a request id (``X-Request-ID``), one access log line, and its metrics.

The access log is the application's own (logger ``local_bridge.access``, level info), not the
WSGI server's, so its lines carry the request id and follow ``LOCAL_BRIDGE_LOG_FORMAT``. A
WebSocket connection is logged twice: when it opens and when it closes (with its close code).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, Response, g, request

from . import logs
from .metrics import BridgeMetrics

access_log = logging.getLogger("local_bridge.access")

REQUEST_ID_HEADER = "X-Request-ID"
#: A request id taken from the client: bounded, and harmless in a log line or a header.
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}\Z")
#: Endpoint name -> the ``endpoint`` label of the connection metrics.
WEBSOCKET_ENDPOINTS = {"bus_endpoint": "bus", "job_stream_endpoint": "job_stream"}
NO_STATUS_RECEIVED = 1005
ABNORMAL_CLOSURE = 1006


def request_id_of(header: str | None) -> str:
    """The client's request id when it is sane, else a fresh one."""
    if header and SAFE_REQUEST_ID.match(header):
        return header
    return uuid.uuid4().hex


def init_app(app: Flask, metrics: BridgeMetrics) -> None:
    """Give every request an id, and log and count it when it is answered.

    Register before every other ``before_request`` hook: a request another hook refuses (rate
    limit, admission) still has its id, its log line and its duration."""

    @app.before_request
    def start_request() -> None:
        g.request_started = time.perf_counter()
        rid = request_id_of(request.headers.get(REQUEST_ID_HEADER))
        g.request_id = rid
        g.request_id_token = logs.request_id.set(rid)

    @app.after_request
    def finish_request(response: Response) -> Response:
        rid = g.get("request_id")
        if rid is None:  # a hook registered before ours answered: still give it an id
            rid = g.request_id = request_id_of(request.headers.get(REQUEST_ID_HEADER))
        endpoint = request.endpoint
        status = response.status_code
        if endpoint in WEBSOCKET_ENDPOINTS and status == 200:
            return response  # an upgraded connection, over: logged by websocket_span
        response.headers[REQUEST_ID_HEADER] = rid
        seconds = time.perf_counter() - g.get("request_started", time.perf_counter())
        method = request.method
        metrics.http_answered(endpoint, method, status, seconds)
        if app.config.get("ACCESS_LOG", True) and access_log.isEnabledFor(logging.INFO):
            log_request(method, request.path, status, seconds, request.remote_addr, rid)
        return response

    @app.teardown_request
    def forget_request(exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            try:
                logs.request_id.reset(token)
            except ValueError:  # set in another context (never expected): just clear it
                logs.request_id.set(None)


def log_request(
    method: str, path: str, status: int, seconds: float, remote_addr: str | None, rid: str
) -> None:
    """Write one request's access log line.

    The record is made and handed to the logger's handlers directly, as ``Logger.info`` would
    (same filters, handlers and record), without its search of the stack for the caller: a
    request's line is always written from here."""
    duration_ms = round(seconds * 1000, 2)
    fields = {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": duration_ms,
        "remote_addr": remote_addr,
    }
    record = access_log.makeRecord(
        access_log.name,
        logging.INFO,
        __file__,
        0,
        '%s "%s %s" %s %.2fms',
        (remote_addr, method, path, status, duration_ms),
        None,
        "finish_request",
        {"fields": fields, "request_id": rid},
    )
    access_log.handle(record)


def close_code_of(connection: Any, ws: Any) -> int:
    """How a WebSocket connection ended: the code the server closed it with, 4008 for a
    slow consumer, the peer's code when the peer closed, 1009 when the WebSocket library
    closed it (a message over the limit), else 1006 (no close frame: dropped or reset)."""
    transport = connection.transport
    if transport.close_code is not None:
        return int(transport.close_code)
    if transport.outbox.overflowed:
        return 4008
    received = getattr(ws, "close_reason", None)
    if received is not None and int(received) != NO_STATUS_RECEIVED:
        return int(received)
    if transport.proxy.close_sent:
        return 1009
    return ABNORMAL_CLOSURE


@contextmanager
def websocket_span(app: Flask, metrics: BridgeMetrics, connection: Any, ws: Any) -> Iterator[None]:
    """Around a WebSocket connection's life: its client id in every log record, a log line
    and a count when it opens and when it closes."""
    endpoint = WEBSOCKET_ENDPOINTS.get(request.endpoint or "", "bus")
    client_id = connection.client.client_id
    token = logs.client_id.set(client_id)
    started = time.perf_counter()
    log_it = app.config.get("ACCESS_LOG", True) and access_log.isEnabledFor(logging.INFO)
    metrics.connection_opened(endpoint)
    if log_it:
        opened: dict[str, Any] = {
            "event": "websocket_open",
            "path": request.path,
            "remote_addr": request.remote_addr,
        }
        access_log.info(
            '%s "WEBSOCKET %s" open client_id=%s',
            request.remote_addr,
            request.path,
            client_id,
            extra={"fields": opened},
        )
    try:
        yield
    finally:
        code = close_code_of(connection, ws)
        metrics.connection_closed(endpoint, code, connection.transport.outbox.dropped)
        if log_it:
            seconds = time.perf_counter() - started
            fields: dict[str, Any] = {
                "event": "websocket_close",
                "path": request.path,
                "remote_addr": request.remote_addr,
                "close_code": code,
                "duration_ms": round(seconds * 1000, 2),
            }
            access_log.info(
                '%s "WEBSOCKET %s" closed %s after %.1fs client_id=%s',
                request.remote_addr,
                request.path,
                code,
                seconds,
                client_id,
                extra={"fields": fields},
            )
        logs.client_id.reset(token)
