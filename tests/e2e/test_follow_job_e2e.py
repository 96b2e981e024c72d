"""``follow_job`` against the real server: a job from snapshot to its end, a job already over,
an unknown job, and a server restart mid-job (the stream starts again with a fresh snapshot)."""

from __future__ import annotations

import uuid

import pytest

from local_bridge.client import Backoff, Unrecoverable, follow_job
from support import ServerProcess, ok


def new_job(server: ServerProcess) -> tuple[str, str]:
    kind = f"follow-{uuid.uuid4().hex[:8]}"  # claimed by this test alone
    return ok(server.post("/api/jobs", json={"kind": kind}), 201)["id"], kind


def run(server: ServerProcess, job_id: str, kind: str) -> None:
    """Claim the job, report progress, complete it."""
    ok(server.post("/api/jobs/claim", json={"worker": "w", "kinds": [kind]}))
    body = {"progress": 50, "stage": "analyzing", "counters": {"files_scanned": 3}}
    ok(server.post(f"/api/jobs/{job_id}/progress", json=body))
    ok(server.post(f"/api/jobs/{job_id}/complete", json={"result": {"ok": True}}))


def test_a_job_from_its_snapshot_to_its_end(server):
    job_id, kind = new_job(server)
    messages = follow_job(server.http, job_id, timeout=5)
    snapshot = next(messages)
    assert snapshot["type"] == "job_status" and snapshot["status"] == "queued"
    run(server, job_id, kind)
    rest = list(messages)  # ends by itself after the terminal event
    assert [m["type"] for m in rest if m["type"] != "job_queued"] == [
        "job_started",
        "job_progress",
        "job_completed",
    ]
    assert rest[-1]["job_id"] == job_id


def test_a_job_already_over_is_its_snapshot_and_its_end(server):
    job_id, kind = new_job(server)
    run(server, job_id, kind)
    got = list(follow_job(server.ws_url, job_id))
    assert [m["type"] for m in got] == ["job_status", "job_completed"]
    assert got[0]["status"] == "completed"


def test_an_unknown_job(server):
    with pytest.raises(Unrecoverable) as raised:
        list(follow_job(server.http, "no-such-job"))
    assert raised.value.code == 4004


def test_a_restart_mid_job_starts_again_with_a_fresh_snapshot(make_server):
    server = make_server()
    job_id, kind = new_job(server)
    messages = follow_job(server.http, job_id, backoff=Backoff(initial=0.05, maximum=0.5))
    assert next(messages)["status"] == "queued"
    server.restart()  # the stream is closed 1001; the job stays in the database
    again = next(messages)
    assert again["type"] == "job_status" and again["job_id"] == job_id
    run(server, job_id, kind)
    assert [m["type"] for m in messages][-1] == "job_completed"
