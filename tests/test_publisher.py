"""The one publish path: validation before numbering, channels, counting."""

from __future__ import annotations

import pytest

from local_bridge.backplane import MemoryBackplane
from local_bridge.catalog import EventValidationError
from local_bridge.publisher import Publisher, UnknownChannelError


@pytest.fixture
def delivered():
    return []


@pytest.fixture
def publisher(delivered):
    backplane = MemoryBackplane()
    backplane.attach(lambda event: delivered.append(event) or 0)
    return Publisher(backplane)


def test_catalog_event_goes_to_its_channel_with_every_field(publisher, delivered):
    published = publisher.publish("job_cancelled", {"job_id": 4})
    assert published.seq == 1 and publisher.events_published == 1
    (event,) = delivered
    assert event.message == {
        "type": "job_cancelled",
        "timestamp": event.message["timestamp"],
        "channel": "jobs",
        "seq": 1,
        "job_id": "4",
        "reason": None,
    }
    assert event.targets == ("jobs", "jobs:4")


def test_channel_none_reaches_everyone_and_custom_types_pass(publisher, delivered):
    publisher.publish("studio.notice", {"text": "hi"}, channel=None)
    assert delivered[0].channel is None and delivered[0].targets == ()


@pytest.mark.parametrize(
    "type_, fields, culprit",
    [
        ("system_status", {"status": "ok", "details": {"load": float("inf")}}, "details"),
        ("job_completed", {"job_id": "j1", "result": [float("nan")]}, "result"),
        ("notice", {"ratio": float("nan"), "fine": 1}, "ratio"),
    ],
)
def test_non_json_values_are_refused_before_numbering(publisher, delivered, type_, fields, culprit):
    """Everything a client receives must be JSON; NaN and Infinity are not."""
    with pytest.raises(EventValidationError) as info:
        publisher.publish(type_, fields)
    assert set(info.value.messages) == {culprit}
    assert delivered == [] and publisher.backplane.last_seq == 0
    assert publisher.publish("notice", {}).seq == 1  # no seq was spent on the refused event


def test_invalid_fields_and_unknown_channels_publish_nothing(publisher, delivered):
    with pytest.raises(EventValidationError):
        publisher.publish("job_progress", {"job_id": "j", "progress": "half"})
    with pytest.raises(UnknownChannelError):
        publisher.publish("job_cancelled", {"job_id": "j"}, channel="job:1")
    assert delivered == [] and publisher.events_published == 0


def test_client_types_travel_with_the_event(publisher, delivered):
    publisher.publish("notice", {}, channel=None, client_types=["gui", "web"])
    assert delivered[0].client_types == frozenset({"gui", "web"})
