"""The real server's standard error: with ``LOCAL_BRIDGE_LOG_FORMAT=json`` every line is one JSON
object (gunicorn's own too), access lines carry the request id, WebSocket lines the client id
and close code; the text format's access log is on by default."""

from __future__ import annotations

import json
import time

import pytest

from support import ServerProcess


def log_lines_until(server: ServerProcess, done, timeout: float = 10.0) -> list[str]:
    """The server's log lines, read again until ``done(lines)``: a connection's close line is
    written when its handler has finished, a moment after the client saw the close."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in server.log().splitlines() if line.strip()]
        if done(lines):
            return lines
        assert time.monotonic() < deadline, "\n".join(lines[-20:])
        time.sleep(0.05)  # polling a file: the server has no other way to tell us


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_json_logs_carry_request_and_client_ids(make_server, worker_class):
    server = make_server(LOG_FORMAT="json", WORKER_CLASS=worker_class)
    response = server.get("/api/sessions", headers={"X-Request-ID": "e2e-req-1"})
    assert response.status_code == 200 and response.headers["X-Request-ID"] == "e2e-req-1"
    refused = server.post("/api/sessions", data="{", headers={"Content-Type": "application/json"})
    assert refused.status_code == 400
    generated = refused.headers["X-Request-ID"]
    client = server.client()
    client_id = client.client_id
    client.close()  # a normal close: 1000

    def parsed(lines):
        entries = []
        for line in lines:  # every line is JSON, or the test fails here
            try:
                entries.append(json.loads(line))
            except ValueError:
                pytest.fail(f"not a JSON line: {line!r}")
        return entries

    entries = parsed(
        log_lines_until(
            server,
            lambda lines: any('"websocket_close"' in line and client_id in line for line in lines),
        )
    )
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry), entry
    assert any(e["logger"] == "gunicorn.error" for e in entries)  # gunicorn's lines too
    access = [e for e in entries if e["logger"] == "local_bridge.access"]
    (listed,) = [e for e in access if e.get("request_id") == "e2e-req-1"]
    assert listed["method"] == "GET" and listed["path"] == "/api/sessions"
    assert listed["status"] == 200 and listed["remote_addr"] == "127.0.0.1"
    assert isinstance(listed["duration_ms"], float | int)
    (bad,) = [e for e in access if e.get("request_id") == generated]
    assert bad["status"] == 400
    opened = [e for e in access if e.get("event") == "websocket_open"]
    closed = [e for e in access if e.get("event") == "websocket_close"]
    assert [e["client_id"] for e in opened] == [client_id]
    assert [(e["client_id"], e["close_code"]) for e in closed] == [(client_id, 1000)]
    assert opened[0]["request_id"] == closed[0]["request_id"]  # one upgrade request


def test_text_access_log_is_on_by_default(server):
    server.get("/api/system/live", headers={"X-Request-ID": "e2e-text-1"})
    lines = log_lines_until(server, lambda lines: any("e2e-text-1" in line for line in lines))
    (line,) = [line for line in lines if "e2e-text-1" in line]
    assert "INFO local_bridge.access:" in line and '"GET /api/system/live" 200' in line
    assert line.endswith("[request_id=e2e-text-1]")
