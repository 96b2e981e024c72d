"""``local_bridge.client.Worker`` on a stand-in REST client: the ends a handler can reach, a job
ended by someone else meanwhile, and retrying while the server is away."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from local_bridge.client import ApiError, JobCancelled, RestClient, Worker
from local_bridge.client.rest import ServerUnreachable


class FakeRest(RestClient):
    """Records the calls a worker makes; ``claims`` is what each claim answers (an exception
    is raised), None once it runs out."""

    def __init__(self, claims: list[Any] | None = None, cancel_at: float | None = None) -> None:
        super().__init__("http://127.0.0.1:9")
        self.claims = list(claims or [])
        self.cancel_at = cancel_at
        self.calls: list[tuple[str, Any]] = []
        self.job: dict[str, Any] = {"id": "7", "status": "running", "cancel_requested": False}

    def claim_job(self, worker: str, kinds: Any = None) -> dict[str, Any] | None:
        self.calls.append(("claim", worker))
        if not self.claims:
            return None
        answer = self.claims.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def report_progress(self, job_id: str, progress: float, *args: Any) -> dict[str, Any]:
        self.calls.append(("progress", progress))
        if self.cancel_at is not None and progress >= self.cancel_at:
            self.job["cancel_requested"] = True
        return dict(self.job)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return dict(self.job)

    def _ends(self, action: str, status: str, detail: Any) -> dict[str, Any]:
        self.calls.append((action, detail))
        if self.job["status"] != "running":
            raise ApiError(409, "conflict", "job is not running")
        self.job["status"] = status
        return dict(self.job)

    def complete_job(self, job_id: str, result: Any = None, result_url: Any = None) -> Any:
        return self._ends("complete", "completed", result)

    def fail_job(self, job_id: str, message: str, details: Any = None, retryable: bool = False):
        return self._ends("fail", "failed", (message, details, retryable))

    def cancel_job(self, job_id: str, reason: str | None = None) -> dict[str, Any]:
        return self._ends("cancel", "cancelled", reason)


JOB = {"id": "7", "status": "running", "params": None}


def test_a_handler_that_swallows_the_cancel_still_ends_the_job_cancelled():
    rest = FakeRest(cancel_at=50)

    def handler(job):
        try:
            job.progress(10)
            job.progress(50)
        except JobCancelled:
            return "partial"  # tidied up and returned: the cancel still wins
        raise AssertionError("not cancelled")

    assert Worker(rest, "w").process(dict(JOB), handler) == "cancelled"
    assert ("complete", "partial") not in rest.calls and ("cancel", None) in rest.calls


def test_an_error_raised_because_of_the_cancel_ends_it_cancelled_not_failed():
    rest = FakeRest(cancel_at=0)

    def handler(job):
        try:
            job.progress(0)
        except JobCancelled:
            raise RuntimeError("interrupted") from None

    assert Worker(rest, "w").process(dict(JOB), handler) == "cancelled"
    assert not any(call[0] == "fail" for call in rest.calls)


def test_a_job_ended_by_someone_else_meanwhile_reports_its_status():
    rest = FakeRest()

    def handler(job):
        rest.job["status"] = "cancelled"  # an administrator's second cancel ended it
        return 1

    assert Worker(rest, "w").process(dict(JOB), handler) == "cancelled"


def test_run_retries_while_the_server_is_away_and_raises_a_refused_token():
    away = ServerUnreachable("http://127.0.0.1:9", "connection refused")
    busy = ApiError(503, "unavailable", "the database is unavailable")
    rest = FakeRest(claims=[away, busy, dict(JOB)])
    handled = []
    assert Worker(rest, "w").run(handled.append, poll_interval=0.01, max_jobs=1) == 1
    assert len(handled) == 1 and [c[0] for c in rest.calls].count("claim") == 3

    refused = FakeRest(claims=[ApiError(401, "unauthorized", "token expired")])
    with pytest.raises(ApiError):
        Worker(refused, "w").run(handled.append, poll_interval=0.01)


def test_stop_event_ends_a_waiting_run():
    stop = threading.Event()
    worker = Worker(FakeRest(), "w")
    thread = threading.Thread(
        target=worker.run,
        args=(lambda job: None,),
        kwargs={"poll_interval": 60, "stop_event": stop},
    )
    thread.start()
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_an_interrupted_worker_fails_its_job_retryable_and_lets_the_interrupt_through():
    rest = FakeRest()

    def handler(job):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Worker(rest, "w").process(dict(JOB), handler)
    assert rest.calls == [("fail", ("the worker was interrupted", None, True))]
