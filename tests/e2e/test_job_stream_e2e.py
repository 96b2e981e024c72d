"""The job stream /ws/jobs/<id> (PROTOCOL.md section 4) and progress conflation, end to end."""

from __future__ import annotations

import json
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import websocket

from support import BusClient, RawClient, ok


def _stream(server, job_id) -> BusClient:
    """Connect to a job stream (its first message is not `connected`)."""
    client = BusClient.__new__(BusClient)
    client.ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/ws/jobs/{job_id}", timeout=5
    )
    return client


def _claimable(server, kind: str) -> dict:
    return ok(server.post("/api/jobs", json={"kind": kind, "priority": 100}), 201)


def test_unknown_job_gets_error_and_4004(workflow_server):
    for job_id in ("999999", "not-a-number"):
        stream = _stream(workflow_server, job_id)
        error = stream.recv()
        assert (error["type"], error["code"], error["message"]) == (
            "error",
            "job_not_found",
            "Job not found",
        )
        assert stream.close_code() == 4004


def _unknown_job_ending(port: int, half_close: bool) -> list:
    """Open ``/ws/jobs/999999``, ping at once (then, with ``half_close``, shut the sending side
    as a client with nothing more to say may); return the frames up to the server's FIN."""
    client = RawClient(port, "/ws/jobs/999999")
    try:
        assert client.status_line.startswith("HTTP/1.1 101"), client.status_line
        client.send_frame(b"are you there", opcode=0x9)
        if half_close:
            client.sock.shutdown(socket.SHUT_WR)
        frames = []
        while True:
            try:
                opcode, data = client.recv_frame()
            except ConnectionError:  # the FIN
                return frames
            if opcode != 0xA:  # the pong may come first, or not at all
                frames.append((opcode, data))
    finally:
        client.close()


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
@pytest.mark.parametrize("half_close", [False, True], ids=["ping", "ping-and-half-close"])
def test_unknown_job_always_ends_with_the_error_then_4004(make_server, worker_class, half_close):
    """However the client's first frames race the server's answer, the error and the 4004
    close come before the FIN, for every one of many concurrent clients."""
    server = make_server(WORKER_CLASS=worker_class)
    with ThreadPoolExecutor(48) as pool:
        endings = list(pool.map(lambda _: _unknown_job_ending(server.port, half_close), range(144)))
    for frames in endings:
        assert [opcode for opcode, _ in frames] == [0x1, 0x8], frames
        error = json.loads(frames[0][1])
        assert (error["type"], error["code"]) == ("error", "job_not_found"), error
        assert struct.unpack("!H", frames[1][1][:2])[0] == 4004, frames


def test_stream_follows_a_job_from_queue_to_completion(workflow_server):
    server = workflow_server
    job = _claimable(server, "stream-a")
    stream = _stream(server, job["id"])
    snapshot = stream.recv()
    assert snapshot["type"] == "job_status" and "seq" not in snapshot
    assert (snapshot["job_id"], snapshot["status"], snapshot["progress"], snapshot["position"]) == (
        job["id"],
        "queued",
        0,
        job["position"],
    )
    assert set(snapshot) == {
        "type",
        "timestamp",
        "job_id",
        "status",
        "progress",
        "stage",
        "message",
        "counters",
        "position",
        "estimated_start_seconds",
    }
    assert stream.request({"type": "ping"}, "pong")
    ok(server.post("/api/jobs/claim", json={"worker": "w1", "kinds": ["stream-a"]}))
    ok(
        server.post(
            f"/api/jobs/{job['id']}/progress",
            json={"progress": 50, "stage": "analyzing", "counters": {"issues_found": 2}},
        )
    )
    ok(server.post(f"/api/jobs/{job['id']}/complete", json={"result": {"ok": True}}))
    events = stream.until(lambda m: m["type"] == "job_completed")
    assert [e["type"] for e in events] == ["job_started", "job_progress", "job_completed"]
    assert all(e["channel"] == "jobs" and isinstance(e["seq"], int) for e in events)
    assert events[1]["counters"] == {"issues_found": 2}
    assert stream.close_code() == 1000


def test_finished_job_gets_snapshot_terminal_event_and_1000(workflow_server):
    server = workflow_server
    job = _claimable(server, "stream-b")
    ok(server.post("/api/jobs/claim", json={"worker": "w", "kinds": ["stream-b"]}))
    ok(
        server.post(
            f"/api/jobs/{job['id']}/fail", json={"error_message": "boom", "retryable": True}
        )
    )
    stream = _stream(server, job["id"])
    snapshot, ending = stream.recv(), stream.recv()
    assert (snapshot["type"], snapshot["status"], snapshot["position"]) == (
        "job_status",
        "failed",
        None,
    )
    assert (ending["type"], ending["error_message"], ending["retryable"], ending["job_id"]) == (
        "job_failed",
        "boom",
        True,
        job["id"],
    )
    assert stream.close_code() == 1000


def test_many_followers_reconnect_and_leaving_changes_nothing(workflow_server):
    server = workflow_server
    job = _claimable(server, "stream-c")
    ok(server.post("/api/jobs/claim", json={"worker": "w", "kinds": ["stream-c"]}))
    first, second = _stream(server, job["id"]), _stream(server, job["id"])
    assert first.recv()["status"] == second.recv()["status"] == "running"
    ok(server.post(f"/api/jobs/{job['id']}/progress", json={"progress": 20, "stage": "a"}))
    assert first.recv()["progress"] == second.recv()["progress"] == 20
    first.close()  # a follower leaving changes nothing for the job or the others
    ok(server.post(f"/api/jobs/{job['id']}/progress", json={"progress": 60, "stage": "b"}))
    assert second.recv()["progress"] == 60
    again = _stream(server, job["id"])  # reconnecting starts again with a snapshot
    snapshot = again.recv()
    assert (snapshot["type"], snapshot["progress"], snapshot["stage"]) == ("job_status", 60, "b")
    ok(server.post(f"/api/jobs/{job['id']}/cancel", json={}), 202)  # requested
    ok(server.post(f"/api/jobs/{job['id']}/cancel", json={}))  # the worker confirms
    for stream in (second, again):
        assert stream.until(lambda m: m["type"] == "job_cancelled")[-1]["job_id"] == job["id"]
        assert stream.close_code() == 1000
    assert ok(server.get(f"/api/jobs/{job['id']}"))["status"] == "cancelled"


def test_stream_sees_its_queue_position_move(workflow_server):
    server = workflow_server
    for _ in range(1000):  # an empty queue, so positions are predictable
        if server.post("/api/jobs/claim", json={"worker": "janitor"}).status_code == 204:
            break
    waiting = ok(server.post("/api/jobs", json={"kind": "stream-d", "priority": 10}), 201)
    stream = _stream(server, waiting["id"])
    assert stream.recv()["position"] == 1
    ok(server.post("/api/jobs", json={"kind": "stream-d", "priority": 90}), 201)
    moved = stream.recv()
    assert (moved["type"], moved["channel"], moved["position"]) == (
        "job_queued",
        f"jobs:{waiting['id']}",
        2,
    )
    stream.close()


def test_polling_snapshot_matches_stream_snapshot(workflow_server):
    server = workflow_server
    job = _claimable(server, "stream-e")
    stream = _stream(server, job["id"])
    snapshot = stream.recv()
    polled = ok(server.get(f"/api/jobs/{job['id']}"))
    for key in (
        "status",
        "progress",
        "stage",
        "message",
        "counters",
        "position",
        "estimated_start_seconds",
    ):
        assert polled[key] == snapshot[key], key
    stream.close()


def test_progress_is_conflated_but_stage_changes_and_the_last_value_arrive(workflow_server):
    """PROGRESS_RATE is 5 on this server: a burst of 60 reports reaches clients as a handful."""
    server = workflow_server
    job = _claimable(server, "stream-f")
    ok(server.post("/api/jobs/claim", json={"worker": "w", "kinds": ["stream-f"]}))
    stream = _stream(server, job["id"])
    assert stream.recv()["type"] == "job_status"
    started = time.monotonic()
    for i in range(1, 61):
        stage = "first" if i <= 30 else "second"
        ok(
            server.post(
                f"/api/jobs/{job['id']}/progress", json={"progress": i * 100 / 60, "stage": stage}
            )
        )
    elapsed = time.monotonic() - started
    received = stream.until(lambda m: m["type"] == "job_progress" and m["progress"] == 100)
    progress = [m for m in received if m["type"] == "job_progress"]
    assert 2 <= len(progress) <= 5 * elapsed + 3, (len(progress), elapsed)
    assert [m["stage"] for m in progress].count("second") >= 1
    assert progress[0]["stage"] == "first" and progress[-1]["progress"] == 100
    stages = [m["stage"] for m in progress]
    assert stages.index("second") > 0 and stages[stages.index("second") - 1] == "first"
    assert [m["seq"] for m in progress] == sorted(m["seq"] for m in progress)
    assert ok(server.get(f"/api/jobs/{job['id']}"))["progress"] == 100
    stream.close()


def test_worker_gui_web_and_stream_clients_see_the_same_story(workflow_server):
    """A worker claims, reports and finishes a job; a GUI on `jobs`, a web client on
    `jobs:<id>` and a job-stream client see the same events of that job, in the same order."""
    server = workflow_server
    job = _claimable(server, "story")
    gui = server.client()
    gui.register("gui", "desktop")
    gui.subscribe("jobs")
    web = server.client()
    web.register("web", "browser")
    web.subscribe(f"jobs:{job['id']}")
    stream = _stream(server, job["id"])
    assert stream.recv()["status"] == "queued"
    worker = server.post("/api/jobs/claim", json={"worker": "gpu-1", "kinds": ["story"]}).json()
    assert worker["id"] == job["id"]
    for progress, stage in ((10, "load"), (55, "analyze"), (90, "write")):
        reply = ok(
            server.post(
                f"/api/jobs/{job['id']}/progress", json={"progress": progress, "stage": stage}
            )
        )
        assert reply["cancel_requested"] is False
    ok(server.post(f"/api/jobs/{job['id']}/complete", json={"result": {"keep": True}}))

    def story(client):
        events = client.until(lambda m: m["type"] == "job_completed" and m["job_id"] == job["id"])
        return [(m["seq"], m["type"]) for m in events if m.get("job_id") == job["id"]]

    seen = [story(gui), story(web), story(stream)]
    assert seen[0] == seen[1] == seen[2]
    assert [t for _, t in seen[0]] == [
        "job_started",
        "job_progress",
        "job_progress",
        "job_progress",
        "job_completed",
    ]
    for client in (gui, web):
        client.close()
    assert stream.close_code() == 1000
