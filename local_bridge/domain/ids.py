"""Ids travel as strings and are stored as integers."""

from __future__ import annotations

import re
from typing import Any

from ..protocol import MAX_INT64
from .errors import Invalid, NotFound

# ASCII digits only: str.isdigit() also admits "²" and other digits int() cannot read.
_DECIMAL = re.compile(r"[0-9]{1,19}\Z")
#: The largest id a row can have: id columns are INTEGER, 32-bit on PostgreSQL. A valid id
#: (any positive 64-bit integer) beyond it names no row, and the database is not asked.
MAX_ROW_ID = 2**31 - 1


def parse_id(value: Any) -> int | None:
    """The positive 64-bit integer a decimal string (or a JSON integer) names; None otherwise."""
    if isinstance(value, str) and _DECIMAL.match(value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_INT64:
        return value
    return None


def path_id(value: str, what: str) -> int:
    """The integer id in a URL; anything else names no resource (404)."""
    ident = parse_id(value)
    if ident is None or ident > MAX_ROW_ID:
        raise NotFound(f"{what} {value!r} not found")
    return ident


def body_id(value: Any, field: str) -> int:
    """The integer id in a request body; anything else is a validation error (422)."""
    ident = parse_id(value)
    if ident is None or ident > MAX_ROW_ID:
        raise Invalid(f"{field} names nothing", {field: ["No such resource."]})
    return ident


def page(items: list[Any], limit: int) -> tuple[list[Any], str | None]:
    """The first ``limit`` of ``items`` (fetched as limit + 1) and the cursor after them."""
    if len(items) > limit:
        return items[:limit], str(items[limit - 1].id)
    return items, None


def cursor_id(cursor: str | None) -> int:
    """Rows after ``cursor`` (an id: 0 to 2^63-1); anything else is a validation error."""
    if cursor is None:
        return 0
    if _DECIMAL.match(cursor) and int(cursor) <= MAX_INT64:
        return min(int(cursor), MAX_ROW_ID)  # no row lies beyond MAX_ROW_ID: the same rows
    raise Invalid("invalid cursor", {"cursor": ["Not a cursor from this list."]})
