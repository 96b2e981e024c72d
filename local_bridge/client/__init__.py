"""The Python SDK of the bus: importable without Flask, SQLAlchemy or marshmallow (it needs only
wsproto, the standard library and :mod:`local_bridge.protocol`).

``BusClient`` is the low-level connection (one socket, no reconnection); the higher-level helpers
build on it.
"""

from __future__ import annotations

from .connection import NO_CLOSE_FRAME, BusClient, BusError, ConnectionClosed, HandshakeError

__all__ = ["NO_CLOSE_FRAME", "BusClient", "BusError", "ConnectionClosed", "HandshakeError"]
