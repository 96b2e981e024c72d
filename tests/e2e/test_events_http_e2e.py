"""Polling and SSE fallbacks (PROTOCOL.md section 1) agree with the WebSocket stream."""

from __future__ import annotations

import json
import queue
import signal
import socket
import threading

import pytest
import requests

from support import error, marker


class SseClient:
    """Reads a text/event-stream response in a thread; messages arrive on a queue."""

    def __init__(self, url: str, **kwargs):
        self.response = requests.get(url, stream=True, timeout=10, **kwargs)
        self.messages: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer, fields = "", {}
        try:
            for chunk in self.response.iter_content(chunk_size=None, decode_unicode=True):
                buffer += chunk
                while "\n" in buffer:
                    line, buffer = buffer.split("\n", 1)
                    if line == "":
                        if "data" in fields:
                            self.messages.put((fields.get("id"), json.loads(fields["data"])))
                        fields = {}
                    elif line.startswith(":"):
                        self.messages.put(("comment", line))
                    else:
                        key, _, value = line.partition(":")
                        fields[key] = value.lstrip(" ")
        except requests.RequestException:
            pass
        self.messages.put(("end", None))

    def next(self, timeout: float = 10) -> tuple:
        while True:
            item = self.messages.get(timeout=timeout)
            if item[0] != "comment":
                return item

    def close(self) -> None:
        # Closing the response waits for the reader thread's read to end (the buffered
        # reader's lock): shut the socket down first so that it ends at once.
        try:
            self.response.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError):
            pass
        self.response.close()


def test_polling_returns_what_the_websocket_saw(server, connect):
    client = connect()
    client.register("web", "w")
    client.subscribe("jobs", "photos:9")
    since = marker(server)
    client.recv()
    published = [
        server.publish("job_cancelled", {"job_id": "p1"}, channel="jobs")["seq"],
        server.publish("photo_approved", {"photo_id": "9"}, channel="photos")["seq"],
        server.publish("photo_approved", {"photo_id": "8"}, channel="photos")["seq"],
        server.publish("web.note", {}, client_types=["web"])["seq"],
    ]
    ws_seen = [m for m in client.until(lambda m: m["seq"] == published[-1])]
    polled = server.get(
        "/api/events", params={"since": since, "channels": "jobs,photos:9", "client_type": "web"}
    ).json()
    assert polled["items"] == ws_seen
    assert polled["next_since"] == published[-1] and polled["recovered"] is True
    page = server.get(
        "/api/events",
        params={"since": since, "channels": "jobs,photos:9", "client_type": "web", "limit": 1},
    ).json()
    assert [e["seq"] for e in page["items"]] == [published[0]] and page["next_since"] == published[
        0
    ]
    empty = server.get("/api/events", params={"since": published[-1], "channels": "queue"}).json()
    assert empty["items"] == [] or all(e["channel"] is None for e in empty["items"])
    assert empty["next_since"] == (empty["items"][-1]["seq"] if empty["items"] else published[-1])


def test_polling_bad_input(server):
    for params, field in (
        ({"since": "x"}, "since"),
        ({"channels": "jobs,nope"}, "channels"),
        ({"client_type": "BAD"}, "client_type"),
    ):
        response = server.get("/api/events", params=params)
        assert response.status_code == 422 and field in response.json()["error"]["fields"]
    assert (
        server.get("/api/events", params={"since": 0, "epoch": "other"}).json()["recovered"]
        is False
    )


def test_polling_reports_trimmed_history(make_server):
    server = make_server(HISTORY_SIZE=3)
    seqs = [
        server.publish("job_cancelled", {"job_id": str(i)}, channel="jobs")["seq"] for i in range(6)
    ]
    body = server.get("/api/events", params={"since": 0}).json()
    assert body["recovered"] is False and [e["seq"] for e in body["items"]] == seqs[-3:]


def test_sse_stream_resumes_with_last_event_id_then_goes_live(server, connect):
    client = connect()
    client.subscribe("jobs")
    since = marker(server)
    client.recv()
    missed = [
        server.publish("job_cancelled", {"job_id": f"s{i}"}, channel="jobs")["seq"]
        for i in range(3)
    ]
    sse = SseClient(
        server.http + "/api/events/stream",
        params={"channels": "jobs"},
        headers={"Last-Event-ID": str(since)},
    )
    assert sse.response.status_code == 200
    assert sse.response.headers["Content-Type"].startswith("text/event-stream")
    replayed = [sse.next() for _ in range(3)]
    assert [(int(i), m["seq"]) for i, m in replayed] == list(zip(missed, missed))
    done_id, done = sse.next()
    assert (done_id, done["type"], done["recovered"], done["to"]) == (
        None,
        "replay_complete",
        True,
        missed[-1],
    )
    live = server.publish("job_cancelled", {"job_id": "live"}, channel="jobs")["seq"]
    live_id, event = sse.next()
    ws_seen = client.until(lambda m: m["seq"] == live)
    assert int(live_id) == live and event == ws_seen[-1]
    sse.close()


def test_sse_heartbeat_comments_and_shutdown_ends_the_stream(make_server):
    server = make_server(HEARTBEAT_INTERVAL=0.2)
    sse = SseClient(server.http + "/api/events/stream")
    assert sse.messages.get(timeout=5) == ("comment", ": heartbeat")
    seq = server.publish("system_status", {"status": "ok"})["seq"]
    assert sse.next()[1]["seq"] == seq
    server.signal(signal.SIGTERM)
    assert sse.next() == ("end", None)
    assert server.wait(timeout=12) == 0


def sse_clients(server) -> list[dict]:
    items = server.get("/api/websocket/clients").json()["items"]
    return [c for c in items if c["client_name"] == "sse"]


def test_head_on_the_stream_leaves_no_subscriber(make_server):
    server = make_server(MAX_CONNECTIONS=5)
    for _ in range(6):
        response = requests.head(server.http + "/api/events/stream", timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
    assert server.get("/api/websocket/clients").json()["items"] == []
    client = server.client()  # not refused with 503: the HEADs hold no connection
    seq = marker(server)
    assert client.recv()["seq"] == seq
    client.close()


def test_sse_clients_list_counts_what_the_stream_sent(make_server):
    server = make_server()
    since = marker(server)
    missed = [
        server.publish("job_cancelled", {"job_id": f"m{i}"}, channel="jobs")["seq"]
        for i in range(2)
    ]
    sse = SseClient(
        server.http + "/api/events/stream",
        params={"channels": "jobs"},
        headers={"Last-Event-ID": str(since)},
    )
    assert [int(sse.next()[0]) for _ in range(2)] == missed
    assert sse.next()[1]["type"] == "replay_complete"
    live = server.publish("job_cancelled", {"job_id": "live"}, channel="jobs")["seq"]
    assert int(sse.next()[0]) == live
    [listed] = sse_clients(server)
    assert (listed["sent"], listed["dropped"], listed["queue_depth"]) == (4, 0, 0)
    assert listed["channels"] == ["jobs"]
    sse.close()


def test_a_stalled_sse_stream_shows_its_queue_then_leaves_the_list(make_server):
    server = make_server(MAX_QUEUE=4)
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and it never reads on
    reader.settimeout(10)
    reader.connect(("127.0.0.1", server.port))
    reader.sendall(b"GET /api/events/stream?channels=jobs HTTP/1.1\r\nHost: localhost\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:  # the response has begun: the subscriber is in the hub
        head += reader.recv(1)
    assert head.startswith(b"HTTP/1.1 200")
    blob = "x" * 200_000
    depths = []
    for i in range(200):  # ~40 MB at most; the kernel's buffers fill long before
        server.publish("test.big", {"blob": blob, "i": i}, channel="jobs")
        listed = sse_clients(server)
        if not listed:
            break
        depths.append(listed[0]["queue_depth"])
        assert listed[0]["dropped"] == 0
    else:
        pytest.fail("the stalled stream never left the clients list")
    assert max(depths) >= 3  # events waiting behind the full socket, as listed
    reader.close()


@pytest.mark.parametrize(
    "headers, params, field",
    [
        ({"Last-Event-ID": "9" * 4001}, {}, "Last-Event-ID"),
        ({"Last-Event-ID": str(2**63)}, {}, "Last-Event-ID"),
        ({}, {"since": "9" * 4001}, "since"),
        ({}, {"since": "\u00b2"}, "since"),
    ],
)
def test_sse_since_out_of_range_is_refused_without_echo(server, headers, params, field):
    response = requests.get(
        server.http + "/api/events/stream", headers=headers, params=params, timeout=10
    )
    body = error(response, 422, "validation_error")
    assert field in body["fields"] and len(response.content) < 300
