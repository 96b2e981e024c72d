"""What one application owns, and the one way to reach it: :func:`state_of`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the state is built by app.create_app; these are only its parts' types
    from flask import Flask

    from .auth.service import Authenticator
    from .bus.facade import Bus
    from .bus.websocket_server import WebSocketServer
    from .config import Settings
    from .db import Database
    from .domain import Domain
    from .observability import BridgeMetrics

EXTENSION_KEY = "local_bridge"


@dataclass
class BridgeState:
    """Everything one application owns, at ``app.extensions["local_bridge"]``: its settings,
    database, bus (and the seed design's :class:`WebSocketServer` over it) and domain."""

    settings: Settings
    database: Database
    bus: Bus
    ws_server: WebSocketServer
    domain: Domain
    #: Prometheus metrics (``GET /metrics``), with a registry of this application's own.
    metrics: BridgeMetrics | None = None
    #: Token checks and revocation while ``LOCAL_BRIDGE_AUTH=token``; None with auth off.
    auth: Authenticator | None = None

    def queue_counts(self) -> dict[str, int]:
        return self.domain.queue_counts()

    def close(self) -> None:
        """Release everything the application opened: the domain's timers first (they
        publish), then the bus (clients closed with 1001, the backplane's connections and
        threads), then the database engine's connections."""
        self.domain.close()
        self.bus.close()
        self.database.close()
        if self.auth is not None:
            self.auth.close()
        if self.metrics is not None:
            self.metrics.close()


def state_of(app: Flask) -> BridgeState:
    """The :class:`BridgeState` of an application made by :func:`~local_bridge.create_app`
    (in a request: ``state_of(current_app)``)."""
    return app.extensions[EXTENSION_KEY]
