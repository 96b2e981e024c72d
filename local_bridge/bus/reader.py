"""Reading a connection's frames without a thread of its own, under gevent.

simple-websocket reads each connection in a thread that loops over ``recv``; under gevent that
is a greenlet per connection, with a saved stack and a ``threading.Thread`` around it, for a
socket that is idle nearly all the time. :class:`LoopReader` takes that thread's place
(simple-websocket accepts a ``thread_class``): the event loop calls it when the socket is
readable, it runs the library's own frame handling on what arrived, and between frames a
connection costs one I/O watcher.

Everything it calls runs on the event loop and must not wait: the socket is read without
blocking, and what the library writes back (pongs, close answers) goes to the connection's
outbox, whose ``put`` never waits either.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any, cast

from wsproto.utilities import LocalProtocolError

from .green import gevent_patched

log = logging.getLogger(__name__)


def reader_class() -> Callable[..., Any]:
    """simple-websocket's ``thread_class`` for this process: :class:`LoopReader` under gevent,
    :class:`ThreadReader` otherwise."""
    return LoopReader if gevent_patched("socket") else ThreadReader


class ThreadReader(threading.Thread):
    """simple-websocket's own reader thread, which wakes the connection's receiver as it ends.

    The library's loop can end after its last wake-up: on a message over ``max_message_size``
    (1009) or a protocol error it sets the event, and only then marks the connection closed. A
    receiver that woke in between saw it still open and slept again, holding the closed
    connection in the clients list until its next heartbeat (up to 30 s)."""

    def __init__(self, target: Callable[[], None]):
        super().__init__(target=target)
        self._ws: Any = cast(Any, target).__self__

    def run(self) -> None:
        try:
            super().run()
        finally:
            ws, self._ws = self._ws, None
            ws.connected = False
            ws.event.set()


class LoopReader:
    """Stands in for simple-websocket's reader thread: same loop body, driven by the loop."""

    __slots__ = ("_ws", "name", "_recv", "_watcher", "_ended", "_joined")  # one per connection

    def __init__(self, target: Callable[[], None]):
        # The bound method's object: the simple_websocket.Server whose _thread this replaces.
        self._ws: Any = cast(Any, target).__self__
        self.name = "simple_websocket.LoopReader"
        self._recv: Any = None
        self._watcher: Any = None
        self._ended = False
        # made only when someone waits for the end (the connection's last moments), not for
        # the whole life of every connection
        self._joined: threading.Event | None = None

    def start(self) -> None:
        import gevent

        ws = self._ws
        if ws.ping_interval:  # the library's own pings need its thread; this bus never asks
            raise ValueError("LoopReader does not send pings")
        raw = ws.sock.raw_socket()
        self._recv = getattr(raw, "_sock", raw).recv  # the OS socket: never waits, never yields
        self._watcher = gevent.get_hub().loop.io(raw.fileno(), 1)
        self._watcher.start(self._readable)

    def _readable(self) -> None:
        ws = self._ws
        try:
            data = self._recv(ws.receive_bytes, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        try:
            if not data:
                raise OSError("connection closed by the peer")
            ws.sock.seen()
            ws.ws.receive_data(data)
            ws.connected = ws._handle_events()
        except (OSError, LocalProtocolError):
            ws.connected = False
            ws.event.set()
        except Exception:  # a bug must end this connection, never the event loop
            log.exception("reading a WebSocket failed")
            ws.connected = False
            ws.event.set()
        if not ws.connected:
            self.stop()
            ws.sock.close()

    def stop(self) -> None:
        """Stop reading (idempotent); the connection is then over for the library."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()
        # The library's connection holds this reader (its ``thread``): without the way back, the
        # pair is freed by reference counting, not left to the rare full collections.
        self._ws = self._recv = None
        self._ended = True
        if self._joined is not None:
            self._joined.set()

    def join(self, timeout: float | None = None) -> None:
        if self._ended:
            return
        if self._joined is None:
            self._joined = threading.Event()
        self._joined.wait(timeout)

    def is_alive(self) -> bool:
        return not self._ended
