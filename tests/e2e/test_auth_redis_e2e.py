"""Revocation across processes: two servers on one Redis; a token revoked through one is
closed (4001) and refused by the other."""

from __future__ import annotations

import json

import pytest
import requests
import websocket

from local_bridge.auth.tokens import mint
from redis_support import drop_prefix, fresh_prefix, redis_url
from support import ServerProcess

SECRET = "e2e-redis-auth-" + "0123456789abcdef" * 4


@pytest.fixture
def pair():
    """Two servers with authentication on, sharing a fresh Redis key space."""
    url, prefix = redis_url(), fresh_prefix()
    settings = {"REDIS_URL": url, "REDIS_PREFIX": prefix, "AUTH": "token", "SECRET_KEY": SECRET}
    servers = [ServerProcess(dict(settings)).start() for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()
    drop_prefix(url, prefix)


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(SECRET, sub=role, role=role, ttl=60)[0]}"}


def close_code(ws: websocket.WebSocket) -> int:
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(frame.data[:2], "big")


def test_a_token_revoked_on_b_is_closed_and_refused_on_a(pair):
    a, b = pair
    value, claims = mint(SECRET, sub="roaming", role="client", ttl=300)
    on_a = websocket.create_connection(f"{a.ws_url}?token={value}", timeout=10)
    assert json.loads(on_a.recv())["type"] == "connected"
    stream = requests.get(f"{a.http}/api/events/stream?token={value}", stream=True, timeout=10)
    assert stream.status_code == 200
    revoked = b.post("/api/auth/revoke", json={"jti": claims.jti}, headers=bearer("admin"))
    assert revoked.status_code == 200, revoked.text
    assert close_code(on_a) == 4001
    assert list(stream.iter_lines())  # the stream ended (after its `retry`)
    assert a.get("/api/jobs", headers={"Authorization": f"Bearer {value}"}).status_code == 401
    again = websocket.create_connection(f"{a.ws_url}?token={value}", timeout=10)
    assert close_code(again) == 4001
    other = mint(SECRET, sub="roaming", role="client", ttl=300)[0]  # another jti: unaffected
    assert a.get("/api/jobs", headers={"Authorization": f"Bearer {other}"}).status_code == 200
