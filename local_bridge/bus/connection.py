"""One bus connection's life: greet, answer client messages, beat, and clean up."""

from __future__ import annotations

import logging
import time
from typing import Any

from simple_websocket import ConnectionClosed

from .. import protocol as p
from ..auth.revocation import RevocationUnavailable
from ..auth.service import ConnectionAuth
from ..auth.tokens import TokenError
from ..limits import MessageLimiter
from .facade import Bus
from .gate import GatedTransport
from .hub import Client
from .transport import Transport

log = logging.getLogger(__name__)


class BusConnection:
    """Runs the ``/ws`` protocol (PROTOCOL.md section 3) for one client.

    Nothing of a connection may outlive it waiting for the cyclic garbage collector, which
    the server runs rarely (``gunicorn_app._tune_garbage_collector``): the references that must
    point back at the connection (callbacks) are cut when it ends, and message types map to
    method names, not bound methods.
    """

    __slots__ = ("bus", "settings", "transport", "client", "limiter", "auth")

    #: Client message type -> the name of the method that answers it.
    ACTIONS = {
        "register": "_register",
        "subscribe": "_subscribe",
        "unsubscribe": "_unsubscribe",
        "ping": "_ping",
        "pong": "_ignore",
        "authenticate": "_authenticate",
        "refresh": "_refresh",
    }

    def __init__(
        self,
        bus: Bus,
        transport: Transport,
        remote_addr: str | None,
        auth: ConnectionAuth | None = None,
    ):
        self.bus = bus
        self.settings = bus.settings
        self.transport = transport
        self.client = Client(transport, remote_addr=remote_addr)
        self.limiter = MessageLimiter(self.settings.MESSAGE_RATE, self.settings.MESSAGE_BURST)
        #: None while authentication is off: every check below is then one attribute test.
        self.auth = auth
        if auth is not None:
            self.client.auth = auth.claims

    def on_overflow(self) -> None:
        """The client fell ``MAX_QUEUE`` messages behind: it leaves the hub at once (4008)."""
        self.bus.hub.remove(self.client)
        self.transport.stop_reading()

    # ------------------------------------------------------------------ life cycle

    def run(self, ws: Any) -> None:
        """Serve the connection until either side closes it."""
        self.transport.attach(ws)
        try:
            if self.auth is not None and self.auth.refused:
                # told after the handshake, so that a browser sees the code
                self.transport.close(self.auth.refused_code, self.auth.refused[:120])
            elif self.start():
                if self.bus.stopping.is_set():  # shutdown began while we were connecting
                    self.transport.close(p.CloseCode.GOING_AWAY)
                self._receive_loop(ws)
        except ConnectionClosed:
            pass
        except Exception:  # a bug must cost one connection, not the worker
            log.exception("connection %s failed", self.client.client_id)
            self.transport.close(p.CloseCode.INTERNAL_ERROR)
        finally:
            self.bus.hub.remove(self.client)
            self.transport.finish(self.settings.SLOW_CLOSE_GRACE)
            self.client.on_event = None  # it pointed back at this connection

    def start(self) -> bool:
        """Greet the client and join the hub; False when the connection is already over."""

        # `connected` comes first, and its seq is exact
        def greet(seq: int, epoch: str) -> None:
            self.send(
                p.reply(
                    "connected",
                    client_id=self.client.client_id,
                    seq=seq,
                    epoch=epoch,
                    heartbeat_interval=_seconds(self.settings.HEARTBEAT_INTERVAL),
                    protocol=p.PROTOCOL_VERSION,
                    auth=self.settings.AUTH,
                )
            )

        if self.auth is not None and self.auth.pending:
            # Listed, counted and closed at shutdown like any connection, but nothing reaches
            # it (no subscriptions, no broadcasts) until `authenticate` succeeds.
            self.client.broadcasts = False
        self.bus.join(self.client, greet)
        return True

    def _receive_loop(self, ws: Any) -> None:
        interval = self.settings.HEARTBEAT_INTERVAL
        next_beat = time.monotonic() + interval
        while True:
            # Wake for the next heartbeat, or when the peer will have been silent two intervals.
            wake = min(next_beat, self.transport.last_seen + 2 * interval)
            if self.auth is not None:  # or when its token expires (or `authenticate` is late)
                if time.monotonic() >= self.auth.deadline:
                    self.bus.hub.remove(self.client)
                    self.transport.close(p.CloseCode.UNAUTHORIZED, self.auth.expiry_reason())
                    return
                wake = min(wake, self.auth.deadline)
            data = ws.receive(timeout=max(0.0, wake - time.monotonic()))
            if data is not None:
                self.handle(data)
                continue
            if not ws.connected:
                return
            now = time.monotonic()
            if now - self.transport.last_seen >= 2 * interval:
                log.info(
                    "client %s silent for %.1f s: dropped",
                    self.client.client_id,
                    now - self.transport.last_seen,
                )
                self.transport.abort()
                return
            if now >= next_beat:
                self.send(p.reply("heartbeat"))
                self.transport.send(p.PING_FRAME)  # the peer's pong proves it is alive
                next_beat = now + interval

    # ------------------------------------------------------------------ messages

    def send(self, message: dict[str, Any]) -> bool:
        return self.transport.send(p.text_frame(message))

    def handle(self, data: str | bytes) -> None:
        """Answer one client frame."""
        # simple-websocket bounds a text message in characters; the limit is in bytes.
        limit = self.settings.MAX_MESSAGE_SIZE
        if isinstance(data, str) and len(data) * 4 > limit and len(data.encode()) > limit:
            self.transport.close(p.CloseCode.MESSAGE_TOO_BIG)
            return
        verdict = self.limiter.check()
        if verdict != "ok":
            if verdict == "warn":
                self.send(
                    p.error_reply(
                        p.ErrorCode.RATE_LIMITED, "too many messages: this one was dropped"
                    )
                )
            elif verdict == "close":
                self.transport.close(p.CloseCode.RATE_LIMITED)
            return
        request_type = None
        try:
            message = p.parse_client_frame(data)
            if message is p.PLAIN_PING:
                self.transport.send(p.PLAIN_PONG_FRAME)
                return
            request_type = message.type
            if self.auth is not None and self.auth.pending and message.type != "authenticate":
                raise p.ProtocolError(
                    p.ErrorCode.UNAUTHORIZED, "send `authenticate` with a token first", message.type
                )
            action = self.ACTIONS.get(message.type)
            if action is not None:
                getattr(self, action)(message.body)
            else:
                self._custom(message)
        except p.ProtocolError as exc:
            self.send(p.error_reply(exc.code, exc.message, exc.request_type or request_type))

    def _register(self, body: dict[str, Any]) -> None:
        client_type, client_name = p.validate_register(body)
        claims = self.client.auth
        if claims is not None and claims.client_type not in (None, client_type):
            self.bus.hub.remove(self.client)
            self.transport.close(p.CloseCode.FORBIDDEN, f"this token is for {claims.client_type}")
            return
        self.bus.hub.register(self.client, client_type, client_name)
        self.send(
            p.reply(
                "registered",
                client_id=self.client.client_id,
                client_type=client_type,
                client_name=client_name,
            )
        )

    def _subscribe(self, body: dict[str, Any]) -> None:
        valid, unknown = p.validate_channel_list(body, "subscribe")
        since, epoch = p.validate_resume(body)
        if self.auth is not None:  # outside the token's patterns: refused, the rest applied
            refused = [channel for channel in valid if not self.auth.allows(channel)]
            if refused:
                valid = [channel for channel in valid if channel not in refused]
                self.send(
                    p.error_reply(
                        p.ErrorCode.FORBIDDEN,
                        f"channel(s) not allowed by this token: {', '.join(refused)}",
                        "subscribe",
                    )
                )
        if unknown:
            self.send(
                p.error_reply(
                    p.ErrorCode.UNKNOWN_CHANNEL,
                    f"unknown channel(s): {', '.join(map(str, unknown))}",
                    "subscribe",
                )
            )
        gate = None
        with self.bus.paused():  # events after `seq` follow `subscribed`; none before it
            try:
                current = self.bus.hub.subscribe(
                    self.client, valid, self.settings.MAX_SUBSCRIPTIONS
                )
            except OverflowError:
                raise p.ProtocolError(
                    p.ErrorCode.INVALID_MESSAGE,
                    f"at most {self.settings.MAX_SUBSCRIPTIONS} subscriptions per connection",
                    "subscribe",
                ) from None
            latest = self.bus.last_seq
            self.send(p.reply("subscribed", channels=sorted(current), seq=latest))
            if since is not None:  # live events wait behind a gate while the missed ones go out
                gate = GatedTransport(self.transport)
                self.client.transport = gate
        if gate is not None:
            assert since is not None  # a gate is opened only to replay from since
            try:
                self._replay(since, epoch, latest)
            finally:
                gate.open([])
                self.client.transport = self.transport

    def _replay(self, since: int, epoch: str | None, latest: int) -> None:
        """Send what the client missed after ``since`` (up to ``latest``), then
        ``replay_complete``; ``recovered`` only when the history proves nothing is missing."""
        # Without the epoch `since` could belong to another numbering (a restarted server).
        same_epoch = epoch == self.bus.epoch or (epoch is None and since == 0)
        missed, complete = self.bus.history(since) if same_epoch else ([], False)
        outbox = self.transport.outbox
        for event in missed:
            if event.seq > latest:
                break  # published after `subscribed`: already waiting behind the gate
            if not self.bus.hub.would_receive(self.client, event):
                continue
            if outbox.depth >= outbox.limit - 1 and not outbox.wait_room(
                outbox.limit // 2, self.settings.SLOW_CLOSE_GRACE
            ):
                self.transport.close(p.CloseCode.SLOW_CONSUMER, discard=True)
                return
            self.transport.send(event.frame)
        self.send(
            p.reply(
                "replay_complete",
                since=since,
                to=latest,
                recovered=same_epoch and complete and since <= latest,
            )
        )

    def _unsubscribe(self, body: dict[str, Any]) -> None:
        valid, unknown = p.validate_channel_list(body, "unsubscribe")
        current = self.bus.hub.unsubscribe(self.client, valid)
        if unknown:
            self.send(
                p.error_reply(
                    p.ErrorCode.UNKNOWN_CHANNEL,
                    f"unknown channel(s): {', '.join(map(str, unknown))}",
                    "unsubscribe",
                )
            )
        self.send(p.reply("unsubscribed", channels=sorted(current)))

    # ------------------------------------------------------------------ authentication

    def _authenticate(self, body: dict[str, Any]) -> None:
        """``authenticate`` (protocol 1.1): a bad token closes 4001; a good one is answered
        ``authenticated`` and the connection goes on as if the token had been in its URL."""
        if self.auth is None or not self.auth.pending:
            raise p.ProtocolError(
                p.ErrorCode.INVALID_MESSAGE,
                "already authenticated (use refresh)"
                if self.auth is not None
                else "authentication is off on this server",
                "authenticate",
            )
        try:
            claims = self.auth.accept(self.auth.verify(body.get("token")))
        except (TokenError, RevocationUnavailable) as exc:
            code = p.CloseCode.UNAUTHORIZED
            if isinstance(exc, RevocationUnavailable):
                code = p.CloseCode.INTERNAL_ERROR
            self.transport.close(code, str(exc)[:120])
            return
        self.client.auth = claims
        self._authenticated(
            p.reply("authenticated", sub=claims.sub, role=claims.role, expires_at=claims.expires_at)
        )

    def _authenticated(self, reply: dict[str, Any]) -> None:
        """Events reach the client from ``reply`` on, broadcasts to everyone included."""
        self.client.broadcasts = True
        self.bus.join(self.client, lambda seq, epoch: self.send(reply))

    def _refresh(self, body: dict[str, Any]) -> None:
        """``refresh``: a valid token for the same ``sub`` and ``role`` moves the expiry; its
        patterns replace the old ones, and subscriptions outside them are dropped."""
        if self.auth is None:
            raise p.ProtocolError(
                p.ErrorCode.INVALID_MESSAGE, "authentication is off on this server", "refresh"
            )
        old = self.client.auth
        try:
            claims = self.auth.verify(body.get("token"))
        except (TokenError, RevocationUnavailable) as exc:
            raise p.ProtocolError(p.ErrorCode.UNAUTHORIZED, str(exc), "refresh") from None
        if (claims.sub, claims.role) != (old.sub, old.role):
            raise p.ProtocolError(
                p.ErrorCode.FORBIDDEN, "a refresh token must have the same sub and role", "refresh"
            )
        registered = self.client.client_type
        if claims.client_type not in (None, registered) and registered != p.UNKNOWN_CLIENT_TYPE:
            raise p.ProtocolError(
                p.ErrorCode.FORBIDDEN, f"this connection is registered as {registered}", "refresh"
            )
        self.auth.accept(claims)
        self.client.auth = claims
        dropped = sorted(c for c in self.client.channels if not claims.allows(c))
        if dropped:
            self.bus.hub.unsubscribe(self.client, dropped)
        self.send(p.reply("refreshed", expires_at=claims.expires_at, dropped=dropped))

    def _ping(self, body: dict[str, Any]) -> None:
        self.send(p.reply("pong"))

    def _ignore(self, body: dict[str, Any]) -> None:
        pass

    def _custom(self, message: p.ClientMessage) -> None:
        handler = self.bus.handler_for(message.type)
        if handler is None:
            raise p.ProtocolError(
                p.ErrorCode.UNKNOWN_TYPE, f"unknown message type {message.type!r}", message.type
            )
        try:
            answer = handler(self.client, message.body)
        except p.ProtocolError:
            raise
        except Exception:
            log.exception("handler for %r failed", message.type)
            raise p.ProtocolError(
                p.ErrorCode.INTERNAL_ERROR, f"the handler for {message.type!r} failed", message.type
            ) from None
        if answer is not None:
            self.send({"timestamp": p.utc_timestamp(), **answer})


def _seconds(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
