"""The Redis backplane: every process delivers every event, one seq, shared history.

Publishing is one Lua script: take the next ``seq`` (INCR), append the event to a capped
stream (the history every process reads for resume and polling), and PUBLISH it. Redis runs
scripts one at a time, so stream order, pub/sub order and seq order are the same. Each process
has one listener thread that receives the pub/sub messages and hands them to its hub in order;
after a reconnect it first reads what it missed from the stream, so its clients see no gap.

Requires the ``redis`` package (``pip install redis``).
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

from ..protocol import BusEvent, EventDraft, encode_frame, utc_timestamp
from .base import Backplane, BackplaneUnavailable

log = logging.getLogger(__name__)
PRESENCE_EVERY = 1.0  # seconds between a process's "I am here" in the processes set
PRESENCE_TTL = 5.0  # a process silent this long is gone

_PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
local text = ARGV[1] .. ARGV[2] .. ARGV[3] .. seq .. ARGV[4]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], seq .. '-1', 'm', ARGV[5], 't', text,
           'at', ARGV[7])
redis.call('PUBLISH', KEYS[3], seq .. '\\n' .. ARGV[5] .. '\\n' .. text)
return seq
"""
# A fresh epoch when Redis lost its data (restart without persistence), with the sequence
# raised past what this process already delivered, so no client ever sees seq go backwards.
_ENSURE_EPOCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
end
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current < tonumber(ARGV[2]) then
  current = tonumber(ARGV[2])
end
redis.call('SET', KEYS[2], current)
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"""


class RedisBackplane(Backplane):
    """Shares numbering, history and delivery among every process on one Redis."""

    def __init__(self, url: str, history_size: int = 10000, history_ttl: float = 600.0,
                 prefix: str = "local_bridge:", publish_timeout: float = 5.0):
        super().__init__()
        try:
            import redis
        except ImportError:  # pragma: no cover - depends on the installation
            raise RuntimeError("LOCAL_BRIDGE_REDIS_URL needs the redis package: pip install redis")
        self._redis_module = redis
        self._client = redis.Redis.from_url(url, socket_timeout=publish_timeout,
                                            socket_connect_timeout=publish_timeout,
                                            health_check_interval=10)
        self._keys = {name: prefix + name
                      for name in ("seq", "stream", "events", "epoch", "control", "processes")}
        self.process_id = uuid.uuid4().hex[:12]
        self.history_size = history_size
        self.history_ttl = history_ttl
        self._publish_script = self._client.register_script(_PUBLISH)
        self._epoch_script = self._client.register_script(_ENSURE_EPOCH)
        # _lock guards _last and _waiters, and makes "this process's latest seq" and handing
        # an event to the hub one step (see paused()).
        self._lock = threading.RLock()
        self._last = 0
        self._epoch = ""
        self._waiters: dict[int, list] = {}
        self._status = "connecting"
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="redis-backplane", daemon=True)
        self._listener.start()
        self._ready.wait(publish_timeout)

    # ------------------------------------------------------------------ contract

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def last_seq(self) -> int:
        return self._last

    def paused(self) -> threading.RLock:
        return self._lock

    @property
    def available(self) -> bool:
        return self._status == "ok"

    def health(self) -> str:
        try:
            self._client.ping()
        except self._redis_module.RedisError as exc:
            return f"error: redis unreachable ({exc.__class__.__name__})"
        return "ok" if self._status == "ok" else f"error: listener {self._status}"

    def publish(self, draft: EventDraft) -> tuple[BusEvent, int]:
        meta = json.dumps({"type": draft.type, "channel": draft.channel,
                           "targets": list(draft.targets),
                           "types": sorted(draft.client_types) if draft.client_types is not None else None},
                          separators=(",", ":"))
        head, middle, tail = draft.parts()
        try:
            seq = int(self._publish_script(
                keys=[self._keys["seq"], self._keys["stream"], self._keys["events"]],
                args=[head, utc_timestamp(), middle, tail, meta, max(1, self.history_size),
                      int(time.time() * 1000)]))
        except self._redis_module.RedisError as exc:
            raise BackplaneUnavailable(f"redis: {exc.__class__.__name__}: {exc}") from None
        return self._await_local_delivery(seq)

    def history(self, since: int) -> tuple[list[BusEvent], bool]:
        upto = self._last
        if since >= upto:
            return [], True
        try:
            entries = self._client.xrange(self._keys["stream"], min=f"{since + 1}-1", max=f"{upto}-1")
        except self._redis_module.RedisError as exc:
            raise BackplaneUnavailable(f"redis: {exc.__class__.__name__}") from None
        oldest = time.time() * 1000 - self.history_ttl * 1000
        events = [self._event(entry_id, fields) for entry_id, fields in entries
                  if float(fields[b"at"]) >= oldest]
        complete = bool(events) and events[0].seq == since + 1 and len(events) == upto - since
        return events, complete

    def close(self) -> None:
        self._stopping.set()
        try:
            self._client.zrem(self._keys["processes"], self.process_id)
            self._client.close()
        except Exception:  # closing is best effort
            pass

    # ------------------------------------------------------------------ delivery

    def _await_local_delivery(self, seq: int) -> tuple[BusEvent, int]:
        """Wait (briefly) until this process has delivered ``seq``: the caller learns how many
        of its clients got it, and reads its own writes in order."""
        done = threading.Event()
        slot: list = [done, None, 0]
        with self._lock:
            if seq <= self._last:
                return self._placeholder(seq), 0  # delivered already (reconnect fill)
            self._waiters[seq] = slot
        if not done.wait(5.0):
            with self._lock:
                self._waiters.pop(seq, None)
            return self._placeholder(seq), 0
        with self._lock:  # woken before the delivery: its result is final once the lock is free
            return slot[1], slot[2]

    @staticmethod
    def _placeholder(seq: int) -> BusEvent:
        return BusEvent(seq, {"seq": seq}, (), None, b"")

    def _event(self, entry_id: bytes, fields: dict[bytes, bytes]) -> BusEvent:
        seq = int(entry_id.split(b"-", 1)[0])
        return self._build(seq, fields[b"m"], fields[b"t"])

    @staticmethod
    def _build(seq: int, meta_raw: bytes, text: bytes) -> BusEvent:
        meta = json.loads(meta_raw)
        types = frozenset(meta["types"]) if meta["types"] is not None else None
        return BusEvent(seq, json.loads(text), tuple(meta["targets"]), types, encode_frame(text))

    def _deliver_local(self, event: BusEvent) -> None:
        with self._lock:
            if event.seq <= self._last:
                return  # already delivered (gap fill overlapping the live feed)
            self._last = event.seq
            slot = self._waiters.pop(event.seq, None)
            if slot is not None:
                # Wake the publisher before the delivery wakes the writers: under gevent it then
                # answers its request (and its client sends the next event) before the writers
                # run, so they find several events queued and write them in one call. It reads
                # the result under this lock, so it still sees the final count.
                slot[0].set()
            count = self._deliver(event)
            if slot is not None:
                slot[1], slot[2] = event, count

    def _listen(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._keys["events"], self._keys["control"])
                self._sync()
                self._status = "ok"
                self._ready.set()
                backoff = 0.1
                next_presence = 0.0
                while not self._stopping.is_set():
                    if time.monotonic() >= next_presence:
                        self._announce_presence()
                        next_presence = time.monotonic() + PRESENCE_EVERY
                    message = pubsub.get_message(timeout=PRESENCE_EVERY)
                    if message is None or message["type"] != "message":
                        continue
                    if message["channel"] == self._keys["control"].encode():
                        self._answer(message["data"])
                        continue
                    seq_raw, meta_raw, text = message["data"].split(b"\n", 2)
                    self._deliver_local(self._build(int(seq_raw), meta_raw, text))
            except Exception as exc:  # the listener must outlive any failure: retry
                self._status = f"reconnecting ({exc.__class__.__name__})"
                log.warning("redis backplane: %s; reconnecting in %.1f s", exc, backoff)
                self._ready.set()
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                try:
                    pubsub.close()
                except Exception:  # the connection may already be gone
                    pass

    # ------------------------------------------------------------------ control requests

    def request_all(self, request: dict[str, Any], timeout: float = 2.0) -> list[dict[str, Any]]:
        """Publish ``request`` to every process and collect the answers of the live ones."""
        reply_key = f"{self._keys['control']}:reply:{uuid.uuid4().hex}"
        try:
            now = time.time()
            expected = self._client.zcount(self._keys["processes"], now - PRESENCE_TTL, "+inf")
            self._client.publish(self._keys["control"], json.dumps({**request, "reply": reply_key}))
            answers: list[dict[str, Any]] = []
            deadline = time.monotonic() + timeout
            while len(answers) < max(1, expected):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                item = self._client.blpop([reply_key], timeout=max(0.01, remaining))
                if item is not None:
                    answers.append(json.loads(item[1]))
            self._client.delete(reply_key)
            return answers
        except self._redis_module.RedisError as exc:
            raise BackplaneUnavailable(f"redis: {exc.__class__.__name__}") from None

    def _answer(self, raw: bytes) -> None:
        request = json.loads(raw)
        reply_key = request.pop("reply")
        # Answered from a thread of its own: the listener must keep delivering events.
        threading.Thread(target=self._reply, args=(reply_key, request), daemon=True).start()

    def _reply(self, reply_key: str, request: dict[str, Any]) -> None:
        try:
            answer = self._serve(request)
            self._client.rpush(reply_key, json.dumps({**answer, "process": self.process_id}))
            self._client.expire(reply_key, 30)
        except Exception:  # a failed answer is a missing answer; the asker times out
            log.exception("redis backplane: control request failed")

    def _announce_presence(self) -> None:
        now = time.time()
        self._client.zadd(self._keys["processes"], {self.process_id: now})
        self._client.zremrangebyscore(self._keys["processes"], "-inf", now - PRESENCE_TTL)

    def _sync(self) -> None:
        """After (re)subscribing: agree on the epoch, then deliver what was missed meanwhile."""
        epoch, seq = self._epoch_script(keys=[self._keys["epoch"], self._keys["seq"]],
                                        args=[uuid.uuid4().hex[:16], self._last])
        epoch, current = epoch.decode(), int(seq)
        with self._lock:
            if epoch != self._epoch:
                if self._epoch:
                    log.warning("redis backplane: new epoch %s (Redis lost its data)", epoch)
                self._epoch = epoch
                if not self._last:
                    self._last = current  # a new process starts at the bus's present
                    return
        for entry_id, fields in self._client.xrange(self._keys["stream"], min=f"{self._last + 1}-1"):
            self._deliver_local(self._event(entry_id, fields))
