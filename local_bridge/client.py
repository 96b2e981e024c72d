"""A small Python client for the bus, on simple-websocket's client.

    with BusClient("ws://127.0.0.1:5100/ws") as bus:
        bus.register("gui", "My desktop")
        bus.subscribe(["jobs", "system"])
        for event in bus.events():
            print(event["type"], event)
"""
from __future__ import annotations

import json
from typing import Any, Iterator

import simple_websocket

from . import protocol as p


class BusError(RuntimeError):
    """The server answered a request with an ``error`` message."""

    def __init__(self, reply: dict[str, Any]):
        super().__init__(f"{reply.get('code')}: {reply.get('message')}")
        self.reply = reply


class BusClient:
    """One connection to ``/ws``: register, subscribe, then iterate over events."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.timeout = timeout
        self._ws = simple_websocket.Client.connect(url)
        self.hello = self._next(timeout)
        if self.hello.get("type") != "connected":
            raise BusError(self.hello)
        self.client_id: str = self.hello["client_id"]
        self._pending: list[dict[str, Any]] = []

    def __enter__(self) -> "BusClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _next(self, timeout: float | None) -> dict[str, Any]:
        while True:
            data = self._ws.receive(timeout=timeout)
            if data is None:
                raise TimeoutError("no message from the server")
            if data == "pong":  # answer to a plain-text ping
                continue
            return json.loads(data)

    def request(self, message: dict[str, Any], expect: str) -> dict[str, Any]:
        """Send ``message``; return the reply of type ``expect`` (events meanwhile are kept)."""
        self._ws.send(p.dumps(message))
        while True:
            reply = self._next(self.timeout)
            if reply.get("type") == expect:
                return reply
            if reply.get("type") == "error" and reply.get("request_type") == message["type"]:
                raise BusError(reply)
            self._pending.append(reply)

    def register(self, client_type: str, client_name: str) -> dict[str, Any]:
        return self.request({"type": "register", "client_type": client_type,
                             "client_name": client_name}, "registered")

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
                except simple_websocket.ConnectionClosed:
                    return
            if include_heartbeats or message.get("type") != "heartbeat":
                yield message

    @property
    def close_code(self) -> int | None:
        return getattr(self._ws, "close_reason", None)

    def close(self) -> None:
        try:
            self._ws.close()
        except simple_websocket.ConnectionClosed:
            pass
