"""The tokens the command line signs for itself from LOCAL_BRIDGE_SECRET_KEY."""

from __future__ import annotations

import time

from local_bridge.auth.cli import CLI_TOKEN_TTL, CONNECTED_TOKEN_TTL, token_for
from local_bridge.auth.tokens import verify

SECRET = "s" * 32


def test_a_one_request_token_lives_a_minute_and_a_connected_one_a_day(monkeypatch):
    monkeypatch.setenv("LOCAL_BRIDGE_SECRET_KEY", SECRET)
    monkeypatch.delenv("LOCAL_BRIDGE_TOKEN", raising=False)
    now = time.time()
    short = verify(token_for(None, "admin"), SECRET)
    long = verify(token_for(None, "client", ttl=CONNECTED_TOKEN_TTL), SECRET)
    assert abs(short.exp - now - CLI_TOKEN_TTL) <= 2
    assert abs(long.exp - now - CONNECTED_TOKEN_TTL) <= 2


def test_an_explicit_token_is_sent_as_given(monkeypatch):
    monkeypatch.setenv("LOCAL_BRIDGE_SECRET_KEY", SECRET)
    assert token_for("given", "client", ttl=CONNECTED_TOKEN_TTL) == "given"
