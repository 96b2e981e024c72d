"""Publishing by administrators: one event (``POST /api/websocket/broadcast``) or many at once
(``POST /api/events/batch``), each checked the same way before anything is published."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from .. import catalog
from ..bus.facade import Bus
from ..protocol import CLIENT_TYPE_PATTERN, REPLY_TYPES, EventDraft
from ..publisher import UnknownChannelError
from .body import flat_fields
from .envelope import ApiError, validation_error

MAX_BATCH = 500  # events in one batch request (API.md)


class BroadcastSchema(Schema):
    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    channel = fields.String(allow_none=True, load_default=None)
    client_types = fields.List(
        fields.String(validate=validate.Regexp(CLIENT_TYPE_PATTERN)),
        allow_none=True,
        load_default=None,
        validate=validate.Length(min=1),
    )
    data = fields.Dict(keys=fields.String(), required=True)


class BatchSchema(Schema):
    events = fields.List(
        fields.Nested(BroadcastSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_BATCH),
    )


def draft_of(bus: Bus, body: dict[str, Any], where: str = "") -> EventDraft:
    """The event a loaded broadcast body describes, ready to publish; 422 (keys prefixed with
    ``where``) when its type, channel or fields are wrong."""
    type_ = body["type"]
    if type_ in REPLY_TYPES:
        raise validation_error({f"{where}type": [f"{type_!r} is a reply type, not an event"]})
    if not catalog.is_catalog_type(type_) and not catalog.CUSTOM_TYPE_PATTERN.match(type_):
        raise validation_error({f"{where}type": ["must match ^[a-z][a-z0-9_.]{0,63}$"]})
    try:
        return bus.prepare(
            type_, body["data"], channel=body["channel"], client_types=body["client_types"]
        )
    except catalog.EventValidationError as exc:
        raise validation_error(flat_fields(exc.messages, f"{where}data")) from None
    except UnknownChannelError:
        raise validation_error(
            {f"{where}channel": [f"unknown channel {body['channel']!r}"]}
        ) from None


def drafts_of(bus: Bus, bodies: list[dict[str, Any]]) -> list[EventDraft]:
    """Every event of a batch, checked before any is published: a 422 names each wrong field
    of every wrong event as ``events.<i>.<field>``."""
    drafts, problems = [], {}
    for i, body in enumerate(bodies):
        try:
            drafts.append(draft_of(bus, body, f"events.{i}."))
        except ApiError as exc:
            problems.update(exc.fields or {})
    if problems:
        raise validation_error(problems)
    return drafts
