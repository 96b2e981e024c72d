"""Schema migrations with Alembic (``local-bridge db upgrade``)."""

from __future__ import annotations

import os
from functools import lru_cache

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine

MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")
UPGRADE_HINT = "run 'local-bridge db upgrade'"


class MigrationError(Exception):
    """The schema cannot be brought up to date: no migrations shipped, or Alembic refused."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Bring the database of ``engine`` to ``revision``; the revision it is at afterwards.

    Raises :class:`MigrationError` when this installation ships no migration: Alembic alone
    would do nothing and leave a database without tables looking migrated.
    """
    head = head_revision()
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except CommandError as exc:
        raise MigrationError(str(exc).splitlines()[0]) from exc
    current = current_revision(engine)
    if current is None or (revision == "head" and current != head):
        raise MigrationError(f"the database is at revision {current} after the upgrade, not {head}")
    return current


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest migration shipped with this version; :class:`MigrationError` when none is."""
    try:
        head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    except CommandError as exc:  # no migrations folder, or several heads
        raise MigrationError(
            f"schema migrations in {MIGRATIONS} are unusable: {str(exc).splitlines()[0]}"
        ) from exc
    if head is None:
        raise MigrationError(
            f"no schema migrations found in {MIGRATIONS}: this installation "
            "of local_bridge is incomplete; reinstall it"
        )
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None: never migrated)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def schema_problem(engine: Engine) -> str | None:
    """What keeps the schema of ``engine`` from being this version's (None: nothing).

    Raises SQLAlchemyError when the database does not answer.
    """
    try:
        head = head_revision()
    except MigrationError as exc:
        return str(exc)
    current = current_revision(engine)
    if current == head:
        return None
    if current is None:
        return f"schema missing: {UPGRADE_HINT}"
    return f"schema at revision {current}, this version needs {head}: {UPGRADE_HINT}"
