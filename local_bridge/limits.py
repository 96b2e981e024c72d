"""Rate limits: a token bucket per connection, a sliding window per remote address."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class TokenBucket:
    """Allows ``rate`` events per second with bursts of ``burst``; ``rate`` 0 allows all."""

    __slots__ = ("rate", "burst", "_clock", "_tokens", "_stamp")  # one per connection

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def allow(self) -> bool:
        if self.rate <= 0:
            return True
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class MessageLimiter:
    """The per-connection message policy of API.md (``MESSAGE_RATE``/``MESSAGE_BURST``).

    :meth:`check` answers ``"ok"``, ``"drop"`` (drop silently), ``"warn"`` (drop and send one
    ``rate_limited`` error; at most one a second) or ``"close"`` (over 100 drops in 10 s).
    """

    MAX_DROPS = 100
    DROP_WINDOW = 10.0
    WARN_EVERY = 1.0

    __slots__ = ("_bucket", "_clock", "_drops", "_last_warning")  # one per connection

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self._bucket = TokenBucket(rate, burst, clock)
        self._clock = clock
        self._drops: deque[float] | None = None  # made at the first drop: most clients never
        self._last_warning = float("-inf")

    def check(self) -> str:
        if self._bucket.allow():
            return "ok"
        now = self._clock()
        drops = self._drops
        if drops is None:
            drops = self._drops = deque()
        drops.append(now)
        while drops and drops[0] <= now - self.DROP_WINDOW:
            drops.popleft()
        if len(drops) > self.MAX_DROPS:
            return "close"
        if now - self._last_warning >= self.WARN_EVERY:
            self._last_warning = now
            return "warn"
        return "drop"


class ConnectRateLimiter:
    """At most ``per_minute`` new connections per remote address in any 60 s (0: off).

    The per-address table is bounded: addresses are kept in order of their last attempt, and
    past ``MAX_ADDRESSES`` the least recent are forgotten, idle ones first (each at most once, so
    a connect costs constant time on average). Forgetting an address still within its minute
    only resets its count.
    """

    MAX_ADDRESSES = 10000
    WINDOW = 60.0

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()  # guards _seen
        self._seen: dict[str, deque[float]] = {}  # least recent attempt first

    def allow(self, address: str) -> bool:
        if self.per_minute <= 0:
            return True
        now = self._clock()
        with self._lock:
            stamps = self._seen.pop(address, None)
            if stamps is None:
                stamps = deque()
                if len(self._seen) >= self.MAX_ADDRESSES:
                    self._forget(now)
            self._seen[address] = stamps  # re-inserted last: the most recent attempt
            while stamps and stamps[0] <= now - self.WINDOW:
                stamps.popleft()
            if len(stamps) >= self.per_minute:
                return False
            stamps.append(now)
            return True

    def _forget(self, now: float) -> None:
        """Drop the idle addresses at the front, then the least recent down to the bound."""
        while self._seen:
            oldest = next(iter(self._seen))
            stamps = self._seen[oldest]
            if stamps and stamps[-1] > now - self.WINDOW and len(self._seen) < self.MAX_ADDRESSES:
                break
            del self._seen[oldest]


class AddressRateLimiter:
    """``rate`` requests per second per remote address, bursts of ``rate`` (0: off)."""

    MAX_ADDRESSES = 10000

    def __init__(self, rate: float, clock=time.monotonic):
        self.rate = rate
        self._clock = clock
        self._lock = threading.Lock()  # guards _buckets
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, address: str) -> bool:
        if self.rate <= 0:
            return True
        with self._lock:
            bucket = self._buckets.pop(address, None)
            if bucket is None:
                if len(self._buckets) >= self.MAX_ADDRESSES:  # bounded: forget the least recent
                    del self._buckets[next(iter(self._buckets))]
                bucket = TokenBucket(self.rate, max(1, int(self.rate)), self._clock)
            self._buckets[address] = bucket  # re-inserted last: the dict is in recency order
            return bucket.allow()


class ConnectionLimit:
    """At most ``limit`` connections at once (``MAX_CONNECTIONS``), counting those admitted
    whose handshake is still under way.

    A connection is counted by the hub once it has joined; before that it holds a
    :class:`Ticket`. Counting only the hub let every handshake in flight pass the check together
    (the threaded worker admits in parallel): the limit was overshot under a connection flood.
    """

    def __init__(self, limit: int, joined: Callable[[], int], has_joined: Callable[[Any], bool]):
        self.limit = limit
        self._joined = joined  # how many have joined (the hub's size)
        self._has_joined = has_joined  # whether a ticket's connection is among them
        self._lock = threading.Lock()  # guards _pending
        self._pending: set[Ticket] = set()

    def admit(self) -> Ticket | None:
        """A ticket for one more connection, or None when there is no room."""
        with self._lock:
            self._pending = {
                t for t in self._pending if t.subject is None or not self._has_joined(t.subject)
            }
            if self._joined() + len(self._pending) >= self.limit:
                return None
            ticket = Ticket()
            self._pending.add(ticket)
            return ticket

    def release(self, ticket: Ticket) -> None:
        """The ticket's connection is over (or was never made)."""
        with self._lock:
            self._pending.discard(ticket)


class Ticket:
    """One admitted connection; ``subject`` is what joins (the hub's client), once known."""

    __slots__ = ("subject", "__weakref__")

    def __init__(self) -> None:
        self.subject: Any = None
