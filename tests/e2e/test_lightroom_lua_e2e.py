"""The Lightroom client (clients/lightroom, Lua 5.1) against the real server, in Debian's
``lua5.1`` with LuaSocket and dkjson: following the bus by long polling, resync after a restart,
the workflow over REST, errors, token authentication, and the quick start that docs/lightroom.md
quotes. The Lua scripts (tests/lightroom/) report one JSON object per stdout line."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from local_bridge.auth.tokens import mint
from support import ServerProcess, Watcher, free_port

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "lightroom"
SCRIPTS = ROOT / "tests" / "lightroom"
LUA_PATH = f"{CLIENT}/?.lua;{SCRIPTS}/?.lua;;"
RUN_TIMEOUT = 20.0
LINE_TIMEOUT = 10.0
SECRET = "lightroom-e2e-" + "0123456789abcdef" * 4


def _lua_missing() -> str | None:
    """Why the Lua tests cannot run here, or None."""
    if shutil.which("lua5.1") is None:
        return "lua5.1 is not installed (apt-get install lua5.1 lua-socket lua-dkjson)"
    probe = subprocess.run(
        ["lua5.1", "-e", 'require "socket.http"; require "dkjson"'],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if probe.returncode != 0:
        return "lua-socket or lua-dkjson is missing: " + probe.stderr.strip().splitlines()[0]
    return None


@pytest.fixture(scope="module", autouse=True)
def lua_available():
    why = _lua_missing()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Lightroom client tests: {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def server():
    process = ServerProcess().start()
    yield process
    process.stop()


def lua_env(server: ServerProcess | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env["LUA_PATH"] = LUA_PATH
    if server is not None:
        env["LB_URL"] = server.http
    env.update(extra)
    return env


def parse_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def run_lua(script: str, *args: str, env: dict[str, str], rc: int = 0) -> list[dict[str, Any]]:
    """Run a script to its end; its JSON lines. Fails on another exit status than ``rc``."""
    out = subprocess.run(
        ["lua5.1", str(SCRIPTS / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=ROOT,
    )
    assert out.returncode == rc, (out.returncode, out.stdout, out.stderr)
    return parse_lines(out.stdout)


class LuaProcess:
    """A Lua script running beside the test: its JSON lines are read as they come."""

    def __init__(self, script: str, env: dict[str, str]):
        self.process = subprocess.Popen(
            ["lua5.1", str(SCRIPTS / script)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)  # end of output

    def next_line(self, predicate, timeout: float = LINE_TIMEOUT) -> dict[str, Any]:
        """The first line from now on satisfying ``predicate`` (earlier ones are kept)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no such line within {timeout} s; seen {self.seen}") from None
            if line is None:
                raise AssertionError(f"the script ended: {self.seen} {self.stderr()}")
            self.seen.append(line)
            if predicate(line):
                return line

    def finish(self, timeout: float = RUN_TIMEOUT) -> list[dict[str, Any]]:
        """Wait for the end (exit 0); every line seen."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        while (line := self.lines.get(timeout=LINE_TIMEOUT)) is not None:
            self.seen.append(line)
        assert self.process.returncode == 0, (self.seen, self.stderr())
        return self.seen

    def stderr(self) -> str:
        return self.process.stderr.read() if self.process.poll() is not None else ""

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def kind(event_name: str):
    return lambda line: line.get("event") == event_name


def received(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") == "received"]


# --------------------------------------------------------------------------- following


def test_follower_edge_cases_without_a_server():
    # resync retried when the reload fails, handler errors, pauses and backoff in slices,
    # bodies and escaping, answers that are not JSON, LrHttp's shapes (tests/lightroom/unit.lua)
    lines = run_lua("unit.lua", env=lua_env(None))
    assert lines == [{"ok": True, "checks": lines[0]["checks"]}] and lines[0]["checks"] >= 25


@pytest.mark.parametrize("adapter", ["luasocket", "lrhttp"])
def test_follower_receives_published_events_in_seq_order(server, adapter):
    follower = LuaProcess(
        "follow.lua", lua_env(server, LB_CHANNELS="jobs,photos", LB_ADAPTER=adapter)
    )
    try:
        ready = follower.next_line(kind("ready"))
        published = [
            server.publish("job_cancelled", {"job_id": "j1"}, channel="jobs")["seq"],
            server.publish("photo_approved", {"photo_id": "p1"}, channel="photos")["seq"],
            server.publish("test.elsewhere", {}, channel="sessions")["seq"],  # not followed
            server.publish("job_cancelled", {"job_id": "j2"}, channel="jobs")["seq"],
        ]
        stop = server.publish("test.stop", {})["seq"]  # to everyone: every follower gets it
        lines = follower.finish()
    finally:
        follower.kill()
    got = received(lines)
    assert [e["seq"] for e in got] == [published[0], published[1], published[3], stop]
    assert [e["type"] for e in got[:3]] == ["job_cancelled", "photo_approved", "job_cancelled"]
    assert all(e["seq"] > ready["since"] for e in got)
    done = lines[-1]
    assert done["event"] == "done" and done["since"] == stop and done["resyncs"] == 0


def test_long_poll_returns_promptly_without_busy_polling(server):
    follower = LuaProcess("follow.lua", lua_env(server, LB_WAIT="20"))
    try:
        follower.next_line(kind("ready"))
        # An idle second: a held poll makes no new request (a busy loop would make dozens).
        time.sleep(1.0)
        published_at = time.monotonic()
        seq = server.publish("job_cancelled", {"job_id": "prompt"}, channel="jobs")["seq"]
        event = follower.next_line(kind("received"))
        latency = time.monotonic() - published_at
        server.publish("test.stop", {})
        lines = follower.finish()
    finally:
        follower.kill()
    assert event["seq"] == seq and latency < 2.0
    done = lines[-1]
    # positioning, the poll held until the event, and the one that brings test.stop
    assert done["requests"] <= 4, done
    assert done["slept"] == 0


def test_follower_resyncs_once_after_a_restart_and_misses_nothing_after(make_server):
    server = make_server()
    follower = LuaProcess(
        "follow.lua",
        lua_env(server, LB_WAIT="20", LB_BACKOFF_INITIAL="0.1", LB_BACKOFF_MAX="0.5"),
    )
    try:
        ready = follower.next_line(kind("ready"))
        before = [
            server.publish("job_cancelled", {"job_id": f"b{i}"}, channel="jobs")["seq"]
            for i in range(3)
        ]
        follower.next_line(lambda line: line.get("seq") == before[-1])
        server.restart()  # new process, new epoch, numbering from 1 again
        resync = follower.next_line(kind("resync"))
        after = [
            server.publish("photo_approved", {"photo_id": f"a{i}"}, channel="photos")["seq"]
            for i in range(3)
        ]
        stop = server.publish("test.stop", {})["seq"]
        lines = follower.finish()
    finally:
        follower.kill()
    assert resync["reason"] == "epoch" and resync["epoch_changed"] is True
    assert resync["since"] == before[-1]
    # the state reload ran against the new server, from where the follower goes on
    assert resync["reloaded_seq"] >= resync["next_since"]
    got = [e["seq"] for e in received(lines)]
    assert got == [*before, *after, stop]
    assert sum(1 for line in lines if line.get("event") == "resync") == 1
    done = lines[-1]
    assert done["resyncs"] == 1 and ready["epoch"] != done["epoch"]
    retries = [line for line in lines if line.get("event") == "retry"]
    # down: refused; stopping or starting: a 503 from the server itself
    assert all(
        (r["kind"] == "connection" and "cannot reach" in r["text"])
        or (r["kind"] == "http" and "HTTP 503" in r["text"])
        for r in retries
    ), retries
    # backing off while the server was down: a handful of requests, not a spin
    assert len(retries) < 15 and done["requests"] < 25, done


# --------------------------------------------------------------------------- the workflow


def test_workflow_over_rest_publishes_what_a_bus_listener_sees(server):
    watcher = Watcher(server)
    try:
        lines, events = watcher.after(lambda: run_lua("workflow.lua", env=lua_env(server)))
    finally:
        watcher.close()
    steps = {line["step"]: line for line in lines if "step" in line}
    assert steps["import"]["source"] == "lightroom"
    assert steps["analysis"]["approval_status"] == "pending"
    assert steps["approval_queue"]["count"] == 2
    assert steps["decisions"] == {"step": "decisions", "a": "approved", "b": "rejected"}
    assert steps["claim"]["claimed"] == steps["claim"]["created"]
    assert steps["progress"] == {"step": "progress", "progress": 40, "cancel": False}
    assert steps["complete"]["status"] == "completed"
    assert steps["jobs"] == {
        "step": "jobs",
        "failed": "failed",
        "cancelled": "cancelled",
        "none_left": True,
    }
    assert steps["export"] == {"step": "export", "status": "completed", "session": "completed"}

    types = [e["type"] for e in events]
    for expected in (
        "session_created",
        "photo_imported",
        "photo_analyzed",
        "photo_selected",
        "photo_approved",
        "photo_rejected",
        "job_created",
        "job_started",
        "job_progress",
        "job_completed",
        "job_failed",
        "job_cancelled",
        "export_started",
        "export_completed",
        "session_completed",
    ):
        assert expected in types, (expected, types)
    assert {e["source"] for e in events if e["type"] == "photo_imported"} == {"lightroom"}
    # what the Lua client read back by polling is what the WebSocket listener received
    polled = [e for e in lines[-1]["events"] if e["type"] != "test.marker"]
    assert [(e["seq"], e["type"]) for e in polled] == [(e["seq"], e["type"]) for e in events]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("adapter", ["luasocket", "lrhttp"])
def test_errors_are_readable_lua_errors(server, adapter):
    down = f"http://127.0.0.1:{free_port()}"
    lines = run_lua("errors.lua", env=lua_env(server, LB_DOWN_URL=down, LB_ADAPTER=adapter))
    cases = {line["case"]: line for line in lines}

    nf = cases["not_found"]
    assert (nf["kind"], nf["status"], nf["code"]) == ("http", 404, "not_found")
    assert nf["text"].startswith("local_bridge: GET /api/photos/no-such-photo: HTTP 404 not_found")
    assert cases["unknown_job"]["status"] == 404

    missing = cases["missing_fields"]
    assert (missing["status"], missing["code"]) == (422, "validation_error")
    assert set(missing["fields"]) == {"file_name", "file_path"}
    assert "file_name: " in missing["text"] and "file_path: " in missing["text"]
    bad = cases["bad_value"]
    assert bad["status"] == 422 and list(bad["fields"]) == ["ai_score"]
    assert re.search(r"HTTP 422 validation_error: .+ \[ai_score: .+\]$", bad["text"]), bad
    assert (cases["conflict"]["status"], cases["conflict"]["code"]) == (409, "conflict")

    gone = cases["server_down"]
    assert gone["kind"] == "connection" and gone.get("status") is None
    assert f"cannot reach the server at {down}" in gone["text"]
    assert gone["text"].startswith("local_bridge: POST /api/sessions:")

    follower = cases["follower_down"]
    assert follower["iterations"] == 4 and follower["requests"] == 4
    assert [r["delay"] for r in follower["retries"]] == [0.05, 0.1, 0.15, 0.15]
    assert {r["kind"] for r in follower["retries"]} == {"connection"}
    assert sum(follower["sleeps"]) == pytest.approx(0.45)

    refused = cases["follower_refused"]
    assert (refused["status"], refused["code"]) == (422, "validation_error")
    assert "channels" in refused["fields"] and refused["requests"] == 1  # raised, not retried


def test_an_uncaught_error_ends_the_script_with_a_readable_line(server):
    out = subprocess.run(
        ["lua5.1", str(SCRIPTS / "errors.lua"), "uncaught"],
        env=lua_env(server),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert out.returncode == 1
    first = out.stderr.splitlines()[0]
    assert first.startswith("local_bridge: GET /api/photos/no-such-photo: HTTP 404 not_found: ")


# --------------------------------------------------------------------------- authentication


@pytest.fixture(scope="module")
def auth_server():
    process = ServerProcess({"AUTH": "token", "SECRET_KEY": SECRET}).start()
    yield process
    process.stop()


def token(role: str) -> str:
    return mint(SECRET, sub=f"lightroom-{role}", role=role, ttl=300)[0]


def test_bearer_tokens(auth_server):
    def run(mode: str, role: str | None) -> dict[str, Any]:
        env = lua_env(auth_server, LB_TOKEN=token(role) if role else "")
        return run_lua("auth.lua", mode, env=env)[0]

    published = run("publish", "admin")
    assert "error" not in published, published
    assert published["received"] == published["seq"] and published["text"] == "hi"

    anonymous = run("follow", None)["error"]
    assert (anonymous["status"], anonymous["code"]) == (401, "unauthorized")
    assert "HTTP 401 unauthorized" in anonymous["text"]

    not_admin = run("publish", "client")["error"]
    assert (not_admin["status"], not_admin["code"]) == (403, "forbidden")

    assert run("claim", "worker") == {"mode": "claim", "claimed": True}
    assert run("claim", "client")["error"]["status"] == 403  # claiming needs a worker


# --------------------------------------------------------------------------- docs and plugin


def test_quick_start_runs_as_the_docs_show_it(server):
    out = subprocess.run(
        ["lua5.1", str(CLIENT / "examples" / "quickstart.lua")],
        env={**lua_env(None), "LOCAL_BRIDGE_URL": server.http},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:4] == [
        "imported IMG_0001.dng from lightroom",
        lines[1],
        "job rendering 50%",
        "job completed: file:///Pictures/out/IMG_0001.jpg",
    ]
    assert lines[1].startswith("approved ")
    assert lines[4].startswith("false\tlocal_bridge: GET /api/photos/no-such-photo: HTTP 404")


def test_the_guide_quotes_the_files_that_run():
    # Lua blocks in docs are not executed: the guide's blocks are these files, verbatim.
    doc = (ROOT / "docs" / "lightroom.md").read_text()
    quoted = re.findall(r"```lua\n(.*?)```", doc, re.S)
    plugin = CLIENT / "LocalBridgeExample.lrplugin"
    for path in (
        CLIENT / "examples" / "quickstart.lua",
        plugin / "Bridge.lua",
        plugin / "FollowBus.lua",
    ):
        assert path.read_text() in quoted, path


def test_example_plugin_carries_the_module_and_compiles():
    plugin = CLIENT / "LocalBridgeExample.lrplugin"
    for name in ("LocalBridge.lua", "LocalBridgeLrHttp.lua"):
        assert (plugin / name).read_bytes() == (CLIENT / name).read_bytes(), name
    scripts = sorted(plugin.glob("*.lua"))
    assert {p.name for p in scripts} >= {"Info.lua", "FollowBus.lua", "SendPhotos.lua"}
    for script in scripts:
        check = subprocess.run(
            ["lua5.1", "-e", f"assert(loadfile({json.dumps(str(script))}))"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert check.returncode == 0, (script.name, check.stderr)
