"""One transaction, then its events: the rule that events follow the commit.

Inside :meth:`UnitOfWork.transaction` a service changes rows and queues events; the events are
validated at once (a bug fails before anything is written) and published, in order, only after
the commit succeeds. A failed or rolled-back transaction publishes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from .. import catalog
from ..backplane.base import BackplaneUnavailable
from ..publisher import Published


class EventSink(Protocol):
    """What the domain needs of the bus: whether a publish would be delivered, and publishing."""

    @property
    def available(self) -> bool: ...

    def publish(
        self, type_: str, fields: dict[str, Any], *, channel: str | None = ""
    ) -> Published: ...


class Tx:
    """A database session (``db``) plus the events to publish once it has committed."""

    def __init__(self, db: Session, publisher: EventSink):
        self.db = db
        self._publisher = publisher
        self._after: list[Callable[[], Any]] = []

    def emit(self, type_: str, channel: str = "", **fields: Any) -> None:
        """Queue a catalog event; it is published after the commit, in emit order."""
        validated = catalog.validate_event(type_, fields)
        self._after.append(lambda: self._publisher.publish(type_, validated, channel=channel))

    def after_commit(self, action: Callable[[], Any]) -> None:
        """Run ``action`` after the commit, in order with the emitted events."""
        self._after.append(action)


class UnitOfWork:
    """Transactions on the application's database, publishing through its publisher."""

    def __init__(self, open_db: sessionmaker, publisher: EventSink):
        self._open_db = open_db
        self.publisher = publisher

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        if not self.publisher.available:
            # Refuse before writing: a change whose events could not be published would leave
            # every client disagreeing with the database.
            raise BackplaneUnavailable("the event backplane is unavailable")
        db = self._open_db()
        tx = Tx(db, self.publisher)
        try:
            yield tx
            db.commit()
        except BaseException:
            db.rollback()
            raise
        finally:
            db.close()
        for action in tx._after:
            action()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A database session for reading only."""
        db = self._open_db()
        try:
            yield db
        finally:
            db.rollback()
            db.close()
