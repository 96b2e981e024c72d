"""What an operator sees of the server: Prometheus metrics, structured logs, an access log."""

from __future__ import annotations

from flask import Flask

from . import access_log, metrics
from .metrics import BridgeMetrics


def init_app(app: Flask, bridge_metrics: BridgeMetrics) -> None:
    """Request ids, the access log and HTTP metrics for every request, and ``GET /metrics``.

    Call before registering any other ``before_request`` hook (see :mod:`.access_log`)."""
    access_log.init_app(app, bridge_metrics)
    metrics.init_app(app, bridge_metrics)


__all__ = ["BridgeMetrics", "init_app"]
