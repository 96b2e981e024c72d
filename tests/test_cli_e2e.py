"""`local-bridge listen` and `local-bridge publish` against the real server."""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time

from support import ServerProcess


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "local_bridge.cli", *args]


def _lines(process: subprocess.Popen) -> "queue.Queue[str]":
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    return lines


def test_listen_prints_what_publish_sends(server: ServerProcess):
    listener = subprocess.Popen(_cli("listen", "--port", str(server.port), "--channel", "jobs",
                                     "--client-type", "web", "--client-name", "cli-test"),
                                stdout=subprocess.PIPE, text=True)
    try:
        # A fresh interpreter importing the package and connecting: slow on a loaded machine.
        deadline = time.monotonic() + 30
        while True:
            clients = server.get("/api/websocket/clients?limit=500").json()["items"]
            if any(c["client_name"] == "cli-test" and c["channels"] == ["jobs"] for c in clients):
                break
            assert listener.poll() is None, f"the listener exited with {listener.returncode}"
            assert time.monotonic() < deadline, f"the listener never subscribed: {clients}"
            time.sleep(0.05)
        published = subprocess.run(_cli("publish", "job_progress", "job_id=cli-1", "progress=50",
                                         "stage=analyzing", "--port", str(server.port)),
                                    capture_output=True, text=True, timeout=20)
        assert published.returncode == 0, published.stderr
        seq = json.loads(published.stdout)["seq"]
        event = json.loads(_lines(listener).get(timeout=10))
        assert (event["type"], event["seq"], event["job_id"], event["progress"], event["stage"]) == \
            ("job_progress", seq, "cli-1", 50, "analyzing")
    finally:
        listener.terminate()
        listener.wait(10)


def test_publish_reports_validation_errors(server: ServerProcess):
    result = subprocess.run(_cli("publish", "job_progress", "job_id=j", "progress=500",
                                 "--port", str(server.port)), capture_output=True, text=True, timeout=20)
    assert result.returncode != 0
    assert "data.progress" in result.stderr


def test_serve_refuses_a_public_bind_without_auth():
    result = subprocess.run(_cli("serve", "--host", "0.0.0.0", "--port", "5999"),
                            capture_output=True, text=True, timeout=20)
    assert result.returncode != 0
    assert "loopback" in result.stderr
