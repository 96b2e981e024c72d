"""``local-bridge demo``: a whole photo workflow driven over REST against a running server, so
that whoever watches ``local-bridge listen`` or the dashboard sees every event type of the
catalog (PROTOCOL.md section 3) within a minute.

It uses only the SDK (:class:`RestClient`, :class:`Worker`), as any client program would: a
session, photos imported from several sources, analysis, a selection, jobs queued and run by a
simulated worker (progress with stages and counters, queue positions moving, a priority
change, a failure, a cancel), an approval round, exports, system events, and the session
completed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .client.rest import RestClient
from .client.worker import JobContext, JobFailed, Worker

DEFAULT_PACE = 0.6  # seconds between steps: about 30 s in all, watchable as it happens
JOB_KIND = "demo.render"  # the demo's own kind: its worker claims no other program's jobs
WORKER_NAME = "demo-worker"

PHOTOS = [  # file name, source (PROTOCOL.md photo_imported sources)
    ("IMG_1001.jpg", "web"),
    ("IMG_1002.jpg", "android_app"),
    ("IMG_1003.dng", "lightroom"),
    ("IMG_1004.jpg", "gui"),
    ("IMG_1005.jpg", "browser_addon"),
]

Say = Callable[[str], None]


@dataclass
class Demo:
    """One run of the demo against ``rest``; ``say`` prints one line per step."""

    rest: RestClient
    say: Say
    pace: float = DEFAULT_PACE
    session: dict[str, Any] = field(default_factory=dict)
    photos: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    #: what to do at a given progress tick of the running job (the cancel, the failure)
    _plan: dict[str, str] = field(default_factory=dict)

    def run(self) -> dict[str, Any]:
        """Drive the workflow; the session as it ended."""
        status = self.rest.status()
        self.line(
            f"local_bridge {status['version']} at {self.rest.base_url}: seq {status['seq']}, "
            f"{status['connections']['total']} connected client(s)"
        )
        self.system_event("system_status", status="demo_started", details={"pace": self.pace})
        self.import_photos()
        self.analyze_and_select()
        jobs = self.queue_jobs()
        self.run_jobs(jobs)
        self.approval_round()
        self.exports()
        self.system_event(
            "resource_warning",
            resource_type="disk",
            current_value=91.5,
            threshold=90,
            message="export volume 91.5% full",
        )
        self.system_event(
            "error_occurred",
            error_type="export_volume",
            error_message="could not write a sidecar file",
            error_details={"path": "/exports/IMG_1005.xmp"},
            photo_id=self.photos[-1]["id"],
        )
        session = self.rest.update_session(self.session["id"], status="completed")
        self.line(
            f"session {session['id']} completed: {session['total_photos']} photos, "
            f"{session['approved_photos']} approved"
        )
        self.system_event("system_status", status="demo_finished", details=None)
        return session

    # ------------------------------------------------------------------ steps

    def line(self, text: str) -> None:
        """Print a step, then give the watcher time to see its events."""
        self.step += 1
        self.say(f"[{self.step:2}] {text}")
        time.sleep(self.pace)

    def system_event(self, type_: str, **fields: Any) -> None:
        answer = self.rest.system_event(type_, **fields)  # a 403 without an admin token
        detail = fields.get("status") or fields.get("message") or fields.get("error_message")
        self.line(f"{type_}: {detail} (seq {answer['seq']})")

    def import_photos(self) -> None:
        self.session = self.rest.create_session(
            f"Demo {time.strftime('%Y-%m-%d %H:%M:%S')}", "/photos/demo"
        )
        self.line(f"session {self.session['id']} created: {self.session['name']}")
        for file_name, source in PHOTOS:
            photo = self.rest.import_photo(
                self.session["id"], file_name, f"/photos/demo/{file_name}", source
            )
            self.photos.append(photo)
            self.line(f"photo {photo['id']} imported from {source}: {file_name}")

    def analyze_and_select(self) -> None:
        for i, photo in enumerate(self.photos):
            score = round(0.95 - 0.15 * i, 2)
            self.rest.record_analysis(
                photo["id"], score, {"sharpness": score, "faces": i % 3, "exposure": "ok"}
            )
            self.line(f"photo {photo['id']} analyzed: score {score}, awaiting approval")
        first = self.photos[0]
        self.rest.record_selection(first["id"], "portrait", "Warm Portrait")
        self.line(f"photo {first['id']} selected: preset Warm Portrait (portrait)")

    def queue_jobs(self) -> list[dict[str, Any]]:
        """Three jobs; a fourth of higher priority moves ahead of them, then a priority change
        moves the last one up: each move is a job_queued on that job's sub-channel."""
        jobs = []
        for photo, task in zip(self.photos[:3], ("enhance", "retouch", "upscale"), strict=True):
            job = self.rest.create_job(
                JOB_KIND, photo_id=photo["id"], priority=40, params={"task": task}
            )
            jobs.append(job)
            self.line(f"job {job['id']} queued ({task}, priority 40): position {job['position']}")
        urgent = self.rest.create_job(
            JOB_KIND, photo_id=self.photos[3]["id"], priority=80, params={"task": "preview"}
        )
        self.line(
            f"job {urgent['id']} queued (preview, priority 80): position {urgent['position']}, "
            "the others move back"
        )
        last = jobs[-1]
        moved = self.rest.set_priority(last["id"], 60, "the client is waiting")
        self.line(f"job {last['id']} priority 40 -> 60: now position {moved['position']}")
        # claim order: preview (80), upscale (60), enhance, retouch
        self._plan = {jobs[0]["id"]: "fail", jobs[1]["id"]: "cancel"}
        return [urgent, last, jobs[0], jobs[1]]

    def run_jobs(self, jobs: list[dict[str, Any]]) -> None:
        worker = Worker(self.rest, WORKER_NAME, kinds=[JOB_KIND])
        waiting = {job["id"] for job in jobs}
        # Jobs an interrupted earlier run left queued come first: they are run too.
        while waiting:
            job = worker.claim()
            if job is None:  # another demo's worker took the rest
                break
            waiting.discard(job["id"])
            task = (job.get("params") or {}).get("task", "render")
            self.line(f"job {job['id']} claimed by {WORKER_NAME} ({task})")
            worker.process(job, self._handler)
            ended = self.rest.get_job(job["id"])
            self.line(f"job {job['id']} {ended['status']}{_outcome(ended)}")

    def _handler(self, job: JobContext) -> dict[str, Any]:
        """The simulated work: stages with counters; one job fails, one is cancelled."""
        plan = self._plan.get(job.id)
        tick = self.pace / 3
        stages = [("loading", 20), ("analyzing", 55), ("rendering", 85), ("saving", 100)]
        files = 0
        for stage, percent in stages:
            files += 3
            job.progress(
                percent,
                stage=stage,
                message=f"{stage} {files} files",
                counters={"files_processed": files, "issues_found": files // 4},
            )
            self.say(f"     {job.id}: {percent:3}% {stage} ({files} files)")
            time.sleep(tick)
            if plan == "fail" and stage == "analyzing":
                raise JobFailed(
                    "out of memory while rendering",
                    details={"needed_mb": 2048, "free_mb": 512},
                    retryable=True,
                )
            if plan == "cancel" and stage == "analyzing":
                self.rest.cancel_job(job.id, "cancelled from the demo")
                self.say(f"     {job.id}: cancel requested")
        return {"files_processed": files, "output": f"/renders/{job.id}.jpg"}

    def approval_round(self) -> None:
        pending = self.rest.approval_queue(self.session["id"])["items"]
        self.line(f"approval queue: {len(pending)} photo(s) awaiting a decision")
        for i, photo in enumerate(pending):
            if i < 3:
                self.rest.approve(photo["id"])
                self.line(f"photo {photo['id']} approved")
            else:
                self.rest.reject(photo["id"], "out of focus")
                self.line(f"photo {photo['id']} rejected: out of focus")

    def exports(self) -> None:
        good, bad = self.photos[0], self.photos[1]
        export = self.rest.create_export(good["id"], "Warm Portrait", "/exports/web")
        self.line(f"export {export['id']} started: photo {good['id']} -> /exports/web")
        done = self.rest.complete_export(export["id"], f"/exports/web/{good['file_name']}", 2481152)
        self.line(f"export {done['id']} completed: {done['output_path']} ({done['file_size']} B)")
        failing = self.rest.create_export(bad["id"], "Print 300dpi", "/exports/print")
        self.line(f"export {failing['id']} started: photo {bad['id']} -> /exports/print")
        failed = self.rest.fail_export(failing["id"], "destination is read-only")
        self.line(f"export {failed['id']} failed: {failed['error_message']}")


def _outcome(job: dict[str, Any]) -> str:
    """What ended a job, for its line."""
    if job["status"] == "completed":
        return f": {json.dumps(job['result'])}"
    if job["status"] == "failed":
        again = ", retryable" if job["retryable"] else ""
        return f": {job['error_message']} (at {job['stage']}{again})"
    return ""


def run(rest: RestClient, say: Say, pace: float = DEFAULT_PACE) -> dict[str, Any]:
    """Run the demo against ``rest``, printing each step with ``say``; the completed session."""
    return Demo(rest, say, pace).run()


__all__ = ["DEFAULT_PACE", "Demo", "run"]
