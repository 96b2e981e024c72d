"""Revocation stores: a revoked jti is refused and announced, in one process (memory) and in
every process on one Redis."""

from __future__ import annotations

import threading

import pytest

from local_bridge.auth.revocation import MemoryRevocations, RedisRevocations


def test_memory_refuses_and_announces():
    store = MemoryRevocations()
    heard = []
    store.on_revoked = heard.append
    assert not store.is_revoked("a")
    store.revoke("a", 60)
    assert store.is_revoked("a") and not store.is_revoked("b") and heard == ["a"]


def test_memory_forgets_a_record_once_no_token_can_bear_it():
    store = MemoryRevocations()
    store.revoke("gone", -1)  # already past its time
    assert not store.is_revoked("gone")


@pytest.fixture
def redis_prefix():
    from redis_support import drop_prefix, fresh_prefix, redis_url

    url, prefix = redis_url(), fresh_prefix()
    yield url, prefix
    drop_prefix(url, prefix)


def test_redis_shares_revocations_between_processes(redis_prefix):
    url, prefix = redis_prefix
    here, there = RedisRevocations(url, prefix), RedisRevocations(url, prefix)
    try:
        heard = threading.Event()
        there.on_revoked = lambda jti: heard.set() if jti == "shared" else None
        assert there.subscribed.wait(5), "the listener did not subscribe"
        assert not there.is_revoked("shared")
        here.revoke("shared", 30)
        assert heard.wait(5), "the other process was not told"
        assert there.is_revoked("shared")
        import redis

        ttl = redis.Redis.from_url(url).ttl(f"{prefix}auth:revoked:shared")
        assert 0 < ttl <= 30
    finally:
        here.close()
        there.close()


def test_redis_close_stops_the_listener(redis_prefix):
    url, prefix = redis_prefix
    store = RedisRevocations(url, prefix)
    store.close()
    assert not store._listener.is_alive()  # noqa: SLF001
