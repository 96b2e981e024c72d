"""One worker class of the capacity test, phase by phase: start the server, warm up, measure it
idle, connect N clients, hold them, broadcast once, close them all, stop the server."""

from __future__ import annotations

import argparse
import time
import uuid
from collections import Counter
from typing import Any

from bench.capacity.clients import LoadGenerator
from bench.capacity.interrupts import no_interrupt
from bench.capacity.server import Server
from bench.httpcalls import connections, http_call
from bench.machine import busy_and_steal
from bench.procs import cpu_seconds, cpu_times, fds_of, free_port, hwm_kib, rss_kib, threads_of
from bench.stats import pct


def measure_health(port: int, count: int, deadline: float, timeout: float) -> dict[str, Any]:
    """``count`` GET /api/system/health, one after the other: latency and errors."""
    times: list[float] = []
    errors: Counter[str] = Counter()
    attempted = 0
    for _ in range(count):
        if time.monotonic() >= deadline:
            break
        attempted += 1
        status, body, elapsed, err = http_call(
            port,
            "GET",
            "/api/system/health",
            timeout=min(timeout, max(0.5, deadline - time.monotonic())),
        )
        if status == 200:
            times.append(elapsed)
        else:
            errors[err or f"HTTP {status}"] += 1
    return {
        "count": count,
        "attempted": attempted,
        "ok": len(times),
        "errors": dict(errors),
        "p50": pct(times, 50),
        "p99": pct(times, 99),
        "max": max(times) if times else None,
    }


def run_class(
    worker_class: str, args: argparse.Namespace, class_deadline: float, workdir: str
) -> dict[str, Any]:
    """The figures of one worker class; ``problems`` lists what failed (empty: PASS)."""
    return ClassRun(worker_class, args, class_deadline, workdir).run()


class ClassRun:
    """The state of one :func:`run_class`; its phases are methods, in the order they run."""

    def __init__(
        self, worker_class: str, args: argparse.Namespace, class_deadline: float, workdir: str
    ):
        self.args, self.deadline, self.n = args, class_deadline, args.connections
        self.r: dict[str, Any] = {"worker_class": worker_class, "n": self.n, "problems": []}
        self.problems: list[str] = self.r["problems"]
        # Load that is not ours: machine CPU use over one second before the server starts.
        sample = cpu_times()
        time.sleep(1.0)
        self.r["cpu_background"] = busy_and_steal(sample)
        self.port = free_port()
        self.server = Server(worker_class, self.port, self.n, workdir)
        self.load: LoadGenerator | None = None
        self.budget = class_deadline - time.monotonic()
        self.worker = 0

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self) -> dict[str, Any]:
        try:
            self.server.start()
            worker, err = self.server.wait_ready(
                time.monotonic() + min(30.0, max(1.0, self.left()))
            )
            if worker is None:
                self.problems.append(f"server did not start: {err}")
                return self.r
            self.r["worker_pid"] = self.worker = worker
            self.warm_up()
            self.idle()
            self.connect()
            self.hold()
            self.broadcast()
            self.after_broadcast()
            self.release()
            return self.r
        finally:
            with no_interrupt():
                self.finish()

    def warm_up(self) -> None:
        """Imports, the first WebSocket, the first broadcast: so the baseline is comparable."""
        warm = LoadGenerator(self.port, 1, 1, 10.0, "warmup")
        warm.start(time.monotonic() + min(10.0, max(1.0, self.left())))
        while warm.settled < 1 and time.monotonic() < warm.connect_deadline:
            time.sleep(0.01)
        http_call(
            self.port,
            "POST",
            "/api/websocket/broadcast",
            {
                "type": "job_progress",
                "channel": "jobs",
                "data": {"job_id": "warmup", "progress": 1},
            },
        )
        warm.stop()
        warm.close_all()
        if warm.opened != 1:
            self.problems.append(f"warm-up WebSocket failed: {dict(warm.failures)}")
        drain_until = time.monotonic() + min(5.0, max(0.5, self.left()))
        while time.monotonic() < drain_until and connections(self.port, timeout=2) != 0:
            time.sleep(0.05)
        time.sleep(0.5)

    def idle(self) -> None:
        r, worker = self.r, self.worker
        r["rss_before"] = rss_kib(worker)
        r["threads_before"] = threads_of(worker)
        r["fds_before"] = fds_of(worker)
        r["health_idle"] = measure_health(
            self.port,
            self.args.health_requests,
            time.monotonic() + min(30.0, max(1.0, self.left())),
            self.args.http_timeout,
        )

    def connect(self) -> None:
        """Open the N connections, in at most 60 % of what is left for this class."""
        r, n = self.r, self.n
        self.marker = "cap-" + uuid.uuid4().hex[:12]
        load = self.load = LoadGenerator(
            self.port, n, self.args.window, self.args.connect_timeout, self.marker
        )
        cpu0 = cpu_seconds(self.worker)
        machine0 = cpu_times()
        t0 = time.monotonic()
        load.start(t0 + max(1.0, 0.6 * self.left()))
        while load.settled < n and time.monotonic() < load.connect_deadline + 1.0:
            if load.loop_error is not None:
                break
            time.sleep(0.02)
        cpu1 = cpu_seconds(self.worker)
        r["cpu_machine_connect"] = busy_and_steal(machine0)
        r["connect_wall"] = (load.t_last_open or time.monotonic()) - (load.t_first or t0)
        r["opened"] = load.opened
        r["connect_failures"] = dict(load.failures)
        if load.started < n:
            r["connect_failures"]["not attempted before the deadline"] = n - load.started
        r["connect_rate"] = load.opened / r["connect_wall"] if r["connect_wall"] > 0 else None
        lat = [c.t_open - c.t_start for c in load.conns if c.t_open is not None]
        r["handshake_p50"] = pct(lat, 50)
        r["handshake_p99"] = pct(lat, 99)
        r["connect_cpu"] = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
        if load.loop_error is not None:
            self.problems.append(f"load generator crashed: {load.loop_error!r}")
        if load.opened < n:
            self.problems.append(
                f"only {load.opened}/{n} connections opened: {r['connect_failures']}"
            )

    def hold(self) -> None:
        """Let the server settle, then read its process state and ask it over HTTP."""
        r, n, worker, args = self.r, self.n, self.worker, self.args
        time.sleep(min(args.settle, max(0.0, self.left() - 5)))
        r["rss_held"] = rss_kib(worker)
        r["threads_held"] = threads_of(worker)
        r["fds_held"] = fds_of(worker)
        if r.get("rss_before") and r.get("rss_held") and self.load.open_now:
            r["rss_per_conn"] = (r["rss_held"] - r["rss_before"]) / self.load.open_now
        status, body, elapsed, err = http_call(
            self.port, "GET", "/api/system/status", timeout=args.http_timeout
        )
        r["status_total"] = body["connections"]["total"] if status == 200 and body else None
        r["status_latency"] = elapsed if status == 200 else None
        if status != 200:
            self.problems.append(f"/api/system/status failed: {err or status}")
        elif r["status_total"] != n:
            self.problems.append(
                f"/api/system/status connections.total={r['status_total']}, expected {n}"
            )
        r["health_held"] = measure_health(
            self.port,
            args.health_requests,
            time.monotonic() + max(1.0, min(60.0, self.left() - 10)),
            args.http_timeout,
        )
        h = r["health_held"]
        if h["ok"] < h["count"]:
            self.problems.append(
                f"/health with {n} open: {h['ok']}/{h['count']} answered "
                f"({h['errors'] or 'deadline'})"
            )

    def broadcast(self) -> None:
        """One broadcast to every subscriber: until every client has it."""
        r, n, load = self.r, self.n, self.load
        load.reset_events()
        expected = load.open_now
        t_post = time.monotonic()
        status, body, elapsed, err = http_call(
            self.port,
            "POST",
            "/api/websocket/broadcast",
            {
                "type": "job_progress",
                "channel": "jobs",
                "data": {"job_id": self.marker, "progress": 50},
            },
            timeout=self.args.http_timeout,
        )
        r["broadcast_post"] = elapsed
        r["broadcast_recipients"] = body.get("recipients") if status == 202 and body else None
        if status != 202:
            self.problems.append(f"broadcast POST failed: {err or status} {body}")
        wait_until = time.monotonic() + max(1.0, min(self.args.broadcast_timeout, self.left() - 3))
        while load.event_count < expected and time.monotonic() < wait_until:
            time.sleep(0.002)
        got = [c.t_event - t_post for c in load.conns if c.t_event is not None]
        r["broadcast_all"] = max(got) if got and load.event_count >= expected else None
        r["broadcast_p50"] = pct(got, 50)
        r["broadcast_last"] = max(got) if got else None
        r["broadcast_missing"] = expected - load.event_count
        if r["broadcast_missing"]:
            self.problems.append(f"broadcast missed {r['broadcast_missing']}/{expected} clients")
        if r["broadcast_recipients"] is not None and r["broadcast_recipients"] != n:
            self.problems.append(f"broadcast recipients={r['broadcast_recipients']}, expected {n}")

    def after_broadcast(self) -> None:
        r, worker, load = self.r, self.worker, self.load
        r["rss_after_broadcast"] = rss_kib(worker)
        r["lost_after_open"] = dict(load.lost_after_open)
        if load.lost_after_open:
            self.problems.append(f"server dropped open connections: {dict(load.lost_after_open)}")
        r["pings_answered"] = load.pings
        if self.server.worker() != worker:
            self.problems.append(
                f"worker {worker} is gone (now {self.server.worker()}): restarted or crashed"
            )

    def release(self) -> None:
        """Close every client at once, then wait for the server to count zero."""
        r, worker, args = self.r, self.worker, self.args
        self.load.stop()
        cpu_close = cpu_seconds(worker)
        self.load.close_all()
        t_close = time.monotonic()
        drain_until = t_close + max(1.0, min(args.drain_timeout, self.left()))
        last_total = self.drain(t_close, drain_until)
        cpu_drained = cpu_seconds(worker)
        r["drain_cpu"] = (cpu_drained - cpu_close) if None not in (cpu_close, cpu_drained) else None
        r["drain_worker_replaced"] = self.server.worker() != worker
        if r["drain_worker_replaced"]:
            self.problems.append(
                f"worker {worker} died after the clients closed (now "
                f"{self.server.worker()}): its count of 0 is a new worker's"
            )
        if r["drain"] is None:
            seen = (
                "no /api/system/status answer" if last_total is None else f"last count {last_total}"
            )
            self.problems.append(
                f"server did not count 0 connections within "
                f"{drain_until - t_close:.0f} s of the clients closing ({seen})"
            )
        polls, failed_polls, _ = r["drain_polls"]
        if failed_polls:
            self.problems.append(
                f"HTTP stopped answering after the clients closed: {failed_polls}/"
                f"{polls} /api/system/status polls failed "
                f"({args.http_timeout:g} s timeout)"
            )
        time.sleep(0.5)
        r["rss_after_close"] = rss_kib(worker)
        r["threads_after_close"] = threads_of(worker)
        r["rss_hwm"] = hwm_kib(worker)

    def drain(self, t_close: float, drain_until: float) -> int | None:
        """Poll the connection count until 0 (``drain``: seconds after the close, or None);
        return the last count seen."""
        r = self.r
        r["drain"] = None
        last_total = None
        polls = failed_polls = 0
        slowest = 0.0
        while time.monotonic() < drain_until:
            polls += 1
            status, body, elapsed, _ = http_call(
                self.port,
                "GET",
                "/api/system/status",
                timeout=max(0.2, min(self.args.http_timeout, drain_until - time.monotonic())),
            )
            slowest = max(slowest, elapsed)
            if status == 200 and isinstance(body, dict):
                last_total = body["connections"]["total"]
                if last_total == 0:
                    r["drain"] = time.monotonic() - t_close
                    break
            else:
                failed_polls += 1
            time.sleep(0.05)
        r["drain_polls"] = (polls, failed_polls, slowest)
        return last_total

    def finish(self) -> None:
        """Stop the clients and the server; what the server's log says."""
        r = self.r
        if self.load is not None:
            self.load.stop()
            self.load.close_all()
        r["shutdown"] = self.server.stop()
        log_problems, boots = self.server.log_problems()
        r["log_problems"] = log_problems
        r["worker_boots"] = boots
        r["graceful_exit"] = self.server.graceful_exit
        if log_problems:
            self.problems.append(f"{len(log_problems)} error line(s) in the server log")
        if boots > 1:
            self.problems.append(f"{boots} workers booted (a worker died or was restarted)")
        r["log_path"] = self.server.log_path
        r["budget"] = self.budget
