"""The photo workflow's domain services, assembled for one application."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import sessionmaker

from ..publisher import Publisher
from .exports import Exports
from .jobs import ProcessingJobLifecycle
from .photos import Photos
from .queue import queue_counts
from .sessions import Sessions
from .unit import Workflow


@dataclass
class Domain:
    """Sessions, photos, jobs and exports on one database and one publish path."""

    workflow: Workflow
    sessions: Sessions
    photos: Photos
    jobs: ProcessingJobLifecycle
    exports: Exports

    @classmethod
    def build(cls, sessions: sessionmaker, publisher: Publisher, progress_rate: float) -> "Domain":
        workflow = Workflow(sessions, publisher)
        return cls(workflow, Sessions(workflow), Photos(workflow),
                   ProcessingJobLifecycle(workflow, progress_rate), Exports(workflow))

    def queue_counts(self) -> dict[str, int]:
        with self.workflow.read() as db:
            return queue_counts(db)

    def close(self) -> None:
        self.jobs.close()
