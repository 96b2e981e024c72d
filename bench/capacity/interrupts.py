"""Signals during the capacity test: the first SIGINT/SIGTERM/SIGHUP unwinds the run (so the
``finally`` blocks stop the server), but never between starting a server and keeping track of it."""

from __future__ import annotations

import contextlib
import signal
from typing import Any


class Terminated(Exception):
    pass


_signals: dict[str, Any] = {"seen": False, "defer": 0, "pending": None}


def on_signal(signum, frame):
    """The first SIGINT/SIGTERM/SIGHUP unwinds the run (the finally blocks stop the server);
    inside :func:`no_interrupt` it waits until the block is done. Later signals are ignored
    so that the clean-up, itself bounded, is never cut short."""
    if _signals["seen"]:
        return
    _signals["seen"] = True
    exc = (
        KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signal.Signals(signum).name)
    )
    if _signals["defer"]:
        _signals["pending"] = exc
        return
    raise exc


@contextlib.contextmanager
def no_interrupt():
    """Defer a signal's exception until the block (starting or stopping the server) is done."""
    _signals["defer"] += 1
    try:
        yield
    finally:
        _signals["defer"] -= 1
    if not _signals["defer"] and _signals["pending"] is not None:
        exc, _signals["pending"] = _signals["pending"], None
        raise exc


def install() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
