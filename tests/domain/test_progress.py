"""ProgressConflator: rate, stage changes, the last value, order."""

from __future__ import annotations

import threading

from local_bridge.domain.progress import ProgressConflator


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _report(conflator, progress, stage="s"):
    return conflator.report("j", {"job_id": "j", "progress": progress, "stage": stage})


def test_first_report_and_stage_changes_go_out_at_once():
    sent, clock = [], Clock()
    conflator = ProgressConflator(10, sent.append, clock)
    assert _report(conflator, 1) is True
    assert _report(conflator, 2) is False  # same window, same stage: held
    assert _report(conflator, 3, stage="t") is True  # stage change: at once, replaces the held one
    assert [m["progress"] for m in sent] == [1, 3]
    conflator.close()


def test_a_new_window_publishes_at_once():
    sent, clock = [], Clock()
    conflator = ProgressConflator(10, sent.append, clock)
    _report(conflator, 1)
    clock.now += 0.1
    assert _report(conflator, 2) is True
    assert [m["progress"] for m in sent] == [1, 2]


def test_held_value_is_published_when_the_window_ends():
    sent = []
    published = threading.Event()

    def publish(fields):
        sent.append(fields)
        if len(sent) == 2:
            published.set()

    conflator = ProgressConflator(20, publish)  # real clock: a 50 ms window
    _report(conflator, 1)
    for value in range(2, 30):
        _report(conflator, value)
    assert published.wait(5), "the last value must go out without another report"
    assert [m["progress"] for m in sent] == [1, 29]
    conflator.close()


def test_finish_publishes_what_is_held_and_forgets_the_job():
    sent, clock = [], Clock()
    conflator = ProgressConflator(1, sent.append, clock)
    _report(conflator, 10)
    _report(conflator, 20)
    conflator.finish("j")
    assert [m["progress"] for m in sent] == [10, 20]
    conflator.finish("j")  # nothing left: nothing more
    assert _report(conflator, 5) is True  # a forgotten job starts afresh
    conflator.close()


def test_jobs_are_conflated_independently():
    sent, clock = [], Clock()
    conflator = ProgressConflator(1, sent.append, clock)
    assert conflator.report("a", {"progress": 1, "stage": None}) is True
    assert conflator.report("b", {"progress": 1, "stage": None}) is True
    assert conflator.report("a", {"progress": 2, "stage": None}) is False
    conflator.close()
