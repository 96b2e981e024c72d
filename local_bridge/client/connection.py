"""A small Python client for the bus: a socket, wsproto for the WebSocket protocol, and one
daemon thread that reads, so the server's pings are answered while the caller does other work.

    with BusClient("ws://127.0.0.1:5100/ws") as bus:
        bus.register("gui", "My desktop")
        bus.subscribe(["jobs", "system"])
        for event in bus.events():
            print(event["type"], event)
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError, RemoteProtocolError

from .. import protocol as p

RECEIVE_BYTES = 65536
CLOSE_WAIT = 2.0  # how long close() waits for the server to answer its close frame
NO_CLOSE_FRAME = 1006  # the connection ended without a close frame (RFC 6455 section 7.1.5)
_END = object()  # queued by the reader when the connection is over


class BusError(RuntimeError):
    """The server answered a request with an ``error`` message."""

    def __init__(self, reply: dict[str, Any]):
        super().__init__(f"{reply.get('code')}: {reply.get('message')}")
        self.reply = reply


class HandshakeError(ConnectionError):
    """The server answered the WebSocket upgrade with an HTTP error (``status``)."""

    def __init__(self, status: int, body: bytes):
        try:
            error = json.loads(body)["error"]
            detail = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):  # an HTML page, say: not local_bridge's answer
            detail = "(not a local_bridge answer)" if body.strip() else ""
        super().__init__(
            f"WebSocket upgrade refused: HTTP {status}" + (f" {detail}" if detail else "")
        )
        self.status = status


class ConnectionClosed(ConnectionError):
    """The connection is over; ``code`` is the server's close code (1006: none was sent)."""

    def __init__(self, code: int | None):
        super().__init__(f"connection closed ({code})")
        self.code = code


class BusClient:
    """One connection to ``/ws``: register, subscribe, then iterate over events.

    The constructor connects and waits for the server's first message (``hello``): ``connected``
    on ``/ws``, or ``greeting="job_status"`` on a job stream ``/ws/jobs/<id>``, all
    within ``timeout`` seconds; replies to requests are awaited as long. On any failure it
    raises with the socket closed and no thread left running.

    ``token`` (a server with ``LOCAL_BRIDGE_AUTH=token``) is sent in the URL as ``?token=``;
    to keep it out of URLs, connect without it and call :meth:`authenticate` first.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        token: str | None = None,
        greeting: str = "connected",
    ):
        if token is not None:
            url += ("&" if urlsplit(url).query else "?") + urlencode({"token": token})
        self.timeout = timeout
        self._close_code: int | None = None
        self._messages: queue.Queue[Any] = queue.Queue()  # str messages, then _END
        self._pending: list[dict[str, Any]] = []  # events that arrived while awaiting a reply
        self._fragments: list[str] = []
        self._lock = threading.Lock()  # one writer at a time on the socket and on wsproto
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._reader: threading.Thread | None = None
        #: ``time.monotonic()`` when the last bytes arrived (a read deadline's reference).
        self.last_received = time.monotonic()
        deadline = time.monotonic() + timeout
        self._sock = _open_socket(url, timeout)
        try:
            self._handshake(url, deadline)
            self._sock.settimeout(None)  # from here on the reader blocks; callers time out
            self._reader = threading.Thread(
                target=self._read_forever, daemon=True, name=f"BusClient reader {url}"
            )
            self._reader.start()
            self.hello = self._next(max(0.0, deadline - time.monotonic()))
            if self.hello.get("type") != greeting:
                raise BusError(self.hello)
        except BaseException:
            self._abort()
            raise
        self.client_id: str | None = self.hello.get("client_id")

    def __enter__(self) -> BusClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ the connection

    def _handshake(self, url: str, deadline: float) -> None:
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._send(Request(host=parts.netloc.rpartition("@")[2], target=target))
        accepted, rejected, body = False, None, b""
        while not accepted:
            self._sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = self._sock.recv(RECEIVE_BYTES)
            except TimeoutError:
                raise TimeoutError(
                    f"no answer to the WebSocket upgrade within {self.timeout:g} s"
                ) from None
            if not data and rejected is None:
                raise ConnectionError("the server closed the connection during the handshake")
            try:
                self._ws.receive_data(data or None)
            except RemoteProtocolError as exc:
                raise ConnectionError(f"not a WebSocket server ({exc})") from None
            # Frames that came in the same read as the 101 are handled now: they may be all
            # the server sends for a while.
            for event in self._ws.events():
                if isinstance(event, AcceptConnection):
                    accepted = True
                elif isinstance(event, RejectConnection):
                    rejected = event
                elif isinstance(event, RejectData):
                    body += event.data
                else:
                    self._handle(event)
            if rejected is not None and (
                not rejected.has_body or not data or self._ws.state is ConnectionState.CLOSED
            ):
                raise HandshakeError(rejected.status_code, body)

    def _read_forever(self) -> None:
        """The reader thread: feed wsproto until the connection ends; then close the socket."""
        try:
            while self._close_code is None:
                data = self._sock.recv(RECEIVE_BYTES)
                self.last_received = time.monotonic()
                with self._lock:
                    self._ws.receive_data(data or None)
                    for event in self._ws.events():
                        self._handle(event)
                if not data:
                    break
        except (OSError, ProtocolError):
            pass
        finally:
            with self._lock:
                if self._close_code is None:
                    self._close_code = NO_CLOSE_FRAME
                self._sock.close()
            self._messages.put(_END)

    def _handle(self, event: Event) -> None:
        """One wsproto event (the lock is held, or no other thread runs yet)."""
        if isinstance(event, TextMessage):
            self._fragments.append(event.data)
            if event.message_finished:
                self._messages.put("".join(self._fragments))
                self._fragments.clear()
        elif isinstance(event, Ping):
            self._sock.sendall(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self._close_code = int(event.code)  # a plain int, not wsproto's enum
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                self._sock.sendall(self._ws.send(event.response()))
        # Pongs and binary messages: nothing to do (the server sends no binary messages).

    def _send(self, event: Event) -> None:
        with self._lock:
            if self._close_code is not None or self._ws.state in (
                ConnectionState.LOCAL_CLOSING,
                ConnectionState.CLOSED,
            ):
                raise ConnectionClosed(self._close_code)
            self._sock.sendall(self._ws.send(event))

    def _next(self, timeout: float | None) -> dict[str, Any]:
        """The next message from the server (plain-text pongs skipped)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                data = self._messages.get(
                    timeout=None if deadline is None else max(0.0, deadline - time.monotonic())
                )
            except queue.Empty:
                raise TimeoutError(f"no message from the server within {timeout:g} s") from None
            if data is _END:
                self._messages.put(_END)  # every later call sees the end too
                raise ConnectionClosed(self._close_code)
            if data != "pong":  # answer to a plain-text ping
                message: dict[str, Any] = json.loads(data)
                return message

    def _abort(self) -> None:
        """Drop the connection at once and wait for the reader to finish."""
        with self._lock:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv
            except OSError:
                pass
            if self._reader is None:
                self._sock.close()
        if self._reader is not None:
            self._reader.join(CLOSE_WAIT)
            self._sock.close()  # no-op when the reader closed it

    # ------------------------------------------------------------------ the API

    def request(self, message: dict[str, Any], expect: str) -> dict[str, Any]:
        """Send ``message``; return the reply of type ``expect`` (events meanwhile are kept)."""
        self._send(TextMessage(p.dumps(message)))
        while True:
            reply = self._next(self.timeout)
            if reply.get("type") == expect:
                return reply
            if reply.get("type") == "error" and reply.get("request_type") == message["type"]:
                raise BusError(reply)
            self._pending.append(reply)

    def send(self, message: dict[str, Any]) -> None:
        """Send one message without awaiting a reply (:class:`ConnectionClosed` once closed)."""
        self._send(TextMessage(p.dumps(message)))

    def receive(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message (heartbeats included): :class:`TimeoutError` when none arrives within
        ``timeout`` seconds, :class:`ConnectionClosed` once the connection is over."""
        if self._pending:
            return self._pending.pop(0)
        return self._next(timeout)

    def abort(self) -> None:
        """Drop the connection at once, without a close frame (a peer that stopped answering);
        :attr:`close_code` becomes 1006."""
        self._abort()

    def authenticate(self, token: str) -> dict[str, Any]:
        """Present ``token`` in the first message (protocol 1.1): the ``authenticated`` reply;
        a refused token closes the connection 4001 (:class:`ConnectionClosed`)."""
        return self.request({"type": "authenticate", "token": token}, "authenticated")

    def refresh(self, token: str) -> dict[str, Any]:
        """Move the connection to a new token before the old one expires: ``refreshed``."""
        return self.request({"type": "refresh", "token": token}, "refreshed")

    def register(self, client_type: str, client_name: str) -> dict[str, Any]:
        return self.request(
            {"type": "register", "client_type": client_type, "client_name": client_name},
            "registered",
        )

    def subscribe(self, channels: list[str]) -> dict[str, Any]:
        return self.request({"type": "subscribe", "channels": channels}, "subscribed")

    def events(self, include_heartbeats: bool = False) -> Iterator[dict[str, Any]]:
        """Every message from the server, as it arrives, until the connection closes."""
        while True:
            if self._pending:
                message = self._pending.pop(0)
            else:
                try:
                    message = self._next(None)
                except ConnectionClosed:
                    return
            if include_heartbeats or message.get("type") != "heartbeat":
                yield message

    @property
    def close_code(self) -> int | None:
        """None while open; then the close code the server sent, or 1006 when it sent none."""
        return self._close_code

    def close(self, code: int = 1000) -> None:
        """Close the connection (waiting briefly for the server's answer); harmless twice."""
        try:
            self._send(CloseConnection(code))
        except (ConnectionClosed, OSError, ProtocolError):
            pass
        if self._reader is not None:
            self._reader.join(CLOSE_WAIT)  # the server answers the close frame and hangs up
        self._abort()


def _open_socket(url: str, timeout: float) -> socket.socket:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    secure = parts.scheme == "wss"
    sock = socket.create_connection(
        (parts.hostname, parts.port or (443 if secure else 80)), timeout=timeout
    )
    if secure:
        try:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        except BaseException:
            sock.close()
            raise
    return sock
