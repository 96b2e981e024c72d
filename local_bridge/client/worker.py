"""A job worker over REST: claim a job, run a handler on it, report its end (API.md jobs).

    def resize(job):
        for step in range(1, 11):
            job.progress(step * 10, stage="resizing", counters={"files_done": step})
        return {"files": 10}

    Worker("http://127.0.0.1:5100", "resizer-1", kinds=["resize"]).run(resize)

The handler gets a :class:`JobContext`. What it returns completes the job (``result``); an
exception fails it (``error_message``; :class:`JobFailed` also sets ``error_details`` and
``retryable``). When someone asks to cancel a running job, the server says so in the reply to
the next progress report: :meth:`JobContext.progress` then raises :class:`JobCancelled` inside
the handler, and the worker ends the job cancelled itself (``POST /api/jobs/<id>/cancel``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .rest import ApiError, RestClient, ServerUnreachable, Token

log = logging.getLogger(__name__)

MAX_RETRY_DELAY = 30.0  # seconds between claims while the server is unreachable, at most


class JobCancelled(Exception):
    """The job's cancellation was requested: raised inside the handler by
    :meth:`JobContext.progress` (or :meth:`JobContext.check_cancelled`). Let it propagate
    (after any clean-up): the worker then ends the job cancelled."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id}: cancellation requested")
        self.job_id = job_id


class JobFailed(Exception):
    """Raise it in a handler to fail the job with ``details`` (``error_details``) and
    ``retryable``; any other exception fails it too, not retryable."""

    def __init__(self, message: str, *, details: Any = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.details = details
        self.retryable = retryable


class JobContext:
    """What a handler gets: the claimed ``job`` (its latest representation) and the means to
    report progress. ``result_url``, when the handler sets it, is sent on completion."""

    def __init__(self, worker: Worker, job: dict[str, Any]) -> None:
        self.worker = worker
        self.job = job
        self.id: str = job["id"]
        self.result_url: str | None = None
        self.cancel_requested = False

    @property
    def params(self) -> dict[str, Any]:
        """The job's ``params`` (empty when it has none)."""
        return dict(self.job.get("params") or {})

    @property
    def stopping(self) -> bool:
        """The worker was asked to stop: a long handler may end early (by raising)."""
        return self.worker.stopping

    def progress(
        self,
        percent: float,
        stage: str | None = None,
        message: str | None = None,
        counters: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        """Report progress (0-100); the job as the server answered. Raises
        :class:`JobCancelled` when the job's cancellation has been requested."""
        self.job = self.worker.rest.report_progress(self.id, percent, stage, message, counters)
        self._check(self.job)
        return self.job

    def check_cancelled(self) -> None:
        """Ask the server whether cancellation was requested (for a handler with nothing to
        report for a while); raises :class:`JobCancelled` if so."""
        self.job = self.worker.rest.get_job(self.id)
        self._check(self.job)

    def _check(self, job: dict[str, Any]) -> None:
        if job.get("cancel_requested"):
            self.cancel_requested = True
            raise JobCancelled(self.id)


Handler = Callable[[JobContext], Any]


class Worker:
    """Claims jobs under the name ``name`` (of ``kinds`` only, when given) and runs them.

    ``rest_or_base_url``: a :class:`RestClient`, or the server's base URL (then ``token``, a
    worker's bearer token or a callable returning one, is used). One worker runs one job at
    a time; :meth:`run` may run in a thread, and :meth:`stop` (or the ``stop_event``) ends it
    after the job at hand.
    """

    def __init__(
        self,
        rest_or_base_url: RestClient | str,
        name: str,
        *,
        kinds: Iterable[str] | None = None,
        token: Token = None,
    ) -> None:
        if isinstance(rest_or_base_url, RestClient):
            self.rest = rest_or_base_url
        else:
            self.rest = RestClient(rest_or_base_url, token=token)
        self.name = name
        self.kinds = list(kinds) if kinds is not None else None
        self._stop = threading.Event()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """End :meth:`run` after the job at hand (at once when it is waiting for one)."""
        self._stop.set()

    def claim(self) -> dict[str, Any] | None:
        """Take the next queued job (of this worker's kinds), or None when none waits."""
        return self.rest.claim_job(self.name, self.kinds)

    def process(self, job: dict[str, Any], handler: Handler) -> str:
        """Run ``handler`` on a claimed job and report how it ended; the job's final status
        (``completed``, ``failed`` or ``cancelled``)."""
        context = JobContext(self, job)
        try:
            result = handler(context)
        except JobCancelled:
            return self._end(context, "cancel", lambda: self.rest.cancel_job(context.id))
        except (KeyboardInterrupt, SystemExit):
            # The program is ending: fail the job (retryable) rather than leave it running.
            try:
                self.rest.fail_job(context.id, "the worker was interrupted", None, True)
            except (ApiError, OSError):
                pass
            raise
        except Exception as exc:
            if context.cancel_requested:  # the handler turned the cancellation into an error
                return self._end(context, "cancel", lambda: self.rest.cancel_job(context.id))
            if isinstance(exc, JobFailed):  # a failure the handler decided on
                log.info("job %s failed in %s: %s", context.id, self.name, exc)
            else:
                log.warning("job %s failed in %s", context.id, self.name, exc_info=True)
            details = exc.details if isinstance(exc, JobFailed) else {"exception": _name(exc)}
            retryable = exc.retryable if isinstance(exc, JobFailed) else False
            message = (str(exc) or _name(exc))[:4000]
            return self._end(
                context,
                "fail",
                lambda: self.rest.fail_job(context.id, message, details, retryable),
            )
        if context.cancel_requested:  # the handler caught JobCancelled and returned
            return self._end(context, "cancel", lambda: self.rest.cancel_job(context.id))
        return self._end(
            context,
            "complete",
            lambda: self.rest.complete_job(context.id, result, context.result_url),
        )

    def run(
        self,
        handler: Handler,
        *,
        poll_interval: float = 1.0,
        stop_event: threading.Event | None = None,
        max_jobs: int | None = None,
    ) -> int:
        """Claim and process jobs until stopped (:meth:`stop` or ``stop_event``) or ``max_jobs``
        were processed; the number processed. Waits ``poll_interval`` seconds when no job is
        queued; while the server is unreachable or unavailable (503) it retries, backing off
        up to 30 s. Other errors (a refused token, say) are raised."""
        try:
            return self._loop(handler, poll_interval, stop_event, max_jobs)
        finally:
            # An idle kept-alive connection would hold a stopping server for its keep-alive
            # time; the client stays usable (it connects again when asked).
            self.rest.close()

    def _loop(
        self,
        handler: Handler,
        poll_interval: float,
        stop_event: threading.Event | None,
        max_jobs: int | None,
    ) -> int:
        done = 0
        delay = poll_interval
        while not self._stopped(stop_event) and (max_jobs is None or done < max_jobs):
            try:
                job = self.claim()
            except (ServerUnreachable, ApiError) as exc:
                if isinstance(exc, ApiError) and exc.status != 503:
                    raise
                log.warning("%s: %s; retrying in %.1f s", self.name, exc, delay)
                self._pause(delay, stop_event)
                delay = min(max(delay, 0.1) * 2, MAX_RETRY_DELAY)
                continue
            delay = poll_interval
            if job is None:
                self._pause(poll_interval, stop_event)
                continue
            try:
                self.process(job, handler)
            except ServerUnreachable as exc:  # the job stays running on the server
                log.warning("%s: job %s: %s", self.name, job["id"], exc)
            done += 1
        return done

    # ------------------------------------------------------------------ internals

    def _stopped(self, stop_event: threading.Event | None) -> bool:
        return self._stop.is_set() or (stop_event is not None and stop_event.is_set())

    def _pause(self, seconds: float, stop_event: threading.Event | None) -> None:
        """Sleep ``seconds``, waking at once when either stop signal is set."""
        if stop_event is None:
            self._stop.wait(seconds)
            return
        # Two events: wait on ours in short slices and look at the caller's in between.
        remaining = seconds
        while remaining > 0 and not self._stopped(stop_event):
            step = min(remaining, 0.05)
            if stop_event.wait(step):
                return
            remaining -= step

    def _end(self, context: JobContext, action: str, call: Callable[[], dict[str, Any]]) -> str:
        """Report the job's end; when the job had already ended meanwhile (409: cancelled by
        someone else, say), its status as the server has it."""
        try:
            context.job = call()
        except ApiError as exc:
            if exc.status != 409:
                raise
            context.job = self.rest.get_job(context.id)
            log.info("job %s: %s refused, it is %s", context.id, action, context.job["status"])
        status: str = context.job["status"]
        return status


def _name(exc: BaseException) -> str:
    return exc.__class__.__name__


__all__ = ["Handler", "JobCancelled", "JobContext", "JobFailed", "Worker"]
