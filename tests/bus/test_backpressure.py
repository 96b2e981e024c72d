"""Back-pressure on publishers: :meth:`Hub.wait_for_writers` holds a publisher while the
writers of the latest fan-out lag, and never for a peer whose socket is full."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from local_bridge.bus.hub import BACKLOG_HIGH, BACKLOG_LOW, Client, Hub
from local_bridge.bus.outbox import Outbox
from local_bridge.protocol import make_event

TIMEOUT = 10.0


class GatedSocket:
    """A sendall that blocks while ``gate`` is clear: a writer that cannot make progress
    although its socket has room (the process gives it no time)."""

    made: list[GatedSocket] = []

    def __init__(self) -> None:
        GatedSocket.made.append(self)
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0
        self.called = threading.Event()

    def sendall(self, data: bytes) -> None:
        self.calls += 1
        self.called.set()
        assert self.gate.wait(TIMEOUT), "the test never released the writer"


class OutboxTransport:
    """The part of a connection's transport the hub's back-pressure reads: ``outbox``."""

    def __init__(self, outbox: Outbox):
        self.outbox = outbox

    def send(self, frame: bytes, direct: bool = True) -> bool:
        return self.outbox.put(frame, direct)

    def close(self, code: int, reason: str = "", discard: bool = False) -> bool:
        return self.outbox.close(discard=discard)

    def stats(self) -> dict[str, int]:
        return {"sent": self.outbox.sent, "dropped": 0, "queue_depth": self.outbox.depth}


@pytest.fixture
def outboxes():
    made: list[Outbox] = []
    yield made
    for sock in GatedSocket.made:
        sock.gate.set()  # never leave a writer blocked
    GatedSocket.made.clear()
    for outbox in made:
        outbox.close(discard=True)
        assert outbox.wait_closed(TIMEOUT)


def connect(hub: Hub, outbox: Outbox) -> Client:
    client = Client(OutboxTransport(outbox))
    hub.add(client)
    hub.subscribe(client, ["system"])
    return client


def publish(hub: Hub, count: int) -> None:
    for i in range(count):
        hub.deliver(make_event(i + 1, "bench.tick", "system", {"i": i}))


def stalled_writer(outboxes: list[Outbox]) -> tuple[Outbox, GatedSocket]:
    """An outbox whose writer is stuck in its first sendall, so later frames stay queued."""
    sock = GatedSocket()
    sock.gate.clear()
    outbox = Outbox(sock.sendall, limit=1000)
    outboxes.append(outbox)
    assert outbox.put(b"first", direct=False)
    assert sock.called.wait(TIMEOUT)
    return outbox, sock


def test_a_publisher_waits_while_most_writers_lag_and_goes_on_once_they_catch_up(outboxes):
    hub = Hub()
    stuck = [stalled_writer(outboxes) for _ in range(5)]
    for outbox, _ in stuck:
        connect(hub, outbox)
    publish(hub, BACKLOG_HIGH + 5)
    assert all(outbox.depth > BACKLOG_HIGH for outbox, _ in stuck)

    assert hub.wait_for_writers(0.05) is False  # every writer is behind: the time runs out

    released = threading.Timer(0.1, lambda: [sock.gate.set() for _, sock in stuck])
    released.start()
    try:
        assert hub.wait_for_writers(TIMEOUT) is True
    finally:
        released.join(TIMEOUT)
    assert sorted(outbox.depth for outbox, _ in stuck)[2] <= BACKLOG_LOW


def test_one_lagging_writer_among_many_holds_nobody(outboxes):
    hub = Hub()
    outbox, _ = stalled_writer(outboxes)
    connect(hub, outbox)
    for _ in range(4):
        idle = Outbox(lambda data: None, limit=1000)
        outboxes.append(idle)
        connect(hub, idle)
    publish(hub, BACKLOG_HIGH + 5)
    assert outbox.depth > BACKLOG_HIGH

    started = time.monotonic()
    assert hub.wait_for_writers(TIMEOUT) is True
    assert time.monotonic() - started < TIMEOUT / 2


def test_a_peer_that_does_not_read_holds_nobody(outboxes):
    """A full socket is the slow-consumer limit's business, not a reason to hold publishers."""
    ours, theirs = socket.socketpair()
    try:
        # Blocking, so that MSG_DONTWAIT alone decides (a socket with a timeout polls first);
        # the writer's sendall ends when `theirs` closes.
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

        def try_send(data: bytes) -> int:
            return ours.send(data, socket.MSG_DONTWAIT)

        outbox = Outbox(ours.sendall, limit=100_000, try_send=try_send)
        outboxes.append(outbox)
        hub = Hub()
        connect(hub, outbox)
        deadline = time.monotonic() + TIMEOUT
        seq = 0
        while not (outbox.socket_full and outbox.depth > BACKLOG_HIGH):
            assert time.monotonic() < deadline, "the socket never filled"
            seq += 1
            hub.deliver(make_event(seq, "bench.tick", "system", {"pad": "x" * 1000}))

        assert hub.wait_for_writers(TIMEOUT) is True
        assert outbox.socket_full  # still nobody reading: it was not waited for
    finally:
        theirs.close()  # the writer's sendall fails now, and it stops
        ours.close()


def test_nothing_published_yet_holds_nobody():
    assert Hub().wait_for_writers(0.0) is True
