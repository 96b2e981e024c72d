"""The capacity test's clients: N WebSockets opened and held in one ``selectors`` loop, each
doing the handshake, waiting for ``connected``, subscribing to ``jobs`` and waiting for
``subscribed``; then the time each one receives the marked broadcast."""

from __future__ import annotations

import errno
import json
import selectors
import socket
import threading
import time
from collections import Counter

from bench.wsclient import (
    HOST,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    close_code,
    close_frame,
    frame_at,
    handshake_request,
    handshake_status,
    masked_frame,
    read_some,
    send_some,
)

CONNECTING, HANDSHAKE, WAIT_CONNECTED, WAIT_SUBSCRIBED, OPEN, DONE = range(6)


class Conn:
    __slots__ = (
        "sock",
        "state",
        "buf",
        "out",
        "t_start",
        "t_open",
        "t_event",
        "frag",
        "frag_op",
        "events",
    )

    def __init__(self, sock: socket.socket, now: float):
        self.sock = sock
        self.state = CONNECTING
        self.buf = bytearray()
        self.out = b""
        self.t_start = now
        self.t_open: float | None = None
        self.t_event: float | None = None
        self.frag: bytearray | None = None
        self.frag_op = 0
        self.events = selectors.EVENT_WRITE


class LoadGenerator:
    """Opens ``n`` WebSockets to ``port`` and keeps them open, all in one selector loop.

    The loop runs in its own thread (:meth:`start`); the main thread only reads counters and
    calls :meth:`stop`. Every phase is bounded by the deadlines given to it.
    """

    def __init__(self, port: int, n: int, window: int, connect_timeout: float, marker: str):
        self.port = port
        self.n = n
        self.window = window
        self.connect_timeout = connect_timeout
        self.marker = marker.encode()
        self.sel = selectors.DefaultSelector()
        self.conns: list[Conn] = []
        self.inflight: set[Conn] = set()
        self.started = 0
        self.opened = 0
        self.failures: Counter[str] = Counter()
        self.lost_after_open: Counter[str] = Counter()  # open connections the server dropped
        self.event_count = 0
        self.pings = 0
        self.connect_deadline = float("inf")
        self.t_first: float | None = None
        self.t_last_open: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self.loop_error: BaseException | None = None
        self._subscribe = masked_frame(
            json.dumps({"type": "subscribe", "channels": ["jobs"]}).encode()
        )

    # -- control (main thread)

    def start(self, connect_deadline: float) -> None:
        self.connect_deadline = connect_deadline
        self._thread.start()

    @property
    def settled(self) -> int:
        """Connections that are open or have failed (or been lost)."""
        return self.opened + sum(self.failures.values())

    @property
    def open_now(self) -> int:
        return self.opened - sum(self.lost_after_open.values())

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(10)

    def close_all(self) -> None:
        """Send a 1000 close frame on every open socket and close it (after :meth:`stop`)."""
        bye = close_frame(1000)
        for c in self.conns:
            if c.sock is not None and c.state == OPEN:
                try:
                    c.sock.send(bye)
                except OSError:
                    pass
            self._close(c)
        try:
            self.sel.close()
        except (OSError, RuntimeError):
            pass

    def reset_events(self) -> None:
        for c in self.conns:
            c.t_event = None
        self.event_count = 0

    # -- the loop (load thread)

    def _run(self) -> None:
        try:
            last_sweep = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic()
                connecting = self.started < self.n and now < self.connect_deadline
                while connecting and len(self.inflight) < self.window and self.started < self.n:
                    self._open_one(now)
                timeout = 0.005 if connecting else 0.1
                for key, mask in self.sel.select(timeout):
                    self._on_ready(key.data, mask)
                now = time.monotonic()
                if self.inflight and (now - last_sweep > 0.25 or now >= self.connect_deadline):
                    last_sweep = now
                    for c in list(self.inflight):
                        if now >= self.connect_deadline:
                            self._fail(c, "connect phase deadline")
                        elif now - c.t_start > self.connect_timeout:
                            self._fail(c, f"no 'subscribed' within {self.connect_timeout:g} s")
        except BaseException as exc:  # reported by the main thread
            self.loop_error = exc

    def _open_one(self, now: float) -> None:
        self.started += 1
        if self.t_first is None:
            self.t_first = now
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            self.failures[f"socket(): {errno.errorcode.get(exc.errno, exc.errno)}"] += 1
            return
        sock.setblocking(False)
        c = Conn(sock, now)
        self.conns.append(c)
        self.inflight.add(c)
        err = sock.connect_ex((HOST, self.port))
        if err not in (0, errno.EINPROGRESS):
            self._fail(c, f"connect: {errno.errorcode.get(err, err)}")
            return
        self.sel.register(sock, selectors.EVENT_WRITE, c)

    def _fail(self, c: Conn, reason: str) -> None:
        if c.state == DONE:
            return
        if c.state == OPEN:
            self.lost_after_open[reason] += 1
        else:
            self.failures[reason] += 1
        c.state = DONE
        self.inflight.discard(c)
        if c.sock is not None:
            try:
                self.sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            self._close(c)

    @staticmethod
    def _close(c: Conn) -> None:
        if c.sock is None:
            return
        try:
            c.sock.close()
        except OSError:
            pass
        c.sock = None

    def _want(self, c: Conn, events: int) -> None:
        if c.events != events and c.sock is not None:
            c.events = events
            self.sel.modify(c.sock, events, c)

    def _send(self, c: Conn, data: bytes) -> None:
        """Send now what the socket takes, queue the rest (sent when it is writable)."""
        if c.out:
            c.out += data
            return
        sent, error = send_some(c.sock, data)
        if error is not None:
            self._fail(c, f"send: {errno.errorcode.get(error.errno, error.errno)}")
        elif sent < len(data):
            c.out = data[sent:]
            self._want(c, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def _on_ready(self, c: Conn, mask: int) -> None:
        if c.state == DONE or c.sock is None:
            return
        if mask & selectors.EVENT_WRITE and not self._writable(c):
            return
        if mask & selectors.EVENT_READ:
            self._readable(c)

    def _writable(self, c: Conn) -> bool:
        """Connected (send the handshake) or room to send more; False when done with ``c`` for now."""
        if c.state == CONNECTING:
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._fail(c, f"connect: {errno.errorcode.get(err, err)}")
                return False
            c.state = HANDSHAKE
            self._want(c, selectors.EVENT_READ)
            self._send(c, handshake_request(self.port))
            return False
        if c.out:
            sent, error = send_some(c.sock, c.out)
            if error is not None:
                self._fail(c, f"send: {errno.errorcode.get(error.errno, error.errno)}")
                return False
            c.out = c.out[sent:]
            if not c.out:
                self._want(c, selectors.EVENT_READ)
        return True

    def _readable(self, c: Conn) -> None:
        data, error = read_some(c.sock, 65536)
        if error is not None:
            self._fail(c, f"recv: {errno.errorcode.get(error.errno, error.errno)}")
        elif data == b"":
            self._fail(c, "server closed the TCP connection (EOF)")
        elif data:
            c.buf += data
            if c.state != HANDSHAKE or self._handshake(c):
                self._frames(c)

    def _handshake(self, c: Conn) -> bool:
        """Consume the server's answer to the handshake; False while incomplete or refused."""
        answer = handshake_status(c.buf)
        if answer is None:
            if len(c.buf) > 16384:
                self._fail(c, "oversized handshake answer")
            return False
        status, start = answer
        if status != "101":
            self._fail(c, f"handshake answered HTTP {status}")
            return False
        del c.buf[:start]
        c.state = WAIT_CONNECTED
        return True

    def _frames(self, c: Conn) -> None:
        """Handle every whole frame in the connection's buffer (fragments reassembled)."""
        buf = c.buf
        pos = 0
        while c.state != DONE:
            if len(buf) - pos >= 2 and buf[pos + 1] & 0x80:
                self._fail(c, "server sent a masked frame")
                return
            frame = frame_at(buf, pos)
            if frame is None:
                break
            first, start, pos = frame
            message = self._reassemble(c, first, bytes(buf[start:pos]))
            if message is not None:
                self._on_frame(c, *message)
        if c.state != DONE:
            del buf[:pos]

    def _reassemble(self, c: Conn, first: int, payload: bytes) -> tuple[int, bytes] | None:
        """(opcode, payload) of a whole message or control frame; None for a fragment that
        does not complete one."""
        opcode, fin = first & 0x0F, first & 0x80
        if opcode == OP_CONT:
            if c.frag is None:
                self._fail(c, "unexpected continuation frame")
                return None
            c.frag += payload
            if not fin:
                return None
            payload, opcode, c.frag = bytes(c.frag), c.frag_op, None
        elif opcode in (0x1, 0x2) and not fin:
            c.frag, c.frag_op = bytearray(payload), opcode
            return None
        return opcode, payload

    def _on_frame(self, c: Conn, opcode: int, payload: bytes) -> None:
        if opcode in (0x1, 0x2):
            self._message(c, payload)
        elif opcode == OP_PING:  # answer with a pong carrying the same payload
            self.pings += 1
            self._send(c, masked_frame(payload, OP_PONG))
        elif opcode == OP_CLOSE:
            self._fail(c, f"server sent close {close_code(payload) if len(payload) >= 2 else None}")

    def _message(self, c: Conn, payload: bytes) -> None:
        if c.state == OPEN:
            if self.marker in payload and c.t_event is None:
                c.t_event = time.monotonic()
                self.event_count += 1
            return
        try:
            message = json.loads(payload)
        except ValueError:
            self._fail(c, "non-JSON text frame before 'subscribed'")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if c.state == WAIT_CONNECTED:
            if kind == "connected":
                c.state = WAIT_SUBSCRIBED
                self._send(c, self._subscribe)
            elif kind == "error":
                self._fail(c, f"error before 'connected': {message.get('code')}")
        elif c.state == WAIT_SUBSCRIBED:
            if kind == "subscribed":
                if "jobs" not in (message.get("channels") or ()):
                    self._fail(c, "'subscribed' without jobs")
                    return
                c.state = OPEN
                c.t_open = time.monotonic()
                self.t_last_open = c.t_open
                self.opened += 1
                self.inflight.discard(c)
            elif kind == "error":
                self._fail(c, f"subscribe refused: {message.get('code')}")
