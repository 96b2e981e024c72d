"""A token's reach over the HTTP event feeds: which channels, which client type; and what
happens when revocation cannot be checked."""

from __future__ import annotations

import pytest

from local_bridge import state_of
from local_bridge.api.envelope import ApiError
from local_bridge.auth.revocation import MemoryRevocations, RevocationUnavailable
from local_bridge.auth.scope import channels_for, client_type_for
from local_bridge.auth.tokens import Claims
from support import error, ok


def claims(channels=None, client_type=None) -> Claims:
    return Claims("s", "client", 0, client_type, channels)


def test_requested_channels_must_all_be_allowed():
    assert channels_for(claims(("jobs:*",)), ["jobs:1", "jobs:2"]) == ["jobs:1", "jobs:2"]
    with pytest.raises(ApiError) as refused:
        channels_for(claims(("jobs:*",)), ["jobs:1", "photos"])
    assert refused.value.status == 403 and "photos" in refused.value.message


def test_without_a_request_the_token_names_the_channels():
    assert channels_for(claims(), None) is None  # no patterns: every main channel
    assert channels_for(claims(("jobs", "sessions:12", "photos:*")), None) == [
        "jobs",
        "sessions:12",
    ]
    assert channels_for(claims(("*",)), None) == sorted(
        ["approval", "export", "jobs", "photos", "queue", "sessions", "system"]
    )
    with pytest.raises(ApiError):
        channels_for(claims(("jobs:*",)), None)


def test_the_token_client_type_is_the_feed_s():
    assert client_type_for(claims(), None) is None
    assert client_type_for(claims(), "web") == "web"
    assert client_type_for(claims(client_type="gui"), None) == "gui"
    assert client_type_for(claims(client_type="gui"), "gui") == "gui"
    with pytest.raises(ApiError):
        client_type_for(claims(client_type="gui"), "web")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_polling_within_the_token(auth_client, token):
    mine = bearer(token(channels=["sessions:*"], client_type="gui"))
    error(auth_client.get("/api/events", headers=mine), 403, "forbidden")  # names no channel
    error(
        auth_client.get("/api/events?channels=sessions:1&client_type=web", headers=mine),
        403,
        "forbidden",
    )
    ok(auth_client.get("/api/events?channels=sessions:1&client_type=gui", headers=mine))
    session = ok(
        auth_client.post("/api/sessions", json={"name": "n", "import_folder": "/"}, headers=mine),
        201,
    )
    polled = ok(auth_client.get(f"/api/events?channels=sessions:{session['id']}", headers=mine))
    assert [e["type"] for e in polled["items"]] == ["session_created"]


class Unreachable(MemoryRevocations):
    def is_revoked(self, jti: str) -> bool:
        raise RevocationUnavailable("cannot check revocations: Redis is down")

    def revoke(self, jti: str, ttl: float) -> None:
        raise RevocationUnavailable("cannot record the revocation: Redis is down")


def test_without_its_revocation_store_the_server_answers_503(auth_app, auth_client, token):
    state_of(auth_app).auth.revocations = Unreachable()
    admin = bearer(token("admin"))
    error(auth_client.get("/api/jobs", headers=admin), 503, "unavailable")
    untraceable = bearer(token("admin", jti=None))  # nothing to check: served
    ok(auth_client.get("/api/jobs", headers=untraceable))
    error(
        auth_client.post("/api/auth/revoke", json={"jti": "x"}, headers=untraceable),
        503,
        "unavailable",
    )


def test_a_websocket_whose_revocation_cannot_be_checked_is_told_to_retry(auth_app, token):
    authenticator = state_of(auth_app).auth
    authenticator.revocations = Unreachable()
    refused = authenticator.connection(token())
    assert refused.refused and refused.refused_code == 1011
    assert authenticator.connection("bad").refused_code == 4001
    assert authenticator.connection(None).pending
