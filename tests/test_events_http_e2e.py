"""Polling and SSE fallbacks (PROTOCOL.md section 1) agree with the WebSocket stream."""
from __future__ import annotations

import json
import queue
import signal
import threading

import requests

from support import marker


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
        self.response.close()


def test_polling_returns_what_the_websocket_saw(server, connect):
    client = connect()
    client.register("web", "w")
    client.subscribe("jobs", "photos:9")
    since = marker(server)
    client.recv()
    published = [server.publish("job_cancelled", {"job_id": "p1"}, channel="jobs")["seq"],
                 server.publish("photo_approved", {"photo_id": "9"}, channel="photos")["seq"],
                 server.publish("photo_approved", {"photo_id": "8"}, channel="photos")["seq"],
                 server.publish("web.note", {}, client_types=["web"])["seq"]]
    ws_seen = [m for m in client.until(lambda m: m["seq"] == published[-1])]
    polled = server.get("/api/events", params={"since": since, "channels": "jobs,photos:9",
                                               "client_type": "web"}).json()
    assert polled["items"] == ws_seen
    assert polled["next_since"] == published[-1] and polled["recovered"] is True
    page = server.get("/api/events", params={"since": since, "channels": "jobs,photos:9",
                                             "client_type": "web", "limit": 1}).json()
    assert [e["seq"] for e in page["items"]] == [published[0]] and page["next_since"] == published[0]
    empty = server.get("/api/events", params={"since": published[-1], "channels": "queue"}).json()
    assert empty["items"] == [] or all(e["channel"] is None for e in empty["items"])
    assert empty["next_since"] == (empty["items"][-1]["seq"] if empty["items"] else published[-1])


def test_polling_bad_input(server):
    for params, field in (({"since": "x"}, "since"), ({"channels": "jobs,nope"}, "channels"),
                          ({"client_type": "BAD"}, "client_type")):
        response = server.get("/api/events", params=params)
        assert response.status_code == 422 and field in response.json()["error"]["fields"]
    assert server.get("/api/events", params={"since": 0, "epoch": "other"}).json()["recovered"] is False


def test_polling_reports_trimmed_history(make_server):
    server = make_server(HISTORY_SIZE=3)
    seqs = [server.publish("job_cancelled", {"job_id": str(i)}, channel="jobs")["seq"] for i in range(6)]
    body = server.get("/api/events", params={"since": 0}).json()
    assert body["recovered"] is False and [e["seq"] for e in body["items"]] == seqs[-3:]


def test_sse_stream_resumes_with_last_event_id_then_goes_live(server, connect):
    client = connect()
    client.subscribe("jobs")
    since = marker(server)
    client.recv()
    missed = [server.publish("job_cancelled", {"job_id": f"s{i}"}, channel="jobs")["seq"] for i in range(3)]
    sse = SseClient(server.http + "/api/events/stream", params={"channels": "jobs"},
                    headers={"Last-Event-ID": str(since)})
    assert sse.response.status_code == 200
    assert sse.response.headers["Content-Type"].startswith("text/event-stream")
    replayed = [sse.next() for _ in range(3)]
    assert [(int(i), m["seq"]) for i, m in replayed] == list(zip(missed, missed))
    done_id, done = sse.next()
    assert (done_id, done["type"], done["recovered"], done["to"]) == (None, "replay_complete", True, missed[-1])
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
