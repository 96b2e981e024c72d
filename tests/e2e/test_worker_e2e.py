"""``local_bridge.client.Worker`` against the real server, watched by a bus client."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from local_bridge.client import JobCancelled, JobContext, JobFailed, RestClient, Worker
from support import BusClient, ServerProcess

TIMEOUT = 15.0


@pytest.fixture
def kind() -> str:
    """A job kind of the test's own: jobs other tests queue on the shared server stay theirs."""
    return f"w-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def rest(server: ServerProcess) -> Iterator[RestClient]:
    with RestClient(server.http) as client:
        yield client


@pytest.fixture
def jobs_feed(server: ServerProcess) -> Iterator[BusClient]:
    client = server.client()
    client.subscribe("jobs")
    yield client
    client.close()


class Running:
    """A worker's ``run`` in a thread, stopped and joined at the end."""

    def __init__(self, worker: Worker, handler: Any, **options: Any) -> None:
        self.worker = worker
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=worker.run,
            args=(handler,),
            kwargs={"poll_interval": 0.05, "stop_event": self.stop_event, **options},
            daemon=True,
        )
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the worker did not stop"


def _job_events(feed: BusClient, job_id: str, last: str) -> list[dict[str, Any]]:
    """The job's events on ``jobs`` up to and including its ``last`` one."""
    seen = feed.until(lambda m: m.get("job_id") == job_id and m["type"] == last, timeout=TIMEOUT)
    return [m for m in seen if m.get("job_id") == job_id]


def test_a_job_runs_to_completion_with_progress(server, rest, jobs_feed, kind):
    def handler(job: JobContext) -> dict[str, Any]:
        assert job.params == {"files": 3}
        for done in range(1, 4):
            job.progress(done * 30, stage=f"step {done}", counters={"files_done": done})
        job.result_url = "http://example/result"
        return {"files": 3}

    running = Running(Worker(server.http, "worker-a", kinds=[kind]), handler)
    try:
        job = rest.create_job(kind, params={"files": 3})
        events = _job_events(jobs_feed, job["id"], "job_completed")
    finally:
        running.stop()
    types = [e["type"] for e in events]
    assert types[0] == "job_created" and types[-1] == "job_completed"
    assert "job_started" in types
    progress = [e for e in events if e["type"] == "job_progress"]
    assert [(e["stage"], e["counters"]) for e in progress] == [
        (f"step {n}", {"files_done": n}) for n in (1, 2, 3)
    ]
    started = next(e for e in events if e["type"] == "job_started")
    assert started["worker"] == "worker-a"
    assert (events[-1]["result"], events[-1]["result_url"]) == (
        {"files": 3},
        "http://example/result",
    )
    assert rest.get_job(job["id"])["status"] == "completed"


def test_a_cancel_requested_mid_run_ends_the_job_cancelled(server, rest, jobs_feed, kind):
    cancelled_inside = threading.Event()
    reported = threading.Event()

    def handler(job: JobContext) -> None:
        try:
            for step in range(10_000):  # until told to cancel
                job.progress(min(step, 99), stage="working")
                reported.set()
                time.sleep(0.02)
        except JobCancelled:
            cancelled_inside.set()
            raise
        raise AssertionError("never cancelled")

    running = Running(Worker(server.http, "worker-c", kinds=[kind]), handler)
    try:
        job = rest.create_job(kind)
        assert reported.wait(TIMEOUT), "the handler never reported"
        asked = rest.cancel_job(job["id"], "changed my mind")
        assert (asked["status"], asked["cancel_requested"]) == ("running", True)
        events = _job_events(jobs_feed, job["id"], "job_cancelled")
    finally:
        running.stop()
    assert cancelled_inside.is_set()
    assert events[-1]["reason"] == "changed my mind"  # the first request's reason is kept
    assert rest.get_job(job["id"])["status"] == "cancelled"


def test_a_handler_exception_fails_the_job(server, rest, jobs_feed, kind):
    def handler(job: JobContext) -> None:
        job.progress(10, stage="reading")
        if job.params.get("retry"):
            raise JobFailed("disk busy", details={"disk": "sda"}, retryable=True)
        raise ValueError("corrupt file")

    running = Running(Worker(server.http, "worker-f", kinds=[kind]), handler)
    try:
        plain = rest.create_job(kind)
        plain_events = _job_events(jobs_feed, plain["id"], "job_failed")
        retry = rest.create_job(kind, params={"retry": True})
        retry_events = _job_events(jobs_feed, retry["id"], "job_failed")
    finally:
        running.stop()
    failed = plain_events[-1]
    assert (failed["error_message"], failed["retryable"], failed["stage"]) == (
        "corrupt file",
        False,
        "reading",
    )
    assert failed["error_details"] == {"exception": "ValueError"}
    again = retry_events[-1]
    assert (again["error_message"], again["error_details"], again["retryable"]) == (
        "disk busy",
        {"disk": "sda"},
        True,
    )


def test_claim_process_and_max_jobs(server, rest, kind):
    worker = Worker(RestClient(server.http), "worker-m", kinds=[kind])
    assert worker.claim() is None
    for _ in range(3):
        rest.create_job(kind)
    handled: list[str] = []
    done = worker.run(lambda job: handled.append(job.id), poll_interval=0.05, max_jobs=2)
    assert done == 2 and len(handled) == 2
    job = worker.claim()
    assert job is not None
    assert worker.process(job, lambda ctx: "ok") == "completed"
    assert rest.get_job(job["id"])["result"] == "ok"


def test_stop_ends_a_waiting_worker_at_once(server, kind):
    worker = Worker(server.http, "worker-s", kinds=[kind])
    thread = threading.Thread(target=worker.run, args=(lambda job: None,), daemon=True)
    thread.start()  # default poll interval: one second between empty claims
    time.sleep(0.2)  # let it reach its wait (nothing to await: the point is it is idle)
    started = time.monotonic()
    worker.stop()
    thread.join(TIMEOUT)
    assert not thread.is_alive() and time.monotonic() - started < 1.0


def test_a_running_worker_carries_on_after_a_server_restart(kind):
    server = ServerProcess().start()
    running = Running(Worker(server.http, "worker-r", kinds=[kind]), lambda job: "done")
    try:
        server.restart()  # the worker's claims fail meanwhile; it retries
        feed = server.client()
        try:
            feed.subscribe("jobs")
            with RestClient(server.http) as rest:
                job = rest.create_job(kind)
            events = _job_events(feed, job["id"], "job_completed")
        finally:
            feed.close()
        assert events[-1]["result"] == "done"
    finally:
        running.stop()
        server.stop()
