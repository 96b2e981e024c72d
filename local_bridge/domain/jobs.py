"""The job lifecycle: queued → running → completed | failed | cancelled, and the queue.

Every transition is a compare-and-set ``UPDATE ... WHERE status = <expected>``, so of two
requests racing on one job exactly one wins (the other gets 409), and two workers claiming at
once never get the same job, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from .errors import Conflict, Invalid, NotFound
from .ids import body_id, cursor_id, page, path_id
from .models import Job, Photo, utcnow
from .progress import ProgressConflator
from .queue import QUEUE_ORDER, QueueAnnouncer, QueueView, queue_counts
from .schemas import job_json
from .unit import Tx, UnitOfWork

CLAIM_ATTEMPTS = 50
#: The event that ends a job, by the job's final status.
TERMINAL_EVENT = {
    "completed": "job_completed",
    "failed": "job_failed",
    "cancelled": "job_cancelled",
}


def load_job(db: Session, job_id: str | int) -> Job:
    job = db.get(Job, job_id if isinstance(job_id, int) else path_id(job_id, "job"))
    if job is None:
        raise NotFound(f"job {job_id!r} not found")
    return job


def terminal_event_fields(job: Job) -> tuple[str, dict[str, Any]]:
    """The type and fields of a finished job's terminal event, from its row: the one source of
    both the live event and the job stream's statement of an end it missed."""
    type_ = TERMINAL_EVENT[job.status]
    if type_ == "job_completed":
        return type_, {
            "job_id": job.id,
            "photo_id": job.photo_id,
            "result": job.result,
            "result_url": job.result_url,
            "duration_seconds": _duration(job),
        }
    if type_ == "job_failed":
        return type_, {
            "job_id": job.id,
            "photo_id": job.photo_id,
            "error_message": job.error_message,
            "error_details": job.error_details,
            "retryable": job.retryable,
            "stage": job.stage,
        }
    return type_, {"job_id": job.id, "reason": job.cancel_reason}


def _duration(job: Job) -> float | None:
    if job.started_at is None or job.finished_at is None:
        return None
    return round((job.finished_at - job.started_at).total_seconds(), 3)


class ProcessingJobLifecycle:
    """Creates, claims, advances, finishes, cancels and reprioritizes jobs, publishing each
    change after its commit."""

    def __init__(self, unit_of_work: UnitOfWork, progress_rate: float):
        self.unit_of_work = unit_of_work
        publisher = unit_of_work.publisher
        self.conflator = ProgressConflator(
            progress_rate, lambda fields: publisher.publish("job_progress", fields)
        )
        self.announcer = QueueAnnouncer(
            unit_of_work.read,
            lambda job_id, position, eta: publisher.publish(
                "job_queued",
                {"job_id": job_id, "position": position, "estimated_start_seconds": eta},
                channel=f"jobs:{job_id}",
            ),
        )

    # ------------------------------------------------------------------ reading

    def get(self, job_id: str) -> dict[str, Any]:
        """The job with its queue position and start estimate (the polling fallback)."""
        with self.unit_of_work.read() as db:
            job = load_job(db, job_id)
            return self._json(db, job)

    def list(
        self, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        if status is not None and status not in Job.STATUSES:
            raise Invalid(
                "unknown status", {"status": [f"Must be one of {', '.join(Job.STATUSES)}."]}
            )
        with self.unit_of_work.read() as db:
            query = select(Job).where(Job.id > cursor_id(cursor))
            if status is not None:
                query = query.where(Job.status == status)
            rows, next_cursor = page(
                list(db.scalars(query.order_by(Job.id).limit(limit + 1))), limit
            )
            view = QueueView(db) if any(job.status == "queued" for job in rows) else None
            return [self._json(db, job, view) for job in rows], next_cursor

    def snapshot(
        self, job_id: str | int
    ) -> tuple[dict[str, Any], tuple[str, dict[str, Any]] | None]:
        """``job_status`` fields, and the terminal event of a finished job."""
        with self.unit_of_work.read() as db:
            job = load_job(db, job_id)
            data = self._json(db, job)
            status = {
                "job_id": data["id"],
                "status": job.status,
                "progress": job.progress,
                "stage": job.stage,
                "message": job.message,
                "counters": job.counters,
                "position": data["position"],
                "estimated_start_seconds": data["estimated_start_seconds"],
            }
            return status, (terminal_event_fields(job) if job.finished else None)

    @staticmethod
    def _json(db: Session, job: Job, view: QueueView | None = None) -> dict[str, Any]:
        if job.status != "queued":
            return job_json(job)
        view = view or QueueView(db)
        return job_json(job, view.positions.get(job.id), view.estimate(job.id))

    # ------------------------------------------------------------------ transitions

    def create(
        self,
        kind: str,
        photo_id: Any = None,
        priority: int = 50,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a job; it enters the queue at once."""
        self.announcer.prime()
        with self.unit_of_work.transaction() as tx:
            photo = None
            if photo_id is not None:
                photo = tx.db.get(Photo, body_id(photo_id, "photo_id"))
                if photo is None:
                    raise Invalid("photo_id names no photo", {"photo_id": ["No such photo."]})
            job = Job(
                kind=kind,
                photo_id=photo.id if photo else None,
                priority=priority,
                params=params,
                status="queued",
                progress=0.0,
            )
            tx.db.add(job)
            tx.db.flush()
            view = QueueView(tx.db)
            position = view.positions[job.id]
            tx.emit(
                "job_created", job_id=job.id, photo_id=job.photo_id, priority=priority, kind=kind
            )
            tx.emit(
                "job_queued",
                job_id=job.id,
                position=position,
                estimated_start_seconds=view.estimate(job.id),
            )
            self._emit_queue_status(tx)
            result = job_json(job, position, view.estimate(job.id))
        self.announcer.refresh(entered={job.id: position})
        return result

    def claim(self, worker: str, kinds: Iterable[str] | None = None) -> dict[str, Any] | None:
        """Start the next queued job (highest priority, then oldest) for ``worker``; None when
        there is none."""
        self.announcer.prime()
        kinds = list(kinds) if kinds else None
        for _ in range(CLAIM_ATTEMPTS):
            try:
                with self.unit_of_work.transaction() as tx:
                    query = select(Job.id).where(Job.status == "queued")
                    if kinds:
                        query = query.where(Job.kind.in_(kinds))
                    # PostgreSQL: claimers skip each other's candidates instead of all racing
                    # for the first one (SQLite serializes writers and ignores this).
                    candidate = tx.db.scalar(
                        query.order_by(*QUEUE_ORDER).limit(1).with_for_update(skip_locked=True)
                    )
                    if candidate is None:
                        return None
                    if not self._cas(
                        tx,
                        candidate,
                        ("queued",),
                        status="running",
                        worker=worker,
                        started_at=utcnow(),
                    ):
                        continue  # another worker took it first: try the next one
                    job = load_job(tx.db, candidate)
                    tx.emit("job_started", job_id=job.id, photo_id=job.photo_id, worker=worker)
                    self._emit_queue_status(tx)
                    result = job_json(job)
            except OperationalError:  # SQLite busy beyond its timeout: try again
                continue
            self.announcer.refresh()
            return result
        raise Conflict("the queue is too busy to claim a job now; retry")

    def mark_progress(self, job_id: str, progress: float, **changes: Any) -> dict[str, Any]:
        """Record progress of a running job (``changes``: any of stage, message, counters);
        the reply carries ``cancel_requested``."""
        with self.unit_of_work.transaction() as tx:
            job = load_job(tx.db, job_id)
            self._require(tx, job, ("running",), progress=progress, **changes)
            fields = {
                "job_id": str(job.id),
                "stage": job.stage,
                "progress": job.progress,
                "message": job.message,
                "counters": job.counters,
            }
            tx.after_commit(lambda: self.conflator.report(job.id, fields))
            return job_json(job)

    def mark_completed(
        self, job_id: str, result: Any = None, result_url: str | None = None
    ) -> dict[str, Any]:
        with self.unit_of_work.transaction() as tx:
            job = load_job(tx.db, job_id)
            self._require(
                tx,
                job,
                ("running",),
                status="completed",
                result=result,
                result_url=result_url,
                progress=100.0,
                finished_at=utcnow(),
            )
            tx.after_commit(lambda: self.conflator.finish(job.id))
            self._emit_terminal_event(tx, job)
            self._emit_queue_status(tx)
            return job_json(job)

    def mark_failed(
        self, job_id: str, error_message: str, error_details: Any = None, retryable: bool = False
    ) -> dict[str, Any]:
        with self.unit_of_work.transaction() as tx:
            job = load_job(tx.db, job_id)
            self._require(
                tx,
                job,
                ("running",),
                status="failed",
                error_message=error_message,
                error_details=error_details,
                retryable=retryable,
                finished_at=utcnow(),
            )
            tx.after_commit(lambda: self.conflator.finish(job.id))
            self._emit_terminal_event(tx, job)
            tx.emit(
                "error_occurred",
                error_type="job_failed",
                error_message=error_message,
                error_details=error_details,
                job_id=job.id,
                photo_id=job.photo_id,
            )
            self._emit_queue_status(tx)
            return job_json(job)

    def cancel(self, job_id: str, reason: str | None = None) -> tuple[dict[str, Any], bool]:
        """Cancel a job: at once when queued, or once its worker confirms when running.

        Returns the job and whether it has ended (False: cancellation requested).
        """
        self.announcer.prime()
        with self.unit_of_work.transaction() as tx:
            job = load_job(tx.db, job_id)
            if job.status == "running" and not job.cancel_requested:
                self._require(
                    tx,
                    job,
                    ("running",),
                    cancel_requested=True,
                    cancel_reason=reason,
                    expect_cancel_requested=False,
                )
                return job_json(job), False
            was_queued = job.status == "queued"
            if was_queued:
                self._require(
                    tx,
                    job,
                    ("queued",),
                    status="cancelled",
                    cancel_reason=reason,
                    finished_at=utcnow(),
                )
            else:
                self._require(
                    tx,
                    job,
                    ("running",),
                    status="cancelled",
                    finished_at=utcnow(),
                    expect_cancel_requested=True,
                )
                tx.after_commit(lambda: self.conflator.finish(job.id))
            self._emit_terminal_event(tx, job)
            self._emit_queue_status(tx)
            result = job_json(job)
        if was_queued:
            self.announcer.refresh()
        return result, True

    def reprioritize(self, job_id: str, priority: int, reason: str | None = None) -> dict[str, Any]:
        self.announcer.prime()
        with self.unit_of_work.transaction() as tx:
            job = load_job(tx.db, job_id)
            old = job.priority
            self._require(tx, job, ("queued",), priority=priority)
            tx.emit(
                "priority_changed",
                job_id=job.id,
                old_priority=old,
                new_priority=priority,
                reason=reason,
            )
            view = QueueView(tx.db)
            result = job_json(job, view.positions.get(job.id), view.estimate(job.id))
        self.announcer.refresh()
        return result

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _cas(
        tx: Tx,
        job_id: int,
        expected: tuple[str, ...],
        expect_cancel_requested: bool | None = None,
        **values: Any,
    ) -> bool:
        condition = [Job.id == job_id, Job.status.in_(expected)]
        if expect_cancel_requested is not None:
            condition.append(Job.cancel_requested.is_(expect_cancel_requested))
        return tx.db.execute(update(Job).where(*condition).values(**values)).rowcount == 1

    def _require(self, tx: Tx, job: Job, expected: tuple[str, ...], **values: Any) -> None:
        """Apply ``values`` if the job is still in an ``expected`` status; 409 otherwise."""
        if not self._cas(tx, job.id, expected, **values):
            tx.db.refresh(job)
            raise Conflict(
                f"job {job.id} is {job.status}: not allowed (needs {' or '.join(expected)})"
            )
        tx.db.refresh(job)

    @staticmethod
    def _emit_terminal_event(tx: Tx, job: Job) -> None:
        type_, fields = terminal_event_fields(job)
        tx.emit(type_, **fields)

    @staticmethod
    def _emit_queue_status(tx: Tx) -> None:
        tx.db.flush()
        tx.emit("queue_status", **queue_counts(tx.db))

    def close(self) -> None:
        self.conflator.close()
