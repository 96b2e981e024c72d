"""The HTTP publisher (``python -m bench.loadgen publish``): events POSTed on keep-alive
connections, one thread each, as fast as answers come or at a fixed total rate."""

from __future__ import annotations

import json
import resource
import socket
import threading
import time

from bench.wsclient import HOST

EVENT_TYPE = "bench.event"


def http_post(
    sock: socket.socket, port: int, path: str, body: bytes, buf: list
) -> tuple[int, bytes]:
    """One POST on a keep-alive connection: (status, body). ``buf[0]`` carries bytes read past
    the answer; raises ``ConnectionAbortedError(status)`` when the server closes after it."""
    sock.sendall(
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: 127.0.0.1:"
        + str(port).encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    data = buf[0]
    while b"\r\n\r\n" not in data:
        data += _recv(sock)
    head, _, rest = data.partition(b"\r\n\r\n")
    status, length, close = _answer_head(head)
    while len(rest) < length:
        rest += _recv(sock)
    buf[0] = rest[length:]
    if close:
        raise ConnectionAbortedError(status)
    return status, rest[:length]


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("closed")
    return chunk


def _answer_head(head: bytes) -> tuple[int, int, bool]:
    """(status, Content-Length, whether the server closes) of an HTTP answer's head."""
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
    return status, length, close


class Publisher:
    """``args.conns`` connections (connection k to port k modulo the ports) publishing for
    ``args.duration`` seconds; the result is one JSON line (see :meth:`run`)."""

    def __init__(self, args):
        self.args = args
        self.deadline = time.monotonic() + args.deadline
        self.lock = threading.Lock()
        self.result = {"ok": 0, "errors": {}, "reconnects": 0, "http_ms": [], "recipients": 0}
        self.counter = 0
        self.pad = "x" * max(0, args.pad)
        self.ports = [int(x) for x in args.port.split(",")]
        self.socks = [self.connect(self.ports[k % len(self.ports)]) for k in range(args.conns)]
        self.go = threading.Event()
        self.t0 = 0.0
        self.interval = 1.0 / args.rate if args.rate > 0 else 0.0

    def connect(self, port: int) -> socket.socket:
        sock = socket.create_connection((HOST, port), timeout=self.args.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def run(self) -> None:
        """Print ``{"event": "started"}`` once connected, publish, print the result."""
        threads = [
            threading.Thread(target=self.connection, args=(k,), daemon=True)
            for k in range(self.args.conns)
        ]
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        for t in threads:
            t.start()
        print(json.dumps({"event": "started"}), flush=True)
        self.t0 = time.monotonic()
        self.go.set()
        for t in threads:
            t.join(max(0.0, self.deadline - time.monotonic()))
        elapsed = time.monotonic() - self.t0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        result = self.result
        result["cpu_s"] = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
        lat = sorted(result.pop("http_ms"))
        result.update(
            elapsed=elapsed,
            rate=result["ok"] / elapsed if elapsed else 0.0,
            http_p50_ms=lat[len(lat) // 2] if lat else None,
            http_p99_ms=lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        )
        print(json.dumps(result), flush=True)

    def next_event(self, end: float) -> int | None:
        """The number of the next event, once it is due; None when publishing is over."""
        with self.lock:
            i = self.counter
            self.counter += 1
        if not self.interval:
            return None if time.monotonic() >= end else i
        due = self.t0 + i * self.interval
        if due >= end:
            return None
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        return i

    def body(self, i: int) -> bytes:
        return json.dumps(
            {
                "type": EVENT_TYPE,
                "channel": "jobs",
                "data": {
                    "t": time.time(),
                    "i": i,
                    "task": "bench",
                    "progress": 45.5,
                    "message": "Analyzing image quality" + self.pad,
                },
            },
            separators=(",", ":"),
        ).encode()

    def connection(self, k: int) -> None:
        """One connection's loop; its counts are added to the result at the end."""
        sock, port = self.socks[k], self.ports[k % len(self.ports)]
        buf = [b""]
        lat: list[float] = []
        ok = recipients = 0
        errors: dict[str, int] = {}
        self.go.wait()
        end = min(self.t0 + self.args.duration, self.deadline)
        while (i := self.next_event(end)) is not None:
            t = time.perf_counter()
            try:
                status, answer = http_post(sock, port, self.args.path, self.body(i), buf)
            except ConnectionAbortedError as exc:  # answered, then the server closed
                status, answer = exc.args[0], b""
                sock.close()
                sock = socket.create_connection((HOST, port), timeout=self.args.timeout)
                buf = [b""]
                with self.lock:
                    self.result["reconnects"] += 1
            except (OSError, ValueError, IndexError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                sock, buf = self.reconnect(sock, port), [b""]
                continue
            lat.append(time.perf_counter() - t)
            if status in (200, 202):
                ok += 1
                recipients += _recipients(answer)
            else:
                errors[str(status)] = errors.get(str(status), 0) + 1
        self.add(ok, recipients, lat, errors)
        try:
            sock.close()
        except OSError:
            pass

    def reconnect(self, sock: socket.socket, port: int) -> socket.socket:
        try:
            sock.close()
            return socket.create_connection((HOST, port), timeout=self.args.timeout)
        except OSError:
            time.sleep(0.05)
            return sock

    def add(self, ok: int, recipients: int, lat: list[float], errors: dict[str, int]) -> None:
        with self.lock:
            self.result["ok"] += ok
            self.result["recipients"] += recipients
            self.result["http_ms"].extend(x * 1000 for x in lat)
            for key, value in errors.items():
                self.result["errors"][key] = self.result["errors"].get(key, 0) + value


def _recipients(answer: bytes) -> int:
    if not answer:
        return 0
    try:
        return int(json.loads(answer).get("recipients", 0))
    except (ValueError, AttributeError, TypeError):
        return 0
