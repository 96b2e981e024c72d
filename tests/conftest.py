"""Fixtures: the real server on a free loopback port, and clients connected to it."""
from __future__ import annotations

import pytest

from support import ServerProcess


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
