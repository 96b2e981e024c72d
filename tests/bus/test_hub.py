"""Unit tests of local_bridge.bus.hub: registry, subscriptions, recipients and closing."""

from __future__ import annotations

import itertools
import json
import sys
import threading

import pytest

from local_bridge.bus.hub import Client, Hub
from local_bridge.protocol import CloseCode, make_event

TIMEOUT = 10.0
_seq = itertools.count(1)


class FakeTransport:
    def __init__(self, accept: bool = True):
        self.accept = accept
        self.frames: list[bytes] = []
        self.directs: list[bool] = []
        self.closes: list[tuple[int, str]] = []

    def send(self, frame: bytes, direct: bool = True) -> bool:
        self.frames.append(frame)
        self.directs.append(direct)
        return self.accept

    def close(self, code: int, reason: str = "", discard: bool = False) -> bool:
        self.closes.append((code, reason))
        return True

    def stats(self) -> dict:
        return {"sent": len(self.frames), "dropped": 0, "queue_depth": 0}


def event(channel, client_types=None, type_="job_progress", **fields):
    return make_event(
        next(_seq),
        type_,
        channel,
        fields,
        frozenset(client_types) if client_types is not None else None,
    )


@pytest.fixture
def hub():
    return Hub()


@pytest.fixture
def add_client(hub):
    """add_client(*channels, client_type=None) -> a new client added to the hub and subscribed."""

    def make(*channels, client_type=None, accept=True):
        client = Client(FakeTransport(accept))
        hub.add(client)
        if client_type:
            hub.register(client, client_type, client_type.title())
        if channels:
            hub.subscribe(client, channels)
        return client

    return make


def seq_of(frame: bytes) -> int:
    """The ``seq`` of an event frame (payloads here are shorter than 126 bytes)."""
    assert frame[1] < 126
    return json.loads(frame[2:])["seq"]


def ids(clients):
    return sorted(c.client_id for c in clients)


def test_recipients_by_channel(hub, add_client):
    jobs, photos, both = add_client("jobs"), add_client("photos"), add_client("jobs", "photos")
    add_client()  # connected, subscribed to nothing
    assert ids(hub.recipients(event("jobs"))) == ids([jobs, both])
    assert ids(hub.recipients(event("photos", type_="photo_approved"))) == ids([photos, both])
    assert hub.recipients(event("system", type_="system_status")) == []


@pytest.mark.parametrize(
    "sub_channel, channel, fields",
    [
        ("jobs:j1", "jobs", {"job_id": "j1"}),
        ("sessions:s1", "photos", {"photo_id": "p1", "session_id": "s1"}),
        ("photos:p1", "export", {"export_id": "e1", "photo_id": "p1"}),
        ("jobs:j1", "system", {"error_type": "x", "job_id": "j1"}),
    ],
)
def test_entity_sub_channels(hub, add_client, sub_channel, channel, fields):
    subscriber, main = add_client(sub_channel), add_client(channel)
    other = add_client(sub_channel.split(":")[0] + ":other")
    assert ids(hub.recipients(event(channel, **fields))) == ids([subscriber, main])
    unrelated = {k: "zz" if k.endswith("_id") else v for k, v in fields.items()}
    assert ids(hub.recipients(event(channel, **unrelated))) == ids([main])
    assert other not in hub.recipients(event(channel, **fields))


def test_event_on_a_sub_channel_reaches_only_its_subscribers(hub, add_client):
    one, main = add_client("jobs:j1"), add_client("jobs")
    assert hub.recipients(event("jobs:j1", type_="job_queued", job_id="j1")) == [one]
    assert main.transport.frames == []


def test_each_client_at_most_once(hub, add_client):
    client = add_client("jobs", "jobs:j1", "sessions:s1", "photos:p1")
    e = event("jobs", job_id="j1", session_id="s1", photo_id="p1")
    assert e.targets == ("jobs", "jobs:j1", "sessions:s1", "photos:p1")
    assert hub.recipients(e) == [client]
    assert hub.deliver(e) == 1
    assert client.transport.frames == [e.frame]


def test_client_types_filter(hub, add_client):
    gui, web = add_client("jobs", client_type="gui"), add_client("jobs", client_type="web")
    anon = add_client("jobs")
    idle_web = add_client(client_type="web")  # not subscribed
    assert anon.client_type == "unknown"
    assert hub.recipients(event("jobs", client_types={"gui"})) == [gui]
    assert ids(hub.recipients(event("jobs", client_types={"gui", "unknown"}))) == ids([gui, anon])
    assert ids(hub.recipients(event(None, client_types={"web"}))) == ids([web, idle_web])
    assert hub.recipients(event("jobs", client_types=set())) == []


def test_channel_none_reaches_every_connected_client(hub, add_client):
    clients = [add_client("jobs"), add_client(), add_client("sessions:1", client_type="gui")]
    gone = add_client("jobs")
    hub.remove(gone)
    e = event(None, type_="notice", text="hi")
    assert ids(hub.recipients(e)) == ids(clients)
    assert hub.deliver(e) == 3
    assert gone.transport.frames == []


def test_deliver_hands_every_recipient_the_pacers_choice(hub, add_client, monkeypatch):
    clients = [add_client("jobs") for _ in range(3)]
    hub.deliver(event("jobs"))  # an idle process: written directly
    monkeypatch.setattr(hub._pacer, "begin", lambda recipients: (0.0, False))
    hub.deliver(event("jobs"))  # the pacer says queue: every recipient is told so
    assert [c.transport.directs for c in clients] == [[True, False]] * 3


def test_deliver_counts_only_accepting_transports(hub, add_client):
    ok, full = add_client("jobs"), add_client("jobs", accept=False)
    e = event("jobs")
    assert hub.deliver(e) == 1
    assert ok.transport.frames == full.transport.frames == [e.frame]


def test_remove_forgets_client_and_subscriptions(hub, add_client):
    client, other = add_client("jobs", "jobs:j1", "photos"), add_client("jobs")
    assert hub.remove(client)
    assert not hub.remove(client)
    assert hub.get(client.client_id) is None
    assert len(hub) == 1 and hub.clients() == [other]
    for e in (event("jobs", job_id="j1"), event("jobs:j1"), event("photos"), event(None)):
        assert client not in hub.recipients(e)
    hub.subscribe(client, ["system"])  # late subscribe (e.g. racing a disconnect) changes nothing
    assert hub.recipients(event("system", type_="system_status")) == []


def test_client_added_again_after_remove_can_resubscribe(hub, add_client):
    client = add_client("jobs")
    hub.remove(client)
    hub.add(client)
    hub.subscribe(client, ["jobs"])
    assert hub.recipients(event("jobs")) == [client]


def test_subscribe_and_unsubscribe_return_current_subscriptions(hub, add_client):
    client = add_client()
    assert hub.subscribe(client, ["jobs", "photos"]) == {"jobs", "photos"}
    assert hub.subscribe(client, ["jobs", "jobs:1"]) == {"jobs", "photos", "jobs:1"}
    assert hub.unsubscribe(client, ["photos", "never-subscribed"]) == {"jobs", "jobs:1"}
    assert hub.recipients(event("photos")) == []
    assert hub.recipients(event("jobs")) == [client]


def test_subscribe_limit_raises_and_changes_nothing(hub, add_client):
    client, watcher = add_client("jobs", "photos"), add_client("system")
    with pytest.raises(OverflowError):
        hub.subscribe(client, ["sessions", "queue"], limit=3)
    assert client.channels == {"jobs", "photos"}
    assert hub.recipients(event("sessions", type_="session_created")) == []
    assert hub.recipients(event("system", type_="system_status")) == [watcher]
    # channels already held do not count again; reaching the limit exactly is allowed
    assert hub.subscribe(client, ["jobs", "photos", "queue"], limit=3) == {
        "jobs",
        "photos",
        "queue",
    }


def test_subscribe_limit_counts_repeated_names_once(hub, add_client):
    client = add_client()
    assert hub.subscribe(client, ["jobs", "jobs"], limit=1) == {"jobs"}


def test_register_and_describe(hub, add_client):
    client = add_client("jobs", "jobs:1")
    hub.register(client, "lightroom", "LR Classic")
    view = client.describe()
    assert {k: view[k] for k in ("client_id", "client_type", "client_name", "channels")} == {
        "client_id": client.client_id,
        "client_type": "lightroom",
        "client_name": "LR Classic",
        "channels": ["jobs", "jobs:1"],
    }
    assert view["connected_at"].endswith("Z") and view["sent"] == 0


def test_clients_oldest_first(hub, add_client):
    made = [add_client() for _ in range(5)]
    assert hub.clients() == made


def test_disconnect_closes_with_code(hub, add_client):
    client, other = add_client("jobs"), add_client("jobs")
    assert hub.disconnect(client.client_id, CloseCode.ADMIN_DISCONNECT, "bye")
    assert client.transport.closes == [(4009, "bye")]
    assert hub.get(client.client_id) is None
    assert hub.recipients(event("jobs")) == [other]
    assert not hub.disconnect(client.client_id, 4009)
    assert not hub.disconnect("no-such-client", 4009)
    assert client.transport.closes == [(4009, "bye")] and other.transport.closes == []


def test_close_all_closes_every_client(hub, add_client):
    clients = [add_client("jobs"), add_client(), add_client("photos")]
    assert hub.close_all(CloseCode.GOING_AWAY) == 3
    assert [c.transport.closes for c in clients] == [[(1001, "")]] * 3
    assert len(hub) == 0 and hub.clients() == []
    assert hub.recipients(event("jobs")) == []


def test_concurrent_churn_while_delivering(hub, add_client):
    """Threads add, subscribe, unsubscribe and remove clients while another delivers: nothing
    raises, the steady subscribers get every event exactly once and in order, and the hub ends
    with exactly the clients and subscriptions left standing."""
    steady = [add_client("jobs", "jobs:1", client_type="gui") for _ in range(3)]
    toggler = add_client("jobs:1")
    errors: list[BaseException] = []
    churn_done = threading.Event()
    start = threading.Barrier(6, timeout=TIMEOUT)
    delivered: list[int] = []

    def guarded(fn):
        def run():
            try:
                start.wait()
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        return run

    def churn():
        for i in range(300):
            client = Client(FakeTransport())
            hub.add(client)
            hub.subscribe(client, ["jobs", "photos", f"jobs:{i % 3}"], limit=10)
            hub.register(client, "web", "churn")
            hub.unsubscribe(client, ["photos"])
            hub.remove(client)

    def toggle():
        for _ in range(300):
            hub.subscribe(toggler, ["photos", "sessions:1"])
            hub.unsubscribe(toggler, ["photos", "sessions:1"])

    def deliver():
        while not churn_done.is_set() or len(delivered) < 50:
            e = event("jobs", job_id="1")
            hub.deliver(e)
            delivered.append(e.seq)

    workers = [
        threading.Thread(target=guarded(fn), daemon=True) for fn in (churn, churn, churn, toggle)
    ]
    deliverer = threading.Thread(target=guarded(deliver), daemon=True)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, to interleave hub operations finely
    try:
        for thread in workers + [deliverer]:
            thread.start()
        start.wait()
        for thread in workers:
            thread.join(TIMEOUT)
        churn_done.set()
        deliverer.join(TIMEOUT)
    finally:
        sys.setswitchinterval(switch_interval)
    assert not any(t.is_alive() for t in workers + [deliverer]), "a thread hung"
    assert errors == []

    for client in steady:
        assert [seq_of(frame) for frame in client.transport.frames] == delivered
    assert len(toggler.transport.frames) == len(delivered)
    assert hub.clients() == steady + [toggler]
    assert ids(hub.recipients(event("jobs", job_id="1"))) == ids(steady + [toggler])
    assert ids(hub.recipients(event("jobs", job_id="2"))) == ids(steady)
    assert hub.recipients(event("photos", type_="photo_approved", session_id="1")) == []
    assert hub.recipients(event("jobs", client_types={"web"})) == []
