"""A gate in front of a transport: frames wait behind it until a prefix has been sent.

Used wherever a client must first get something assembled outside the publish lock (a job's
snapshot, the events it missed) and then, in order, everything published meanwhile.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..protocol import CloseCode

if TYPE_CHECKING:
    from .transport import Transport


class GatedTransport:
    """A transport that holds frames until :meth:`open` puts a prefix in front of them.

    It holds at most as many frames as the connection's outbox would: past that the client is
    a slow consumer like any other (closed 4008, free to resume).
    """

    def __init__(self, inner: Transport):
        self.inner = inner
        self._limit = inner.outbox.limit
        self._lock = threading.Lock()  # guards _held, _close_after
        self._held: list[bytes] | None = []
        self._close_after: int | None = None

    def send(self, frame: bytes, direct: bool = True) -> bool:
        with self._lock:
            if self._held is not None:
                if len(self._held) < self._limit:
                    self._held.append(frame)
                    return True
                self._held = None  # overflow: nothing more is held or sent
                overflow = True
            else:
                overflow = False
        if overflow:
            self.inner.close(CloseCode.SLOW_CONSUMER, discard=True)
            return False
        return self.inner.send(frame, direct)

    def close(self, code: int, reason: str = "", discard: bool = False) -> bool:
        with self._lock:
            if self._held is not None and not discard:
                self._close_after = code  # after the held frames, once the gate opens
                return True
        return self.inner.close(code, reason, discard)

    def open(self, first: list[bytes], keep_held: bool = True) -> None:
        """Send ``first``, then what was held (if ``keep_held``), then let frames through."""
        with self._lock:
            held, self._held = (self._held or []) if keep_held else [], None
            for frame in first + held:
                self.inner.send(frame)
            close_after = self._close_after
        if close_after is not None:
            self.inner.close(close_after)

    def stats(self) -> dict[str, int]:
        return self.inner.stats()
