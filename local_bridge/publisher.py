"""The one publish path: validate the fields, then number, frame and deliver via the backplane.

REST endpoints, the admin API, custom message handlers and the ``broadcast_*`` functions all
publish through :meth:`Publisher.publish`; nothing else writes events to clients.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import catalog
from .backplane import Backplane
from .protocol import CHANNELS, EventDraft, draft_event, is_valid_channel


class UnknownChannelError(ValueError):
    """The channel is neither a bus channel nor an entity sub-channel."""


@dataclass(frozen=True)
class Published:
    """What :meth:`Publisher.publish` did: the event's ``seq`` and how many clients it reached."""

    seq: int
    recipients: int
    message: dict[str, Any]


class Publisher:
    """Validates events and hands them to the backplane."""

    def __init__(self, backplane: Backplane):
        self.backplane = backplane
        # _count_lock guards events_published.
        self._count_lock = threading.Lock()
        self.events_published = 0
        #: Told ``(type, channel)`` of each event published (metrics); None: nobody.
        self.on_published: Callable[[str, str | None], None] | None = None

    def publish(
        self,
        type_: str,
        fields: dict[str, Any],
        *,
        channel: str | None = "",
        client_types: Iterable[str] | None = None,
    ) -> Published:
        """Publish one event.

        A catalog type is validated against its schema and goes to its own channel unless
        ``channel`` names another; any other type is a custom event. ``channel=None`` reaches
        every connected client. Raises :class:`~local_bridge.catalog.EventValidationError` or
        :class:`UnknownChannelError`, publishing nothing.
        """
        draft = self.prepare(type_, fields, channel=channel, client_types=client_types)
        event, recipients = self.backplane.publish(draft)
        self._count([draft])
        return Published(event.seq, recipients, event.message)

    def prepare(
        self,
        type_: str,
        fields: dict[str, Any],
        *,
        channel: str | None = "",
        client_types: Iterable[str] | None = None,
    ) -> EventDraft:
        """The event :meth:`publish` would publish, checked but not yet numbered; raises as
        :meth:`publish` does."""
        if catalog.is_catalog_type(type_):
            fields = catalog.validate_event(type_, fields)
            if channel == "":
                channel = catalog.channel_of(type_)
        else:
            fields = catalog.validate_custom(type_, fields)
        if channel == "":
            channel = None
        if channel is not None and not is_valid_channel(channel):
            raise UnknownChannelError(channel)
        types = frozenset(client_types) if client_types is not None else None
        return _draft(type_, channel, fields, types)

    def publish_many(self, drafts: list[EventDraft]) -> list[Published]:
        """Publish prepared events in the given order, each with its own seq."""
        done = self.backplane.publish_many(drafts)
        self._count(drafts)
        return [Published(event.seq, recipients, event.message) for event, recipients in done]

    def _count(self, drafts: list[EventDraft]) -> None:
        with self._count_lock:
            self.events_published += len(drafts)
        if self.on_published is not None:
            for draft in drafts:
                self.on_published(draft.type, draft.channel)

    @property
    def available(self) -> bool:
        """Whether an event published now would be delivered (checked before writes)."""
        return self.backplane.available


def _draft(
    type_: str, channel: str | None, fields: dict[str, Any], client_types: frozenset[str] | None
) -> EventDraft:
    try:
        return draft_event(type_, channel, fields, client_types)
    except (ValueError, TypeError):
        bad = {}
        for name, value in fields.items():  # name the culprits; only on this rare path
            try:
                draft_event(type_, channel, {name: value})
            except (ValueError, TypeError):
                bad[name] = ["Not JSON: numbers must be finite."]
        raise catalog.EventValidationError(bad or {"_schema": ["Not JSON."]}) from None


__all__ = ["CHANNELS", "Published", "Publisher", "UnknownChannelError"]
