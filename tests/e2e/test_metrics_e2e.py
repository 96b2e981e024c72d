"""``GET /metrics`` of the real server: connections, closes by code (4004, 4008, 4009), publishes,
deliveries, HTTP requests; each process of a Redis bus its own numbers; readiness and liveness
on an unmigrated PostgreSQL database."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pg import FreshDatabase
from redis_support import drop_prefix, fresh_prefix, redis_url
from support import RawClient, ServerProcess

MAX_BULK = 600  # 20 MB: more than the kernel buffers of a loopback connection hold
PAD = "x" * 32768  # big events fill the stalled client's kernel buffers quickly


def scrape(server: ServerProcess) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    response = server.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        assert family.name.startswith("local_bridge_"), family.name
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def scrape_until(server: ServerProcess, done, timeout: float = 20.0):
    """Scrape until ``done(samples)``; the connection's end is counted when its handler has
    finished, a moment after the client saw the close frame."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(server)
        if done(samples):
            return samples
        assert time.monotonic() < deadline, "the metrics never showed it"
        time.sleep(0.05)  # polling: the server has no way to announce a metric


def test_metrics_follow_connections_closes_publishes_and_requests(make_server):
    server = make_server(MAX_QUEUE=10, SLOW_CLOSE_GRACE=1)
    gui = server.client()
    gui.register("gui", "metrics gui")
    gui.subscribe("sessions")
    worker = server.client()
    worker.register("worker", "metrics worker")
    samples = scrape(server)
    assert value(samples, "local_bridge_connections", client_type="gui") == 1
    assert value(samples, "local_bridge_connections", client_type="worker") == 1

    for i in range(3):
        server.publish("metrics.test", {"i": i}, channel="sessions")
        assert gui.recv()["type"] == "metrics.test"

    response = server.post(f"/api/websocket/disconnect/{worker.client_id}", json={})
    assert response.status_code == 200
    assert worker.close_code() == 4009

    job_stream = RawClient(server.port, path="/ws/jobs/999999")
    assert job_stream.status_line.startswith("HTTP/1.1 101")
    while (frame := job_stream.recv_frame())[0] != 0x8:
        pass
    assert int.from_bytes(frame[1][:2], "big") == 4004
    job_stream.close()

    stalled = RawClient(server.port, rcvbuf=4096)
    assert stalled.recv_json()["type"] == "connected"
    stalled.send_json({"type": "subscribe", "channels": ["jobs"]})
    assert stalled.recv_json()["type"] == "subscribed"
    bulk = 0
    # Overflowing, the stalled client leaves the hub at once (its connection ends a little
    # later, after SLOW_CLOSE_GRACE, and is counted then).
    while value(scrape(server), "local_bridge_connections", client_type="unknown") == 1:
        assert bulk < MAX_BULK, "the stalled client never overflowed"
        for _ in range(20):  # from here on the stalled client reads nothing
            server.publish("bulk.event", {"i": bulk, "pad": PAD}, channel="jobs")
            bulk += 1

    samples = scrape_until(
        server,
        lambda s: (
            value(s, "local_bridge_slow_clients_total") == 1
            and value(s, "local_bridge_disconnects_total", endpoint="job_stream", code="4004") == 1
            and value(s, "local_bridge_disconnects_total", endpoint="bus", code="4009") == 1
        ),
    )
    stalled.close()
    assert value(samples, "local_bridge_disconnects_total", endpoint="bus", code="4008") == 1
    assert value(samples, "local_bridge_connects_total", endpoint="bus") == 3
    assert value(samples, "local_bridge_connects_total", endpoint="job_stream") == 1
    assert value(samples, "local_bridge_dropped_messages_total") >= 1
    assert value(samples, "local_bridge_connections", client_type="gui") == 1
    assert value(samples, "local_bridge_connections", client_type="worker") == 0
    published = "local_bridge_events_published_total"
    assert value(samples, published, type="custom", channel="sessions") == 3
    assert value(samples, published, type="custom", channel="jobs") == bulk
    assert value(samples, "local_bridge_deliveries_total") >= 3 + 10  # gui's, the stalled one's
    assert value(samples, "local_bridge_publish_to_write_seconds_count") >= 1
    assert value(samples, "local_bridge_history_events") >= 3 + bulk
    requests_total = "local_bridge_http_requests_total"
    assert (
        value(
            samples,
            requests_total,
            endpoint="websocket_admin.broadcast",
            method="POST",
            status="202",
        )
        == 3 + bulk
    )
    assert (
        value(
            samples,
            requests_total,
            endpoint="websocket_admin.disconnect",
            method="POST",
            status="200",
        )
        == 1
    )
    # an upgraded WebSocket is a connection, not an HTTP request that lasted its whole life
    assert not any(("endpoint", "bus_endpoint") in labels for labels in samples[requests_total])
    assert value(samples, "local_bridge_backplane_up", backplane="memory") == 1
    gui.close()


@pytest.fixture
def redis_pair():
    """Two server processes on one Redis key space (each with its own SQLite file)."""
    url, prefix = redis_url(), fresh_prefix()
    servers = [ServerProcess({"REDIS_URL": url, "REDIS_PREFIX": prefix}).start() for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()
    drop_prefix(url, prefix)


def test_each_process_on_redis_serves_its_own_metrics(redis_pair):
    a, b = redis_pair
    on_a, on_b = a.client(), b.client()
    on_a.register("gui", "on A")
    on_b.register("worker", "on B")
    on_a.subscribe("jobs")
    on_b.subscribe("jobs")
    for publisher in (a, a, b):
        seq = publisher.publish("metrics.test", {}, channel="jobs")["seq"]
        for client in (on_a, on_b):
            assert client.recv()["seq"] == seq
    ma, mb = scrape(a), scrape(b)
    published = "local_bridge_events_published_total"
    assert value(ma, published, type="custom", channel="jobs") == 2  # published through A
    assert value(mb, published, type="custom", channel="jobs") == 1
    assert value(ma, "local_bridge_deliveries_total") == 3  # every event, to A's one client
    assert value(mb, "local_bridge_deliveries_total") == 3
    assert value(ma, "local_bridge_connections", client_type="gui") == 1
    assert value(ma, "local_bridge_connections", client_type="worker") == 0
    assert value(mb, "local_bridge_connections", client_type="worker") == 1
    for samples in (ma, mb):
        assert value(samples, "local_bridge_backplane_up", backplane="redis") == 1
        assert 0 < value(samples, "local_bridge_redis_ping_seconds") < 1
        assert value(samples, "local_bridge_history_events") >= 3  # the shared stream
    pids = {dict(labels)["pid"] for m in (ma, mb) for labels in m["local_bridge_build_info"]}
    assert len(pids) == 2
    on_a.close()
    on_b.close()


def test_unmigrated_postgres_is_live_not_ready_and_still_scraped():
    database = FreshDatabase()
    server = ServerProcess({"DATABASE_URL": database.url}).start()
    try:
        assert server.get("/api/system/live").json() == {"status": "ok"}
        assert server.get("/api/system/health").status_code == 503
        assert value(scrape(server), "local_bridge_jobs_query_ok") == 0

        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")}
        env["LOCAL_BRIDGE_DATABASE_URL"] = database.url
        out = subprocess.run(
            [sys.executable, "-m", "local_bridge.cli", "db", "upgrade"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr

        assert server.get("/api/system/health").status_code == 200
        assert server.get("/api/system/live").status_code == 200
        server.post("/api/jobs", json={"kind": "export"})
        samples = scrape(server)
        assert value(samples, "local_bridge_jobs_query_ok") == 1
        assert value(samples, "local_bridge_jobs", status="queued") == 1
    finally:
        server.stop()
        database.drop()
