"""Backplanes carry events between server processes; :func:`create_backplane` picks one."""
from __future__ import annotations

from ..config import ConfigError, Settings
from .base import Backplane
from .memory import MemoryBackplane


def create_backplane(settings: Settings) -> Backplane:
    """The backplane for ``LOCAL_BRIDGE_REDIS_URL``: in-memory when it is unset."""
    if settings.REDIS_URL:
        raise ConfigError(
            "the Redis backplane is not available in this release; unset LOCAL_BRIDGE_REDIS_URL")
    return MemoryBackplane(settings.HISTORY_SIZE, settings.HISTORY_TTL)


__all__ = ["Backplane", "MemoryBackplane", "create_backplane"]
