"""A connection's bounded outbox and the writer that drains it.

Everything written to a client socket passes through its outbox: events, replies, heartbeats,
and the WebSocket library's own handshake, pong and close frames, so no two writers ever
interleave bytes.

A message usually goes out at once: when nothing is queued and no writer is busy, the producer
hands it to the socket itself with a send that can neither block nor yield (``try_send``). Only
what the socket does not take, or what a caller asks to be queued (``direct=False``: the hub
does so while fan-outs follow each other too closely for one system call per message), waits in
the queue. Then a writer takes everything queued at once and writes it in one buffer, so a busy
client costs one system call per batch rather than one per message; order holds, because the
producer writes directly only while the queue is empty.

The writer exists only while there is queued work: it is started when a message has to wait and
retires after ``WRITER_IDLE`` seconds with nothing to do. An idle connection therefore costs no
thread, greenlet or stack at all for its writing.

A client that falls ``limit`` messages behind is a slow consumer: its queued messages are
discarded, ``on_overflow`` is told (so it leaves the hub at once) and a final frame (the 4008
close) is sent after whatever the socket already holds.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from time import monotonic

from .flusher import flusher
from .green import gevent_patched

#: A writer with nothing to do for this long retires (a new one starts when work comes).
WRITER_IDLE = 5.0


def _lock() -> threading.Lock:
    """The outbox's lock. Under gevent's monkey-patching, the OS lock that ``threading.Lock``
    replaced: no code holding it can switch greenlets (it guards list operations and
    non-blocking sends only, never waiting), so it is never contended, and it costs a third
    less per delivery than gevent's lock, whose ``acquire`` is Python code. Keep it that way: a
    greenlet switch while holding it would deadlock the process."""
    if gevent_patched():
        original: threading.Lock = sys.modules["gevent.monkey"].get_original(
            "_thread", "allocate_lock"
        )()
        return original
    return threading.Lock()


def _split_sent(batch: list[bytes], taken: int) -> tuple[int, list[bytes]]:
    """How many whole messages of ``batch`` the first ``taken`` bytes of its concatenation
    hold, and what remains of it (the first item possibly the rest of a message)."""
    done = 0
    for item in batch:
        if taken < len(item):
            break
        taken -= len(item)
        done += 1
    return done, [batch[done][taken:], *batch[done + 1 :]]


class _Runner:
    """A started thread of control: a greenlet under gevent, an OS thread otherwise.

    Under gevent a plain greenlet is used rather than ``threading.Thread``: its ``start`` would
    wait for the greenlet to run, and a writer may be started from the event loop's own
    callbacks (the connection's reader), where nothing may wait."""

    def __init__(self, target: Callable[[], None], name: str):
        if gevent_patched():
            import gevent

            self._greenlet = gevent.spawn(target)
            self._thread = None
        else:
            self._greenlet = None
            self._thread = threading.Thread(target=target, name=name, daemon=True)
            self._thread.start()

    def join(self, timeout: float | None) -> bool:
        """Wait for the end; True if it has ended."""
        if self._greenlet is not None:
            self._greenlet.join(timeout)
            return bool(self._greenlet.dead)
        assert self._thread is not None
        self._thread.join(timeout)
        return not self._thread.is_alive()


class Outbox:
    """Bounded FIFO of pre-framed bytes, written at once when possible, else by a writer."""

    def __init__(
        self,
        sendall: Callable[[bytes], None],
        limit: int,
        overflow_frame: bytes = b"",
        on_overflow: Callable[[], None] | None = None,
        name: str = "outbox-writer",
        try_send: Callable[[bytes], int] | None = None,
        on_wait: Callable[[float], None] | None = None,
    ):
        self._sendall = sendall
        self._try_send = try_send  # non-blocking: bytes taken, or BlockingIOError
        self.limit = limit
        self._overflow_frame = overflow_frame
        self._on_overflow = on_overflow
        self._name = name
        # _lock guards _items, _busy, _writer, _finishing, _final, _overflowed and the counters;
        # nothing that blocks or switches greenlets may run while it is held (see _lock()).
        self._lock = _lock()
        self._wakeup = threading.Event()  # set: the writer has something to do
        self._progress: threading.Event | None = None  # set after each batch (for wait_room)
        self._items: list[bytes] = []
        # The first queued item is the rest of a frame the socket took in part: discarding the
        # queue must keep it, or the client would read the next frame from mid-message.
        self._head_partial = False
        self._busy = False  # a writer has work (or is about to); else none writes
        self._writer: _Runner | None = None
        self._finishing = False  # no more messages accepted
        self._final: bytes | None = None  # sent after the last batch, then the writer stops
        self._overflowed = False
        # Told, after each queued batch is written, how long its oldest message waited.
        self._on_wait = on_wait
        self._queued_at = 0.0  # when the oldest message now queued was queued
        self.sent = 0  # messages handed to the socket
        self.dropped = 0  # messages refused or discarded
        self.failed = False  # the socket refused a write
        self._flush_due = False  # the queue waits for the flusher's pass (no writer owns it)
        #: The writer waits for the socket to take more: the peer reads slower than we write.
        #: A backlog behind a full socket is the peer's doing, not the process's (see
        #: :meth:`~local_bridge.bus.hub.Hub.wait_for_writers`).
        self.socket_full = False

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

    def put(self, data: bytes, direct: bool = True) -> bool:
        """Send one framed message, at once if the socket takes it (and ``direct``), else
        queue it; False when it was refused (closing, or overflow)."""
        to_flusher = False
        with self._lock:
            if self._finishing:
                self.dropped += 1
                return False
            if self._busy:  # queued behind what waits already
                if len(self._items) >= self.limit and self._flush_due:
                    # The queue waits for the flusher, which cannot run before this publisher
                    # lets go (a batch of events fans out in one go): offer it to the socket
                    # now. Only a socket that will not take it makes a slow consumer.
                    self._offer_queue()
                if len(self._items) < self.limit:
                    if not self._items:  # the writer took the last batch: this starts the next
                        self._queued_at = monotonic()
                    self._items.append(data)
                    return True
                self.dropped += 1 + self._discard_queue()
                self._finishing = True
                self._overflowed = overflowed = True
                self._final = self._overflow_frame
                on_overflow, self._on_overflow = self._on_overflow, None
            elif direct or self._try_send is None:
                # nothing queued, nobody writing: the socket may take it right now
                if direct and self._try_send is not None:
                    rest = self._write_now(data)
                    if rest is None:
                        return True
                    data = rest
                    self._head_partial = True
                self._queued_at = monotonic()
                self._items.append(data)
                self._busy = True
                overflowed = False
            else:  # a queued fan-out: the flusher's next pass sends it, with what follows
                self._queued_at = monotonic()
                self._items.append(data)
                self._busy = self._flush_due = to_flusher = True
            if not to_flusher:
                # Something now waits for a writer (a message, or the overflow's final frame).
                start = self._writer is None
                if start:
                    self._writer = _Runner(self._run, self._name)
        if to_flusher:
            flusher().add(self)
            return True
        if not start:
            self._wakeup.set()
        if overflowed:
            if on_overflow is not None:
                on_overflow()
            return False
        return True

    def _discard_queue(self) -> int:
        """Drop the queued messages but the rest of a frame already begun on the socket;
        return how many were dropped. Called with the lock held."""
        keep = self._items[:1] if self._head_partial else []
        dropped = len(self._items) - len(keep)
        self._items = keep
        return dropped

    def _write_now(self, data: bytes) -> bytes | None:
        """Hand ``data`` to the socket without blocking; return what it did not take (None:
        all of it). Called with the lock held, only while no writer is busy."""
        assert self._try_send is not None  # only called for direct writes
        try:
            taken = self._try_send(data)
        except OSError:  # would block; or a broken socket, which the writer will meet again
            return data
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
            # Closed, it can no longer overflow; the callback usually points back at the owner
            # of this outbox, a cycle that would otherwise wait for a full garbage collection.
            self._on_overflow = None
            if discard:
                self.dropped += self._discard_queue()
            self._final = final
            self._busy = True
            start = self._writer is None
            if start:
                self._writer = _Runner(self._run, self._name)
        if not start:
            self._wakeup.set()
        return True

    def wait_room(self, depth: int, timeout: float) -> bool:
        """Wait until at most ``depth`` messages are queued; False on timeout or closing."""
        if self._progress is None:
            self._progress = threading.Event()
        while len(self._items) > depth and not self._finishing:
            self._progress.clear()
            if len(self._items) <= depth:
                break
            if not self._progress.wait(timeout):
                return False
        return not self._finishing

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the outbox is closed and its writer has stopped; True if it did within
        ``timeout``."""
        writer = self._writer
        if writer is None:
            return self._finishing
        return writer.join(timeout)

    # ------------------------------------------------------------------ writer side

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._finishing and (self._flush_due or not self._items):
                    # nothing to do, or the flusher's to do: it hands back what it cannot send
                    if not self._flush_due:
                        self._busy = False
                    self._wakeup.clear()
                    sleep = True
                else:
                    sleep = False
                    batch, self._items = self._items, []
                    self._head_partial = False
                    queued_at = self._queued_at
                    last = self._finishing
                    final, self._final = (self._final, None) if last else (None, None)
            if sleep:
                if not self._wakeup.wait(WRITER_IDLE):
                    with self._lock:
                        if not self._busy or (self._flush_due and not self._finishing):
                            self._writer = None  # still nothing to do: retire
                            return
                continue
            if final:
                batch.append(final)
            if batch:
                try:
                    self._write(batch[0] if len(batch) == 1 else b"".join(batch))
                except OSError:
                    with self._lock:
                        self.failed = True
                        self._finishing = True
                        self.dropped += len(self._items)
                        self._items.clear()
                    self._signal_progress()
                    return
                messages = len(batch) - (1 if final else 0)
                self.sent += messages
                if messages and self._on_wait is not None:
                    self._on_wait(monotonic() - queued_at)
                self._signal_progress()
            if last:
                return

    def flush(self) -> None:
        """The flusher's pass: hand everything queued to the socket without blocking; what it
        does not take goes to this outbox's writer, which waits for the socket."""
        with self._lock:
            if not self._flush_due:
                return
            self._flush_due = False
            if self._finishing:  # closing: the writer sends the queue, then the final frame
                return
            queued_at = self._queued_at
            done = self._offer_queue()
            wake = False
            if not self._items:
                self._busy = False
            else:  # the socket is full: the writer takes over and waits for it
                wake = self._writer is not None
                if not wake:
                    self._writer = _Runner(self._run, self._name)
        if wake:
            self._wakeup.set()
        if done:
            if self._on_wait is not None:
                self._on_wait(monotonic() - queued_at)
            self._signal_progress()

    def _offer_queue(self) -> int:
        """Hand the queue to the socket without blocking and keep what it does not take;
        return how many messages went whole. Called with the lock held, only for a queue no
        writer owns (one waiting for the flusher)."""
        batch = self._items
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        assert self._try_send is not None  # only outboxes with one are flushed
        try:
            taken = self._try_send(data)
        except OSError:  # full; or broken, which the writer will meet again and report
            taken = 0
        if taken == len(data):
            self._items = []
            done = len(batch)
        else:
            done, self._items = _split_sent(batch, taken)
            if taken:  # the new head is the rest of a frame the socket took in part
                self._head_partial = len(self._items[0]) < len(batch[done])
        self.sent += done
        return done

    def _write(self, data: bytes) -> None:
        """Write a batch, waiting as long as the socket needs; ``socket_full`` while it does."""
        if self._try_send is not None:
            try:
                taken = self._try_send(data)
            except BlockingIOError:
                taken = 0
            if taken == len(data):
                return
            data = data[taken:]
            self.socket_full = True
        try:
            self._sendall(data)
        finally:
            self.socket_full = False

    def _signal_progress(self) -> None:
        if self._progress is not None:
            self._progress.set()
