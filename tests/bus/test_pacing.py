"""Unit tests of local_bridge.bus.pacing.FanoutPacer with a controlled clock and CPU."""

from __future__ import annotations

import pytest

from local_bridge.bus import pacing
from local_bridge.bus.pacing import FanoutPacer


class Clock:
    """Wall time, and the process's CPU time, which advances at ``busy`` of wall time."""

    def __init__(self):
        self.now = 1000.0
        self.cpu = 5.0
        self.busy = 0.2

    def monotonic(self) -> float:
        return self.now

    def process_time(self) -> float:
        return self.cpu

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.cpu += seconds * self.busy


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(pacing.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(pacing.time, "process_time", clock.process_time)
    return clock


def every(pacer, clock, count: int, interval: float, recipients: int, takes: float) -> list[bool]:
    """``count`` fan-outs beginning ``interval`` seconds apart, each taking ``takes``; their
    choices."""
    choices = []
    for _ in range(count):
        started, direct = pacer.begin(recipients)
        clock.advance(takes)
        pacer.end(started, recipients, direct)
        choices.append(direct)
        clock.advance(interval - takes)
    return choices


def test_with_time_to_spare_events_are_written_directly(clock):
    pacer = FanoutPacer()
    assert all(every(pacer, clock, 40, 0.050, 1000, 0.007))  # 20 events/s to 1,000
    clock.busy = 0.85
    clock.advance(0.050)  # the first of the next stream comes 100 ms after the last
    assert all(every(pacer, clock, 40, 0.100, 2000, 0.020))  # 10 events/s to 2,000


def test_a_saturated_process_leaves_the_writing_to_the_writers(clock):
    pacer = FanoutPacer()
    every(pacer, clock, 5, 0.050, 1000, 0.008)
    clock.busy = 1.0  # publishing as fast as it can
    choices = every(pacer, clock, 200, 0.010, 1000, 0.0015)
    assert not any(choices[50:]), "direct writing at saturation gives up batching"
    assert not all(choices[:50]), "half a second of saturation is noticed"
    clock.busy = 0.3  # the stream ends: back to direct writes within a window or so
    assert every(pacer, clock, 40, 0.050, 1000, 0.008)[-1]


def test_a_fan_out_that_would_overrun_the_next_is_queued(clock):
    pacer = FanoutPacer()
    started, direct = pacer.begin(5000)
    assert direct
    clock.advance(0.040)  # 8 us a recipient
    pacer.end(started, 5000, direct)
    assert not pacer.begin(5000)[1]  # due now: 40 ms of writing would not end before it


def test_a_stale_cost_is_measured_again_when_there_is_time_to_spare(clock):
    pacer = FanoutPacer()
    every(pacer, clock, 1, 0.300, 1000, 0.200)  # a cold start: 200 us a recipient
    choices = every(pacer, clock, 120, 0.050, 1000, 0.008)  # 20 events/s, 8 us in truth
    assert not choices[1]  # writing would take longer than the time between events
    assert all(choices[-20:]), "measured again within seconds, and kept"


def test_a_queued_stream_stays_queued_when_a_remeasure_confirms_the_cost(clock):
    pacer = FanoutPacer()
    every(pacer, clock, 1, 0.050, 1000, 0.008)  # 8 us a recipient
    choices = every(pacer, clock, 150, 0.020, 1000, 0.008)  # 3 s at 50 events/s: 8 ms of 20
    assert sum(choices) <= 2, "queued, but for a remeasure every 2 s"
    assert pacer._cost == pytest.approx(8e-6, rel=0.01)


def test_small_fan_outs_are_written_directly_even_when_frequent(clock):
    pacer = FanoutPacer()
    every(pacer, clock, 1, 0.050, 1000, 0.008)
    assert all(every(pacer, clock, 50, 0.001, 2, 0.00002))  # 1,000 events/s to a job's followers


def test_the_cost_per_recipient_is_learned_from_direct_fan_outs(clock):
    pacer = FanoutPacer()
    every(pacer, clock, 30, 1.0, 1000, 0.040)  # a slow machine: 40 us per direct send
    assert pacer._cost == pytest.approx(40e-6, rel=0.01)
    assert pacer.begin(1000)[1]
    clock.advance(0.030)
    assert not pacer.begin(1000)[1]  # 30 ms after the last began: 40 ms would overrun it


def test_queued_and_tiny_fan_outs_teach_nothing(clock):
    pacer = FanoutPacer()
    every(pacer, clock, 1, 1.0, 10, 0.010)  # 1 ms per recipient, but too few to go by
    assert pacer._cost == pacing.INITIAL_COST
