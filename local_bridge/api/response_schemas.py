"""Marshmallow schemas of what the REST API answers (API.md "Resource representations").

The views build their answers with :mod:`local_bridge.domain.schemas` (``session_json`` and the
like); these schemas describe the same shapes for the OpenAPI document, where a client (and the
schema-conformance tests) checks every answer against them. Unknown keys are refused by default,
so a field added to a representation without its schema here is caught by those tests.
"""

from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, Schema, fields, validate

from ..catalog import Count, Number, StrictBool
from .envelope import STATUS_CODES
from .pagination import MAX_LIMIT

_Json = fields.Raw  # any JSON value the client sent (params, results, details)


def _time(**kwargs: Any) -> fields.String:
    """An RFC 3339 UTC time (``2026-01-01T12:00:00Z``)."""
    return fields.String(required=True, metadata={"format": "date-time"}, **kwargs)


def _nullable_time() -> fields.String:
    return _time(allow_none=True)


def _id(**kwargs: Any) -> fields.String:
    return fields.String(required=True, **kwargs)


def _text(**kwargs: Any) -> fields.String:
    return fields.String(required=True, allow_none=True, **kwargs)


class ErrorDetail(Schema):
    code = fields.String(required=True, metadata={"example": "validation_error"})
    message = fields.String(required=True)
    fields_ = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        data_key="fields",
        metadata={"description": "422 only: flat dotted field paths, each with its messages"},
    )


class Error(Schema):
    """The error envelope every refused request is answered with."""

    error = fields.Nested(ErrorDetail, required=True)


class Session(Schema):
    id = _id()
    name = fields.String(required=True)
    import_folder = _text()
    status = fields.String(
        required=True, validate=validate.OneOf(("active", "processing", "completed", "archived"))
    )
    total_photos = Count(required=True)
    processed_photos = Count(required=True)
    approved_photos = Count(required=True)
    created_at = _time()
    updated_at = _time()


class Photo(Schema):
    id = _id()
    session_id = _id()
    file_name = fields.String(required=True)
    file_path = _text()
    source = _text()
    ai_score = Number(required=True, allow_none=True)
    analysis_results = _Json(required=True, allow_none=True)
    context_tag = _text()
    selected_preset = _text()
    approval_status = fields.String(
        required=True, validate=validate.OneOf(("none", "pending", "approved", "rejected"))
    )
    rejection_reason = _text()
    created_at = _time()
    updated_at = _time()


class Job(Schema):
    id = _id()
    kind = fields.String(required=True)
    photo_id = _id(allow_none=True)
    priority = fields.Integer(required=True, validate=validate.Range(0, 100))
    params = _Json(required=True, allow_none=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(("queued", "running", "completed", "failed", "cancelled")),
    )
    progress = Number(required=True, validate=validate.Range(0, 100))
    stage = _text()
    message = _text()
    counters = fields.Dict(keys=fields.String(), values=Count(), required=True, allow_none=True)
    worker = _text()
    result = _Json(required=True, allow_none=True)
    result_url = _text()
    error_message = _text()
    error_details = _Json(required=True, allow_none=True)
    retryable = StrictBool(required=True)
    cancel_requested = StrictBool(required=True)
    position = fields.Integer(
        required=True,
        allow_none=True,
        validate=validate.Range(min=1),
        metadata={"description": "1-based place in the queue while queued, else null"},
    )
    estimated_start_seconds = Number(required=True, allow_none=True, validate=validate.Range(min=0))
    created_at = _time()
    started_at = _nullable_time()
    finished_at = _nullable_time()


class Export(Schema):
    id = _id()
    photo_id = _id()
    preset_name = fields.String(required=True)
    destination = fields.String(required=True)
    status = fields.String(
        required=True, validate=validate.OneOf(("running", "completed", "failed"))
    )
    output_path = _text()
    file_size = Count(required=True, allow_none=True)
    error_message = _text()
    created_at = _time()
    finished_at = _nullable_time()


class Client(Schema):
    """A connected WebSocket client (the admin view); transport counters stand beside it."""

    class Meta:
        unknown = INCLUDE

    client_id = fields.String(required=True)
    client_type = fields.String(required=True)
    client_name = _text()
    channels = fields.List(fields.String(), required=True)
    connected_at = _time()
    remote_addr = _text()
    sent = Count(required=True)
    dropped = Count(required=True)
    queue_depth = Count(required=True)


def _page_of(item: type[Schema], name: str) -> type[Schema]:
    """``{"items": [...], "next_cursor": ...}`` of ``item``."""
    return Schema.from_dict(
        {
            "items": fields.List(
                fields.Nested(item), required=True, validate=validate.Length(max=MAX_LIMIT)
            ),
            "next_cursor": fields.String(
                required=True,
                allow_none=True,
                metadata={"description": "pass as `cursor` for the next page; null at the end"},
            ),
        },
        name=name,
    )


SessionPage = _page_of(Session, "SessionPage")
PhotoPage = _page_of(Photo, "PhotoPage")
JobPage = _page_of(Job, "JobPage")
ClientPage = _page_of(Client, "ClientPage")


class BusEvent(Schema):
    """An event as the bus delivers it: the envelope, then the event's own fields, flat."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True)
    seq = Count(required=True)
    timestamp = fields.String(required=True)
    channel = fields.String(allow_none=True)


class EventPoll(Schema):
    items = fields.List(fields.Nested(BusEvent), required=True)
    next_since = Count(required=True)
    recovered = StrictBool(required=True)
    seq = Count(required=True)
    epoch = fields.String(required=True)


class Published(Schema):
    """A publish accepted (202): its seq and how many connected clients it was handed to."""

    seq = Count(required=True)
    recipients = Count(required=True)


class PublishedBatch(Schema):
    """A batch accepted (202): the seq of each event and how many clients each was handed to,
    in the order of the request."""

    seqs = fields.List(Count(), required=True)
    recipients = fields.List(Count(), required=True)


class Disconnected(Schema):
    client_id = fields.String(required=True)
    disconnected = fields.Boolean(required=True, validate=validate.Equal(True))


class Revoked(Schema):
    jti = fields.String(required=True)
    revoked = fields.Boolean(required=True, validate=validate.Equal(True))


class HealthChecks(Schema):
    class Meta:
        unknown = INCLUDE

    database = fields.String(required=True)
    backplane = fields.String(required=True)


class Health(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("ok", "degraded")))
    checks = fields.Nested(HealthChecks, required=True)


class Live(Schema):
    status = fields.String(required=True, validate=validate.Equal("ok"))


class Connections(Schema):
    total = Count(required=True)
    by_client_type = fields.Dict(keys=fields.String(), values=Count(), required=True)


class QueueCounts(Schema):
    pending_count = Count(required=True)
    processing_count = Count(required=True)
    completed_count = Count(required=True)
    failed_count = Count(required=True)
    cancelled_count = Count(required=True)


class SystemStatus(Schema):
    version = fields.String(required=True)
    uptime_seconds = Number(required=True, validate=validate.Range(min=0))
    seq = Count(required=True)
    epoch = fields.String(required=True)
    backplane = fields.String(
        required=True,
        validate=validate.OneOf(["memory", "redis"]),
        metadata={"description": "what carries events: this process, or every process on Redis"},
    )
    connections = fields.Nested(Connections, required=True)
    events_published = Count(required=True)
    queue = fields.Nested(QueueCounts, required=True)


class SystemEvent(Schema):
    """``type`` and the event's own fields, flat (checked against the event catalog)."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(
        required=True,
        validate=validate.OneOf(("system_status", "resource_warning", "error_occurred")),
    )


#: Every error code an answer can carry, for the envelope's documentation.
ERROR_CODES = sorted(set(STATUS_CODES.values()) | {"bad_request", "internal_error"})
