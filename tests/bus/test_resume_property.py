"""Property: what a resuming client is replayed equals what it would have received live."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from local_bridge.backplane import MemoryBackplane
from local_bridge.bus.hub import Client, Hub
from local_bridge.protocol import draft_event

CHANNELS = ["jobs", "photos", "sessions", "jobs:1", "jobs:2", "photos:7"]
TYPES = ["gui", "web"]


class Recorder:
    def __init__(self):
        self.frames = []

    def send(self, frame, direct=True):
        self.frames.append(frame)
        return True

    def close(self, code, reason="", discard=False):
        return True

    def stats(self):
        return {}


events = st.lists(
    st.tuples(
        st.sampled_from(["jobs", "photos", "sessions", "jobs:1", None]),
        st.sampled_from([None, "1", "2", "7"]),
        st.sampled_from([None, ("gui",), ("web",)]),
    ),
    min_size=0,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    published=events,
    channels=st.sets(st.sampled_from(CHANNELS), min_size=1),
    client_type=st.sampled_from(TYPES),
    leave_at=st.integers(min_value=0, max_value=40),
    history_size=st.integers(min_value=0, max_value=50),
)
def test_replay_equals_live_delivery(published, channels, client_type, leave_at, history_size):
    backplane = MemoryBackplane(history_size=history_size, history_ttl=3600)
    hub = Hub()
    backplane.attach(hub.deliver)
    live = Client(Recorder(), client_type=client_type)
    hub.add(live)
    hub.subscribe(live, channels)
    resumer = Client(Recorder(), client_type=client_type)
    resumer.channels = frozenset(channels)
    since = 0
    for index, (channel, entity, types) in enumerate(published):
        if index == leave_at:
            since = backplane.last_seq
        fields = {"job_id": entity, "photo_id": entity} if entity else {}
        draft = draft_event("thing.happened", channel, fields, frozenset(types) if types else None)
        backplane.publish(draft)
    if leave_at >= len(published):
        since = backplane.last_seq
    missed, complete = backplane.history(since)
    replayed = [e.frame for e in missed if hub.would_receive(resumer, e)]
    received_after = [
        f
        for f in live.transport.frames
        if int(f.split(b'"seq":', 1)[1].split(b",", 1)[0].rstrip(b"}")) > since
    ]
    if complete:
        assert replayed == received_after
    else:
        assert history_size < len(published) - leave_at if leave_at < len(published) else False
        assert set(replayed) <= set(received_after)
        assert replayed == received_after[len(received_after) - len(replayed) :]
