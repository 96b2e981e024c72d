"""History: bounded by size and age, and honest about what it no longer holds."""

from __future__ import annotations

from local_bridge.backplane.history import History
from local_bridge.protocol import make_event


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def _events(history, *seqs):
    for seq in seqs:
        history.append(make_event(seq, "e", "jobs", {}))


def test_since_returns_later_events_in_order_and_complete():
    history = History(10, 60)
    _events(history, 1, 2, 3, 4)
    events, complete = history.since(2, upto=4)
    assert [e.seq for e in events] == [3, 4] and complete
    events, _ = history.since(0, upto=3)
    assert [e.seq for e in events] == [1, 2, 3]


def test_size_trims_the_oldest_and_completeness_says_so():
    history = History(3, 60)
    _events(history, 1, 2, 3, 4, 5)
    events, complete = history.since(1, upto=5)
    assert [e.seq for e in events] == [3, 4, 5] and not complete
    assert history.since(2, upto=5)[1] is True


def test_age_expires_events():
    clock = Clock()
    history = History(100, 10, clock)
    _events(history, 1, 2)
    clock.now = 5
    _events(history, 3)
    clock.now = 12
    events, complete = history.since(0, upto=3)
    assert [e.seq for e in events] == [3] and not complete
    assert history.since(2, upto=3) == (events, True)


def test_zero_size_keeps_nothing():
    history = History(0, 60)
    _events(history, 1, 2)
    assert history.since(0, upto=2) == ([], False)
    assert history.since(2, upto=2) == ([], True)
