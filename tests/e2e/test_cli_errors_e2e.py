"""Every client command of ``local-bridge`` fails in one plain line, never a traceback: the
server down, something else on the port, a token missing, bad or too weak, invalid input."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from local_bridge.auth.tokens import mint
from support import ServerProcess, free_port

SECRET = "cli-errors-" + "0123456789abcdef" * 4

COMMANDS = {
    "listen": ("listen",),
    "publish": ("publish", "job_progress", "job_id=j", "progress=5"),
    "watch-job": ("watch-job", "1"),
    "demo": ("demo", "--pace", "0"),
    "token revoke": ("token", "revoke", "some-jti"),
}


def _run(args: tuple[str, ...], port: int, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "local_bridge.cli", *args, "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**base, **env},
    )


def _all(names, port: int, env: dict[str, str] | None = None) -> dict[str, str]:
    """Run the commands side by side; each must fail (status 1) with one line: its text."""
    with ThreadPoolExecutor(len(names)) as pool:
        results = dict(
            zip(names, pool.map(lambda n: _run(COMMANDS[n], port, env or {}), names), strict=True)
        )
    for name, result in results.items():
        assert result.returncode == 1, (name, result.returncode, result.stderr)
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, (
            name,
            result.stderr,
        )
        assert "Traceback" not in result.stderr, name
        if name != "demo":  # the demo prints each step it got through
            assert result.stdout == "", name
    return {name: result.stderr for name, result in results.items()}


@pytest.fixture
def web_page() -> Iterator[int]:
    """A port where a web server that is not local_bridge answers 404 pages."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>Not Found</body></html>"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def not_http() -> Iterator[int]:
    """A port where a service that does not speak HTTP greets, reads, and hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                peer, _ = listener.accept()
            except OSError:
                return
            with peer:
                peer.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
                peer.settimeout(5)
                try:
                    peer.recv(65536)  # the request, refused after reading (no broken pipe)
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture(scope="module")
def auth_server() -> Iterator[ServerProcess]:
    server = ServerProcess({"AUTH": "token", "SECRET_KEY": SECRET}).start()
    yield server
    server.stop()


def test_server_down():
    port = free_port()
    said = _all(list(COMMANDS), port, {"LOCAL_BRIDGE_SECRET_KEY": SECRET})
    for name, text in said.items():
        assert "cannot reach local_bridge at " in text and str(port) in text, name
        assert text.rstrip().endswith("connection refused"), name


def test_a_web_server_that_is_not_local_bridge(web_page):
    said = _all(list(COMMANDS), web_page, {"LOCAL_BRIDGE_SECRET_KEY": SECRET})
    for name in ("publish", "demo", "token revoke"):
        assert "is it a local_bridge server?" in said[name], said[name]
    for name in ("listen", "watch-job"):
        assert "HTTP 404" in said[name], said[name]
    assert "not a local_bridge bus" in said["listen"], said["listen"]


def test_a_service_that_does_not_speak_http(not_http):
    said = _all(list(COMMANDS), not_http, {"LOCAL_BRIDGE_SECRET_KEY": SECRET})
    for name in ("publish", "demo", "token revoke"):
        assert "the answer is not HTTP" in said[name], said[name]


def test_no_token(auth_server):
    said = _all(["listen", "publish", "watch-job", "demo"], auth_server.port)
    assert "requires a token" in said["listen"]
    for name in ("publish", "watch-job", "demo"):
        assert said[name].startswith("Error: HTTP 401 unauthorized: "), said[name]
        assert "LOCAL_BRIDGE_SECRET_KEY" in said[name]


def test_a_bad_token(auth_server):
    forged = mint("another-" + SECRET, sub="x", role="admin", ttl=60)[0]
    said = _all(list(COMMANDS), auth_server.port, {"LOCAL_BRIDGE_TOKEN": forged})
    for name in ("listen", "watch-job"):
        assert "refused the token (close code 4001)" in said[name], said[name]
    for name in ("publish", "demo", "token revoke"):
        assert said[name].startswith("Error: HTTP 401 unauthorized: "), said[name]


def test_a_token_without_the_role(auth_server):
    weak = mint(SECRET, sub="c", role="client", ttl=60)[0]
    said = _all(["publish", "demo", "token revoke"], auth_server.port, {"LOCAL_BRIDGE_TOKEN": weak})
    for text in said.values():
        assert text.startswith("Error: HTTP 403 forbidden: "), text


def test_validation_errors_name_their_fields(auth_server):
    env = {"LOCAL_BRIDGE_SECRET_KEY": SECRET}
    result = _run(("publish", "Not-A-Type", "x=1"), auth_server.port, env)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("Error: HTTP 422 validation_error: ")
    assert "(type: " in result.stderr
    unknown = _run(("publish", "custom.note", "x=1", "--channel", "nowhere"), auth_server.port, env)
    assert unknown.returncode == 1 and "(channel: unknown channel 'nowhere')" in unknown.stderr


@pytest.mark.parametrize(
    "option, value, hint",
    [
        ("--channel", "nowhere", "unknown channel 'nowhere'"),
        ("--client-type", "BAD TYPE", "must match"),
    ],
)
def test_listen_refuses_what_the_server_would_refuse_before_connecting(option, value, hint):
    # No server: the check comes first, where a refusal by the server would leave it silent.
    result = _run(("listen", option, value), free_port(), {})
    assert result.returncode == 2, result.stderr
    assert hint in result.stderr and "Traceback" not in result.stderr
