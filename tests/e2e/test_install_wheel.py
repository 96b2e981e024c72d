"""A regular install, as a new user makes one: a wheel of this checkout, installed into a fresh
virtualenv, serves the workflow and migrates a database on its own (no checkout on the path)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from local_bridge import migrate
from support import STARTUP_TIMEOUT, free_port

ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 600  # seconds for one pip step: a cold cache downloads every dependency
NOT_SOURCE = shutil.ignore_patterns(
    ".venv",
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    "instance",
    "*.pyc",
)
# Building and installing from a cold pip cache may take minutes; the rest takes seconds.
pytestmark = pytest.mark.timeout(2 * INSTALL_TIMEOUT + 120)


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert out.returncode == 0, f"{command} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


def _clean_env(**variables: str) -> dict[str, str]:
    """This environment without local_bridge settings or a path to the checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LOCAL_BRIDGE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(variables)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the checkout (the build leaves the checkout untouched)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(work / "dist"),
            str(source),
        ],
        timeout=INSTALL_TIMEOUT,
        env=_clean_env(),
    )
    (built,) = (work / "dist").glob("local_bridge-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel installed (dependencies at the pinned versions)."""
    home = tmp_path_factory.mktemp("venv") / "venv"
    python = shutil.which("python3.11") or sys.executable
    _run([python, "-m", "venv", str(home)], timeout=120, env=_clean_env())
    _run(
        [
            str(home / "bin" / "pip"),
            "install",
            "-q",
            "-c",
            str(ROOT / "requirements.txt"),
            str(wheel),
        ],
        timeout=INSTALL_TIMEOUT,
        env=_clean_env(),
    )
    return home


def test_the_wheel_ships_every_migration_and_the_license(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "local_bridge" / "migrations"
    shipped = {
        f"local_bridge/migrations/{p.relative_to(package).as_posix()}"
        for p in package.rglob("*")
        if p.is_file() and p.suffix in (".py", ".mako")
    }
    assert any(re.fullmatch(r"local_bridge/migrations/versions/\d+_\w+\.py", n) for n in shipped)
    assert shipped <= names, sorted(shipped - names)
    assert "local_bridge/static/local-bridge.js" in names  # the browser module
    assert any(
        n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names
    )


def test_installed_server_serves_a_session_and_migrates(venv, tmp_path):
    cwd = tmp_path / "cwd"  # neither the checkout nor anything importable
    cwd.mkdir()
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import local_bridge; print(local_bridge.__file__)"],
        cwd=cwd,
        env=_clean_env(),
        timeout=60,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where

    head = migrate.head_revision()
    upgraded = _run(
        [str(venv / "bin" / "local-bridge"), "db", "upgrade"],
        cwd=cwd,
        timeout=120,
        env=_clean_env(LOCAL_BRIDGE_DATABASE_URL=f"sqlite:///{tmp_path}/fresh.db"),
    )
    assert upgraded.stdout.strip().endswith(f": revision {head}"), upgraded.stdout

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(
        [str(venv / "bin" / "local-bridge"), "serve"],
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_clean_env(
            LOCAL_BRIDGE_PORT=str(port),
            LOCAL_BRIDGE_CONNECT_RATE="0",
            LOCAL_BRIDGE_DATABASE_URL=f"sqlite:///{tmp_path}/served.db",
        ),
    )
    try:
        health = _wait_for_health(server, base, tmp_path / "server.log")
        assert health.status_code == 200, health.text
        assert health.json()["checks"]["database"] == "ok"

        created = requests.post(
            f"{base}/api/sessions",
            timeout=10,
            json={"name": "Wedding", "import_folder": "/photos/wedding"},
        )
        assert created.status_code == 201, created.text
        session = created.json()
        fetched = requests.get(f"{base}/api/sessions/{session['id']}", timeout=10)
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["name"] == "Wedding"
        module = requests.get(f"{base}/static/local-bridge.js", timeout=10)
        assert module.status_code == 200, module.text
        assert module.headers["Content-Type"].startswith("text/javascript")
        assert "export class Bridge" in module.text
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        log.close()


def _wait_for_health(server: subprocess.Popen, base: str, log: Path) -> requests.Response:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"server exited with {server.returncode}:\n{log.read_text()}")
        try:
            return requests.get(f"{base}/api/system/health", timeout=1)
        except requests.RequestException:
            time.sleep(0.05)  # polling for readiness: the server has no other way to tell
    raise AssertionError(f"server did not answer within {STARTUP_TIMEOUT} s:\n{log.read_text()}")


# ------------------------------------------------------------------ the README's commands


def _readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", quick_start)


def test_readme_quick_start_is_two_commands_that_ci_runs_verbatim():
    serve, test = _readme_commands()
    assert "-r requirements.txt" in serve and serve.endswith("local-bridge serve")
    assert "-r requirements-test.txt" in test and test.endswith("python -m pytest")
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()


def _pins(name: str) -> set[str]:
    lines = (ROOT / name).read_text().splitlines()
    return {line.split("==")[0].lower() for line in lines if "==" in line}


def test_runtime_requirements_leave_out_the_test_and_benchmark_stacks():
    runtime = _pins("requirements.txt")
    for extra in (
        "pytest",
        "hypothesis",
        "requests",
        "websocket-client",
        "matplotlib",
        "numpy",
        "pillow",
        "flask-socketio",
        "python-socketio",
        "websockets",
        "py-spy",
    ):
        assert extra not in runtime, extra
    for stack in ("requirements-test.txt", "requirements-bench.txt"):
        assert "-r requirements.txt" in (ROOT / stack).read_text().splitlines()
    assert {"pytest", "pytest-timeout", "hypothesis", "requests", "websocket-client"} <= _pins(
        "requirements-test.txt"
    )
    assert {"matplotlib", "flask-socketio", "websockets", "py-spy"} <= _pins(
        "requirements-bench.txt"
    )
