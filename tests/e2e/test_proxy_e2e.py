"""Behind a reverse proxy (``LOCAL_BRIDGE_TRUSTED_PROXIES``), against the real server: the
client's address comes from ``X-Forwarded-For`` only when a proxy is trusted, for the
connect-rate limit, the clients list and the access log; the Host allow-list then applies to
``X-Forwarded-Host``.

The test plays the proxy: it sends the headers nginx would add (docs/security.md).
"""

from __future__ import annotations

import pytest
import websocket

from support import BusClient, ServerProcess, error, ok


def connect(server: ServerProcess, origin: str | None = None, **headers: str) -> BusClient:
    """A bus client sending ``headers`` (websocket-client sends its own Origin otherwise)."""
    return BusClient(server.ws_url, header=headers, origin=origin)


def refused_handshake(server: ServerProcess, **headers: str) -> int:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(server, **headers).close()
    return refused.value.status_code


def remote_addrs(server: ServerProcess) -> list[str]:
    return sorted(c["remote_addr"] for c in ok(server.get("/api/websocket/clients"))["items"])


def logged_lines(server: ServerProcess, needle: str) -> list[str]:
    return [line for line in server.log().splitlines() if needle in line]


def test_without_a_trusted_proxy_forwarded_headers_change_nothing(make_server):
    server = make_server(CONNECT_RATE=3)
    clients = [connect(server, **{"X-Forwarded-For": f"203.0.113.{n}"}) for n in range(1, 4)]
    try:
        assert remote_addrs(server) == ["127.0.0.1"] * 3
        # a new spoofed address does not buy a new budget: the limit is on the real address
        assert refused_handshake(server, **{"X-Forwarded-For": "203.0.113.4"}) == 429
    finally:
        for client in clients:
            client.close()
    spoofed = {"X-Forwarded-For": "198.51.100.77", "X-Forwarded-Host": "evil.example"}
    ok(server.get("/api/system/status", headers=spoofed))
    assert "198.51.100.77" not in server.log()
    assert any("127.0.0.1" in line for line in logged_lines(server, "/api/system/status"))


def test_a_trusted_proxy_gives_every_client_its_own_address(make_server):
    server = make_server(CONNECT_RATE=2, TRUSTED_PROXIES=1)
    first, second = "203.0.113.1", "203.0.113.2"
    clients = [connect(server, **{"X-Forwarded-For": first}) for _ in range(2)]
    try:
        assert refused_handshake(server, **{"X-Forwarded-For": first}) == 429
        clients.append(connect(server, **{"X-Forwarded-For": second}))  # its own budget
        # a client cannot pick its address: only the proxy's own (last) entry counts
        spoofing = {"X-Forwarded-For": f"198.51.100.9, {first}"}
        assert refused_handshake(server, **spoofing) == 429
        assert remote_addrs(server) == [first, first, second]
    finally:
        for client in clients:
            client.close()
    ok(server.get("/api/system/status", headers={"X-Forwarded-For": "203.0.113.50"}))
    assert any("/api/system/status" in line for line in logged_lines(server, "203.0.113.50"))


def test_behind_a_proxy_the_host_check_reads_the_forwarded_host(make_server):
    # 127.0.0.1: what the test's readiness probe, like a load balancer's, asks for
    server = make_server(TRUSTED_PROXIES=1, ALLOWED_HOSTS="bridge.example,127.0.0.1")
    via_proxy = {"X-Forwarded-For": "203.0.113.1", "X-Forwarded-Proto": "https"}
    public = {**via_proxy, "X-Forwarded-Host": "bridge.example"}
    ok(server.get("/api/system/status", headers=public))
    # the proxy passed on a Host the operator did not list: a rebinding page, or a typo
    rebound = {**via_proxy, "X-Forwarded-Host": "evil.example"}
    error(server.get("/api/system/status", headers=rebound), 400, "bad_request")
    assert refused_handshake(server, **rebound) == 400
    # the list replaces the default one
    local = {**via_proxy, "X-Forwarded-Host": f"localhost:{server.port}"}
    error(server.get("/api/system/status", headers=local), 400, "bad_request")
    client = connect(server, origin="https://bridge.example", **public)  # same host, https
    try:
        assert remote_addrs(server) == ["203.0.113.1"]
    finally:
        client.close()
    web_app = {**public, "Origin": "https://bridge.example"}
    session = {"name": "via nginx", "import_folder": "/in"}
    ok(server.post("/api/sessions", json=session, headers=web_app), 201)
    web_app["Origin"] = "https://elsewhere.example"
    error(server.post("/api/sessions", json=session, headers=web_app), 403, "forbidden")
