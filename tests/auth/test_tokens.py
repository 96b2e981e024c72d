"""Tokens: what is minted verifies, and every kind of bad token is refused with its reason."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from local_bridge.auth.tokens import (
    MAX_TOKEN_TTL,
    Claims,
    TokenError,
    mint,
    parse_ttl,
    verify,
)

SECRET = "test-secret-" + "0123456789abcdef" * 4


def signed(payload: dict, secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=algorithm)


def good(**changes) -> dict:
    payload = {"sub": "alice", "role": "client", "exp": int(time.time()) + 60}
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def test_a_minted_token_verifies_to_its_claims():
    token, claims = mint(
        SECRET, sub="gui-1", role="worker", ttl=60, client_type="gui", channels=["jobs:*"]
    )
    assert verify(token, SECRET) == claims
    assert claims.sub == "gui-1" and claims.role == "worker" and claims.client_type == "gui"
    assert claims.channels == ("jobs:*",) and len(claims.jti) == 32
    assert claims.expires_at.endswith("Z")
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_jti_none_leaves_it_out():
    token, claims = mint(SECRET, sub="s", role="admin", ttl=60, jti=None)
    assert claims.jti is None and "jti" not in jwt.decode(token, SECRET, algorithms=["HS256"])


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda: None, "no token"),
        (lambda: "", "no token"),
        (lambda: 123, "no token"),
        (lambda: "not-a-token", "malformed"),
        (lambda: "a.b.c", "malformed"),
        (lambda: "x" * 9000, "too long"),
        (lambda: signed(good(exp=int(time.time()) - 1)), "expired"),
        (lambda: signed(good(), secret="another-secret-" + "0123456789abcdef" * 4), "signature"),
        (lambda: _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(good()) + ".", "algorithm"),
        (lambda: signed(good(), algorithm="HS512"), "algorithm"),
        (lambda: signed(good(), algorithm="HS384"), "algorithm"),
        (lambda: signed(good(sub=None)), "'sub'"),
        (lambda: signed(good(role=None)), "'role'"),
        (lambda: signed({"sub": "a", "role": "client"}), "'exp'"),
        (lambda: signed(good(role="root")), "role must be one of"),
        (lambda: signed(good(role=["admin"])), "role must be one of"),
        (lambda: signed(good(sub=7)), "'sub'"),
        (lambda: signed(good(exp="soon")), "malformed"),
        (lambda: signed(good(exp=int(time.time()) + MAX_TOKEN_TTL + 3600)), "longer than"),
        (lambda: signed(good(client_type="Not A Type")), "client_type"),
        (lambda: signed(good(channels="jobs")), "channels"),
        (lambda: signed(good(channels=["jobs", 5])), "channels"),
        (lambda: signed(good(channels=["jobs/../x"])), "channels"),
        (lambda: signed(good(jti="")), "jti"),
        (lambda: signed(good(nbf=int(time.time()) + 100)), "not valid yet"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_bad_tokens_are_refused_with_their_reason(make_token, reason):
    token = make_token()  # made now, not at collection: times in it are relative to the test
    with pytest.raises(TokenError, match=reason):
        verify(token, SECRET)


def test_the_reason_never_repeats_the_token():
    token = signed(good(role="root"))
    with pytest.raises(TokenError) as refused:
        verify(token, SECRET)
    assert token not in str(refused.value)


def test_roles_are_ordered():
    admin = Claims("a", "admin", 0)
    worker = Claims("w", "worker", 0)
    client = Claims("c", "client", 0)
    assert admin.has_role("worker") and admin.has_role("client") and admin.has_role("admin")
    assert worker.has_role("worker") and worker.has_role("client")
    assert not worker.has_role("admin")
    assert client.has_role("client") and not client.has_role("worker")


@pytest.mark.parametrize(
    ("patterns", "channel", "allowed"),
    [
        (None, "anything", True),
        (("jobs",), "jobs", True),
        (("jobs",), "jobs:12", False),
        (("jobs:*",), "jobs:12", True),
        (("jobs:*",), "jobs", False),
        (("sessions:12",), "sessions:12", True),
        (("sessions:12",), "sessions:123", False),
        (("sessions:1?",), "sessions:12", True),
        (("*",), "photos:9", True),
        ((), "jobs", False),
        (("JOBS",), "jobs", False),  # case matters, on every platform
    ],
)
def test_channel_patterns_are_shell_globs(patterns, channel, allowed):
    assert Claims("s", "client", 0, channels=patterns).allows(channel) is allowed


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("45s", 45), ("30m", 1800), ("1h", 3600), ("7d", 604800)]
)
def test_ttl(text, seconds):
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "1y", "-5", "0", "31d", "h", "1.5h"])
def test_bad_ttl(text):
    with pytest.raises(ValueError):
        parse_ttl(text)


def test_mint_refuses_bad_claims():
    with pytest.raises(TokenError, match="role"):
        mint(SECRET, sub="s", role="root", ttl=60)
    with pytest.raises(TokenError, match="client_type"):
        mint(SECRET, sub="s", role="client", ttl=60, client_type="Bad")
