"""`local-bridge watch-job` against the real server: a line per change, exit status by outcome."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import uuid

from support import ServerProcess, ok

LINE_TIMEOUT = 15


class Watch:
    """``local-bridge watch-job`` in a subprocess, its output lines read as they come."""

    def __init__(self, server: ServerProcess, job_id: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local_bridge.cli", "watch-job", job_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")},
                "LOCAL_BRIDGE_PORT": str(server.port),
            },
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [self.lines.put(line.rstrip("\n")) for line in self.process.stdout],
            daemon=True,
        ).start()

    def line_with(self, text: str) -> str:
        """The next output line containing ``text`` (earlier lines are skipped)."""
        while True:
            line = self.lines.get(timeout=LINE_TIMEOUT)
            if text in line:
                return line

    def exit_status(self) -> int:
        return self.process.wait(LINE_TIMEOUT)


def _job(server: ServerProcess) -> tuple[str, str]:
    kind = f"watch-{uuid.uuid4().hex[:8]}"  # claimed by this test alone on the shared server
    return ok(server.post("/api/jobs", json={"kind": kind}), 201)["id"], kind


def _claim(server: ServerProcess, kind: str) -> None:
    ok(server.post("/api/jobs/claim", json={"worker": "w", "kinds": [kind]}))


def test_a_completed_job_is_followed_to_the_end_and_exits_0(server):
    job_id, kind = _job(server)
    watch = Watch(server, job_id)
    assert "queued" in watch.line_with(f"job {job_id}")
    _claim(server, kind)
    assert "running" in watch.line_with("running")
    progress = {"progress": 45.5, "stage": "analyzing", "counters": {"files_scanned": 12}}
    ok(server.post(f"/api/jobs/{job_id}/progress", json=progress))
    line = watch.line_with("analyzing")
    assert "45.5%" in line and "files_scanned=12" in line
    ok(server.post(f"/api/jobs/{job_id}/complete", json={}))
    assert "100.0%" in watch.line_with("completed")
    assert watch.exit_status() == 0


def test_a_failed_job_exits_3_with_its_error(server):
    job_id, kind = _job(server)
    watch = Watch(server, job_id)
    watch.line_with("queued")
    _claim(server, kind)
    watch.line_with("running")
    ok(server.post(f"/api/jobs/{job_id}/fail", json={"error_message": "disk full"}))
    assert "disk full" in watch.line_with("failed")
    assert watch.exit_status() == 3


def test_a_cancelled_job_exits_4():
    # a server of its own: the queue position shown depends on nothing else being queued
    server = ServerProcess().start()
    try:
        job_id, _ = _job(server)
        watch = Watch(server, job_id)
        assert "(position 1" in watch.line_with("queued")
        ok(server.post(f"/api/jobs/{job_id}/cancel", json={}))
        watch.line_with("cancelled")
        assert watch.exit_status() == 4
    finally:
        server.stop()


def test_a_finished_job_prints_its_outcome_at_once(server):
    job_id, kind = _job(server)
    _claim(server, kind)
    ok(server.post(f"/api/jobs/{job_id}/complete", json={}))
    watch = Watch(server, job_id)
    assert "completed" in watch.line_with(f"job {job_id}")
    assert watch.exit_status() == 0


def test_an_unknown_job_is_one_line_and_exit_1(server):
    watch = Watch(server, "999999")
    assert watch.exit_status() == 1
    assert watch.process.stderr.read() == "Error: job 999999 not found\n"
