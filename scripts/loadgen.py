#!/usr/bin/env python3
"""Load generator for ``scripts/bench``: WebSocket subscribers and an HTTP publisher.

Two modes, both on raw sockets and 127.0.0.1 only:

``loadgen.py clients --port P --proto bus|socketio``
    Many WebSocket subscribers in one process, driven by one epoll loop. Commands arrive as JSON
    lines on stdin, one JSON line is answered on stdout for each:

    * ``{"cmd": "connect", "n": 500, "concurrency": 64, "timeout": 120, "sample": 100,
      "small_rcvbuf": [0]}``: open ``n`` connections (at most ``concurrency`` handshakes in flight),
      each doing the handshake, waiting for ``connected``, subscribing to ``jobs`` and waiting for
      ``subscribed`` (Socket.IO: open packet, ``40``, ``subscribe`` event, ``subscribed`` event).
      ``sample`` connections, spread evenly, are latency samplers; the listed indexes get a
      4 KiB receive buffer (the slow client). Answers counts and per-connection setup times.
    * ``{"cmd": "reset", "decode_every": 1}``: zero the counters; from now on samplers decode
      every ``decode_every``-th event for latency (0: none).
    * ``{"cmd": "stats", "latencies": true}``: counters (and the latency samples so far).
    * ``{"cmd": "stall", "index": 0}`` / ``{"cmd": "resume", "index": 0}``: stop / restart
      reading one connection (the slow client).
    * ``{"cmd": "quit"}`` (or end of stdin): close everything and exit.

    Events are counted from frame headers alone: a text frame whose payload starts with the
    event prefix (``{"type":"bench.event"`` or ``42["bench.event"``) is one delivery; nothing
    else is decoded, except the samplers' events (``json.loads``, for the publish timestamp
    ``t`` they carry) and the few setup replies. Pings are answered with pongs (Engine.IO
    ``2`` with ``3``), close frames are answered and their codes counted.

``loadgen.py publish --port P[,P2...] --conns 4 --duration 10 [--rate 20]``
    POSTs ``{"type": "bench.event", "channel": "jobs", "data": {"t": <time.time()>, ...}}`` to
    ``/api/websocket/broadcast`` on ``--conns`` keep-alive connections, one thread each, as fast
    as answers come (or at ``--rate`` events/s in total), for ``--duration`` seconds; with several
    ports, connection k publishes to port k modulo their number. Prints
    ``{"event": "started"}`` once every connection is open, then one JSON result line.

``loadgen.py followers --ports P1,P2 --clients 10 --kind resuming|steady``
    A witness and ``--clients`` followers of ``jobs`` on blocking sockets, one thread each, every
    event decoded. ``steady`` followers stay connected; ``resuming`` ones loop: stay ``--live``
    seconds, drop the TCP connection, wait ``--away`` seconds, connect to the next port of
    ``--ports`` and resume with ``since`` + ``epoch``. Prints ``{"event": "started"}`` once all
    are subscribed; runs until a line (or end) on stdin, then prints one JSON result line:
    resumes, replayed events, ``recovered: false`` count, and each follower's stream compared
    with the witness's (a client on the first port that never leaves): missing, duplicated and
    out-of-order events.

Every loop is bounded by a deadline (``--deadline`` seconds after start, then the process exits).
"""
from __future__ import annotations

import argparse
import base64
import errno
import json
import os
import resource
import select
import socket
import struct
import sys
import threading
import time

HOST = "127.0.0.1"
EVENT_TYPE = "bench.event"
MASK = b"\x9b\x3e\xa1\x57"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def masked_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """A final, masked client frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = (MASK * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + MASK + body


# ============================================================================ subscribers

HANDSHAKE, WAIT_OPEN, WAIT_NS, WAIT_SUBSCRIBED, READY, CLOSED = range(6)
READ, WRITE, ERRMASK = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR | select.EPOLLHUP


class Conn:
    __slots__ = ("index", "sock", "fd", "recv", "state", "buf", "out", "count", "sampler", "t_start",
                 "t_ready", "stalled", "close_code", "registered", "events", "seen")

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
        self.seen = 0    # every event since connect


class Clients:
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
        name = cmd.get("cmd")
        if name == "connect":
            n = int(cmd["n"])
            self.concurrency = int(cmd.get("concurrency", 64))
            self.connect_deadline = min(self.deadline, time.monotonic() + float(cmd.get("timeout", 120)))
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
        elif name == "reset":
            self.decode_every = int(cmd.get("decode_every", 0))
            for c in self.conns:
                if c is not None:
                    c.count = 0
                    c.events = 0
            self.latencies = []
            self.closes = {}
            self.frames_other = 0
            self.t_reset = time.monotonic()
            self.reply({"ok": True, "t": self.t_reset})
        elif name == "stats":
            self.reply(self.stats(bool(cmd.get("latencies")), cmd.get("exclude") or ()))
        elif name == "stall":
            c = self.conns[int(cmd["index"])]
            if c is not None and c.registered:
                self._unregister(c)
            if c is not None:
                c.stalled = True
            self.reply({"ok": c is not None})
        elif name == "resume":
            c = self.conns[int(cmd["index"])]
            if c is not None:
                c.stalled = False
                if c.state != CLOSED and not c.registered:
                    self._want(c, READ | (WRITE if c.out else 0))
            self.reply({"ok": c is not None, "state": None if c is None else c.state,
                        "close_code": None if c is None else c.close_code})
        elif name == "conn":
            c = self.conns[int(cmd["index"])]
            self.reply({"state": None if c is None else c.state,
                        "close_code": None if c is None else c.close_code,
                        "seen": None if c is None else c.seen})
        elif name == "quit":
            self.quit = True
        else:
            self.reply({"error": f"unknown command {name!r}"})

    def stats(self, with_latencies: bool, exclude) -> dict:
        exclude = set(exclude)
        counts = [c.count for c in self.conns if c is not None and c.state == READY
                  and c.index not in exclude]
        total = sum(c.count for c in self.conns if c is not None and c.index not in exclude)
        states: dict[str, int] = {}
        for c in self.conns:
            key = "none" if c is None else str(c.state)
            states[key] = states.get(key, 0) + 1
        doc = {"t": time.monotonic(), "since": time.monotonic() - self.t_reset, "received": total,
               "ready": sum(1 for c in self.conns if c is not None and c.state == READY),
               "min": min(counts) if counts else 0, "max": max(counts) if counts else 0,
               "closes": self.closes, "failures": self.failures, "states": states,
               "other_frames": self.frames_other, "n_latencies": len(self.latencies),
               "cpu_user": os.times().user, "cpu_sys": os.times().system}
        if with_latencies:
            doc["latencies"] = [round(x, 6) for x in self.latencies]
        return doc

    # ---------------------------------------------------------------- connecting

    def pump_connects(self) -> None:
        now = time.monotonic()
        while self.pending and self.inflight < self.concurrency and now < self.connect_deadline:
            index = self.pending.pop(0)
            self.open_one(index)
        if self.connecting and self.inflight == 0 and (not self.pending or now >= self.connect_deadline):
            self.finish_connect()

    def finish_connect(self) -> None:
        self.connecting = False
        for index in self.pending:
            self.failures["not_started"] = self.failures.get("not_started", 0) + 1
        self.pending = []
        setup = sorted(c.t_ready - c.t_start for c in self.conns if c is not None and c.state == READY)
        self.reply({"ok": sum(1 for c in self.conns if c is not None and c.state == READY),
                    "failures": self.failures, "wall": time.monotonic() - self.connect_started,
                    "setup": [round(x, 5) for x in setup]})

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
        key = base64.b64encode(os.urandom(16)).decode()
        c.out = (f"GET {self.path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
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
        if c.state == CLOSED:
            return
        if c.out:
            c.out += data
            return
        try:
            sent = c.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.on_eof(c, "send_error")
            return
        if sent < len(data):
            c.out = data[sent:]
            self._want(c, READ | WRITE)

    def flush(self, c: Conn) -> None:
        try:
            sent = c.sock.send(c.out)
        except BlockingIOError:
            return
        except OSError as exc:
            if c.state == HANDSHAKE:
                self.fail(c, f"connect:{exc.__class__.__name__}")
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
            try:
                data = c.sock.recv(262144)
            except BlockingIOError:
                return
            except OSError as exc:
                self.on_eof(c, f"recv:{exc.__class__.__name__}")
                return
            if not data:
                self.on_eof(c, "eof")
                return
            if c.state == HANDSHAKE:
                self.on_handshake(c, data)
            else:
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
        end = c.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(c.buf) > 65536:
                self.fail(c, "handshake:too_long")
            return
        head, c.buf = c.buf[:end], c.buf[end + 4:]
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            self.fail(c, "handshake:" + status.decode("latin-1", "replace")[9:12])
            return
        c.state = WAIT_OPEN
        if c.buf:
            data, c.buf = c.buf, b""
            self.on_frames(c, data, time.monotonic())

    def on_frames(self, c: Conn, data: bytes, now: float) -> None:
        buf = c.buf + data if c.buf else data
        size = len(buf)
        pos = 0
        prefix = self.prefix
        count = 0
        while size - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2:pos + 10], "big")
                head = 10
            start = pos + head
            end = start + n
            if end > size:
                break
            pos = end
            if c.state == READY and buf.startswith(prefix, start):
                count += 1
                if c.sampler and self.decode_every:
                    c.events += 1
                    if c.events % self.decode_every == 0:
                        self.sample(buf[start:end], now)
                continue
            op = b0 & 0x0F
            if op == OP_TEXT:
                self.on_text(c, buf[start:end])
            elif op == OP_PING:
                self.send(c, masked_frame(buf[start:end], OP_PONG))
            elif op == OP_CLOSE:
                code = struct.unpack("!H", buf[start:start + 2])[0] if n >= 2 else 1005
                c.close_code = code
                self.closes[str(code)] = self.closes.get(str(code), 0) + 1
                self.send(c, masked_frame(buf[start:start + 2], OP_CLOSE))
                if c.state != READY:
                    self.fail(c, f"setup:close{code}")
                    return
                c.buf = b""
                c.count += count
                c.seen += count
                self.drop(c)
                return
            else:
                self.frames_other += 1
            if c.state == CLOSED:
                return
        c.count += count
        c.seen += count
        c.buf = buf[pos:] if pos < size else b""

    def sample(self, payload: bytes, now: float) -> None:
        try:
            doc = json.loads(payload[self.skip:])
            if self.skip:
                doc = doc[1]
            self.latencies.append(time.time() - float(doc["t"]))
        except (ValueError, KeyError, IndexError, TypeError):
            pass

    def on_text(self, c: Conn, payload: bytes) -> None:
        """Setup replies and other non-event text frames."""
        if self.proto == "socketio":
            if payload == b"2":  # Engine.IO ping
                self.send(c, masked_frame(b"3"))
            elif c.state == WAIT_OPEN and payload[:1] == b"0":
                c.state = WAIT_NS
                self.send(c, masked_frame(b"40"))
            elif c.state == WAIT_NS and payload[:2] == b"40":
                c.state = WAIT_SUBSCRIBED
                self.send(c, masked_frame(b'42["subscribe",{"channels":["jobs"]}]'))
            elif c.state == WAIT_SUBSCRIBED and payload.startswith(b'42["subscribed"'):
                self.ready(c)
            else:
                self.frames_other += 1
            return
        if c.state == WAIT_OPEN and payload.startswith(b'{"type":"connected"'):
            c.state = WAIT_SUBSCRIBED
            self.send(c, masked_frame(b'{"type":"subscribe","channels":["jobs"]}'))
        elif c.state == WAIT_SUBSCRIBED and payload.startswith(b'{"type":"subscribed"'):
            self.ready(c)
        else:
            self.frames_other += 1

    def ready(self, c: Conn) -> None:
        c.state = READY
        c.t_ready = time.monotonic()
        self.inflight -= 1
        if self.connecting:
            self.pump_connects()

    # ---------------------------------------------------------------- loop

    def run(self) -> None:
        stdin = sys.stdin.fileno()
        os.set_blocking(stdin, False)
        self.ep.register(stdin, READ)
        last_check = time.monotonic()
        fdmap = self.fdmap
        prefix = self.prefix
        monotonic = time.monotonic
        try:
            while not self.quit:
                now = monotonic()
                if now >= self.deadline:
                    break
                events = self.ep.poll(0.2, 16384)
                now = monotonic()
                for fd, mask in events:
                    c = fdmap.get(fd)
                    if c is None:
                        if fd == stdin:
                            self.on_stdin()
                        continue
                    # Fast path: a subscribed client with nothing pending whose read is exactly
                    # one whole event frame (the usual case): count it from its header alone.
                    if c.state == READY and mask == READ and not c.buf:
                        try:
                            data = c.recv(262144)
                        except BlockingIOError:
                            continue
                        except OSError as exc:
                            self.on_eof(c, f"recv:{exc.__class__.__name__}")
                            continue
                        size = len(data)
                        if size > 2:
                            n = data[1]
                            head = 2
                            if n == 126:
                                n = (data[2] << 8) | data[3]
                                head = 4
                            if head + n == size and data[0] == 0x81 and data.startswith(prefix, head):
                                c.count += 1
                                c.seen += 1
                                if c.sampler and self.decode_every:
                                    c.events += 1
                                    if c.events % self.decode_every == 0:
                                        self.sample(data[head:], now)
                                continue
                        if not data:
                            self.on_eof(c, "eof")
                        else:
                            self.on_frames(c, data, now)
                    elif c.state != CLOSED:
                        self.on_event(c, mask, now)
                if self.connecting and now - last_check > 0.2:
                    last_check = now
                    if now >= self.connect_deadline:
                        for c in self.conns:
                            if c is not None and c.state not in (READY, CLOSED):
                                self.fail(c, "setup:timeout")
                    self.pump_connects()
        finally:
            for c in self.conns:
                if c is not None and c.state != CLOSED:
                    try:
                        c.sock.close()
                    except OSError:
                        pass


# ============================================================================ publisher

def http_post(sock: socket.socket, port: int, path: str, body: bytes, buf: list) -> tuple[int, bytes]:
    sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:" + str(port).encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    data = buf[0]
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    buf[0] = rest[length:]
    if close:
        raise ConnectionAbortedError(status)
    return status, rest[:length]


def publish(args) -> None:
    deadline = time.monotonic() + args.deadline
    lock = threading.Lock()
    result = {"ok": 0, "errors": {}, "reconnects": 0, "http_ms": [], "recipients": 0}
    counter = [0]
    pad = "x" * max(0, args.pad)
    socks = []
    ports = [int(x) for x in args.port.split(",")]
    for k in range(args.conns):
        s = socket.create_connection((HOST, ports[k % len(ports)]), timeout=args.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    start_barrier = threading.Event()
    t0 = [0.0]
    interval = 1.0 / args.rate if args.rate > 0 else 0.0

    def worker(k: int) -> None:
        sock = socks[k]
        port = ports[k % len(ports)]
        buf = [b""]
        lat = []
        ok = 0
        recipients = 0
        errors: dict[str, int] = {}
        start_barrier.wait()
        end = min(t0[0] + args.duration, deadline)
        while True:
            with lock:
                i = counter[0]
                counter[0] += 1
            if interval:
                due = t0[0] + i * interval
                now = time.monotonic()
                if due >= end:
                    break
                if due > now:
                    time.sleep(due - now)
            elif time.monotonic() >= end:
                break
            body = json.dumps({"type": EVENT_TYPE, "channel": "jobs",
                               "data": {"t": time.time(), "i": i, "task": "bench", "progress": 45.5,
                                        "message": "Analyzing image quality" + pad}},
                              separators=(",", ":")).encode()
            t = time.perf_counter()
            try:
                status, answer = http_post(sock, port, args.path, body, buf)
            except ConnectionAbortedError as exc:  # answered, then the server closed
                status, answer = exc.args[0], b""
                sock.close()
                sock = socket.create_connection((HOST, port), timeout=args.timeout)
                buf = [b""]
                with lock:
                    result["reconnects"] += 1
            except (OSError, ValueError, IndexError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                try:
                    sock.close()
                    sock = socket.create_connection((HOST, port), timeout=args.timeout)
                except OSError:
                    time.sleep(0.05)
                buf = [b""]
                continue
            lat.append(time.perf_counter() - t)
            if status in (200, 202):
                ok += 1
                if answer:
                    try:
                        recipients += int(json.loads(answer).get("recipients", 0))
                    except (ValueError, AttributeError, TypeError):
                        pass
            else:
                errors[str(status)] = errors.get(str(status), 0) + 1
        with lock:
            result["ok"] += ok
            result["recipients"] += recipients
            result["http_ms"].extend(x * 1000 for x in lat)
            for key, value in errors.items():
                result["errors"][key] = result["errors"].get(key, 0) + value
        try:
            sock.close()
        except OSError:
            pass

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(args.conns)]
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    for t in threads:
        t.start()
    print(json.dumps({"event": "started"}), flush=True)
    t0[0] = time.monotonic()
    start_barrier.set()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - t0[0]
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    lat = sorted(result.pop("http_ms"))
    result.update(elapsed=elapsed, rate=result["ok"] / elapsed if elapsed else 0.0,
                  http_p50_ms=lat[len(lat) // 2] if lat else None,
                  http_p99_ms=lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None)
    print(json.dumps(result), flush=True)


# ============================================================================ followers

class BlockingClient:
    """One WebSocket client on a blocking socket: handshake, server frames in, masked frames out."""

    def __init__(self, port: int, timeout: float):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf, self.pos = b"", 0
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buf = self.buf[self.pos:] + chunk
        self.pos = 0

    def _frame(self) -> tuple[int, bytes] | None:
        buf, pos = self.buf, self.pos
        if len(buf) - pos < 2:
            return None
        n, head = buf[pos + 1] & 0x7F, 2
        if n == 126:
            if len(buf) - pos < 4:
                return None
            n, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
        elif n == 127:
            if len(buf) - pos < 10:
                return None
            n, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
        end = pos + head + n
        if end > len(buf):
            return None
        self.pos = end
        return buf[pos] & 0x0F, buf[pos + head:end]

    def message(self) -> dict | None:
        """The next text message, decoded; None for a close frame. Pings are answered. Raises
        ``TimeoutError`` when nothing complete arrives within the socket's timeout."""
        while True:
            frame = self._frame()
            if frame is None:
                self._fill()
                continue
            opcode, payload = frame
            if opcode == OP_TEXT:
                return json.loads(payload)
            if opcode == OP_PING:
                self.send(payload, OP_PONG)
            elif opcode == OP_CLOSE:
                return None

    def send(self, payload: bytes, opcode: int = OP_TEXT) -> None:
        self.sock.sendall(masked_frame(payload, opcode))

    def send_json(self, doc: dict) -> None:
        self.send(json.dumps(doc).encode())

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Follower(threading.Thread):
    """A subscriber of ``jobs`` that records the seq of every event it receives. ``live=None``:
    stays connected; otherwise drops its connection every ``live`` seconds and resumes."""

    def __init__(self, ports: list[int], index: int, stop: threading.Event, live: float | None,
                 away: float, timeout: float):
        super().__init__(daemon=True)
        self.ports, self.index, self.stop, self.live, self.away = ports, index, stop, live, away
        self.timeout = timeout
        self.seqs: list[int] = []
        self.subscribed = threading.Event()
        self.resumes = self.replayed = self.unrecovered = 0
        self.errors: dict[str, int] = {}
        self.first: int | None = None  # the seq of the first `subscribed`: the stream starts after it
        self.since: int | None = None  # the newest seq received (or subscribed at)
        self.epoch: str | None = None

    def run(self) -> None:
        cycle = 0
        while not self.stop.is_set():
            port = self.ports[(self.index + cycle) % len(self.ports)]
            cycle += 1
            try:
                self.visit(port)
            except (OSError, ValueError) as exc:  # TimeoutError and ConnectionError included
                name = type(exc).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
            if self.stop.wait(self.away):
                return

    def visit(self, port: int) -> None:
        """One connection: subscribe (resuming after the last seq seen), follow, leave."""
        client = BlockingClient(port, self.timeout)
        try:
            client.sock.settimeout(0.25)
            hello = self._next(client, time.monotonic() + self.timeout)
            request: dict = {"type": "subscribe", "channels": ["jobs"]}
            replaying = self.since is not None
            if replaying:
                request.update(since=self.since, epoch=self.epoch)
                self.resumes += 1
            self.epoch = hello.get("epoch", self.epoch)
            client.send_json(request)
            leave = float("inf")
            while not self.stop.is_set() and time.monotonic() < leave:
                try:
                    m = client.message()
                except TimeoutError:
                    continue
                if m is None:
                    break
                kind = m.get("type")
                if kind == EVENT_TYPE:
                    self.seqs.append(m["seq"])
                    self.since = m["seq"]
                    self.replayed += replaying
                elif kind == "subscribed":
                    if self.since is None:
                        self.since = self.first = m["seq"]
                        self.subscribed.set()
                    if not replaying and self.live is not None:
                        leave = time.monotonic() + self.live
                elif kind == "replay_complete":
                    replaying = False
                    self.unrecovered += not m["recovered"]
                    if self.live is not None:
                        leave = time.monotonic() + self.live
        finally:
            client.close()  # an abrupt end, as when a laptop sleeps

    def _next(self, client: BlockingClient, until: float) -> dict:
        while time.monotonic() < until:
            try:
                m = client.message()
            except TimeoutError:
                continue
            if m is None:
                raise ConnectionError("closed before connected")
            return m
        raise TimeoutError("no connected message")


def followers(args) -> None:
    ports = [int(x) for x in args.ports.split(",")]
    stop, witness_stop = threading.Event(), threading.Event()
    witness = Follower(ports[:1], 0, witness_stop, None, 0.2, args.timeout)
    witness.start()
    if not witness.subscribed.wait(args.timeout):
        print(json.dumps({"error": "the witness did not subscribe"}), flush=True)
        return
    live = args.live if args.kind == "resuming" else None
    group = [Follower(ports, k, stop, live, args.away, args.timeout) for k in range(args.clients)]
    for f in group:
        f.start()
    end = time.monotonic() + args.timeout
    for f in group:
        f.subscribed.wait(max(0.0, end - time.monotonic()))
    print(json.dumps({"event": "started", "subscribed": sum(f.subscribed.is_set() for f in group)}),
          flush=True)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), done.set()), daemon=True).start()
    done.wait(args.deadline)
    stop.set()
    for f in group:
        f.join(5)
    # the witness may be behind the followers of the other port: let it catch up
    newest = max((f.seqs[-1] for f in group if f.seqs), default=0)
    until = time.monotonic() + 10
    while (not witness.seqs or witness.seqs[-1] < newest) and time.monotonic() < until:
        time.sleep(0.05)
    witness_stop.set()
    witness.join(5)
    reference = witness.seqs
    result = {"kind": args.kind, "clients": len(group), "witness_events": len(reference),
              "resumes": 0, "replayed": 0, "unrecovered": 0, "missing": 0, "duplicates": 0,
              "out_of_order": 0, "events": 0, "errors": {}}
    for f in group:
        seqs = f.seqs
        result["resumes"] += f.resumes
        result["replayed"] += f.replayed
        result["unrecovered"] += f.unrecovered
        result["events"] += len(seqs)
        for name, count in f.errors.items():
            result["errors"][name] = result["errors"].get(name, 0) + count
        if f.first is None or not seqs:
            continue
        expected = {s for s in reference if f.first < s <= seqs[-1]}
        got = set(seqs)
        result["missing"] += len(expected - got)
        result["duplicates"] += len(seqs) - len(got)
        result["out_of_order"] += sum(1 for a, b in zip(seqs, seqs[1:]) if b <= a)
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="load generator for scripts/bench")
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("clients")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--proto", choices=["bus", "socketio"], default="bus")
    c.add_argument("--deadline", type=float, default=1800.0)
    p = sub.add_parser("publish")
    p.add_argument("--port", required=True, help="port, or ports separated by commas")
    p.add_argument("--path", default="/api/websocket/broadcast")
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=0.0, help="events/s in total (0: as fast as possible)")
    p.add_argument("--pad", type=int, default=0, help="extra characters in each event")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP exchange")
    p.add_argument("--deadline", type=float, default=600.0)
    f = sub.add_parser("followers")
    f.add_argument("--ports", required=True, help="ports separated by commas")
    f.add_argument("--clients", type=int, default=10)
    f.add_argument("--kind", choices=["resuming", "steady"], default="resuming")
    f.add_argument("--live", type=float, default=0.5, help="seconds connected per visit")
    f.add_argument("--away", type=float, default=0.2, help="seconds disconnected between visits")
    f.add_argument("--timeout", type=float, default=10.0)
    f.add_argument("--deadline", type=float, default=600.0)
    args = parser.parse_args()
    raise_nofile()
    if args.mode == "clients":
        Clients(args.port, args.proto, time.monotonic() + args.deadline).run()
    elif args.mode == "followers":
        followers(args)
    else:
        publish(args)


if __name__ == "__main__":
    main()
