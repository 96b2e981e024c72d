"""One pass writes the queued frames of every connection a fan-out queued for.

A queued fan-out (the hub's pacer chose it, the process being busy) used to wake each
recipient's own writer: a greenlet switch, an event and a timer per recipient, per event. The
flusher instead visits the outboxes a fan-out left waiting in one pass of its own and hands each
its queue in one non-blocking ``send``. Whatever piled up since the previous pass goes out
together, so a busy process sends several frames per system call; only a socket that cannot
take its batch gets a writer of its own, which waits for it. Publishing stays an append per
recipient plus, once per fan-out, a wake-up.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .outbox import Outbox, _Runner


#: A pass that took this long (seconds) is followed by a rest as long as it, at most MAX_REST.
REST_AFTER = 0.002
MAX_REST = 0.02


class Flusher:
    """Flushes, in its own thread of control (a greenlet under gevent), the outboxes handed to
    :meth:`add`, in the order they were added."""

    def __init__(self) -> None:
        from .outbox import _lock, _Runner  # outbox imports this module

        self._runner_class = _Runner
        # Guards _pending and _runner; only list operations run under it (see outbox._lock).
        self._lock = _lock()
        self._pending: list[Outbox] = []
        self._wakeup = threading.Event()
        self._runner: _Runner | None = None

    def add(self, outbox: Outbox) -> None:
        """Flush ``outbox`` in the next pass (it holds queued frames and no writer owns them)."""
        with self._lock:
            self._pending.append(outbox)
            if len(self._pending) > 1:
                return  # the pass is already due
            start = self._runner is None
            if start:
                self._runner = self._runner_class(self._run, "outbox-flusher")
        if not start:
            self._wakeup.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                due, self._pending = self._pending, []
                if not due:
                    self._wakeup.clear()
            if not due:
                self._wakeup.wait()
                continue
            started = time.monotonic()
            for outbox in due:
                outbox.flush()
            took = time.monotonic() - started
            if took >= REST_AFTER:
                # A long pass means a busy process: rest as long before the next, so that
                # publishers get their share of it and the next pass sends what piled up
                # meanwhile, several frames per send, instead of one send per frame.
                time.sleep(min(took, MAX_REST))


_flusher: Flusher | None = None


def flusher() -> Flusher:
    """This process's flusher (made on first use, after any fork)."""
    global _flusher
    if _flusher is None:
        _flusher = Flusher()
    return _flusher


def _forget_after_fork() -> None:
    # A forked child (a gunicorn worker) has none of its parent's threads or greenlets.
    global _flusher
    _flusher = None


os.register_at_fork(after_in_child=_forget_after_fork)
