"""The SQLAlchemy engine: SQLite in the instance folder by default, any URL by configuration."""

from __future__ import annotations

import os

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker


def default_url(instance_path: str) -> str:
    os.makedirs(instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(instance_path, "local_bridge.db")


class Database:
    """Owns the engine of one application."""

    def __init__(self, url: str):
        self.url = url
        options: dict = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            # Writers wait for each other (up to 30 s) instead of failing at once.
            options["connect_args"] = {"timeout": 30, "check_same_thread": False}
        self.engine: Engine = create_engine(url, **options)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def check(self) -> str:
        """``"ok"`` when the database answers with this version's schema, else what is wrong.

        A database without tables, one behind (or ahead of) the shipped migrations, and an
        installation that ships no migration at all are never ``"ok"``.
        """
        from .migrate import schema_problem

        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return schema_problem(self.engine) or "ok"
        except SQLAlchemyError as exc:
            return f"error: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"

    def close(self) -> None:
        self.engine.dispose()
