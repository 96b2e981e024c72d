"""The run's clock and voice: one global deadline every loop checks, and the log."""

from __future__ import annotations

import sys
import time

STOP = {"flag": False}  # set by the deadline or an interrupt
DEADLINE = {"t": float("inf")}


class Deadline(Exception):
    """The run's global deadline passed (or it was interrupted)."""


def check_deadline() -> None:
    if STOP["flag"] or time.monotonic() > DEADLINE["t"]:
        STOP["flag"] = True
        raise Deadline("global deadline reached")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
