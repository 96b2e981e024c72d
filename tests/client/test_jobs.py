"""``follow_job`` on scripted job streams: the URL, a restart with a fresh snapshot after an
early drop, the end after the terminal event, an unknown job."""

from __future__ import annotations

import time

import pytest

from local_bridge.client import Backoff, BusError, ConnectionClosed, Unrecoverable, follow_job
from local_bridge.client import jobs as jobs_module
from local_bridge.client.jobs import job_stream_url


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://127.0.0.1:5100", "ws://127.0.0.1:5100/ws/jobs/a%2Fb"),
        ("https://bus.example/", "wss://bus.example/ws/jobs/a%2Fb"),
        ("ws://[::1]:5100/ws", "ws://[::1]:5100/ws/jobs/a%2Fb"),
        ("ws://h/prefix/ws/", "ws://h/prefix/ws/jobs/a%2Fb"),
    ],
)
def test_the_job_stream_url_from_any_base(url, expected):
    assert job_stream_url(url, "a/b") == expected


def test_a_url_that_is_not_http_or_ws_is_refused():
    with pytest.raises(ValueError):
        job_stream_url("ftp://h", "1")


class FakeStream:
    """A job stream that sends ``messages`` (the first is the greeting), then closes ``end``."""

    def __init__(self, messages: list[dict], end: int | None):
        self.hello, self.rest, self.end = messages[0], list(messages[1:]), end
        self.last_received = time.monotonic()
        self.sent: list[dict] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def receive(self, timeout=None):
        if self.rest:
            return self.rest.pop(0)
        raise ConnectionClosed(self.end)

    def send(self, message):
        self.sent.append(message)


def streams(monkeypatch, *scripted):
    plan = list(scripted)

    def factory(url, timeout=10.0, token=None, greeting="connected"):
        spec = plan.pop(0)
        if isinstance(spec, BaseException):
            raise spec
        return spec

    monkeypatch.setattr(jobs_module, "BusClient", factory)
    return plan


def status(state: str) -> dict:
    return {"type": "job_status", "job_id": "1", "status": state}


def test_an_early_drop_starts_again_with_a_fresh_snapshot(monkeypatch):
    first = FakeStream([status("running"), {"type": "job_progress", "progress": 10}], 1006)
    second = FakeStream(
        [status("running"), {"type": "heartbeat"}, {"type": "job_completed"}, {"type": "x"}], 1000
    )
    streams(monkeypatch, first, ConnectionRefusedError(), second)
    got = list(follow_job("http://h", "1", backoff=Backoff(initial=0.01)))
    assert [m["type"] for m in got] == [
        "job_status",
        "job_progress",
        "job_status",
        "job_completed",
    ]
    assert second.sent == [{"type": "pong"}]


def test_an_unknown_job_is_unrecoverable_4004(monkeypatch):
    streams(monkeypatch, BusError({"type": "error", "code": "job_not_found", "message": "x"}))
    with pytest.raises(Unrecoverable) as raised:
        list(follow_job("http://h", "nope"))
    assert raised.value.code == 4004


def test_a_server_that_is_not_there_at_first_raises(monkeypatch):
    streams(monkeypatch, ConnectionRefusedError())
    with pytest.raises(ConnectionRefusedError):
        next(follow_job("http://h", "1"))


def test_a_stopping_close_ends_with_unrecoverable(monkeypatch):
    streams(monkeypatch, FakeStream([status("queued")], 4009))
    received = follow_job("http://h", "1")
    assert next(received)["type"] == "job_status"
    with pytest.raises(Unrecoverable) as raised:
        next(received)
    assert raised.value.code == 4009
