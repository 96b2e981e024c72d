"""`local-bridge token create / revoke`, `listen` and `publish` with a token, and `serve
--insecure`, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import requests
import websocket

from local_bridge.auth.tokens import mint, verify
from support import ServerProcess, free_port

SECRET = "e2e-cli-" + "0123456789abcdef" * 4


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30):
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "local_bridge.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
    )


@pytest.fixture(scope="module")
def server():
    process = ServerProcess({"AUTH": "token", "SECRET_KEY": SECRET}).start()
    yield process
    process.stop()


def test_token_create_prints_a_token_and_its_claims():
    env = {"LOCAL_BRIDGE_SECRET_KEY": SECRET}
    plain = cli("token", "create", "--role", "admin", "--ttl", "1h", env=env)
    assert plain.returncode == 0, plain.stderr
    claims = verify(plain.stdout.strip(), SECRET)
    assert claims.role == "admin" and 3590 < claims.exp - time.time() <= 3600
    described = cli(
        "token",
        "create",
        "--role",
        "client",
        "--ttl",
        "30m",
        "--client-type",
        "web",
        "--channel",
        "jobs:*",
        "--channel",
        "sessions:12",
        "--sub",
        "browser",
        "--json",
        env=env,
    )
    assert described.returncode == 0, described.stderr
    printed = json.loads(described.stdout)
    assert verify(printed["token"], SECRET).as_dict() == printed["claims"]
    assert printed["claims"]["channels"] == ["jobs:*", "sessions:12"]
    assert printed["claims"]["client_type"] == "web" and printed["claims"]["sub"] == "browser"


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--role", "admin"], {}, "LOCAL_BRIDGE_SECRET_KEY is not set"),
        (["--role", "admin", "--ttl", "1y"], {"LOCAL_BRIDGE_SECRET_KEY": SECRET}, "duration"),
        (["--role", "root"], {"LOCAL_BRIDGE_SECRET_KEY": SECRET}, "root"),
        (
            ["--role", "client", "--client-type", "Web!"],
            {"LOCAL_BRIDGE_SECRET_KEY": SECRET},
            "client_type",
        ),
    ],
)
def test_token_create_errors_are_one_clear_line(args, env, says):
    result = cli("token", "create", *args, env=env)
    assert result.returncode == 2 and says in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_token_revoke_closes_the_connections_and_needs_an_admin(server):
    value, claims = mint(SECRET, sub="victim", role="client", ttl=300)
    ws = websocket.create_connection(f"{server.ws_url}?token={value}", timeout=10)
    assert json.loads(ws.recv())["type"] == "connected"
    port = ["--port", str(server.port)]
    weak = cli(
        "token",
        "revoke",
        claims.jti,
        *port,
        "--token",
        mint(SECRET, sub="c", role="client", ttl=60)[0],
    )
    assert weak.returncode == 1 and "HTTP 403 forbidden" in weak.stderr
    nothing = cli("token", "revoke", claims.jti, *port)
    assert nothing.returncode == 2 and "admin token" in nothing.stderr
    done = cli("token", "revoke", claims.jti, *port, env={"LOCAL_BRIDGE_SECRET_KEY": SECRET})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"jti": claims.jti, "revoked": True}
    ws.settimeout(10)
    opcode, frame = ws.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(frame.data[:2], "big") == 4001
    assert (
        requests.get(
            f"{server.http}/api/jobs", headers={"Authorization": f"Bearer {value}"}, timeout=10
        ).status_code
        == 401
    )


def test_listen_and_publish_send_their_token(server):
    env = {"LOCAL_BRIDGE_PORT": str(server.port)}
    listener = subprocess.Popen(
        [sys.executable, "-m", "local_bridge.cli", "listen", "--channel", "jobs", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            **env,
            "LOCAL_BRIDGE_TOKEN": mint(SECRET, sub="l", role="client", ttl=60, channels=["jobs"])[
                0
            ],
        },
    )
    try:
        admin = {"Authorization": f"Bearer {mint(SECRET, sub='t', role='admin', ttl=60)[0]}"}
        deadline = time.monotonic() + 30
        while True:  # the listener's interpreter starts, connects and subscribes
            clients = requests.get(
                f"{server.http}/api/websocket/clients?limit=500", headers=admin, timeout=10
            ).json()["items"]
            if any(c.get("sub") == "l" and c["channels"] == ["jobs"] for c in clients):
                break
            assert listener.poll() is None, listener.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        refused = cli("publish", "job_cancelled", "job_id=z", env=env)
        assert refused.returncode == 1 and "HTTP 401 unauthorized" in refused.stderr
        published = cli(
            "publish", "job_cancelled", "job_id=z", env={**env, "LOCAL_BRIDGE_SECRET_KEY": SECRET}
        )
        assert published.returncode == 0, published.stderr
        line = json.loads(listener.stdout.readline())
        assert line["type"] == "job_cancelled" and line["job_id"] == "z"
    finally:
        listener.terminate()
        listener.wait(10)


def test_listen_without_a_token_says_so(server):
    result = cli("listen", "--port", str(server.port))
    assert result.returncode == 1 and "requires a token" in result.stderr


def test_serve_binds_a_public_address_only_when_told_insecure():
    port = free_port()
    refused = cli("serve", "--host", "0.0.0.0", "--port", str(port))
    assert refused.returncode == 2 and "--insecure" in refused.stderr
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local_bridge.cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--insecure",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")},
            "LOCAL_BRIDGE_DATABASE_URL": "sqlite://",
        },
    )
    try:
        deadline = time.monotonic() + 20
        while True:  # polling for readiness: the server has no other way to tell
            assert process.poll() is None, "serve --insecure exited"
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/system/live", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "serve --insecure never answered"
            time.sleep(0.05)
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=10)
        assert json.loads(ws.recv())["auth"] == "none"  # a client knows it needs no token
        ws.close()
    finally:
        process.terminate()
        process.wait(15)
