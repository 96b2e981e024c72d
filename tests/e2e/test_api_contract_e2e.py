"""REST contract details of API.md "Conventions" through the real server, on SQLite and
PostgreSQL: a JSON body on every state-changing request (watched on the bus), the WebSocket's
invalid JSON and ``since`` bounds, clean ``invalid_json`` messages. The full validation matrix
runs in process: tests/api/test_contract.py."""

from __future__ import annotations

import json
import uuid

import pytest

from support import error, ok, types_of

MAX_INT64 = 2**63 - 1
INTERNALS = ("sys.", "int_max_str_digits", "Exceeds the limit", "codec", "Traceback")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pending_photo(workflow_server, photo):
    ok(
        workflow_server.post(
            f"/api/photos/{photo['id']}/analysis",
            json={"ai_score": 0.9, "analysis_results": {"faces": 2}},
        )
    )
    return ok(workflow_server.get(f"/api/photos/{photo['id']}"))


def _job(server, status: str = "queued") -> dict:
    """A new job of a kind of its own, claimed when ``status`` is running."""
    kind = _unique("contract")
    job = ok(server.post("/api/jobs", json={"kind": kind}), 201)
    if status == "running":
        job = ok(server.post("/api/jobs/claim", json={"worker": "w", "kinds": [kind]}))
    return job


def _refused(watcher, action, status: int, code: str) -> dict:
    """Run ``action``; it must answer ``status``/``code`` and publish nothing."""
    response, events = watcher.after(action)
    body = error(response, status, code)
    assert events == [], types_of(events)
    return body


# ------------------------------------------------------------------ a JSON body on every write


def test_bodyless_actions_are_415_and_change_nothing(workflow_server, watcher, pending_photo):
    photo_id = pending_photo["id"]
    body = _refused(
        watcher,
        lambda: workflow_server.post(f"/api/approval/{photo_id}/approve"),
        415,
        "unsupported_media_type",
    )
    assert "{}" in body["message"]
    assert ok(workflow_server.get(f"/api/photos/{photo_id}"))["approval_status"] == "pending"

    queued = _job(workflow_server)
    _refused(
        watcher,
        lambda: workflow_server.post(f"/api/jobs/{queued['id']}/cancel"),
        415,
        "unsupported_media_type",
    )
    assert ok(workflow_server.get(f"/api/jobs/{queued['id']}"))["status"] == "queued"

    running = _job(workflow_server, "running")
    _refused(
        watcher,
        lambda: workflow_server.post(f"/api/jobs/{running['id']}/complete"),
        415,
        "unsupported_media_type",
    )
    assert ok(workflow_server.get(f"/api/jobs/{running['id']}"))["status"] == "running"

    # the same actions with {} go through
    approved, events = watcher.after(
        lambda: ok(workflow_server.post(f"/api/approval/{photo_id}/approve", json={}))
    )
    assert approved["approval_status"] == "approved" and "photo_approved" in types_of(events)
    assert (
        ok(workflow_server.post(f"/api/jobs/{queued['id']}/cancel", json={}))["status"]
        == "cancelled"
    )
    assert (
        ok(workflow_server.post(f"/api/jobs/{running['id']}/complete", json={}))["status"]
        == "completed"
    )


def test_disconnect_needs_a_json_body(workflow_server, watcher):
    client = workflow_server.client()
    try:
        path = f"/api/websocket/disconnect/{client.client_id}"
        _refused(watcher, lambda: workflow_server.post(path), 415, "unsupported_media_type")
        listed = ok(workflow_server.get("/api/websocket/clients?limit=500"))["items"]
        assert client.client_id in [c["client_id"] for c in listed]
        assert ok(workflow_server.post(path, json={}))["disconnected"] is True
        assert client.close_code() == 4009
    finally:
        client.close()


# ------------------------------------------------------------------ invalid_json messages


@pytest.mark.parametrize(
    "raw, says",
    [
        ('{"name": ' + "1" * 5000 + ', "import_folder": "/a"}', "a number has too many digits"),
        ('{"name": "x", "import_folder": "/a", "n": 1e400}', "a number is too large"),
        ('{"name": "x", "import_folder": NaN}', "NaN is not a JSON value"),
        ('{"name": "x",\n "import_folder": }', "Expecting value (line 2, column 19)"),
        (b'{"name": "\xff\xfe"}', "not valid UTF-8"),
    ],
)
def test_invalid_json_messages_are_plain(workflow_server, watcher, raw, says):
    refused = _refused(
        watcher,
        lambda: workflow_server.post(
            "/api/sessions", data=raw, headers={"Content-Type": "application/json"}
        ),
        400,
        "invalid_json",
    )
    assert says in refused["message"], refused
    assert not any(internal in refused["message"] for internal in INTERNALS), refused


def test_websocket_invalid_json_and_since_bounds(workflow_server):
    client = workflow_server.client()
    try:
        client.send('{"type": "ping", "n": ' + "7" * 5000 + "}")
        reply = client.recv()
        assert (reply["type"], reply["code"]) == ("error", "invalid_json"), reply
        assert "too many digits" in reply["message"]
        assert not any(internal in reply["message"] for internal in INTERNALS), reply

        for since in (int("9" * 4001), MAX_INT64 + 1):
            client.send(json.dumps({"type": "subscribe", "channels": ["jobs"], "since": since}))
            reply = client.recv()
            assert (reply["type"], reply["code"], reply["request_type"]) == (
                "error",
                "invalid_message",
                "subscribe",
            ), reply
            assert "since" in reply["message"] and len(reply["message"]) < 200
        # nothing was applied: the next subscribed lists only what this request asks for
        assert client.subscribe("photos")["channels"] == ["photos"]
    finally:
        client.close()
