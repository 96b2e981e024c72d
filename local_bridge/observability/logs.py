"""The server's log records: text or one JSON object per line, with request and client ids.

The ids live in context variables. gunicorn serves each request in its own thread (gthread) or
greenlet (gevent; greenlet gives every greenlet a context of its own), so a record always
carries the ids of the request, or WebSocket connection, that wrote it, and none of another's.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

#: The id of the HTTP request being served (``X-Request-ID``), when there is one.
request_id: ContextVar[str | None] = ContextVar("local_bridge_request_id", default=None)
#: The id of the bus client whose connection is being served, when there is one.
client_id: ContextVar[str | None] = ContextVar("local_bridge_client_id", default=None)

#: The logger every record of the server goes through (its modules' loggers are children).
ROOT_LOGGER = "local_bridge"
WARNINGS_LOGGER = "py.warnings"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class ContextFilter(logging.Filter):
    """Stamps each record with the current ``request_id`` and ``client_id`` (or None)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        if not hasattr(record, "client_id"):
            record.client_id = client_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, ``request_id``
    and ``client_id`` when known, the fields a record carries in ``fields`` (the access log's
    method, path, status ...), and ``exception`` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("request_id", "client_id"):
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message [request_id=... client_id=...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """Logging's own time text; the date and time of day are made once a second (every
        request writes a line)."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached = self._second
        if cached[0] != second:  # one tuple, replaced whole: threads never see half of it
            cached = (second, time.strftime(self.default_time_format, self.converter(second)))
            self._second = cached
        return f"{cached[1]},{int(record.msecs):03d}"  # logging's default_msec_format

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = [
            f"{name}={value}"
            for name in ("request_id", "client_id")
            if (value := getattr(record, name, None)) is not None
        ]
        if not context:
            return text
        first, newline, rest = text.partition("\n")  # after the message, before a traceback
        return f"{first} [{' '.join(context)}]{newline}{rest}"


class _BridgeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs (recognised, so it is replaced, not
    added twice, when logging is configured again)."""


def formatter_for(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(
    level: str = "info", log_format: str = "text", stream: TextIO | None = None
) -> logging.Handler:
    """Send the server's records (``local_bridge.*``, and Python's warnings) to ``stream``
    (standard error) at ``level`` and above, in ``log_format``; return the handler.
    (gunicorn's own records keep gunicorn's handler, with this format: see ``gunicorn_app``.)"""
    handler = _BridgeHandler(stream or sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    handler.addFilter(ContextFilter())
    # Python's warnings (a library's DeprecationWarning, gevent's MonkeyPatchWarning) become
    # records of the "py.warnings" logger, so that they too follow the format.
    logging.captureWarnings(True)
    for name in (ROOT_LOGGER, WARNINGS_LOGGER):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _BridgeHandler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
    logging.getLogger(ROOT_LOGGER).setLevel(LEVELS.get(level.lower(), logging.INFO))
    return handler


def format_like_the_server(handler: logging.Handler, log_format: str) -> None:
    """Give another library's handler (gunicorn's) the server's format and context ids."""
    handler.setFormatter(formatter_for(log_format))
    if not any(isinstance(f, ContextFilter) for f in handler.filters):
        handler.addFilter(ContextFilter())
