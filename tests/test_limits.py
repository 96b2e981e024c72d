"""Unit tests of local_bridge.limits with an injected clock."""

from __future__ import annotations

import threading

import pytest

from local_bridge.limits import (
    AddressRateLimiter,
    ConnectionLimit,
    ConnectRateLimiter,
    MessageLimiter,
    TokenBucket,
)

TIMEOUT = 10.0


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


# --------------------------------------------------------------------------- TokenBucket


def test_token_bucket_burst_then_refill(clock):
    bucket = TokenBucket(rate=4, burst=2, clock=clock)
    assert [bucket.allow() for _ in range(3)] == [True, True, False]
    clock.now += 0.25  # one token back
    assert [bucket.allow() for _ in range(2)] == [True, False]
    clock.now += 0.125  # half a token is not enough
    assert not bucket.allow()
    clock.now += 0.125
    assert bucket.allow()


def test_token_bucket_refill_is_capped_at_burst(clock):
    bucket = TokenBucket(rate=4, burst=2, clock=clock)
    clock.now += 3600
    assert [bucket.allow() for _ in range(3)] == [True, True, False]


def test_token_bucket_rate_zero_allows_everything(clock):
    bucket = TokenBucket(rate=0, burst=1, clock=clock)
    assert all(bucket.allow() for _ in range(1000))


# --------------------------------------------------------------------------- MessageLimiter


def slow_limiter(clock, burst=1) -> MessageLimiter:
    """A limiter whose bucket never refills within a test (0.001 tokens a second)."""
    return MessageLimiter(rate=0.001, burst=burst, clock=clock)


def test_message_limiter_ok_within_burst(clock):
    limiter = MessageLimiter(rate=16, burst=50, clock=clock)
    assert [limiter.check() for _ in range(50)] == ["ok"] * 50
    assert limiter.check() == "warn"
    clock.now += 0.0625  # one token at 16/s
    assert [limiter.check() for _ in range(2)] == ["ok", "drop"]


def test_message_limiter_warns_at_most_once_a_second(clock):
    limiter = slow_limiter(clock)
    assert limiter.check() == "ok"
    assert [limiter.check() for _ in range(4)] == ["warn", "drop", "drop", "drop"]
    clock.now += 0.999
    assert limiter.check() == "drop"
    clock.now += 0.001
    assert [limiter.check() for _ in range(2)] == ["warn", "drop"]


def test_message_limiter_closes_after_100_drops_in_10_seconds(clock):
    limiter = slow_limiter(clock)
    assert limiter.check() == "ok"
    verdicts = []
    for _ in range(100):
        verdicts.append(limiter.check())
        clock.now += 0.05  # 100 drops spread over 5 s
    assert "close" not in verdicts
    assert limiter.check() == "close"  # the 101st drop within 10 s


def test_message_limiter_forgets_drops_older_than_10_seconds(clock):
    limiter = slow_limiter(clock)
    limiter.check()
    assert [limiter.check() for _ in range(100)].count("close") == 0
    clock.now += 10.0  # those 100 drops are now out of the window
    assert limiter.check() == "warn"
    assert [limiter.check() for _ in range(99)].count("close") == 0
    assert limiter.check() == "close"


def test_message_limiter_drops_at_window_edge_still_count(clock):
    limiter = slow_limiter(clock)
    limiter.check()
    for _ in range(60):
        limiter.check()
    clock.now += 9.9
    assert [limiter.check() for _ in range(40)].count("close") == 0
    assert limiter.check() == "close"


# --------------------------------------------------------------------------- ConnectRateLimiter


def test_connect_rate_per_address_sliding_minute(clock):
    limiter = ConnectRateLimiter(per_minute=2, clock=clock)
    assert [limiter.allow("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert limiter.allow("10.0.0.2")  # other addresses are counted apart
    clock.now += 59.9
    assert not limiter.allow("10.0.0.1")
    clock.now += 0.1  # the first two are exactly 60 s old
    assert [limiter.allow("10.0.0.1") for _ in range(3)] == [True, True, False]


def test_connect_rate_refusals_do_not_extend_the_window(clock):
    limiter = ConnectRateLimiter(per_minute=1, clock=clock)
    assert limiter.allow("a")
    clock.now += 30
    assert not any(limiter.allow("a") for _ in range(10))
    clock.now += 30
    assert limiter.allow("a")


def test_connect_rate_zero_is_off(clock):
    limiter = ConnectRateLimiter(per_minute=0, clock=clock)
    assert all(limiter.allow("a") for _ in range(1000))


def test_connect_rate_forgets_idle_addresses(clock):
    """The per-address table stays bounded: past 10000 addresses, idle ones are dropped."""
    limiter = ConnectRateLimiter(per_minute=5, clock=clock)
    for i in range(10001):
        limiter.allow(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    clock.now += 61
    assert limiter.allow("192.0.2.1")
    assert len(limiter._seen) == 1


def test_connect_rate_is_exact_under_concurrency():
    limiter = ConnectRateLimiter(per_minute=50, clock=lambda: 0.0)
    results: list[bool] = []
    start = threading.Barrier(8, timeout=TIMEOUT)

    def attempt():
        start.wait()
        for _ in range(25):
            results.append(limiter.allow("203.0.113.9"))

    threads = [threading.Thread(target=attempt, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert len(results) == 200 and results.count(True) == 50


# --------------------------------------------------------------------------- AddressRateLimiter


def test_address_rate_per_second_per_address(clock):
    limiter = AddressRateLimiter(rate=2, clock=clock)
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]  # burst = rate
    assert limiter.allow("b")
    clock.now += 0.5
    assert [limiter.allow("a") for _ in range(2)] == [True, False]


def test_address_rate_below_one_still_allows_one(clock):
    limiter = AddressRateLimiter(rate=0.5, clock=clock)
    assert [limiter.allow("a") for _ in range(2)] == [True, False]
    clock.now += 2
    assert limiter.allow("a")


def test_address_rate_zero_is_off(clock):
    limiter = AddressRateLimiter(rate=0, clock=clock)
    assert all(limiter.allow("a") for _ in range(1000))


def test_address_rate_table_is_bounded(clock):
    limiter = AddressRateLimiter(rate=1, clock=clock)
    limiter.MAX_ADDRESSES = 3
    for address in "abcd":
        assert limiter.allow(address)
    assert len(limiter._buckets) == 3
    assert not limiter.allow("d")  # the newest address keeps its bucket


def test_connection_limit_counts_handshakes_in_flight():
    hub: set[str] = set()
    limit = ConnectionLimit(3, lambda: len(hub), lambda subject: subject in hub)
    tickets = [limit.admit() for _ in range(3)]  # three handshakes at once, none joined yet
    assert all(tickets) and limit.admit() is None
    tickets[0].subject = "a"
    hub.add("a")  # joined: counted by the hub now, not twice
    assert limit.admit() is None
    limit.release(tickets[1])  # a handshake that failed
    fourth = limit.admit()
    assert fourth is not None and limit.admit() is None
    hub.discard("a")  # left the hub; its request has not ended yet: the slot is free
    assert limit.admit() is not None
