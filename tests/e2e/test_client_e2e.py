"""``local_bridge.client.BusClient`` against the real server."""

from __future__ import annotations

import socket
import time

import pytest

from local_bridge.client import BusClient, ConnectionClosed
from support import LateSocket, ServerProcess, non_daemon_threads


def test_register_subscribe_and_receive_an_event(server: ServerProcess):
    before = non_daemon_threads()
    with BusClient(server.ws_url) as client:
        assert non_daemon_threads() <= before, "the reader thread would keep the process alive"
        assert client.register("script", "client test")["client_name"] == "client test"
        assert client.subscribe(["jobs"])["channels"] == ["jobs"]
        seq = server.publish(
            "job_progress", {"job_id": "c-1", "progress": 10, "stage": "s"}, channel="jobs"
        )["seq"]
        event = next(e for e in client.events() if e.get("seq") == seq)
        assert (event["type"], event["job_id"], event["progress"]) == ("job_progress", "c-1", 10)


def test_a_late_first_read_against_the_server(server: ServerProcess, monkeypatch):
    monkeypatch.setattr(socket, "socket", LateSocket)
    with BusClient(server.ws_url, timeout=5) as client:
        assert client.hello["type"] == "connected"


def test_a_server_side_close_ends_events_with_its_code(server: ServerProcess):
    with BusClient(server.ws_url) as client:
        client.register("script", "to be disconnected")
        disconnect = server.post(f"/api/websocket/disconnect/{client.client_id}", json={})
        assert disconnect.status_code == 200, disconnect.text
        assert [e for e in client.events() if e["type"] != "heartbeat"] == []
        assert client.close_code == 4009
        with pytest.raises(ConnectionClosed):
            client.subscribe(["jobs"])


def test_close_leaves_the_server_and_no_thread(server: ServerProcess):
    before = non_daemon_threads()
    client = BusClient(server.ws_url)
    client.register("script", "closing client")
    client.close()
    client.close()  # twice is harmless
    assert client.close_code == 1000
    assert non_daemon_threads() <= before
    deadline = time.monotonic() + 10
    while any(
        c["client_id"] == client.client_id
        for c in server.get("/api/websocket/clients?limit=500").json()["items"]
    ):
        assert time.monotonic() < deadline, "the server still lists the closed client"
        time.sleep(0.05)
