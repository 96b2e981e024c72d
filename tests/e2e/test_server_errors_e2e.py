"""Requests the HTTP server refuses before the application sees them still get the JSON
error envelope of API.md, with either worker class."""

from __future__ import annotations

import json
import socket

import pytest

from support import RECV_TIMEOUT

#: Raw requests gunicorn refuses itself, and the status each must get.
BAD_REQUESTS = {
    "request line over 4 KiB": (
        b"GET /api/system/status?pad=" + b"x" * 5120 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
        414,
    ),
    "malformed request line": (b"GET\r\nHost: localhost\r\n\r\n", 400),
    "malformed header": (
        b"GET /api/system/status HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n",
        400,
    ),
    "too many headers": (
        b"GET /api/system/status HTTP/1.1\r\nHost: localhost\r\n"
        + b"".join(b"X-Pad-%d: 1\r\n" % i for i in range(120))
        + b"\r\n",
        431,
    ),
    "header over 8 KiB": (
        b"GET /api/system/status HTTP/1.1\r\nHost: localhost\r\n"
        b"X-Pad: " + b"y" * 9000 + b"\r\n\r\n",
        431,
    ),
}


def exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection; return all the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=RECV_TIMEOUT) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)  # nothing more: the server must not wait for the rest
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


@pytest.fixture(scope="module", params=["gevent", "gthread"])
def any_worker_server(request):
    from support import ServerProcess

    process = ServerProcess({"WORKER_CLASS": request.param}).start()
    yield process
    process.stop()


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_requests_the_http_server_refuses_answer_the_json_envelope(any_worker_server, case):
    request, status = BAD_REQUESTS[case]
    answered, headers, body = parse(exchange(any_worker_server.port, request))
    assert answered == status, body
    assert headers["content-type"] == "application/json", headers
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request" and error["message"], error
    assert len(error["message"]) <= 200
    # the server is still serving
    assert any_worker_server.get("/api/system/health").status_code == 200
