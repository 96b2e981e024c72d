"""A client that stops reading neither delays nor loses events for anyone else (API.md MAX_QUEUE)."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import pytest

from support import RawClient

EVENTS = 300
PAYLOAD = "x" * 32768  # big events fill the stalled client's kernel buffers quickly
# Events published after the stalled client was dropped, to show the others lose nothing then
# either. Few: from the drop on, its 4008 waits (SLOW_CLOSE_GRACE) for the test to read it, and
# publishing all of EVENTS took longer than that on a loaded machine under coverage.
AFTER_DROP = 30
# How far a healthy client may fall behind the publisher: well under MAX_QUEUE (50), so that on
# a slow machine a reader thread of this process that is starved for a moment is not mistaken
# for a slow consumer; the stalled client falls behind without bound and is still closed.
HEALTHY_LAG = 20


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_stalled_client_is_closed_4008_and_others_get_everything(make_server, worker_class):
    # The 4008 frame waits behind what the stalled socket holds until the test reads it: the
    # grace is long enough for a loaded machine to get there.
    server = make_server(MAX_QUEUE=50, WORKER_CLASS=worker_class, SLOW_CLOSE_GRACE=60)
    healthy = [server.client() for _ in range(3)]
    for client in healthy:
        client.subscribe("jobs")
    stalled = RawClient(server.port, rcvbuf=4096)
    assert stalled.status_line.startswith("HTTP/1.1 101")
    assert stalled.recv_json()["type"] == "connected"
    stalled.send_json({"type": "subscribe", "channels": ["jobs"]})
    assert stalled.recv_json()["type"] == "subscribed"
    stalled_id = [
        c
        for c in server.get("/api/websocket/clients").json()["items"]
        if c["client_id"] not in {h.client_id for h in healthy}
    ][0]["client_id"]

    # Healthy clients read as fast as they can, each in its own thread.
    received_by = {client.client_id: [] for client in healthy}
    progress = threading.Condition()
    readers = [
        threading.Thread(
            target=_read_bulk, args=(c, received_by[c.client_id], progress, "bulk.end")
        )
        for c in healthy
    ]
    for reader in readers:
        reader.start()
    # From here on the stalled client reads nothing at all.
    seqs: list[int] = []
    dropped_at = None  # the first publish that no longer reached the stalled client
    while dropped_at is None or len(seqs) < dropped_at + AFTER_DROP:
        i = len(seqs)
        assert i < EVENTS, "the stalled client was never dropped"
        with progress:
            assert progress.wait_for(
                lambda: all(len(got) >= i - HEALTHY_LAG for got in received_by.values()), 30
            ), "a healthy client stopped reading"
        body = server.publish("bulk.event", {"i": i, "pad": PAYLOAD}, channel="jobs")
        seqs.append(body["seq"])
        if dropped_at is None and body["recipients"] < len(healthy) + 1:
            dropped_at = i
    assert body["recipients"] == len(healthy)
    end = server.publish("bulk.end", {}, channel="jobs")["seq"]
    for reader in readers:
        reader.join(30)
        assert not reader.is_alive()
    for client in healthy:  # every event, in order, while the stalled one still reads nothing
        assert received_by[client.client_id] == seqs

    listed = {c["client_id"] for c in server.get("/api/websocket/clients").json()["items"]}
    assert stalled_id not in listed, "a slow consumer leaves the clients list at once"
    assert all(h.client_id in listed for h in healthy)

    # Now read what the kernel held for it: an in-order prefix of events, then close 4008.
    stalled.sock.settimeout(10)
    received = []
    while True:
        opcode, data = stalled.recv_frame()
        if opcode == 0x8:
            assert struct.unpack("!H", data[:2])[0] == 4008
            break
        assert opcode == 0x1
        received.append(json.loads(data)["seq"])
    assert received == seqs[: len(received)] and len(received) <= dropped_at
    stalled.close()

    # The bus is fine afterwards.
    last = server.publish("after.stall", {}, channel="jobs")["seq"]
    for client in healthy:
        assert client.recv()["seq"] == last > end
        client.close()


def _read_bulk(
    client, seqs: list, progress: threading.Condition | None = None, end: str | None = None
) -> None:
    """Read the seqs of ``bulk.event`` into ``seqs``: EVENTS of them, or up to an ``end``."""
    while end is not None or len(seqs) < EVENTS:
        message = client.recv(timeout=30)
        if message["type"] == end:
            return
        if message["type"] == "bulk.event":
            seqs.append(message["seq"])
            if progress is not None:
                with progress:
                    progress.notify_all()


def test_publishing_does_not_wait_for_a_stalled_client(make_server):
    """With the stalled client's buffers full, publish requests still complete at once."""
    server = make_server(MAX_QUEUE=100000)  # large bound: the client is never dropped here
    stalled = RawClient(server.port, rcvbuf=4096)
    stalled.recv_json()
    stalled.send_json({"type": "subscribe", "channels": ["jobs"]})
    stalled.recv_json()
    watcher = server.client()
    watcher.subscribe("jobs")
    received: list = []
    reader = threading.Thread(target=_read_bulk, args=(watcher, received))
    reader.start()
    started = time.monotonic()
    for i in range(EVENTS):
        server.publish("bulk.event", {"i": i, "pad": PAYLOAD}, channel="jobs")
    publishing_took = time.monotonic() - started
    entry = next(
        c
        for c in server.get("/api/websocket/clients").json()["items"]
        if c["client_id"] != watcher.client_id
    )
    assert entry["queue_depth"] > 0, "the stalled client's outbox holds what its socket cannot"
    reader.join(30)
    assert len(received) == EVENTS, f"publishing took {publishing_took:.1f}s"
    stalled.sock.shutdown(socket.SHUT_RDWR)
    stalled.close()
    watcher.close()
