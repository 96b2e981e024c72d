"""A database whose schema is missing or behind: health is degraded, requests are 503 naming
``local-bridge db upgrade``, and ``db upgrade`` says what it did or why it could not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from local_bridge import create_app, migrate, state_of
from local_bridge.cli import main as cli
from local_bridge.db import Database

UPGRADE = "local-bridge db upgrade"
SESSION = {"name": "Wedding", "import_folder": "/photos/wedding"}


def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
    engine.dispose()


@pytest.fixture
def no_migrations(tmp_path, monkeypatch):
    """An installation that ships the Alembic environment but no revision script."""
    folder = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    for script in (folder / "versions").glob("0*.py"):
        script.unlink()
    monkeypatch.setattr(migrate, "MIGRATIONS", str(folder))
    migrate.head_revision.cache_clear()
    yield
    migrate.head_revision.cache_clear()


# ------------------------------------------------------------------ Database.check()


def test_check_names_db_upgrade_when_the_schema_is_missing(tmp_path):
    database = Database(f"sqlite:///{tmp_path}/empty.db")
    try:
        verdict = database.check()
        assert verdict != "ok" and UPGRADE in verdict
        migrate.upgrade(database.engine)
        assert database.check() == "ok"
    finally:
        database.close()


def test_check_is_not_ok_when_the_schema_is_behind(tmp_path):
    url = f"sqlite:///{tmp_path}/behind.db"
    database = Database(url)
    try:
        migrate.upgrade(database.engine)
        _execute(url, "UPDATE alembic_version SET version_num = '0000'")
        verdict = database.check()
        assert verdict != "ok" and "0000" in verdict and UPGRADE in verdict
    finally:
        database.close()


def test_check_is_not_ok_when_no_migration_is_shipped(tmp_path, no_migrations):
    database = Database(f"sqlite:///{tmp_path}/bare.db")
    try:
        verdict = database.check()
        assert verdict != "ok" and "no schema migrations" in verdict
        with pytest.raises(migrate.MigrationError):
            migrate.upgrade(database.engine)
    finally:
        database.close()


# ------------------------------------------------------------------ HTTP, in process


@pytest.fixture
def app_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path}/app.db"
    app = create_app({"DATABASE_URL": url})  # SQLite: migrated on start
    yield app, url
    state_of(app).ws_server.shutdown()
    state_of(app).database.close()


def test_health_is_degraded_when_the_schema_is_behind(app_on_sqlite):
    app, url = app_on_sqlite
    client = app.test_client()
    assert client.get("/api/system/health").status_code == 200
    _execute(url, "UPDATE alembic_version SET version_num = '0000'")
    response = client.get("/api/system/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded" and UPGRADE in body["checks"]["database"]


def test_missing_tables_answer_503_naming_db_upgrade(app_on_sqlite):
    app, url = app_on_sqlite
    client = app.test_client()
    _execute(url, "DROP TABLE alembic_version", "DROP TABLE photos", "DROP TABLE sessions")
    health = client.get("/api/system/health")
    assert health.status_code == 503 and UPGRADE in health.get_json()["checks"]["database"]
    for response in (client.post("/api/sessions", json=SESSION), client.get("/api/sessions")):
        assert response.status_code == 503, response.get_data(as_text=True)
        body = response.get_json()["error"]
        assert body["code"] == "unavailable" and UPGRADE in body["message"]


@pytest.mark.parametrize("statement", ["SELEC 1", "SELECT ?"])  # OperationalError, ProgrammingError
def test_a_faulty_statement_on_a_current_schema_stays_an_internal_error(app_on_sqlite, statement):
    app, _ = app_on_sqlite

    def faulty():
        with state_of(app).database.engine.connect() as connection:
            connection.exec_driver_sql(statement, (1, 2) if "?" in statement else ())

    app.add_url_rule("/test/faulty", "faulty", faulty)
    response = app.test_client().get("/test/faulty")
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "internal_error"


# ------------------------------------------------------------------ local-bridge db upgrade


def test_db_upgrade_prints_the_revision_it_reached(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_BRIDGE_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(f"revision {migrate.head_revision()}")
    assert "None" not in result.output


def test_db_upgrade_fails_when_no_migration_is_shipped(tmp_path, monkeypatch, no_migrations):
    monkeypatch.setenv("LOCAL_BRIDGE_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code != 0
    message = result.output.strip()
    assert message.startswith("Error: cannot migrate") and "no schema migrations" in message
    assert len(message.splitlines()) == 1 and "revision None" not in message


@pytest.mark.e2e  # a process of its own
def test_db_upgrade_fails_in_one_line_when_the_database_is_unreachable(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")}
    env["LOCAL_BRIDGE_DATABASE_URL"] = f"sqlite:///{tmp_path}/no/such/folder/x.db"
    out = subprocess.run(
        [sys.executable, "-m", "local_bridge.cli", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and out.stdout == ""
    assert out.stderr.startswith("Error: cannot migrate") and len(out.stderr.splitlines()) == 1
