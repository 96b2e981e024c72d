"""In-process fixtures of the authentication tests: an application with LOCAL_BRIDGE_AUTH=token
and tokens of each role for it."""

from __future__ import annotations

import pytest

from local_bridge import create_app, state_of
from local_bridge.auth.tokens import mint

SECRET = "auth-tests-" + "0123456789abcdef" * 4


@pytest.fixture
def auth_app(tmp_path):
    application = create_app(
        {"DATABASE_URL": f"sqlite:///{tmp_path}/auth.db", "AUTH": "token", "SECRET_KEY": SECRET}
    )
    yield application
    state_of(application).close()


@pytest.fixture
def auth_client(auth_app):
    return auth_app.test_client()


@pytest.fixture
def token():
    """``token(role, **claims)``: a fresh token for the test application."""

    def make(role: str = "client", ttl: float = 60, **claims) -> str:
        return mint(SECRET, sub=f"{role}-tester", role=role, ttl=ttl, **claims)[0]

    return make


@pytest.fixture
def secret():
    """The test application's LOCAL_BRIDGE_SECRET_KEY."""
    return SECRET
