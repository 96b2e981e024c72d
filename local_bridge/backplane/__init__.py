"""Backplanes carry events between server processes; :func:`create_backplane` picks one."""

from __future__ import annotations

from ..config import Settings
from .base import Backplane, BackplaneUnavailable
from .memory import MemoryBackplane


def create_backplane(settings: Settings) -> Backplane:
    """The backplane for ``LOCAL_BRIDGE_REDIS_URL``: in-memory when it is unset."""
    if settings.REDIS_URL:
        from .redis import RedisBackplane  # imports redis only when asked for

        return RedisBackplane(
            settings.REDIS_URL,
            settings.HISTORY_SIZE,
            settings.HISTORY_TTL,
            prefix=settings.REDIS_PREFIX,
        )
    return MemoryBackplane(settings.HISTORY_SIZE, settings.HISTORY_TTL)


__all__ = ["Backplane", "BackplaneUnavailable", "MemoryBackplane", "create_backplane"]
