"""Admin and system HTTP endpoints of API.md, in process: validation, refusals and routing
answers (a refusal publishes nothing). Clients, delivery and the real server's own answers:
tests/e2e/test_admin_api_e2e.py."""

from __future__ import annotations

import pytest

from support import error


def test_clients_list_bad_limit(client):
    error(client.get("/api/websocket/clients?limit=abc"), 422, "validation_error")
    error(client.get("/api/websocket/clients?limit=0"), 422, "validation_error")


def test_disconnect_unknown_client_is_404(client):
    error(client.post("/api/websocket/disconnect/" + "0" * 32, json={}), 404, "not_found")


@pytest.mark.parametrize(
    "data, field",
    [
        ({"job_id": "j", "progress": 101}, "data.progress"),
        ({"job_id": "j", "progress": "50"}, "data.progress"),
        ({"progress": 5}, "data.job_id"),
        ({"job_id": "j", "progress": 5, "bogus": 1}, "data.bogus"),
        ({"job_id": "j", "progress": 5, "counters": {"files": "many"}}, "data.counters.files"),
    ],
)
def test_broadcast_validates_catalog_fields(client, published, data, field):
    response, events = published.after(
        lambda: client.post(
            "/api/websocket/broadcast",
            json={"type": "job_progress", "channel": "jobs", "data": data},
        )
    )
    refused = error(response, 422, "validation_error")
    assert field in refused["fields"]
    assert events == []


@pytest.mark.parametrize(
    "body, field",
    [
        ({"type": "job_cancelled", "channel": "nowhere", "data": {"job_id": "x"}}, "channel"),
        ({"type": "pong", "data": {}}, "type"),
        ({"type": "error", "data": {}}, "type"),
        ({"type": "Bad Type", "data": {}}, "type"),
        ({"type": "custom.thing", "data": {"seq": 5}}, "data.seq"),
        ({"type": "custom.thing", "data": []}, "data"),
        ({"type": "custom.thing", "client_types": ["NOT OK"]}, "client_types.0"),
        ({"type": "custom.thing", "unexpected": 1}, "unexpected"),
        ({"data": {}}, "type"),
    ],
)
def test_broadcast_refuses_bad_requests(client, published, body, field):
    response, events = published.after(lambda: client.post("/api/websocket/broadcast", json=body))
    refused = error(response, 422, "validation_error")
    assert field in refused["fields"], refused
    assert events == []


def test_broadcast_bad_json_and_content_type(client):
    error(
        client.post(
            "/api/websocket/broadcast", data="{oops", headers={"Content-Type": "application/json"}
        ),
        400,
        "invalid_json",
    )
    error(
        client.post(
            "/api/websocket/broadcast",
            data="type=x",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        415,
        "unsupported_media_type",
    )
    error(client.post("/api/websocket/broadcast"), 415, "unsupported_media_type")


def test_body_over_limit_is_413(client):
    response = client.post(
        "/api/websocket/broadcast",
        data=b"x" * (1048576 + 10),
        headers={"Content-Type": "application/json"},
    )
    error(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"type": "job_progress", "job_id": "j", "progress": 1}, "type"),
        ({"type": "system_status"}, "status"),
        (
            {
                "type": "resource_warning",
                "resource_type": "disk",
                "current_value": "high",
                "threshold": 1,
            },
            "current_value",
        ),
    ],
)
def test_system_event_validation(client, published, body, field):
    response, events = published.after(lambda: client.post("/api/system/events", json=body))
    refused = error(response, 422, "validation_error")
    assert field in refused["fields"]
    assert events == []


def test_health(client):
    response = client.get("/api/system/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "backplane": "ok"}}


def test_unknown_path_and_method_answer_json(client):
    error(client.get("/api/nothing-here"), 404, "not_found")
    error(client.post("/api/system/health"), 405, "method_not_allowed")


def test_plain_http_get_on_ws_endpoint_is_a_json_400(client):
    refused = error(client.get("/ws"), 400, "bad_request")
    assert "WebSocket" in refused["message"]
