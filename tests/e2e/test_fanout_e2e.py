"""Who receives what: channels, entity sub-channels, client types, seq order (PROTOCOL.md §2-3)."""

from __future__ import annotations

import itertools
import threading

import pytest

from support import expect_only_marker, marker

CLIENT_TYPES = ["gui", "web", "mobile", "lightroom"]
CHANNELS = ["jobs", "photos", "sessions", "system", "queue", "approval", "export"]
ONE_EVENT_PER_CHANNEL = {
    "jobs": ("job_cancelled", {"job_id": "m1"}),
    "photos": ("photo_approved", {"photo_id": "p1"}),
    "sessions": ("session_created", {"session_id": "s1", "session_name": "Shoot"}),
    "system": ("system_status", {"status": "ok"}),
    "queue": (
        "queue_status",
        {"pending_count": 1, "processing_count": 0, "completed_count": 0, "failed_count": 0},
    ),
    "approval": ("approval_queue_updated", {"queue_count": 3}),
    "export": ("export_failed", {"export_id": "e1", "error_message": "disk full"}),
}


def test_matrix_of_client_types_channels_and_type_limited_broadcasts(server, connect):
    """Every client type subscribed to every channel (one client per pair); each event reaches
    exactly the subscribers of its channel, further limited when the broadcast names types."""
    clients = {}
    for client_type, channel in itertools.product(CLIENT_TYPES, CHANNELS):
        client = connect()
        client.register(client_type, f"{client_type}/{channel}")
        client.subscribe(channel)
        clients[client_type, channel] = client
    published = []  # (seq, channel, allowed types)
    for channel, (type_, data) in ONE_EVENT_PER_CHANNEL.items():
        for limit in (None, ["gui"], ["web", "lightroom"]):
            seq = server.publish(type_, data, channel=channel, client_types=limit)["seq"]
            published.append((seq, channel, set(limit or CLIENT_TYPES)))
    mark = marker(server)
    for (client_type, channel), client in clients.items():
        expected = [seq for seq, ch, types in published if ch == channel and client_type in types]
        received = [m["seq"] for m in client.until(lambda m: m["seq"] == mark)][:-1]
        assert received == expected, (client_type, channel)


def test_event_envelope_is_flat_with_channel_and_seq(server, connect):
    client = connect()
    client.subscribe("jobs")
    server.publish(
        "job_progress",
        {
            "job_id": "abc",
            "stage": "analyzing",
            "progress": 45.5,
            "message": "Analyzing",
            "counters": {"files_scanned": 3},
        },
        channel="jobs",
    )
    event = client.recv()
    assert list(event)[:4] == ["type", "timestamp", "channel", "seq"]
    assert event["type"] == "job_progress" and event["channel"] == "jobs"
    assert (event["job_id"], event["stage"], event["progress"], event["message"]) == (
        "abc",
        "analyzing",
        45.5,
        "Analyzing",
    )
    assert event["counters"] == {"files_scanned": 3}
    assert "data" not in event


def test_entity_sub_channels_receive_events_naming_them(server, connect):
    job_watcher, session_watcher, photo_watcher, other = connect(), connect(), connect(), connect()
    job_watcher.subscribe("jobs:7")
    session_watcher.subscribe("sessions:12")
    photo_watcher.subscribe("photos:99")
    other.subscribe("jobs:8", "sessions:13", "photos:100")
    job = server.publish(
        "job_started", {"job_id": 7, "photo_id": 99, "worker": "w1"}, channel="jobs"
    )["seq"]
    photo = server.publish(
        "photo_rejected",
        {"photo_id": "99", "session_id": "12", "reason": "blurry"},
        channel="photos",
    )["seq"]
    export = server.publish(
        "export_started",
        {
            "export_id": "e",
            "photo_id": "98",
            "session_id": "12",
            "preset_name": "web",
            "destination": "/tmp",
        },
        channel="export",
    )["seq"]
    mark = marker(server)
    upto = lambda c: [m["seq"] for m in c.until(lambda m: m["seq"] == mark)][:-1]  # noqa: E731
    assert upto(job_watcher) == [job]
    assert upto(session_watcher) == [photo, export]
    assert upto(photo_watcher) == [job, photo]
    assert upto(other) == []


def test_each_event_reaches_a_client_once_however_many_subscriptions_match(server, connect):
    client = connect()
    client.subscribe("jobs", "jobs:5", "photos:6", "photos")
    seq = server.publish("job_completed", {"job_id": "5", "photo_id": "6"}, channel="jobs")["seq"]
    event = client.recv()
    assert event["seq"] == seq and event["channel"] == "jobs"
    expect_only_marker(client, marker(server))


def test_publishing_straight_to_a_sub_channel_reaches_only_it(server, connect):
    main, sub = connect(), connect()
    main.subscribe("jobs")
    sub.subscribe("jobs:31")
    seq = server.publish("job_queued", {"job_id": "31", "position": 2}, channel="jobs:31")["seq"]
    event = sub.recv()
    assert (event["seq"], event["channel"], event["position"]) == (seq, "jobs:31", 2)
    expect_only_marker(main, marker(server))


def test_broadcast_without_channel_reaches_everyone(server, connect):
    subscribed, unregistered = connect(), connect()
    subscribed.register("web", "w")
    subscribed.subscribe("photos")
    seq = server.publish("maintenance.notice", {"text": "restart at 5"})["seq"]
    for client in (subscribed, unregistered):
        event = client.recv()
        assert (event["seq"], event["type"], event["channel"], event["text"]) == (
            seq,
            "maintenance.notice",
            None,
            "restart at 5",
        )


def test_client_type_limited_broadcast_without_channel(server, connect):
    gui, web = connect(), connect()
    gui.register("gui", "g")
    web.register("web", "w")
    seq = server.publish("gui.refresh", {}, client_types=["gui"])["seq"]
    assert gui.recv()["seq"] == seq
    expect_only_marker(web, marker(server))


def test_seq_strictly_increases_under_concurrent_publishers(server, connect):
    client = connect()
    client.subscribe(*CHANNELS)
    errors = []

    def publish_many(channel: str) -> None:
        type_, data = ONE_EVENT_PER_CHANNEL[channel]
        try:
            for _ in range(25):
                server.publish(type_, data, channel=channel)
        except AssertionError as exc:  # surfaced below
            errors.append(exc)

    threads = [
        threading.Thread(target=publish_many, args=(ch,)) for ch in ("jobs", "photos", "system")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    mark = marker(server)
    seqs = [m["seq"] for m in client.until(lambda m: m["seq"] == mark, timeout=15)][:-1]
    assert len(seqs) == 75
    assert seqs == sorted(seqs) and len(set(seqs)) == 75


@pytest.mark.parametrize("client_type", CLIENT_TYPES)
def test_send_to_client_type_style_broadcast(server, connect, client_type):
    clients = {t: connect() for t in CLIENT_TYPES}
    for t, c in clients.items():
        c.register(t, t)
    seq = server.publish("note", {"to": client_type}, client_types=[client_type])["seq"]
    mark = marker(server)
    for t, c in clients.items():
        got = [m["seq"] for m in c.until(lambda m: m["seq"] == mark)][:-1]
        assert got == ([seq] if t == client_type else [])
