"""Two server processes on one SQLite file, claiming jobs at once, never share a job."""

from __future__ import annotations

import threading

import requests

from support import ServerProcess


def test_two_server_processes_claiming_over_http(tmp_path):
    """Two real servers on one SQLite file, each with its own workers."""
    url = f"sqlite:///{tmp_path}/shared.db"
    servers = [ServerProcess({"DATABASE_URL": url}).start() for _ in range(2)]
    try:
        for i in range(40):
            assert servers[i % 2].post("/api/jobs", json={"kind": "k"}).status_code == 201
        claimed: list[str] = []
        lock = threading.Lock()

        def work(server: ServerProcess, name: str) -> None:
            session = requests.Session()
            while True:
                response = session.post(
                    server.http + "/api/jobs/claim", json={"worker": name}, timeout=30
                )
                if response.status_code == 204:
                    return
                assert response.status_code == 200, response.text
                with lock:
                    claimed.append(response.json()["id"])

        threads = [threading.Thread(target=work, args=(servers[i % 2], f"w{i}")) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert len(claimed) == 40 and len(set(claimed)) == 40
    finally:
        for server in servers:
            server.stop()
