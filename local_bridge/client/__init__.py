"""The Python SDK of the bus: importable without Flask, SQLAlchemy or marshmallow (it needs only
wsproto, the standard library and :mod:`local_bridge.protocol`).

``BusClient`` is the low-level connection (one socket, no reconnection); ``Bridge`` keeps a bus
connection up (reconnect, resume, heartbeats, token refresh); ``follow_job`` follows one job's
stream; ``local_bridge.client.aio.AsyncBridge`` is the Bridge for asyncio. docs/python-client.md
is the guide.
"""

from __future__ import annotations

import logging

from .backoff import Backoff, Unrecoverable
from .bridge import Bridge, ResyncRequired
from .connection import NO_CLOSE_FRAME, BusClient, BusError, ConnectionClosed, HandshakeError
from .jobs import follow_job
from .rest import ApiError, RestClient, ServerUnreachable
from .worker import JobCancelled, JobContext, JobFailed, Worker

# A library logs; the application decides where (nothing reaches stderr unless it does).
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "NO_CLOSE_FRAME",
    "ApiError",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "RestClient",
    "ServerUnreachable",
    "Worker",
    "Backoff",
    "Bridge",
    "BusClient",
    "BusError",
    "ConnectionClosed",
    "HandshakeError",
    "ResyncRequired",
    "Unrecoverable",
    "follow_job",
]
