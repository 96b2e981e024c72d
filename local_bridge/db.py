"""The SQLAlchemy engine: SQLite in the instance folder by default, any URL by configuration."""
from __future__ import annotations

import os

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError


def default_url(instance_path: str) -> str:
    os.makedirs(instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(instance_path, "local_bridge.db")


class Database:
    """Owns the engine of one application."""

    def __init__(self, url: str):
        self.url = url
        self.engine: Engine = create_engine(url, pool_pre_ping=True)

    def check(self) -> str:
        """``"ok"`` when a trivial query succeeds, else the error text (for health)."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return "ok"
        except SQLAlchemyError as exc:
            return f"error: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"

    def close(self) -> None:
        self.engine.dispose()
