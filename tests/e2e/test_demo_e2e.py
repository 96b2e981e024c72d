"""``local-bridge demo`` against the real server: a client following every channel sees every
event type of the catalog, with authentication off and on."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from local_bridge import demo
from local_bridge.auth.tokens import mint
from local_bridge.catalog import CATALOG
from support import ALL_CHANNELS, BusClient, ServerProcess

SECRET = "demo-e2e-" + "0123456789abcdef" * 4


def _demo(port: int, *args: str, env: dict[str, str] | None = None, timeout: float = 90):
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "local_bridge.cli", "demo", "--port", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
    )


def _until_demo_finished(feed: BusClient) -> list[dict[str, Any]]:
    return feed.until(
        lambda m: m["type"] == "system_status" and m.get("status") == "demo_finished", timeout=30
    )


def _check_run(result: subprocess.CompletedProcess[str], events: list[dict[str, Any]]) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[ 1] local_bridge ") and "completed" in lines[-2]
    missing = sorted(set(CATALOG) - {e["type"] for e in events})
    assert missing == [], f"never published: {missing}"
    failed = next(e for e in events if e["type"] == "job_failed")
    assert failed["retryable"] is True and failed["stage"] == "analyzing"
    progress = [e for e in events if e["type"] == "job_progress"]
    assert {e["stage"] for e in progress} >= {"loading", "analyzing", "rendering", "saving"}
    assert all(e["counters"]["files_processed"] > 0 for e in progress)
    sources = {e["source"] for e in events if e["type"] == "photo_imported"}
    assert sources == {"web", "android_app", "lightroom", "gui", "browser_addon"}


def test_the_demo_shows_every_event_type(server: ServerProcess):
    # A job an interrupted earlier run left queued: run too, without upsetting this run.
    leftover = server.post("/api/jobs", json={"kind": demo.JOB_KIND}).json()
    feed = server.client()
    try:
        feed.subscribe(*ALL_CHANNELS)
        result = _demo(server.port, "--pace", "0.01")
        events = _until_demo_finished(feed)
    finally:
        feed.close()
    _check_run(result, events)
    assert server.get(f"/api/jobs/{leftover['id']}").json()["status"] == "completed"


def test_the_demo_with_authentication_on():
    server = ServerProcess({"AUTH": "token", "SECRET_KEY": SECRET}).start()
    try:
        refused = _demo(server.port, "--pace", "0")
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert refused.stderr.startswith("Error: HTTP 401 unauthorized: ")
        assert "LOCAL_BRIDGE_SECRET_KEY" in refused.stderr and "Traceback" not in refused.stderr

        admin = mint(SECRET, sub="watcher", role="admin", ttl=120)[0]
        feed = BusClient(f"{server.ws_url}?token={admin}")
        try:
            feed.subscribe(*ALL_CHANNELS)
            result = _demo(server.port, "--pace", "0.01", env={"LOCAL_BRIDGE_SECRET_KEY": SECRET})
            events = _until_demo_finished(feed)
        finally:
            feed.close()
        _check_run(result, events)
    finally:
        server.stop()
