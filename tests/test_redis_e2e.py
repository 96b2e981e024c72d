"""Several server processes on one Redis and one PostgreSQL behave as one bus (issue: outgrow
one process)."""
from __future__ import annotations

import signal
import time

import pytest

from redis_support import PrivateRedis, drop_prefix, fresh_prefix, redis_url
from support import ServerProcess, marker


@pytest.fixture
def pair(postgres_url):
    """Two servers sharing a fresh Redis key space and one PostgreSQL database."""
    url, prefix = redis_url(), fresh_prefix()
    settings = {"REDIS_URL": url, "REDIS_PREFIX": prefix, "DATABASE_URL": postgres_url}
    servers = [ServerProcess(dict(settings)).start() for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()
    drop_prefix(url, prefix)


def test_published_on_b_is_received_on_a_with_one_seq(pair):
    a, b = pair
    on_a, on_b = a.client(), b.client()
    assert on_a.connected["epoch"] == on_b.connected["epoch"]
    on_a.subscribe("jobs")
    on_b.subscribe("jobs")
    first = b.publish("job_cancelled", {"job_id": "1"}, channel="jobs")["seq"]
    second = a.publish("job_cancelled", {"job_id": "2"}, channel="jobs")["seq"]
    assert second == first + 1
    for client in (on_a, on_b):
        assert [client.recv()["seq"], client.recv()["seq"]] == [first, second]
    # The workflow too: a session created through B reaches A's subscriber.
    on_a.subscribe("sessions")
    created = b.post("/api/sessions", json={"name": "Shared", "import_folder": "/"})
    assert created.status_code == 201
    event = on_a.until(lambda m: m["type"] == "session_created")[-1]
    assert event["session_id"] == created.json()["id"]
    assert a.get(f"/api/sessions/{created.json()['id']}").json()["name"] == "Shared"


def test_resume_on_b_after_leaving_a_misses_nothing(pair):
    a, b = pair
    leaving = a.client()
    leaving.subscribe("jobs")
    epoch, since = leaving.connected["epoch"], marker(a)
    leaving.recv()
    leaving.close()
    missed = [(a if i % 2 else b).publish("job_cancelled", {"job_id": str(i)}, channel="jobs")["seq"]
              for i in range(6)]
    back = b.client()
    back.send({"type": "subscribe", "channels": ["jobs"], "since": since, "epoch": epoch})
    assert back.recv()["type"] == "subscribed"
    replayed = back.until(lambda m: m["type"] == "replay_complete")
    assert [m["seq"] for m in replayed[:-1]] == missed
    assert replayed[-1]["recovered"] is True
    polled = b.get("/api/events", params={"since": since, "channels": "jobs"}).json()
    assert [e["seq"] for e in polled["items"]] == missed and polled["recovered"] is True


def test_admin_lists_and_disconnects_clients_of_every_process(pair):
    a, b = pair
    on_a = a.client()
    on_a.register("gui", "on A")
    on_b = b.client()
    on_b.register("web", "on B")
    listed = {c["client_id"]: c for c in b.get("/api/websocket/clients?limit=500").json()["items"]}
    assert {on_a.client_id, on_b.client_id} <= set(listed)
    assert listed[on_a.client_id]["client_name"] == "on A"
    response = b.post(f"/api/websocket/disconnect/{on_a.client_id}")
    assert response.status_code == 200 and response.json()["disconnected"] is True
    assert on_a.close_code() == 4009
    assert b.post("/api/websocket/disconnect/" + "f" * 32).status_code == 404


def test_redis_restart_mid_run(tmp_path):
    """Redis goes away: writes answer 503, health says so, clients stay connected; when it
    returns the bus works again (a new epoch: Redis kept nothing)."""
    redis_server = PrivateRedis().start()
    server = ServerProcess({"REDIS_URL": redis_server.url,
                            "DATABASE_URL": f"sqlite:///{tmp_path}/r.db"}).start()
    try:
        client = server.client()
        client.subscribe("jobs")
        epoch = client.connected["epoch"]
        before = server.publish("job_cancelled", {"job_id": "1"}, channel="jobs")["seq"]
        assert client.recv()["seq"] == before
        redis_server.stop()
        response = server.post("/api/websocket/broadcast", json={"type": "x.y", "data": {}})
        assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
        created = server.post("/api/sessions", json={"name": "n", "import_folder": "/"})
        assert created.status_code == 503
        assert server.get("/api/sessions").json()["items"] == [], "a refused write wrote nothing"
        health = server.get("/api/system/health")
        assert health.status_code == 503 and health.json()["checks"]["backplane"] != "ok"
        assert client.request({"type": "ping"}, "pong"), "connections are kept"
        redis_server.start()
        deadline = time.monotonic() + 20
        while server.get("/api/system/health").status_code != 200:
            assert time.monotonic() < deadline, "the backplane must reconnect by itself"
            time.sleep(0.1)
        after = server.publish("job_cancelled", {"job_id": "2"}, channel="jobs")["seq"]
        assert after > before, "seq never goes backwards, even though Redis forgot it"
        assert client.recv()["seq"] == after
        fresh = server.client()
        assert fresh.connected["epoch"] != epoch
        fresh.close()
        client.close()
    finally:
        server.stop()
        redis_server.stop()


def test_client_closed_1001_by_a_restart_resumes_on_the_other_process(pair):
    a, b = pair
    client = a.client()
    client.subscribe("jobs")
    epoch = client.connected["epoch"]
    last = a.publish("job_cancelled", {"job_id": "before"}, channel="jobs")["seq"]
    assert client.recv()["seq"] == last
    a.signal(signal.SIGTERM)
    assert client.close_code(timeout=10) == 1001
    missed = [b.publish("job_cancelled", {"job_id": f"while-{i}"}, channel="jobs")["seq"] for i in range(3)]
    back = b.client()
    back.send({"type": "subscribe", "channels": ["jobs"], "since": last, "epoch": epoch})
    assert back.recv()["type"] == "subscribed"
    replayed = back.until(lambda m: m["type"] == "replay_complete")
    assert [m["seq"] for m in replayed[:-1]] == missed and replayed[-1]["recovered"] is True
