"""The browser trust boundary in process (api/browser.py): the Host allow-list, the Origin
check, CORS and its preflight, fetch metadata, the order of the checks, and ProxyFix.

Each refusal is tried with a request that would otherwise succeed (a valid JSON body, an
existing resource), so a check that stopped working fails its test."""

from __future__ import annotations

import pytest
from flask import request

from local_bridge import create_app, state_of
from local_bridge.api.browser import HostAllowList, origin_allowed, split_host
from local_bridge.api.envelope import api_error
from local_bridge.config import ConfigError, load_settings
from support import error, ok

APP = "http://127.0.0.1:9000"  # a web app's origin, listed in ALLOWED_ORIGINS below
EVIL = "http://evil.example"
SESSION = {"name": "Wedding", "import_folder": "/in"}


@pytest.fixture
def make_app(tmp_path):
    """Applications on SQLite with particular settings; each is closed after the test."""
    apps = []

    def build(**settings):
        app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/t{len(apps)}.db", **settings})
        apps.append(app)
        return app

    yield build
    for app in apps:
        state_of(app).close()


@pytest.fixture
def app(make_app):
    return make_app(ALLOWED_ORIGINS=APP)


@pytest.fixture
def client(app):
    return app.test_client()


def events_published(app) -> int:
    return state_of(app).bus.events_published


def sessions(client) -> list:
    return ok(client.get("/api/sessions"))["items"]


def websocket_headers(**extra):
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        **extra,
    }


# ---------------------------------------------------------------------------- Host


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:5100", "127.0.0.1", "127.0.0.1:5100", "[::1]", "[::1]:5100",
     "LocalHost:80", "localhost."],
)  # fmt: skip
def test_default_hosts_are_answered(client, host):
    ok(client.get("/api/system/status", headers={"Host": host}))


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:5100", "127.0.0.1.evil.example", "localhost.evil.example",
     "[::1", "[::1]x", "localhost:http", "localhost:99999", "0.0.0.0:5100", "[::2]:5100"],
)  # fmt: skip
def test_other_hosts_are_refused_with_400(client, host):
    error(client.get("/api/system/status", headers={"Host": host}), 400, "bad_request")


def test_a_rebound_page_can_change_nothing(app, client):
    before = events_published(app)
    response = client.post(
        "/api/sessions", json=SESSION, headers={"Host": "evil.example:5100", "Origin": EVIL}
    )
    assert error(response, 400, "bad_request")["message"] == (
        "this server does not answer to that Host"
    )
    assert "Access-Control-Allow-Origin" not in response.headers
    assert sessions(client) == [] and events_published(app) == before


def test_the_host_check_covers_websocket_handshakes_and_sse(client):
    handshake = client.get("/ws", headers=websocket_headers(Host="evil.example"))
    assert "Host" in error(handshake, 400, "bad_request")["message"]
    stream = client.get("/api/events/stream", headers={"Host": "evil.example"})
    error(stream, 400, "bad_request")


def test_the_bind_host_is_answered_too(make_app):
    client = make_app(HOST="192.168.1.5").test_client()
    ok(client.get("/api/system/status", headers={"Host": "192.168.1.5:5100"}))
    ok(client.get("/api/system/status", headers={"Host": "localhost:5100"}))
    error(client.get("/api/system/status", headers={"Host": "192.168.1.6"}), 400, "bad_request")


def test_binding_every_address_without_a_host_list_is_warned_about(make_app, caplog):
    with caplog.at_level("WARNING", logger="local_bridge.api.browser"):
        client = make_app(HOST="0.0.0.0").test_client()
        make_app(HOST="0.0.0.0", ALLOWED_HOSTS="bridge.example")
    assert len([r for r in caplog.records if "ALLOWED_HOSTS" in r.getMessage()]) == 1
    ok(client.get("/api/system/status", headers={"Host": "127.0.0.1:5100"}))
    error(client.get("/api/system/status", headers={"Host": "0.0.0.0:5100"}), 400, "bad_request")


def test_allowed_hosts_replaces_the_default_list(make_app):
    client = make_app(ALLOWED_HOSTS="bridge.example, lan.example:8443").test_client()
    ok(client.get("/api/system/status", headers={"Host": "bridge.example"}))
    ok(client.get("/api/system/status", headers={"Host": "BRIDGE.example:443"}))
    ok(client.get("/api/system/status", headers={"Host": "lan.example:8443"}))
    error(client.get("/api/system/status", headers={"Host": "lan.example"}), 400, "bad_request")
    error(client.get("/api/system/status", headers={"Host": "localhost"}), 400, "bad_request")


def test_a_star_allows_every_host(make_app):
    client = make_app(ALLOWED_HOSTS="*").test_client()
    ok(client.get("/api/system/status", headers={"Host": "anything.example:1"}))


# ---------------------------------------------------------------------------- Origin


def test_a_write_from_another_origin_is_refused_and_changes_nothing(app, client):
    job = ok(client.post("/api/jobs", json={"kind": "analysis"}), 201)
    target = ok(client.post("/api/sessions", json=SESSION), 201)
    before = events_published(app)
    for method, path, body in [
        ("POST", "/api/sessions", SESSION),
        ("POST", f"/api/jobs/{job['id']}/cancel", {}),
        ("POST", "/api/websocket/broadcast", {"type": "x.y", "data": {}}),
        ("PATCH", f"/api/sessions/{target['id']}", {"name": "renamed"}),
    ]:
        response = client.open(path, method=method, json=body, headers={"Origin": EVIL})
        error(response, 403, "forbidden")
        assert "Access-Control-Allow-Origin" not in response.headers
    assert events_published(app) == before
    assert ok(client.get(f"/api/jobs/{job['id']}"))["status"] == "queued"
    assert [s["name"] for s in sessions(client)] == ["Wedding"]


@pytest.mark.parametrize(
    "origin",
    ["null", "http://localhost:8080", "https://localhost", "http://127.0.0.1:9001",
     "http://127.0.0.1:9000.evil.example", "http://localhost:x"],
)  # fmt: skip
def test_refused_origins(client, origin):
    response = client.post("/api/sessions", json=SESSION, headers={"Origin": origin})
    error(response, 403, "forbidden")
    assert sessions(client) == []


@pytest.mark.parametrize("origin", [APP, APP.upper(), "http://localhost", "http://localhost:80"])
def test_listed_and_same_host_origins_may_write(client, origin):
    ok(client.post("/api/sessions", json=SESSION, headers={"Origin": origin}), 201)


def test_requests_without_origin_are_not_browsers_and_pass(client):
    ok(client.post("/api/sessions", json=SESSION), 201)


def test_a_star_allows_every_origin_but_null(make_app):
    client = make_app(ALLOWED_ORIGINS="*").test_client()
    ok(client.post("/api/sessions", json=SESSION, headers={"Origin": EVIL}), 201)
    error(client.post("/api/sessions", json=SESSION, headers={"Origin": "null"}), 403, "forbidden")


def test_reads_from_another_origin_are_answered_without_cors_headers(client):
    response = ok_response(client.get("/api/system/status", headers={"Origin": EVIL}))
    assert not [h for h in response.headers.keys() if h.startswith("Access-Control-")]


def test_sse_and_websocket_handshakes_need_an_allowed_origin(client):
    error(client.get("/api/events/stream", headers={"Origin": EVIL}), 403, "forbidden")
    error(client.get("/api/events/stream", headers={"Origin": "null"}), 403, "forbidden")
    error(client.get("/ws", headers=websocket_headers(Origin=EVIL)), 403, "forbidden")
    error(client.get("/ws/jobs/1", headers=websocket_headers(Origin=EVIL)), 403, "forbidden")
    stream = client.get("/api/events/stream", headers={"Origin": APP}, buffered=False)
    try:
        assert stream.status_code == 200
        assert stream.headers["Access-Control-Allow-Origin"] == APP
    finally:
        stream.close()


# ---------------------------------------------------------------------------- CORS


def preflight(client, path="/api/sessions", origin=APP, method="POST", headers="content-type"):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


def test_a_preflight_from_an_allowed_origin_is_answered(client):
    response = preflight(client, headers="content-type, authorization")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert {"content-type", "authorization"} <= {h.strip() for h in allowed.split(",")}
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "PATCH" in response.headers["Access-Control-Allow-Methods"]
    assert int(response.headers["Access-Control-Max-Age"]) > 0


def test_a_preflight_for_sse_allows_last_event_id(client):
    response = preflight(client, "/api/events/stream", method="GET", headers="last-event-id")
    assert response.headers["Access-Control-Allow-Headers"].lower() == "last-event-id"


def test_a_preflight_from_another_origin_gets_no_cors_headers(client):
    for origin in (EVIL, "null", "http://localhost"):
        response = preflight(client, origin=origin)
        error(response, 403, "forbidden")
        assert not [h for h in response.headers.keys() if h.startswith("Access-Control-")]


def test_without_allowed_origins_nothing_is_answered_with_cors(make_app):
    client = make_app().test_client()
    error(preflight(client), 403, "forbidden")
    response = client.get("/api/system/status", headers={"Origin": APP})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_answers_to_an_allowed_origin_carry_cors_headers_errors_included(client):
    for response in (
        client.get("/api/system/status", headers={"Origin": APP}),
        client.post("/api/sessions", json=SESSION, headers={"Origin": APP}),
        client.post("/api/sessions", json={}, headers={"Origin": APP}),  # 422
        client.get("/api/sessions/nope", headers={"Origin": APP}),  # 404
    ):
        assert response.headers["Access-Control-Allow-Origin"] == APP, response.status_code
        assert "Origin" in response.headers.get("Vary", "")
    assert "Access-Control-Allow-Origin" not in client.get("/api/system/status").headers


def test_preflights_pass_the_checks_that_come_after(make_app):
    app = make_app(ALLOWED_ORIGINS=APP)

    @app.before_request
    def require_token():  # what an authentication hook does: no token, 401
        if "Authorization" not in request.headers:
            return api_error(401, "unauthorized", "a token is required")
        return None

    client = app.test_client()
    response = preflight(client, headers="content-type, authorization")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP
    refused = client.post("/api/sessions", json=SESSION, headers={"Origin": APP})
    error(refused, 401, "unauthorized")  # readable by the web app: it carries CORS headers
    assert refused.headers["Access-Control-Allow-Origin"] == APP


def test_a_star_echoes_the_origin_but_never_null(make_app):
    client = make_app(ALLOWED_ORIGINS="*").test_client()
    assert preflight(client, origin=EVIL).headers["Access-Control-Allow-Origin"] == EVIL
    response = client.get("/api/system/status", headers={"Origin": "null"})
    assert "Access-Control-Allow-Origin" not in response.headers
    error(preflight(client, origin="null"), 403, "forbidden")


# ---------------------------------------------------------------------------- order


def test_host_and_origin_come_before_the_rate_limit(make_app):
    app = make_app(ALLOWED_ORIGINS=APP, HTTP_RATE=1)
    client = app.test_client()
    for _ in range(3):
        error(client.get("/api/system/status", headers={"Host": "evil"}), 400, "bad_request")
        error(client.post("/api/sessions", json={}, headers={"Origin": EVIL}), 403, "forbidden")
        assert preflight(client).status_code == 200  # preflights are not counted either
    ok(client.get("/api/system/status"))
    error(client.get("/api/system/status"), 429, "rate_limited")


def test_the_origin_check_comes_before_the_body_check(client):
    form = client.post("/api/sessions", data={"name": "x"}, headers={"Origin": EVIL})
    error(form, 403, "forbidden")
    text = client.post(
        "/api/sessions", data="{}", content_type="text/plain", headers={"Origin": EVIL}
    )
    error(text, 403, "forbidden")


# ---------------------------------------------------------------------------- fetch metadata


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_another_sites_page_cannot_embed_api_answers(client, site):
    headers = {"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "script"}
    error(client.get("/api/sessions", headers=headers), 403, "forbidden")
    error(client.get("/api/events?wait=30", headers=headers), 403, "forbidden")


@pytest.mark.parametrize(
    "site, mode",
    [("cross-site", "navigate"), ("cross-site", "cors"), ("same-origin", "no-cors"),
     ("none", "navigate")],
)  # fmt: skip
def test_links_cors_reads_and_own_pages_are_answered(client, site, mode):
    ok(client.get("/api/system/status", headers={"Sec-Fetch-Site": site, "Sec-Fetch-Mode": mode}))


# ---------------------------------------------------------------------------- proxies


@pytest.fixture
def echo(make_app):
    """A factory of test clients for an application with a route that shows what a view sees."""

    def build(**settings):
        app = make_app(**settings)

        @app.route("/echo")
        def echo_view():
            return {"remote_addr": request.remote_addr, "host": request.host,
                    "scheme": request.scheme}  # fmt: skip

        return app.test_client()

    return build


PROXY = {"REMOTE_ADDR": "10.0.0.2"}  # the proxy's own address, as the server sees it


def test_without_trusted_proxies_forwarded_headers_are_ignored(echo):
    client = echo()
    seen = ok(
        client.get(
            "/echo",
            environ_base=PROXY,
            headers={
                "X-Forwarded-For": "203.0.113.9",
                "X-Forwarded-Host": "evil.example",
                "X-Forwarded-Proto": "https",
            },
        )  # fmt: skip
    )
    assert seen == {"remote_addr": "10.0.0.2", "host": "localhost", "scheme": "http"}


def test_a_trusted_proxy_gives_the_client_address_host_and_scheme(echo):
    client = echo(TRUSTED_PROXIES=1, ALLOWED_HOSTS="bridge.example")
    forwarded = {
        "X-Forwarded-For": "198.51.100.1, 203.0.113.9",  # the first one the client wrote
        "X-Forwarded-Host": "bridge.example",
        "X-Forwarded-Proto": "https",
    }
    seen = ok(client.get("/echo", environ_base=PROXY, headers=forwarded))
    assert seen == {"remote_addr": "203.0.113.9", "host": "bridge.example", "scheme": "https"}
    # the same-host rule compares with the forwarded host and scheme (https: port 443)
    headers = {**forwarded, "Origin": "https://bridge.example"}
    ok(client.post("/api/sessions", json=SESSION, environ_base=PROXY, headers=headers), 201)
    headers["Origin"] = "http://bridge.example"
    error(
        client.post("/api/sessions", json=SESSION, environ_base=PROXY, headers=headers),
        403,
        "forbidden",
    )


def test_the_host_allow_list_applies_to_the_forwarded_host(echo):
    client = echo(TRUSTED_PROXIES=1)
    headers = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "evil.example"}
    error(client.get("/echo", environ_base=PROXY, headers=headers), 400, "bad_request")
    headers["X-Forwarded-Host"] = "localhost:5100"
    ok(client.get("/echo", environ_base=PROXY, headers=headers))


def test_two_trusted_proxies_take_the_second_address_from_the_right(echo):
    client = echo(TRUSTED_PROXIES=2)
    headers = {"X-Forwarded-For": "192.0.2.66, 203.0.113.9, 10.0.0.1"}
    assert ok(client.get("/echo", environ_base=PROXY, headers=headers))["remote_addr"] == (
        "203.0.113.9"
    )


def test_the_http_rate_limit_counts_the_forwarded_client(make_app):
    client = make_app(TRUSTED_PROXIES=1, HTTP_RATE=1).test_client()

    def get(address):
        return client.get(
            "/api/system/status", environ_base=PROXY, headers={"X-Forwarded-For": address}
        )

    ok(get("203.0.113.1"))
    error(get("203.0.113.1"), 429, "rate_limited")
    ok(get("203.0.113.2"))  # another client behind the same proxy has its own budget


# ---------------------------------------------------------------------------- units and config


def test_split_host():
    assert split_host("LOCALHOST:5100") == ("localhost", 5100)
    assert split_host("[::1]:5100") == ("::1", 5100)
    assert split_host("[::1]") == ("::1", None)
    assert split_host("::1") == ("::1", None)
    assert split_host("example.com.") == ("example.com", None)
    for bad in ("", ":5100", "[::1", "[::1]5100", "a:b", "a:70000"):
        assert split_host(bad) == (None, None), bad


def test_host_allow_list():
    hosts = HostAllowList(("localhost", "::1", "lan.example:8443"))
    assert hosts.allows("localhost:1") and hosts.allows("[::1]:5100")
    assert hosts.allows("lan.example:8443") and not hosts.allows("lan.example:8444")
    assert not hosts.allows("lan.example") and not hosts.allows("")
    assert HostAllowList(("*",)).allows("whatever")


def test_origin_allowed():
    assert origin_allowed(None, "evil", ())
    assert origin_allowed("http://127.0.0.1:5100", "127.0.0.1:5100", ())
    assert origin_allowed("https://bridge.example", "bridge.example", (), "https")
    assert not origin_allowed("https://bridge.example", "bridge.example", (), "http")
    assert origin_allowed("http://[::1]:5100", "[::1]:5100", ())
    assert not origin_allowed("null", "localhost", ("*",))
    assert origin_allowed("http://a.example", "localhost", ("http://A.example",))
    assert not origin_allowed("http://a.example.evil", "localhost", ("http://a.example",))


@pytest.mark.parametrize(
    "settings",
    [{"TRUSTED_PROXIES": -1}, {"TRUSTED_PROXIES": 11}, {"TRUSTED_PROXIES": "one"},
     {"ALLOWED_ORIGINS": "http://app.example/"}, {"ALLOWED_ORIGINS": "null"},
     {"ALLOWED_ORIGINS": "app.example"}, {"ALLOWED_HOSTS": "http://bridge.example"},
     {"ALLOWED_HOSTS": "bridge.example/x"}],
)  # fmt: skip
def test_malformed_settings_are_refused_at_start(settings):
    with pytest.raises(ConfigError):
        load_settings(settings, environ={})


def test_settings_from_the_environment():
    settings = load_settings(
        environ={
            "LOCAL_BRIDGE_ALLOWED_HOSTS": "bridge.example, [::1]:5100",
            "LOCAL_BRIDGE_ALLOWED_ORIGINS": "https://app.example,http://[::1]:8080",
            "LOCAL_BRIDGE_TRUSTED_PROXIES": "2",
        }
    )
    assert settings.ALLOWED_HOSTS == ("bridge.example", "[::1]:5100")
    assert settings.ALLOWED_ORIGINS == ("https://app.example", "http://[::1]:8080")
    assert settings.TRUSTED_PROXIES == 2


def test_an_ipv6_origin_is_matched_literally_by_cors(make_app):
    client = make_app(ALLOWED_ORIGINS="http://[::1]:8080").test_client()
    assert preflight(client, origin="http://[::1]:8080").status_code == 200
    # read as a regular expression, "[::1]" would match "1"
    error(preflight(client, origin="http://1:8080"), 403, "forbidden")


def ok_response(response, status: int = 200):
    assert response.status_code == status, response.data
    return response


def test_with_token_auth_preflights_pass_and_refusals_are_readable(make_app):
    client = make_app(ALLOWED_ORIGINS=APP, AUTH="token", SECRET_KEY="s" * 40).test_client()
    response = preflight(client, headers="content-type, authorization")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP
    refused = client.post("/api/sessions", json=SESSION, headers={"Origin": APP})
    error(refused, 401, "unauthorized")
    assert refused.headers["Access-Control-Allow-Origin"] == APP
    # another origin is refused before the token is even looked at
    error(client.post("/api/sessions", json=SESSION, headers={"Origin": EVIL}), 403, "forbidden")
