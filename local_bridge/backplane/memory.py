"""The in-memory backplane: one process, one sequence."""

from __future__ import annotations

import threading
import uuid

from ..protocol import BusEvent, EventDraft
from .base import Backplane
from .history import History


class MemoryBackplane(Backplane):
    """Numbers events in this process and delivers them to its own hub."""

    def __init__(self, history_size: int = 10000, history_ttl: float = 600.0) -> None:
        super().__init__()
        self._epoch = uuid.uuid4().hex[:16]
        self._history = History(history_size, history_ttl)
        # _lock guards _seq and makes numbering and delivery one step, so every client
        # receives events in increasing seq order however many threads publish at once.
        self._lock = threading.Lock()
        self._seq = 0

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def last_seq(self) -> int:
        return self._seq

    def paused(self) -> threading.Lock:
        return self._lock

    def publish(self, draft: EventDraft) -> tuple[BusEvent, int]:
        with self._lock:
            self._seq += 1
            event = draft.finish(self._seq)
            self._history.append(event)
            return event, self._deliver(event)

    def publish_many(self, drafts: list[EventDraft]) -> list[tuple[BusEvent, int]]:
        # One hold of the lock: the events get consecutive seqs, nothing interleaves.
        done = []
        with self._lock:
            for draft in drafts:
                self._seq += 1
                event = draft.finish(self._seq)
                self._history.append(event)
                done.append((event, self._deliver(event)))
        return done

    def history(self, since: int) -> tuple[list[BusEvent], bool]:
        return self._history.since(since, self._seq)
