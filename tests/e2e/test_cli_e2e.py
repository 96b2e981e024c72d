"""`local-bridge listen` and `local-bridge publish` against the real server."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

from support import ServerProcess, free_port, has_ipv6_loopback


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "local_bridge.cli", *args]


def _lines(process: subprocess.Popen) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout], daemon=True
    ).start()
    return lines


def _listen_and_publish(server: ServerProcess, *address: str) -> None:
    """``listen`` follows jobs; ``publish`` sends one job_progress; the listener prints it."""
    listener = subprocess.Popen(
        _cli(
            "listen",
            *address,
            "--channel",
            "jobs",
            "--client-type",
            "web",
            "--client-name",
            "cli-test",
            "--json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # A fresh interpreter importing the package and connecting: slow on a loaded machine.
        deadline = time.monotonic() + 30
        while True:
            clients = server.get("/api/websocket/clients?limit=500").json()["items"]
            if any(c["client_name"] == "cli-test" and c["channels"] == ["jobs"] for c in clients):
                break
            assert listener.poll() is None, (
                f"the listener exited with {listener.returncode}: {listener.stderr.read()}"
            )
            assert time.monotonic() < deadline, f"the listener never subscribed: {clients}"
            time.sleep(0.05)
        published = subprocess.run(
            _cli(
                "publish",
                "job_progress",
                "job_id=cli-1",
                "progress=50",
                "stage=analyzing",
                *address,
            ),
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert published.returncode == 0, published.stderr
        assert published.stdout.count("\n") == 1, f"not one line: {published.stdout!r}"
        seq = json.loads(published.stdout)["seq"]
        event = json.loads(_lines(listener).get(timeout=10))
        assert (
            event["type"],
            event["seq"],
            event["job_id"],
            event["progress"],
            event["stage"],
        ) == ("job_progress", seq, "cli-1", 50, "analyzing")
    finally:
        listener.terminate()
        listener.wait(10)


def test_listen_prints_what_publish_sends(server: ServerProcess):
    _listen_and_publish(server, "--port", str(server.port))


class IPv6Server(ServerProcess):
    """The server bound to ``::1``."""

    @property
    def http(self) -> str:
        return f"http://[::1]:{self.port}"


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_listen_and_publish_over_ipv6():
    server = IPv6Server({"HOST": "::1"}).start()
    try:
        _listen_and_publish(server, "--host", "::1", "--port", str(server.port))
    finally:
        server.stop()


def test_publish_reports_validation_errors(server: ServerProcess):
    result = subprocess.run(
        _cli("publish", "job_progress", "job_id=j", "progress=500", "--port", str(server.port)),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: HTTP 422 validation_error: ")
    assert "(data.progress: " in result.stderr and result.stderr.count("\n") == 1
    assert '{"error"' not in result.stderr


@pytest.mark.parametrize(
    "command, url",
    [
        (("publish", "job_progress", "job_id=j"), "http://127.0.0.1:{port}"),
        (("listen",), "ws://127.0.0.1:{port}/ws"),
    ],
)
def test_an_unreachable_server_is_one_plain_line(command, url):
    port = free_port()  # nothing listens there
    result = subprocess.run(
        _cli(*command, "--port", str(port)), capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 1
    assert (
        result.stderr
        == f"Error: cannot reach local_bridge at {url.format(port=port)}: connection refused\n"
    )


def test_a_bad_setting_is_a_usage_error():
    result = subprocess.run(
        _cli("publish", "job_progress", "job_id=j"),
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "LOCAL_BRIDGE_PORT": "http"},
    )
    assert result.returncode == 2
    assert "LOCAL_BRIDGE_PORT" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_a_public_bind_without_auth():
    result = subprocess.run(
        _cli("serve", "--host", "0.0.0.0", "--port", "5999"),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode != 0
    assert "loopback" in result.stderr


def test_serve_takes_every_setting_as_a_flag_and_the_flag_wins():
    server = ServerProcess(
        {"ALLOWED_HOSTS": "127.0.0.1"}, args=("--allowed-hosts", "127.0.0.1,photos.example")
    ).start()
    try:
        named = server.get("/api/system/live", headers={"Host": f"photos.example:{server.port}"})
        other = server.get("/api/system/live", headers={"Host": f"other.example:{server.port}"})
    finally:
        server.stop()
    assert named.status_code == 200
    assert other.status_code == 400


def test_a_bad_setting_flag_is_a_usage_error():
    result = subprocess.run(
        _cli("serve", "--max-queue", "many", "--port", str(free_port())),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "LOCAL_BRIDGE_MAX_QUEUE" in result.stderr and "Traceback" not in result.stderr


def test_the_secret_key_has_no_flag():
    """A flag's value is visible to every user in the process list."""
    result = subprocess.run(
        _cli("serve", "--secret-key", "s3cret"), capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 2
    assert "No such option" in result.stderr
