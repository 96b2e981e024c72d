"""``local-bridge listen`` on the Bridge: it carries on across a server restart, replays with
``--since``, filters with ``--type``, prints readable lines or ``--json``, and stops with one
line on a close that reconnecting would not mend."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import uuid

from support import ServerProcess


class Listener:
    """``local-bridge listen`` in a subprocess, its output lines queued as they come."""

    def __init__(self, server: ServerProcess, *args: str):
        self.name = f"listen-{uuid.uuid4().hex[:8]}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local_bridge.cli", "listen", "--port", str(server.port)]
            + ["--client-name", self.name, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=_pump, args=(stream, lines), daemon=True).start()

    def wait_subscribed(self, server: ServerProcess, timeout: float = 30) -> str:
        """Until the server lists it (a fresh interpreter connecting is slow when loaded);
        its client_id."""
        deadline = time.monotonic() + timeout
        while True:
            clients = server.get("/api/websocket/clients?limit=500").json()["items"]
            mine = [c for c in clients if c["client_name"] == self.name and c["channels"]]
            if mine:
                return mine[0]["client_id"]
            assert self.process.poll() is None, f"exited: {_drain(self.err)}"
            assert time.monotonic() < deadline, "never subscribed"
            time.sleep(0.05)

    def line(self, timeout: float = 10) -> str:
        return self.out.get(timeout=timeout).rstrip("\n")

    def error_line(self, containing: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.err.get(timeout=max(0.01, deadline - time.monotonic()))
            if containing in line:
                return line.rstrip("\n")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(10)


def _pump(stream, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def _drain(lines: queue.Queue[str]) -> str:
    text = []
    while not lines.empty():
        text.append(lines.get())
    return "".join(text)


def test_listen_carries_on_after_a_server_restart(make_server):
    server = make_server()
    listener = Listener(server)
    try:
        listener.wait_subscribed(server)
        seq = server.publish("job_cancelled", {"job_id": "before"}, channel="jobs")["seq"]
        line = listener.line()
        assert f"#{seq}  jobs  job_cancelled  job_id=before" in line
        server.restart()
        assert "connection lost: 1001 (the server is shutting down)" in listener.error_line("lost")
        assert "reconnected, resuming after seq" in listener.error_line("reconnected")
        assert "no longer available" in listener.error_line("no longer available")
        listener.wait_subscribed(server)
        server.publish("job_cancelled", {"job_id": "after"}, channel="jobs")
        assert "job_cancelled  job_id=after" in listener.line()
        assert listener.process.poll() is None
    finally:
        listener.stop()


def test_since_replays_history_as_json_lines(make_server):
    server = make_server()
    seqs = [
        server.publish("job_cancelled", {"job_id": str(i)}, channel="jobs")["seq"] for i in range(3)
    ]
    listener = Listener(server, "--since", str(seqs[0] - 1), "--json")
    try:
        events = [json.loads(listener.line(20)) for _ in seqs]
        assert [e["seq"] for e in events] == seqs
        assert [e["job_id"] for e in events] == ["0", "1", "2"]
    finally:
        listener.stop()


def test_type_filters_with_globs(server):
    listener = Listener(server, "--type", "job_c*", "--type", "listen.test")
    try:
        listener.wait_subscribed(server)
        server.publish("job_progress", {"job_id": "p", "progress": 1}, channel="jobs")
        server.publish("job_cancelled", {"job_id": "c", "reason": "no time"}, channel="jobs")
        server.publish("other.test", {"x": 1}, channel="jobs")
        server.publish("listen.test", {"x": {"a": 1}}, channel="jobs")
        first, second = listener.line(), listener.line()
        assert 'job_cancelled  job_id=c reason="no time"' in first
        assert first[2] == ":" and first[5] == ":"  # the time of day leads
        assert second.endswith('listen.test  x={"a":1}')
        assert listener.out.empty()
    finally:
        listener.stop()


def test_an_administrators_disconnect_ends_listen_with_one_line(server):
    listener = Listener(server)
    try:
        client_id = listener.wait_subscribed(server)
        response = server.post(f"/api/websocket/disconnect/{client_id}", json={})
        assert response.status_code == 200
        assert listener.process.wait(15) == 1
        assert listener.error_line("Error") == (
            "Error: local_bridge closed the connection: 4009 (disconnected by an administrator)"
        )
        assert "Traceback" not in _drain(listener.err)
    finally:
        listener.stop()


def test_client_type_is_what_limited_broadcasts_go_by(server):
    listener = Listener(server, "--client-type", "web", "--json")
    try:
        listener.wait_subscribed(server)
        server.publish("listen.limited", {"to": "gui"}, channel="jobs", client_types=["gui"])
        server.publish("listen.limited", {"to": "web"}, channel="jobs", client_types=["web"])
        assert json.loads(listener.line())["to"] == "web"
    finally:
        listener.stop()
