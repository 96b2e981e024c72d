"""``POST /api/events/batch`` on the real server: subscribers get the batch in order, and a
refused batch reaches nobody."""

from __future__ import annotations

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


def test_a_refused_batch_reaches_nobody(server: ServerProcess, connect):
    subscriber = connect()
    subscriber.subscribe("jobs")
    bad = [cancelled(0), {"type": "job_progress", "channel": "jobs", "data": {"job_id": "x"}}]
    refused = error(server.post("/api/events/batch", json={"events": bad}), 422, "validation_error")
    assert "events.1.data.progress" in refused["fields"], refused
    expect_only_marker(subscriber, marker(server))
