"""Marshmallow schemas of request bodies, and the JSON representations of resources (API.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from ..catalog import Count, Integer, Number, StrictBool
from .models import Export, ImportSession, Job, Photo

_name = validate.Length(min=1, max=200)


class _Body(Schema):
    class Meta:
        unknown = RAISE


class Empty(_Body):
    """A body that must carry no fields (actions whose path says everything)."""


class SessionCreate(_Body):
    name = fields.String(required=True, validate=_name)
    import_folder = fields.String(required=True, validate=validate.Length(min=1, max=4096))


class SessionUpdate(_Body):
    name = fields.String(validate=_name)
    status = fields.String(validate=validate.OneOf(ImportSession.STATUSES))


class PhotoImport(_Body):
    file_name = fields.String(required=True, validate=validate.Length(min=1, max=500))
    file_path = fields.String(required=True, validate=validate.Length(min=1, max=4096))
    source = fields.String(required=True, validate=validate.Length(min=1, max=64))


class AnalysisRecord(_Body):
    ai_score = Number(required=True, allow_none=True)
    analysis_results = fields.Dict(required=True, allow_none=True)


class SelectionRecord(_Body):
    context_tag = fields.String(required=True, allow_none=True, validate=_name)
    selected_preset = fields.String(required=True, allow_none=True, validate=_name)


class Rejection(_Body):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class JobCreate(_Body):
    kind = fields.String(required=True, validate=validate.Length(min=1, max=64))
    photo_id = fields.String(allow_none=True, load_default=None)
    priority = Integer(0, 100, load_default=50)
    params = fields.Dict(allow_none=True, load_default=None)


class JobClaim(_Body):
    worker = fields.String(required=True, validate=validate.Length(min=1, max=200))
    kinds = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        allow_none=True,
        load_default=None,
        validate=validate.Length(min=1, max=64),
    )


class JobProgress(_Body):
    progress = Number(required=True, validate=validate.Range(0, 100))
    stage = fields.String(allow_none=True, validate=validate.Length(max=200))
    message = fields.String(allow_none=True, validate=validate.Length(max=2000))
    counters = fields.Dict(keys=fields.String(), values=Count(), allow_none=True)


class JobComplete(_Body):
    result = fields.Raw(allow_none=True, load_default=None)
    result_url = fields.String(allow_none=True, load_default=None)


class JobFail(_Body):
    error_message = fields.String(required=True, validate=validate.Length(min=1, max=4000))
    error_details = fields.Raw(allow_none=True, load_default=None)
    retryable = StrictBool(load_default=False)


class JobCancel(_Body):
    reason = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=2000))


class JobPriority(_Body):
    priority = Integer(0, 100, required=True)
    reason = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=2000))


class ExportCreate(_Body):
    photo_id = fields.String(required=True)
    preset_name = fields.String(required=True, validate=_name)
    destination = fields.String(required=True, validate=validate.Length(min=1, max=4096))


class ExportComplete(_Body):
    output_path = fields.String(required=True, validate=validate.Length(min=1, max=4096))
    file_size = Count(required=True)


class ExportFail(_Body):
    error_message = fields.String(required=True, validate=validate.Length(min=1, max=4000))


# ------------------------------------------------------------------ representations


def timestamp(moment: datetime | None) -> str | None:
    """RFC 3339 UTC; SQLite hands back naive datetimes, which are UTC here."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ident(value: int | None) -> str | None:
    return None if value is None else str(value)


def session_json(session: ImportSession, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": ident(session.id),
        "name": session.name,
        "import_folder": session.import_folder,
        "status": session.status,
        "total_photos": counts["total_photos"],
        "processed_photos": counts["processed_photos"],
        "approved_photos": counts["approved_photos"],
        "created_at": timestamp(session.created_at),
        "updated_at": timestamp(session.updated_at),
    }


def photo_json(photo: Photo) -> dict[str, Any]:
    return {
        "id": ident(photo.id),
        "session_id": ident(photo.session_id),
        "file_name": photo.file_name,
        "file_path": photo.file_path,
        "source": photo.source,
        "ai_score": photo.ai_score,
        "analysis_results": photo.analysis_results,
        "context_tag": photo.context_tag,
        "selected_preset": photo.selected_preset,
        "approval_status": photo.approval_status,
        "rejection_reason": photo.rejection_reason,
        "created_at": timestamp(photo.created_at),
        "updated_at": timestamp(photo.updated_at),
    }


def job_json(
    job: Job, position: int | None = None, estimated_start_seconds: float | None = None
) -> dict[str, Any]:
    return {
        "id": ident(job.id),
        "kind": job.kind,
        "photo_id": ident(job.photo_id),
        "priority": job.priority,
        "params": job.params,
        "status": job.status,
        "progress": job.progress,
        "stage": job.stage,
        "message": job.message,
        "counters": job.counters,
        "worker": job.worker,
        "result": job.result,
        "result_url": job.result_url,
        "error_message": job.error_message,
        "error_details": job.error_details,
        "retryable": job.retryable,
        "cancel_requested": job.cancel_requested,
        "position": position,
        "estimated_start_seconds": estimated_start_seconds,
        "created_at": timestamp(job.created_at),
        "started_at": timestamp(job.started_at),
        "finished_at": timestamp(job.finished_at),
    }


def export_json(export: Export) -> dict[str, Any]:
    return {
        "id": ident(export.id),
        "photo_id": ident(export.photo_id),
        "preset_name": export.preset_name,
        "destination": export.destination,
        "status": export.status,
        "output_path": export.output_path,
        "file_size": export.file_size,
        "error_message": export.error_message,
        "created_at": timestamp(export.created_at),
        "finished_at": timestamp(export.finished_at),
    }
