"""Photos: analysis results, the chosen preset, and the approval queue."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .errors import Conflict, NotFound
from .ids import cursor_id, page, path_id
from .models import ImportSession, Photo, utcnow
from .schemas import photo_json
from .sessions import emit_session_updated, load_session
from .unit import Tx, UnitOfWork


def load_photo(db: Session, photo_id: str) -> Photo:
    photo = db.get(Photo, path_id(photo_id, "photo"))
    if photo is None:
        raise NotFound(f"photo {photo_id!r} not found")
    return photo


def emit_approval_queue(tx: Tx, session_id: int) -> None:
    pending = tx.db.scalar(
        select(func.count(Photo.id)).where(
            Photo.session_id == session_id, Photo.approval_status == "pending"
        )
    )
    tx.emit("approval_queue_updated", queue_count=pending, session_id=session_id)


class Photos:
    """Read photos, record analysis and selection, approve and reject."""

    def __init__(self, unit_of_work: UnitOfWork):
        self.unit_of_work = unit_of_work

    def get(self, photo_id: str) -> dict[str, Any]:
        with self.unit_of_work.read() as db:
            return photo_json(load_photo(db, photo_id))

    def record_analysis(
        self, photo_id: str, ai_score: float | None, analysis_results: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Store (or replace) the analysis; an undecided photo enters the approval queue."""
        with self.unit_of_work.transaction() as tx:
            photo = load_photo(tx.db, photo_id)
            photo.ai_score = ai_score
            photo.analysis_results = analysis_results
            photo.analyzed_at = photo.updated_at = utcnow()
            if photo.approval_status == "none":
                photo.approval_status = "pending"
            tx.db.flush()
            tx.emit(
                "photo_analyzed",
                photo_id=photo.id,
                session_id=photo.session_id,
                ai_score=ai_score,
                analysis_results=analysis_results,
            )
            emit_approval_queue(tx, photo.session_id)
            emit_session_updated(tx, tx.db.get(ImportSession, photo.session_id))
            return photo_json(photo)

    def record_selection(
        self, photo_id: str, context_tag: str | None, selected_preset: str | None
    ) -> dict[str, Any]:
        with self.unit_of_work.transaction() as tx:
            photo = load_photo(tx.db, photo_id)
            photo.context_tag = context_tag
            photo.selected_preset = selected_preset
            photo.updated_at = utcnow()
            tx.db.flush()
            tx.emit(
                "photo_selected",
                photo_id=photo.id,
                session_id=photo.session_id,
                context_tag=context_tag,
                selected_preset=selected_preset,
            )
            return photo_json(photo)

    def approval_queue(
        self, session_id: str | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Analysed photos awaiting a decision, oldest first (of one session if given)."""
        with self.unit_of_work.read() as db:
            query = select(Photo).where(
                Photo.approval_status == "pending", Photo.id > cursor_id(cursor)
            )
            if session_id is not None:
                query = query.where(Photo.session_id == load_session(db, session_id).id)
            rows = db.scalars(query.order_by(Photo.id).limit(limit + 1)).all()
            rows, next_cursor = page(list(rows), limit)
            return [photo_json(p) for p in rows], next_cursor

    def approve(self, photo_id: str) -> dict[str, Any]:
        with self.unit_of_work.transaction() as tx:
            photo = self._decide(tx, photo_id, "approved", None)
            tx.emit("photo_approved", photo_id=photo.id, session_id=photo.session_id)
            emit_approval_queue(tx, photo.session_id)
            emit_session_updated(tx, tx.db.get(ImportSession, photo.session_id))
            return photo_json(photo)

    def reject(self, photo_id: str, reason: str) -> dict[str, Any]:
        with self.unit_of_work.transaction() as tx:
            photo = self._decide(tx, photo_id, "rejected", reason)
            tx.emit("photo_rejected", photo_id=photo.id, session_id=photo.session_id, reason=reason)
            emit_approval_queue(tx, photo.session_id)
            return photo_json(photo)

    @staticmethod
    def _decide(tx: Tx, photo_id: str, decision: str, reason: str | None) -> Photo:
        photo = load_photo(tx.db, photo_id)
        # Compare-and-set: of two decisions racing on one photo, exactly one wins.
        changed = tx.db.execute(
            update(Photo)
            .where(Photo.id == photo.id, Photo.approval_status == "pending")
            .values(approval_status=decision, rejection_reason=reason, updated_at=utcnow())
        ).rowcount
        if changed != 1:
            raise Conflict(
                f"photo {photo_id} is not awaiting a decision "
                f"(approval_status {photo.approval_status})"
            )
        tx.db.refresh(photo)
        return photo
