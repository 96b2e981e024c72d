"""Import sessions and the photos imported into them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from .. import catalog
from .errors import NotFound
from .ids import cursor_id, page, path_id
from .models import ImportSession, Photo, utcnow
from .schemas import photo_json, session_json
from .unit import Tx, UnitOfWork


def session_counts(db: Session, session_id: int) -> dict[str, int]:
    """total_photos, processed_photos (analysed) and approved_photos of one session."""
    total, processed, approved = db.execute(
        select(
            func.count(Photo.id),
            func.count(Photo.analyzed_at),
            func.coalesce(func.sum(case((Photo.approval_status == "approved", 1), else_=0)), 0),
        ).where(Photo.session_id == session_id)
    ).one()
    return {"total_photos": total, "processed_photos": processed, "approved_photos": int(approved)}


def emit_session_updated(tx: Tx, import_session: ImportSession) -> dict[str, int]:
    """Publish the session's counters (the last event of any request that changes them) and
    bump its ``updated_at``: every change to a session or to its counters comes through here."""
    import_session.updated_at = utcnow()
    tx.db.flush()
    counts = session_counts(tx.db, import_session.id)
    total, processed = counts["total_photos"], counts["processed_photos"]
    tx.emit(
        "session_updated",
        session_id=import_session.id,
        total_photos=total,
        processed_photos=processed,
        progress_percent=catalog.progress_percent(processed, total),
        status=import_session.status,
    )
    return counts


def load_session(db: Session, session_id: str) -> ImportSession:
    import_session = db.get(ImportSession, path_id(session_id, "session"))
    if import_session is None:
        raise NotFound(f"session {session_id!r} not found")
    return import_session


class Sessions:
    """Create, read and update import sessions; import photos into them."""

    def __init__(self, unit_of_work: UnitOfWork):
        self.unit_of_work = unit_of_work

    def create(self, name: str, import_folder: str) -> dict[str, Any]:
        with self.unit_of_work.transaction() as tx:
            import_session = ImportSession(name=name, import_folder=import_folder, status="active")
            tx.db.add(import_session)
            tx.db.flush()
            tx.emit(
                "session_created",
                session_id=import_session.id,
                session_name=name,
                import_folder=import_folder,
            )
            return session_json(import_session, session_counts(tx.db, import_session.id))

    def get(self, session_id: str) -> dict[str, Any]:
        with self.unit_of_work.read() as db:
            import_session = load_session(db, session_id)
            return session_json(import_session, session_counts(db, import_session.id))

    def list(self, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        with self.unit_of_work.read() as db:
            rows = db.scalars(
                select(ImportSession)
                .where(ImportSession.id > cursor_id(cursor))
                .order_by(ImportSession.id)
                .limit(limit + 1)
            ).all()
            rows, next_cursor = page(list(rows), limit)
            return [session_json(s, session_counts(db, s.id)) for s in rows], next_cursor

    def update(self, session_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        with self.unit_of_work.transaction() as tx:
            import_session = load_session(tx.db, session_id)
            became_completed = (
                changes.get("status") == "completed" and import_session.status != "completed"
            )
            for key, value in changes.items():
                setattr(import_session, key, value)
            counts = emit_session_updated(tx, import_session)
            if became_completed:
                tx.emit(
                    "session_completed",
                    session_id=import_session.id,
                    session_name=import_session.name,
                    total_photos=counts["total_photos"],
                    approved_photos=counts["approved_photos"],
                )
            return session_json(import_session, counts)

    def import_photo(self, session_id: str, data: dict[str, Any]) -> dict[str, Any]:
        with self.unit_of_work.transaction() as tx:
            import_session = load_session(tx.db, session_id)
            photo = Photo(session_id=import_session.id, approval_status="none", **data)
            tx.db.add(photo)
            tx.db.flush()
            tx.emit(
                "photo_imported",
                photo_id=photo.id,
                session_id=import_session.id,
                file_name=photo.file_name,
                file_path=photo.file_path,
                source=photo.source,
            )
            emit_session_updated(tx, import_session)
            return photo_json(photo)

    def photos(
        self, session_id: str, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        with self.unit_of_work.read() as db:
            import_session = load_session(db, session_id)
            rows = db.scalars(
                select(Photo)
                .where(Photo.session_id == import_session.id, Photo.id > cursor_id(cursor))
                .order_by(Photo.id)
                .limit(limit + 1)
            ).all()
            rows, next_cursor = page(list(rows), limit)
            return [photo_json(p) for p in rows], next_cursor
