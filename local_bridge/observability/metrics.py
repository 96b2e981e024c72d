"""Prometheus metrics of one application (``GET /metrics``), every one named ``local_bridge_*``.

Each application has a registry of its own (an application is not a process: tests build many
in one). What the server already knows (connections, outbox depths, the history, the backplane,
jobs in the database) is read when Prometheus scrapes, by :class:`BridgeCollector`, so the hot
path does not pay for it. What happens between scrapes is counted where it happens, cheaply:

- a publish: one counter increment, its labels folded to a bounded set (see :func:`event_labels`);
- a delivery: nothing per recipient. The hub reports each event once, with how many clients
  took it, and one event in :data:`LATENCY_SAMPLE` is timed from its publication;
- an outbox write batch (a queued frame, not one written at once): one histogram observation;
- a connection's end: its close code, and the messages its outbox dropped.

Several server processes (gunicorn workers, or servers on one Redis) each serve their own
numbers: see docs/operations.md.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Flask, Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from .. import catalog
from ..protocol import BusEvent, CloseCode
from ..version import __version__

if TYPE_CHECKING:
    from ..state import BridgeState

log = logging.getLogger(__name__)

NAMESPACE = "local_bridge"
#: One delivered event in this many is timed from publication to the end of its fan-out.
LATENCY_SAMPLE = 16
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: Distinct client types listed by ``local_bridge_connections``; the rarest beyond are "other"
#: (a client names its own type: the label set must stay bounded).
MAX_CLIENT_TYPES = 20
#: The scrape's database query (jobs by status) gives up after this long.
JOBS_QUERY_TIMEOUT = 1.0
REDIS_PING_TIMEOUT = 1.0
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def event_labels(type_: str, channel: str | None) -> tuple[str, str]:
    """The ``type`` and ``channel`` labels of a published event: a catalog type by its name,
    any other (client-chosen) type as ``custom``; a sub-channel (``jobs:123``) as its base
    channel; no channel (every client) as ``none``."""
    return (
        type_ if catalog.is_catalog_type(type_) else "custom",
        channel.partition(":")[0] if channel else "none",
    )


def close_code_label(code: int) -> str:
    """A close code as a label: the protocol's codes and the standard ones below 3000 as they
    are, anything else a peer may send as ``other``."""
    if code < 3000 or code in _SERVER_CODES:
        return str(code)
    return "other"


_SERVER_CODES = frozenset(int(code) for code in CloseCode)


class BridgeMetrics:
    """The registry of one application, the counters its hot paths increment, and the
    collector that reads everything else at scrape time."""

    def __init__(self, state: BridgeState):
        self.state = state
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.connects = Counter(
            "connects",
            "WebSocket connections accepted, by endpoint (bus: /ws, job_stream: /ws/jobs/<id>)",
            ["endpoint"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.disconnects = Counter(
            "disconnects",
            "WebSocket connections ended, by endpoint and close code (1006: no close frame)",
            ["endpoint", "code"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.published = Counter(
            "events_published",
            "Events published through this process, by type (custom: not a catalog type) "
            "and base channel (none: every client)",
            ["type", "channel"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.dropped = Counter(
            "dropped_messages",
            "Messages a WebSocket connection's outbox discarded (slow consumer, or closing)",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.slow_clients = Counter(
            "slow_clients",
            "WebSocket clients closed 4008 for falling MAX_QUEUE messages behind",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.latency = Histogram(
            "publish_to_write_seconds",
            f"From an event's publication to the end of its fan-out here (every recipient's "
            f"frame written, or queued when the socket was busy); one event in "
            f"{LATENCY_SAMPLE} is timed",
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.outbox_wait = Histogram(
            "outbox_wait_seconds",
            "How long the oldest frame of each queued write batch waited in its outbox",
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.http_requests = Counter(
            "http_requests",
            "HTTP requests answered, by Flask endpoint, method and status",
            ["endpoint", "method", "status"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (a stream: until its response began), by endpoint",
            ["endpoint", "method"],
            namespace=NAMESPACE,
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        ProcessCollector(namespace=NAMESPACE, registry=registry)
        registry.register(BridgeCollector(self))
        # Labelled children, bound once: the hot paths look them up in a plain dict.
        self._published: dict[tuple[str, str | None], Any] = {}
        self._http: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.deliveries = 0  # frames accepted by clients; counted by the (serial) delivery
        self._events_seen = 0
        self._redis: Any = None
        self._redis_lock = threading.Lock()

    # ------------------------------------------------------------------ hot paths

    def event_published(self, type_: str, channel: str | None) -> None:
        """The publisher's hook: one event published through this process."""
        key = (type_, channel)
        child = self._published.get(key)
        if child is None:
            child = self.published.labels(*event_labels(type_, channel))
            if len(self._published) < 4096:  # raw keys: a client may vary its custom types
                self._published[key] = child
        child.inc()

    def event_delivered(self, event: BusEvent, recipients: int) -> None:
        """The hub's hook: ``event`` was handed to ``recipients`` clients of this process.

        The hub delivers one event at a time (under the backplane's numbering lock, or on the
        Redis listener's thread), so plain integers suffice."""
        self.deliveries += recipients
        self._events_seen += 1
        if self._events_seen % LATENCY_SAMPLE == 0:
            published = _published_at(event)
            if published is not None:
                self.latency.observe(max(0.0, time.time() - published))

    def outbox_waited(self, seconds: float) -> None:
        """An outbox writer's hook: a queued batch went out after ``seconds``."""
        self.outbox_wait.observe(seconds)

    def http_answered(self, endpoint: str | None, method: str, status: int, seconds: float) -> None:
        key = (endpoint or "", method, status)
        children = self._http.get(key)
        if children is None:
            name = endpoint or "unmatched"
            method_label = method if method in HTTP_METHODS else "other"
            children = (
                self.http_requests.labels(name, method_label, str(status)),
                self.http_duration.labels(name, method_label),
            )
            self._http[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def connection_opened(self, endpoint: str) -> None:
        self.connects.labels(endpoint).inc()

    def connection_closed(self, endpoint: str, code: int, dropped: int) -> None:
        self.disconnects.labels(endpoint, close_code_label(code)).inc()
        if dropped:
            self.dropped.inc(dropped)
        if code == CloseCode.SLOW_CONSUMER:
            self.slow_clients.inc()

    # ------------------------------------------------------------------ scrape time

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def redis_client(self) -> Any:
        """A Redis connection of the scrape's own (never the backplane's), made on first use."""
        with self._redis_lock:
            if self._redis is None:
                import redis

                self._redis = redis.Redis.from_url(
                    self.state.settings.REDIS_URL or "",
                    socket_timeout=REDIS_PING_TIMEOUT,
                    socket_connect_timeout=REDIS_PING_TIMEOUT,
                )
            return self._redis

    def close(self) -> None:
        with self._redis_lock:
            if self._redis is not None:
                self._redis.close()
                self._redis = None


def _published_at(event: BusEvent) -> float | None:
    """The event's publication time (its ``timestamp``, written by the publishing process)."""
    try:
        return datetime.fromisoformat(event.message["timestamp"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


class BridgeCollector(Collector):
    """What is read when Prometheus scrapes: connections, outboxes, deliveries, history,
    backplane, jobs. A part that fails is left out (and logged); the scrape still answers."""

    def __init__(self, metrics: BridgeMetrics):
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # families vary with the backplane; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        parts: tuple[Callable[[], Iterator[Metric]], ...] = (
            self._info,
            self._clients,
            self._backplane,
            self._jobs,
        )
        for part in parts:
            try:
                yield from part()
            except Exception:  # one broken part must not cost the whole scrape
                log.exception("metrics: %s failed", part.__name__)

    def _info(self) -> Iterator[Metric]:
        state = self.metrics.state
        info = GaugeMetricFamily(
            f"{NAMESPACE}_build_info",
            "1, labelled with this process's version, worker class and pid",
            labels=["version", "worker_class", "pid"],
        )
        info.add_metric([__version__, state.settings.WORKER_CLASS, str(os.getpid())], 1)
        yield info
        yield GaugeMetricFamily(
            f"{NAMESPACE}_uptime_seconds",
            "Seconds since this process's bus started",
            value=time.time() - state.bus.started_at,
        )
        yield CounterMetricFamily(
            f"{NAMESPACE}_deliveries",
            "Event frames accepted by this process's clients (one per event and recipient)",
            value=self.metrics.deliveries,
        )

    def _clients(self) -> Iterator[Metric]:
        clients = self.metrics.state.bus.hub.clients()
        by_type = Tally(client.client_type for client in clients)
        shown = dict(by_type.most_common(MAX_CLIENT_TYPES))
        other = sum(by_type.values()) - sum(shown.values())
        connections = GaugeMetricFamily(
            f"{NAMESPACE}_connections",
            "Connected clients (WebSocket, job streams and SSE) by client type",
            labels=["client_type"],
        )
        for client_type, count in sorted(shown.items()):
            connections.add_metric([client_type], count)
        if other:
            connections.add_metric(["other"], other)
        yield connections
        limit = self.metrics.state.settings.MAX_QUEUE
        depths = [client.transport.stats().get("queue_depth", 0) for client in clients]
        yield GaugeMetricFamily(
            f"{NAMESPACE}_outbox_messages",
            "Messages queued in every client's outbox, not yet written",
            value=sum(depths),
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_outbox_depth_max",
            "The deepest client outbox (a client is closed 4008 at MAX_QUEUE)",
            value=max(depths, default=0),
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_outbox_clients_over_half",
            "Clients whose outbox holds more than half of MAX_QUEUE: about to be closed 4008",
            value=sum(1 for depth in depths if depth > limit // 2),
        )

    def _backplane(self) -> Iterator[Metric]:
        state = self.metrics.state
        kind = "redis" if state.settings.REDIS_URL else "memory"
        up = GaugeMetricFamily(
            f"{NAMESPACE}_backplane_up",
            "1 when the backplane delivers events (Redis: the listener is subscribed), else 0",
            labels=["backplane"],
        )
        up.add_metric([kind], 1 if state.bus.health() == "ok" else 0)
        yield up
        history = GaugeMetricFamily(
            f"{NAMESPACE}_history_events",
            "Events held in the bus history (resume, polling, SSE)",
        )
        if kind == "memory":
            history.add_metric([], len(state.bus.history(0)[0]))
            yield history
            return
        client = self.metrics.redis_client()
        started = time.perf_counter()
        try:
            client.ping()
        except Exception as exc:  # unreachable: no round-trip to report
            log.debug("metrics: Redis PING failed: %s", exc)
            return
        yield GaugeMetricFamily(
            f"{NAMESPACE}_redis_ping_seconds",
            "Round trip of a Redis PING made by this scrape",
            value=time.perf_counter() - started,
        )
        # The backplane's stream (redis.py: the prefix's "stream" key) is the history.
        history.add_metric([], client.xlen(state.settings.REDIS_PREFIX + "stream"))
        yield history

    def _jobs(self) -> Iterator[Metric]:
        counts, ok = jobs_by_status(self.metrics.state)
        jobs = GaugeMetricFamily(
            f"{NAMESPACE}_jobs", "Processing jobs in the database by status", labels=["status"]
        )
        for status, count in sorted(counts.items()):
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily(
            f"{NAMESPACE}_jobs_query_ok",
            "1 when this scrape could count the jobs (0: database unreachable, unmigrated "
            f"or slower than {JOBS_QUERY_TIMEOUT:g} s)",
            value=1 if ok else 0,
        )


def jobs_by_status(state: BridgeState) -> tuple[dict[str, int], bool]:
    """``({status: count}, True)``, or ``({}, False)`` when the database did not answer
    within :data:`JOBS_QUERY_TIMEOUT`."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from ..domain.models import Job

    engine = state.database.engine
    timeout_ms = int(JOBS_QUERY_TIMEOUT * 1000)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout_ms}")
            elif engine.dialect.name == "sqlite":  # waits for a writer's lock, then gives up
                connection.exec_driver_sql(f"PRAGMA busy_timeout = {timeout_ms}")
            try:
                rows = connection.execute(
                    select(Job.status, func.count(Job.id)).group_by(Job.status)
                ).all()
            finally:
                if engine.dialect.name == "sqlite":  # the pooled connection's usual patience
                    connection.exec_driver_sql("PRAGMA busy_timeout = 30000")
                connection.rollback()
        counts = dict.fromkeys(Job.STATUSES, 0)  # a status with no job is 0, not absent
        counts.update({str(status): int(count) for status, count in rows})
        return counts, True
    except SQLAlchemyError as exc:
        log.debug("metrics: jobs query failed: %s", exc)
        return {}, False


def init_app(app: Flask, metrics: BridgeMetrics) -> None:
    """Serve ``GET /metrics`` (Prometheus text format) from ``metrics``' registry."""

    def metrics_view() -> Response:
        # The classic text format (0.0.4), which every Prometheus version reads.
        return Response(metrics.exposition(), content_type=CONTENT_TYPE_PLAIN_0_0_4)

    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
