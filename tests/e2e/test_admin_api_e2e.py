"""Admin and system HTTP endpoints of API.md, against the real server (their validation matrix
runs in process: tests/api/test_admin.py)."""

from __future__ import annotations

import re

from support import error, marker

# ------------------------------------------------------------------ clients list


def test_clients_list_shape(server, connect):
    client = connect()
    client.register("mobile", "Phone")
    client.subscribe("photos", "sessions:3")
    body = server.get("/api/websocket/clients?limit=500").json()
    assert set(body) == {"items", "next_cursor"}
    entry = next(c for c in body["items"] if c["client_id"] == client.client_id)
    assert set(entry) == {
        "client_id",
        "client_type",
        "client_name",
        "channels",
        "connected_at",
        "remote_addr",
        "sent",
        "dropped",
        "queue_depth",
    }
    assert (entry["client_type"], entry["client_name"]) == ("mobile", "Phone")
    assert entry["channels"] == ["photos", "sessions:3"]
    assert entry["remote_addr"] == "127.0.0.1"
    assert entry["sent"] >= 4 and entry["dropped"] == 0 and entry["queue_depth"] >= 0
    assert re.match(r"^\d{4}-\d\d-\d\dT.*Z$", entry["connected_at"])


def test_clients_list_pages(server, connect):
    ids = {connect().client_id for _ in range(3)}
    seen, cursor = [], None
    for _ in range(50):
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        body = server.get("/api/websocket/clients", params=params).json()
        seen += [c["client_id"] for c in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert ids <= set(seen) and len(seen) == len(set(seen))


# ------------------------------------------------------------------ disconnect


def test_disconnect_closes_with_4009_and_forgets_the_client(server, connect):
    client = connect()
    response = server.post(f"/api/websocket/disconnect/{client.client_id}", json={})
    assert response.status_code == 200
    assert response.json() == {"client_id": client.client_id, "disconnected": True}
    assert client.close_code() == 4009
    ids = [c["client_id"] for c in server.get("/api/websocket/clients?limit=500").json()["items"]]
    assert client.client_id not in ids


# ------------------------------------------------------------------ broadcast


def test_broadcast_counts_recipients(server, connect):
    a, b = connect(), connect()
    a.subscribe("queue")
    b.subscribe("queue")
    body = server.publish(
        "priority_changed", {"job_id": "j", "old_priority": 1, "new_priority": 90}, channel="queue"
    )
    assert body["recipients"] == 2 and isinstance(body["seq"], int)
    for client in (a, b):
        event = client.recv()
        assert event["type"] == "priority_changed" and event["reason"] is None


def test_catalog_event_missing_fields_are_null(server, connect):
    client = connect()
    client.subscribe("photos")
    server.publish("photo_imported", {"photo_id": "p", "file_name": "a.jpg"}, channel="photos")
    event = client.recv()
    assert event["session_id"] is None and event["file_path"] is None and event["source"] is None


def test_broadcast_custom_event_fields_stand_flat(server, connect):
    client = connect()
    seq = server.publish("lightroom.catalog_synced", {"photos": 12, "catalog": "Main"})["seq"]
    event = client.recv()
    assert event == {
        **event,
        "type": "lightroom.catalog_synced",
        "seq": seq,
        "channel": None,
        "photos": 12,
        "catalog": "Main",
    }


def test_body_over_limit_is_413(server):
    response = server.post(
        "/api/websocket/broadcast",
        data=b"x" * (1048576 + 10),
        headers={"Content-Type": "application/json"},
    )
    error(response, 413, "payload_too_large")


# ------------------------------------------------------------------ system


def test_system_event_published_on_system(server, connect):
    client = connect()
    client.subscribe("system")
    response = server.post(
        "/api/system/events",
        json={
            "type": "resource_warning",
            "resource_type": "disk",
            "current_value": 95.5,
            "threshold": 90,
            "message": "disk almost full",
        },
    )
    assert response.status_code == 202
    event = client.recv()
    assert event["seq"] == response.json()["seq"]
    assert (event["type"], event["channel"], event["resource_type"], event["current_value"]) == (
        "resource_warning",
        "system",
        "disk",
        95.5,
    )


def test_health(server):
    response = server.get("/api/system/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "backplane": "ok"}}


def test_status_counts_connections_by_type(server, connect):
    before = server.get("/api/system/status").json()
    a, b = connect(), connect()
    a.register("gui", "a")
    b.register("gui", "b")
    status = server.get("/api/system/status").json()
    assert set(status) == {
        "version",
        "uptime_seconds",
        "seq",
        "epoch",
        "backplane",
        "connections",
        "events_published",
        "queue",
    }
    assert status["connections"]["total"] == before["connections"]["total"] + 2
    assert (
        status["connections"]["by_client_type"]["gui"]
        == before["connections"]["by_client_type"].get("gui", 0) + 2
    )
    assert status["epoch"] == a.connected["epoch"]
    assert set(status["queue"]) == {
        "pending_count",
        "processing_count",
        "completed_count",
        "failed_count",
        "cancelled_count",
    }
    marker(server)
    after = server.get("/api/system/status").json()
    assert after["seq"] == status["seq"] + 1
    assert after["events_published"] == status["events_published"] + 1


def test_unknown_path_and_method_answer_json(server):
    error(server.get("/api/nothing-here"), 404, "not_found")
    error(server.post("/api/system/health"), 405, "method_not_allowed")


def test_plain_http_get_on_ws_endpoint_is_a_json_400(server):
    refused = error(server.get("/ws"), 400, "bad_request")
    assert "WebSocket" in refused["message"]


def test_database_down_gives_degraded_health_and_503s(make_server):
    server = make_server(
        DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:9/nowhere?connect_timeout=2"
    )
    health = server.get("/api/system/health")
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "degraded" and body["checks"]["backplane"] == "ok"
    assert body["checks"]["database"] != "ok"
    error(
        server.post("/api/sessions", json={"name": "x", "import_folder": "/"}), 503, "unavailable"
    )
    client = server.client()  # the bus itself keeps working
    assert client.request({"type": "ping"}, "pong")
    client.close()
