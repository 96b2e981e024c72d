"""``local_bridge.client.RestClient`` against the real server: every helper, and its errors."""

from __future__ import annotations

import threading

import pytest

from local_bridge.auth.tokens import mint
from local_bridge.client import ApiError, RestClient
from local_bridge.client.rest import ServerUnreachable
from support import ServerProcess, Watcher, free_port, has_ipv6_loopback, types_of

SECRET = "rest-client-" + "0123456789abcdef" * 4


@pytest.fixture
def rest(server: ServerProcess):
    with RestClient(server.http) as client:
        yield client


def test_sessions_photos_analysis_selection_and_approval(server: ServerProcess, rest: RestClient):
    watcher = Watcher(server)
    try:
        session, events = watcher.after(lambda: rest.create_session("Trip", "/photos/trip"))
        assert types_of(events) == ["session_created"]
        sid = session["id"]
        assert rest.get_session(sid)["name"] == "Trip"
        assert any(s["id"] == sid for s in rest.list_sessions(limit=500)["items"])
        assert rest.update_session(sid, name="Trip 2")["name"] == "Trip 2"

        photo = rest.import_photo(sid, "a.jpg", "/photos/trip/a.jpg", "android_app")
        other = rest.import_photo(sid, "b.jpg", "/photos/trip/b.jpg", "web")
        assert rest.get_photo(photo["id"])["source"] == "android_app"
        assert [p["id"] for p in rest.session_photos(sid)["items"]] == [photo["id"], other["id"]]

        analyzed, events = watcher.after(
            lambda: rest.record_analysis(photo["id"], 0.9, {"sharpness": 0.8})
        )
        assert analyzed["approval_status"] == "pending"
        assert types_of(events) == ["photo_analyzed", "approval_queue_updated", "session_updated"]
        rest.record_analysis(other["id"], 0.2, None)
        selected = rest.record_selection(photo["id"], "portrait", "Warm")
        assert selected["selected_preset"] == "Warm"
        queue = rest.approval_queue(sid)["items"]
        assert {p["id"] for p in queue} == {photo["id"], other["id"]}
        assert rest.approve(photo["id"])["approval_status"] == "approved"
        rejected = rest.reject(other["id"], "blurry")
        assert (rejected["approval_status"], rejected["rejection_reason"]) == ("rejected", "blurry")
        assert rest.approval_queue(session_id=sid)["items"] == []
        assert rest.update_session(sid, status="completed")["status"] == "completed"
    finally:
        watcher.close()


def test_jobs_from_queue_to_their_ends(rest: RestClient):
    kind = "rest-jobs"  # a kind of this test's own: other tests' jobs are not claimed here
    first = rest.create_job(kind, priority=10, params={"size": 1})
    second = rest.create_job(kind, priority=10)
    assert first["status"] == "queued" and first["params"] == {"size": 1}
    assert rest.set_priority(second["id"], 90, "urgent")["priority"] == 90
    assert rest.get_job(second["id"])["position"] < rest.get_job(first["id"])["position"]
    assert any(j["id"] == first["id"] for j in rest.list_jobs("queued", limit=500)["items"])

    claimed = rest.claim_job("w-rest", [kind])
    assert claimed is not None and claimed["id"] == second["id"]
    assert claimed["status"] == "running" and claimed["worker"] == "w-rest"
    running = rest.report_progress(claimed["id"], 40, "scanning", "halfway", {"files": 4})
    assert (running["progress"], running["stage"], running["counters"]) == (
        40,
        "scanning",
        {"files": 4},
    )
    assert running["cancel_requested"] is False
    done = rest.complete_job(claimed["id"], {"ok": True}, "http://example/r")
    assert (done["status"], done["result"], done["result_url"]) == (
        "completed",
        {"ok": True},
        "http://example/r",
    )

    failing = rest.claim_job("w-rest", [kind])
    assert failing is not None and failing["id"] == first["id"]
    failed = rest.fail_job(failing["id"], "disk full", {"free": 0}, retryable=True)
    assert (failed["status"], failed["retryable"], failed["error_details"]) == (
        "failed",
        True,
        {"free": 0},
    )
    assert rest.claim_job("w-rest", [kind]) is None  # 204: nothing queued

    queued = rest.create_job(kind)
    assert rest.cancel_job(queued["id"], "not needed")["status"] == "cancelled"
    running_job = rest.create_job(kind)
    rest.claim_job("w-rest", [kind])
    asked = rest.cancel_job(running_job["id"], "stop")  # 202: the worker must end it
    assert (asked["status"], asked["cancel_requested"]) == ("running", True)
    assert rest.report_progress(running_job["id"], 50)["cancel_requested"] is True
    assert rest.cancel_job(running_job["id"])["status"] == "cancelled"


def test_exports_publishing_events_and_system(server: ServerProcess, rest: RestClient):
    session = rest.create_session("Exports", "/x")
    photo = rest.import_photo(session["id"], "x.jpg", "/x/x.jpg", "lightroom")
    export = rest.create_export(photo["id"], "Web", "/out")
    assert export["status"] == "running"
    assert rest.get_export(export["id"])["preset_name"] == "Web"
    assert rest.complete_export(export["id"], "/out/x.jpg", 1234)["file_size"] == 1234
    broken = rest.create_export(photo["id"], "Print", "/out")
    assert rest.fail_export(broken["id"], "no space")["status"] == "failed"

    start = rest.events(limit=1)
    published = rest.publish("job_progress", {"job_id": "r-1", "progress": 5}, channel="jobs")
    custom = rest.publish("rest.note", {"text": "hi"})
    batch = rest.publish_batch([{"type": "rest.note", "data": {"n": 1}}])
    system = rest.system_event(
        "resource_warning",
        resource_type="disk",
        current_value=95,
        threshold=90,
        message="disk almost full",
    )
    seqs = [published["seq"], custom["seq"], *batch["seqs"], system["seq"]]
    assert seqs == sorted(seqs)
    polled = rest.events(since=start["seq"], epoch=start["epoch"], limit=500)
    assert polled["recovered"] is True
    assert [e["seq"] for e in polled["items"] if e["seq"] in seqs] == seqs
    only_system = rest.events(since=start["seq"], channels=["system"])
    # events addressed to everyone (the custom ones) are always included
    assert [e["type"] for e in only_system["items"]] == [
        "rest.note",
        "rest.note",
        "resource_warning",
    ]

    status = rest.status()
    assert status["seq"] >= system["seq"] and "queue" in status
    assert rest.health()["status"] == "ok"
    assert rest.live() == {"status": "ok"}
    bus = server.client()
    try:
        listed = [c["client_id"] for c in rest.clients(limit=500)["items"]]
        assert bus.client_id in listed
        assert rest.disconnect(bus.client_id) == {"client_id": bus.client_id, "disconnected": True}
        assert bus.close_code() == 4009
    finally:
        bus.close()
    assert rest.request("GET", "/api/system/live") == {"status": "ok"}


def test_a_long_poll_returns_when_an_event_arrives(server: ServerProcess, rest: RestClient):
    now = rest.events(limit=1)
    timer = threading.Timer(0.3, lambda: server.publish("rest.wake", {}))
    timer.start()
    try:
        answer = rest.events(since=now["seq"], epoch=now["epoch"], wait=10)
    finally:
        timer.join()
    assert [e["type"] for e in answer["items"]] == ["rest.wake"]


def test_errors_carry_status_code_and_fields(rest: RestClient):
    with pytest.raises(ApiError) as invalid:
        rest.create_job("x", priority=500)
    assert (invalid.value.status, invalid.value.code) == (422, "validation_error")
    assert list(invalid.value.fields) == ["priority"]
    assert str(invalid.value).startswith("HTTP 422 validation_error: ")
    assert "priority: " in str(invalid.value) and "\n" not in str(invalid.value)

    with pytest.raises(ApiError) as missing:
        rest.get_job("999999999")
    assert (missing.value.status, missing.value.code, missing.value.fields) == (
        404,
        "not_found",
        {},
    )

    job = rest.create_job("rest-errors")
    with pytest.raises(ApiError) as illegal:
        rest.complete_job(job["id"])  # queued, not running
    assert (illegal.value.status, illegal.value.code) == (409, "conflict")
    rest.cancel_job(job["id"])

    with pytest.raises(ApiError) as odd_id:
        rest.get_session("a/b?c")  # quoted into one path segment, not another endpoint
    assert odd_id.value.status == 404


def test_an_unreachable_server_is_an_oserror_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(OSError) as caught:
        RestClient(url).status()
    assert isinstance(caught.value, ServerUnreachable)
    assert str(caught.value) == f"cannot reach local_bridge at {url}: connection refused"


def test_a_server_that_goes_away_and_comes_back():
    server = ServerProcess().start()
    try:
        rest = RestClient(server.http)
        assert rest.live() == {"status": "ok"}
        # An idle kept-alive connection holds a stopping server for its keep-alive time;
        # tests/client/test_rest.py covers a kept-alive connection the server dropped.
        rest.close()
        server._end_process()
        with pytest.raises(ServerUnreachable):
            rest.live()
        server.start()
        assert rest.live() == {"status": "ok"}
        rest.close()
    finally:
        server.stop()


def test_tokens_a_string_or_a_function():
    server = ServerProcess({"AUTH": "token", "SECRET_KEY": SECRET}).start()
    try:
        with pytest.raises(ApiError) as refused, RestClient(server.http) as anonymous:
            anonymous.create_session("s", "/s")
        assert (refused.value.status, refused.value.code) == (401, "unauthorized")

        client = RestClient(server.http, token=mint(SECRET, sub="c", role="client", ttl=60)[0])
        assert client.create_session("s", "/s")["name"] == "s"
        with pytest.raises(ApiError) as forbidden:
            client.claim_job("w")  # a worker's write
        assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")

        minted: list[str] = []

        def fresh() -> str:
            minted.append(mint(SECRET, sub="w", role="worker", ttl=60)[0])
            return minted[-1]

        worker = RestClient(server.http, token=fresh)
        worker.claim_job("w", ["nothing-queued"])
        worker.claim_job("w", ["nothing-queued"])
        assert len(minted) == 2  # asked before each request
        for used in (client, worker):
            used.close()  # an idle kept-alive connection would hold the server's stop
    finally:
        server.stop()


class IPv6Server(ServerProcess):
    """The server bound to ``::1`` (readiness is polled there too)."""

    @property
    def http(self) -> str:
        return f"http://[::1]:{self.port}"


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_an_ipv6_base_url():
    server = IPv6Server({"HOST": "::1"}).start()
    try:
        with RestClient(f"http://[::1]:{server.port}") as rest:
            session = rest.create_session("v6", "/v6")
            assert rest.get_session(session["id"])["name"] == "v6"
    finally:
        server.stop()
