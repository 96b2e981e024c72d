"""``GET /metrics`` in process: Prometheus text, bounded labels, a registry per application,
scrape-time readings that survive a broken database, and cheap hot-path hooks."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from local_bridge import create_app, state_of
from local_bridge.bus.hub import Client
from local_bridge.bus.outbox import Outbox
from local_bridge.observability.metrics import LATENCY_SAMPLE, close_code_label, event_labels
from support import ok


def scrape(client) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``{sample name: {sorted labels: value}}`` of one scrape (which must be 200)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        assert family.name.startswith("local_bridge_"), family.name
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


class FakeTransport:
    """A client transport that takes every frame."""

    def __init__(self, depth: int = 0):
        self.frames: list[bytes] = []
        self.depth = depth

    def send(self, frame: bytes, direct: bool = True) -> bool:
        self.frames.append(frame)
        return True

    def close(self, code: int, reason: str = "", discard: bool = False) -> bool:
        return True

    def stats(self) -> dict[str, int]:
        return {"sent": len(self.frames), "dropped": 0, "queue_depth": self.depth}


@pytest.fixture
def sqlite_app(tmp_path):
    application = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/m.db"})
    yield application
    state_of(application).close()


def test_every_metric_is_named_local_bridge_and_the_families_are_there(client):
    samples = scrape(client)
    for name in (
        "local_bridge_deliveries_total",
        "local_bridge_outbox_messages",
        "local_bridge_outbox_depth_max",
        "local_bridge_history_events",
        "local_bridge_publish_to_write_seconds_count",
        "local_bridge_outbox_wait_seconds_count",
        "local_bridge_process_resident_memory_bytes",
        "local_bridge_uptime_seconds",
    ):
        assert name in samples, name
    assert value(samples, "local_bridge_backplane_up", backplane="memory") == 1
    assert value(samples, "local_bridge_jobs_query_ok") == 1
    assert value(samples, "local_bridge_jobs", status="queued") == 0


def test_published_events_are_counted_with_folded_labels(client):
    for job_id in ("1", "2", "3"):
        ok(
            client.post(
                "/api/websocket/broadcast",
                json={
                    "type": "job_cancelled",
                    "data": {"job_id": job_id},
                    "channel": f"jobs:{job_id}",
                },
            ),
            202,
        )
    for custom in ("a.one", "b.two", "c.three"):  # a client's own types: one label, custom
        ok(client.post("/api/websocket/broadcast", json={"type": custom, "data": {}}), 202)
    samples = scrape(client)
    published = samples["local_bridge_events_published_total"]
    assert (
        value(samples, "local_bridge_events_published_total", type="job_cancelled", channel="jobs")
        == 3
    )
    assert value(samples, "local_bridge_events_published_total", type="custom", channel="none") == 3
    assert not any("jobs:" in v for labels in published for _, v in labels)
    assert value(samples, "local_bridge_history_events") >= 6


def test_label_folding():
    assert event_labels("job_progress", "jobs:42") == ("job_progress", "jobs")
    assert event_labels("my.custom", None) == ("custom", "none")
    assert event_labels("my.custom", "system") == ("custom", "system")
    assert close_code_label(4008) == "4008" and close_code_label(1000) == "1000"
    assert close_code_label(4321) == "other" and close_code_label(3999) == "other"


def test_http_requests_are_labelled_by_endpoint_not_path(client):
    for session_id in ("1", "2", "3"):
        client.get(f"/api/sessions/{session_id}")
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    samples = scrape(client)
    requests_total = samples["local_bridge_http_requests_total"]
    endpoints = {dict(labels)["endpoint"] for labels in requests_total}
    assert "workflow.get_session" in endpoints
    assert not any("/" in endpoint for endpoint in endpoints)
    assert (
        value(
            samples,
            "local_bridge_http_requests_total",
            endpoint="unmatched",
            method="GET",
            status="404",
        )
        == 2
    )
    durations = samples["local_bridge_http_request_duration_seconds_count"]
    assert sum(durations.values()) >= 5


def test_each_application_has_its_own_registry(tmp_path):
    first = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/a.db"})
    second = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/b.db"})
    try:
        first.test_client().post("/api/websocket/broadcast", json={"type": "x.y", "data": {}})
        assert (
            value(
                scrape(first.test_client()),
                "local_bridge_events_published_total",
                type="custom",
                channel="none",
            )
            == 1
        )
        assert (
            value(
                scrape(second.test_client()),
                "local_bridge_events_published_total",
                type="custom",
                channel="none",
            )
            == 0
        )
    finally:
        state_of(first).close()
        state_of(second).close()


def test_deliveries_connections_outboxes_and_sampled_latency(sqlite_app):
    bus = state_of(sqlite_app).bus
    clients = [Client(FakeTransport(depth=d)) for d in (0, 3, 900)]
    for client, client_type in zip(clients, ("gui", "gui", "worker"), strict=True):
        bus.join(client, lambda seq, epoch: None)
        bus.hub.register(client, client_type, "test")
    events = 2 * LATENCY_SAMPLE
    for i in range(events):
        bus.publish("x.y", {"i": i}, channel=None)
    samples = scrape(sqlite_app.test_client())
    assert value(samples, "local_bridge_deliveries_total") == 3 * events
    assert value(samples, "local_bridge_publish_to_write_seconds_count") == 2
    assert value(samples, "local_bridge_connections", client_type="gui") == 2
    assert value(samples, "local_bridge_connections", client_type="worker") == 1
    assert value(samples, "local_bridge_outbox_messages") == 903
    assert value(samples, "local_bridge_outbox_depth_max") == 900
    assert value(samples, "local_bridge_outbox_clients_over_half") == 1  # MAX_QUEUE 1000


def test_client_types_beyond_the_cap_are_other(sqlite_app):
    bus = state_of(sqlite_app).bus
    for i in range(25):
        client = Client(FakeTransport())
        bus.join(client, lambda seq, epoch: None)
        bus.hub.register(client, f"type{i:02d}", "test")
    samples = scrape(sqlite_app.test_client())
    assert len(samples["local_bridge_connections"]) == 21  # 20 types, and "other"
    assert value(samples, "local_bridge_connections", client_type="other") == 5


def test_jobs_by_status_and_a_broken_database_does_not_break_the_scrape(sqlite_app, tmp_path):
    client = sqlite_app.test_client()
    for kind in ("export", "export", "analysis"):
        ok(client.post("/api/jobs", json={"kind": kind}), 201)
    samples = scrape(client)
    assert value(samples, "local_bridge_jobs", status="queued") == 3
    assert value(samples, "local_bridge_jobs", status="running") == 0
    engine = create_engine(f"sqlite:///{tmp_path}/m.db")
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE jobs"))
    engine.dispose()
    samples = scrape(client)  # still 200, with everything else
    assert value(samples, "local_bridge_jobs_query_ok") == 0
    assert "local_bridge_uptime_seconds" in samples
    assert client.get("/api/system/live").get_json() == {"status": "ok"}


def test_live_answers_while_health_is_degraded(sqlite_app, tmp_path):
    client = sqlite_app.test_client()
    engine = create_engine(f"sqlite:///{tmp_path}/m.db")
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    engine.dispose()
    assert client.get("/api/system/health").status_code == 503
    live = client.get("/api/system/live")
    assert live.status_code == 200 and live.get_json() == {"status": "ok"}


def test_probes_and_scrapes_are_exempt_from_the_http_rate_limit(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/r.db", "HTTP_RATE": 1})
    try:
        client = app.test_client()
        statuses = {client.get("/api/sessions").status_code for _ in range(5)}
        assert 429 in statuses  # the limit is on
        for path in ("/metrics", "/api/system/live", "/api/system/health"):
            assert {client.get(path).status_code for _ in range(5)} == {200}, path
        refused = value(
            scrape(client),
            "local_bridge_http_requests_total",
            endpoint="workflow.list_sessions",
            method="GET",
            status="429",
        )
        assert refused >= 1  # a request a hook refused is counted too
    finally:
        state_of(app).close()


def test_outbox_reports_how_long_a_queued_batch_waited():
    waits: list[float] = []
    written: list[bytes] = []
    outbox = Outbox(written.append, limit=100, on_wait=waits.append)
    for i in range(5):
        assert outbox.put(b"m%d" % i, direct=False)
    outbox.close()
    assert outbox.wait_closed(5)
    assert b"".join(written) == b"m0m1m2m3m4"
    assert waits and all(0 <= w < 5 for w in waits)
    assert len(waits) <= 5  # one per batch, not per message


def test_a_direct_write_reports_no_wait():
    import socket

    left, right = socket.socketpair()
    try:
        left.setblocking(False)
        waits: list[float] = []
        outbox = Outbox(left.sendall, limit=10, on_wait=waits.append, try_send=left.send)
        assert outbox.put(b"hello")
        assert right.recv(5) == b"hello"
        time.sleep(0)  # nothing was queued: no writer, no observation
        assert waits == [] and outbox.sent == 1
    finally:
        left.close()
        right.close()
