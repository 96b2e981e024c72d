"""The gunicorn application that runs local_bridge (``local-bridge serve``).

One worker process holds every WebSocket of the in-memory bus. Its class is gevent by default
(a greenlet per connection; see docs/deployment.md for the measurement behind the choice) or
gthread. Both are subclassed so that SIGTERM and SIGINT close every WebSocket with 1001 before
the worker drains and exits, and so that the errors gunicorn answers itself, before the
application sees a request, use the JSON error envelope of API.md like every other error. When
the worker exits it closes the application (backplane threads, database connections).
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import threading
import time
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from .config import Settings
from .state import EXTENSION_KEY, state_of

GRACEFUL_TIMEOUT = 8  # seconds; with the arbiter's own steps the process exits within 10 s


def _state(worker: Any) -> Any:
    """The worker's application state, or None before the application was loaded."""
    app = getattr(worker, "wsgi", None)
    return state_of(app) if EXTENSION_KEY in getattr(app, "extensions", {}) else None


def _close_bus(worker: Any) -> None:
    state = _state(worker)
    if state is not None:
        state.bus.shutdown()


def _worker_exit(arbiter: Any, worker: Any) -> None:
    """gunicorn's ``worker_exit`` hook: the worker's last step before its interpreter ends.
    The application releases what it opened, then logging is shut down."""
    state = _state(worker)
    if state is not None:
        try:
            state.close()
        except Exception:  # the worker exits whatever happens; say what went wrong
            logging.getLogger(__name__).exception("closing the application failed")
    _release_logging()


def _release_logging() -> None:
    """Flushes and closes every logging handler, then drops logging's weak references to them.
    Otherwise a handler that lives until interpreter teardown (Flask's ``default_handler``, a
    module global) runs logging's weakref callback when it is finally freed; the callback takes
    logging's module lock, which gevent replaced with a green lock, and by then gevent's modules
    are gone: every gevent worker exit printed "Exception ignored in: _removeHandlerRef ...
    TypeError". The handlers stay attached, so a late record is still written (and flushed)."""
    logging.shutdown()
    # logging keeps no public way to forget its handlers; this list holds only the weak
    # references whose callbacks are the problem, and logging's own exit hook reads it.
    logging._handlerList.clear()  # type: ignore[attr-defined]


#: Longest message of an error gunicorn answers itself (some quote the whole request line).
MAX_ERROR_MESSAGE = 200


def _write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Stands in for ``gunicorn.util.write_error``: the same answer, as a JSON envelope.

    gunicorn's ``Worker.handle_error`` answers what it refuses before the application runs (a
    request line over 4 KiB: 414; a malformed request line or header: 400; too many or too large
    headers: 431; an application crash outside Flask: 500) with an HTML page of its own."""
    from gunicorn import util

    from .api.envelope import code_for_status  # in the worker: after gevent's patching

    code = code_for_status(status_int)
    message = mesg or reason
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[: MAX_ERROR_MESSAGE - 3] + "..."
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def _answer_errors_in_json() -> None:
    """Make gunicorn write its own error answers as JSON, in this (worker) process.

    ``handle_error`` classifies the error, logs it and writes the access log line, then calls
    ``util.write_error`` for the body: replacing that one function keeps all the rest."""
    from gunicorn import util

    util.write_error = _write_json_error


def _gevent_worker_class():
    import gevent
    import gevent.pool
    from gunicorn.workers.ggevent import GeventWorker

    class _HandedOff(gevent.Greenlet):
        """A WebSocket's greenlet after its handshake. Without the spawner's stack that gevent
        keeps for debugging (ten frame copies, ~600 bytes a connection)."""

        spawning_stack_limit = 0

    class BusGeventWorker(GeventWorker):
        """gevent worker that says goodbye (1001) to every WebSocket before draining, and ends
        at once the kept-alive connections that are only waiting for a next request."""

        def init_process(self):
            _answer_errors_in_json()
            self._idle: dict[Any, Any] = {}  # greenlet -> its IdleWait, while it waits
            self._exiting_since: float | None = None
            # The WebSockets whose requests handed them off (api.ws.HANDOFF): gunicorn's
            # pool no longer holds them, so the graceful exit waits for them here.
            self._websockets = gevent.pool.Group()
            self._websockets.greenlet_class = _HandedOff
            super().init_process()

        def load_wsgi(self):
            from .api.ws import HANDOFF

            super().load_wsgi()
            extensions = getattr(self.wsgi, "extensions", None)
            if extensions is not None:
                extensions[HANDOFF] = self._websockets.spawn

        def run(self):
            super().run()  # returns once no request is left (or at the graceful timeout)
            started = self._exiting_since or time.monotonic()
            left = max(0.0, started + self.cfg.graceful_timeout - time.monotonic())
            self._websockets.join(timeout=left)  # the bus closes them (1001) at the exit
            self._websockets.kill(timeout=1)

        def timeout_ctx(self):
            return IdleWait(self._idle, self.cfg.keepalive)

        def handle_exit(self, sig, frame):
            if self._exiting_since is None:
                self._exiting_since = time.monotonic()
            super().handle_exit(sig, frame)
            gevent.spawn(_close_bus, self)
            # Without this a browser's idle connection held the stop for the whole keepalive.
            for wait in list(self._idle.values()):
                wait.end_now()

        def handle_quit(self, sig, frame):  # SIGINT and SIGQUIT: graceful too
            self.handle_exit(sig, frame)

        def handle_request(self, listener_name, req, sock, addr):
            super().handle_request(listener_name, req, sock, addr)  # StopIteration: closing
            _skip_unread_body(req.body)

    return BusGeventWorker


class IdleWait:
    """gunicorn's wait for the next request of a kept-alive connection (at most ``seconds``),
    which :meth:`end_now` ends early as if the time were up: gunicorn then closes the
    connection quietly. Registered in ``waiting`` while it waits."""

    def __init__(self, waiting: dict[Any, IdleWait], seconds: float):
        import gevent

        self._waiting = waiting
        self._greenlet = gevent.getcurrent()
        self._timeout = gevent.Timeout(seconds, False)  # False: ends the block silently

    def __enter__(self) -> IdleWait:
        self._timeout.__enter__()
        self._waiting[self._greenlet] = self
        return self

    def __exit__(self, *exc: Any) -> bool:
        self._waiting.pop(self._greenlet, None)
        return bool(self._timeout.__exit__(*exc))

    def end_now(self) -> None:
        """Raise the timeout in the waiting greenlet at the event loop's next turn, if it is
        still waiting then (this does not wait for it to end).

        Not ``Greenlet.kill``: that raises the timeout at the next turn whatever the greenlet
        is doing by then, and a request that arrived in the same turn as the stop had been
        read, and its greenlet was serving it (a long poll, held), when the timeout reached
        it: gunicorn answered 500."""
        import gevent

        gevent.get_hub().loop.run_callback(self._end_if_waiting)

    def _end_if_waiting(self) -> None:
        # In the event loop, so the greenlet is suspended; registered: inside this block.
        if self._waiting.get(self._greenlet) is self:
            try:
                self._greenlet.throw(self._timeout)
            except BaseException:  # as gevent's own kill does: reported, not raised in the loop
                import gevent

                gevent.get_hub().handle_error(self._greenlet, *sys.exc_info())


#: What a kept-alive connection may still send of a body the application did not read (one
#: refused with 413, say) before it is closed instead, and how long it may take.
SKIP_MAX_BYTES = 8 << 20
SKIP_SECONDS = 5.0
SKIP_CHUNK = 65536


def _skip_unread_body(body: Any) -> None:
    """Read and discard what is left of a request body, yielding to the event loop between
    chunks; raise StopIteration (gunicorn then closes the connection) past the bounds.

    gunicorn's gevent worker skips such a body itself before the next request, but whole, 1 KiB
    at a time and without yielding while data is there: a client sending 10 MB after its 413
    held every other client of the worker up for 200-400 ms, and no size bounded it."""
    import gevent

    skipped = 0
    with gevent.Timeout(SKIP_SECONDS, False):  # a body announced but never sent
        while skipped <= SKIP_MAX_BYTES:
            chunk = body.read(SKIP_CHUNK)
            if not chunk:
                return
            skipped += len(chunk)
            gevent.sleep(0)  # let the other connections have the loop
    raise StopIteration("unread request body over the bound: closing")


def _gthread_worker_class():
    from gunicorn.workers.gthread import ThreadWorker

    class BusThreadWorker(ThreadWorker):
        """Threaded worker that says goodbye (1001) to every WebSocket before draining."""

        def init_process(self):
            _answer_errors_in_json()
            super().init_process()

        def handle_exit(self, sig, frame):
            super().handle_exit(sig, frame)
            threading.Thread(target=_close_bus, args=(self,), daemon=True).start()

        def handle_quit(self, sig, frame):
            self.handle_exit(sig, frame)

    return BusThreadWorker


def _tune_garbage_collector() -> None:
    """Fewer, and smaller, full collections: a server holding thousands of connections has
    hundreds of thousands of long-lived objects, and every full collection walks all of them
    while every client waits (measured: p99 delivery latency 228 ms with the defaults, 62 ms
    without collections, at 1,000 subscribers). The objects of the loaded application are
    frozen out of collection altogether; young garbage is still collected as usual."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10000, 50, 100)


def _logger_class(log_format: str) -> type:
    """gunicorn's logger, writing its own records (workers booting, errors it answers) in the
    server's format, so that with ``json`` every line on standard error is one JSON object."""
    from gunicorn.glogging import Logger

    from .observability.logs import format_like_the_server

    class BridgeLogger(Logger):
        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for handler in self.error_log.handlers:
                format_like_the_server(handler, log_format)

    return BridgeLogger


class _GracefulArbiter(Arbiter):
    """SIGINT stops as gracefully as SIGTERM: clients get 1001, then the process exits 0."""

    def handle_int(self):
        raise StopIteration


class BridgeServer(BaseApplication):
    """A gunicorn application serving :func:`local_bridge.create_app`."""

    def __init__(
        self, settings: Settings, config: dict[str, Any] | None = None, access_log: bool = True
    ):
        self.settings = settings
        self.app_config = config or {}
        self.access_log = access_log
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        connections = s.MAX_CONNECTIONS + 64  # headroom for HTTP beside the WebSockets
        options = {
            "bind": [f"[{s.HOST}]:{s.PORT}" if ":" in s.HOST else f"{s.HOST}:{s.PORT}"],
            "workers": 1,
            "worker_connections": connections,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "timeout": 60,
            "keepalive": 5,
            "backlog": 2048,
            # The access log is the application's (observability.access_log): it carries the
            # request id and follows LOCAL_BRIDGE_LOG_FORMAT.
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "info",
            "logger_class": _logger_class(s.LOG_FORMAT),
            "proc_name": "local-bridge",
            "worker_exit": _worker_exit,
        }
        if s.WORKER_CLASS == "gevent":
            options["worker_class"] = _gevent_worker_class()
        else:
            # Every WebSocket holds a pool thread for its whole life: threads must outnumber
            # connections or new connections, and plain HTTP, would stall.
            options["worker_class"] = _gthread_worker_class()
            options["threads"] = connections
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn's runtime control socket has one default path per user, which would
            # clash between several servers on one machine; the bus does not use it.
            options["control_socket_disable"] = True
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        from . import websocket_events
        from .app import create_app  # in the worker, after gevent has patched the stdlib

        app = create_app({**self.app_config, "ACCESS_LOG": self.access_log})
        websocket_events.bind(app)  # broadcast_* outside a request publish through this app
        _tune_garbage_collector()
        return app

    def run(self) -> None:
        _GracefulArbiter(self).run()
