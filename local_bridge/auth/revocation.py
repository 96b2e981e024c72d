"""Revoked token ids (``jti``): remembered, and announced to every process that must close
the connections of a revoked token.

:class:`MemoryRevocations` serves one process. :class:`RedisRevocations` keeps each revoked
``jti`` as a Redis key that expires when no token bearing it can still be valid, and announces
it on a pub/sub channel of its own; one listener thread per process hears the announcements
(its own included) and calls ``on_revoked``. After the listener (re)subscribes it calls
``on_resync``, so connections whose token was revoked while it was away are found and closed.

Requires the ``redis`` package for the Redis store (``pip install redis``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..config import Settings

log = logging.getLogger(__name__)
RECONNECT_DELAY = 1.0  # seconds between the listener's attempts after Redis went away


class RevocationUnavailable(RuntimeError):
    """The store cannot tell whether a token was revoked (Redis unreachable)."""


class Revocations:
    """The contract, and the in-process memory both stores keep."""

    def __init__(self) -> None:
        # _lock guards _known: jti -> time.time() after which the record is useless
        self._lock = threading.Lock()
        self._known: dict[str, float] = {}
        #: Called with each revoked jti, in every process that shares the store.
        self.on_revoked: Callable[[str], Any] | None = None
        #: Called when revocations may have been missed (after a reconnect).
        self.on_resync: Callable[[], Any] | None = None

    def _remember(self, jti: str, ttl: float) -> None:
        now = time.time()
        with self._lock:
            self._known[jti] = now + ttl
            if len(self._known) > 1024:  # keep it small: forget the records that expired
                self._known = {k: until for k, until in self._known.items() if until > now}

    def _announce(self, jti: str) -> None:
        if self.on_revoked is not None:
            self.on_revoked(jti)

    def known(self, jti: str) -> bool:
        """Whether this process knows ``jti`` is revoked (no I/O)."""
        with self._lock:
            until = self._known.get(jti)
        return until is not None and until > time.time()

    def revoke(self, jti: str, ttl: float) -> None:
        """Refuse ``jti`` for ``ttl`` seconds from now, everywhere; close its connections."""
        raise NotImplementedError

    def is_revoked(self, jti: str) -> bool:
        """Whether ``jti`` was revoked; :class:`RevocationUnavailable` when it cannot tell."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and threads."""


class MemoryRevocations(Revocations):
    """Revocations of one process."""

    def revoke(self, jti: str, ttl: float) -> None:
        self._remember(jti, ttl)
        self._announce(jti)

    def is_revoked(self, jti: str) -> bool:
        return self.known(jti)


class RedisRevocations(Revocations):
    """Revocations shared by every process on one Redis (under ``prefix``)."""

    def __init__(self, url: str, prefix: str, timeout: float = 5.0):
        super().__init__()
        try:
            import redis
        except ImportError:  # pragma: no cover - depends on the installation
            raise RuntimeError(
                "LOCAL_BRIDGE_REDIS_URL needs the redis package: pip install redis"
            ) from None
        self._errors = (redis.RedisError, OSError)
        # Typed as Any: redis-py annotates its commands for sync and async clients at once.
        self._client: Any = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._key_prefix = prefix + "auth:revoked:"
        self._channel = prefix + "auth:revocations"
        self._stopping = threading.Event()
        self._pubsub: Any = None
        #: Set while the listener is subscribed (it hears every revocation from then on).
        self.subscribed = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="auth-revocations", daemon=True)
        self._listener.start()

    def revoke(self, jti: str, ttl: float) -> None:
        try:
            pipe = self._client.pipeline()
            pipe.set(self._key_prefix + jti, b"1", ex=max(1, int(ttl)))
            pipe.publish(self._channel, jti.encode())
            pipe.execute()
        except self._errors as exc:
            raise RevocationUnavailable(f"cannot record the revocation: {exc}") from None
        # This process acts at once; its listener will hear the announcement too (harmless).
        self._remember(jti, ttl)
        self._announce(jti)

    def is_revoked(self, jti: str) -> bool:
        if self.known(jti):
            return True
        try:
            ttl: int | None = self._client.ttl(self._key_prefix + jti)
        except self._errors as exc:
            raise RevocationUnavailable(f"cannot check revocations: {exc}") from None
        if ttl is None or ttl < 0:  # -2: no such key (-1 would be a key without expiry)
            return ttl == -1
        self._remember(jti, ttl)
        return True

    def _listen(self) -> None:
        """Hear revocations until closed; resubscribe (and resync) after losing Redis."""
        while not self._stopping.is_set():
            try:
                self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                self._pubsub.subscribe(self._channel)
                self.subscribed.set()
                if self.on_resync is not None:
                    self.on_resync()
                while not self._stopping.is_set():
                    message = self._pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        jti = message["data"].decode(errors="replace")
                        self._remember(jti, 60.0)  # the key in Redis holds the real expiry
                        self._announce(jti)
            except self._errors as exc:
                if self._stopping.is_set():
                    return
                log.warning("revocation listener lost Redis (%s); retrying", exc)
                self._stopping.wait(RECONNECT_DELAY)
            except Exception:  # a bug in a callback must not end the listener
                log.exception("revocation listener failed; restarting it")
                self._stopping.wait(RECONNECT_DELAY)
            finally:
                self.subscribed.clear()
                self._close_pubsub()

    def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except self._errors:
                pass

    def close(self) -> None:
        self._stopping.set()
        self._listener.join(5.0)
        self._close_pubsub()
        self._client.close()


def create_revocations(settings: Settings) -> Revocations:
    """Shared through Redis when ``LOCAL_BRIDGE_REDIS_URL`` is set, else this process's."""
    if settings.REDIS_URL:
        return RedisRevocations(settings.REDIS_URL, settings.REDIS_PREFIX)
    return MemoryRevocations()
