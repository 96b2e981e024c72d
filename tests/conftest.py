"""Fixtures of the in-process tier: the application on SQLite and PostgreSQL, and Flask's test
client for it (no server process: these tests run in seconds)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from local_bridge import create_app, migrate, state_of
from pg import FreshDatabase
from support import ok


@pytest.fixture(scope="module")
def migrated_postgres():
    """A fresh PostgreSQL database, migrated, for one test module (skips without
    LOCAL_BRIDGE_TEST_POSTGRES_URL, fails under CI)."""
    database = FreshDatabase()
    engine = create_engine(database.url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    yield database.url
    database.drop()


@pytest.fixture(params=["sqlite", "postgres"])
def app(request, tmp_path):
    """The application on a fresh SQLite file, then on the module's PostgreSQL database (shared
    by the module's tests, as one server's database would be)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/t.db"
    else:
        url = request.getfixturevalue("migrated_postgres")
    application = create_app({"DATABASE_URL": url, "PROGRESS_RATE": 5})
    yield application
    state_of(application).close()


@pytest.fixture
def client(app):
    """Flask's test client for :func:`app`."""
    return app.test_client()


# The workflow fixtures shared by both tiers: each tier's conftest says what ``http`` is (Flask's
# test client in process, the real server end to end); both answer ``post``/``get``.


@pytest.fixture
def session(http):
    """An import session."""
    return ok(http.post("/api/sessions", json={"name": "Wedding", "import_folder": "/in"}), 201)


@pytest.fixture
def photo(http, session):
    """A photo imported into ``session``."""
    return ok(
        http.post(
            f"/api/sessions/{session['id']}/photos",
            json={"file_name": "a.jpg", "file_path": "/in/a.jpg", "source": "lightroom"},
        ),
        201,
    )
