"""``local_bridge.client.backoff``: what each close code calls for, and the jittered delays."""

from __future__ import annotations

import pytest

from local_bridge.client import Backoff, ConnectionClosed, Unrecoverable
from local_bridge.client.backoff import Reconnect, classify, describe


@pytest.mark.parametrize(
    "code, expected",
    [
        (1001, Reconnect.AT_ONCE),
        (4008, Reconnect.AT_ONCE),
        (1006, Reconnect.BACKOFF),
        (None, Reconnect.BACKOFF),
        (1011, Reconnect.BACKOFF),
        (4029, Reconnect.LATER),
        (1000, Reconnect.STOP),
        (1009, Reconnect.STOP),
        (1007, Reconnect.BACKOFF),
        (4001, Reconnect.STOP),
        (4003, Reconnect.STOP),
        (4004, Reconnect.STOP),
        (4009, Reconnect.STOP),
        (4321, Reconnect.BACKOFF),  # unknown: taken as transient
    ],
)
def test_each_close_code_of_the_protocol(code, expected):
    assert classify(code) is expected


def test_the_first_attempt_after_a_shutdown_or_slow_consumer_close_is_at_once():
    backoff = Backoff(initial=1, maximum=8)
    assert backoff.delay(0, 1001, lambda: 1.0) == 0.0
    assert backoff.delay(0, 4008, lambda: 1.0) == 0.0
    assert backoff.delay(1, 4008, lambda: 1.0) == 2.0  # then the backoff


def test_full_jitter_is_uniform_below_a_capped_exponential():
    backoff = Backoff(initial=0.5, maximum=4, factor=2)
    assert [backoff.delay(n, 1006, lambda: 1.0) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert backoff.delay(3, 1006, lambda: 0.25) == 1.0
    assert backoff.delay(3, 1006, lambda: 0.0) == 0.0
    assert backoff.delay(10_000, 1006, lambda: 1.0) == 4  # no overflow for a long outage


def test_rate_limited_waits_longer():
    backoff = Backoff(initial=0.5, maximum=4, rate_limited=10)
    assert backoff.delay(0, 4029, lambda: 0.0) == 10
    assert backoff.delay(2, 4029, lambda: 1.0) == 12


def test_unrecoverable_is_a_connection_closed_that_says_why():
    error = Unrecoverable(4009)
    assert isinstance(error, ConnectionClosed) and error.code == 4009
    assert str(error) == "connection closed 4009 (disconnected by an administrator)"
    assert str(Unrecoverable(4001, "bad signature")).endswith("expired): bad signature")
    assert describe(4567) == "4567"
