"""The job lifecycle, the queue and its position events, on SQLite and PostgreSQL (API.md)."""

from __future__ import annotations

import pytest

from support import error, ok, types_of


@pytest.fixture
def drained_queue(workflow_server):
    """Start each test with no queued or running jobs left by another."""
    for _ in range(1000):
        job = workflow_server.post("/api/jobs/claim", json={"worker": "janitor"})
        if job.status_code == 204:
            break
        workflow_server.post(f"/api/jobs/{job.json()['id']}/complete", json={})
    for job in ok(workflow_server.get("/api/jobs?status=running&limit=500"))["items"]:
        workflow_server.post(f"/api/jobs/{job['id']}/complete", json={})
    return workflow_server


def _create(server, **body) -> dict:
    return ok(server.post("/api/jobs", json={"kind": "analysis", **body}), 201)


def test_create_claim_progress_complete(drained_queue, watcher):
    server = drained_queue
    job, events = watcher.after(lambda: _create(server, priority=70, params={"model": "v2"}))
    assert (job["status"], job["position"], job["priority"], job["params"]) == (
        "queued",
        1,
        70,
        {"model": "v2"},
    )
    assert types_of(events) == ["job_created", "job_queued", "queue_status"]
    assert (events[0]["job_id"], events[0]["kind"], events[0]["priority"]) == (
        job["id"],
        "analysis",
        70,
    )
    assert (events[1]["channel"], events[1]["position"]) == ("jobs", 1)
    assert events[2]["pending_count"] == 1 and events[2]["processing_count"] == 0

    claimed, events = watcher.after(
        lambda: ok(server.post("/api/jobs/claim", json={"worker": "w1"}))
    )
    assert (claimed["id"], claimed["status"], claimed["worker"]) == (job["id"], "running", "w1")
    assert types_of(events) == ["job_started", "queue_status"]
    assert events[1]["pending_count"] == 0 and events[1]["processing_count"] == 1

    reply, events = watcher.after(
        lambda: ok(
            server.post(
                f"/api/jobs/{job['id']}/progress",
                json={
                    "progress": 40,
                    "stage": "scan",
                    "message": "scanning",
                    "counters": {"files_scanned": 12},
                },
            )
        )
    )
    assert (reply["progress"], reply["cancel_requested"]) == (40, False)
    assert types_of(events) == ["job_progress"]
    assert (events[0]["stage"], events[0]["counters"]) == ("scan", {"files_scanned": 12})

    done, events = watcher.after(
        lambda: ok(
            server.post(
                f"/api/jobs/{job['id']}/complete",
                json={"result": {"score": 0.9}, "result_url": "/results/1"},
            )
        )
    )
    assert (done["status"], done["result"]) == ("completed", {"score": 0.9}) and done["finished_at"]
    assert types_of(events) == ["job_completed", "queue_status"]
    assert events[0]["duration_seconds"] >= 0 and events[0]["result_url"] == "/results/1"


def test_claim_with_nothing_queued_is_204(drained_queue, watcher):
    response, events = watcher.after(
        lambda: drained_queue.post("/api/jobs/claim", json={"worker": "w"})
    )
    assert response.status_code == 204 and response.content == b""
    assert events == []


def test_claim_order_is_priority_then_age_and_kinds_filter(drained_queue):
    server = drained_queue
    low = _create(server, priority=10)
    high_old = _create(server, priority=90)
    high_new = _create(server, priority=90)
    thumb = _create(server, priority=100, kind="thumbnail")
    assert (
        ok(server.post("/api/jobs/claim", json={"worker": "w", "kinds": ["analysis"]}))["id"]
        == high_old["id"]
    )
    order = [ok(server.post("/api/jobs/claim", json={"worker": "w"}))["id"] for _ in range(3)]
    assert order == [thumb["id"], high_new["id"], low["id"]]


def test_new_job_ahead_moves_others_back(drained_queue, watcher):
    server = drained_queue
    a, b = _create(server, priority=10), _create(server, priority=10)
    watchers = {j["id"]: server.client() for j in (a, b)}
    for job_id, client in watchers.items():
        client.subscribe(f"jobs:{job_id}")
    urgent, events = watcher.after(lambda: _create(server, priority=99))
    assert urgent["position"] == 1
    assert types_of(events) == [
        "job_created",
        "job_queued",
        "queue_status",
    ]  # sub-channel moves: below
    for job, position in ((a, 2), (b, 3)):
        moved = [m for m in watchers[job["id"]].until(lambda m: m["type"] == "job_queued")]
        assert (moved[-1]["channel"], moved[-1]["position"]) == (f"jobs:{job['id']}", position)
        assert ok(server.get(f"/api/jobs/{job['id']}"))["position"] == position
    for client in watchers.values():
        client.close()


def test_claim_moves_everyone_up_and_reprioritize(drained_queue):
    server = drained_queue
    first, second, third = (_create(server, priority=50) for _ in range(3))
    followers = {}
    for job in (second, third):
        followers[job["id"]] = server.client()
        followers[job["id"]].subscribe(f"jobs:{job['id']}")
    ok(server.post("/api/jobs/claim", json={"worker": "w"}))
    for job, position in ((second, 1), (third, 2)):
        event = followers[job["id"]].until(lambda m: m["type"] == "job_queued")[-1]
        assert event["position"] == position

    changed = ok(
        server.patch(
            f"/api/jobs/{third['id']}/priority", json={"priority": 80, "reason": "client waiting"}
        )
    )
    assert (changed["priority"], changed["position"]) == (80, 1)
    third_events = followers[third["id"]].until(lambda m: m["type"] == "job_queued")
    assert [m["type"] for m in third_events] == ["priority_changed", "job_queued"]
    assert (
        third_events[0]["old_priority"],
        third_events[0]["new_priority"],
        third_events[0]["reason"],
    ) == (50, 80, "client waiting")
    assert third_events[1]["position"] == 1
    assert followers[second["id"]].until(lambda m: m["type"] == "job_queued")[-1]["position"] == 2
    for client in followers.values():
        client.close()


def test_illegal_transitions_are_409_and_change_nothing(drained_queue, watcher):
    server = drained_queue
    job = _create(server)
    for path, body in (
        (f"/api/jobs/{job['id']}/progress", {"progress": 5}),
        (f"/api/jobs/{job['id']}/complete", {}),
        (f"/api/jobs/{job['id']}/fail", {"error_message": "x"}),
    ):
        response, events = watcher.after(lambda: server.post(path, json=body))
        error(response, 409, "conflict")
        assert events == []
    ok(server.post("/api/jobs/claim", json={"worker": "w"}))
    response, events = watcher.after(
        lambda: server.patch(f"/api/jobs/{job['id']}/priority", json={"priority": 1})
    )
    error(response, 409, "conflict")
    ok(server.post(f"/api/jobs/{job['id']}/complete", json={}))
    response, more = watcher.after(lambda: server.post(f"/api/jobs/{job['id']}/cancel", json={}))
    error(response, 409, "conflict")
    assert events == [] and more == []
    assert ok(server.get(f"/api/jobs/{job['id']}"))["status"] == "completed"


def test_fail_publishes_job_failed_and_error_occurred(drained_queue, watcher):
    server = drained_queue
    job = _create(server)
    ok(server.post("/api/jobs/claim", json={"worker": "w"}))
    ok(server.post(f"/api/jobs/{job['id']}/progress", json={"progress": 10, "stage": "decode"}))
    failed, events = watcher.after(
        lambda: ok(
            server.post(
                f"/api/jobs/{job['id']}/fail",
                json={
                    "error_message": "corrupt file",
                    "error_details": {"offset": 12},
                    "retryable": True,
                },
            )
        )
    )
    assert (failed["status"], failed["retryable"]) == ("failed", True)
    assert types_of(events) == ["job_failed", "error_occurred", "queue_status"]
    assert (events[0]["stage"], events[0]["retryable"], events[0]["error_details"]) == (
        "decode",
        True,
        {"offset": 12},
    )
    assert (events[1]["error_type"], events[1]["job_id"]) == ("job_failed", job["id"])


def test_cancel_queued_and_running(drained_queue, watcher):
    server = drained_queue
    queued = _create(server)
    cancelled, events = watcher.after(
        lambda: ok(server.post(f"/api/jobs/{queued['id']}/cancel", json={"reason": "dup"}))
    )
    assert cancelled["status"] == "cancelled"
    assert types_of(events) == ["job_cancelled", "queue_status"] and events[0]["reason"] == "dup"

    running = _create(server)
    ok(server.post("/api/jobs/claim", json={"worker": "w"}))
    requested, events = watcher.after(
        lambda: server.post(f"/api/jobs/{running['id']}/cancel", json={"reason": "user"})
    )
    assert requested.status_code == 202 and requested.json()["cancel_requested"] is True
    assert events == []
    reply = ok(server.post(f"/api/jobs/{running['id']}/progress", json={"progress": 30}))
    assert reply["cancel_requested"] is True
    ended, events = watcher.after(
        lambda: ok(server.post(f"/api/jobs/{running['id']}/cancel", json={"reason": "later"}))
    )
    assert ended["status"] == "cancelled"
    assert types_of(events) == ["job_cancelled", "queue_status"]
    assert events[0]["reason"] == "user"  # the first request's reason is kept


def test_job_reads_and_bad_input(drained_queue, watcher):
    server = drained_queue
    error(server.get("/api/jobs/999999"), 404, "not_found")
    error(server.get("/api/jobs?status=bogus"), 422, "validation_error")
    for body, field in (
        ({"kind": "a", "priority": 101}, "priority"),
        ({"kind": "a", "priority": "5"}, "priority"),
        ({"priority": 5}, "kind"),
        ({"kind": "a", "photo_id": "424242"}, "photo_id"),
        ({"kind": "a", "colour": "red"}, "colour"),
    ):
        response, events = watcher.after(lambda: server.post("/api/jobs", json=body))
        assert field in error(response, 422, "validation_error")["fields"]
        assert events == []
    job = _create(server)
    listed = ok(server.get("/api/jobs?status=queued"))["items"]
    assert [j["id"] for j in listed] == [job["id"]] and listed[0]["position"] == 1
    ok(server.post("/api/jobs/claim", json={"worker": "w"}))
    for body in ({"progress": 101}, {"progress": "x"}, {"progress": 5, "counters": {"a": 1.5}}, {}):
        error(server.post(f"/api/jobs/{job['id']}/progress", json=body), 422, "validation_error")
    assert ok(server.get(f"/api/jobs/{job['id']}"))["progress"] == 0


def test_estimated_start_uses_recent_durations(drained_queue):
    server = drained_queue
    done = _create(server, kind="estimate")
    ok(server.post("/api/jobs/claim", json={"worker": "w", "kinds": ["estimate"]}))
    ok(server.post(f"/api/jobs/{done['id']}/complete", json={}))
    waiting = [_create(server, kind="estimate") for _ in range(2)]
    first, second = (ok(server.get(f"/api/jobs/{j['id']}")) for j in waiting)
    assert (
        first["estimated_start_seconds"] is not None
        and second["estimated_start_seconds"] is not None
    )
    assert second["estimated_start_seconds"] >= first["estimated_start_seconds"]
    unknown = _create(server, kind="never-run")
    assert ok(server.get(f"/api/jobs/{unknown['id']}"))["estimated_start_seconds"] is None
