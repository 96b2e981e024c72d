"""In-process fixtures of the REST tests: the test client as ``http`` (for the shared session and
photo fixtures of tests/conftest.py), a photo pending approval, and what the bus published."""

from __future__ import annotations

import pytest

from inprocess import Published
from support import ok


@pytest.fixture
def published(app):
    """What each action published: ``published.after(action)``."""
    return Published(app)


@pytest.fixture
def http(client):
    """What the shared workflow fixtures (tests/conftest.py) talk to: Flask's test client."""
    return client


@pytest.fixture
def pending_photo(client, photo):
    """``photo``, analysed: pending approval."""
    ok(
        client.post(
            f"/api/photos/{photo['id']}/analysis",
            json={"ai_score": 0.9, "analysis_results": {"faces": 2}},
        )
    )
    return ok(client.get(f"/api/photos/{photo['id']}"))
