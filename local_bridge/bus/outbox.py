"""A connection's bounded outbox and the one writer that drains it.

Everything written to a client socket passes through its outbox: events, replies, heartbeats,
and the WebSocket library's own handshake, pong and close frames. The writer takes everything
queued at once and hands it to the socket in one ``sendall``, so a busy client costs one system
call per batch rather than one per message, and no two writers ever interleave bytes.

When the writer is idle (nothing queued, nothing in flight) and has written nothing for
``DIRECT_AFTER`` seconds, the producer hands a message to the socket itself, without blocking,
if the outbox was given a ``try_send``: at such low rates nothing would batch anyway, and a
fan-out then costs one system call per client instead of a wake-up, a greenlet switch and a
system call (at 1,000 subscribers the last client is written to in half the time). Under a
stream of events the writer keeps the writing, so messages that arrive while it works go out
together. What the socket does not take at once is queued for the writer, first in line, so
order holds.

A client that falls ``limit`` messages behind is a slow consumer: its queued messages are
discarded, ``on_overflow`` is told (so it leaves the hub at once) and a final frame (the 4008
close) is sent after whatever the socket already holds.

The writer sleeps on an Event (level-triggered: a wake-up given before it sleeps is not lost)
rather than a Condition: under gevent the patched Event is a native primitive, and a producer
only signals when the writer has said it is idle, so a busy writer costs its producers nothing
but an append.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable

#: A writer idle this long lets its producer write directly (see the module doc).
DIRECT_AFTER = 0.02


def _lock() -> threading.Lock:
    """The outbox's lock. Under gevent's monkey-patching, the OS lock that ``threading.Lock``
    replaced: no code holding it can switch greenlets (it guards list operations only, never
    I/O or waiting), so it is never contended, and it costs a third less per delivery than
    gevent's lock, whose ``acquire`` is Python code. Keep it that way: a greenlet switch while
    holding it would deadlock the process."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return monkey.get_original("_thread", "allocate_lock")()
    return threading.Lock()


class Outbox:
    """Bounded FIFO of pre-framed bytes with a dedicated writer thread."""

    def __init__(self, sendall: Callable[[bytes], None], limit: int,
                 overflow_frame: bytes = b"",
                 on_overflow: Callable[[], None] | None = None,
                 name: str = "outbox-writer",
                 try_send: Callable[[bytes], int] | None = None):
        self._sendall = sendall
        self._try_send = try_send  # non-blocking: bytes taken, or BlockingIOError
        self.limit = limit
        self._overflow_frame = overflow_frame
        self._on_overflow = on_overflow
        # _lock guards _items, _idle, _finishing, _final, _overflowed and the counters below;
        # nothing that blocks or switches greenlets may run while it is held (see _lock()).
        self._lock = _lock()
        self._wakeup = threading.Event()   # set: the writer has something to do
        self._progress = threading.Event()  # set by the writer after each batch (for wait_room)
        self._items: list[bytes] = []
        self._idle = False                 # the writer is asleep (or about to be)
        self._finishing = False            # no more messages accepted
        self._final: bytes | None = None   # sent after the last batch, then the writer stops
        self._overflowed = False
        self._wrote_at = 0.0                # when the socket was last written to
        self.sent = 0       # messages handed to the socket
        self.dropped = 0    # messages refused or discarded
        self.failed = False  # the socket refused a write
        self._writer = threading.Thread(target=self._run, name=name, daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ producer side

    @property
    def depth(self) -> int:
        """Messages queued and not yet handed to the socket."""
        return len(self._items)

    @property
    def closing(self) -> bool:
        return self._finishing

    @property
    def overflowed(self) -> bool:
        return self._overflowed

    def put(self, data: bytes) -> bool:
        """Queue one framed message; False when it was not queued (closing, or overflow)."""
        with self._lock:
            if self._finishing:
                self.dropped += 1
                return False
            if len(self._items) < self.limit:
                if not self._idle:
                    self._items.append(data)
                    return True
                # idle implies nothing queued: a quiet socket may take it right now
                if self._try_send is not None and time.monotonic() - self._wrote_at > DIRECT_AFTER:
                    data = self._write_now(data)
                    if data is None:
                        return True
                self._items.append(data)
                self._idle = False
            else:
                self.dropped += len(self._items) + 1
                self._items.clear()
                self._finishing = True
                self._overflowed = True
                self._final = self._overflow_frame
                self._idle = False
                data = None  # marks the overflow below
        self._wakeup.set()
        if data is None:
            if self._on_overflow is not None:
                self._on_overflow()
            return False
        return True

    def _write_now(self, data: bytes) -> bytes | None:
        """Hand ``data`` to the socket without blocking; return what it did not take (None:
        all of it). Called with the lock held, only while the writer is idle."""
        try:
            taken = self._try_send(data)
        except OSError:  # would block; or a broken socket, which the writer will meet again
            return data
        self._wrote_at = time.monotonic()
        if taken == len(data):
            self.sent += 1
            return None
        return data[taken:]

    def close(self, final: bytes | None = None, discard: bool = False) -> bool:
        """Accept nothing more; send what is queued (unless ``discard``), then ``final``.

        Returns False when the outbox was already closing.
        """
        with self._lock:
            if self._finishing:
                return False
            self._finishing = True
            if discard:
                self.dropped += len(self._items)
                self._items.clear()
            self._final = final
            self._idle = False
        self._wakeup.set()
        return True

    def wait_room(self, depth: int, timeout: float) -> bool:
        """Wait until at most ``depth`` messages are queued; False on timeout or closing."""
        while len(self._items) > depth and not self._finishing:
            self._progress.clear()
            if len(self._items) <= depth:
                break
            if not self._progress.wait(timeout):
                return False
        return not self._finishing

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the writer has stopped; True if it did within ``timeout``."""
        self._writer.join(timeout)
        return not self._writer.is_alive()

    # ------------------------------------------------------------------ writer side

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._items and not self._finishing:
                    self._idle = True
                    self._wakeup.clear()
                    sleep = True
                else:
                    sleep = False
                    batch, self._items = self._items, []
                    last = self._finishing
                    final, self._final = (self._final, None) if last else (None, None)
            if sleep:
                self._wakeup.wait()
                continue
            if final:
                batch.append(final)
            if batch:
                try:
                    self._sendall(batch[0] if len(batch) == 1 else b"".join(batch))
                except OSError:
                    with self._lock:
                        self.failed = True
                        self._finishing = True
                        self.dropped += len(self._items)
                        self._items.clear()
                    self._progress.set()
                    return
                self.sent += len(batch) - (1 if final else 0)
                self._wrote_at = time.monotonic()
                self._progress.set()
            if last:
                return
