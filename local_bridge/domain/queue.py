"""The job queue: claim order, positions, start estimates, counts, and position announcements."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Job

RECENT_JOBS = 20  # completed jobs of a kind that estimate its duration
QUEUE_ORDER = (Job.priority.desc(), Job.id.asc())  # highest priority, then oldest


def queue_counts(db: Session) -> dict[str, int]:
    """The counts of a ``queue_status`` event."""
    by_status = dict(db.execute(select(Job.status, func.count(Job.id)).group_by(Job.status)).all())
    return {
        "pending_count": by_status.get("queued", 0),
        "processing_count": by_status.get("running", 0),
        "completed_count": by_status.get("completed", 0),
        "failed_count": by_status.get("failed", 0),
        "cancelled_count": by_status.get("cancelled", 0),
    }


class QueueView:
    """Positions and start estimates of queued jobs, read at one moment."""

    def __init__(self, db: Session):
        self._db = db
        rows = db.execute(
            select(Job.id, Job.kind).where(Job.status == "queued").order_by(*QUEUE_ORDER)
        ).all()
        self.positions: dict[int, int] = {row.id: index for index, row in enumerate(rows, 1)}
        self._kinds = {row.id: row.kind for row in rows}
        running = db.execute(
            select(func.count(Job.id), func.count(func.distinct(Job.worker))).where(
                Job.status == "running"
            )
        ).one()
        self.running, self.workers = running[0], max(1, running[1])
        self._means: dict[str, float | None] = {}

    def mean_duration(self, kind: str) -> float | None:
        """Mean seconds of the most recent completed jobs of ``kind``; None if none ran yet."""
        if kind not in self._means:
            rows = self._db.execute(
                select(Job.started_at, Job.finished_at)
                .where(Job.kind == kind, Job.status == "completed", Job.started_at.is_not(None))
                .order_by(Job.finished_at.desc())
                .limit(RECENT_JOBS)
            ).all()
            durations = [(f - s).total_seconds() for s, f in rows if f is not None]
            self._means[kind] = sum(durations) / len(durations) if durations else None
        return self._means[kind]

    def estimate(self, job_id: int) -> float | None:
        """Seconds until the job starts: the running jobs and those ahead of it, shared among
        the active workers, each taking the kind's mean duration."""
        position = self.positions.get(job_id)
        mean = self.mean_duration(self._kinds[job_id]) if position else None
        if mean is None:
            return None
        return round(mean * (position - 1 + self.running) / self.workers, 1)


class QueueAnnouncer:
    """Publishes ``job_queued`` on ``jobs:<id>`` for every queued job whose position moved,
    whatever moved it: the queue is read after each change and compared with what was last
    announced."""

    def __init__(self, read: Callable[[], Any], publish: Callable[[int, int, float | None], Any]):
        self._read = read
        self._publish = publish
        # _lock guards _last and keeps announcements in order; it is held while the queue is
        # read, so that concurrent changes are announced one complete picture at a time.
        self._lock = threading.Lock()
        self._last: dict[int, int] | None = None

    def prime(self) -> None:
        """Take the first picture of the queue (before the first change this process makes)."""
        if self._last is None:
            with self._lock:
                if self._last is None:
                    with self._read() as db:
                        self._last = dict(QueueView(db).positions)

    def refresh(self, entered: dict[int, int] | None = None) -> None:
        """Announce moves. ``entered``: jobs that just joined, with the position their own
        ``job_queued`` on ``jobs`` already told."""
        with self._lock:
            with self._read() as db:
                view = QueueView(db)
                last = self._last if self._last is not None else dict(view.positions)
                last.update(entered or {})
                moved = [
                    (job_id, position)
                    for job_id, position in view.positions.items()
                    if last.get(job_id, position) != position
                ]
                for job_id, position in moved:
                    self._publish(job_id, position, view.estimate(job_id))
                self._last = dict(view.positions)
