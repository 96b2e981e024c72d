"""When a fan-out writes to its recipients' sockets itself, and when it leaves that to their
writers.

Writing each recipient's socket at once (one non-blocking ``send`` per client) reaches the last
subscriber soonest while events are sparse. When fan-outs follow each other closely, it is the
wrong choice: each event then costs one system call per client, where queueing lets every
client's writer send all the events that piled up in one. :class:`FanoutPacer` tells the two
apart from the time between fan-outs and the measured cost of writing directly.
"""
from __future__ import annotations

import time

#: A fan-out writes directly only if the time since the previous one is at least this many
#: times what writing all of it directly is expected to cost.
HEADROOM = 2.0
#: Seconds per recipient a direct fan-out is assumed to cost until one has been measured.
INITIAL_COST = 10e-6
#: Fan-outs to fewer recipients are too short to measure the cost per recipient by.
MIN_SAMPLE = 32


class FanoutPacer:
    """Chooses, for each fan-out, direct writes (sparse events) or queued ones (a stream).

    Only a hint: its state is read and written without a lock, and a race between two
    publishing threads costs at most one fan-out's choice.
    """

    def __init__(self) -> None:
        self._last_start = float("-inf")
        self._cost = INITIAL_COST  # seconds per recipient of a direct fan-out (moving average)

    def begin(self, recipients: int) -> tuple[float, bool]:
        """A fan-out to ``recipients`` starts: when, and whether it writes directly."""
        now = time.monotonic()
        gap, self._last_start = now - self._last_start, now
        return now, gap >= HEADROOM * recipients * self._cost

    def end(self, started: float, recipients: int, direct: bool) -> None:
        """A fan-out begun at ``started`` is done; a direct one teaches the cost."""
        if direct and recipients >= MIN_SAMPLE:
            per_recipient = (time.monotonic() - started) / recipients
            self._cost += 0.25 * (per_recipient - self._cost)
