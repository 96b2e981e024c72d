"""``local_bridge.client.RestClient`` against small stand-in servers: kept-alive connections,
answers that are not local_bridge's, error texts, and an import that needs no server packages."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from local_bridge.client import ApiError, RestClient

Reply = tuple[int, str, bytes]  # status, content type, body


@pytest.fixture
def stand_in() -> Iterator[Callable[[Callable[[BaseHTTPRequestHandler], Reply], bool], str]]:
    """Start an HTTP/1.1 server answering with ``reply(request)``; ``drop`` closes each
    connection after its answer without saying so (as a server whose keep-alive ran out)."""
    servers: list[ThreadingHTTPServer] = []

    def start(reply: Callable[[BaseHTTPRequestHandler], Reply], drop: bool = False) -> str:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, content_type, body = reply(self)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = drop

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _json(status: int, body: object) -> Reply:
    return status, "application/json", json.dumps(body).encode()


def test_a_connection_is_kept_alive_and_replaced_when_the_server_dropped_it(stand_in):
    peers: list[int] = []

    def reply(request: BaseHTTPRequestHandler) -> Reply:
        peers.append(request.client_address[1])
        return _json(200, {"status": "ok"})

    kept = RestClient(stand_in(reply))
    assert [kept.live() for _ in range(3)] == [{"status": "ok"}] * 3
    assert len(set(peers)) == 1, "one connection for every request"

    peers.clear()
    dropped = RestClient(stand_in(reply, drop=True))
    assert [dropped.live() for _ in range(3)] == [{"status": "ok"}] * 3
    assert len(set(peers)) == 3, "a new connection after each one the server closed"


def test_an_answer_that_is_not_local_bridge(stand_in):
    url = stand_in(lambda request: (200, "text/html", b"<html>hello</html>"))
    with pytest.raises(ApiError) as page:
        RestClient(url).status()
    assert (page.value.status, page.value.code) == (200, "unexpected_response")
    assert "is it a local_bridge server?" in str(page.value) and url in str(page.value)

    url = stand_in(lambda request: (404, "text/plain", b"no such page"))
    with pytest.raises(ApiError) as missing:
        RestClient(url).status()
    assert (missing.value.status, missing.value.code) == (404, "unexpected_response")


def test_an_error_envelope_becomes_one_line():
    error = ApiError(
        422,
        "validation_error",
        "invalid fields\nsee below",
        {"data.progress": ["Must be between 0 and 100."], "kind": ["Missing data."]},
    )
    assert str(error) == (
        "HTTP 422 validation_error: invalid fields see below "
        "(data.progress: Must be between 0 and 100.; kind: Missing data.)"
    )
    assert str(ApiError(404, "not_found", "Job not found")) == "HTTP 404 not_found: Job not found"


def test_claim_answers_none_on_204_and_health_returns_a_degraded_answer(stand_in):
    def reply(request: BaseHTTPRequestHandler) -> Reply:
        if request.path == "/api/jobs/claim":
            return 204, "text/plain", b""
        return _json(503, {"status": "degraded", "checks": {"database": "down"}})

    rest = RestClient(stand_in(reply))
    assert rest.claim_job("w") is None
    assert rest.health() == {"status": "degraded", "checks": {"database": "down"}}


def test_a_path_prefix_and_query_are_kept(stand_in):
    seen: list[str] = []

    def reply(request: BaseHTTPRequestHandler) -> Reply:
        seen.append(request.path)
        return _json(200, {"items": []})

    rest = RestClient(stand_in(reply) + "/bridge/")
    rest.events(since=5, channels=["jobs", "system"], wait=1.5)
    rest.list_jobs(status=None, limit=3)
    assert seen == [
        "/bridge/api/events?since=5&channels=jobs%2Csystem&wait=1.5",
        "/bridge/api/jobs?limit=3",
    ]


def test_not_an_http_url():
    with pytest.raises(ValueError):
        RestClient("ws://127.0.0.1:5100/ws")


def test_the_sdk_imports_without_the_server_packages():
    program = (
        "import sys\n"
        "for name in ('flask', 'sqlalchemy', 'marshmallow', 'requests'):\n"
        "    sys.modules[name] = None  # importing it now raises ImportError\n"
        "from local_bridge.client import RestClient, Worker, ApiError, JobCancelled\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
