"""The bus as everyone else sees it: one object to publish, join clients, and read the history.

The API, the domain, the WebSocket, SSE and polling transports talk to :class:`Bus`; only it
(with the rest of ``bus/``) touches the backplane and the hub's wiring to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from ..config import Settings
from ..protocol import REPLY_TYPES, BusEvent, CloseCode, EventDraft
from ..publisher import Published, Publisher
from .hub import Client, Hub

#: ``handler(client, message) -> reply dict or None``
MessageHandler = Callable[[Client, dict[str, Any]], "dict[str, Any] | None"]
#: The longest a publish request waits for the writers (then it is answered all the same).
PUBLISH_WAIT = 1.0
BUILTIN_TYPES = frozenset(
    {"register", "subscribe", "unsubscribe", "ping", "pong", "authenticate", "refresh"}
)


class Bus:
    """This process's part of the event bus: the publish path, the hub, the history, the
    numbering (``epoch``, ``last_seq``), client message handlers and shutdown."""

    def __init__(self, settings: Settings, publisher: Publisher):
        self.settings = settings
        self._publisher = publisher
        self._backplane = backplane = publisher.backplane
        self.hub = Hub()
        backplane.attach(self.hub.deliver)
        backplane.serve_requests(self._answer)
        backplane.on_events_lost(self._close_after_lost_events)
        self._handlers: dict[str, MessageHandler] = {}
        self.started_at = time.time()
        self.stopping = threading.Event()

    # ------------------------------------------------------------------ publishing

    def publish(
        self,
        type_: str,
        fields: dict[str, Any],
        *,
        channel: str | None = "",
        client_types: Iterable[str] | None = None,
    ) -> Published:
        """Publish one event (see :meth:`Publisher.publish`)."""
        return self._publisher.publish(type_, fields, channel=channel, client_types=client_types)

    def prepare(
        self,
        type_: str,
        fields: dict[str, Any],
        *,
        channel: str | None = "",
        client_types: Iterable[str] | None = None,
    ) -> EventDraft:
        """Check an event without publishing it (see :meth:`Publisher.prepare`)."""
        return self._publisher.prepare(type_, fields, channel=channel, client_types=client_types)

    def publish_many(self, drafts: list[EventDraft]) -> list[Published]:
        """Publish prepared events in order, one seq each (see :meth:`Publisher.publish_many`),
        then wait, within ``PUBLISH_WAIT`` seconds, while this process's writers are behind:
        the back-pressure on publishers that outrun the fan-out (:meth:`Hub.wait_for_writers`)."""
        published = self._publisher.publish_many(drafts)
        self.hub.wait_for_writers(PUBLISH_WAIT)
        return published

    @property
    def available(self) -> bool:
        """Whether an event published now would be delivered (checked before writes)."""
        return self._backplane.available

    @property
    def backplane_kind(self) -> str:
        """What carries the events between processes: ``memory`` or ``redis``."""
        return self._backplane.kind

    @property
    def events_published(self) -> int:
        """Events published through this process."""
        return self._publisher.events_published

    # ------------------------------------------------------------------ numbering and history

    @property
    def epoch(self) -> str:
        """The bus's numbering: ``seq`` values of another epoch are void."""
        return self._backplane.epoch

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the latest event delivered to this process (0 before the first)."""
        return self._backplane.last_seq

    def paused(self) -> AbstractContextManager[Any]:
        """A block in which no event reaches this process's hub: a client told ``last_seq``
        and added to the hub (or subscribed) inside it receives exactly the events after it."""
        return self._backplane.paused()

    def join(self, client: Client, greet: Callable[[int, str], Any]) -> None:
        """Add ``client`` to the hub; ``greet(seq, epoch)`` runs first, in the same step, so
        the client receives exactly the events after ``seq``."""
        with self._backplane.paused():
            greet(self._backplane.last_seq, self._backplane.epoch)
            self.hub.add(client)

    def history(self, since: int) -> tuple[list[BusEvent], bool]:
        """Events after ``since`` still held, in seq order, and whether that is all of them."""
        return self._backplane.history(since)

    def health(self) -> str:
        """``"ok"`` or what is wrong with the backplane."""
        return self._backplane.health()

    # ------------------------------------------------------------------ message handlers

    def register_handler(self, message_type: str, handler: MessageHandler) -> None:
        """Let clients send ``message_type``; ``handler``'s returned dict is the reply."""
        if message_type in BUILTIN_TYPES or message_type in REPLY_TYPES:
            raise ValueError(f"{message_type!r} is a built-in message type")
        self._handlers[message_type] = handler

    def handler_for(self, message_type: str) -> MessageHandler | None:
        return self._handlers.get(message_type)

    # ------------------------------------------------------------------ clients everywhere

    def clients_everywhere(self) -> list[dict[str, Any]]:
        """The admin view of every client of the bus, in every process sharing it."""
        answers = self._backplane.request_all({"op": "clients"})
        return [client for answer in answers for client in answer.get("clients", [])]

    def disconnect_everywhere(self, client_id: str) -> bool:
        """Close one client, wherever it is connected, with 4009; False when it is nowhere."""
        answers = self._backplane.request_all({"op": "disconnect", "client_id": client_id})
        return any(answer.get("disconnected") for answer in answers)

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """This process's part of an admin request made on any process."""
        if request.get("op") == "clients":
            return {"clients": [client.describe() for client in self.hub.clients()]}
        if request.get("op") == "disconnect":
            return {
                "disconnected": self.hub.disconnect(
                    str(request.get("client_id")), CloseCode.ADMIN_DISCONNECT
                )
            }
        return {}

    # ------------------------------------------------------------------ shutting down

    def _close_after_lost_events(self) -> None:
        """Events this process's clients should have had are gone: each must resume (1011)."""
        self.hub.close_all(CloseCode.INTERNAL_ERROR, "events lost: resume")

    def shutdown(self) -> int:
        """Close every connection with 1001 and refuse new ones; return how many were open."""
        self.stopping.set()
        return self.hub.close_all(CloseCode.GOING_AWAY)

    def close(self) -> None:
        """Shut down, then release the backplane (its connections and threads)."""
        self.shutdown()
        self._backplane.close()
