"""A bounded, expiring record of recent events, for resume, polling and SSE."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from ..protocol import BusEvent


class History:
    """The last ``size`` events younger than ``ttl`` seconds, in seq order.

    :meth:`since` also says whether the record is *complete* after a given seq: whether every
    event published after it is still held (nothing trimmed by size or age).
    """

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.size = size
        self.ttl = ttl
        self._clock = clock
        # _lock guards _events and _dropped_upto (appends come under the publish lock, reads
        # from any thread).
        self._lock = threading.Lock()
        self._events: deque[tuple[float, BusEvent]] = deque()
        self._dropped_upto = 0  # highest seq no longer held

    def append(self, event: BusEvent) -> None:
        if self.size <= 0:
            self._dropped_upto = event.seq
            return
        with self._lock:
            self._events.append((self._clock(), event))
            if len(self._events) > self.size:
                self._dropped_upto = self._events.popleft()[1].seq
            self._expire()

    def _expire(self) -> None:
        limit = self._clock() - self.ttl
        while self._events and self._events[0][0] < limit:
            self._dropped_upto = self._events.popleft()[1].seq

    def since(self, seq: int, upto: int) -> tuple[list[BusEvent], bool]:
        """Events with ``seq < event.seq <= upto``, and whether none of them was dropped."""
        with self._lock:
            self._expire()
            complete = seq >= self._dropped_upto
            events = [event for _, event in self._events if seq < event.seq <= upto]
        return events, complete
