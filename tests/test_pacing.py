"""Unit tests of local_bridge.bus.pacing.FanoutPacer with a controlled clock."""
from __future__ import annotations

import pytest

from local_bridge.bus import pacing
from local_bridge.bus.pacing import FanoutPacer


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(pacing.time, "monotonic", clock)
    return clock


def fan_out(pacer: FanoutPacer, clock: Clock, recipients: int, takes: float) -> bool:
    started, direct = pacer.begin(recipients)
    clock.now += takes
    pacer.end(started, recipients, direct)
    return direct


def test_the_first_fan_out_and_sparse_ones_write_directly(clock):
    pacer = FanoutPacer()
    assert fan_out(pacer, clock, 1000, 0.008)
    for _ in range(5):
        clock.now += 0.050  # 20 events/s
        assert fan_out(pacer, clock, 1000, 0.008)


def test_fan_outs_in_close_succession_are_left_to_the_writers(clock):
    pacer = FanoutPacer()
    fan_out(pacer, clock, 1000, 0.008)  # learns ~8 us per recipient
    choices = []
    for _ in range(20):
        clock.now += 0.002  # the next event 2 ms later: writing 1,000 sockets takes 8
        choices.append(fan_out(pacer, clock, 1000, 0.0015))
    assert not any(choices)


def test_small_fan_outs_write_directly_even_when_frequent(clock):
    pacer = FanoutPacer()
    fan_out(pacer, clock, 1000, 0.008)
    for _ in range(10):
        clock.now += 0.001  # 1,000 events/s to a job's two followers
        assert fan_out(pacer, clock, 2, 0.00002)


def test_the_cost_per_recipient_is_learned_from_direct_fan_outs(clock):
    pacer = FanoutPacer()
    for _ in range(30):
        clock.now += 1.0
        fan_out(pacer, clock, 1000, 0.040)  # a slow machine: 40 us per direct send
    assert pacer._cost == pytest.approx(40e-6, rel=0.01)
    clock.now += 0.030  # 70 ms after the last began: less than twice the 40 ms it cost
    assert not fan_out(pacer, clock, 1000, 0.002)


def test_queued_and_tiny_fan_outs_teach_nothing(clock):
    pacer = FanoutPacer()
    clock.now += 1.0
    fan_out(pacer, clock, 10, 0.010)  # 1 ms per recipient, but too few to go by
    assert pacer._cost == pacing.INITIAL_COST
