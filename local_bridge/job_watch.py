"""``local-bridge watch-job``: one job's stream (PROTOCOL.md section 4) as a live progress line.

The state is folded from the stream's messages (the ``job_status`` snapshot, then the job's
events) by :class:`JobView`; :func:`render` turns it into one line. Nothing here imports Flask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Exit status of ``watch-job`` by how the job ended (1 and 2 are click's: error, usage).
EXIT_STATUS = {"completed": 0, "failed": 3, "cancelled": 4}
TERMINAL = {"job_completed": "completed", "job_failed": "failed", "job_cancelled": "cancelled"}
BAR_WIDTH = 24


@dataclass
class JobView:
    """What is known of one job, updated message by message."""

    job_id: str
    status: str = "queued"
    progress: float = 0.0
    stage: str | None = None
    message: str | None = None
    counters: dict[str, Any] = field(default_factory=dict)
    position: int | None = None
    estimated_start_seconds: float | None = None
    outcome: str | None = None  # the terminal status, once the job ended
    detail: str | None = None  # the error message of a failure, the reason of a cancel

    def apply(self, message: dict[str, Any]) -> bool:
        """Fold one stream message in; True when it changed what :func:`render` shows."""
        kind = message.get("type")
        if kind == "job_status":
            for name in ("status", "stage", "message", "position", "estimated_start_seconds"):
                setattr(self, name, message.get(name))
            self.progress = float(message.get("progress") or 0.0)
            self.counters = dict(message.get("counters") or {})
        elif kind == "job_queued":
            self.status = "queued"
            self.position = message.get("position")
            self.estimated_start_seconds = message.get("estimated_start_seconds")
        elif kind == "job_started":
            self.status, self.position, self.estimated_start_seconds = "running", None, None
        elif kind == "job_progress":
            self.status = "running"
            self.progress = float(message.get("progress") or 0.0)
            self.stage = message.get("stage")
            self.message = message.get("message")
            self.counters = dict(message.get("counters") or {})
        elif kind in TERMINAL:
            self.outcome = self.status = TERMINAL[kind]
            if kind == "job_completed":
                self.progress = 100.0
            self.detail = message.get("error_message") or message.get("reason")
        else:
            return False
        return True


def render(view: JobView) -> str:
    """One line: bar, percent, status and stage, counters, queue position or outcome."""
    filled = round(BAR_WIDTH * max(0.0, min(view.progress, 100.0)) / 100)
    parts = [
        f"job {view.job_id}",
        "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]",
        f"{view.progress:5.1f}%",
        view.status if not view.stage else f"{view.status}: {view.stage}",
    ]
    if view.status == "queued" and view.position is not None:
        waiting = f"position {view.position}"
        if view.estimated_start_seconds is not None:
            waiting += f", starts in ~{view.estimated_start_seconds:.0f} s"
        parts.append(f"({waiting})")
    if view.counters:
        parts.append(" ".join(f"{k}={v}" for k, v in sorted(view.counters.items())))
    if view.detail:
        parts.append(f"- {view.detail}")
    elif view.message and view.outcome is None:
        parts.append(f"- {view.message}")
    return "  ".join(parts)
