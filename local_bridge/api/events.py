"""The same events over plain HTTP: polling (``GET /api/events``, long polling with ``wait``)
and Server-Sent Events (``GET /api/events/stream``), both served from the bus history
(PROTOCOL.md section 1)."""

from __future__ import annotations

import re
import threading
import time
from itertools import islice
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .. import protocol as p
from ..auth.policy import current_claims
from ..auth.scope import channels_for, client_type_for
from ..bus.facade import Bus
from ..bus.hub import Client, Hub
from ..bus.sse import event_stream
from ..state import state_of
from .envelope import api_error, validation_error
from .pagination import page_params
from .publishing import drafts_of, load_batch

bp = Blueprint("events", __name__, url_prefix="/api/events")
MAX_SEQ = 2**63 - 1
MAX_WAIT = 30  # seconds a long poll may be held
_WAIT = re.compile(r"[0-9]{1,2}(\.[0-9]{1,6})?")


def _channels() -> list[str] | None:
    raw = request.args.get("channels")
    if raw is None or raw.strip() == "":
        return None
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if not p.is_valid_channel(name)]
    if unknown or len(names) > p.MAX_CHANNELS_PER_REQUEST:
        raise validation_error(
            {
                "channels": [
                    f"unknown channel(s): {', '.join(unknown)}" if unknown else "too many channels"
                ]
            }
        )
    return names


def _client_type() -> str:
    value = request.args.get("client_type", p.UNKNOWN_CLIENT_TYPE)
    if not p.CLIENT_TYPE_PATTERN.match(value):
        raise validation_error({"client_type": ["must match ^[a-z][a-z0-9_-]{0,31}$"]})
    return value


def _scope() -> tuple[list[str] | None, str]:
    """The channels and client type a feed asks for, within its token's reach (auth on)."""
    channels, client_type = _channels(), _client_type()
    claims = current_claims()
    if claims is None:
        return channels, client_type
    given = client_type if "client_type" in request.args else None
    return (
        channels_for(claims, channels),
        client_type_for(claims, given) or p.UNKNOWN_CLIENT_TYPE,
    )


def _seq(raw: str, field: str) -> int:
    """A seq given by a client: ASCII digits, 0 to 2^63-1. The message never repeats the
    value, which may be thousands of digits long."""
    if not (raw.isascii() and raw.isdigit()):
        raise validation_error({field: ["must be a non-negative integer"]})
    digits = raw.lstrip("0") or "0"
    if len(digits) > len(str(MAX_SEQ)) or int(digits) > MAX_SEQ:
        raise validation_error({field: [f"must be at most {MAX_SEQ}"]})
    return int(digits)


def _wait() -> float:
    raw = request.args.get("wait")
    if raw is None or raw == "":
        return 0.0
    if not _WAIT.fullmatch(raw) or float(raw) > MAX_WAIT:
        raise validation_error({"wait": [f"must be a number of seconds from 0 to {MAX_WAIT}"]})
    return float(raw)


def _listener(channels: list[str] | None, client_type: str, transport: Any) -> Client:
    """A client that receives what a WebSocket subscriber to ``channels`` would (all main
    channels when none are named), for matching against history and live delivery."""
    client = Client(transport, remote_addr=request.remote_addr, client_type=client_type)
    client.channels = frozenset(channels) if channels is not None else frozenset(p.CHANNELS)
    return client


# --------------------------------------------------------------------------- polling


def _answer(bus: Bus, probe: Client, since: int, epoch: str | None, limit: int) -> dict[str, Any]:
    """The reply to a poll, from the history as it stands now (API.md ``GET /api/events``)."""
    with bus.paused():  # one numbering: the seq and the epoch it belongs to
        current, current_epoch = bus.last_seq, bus.epoch
    if (epoch is not None and epoch != current_epoch) or since > current:
        items: list[dict[str, Any]] = []
        recovered = False  # another numbering (a restart): nothing after `since` is known
    else:
        missed, recovered = bus.history(since)
        # `current` bounds the items: an event numbered meanwhile is in the next answer.
        items = list(
            islice(
                (
                    event.message
                    for event in missed
                    if event.seq <= current and Hub.would_receive(probe, event)
                ),
                limit,
            )
        )
    if recovered:
        next_since = items[-1]["seq"] if items else since
    else:
        next_since = current  # the poller reloads over REST and misses nothing after this
    return {
        "items": items,
        "next_since": next_since,
        "recovered": recovered,
        "seq": current,
        "epoch": current_epoch,
    }


class _Waiter:
    """Wakes a long poll when an event it would return is delivered, or at shutdown. It is a
    hub watcher, not a client: not listed, not counted against ``MAX_CONNECTIONS``."""

    def __init__(self, probe: Client, since: int):
        self.probe, self.since = probe, since
        self.woken = threading.Event()

    def __call__(self, event: p.BusEvent | None) -> None:
        if event is None or (event.seq > self.since and Hub.would_receive(self.probe, event)):
            self.woken.set()


@bp.get("")
def poll():
    """Events after ``since`` that are still held, in seq order; with ``wait``, held until
    there is one (or ``wait`` seconds pass, or the server shuts down)."""
    since = _seq(request.args.get("since") or "0", "since")
    wait = _wait()
    limit, _ = page_params()
    probe = _listener(*_scope(), transport=None)
    epoch = request.args.get("epoch") or None
    bus = state_of(current_app).bus
    if wait <= 0 or bus.stopping.is_set():
        return jsonify(_answer(bus, probe, since, epoch, limit))
    deadline = time.monotonic() + wait
    waiter = _Waiter(probe, since)
    # Watching before reading: an event is either in the history read below or delivered
    # after this point, which wakes the waiter, so none is missed between the two.
    bus.hub.watch(waiter)
    try:
        while True:
            answer = _answer(bus, probe, since, epoch, limit)
            remaining = deadline - time.monotonic()
            if (
                answer["items"]
                or not answer["recovered"]
                or remaining <= 0
                or bus.stopping.is_set()
            ):
                return jsonify(answer)
            waiter.woken.wait(remaining)
            waiter.woken.clear()  # before reading again: a later delivery sets it anew
    finally:
        # Always reached, even when the greenlet or thread is stopped: the request ends
        # within `wait` seconds whether or not its client is still there.
        bus.hub.unwatch(waiter)


# --------------------------------------------------------------------------- SSE


@bp.get("/stream")
def stream():
    """Live events as Server-Sent Events; ``Last-Event-ID`` (or ``since``) resumes."""
    bus = state_of(current_app).bus
    channels, client_type = _scope()
    header = request.headers.get("Last-Event-ID")
    raw_since = header or request.args.get("since")
    since = _seq(raw_since, "Last-Event-ID" if header else "since") if raw_since else None
    if bus.stopping.is_set():
        return api_error(503, "unavailable", "the server is shutting down")
    response = Response(
        event_stream(bus, channels, client_type, since, request.remote_addr, current_claims()),
        mimetype="text/event-stream",
    )
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    return response


@bp.post("/batch")
def batch():
    """Publish up to 500 events at once (admin): all checked first, then each published in the
    given order with its own seq; one wrong event refuses the whole batch (API.md)."""
    bus = state_of(current_app).bus
    published = bus.publish_many(drafts_of(bus, load_batch()))
    return jsonify(
        {
            "seqs": [one.seq for one in published],
            "recipients": [one.recipients for one in published],
        }
    ), 202
