"""The endpoint policy: every route has an explicit entry; every class of endpoint refuses a
request without a token (401) and with a weaker role (403); the open ones need nothing."""

from __future__ import annotations

import re
import time

import pytest

from local_bridge.auth import policy
from local_bridge.auth.policy import ADMIN, OPEN, POLICY, TOKEN, WEBSOCKET, WORKER, required
from local_bridge.auth.tokens import mint, verify
from support import error, ok


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _routes(app):
    """(endpoint, method, url) of every route, path parameters filled with a dummy id."""
    for rule in app.url_map.iter_rules():
        url = re.sub(r"<(?:[^:>]+:)?([^>]+)>", "x1", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, url


def test_every_route_has_an_explicit_entry(auth_app):
    missing = sorted({endpoint for endpoint, _, _ in _routes(auth_app)} - set(POLICY))
    assert missing == [], f"add these endpoints to local_bridge/auth/policy.py POLICY: {missing}"


def test_an_endpoint_missing_from_the_table_needs_admin():
    assert required("some_blueprint.new_endpoint") == ADMIN
    assert required("system.health") == OPEN


def test_the_table_says_what_the_contract_says():
    assert {e for e, need in POLICY.items() if need == OPEN} >= {
        "system.health",
        "system.live",
        "metrics",
    }
    assert {e for e, need in POLICY.items() if need == WORKER} == {
        "workflow.claim_job",
        "workflow.report_progress",
        "workflow.complete_job",
        "workflow.fail_job",
    }
    assert {
        "system.publish_system_event",
        "websocket_admin.list_clients",
        "websocket_admin.broadcast",
        "websocket_admin.disconnect",
        "auth.revoke",
    } <= {e for e, need in POLICY.items() if need == ADMIN}


def _call(client, method, url, headers=None):
    kwargs = {"headers": headers or {}}
    if method in ("POST", "PATCH", "PUT", "DELETE"):
        kwargs["json"] = {}
    return client.open(url, method=method, **kwargs)


def _guarded(app, *needs):
    return [
        (endpoint, method, url)
        for endpoint, method, url in _routes(app)
        if POLICY.get(endpoint, ADMIN) in needs
    ]


def test_every_guarded_endpoint_refuses_a_request_without_a_token(auth_app, auth_client):
    routes = _guarded(auth_app, TOKEN, WORKER, ADMIN)
    assert len(routes) >= 30
    for endpoint, method, url in routes:
        response = _call(auth_client, method, url)
        error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), endpoint


@pytest.mark.parametrize(
    "credentials",
    [
        {"Authorization": "Bearer not.a.token"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "Bearer"},
    ],
)
def test_every_guarded_endpoint_refuses_a_bad_token(auth_app, auth_client, credentials):
    for _, method, url in _guarded(auth_app, TOKEN, WORKER, ADMIN):
        error(_call(auth_client, method, url, credentials), 401, "unauthorized")


def test_expired_and_wrongly_signed_tokens_are_refused(auth_client, secret):
    expired = mint(secret, sub="a", role="admin", ttl=60, now=time.time() - 120)[0]
    forged = mint("x" * 64, sub="a", role="admin", ttl=60)[0]
    for bad, reason in ((expired, "expired"), (forged, "signature")):
        body = error(auth_client.get("/api/jobs", headers=bearer(bad)), 401, "unauthorized")
        assert reason in body["message"]


def test_weaker_roles_are_forbidden(auth_app, auth_client, token):
    client_token, worker_token = token("client"), token("worker")
    for _endpoint, method, url in _guarded(auth_app, WORKER):
        response = _call(auth_client, method, url, bearer(client_token))
        error(response, 403, "forbidden")
    for _endpoint, method, url in _guarded(auth_app, ADMIN):
        for weaker in (client_token, worker_token):
            error(_call(auth_client, method, url, bearer(weaker)), 403, "forbidden")


def test_the_right_role_passes_the_check(auth_app, auth_client, token):
    tokens = {TOKEN: token("client"), WORKER: token("worker"), ADMIN: token("admin")}
    for endpoint, method, url in _guarded(auth_app, TOKEN, WORKER, ADMIN):
        if endpoint == "events.stream":
            continue  # an endless response: tests/e2e/test_auth_e2e.py reads it
        need = POLICY.get(endpoint, ADMIN)
        response = _call(auth_client, method, url, bearer(tokens[need]))
        assert response.status_code not in (401, 403), (endpoint, response.get_data(True))
        # a stronger role passes as well
        response = _call(auth_client, method, url, bearer(tokens[ADMIN]))
        assert response.status_code not in (401, 403), (endpoint, response.get_data(True))


def test_open_endpoints_need_no_token(auth_app, auth_client):
    opened = [r for r in _guarded(auth_app, OPEN) if r[0] != "static"]
    assert {endpoint for endpoint, _, _ in opened} >= {"system.health", "system.live"}
    for endpoint, method, url in opened:
        assert _call(auth_client, method, url).status_code not in (401, 403), endpoint


def test_websocket_endpoints_are_left_to_the_handshake(auth_app):
    assert {e for e, need in POLICY.items() if need == WEBSOCKET} == {
        "bus_endpoint",
        "job_stream_endpoint",
    }


def test_a_token_in_the_query_string_is_taken_on_reads_only(auth_client, token):
    admin = token("admin")
    ok(auth_client.get(f"/api/jobs?token={admin}"))
    error(
        auth_client.post(f"/api/sessions?token={admin}", json={"name": "n", "import_folder": "/"}),
        401,
        "unauthorized",
    )
    ok(
        auth_client.post(
            "/api/sessions", json={"name": "n", "import_folder": "/"}, headers=bearer(admin)
        ),
        201,
    )


def test_a_cors_preflight_is_not_asked_for_a_token(auth_client):
    response = auth_client.open("/api/jobs", method="OPTIONS")
    assert response.status_code not in (401, 403)


def test_unknown_paths_stay_404(auth_client):
    error(auth_client.get("/api/nothing-here"), 404, "not_found")


def test_revoke_refuses_the_token_from_then_on(auth_client, token, secret):
    victim = token("client")
    jti = verify(victim, secret).jti
    ok(auth_client.get("/api/jobs", headers=bearer(victim)))
    answer = ok(
        auth_client.post("/api/auth/revoke", json={"jti": jti}, headers=bearer(token("admin")))
    )
    assert answer == {"jti": jti, "revoked": True}
    body = error(auth_client.get("/api/jobs", headers=bearer(victim)), 401, "unauthorized")
    assert "revoked" in body["message"]


def test_revoke_validates_its_body(auth_client, token):
    admin = bearer(token("admin"))
    error(auth_client.post("/api/auth/revoke", json={}, headers=admin), 422, "validation_error")
    error(
        auth_client.post("/api/auth/revoke", json={"jti": "a b"}, headers=admin),
        422,
        "validation_error",
    )


def test_revoke_with_auth_off_is_a_conflict(client):
    error(client.post("/api/auth/revoke", json={"jti": "abc"}), 409, "conflict")


def test_with_auth_off_nothing_asks_for_a_token(client):
    ok(client.get("/api/jobs"))
    assert policy.current_claims is not None  # the module is importable without auth on
