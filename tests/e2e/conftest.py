"""End-to-end tier: the real server on a free loopback port, and clients connected to it.
Every test under this folder is marked ``e2e`` (``pytest -m "not e2e"`` leaves them out)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pg import FreshDatabase
from support import ServerProcess, Watcher

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    # the hook sees the whole session's items: mark only this folder's
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def server():
    """One server with default settings for the whole run."""
    process = ServerProcess().start()
    yield process
    process.stop()


@pytest.fixture
def make_server():
    """Start servers with particular settings; each is stopped after the test."""
    started: list[ServerProcess] = []

    def start(**settings) -> ServerProcess:
        process = ServerProcess(settings).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def connect(server):
    """Open bus clients on the shared server; all are closed after the test."""
    clients = []

    def open_client(**kwargs):
        client = server.client(**kwargs)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture(scope="module")
def postgres_url():
    """A fresh, migrated PostgreSQL database for one test module."""
    database = FreshDatabase()
    env = {"LOCAL_BRIDGE_DATABASE_URL": database.url, "PATH": ""}
    subprocess.run(
        [sys.executable, "-m", "local_bridge.cli", "db", "upgrade"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    yield database.url
    database.drop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def workflow_server(request):
    """The server on SQLite, then on PostgreSQL: the workflow behaves the same on both."""
    settings = {"PROGRESS_RATE": 5}
    if request.param == "postgres":
        settings["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    process = ServerProcess(settings).start()
    yield process
    process.stop()


@pytest.fixture
def http(workflow_server):
    """What the shared workflow fixtures (tests/conftest.py) talk to: the real server."""
    return workflow_server


@pytest.fixture
def watcher(workflow_server):
    """A client subscribed to every channel of the workflow server."""
    client = Watcher(workflow_server)
    yield client
    client.close()
