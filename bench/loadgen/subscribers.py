"""Many WebSocket subscribers in one process, driven by one epoll loop (``python -m bench.loadgen
clients``; the command protocol is in ``bench.loadgen``).

Events are counted from frame headers alone: a text frame whose payload starts with the event
prefix (``{"type":"bench.event"`` or ``42["bench.event"``) is one delivery; nothing else is
decoded, except the samplers' events (``json.loads``, for the publish timestamp ``t`` they carry)
and the few setup replies. Pings are answered with pongs (Engine.IO ``2`` with ``3``), close
frames are answered and their codes counted.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import sys
import time

from bench.wsclient import (
    HOST,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_code,
    frame_at,
    handshake_request,
    handshake_status,
    masked_frame,
    read_some,
    send_some,
)

EVENT_TYPE = "bench.event"

HANDSHAKE, WAIT_OPEN, WAIT_NS, WAIT_SUBSCRIBED, READY, CLOSED = range(6)
READ, WRITE, ERRMASK = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR | select.EPOLLHUP
# Each protocol's setup dialogue: (in state, a text frame starting with, go to state, and answer).
SETUP = {
    "bus": (
        (
            WAIT_OPEN,
            b'{"type":"connected"',
            WAIT_SUBSCRIBED,
            b'{"type":"subscribe","channels":["jobs"]}',
        ),
        (WAIT_SUBSCRIBED, b'{"type":"subscribed"', READY, b""),
    ),
    "socketio": (
        (WAIT_OPEN, b"0", WAIT_NS, b"40"),  # Engine.IO open, then the namespace
        (WAIT_NS, b"40", WAIT_SUBSCRIBED, b'42["subscribe",{"channels":["jobs"]}]'),
        (WAIT_SUBSCRIBED, b'42["subscribed"', READY, b""),
    ),
}


class Conn:
    """One subscriber's socket, where it is in its setup, and its counts."""

    __slots__ = (
        "index",
        "sock",
        "fd",
        "recv",
        "state",
        "buf",
        "out",
        "count",
        "sampler",
        "t_start",
        "t_ready",
        "stalled",
        "close_code",
        "registered",
        "events",
        "seen",
    )

    def __init__(self, index: int, sock: socket.socket, sampler: bool):
        self.index = index
        self.sock = sock
        self.fd = sock.fileno()
        self.recv = sock.recv
        self.state = HANDSHAKE
        self.buf = b""
        self.out = b""
        self.count = 0
        self.sampler = sampler
        self.t_start = time.monotonic()
        self.t_ready = 0.0
        self.stalled = False
        self.close_code: int | None = None
        self.registered = 0
        self.events = 0  # decoded-sample counter (for decode_every)
        self.seen = 0  # every event since connect


class Clients:
    """The subscribers of one process and the loop that drives them (:meth:`run`)."""

    def __init__(self, port: int, proto: str, deadline: float):
        self.port = port
        self.proto = proto
        self.deadline = deadline
        self.ep = select.epoll()
        self.fdmap: dict[int, Conn] = {}
        self.conns: list[Conn] = []
        self.pending: list[int] = []  # indexes not yet started
        self.inflight = 0
        self.concurrency = 64
        self.connect_deadline = 0.0
        self.connecting = False
        self.connect_started = 0.0
        self.failures: dict[str, int] = {}
        self.closes: dict[str, int] = {}
        self.decode_every = 0
        self.latencies: list[float] = []
        self.t_reset = time.monotonic()
        self.t_last = 0.0  # when the last event arrived (poll time), since the reset
        self.frames_other = 0
        self.small_rcvbuf: set[int] = set()
        if proto == "socketio":
            self.path = "/socket.io/?EIO=4&transport=websocket"
            self.prefix = b'42["' + EVENT_TYPE.encode() + b'"'
            self.skip = 2  # payload: 42[name, data]
        else:
            self.path = "/ws"
            self.prefix = b'{"type":"' + EVENT_TYPE.encode() + b'"'
            self.skip = 0
        self.stdin_buf = b""
        self.quit = False

    # ---------------------------------------------------------------- commands

    def reply(self, doc: dict) -> None:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()

    def on_stdin(self) -> None:
        data = os.read(sys.stdin.fileno(), 65536)
        if not data:
            self.quit = True
            return
        self.stdin_buf += data
        while b"\n" in self.stdin_buf:
            line, self.stdin_buf = self.stdin_buf.split(b"\n", 1)
            if line.strip():
                self.command(json.loads(line))

    def command(self, cmd: dict) -> None:
        handler = self.COMMANDS.get(cmd.get("cmd"))
        if handler is None:
            self.reply({"error": f"unknown command {cmd.get('cmd')!r}"})
        else:
            handler(self, cmd)

    def cmd_connect(self, cmd: dict) -> None:
        """Start opening connections; answered by :meth:`finish_connect`."""
        n = int(cmd["n"])
        self.concurrency = int(cmd.get("concurrency", 64))
        self.connect_deadline = min(
            self.deadline, time.monotonic() + float(cmd.get("timeout", 120))
        )
        sample = max(1, int(cmd.get("sample", 100)))
        stride = max(1, n // sample)
        self.small_rcvbuf = set(cmd.get("small_rcvbuf") or ())
        base = len(self.conns)
        self.pending = list(range(base, base + n))
        self.conns.extend([None] * n)  # type: ignore[list-item]
        self._sampler_stride = stride
        self.connecting = True
        self.connect_started = time.monotonic()
        self.pump_connects()

    def cmd_reset(self, cmd: dict) -> None:
        self.decode_every = int(cmd.get("decode_every", 0))
        for c in self.conns:
            if c is not None:
                c.count = 0
                c.events = 0
        self.latencies = []
        self.closes = {}
        self.frames_other = 0
        self.t_reset = time.monotonic()
        self.t_last = 0.0
        self.reply({"ok": True, "t": self.t_reset})

    def cmd_stats(self, cmd: dict) -> None:
        self.reply(self.stats(bool(cmd.get("latencies")), cmd.get("exclude") or ()))

    def cmd_stall(self, cmd: dict) -> None:
        c = self.conns[int(cmd["index"])]
        if c is not None and c.registered:
            self._unregister(c)
        if c is not None:
            c.stalled = True
        self.reply({"ok": c is not None})

    def cmd_resume(self, cmd: dict) -> None:
        c = self.conns[int(cmd["index"])]
        if c is not None:
            c.stalled = False
            if c.state != CLOSED and not c.registered:
                self._want(c, READ | (WRITE if c.out else 0))
        self.reply(
            {
                "ok": c is not None,
                "state": None if c is None else c.state,
                "close_code": None if c is None else c.close_code,
            }
        )

    def cmd_conn(self, cmd: dict) -> None:
        c = self.conns[int(cmd["index"])]
        self.reply(
            {
                "state": None if c is None else c.state,
                "close_code": None if c is None else c.close_code,
                "seen": None if c is None else c.seen,
            }
        )

    def cmd_quit(self, cmd: dict) -> None:
        self.quit = True

    COMMANDS = {
        "connect": cmd_connect,
        "reset": cmd_reset,
        "stats": cmd_stats,
        "stall": cmd_stall,
        "resume": cmd_resume,
        "conn": cmd_conn,
        "quit": cmd_quit,
    }

    def stats(self, with_latencies: bool, exclude) -> dict:
        exclude = set(exclude)
        counts = [
            c.count
            for c in self.conns
            if c is not None and c.state == READY and c.index not in exclude
        ]
        total = sum(c.count for c in self.conns if c is not None and c.index not in exclude)
        states: dict[str, int] = {}
        for c in self.conns:
            key = "none" if c is None else str(c.state)
            states[key] = states.get(key, 0) + 1
        doc = {
            "t": time.monotonic(),
            "since": time.monotonic() - self.t_reset,
            "t_last": self.t_last,
            "received": total,
            "ready": sum(1 for c in self.conns if c is not None and c.state == READY),
            "min": min(counts) if counts else 0,
            "max": max(counts) if counts else 0,
            "closes": self.closes,
            "failures": self.failures,
            "states": states,
            "other_frames": self.frames_other,
            "n_latencies": len(self.latencies),
            "cpu_user": os.times().user,
            "cpu_sys": os.times().system,
        }
        if with_latencies:
            doc["latencies"] = [round(x, 6) for x in self.latencies]
        return doc

    # ---------------------------------------------------------------- connecting

    def pump_connects(self) -> None:
        now = time.monotonic()
        while self.pending and self.inflight < self.concurrency and now < self.connect_deadline:
            index = self.pending.pop(0)
            self.open_one(index)
        if (
            self.connecting
            and self.inflight == 0
            and (not self.pending or now >= self.connect_deadline)
        ):
            self.finish_connect()

    def finish_connect(self) -> None:
        self.connecting = False
        if self.pending:
            self.failures["not_started"] = self.failures.get("not_started", 0) + len(self.pending)
        self.pending = []
        setup = sorted(
            c.t_ready - c.t_start for c in self.conns if c is not None and c.state == READY
        )
        self.reply(
            {
                "ok": sum(1 for c in self.conns if c is not None and c.state == READY),
                "failures": self.failures,
                "wall": time.monotonic() - self.connect_started,
                "setup": [round(x, 5) for x in setup],
            }
        )

    def open_one(self, index: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if index in self.small_rcvbuf:
            # The slow client: a small receive window and a small MSS (the server's send buffer
            # autotunes from the MSS), so kernel buffers hold tens of KiB rather than megabytes
            # and the server's own queue fills soon after the client stops reading.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sock.setblocking(False)
        c = Conn(index, sock, sampler=(index % self._sampler_stride == 0))
        self.conns[index] = c
        self.inflight += 1
        err = sock.connect_ex((HOST, self.port))
        if err not in (0, errno.EINPROGRESS):
            self.fail(c, f"connect:{errno.errorcode.get(err, err)}")
            return
        c.out = handshake_request(self.port, self.path)
        self._want(c, WRITE)

    def fail(self, c: Conn, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1
        self.drop(c)

    def drop(self, c: Conn) -> None:
        was_setup = c.state not in (READY, CLOSED)
        c.state = CLOSED
        if c.registered:
            self._unregister(c)
        try:
            c.sock.close()
        except OSError:
            pass
        if was_setup:
            self.inflight -= 1

    def _want(self, c: Conn, events: int) -> None:
        if c.stalled:
            return
        if c.registered == 0:
            self.ep.register(c.fd, events)
            self.fdmap[c.fd] = c
        elif c.registered != events:
            self.ep.modify(c.fd, events)
        c.registered = events

    def _unregister(self, c: Conn) -> None:
        try:
            self.ep.unregister(c.fd)
        except (OSError, ValueError):
            pass
        self.fdmap.pop(c.fd, None)
        c.registered = 0

    def send(self, c: Conn, data: bytes) -> None:
        """Send now what the socket takes, queue the rest (``flush`` sends it when writable)."""
        if c.state == CLOSED:
            return
        if c.out:
            c.out += data
            return
        sent, error = send_some(c.sock, data)
        if error is not None:
            self.on_eof(c, "send_error")
        elif sent < len(data):
            c.out = data[sent:]
            self._want(c, READ | WRITE)

    def flush(self, c: Conn) -> None:
        sent, error = send_some(c.sock, c.out)
        if error is not None:
            if c.state == HANDSHAKE:
                self.fail(c, f"connect:{error.__class__.__name__}")
            else:
                self.on_eof(c, "send_error")
            return
        c.out = c.out[sent:]
        if not c.out:
            self._want(c, READ)

    # ---------------------------------------------------------------- reading

    def on_event(self, c: Conn, mask: int, now: float) -> None:
        if c.state == HANDSHAKE and c.registered == WRITE:  # the connect finished (or failed)
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err or mask & ERRMASK:
                self.fail(c, f"connect:{errno.errorcode.get(err, err) if err else 'hup'}")
                return
            self.flush(c)
            return
        if mask & WRITE and not mask & (READ | ERRMASK):
            if c.out:
                self.flush(c)
            elif c.registered != READ:
                self._want(c, READ)
            return
        if mask & WRITE and c.out:
            self.flush(c)
            if c.state == CLOSED:
                return
        if mask & (READ | ERRMASK):
            data, error = read_some(c.sock, 262144)
            if error is not None:
                self.on_eof(c, f"recv:{error.__class__.__name__}")
            elif data == b"":
                self.on_eof(c, "eof")
            elif data and c.state == HANDSHAKE:
                self.on_handshake(c, data)
            elif data:
                self.on_frames(c, data, now)

    def on_eof(self, c: Conn, reason: str) -> None:
        if c.state != READY and c.state != CLOSED:
            self.fail(c, f"setup:{reason}")
            return
        if c.state == READY:
            key = "eof_without_close" if c.close_code is None else None
            if key:
                self.closes[key] = self.closes.get(key, 0) + 1
        self.drop(c)

    def on_handshake(self, c: Conn, data: bytes) -> None:
        c.buf += data
        answer = handshake_status(c.buf)
        if answer is None:
            if len(c.buf) > 65536:
                self.fail(c, "handshake:too_long")
            return
        status, start = answer
        if status != "101":
            self.fail(c, "handshake:" + status)
            return
        c.state = WAIT_OPEN
        data, c.buf = c.buf[start:], b""
        if data:
            self.on_frames(c, data, time.monotonic())

    def on_frames(self, c: Conn, data: bytes, now: float) -> None:
        """Every whole frame of what arrived (events counted, the rest handled); keep the tail."""
        buf = c.buf + data if c.buf else data
        pos = 0
        prefix = self.prefix
        count = 0
        while (frame := frame_at(buf, pos)) is not None:
            first, start, pos = frame
            if c.state == READY and buf.startswith(prefix, start):
                count += 1
                if c.sampler and self.decode_every:
                    c.events += 1
                    if c.events % self.decode_every == 0:
                        self.sample(buf[start:pos], now)
                continue
            if not self.on_control(c, first & 0x0F, buf[start:pos], count):
                return
        c.count += count
        c.seen += count
        if count:
            self.t_last = now
        c.buf = buf[pos:] if pos < len(buf) else b""

    def on_control(self, c: Conn, op: int, payload: bytes, count: int) -> bool:
        """A frame other than an event; False when it ended the connection (``count``: the
        events of this read so far, credited before the connection is dropped)."""
        if op == OP_TEXT:
            self.on_text(c, payload)
        elif op == OP_PING:
            self.send(c, masked_frame(payload, OP_PONG))
        elif op == OP_CLOSE:
            code = close_code(payload)
            c.close_code = code
            self.closes[str(code)] = self.closes.get(str(code), 0) + 1
            self.send(c, masked_frame(payload[:2], OP_CLOSE))
            if c.state != READY:
                self.fail(c, f"setup:close{code}")
                return False
            c.buf = b""
            c.count += count
            c.seen += count
            self.drop(c)
            return False
        else:
            self.frames_other += 1
        return c.state != CLOSED

    def sample(self, payload: bytes, now: float) -> None:
        try:
            doc = json.loads(payload[self.skip :])
            if self.skip:
                doc = doc[1]
            self.latencies.append(time.time() - float(doc["t"]))
        except (ValueError, KeyError, IndexError, TypeError):
            pass

    def on_text(self, c: Conn, payload: bytes) -> None:
        """Setup replies and other non-event text frames."""
        if self.proto == "socketio" and payload == b"2":  # Engine.IO ping
            self.send(c, masked_frame(b"3"))
            return
        for state, start, after, answer in SETUP[self.proto]:
            if c.state == state and payload.startswith(start):
                if after == READY:
                    self.ready(c)
                else:
                    c.state = after
                    self.send(c, masked_frame(answer))
                return
        self.frames_other += 1

    def ready(self, c: Conn) -> None:
        c.state = READY
        c.t_ready = time.monotonic()
        self.inflight -= 1
        if self.connecting:
            self.pump_connects()

    # ---------------------------------------------------------------- loop

    def run(self) -> None:
        """Serve commands and connections until ``quit``, end of stdin or the deadline."""
        stdin = sys.stdin.fileno()
        os.set_blocking(stdin, False)
        self.ep.register(stdin, READ)
        last_check = time.monotonic()
        try:
            while not self.quit and time.monotonic() < self.deadline:
                now = self.poll_once(stdin)
                if self.connecting and now - last_check > 0.2:
                    last_check = now
                    self.check_connects(now)
        finally:
            for c in self.conns:
                if c is not None and c.state != CLOSED:
                    try:
                        c.sock.close()
                    except OSError:
                        pass

    def check_connects(self, now: float) -> None:
        if now >= self.connect_deadline:
            for c in self.conns:
                if c is not None and c.state not in (READY, CLOSED):
                    self.fail(c, "setup:timeout")
        self.pump_connects()

    def poll_once(self, stdin: int) -> float:
        """Handle what one ``epoll.poll`` reports; return the time it returned at."""
        events = self.ep.poll(0.2, 16384)
        now = time.monotonic()
        fdmap, prefix = self.fdmap, self.prefix
        counted = 0
        for fd, mask in events:
            c = fdmap.get(fd)
            if c is None:
                if fd == stdin:
                    self.on_stdin()
                continue
            if not (c.state == READY and mask == READ and not c.buf):
                if c.state != CLOSED:
                    self.on_event(c, mask, now)
                continue
            try:
                data = c.recv(262144)
            except BlockingIOError:
                continue
            except OSError as exc:
                self.on_eof(c, f"recv:{exc.__class__.__name__}")
                continue
            # The hot path, kept inline (a call per event costs the clients' CPU): a read that
            # is exactly one whole event frame, the usual case, is counted from its header alone.
            size = len(data)
            if size > 2:
                n, head = data[1], 2
                if n == 126:
                    n, head = (data[2] << 8) | data[3], 4
                if head + n == size and data[0] == 0x81 and data.startswith(prefix, head):
                    c.count += 1
                    c.seen += 1
                    counted += 1
                    if c.sampler and self.decode_every:
                        c.events += 1
                        if c.events % self.decode_every == 0:
                            self.sample(data[head:], now)
                    continue
            if not data:
                self.on_eof(c, "eof")
            else:
                self.on_frames(c, data, now)
        if counted:
            self.t_last = now
        return now
