"""What the hostile-input suites watch while they attack: the server's worker, its clients list,
its log, and a polite client whose events must keep arriving, in order and on time.

The polite client and its publisher connect from their own loopback addresses (127.0.0.2 and
127.0.0.3; Linux routes all of 127/8 to the server on 127.0.0.1), so the per-address limits
that hold the attacker back on 127.0.0.1 never count them.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from support import BusClient, ServerProcess

POLITE_ADDRESS = "127.0.0.2"
PUBLISHER_ADDRESS = "127.0.0.3"
TICK = "hostile.tick"
POLL = 0.02  # seconds between two looks at the server's state while waiting for it to settle


def worker_pids(server: ServerProcess) -> set[int]:
    """The pids of the gunicorn workers under the server's arbiter (its own process)."""
    arbiter = server.process.pid
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its parenthesis
        if int(stat.rpartition(")")[2].split()[1]) == arbiter:
            pids.add(int(entry))
    return pids


def client_ids(server: ServerProcess) -> set[str]:
    response = server.get("/api/websocket/clients?limit=500")
    assert response.status_code == 200, response.text
    return {c["client_id"] for c in response.json()["items"]}


def settle(server: ServerProcess, expected: set[str], timeout: float = 15.0) -> None:
    """Wait until the clients list is ``expected`` again: nothing an attack opened is left."""
    deadline = time.monotonic() + timeout
    while (listed := client_ids(server)) != expected:
        assert time.monotonic() < deadline, (
            f"left over: {listed - expected}, gone: {expected - listed}"
        )
        time.sleep(POLL)  # the list is state, not an event: polling it is the only way


def log_size(server: ServerProcess) -> int:
    """Where the server log ends now: :func:`tracebacks` reads on from there."""
    return len(server.log())


def tracebacks(server: ServerProcess, since: int = 0) -> list[str]:
    """The server log's tracebacks (after its first ``since`` characters), with some context."""
    log = server.log()[since:]
    found, at = [], log.find("Traceback")
    while at != -1:
        found.append(log[max(0, at - 300) : at + 1500])
        at = log.find("Traceback", at + 1)
    return found


def polite_socket(server: ServerProcess) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((POLITE_ADDRESS, 0))
    sock.connect(("127.0.0.1", server.port))
    return sock


@dataclass
class Tick:
    i: int
    seq: int
    latency: float


@dataclass
class PoliteClient:
    """A registered bus client subscribed to ``jobs`` that reads everything it is sent, and a
    publisher that publishes one ``hostile.tick`` over REST every ``1/rate`` seconds; each
    tick carries the moment it was published, so the client measures publish→receive."""

    server: ServerProcess
    rate: float = 20.0
    ticks: list[Tick] = field(default_factory=list)
    published: list[int] = field(default_factory=list)  # seqs, in publishing order
    problems: list[str] = field(default_factory=list)

    def start(self) -> PoliteClient:
        self.client = BusClient(self.server.ws_url, socket=polite_socket(self.server))
        self.client.register("gui", "polite client")
        self.client.subscribe("jobs")
        self._stop = threading.Event()
        self._arrived = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._publisher = threading.Thread(target=self._publish, daemon=True)
        self._reader.start()
        self._publisher.start()
        return self

    def _publish(self) -> None:
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.server.port, timeout=10, source_address=(PUBLISHER_ADDRESS, 0)
        )
        i = 0
        next_at = time.monotonic()
        while True:
            last = self._stop.is_set()  # the last one tells the reader that all are out
            data = {"i": i, "t": time.monotonic(), "last": last}
            body = json.dumps({"type": TICK, "channel": "jobs", "data": data})
            try:
                conn.request(
                    "POST",
                    "/api/websocket/broadcast",
                    body,
                    {"Content-Type": "application/json", "Host": f"127.0.0.1:{self.server.port}"},
                )
                response = conn.getresponse()
                answer = response.read()
            except OSError as exc:
                self.problems.append(f"publish {i} failed: {exc!r}")
                break
            if response.status != 202:
                self.problems.append(f"publish {i} refused: {response.status} {answer[:200]!r}")
                break
            self.published.append(json.loads(answer)["seq"])
            if last:
                break
            i += 1
            # A polite client: after a stall of this process it goes on at its rate, without
            # a burst to catch up (which a server's HTTP_RATE may rightly refuse).
            next_at = max(next_at + 1 / self.rate, time.monotonic())
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        conn.close()

    def _read(self) -> None:
        try:
            while True:
                message = self.client.recv(timeout=10)
                received = time.monotonic()
                if message.get("type") != TICK:
                    self.problems.append(f"unexpected message: {message}")
                    continue
                with self._arrived:
                    self.ticks.append(Tick(message["i"], message["seq"], received - message["t"]))
                    self._arrived.notify_all()
                if message["last"]:
                    return
        except Exception as exc:  # closed, timed out: the polite client lost its service
            self.problems.append(f"polite client: {exc!r}")

    def wait_ticks(self, more: int, timeout: float = 30.0) -> None:
        """Wait until ``more`` further events have arrived: the attack lasts that long."""
        with self._arrived:
            target = len(self.ticks) + more
            assert self._arrived.wait_for(
                lambda: len(self.ticks) >= target or self.problems, timeout
            )
        assert not self.problems, self.problems

    def stop(self) -> None:
        """Stop publishing, let the reader take the last events, and check the service."""
        self._stop.set()
        self._publisher.join(15)
        self._reader.join(15)
        self.client.close()
        assert not self.problems, self.problems
        assert [t.i for t in self.ticks] == list(range(len(self.published))), "lost or reordered"
        assert [t.seq for t in self.ticks] == self.published

    def latencies(self) -> list[float]:
        return sorted(t.latency for t in self.ticks)

    def p99(self) -> float:
        values = self.latencies()
        return values[min(len(values) - 1, int(len(values) * 0.99))] if values else 0.0
