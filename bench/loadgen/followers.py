"""Followers for the Redis scenario (``python -m bench.loadgen followers``): a witness and
``--clients`` followers of ``jobs`` on blocking sockets, one thread each, every event decoded.

``steady`` followers stay connected; ``resuming`` ones loop: stay ``--live`` seconds, drop the
TCP connection, wait ``--away`` seconds, connect to the next port and resume with ``since`` +
``epoch``. Each follower's stream is compared with the witness's (a client on the first port
that never leaves): missing, duplicated and out-of-order events.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from bench.wsclient import BlockingClient

EVENT_TYPE = "bench.event"


class Follower(threading.Thread):
    """A subscriber of ``jobs`` that records the seq of every event it receives. ``live=None``:
    stays connected; otherwise drops its connection every ``live`` seconds and resumes."""

    def __init__(
        self,
        ports: list[int],
        index: int,
        stop: threading.Event,
        live: float | None,
        away: float,
        timeout: float,
    ):
        super().__init__(daemon=True)
        self.ports, self.index, self.stop, self.live, self.away = ports, index, stop, live, away
        self.timeout = timeout
        self.seqs: list[int] = []
        self.subscribed = threading.Event()
        self.resumes = self.replayed = self.unrecovered = 0
        self.errors: dict[str, int] = {}
        self.first: int | None = (
            None  # the seq of the first `subscribed`: the stream starts after it
        )
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
            self.follow(client, replaying)
        finally:
            client.close()  # an abrupt end, as when a laptop sleeps

    def follow(self, client: BlockingClient, replaying: bool) -> None:
        """Record events until it is time to leave (``live`` seconds after the subscription
        or the replay completed), the server closes or the run stops."""
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
    """Start the witness and the followers, print ``started``, follow until a line (or end) on
    stdin, print the comparison."""
    ports = [int(x) for x in args.ports.split(",")]
    stop, witness_stop = threading.Event(), threading.Event()
    witness = Follower(ports[:1], 0, witness_stop, None, 0.2, args.timeout)
    witness.start()
    if not witness.subscribed.wait(args.timeout):
        print(json.dumps({"error": "the witness did not subscribe"}), flush=True)
        return
    group = start_group(ports, stop, args)
    print(
        json.dumps({"event": "started", "subscribed": sum(f.subscribed.is_set() for f in group)}),
        flush=True,
    )
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
    print(json.dumps(compare(args.kind, group, witness.seqs)), flush=True)


def start_group(ports: list[int], stop: threading.Event, args) -> list[Follower]:
    """The followers, started and (within ``args.timeout``) subscribed."""
    live = args.live if args.kind == "resuming" else None
    group = [Follower(ports, k, stop, live, args.away, args.timeout) for k in range(args.clients)]
    for f in group:
        f.start()
    end = time.monotonic() + args.timeout
    for f in group:
        f.subscribed.wait(max(0.0, end - time.monotonic()))
    return group


def compare(kind: str, group: list[Follower], reference: list[int]) -> dict:
    """The followers' counts, and their streams checked against the witness's."""
    result = {
        "kind": kind,
        "clients": len(group),
        "witness_events": len(reference),
        "resumes": 0,
        "replayed": 0,
        "unrecovered": 0,
        "missing": 0,
        "duplicates": 0,
        "out_of_order": 0,
        "events": 0,
        "errors": {},
    }
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
    return result
