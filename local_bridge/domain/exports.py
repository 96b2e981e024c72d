"""Exports: writing a photo out with a preset, and how that ended."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from .errors import Conflict, Invalid, NotFound
from .ids import body_id, path_id
from .models import Export, Photo, utcnow
from .schemas import export_json
from .unit import Tx, UnitOfWork


class Exports:
    """Start, complete and fail exports."""

    def __init__(self, unit_of_work: UnitOfWork):
        self.unit_of_work = unit_of_work

    def get(self, export_id: str) -> dict[str, Any]:
        with self.unit_of_work.read() as db:
            return export_json(self._load(db, export_id))

    def start(self, photo_id: Any, preset_name: str, destination: str) -> dict[str, Any]:
        with self.unit_of_work.transaction() as tx:
            photo = tx.db.get(Photo, body_id(photo_id, "photo_id"))
            if photo is None:
                raise Invalid("photo_id names no photo", {"photo_id": ["No such photo."]})
            export = Export(
                photo_id=photo.id,
                preset_name=preset_name,
                destination=destination,
                status="running",
            )
            tx.db.add(export)
            tx.db.flush()
            tx.emit(
                "export_started",
                export_id=export.id,
                photo_id=photo.id,
                session_id=photo.session_id,
                preset_name=preset_name,
                destination=destination,
            )
            return export_json(export)

    def complete(self, export_id: str, output_path: str, file_size: int) -> dict[str, Any]:
        with self.unit_of_work.transaction() as tx:
            export, photo = self._finish(
                tx, export_id, status="completed", output_path=output_path, file_size=file_size
            )
            tx.emit(
                "export_completed",
                export_id=export.id,
                photo_id=photo.id,
                session_id=photo.session_id,
                preset_name=export.preset_name,
                output_path=output_path,
                file_size=file_size,
            )
            return export_json(export)

    def fail(self, export_id: str, error_message: str) -> dict[str, Any]:
        with self.unit_of_work.transaction() as tx:
            export, photo = self._finish(
                tx, export_id, status="failed", error_message=error_message
            )
            tx.emit(
                "export_failed",
                export_id=export.id,
                photo_id=photo.id,
                session_id=photo.session_id,
                preset_name=export.preset_name,
                error_message=error_message,
            )
            return export_json(export)

    def _finish(self, tx: Tx, export_id: str, **values: Any) -> tuple[Export, Photo]:
        export = self._load(tx.db, export_id)
        changed = tx.db.execute(
            update(Export)
            .where(Export.id == export.id, Export.status == "running")
            .values(finished_at=utcnow(), **values)
        ).rowcount
        tx.db.refresh(export)
        if changed != 1:
            raise Conflict(f"export {export_id} is {export.status}: it can end only once")
        return export, tx.db.get(Photo, export.photo_id)

    @staticmethod
    def _load(db, export_id: str) -> Export:
        export = db.get(Export, path_id(export_id, "export"))
        if export is None:
            raise NotFound(f"export {export_id!r} not found")
        return export
