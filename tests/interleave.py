"""Single publishes from another process while batches go out, for the tests that a batch's
seqs stay together (tests/backplane/test_redis_batch.py, tests/e2e/test_batch_e2e.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def publishing_meanwhile(publish_one: Callable[[int], int], timeout: float) -> Iterator[list[int]]:
    """Call ``publish_one(i)`` (it returns the event's seq) over and over in a thread, from
    before the block begins until after it ends; yield the list of seqs it collects."""
    seqs: list[int] = []
    started, block_done = threading.Event(), threading.Event()

    def publish() -> None:
        finished = False
        while not finished:  # one more after the block: it ends after the block's last event
            finished = block_done.is_set()
            seqs.append(publish_one(len(seqs)))
            started.set()

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        assert started.wait(timeout), "the single publishes did not start"
        yield seqs
    finally:
        block_done.set()
        thread.join(timeout)
    assert not thread.is_alive(), "the single publishes did not stop"
