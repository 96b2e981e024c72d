"""The photo workflow's domain services, assembled for one application."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import sessionmaker

from .exports import Exports
from .jobs import ProcessingJobLifecycle
from .photos import Photos
from .queue import queue_counts
from .sessions import Sessions
from .unit import EventSink, UnitOfWork


@dataclass
class Domain:
    """Import sessions, photos, jobs and exports on one database and one publish path."""

    unit_of_work: UnitOfWork
    sessions: Sessions
    photos: Photos
    jobs: ProcessingJobLifecycle
    exports: Exports

    @classmethod
    def build(cls, open_db: sessionmaker, publisher: EventSink, progress_rate: float) -> Domain:
        unit_of_work = UnitOfWork(open_db, publisher)
        return cls(
            unit_of_work,
            Sessions(unit_of_work),
            Photos(unit_of_work),
            ProcessingJobLifecycle(unit_of_work, progress_rate),
            Exports(unit_of_work),
        )

    def queue_counts(self) -> dict[str, int]:
        with self.unit_of_work.read() as db:
            return queue_counts(db)

    def close(self) -> None:
        self.jobs.close()
