"""SQLAlchemy models of the photo workflow: import sessions, photos, jobs and exports.

Primary keys are integers, shown to clients as strings (API.md: "Ids are strings"); the
integer order of job ids is also the age order of the queue.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ImportSession(Base):
    """An import session: a batch of photos brought in together."""

    __tablename__ = "sessions"
    STATUSES = ("active", "processing", "completed", "archived")

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    import_folder: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    photos: Mapped[list[Photo]] = relationship(back_populates="session", lazy="raise")


class Photo(Base):
    """A photo with its analysis, chosen preset and approval decision."""

    __tablename__ = "photos"
    APPROVAL_STATUSES = ("none", "pending", "approved", "rejected")

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"), index=True)
    file_name: Mapped[str] = mapped_column(String(500))
    file_path: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(64))
    ai_score: Mapped[float | None] = mapped_column(Float)
    analysis_results: Mapped[Any] = mapped_column(JSON, nullable=True)
    analyzed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    context_tag: Mapped[str | None] = mapped_column(String(200))
    selected_preset: Mapped[str | None] = mapped_column(String(200))
    approval_status: Mapped[str] = mapped_column(String(20), default="none")
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    session: Mapped[ImportSession] = relationship(back_populates="photos", lazy="raise")

    __table_args__ = (Index("ix_photos_session_approval", "session_id", "approval_status"),)


class Job(Base):
    """A unit of work for a worker (AI analysis and the like), with its queue and progress state."""

    __tablename__ = "jobs"
    STATUSES = ("queued", "running", "completed", "failed", "cancelled")
    TERMINAL = ("completed", "failed", "cancelled")

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    photo_id: Mapped[int | None] = mapped_column(ForeignKey("photos.id"), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=50)
    params: Mapped[Any] = mapped_column(JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str | None] = mapped_column(Text)
    counters: Mapped[Any] = mapped_column(JSON, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200))
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    result_url: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    error_details: Mapped[Any] = mapped_column(JSON, nullable=True)
    retryable: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_jobs_queue", "status", "priority", "id"),
        Index("ix_jobs_kind_finished", "kind", "status", "finished_at"),
    )

    @property
    def finished(self) -> bool:
        return self.status in self.TERMINAL


class Export(Base):
    """Writing one photo out with a preset."""

    __tablename__ = "exports"
    STATUSES = ("running", "completed", "failed")

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id"), index=True)
    preset_name: Mapped[str] = mapped_column(String(200))
    destination: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="running")
    output_path: Mapped[str | None] = mapped_column(Text)
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
