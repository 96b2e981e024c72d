"""Domain errors; the HTTP layer maps each to its status (404, 409, 422)."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, fields: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields


class NotFound(DomainError):
    """The resource does not exist."""

    status, code = 404, "not_found"


class Conflict(DomainError):
    """The change is illegal in the resource's current state."""

    status, code = 409, "conflict"


class Invalid(DomainError):
    """Fields are invalid, or an id in the body names nothing."""

    status, code = 422, "validation_error"
