"""System endpoints: liveness, health (readiness), status, and publishing system events
(API.md)."""

from __future__ import annotations

import time
from collections import Counter

from flask import Blueprint, current_app, jsonify

from .. import catalog
from ..state import state_of
from ..version import __version__
from .body import flat_fields, load_object
from .envelope import validation_error

bp = Blueprint("system", __name__, url_prefix="/api/system")
SYSTEM_EVENT_TYPES = ("system_status", "resource_warning", "error_occurred")


@bp.get("/live")
def live():
    """Liveness: the process serves requests. Touches neither the database nor the backplane
    (a database outage must not get every server restarted): readiness is ``/health``."""
    return jsonify({"status": "ok"})


@bp.get("/health")
def health():
    """Readiness: the database answers with this version's schema, the backplane delivers."""
    state = state_of(current_app)
    checks = {"database": state.database.check(), "backplane": state.bus.health()}
    healthy = all(value == "ok" for value in checks.values())
    return jsonify(
        {"status": "ok" if healthy else "degraded", "checks": checks}
    ), 200 if healthy else 503


@bp.get("/status")
def status():
    state = state_of(current_app)
    bus = state.bus
    by_type = Counter(client.client_type for client in bus.hub.clients())
    return jsonify(
        {
            "version": __version__,
            "uptime_seconds": round(time.time() - bus.started_at, 3),
            "seq": bus.last_seq,
            "epoch": bus.epoch,
            "backplane": bus.backplane_kind,
            "connections": {"total": sum(by_type.values()), "by_client_type": dict(by_type)},
            "events_published": bus.events_published,
            "queue": state.queue_counts(),
        }
    )


@bp.post("/events")
def publish_system_event():
    body = load_object()
    type_ = body.pop("type", None)
    if type_ not in SYSTEM_EVENT_TYPES:
        raise validation_error({"type": [f"must be one of {', '.join(SYSTEM_EVENT_TYPES)}"]})
    try:
        published = state_of(current_app).bus.publish(type_, body)
    except catalog.EventValidationError as exc:
        raise validation_error(flat_fields(exc.messages)) from None
    return jsonify({"seq": published.seq, "recipients": published.recipients}), 202
