"""Unit tests of local_bridge.catalog against the event table of PROTOCOL.md section 3."""

from __future__ import annotations

import pytest

from local_bridge import catalog
from local_bridge.catalog import EventValidationError

#: type -> (channel, fields), copied from PROTOCOL.md section 3 ("Event fields").
PROTOCOL_EVENTS = {
    "job_created": ("jobs", "job_id photo_id priority kind"),
    "job_queued": ("jobs", "job_id position estimated_start_seconds"),
    "job_started": ("jobs", "job_id photo_id worker"),
    "job_progress": ("jobs", "job_id stage progress message counters"),
    "job_completed": ("jobs", "job_id photo_id result result_url duration_seconds"),
    "job_failed": ("jobs", "job_id photo_id error_message error_details retryable stage"),
    "job_cancelled": ("jobs", "job_id reason"),
    "photo_imported": ("photos", "photo_id session_id file_name file_path source"),
    "photo_analyzed": ("photos", "photo_id session_id ai_score analysis_results"),
    "photo_selected": ("photos", "photo_id session_id context_tag selected_preset"),
    "photo_approved": ("photos", "photo_id session_id"),
    "photo_rejected": ("photos", "photo_id session_id reason"),
    "session_created": ("sessions", "session_id session_name import_folder"),
    "session_updated": (
        "sessions",
        "session_id total_photos processed_photos progress_percent status",
    ),
    "session_completed": ("sessions", "session_id session_name total_photos approved_photos"),
    "system_status": ("system", "status details"),
    "resource_warning": ("system", "resource_type current_value threshold message"),
    "error_occurred": ("system", "error_type error_message error_details job_id photo_id"),
    "queue_status": (
        "queue",
        "pending_count processing_count completed_count failed_count cancelled_count",
    ),
    "priority_changed": ("queue", "job_id old_priority new_priority reason"),
    "approval_queue_updated": ("approval", "queue_count session_id"),
    "export_started": ("export", "export_id photo_id session_id preset_name destination"),
    "export_completed": (
        "export",
        "export_id photo_id session_id preset_name output_path file_size",
    ),
    "export_failed": ("export", "export_id photo_id session_id preset_name error_message"),
}

#: The least each event needs: its required fields.
MINIMAL = {
    "job_created": {"job_id": "j1", "priority": 50, "kind": "analysis"},
    "job_queued": {"job_id": "j1", "position": 1},
    "job_started": {"job_id": "j1"},
    "job_progress": {"job_id": "j1", "progress": 0},
    "job_completed": {"job_id": "j1"},
    "job_failed": {"job_id": "j1", "error_message": "boom"},
    "job_cancelled": {"job_id": "j1"},
    "photo_imported": {"photo_id": "p1", "file_name": "a.jpg"},
    "photo_analyzed": {"photo_id": "p1"},
    "photo_selected": {"photo_id": "p1"},
    "photo_approved": {"photo_id": "p1"},
    "photo_rejected": {"photo_id": "p1"},
    "session_created": {"session_id": "s1", "session_name": "Wedding"},
    "session_updated": {"session_id": "s1"},
    "session_completed": {"session_id": "s1"},
    "system_status": {"status": "ok"},
    "resource_warning": {"resource_type": "disk", "current_value": 91.5, "threshold": 90},
    "error_occurred": {"error_type": "job", "error_message": "boom"},
    "queue_status": {
        "pending_count": 1,
        "processing_count": 2,
        "completed_count": 3,
        "failed_count": 4,
    },
    "priority_changed": {"job_id": "j1", "old_priority": 10, "new_priority": 90},
    "approval_queue_updated": {"queue_count": 0},
    "export_started": {"export_id": "e1"},
    "export_completed": {"export_id": "e1"},
    "export_failed": {"export_id": "e1", "error_message": "disk full"},
}
#: Unset optional fields that are not null (PROTOCOL.md: retryable "default false").
DEFAULTS = {("job_failed", "retryable"): False, ("queue_status", "cancelled_count"): 0}


def _fails(type_, data) -> dict:
    with pytest.raises(EventValidationError) as info:
        catalog.validate_event(type_, data)
    return info.value.messages


def test_catalog_has_exactly_the_protocol_types_and_channels():
    assert {t: catalog.channel_of(t) for t in catalog.CATALOG} == {
        t: channel for t, (channel, _) in PROTOCOL_EVENTS.items()
    }
    assert set(MINIMAL) == set(PROTOCOL_EVENTS)


@pytest.mark.parametrize("type_", sorted(PROTOCOL_EVENTS))
def test_every_field_present_and_null_when_unset(type_):
    result = catalog.validate_event(type_, MINIMAL[type_])
    assert set(result) == set(PROTOCOL_EVENTS[type_][1].split())
    for name, value in result.items():
        if name in MINIMAL[type_]:
            assert value == MINIMAL[type_][name]
        else:
            assert value == DEFAULTS.get((type_, name)), name


@pytest.mark.parametrize(
    "type_, field", [(t, f) for t in sorted(MINIMAL) for f in sorted(MINIMAL[t])]
)
def test_missing_or_null_required_field_is_refused(type_, field):
    without = {k: v for k, v in MINIMAL[type_].items() if k != field}
    assert field in _fails(type_, without)
    assert field in _fails(type_, {**MINIMAL[type_], field: None})


@pytest.mark.parametrize(
    "type_, field, value",
    [
        ("job_created", "job_id", ""),
        ("job_created", "job_id", "has space"),
        ("job_created", "job_id", "x" * 65),
        ("job_created", "job_id", True),
        ("job_created", "job_id", 1.5),
        ("job_created", "job_id", {"id": 1}),
        ("job_created", "job_id", "j1\n"),
        ("job_created", "priority", 101),
        ("job_created", "priority", -1),
        ("job_created", "priority", "50"),
        ("job_created", "priority", True),
        ("job_created", "priority", 50.5),
        ("job_created", "kind", 5),
        ("job_queued", "position", 0),
        ("job_queued", "estimated_start_seconds", -1),
        ("job_queued", "estimated_start_seconds", "10"),
        ("job_progress", "progress", 100.5),
        ("job_progress", "progress", -0.1),
        ("job_progress", "progress", "50"),
        ("job_progress", "progress", True),
        ("job_progress", "progress", float("nan")),
        ("job_progress", "counters", {"files": -1}),
        ("job_progress", "counters", {"files": 1.5}),
        ("job_progress", "counters", {"files": True}),
        ("job_progress", "counters", [1]),
        ("job_progress", "stage", 3),
        ("job_completed", "duration_seconds", -0.5),
        ("job_completed", "duration_seconds", float("inf")),
        ("job_failed", "retryable", "yes"),
        ("job_failed", "retryable", 1),
        ("photo_analyzed", "ai_score", "high"),
        ("photo_imported", "session_id", "a/b"),
        ("session_updated", "total_photos", -1),
        ("session_updated", "processed_photos", 1.0),
        ("session_updated", "progress_percent", 101),
        ("resource_warning", "current_value", "90"),
        ("resource_warning", "threshold", None),
        ("resource_warning", "current_value", float("inf")),
        ("photo_analyzed", "ai_score", float("-inf")),
        ("queue_status", "pending_count", True),
        ("queue_status", "cancelled_count", -2),
        ("priority_changed", "new_priority", 200),
        ("approval_queue_updated", "queue_count", "3"),
        ("export_completed", "file_size", -5),
        # one bound for every integer (signed 64-bit) and every number (a finite double)
        ("export_completed", "file_size", 2**63),
        ("job_progress", "counters", {"files": 10**30}),
        ("queue_status", "pending_count", 2**63),
        ("job_queued", "position", 2**63),
        ("job_created", "job_id", 2**63),
        ("job_created", "job_id", -(2**63) - 1),
        ("photo_analyzed", "ai_score", 10**400),
        ("resource_warning", "threshold", -(10**400)),
        ("job_queued", "estimated_start_seconds", 10**309),
    ],
)
def test_mistyped_value_is_refused_naming_the_field(type_, field, value):
    assert field in _fails(type_, {**MINIMAL[type_], field: value})


def test_unknown_field_and_non_object_are_refused():
    assert "bogus" in _fails("job_cancelled", {"job_id": "j1", "bogus": 1})
    assert "_schema" in _fails("job_cancelled", ["j1"])


@pytest.mark.parametrize(
    "type_, data",
    [
        ("job_created", {"job_id": "j1", "priority": 0, "kind": "k"}),
        ("job_created", {"job_id": "j1", "priority": 100, "kind": "k"}),
        ("job_progress", {"job_id": "j1", "progress": 100, "counters": {}}),
        ("job_progress", {"job_id": "j1", "progress": 45.5, "counters": {"files_scanned": 3}}),
        (
            "job_failed",
            {
                "job_id": "j1",
                "error_message": "x",
                "retryable": True,
                "error_details": {"trace": [1, 2]},
            },
        ),
        ("photo_analyzed", {"photo_id": "p1", "ai_score": -3, "analysis_results": [1, "a"]}),
        ("export_completed", {"export_id": "e1", "file_size": 0}),
        ("export_completed", {"export_id": "e1", "file_size": 2**63 - 1}),
        ("job_progress", {"job_id": "j1", "progress": 1, "counters": {"files": 2**63 - 1}}),
        ("photo_analyzed", {"photo_id": "p1", "ai_score": 10**308}),
    ],
)
def test_boundary_values_are_accepted_unchanged(type_, data):
    result = catalog.validate_event(type_, data)
    assert {k: result[k] for k in data} == data


def test_integer_ids_become_strings():
    result = catalog.validate_event(
        "photo_imported", {"photo_id": 7, "session_id": 12, "file_name": "a"}
    )
    assert (result["photo_id"], result["session_id"]) == ("7", "12")
    largest = catalog.validate_event("job_cancelled", {"job_id": 2**63 - 1})
    assert largest["job_id"] == "9223372036854775807"


# --------------------------------------------------------------------------- custom events


def test_validate_custom_accepts_any_object_and_copies_it():
    data = {"text": "hello", "nested": {"a": [1]}}
    result = catalog.validate_custom("my.event_2", data)
    assert result == data and result is not data


@pytest.mark.parametrize(
    "type_", ["", "Notice", "1notice", "no-dash", "a" * 65, "sp ace", "notice\n"]
)
def test_validate_custom_bad_type(type_):
    with pytest.raises(EventValidationError) as info:
        catalog.validate_custom(type_, {})
    assert "type" in info.value.messages


def test_validate_custom_refuses_envelope_fields_and_non_objects():
    with pytest.raises(EventValidationError) as info:
        catalog.validate_custom("notice", {"seq": 1, "channel": "x", "text": "ok"})
    assert set(info.value.messages) == {"seq", "channel"}
    with pytest.raises(EventValidationError):
        catalog.validate_custom("notice", "text")


def test_is_catalog_type():
    assert catalog.is_catalog_type("job_progress")
    assert not catalog.is_catalog_type("notice")


@pytest.mark.parametrize(
    "processed, total, expected",
    [(0, 0, 0.0), (0, 4, 0.0), (1, 3, 33.33), (2, 3, 66.67), (5, 5, 100.0)],
)
def test_progress_percent(processed, total, expected):
    assert catalog.progress_percent(processed, total) == expected
