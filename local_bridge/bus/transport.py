"""The adapter between one WebSocket connection and the hub.

The WebSocket route hands the raw socket to simple-websocket, which reads frames (in a thread
of its own, or under gevent on the event loop: :mod:`.reader`) and writes its handshake, pong
and close frames straight to that socket. Before the handshake,
:class:`Transport` puts a :class:`SocketProxy` in the raw socket's place in the WSGI environ, so
those writes join the connection's :class:`~local_bridge.bus.outbox.Outbox` like every other
message (one writer, whole buffers, no interleaving), and every read marks the peer as alive.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..protocol import CLOSE_REASONS, CloseCode, close_frame
from .outbox import Outbox

#: Where each supported WSGI server leaves the connection's socket.
SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")
_SLOW_CLOSE = close_frame(CloseCode.SLOW_CONSUMER, CLOSE_REASONS[CloseCode.SLOW_CONSUMER])


class SocketProxy:
    """Stands in for the raw socket inside simple-websocket."""

    __slots__ = ("_raw", "_outbox", "last_seen", "close_sent")  # one per connection

    def __init__(self, raw: socket.socket, outbox: Outbox):
        self._raw = raw
        self._outbox = outbox
        self.last_seen = time.monotonic()
        self.close_sent = False  # the library wrote a close frame (an echo, or 1009)

    def send(self, data: bytes) -> int:
        data = bytes(data)
        if not self.close_sent and _holds_close_frame(data):
            self.close_sent = True
        self._outbox.put(data)
        return len(data)

    sendall = send

    def recv(self, size: int) -> bytes:
        data = self._raw.recv(size)
        self.last_seen = time.monotonic()
        return data

    def seen(self) -> None:
        """The peer sent something (read past :meth:`recv`, by the loop reader)."""
        self.last_seen = time.monotonic()

    def raw_socket(self) -> socket.socket:
        return self._raw

    def close(self) -> None:
        """The library is done with the socket (its reader has stopped).

        After the library's own close frame nothing more may be sent: the outbox is closed
        behind it. When the reader stopped for another reason (the peer shut its sending side,
        or a read failed), the peer may still be reading and the connection's handler still
        has its last words to queue (a job stream's ``job_not_found`` and close 4004): the
        handler's :meth:`Transport.finish` closes the outbox after them. Closing it here made
        such a connection end with a bare FIN."""
        if self.close_sent:
            self._outbox.close()

    def fileno(self) -> int:
        return self._raw.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class Transport:
    """What the hub sees of a connection: ``send(frame)``, ``close(code)``, ``stats()``."""

    __slots__ = ("raw", "outbox", "proxy", "send", "ws", "close_code")  # one per connection

    #: Guards ``close_code`` of every transport: held for two attribute tests, never while
    #: waiting, so one lock serves them all (a lock each cost a few hundred bytes a connection).
    _close_lock = threading.Lock()

    def __init__(
        self,
        environ: dict[str, Any],
        max_queue: int,
        on_overflow: Callable[[], None] | None = None,
        on_wait: Callable[[float], None] | None = None,
    ):
        key = next((k for k in SOCKET_KEYS if k in environ), None)
        if key is None:
            raise RuntimeError("this WSGI server does not expose the connection's socket")
        # permessage-deflate costs ~5x in fan-out and ~2.5x memory per connection, and would
        # defeat serializing each event once for all recipients: it is never negotiated.
        environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        self.raw: socket.socket = environ[key]
        sender = _Sender(self.raw)
        self.outbox = Outbox(
            sender.sendall,
            max_queue,
            overflow_frame=_SLOW_CLOSE,
            on_overflow=on_overflow,
            try_send=sender.try_send,
            on_wait=on_wait,  # metrics: how long queued frames wait for the writer
        )
        self.proxy = SocketProxy(self.raw, self.outbox)
        environ[key] = self.proxy
        self.send = self.outbox.put  # the hot path: one call per delivery, no wrapper
        self.ws: Any = None  # the simple-websocket connection, once the handshake is done
        self.close_code: int | None = None

    def attach(self, ws: Any) -> None:
        """Take the connection whose handshake is done, and drop what only the handshake
        needed: wsproto's handshake state (its h11 connection, event queue and request, a few
        KiB) and the library's reference to the WSGI environ."""
        self.ws = ws
        protocol: Any = getattr(ws, "ws", None)  # wsproto's WSConnection
        opened = getattr(protocol, "connection", None)
        if opened is not None:
            protocol.handshake = _OPENED
            # wsproto queues at most an abnormal closure there (frames are parsed as they are
            # read): an empty deque costs ~700 bytes, an empty list 56
            if isinstance(getattr(opened, "_events", None), deque) and not opened._events:
                opened._events = _EventQueue()
        if getattr(ws, "environ", None) is not None:
            ws.environ = None

    @property
    def last_seen(self) -> float:
        return self.proxy.last_seen

    def close(self, code: int, reason: str = "", discard: bool = False) -> bool:
        """Send a close frame after what is queued (or instead of it, with ``discard``)."""
        with self._close_lock:
            if self.close_code is not None or self.outbox.closing:
                return False
            self.close_code = code
        self.outbox.close(close_frame(code, reason or CLOSE_REASONS.get(code, "")), discard=discard)
        self.stop_reading()
        return True

    def stop_reading(self) -> None:
        """End the connection's receive loop; its handler then cleans up."""
        if self.ws is not None:
            self.ws.connected = False
            self.ws.event.set()

    def abort(self) -> None:
        """Drop the TCP connection now, whatever is queued (dead peer, stuck writer)."""
        self.outbox.close(discard=True)
        self.stop_reading()
        _shutdown(self.raw, socket.SHUT_RDWR)

    def finish(self, grace: float) -> None:
        """Flush (within ``grace`` seconds), then release the socket and the reader thread."""
        self.outbox.close()
        if not self.outbox.wait_closed(grace):
            self.abort()
            self.outbox.wait_closed(1.0)
        # FIN after the close frame, then let the reader take the peer's answer: closing with
        # unread input would reset the connection and could destroy the close frame in flight.
        self.stop_reading()
        _shutdown(self.raw, socket.SHUT_WR)
        reader = getattr(self.ws, "thread", None)
        if reader is not None and not _join(reader, 2.0):
            _shutdown(self.raw, socket.SHUT_RDWR)
            if not _join(reader, 1.0) and hasattr(reader, "stop"):
                reader.stop()  # a loop reader must not watch a closed descriptor
        else:
            _linger(self.raw)
        try:
            self.raw.close()
        except OSError:
            pass

    def stats(self) -> dict[str, int]:
        return {
            "sent": self.outbox.sent,
            "dropped": self.outbox.dropped,
            "queue_depth": self.outbox.depth,
        }


def _holds_close_frame(data: bytes) -> bool:
    """Whether ``data``, whole frames written by the WebSocket library (or its handshake),
    contains a close frame."""
    if data.startswith(b"HTTP/"):
        return False
    at = 0
    while at + 2 <= len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        masked = data[at + 1] & 0x80
        at += 2
        if opcode == 0x8:
            return True
        if length == 126:
            length, at = int.from_bytes(data[at : at + 2], "big"), at + 2
        elif length == 127:
            length, at = int.from_bytes(data[at : at + 8], "big"), at + 8
        at += length + (4 if masked else 0)
    return False


class _Opened:
    """Stands in for wsproto's handshake state once the connection is open: wsproto then
    only asks it for pending events, and there are none."""

    __slots__ = ()

    def events(self) -> tuple[()]:
        return ()


_OPENED = _Opened()


class _EventQueue(list[Any]):
    """The little of a deque that wsproto's open connection uses of its event queue."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


class _Sender:
    """The outbox's two ways of writing to one socket (as bound methods: smaller than a pair
    of closures, and holding nothing that points back at the outbox)."""

    __slots__ = ("_send", "_os_send")

    def __init__(self, sock: socket.socket):
        self._send = sock.send
        # gevent's socket would wait (switching greenlets) on EAGAIN: its OS socket never does
        self._os_send = getattr(sock, "_sock", sock).send

    def sendall(self, data: bytes) -> None:
        """``sendall`` as a loop over ``send``: gevent's own ``sendall`` asks the kernel for the
        buffer size on every call, which costs more than the send itself for small frames."""
        send = self._send
        sent = send(data)
        if sent < len(data):
            view = memoryview(data)[sent:]
            while view:
                view = view[send(view) :]

    def try_send(self, data: bytes) -> int:
        """``send`` that neither blocks nor yields: what the kernel takes now, or
        BlockingIOError."""
        return self._os_send(data, socket.MSG_DONTWAIT)


def _linger(sock: socket.socket, seconds: float = 1.0, limit: int = 1 << 20) -> None:
    """Read and discard what the peer still sends until it closes (bounded in time and bytes):
    closing with unread input would reset the connection and could destroy the close frame
    on its way to the peer (the reader has stopped, e.g. after a 1009)."""
    try:
        sock.settimeout(seconds)
        deadline = time.monotonic() + seconds
        while limit > 0 and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return
            limit -= len(chunk)
    except OSError:
        pass


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass


def _join(thread: threading.Thread, timeout: float) -> bool:
    thread.join(timeout)
    return not thread.is_alive()
