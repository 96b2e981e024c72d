"""The job state machine and queue, at the domain level on a real SQLite database."""

from __future__ import annotations

import pytest

from local_bridge import catalog, migrate
from local_bridge.backplane import MemoryBackplane
from local_bridge.db import Database
from local_bridge.domain import Domain
from local_bridge.domain.errors import Conflict, Invalid, NotFound
from local_bridge.publisher import Publisher


@pytest.fixture
def world(tmp_path):
    database = Database(f"sqlite:///{tmp_path}/lifecycle.db")
    migrate.upgrade(database.engine)
    events = []
    backplane = MemoryBackplane()
    backplane.attach(lambda event: events.append(event) or 0)
    domain = Domain.build(database.sessions, Publisher(backplane), progress_rate=1000)
    yield domain, events
    domain.close()
    database.close()


def _types(events, since=0):
    return [(e.type, e.channel) for e in events[since:]]


LEGAL = {  # from status: the transitions that succeed
    "queued": {"start", "cancel", "reprioritize"},
    "running": {"progress", "complete", "fail", "cancel"},
    "completed": set(),
    "failed": set(),
    "cancelled": set(),
}


def _attempt(domain, job_id, action):
    jobs = domain.jobs
    return {
        "start": lambda: jobs.claim("w"),  # the job is the only one there is
        "progress": lambda: jobs.mark_progress(job_id, 10.0),
        "complete": lambda: jobs.mark_completed(job_id),
        "fail": lambda: jobs.mark_failed(job_id, "x"),
        "cancel": lambda: jobs.cancel(job_id),
        "reprioritize": lambda: jobs.reprioritize(job_id, 7),
    }[action]()


def _job_in(domain, status):
    job = domain.jobs.create("analysis")
    if status != "queued":
        assert domain.jobs.claim("w")["id"] == job["id"]
    if status == "completed":
        domain.jobs.mark_completed(job["id"])
    elif status == "failed":
        domain.jobs.mark_failed(job["id"], "boom")
    elif status == "cancelled":
        domain.jobs.cancel(job["id"])
        domain.jobs.cancel(job["id"])
    return job["id"]


@pytest.mark.parametrize("status", list(LEGAL))
@pytest.mark.parametrize(
    "action", ["start", "progress", "complete", "fail", "cancel", "reprioritize"]
)
def test_every_transition_from_every_status(world, status, action):
    domain, events = world
    job_id = _job_in(domain, status)
    before, count = domain.jobs.get(job_id), len(events)
    if action in LEGAL[status]:
        _attempt(domain, job_id, action)
        if (status, action) == ("running", "cancel"):  # only requested: silent until confirmed
            assert len(events) == count and domain.jobs.get(job_id)["cancel_requested"] is True
        else:
            assert len(events) > count
    else:
        if action == "start":  # a claim finds no queued job to start
            assert _attempt(domain, job_id, action) is None
        else:
            with pytest.raises(Conflict):
                _attempt(domain, job_id, action)
        assert len(events) == count, "a refused transition publishes nothing"
        assert domain.jobs.get(job_id) == before, "and changes nothing"


def test_queue_status_counts_follow_every_change(world):
    domain, events = world
    a = domain.jobs.create("k")
    b = domain.jobs.create("k")
    domain.jobs.claim("w")
    domain.jobs.mark_failed(a["id"], "x")
    domain.jobs.cancel(b["id"])
    counts = [e.message for e in events if e.type == "queue_status"]
    assert [
        (c["pending_count"], c["processing_count"], c["failed_count"], c["cancelled_count"])
        for c in counts
    ] == [(1, 0, 0, 0), (2, 0, 0, 0), (1, 1, 0, 0), (1, 0, 1, 0), (0, 0, 1, 1)]


def test_unknown_ids(world):
    domain, _ = world
    with pytest.raises(NotFound):
        domain.jobs.get("12345")
    with pytest.raises(NotFound):
        domain.jobs.mark_progress("nope", 1.0)
    with pytest.raises(Invalid):
        domain.jobs.create("k", photo_id="999")


def test_position_moves_are_announced_on_sub_channels_after_the_row_events(world):
    domain, events = world
    low = domain.jobs.create("k", priority=1)
    mark = len(events)
    domain.jobs.create("k", priority=99)
    assert _types(events, mark) == [
        ("job_created", "jobs"),
        ("job_queued", "jobs"),
        ("queue_status", "queue"),
        ("job_queued", f"jobs:{low['id']}"),
    ]
    assert events[-1].message["position"] == 2


ENDINGS = {  # how a running job ends, with values that survive a trip through the database
    "completed": lambda jobs, job_id: jobs.mark_completed(
        job_id,
        {"labels": ["sky", "sea"], "score": 0.5, "nested": {"z": 1, "a": None}},
        "https://example.test/r/1",
    ),
    "failed": lambda jobs, job_id: jobs.mark_failed(
        job_id, "decoder crashed", {"trace": ["a", "b"], "code": 7}, retryable=True
    ),
    "cancelled": lambda jobs, job_id: (jobs.cancel(job_id, "not needed"), jobs.cancel(job_id)),
}


@pytest.mark.parametrize("status", list(ENDINGS))
def test_the_live_terminal_event_is_the_one_a_late_job_stream_is_told(world, status):
    domain, events = world
    job = domain.jobs.create("analysis")
    domain.jobs.claim("w")
    domain.jobs.mark_progress(job["id"], 40.0, stage="decode")
    ENDINGS[status](domain.jobs, job["id"])
    [live] = [e for e in events if e.type in ("job_completed", "job_failed", "job_cancelled")]
    _, (type_, fields) = domain.jobs.snapshot(job["id"])
    replayed = catalog.validate_event(type_, fields)
    assert live.type == type_
    assert {name: live.message[name] for name in replayed} == replayed
