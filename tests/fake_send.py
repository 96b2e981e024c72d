"""A socket's non-blocking send, scripted: shared by the outbox and flusher tests."""

from __future__ import annotations

import threading

TIMEOUT = 10.0


class NonBlockingSend:
    """A non-blocking send that records what it took: ``takes[i]`` bytes on call i (None: all;
    0: it would block). With ``hold``, each call waits until ``release`` is set, so a test can
    keep the caller busy. ``sendall`` (a writer's blocking send) takes everything."""

    def __init__(self, *takes: int | None, hold: bool = False):
        self.takes = list(takes)
        self.tries: list[bytes] = []
        self.written = b""
        self.sendalls: list[bytes] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def try_send(self, data: bytes) -> int:
        self.tries.append(bytes(data))
        self.entered.set()
        assert self.release.wait(TIMEOUT), "the test never released the send"
        take = self.takes.pop(0) if self.takes else None
        if take == 0:
            raise BlockingIOError
        taken = len(data) if take is None else take
        self.written += bytes(data[:taken])
        return taken

    __call__ = try_send

    def sendall(self, data: bytes) -> None:
        self.sendalls.append(bytes(data))
        self.written += bytes(data)
