"""In-process tier: what the bus of an application built by ``create_app`` published."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from local_bridge import state_of


class Published:
    """The in-process counterpart of :class:`support.Watcher`: :meth:`after` returns what one
    action published, read from the bus's own history (every channel, every client type)."""

    def __init__(self, app):
        self.bus = state_of(app).bus

    def after(self, action: Callable[[], Any]) -> tuple[Any, list[dict[str, Any]]]:
        """Run ``action``; return its result and the events it published, in order."""
        since, published_before = self.bus.last_seq, self.bus.events_published
        result = action()
        events, complete = self.bus.history(since)
        assert complete, "the bus history no longer holds every event of the action"
        assert self.bus.events_published - published_before == len(events)
        return result, [dict(event.message) for event in events]
