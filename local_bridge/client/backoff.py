"""When to reconnect, and how long to wait first: the close codes of PROTOCOL.md section 5 and an
exponential backoff with full jitter (a delay drawn uniformly between 0 and the capped
exponential, so that clients dropped together do not come back together)."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

from .connection import NO_CLOSE_FRAME, ConnectionClosed


class Reconnect(enum.Enum):
    """What a closed connection calls for."""

    AT_ONCE = "at once"  # the first attempt without delay, then backoff (1001, 4008)
    BACKOFF = "backoff"  # every attempt after a jittered delay (1006, 1011, ...)
    LATER = "later"  # rate limited: the delay starts at Backoff.rate_limited (4029)
    STOP = "stop"  # reconnecting would fail the same way: raise Unrecoverable


#: Close codes whose meaning PROTOCOL.md section 5 (and RFC 6455) gives. 1002, 1003 and 1007
#: reconnect: this client sends only well-formed text frames, so they mean a damaged stream
#: (usually noticed by this side), which a fresh connection mends.
CLOSE_CODES: dict[int, tuple[str, Reconnect]] = {
    1000: ("closed normally by the server", Reconnect.STOP),
    1001: ("the server is shutting down", Reconnect.AT_ONCE),
    1002: ("protocol error", Reconnect.BACKOFF),
    1003: ("unsupported data", Reconnect.BACKOFF),
    NO_CLOSE_FRAME: ("the connection was lost", Reconnect.BACKOFF),
    1007: ("invalid data", Reconnect.BACKOFF),
    1008: ("policy violation", Reconnect.STOP),
    1009: ("message too big", Reconnect.STOP),
    1011: ("internal server error", Reconnect.BACKOFF),
    1012: ("the server is restarting", Reconnect.BACKOFF),
    1013: ("try again later", Reconnect.LATER),
    4001: ("unauthorized: token missing, bad or expired", Reconnect.STOP),
    4003: ("forbidden for this token", Reconnect.STOP),
    4004: ("not found", Reconnect.STOP),
    4008: ("slow consumer: the client fell too far behind", Reconnect.AT_ONCE),
    4009: ("disconnected by an administrator", Reconnect.STOP),
    4029: ("rate limited", Reconnect.LATER),
}


def classify(code: int | None) -> Reconnect:
    """What the close ``code`` calls for (None, no close frame, counts as 1006). A code the
    protocol does not name is taken as transient: reconnect with backoff."""
    return CLOSE_CODES.get(NO_CLOSE_FRAME if code is None else code, ("", Reconnect.BACKOFF))[1]


def describe(code: int | None) -> str:
    """``4009 (disconnected by an administrator)``."""
    code = NO_CLOSE_FRAME if code is None else code
    meaning = CLOSE_CODES.get(code, ("",))[0]
    return f"{code} ({meaning})" if meaning else str(code)


class Unrecoverable(ConnectionClosed):
    """The connection ended in a way that reconnecting would not mend (4001 bad token, 4003,
    4004, 4009 administrator, 1009, 1000 from the server ...): ``code`` says which."""

    def __init__(self, code: int | None, detail: str | None = None):
        super().__init__(code)
        self.detail = detail
        self.args = (f"connection closed {describe(code)}" + (f": {detail}" if detail else ""),)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt ``n`` (0 first) waits a uniform random delay
    in ``[0, min(maximum, initial * factor ** n)]``; after a 4029 (rate limited) the delay is
    ``rate_limited`` plus that. A connection that stayed up ``reset_after`` seconds starts the
    count again."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    rate_limited: float = 10.0
    reset_after: float = 10.0

    def delay(
        self,
        attempt: int,
        code: int | None = NO_CLOSE_FRAME,
        random_fraction: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before reconnect ``attempt`` after a close with ``code``."""
        kind = classify(code)
        if kind is Reconnect.AT_ONCE and attempt == 0:
            return 0.0
        cap = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        jitter = cap * random_fraction()
        return self.rate_limited + jitter if kind is Reconnect.LATER else jitter
