"""When a fan-out writes to its recipients' sockets itself, and when it leaves that to their
writers.

Writing each recipient's socket at once (one non-blocking ``send`` per client) reaches the last
subscriber soonest while the process has time to spare. Once the process is busy all the time
it is the wrong choice: each event then costs one system call per client, where queueing lets
every client's writer send all the events that piled up in one, so the process delivers
several times as much. :class:`FanoutPacer` tells the two apart by the CPU the process has been
using and the measured cost of writing directly.
"""

from __future__ import annotations

import time

#: Direct writing stops while the process uses more than this share of a core...
BUSY_LIMIT = 0.9
#: ...averaged over about this many seconds, sampled at most this often.
WINDOW = 0.2
SAMPLE_EVERY = 0.05
#: ...or when writing a fan-out directly would take longer than this share of the time since
#: the previous one began. Queued fan-outs cost little more than direct ones (the flusher
#: writes them in one pass) and batch the frames that pile up, so a stream of events that
#: keeps the process only a quarter busy with writing is already worth queueing.
GAP_SHARE = 0.25
#: Seconds per recipient a direct fan-out is assumed to cost until one has been measured.
INITIAL_COST = 10e-6
#: Fan-outs to fewer recipients are too short to measure the cost per recipient by.
MIN_SAMPLE = 32
#: With time to spare, a fan-out writes directly at least this often (seconds), so that a cost
#: measured at a bad moment (a cold start, a burst of connections) does not stand forever.
REMEASURE = 2.0


class FanoutPacer:
    """Chooses, for each fan-out, direct writes (time to spare) or queued ones (saturated).

    A fan-out writes directly when the process has recently used less than ``BUSY_LIMIT`` of a
    core and writing it so would take at most ``GAP_SHARE`` of the time since the previous
    fan-out began (or the cost was last measured over ``REMEASURE`` seconds ago). Only a hint:
    its state is read and written without a lock, and a race between two publishing threads
    costs at most one fan-out's choice.
    """

    def __init__(self) -> None:
        self._last_start = float("-inf")
        self._last_direct = float("-inf")
        self._cost = INITIAL_COST  # seconds per recipient of a direct fan-out (moving average)
        self._remeasuring = False  # the latest fan-out is direct only to measure the cost again
        self._busy = 0.0  # share of a core the process used lately (moving average)
        self._sampled_at = time.monotonic()
        self._cpu_at = time.process_time()

    def begin(self, recipients: int) -> tuple[float, bool]:
        """A fan-out to ``recipients`` starts: when, and whether it writes directly."""
        now = time.monotonic()
        gap, self._last_start = now - self._last_start, now
        elapsed = now - self._sampled_at
        if elapsed >= SAMPLE_EVERY:
            cpu = time.process_time()
            share = (cpu - self._cpu_at) / elapsed
            self._busy += min(1.0, elapsed / WINDOW) * (share - self._busy)
            self._sampled_at, self._cpu_at = now, cpu
        fits = recipients * self._cost <= GAP_SHARE * gap
        self._remeasuring = not fits and now - self._last_direct > REMEASURE
        return now, self._busy < BUSY_LIMIT and (fits or self._remeasuring)

    def end(self, started: float, recipients: int, direct: bool) -> None:
        """A fan-out begun at ``started`` is done; a direct one teaches the cost."""
        if direct and recipients >= MIN_SAMPLE:
            self._last_direct = started
            per_recipient = (time.monotonic() - started) / recipients
            if self._remeasuring:  # the estimate kept this process from writing directly:
                self._cost = per_recipient  # replace it rather than creep towards the truth
            else:
                self._cost += 0.25 * (per_recipient - self._cost)
