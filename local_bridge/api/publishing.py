"""Publishing by administrators: one event (``POST /api/websocket/broadcast``) or many at once
(``POST /api/events/batch``), each checked the same way before anything is published."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from .. import catalog
from ..bus.facade import Bus
from ..protocol import CLIENT_TYPE_PATTERN, REPLY_TYPES, EventDraft
from ..publisher import UnknownChannelError
from .body import flat_fields, load, load_object
from .envelope import ApiError, validation_error

MAX_BATCH = 500  # events in one batch request (API.md)


class BroadcastSchema(Schema):
    # plainly_valid() below checks these same rules without the schema: change both together
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


_BROADCAST_FIELDS = frozenset(BroadcastSchema().fields)
_MAX_TYPE = 64


def load_broadcast() -> dict[str, Any]:
    """The request body as :class:`BroadcastSchema` loads it (422 when it is wrong)."""
    loaded = plainly_valid(load_object())
    return loaded if loaded is not None else load(BroadcastSchema)


def load_batch() -> list[dict[str, Any]]:
    """The events of a batch body as :class:`BatchSchema` loads them (422 when it is wrong)."""
    body = load_object()
    events = body.get("events") if len(body) == 1 else None
    if type(events) is list and 1 <= len(events) <= MAX_BATCH:
        loaded = [one for one in map(plainly_valid, events) if one is not None]
        if len(loaded) == len(events):
            return loaded
    events = load(BatchSchema)["events"]
    return events


def plainly_valid(body: Any) -> dict[str, Any] | None:
    """``body`` as :class:`BroadcastSchema` would load it when it passes every one of its
    checks; None when it might not, so that the schema itself says what is wrong.

    The schema's machinery costs more than the rest of a broadcast; a batch pays it for each
    of its events. The rules here must stay those of the schema (a test compares them)."""
    if type(body) is not dict or not body.keys() <= _BROADCAST_FIELDS:
        return None
    type_, data = body.get("type"), body.get("data")
    channel, client_types = body.get("channel"), body.get("client_types")
    if type(type_) is not str or not 1 <= len(type_) <= _MAX_TYPE or type(data) is not dict:
        return None
    if channel is not None and type(channel) is not str:
        return None
    if client_types is not None:
        if type(client_types) is not list or not client_types:
            return None
        for one in client_types:
            if type(one) is not str or CLIENT_TYPE_PATTERN.match(one) is None:
                return None
        client_types = list(client_types)
    return {"type": type_, "channel": channel, "client_types": client_types, "data": dict(data)}


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
