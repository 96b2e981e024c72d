"""The Redis the Redis scenario shares between its servers (keys under a prefix per measurement)."""

from __future__ import annotations

import redis  # a dependency of local_bridge itself, so in the README's .venv

from bench.control import log


def redis_unreachable(url: str) -> str | None:
    """None when Redis answers PING at ``url``, else why it does not."""
    try:
        redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping()
    except (OSError, ValueError, redis.RedisError) as exc:
        return repr(exc)
    return None


def forget_redis_keys(url: str, prefix: str) -> None:
    """Delete one measurement's keys (its sequence, history stream, presence)."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    except (OSError, redis.RedisError) as exc:
        log(f"could not delete the Redis keys {prefix}*: {exc!r}")
