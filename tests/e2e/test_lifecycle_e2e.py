"""Heartbeats, liveness, admission limits, rate limits and graceful shutdown, end to end."""

from __future__ import annotations

import signal
import time

import pytest
import requests
import websocket

from support import RawClient


def test_heartbeats_arrive_every_interval(make_server):
    server = make_server(HEARTBEAT_INTERVAL=0.3)
    client = server.client()
    assert client.connected["heartbeat_interval"] == 0.3
    beats = [client.recv(timeout=3, skip_heartbeats=False) for _ in range(2)]
    assert [b["type"] for b in beats] == ["heartbeat", "heartbeat"]
    assert "seq" not in beats[0] and beats[0]["timestamp"]
    client.close()


def test_a_client_that_answers_pings_stays_connected(make_server):
    server = make_server(HEARTBEAT_INTERVAL=0.2)
    client = server.client()  # websocket-client answers ping frames itself
    for _ in range(8):  # four intervals' worth of heartbeats: well past the two-interval limit
        assert client.recv(timeout=3, skip_heartbeats=False)["type"] == "heartbeat"
    assert client.request({"type": "ping"}, "pong")
    client.close()


def test_a_silent_peer_is_closed_and_forgotten(make_server):
    server = make_server(HEARTBEAT_INTERVAL=0.2)
    silent = RawClient(server.port)  # completes the handshake, then never sends a byte
    silent.recv_json()
    assert server.get("/api/system/status").json()["connections"]["total"] == 1
    silent.sock.settimeout(5)
    frames = []
    try:
        while True:  # heartbeats and pings, then the server drops the connection
            frames.append(silent.recv_frame()[0])
    except ConnectionError:
        pass
    assert 0x9 in frames, "the server pinged before giving up"
    assert server.get("/api/system/status").json()["connections"]["total"] == 0
    silent.close()


def test_connection_limit_refuses_with_503(make_server):
    server = make_server(MAX_CONNECTIONS=2)
    first, second = server.client(), server.client()
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        server.client()
    assert refused.value.status_code == 503
    first.close()
    assert first.ws.connected is False
    deadline = time.monotonic() + 5
    while server.get("/api/system/status").json()["connections"]["total"] > 1:
        assert time.monotonic() < deadline  # the server forgets the closed client promptly
        time.sleep(0.02)
    server.client().close()
    second.close()


def test_connect_rate_limit_answers_429(make_server):
    server = make_server(CONNECT_RATE=3)
    clients = [server.client() for _ in range(3)]
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        server.client()
    assert refused.value.status_code == 429
    for client in clients:
        client.close()


def test_foreign_origin_is_refused(server):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        server.client(origin="http://evil.example")
    assert refused.value.status_code == 403
    server.client(origin=f"http://127.0.0.1:{server.port}").close()
    server.client(suppress_origin=True).close()  # non-browser clients send no Origin


def test_message_rate_limit_drops_warns_then_closes_4029(make_server):
    server = make_server(MESSAGE_RATE=1, MESSAGE_BURST=3)
    client = server.client()
    for _ in range(5):
        client.send({"type": "ping"})
    replies = [client.recv()["type"] for _ in range(4)]
    assert replies == ["pong", "pong", "pong", "error"]
    for _ in range(120):
        client.send({"type": "ping"})
    assert client.close_code(timeout=10) == 4029
    client.close()


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_closes_every_websocket_with_1001_and_exits_0(make_server, worker_class, signum):
    server = make_server(WORKER_CLASS=worker_class)
    clients = [server.client() for _ in range(3)]
    clients[0].subscribe("jobs")
    started = time.monotonic()
    server.signal(signum)
    for client in clients:
        assert client.close_code(timeout=10) == 1001
    assert server.wait(timeout=12) == 0
    assert time.monotonic() - started < 10.5
    with pytest.raises(requests.ConnectionError):
        requests.get(server.http + "/api/system/health", timeout=2)
    assert_quiet_exit(server.log())


def assert_quiet_exit(log: str) -> None:
    """A clean stop logs nothing alarming: no traceback, nothing Python had to ignore."""
    for alarm in ("Traceback", "Exception ignored", "ERROR", "CRITICAL"):
        assert alarm not in log, log
    assert "Worker exiting" in log and "Shutting down: Master" in log, log


def test_gthread_worker_serves_the_bus(make_server):
    server = make_server(WORKER_CLASS="gthread")
    a, b = server.client(), server.client()
    a.subscribe("jobs")
    seq = server.publish("job_cancelled", {"job_id": "1"}, channel="jobs")["seq"]
    assert a.recv()["seq"] == seq
    assert b.request({"type": "ping"}, "pong")
    a.close()
    b.close()


def test_http_rate_limit_answers_429_json(make_server):
    server = make_server(HTTP_RATE=2)
    statuses = [server.get("/api/system/status").status_code for _ in range(6)]
    assert statuses[:2] == [200, 200]
    assert 429 in statuses
    refused = next(
        r for r in (server.get("/api/system/status") for _ in range(4)) if r.status_code == 429
    )
    assert refused.json()["error"]["code"] == "rate_limited"


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_an_idle_kept_alive_connection_does_not_hold_the_stop(make_server, worker_class):
    # A browser keeps its HTTP connection open after a request: the stop must not wait for it.
    server = make_server(WORKER_CLASS=worker_class)
    with requests.Session() as browser:
        assert browser.get(server.http + "/api/system/live", timeout=5).status_code == 200
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=12) == 0
        assert time.monotonic() - started < 3, "the stop waited for the idle connection"
    assert_quiet_exit(server.log())
