"""The bus as the application sees it: the hub, the publisher, and message handlers.

:class:`WebSocketServer` keeps the names of the seed design (``broadcast``,
``send_to_client_type``, ``get_connected_clients``, ``disconnect``, ``register_handler``); every
one of them publishes through the application's single publish path.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable

from ..config import Settings
from ..protocol import REPLY_TYPES, CloseCode
from ..publisher import Published, Publisher
from .hub import Client, Hub

#: ``handler(client, message) -> reply dict or None``
MessageHandler = Callable[[Client, dict[str, Any]], "dict[str, Any] | None"]
BUILTIN_TYPES = frozenset({"register", "subscribe", "unsubscribe", "ping", "pong"})


class WebSocketServer:
    """Connected clients, event fan-out and message handlers of one server process."""

    def __init__(self, settings: Settings, publisher: Publisher):
        self.settings = settings
        self.publisher = publisher
        self.hub = Hub()
        publisher.backplane.attach(self.hub.deliver)
        publisher.backplane.serve_requests(self._answer)
        # Events this process's clients should have had are gone: each must resume (1011).
        publisher.backplane.on_events_lost(
            lambda: self.hub.close_all(CloseCode.INTERNAL_ERROR, "events lost: resume"))
        self._handlers: dict[str, MessageHandler] = {}
        self.started_at = time.time()
        self.stopping = threading.Event()

    # ------------------------------------------------------------------ handlers

    def register_handler(self, message_type: str, handler: MessageHandler) -> None:
        """Let clients send ``message_type``; ``handler``'s returned dict is sent back as a reply."""
        if message_type in BUILTIN_TYPES or message_type in REPLY_TYPES:
            raise ValueError(f"{message_type!r} is a built-in message type")
        self._handlers[message_type] = handler

    def handler_for(self, message_type: str) -> MessageHandler | None:
        return self._handlers.get(message_type)

    # ------------------------------------------------------------------ publishing

    def broadcast(self, message: dict[str, Any], channel: str | None = "",
                  client_types: Iterable[str] | None = None) -> Published:
        """Publish ``message`` (its ``type`` and fields) on ``channel``.

        For a catalog type, ``channel`` defaults to the type's own channel; ``None`` reaches
        every connected client.
        """
        fields = dict(message)
        type_ = fields.pop("type", None)
        if not isinstance(type_, str):
            raise ValueError("message needs a string 'type'")
        fields.pop("timestamp", None)
        return self.publisher.publish(type_, fields, channel=channel, client_types=client_types)

    def send_to_client_type(self, client_type: str, message: dict[str, Any]) -> Published:
        """Publish ``message`` to every connected client of ``client_type``."""
        return self.broadcast(message, channel=None, client_types=[client_type])

    # ------------------------------------------------------------------ clients

    def get_connected_clients(self) -> list[dict[str, Any]]:
        """The admin view of every client of the bus, in every process sharing it."""
        answers = self.publisher.backplane.request_all({"op": "clients"})
        return [client for answer in answers for client in answer.get("clients", [])]

    def disconnect(self, client_id: str) -> bool:
        """Close one client, wherever it is connected, with 4009; False when it is nowhere."""
        answers = self.publisher.backplane.request_all({"op": "disconnect", "client_id": client_id})
        return any(answer.get("disconnected") for answer in answers)

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """This process's part of an admin request made on any process."""
        if request.get("op") == "clients":
            return {"clients": [client.describe() for client in self.hub.clients()]}
        if request.get("op") == "disconnect":
            return {"disconnected": self.hub.disconnect(str(request.get("client_id")),
                                                        CloseCode.ADMIN_DISCONNECT)}
        return {}

    def shutdown(self) -> int:
        """Close every connection with 1001 and refuse new ones; return how many were open."""
        self.stopping.set()
        return self.hub.close_all(CloseCode.GOING_AWAY)
