"""The JSON error envelope of API.md: ``{"error": {"code", "message", "fields"?}}``.

Imports nothing but Flask, so every HTTP answer (views, WebSocket admission, gunicorn's own
errors) can use it; :mod:`local_bridge.api.errors` maps exceptions onto it.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

#: HTTP status -> error code of API.md "Conventions".
STATUS_CODES = {
    400: "invalid_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    """Raise from a view to answer ``status`` with the standard error body."""

    def __init__(self, status: int, code: str, message: str, fields: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields


def api_error(
    status: int, code: str, message: str, fields: dict[str, Any] | None = None
) -> Response:
    """A Flask response carrying ``{"error": {"code", "message", "fields"?}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if fields is not None:
        error["fields"] = fields
    response = jsonify({"error": error})
    response.status_code = status
    return response


def code_for_status(status: int) -> str:
    """The error code of a status answered without reading a body (routing, limits, gunicorn's
    own refusals): a 400 there is ``bad_request``, since ``invalid_json`` is about bodies."""
    if status == 400:
        return "bad_request"
    return STATUS_CODES.get(status, "bad_request" if status < 500 else "internal_error")


def validation_error(fields: dict[str, Any], message: str = "the request has invalid fields"):
    return ApiError(422, "validation_error", message, fields)
