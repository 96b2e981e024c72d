"""REST contract details of API.md "Conventions" through the real server, on SQLite and
PostgreSQL: a JSON body on every state-changing request (watched on the bus), the WebSocket's
invalid JSON and ``since`` bounds. The full validation matrix (bodyless actions, clean
``invalid_json`` messages, ranges) runs in process: tests/api/test_contract.py."""

from __future__ import annotations

import json

from support import error, ok, types_of

MAX_INT64 = 2**63 - 1
INTERNALS = ("sys.", "int_max_str_digits", "Exceeds the limit", "codec", "Traceback")


def _refused(watcher, action, status: int, code: str) -> dict:
    """Run ``action``; it must answer ``status``/``code`` and publish nothing."""
    response, events = watcher.after(action)
    body = error(response, status, code)
    assert events == [], types_of(events)
    return body


# ------------------------------------------------------------------ a JSON body on every write


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
