"""The HTTP publisher (``python -m bench.loadgen publish``): events POSTed on keep-alive
connections, one thread each, as fast as answers come or at a fixed total rate; at most
``--count`` of them (a burst), one per request or ``--batch`` per request."""

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
) -> tuple[int, bytes, float | None]:
    """One POST on a keep-alive connection: (status, body, Retry-After seconds or None).
    ``buf[0]`` carries bytes read past the answer; raises ``ConnectionAbortedError(status)``
    when the server closes after it."""
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
    status, length, close, retry_after = _answer_head(head)
    while len(rest) < length:
        rest += _recv(sock)
    buf[0] = rest[length:]
    if close:
        raise ConnectionAbortedError(status)
    return status, rest[:length], retry_after


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("closed")
    return chunk


def _answer_head(head: bytes) -> tuple[int, int, bool, float | None]:
    """(status, Content-Length, whether the server closes, Retry-After seconds or None) of an
    HTTP answer's head."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    close = False
    retry_after = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
        elif name == b"retry-after":
            try:
                retry_after = max(0.0, float(value))
            except ValueError:  # an HTTP date: not something a bus would answer
                pass
    return status, length, close, retry_after


class Publisher:
    """``args.conns`` connections (connection k to port k modulo the ports) publishing for
    ``args.duration`` seconds; the result is one JSON line (see :meth:`run`)."""

    def __init__(self, args):
        self.args = args
        self.deadline = time.monotonic() + args.deadline
        self.lock = threading.Lock()
        self.result = {
            "ok": 0,
            "errors": {},
            "reconnects": 0,
            "http_ms": [],
            "recipients": 0,
            "throttled": 0,
        }
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
            t0=self.t0,
            events=result["ok"] * max(1, self.args.batch),
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
        if self.args.count and i >= self.args.count:
            return None
        if not self.interval:
            return None if time.monotonic() >= end else i
        due = self.t0 + i * self.interval
        if due >= end:
            return None
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        return i

    def event(self, i: int) -> dict:
        return {
            "type": EVENT_TYPE,
            "channel": "jobs",
            "data": {
                "t": time.time(),
                "i": i,
                "task": "bench",
                "progress": 45.5,
                "message": "Analyzing image quality" + self.pad,
            },
        }

    def body(self, i: int) -> bytes:
        """Request ``i``: one event, or ``--batch`` of them as ``{"events": [...]}``."""
        size = self.args.batch
        doc = {"events": [self.event(i * size + j) for j in range(size)]} if size else self.event(i)
        return json.dumps(doc, separators=(",", ":")).encode()

    def connection(self, k: int) -> None:
        """One connection's loop; its counts are added to the result at the end."""
        sock, port = self.socks[k], self.ports[k % len(self.ports)]
        buf = [b""]
        lat: list[float] = []
        ok = recipients = throttled = 0
        errors: dict[str, int] = {}
        self.go.wait()
        end = min(self.t0 + self.args.duration, self.deadline)
        while (i := self.next_event(end)) is not None:
            while True:  # once more after each 429/503 with Retry-After, as a polite client
                t = time.perf_counter()
                try:
                    status, answer, retry_after = http_post(
                        sock, port, self.args.path, self.body(i), buf
                    )
                except ConnectionAbortedError as exc:  # answered, then the server closed
                    status, answer, retry_after = exc.args[0], b"", None
                    sock.close()
                    sock = socket.create_connection((HOST, port), timeout=self.args.timeout)
                    buf = [b""]
                    with self.lock:
                        self.result["reconnects"] += 1
                except (OSError, ValueError, IndexError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    sock, buf = self.reconnect(sock, port), [b""]
                    break
                if (
                    status in (429, 503)
                    and retry_after is not None
                    and time.monotonic() + retry_after < end
                ):
                    throttled += 1
                    time.sleep(retry_after)
                    continue
                lat.append(time.perf_counter() - t)
                if status in (200, 202):
                    ok += 1
                    recipients += _recipients(answer)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1
                break
        with self.lock:
            self.result["throttled"] += throttled
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
        recipients = json.loads(answer).get("recipients", 0)
        return sum(recipients) if isinstance(recipients, list) else int(recipients)
    except (ValueError, AttributeError, TypeError):
        return 0
