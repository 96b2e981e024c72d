"""The backplane contract: number events, keep the bus epoch, and hand every event to the
delivery callback of every process in order."""

from __future__ import annotations

import abc
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from ..protocol import BusEvent, EventDraft

DeliverFn = Callable[[BusEvent], int]


class BackplaneUnavailable(RuntimeError):
    """The backplane cannot take events now (Redis unreachable): the publish failed whole."""


class Backplane(abc.ABC):
    """Carries published events to the hub of every server process sharing the bus."""

    #: What carries the events: ``memory`` (this process) or ``redis`` (every process on it).
    kind = "memory"

    def __init__(self) -> None:
        self._deliver: DeliverFn = lambda event: 0
        self._serve: Callable[[dict[str, Any]], dict[str, Any]] = lambda request: {}
        self._events_lost: Callable[[], None] = lambda: None

    def attach(self, deliver: DeliverFn) -> None:
        """Set the function that hands an event to this process's hub."""
        self._deliver = deliver

    def serve_requests(self, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Set the function that answers control requests (admin actions) in this process."""
        self._serve = handler

    def on_events_lost(self, callback: Callable[[], None]) -> None:
        """Set what to do when this process's clients may have missed events that the
        backplane can no longer deliver (the bus closes them 1011, so each resumes and is told
        ``recovered: false``). Called with the delivery paused (see :meth:`paused`)."""
        self._events_lost = callback

    def request_all(self, request: dict[str, Any], timeout: float = 2.0) -> list[dict[str, Any]]:
        """Ask every process sharing the bus (this one included); return their answers."""
        return [self._serve(request)]

    @property
    @abc.abstractmethod
    def epoch(self) -> str:
        """Identifies this bus's numbering: a new epoch means old ``seq`` values are void."""

    @property
    @abc.abstractmethod
    def last_seq(self) -> int:
        """The ``seq`` of the latest event published on the bus (0 before the first)."""

    @abc.abstractmethod
    def publish(self, draft: EventDraft) -> tuple[BusEvent, int]:
        """Number the event and deliver it everywhere; return it and how many clients of this
        process it was queued for."""

    def publish_many(self, drafts: list[EventDraft]) -> list[tuple[BusEvent, int]]:
        """Publish events in the given order (see :meth:`publish`); a backplane may number and
        deliver them in one step."""
        return [self.publish(draft) for draft in drafts]

    @abc.abstractmethod
    def paused(self) -> AbstractContextManager[Any]:
        """A context in which no event reaches this process's hub, so a client can be told
        ``last_seq`` and joined to the hub as one step (the ``seq`` of ``connected`` and
        ``subscribed``: exactly the point after which it receives everything)."""

    @abc.abstractmethod
    def history(self, since: int) -> tuple[list[BusEvent], bool]:
        """Events published after ``since`` that are still held, in seq order, and whether
        that is all of them (False: some were trimmed or expired)."""

    @property
    def available(self) -> bool:
        """Whether an event published now would be delivered (checked before writes)."""
        return True

    def health(self) -> str:
        """``"ok"`` or a short description of what is wrong."""
        return "ok"

    def close(self) -> None:  # noqa: B027 - optional: a backplane without resources has none
        """Release connections and threads."""
