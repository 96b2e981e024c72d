"""``GET /api/openapi.json``: the OpenAPI 3.1 description of every REST endpoint.

Built with apispec from the marshmallow schemas the views load request bodies with
(:mod:`local_bridge.domain.schemas`, :mod:`local_bridge.api.websocket_admin`) and those of the
answers (:mod:`local_bridge.api.response_schemas`). The table of
:mod:`~local_bridge.api.openapi_operations` lists every operation once; ``tests/test_openapi.py``
checks it against the application's routes in both directions, so a route cannot be added
without its description.

The WebSocket endpoints (``/ws``, ``/ws/jobs/{job_id}``) are not REST and are described in
PROTOCOL.md, not here.
"""

from __future__ import annotations

import functools
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, jsonify

from .. import catalog
from ..auth import policy
from ..auth.tokens import ROLES
from ..version import __version__
from . import response_schemas as answers
from .openapi_operations import BODY_ERRORS, COMMON, JSON, OPERATIONS, Operation

bp = Blueprint("openapi", __name__, url_prefix="/api")
OPENAPI_VERSION = "3.1.0"

_DESCRIPTION = """\
The REST side of local_bridge (API.md). JSON in and out; every POST, PATCH and DELETE needs an
`application/json` body (`{}` for an action without fields). Every refused request is answered
with the error envelope `{"error": {"code", "message", "fields"?}}` and changes nothing.

Not described here: the WebSocket endpoints `/ws` (the event bus) and `/ws/jobs/{job_id}` (one
job's progress stream), whose messages PROTOCOL.md defines. `GET /api/events/stream` is
described as an endpoint; its Server-Sent Events follow PROTOCOL.md section 1.

Authentication: with `LOCAL_BRIDGE_AUTH=token` every operation except the public ones needs an
HS256 JWT as `Authorization: Bearer <token>` (a GET may pass it as `?token=` instead);
`x-roles` lists the roles an operation accepts.
With auth off (the default, loopback only) no token is needed and 401 is never answered.
"""


_ERROR_TEXT = {
    400: "`bad_request` (Host not allowed) or `invalid_json` (the body does not parse)",
    401: "`unauthorized`: no valid token (auth on)",
    403: "`forbidden`: origin not allowed, or the token's role may not do this",
    404: "`not_found`: no such resource",
    409: "`conflict`: not allowed in the resource's current state",
    413: "`payload_too_large`: the body exceeds `LOCAL_BRIDGE_MAX_BODY_SIZE`",
    415: "`unsupported_media_type`: the body is missing or not `application/json`",
    422: "`validation_error`: invalid fields, listed in `fields`",
    429: "`rate_limited`: too many requests from this address",
    503: "`unavailable`: the database or the backplane is down, or the server is stopping",
}


# ------------------------------------------------------------------ the document


def _path_parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [
        {
            "in": "path",
            "name": name,
            "required": True,
            "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
            "description": "an id as the API answers it (a string)",
        }
        for name in names
    ]


def _error_response(status: int) -> dict[str, Any]:
    return {"description": _ERROR_TEXT[status], "content": {JSON: {"schema": "Error"}}}


def _operation(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, schema in op.answers.items():
        answer: dict[str, Any] = {"description": _success_text(status)}
        if schema is not None:
            answer["content"] = {op.media_type if status < 300 else JSON: {"schema": schema}}
        responses[str(status)] = answer
    errors = set(COMMON) | set(op.errors)
    if op.endpoint in _rate_exempt():
        errors.discard(429)
    if op.body is not None:
        errors |= set(BODY_ERRORS)
    if "{" in op.path:
        errors.add(404)
    roles = accepted_roles(op.endpoint)
    if roles:
        errors.add(401)
    for status in sorted(errors):
        responses.setdefault(str(status), _error_response(status))
    parameters: list[dict[str, Any]] = _path_parameters(op.path)
    if op.query is not None:
        parameters.append({"in": "query", "schema": op.query})
    parameters.extend(op.headers)
    operation: dict[str, Any] = {
        "operationId": op.endpoint.replace(".", "_"),
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
        "security": _security(op, roles),
        "x-roles": roles,
        "x-endpoint": op.endpoint,
    }
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": op.body}}}
    return operation


def _security(op: Operation, roles: list[str]) -> list[dict[str, list[str]]]:
    """A bearer token; a GET may carry it as ``?token=`` instead (an EventSource cannot set
    headers)."""
    if not roles:
        return []
    if op.method == "get":
        return [{"bearerAuth": []}, {"tokenQuery": []}]
    return [{"bearerAuth": []}]


def _rate_exempt() -> frozenset[str]:
    """The endpoints ``LOCAL_BRIDGE_HTTP_RATE`` never refuses (imported late: the application
    module imports this one)."""
    from ..app import RATE_EXEMPT

    return RATE_EXEMPT


def accepted_roles(endpoint: str) -> list[str]:
    """The token roles :mod:`local_bridge.auth.policy` lets call ``endpoint`` while
    ``LOCAL_BRIDGE_AUTH=token``, weakest first; empty when it needs no token."""
    need = policy.required(endpoint)
    if need in (policy.OPEN, policy.WEBSOCKET):
        return []
    return list(ROLES[ROLES.index(need) :])


def _success_text(status: int) -> str:
    return {
        200: "OK",
        201: "Created",
        202: "Accepted",
        204: "No content",
        503: "Degraded",
    }.get(status, "OK")


def build_spec(operations: tuple[Operation, ...] = OPERATIONS) -> dict[str, Any]:
    """The OpenAPI document of ``operations``, as a JSON-ready dict."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="local_bridge",
        version=__version__,
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={"description": _DESCRIPTION},
    )
    # The protocol's strict fields: what JSON they accept, for clients and generators alike.
    for field_class, openapi_type in (
        (catalog.Number, "number"),
        (catalog.StrictBool, "boolean"),
        (catalog.Id, "string"),
    ):
        plugin.map_to_openapi_type(field_class, openapi_type, None)  # type: ignore[no-untyped-call]
    spec.components.security_scheme(
        "bearerAuth",
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "HS256, signed with LOCAL_BRIDGE_SECRET_KEY (PROTOCOL.md section 6)",
        },
    )
    spec.components.security_scheme(
        "tokenQuery",
        {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": "the same token in the query string, on GET only (EventSource)",
        },
    )
    spec.components.schema("Error", schema=answers.Error)
    for op in operations:
        spec.path(path=op.path, operations={op.method: _operation(op)})
    document = spec.to_dict()
    _describe_error_codes(document)
    return document


def _describe_error_codes(document: dict[str, Any]) -> None:
    detail = document["components"]["schemas"].get("ErrorDetail")
    if detail is not None:
        detail["properties"]["code"]["description"] = "one of " + ", ".join(
            f"`{code}`" for code in answers.ERROR_CODES
        )


@functools.cache
def spec_json() -> dict[str, Any]:
    """The document, built once per process (it depends on nothing but this module)."""
    return build_spec()


@bp.get("/openapi.json")
def openapi_json() -> Any:
    """The OpenAPI document (public: the API's shape, no data)."""
    return jsonify(spec_json())
