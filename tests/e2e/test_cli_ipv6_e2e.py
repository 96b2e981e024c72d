"""Every client command of ``local-bridge`` with ``--host ::1`` against ``local-bridge serve
--host ::1`` (authentication on, so the commands mint and send their tokens too)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from local_bridge.auth.tokens import mint
from local_bridge.client import RestClient
from support import ServerProcess, has_ipv6_loopback

SECRET = "cli-ipv6-" + "0123456789abcdef" * 4


pytestmark = pytest.mark.skipif(
    not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)"
)


class IPv6Server(ServerProcess):
    """``serve --host ::1``; readiness is polled on ::1 too."""

    @property
    def http(self) -> str:
        return f"http://[::1]:{self.port}"


@pytest.fixture(scope="module")
def server() -> Iterator[IPv6Server]:
    process = IPv6Server({"AUTH": "token", "SECRET_KEY": SECRET}, args=("--host", "::1")).start()
    yield process
    process.stop()


def _cli(server: IPv6Server, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "local_bridge.cli",
        *args,
        "--host",
        "::1",
        "--port",
        str(server.port),
    ]


def _env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")}
    return {**base, "LOCAL_BRIDGE_SECRET_KEY": SECRET}


def _run(server: IPv6Server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _cli(server, *args), capture_output=True, text=True, timeout=60, env=_env()
    )


def test_demo_watch_job_and_token_revoke(server):
    demo = _run(server, "demo", "--pace", "0")
    assert demo.returncode == 0, demo.stderr
    assert f"at http://[::1]:{server.port}" in demo.stdout.splitlines()[0]

    token = mint(SECRET, sub="t", role="admin", ttl=60)[0]
    with RestClient(server.http, token=token) as admin:  # an idle kept-alive one holds serve
        completed = next(j for j in admin.list_jobs("completed")["items"])
    watched = _run(server, "watch-job", completed["id"])
    assert watched.returncode == 0, watched.stderr  # 0: the job completed

    _, claims = mint(SECRET, sub="revoked", role="client", ttl=60)
    revoked = _run(server, "token", "revoke", claims.jti)
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout) == {"jti": claims.jti, "revoked": True}


def test_listen_prints_what_publish_sends(server):
    listener = subprocess.Popen(
        _cli(server, "listen", "--json", "--channel", "system", "--client-name", "v6-listener"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    closing: list[RestClient] = []
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in listener.stdout], daemon=True
    ).start()
    try:
        admin = RestClient(server.http, token=mint(SECRET, sub="t", role="admin", ttl=60)[0])
        closing.append(admin)
        # The listener's interpreter starts, connects and subscribes: watch the clients list
        # (each call waits a little on the server side, so this is no busy loop).
        for _ in range(300):
            if any(c["client_name"] == "v6-listener" for c in admin.clients()["items"]):
                break
            assert listener.poll() is None, listener.stderr.read()
            admin.events(since=admin.status()["seq"], wait=0.1)
        else:
            pytest.fail("the listener never connected")
        published = _run(server, "publish", "system_status", "status=v6")
        assert published.returncode == 0, published.stderr
        seq = json.loads(published.stdout)["seq"]
        while True:
            event = json.loads(lines.get(timeout=20))
            if event.get("seq") == seq:
                break
        assert (event["type"], event["status"]) == ("system_status", "v6")
    finally:
        listener.terminate()
        listener.wait(10)
        for client in closing:
            client.close()  # an idle kept-alive connection would hold the server's stop
