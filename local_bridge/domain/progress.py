"""Progress conflation: at most ``rate`` job_progress events per second per job reach clients.

A report that changes the stage goes out at once; otherwise a report inside the current
window replaces the one waiting, which is published when the window ends, so the latest value
is never lost. :meth:`ProgressConflator.finish` publishes what is waiting before a job's
terminal event. (The stored job always has every value: conflation is for the bus only.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Publish = Callable[[dict[str, Any]], Any]


@dataclass
class _JobWindow:
    stage: Any
    sent_at: float
    pending: dict[str, Any] | None = None
    timer: threading.Timer | None = None


class ProgressConflator:
    """Rate-limits job_progress per job without dropping stage changes or the last value."""

    def __init__(self, rate: float, publish: Publish, clock: Callable[[], float] = time.monotonic):
        self.interval = 1.0 / rate
        self._publish = publish
        self._clock = clock
        # _lock guards _jobs and keeps each job's progress events in report order.
        self._lock = threading.Lock()
        self._jobs: dict[Any, _JobWindow] = {}

    def report(self, job_id: Any, fields: dict[str, Any]) -> bool:
        """Offer one progress report; True when it was published at once."""
        with self._lock:
            now = self._clock()
            window = self._jobs.get(job_id)
            if (
                window is None
                or fields.get("stage") != window.stage
                or now >= window.sent_at + self.interval
            ):
                if window is not None and window.timer is not None:
                    window.timer.cancel()
                self._jobs[job_id] = _JobWindow(fields.get("stage"), now)
                self._publish(fields)
                return True
            window.pending = fields
            if window.timer is None:
                window.timer = threading.Timer(
                    window.sent_at + self.interval - now, self._flush, args=(job_id, window)
                )
                window.timer.daemon = True
                window.timer.start()
            return False

    def _flush(self, job_id: Any, window: _JobWindow) -> None:
        with self._lock:
            if self._jobs.get(job_id) is not window:
                return  # superseded or finished meanwhile
            window.timer = None
            if window.pending is not None:
                self._publish(window.pending)
                window.pending = None
                window.sent_at = self._clock()

    def finish(self, job_id: Any) -> None:
        """The job has ended: publish its waiting report, if any, and forget it."""
        with self._lock:
            window = self._jobs.pop(job_id, None)
            if window is None:
                return
            if window.timer is not None:
                window.timer.cancel()
            if window.pending is not None:
                self._publish(window.pending)

    def close(self) -> None:
        with self._lock:
            for window in self._jobs.values():
                if window.timer is not None:
                    window.timer.cancel()
            self._jobs.clear()
