"""The Redis backplane: every process delivers every event, one seq, shared history.

Publishing is one Lua script: take the next ``seq`` (INCR), append the event to a capped
stream (the history every process reads for resume and polling), and PUBLISH it. Redis runs
scripts one at a time, so stream order, pub/sub order and seq order are the same. Each process
has one listener thread that receives the pub/sub messages and hands them to its hub in order.

Nothing is lost without a word. Within one epoch a process delivers a gapless run of seqs:
a seq jump on the feed, a reconnect, or an event still undelivered a tick after it was
published is filled from the stream. When the stream cannot fill it (trimmed), or the epoch
changed under the process (Redis lost its data), it calls the
:meth:`~Backplane.on_events_lost` hook (the bus closes its clients 1011, so each resumes and
learns ``recovered: false``) and starts over at the bus's present. An event is numbered only
in the epoch its publisher follows (the script refuses otherwise), and a process publishes only
while its own listener is subscribed and in step.

Requires the ``redis`` package (``pip install redis``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..protocol import BusEvent, EventDraft, encode_frame, utc_timestamp
from .base import Backplane, BackplaneUnavailable

log = logging.getLogger(__name__)
PRESENCE_EVERY = 1.0  # seconds between a listener's checks: presence, epoch, stalled events
PRESENCE_TTL = 5.0  # a process silent this long is gone
EPOCH_REFUSED = "EPOCH"  # the error the publish script answers when the epoch is not the caller's
# Results kept for batches in flight (oldest dropped first: that batch answers 0 recipients).
UNCLAIMED_MAX = 4096

# Numbers an event only in the epoch the publisher follows: after Redis lost its data the
# epoch key is gone, and nobody numbers events until a listener has agreed on a new epoch.
_PUBLISH = """
if redis.call('GET', KEYS[4]) ~= ARGV[8] then
  return redis.error_reply('EPOCH the bus epoch is not the one this process follows')
end
local seq = redis.call('INCR', KEYS[1])
local text = ARGV[1] .. ARGV[2] .. ARGV[3] .. seq .. ARGV[4]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], seq .. '-1', 'm', ARGV[5], 't', text,
           'at', ARGV[7])
redis.call('PUBLISH', KEYS[3], ARGV[8] .. '\\n' .. seq .. '\\n' .. ARGV[5] .. '\\n' .. text)
return seq
"""
# A whole batch in one call, so nothing interleaves inside its seq range and Redis failing
# leaves all of it unpublished. Each event's stream entry and pub/sub message are those of
# _PUBLISH. Nothing is written until the first XADD, the only write that can be refused (its id
# at or below the stream's last, a key of the wrong type, OOM: Redis checks memory only before a
# script's first write; each later id is above one just appended), so a refused batch leaves the
# counter and the stream as they were.
# Trimming once after the appends leaves the stream as trimming after each would (whole nodes
# from the head while MAXLEN remain). ARGV: epoch, maxlen, at, then 5 per event (head,
# timestamp, middle, tail, meta).
_PUBLISH_MANY = """
if redis.call('GET', KEYS[4]) ~= ARGV[1] then
  return redis.error_reply('EPOCH the bus epoch is not the one this process follows')
end
local first = tonumber(redis.call('GET', KEYS[1]) or '0') + 1
local count = (#ARGV - 3) / 5
local texts = {}
for i = 0, count - 1 do
  local a, seq = 3 + i * 5, first + i
  local text = ARGV[a + 1] .. ARGV[a + 2] .. ARGV[a + 3] .. seq .. ARGV[a + 4]
  redis.call('XADD', KEYS[2], seq .. '-1', 'm', ARGV[a + 5], 't', text, 'at', ARGV[3])
  texts[i + 1] = text
end
redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[2])
redis.call('INCRBY', KEYS[1], count)
for i = 0, count - 1 do
  local head = ARGV[1] .. '\\n' .. (first + i) .. '\\n' .. ARGV[3 + i * 5 + 5]
  redis.call('PUBLISH', KEYS[3], head .. '\\n' .. texts[i + 1])
end
return first
"""
# A fresh epoch when Redis lost its data (restart without persistence), or when the caller
# finds its own epoch's sequence below what it already delivered (Redis restored an older
# snapshot, so those seqs would be numbered again). The new sequence starts past what the caller
# delivered, so seq does not go backwards for it. Joining an epoch another process made leaves
# its sequence alone: changing it would open a gap in that numbering.
_ENSURE_EPOCH = """
local epoch = redis.call('GET', KEYS[1])
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local last = tonumber(ARGV[2])
if (not epoch) or (epoch == ARGV[3] and seq < last) then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  if seq < last then
    seq = last
    redis.call('SET', KEYS[2], seq)
  end
end
return {epoch, seq}
"""


@dataclass(slots=True)
class _PendingPublish:
    """A publish of this process waiting for its own listener to deliver the event."""

    #: Set (under the backplane's lock) once the outcome is decided; the publisher then reads
    #: ``event`` and ``recipients`` under that lock, when they are final.
    done: threading.Event = field(default_factory=threading.Event)
    #: The delivered event; a placeholder when it will never be delivered here.
    event: BusEvent | None = None
    #: How many of this process's clients got it.
    recipients: int = 0


class RedisBackplane(Backplane):
    """Shares numbering, history and delivery among every process on one Redis."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        history_size: int = 10000,
        history_ttl: float = 600.0,
        prefix: str = "local_bridge:",
        publish_timeout: float = 5.0,
    ):
        super().__init__()
        try:
            import redis
        except ImportError:  # pragma: no cover - depends on the installation
            raise RuntimeError(
                "LOCAL_BRIDGE_REDIS_URL needs the redis package: pip install redis"
            ) from None
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._redis_module = redis
        # No retries inside redis-py: a failure reaches this module at once, so the listener
        # resyncs (rather than being resubscribed silently after Redis lost its data), and a
        # publish whose reply was lost is never run twice.
        # Typed as Any: redis-py annotates every command for its sync and async clients at once
        # (``Awaitable[...] | ...``); this client is synchronous and answers bytes.
        self._client: Any = redis.Redis.from_url(
            url,
            socket_timeout=publish_timeout,
            socket_connect_timeout=publish_timeout,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 0),
        )
        self._keys = {
            name: prefix + name
            for name in ("seq", "stream", "events", "epoch", "control", "processes")
        }
        self.process_id = uuid.uuid4().hex[:12]
        self.history_size = history_size
        self.history_ttl = history_ttl
        self._timeout = publish_timeout
        self._publish_script = self._client.register_script(_PUBLISH)
        self._publish_many_script = self._client.register_script(_PUBLISH_MANY)
        self._epoch_script = self._client.register_script(_ENSURE_EPOCH)
        # _lock guards _last, _epoch, _waiters, _batches and _unclaimed, and makes "this
        # process's latest seq" and handing an event to the hub one step (see paused()).
        self._lock = threading.RLock()
        self._last = 0
        self._epoch = ""
        self._waiters: dict[int, _PendingPublish] = {}
        # While a batch of this process is in flight, the listener may deliver its events
        # before their seqs are known here: their results wait in _unclaimed.
        self._batches = 0
        self._unclaimed: dict[int, tuple[BusEvent, int]] = {}
        self._status = "connecting"
        self._published_at_last_check = 0  # the bus's seq at the listener's previous check
        self._stopping = threading.Event()
        self._check_now = threading.Event()  # a publish was refused for its epoch: resync
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
        epoch = self._publishing_epoch()
        head, middle, tail = draft.parts()
        args: list[str | int] = [head, utc_timestamp(), middle, tail, _meta(draft)]
        args += [max(1, self.history_size), int(time.time() * 1000), epoch]
        seq = self._run(self._publish_script, args)
        return self._await_local_delivery(seq)

    def publish_many(self, drafts: list[EventDraft]) -> list[tuple[BusEvent, int]]:
        # One script call: consecutive seqs, and a failure publishes none of the batch.
        if not drafts:
            return []
        epoch = self._publishing_epoch()
        args: list[str | int] = [epoch, max(1, self.history_size), int(time.time() * 1000)]
        for draft in drafts:
            head, middle, tail = draft.parts()
            args += (head, utc_timestamp(), middle, tail, _meta(draft))
        with self._lock:
            self._batches += 1
        try:
            first = self._run(self._publish_many_script, args)
        except BaseException:
            with self._lock:
                self._batch_over()
            raise
        return self._await_local_deliveries(first, len(drafts))

    def _publishing_epoch(self) -> str:
        """The epoch to number in; refused while this process's own delivery path is down:
        its clients would not get the event, and its listener could not tell the bus had
        moved on."""
        status, epoch = self._status, self._epoch
        if status != "ok":
            raise BackplaneUnavailable(f"redis: listener {status}")
        return epoch

    def _run(self, script: Any, args: list[str | int]) -> int:
        """Call a publish script; its answer is a seq."""
        keys = [self._keys[name] for name in ("seq", "stream", "events", "epoch")]
        try:
            return int(script(keys=keys, args=args))
        except self._redis_module.ResponseError as exc:
            if str(exc).startswith(EPOCH_REFUSED):
                self._check_now.set()  # Redis lost its data or another process resynced first
                raise BackplaneUnavailable("redis: the bus epoch changed; resyncing") from None
            raise BackplaneUnavailable(f"redis: {exc.__class__.__name__}: {exc}") from None
        except self._redis_module.RedisError as exc:
            raise BackplaneUnavailable(f"redis: {exc.__class__.__name__}: {exc}") from None

    def history(self, since: int) -> tuple[list[BusEvent], bool]:
        upto = self._last
        if since >= upto:
            return [], True
        try:
            entries = self._client.xrange(
                self._keys["stream"], min=f"{since + 1}-1", max=f"{upto}-1"
            )
        except self._redis_module.RedisError as exc:
            raise BackplaneUnavailable(f"redis: {exc.__class__.__name__}") from None
        oldest = time.time() * 1000 - self.history_ttl * 1000
        events = [
            self._event(entry_id, fields)
            for entry_id, fields in entries
            if float(fields[b"at"]) >= oldest
        ]
        complete = bool(events) and events[0].seq == since + 1 and len(events) == upto - since
        return events, complete

    def close(self) -> None:
        """Leave the bus: stop the listener (waiting for its thread, at most a tick and the
        publish timeout) and close the connections."""
        self._stopping.set()
        try:
            self._client.zrem(self._keys["processes"], self.process_id)
            self._client.close()
        except Exception:  # closing is best effort
            pass
        if self._listener is not threading.current_thread():
            self._listener.join(PRESENCE_EVERY + self._timeout)

    # ------------------------------------------------------------------ delivery

    def _await_local_delivery(self, seq: int) -> tuple[BusEvent, int]:
        """Wait (briefly) until this process has delivered ``seq``: the caller learns how many
        of its clients got it, and reads its own writes in order."""
        pending = _PendingPublish()
        with self._lock:
            if seq <= self._last:
                return self._placeholder(seq), 0  # delivered already (reconnect fill)
            self._waiters[seq] = pending
        if not pending.done.wait(5.0):
            with self._lock:
                self._waiters.pop(seq, None)
            return self._placeholder(seq), 0
        with self._lock:  # woken before the delivery: its result is final once the lock is free
            if pending.event is None:  # the delivery raised after waking this publisher
                return self._placeholder(seq), 0
            return pending.event, pending.recipients

    def _await_local_deliveries(self, first: int, count: int) -> list[tuple[BusEvent, int]]:
        """:meth:`_await_local_delivery` for seqs ``first`` to ``first + count - 1``, waiting
        (briefly) for all of them together."""
        seqs = range(first, first + count)
        pending = {seq: _PendingPublish() for seq in seqs}
        with self._lock:
            for seq in seqs:
                if seq <= self._last:  # delivered already
                    pending[seq].event, pending[seq].recipients = self._unclaimed.pop(
                        seq, (None, 0)
                    )
                    pending[seq].done.set()
                else:
                    self._waiters[seq] = pending[seq]
            self._batch_over()
        deadline = time.monotonic() + 5.0
        for seq in reversed(seqs):  # delivered in order: the last one done means all are
            if not pending[seq].done.wait(max(0.0, deadline - time.monotonic())):
                break
        with self._lock:  # results are final once the lock is free (see _deliver_local)
            done = []
            for seq in seqs:
                if self._waiters.get(seq) is pending[seq]:
                    del self._waiters[seq]  # not delivered in time
                event = pending[seq].event
                if event is None:
                    done.append((self._placeholder(seq), 0))
                else:
                    done.append((event, pending[seq].recipients))
            return done

    def _batch_over(self) -> None:
        """A batch call has returned and claimed its delivered events (under _lock)."""
        self._batches -= 1
        if not self._batches:
            self._unclaimed.clear()

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
        """Hand the next event (``seq == _last + 1``) to the hub; callers keep seqs gapless."""
        with self._lock:
            if event.seq <= self._last:
                return  # already delivered (gap fill overlapping the live feed)
            self._last = event.seq
            pending = self._waiters.pop(event.seq, None)
            if pending is not None:
                # Wake the publisher before the delivery wakes the writers: under gevent it then
                # answers its request (and its client sends the next event) before the writers
                # run, so they find several events queued and write them in one call. It reads
                # the result under this lock, so it still sees the final count.
                pending.done.set()
            count = self._deliver(event)
            if pending is not None:
                pending.event, pending.recipients = event, count
            elif self._batches:
                self._unclaimed[event.seq] = (event, count)
                if len(self._unclaimed) > UNCLAIMED_MAX:  # batches overlapping without end
                    del self._unclaimed[next(iter(self._unclaimed))]

    def _start_over(self, epoch: str, seq: int, why: str) -> None:
        """Events meant for this process's clients are beyond recovery: close those clients
        (they resume and learn ``recovered: false``) and go on from ``seq`` in ``epoch``."""
        with self._lock:  # no client joins between the jump and the close
            known, renumbered = bool(self._epoch), epoch != self._epoch
            self._epoch, self._last = epoch, seq
            self._published_at_last_check = seq
            # Their events will not be delivered here: each publisher answers 0 recipients.
            for waiting in [s for s in self._waiters if renumbered or s <= seq]:
                pending = self._waiters.pop(waiting)
                pending.event = self._placeholder(waiting)
                pending.done.set()
            if known:
                self._events_lost()
        if known:
            log.warning("redis backplane: %s; this process's clients were closed to resume", why)

    def _catch_up(self, upto: int) -> None:
        """Deliver every event after ``_last`` up to ``upto`` from the stream, or start over
        when the stream no longer holds them all."""
        start = self._last + 1
        if upto < start:
            return
        entries = self._client.xrange(self._keys["stream"], min=f"{start}-1", max=f"{upto}-1")
        # Stream ids are unique and ordered, so the right count from `start` means no gap.
        if len(entries) != upto - start + 1 or int(entries[0][0].split(b"-", 1)[0]) != start:
            self._start_over(self._epoch, upto, f"events {start}-{upto} are no longer held")
            return
        for entry_id, fields in entries:
            self._deliver_local(self._event(entry_id, fields))

    def _on_event(self, data: bytes) -> None:
        """One pub/sub event: delivered in seq order, a gap filled first, never one twice."""
        epoch, seq_raw, meta_raw, text = data.split(b"\n", 3)
        if epoch.decode() != self._epoch:
            # Numbered in an epoch this process does not follow: the bus moved on (the sync
            # starts this process over), or the event belongs to a numbering already void.
            self._sync()
            return
        seq = int(seq_raw)
        if seq <= self._last:
            return  # delivered already, from the stream
        if seq > self._last + 1:
            self._catch_up(seq - 1)
        self._deliver_local(self._build(seq, meta_raw, text))

    def _check(self) -> None:
        """Each tick: announce this process, make sure the epoch is still the one it follows
        (a restart of Redis may go unseen by the pub/sub connection), and fetch from the
        stream what was published a tick ago and has still not arrived."""
        self._announce_presence()
        epoch, seq = self._client.mget(self._keys["epoch"], self._keys["seq"])
        if epoch is None or epoch.decode() != self._epoch:
            self._sync()
            return
        if self._last < self._published_at_last_check:
            self._catch_up(self._published_at_last_check)
        self._published_at_last_check = int(seq or 0)

    def _subscribe(self) -> Any:
        """A pub/sub connection whose subscriptions Redis has confirmed: every event published
        after this returns reaches it."""
        pubsub = self._client.pubsub()
        pubsub.subscribe(self._keys["events"], self._keys["control"])
        deadline = time.monotonic() + self._timeout
        confirmed = 0
        while confirmed < 2:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pubsub.close()
                raise self._redis_module.TimeoutError("no subscribe confirmation")
            message = pubsub.get_message(timeout=remaining)
            if message is not None and message["type"] == "subscribe":
                confirmed += 1
        return pubsub

    def _listen(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            pubsub = None
            try:
                pubsub = self._subscribe()
                self._sync()
                self._published_at_last_check = self._last
                self._status = "ok"
                self._ready.set()
                backoff = 0.1
                next_check = time.monotonic() + PRESENCE_EVERY
                self._announce_presence()
                while not self._stopping.is_set():
                    if self._check_now.is_set() or time.monotonic() >= next_check:
                        self._check_now.clear()
                        self._check()
                        next_check = time.monotonic() + PRESENCE_EVERY
                    wait = max(0.0, min(PRESENCE_EVERY, next_check - time.monotonic()))
                    message = pubsub.get_message(timeout=wait)
                    if message is None or message["type"] != "message":
                        continue
                    if message["channel"] == self._keys["control"].encode():
                        self._answer(message["data"])
                        continue
                    self._on_event(message["data"])
            except Exception as exc:  # the listener must outlive any failure: retry
                if self._stopping.is_set():
                    break  # close() took the connections away
                self._status = f"reconnecting ({exc.__class__.__name__})"
                log.warning("redis backplane: %s; reconnecting in %.1f s", exc, backoff)
                self._ready.set()
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if pubsub is not None:
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
        """After (re)subscribing, or when the epoch looks changed: agree on the epoch with
        Redis, then deliver from the stream what was published meanwhile. A changed epoch means
        Redis lost events this process's clients may not have had: start over."""
        epoch_raw, seq_raw = self._epoch_script(
            keys=[self._keys["epoch"], self._keys["seq"]],
            args=[uuid.uuid4().hex[:16], self._last, self._epoch],
        )
        epoch, current = epoch_raw.decode(), int(seq_raw)
        if epoch != self._epoch:
            self._start_over(epoch, current, f"new epoch {epoch} (Redis lost its data)")
            return
        self._catch_up(current)


def _meta(draft: EventDraft) -> str:
    """What a receiving process needs to route the event, beside its text."""
    return json.dumps(
        {
            "type": draft.type,
            "channel": draft.channel,
            "targets": list(draft.targets),
            "types": sorted(draft.client_types) if draft.client_types is not None else None,
        },
        separators=(",", ":"),
    )
