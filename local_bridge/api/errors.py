"""Every error the HTTP side can answer, mapped onto the JSON error envelope of API.md."""

from __future__ import annotations

import logging

from flask import Flask
from sqlalchemy.exc import (
    DBAPIError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from werkzeug.exceptions import HTTPException
from werkzeug.routing import WebsocketMismatch

from ..backplane.base import BackplaneUnavailable
from ..domain.errors import DomainError
from ..migrate import schema_problem
from .envelope import ApiError, api_error, code_for_status

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Answer every error, including unexpected ones, as JSON; never an HTML page."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return api_error(exc.status, exc.code, exc.message, exc.fields)

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError):
        fields = exc.fields if exc.status == 422 else None
        return api_error(
            exc.status,
            exc.code,
            exc.message,
            fields if fields is not None or exc.status != 422 else {},
        )

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = code_for_status(status)  # body parsing raises ApiError itself
        description = exc.description or exc.name
        if isinstance(exc, WebsocketMismatch):
            description = "this endpoint accepts WebSocket connections only"
        response = api_error(status, code, description)
        if status == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(ProgrammingError)
    def _database_error(exc: DBAPIError):
        first_line = str(exc).splitlines()[0][:200]
        problem = _schema_problem(app, exc)
        if problem is not None:
            log.warning("database schema not ready (%s): %s", problem, first_line)
            return api_error(
                503,
                "unavailable",
                "the database schema is not ready: run "
                "'local-bridge db upgrade' on this database, then retry",
            )
        if _statement_fault(exc):  # the schema is current: a fault of this program
            return _unexpected(exc)
        log.warning("database unavailable: %s", first_line)
        return api_error(503, "unavailable", "the database is unavailable; retry later")

    @app.errorhandler(BackplaneUnavailable)
    def _backplane_down(exc: BackplaneUnavailable):
        log.warning("backplane unavailable: %s", exc)
        return api_error(
            503,
            "unavailable",
            "the event backplane is unavailable; nothing was published, retry later",
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return api_error(500, "internal_error", "internal server error")


#: SQLSTATEs of a statement naming a table or column the database does not have (PostgreSQL).
_UNDEFINED_OBJECT_STATES = {"42P01", "42703"}
_SQLITE_MISSING_OBJECT = ("no such table", "no such column")


def _schema_problem(app: Flask, exc: DBAPIError) -> str | None:
    """Why the schema is not ready when ``exc`` comes from it (None: the schema is fine, or
    the database does not answer at all)."""
    original = exc.orig
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    missing_object = state in _UNDEFINED_OBJECT_STATES or any(
        phrase in str(original) for phrase in _SQLITE_MISSING_OBJECT
    )
    if not missing_object and not _statement_fault(exc):
        return None  # connection trouble: asking the database again would only wait again
    try:
        problem = schema_problem(app.extensions["local_bridge"].database.engine)
    except (SQLAlchemyError, KeyError):
        problem = None
    if problem is None and missing_object:
        problem = "a table or column is missing"
    return problem


def _statement_fault(exc: DBAPIError) -> bool:
    """The statement failed, not the connection: a ProgrammingError, or SQLite's generic SQL
    error (syntax, unknown table), which sqlite3 raises as an OperationalError."""
    return (
        isinstance(exc, ProgrammingError)
        or getattr(exc.orig, "sqlite_errorname", None) == "SQLITE_ERROR"
    )


__all__ = ["init_app"]
