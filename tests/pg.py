"""A fresh PostgreSQL database per test module, on the server named by the environment."""

from __future__ import annotations

import uuid

from support import service_url, unreachable

POSTGRES_ENV = "LOCAL_BRIDGE_TEST_POSTGRES_URL"


def postgres_admin_url() -> str:
    return service_url(POSTGRES_ENV, "PostgreSQL")


class FreshDatabase:
    """CREATE DATABASE on enter, DROP on exit; ``url`` points at it."""

    def __init__(self):
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        admin = make_url(postgres_admin_url())
        if admin.drivername in ("postgresql", "postgres"):
            admin = admin.set(drivername="postgresql+psycopg")
        self.name = "lb_test_" + uuid.uuid4().hex[:12]
        self._admin = create_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            with self._admin.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        except Exception as exc:
            self._admin.dispose()
            unreachable(POSTGRES_ENV, exc)
        self.url = admin.set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        with self._admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._admin.dispose()
