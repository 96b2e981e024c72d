"""``POST /api/events/batch``: many events in one request, checked whole, published in order."""

from __future__ import annotations

import pytest

from support import error, ok


def progress(job_id: str, percent: float) -> dict:
    return {
        "type": "job_progress",
        "channel": "jobs",
        "data": {"job_id": job_id, "stage": "s", "progress": percent},
    }


def test_a_batch_publishes_each_event_in_order_with_its_own_seq(client, published):
    events = [
        progress("b-1", 10),
        {"type": "custom.note", "data": {"text": "hello"}},
        {"type": "system_status", "channel": "system", "data": {"status": "ok"}},
        {"type": "custom.only.gui", "client_types": ["gui"], "data": {}},
        progress("b-2", 20),
    ]
    response, seen = published.after(
        lambda: client.post("/api/events/batch", json={"events": events})
    )
    answer = ok(response, 202)
    assert answer["seqs"] == [e["seq"] for e in seen]
    assert answer["seqs"] == list(range(answer["seqs"][0], answer["seqs"][0] + len(events)))
    assert answer["recipients"] == [0] * len(events)
    assert [e["type"] for e in seen] == [e["type"] for e in events]
    assert [e["channel"] for e in seen] == ["jobs", None, "system", None, "jobs"]
    assert seen[1]["text"] == "hello"


@pytest.mark.parametrize(
    "body, fields",
    [
        ({"events": []}, ["events"]),
        ({"events": [progress("x", 1)] * 501}, ["events"]),
        ({"events": "nope"}, ["events"]),
        ({}, ["events"]),
        ({"events": [progress("x", 1), {"type": "pong", "data": {}}]}, ["events.1.type"]),
        (
            {"events": [progress("x", 101), progress("y", 1), {"type": "Bad", "data": {}}]},
            ["events.0.data.progress", "events.2.type"],
        ),
        (
            {
                "events": [
                    progress("x", 1),
                    {"type": "job_cancelled", "channel": "nowhere", "data": {"job_id": "x"}},
                ]
            },
            ["events.1.channel"],
        ),
        ({"events": [progress("x", 1), {"type": "custom.x"}]}, ["events.1.data"]),
        ({"events": [{"type": "custom.x", "data": {"seq": 1}}]}, ["events.0.data.seq"]),
    ],
)
def test_one_wrong_event_refuses_the_whole_batch(client, published, body, fields):
    response, seen = published.after(lambda: client.post("/api/events/batch", json=body))
    refused = error(response, 422, "validation_error")
    assert sorted(k for k in refused["fields"] if k.startswith("events")) == sorted(fields), refused
    assert seen == []


def test_a_full_batch_of_500(client, published):
    events = [progress(f"j{i}", i % 100) for i in range(500)]
    response, seen = published.after(
        lambda: client.post("/api/events/batch", json={"events": events})
    )
    assert len(ok(response, 202)["seqs"]) == 500
    assert [e["job_id"] for e in seen] == [f"j{i}" for i in range(500)]
