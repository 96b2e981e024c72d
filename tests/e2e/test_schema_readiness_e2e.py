"""An unmigrated PostgreSQL database behind the real server: health is degraded and requests
are 503 naming ``local-bridge db upgrade`` until ``db upgrade`` runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from local_bridge import migrate
from pg import FreshDatabase
from support import ServerProcess, Watcher, error, ok

UPGRADE = "local-bridge db upgrade"
SESSION = {"name": "Wedding", "import_folder": "/photos/wedding"}


@pytest.fixture
def unmigrated_postgres():
    database = FreshDatabase()
    yield database.url
    database.drop()


def test_unmigrated_postgres_answers_503_until_db_upgrade(unmigrated_postgres):
    server = ServerProcess({"DATABASE_URL": unmigrated_postgres}).start()
    watcher = Watcher(server, ["sessions"])
    try:
        health = server.get("/api/system/health")
        assert health.status_code == 503 and UPGRADE in health.json()["checks"]["database"]

        refused, events = watcher.after(lambda: server.post("/api/sessions", json=SESSION))
        assert UPGRADE in error(refused, 503, "unavailable")["message"]
        assert events == []  # nothing written, nothing published
        assert UPGRADE in error(server.get("/api/sessions"), 503, "unavailable")["message"]

        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")}
        env["LOCAL_BRIDGE_DATABASE_URL"] = unmigrated_postgres
        out = subprocess.run(
            [sys.executable, "-m", "local_bridge.cli", "db", "upgrade"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().endswith(f"revision {migrate.head_revision()}")

        assert ok(server.get("/api/system/health"))["status"] == "ok"
        created = ok(server.post("/api/sessions", json=SESSION), 201)
        assert [s["id"] for s in ok(server.get("/api/sessions"))["items"]] == [created["id"]]
    finally:
        watcher.close()
        server.stop()
