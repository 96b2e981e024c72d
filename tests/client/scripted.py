"""A scripted stand-in for ``BusClient``: each connection plays what its script says, so the
Bridge's reconnect, resume and deduplication logic is tested without a server."""

from __future__ import annotations

import itertools
import queue
import time
from dataclasses import dataclass, field
from typing import Any

from local_bridge.client import ConnectionClosed

HANG = "hang"  # the connection goes silent (no frame, no close)
_ids = itertools.count(1)


def event(seq: int, type_: str = "job_progress", **fields: Any) -> dict[str, Any]:
    return {"type": type_, "channel": "jobs", "seq": seq, "job_id": "j", **fields}


def subscribed(seq: int, channels: list[str] | None = None) -> dict[str, Any]:
    return {"type": "subscribed", "channels": channels or ["jobs"], "seq": seq}


def replay_complete(since: int, to: int, recovered: bool) -> dict[str, Any]:
    return {"type": "replay_complete", "since": since, "to": to, "recovered": recovered}


@dataclass
class Connection:
    """One connection: its greeting, what follows its first subscribe, and how it ends (a close
    code, HANG, or None: stays open until closed)."""

    after_subscribe: list[dict[str, Any]] = field(default_factory=list)
    end: int | str | None = None
    epoch: str = "e1"
    auth: str = "none"
    expires_in: float = 3600.0


class Script:
    """The connections the fake server accepts, in order (an exception: that attempt fails)."""

    def __init__(self, *connections: Connection | BaseException):
        self.connections = list(connections)
        self.opened: list[FakeBus] = []

    def factory(self, url: str, timeout: float = 10.0, **options: Any) -> FakeBus:
        if not self.connections:
            raise ConnectionRefusedError("no more connections scripted")
        spec = self.connections.pop(0)
        if isinstance(spec, BaseException):
            raise spec
        bus = FakeBus(url, spec)
        self.opened.append(bus)
        return bus


class FakeBus:
    """What Bridge uses of BusClient: hello, authenticate, register, send, receive, close,
    abort, last_received."""

    def __init__(self, url: str, spec: Connection):
        self.url = url
        self.spec = spec
        self.client_id = f"{next(_ids):032x}"
        self.hello = {
            "type": "connected",
            "client_id": self.client_id,
            "seq": 0,
            "epoch": spec.epoch,
            "heartbeat_interval": 30,
            "protocol": 1,
            "auth": spec.auth,
        }
        self.sent: list[dict[str, Any]] = []
        self.last_received = time.monotonic()
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._subscribed_once = False

    def push(self, message: dict[str, Any]) -> None:
        """The server sends ``message`` now."""
        self._inbox.put(message)

    def authenticate(self, token: str) -> dict[str, Any]:
        self.sent.append({"type": "authenticate", "token": token})
        expires = time.time() + self.spec.expires_in
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(expires))
        return {"type": "authenticated", "expires_at": f"{stamp}.{int(expires % 1 * 1e6):06d}Z"}

    def register(self, client_type: str, client_name: str) -> dict[str, Any]:
        self.sent.append({"type": "register", "client_type": client_type})
        return {"type": "registered"}

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "subscribe":
            if self._subscribed_once:
                self.push(subscribed(0, message["channels"]))
                return
            self._subscribed_once = True
            for item in self.spec.after_subscribe:
                self.push(item)
            if isinstance(self.spec.end, int):
                self._inbox.put(ConnectionClosed(self.spec.end))
        elif message["type"] == "unsubscribe":
            self.push({"type": "unsubscribed", "channels": []})

    def receive(self, timeout: float | None = None) -> dict[str, Any]:
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("nothing") from None
        if isinstance(item, ConnectionClosed):
            self._inbox.put(item)
            raise item
        self.last_received = time.monotonic()
        return item

    def abort(self) -> None:
        self._inbox.put(ConnectionClosed(1006))

    def close(self, code: int = 1000) -> None:
        self._inbox.put(ConnectionClosed(code))

    def sent_of(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["type"] == type_]
