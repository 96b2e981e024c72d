"""Server-Sent Events: one HTTP response that follows the bus like a WebSocket subscriber
(``GET /api/events/stream``, PROTOCOL.md section 1).

The hub offers each recipient the event's frame (``send``: admitted or refused) and then, once
admitted, the event itself (``Client.on_event``). An SSE stream queues the event, so it writes
the event's JSON text and ``seq`` as they are, with no WebSocket frame to take apart.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from .. import protocol as p
from .facade import Bus
from .hub import Client, Hub

SSE_RETRY_MS = 3000


class _Idle(enum.Enum):
    IDLE = "idle"


IDLE = _Idle.IDLE  # next_event's answer when nothing came within the heartbeat interval


class SseTransport:
    """The events the hub hands one SSE response, queued until its generator writes them. Too
    far behind (``limit`` queued), the queue is dropped and the stream ends (the client resumes
    with ``Last-Event-ID``)."""

    def __init__(self, limit: int):
        self._limit = limit
        self.on_overflow: Callable[[], Any] = lambda: None  # called once the stream is too slow
        self._ready = threading.Condition()  # guards _events, closed and dropped
        self._events: deque[p.BusEvent] = deque()
        self.closed = False
        self.sent = 0  # messages handed to the server for writing (counted by the generator)
        self.dropped = 0  # messages refused or discarded

    def send(self, frame: bytes, direct: bool = True) -> bool:
        """Admit the next event (queued by :meth:`push`), or refuse it: closed, or too slow."""
        with self._ready:
            if self.closed:
                self.dropped += 1
                return False
            if len(self._events) < self._limit:
                return True
            self.dropped += len(self._events) + 1  # slow consumer
            self._events.clear()
            self.closed = True
            self._ready.notify()
        self.on_overflow()
        return False

    def push(self, event: p.BusEvent) -> None:
        """Queue an event :meth:`send` admitted (the hub calls it right after)."""
        with self._ready:
            if self.closed:
                self.dropped += 1
                return
            self._events.append(event)
            self._ready.notify()

    def close(self, code: int, reason: str = "", discard: bool = False) -> bool:
        with self._ready:
            if self.closed:
                return False
            self.closed = True
            if discard:
                self.dropped += len(self._events)
                self._events.clear()
            self._ready.notify()
        return True

    def next_event(self, timeout: float) -> p.BusEvent | _Idle | None:
        """The next queued event; None once closed and drained; :data:`IDLE` after
        ``timeout`` seconds without one."""
        with self._ready:
            if not self._events and not self.closed:
                self._ready.wait(timeout)
            if self._events:
                return self._events.popleft()
            return None if self.closed else IDLE

    def stats(self) -> dict[str, int]:
        with self._ready:
            return {"sent": self.sent, "dropped": self.dropped, "queue_depth": len(self._events)}


def sse_message(text: bytes, seq: int | None) -> str:
    """One SSE message: ``id`` (when there is a seq) and ``data``."""
    return (f"id: {seq}\n" if seq is not None else "") + f"data: {text.decode()}\n\n"


def event_stream(
    bus: Bus,
    channels: list[str] | None,
    client_type: str,
    since: int | None,
    remote_addr: str | None,
    auth: Any = None,
) -> Iterator[str]:
    """The body of an SSE response: ``retry``, the events missed after ``since`` (then
    ``replay_complete``) when given, then live events and heartbeats until the stream ends.

    ``auth``: the claims of the request's token (auth on): the stream ends at their ``exp``
    (after an ``error`` unauthorized message), and their revocation closes it."""
    transport = SseTransport(bus.settings.MAX_QUEUE)
    client = Client(
        transport,
        remote_addr=remote_addr,
        client_type=client_type,
        client_name="sse",
        on_event=transport.push,
        auth=auth,
    )
    transport.on_overflow = lambda: bus.hub.remove(client)  # it leaves the clients list at once
    interval = bus.settings.HEARTBEAT_INTERVAL
    ends = None if auth is None else time.monotonic() + (auth.exp - time.time())
    # The subscriber joins the hub only once the response is being written, and leaves it
    # when the generator ends or is closed (the server closes it when a write fails): a
    # response that is never iterated (HEAD, an error before the body) joins nothing.
    try:
        with bus.paused():  # live events queue up after this; history covers before
            bus.hub.add(client)
            bus.hub.subscribe(client, channels if channels is not None else sorted(p.CHANNELS))
            latest = bus.last_seq
        if bus.stopping.is_set():  # shutdown closed every client before this one joined
            return
        yield f"retry: {SSE_RETRY_MS}\n\n"
        if since is not None:
            missed, complete = bus.history(since) if since <= latest else ([], False)
            for event in missed:
                if event.seq <= latest and Hub.would_receive(client, event):
                    transport.sent += 1
                    yield sse_message(event.payload, event.seq)
            done = p.reply(
                "replay_complete", since=since, to=latest, recovered=complete and since <= latest
            )
            transport.sent += 1
            yield sse_message(p.dumps(done).encode(), None)
        while True:
            wait = interval
            if ends is not None:
                wait = min(interval, ends - time.monotonic())
                if wait <= 0:
                    expired = p.error_reply(p.ErrorCode.UNAUTHORIZED, "token expired")
                    yield sse_message(p.dumps(expired).encode(), None)
                    return
            live = transport.next_event(wait)
            if live is None:
                return
            if live is IDLE:
                yield ": heartbeat\n\n"
                continue
            transport.sent += 1
            yield sse_message(live.payload, live.seq)
    finally:
        bus.hub.remove(client)
        transport.close(p.CloseCode.NORMAL)
