"""The same events over plain HTTP: polling (``GET /api/events``) and Server-Sent Events
(``GET /api/events/stream``), both served from the bus history (PROTOCOL.md section 1)."""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterator

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context

from .. import protocol as p
from ..bus.hub import Client, Hub
from .errors import api_error, validation_error
from .pagination import page_params

bp = Blueprint("events", __name__, url_prefix="/api/events")
SSE_RETRY_MS = 3000


def _state():
    return current_app.extensions["local_bridge"]


def _channels() -> list[str] | None:
    raw = request.args.get("channels")
    if raw is None or raw.strip() == "":
        return None
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if not p.is_valid_channel(name)]
    if unknown or len(names) > p.MAX_CHANNELS_PER_REQUEST:
        raise validation_error({"channels": [f"unknown channel(s): {', '.join(unknown)}"
                                             if unknown else "too many channels"]})
    return names


def _client_type() -> str:
    value = request.args.get("client_type", p.UNKNOWN_CLIENT_TYPE)
    if not p.CLIENT_TYPE_PATTERN.match(value):
        raise validation_error({"client_type": ["must match ^[a-z][a-z0-9_-]{0,31}$"]})
    return value


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise validation_error({name: ["must be a non-negative integer"]})
    return int(raw)


def _listener(channels: list[str] | None, client_type: str, transport: Any) -> Client:
    """A client that receives what a WebSocket subscriber to ``channels`` would (all main
    channels when none are named), for matching against history and live delivery."""
    client = Client(transport, remote_addr=request.remote_addr, client_type=client_type)
    client.channels = frozenset(channels) if channels is not None else frozenset(p.CHANNELS)
    return client


@bp.get("")
def poll():
    """Events after ``since`` that are still held, in seq order."""
    since = _int_arg("since", 0)
    limit, _ = page_params()
    backplane = _state().publisher.backplane
    epoch = request.args.get("epoch")
    same_epoch = epoch is None or epoch == backplane.epoch
    probe = _listener(_channels(), _client_type(), transport=None)
    missed, complete = backplane.history(since) if same_epoch else ([], False)
    items = [event.message for event in missed if Hub.would_receive(probe, event)][:limit]
    return jsonify({"items": items, "next_since": items[-1]["seq"] if items else since,
                    "recovered": same_epoch and complete and since <= backplane.last_seq})


class _SseTransport:
    """Queues event payloads for one SSE response; too far behind, the stream ends."""

    def __init__(self, limit: int):
        self.queue: queue.Queue[bytes | None] = queue.Queue()
        self._limit = limit
        self._lock = threading.Lock()  # guards closed
        self.closed = False

    def send(self, frame: bytes, direct: bool = True) -> bool:
        with self._lock:
            if self.closed:
                return False
            if self.queue.qsize() >= self._limit:  # slow consumer: it reconnects and resumes
                self.closed = True
                self.queue.put(None)
                return False
        self.queue.put(p.frame_payload(frame))
        return True

    def close(self, code: int, reason: str = "", discard: bool = False) -> bool:
        with self._lock:
            if self.closed:
                return False
            self.closed = True
        self.queue.put(None)
        return True

    def stats(self) -> dict[str, int]:
        return {"sent": 0, "dropped": 0, "queue_depth": self.queue.qsize()}


def _sse(payload: bytes, seq: int | None) -> str:
    text = payload.decode()
    return (f"id: {seq}\n" if seq is not None else "") + f"data: {text}\n\n"


@bp.get("/stream")
def stream():
    """Live events as Server-Sent Events; ``Last-Event-ID`` (or ``since``) resumes."""
    state = _state()
    bus, backplane = state.ws_server, state.publisher.backplane
    channels, client_type = _channels(), _client_type()
    last_id = request.headers.get("Last-Event-ID") or request.args.get("since")
    if last_id is not None and not str(last_id).isdigit():
        raise validation_error({"Last-Event-ID": ["must be an event id (a seq)"]})
    if bus.stopping.is_set():
        return api_error(503, "unavailable", "the server is shutting down")
    transport = _SseTransport(state.settings.MAX_QUEUE)
    client = Client(transport, remote_addr=request.remote_addr, client_type=client_type,
                    client_name="sse")
    with backplane.paused():  # live events queue up after this point; history covers before
        bus.hub.add(client)
        bus.hub.subscribe(client, channels if channels is not None else sorted(p.CHANNELS))
        latest = backplane.last_seq
    interval = state.settings.HEARTBEAT_INTERVAL

    def events() -> Iterator[str]:
        try:
            yield f"retry: {SSE_RETRY_MS}\n\n"
            if last_id is not None:
                since = int(last_id)
                missed, complete = backplane.history(since)
                for event in missed:
                    if event.seq <= latest and Hub.would_receive(client, event):
                        yield _sse(p.frame_payload(event.frame), event.seq)
                done = p.reply("replay_complete", since=since, to=latest,
                               recovered=complete and since <= latest)
                yield _sse(p.dumps(done).encode(), None)
            while True:
                try:
                    payload = transport.queue.get(timeout=interval)
                except queue.Empty:
                    yield ": heartbeat\n\n"
                    continue
                if payload is None:
                    return
                yield _sse(payload, _seq_of(payload))
        finally:
            bus.hub.remove(client)
            transport.close(p.CloseCode.NORMAL)

    response = Response(stream_with_context(events()), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    return response


def _seq_of(payload: bytes) -> int | None:
    # Events are framed as {"type":...,"timestamp":...,"channel":...,"seq":N,...}: find N
    # without parsing the whole event.
    start = payload.find(b'"seq":')
    if start < 0:
        return None
    end = start + 6
    while end < len(payload) and payload[end:end + 1].isdigit():
        end += 1
    digits = payload[start + 6:end]
    return int(digits) if digits else None
