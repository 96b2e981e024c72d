"""List pagination: ``limit`` (default 50, at most 500) and an opaque ``cursor``."""
from __future__ import annotations

from flask import request

from .errors import validation_error

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def page_params() -> tuple[int, str | None]:
    """``(limit, cursor)`` of the request's query string (422 when ``limit`` is not 1-500)."""
    raw = request.args.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            raise validation_error({"limit": ["must be an integer"]}) from None
        if limit < 1:
            raise validation_error({"limit": ["must be at least 1"]})
        limit = min(limit, MAX_LIMIT)
    return limit, request.args.get("cursor") or None
