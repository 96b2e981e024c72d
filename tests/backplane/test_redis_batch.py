"""A batch on the Redis backplane is one script call: consecutive seqs that nothing interleaves,
each event stored and sent as a single publish would be, and all of it or none of it."""

from __future__ import annotations

import json
import threading

import pytest

from interleave import publishing_meanwhile
from local_bridge.backplane import BackplaneUnavailable
from local_bridge.backplane import redis as redis_backplane
from local_bridge.backplane.redis import RedisBackplane
from local_bridge.protocol import BusEvent, EventDraft, draft_event
from redis_support import PrivateRedis, drop_prefix, fresh_prefix, redis_url

WAIT = 10.0  # seconds any wait below may take before the test fails


class Delivered:
    """A hub stand-in: records what a backplane delivers, one recipient per event."""

    def __init__(self) -> None:
        self.events: list[BusEvent] = []
        self._changed = threading.Condition()

    def __call__(self, event: BusEvent) -> int:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()
        return 1

    def wait_for(self, count: int) -> list[int]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.events) >= count, WAIT)
            return [event.seq for event in self.events]


def backplane_on(
    url: str, prefix: str, history_size: int = 10000
) -> tuple[RedisBackplane, Delivered]:
    backplane = RedisBackplane(url, history_size=history_size, prefix=prefix)
    delivered = Delivered()
    backplane.attach(delivered)
    assert backplane.available, backplane.health()
    return backplane, delivered


def note(i: int, size: int = 10) -> EventDraft:
    return draft_event("custom.note", None, {"i": i, "text": "é" * size})


@pytest.fixture
def shared():
    """A backplane on the shared Redis in a key space of its own, and that key space."""
    url, prefix = redis_url(), fresh_prefix()
    backplane, delivered = backplane_on(url, prefix)
    direct = __import__("redis").Redis.from_url(url)
    yield backplane, delivered, direct, prefix
    backplane.close()
    direct.close()
    drop_prefix(url, prefix)


def test_a_batch_gets_consecutive_seqs_and_reaches_the_hub_and_history_in_order(shared):
    backplane, delivered, _, _ = shared
    (single, _count) = backplane.publish(note(-1))
    done = backplane.publish_many([note(i) for i in range(10)])
    seqs = [event.seq for event, _ in done]
    assert seqs == list(range(single.seq + 1, single.seq + 11))
    assert [count for _, count in done] == [1] * 10
    assert [event.message["i"] for event, _ in done] == list(range(10))
    assert delivered.wait_for(11) == [single.seq, *seqs]
    history, complete = backplane.history(single.seq)
    assert complete and [event.message for event in history] == [e.message for e, _ in done]
    assert backplane.last_seq == seqs[-1] and backplane.publish_many([]) == []


def test_batch_events_are_stored_and_sent_exactly_as_single_publishes_are(shared):
    """Other processes and resuming clients read a batch's events as they read single ones:
    the same stream fields and the same pub/sub message, byte for byte."""
    backplane, delivered, direct, prefix = shared
    pubsub = direct.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(prefix + "events")
    assert pubsub.get_message(timeout=WAIT) is None  # the subscription is confirmed
    drafts = [
        note(0),
        draft_event("job_cancelled", "jobs", {"job_id": "j"}, frozenset({"gui", "cli"})),
    ]
    singles = [backplane.publish(draft)[0].seq for draft in drafts]
    batch = [event.seq for event, _ in backplane.publish_many(drafts)]
    messages = {}
    while len(messages) < 4:
        message = pubsub.get_message(timeout=WAIT)
        assert message is not None, "a pub/sub message is missing"
        messages[int(message["data"].split(b"\n", 2)[1])] = message["data"]
    pubsub.close()
    entries = dict(direct.xrange(prefix + "stream", min=f"{singles[0]}-1"))
    epoch = backplane.epoch.encode()
    for draft, single, batched in zip(drafts, singles, batch, strict=True):
        seen = []
        for seq in (single, batched):
            fields = entries[f"{seq}-1".encode()]
            assert sorted(fields) == [b"at", b"m", b"t"] and int(fields[b"at"]) > 0
            head, middle, tail = draft.parts()
            stamp = json.loads(fields[b"t"])["timestamp"]
            assert fields[b"t"] == f"{head}{stamp}{middle}{seq}{tail}".encode()
            assert messages[seq] == b"\n".join(
                [epoch, str(seq).encode(), fields[b"m"], fields[b"t"]]
            )
            seen.append(fields[b"m"])
        assert seen[0] == seen[1]  # the routing metadata is the same either way


def test_a_single_publish_from_another_process_never_lands_inside_a_batch(shared):
    backplane, delivered, _, prefix = shared
    other, other_delivered = backplane_on(redis_url(), prefix)
    try:
        start = backplane.last_seq
        batches: list[list[int]] = []
        with publishing_meanwhile(lambda i: other.publish(note(i))[0].seq, WAIT) as singles:
            for _ in range(30):
                batches.append([event.seq for event, _ in backplane.publish_many([note(0)] * 20)])
        assert singles[0] < batches[0][0] and batches[-1][-1] < singles[-1]
        for seqs in batches:
            assert seqs == list(range(seqs[0], seqs[0] + 20))
        numbered = sorted([seq for seqs in batches for seq in seqs] + singles)
        assert numbered == list(range(start + 1, start + 1 + len(numbered)))
        for hub in (delivered, other_delivered):
            assert hub.wait_for(len(numbered))[-len(numbered) :] == numbered
    finally:
        other.close()


def test_the_largest_batch_goes_in_one_call(shared):
    """500 events of about 2 KiB each (a 1 MiB request body): within Redis's limits."""
    backplane, delivered, direct, prefix = shared
    done = backplane.publish_many([note(i, size=1000) for i in range(500)])
    assert [event.seq for event, _ in done] == list(range(1, 501))
    assert direct.xlen(prefix + "stream") == 500 and int(direct.get(prefix + "seq")) == 500
    assert delivered.wait_for(500) == list(range(1, 501))


def test_a_batch_refused_by_the_stream_changes_nothing(shared):
    """The stream already holds a later id than the counter's next (Redis refuses the append):
    the batch is refused whole, the counter stays, and nothing is appended or sent."""
    backplane, delivered, direct, prefix = shared
    last = backplane.publish(note(0))[0].seq
    direct.xadd(prefix + "stream", {"m": "{}", "t": "{}", "at": 0}, id=f"{last + 3}-1")
    length = direct.xlen(prefix + "stream")
    with pytest.raises(BackplaneUnavailable, match="XADD"):
        backplane.publish_many([note(i) for i in range(5)])
    assert int(direct.get(prefix + "seq")) == last
    assert direct.xlen(prefix + "stream") == length
    direct.xdel(prefix + "stream", f"{last + 3}-1")
    direct.set(prefix + "seq", last + 3)  # past the stream's last id: numbering can go on
    after = [event.seq for event, _ in backplane.publish_many([note(1), note(2)])]
    assert after == [last + 4, last + 5]
    # Nothing of the refused batch was delivered: the hub got the events around it only.
    assert delivered.wait_for(3) == [last, last + 4, last + 5]


def test_redis_out_of_memory_refuses_a_batch_whole(monkeypatch):
    """Redis over its memory limit refuses the batch's first write: nothing of the batch is
    numbered, stored or sent; once Redis has room, numbering continues right after."""
    import redis

    # No presence writes during the test (they too are refused, which would take the
    # listener down and refuse the publish before it reached Redis).
    monkeypatch.setattr(redis_backplane, "PRESENCE_EVERY", 30.0)
    server = PrivateRedis().start()
    direct = redis.Redis.from_url(server.url)
    backplane, delivered = backplane_on(server.url, "lb:")
    try:
        first = [event.seq for event, _ in backplane.publish_many([note(i) for i in range(5)])]
        assert first == [1, 2, 3, 4, 5]
        direct.config_set("maxmemory-policy", "noeviction")
        direct.config_set("maxmemory", 1)
        with pytest.raises(BackplaneUnavailable, match="OutOfMemoryError"):
            backplane.publish_many([note(i) for i in range(5)])
        direct.config_set("maxmemory", 0)
        assert int(direct.get("lb:seq")) == 5 and direct.xlen("lb:stream") == 5
        after = [event.seq for event, _ in backplane.publish_many([note(9)])]
        assert after == [6]
        assert delivered.wait_for(6) == [1, 2, 3, 4, 5, 6]
    finally:
        backplane.close()
        direct.close()
        server.stop()


def test_a_batch_trims_the_history_as_single_publishes_do(shared):
    direct, url = shared[2], redis_url()
    lengths = []
    for publish_batch in (True, False):
        prefix = fresh_prefix()
        small, _ = backplane_on(url, prefix, history_size=150)
        try:
            drafts = [note(i) for i in range(400)]
            if publish_batch:
                small.publish_many(drafts)
            else:
                for draft in drafts:
                    small.publish(draft)
            lengths.append(direct.xlen(prefix + "stream"))
            events, complete = small.history(400 - 150)
            assert complete and [event.seq for event in events] == list(range(251, 401))
        finally:
            small.close()
            drop_prefix(url, prefix)
    # Approximate trimming drops whole stream nodes only, the same ones either way.
    assert lengths[0] == lengths[1] and 150 <= lengths[0] < 400
