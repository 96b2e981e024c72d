"""Admin endpoints of the bus: list clients, broadcast, disconnect (API.md)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from marshmallow import Schema, fields, validate

from .. import catalog
from ..protocol import CLIENT_TYPE_PATTERN, REPLY_TYPES
from ..publisher import UnknownChannelError
from ..state import state_of
from .body import flat_fields, load
from .envelope import ApiError, validation_error
from .pagination import page_params

bp = Blueprint("websocket_admin", __name__, url_prefix="/api/websocket")


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


@bp.get("/clients")
def list_clients():
    limit, cursor = page_params()
    clients = sorted(
        state_of(current_app).ws_server.get_connected_clients(), key=lambda c: c["client_id"]
    )
    if cursor:
        clients = [c for c in clients if c["client_id"] > cursor]
    page = clients[:limit]
    next_cursor = page[-1]["client_id"] if len(clients) > limit else None
    return jsonify({"items": page, "next_cursor": next_cursor})


@bp.post("/broadcast")
def broadcast():
    body = load(BroadcastSchema())
    type_ = body["type"]
    if type_ in REPLY_TYPES:
        raise validation_error({"type": [f"{type_!r} is a reply type, not an event"]})
    if not catalog.is_catalog_type(type_) and not catalog.CUSTOM_TYPE_PATTERN.match(type_):
        raise validation_error({"type": ["must match ^[a-z][a-z0-9_.]{0,63}$"]})
    try:
        published = state_of(current_app).bus.publish(
            type_, body["data"], channel=body["channel"], client_types=body["client_types"]
        )
    except catalog.EventValidationError as exc:
        raise validation_error(flat_fields(exc.messages, "data")) from None
    except UnknownChannelError:
        raise validation_error({"channel": [f"unknown channel {body['channel']!r}"]}) from None
    return jsonify({"seq": published.seq, "recipients": published.recipients}), 202


@bp.post("/disconnect/<client_id>")
def disconnect(client_id: str):
    load(Schema())  # no fields: the body is {}
    if not state_of(current_app).ws_server.disconnect(client_id):
        raise ApiError(404, "not_found", f"no connected client {client_id!r}")
    return jsonify({"client_id": client_id, "disconnected": True})
