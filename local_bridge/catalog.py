"""The event catalog of PROTOCOL.md section 3: each event type's channel and field schema.

Every field of a catalog event is present when published, ``null`` when it has no value; a
missing required field or a mistyped value raises :class:`EventValidationError` and nothing is
published.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from .protocol import ENTITY_ID_PATTERN, ENVELOPE_FIELDS, MAX_INT64, MIN_INT64

CUSTOM_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_.]{0,63}\Z")


class EventValidationError(ValueError):
    """An event's fields do not match its catalog entry; ``messages`` maps field → reasons."""

    def __init__(self, messages: dict[str, Any]):
        super().__init__(f"invalid event fields: {messages}")
        self.messages = messages


# ------------------------------------------------------------------ strict field types


class Id(fields.Field[str]):
    """An entity id: a non-empty string (64-bit integers are accepted and turned into strings)."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and MIN_INT64 <= value <= MAX_INT64
        ):
            value = str(value)
        if not isinstance(value, str) or not ENTITY_ID_PATTERN.match(value):
            raise ValidationError("Not a valid id (1-64 letters, digits, '_', '.', '-').")
        return value


class Number(fields.Field[float]):
    """A JSON number that fits a finite double (not a string, not a boolean), optionally within
    a range: an integer too large for a float column is refused like infinity."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("Not a valid number.")
        if (
            isinstance(value, int)
            and abs(value) > _MAX_FLOAT_INT
            or isinstance(value, float)
            and not math.isfinite(value)
        ):
            raise ValidationError("Number out of range (must fit a finite double).")
        return value


#: The largest integer a finite double can hold (near 1.8e308).
_MAX_FLOAT_INT = int(sys.float_info.max)


class Integer(fields.Integer):
    """A JSON integer (not a float, string or boolean) within ``minimum``..``maximum``, which
    default to the signed 64-bit range every integer of the protocol and the database shares."""

    def __init__(self, minimum: int = MIN_INT64, maximum: int = MAX_INT64, **kwargs: Any) -> None:
        super().__init__(strict=True, validate=validate.Range(min=minimum, max=maximum), **kwargs)


class Count(Integer):
    """A non-negative 64-bit integer that must really be one in the JSON."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(minimum=0, **kwargs)


class StrictBool(fields.Field[bool]):
    """A JSON boolean: ``true`` or ``false``, never a string or a number."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("Not a valid boolean.")
        return value


def _required(field: fields.Field[Any]) -> fields.Field[Any]:
    field.required = True
    field.allow_none = False
    return field


def _nullable(field: fields.Field[Any], default: Any = None) -> fields.Field[Any]:
    field.required = False
    field.allow_none = True
    field.load_default = default
    return field


def _text() -> fields.Field[Any]:
    return fields.String()


def _percent() -> fields.Field[Any]:
    return Number(validate=validate.Range(min=0, max=100))


def _priority() -> fields.Field[Any]:
    return Integer(minimum=0, maximum=100)


# ------------------------------------------------------------------ the catalog


def _schema(name: str, **declared: fields.Field[Any]) -> type[Schema]:
    return Schema.from_dict(declared, name=name)


_R, _N = _required, _nullable

#: type -> (channel, schema class)
CATALOG: dict[str, tuple[str, type[Schema]]] = {
    "job_created": (
        "jobs",
        _schema(
            "JobCreated",
            job_id=_R(Id()),
            photo_id=_N(Id()),
            priority=_R(_priority()),
            kind=_R(_text()),
        ),
    ),
    "job_queued": (
        "jobs",
        _schema(
            "JobQueued",
            job_id=_R(Id()),
            position=_R(Integer(minimum=1)),
            estimated_start_seconds=_N(Number(validate=validate.Range(min=0))),
        ),
    ),
    "job_started": (
        "jobs",
        _schema("JobStarted", job_id=_R(Id()), photo_id=_N(Id()), worker=_N(_text())),
    ),
    "job_progress": (
        "jobs",
        _schema(
            "JobProgress",
            job_id=_R(Id()),
            stage=_N(_text()),
            progress=_R(_percent()),
            message=_N(_text()),
            counters=_N(fields.Dict(keys=fields.String(), values=Count())),
        ),
    ),
    "job_completed": (
        "jobs",
        _schema(
            "JobCompleted",
            job_id=_R(Id()),
            photo_id=_N(Id()),
            result=_N(fields.Raw()),
            result_url=_N(_text()),
            duration_seconds=_N(Number(validate=validate.Range(min=0))),
        ),
    ),
    "job_failed": (
        "jobs",
        _schema(
            "JobFailed",
            job_id=_R(Id()),
            photo_id=_N(Id()),
            error_message=_R(_text()),
            error_details=_N(fields.Raw()),
            retryable=_N(StrictBool(), default=False),
            stage=_N(_text()),
        ),
    ),
    "job_cancelled": ("jobs", _schema("JobCancelled", job_id=_R(Id()), reason=_N(_text()))),
    "photo_imported": (
        "photos",
        _schema(
            "PhotoImported",
            photo_id=_R(Id()),
            session_id=_N(Id()),
            file_name=_R(_text()),
            file_path=_N(_text()),
            source=_N(_text()),
        ),
    ),
    "photo_analyzed": (
        "photos",
        _schema(
            "PhotoAnalyzed",
            photo_id=_R(Id()),
            session_id=_N(Id()),
            ai_score=_N(Number()),
            analysis_results=_N(fields.Raw()),
        ),
    ),
    "photo_selected": (
        "photos",
        _schema(
            "PhotoSelected",
            photo_id=_R(Id()),
            session_id=_N(Id()),
            context_tag=_N(_text()),
            selected_preset=_N(_text()),
        ),
    ),
    "photo_approved": ("photos", _schema("PhotoApproved", photo_id=_R(Id()), session_id=_N(Id()))),
    "photo_rejected": (
        "photos",
        _schema("PhotoRejected", photo_id=_R(Id()), session_id=_N(Id()), reason=_N(_text())),
    ),
    "session_created": (
        "sessions",
        _schema(
            "SessionCreated",
            session_id=_R(Id()),
            session_name=_R(_text()),
            import_folder=_N(_text()),
        ),
    ),
    "session_updated": (
        "sessions",
        _schema(
            "SessionUpdated",
            session_id=_R(Id()),
            total_photos=_N(Count()),
            processed_photos=_N(Count()),
            progress_percent=_N(_percent()),
            status=_N(_text()),
        ),
    ),
    "session_completed": (
        "sessions",
        _schema(
            "SessionCompleted",
            session_id=_R(Id()),
            session_name=_N(_text()),
            total_photos=_N(Count()),
            approved_photos=_N(Count()),
        ),
    ),
    "system_status": (
        "system",
        _schema("SystemStatus", status=_R(_text()), details=_N(fields.Raw())),
    ),
    "resource_warning": (
        "system",
        _schema(
            "ResourceWarning",
            resource_type=_R(_text()),
            current_value=_R(Number()),
            threshold=_R(Number()),
            message=_N(_text()),
        ),
    ),
    "error_occurred": (
        "system",
        _schema(
            "ErrorOccurred",
            error_type=_R(_text()),
            error_message=_R(_text()),
            error_details=_N(fields.Raw()),
            job_id=_N(Id()),
            photo_id=_N(Id()),
        ),
    ),
    "queue_status": (
        "queue",
        _schema(
            "QueueStatus",
            pending_count=_R(Count()),
            processing_count=_R(Count()),
            completed_count=_R(Count()),
            failed_count=_R(Count()),
            cancelled_count=_N(Count(), default=0),
        ),
    ),
    "priority_changed": (
        "queue",
        _schema(
            "PriorityChanged",
            job_id=_R(Id()),
            old_priority=_R(_priority()),
            new_priority=_R(_priority()),
            reason=_N(_text()),
        ),
    ),
    "approval_queue_updated": (
        "approval",
        _schema("ApprovalQueueUpdated", queue_count=_R(Count()), session_id=_N(Id())),
    ),
    "export_started": (
        "export",
        _schema(
            "ExportStarted",
            export_id=_R(Id()),
            photo_id=_N(Id()),
            session_id=_N(Id()),
            preset_name=_N(_text()),
            destination=_N(_text()),
        ),
    ),
    "export_completed": (
        "export",
        _schema(
            "ExportCompleted",
            export_id=_R(Id()),
            photo_id=_N(Id()),
            session_id=_N(Id()),
            preset_name=_N(_text()),
            output_path=_N(_text()),
            file_size=_N(Count()),
        ),
    ),
    "export_failed": (
        "export",
        _schema(
            "ExportFailed",
            export_id=_R(Id()),
            photo_id=_N(Id()),
            session_id=_N(Id()),
            preset_name=_N(_text()),
            error_message=_R(_text()),
        ),
    ),
}

_SCHEMAS = {type_: schema_class() for type_, (_, schema_class) in CATALOG.items()}


def channel_of(type_: str) -> str:
    """The main channel a catalog event is published on."""
    return CATALOG[type_][0]


def progress_percent(processed_photos: int, total_photos: int) -> float:
    """``session_updated``'s ``progress_percent``: processed of total, 0 for an empty session."""
    return round(100.0 * processed_photos / total_photos, 2) if total_photos else 0.0


def is_catalog_type(type_: str) -> bool:
    return type_ in CATALOG


def validate_event(type_: str, data: dict[str, Any]) -> dict[str, Any]:
    """Validated fields of a catalog event, every field present (``None`` where unset)."""
    if not isinstance(data, dict):
        raise EventValidationError({"_schema": ["Event fields must be an object."]})
    try:
        loaded = _SCHEMAS[type_].load(data)
    except ValidationError as exc:
        raise EventValidationError(_messages(exc)) from None
    return {name: loaded.get(name) for name in _SCHEMAS[type_].fields}


def _messages(exc: ValidationError) -> dict[str, Any]:
    """marshmallow's messages, always keyed by field (``_schema`` for the object as a whole)."""
    return dict(exc.messages) if isinstance(exc.messages, dict) else {"_schema": exc.messages}


def validate_custom(type_: str, data: dict[str, Any]) -> dict[str, Any]:
    """Fields of a custom (non-catalog) event: any JSON object not touching the envelope."""
    if not CUSTOM_TYPE_PATTERN.match(type_):
        raise EventValidationError({"type": ["Must match ^[a-z][a-z0-9_.]{0,63}$."]})
    if not isinstance(data, dict):
        raise EventValidationError({"_schema": ["Event fields must be an object."]})
    reserved = sorted(set(ENVELOPE_FIELDS).intersection(data))
    if reserved:
        raise EventValidationError({name: ["Reserved envelope field."] for name in reserved})
    return dict(data)
