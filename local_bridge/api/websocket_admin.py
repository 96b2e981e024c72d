"""Admin endpoints of the bus: list clients, broadcast, disconnect (API.md)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from marshmallow import Schema

from ..state import state_of
from .body import load
from .envelope import ApiError
from .pagination import page_params
from .publishing import draft_of, load_broadcast

bp = Blueprint("websocket_admin", __name__, url_prefix="/api/websocket")


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
    bus = state_of(current_app).bus
    (published,) = bus.publish_many([draft_of(bus, load_broadcast())])
    return jsonify({"seq": published.seq, "recipients": published.recipients}), 202


@bp.post("/disconnect/<client_id>")
def disconnect(client_id: str):
    load(Schema)  # no fields: the body is {}
    if not state_of(current_app).ws_server.disconnect(client_id):
        raise ApiError(404, "not_found", f"no connected client {client_id!r}")
    return jsonify({"client_id": client_id, "disconnected": True})
