"""``Bridge``: a connection to the bus that keeps itself up.

One background thread owns the connection: it answers heartbeats, notices a peer gone silent
(the read deadline), refreshes the token before it expires, and after a drop reconnects with
backoff (per close code, :mod:`.backoff`) and resumes with ``since`` + ``epoch``, so nothing is
lost and nothing is delivered twice (events at or below the last seq seen are dropped).

    with Bridge("ws://127.0.0.1:5100/ws", channels=["jobs"]) as bridge:
        for event in bridge.events():
            print(event["type"], event.get("seq"))
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from .backoff import Backoff, Reconnect, Unrecoverable, classify
from .connection import NO_CLOSE_FRAME, BusClient, BusError, ConnectionClosed, HandshakeError

log = logging.getLogger(__name__)

DEFAULT_URL = "ws://127.0.0.1:5100/ws"
DEFAULT_BACKOFF = Backoff()
REFRESH_AT = 0.8  # of a token's remaining lifetime: when it is replaced
Token = str | Callable[[], str] | None
Handler = Callable[[dict[str, Any]], object]
State = Literal["idle", "connecting", "connected", "reconnecting", "closed"]
_END = object()  # queued for events() when the bridge has stopped


class ResyncRequired(Exception):
    """History could not fill the gap of a reconnect (``recovered: false``): reload the state
    over REST. Raised by :meth:`Bridge.events` only with ``raise_on_resync=True``; ``info`` is
    the ``replay_complete`` message. Iterating again goes on with the live events."""

    def __init__(self, info: dict[str, Any]):
        super().__init__(
            f"events after seq {info.get('since')} are no longer available: reload over REST"
        )
        self.info = info


class Bridge:
    """A bus connection that reconnects and resumes by itself.

    ``token``: a string, or a callable returning a fresh one (called on every connect and
    refresh; only a callable lets a long connection outlive its first token). ``auth``:
    ``"message"`` sends it in an ``authenticate`` message (out of URLs and their logs), ``"query"``
    as ``?token=``. ``since``/``epoch`` start from a point of history. ``read_deadline``: seconds
    without a frame after which the connection counts as dead (default: two heartbeat intervals
    of the server plus a margin). ``queue_events=False`` for callback-only use (nothing is kept
    for :meth:`events`). Callbacks run on the bridge's thread: keep them short.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        channels: Iterable[str] = ("jobs",),
        client_type: str = "script",
        client_name: str = "local_bridge client",
        token: Token = None,
        since: int | None = None,
        epoch: str | None = None,
        timeout: float = 10.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        read_deadline: float | None = None,
        auth: Literal["message", "query"] = "message",
        queue_events: bool = True,
        raise_on_resync: bool = False,
    ):
        if auth not in ("message", "query"):
            raise ValueError(f"auth must be 'message' or 'query', not {auth!r}")
        self.url = url
        self.client_type = client_type
        self.client_name = client_name
        self.timeout = timeout
        self.backoff = backoff
        self.read_deadline = read_deadline
        self.auth = auth
        self.raise_on_resync = raise_on_resync
        #: True after a ``recovered: false``, until the application sets it back to False.
        self.needs_resync = False
        #: ``recovered`` of the last ``replay_complete`` (None before any resume).
        self.last_recovered: bool | None = None
        #: The close code of the last connection lost (None before any).
        self.last_close_code: int | None = None
        #: How many times the connection was re-established.
        self.reconnects = 0
        self._token = token
        self._channels: list[str] = list(dict.fromkeys(channels))
        self._seq = since
        self._epoch = epoch
        self._client_id: str | None = None
        self._state: State = "idle"
        self._error: Unrecoverable | None = None
        self._lock = threading.RLock()
        self._bus: BusClient | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._events: queue.Queue[Any] | None = queue.Queue() if queue_events else None
        self._handlers: dict[str, list[Handler]] = collections.defaultdict(list)
        self._resync_handlers: list[Handler] = []
        self._state_handlers: list[Callable[[str], object]] = []
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._replaying = False  # between a subscribe with `since` and its replay_complete
        self._connection_epoch: str | None = None
        self._heartbeat_interval = 30.0
        self._refresh_at: float | None = None  # time.monotonic() when the token is replaced
        self._expires_at: float | None = None  # the current token's exp (seconds since 1970)

    # ------------------------------------------------------------------ public state

    @property
    def seq(self) -> int | None:
        """The last seq seen (what a resume asks to continue after)."""
        return self._seq

    @property
    def epoch(self) -> str | None:
        """The history id ``seq`` belongs to."""
        return self._epoch

    @property
    def client_id(self) -> str | None:
        """This connection's id on the server (a new one after each reconnect)."""
        return self._client_id

    @property
    def state(self) -> State:
        """idle, connecting, connected, reconnecting or closed."""
        return self._state

    @property
    def connected(self) -> bool:
        return self._state == "connected"

    @property
    def channels(self) -> list[str]:
        """The channels subscribed to on every (re)connect."""
        with self._lock:
            return list(self._channels)

    @property
    def error(self) -> Unrecoverable | None:
        """Why the bridge stopped by itself, if it did."""
        return self._error

    # ------------------------------------------------------------------ callbacks

    def on(self, event_type: str, callback: Handler) -> Callable[[], None]:
        """Call ``callback(message)`` for each message of ``event_type`` (``"*"``: every event
        that :meth:`events` yields); other message types (``error``, ``heartbeat``,
        ``refreshed`` ...) may be named too. Returns a function that removes the callback."""
        with self._lock:
            self._handlers[event_type].append(callback)

        def remove() -> None:
            with self._lock:
                if callback in self._handlers[event_type]:
                    self._handlers[event_type].remove(callback)

        return remove

    def on_resync(self, callback: Handler) -> None:
        """Call ``callback(replay_complete)`` when a resume reports ``recovered: false``."""
        with self._lock:
            self._resync_handlers.append(callback)

    def on_state(self, callback: Callable[[str], object]) -> None:
        """Call ``callback(state)`` on each change: connecting, connected, reconnecting,
        closed."""
        with self._lock:
            self._state_handlers.append(callback)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Bridge:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> Bridge:
        """Open the first connection (authenticated, registered, subscribed) on this thread, then
        hand it to the background thread. Raises what prevented it: :class:`OSError` (refused,
        timed out), :class:`HandshakeError`, :class:`BusError`, :class:`Unrecoverable`."""
        with self._lock:
            if self._state != "idle":
                raise RuntimeError(f"this Bridge is already {self._state}")
        self._set_state("connecting")
        try:
            bus = self._open()
        except BaseException:
            self._finish()
            raise
        self._thread = threading.Thread(
            target=self._run, args=(bus,), daemon=True, name=f"Bridge {self.url}"
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Close the connection and stop the background thread; harmless twice."""
        self._stop.set()
        with self._lock:
            bus = self._bus
        if bus is not None:
            bus.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.timeout + 5)
        if thread is None:
            self._finish()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the bridge stops (True) or ``timeout`` passes (False); raise
        :class:`Unrecoverable` when it stopped on a close code that forbids reconnecting."""
        done = self._done.wait(timeout)
        if done and self._error is not None:
            raise self._error
        return done

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, channels: Iterable[str]) -> dict[str, Any] | None:
        """Add ``channels`` (kept across reconnects). While connected, wait for the server's
        ``subscribed`` reply and return it (:class:`BusError` if it refused some: the rest
        apply); otherwise (or when called from a callback) return None at once."""
        names = list(channels)
        with self._lock:
            self._channels.extend(c for c in names if c not in self._channels)
        reply = self._request({"type": "subscribe", "channels": names}, "subscribed")
        if reply is not None and reply.get("error") is not None:
            with self._lock:  # refused names are not asked for again
                granted = set(reply["reply"].get("channels", ()))
                self._channels = [c for c in self._channels if c not in names or c in granted]
            raise BusError(reply["error"])
        return None if reply is None else reply["reply"]

    def unsubscribe(self, channels: Iterable[str]) -> dict[str, Any] | None:
        """Remove ``channels``; the ``unsubscribed`` reply while connected, else None."""
        names = list(channels)
        with self._lock:
            self._channels = [c for c in self._channels if c not in names]
        reply = self._request({"type": "unsubscribe", "channels": names}, "unsubscribed")
        return None if reply is None else reply["reply"]

    def _request(self, message: dict[str, Any], expect: str) -> dict[str, Any] | None:
        waiter = _Waiter(expect, message["type"])
        with self._lock:
            bus = self._bus
            if bus is None or self._state != "connected":
                return None  # the next connection subscribes to self._channels
            on_own_thread = threading.current_thread() is self._thread
            if not on_own_thread:
                self._waiters.append(waiter)
            try:
                bus.send(message)
            except (ConnectionClosed, OSError):
                return None
        if on_own_thread:  # a callback: the reply can only be read after it returns
            return None
        waiter.done.wait(self.timeout)
        return waiter.result

    # ------------------------------------------------------------------ events

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Bus events and ``replay_complete`` messages as they arrive, across reconnects; ends
        when the bridge is closed; raises :class:`Unrecoverable` when it stopped on a close
        code that forbids reconnecting, :class:`TimeoutError` when ``timeout`` seconds pass
        without anything (and, with ``raise_on_resync``, :class:`ResyncRequired`)."""
        if self._events is None:
            raise RuntimeError("this Bridge was made with queue_events=False: use on()")
        if self._state == "idle":
            raise RuntimeError("connect() first")
        return self._iterate(self._events, timeout)

    def _iterate(self, events: queue.Queue[Any], timeout: float | None) -> Iterator[dict[str, Any]]:
        while True:
            try:
                item = events.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no event within {timeout:g} s") from None
            if item is _END:
                events.put(_END)  # later calls end too
                if self._error is not None:
                    raise self._error
                return
            if isinstance(item, ResyncRequired):
                raise item
            yield item

    # ------------------------------------------------------------------ the connection

    def _current_token(self) -> str | None:
        token = self._token
        return token() if callable(token) else token

    def _open(self) -> BusClient:
        """One connection, authenticated, registered and subscribed (resuming when a seq is
        known); messages up to ``subscribed`` are handled here. Raises :class:`Unrecoverable`
        for what retrying cannot mend."""
        token = self._current_token()
        url = self.url
        if token is not None and self.auth == "query":
            url += ("&" if urlsplit(url).query else "?") + urlencode({"token": token})
        try:
            bus = BusClient(url, timeout=self.timeout)
        except ConnectionClosed as exc:
            raise _stop_or_retry(exc.code) from None
        except HandshakeError as exc:
            code = {401: 4001, 403: 4003, 404: 4004}.get(exc.status)
            if code is not None:  # the same answer next time
                raise Unrecoverable(code, str(exc)) from None
            raise
        try:
            self._setup(bus, token)
        except BaseException:
            bus.abort()
            raise
        return bus

    def _setup(self, bus: BusClient, token: str | None) -> None:
        hello = bus.hello
        self._heartbeat_interval = float(hello.get("heartbeat_interval") or 30.0)
        self._connection_epoch = hello.get("epoch")
        self._refresh_at = None
        try:
            if hello.get("auth") == "token":
                if token is None:
                    raise Unrecoverable(4001, "the server requires a token")
                expires_at = None
                if self.auth == "message":
                    expires_at = _timestamp(bus.authenticate(token).get("expires_at"))
                self._schedule_refresh(expires_at or _jwt_expiry(token))
            bus.register(self.client_type, self.client_name)
            with self._lock:
                channels = list(self._channels)
            resume: dict[str, Any] = {}
            if self._seq is not None:
                if self._epoch is None:  # a `since` given alone: in this server's history
                    self._epoch = self._connection_epoch
                resume = {"since": self._seq, "epoch": self._epoch}
            self._replaying = bool(resume)
            bus.send({"type": "subscribe", "channels": channels, **resume})
            while True:  # up to `subscribed`; events before it are handled as usual
                message = bus.receive(self.timeout)
                self._handle(bus, message)
                if message.get("type") == "subscribed":
                    break
                if message.get("type") == "error" and message.get("request_type") == "subscribe":
                    if message.get("code") == "invalid_message":  # refused whole: no reply follows
                        raise BusError(message)
        except ConnectionClosed as exc:
            if isinstance(exc, Unrecoverable):
                raise
            raise _stop_or_retry(exc.code) from None
        with self._lock:
            self._bus = bus
            self._client_id = hello.get("client_id")
            if self._stop.is_set():  # closed meanwhile
                self._bus = None
                bus.close()
                raise ConnectionClosed(1000)
            if self._thread is not None:  # the first connection is made before the thread
                self.reconnects += 1
        self._set_state("connected")

    def _run(self, bus: BusClient) -> None:
        """The background thread: serve the connection; after a drop, reconnect or stop."""
        attempt = 0
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                code: int | None = self._serve(bus)
                self.last_close_code = code
                if self._stop.is_set():
                    return
                # A token that expired may be replaced by a fresh one: one more try tells.
                retry_token = code == 4001 and callable(self._token)
                if classify(code) is Reconnect.STOP and not retry_token:
                    self._error = Unrecoverable(code)
                    return
                if time.monotonic() - started >= self.backoff.reset_after:
                    attempt = 0
                self._set_state("reconnecting")
                log.info("connection lost (close code %s): reconnecting", code)
                while True:
                    if self._stop.wait(self.backoff.delay(attempt, code)):
                        return
                    attempt += 1
                    try:
                        bus = self._open()
                        break
                    except Unrecoverable as exc:
                        self._error = exc
                        return
                    except ConnectionClosed as exc:
                        if self._stop.is_set():
                            return
                        code = exc.code
                    except HandshakeError as exc:  # a 5xx while it restarts; 429: too often
                        log.info("reconnect attempt %d failed: %s", attempt, exc)
                        code = 4029 if exc.status == 429 else NO_CLOSE_FRAME
                    except (OSError, BusError) as exc:  # refused, timed out ...
                        log.info("reconnect attempt %d failed: %s", attempt, exc)
                        code = NO_CLOSE_FRAME
                    except Exception:  # the token callable failed, say: try again later
                        log.warning("reconnect attempt %d failed", attempt, exc_info=True)
                        code = NO_CLOSE_FRAME
        except Exception:  # a bug must not leave events() waiting for ever
            log.exception("the bridge's thread failed")
            self._error = Unrecoverable(None, "the bridge's thread failed")
        finally:
            self._finish()

    def _serve(self, bus: BusClient) -> int:
        """Read until the connection ends; its close code (1006 when the read deadline
        passed)."""
        deadline = self.read_deadline or 2 * self._heartbeat_interval + max(
            2.0, self._heartbeat_interval / 2
        )
        try:
            while True:
                now = time.monotonic()
                wake = bus.last_received + deadline
                if self._refresh_at is not None:
                    wake = min(wake, self._refresh_at)
                try:
                    message = bus.receive(max(0.0, wake - now))
                except TimeoutError:
                    now = time.monotonic()
                    if now >= bus.last_received + deadline:
                        log.info("no frame for %.1f s: the connection is dead", deadline)
                        bus.abort()
                        return NO_CLOSE_FRAME
                    if self._refresh_at is not None and now >= self._refresh_at:
                        self._refresh(bus)
                    continue
                self._handle(bus, message)
        except ConnectionClosed as exc:
            return NO_CLOSE_FRAME if exc.code is None else exc.code
        except OSError:  # a send failed: the connection is gone
            return NO_CLOSE_FRAME
        finally:
            with self._lock:
                self._bus = None
                waiters, self._waiters = list(self._waiters), collections.deque()
            for waiter in waiters:
                waiter.done.set()  # their result stays None: the next connection subscribes
            bus.abort()  # the reader thread is over (or ends now)

    def _refresh(self, bus: BusClient) -> None:
        self._refresh_at = None  # until `refreshed` names the next expiry
        try:
            token = self._current_token()
        except Exception:  # the token service may be back in a moment
            log.warning("the token callable failed; trying again in 5 s", exc_info=True)
            self._refresh_at = time.monotonic() + 5.0
            return
        if token is not None:
            bus.send({"type": "refresh", "token": token})

    def _schedule_refresh(self, expires_at: float | None) -> None:
        """Replace the token at REFRESH_AT of its remaining lifetime (only a callable can give
        a new one)."""
        self._expires_at = expires_at
        if expires_at is None or not callable(self._token):
            self._refresh_at = None
            return
        remaining = max(0.0, expires_at - time.time())
        self._refresh_at = time.monotonic() + REFRESH_AT * remaining

    # ------------------------------------------------------------------ messages

    def _handle(self, bus: BusClient, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "heartbeat":
            bus.send({"type": "pong"})
        elif kind == "subscribed":
            if not self._replaying and isinstance(message.get("seq"), int):
                # Everything up to this seq has been read already: resume after it.
                self._seq = max(self._seq or 0, message["seq"])
                self._epoch = self._connection_epoch
            self._answer(kind, message)
        elif kind == "unsubscribed":
            self._answer(kind, message)
        elif kind == "replay_complete":
            self._replay_complete(message)
            return
        elif kind == "refreshed":
            expires_at = _timestamp(message.get("expires_at"))
            if expires_at is not None and expires_at > (self._expires_at or 0):
                self._schedule_refresh(expires_at)
            # else the token callable gave no longer-lived token: no use asking again
            dropped = message.get("dropped") or []
            if dropped:
                with self._lock:
                    self._channels = [c for c in self._channels if c not in dropped]
        elif kind == "error":
            log.warning("the server answered %s: %s", message.get("code"), message.get("message"))
            self._answer(kind, message)
            if message.get("request_type") == "refresh":  # try again shortly
                self._refresh_at = time.monotonic() + 5.0
        elif isinstance(message.get("seq"), int) and kind != "connected":
            seq = message["seq"]
            if self._seq is not None and seq <= self._seq:
                return  # seen before the reconnect
            self._seq = seq
            self._deliver(message)
            return
        with self._lock:
            handlers = list(self._handlers.get(str(kind), ()))
        self._call(handlers, message)

    def _replay_complete(self, message: dict[str, Any]) -> None:
        self._replaying = False
        recovered = bool(message.get("recovered"))
        self.last_recovered = recovered
        to = message.get("to")
        if isinstance(to, int):  # caught up to `to` (or, not recovered, starting over there)
            self._seq = to if not recovered else max(self._seq or 0, to)
        self._epoch = self._connection_epoch
        if not recovered:
            self.needs_resync = True
            log.warning("events after seq %s are lost: reload over REST", message.get("since"))
            with self._lock:
                handlers = list(self._resync_handlers)
            self._call(handlers, message)
        self._deliver(message)
        if not recovered and self.raise_on_resync and self._events is not None:
            self._events.put(ResyncRequired(message))

    def _deliver(self, message: dict[str, Any]) -> None:
        if self._events is not None:
            self._events.put(message)
        with self._lock:
            kind = str(message.get("type"))
            handlers = [*self._handlers.get(kind, ()), *self._handlers.get("*", ())]
        self._call(handlers, message)

    def _answer(self, kind: str, message: dict[str, Any]) -> None:
        """Hand a reply to the thread waiting in subscribe()/unsubscribe()."""
        with self._lock:
            if not self._waiters:
                return
            waiter = self._waiters[0]
            if kind == "error":
                if message.get("request_type") == waiter.request_type:
                    waiter.error = message  # the reply itself follows
                return
            if kind != waiter.expect:
                return
            self._waiters.popleft()
        waiter.result = {"reply": message, "error": waiter.error}
        waiter.done.set()

    def _call(self, handlers: Iterable[Callable[[Any], object]], argument: object) -> None:
        for handler in list(handlers):
            try:
                handler(argument)
            except Exception:  # one bad callback must not stop the connection
                log.exception("a bridge callback failed")

    def _set_state(self, state: State) -> None:
        with self._lock:
            if self._state == state or self._state == "closed":
                return
            self._state = state
            handlers = list(self._state_handlers)
        self._call(handlers, state)

    def _finish(self) -> None:
        self._set_state("closed")
        if self._events is not None:
            self._events.put(_END)
        self._done.set()


class _Waiter:
    """A subscribe()/unsubscribe() waiting for its reply."""

    def __init__(self, expect: str, request_type: str):
        self.expect = expect
        self.request_type = request_type
        self.error: dict[str, Any] | None = None
        self.result: dict[str, Any] | None = None
        self.done = threading.Event()


def _stop_or_retry(code: int | None) -> ConnectionClosed:
    """A close during the connect: Unrecoverable when the code forbids retrying."""
    if classify(code) is Reconnect.STOP:
        return Unrecoverable(code)
    return ConnectionClosed(code)


def _timestamp(value: object) -> float | None:
    """An RFC 3339 timestamp as seconds since the epoch (None when absent or malformed)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _jwt_expiry(token: str) -> float | None:
    """A JWT's ``exp`` read without verifying it (the server verifies; the client only needs to
    know when to refresh)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, int | float) else None
    except (IndexError, ValueError, AttributeError):
        return None
