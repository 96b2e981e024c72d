"""The seed design's application-side API of the bus.

:class:`WebSocketServer` keeps the names of the seed design (``broadcast``,
``send_to_client_type``, ``get_connected_clients``, ``disconnect``, ``register_handler``,
``shutdown``) over the application's :class:`~local_bridge.bus.facade.Bus`; every one of them
publishes through the single publish path.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from ..config import Settings
from ..publisher import Published
from .facade import BUILTIN_TYPES, Bus, MessageHandler
from .hub import Hub


class WebSocketServer:
    """Connected clients, event fan-out and message handlers of one server process."""

    def __init__(self, bus: Bus):
        self.bus = bus

    @property
    def settings(self) -> Settings:
        return self.bus.settings

    @property
    def hub(self) -> Hub:
        return self.bus.hub

    @property
    def stopping(self) -> threading.Event:
        return self.bus.stopping

    @property
    def started_at(self) -> float:
        return self.bus.started_at

    def register_handler(self, message_type: str, handler: MessageHandler) -> None:
        """Let clients send ``message_type``; ``handler``'s returned dict is the reply."""
        self.bus.register_handler(message_type, handler)

    def handler_for(self, message_type: str) -> MessageHandler | None:
        return self.bus.handler_for(message_type)

    def broadcast(
        self,
        message: dict[str, Any],
        channel: str | None = "",
        client_types: Iterable[str] | None = None,
    ) -> Published:
        """Publish ``message`` (its ``type`` and fields) on ``channel``.

        For a catalog type, ``channel`` defaults to the type's own channel; ``None`` reaches
        every connected client.
        """
        fields = dict(message)
        type_ = fields.pop("type", None)
        if not isinstance(type_, str):
            raise ValueError("message needs a string 'type'")
        fields.pop("timestamp", None)
        return self.bus.publish(type_, fields, channel=channel, client_types=client_types)

    def send_to_client_type(self, client_type: str, message: dict[str, Any]) -> Published:
        """Publish ``message`` to every connected client of ``client_type``."""
        return self.broadcast(message, channel=None, client_types=[client_type])

    def get_connected_clients(self) -> list[dict[str, Any]]:
        """The admin view of every client of the bus, in every process sharing it."""
        return self.bus.clients_everywhere()

    def disconnect(self, client_id: str) -> bool:
        """Close one client, wherever it is connected, with 4009; False when it is nowhere."""
        return self.bus.disconnect_everywhere(client_id)

    def shutdown(self) -> int:
        """Close every connection with 1001 and refuse new ones; return how many were open."""
        return self.bus.shutdown()


__all__ = ["BUILTIN_TYPES", "MessageHandler", "WebSocketServer"]
