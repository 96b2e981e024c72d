"""``follow_job``: one job's progress stream (``/ws/jobs/<id>``, PROTOCOL.md section 4) as an
iterator that starts again with a fresh snapshot when the stream drops before the job ends."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from .backoff import Backoff, Reconnect, Unrecoverable, classify
from .connection import NO_CLOSE_FRAME, BusClient, BusError, ConnectionClosed, HandshakeError

log = logging.getLogger(__name__)

TERMINAL_TYPES = frozenset({"job_completed", "job_failed", "job_cancelled"})
#: Seconds without a frame after which a job stream counts as dead (the stream does not say
#: its heartbeat interval: two of the default 30 s, plus a margin).
JOB_STREAM_READ_DEADLINE = 75.0


def job_stream_url(url: str, job_id: str) -> str:
    """``ws://host:port/ws/jobs/<id>`` from the server's base URL (http, https, ws or wss, with
    or without the ``/ws`` path)."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"not an http(s):// or ws(s):// URL: {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/ws"):
        path = path[: -len("/ws")]
    return urlunsplit((scheme, parts.netloc, f"{path}/ws/jobs/{quote(job_id, safe='')}", "", ""))


def follow_job(
    url: str,
    job_id: str,
    *,
    token: str | Callable[[], str] | None = None,
    timeout: float = 10.0,
    backoff: Backoff | None = None,
    read_deadline: float = JOB_STREAM_READ_DEADLINE,
) -> Iterator[dict[str, Any]]:
    """One job's messages: the ``job_status`` snapshot, then its events, ending after the terminal
    one (job_completed, job_failed or job_cancelled). When the stream drops before that, it
    reconnects (with backoff) and starts again with a fresh snapshot. An unknown job raises
    :class:`Unrecoverable` (4004), as do the other stopping close codes; a first connection that
    fails raises its :class:`OSError`. ``token`` (a string or a callable returning one) goes in
    the URL: a job stream sends its snapshot first, before any message could authenticate."""
    backoff = backoff or Backoff()
    stream_url = job_stream_url(url, job_id)
    attempt, streamed = 0, False
    code: int | None = NO_CLOSE_FRAME
    while True:
        if attempt:
            time.sleep(backoff.delay(attempt - 1, code))
        attempt += 1
        current = token() if callable(token) else token
        try:
            stream = BusClient(stream_url, timeout=timeout, token=current, greeting="job_status")
        except BusError as exc:  # the first message was an error, not the snapshot
            if exc.reply.get("code") == "job_not_found":
                raise Unrecoverable(4004, f"job {job_id} not found") from None
            raise
        except ConnectionClosed as exc:
            if classify(exc.code) is Reconnect.STOP:
                raise Unrecoverable(exc.code) from None
            code = exc.code or NO_CLOSE_FRAME
            continue
        except HandshakeError as exc:
            if exc.status in (401, 403, 404):
                raise Unrecoverable(
                    {401: 4001, 403: 4003}.get(exc.status, 4004), str(exc)
                ) from None
            code = NO_CLOSE_FRAME
            continue
        except OSError:
            if not streamed:  # nothing there to begin with: say so rather than wait
                raise
            code = NO_CLOSE_FRAME
            continue
        with stream:
            streamed = True
            attempt = 1  # connected: the next drop starts the backoff again
            yield stream.hello
            code = yield from _job_events(stream, read_deadline)
            if code is None:
                return
        if code == 1000 or classify(code) is not Reconnect.STOP:
            log.info("job stream of %s dropped (close code %s): starting again", job_id, code)
            continue
        raise Unrecoverable(code)


def _job_events(
    stream: BusClient, read_deadline: float
) -> Generator[dict[str, Any], None, int | None]:
    """The stream's events (heartbeats answered, not yielded) up to the terminal one (then
    None), or the close code of a stream that ended first."""
    while True:
        wait = stream.last_received + read_deadline - time.monotonic()
        try:
            message = stream.receive(max(0.0, wait))
        except TimeoutError:
            if time.monotonic() >= stream.last_received + read_deadline:
                stream.abort()
                return NO_CLOSE_FRAME
            continue
        except ConnectionClosed as exc:
            return exc.code
        kind = message.get("type")
        if kind == "heartbeat":
            try:
                stream.send({"type": "pong"})
            except (ConnectionClosed, OSError):
                pass
            continue
        yield message
        if kind in TERMINAL_TYPES:
            return None
