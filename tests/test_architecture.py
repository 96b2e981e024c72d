"""The shape of the package: layers point one way, and the application owns its lifecycle.

- ``bus/`` imports neither ``api/`` nor ``domain/``; outside ``bus/`` and ``backplane/`` (and
  the publisher, which owns it) nobody reaches for a backplane: they talk to the bus.
- Importing the protocol or the client SDK does not bring in the server's libraries.
- ``state_of(app).close()`` leaves no backplane thread, and no socket or file of the database
  or of Redis, open; the gunicorn worker calls it when it exits.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from local_bridge import create_app, gunicorn_app, migrate, state_of
from local_bridge import websocket_events as we

PACKAGE = Path(__file__).resolve().parent.parent / "local_bridge"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, as absolute dotted names."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_bus_imports_neither_api_nor_domain():
    offenders = {}
    for path in sorted((PACKAGE / "bus").glob("*.py")):
        bad = sorted(
            name
            for name in imported_modules(path)
            if name.startswith(("local_bridge.api", "local_bridge.domain"))
        )
        if bad:
            offenders[path.name] = bad
    assert offenders == {}


def test_the_import_rule_sees_relative_imports():
    # the check above would pass vacuously if it misread `from ..x import y`
    assert "local_bridge.protocol" in imported_modules(PACKAGE / "bus" / "hub.py")
    assert "local_bridge.bus.facade" in imported_modules(PACKAGE / "api" / "ws.py")


def test_nobody_outside_the_bus_reaches_for_the_backplane():
    owners = {PACKAGE / "publisher.py"}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name in ("bus", "backplane") or path in owners:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "backplane":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


@pytest.mark.e2e  # a process of its own
def test_protocol_and_client_import_without_the_server_libraries():
    program = (
        "import sys, local_bridge.protocol, local_bridge.client\n"
        "print(sorted(m for m in ('flask', 'sqlalchemy', 'alembic', 'marshmallow', "
        "'gunicorn') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_command_line_imports_no_ssl_before_gevent_patches_it():
    """gevent warns (and its patched ssl may misbehave) when ssl came in before the worker
    patched the standard library; `serve` imports the command line first."""
    program = "import sys, local_bridge.cli\nprint('ssl' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "False"


def test_the_public_names_still_import_from_the_package():
    import local_bridge

    assert local_bridge.WebSocketServer.__name__ == "WebSocketServer"
    assert local_bridge.create_app is create_app and local_bridge.state_of is state_of
    with pytest.raises(AttributeError):
        local_bridge.no_such_name  # noqa: B018


# --------------------------------------------------------------------------- lifecycle


def _socket_inodes_to(port: int) -> set[str]:
    """Inodes of this process's TCP sockets connected to ``port`` (from /proc)."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            ours.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[9] in ours:
                    found.add(fields[9])
    return found


def _open_files(path: str) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(path):
                found.append(fd)
        except OSError:
            continue
    return found


def _backplane_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "redis-backplane" and t.is_alive()]


def _exercise(app) -> None:
    """Use the database, the bus and the domain so each has something to release."""
    client = app.test_client()
    assert client.post("/api/jobs", json={"kind": "analysis"}).status_code == 201
    assert client.get("/api/system/health").status_code == 200


def test_close_releases_the_sqlite_database(tmp_path):
    path = str(tmp_path / "bridge.db")
    app = create_app({"DATABASE_URL": f"sqlite:///{path}"})
    _exercise(app)
    assert _open_files(path), "the test must see the database's file open"
    state_of(app).close()
    assert _open_files(path) == []
    assert state_of(app).bus.stopping.is_set()


@pytest.fixture
def redis_settings():
    """Settings for a Redis backplane under a prefix of its own, deleted afterwards (skips
    without LOCAL_BRIDGE_TEST_REDIS_URL)."""
    from redis_support import drop_prefix, fresh_prefix, redis_url

    url, prefix = redis_url(), fresh_prefix()
    yield {"REDIS_URL": url, "REDIS_PREFIX": prefix}
    drop_prefix(url, prefix)


def test_close_stops_the_redis_listener_and_its_connections(tmp_path, redis_settings):
    port = urlsplit(redis_settings["REDIS_URL"]).port or 6379
    before = _socket_inodes_to(port)
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/b.db", **redis_settings})
    _exercise(app)
    assert _backplane_threads() and _socket_inodes_to(port) - before
    state_of(app).close()
    assert _backplane_threads() == []
    assert _socket_inodes_to(port) - before == set()


def test_close_releases_postgresql_connections():
    from pg import FreshDatabase  # skips without LOCAL_BRIDGE_TEST_POSTGRES_URL

    database = FreshDatabase()
    try:
        port = urlsplit(database.url).port or 5432
        before = _socket_inodes_to(port)  # the admin engine's own connection among them
        app = create_app({"DATABASE_URL": database.url})
        migrate.upgrade(state_of(app).database.engine)
        _exercise(app)
        assert _socket_inodes_to(port) - before
        state_of(app).close()
        assert _socket_inodes_to(port) - before == set()
    finally:
        database.drop()


def test_the_worker_closes_the_application_when_it_exits(tmp_path, redis_settings, monkeypatch):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/w.db", **redis_settings})
    assert _backplane_threads()
    released = []
    # logging is shut down last; this process (pytest) keeps its logging
    monkeypatch.setattr(gunicorn_app, "_release_logging", lambda: released.append(True))

    class Worker:
        wsgi = app

    gunicorn_app._worker_exit(None, Worker())
    assert _backplane_threads() == [] and released == [True]


def test_creating_an_application_binds_no_default_bus():
    we.bind(None)
    create_app({"DATABASE_URL": "sqlite://"})
    with pytest.raises(RuntimeError):
        we.broadcast_system_status("nobody")
