"""Unit tests of local_bridge.websocket_events on a real application's publish path and hub."""

from __future__ import annotations

import inspect
import json
import struct

import pytest

import local_bridge
from local_bridge import catalog
from local_bridge import websocket_events as we
from local_bridge.bus.hub import Client
from local_bridge.catalog import EventValidationError

#: Arguments for every broadcast function, naming every field of the event.
SAMPLES = {
    "job_created": dict(job_id="j1", photo_id="p1", priority=70, kind="analysis"),
    "job_queued": dict(job_id="j1", position=2, estimated_start_seconds=30.0),
    "job_started": dict(job_id="j1", photo_id="p1", worker="w1"),
    "job_progress": dict(
        job_id="j1",
        stage="analyzing",
        progress=45.5,
        message="Analyzing",
        counters={"files_scanned": 3, "issues_found": 0},
    ),
    "job_completed": dict(
        job_id="j1",
        photo_id="p1",
        result={"score": 1},
        result_url="http://x/r",
        duration_seconds=1.5,
    ),
    "job_failed": dict(
        job_id="j1",
        photo_id="p1",
        error_message="boom",
        error_details={"a": 1},
        retryable=True,
        stage="analyzing",
    ),
    "job_cancelled": dict(job_id="j1", reason="user"),
    "photo_imported": dict(
        photo_id="p1", session_id="s1", file_name="a.jpg", file_path="/in/a.jpg", source="web"
    ),
    "photo_analyzed": dict(
        photo_id="p1", session_id="s1", ai_score=0.9, analysis_results={"sharp": True}
    ),
    "photo_selected": dict(
        photo_id="p1", session_id="s1", context_tag="portrait", selected_preset="warm"
    ),
    "photo_approved": dict(photo_id="p1", session_id="s1"),
    "photo_rejected": dict(photo_id="p1", session_id="s1", reason="blurry"),
    "session_created": dict(session_id="s1", session_name="Wedding", import_folder="/in"),
    "session_updated": dict(
        session_id="s1",
        total_photos=4,
        processed_photos=3,
        progress_percent=75.0,
        status="processing",
    ),
    "session_completed": dict(
        session_id="s1", session_name="Wedding", total_photos=4, approved_photos=2
    ),
    "system_status": dict(status="ok", details={"database": "ok"}),
    "resource_warning": dict(resource_type="disk", current_value=95, threshold=90, message="full"),
    "error_occurred": dict(
        error_type="job", error_message="boom", error_details=None, job_id="j1", photo_id="p1"
    ),
    "queue_status": dict(
        pending_count=1, processing_count=2, completed_count=3, failed_count=4, cancelled_count=5
    ),
    "priority_changed": dict(job_id="j1", old_priority=10, new_priority=90, reason="rush"),
    "approval_queue_updated": dict(queue_count=3, session_id="s1"),
    "export_started": dict(
        export_id="e1", photo_id="p1", session_id="s1", preset_name="web", destination="/out"
    ),
    "export_completed": dict(
        export_id="e1",
        photo_id="p1",
        session_id="s1",
        preset_name="web",
        output_path="/out/a.jpg",
        file_size=1024,
    ),
    "export_failed": dict(
        export_id="e1", photo_id="p1", session_id="s1", preset_name="web", error_message="disk full"
    ),
}


class RecordingTransport:
    """A hub client that keeps the events it is sent, decoded."""

    def __init__(self):
        self.frames: list[bytes] = []

    def send(self, frame: bytes, direct: bool = True) -> bool:
        self.frames.append(frame)
        return True

    def close(self, code: int, reason: str = "", discard: bool = False) -> bool:
        return True

    def stats(self) -> dict:
        return {"sent": len(self.frames), "dropped": 0, "queue_depth": 0}

    @property
    def messages(self) -> list[dict]:
        out = []
        for frame in self.frames:
            length, offset = frame[1] & 0x7F, 2
            if length == 126:
                (length,), offset = struct.unpack("!H", frame[2:4]), 4
            elif length == 127:
                (length,), offset = struct.unpack("!Q", frame[2:10]), 10
            assert frame[0] == 0x81 and len(frame) == offset + length
            out.append(json.loads(frame[offset:]))
        return out


@pytest.fixture
def app():
    return local_bridge.create_app({"DATABASE_URL": "sqlite://"})


@pytest.fixture
def state(app):
    return local_bridge.state_of(app)


@pytest.fixture
def subscribe(state):
    """subscribe(*channels) -> the recording transport of a new client on the app's hub."""
    hub = state.ws_server.hub

    def make(*channels: str) -> RecordingTransport:
        transport = RecordingTransport()
        client = Client(transport)
        hub.add(client)
        hub.subscribe(client, channels)
        return transport

    return make


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield


def test_one_broadcast_function_per_catalog_type():
    functions = {
        name.removeprefix("broadcast_")
        for name, obj in vars(we).items()
        if name.startswith("broadcast_") and inspect.isfunction(obj)
    }
    assert functions == set(catalog.CATALOG)
    assert set(SAMPLES) == set(catalog.CATALOG)


@pytest.mark.parametrize("type_", sorted(SAMPLES))
def test_broadcast_publishes_on_its_channel(type_, state, subscribe, ctx):
    channel = catalog.channel_of(type_)
    subscriber = subscribe(channel)
    bystander = subscribe(
        *sorted({"jobs", "photos", "sessions", "system", "queue", "approval", "export"} - {channel})
    )
    published = getattr(we, f"broadcast_{type_}")(**SAMPLES[type_])
    [message] = subscriber.messages
    timestamp = message.pop("timestamp")
    assert isinstance(timestamp, str) and timestamp.endswith("Z")
    assert message == {"type": type_, "channel": channel, "seq": published.seq, **SAMPLES[type_]}
    assert published.seq == state.bus.last_seq
    assert published.recipients == 1
    assert bystander.frames == []


def test_unset_optional_fields_are_null(subscribe, ctx):
    subscriber = subscribe("jobs")
    we.broadcast_job_started("j1")
    we.broadcast_job_failed("j2", error_message="x")
    started, failed = subscriber.messages
    assert (started["photo_id"], started["worker"]) == (None, None)
    assert {k: failed[k] for k in ("photo_id", "error_details", "retryable", "stage")} == {
        "photo_id": None,
        "error_details": None,
        "retryable": False,
        "stage": None,
    }


def test_entity_sub_channels_receive_named_events_once(subscribe, ctx):
    session = subscribe("sessions:s1")
    job = subscribe("jobs", "jobs:j1")  # two matching subscriptions
    we.broadcast_photo_imported("p1", "s1", "a.jpg")
    we.broadcast_photo_imported("p2", "s2", "b.jpg")
    we.broadcast_export_completed("e1", "p1", "web", "/o", 10, session_id="s1")
    we.broadcast_job_progress("j1", "scan", 10)
    assert [(m["type"], m["channel"], m["photo_id"]) for m in session.messages] == [
        ("photo_imported", "photos", "p1"),
        ("export_completed", "export", "p1"),
    ]
    assert [(m["type"], m["job_id"]) for m in job.messages] == [("job_progress", "j1")]


def test_job_queued_position_update_goes_to_the_job_sub_channel_only(subscribe, ctx):
    jobs, one_job = subscribe("jobs"), subscribe("jobs:j7")
    we.broadcast_job_queued("j7", 3, estimated_start_seconds=12, position_update=True)
    assert jobs.frames == []
    [message] = one_job.messages
    assert (message["type"], message["channel"], message["position"]) == (
        "job_queued",
        "jobs:j7",
        3,
    )
    we.broadcast_job_queued("j7", 1)
    assert [m["channel"] for m in jobs.messages] == ["jobs"]


@pytest.mark.parametrize("total, processed, expected", [(4, 3, 75.0), (3, 1, 33.33), (0, 0, 0.0)])
def test_session_updated_computes_progress_percent(total, processed, expected, subscribe, ctx):
    subscriber = subscribe("sessions")
    we.broadcast_session_updated("s1", total, processed, "processing")
    assert subscriber.messages[0]["progress_percent"] == expected


@pytest.mark.parametrize(
    "call",
    [
        lambda: we.broadcast_job_created(None),
        lambda: we.broadcast_job_created("j1", priority=101),
        lambda: we.broadcast_job_progress("j1", "scan", 150),
        lambda: we.broadcast_job_progress("j1", "scan", 5, counters={"files": "3"}),
        lambda: we.broadcast_job_queued("j1", 0, position_update=True),
        lambda: we.broadcast_job_failed("j1", error_message=None),
        lambda: we.broadcast_photo_imported("p1", "s1", None),
        lambda: we.broadcast_session_updated("s1", -1, 0, "active"),
        lambda: we.broadcast_resource_warning("disk", "95", 90),
        lambda: we.broadcast_queue_status(1, 2, 3, "4"),
        lambda: we.broadcast_export_completed("e1", "p1", "web", "/o", file_size=-1),
    ],
)
def test_invalid_fields_raise_and_publish_nothing(call, state, subscribe, ctx):
    everyone = subscribe("jobs", "jobs:j1", "photos", "sessions", "system", "queue", "export")
    seq, count = state.bus.last_seq, state.bus.events_published
    with pytest.raises(EventValidationError):
        call()
    assert everyone.frames == []
    assert state.bus.last_seq == seq
    assert state.bus.events_published == count


def test_outside_app_context_the_bound_app_is_used():
    first = local_bridge.create_app({"DATABASE_URL": "sqlite://"})
    second = local_bridge.create_app({"DATABASE_URL": "sqlite://"})
    recorders = {}
    for name, app in (("first", first), ("second", second)):
        recorders[name] = RecordingTransport()
        client = Client(recorders[name])
        hub = local_bridge.state_of(app).bus.hub
        hub.add(client)
        hub.subscribe(client, ["system"])
    we.bind(None)
    with pytest.raises(RuntimeError, match="bind"):  # creating an application binds nothing
        we.broadcast_system_status("unbound")
    we.bind(first)
    try:
        we.broadcast_system_status("outside")
        with second.app_context():
            we.broadcast_system_status("inside")
    finally:
        we.bind(None)
    assert [m["status"] for m in recorders["first"].messages] == ["outside"]
    assert [m["status"] for m in recorders["second"].messages] == ["inside"]
