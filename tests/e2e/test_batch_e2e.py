"""``POST /api/events/batch`` on the real server: subscribers get the batch in order, and a
refused batch reaches nobody; on Redis, nothing another process publishes lands inside a
batch."""

from __future__ import annotations

import pytest

from interleave import publishing_meanwhile
from redis_support import drop_prefix, fresh_prefix, redis_url
from support import ServerProcess, error, expect_only_marker, marker


def cancelled(i: int) -> dict:
    return {"type": "job_cancelled", "channel": "jobs", "data": {"job_id": f"b{i}"}}


def test_subscribers_get_the_batch_in_order_with_consecutive_seqs(server: ServerProcess, connect):
    subscriber = connect()
    subscriber.subscribe("jobs")
    answer = server.post("/api/events/batch", json={"events": [cancelled(i) for i in range(100)]})
    assert answer.status_code == 202, answer.text
    seqs = answer.json()["seqs"]
    assert seqs == list(range(seqs[0], seqs[0] + 100))
    assert answer.json()["recipients"] == [1] * 100
    received = [subscriber.recv() for _ in range(100)]
    assert [(m["seq"], m["job_id"]) for m in received] == [(s, f"b{i}") for i, s in enumerate(seqs)]


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_a_batch_longer_than_max_queue_reaches_every_reading_subscriber(make_server, worker_class):
    """Enough subscribers that the fan-out is queued for the flusher, which cannot run while
    the batch fans out: clients that read must not be taken for slow consumers (4008)."""
    server = make_server(MAX_QUEUE=50, WORKER_CLASS=worker_class)
    subscribers = [server.client() for _ in range(40)]
    for subscriber in subscribers:
        subscriber.subscribe("jobs")
    answer = server.post("/api/events/batch", json={"events": [cancelled(i) for i in range(200)]})
    assert answer.status_code == 202, answer.text
    seqs = answer.json()["seqs"]
    assert answer.json()["recipients"] == [40] * 200
    for subscriber in subscribers:
        assert [subscriber.recv()["seq"] for _ in seqs] == seqs
    listed = server.get("/api/websocket/clients").json()["items"]
    assert {c["client_id"] for c in listed} == {s.client_id for s in subscribers}


def test_a_refused_batch_reaches_nobody(server: ServerProcess, connect):
    subscriber = connect()
    subscriber.subscribe("jobs")
    bad = [cancelled(0), {"type": "job_progress", "channel": "jobs", "data": {"job_id": "x"}}]
    refused = error(server.post("/api/events/batch", json={"events": bad}), 422, "validation_error")
    assert "events.1.data.progress" in refused["fields"], refused
    expect_only_marker(subscriber, marker(server))


def test_on_redis_a_batch_keeps_its_seqs_together_while_another_process_publishes(postgres_url):
    """Two processes on one Redis: events the second publishes meanwhile never land inside a
    batch of the first, and a subscriber on the second gets everything in seq order."""
    url, prefix = redis_url(), fresh_prefix()
    settings = {"REDIS_URL": url, "REDIS_PREFIX": prefix, "DATABASE_URL": postgres_url}
    a, b = (ServerProcess(dict(settings)).start() for _ in range(2))
    try:
        subscriber = b.client()
        subscriber.subscribe("jobs")

        def publish_single(_: int) -> int:
            return b.publish("job_cancelled", {"job_id": "s"}, channel="jobs")["seq"]

        batches = []
        with publishing_meanwhile(publish_single, 20) as singles:
            for _ in range(5):
                events = [cancelled(i) for i in range(50)]
                answer = a.post("/api/events/batch", json={"events": events})
                assert answer.status_code == 202, answer.text
                batches.append(answer.json()["seqs"])
        assert singles[0] < batches[0][0] and batches[-1][-1] < singles[-1]
        for seqs in batches:
            assert seqs == list(range(seqs[0], seqs[0] + 50))
        numbered = sorted(singles + [seq for seqs in batches for seq in seqs])
        assert numbered == list(range(numbered[0], numbered[0] + len(numbered)))
        assert [subscriber.recv()["seq"] for _ in numbered] == numbered
    finally:
        a.stop()
        b.stop()
        drop_prefix(url, prefix)
