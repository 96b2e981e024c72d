"""Ids travel as strings and are stored as integers."""
from __future__ import annotations

from typing import Any

from .errors import Invalid, NotFound


def path_id(value: str, what: str) -> int:
    """The integer id in a URL; anything else names no resource (404)."""
    if value.isdigit() and len(value) <= 18:
        return int(value)
    raise NotFound(f"{what} {value!r} not found")


def body_id(value: Any, field: str) -> int:
    """The integer id in a request body; anything else is a validation error (422)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 18:
        return int(value)
    raise Invalid(f"{field} names nothing", {field: ["No such resource."]})


def page(items: list[Any], limit: int) -> tuple[list[Any], str | None]:
    """The first ``limit`` of ``items`` (fetched as limit + 1) and the cursor after them."""
    if len(items) > limit:
        return items[:limit], str(items[limit - 1].id)
    return items, None


def cursor_id(cursor: str | None) -> int:
    """Rows after ``cursor`` (an id); a cursor that is not one is a validation error."""
    if cursor is None:
        return 0
    if cursor.isdigit():
        return int(cursor)
    raise Invalid("invalid cursor", {"cursor": ["Not a cursor from this list."]})
