"""In-process fixtures of the REST tests: a session and a photo made through the API, and what
the bus published."""

from __future__ import annotations

import pytest

from inprocess import Published
from support import ok


@pytest.fixture
def published(app):
    """What each action published: ``published.after(action)``."""
    return Published(app)


@pytest.fixture
def session(client):
    """An import session."""
    return ok(client.post("/api/sessions", json={"name": "Wedding", "import_folder": "/in"}), 201)


@pytest.fixture
def photo(client, session):
    """A photo imported into ``session``."""
    return ok(
        client.post(
            f"/api/sessions/{session['id']}/photos",
            json={"file_name": "a.jpg", "file_path": "/in/a.jpg", "source": "lightroom"},
        ),
        201,
    )


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
