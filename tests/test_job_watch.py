"""The progress line of `local-bridge watch-job`, folded from job stream messages."""

from __future__ import annotations

from local_bridge.job_watch import JobView, render


def test_a_queued_job_shows_its_position_and_estimate():
    view = JobView("7")
    view.apply(
        {
            "type": "job_status",
            "status": "queued",
            "progress": 0,
            "position": 3,
            "estimated_start_seconds": 41.6,
            "counters": None,
        }
    )
    assert render(view) == (
        "job 7  [------------------------]    0.0%  queued  (position 3, starts in ~42 s)"
    )


def test_progress_fills_the_bar_and_lists_counters_in_order():
    view = JobView("7")
    view.apply(
        {
            "type": "job_progress",
            "progress": 50,
            "stage": "analyzing",
            "message": "Analyzing",
            "counters": {"b": 2, "a": 1},
        }
    )
    assert render(view) == (
        "job 7  [############------------]   50.0%  running: analyzing  a=1 b=2  - Analyzing"
    )


def test_the_outcome_replaces_the_last_message():
    view = JobView("7")
    view.apply({"type": "job_progress", "progress": 80, "stage": "export", "message": "almost"})
    assert view.apply({"type": "job_cancelled", "job_id": "7", "reason": "user"})
    assert view.outcome == "cancelled"
    assert render(view).endswith("cancelled: export  - user")


def test_other_messages_change_nothing():
    view = JobView("7")
    assert not view.apply({"type": "heartbeat"})
    assert not view.apply({"type": "pong"})
