"""What ``local-bridge listen`` prints for an event, and its type filter."""

from __future__ import annotations

from local_bridge.listen_view import event_line, wanted


def test_an_event_is_one_readable_line():
    line = event_line(
        {
            "type": "job_progress",
            "timestamp": "2026-11-22T14:32:15.123456Z",
            "channel": "jobs",
            "seq": 1042,
            "job_id": "abc",
            "stage": "analyzing",
            "progress": 45.5,
            "message": "Analyzing image quality",
            "counters": {"files_scanned": 12},
            "photo_id": None,
        }
    )
    assert line == (
        "14:32:15.123  #1042  jobs  job_progress  job_id=abc stage=analyzing progress=45.5 "
        'message="Analyzing image quality" counters={"files_scanned":12}'
    )


def test_a_broadcast_to_everyone_and_an_event_without_fields():
    assert event_line({"type": "hello", "timestamp": "x", "channel": None, "seq": 3}) == (
        "x  #3  *  hello"
    )


def test_type_patterns_are_shell_globs():
    assert wanted("job_progress", [])
    assert wanted("job_progress", ["job_*"]) and not wanted("photo_imported", ["job_*"])
    assert wanted("photo_imported", ["job_*", "photo_imp?rted"])
