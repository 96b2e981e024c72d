"""Backplanes carry events between server processes; :func:`create_backplane` picks one."""
from __future__ import annotations

from .base import Backplane
from .memory import MemoryBackplane


def create_backplane(redis_url: str | None) -> Backplane:
    """The backplane for ``LOCAL_BRIDGE_REDIS_URL``: in-memory when it is unset."""
    if redis_url:
        raise NotImplementedError(
            "the Redis backplane is not available in this release; unset LOCAL_BRIDGE_REDIS_URL")
    return MemoryBackplane()


__all__ = ["Backplane", "MemoryBackplane", "create_backplane"]
