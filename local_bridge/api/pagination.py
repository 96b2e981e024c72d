"""List pagination: ``limit`` (default 50, at most 500) and an opaque ``cursor``."""

from __future__ import annotations

import re

from flask import request

from ..protocol import MAX_INT64
from .envelope import validation_error

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# Plain decimal digits: int() would also take " 5", "5_0" and "+5".
_DECIMAL = re.compile(r"[0-9]{1,19}\Z")


def page_params() -> tuple[int, str | None]:
    """``(limit, cursor)`` of the request's query string.

    ``limit`` is an integer from 1 to 2^63-1 (422 otherwise), answered with at most 500 items.
    """
    raw = request.args.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        if not _DECIMAL.match(raw) or not 1 <= int(raw) <= MAX_INT64:
            raise validation_error({"limit": [f"must be an integer from 1 to {MAX_INT64}"]})
        limit = min(int(raw), MAX_LIMIT)
    return limit, request.args.get("cursor") or None
