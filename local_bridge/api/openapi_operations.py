"""Every REST operation of local_bridge, once: its route, what it takes and what it answers.

:mod:`local_bridge.api.openapi` turns this table into the OpenAPI document; the tests check it
against the application's routes in both directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, fields, validate

from ..domain import schemas as bodies
from ..protocol import MAX_INT64
from . import response_schemas as answers
from .auth import RevokeSchema
from .pagination import MAX_LIMIT
from .publishing import BatchSchema, BroadcastSchema

JSON = "application/json"

# ------------------------------------------------------------------ query parameters


def _page_fields() -> dict[str, fields.Field[Any]]:
    return {
        "limit": fields.Integer(
            validate=validate.Range(1, MAX_INT64),
            metadata={
                "description": f"items per page (default 50; more than {MAX_LIMIT} answers "
                f"{MAX_LIMIT})"
            },
        ),
        "cursor": fields.String(metadata={"description": "the `next_cursor` of the previous page"}),
    }


def _query(
    name: str, extra: dict[str, fields.Field[Any]] | None = None, page: bool = True
) -> type[Schema]:
    """A query string's parameters as a schema (apispec lists each field as a parameter)."""
    return Schema.from_dict({**(_page_fields() if page else {}), **(extra or {})}, name=name)


_CHANNELS = fields.String(
    metadata={
        "description": "comma-separated channels or sub-channels (`jobs,sessions:12`); "
        "absent: every channel"
    }
)
_CLIENT_TYPE = fields.String(
    validate=validate.Regexp(r"^[a-z][a-z0-9_-]{0,31}$"),
    metadata={"description": "events addressed to this client type are included too"},
)
_SINCE = fields.Integer(
    validate=validate.Range(0, MAX_INT64), metadata={"description": "the last seq seen"}
)

PageQuery = _query("PageQuery")
ApprovalQuery = _query(
    "ApprovalQuery",
    {"session_id": fields.String(metadata={"description": "only this session's photos"})},
)
JobListQuery = _query(
    "JobListQuery",
    {
        "status": fields.String(
            validate=validate.OneOf(("queued", "running", "completed", "failed", "cancelled"))
        )
    },
)
EventPollQuery = _query(
    "EventPollQuery",
    {
        "since": _SINCE,
        "epoch": fields.String(
            metadata={"description": "the epoch `since` belongs to; another one: not recovered"}
        ),
        "channels": _CHANNELS,
        "client_type": _CLIENT_TYPE,
        "wait": fields.Float(
            validate=validate.Range(0, 30),
            metadata={
                "description": "seconds to hold the request while nothing newer than `since` "
                "exists (long polling; at most 6 decimals)"
            },
        ),
    },
)
EventStreamQuery = _query(
    "EventStreamQuery",
    {"since": _SINCE, "channels": _CHANNELS, "client_type": _CLIENT_TYPE},
    page=False,
)


# ------------------------------------------------------------------ operations


@dataclass(frozen=True)
class Operation:
    """One REST operation: its route (as Flask spells the endpoint), what it takes and answers.

    Who may call it is :mod:`local_bridge.auth.policy`'s entry for ``endpoint``.
    ``answers`` maps each success status to its body schema (None: no body); ``errors`` lists the
    error statuses this operation answers besides those of every operation (:data:`COMMON`).
    """

    endpoint: str
    method: str
    path: str
    summary: str
    answers: dict[int, Any]
    body: type[Schema] | None = None
    query: type[Schema] | None = None
    errors: tuple[int, ...] = ()
    tag: str = "workflow"
    media_type: str = JSON
    headers: tuple[dict[str, Any], ...] = ()


#: Answered by every operation: a Host outside the allow-list (400), an Origin or a fetch
#: context refused by the browser boundary or a role too weak (403), the HTTP rate limit
#: (429, where not exempt from it), a dependency down or the server shutting
#: down (503).
COMMON = (400, 403, 429, 503)
#: Answered by every operation that reads a body.
BODY_ERRORS = (400, 413, 415, 422)


Op = Operation
OPERATIONS: tuple[Operation, ...] = (
    # sessions and photos
    Op(
        "workflow.create_session",
        "post",
        "/api/sessions",
        "Create an import session",
        {201: answers.Session},
        body=bodies.SessionCreate,
    ),
    Op(
        "workflow.list_sessions",
        "get",
        "/api/sessions",
        "List import sessions",
        {200: answers.SessionPage},
        query=PageQuery,
        errors=(422,),
    ),
    Op(
        "workflow.get_session",
        "get",
        "/api/sessions/{session_id}",
        "Read an import session",
        {200: answers.Session},
    ),
    Op(
        "workflow.update_session",
        "patch",
        "/api/sessions/{session_id}",
        "Rename a session or change its status",
        {200: answers.Session},
        body=bodies.SessionUpdate,
        errors=(409,),
    ),
    Op(
        "workflow.import_photo",
        "post",
        "/api/sessions/{session_id}/photos",
        "Import a photo into a session",
        {201: answers.Photo},
        body=bodies.PhotoImport,
        errors=(409,),
    ),
    Op(
        "workflow.list_session_photos",
        "get",
        "/api/sessions/{session_id}/photos",
        "List a session's photos",
        {200: answers.PhotoPage},
        query=PageQuery,
        errors=(422,),
    ),
    Op("workflow.get_photo", "get", "/api/photos/{photo_id}", "Read a photo", {200: answers.Photo}),
    Op(
        "workflow.record_analysis",
        "post",
        "/api/photos/{photo_id}/analysis",
        "Record (or replace) a photo's analysis; it enters the approval queue",
        {200: answers.Photo},
        body=bodies.AnalysisRecord,
        errors=(409,),
    ),
    Op(
        "workflow.record_selection",
        "post",
        "/api/photos/{photo_id}/selection",
        "Record the chosen preset",
        {200: answers.Photo},
        body=bodies.SelectionRecord,
        errors=(409,),
    ),
    # approval
    Op(
        "workflow.approval_queue",
        "get",
        "/api/approval",
        "The approval queue: analyzed photos awaiting a decision",
        {200: answers.PhotoPage},
        query=ApprovalQuery,
        errors=(404, 422),
        tag="approval",
    ),
    Op(
        "workflow.approve",
        "post",
        "/api/approval/{photo_id}/approve",
        "Approve a pending photo",
        {200: answers.Photo},
        body=bodies.Empty,
        errors=(409,),
        tag="approval",
    ),
    Op(
        "workflow.reject",
        "post",
        "/api/approval/{photo_id}/reject",
        "Reject a pending photo",
        {200: answers.Photo},
        body=bodies.Rejection,
        errors=(409,),
        tag="approval",
    ),
    # jobs
    Op(
        "workflow.create_job",
        "post",
        "/api/jobs",
        "Queue a job",
        {201: answers.Job},
        body=bodies.JobCreate,
        tag="jobs",
    ),
    Op(
        "workflow.list_jobs",
        "get",
        "/api/jobs",
        "List jobs (the polling fallback)",
        {200: answers.JobPage},
        query=JobListQuery,
        errors=(422,),
        tag="jobs",
    ),
    Op(
        "workflow.get_job",
        "get",
        "/api/jobs/{job_id}",
        "Read a job, with its queue position while queued",
        {200: answers.Job},
        tag="jobs",
    ),
    Op(
        "workflow.claim_job",
        "post",
        "/api/jobs/claim",
        "Take the next queued job (highest priority, then oldest); 204 when none",
        {200: answers.Job, 204: None},
        body=bodies.JobClaim,
        tag="jobs",
    ),
    Op(
        "workflow.report_progress",
        "post",
        "/api/jobs/{job_id}/progress",
        "Report a running job's progress; the answer carries `cancel_requested`",
        {200: answers.Job},
        body=bodies.JobProgress,
        errors=(409,),
        tag="jobs",
    ),
    Op(
        "workflow.complete_job",
        "post",
        "/api/jobs/{job_id}/complete",
        "Finish a running job",
        {200: answers.Job},
        body=bodies.JobComplete,
        errors=(409,),
        tag="jobs",
    ),
    Op(
        "workflow.fail_job",
        "post",
        "/api/jobs/{job_id}/fail",
        "Fail a running job",
        {200: answers.Job},
        body=bodies.JobFail,
        errors=(409,),
        tag="jobs",
    ),
    Op(
        "workflow.cancel_job",
        "post",
        "/api/jobs/{job_id}/cancel",
        "Cancel a job: a queued one at once (200), a running one once its worker confirms "
        "(202 sets `cancel_requested`)",
        {200: answers.Job, 202: answers.Job},
        body=bodies.JobCancel,
        errors=(409,),
        tag="jobs",
    ),
    Op(
        "workflow.reprioritize_job",
        "patch",
        "/api/jobs/{job_id}/priority",
        "Change a queued job's priority",
        {200: answers.Job},
        body=bodies.JobPriority,
        errors=(409,),
        tag="jobs",
    ),
    # exports
    Op(
        "workflow.start_export",
        "post",
        "/api/exports",
        "Start an export",
        {201: answers.Export},
        body=bodies.ExportCreate,
        errors=(409,),
        tag="exports",
    ),
    Op(
        "workflow.get_export",
        "get",
        "/api/exports/{export_id}",
        "Read an export",
        {200: answers.Export},
        tag="exports",
    ),
    Op(
        "workflow.complete_export",
        "post",
        "/api/exports/{export_id}/complete",
        "Finish a running export",
        {200: answers.Export},
        body=bodies.ExportComplete,
        errors=(409,),
        tag="exports",
    ),
    Op(
        "workflow.fail_export",
        "post",
        "/api/exports/{export_id}/fail",
        "Fail a running export",
        {200: answers.Export},
        body=bodies.ExportFail,
        errors=(409,),
        tag="exports",
    ),
    # system
    Op(
        "system.live",
        "get",
        "/api/system/live",
        "Liveness: the process serves requests",
        {200: answers.Live},
        tag="system",
    ),
    Op(
        "system.health",
        "get",
        "/api/system/health",
        "Readiness: database reachable and migrated, backplane connected (503: degraded, with "
        "the same body)",
        {200: answers.Health, 503: answers.Health},
        tag="system",
    ),
    Op(
        "system.status",
        "get",
        "/api/system/status",
        "Server status: seq, connections, queue",
        {200: answers.SystemStatus},
        tag="system",
    ),
    Op(
        "system.publish_system_event",
        "post",
        "/api/system/events",
        "Publish a system event (system_status, resource_warning or error_occurred)",
        {202: answers.Published},
        body=answers.SystemEvent,
        tag="system",
    ),
    Op(
        "openapi.openapi_json",
        "get",
        "/api/openapi.json",
        "This description",
        {200: {"type": "object"}},
        tag="system",
    ),
    Op(
        "metrics",
        "get",
        "/metrics",
        "Prometheus metrics, every one named `local_bridge_*`",
        {200: {"type": "string"}},
        media_type="text/plain",
        tag="system",
    ),
    # the bus over HTTP and its administration
    Op(
        "events.poll",
        "get",
        "/api/events",
        "Events after `since` still held (PROTOCOL.md section 1); long polling with `wait`",
        {200: answers.EventPoll},
        query=EventPollQuery,
        errors=(422,),
        tag="events",
    ),
    Op(
        "events.stream",
        "get",
        "/api/events/stream",
        "Live events as Server-Sent Events; `Last-Event-ID` (or `since`) resumes",
        {200: {"type": "string"}},
        query=EventStreamQuery,
        errors=(422,),
        tag="events",
        media_type="text/event-stream",
        headers=(
            {
                "in": "header",
                "name": "Last-Event-ID",
                "required": False,
                "schema": {"type": "integer", "minimum": 0, "maximum": MAX_INT64},
                "description": "the seq of the last event received (an EventSource sends it "
                "when it reconnects); wins over `since`",
            },
        ),
    ),
    Op(
        "events.batch",
        "post",
        "/api/events/batch",
        "Publish 1 to 500 events in one request, each checked as by broadcast, all or none; "
        "one seq each, in the given order",
        {202: answers.PublishedBatch},
        body=BatchSchema,
        tag="admin",
    ),
    Op(
        "websocket_admin.list_clients",
        "get",
        "/api/websocket/clients",
        "Connected WebSocket clients, in every process",
        {200: answers.ClientPage},
        query=PageQuery,
        errors=(422,),
        tag="admin",
    ),
    Op(
        "websocket_admin.broadcast",
        "post",
        "/api/websocket/broadcast",
        "Publish an event: a catalog type checked against its fields, or a custom type",
        {202: answers.Published},
        body=BroadcastSchema,
        tag="admin",
    ),
    Op(
        "websocket_admin.disconnect",
        "post",
        "/api/websocket/disconnect/{client_id}",
        "Close a connected client with 4009",
        {200: answers.Disconnected},
        body=bodies.Empty,
        errors=(404,),
        tag="admin",
    ),
    Op(
        "auth.revoke",
        "post",
        "/api/auth/revoke",
        "Refuse every token with this `jti` from now on, on every process; closes its "
        "connections with 4001 (409 while authentication is off)",
        {200: answers.Revoked},
        body=RevokeSchema,
        errors=(409,),
        tag="admin",
    ),
)
