"""Token authentication against the real server (PROTOCOL.md section 6 and its 1.1 additions):
both WebSocket paths, SSE and polling, expiry, refresh and revocation."""

from __future__ import annotations

import json
import signal
import time

import pytest
import requests
import websocket

from local_bridge.auth.tokens import mint
from support import RECV_TIMEOUT, BusClient, ServerProcess, error, ok

SECRET = "e2e-auth-" + "0123456789abcdef" * 4
AUTH_TIMEOUT = 1.0  # the server's deadline for `authenticate` (10 s by default)


class AuthServer(ServerProcess):
    """The real server with authentication on; :meth:`publish` as an administrator."""

    def publish(self, type_, data, channel=None, client_types=None):
        body = {"type": type_, "data": data, **({"channel": channel} if channel else {})}
        admin = bearer(token("admin")[0])
        response = self.post("/api/websocket/broadcast", json=body, headers=admin)
        assert response.status_code == 202, response.text
        return response.json()


@pytest.fixture(scope="module")
def server():
    process = AuthServer(
        {"AUTH": "token", "SECRET_KEY": SECRET, "AUTH_TIMEOUT": AUTH_TIMEOUT}
    ).start()
    yield process
    process.stop()


def token(role="client", ttl=60.0, **claims):
    return mint(SECRET, sub=claims.pop("sub", f"{role}-e2e"), role=role, ttl=ttl, **claims)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


class Socket:
    """A raw bus or job-stream connection: the test reads every frame, close frames included."""

    def __init__(self, server, path="/ws", token_=None):
        url = f"ws://127.0.0.1:{server.port}{path}"
        if token_ is not None:
            url += f"?token={token_}"
        self.client = BusClient.__new__(BusClient)  # support's helpers without its greeting
        self.client.ws = websocket.create_connection(url, timeout=RECV_TIMEOUT)

    def __getattr__(self, name):
        return getattr(self.client, name)


def closed_with(sock: Socket, timeout: float = RECV_TIMEOUT) -> tuple[int, list[dict]]:
    """The close code, and the messages that came before it."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        opcode, data = sock.recv_frame(max(0.01, deadline - time.monotonic()))
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big"), seen
        seen.append(json.loads(data))


def connected(server, value: str) -> BusClient:
    client = BusClient(f"{server.ws_url}?token={value}")
    assert client.connected["auth"] == "token"
    return client


# --------------------------------------------------------------------------- the bus


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        mint(SECRET, sub="x", role="client", ttl=60, now=time.time() - 120)[0],  # expired
        mint("z" * 64, sub="x", role="admin", ttl=60)[0],  # signed with another key
        "",
    ],
    ids=["malformed", "expired", "wrong-signature", "empty"],
)
def test_a_bad_token_in_the_url_is_closed_4001_after_the_handshake(server, bad):
    code, before = closed_with(Socket(server, token_=bad))
    assert code == 4001 and before == []


def test_without_a_token_only_authenticate_is_answered_until_the_deadline(server):
    sock = Socket(server)
    hello = sock.recv()
    assert hello["type"] == "connected" and hello["auth"] == "token"
    sock.send({"type": "subscribe", "channels": ["jobs"]})
    refused = sock.recv()
    assert refused["type"] == "error" and refused["code"] == "unauthorized"
    assert refused["request_type"] == "subscribe"
    server.publish("job_cancelled", {"job_id": "j"}, channel="jobs")
    server.publish("test.everyone", {})  # a broadcast to every client: not to this one
    started = time.monotonic()
    code, before = closed_with(sock, timeout=AUTH_TIMEOUT + 3)
    assert code == 4001 and before == []
    assert time.monotonic() - started < AUTH_TIMEOUT + 2


def test_authenticate_then_the_connection_works(server):
    sock = Socket(server)
    assert sock.recv()["type"] == "connected"
    value, claims = token("client", sub="browser-1", channels=["jobs"])
    reply = sock.request({"type": "authenticate", "token": value}, "authenticated")
    assert reply["sub"] == "browser-1" and reply["role"] == "client"
    assert reply["expires_at"] == claims.expires_at
    assert sock.subscribe("jobs")["channels"] == ["jobs"]
    seq = server.publish("job_cancelled", {"job_id": "j1"}, channel="jobs")["seq"]
    assert sock.recv()["seq"] == seq
    again = sock.request({"type": "authenticate", "token": value}, "error")
    assert again["code"] == "invalid_message"
    sock.close()


def test_authenticate_with_a_bad_token_closes_4001(server):
    sock = Socket(server)
    sock.recv()
    sock.send({"type": "authenticate", "token": "nope"})
    assert closed_with(sock)[0] == 4001


def test_register_as_another_client_type_closes_4003(server):
    client = connected(server, token("client", client_type="gui")[0])
    assert client.register("gui")["client_type"] == "gui"
    client.send({"type": "register", "client_type": "web", "client_name": "impostor"})
    assert client.close_code() == 4003


def test_a_channel_outside_the_patterns_is_refused_and_the_rest_applied(server):
    client = connected(server, token("client", channels=["jobs:*", "system"])[0])
    client.send({"type": "subscribe", "channels": ["jobs:7", "photos", "system"]})
    refused = client.recv()
    assert refused["type"] == "error" and refused["code"] == "forbidden"
    assert "photos" in refused["message"] and "jobs:7" not in refused["message"]
    assert client.recv()["channels"] == ["jobs:7", "system"]
    # a request naming only refused channels: the error, then the subscriptions unchanged
    assert client.request({"type": "subscribe", "channels": ["jobs"]}, "error")["code"] == (
        "forbidden"
    )
    assert client.recv()["channels"] == ["jobs:7", "system"]
    assert client.request({"type": "ping"}, "pong")  # still open


def test_the_connection_closes_4001_when_the_token_expires(server):
    value, claims = token("client", ttl=2)
    client = connected(server, value)
    client.subscribe("jobs")
    code = client.close_code(timeout=5)
    assert code == 4001
    assert time.time() >= claims.exp - 0.05


def test_refresh_moves_the_expiry_and_drops_what_the_new_patterns_refuse(server):
    old, old_claims = token("client", ttl=2, channels=["jobs", "system"])
    client = connected(server, old)
    client.subscribe("jobs", "system")
    wrong_sub = client.request(
        {"type": "refresh", "token": token("client", sub="someone-else")[0]}, "error"
    )
    assert wrong_sub["code"] == "forbidden"
    wrong_role = client.request(
        {"type": "refresh", "token": token("admin", sub="client-e2e")[0]}, "error"
    )
    assert wrong_role["code"] == "forbidden"
    bad = client.request({"type": "refresh", "token": "bad"}, "error")
    assert bad["code"] == "unauthorized"
    new, new_claims = token("client", ttl=60, channels=["jobs"])
    reply = client.request({"type": "refresh", "token": new}, "refreshed")
    assert reply["expires_at"] == new_claims.expires_at and reply["dropped"] == ["system"]
    # past the old expiry the connection is still served, on the new patterns
    time.sleep(max(0.0, old_claims.exp - time.time()) + 0.3)
    server.publish("system_status", {"status": "ok"}, channel="system")
    seq = server.publish("job_cancelled", {"job_id": "r"}, channel="jobs")["seq"]
    assert client.recv()["seq"] == seq  # the system event was not delivered
    assert client.request({"type": "ping"}, "pong")


def test_revoke_closes_the_connections_and_refuses_the_token(server):
    value, claims = token("client")
    first, second = connected(server, value), connected(server, value)
    first.subscribe("jobs")
    sse = requests.get(
        f"{server.http}/api/events/stream", headers=bearer(value), stream=True, timeout=10
    )
    assert sse.status_code == 200
    answer = server.post(
        "/api/auth/revoke", json={"jti": claims.jti}, headers=bearer(token("admin")[0])
    )
    assert ok(answer) == {"jti": claims.jti, "revoked": True}
    assert first.close_code() == 4001 and second.close_code() == 4001
    lines = list(sse.iter_lines(decode_unicode=True))  # the stream ends
    assert lines[0].startswith("retry:")
    assert closed_with(Socket(server, token_=value))[0] == 4001
    error(server.get("/api/jobs", headers=bearer(value)), 401, "unauthorized")


def test_the_clients_list_shows_who_is_connected(server):
    client = connected(server, token("worker", sub="worker-7")[0])
    client.register("worker", "w7")
    listed = ok(server.get("/api/websocket/clients?limit=500", headers=bearer(token("admin")[0])))
    mine = [c for c in listed["items"] if c["client_id"] == client.client_id]
    assert mine and mine[0]["sub"] == "worker-7" and mine[0]["role"] == "worker"


# --------------------------------------------------------------------------- the job stream


@pytest.fixture
def job(server):
    return ok(server.post("/api/jobs", json={"kind": "analysis"}, headers=bearer(token()[0])), 201)


def test_the_job_stream_needs_a_token(server, job):
    path = f"/ws/jobs/{job['id']}"
    assert closed_with(Socket(server, path, token_="bad"))[0] == 4001
    sock = Socket(server, path)  # no token: `authenticate` within the deadline, or 4001
    assert closed_with(sock, timeout=AUTH_TIMEOUT + 3) == (4001, [])


def test_the_job_stream_needs_the_jobs_channel(server, job):
    other = token("client", channels=["jobs:someone-else"])[0]
    code, before = closed_with(Socket(server, f"/ws/jobs/{job['id']}", token_=other))
    assert code == 4003 and before[0]["code"] == "forbidden"
    allowed = token("client", channels=["jobs:*"])[0]
    sock = Socket(server, f"/ws/jobs/{job['id']}", token_=allowed)
    assert sock.recv()["type"] == "job_status"
    sock.close()


def test_the_job_stream_takes_authenticate(server, job):
    sock = Socket(server, f"/ws/jobs/{job['id']}")
    value = token("client", channels=[f"jobs:{job['id']}"])[0]
    sock.send({"type": "ping"})
    assert sock.recv()["code"] == "unauthorized"
    assert sock.request({"type": "authenticate", "token": value}, "authenticated")
    status = sock.recv()
    assert status["type"] == "job_status" and status["job_id"] == job["id"]
    sock.close()


# --------------------------------------------------------------------------- SSE and polling


def test_sse_and_polling_need_a_token(server):
    error(server.get("/api/events/stream"), 401, "unauthorized")
    error(server.get("/api/events"), 401, "unauthorized")
    error(server.get("/api/events?token=bad"), 401, "unauthorized")


def test_feeds_follow_only_the_channels_the_token_allows(server):
    value = token("client", channels=["jobs"])[0]
    error(server.get("/api/events?channels=photos", headers=bearer(value)), 403, "forbidden")
    error(server.get(f"/api/events/stream?channels=jobs,photos&token={value}"), 403, "forbidden")
    since = ok(server.get("/api/events", headers=bearer(value)))["seq"]
    server.publish("photo_rejected", {"photo_id": "p", "reason": "x"}, channel="photos")
    seq = server.publish("job_cancelled", {"job_id": "f"}, channel="jobs")["seq"]
    polled = ok(server.get(f"/api/events?since={since}", headers=bearer(value)))
    assert [e["seq"] for e in polled["items"]] == [seq]


def test_sse_takes_the_token_in_the_query_and_ends_at_expiry(server):
    value, claims = token("client", ttl=2, channels=["jobs"])
    response = requests.get(
        f"{server.http}/api/events/stream?token={value}", stream=True, timeout=10
    )
    assert response.status_code == 200
    seq = server.publish("job_cancelled", {"job_id": "s"}, channel="jobs")["seq"]
    data = [
        json.loads(line[6:])
        for line in response.iter_lines(decode_unicode=True)
        if line.startswith("data: ")
    ]  # iter_lines ends with the stream
    assert data[0]["seq"] == seq
    assert data[-1]["type"] == "error" and data[-1]["code"] == "unauthorized"
    assert time.time() >= claims.exp - 0.05


# --------------------------------------------------------------------------- HTTP


def test_http_roles_on_the_real_server(server):
    error(server.get("/api/jobs"), 401, "unauthorized")
    ok(server.get("/api/system/health"))
    ok(server.get("/api/system/live"))
    client, worker = bearer(token("client")[0]), bearer(token("worker")[0])
    error(server.post("/api/jobs/claim", json={"worker": "w"}, headers=client), 403, "forbidden")
    assert server.post("/api/jobs/claim", json={"worker": "w"}, headers=worker).status_code in (
        200,
        204,
    )
    error(
        server.post("/api/websocket/broadcast", json={"type": "x.y", "data": {}}, headers=worker),
        403,
        "forbidden",
    )


def test_a_connection_awaiting_authenticate_is_closed_1001_at_shutdown():
    own = AuthServer({"AUTH": "token", "SECRET_KEY": SECRET, "AUTH_TIMEOUT": 60}).start()
    try:
        sock = Socket(own)
        assert sock.recv()["type"] == "connected"
        listed = ok(own.get("/api/websocket/clients", headers=bearer(token("admin")[0])))
        assert [c["client_type"] for c in listed["items"]] == ["unknown"]  # counted, listed
        own.signal(signal.SIGTERM)
        assert closed_with(sock, timeout=10) == (1001, [])
        assert own.wait(15) == 0
    finally:
        own.stop()


def test_a_job_stream_refreshed_away_from_its_job_closes_4003(server, job):
    sock = Socket(server, f"/ws/jobs/{job['id']}", token_=token("client", ttl=30)[0])
    assert sock.recv()["type"] == "job_status"
    longer = token("client", ttl=120)[0]
    assert sock.request({"type": "refresh", "token": longer}, "refreshed")["dropped"] == []
    elsewhere = token("client", channels=["jobs:other"])[0]
    reply = sock.request({"type": "refresh", "token": elsewhere}, "refreshed")
    assert reply["dropped"] == [f"jobs:{job['id']}"]
    assert closed_with(sock)[0] == 4003
