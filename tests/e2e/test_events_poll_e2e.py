"""Polling ``GET /api/events`` (API.md): resync after a restart, a stale epoch or a trimmed
history, long polling with ``wait``, and the range of ``since``."""

from __future__ import annotations

import json
import queue
import select
import signal
import socket
import threading
import time

import pytest

from redis_support import drop_prefix, fresh_prefix, redis_url
from support import ServerProcess, error, marker

WAIT_TIMEOUT = 10.0


class LongPoll:
    """One ``GET /api/events`` on a bare socket, so the test can tell when the server has
    taken the request in (and so is holding it) before acting."""

    def __init__(self, server: ServerProcess, **params):
        self.server = server
        query = "&".join(f"{k}={v}" for k, v in params.items())
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_TIMEOUT)
        self.started = time.monotonic()
        self.sock.sendall(
            f"GET /api/events?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Connection: close\r\n\r\n".encode()
        )

    def wait_until_taken_in(self) -> None:
        """Return once the server has read the whole request from its socket: it is then
        being answered or held. There is no notification of this, so the kernel's queues
        are watched: every byte sent acknowledged, none left unread on the server's side."""
        deadline = time.monotonic() + WAIT_TIMEOUT
        own_port = self.sock.getsockname()[1]
        while time.monotonic() < deadline:
            queues = _tcp_queues(own_port, self.server.port)
            if queues is not None and queues == (0, 0):
                return
            time.sleep(0.01)
        raise AssertionError("the server did not read the request")

    def answered_within(self, seconds: float) -> bool:
        return bool(select.select([self.sock], [], [], seconds)[0])

    def result(self, timeout: float = WAIT_TIMEOUT) -> tuple[int, dict, float]:
        """Status, JSON body, and seconds from sending to the complete answer."""
        self.sock.settimeout(timeout)
        data = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        elapsed = time.monotonic() - self.started
        self.sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body), elapsed


def _tcp_queues(client_port: int, server_port: int) -> tuple[int, int] | None:
    """(bytes the client has sent and not yet had acknowledged, bytes waiting unread on the
    server's side) of one loopback connection, from /proc/net/tcp; None when not found."""
    unacked = unread = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local = int(fields[1].rsplit(":", 1)[1], 16)
            remote = int(fields[2].rsplit(":", 1)[1], 16)
            tx_queue, rx_queue = (int(n, 16) for n in fields[4].split(":"))
            if (local, remote) == (client_port, server_port):
                unacked = tx_queue
            elif (local, remote) == (server_port, client_port):
                unread = rx_queue
    if unacked is None or unread is None:
        return None
    return unacked, unread


def poll(server: ServerProcess, **params) -> dict:
    response = server.get("/api/events", params=params)
    assert response.status_code == 200, response.text
    return response.json()


# --------------------------------------------------------------------------- resync


def test_since_from_before_a_restart_resyncs_at_the_current_seq(make_server):
    # A fresh server (fresh in-memory history) numbers from 1 again: a poller's since=500 is
    # from the numbering before the restart.
    server = make_server()
    first = [
        server.publish("job_cancelled", {"job_id": str(i)}, channel="jobs")["seq"] for i in range(2)
    ]
    status = server.get("/api/system/status").json()
    body = poll(server, since=500)
    assert body == {
        "items": [],
        "next_since": first[-1],
        "recovered": False,
        "seq": first[-1],
        "epoch": status["epoch"],
    }
    # Still stale as new events arrive (until seq passed 500 the old reply looked the same).
    later = server.publish("job_cancelled", {"job_id": "x"}, channel="jobs")["seq"]
    again = poll(server, since=500)
    assert (again["recovered"], again["next_since"], again["seq"]) == (False, later, later)
    # Going on from next_since (after reloading over REST) misses nothing afterwards.
    new = [
        server.publish("job_cancelled", {"job_id": f"n{i}"}, channel="jobs")["seq"]
        for i in range(2)
    ]
    resumed = poll(server, since=again["next_since"], epoch=again["epoch"])
    assert [e["seq"] for e in resumed["items"]] == new
    assert (resumed["recovered"], resumed["next_since"], resumed["seq"]) == (True, new[-1], new[-1])


def test_another_epoch_resyncs_at_the_current_seq(server):
    seq = marker(server)
    body = poll(server, since=0, epoch="not-this-one")
    assert body["items"] == [] and body["recovered"] is False
    assert body["next_since"] == body["seq"] and body["seq"] >= seq
    assert body["epoch"] == server.get("/api/system/status").json()["epoch"]
    same = poll(server, since=body["next_since"], epoch=body["epoch"])
    assert same["recovered"] is True and same["next_since"] == body["next_since"]


def test_trimmed_history_resyncs_at_the_current_seq(make_server):
    server = make_server(HISTORY_SIZE=3)
    seqs = [
        server.publish("job_cancelled", {"job_id": str(i)}, channel="jobs")["seq"] for i in range(6)
    ]
    body = poll(server, since=1)
    assert body["recovered"] is False and [e["seq"] for e in body["items"]] == seqs[-3:]
    assert body["next_since"] == body["seq"] == seqs[-1]
    page = poll(server, since=1, limit=1)  # truncated, but the poller reloads anyway
    assert [e["seq"] for e in page["items"]] == [seqs[-3]] and page["next_since"] == seqs[-1]
    assert poll(server, since=body["next_since"])["recovered"] is True


def test_a_truncated_page_goes_on_from_its_last_item(make_server):
    server = make_server()
    seqs = [
        server.publish("job_cancelled", {"job_id": str(i)}, channel="jobs")["seq"] for i in range(5)
    ]
    seen, since = [], 0
    for _ in range(3):
        page = poll(server, since=since, limit=2)
        assert page["recovered"] is True and page["seq"] == seqs[-1]
        seen += [e["seq"] for e in page["items"]]
        since = page["next_since"]
    assert seen == seqs and since == seqs[-1]


# --------------------------------------------------------------------------- long polling


@pytest.mark.parametrize("worker", ["gevent", "gthread"])
def test_long_poll_returns_when_a_matching_event_is_published(make_server, worker):
    server = make_server(WORKER_CLASS=worker)
    since = marker(server)
    waiting = LongPoll(server, since=since, channels="jobs", wait=20)
    waiting.wait_until_taken_in()
    assert not waiting.answered_within(0)
    server.publish("photo_approved", {"photo_id": "1"}, channel="photos")  # not for this poller
    seq = server.publish("job_cancelled", {"job_id": "j"}, channel="jobs")["seq"]
    status, body, elapsed = waiting.result()
    assert status == 200 and elapsed < 10
    assert [e["seq"] for e in body["items"]] == [seq]
    assert (body["next_since"], body["recovered"]) == (seq, True)


def test_long_poll_answers_at_once_when_events_are_there(server):
    since = marker(server)
    seq = server.publish("job_cancelled", {"job_id": "early"}, channel="jobs")["seq"]
    started = time.monotonic()
    body = poll(server, since=since, channels="jobs", wait=20)
    assert [e["seq"] for e in body["items"]] == [seq] and time.monotonic() - started < 10


def test_long_poll_times_out_with_no_items(server):
    since = marker(server)
    started = time.monotonic()
    body = poll(server, since=since, channels="export", client_type="lightroom", wait=1.5)
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 8
    assert body["items"] == [] and body["recovered"] is True and body["next_since"] == since


def test_long_poll_is_not_a_connection(make_server):
    server = make_server(MAX_CONNECTIONS=1)
    since = marker(server)
    waiting = LongPoll(server, since=since, channels="jobs", wait=20)
    waiting.wait_until_taken_in()
    client = server.client()  # the only connection allowed: the long poll is not one
    listed = server.get("/api/websocket/clients").json()["items"]
    assert [c["client_id"] for c in listed] == [client.client_id]
    seq = server.publish("job_cancelled", {"job_id": "j"}, channel="jobs")["seq"]
    assert [e["seq"] for e in waiting.result()[1]["items"]] == [seq]
    client.close()


def test_long_poll_wakes_for_an_event_published_on_another_process():
    url, prefix = redis_url(), fresh_prefix()
    servers = [ServerProcess({"REDIS_URL": url, "REDIS_PREFIX": prefix}) for _ in range(2)]
    try:
        a, b = (server.start() for server in servers)
        since = marker(a)
        waiting = LongPoll(a, since=since, channels="jobs", wait=20)
        waiting.wait_until_taken_in()
        seq = b.publish("job_cancelled", {"job_id": "j"}, channel="jobs")["seq"]
        status, body, elapsed = waiting.result()
        assert status == 200 and elapsed < 10 and [e["seq"] for e in body["items"]] == [seq]
        assert body["epoch"] == b.get("/api/system/status").json()["epoch"]
    finally:
        for server in servers:
            if server.process is not None:
                server.stop()
        drop_prefix(url, prefix)


@pytest.mark.parametrize("worker", ["gevent", "gthread"])
def test_long_poll_ends_early_at_shutdown(make_server, worker):
    server = make_server(WORKER_CLASS=worker)
    since = marker(server)
    waiting = LongPoll(server, since=since, wait=30)
    waiting.wait_until_taken_in()
    assert not waiting.answered_within(0.5)  # held, not answered at once
    sent_at = time.monotonic()
    server.signal(signal.SIGTERM)
    status, body, _ = waiting.result()
    assert time.monotonic() - sent_at < 5  # not held for `wait`, nor the graceful timeout
    assert status == 200 and body["items"] == [] and body["next_since"] == since
    assert server.wait(timeout=12) == 0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("value", ["9" * 4001, str(2**63), "-1", "1.5", "\u00b2", "1e3", " 1"])
def test_since_out_of_range_is_refused_without_echo(server, value):
    response = server.get("/api/events", params={"since": value})
    body = error(response, 422, "validation_error")
    assert "since" in body["fields"] and len(response.content) < 300
    assert "9999999999" not in response.text


def test_largest_since_is_accepted(server):
    body = poll(server, since=2**63 - 1)
    assert body["recovered"] is False and body["next_since"] == body["seq"]
    assert poll(server, since="0" * 30 + "1")["recovered"] in (True, False)


@pytest.mark.parametrize("value", ["31", "-1", "x", "nan", "1e1", "30.5"])
def test_wait_out_of_range_is_refused(server, value):
    error(server.get("/api/events", params={"wait": value}), 422, "validation_error")


def test_concurrent_long_polls_all_see_an_event_published_as_they_start(server):
    # Whichever comes first, the read of the history or the event, each poll sees it: one
    # that read before the event is woken by it, none waits out `wait`.
    since = marker(server)
    results: queue.Queue = queue.Queue()

    def long_poll() -> None:
        try:
            results.put(poll(server, since=since, channels="jobs", wait=20))
        except Exception as exc:  # reported below, not lost in the thread
            results.put(exc)

    threads = [threading.Thread(target=long_poll, daemon=True) for _ in range(12)]
    started = time.monotonic()
    for thread in threads[:6]:
        thread.start()
    seq = server.publish("job_cancelled", {"job_id": "race"}, channel="jobs")["seq"]
    for thread in threads[6:]:
        thread.start()
    answers = [results.get(timeout=15) for _ in threads]
    assert time.monotonic() - started < 10
    assert all(
        not isinstance(a, Exception) and [e["seq"] for e in a["items"]] == [seq] for a in answers
    ), answers
