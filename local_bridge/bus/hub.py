"""The thread-safe registry of connected clients and the fan-out of events to them.

The hub knows clients only through their :class:`~local_bridge.bus.transport.Transport`-like
``send``/``close`` methods, never a socket. Delivery reads copy-on-write snapshots of the
subscriber sets, so publishing never waits for a connect, a subscribe or a disconnect, and it
never does I/O: it only queues pre-framed bytes in each recipient's outbox.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from ..protocol import UNKNOWN_CLIENT_TYPE, BusEvent, utc_timestamp
from .pacing import FanoutPacer

if TYPE_CHECKING:
    from .outbox import Outbox


class ClientTransport(Protocol):
    """What the hub needs of a connection."""

    def send(self, frame: bytes, direct: bool = True) -> bool:
        """Queue ``frame`` (or write it at once, when ``direct`` allows); False if refused."""

    def close(self, code: int, reason: str = "", discard: bool = False) -> bool: ...
    def stats(self) -> dict[str, int]: ...


@dataclass(eq=False)
class Client:
    """One connected client: identity, registration and subscriptions."""

    transport: ClientTransport
    remote_addr: str | None = None
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    client_type: str = UNKNOWN_CLIENT_TYPE
    client_name: str | None = None
    channels: frozenset[str] = frozenset()
    connected_at: float = field(default_factory=time.time)
    #: False for clients that follow only their own channels (job streams): broadcasts with
    #: no channel pass them by.
    broadcasts: bool = True
    #: Called with each event after this client's transport accepted its frame.
    on_event: Callable[[BusEvent], None] | None = None
    #: The claims of its token (``auth.tokens.Claims``) while authentication is on, else None.
    auth: Any = None

    def describe(self) -> dict[str, Any]:
        """The admin view of the client (API.md ``GET /api/websocket/clients``)."""
        return {
            "client_id": self.client_id,
            "client_type": self.client_type,
            "client_name": self.client_name,
            "channels": sorted(self.channels),
            "connected_at": utc_timestamp(datetime.fromtimestamp(self.connected_at, UTC)),
            "remote_addr": self.remote_addr,
            **self.transport.stats(),
            **({"sub": self.auth.sub, "role": self.auth.role} if self.auth is not None else {}),
        }


_ALL = None  # snapshot key of "every connected client"
#: A publisher waits (:meth:`Hub.wait_for_writers`) while the median of the latest fan-out's
#: sampled recipients has more than BACKLOG_HIGH frames queued behind a writer that could be
#: writing, until it is down to BACKLOG_LOW. Deep enough that writers still send many frames
#: per system call; shallow enough that a frame waits a few fan-outs, not seconds.
BACKLOG_HIGH = 16
BACKLOG_LOW = 4
#: Recipients sampled, evenly spaced over the fan-out (its median decides).
BACKLOG_SAMPLE = 5
#: While waiting, look again this often (seconds): the sampled writer may finish, or stall on
#: a full socket, while another still lags.
BACKLOG_RECHECK = 0.02
#: Called with every delivered event, and with None when the hub closes every client.
Watcher = Callable[[BusEvent | None], None]


class Hub:
    """Clients, their types and subscriptions, and the recipients of each event."""

    def __init__(self) -> None:
        # _lock guards _clients, _members and _snapshots; it is never held during I/O.
        self._lock = threading.Lock()
        self._clients: dict[str, Client] = {}
        self._members: dict[str, dict[Client, None]] = {}
        self._snapshots: dict[str | None, tuple[Client, ...]] = {}
        self._pacer = FanoutPacer()
        self._latest: Sequence[Client] = ()  # the recipients of the latest fan-out
        # Copy-on-write, like the snapshots: delivery reads it without the lock.
        self._watchers: tuple[Watcher, ...] = ()
        #: Told each delivered event and how many clients accepted it (metrics); None: nobody.
        self.on_delivered: Callable[[BusEvent, int], None] | None = None

    # ------------------------------------------------------------------ registry

    def add(self, client: Client) -> None:
        """Make ``client`` reachable (by every broadcast with no channel, for now)."""
        with self._lock:
            self._clients[client.client_id] = client
            self._snapshots.pop(_ALL, None)

    def remove(self, client: Client) -> bool:
        """Forget ``client`` and its subscriptions; False if it was not registered."""
        with self._lock:
            if self._clients.get(client.client_id) is not client:
                return False
            del self._clients[client.client_id]
            self._snapshots.pop(_ALL, None)
            for channel in client.channels:
                self._leave(client, channel)
            client.channels = frozenset()
            return True

    def get(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

    def clients(self) -> list[Client]:
        """Connected clients, oldest connection first."""
        with self._lock:
            return list(self._clients.values())

    def __len__(self) -> int:
        return len(self._clients)

    def register(self, client: Client, client_type: str, client_name: str) -> None:
        """Set (or change) a client's type and name."""
        with self._lock:
            client.client_type = client_type
            client.client_name = client_name

    def subscribe(
        self, client: Client, channels: Iterable[str], limit: int | None = None
    ) -> frozenset[str]:
        """Add ``channels`` to the client's subscriptions; return them all.

        Raises :class:`OverflowError` (changing nothing) when the total would exceed ``limit``.
        """
        with self._lock:
            new = [c for c in dict.fromkeys(channels) if c not in client.channels]
            if limit is not None and len(client.channels) + len(new) > limit:
                raise OverflowError(limit)
            if client.client_id not in self._clients:
                return client.channels
            for channel in new:
                self._members.setdefault(channel, {})[client] = None
                self._snapshots.pop(channel, None)
            client.channels = client.channels.union(new)
            return client.channels

    def unsubscribe(self, client: Client, channels: Iterable[str]) -> frozenset[str]:
        """Remove ``channels`` from the client's subscriptions; return those left."""
        with self._lock:
            gone = [c for c in channels if c in client.channels]
            for channel in gone:
                self._leave(client, channel)
            client.channels = client.channels.difference(gone)
            return client.channels

    def _leave(self, client: Client, channel: str) -> None:
        members = self._members.get(channel)
        if members is not None:
            members.pop(client, None)
            if not members:
                del self._members[channel]
        self._snapshots.pop(channel, None)

    def _snapshot(self, key: str | None) -> tuple[Client, ...]:
        snapshot = self._snapshots.get(key)
        if snapshot is None:
            with self._lock:
                if key is _ALL:
                    snapshot = tuple(c for c in self._clients.values() if c.broadcasts)
                else:
                    snapshot = tuple(self._members.get(key, ()))
                self._snapshots[key] = snapshot
        return snapshot

    # ------------------------------------------------------------------ watchers

    def watch(self, watcher: Watcher) -> None:
        """Call ``watcher`` after each delivery from now on (long polls waiting for an event);
        a watcher is not a client: it is not listed, counted or sent anything."""
        with self._lock:
            self._watchers = self._watchers + (watcher,)

    def unwatch(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers = tuple(w for w in self._watchers if w is not watcher)

    # ------------------------------------------------------------------ delivery

    def recipients(self, event: BusEvent) -> list[Client]:
        """The clients ``event`` reaches: subscribers of any of its channels (everyone when it
        has none), limited to its client types, each once."""
        targets = event.targets
        if event.channel is None:
            candidates: Iterable[Client] = self._snapshot(_ALL)
        elif len(targets) == 1:
            candidates = self._snapshot(targets[0])
        else:
            merged: dict[Client, None] = {}
            for channel in targets:
                merged.update(dict.fromkeys(self._snapshot(channel)))
            candidates = merged
        types = event.client_types
        if types is None:
            return list(candidates)
        return [c for c in candidates if c.client_type in types]

    @staticmethod
    def would_receive(client: Client, event: BusEvent) -> bool:
        """Whether ``client``, as subscribed now, is a recipient of ``event`` (for replays)."""
        if event.client_types is not None and client.client_type not in event.client_types:
            return False
        if event.channel is None:
            return client.broadcasts
        return any(target in client.channels for target in event.targets)

    def deliver(self, event: BusEvent) -> int:
        """Hand the event's frame to each recipient; return how many accepted it."""
        frame = event.frame
        count = 0
        candidates: Sequence[Client]
        if event.client_types is None and len(event.targets) <= 1:
            # The common case, kept lean: one channel (or everyone), no type limit.
            candidates = self._snapshot(event.targets[0] if event.targets else _ALL)
        else:
            candidates = self.recipients(event)
        recipients = len(candidates)
        self._latest = candidates
        started, direct = self._pacer.begin(recipients)
        for client in candidates:
            if client.transport.send(frame, direct):
                count += 1
                if client.on_event is not None:
                    client.on_event(event)
        self._pacer.end(started, recipients, direct)
        if self.on_delivered is not None:
            self.on_delivered(event, count)
        for watcher in self._watchers:
            watcher(event)
        return count

    def wait_for_writers(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, while the writers of the latest fan-out are
        behind; True unless the time ran out.

        Called by publishers after publishing: one that outruns the writers (the process has
        no time left to write what it queues) is slowed to their pace, so queues and latency
        stay bounded instead of growing for as long as it publishes. Recipients whose socket
        is full are not waited for: a peer that reads slowly is the slow-consumer limit's
        business (close 4008), never a reason to hold up every publisher.
        """
        deadline = time.monotonic() + timeout
        while (outbox := self._lagging_outbox()) is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            outbox.wait_room(BACKLOG_LOW, min(left, BACKLOG_RECHECK))
        return True

    def _lagging_outbox(self) -> Outbox | None:
        """The median-backlog outbox of a sample of the latest fan-out's recipients, when its
        backlog is over BACKLOG_HIGH and its socket could take more; else None."""
        latest = self._latest
        count = len(latest)
        if not count:
            return None
        backlogs: list[tuple[int, int, Outbox]] = []
        for i in dict.fromkeys(count * k // BACKLOG_SAMPLE for k in range(BACKLOG_SAMPLE)):
            outbox = getattr(latest[i].transport, "outbox", None)  # None: SSE, a gated replay
            if outbox is not None:
                backlogs.append((0 if outbox.socket_full else outbox.depth, i, outbox))
        if not backlogs:
            return None
        backlogs.sort()
        depth, _, outbox = backlogs[len(backlogs) // 2]
        return outbox if depth > BACKLOG_HIGH else None

    # ------------------------------------------------------------------ closing

    def disconnect(self, client_id: str, code: int, reason: str = "") -> bool:
        """Close one client with ``code``; False if no such client is connected here."""
        client = self.get(client_id)
        if client is None:
            return False
        self.remove(client)
        client.transport.close(code, reason)
        return True

    def close_all(self, code: int, reason: str = "") -> int:
        """Close every client with ``code`` (server shutdown); return how many."""
        clients = self.clients()
        for client in clients:
            self.remove(client)
            client.transport.close(code, reason)
        for watcher in self._watchers:
            watcher(None)
        return len(clients)
