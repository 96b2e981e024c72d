"""One measurement: a server (two for ``-x2`` targets) with N subscribers spread over it.

Start the server; open N subscribers (``python -m bench.loadgen clients``, one epoll loop per
process); read the server's RSS before and after; publish at a fixed rate for a few seconds
(latency); publish as fast as ``--publishers`` keep-alive HTTP connections allow for
``--duration`` seconds (saturation: deliveries counted at the clients, CPU from /proc); wait for
the stragglers; in the main matrix (``phases``), saturate again with each further publisher
count, then publish a ``--burst`` from one connection and time it until the last subscriber has
the last event; stop everything.

Two lighter kinds (``mode``): ``publish`` (the publish path: no subscriber, one keep-alive
connection publishing as fast as answers come, then batches for local_bridge) and ``idle`` (N
idle subscribers: the RSS they cost, nothing published).
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from bench import cgroups, pyspy
from bench.control import DEADLINE, STOP, Deadline, check_deadline, log
from bench.drivers import Followers, Loadgen, run_publisher
from bench.httpcalls import connections, http_call
from bench.machine import busy_share
from bench.procs import cpu_split, cpu_times, rss_kib, threads_of
from bench.redisdb import forget_redis_keys
from bench.servers import REDIS_TARGETS, Server
from bench.stats import merge_counts, ms, pct


def server_cpu_split(
    servers: list[Server], before: tuple[float, float] | None = None
) -> tuple[float, float]:
    """(user, system) CPU seconds of the servers' processes (minus ``before``)."""
    user = system = 0.0
    for pid in (pid for server in servers for pid in server.pids()):
        u, s = cpu_split(pid)
        user += u
        system += s
    if before:
        return round(user - before[0], 2), round(system - before[1], 2)
    return user, system


def measure(
    target: str,
    n: int,
    opts,
    workdir: Path,
    stall: bool = False,
    max_queue: int | None = None,
    followers: str | None = None,
    cpu_cap: float | None = None,
    phases: bool = False,
    mode: str = "full",
) -> dict:
    """One measurement's figures (with ``error`` when it failed). ``stall``: one client stops
    reading (the slow-client scenario); ``followers``: a ``followers`` process of that kind runs
    through both phases (the Redis scenario); ``cpu_cap``: each server process capped at that
    many cores (its share of the quota used is recorded); ``phases``: the further publisher
    counts and the burst (the main matrix); ``mode``: ``full``, ``publish`` or ``idle``."""
    return Measurement(
        target, n, opts, workdir, stall, max_queue, followers, cpu_cap, phases, mode
    ).run()


class Measurement:
    """The state of one :func:`measure`; its phases are methods, in the order they run."""

    def __init__(
        self,
        target: str,
        n: int,
        opts,
        workdir: Path,
        stall: bool,
        max_queue: int | None,
        followers: str | None,
        cpu_cap: float | None,
        phases: bool = False,
        mode: str = "full",
    ):
        self.target, self.n, self.opts, self.workdir = target, n, opts, workdir
        self.stall, self.followers, self.cpu_cap = stall, followers, cpu_cap
        self.r: dict[str, Any] = {"target": target, "n": n, "stall": stall, "t": time.time()}
        if cpu_cap:
            self.r["server_cpu"] = cpu_cap
        if followers:
            self.r["followers"] = followers
        self.slow = max_queue is not None  # the slow-client scenario (both of its runs)
        self.redis_url = opts.redis_url if target in REDIS_TARGETS else None
        self.prefix = f"bench-{os.getpid()}-{int(time.time() * 1000)}:" if self.redis_url else None
        heartbeat = opts.slow_heartbeat if self.slow and opts.slow_heartbeat else None
        self.servers = [
            Server(
                target,
                n,
                workdir,
                max_queue=max_queue,
                heartbeat=heartbeat,
                redis_url=self.redis_url,
                redis_prefix=self.prefix,
                index=i,
                cpu_cap=cpu_cap,
            )
            for i in range(2 if target.endswith("-x2") else 1)
        ]
        self.pad = opts.slow_pad if self.slow else 0
        self.lgs: list[Loadgen] = []
        self.fol: Followers | None = None
        self.procs = max(opts.loadgen_procs or (1 if n <= 1000 else 2), len(self.servers))
        self.lg_deadline = max(60.0, DEADLINE["t"] - time.monotonic() + 30)
        self.exclude = {0: [0]} if stall else None  # the stalled client's figures are its own
        self.ports = ""
        self.workers: list[int | None] = []
        self.phases, self.mode = phases, mode

    def run(self) -> dict:
        r = self.r
        try:
            self.start_servers()
            if self.mode == "publish":
                self.publish_path()
                r["server_problems"] = self.server_problems()
                return r
            self.connect()
            if self.mode == "idle":
                r["server_problems"] = self.server_problems()
                return r
            if self.followers:
                self.fol = Followers(self.servers, self.followers, self.opts, self.lg_deadline)
            self.latency_phase()
            self.saturation_phase(self.opts.publishers, r)
            if self.phases:
                self.more_phases()
            if self.stall:
                r["stalled"] = stalled_client_fate(self.lgs[0], self.servers[0])
                r["stalled"]["dropped_after_s"] = self.watcher.dropped_after
            if self.fol:
                r["followers_result"] = self.fol.finish()
            r["server_problems"] = self.server_problems()
            return r
        except Deadline:
            raise
        except Exception as exc:  # one failed measurement must not lose the others
            log(f"{self.target} N={self.n}: FAILED: {exc!r}")
            r["error"] = repr(exc)
            r["server_problems"] = self.server_problems()
            return r
        finally:
            self.stop_everything()

    def server_problems(self) -> list[str]:
        return [line for s in self.servers for line in s.problems()]

    def stop_everything(self) -> None:
        if self.fol:
            self.fol.close()
        for lg in self.lgs:
            lg.close()
        for s in self.servers:
            s.stop()
        if self.prefix:
            forget_redis_keys(self.redis_url, self.prefix)

    # ------------------------------------------------------------------ start and connect

    def start_servers(self) -> None:
        """Start the servers, warm up the publish path (no subscriber yet), settle."""
        for s in self.servers:
            s.start()
        self.ports = ",".join(str(s.http_port) for s in self.servers)  # known once started
        self.workers = [s.worker_pid() for s in self.servers]
        for s in self.servers:
            for _ in range(3):
                http_call(
                    s.http_port,
                    "POST",
                    "/api/websocket/broadcast",
                    {"type": "bench.event", "channel": "jobs", "data": {"t": time.time()}},
                )
        time.sleep(0.5)

    def worker_rss(self) -> int:
        return sum(rss_kib(w) or 0 for w in self.workers)

    def connect(self) -> None:
        """Open the N subscribers (client process i talks to server i mod their number); their
        setup times, the worker's RSS before and after, and its threads."""
        opts, n, r = self.opts, self.n, self.r
        rss0 = self.worker_rss()
        threads0 = threads_of(self.workers[0])
        self.lgs = [
            Loadgen(self.servers[i % len(self.servers)], i, self.lg_deadline)
            for i in range(self.procs)
        ]
        shares = [n // self.procs + (1 if i < n % self.procs else 0) for i in range(self.procs)]
        sample = max(1, opts.samplers // self.procs)
        t0 = time.monotonic()
        for lg, share in zip(self.lgs, shares):
            lg.send(
                {
                    "cmd": "connect",
                    "n": share,
                    "concurrency": opts.concurrency,
                    "timeout": opts.connect_timeout,
                    "sample": sample,
                    "small_rcvbuf": [0] if (self.stall and lg.index == 0) else [],
                }
            )
        replies = [lg.reader.read(opts.connect_timeout + 30) for lg in self.lgs]
        r["connect_s"] = time.monotonic() - t0
        ready = sum(x["ok"] for x in replies)
        setup = sorted(v for x in replies for v in x["setup"])
        r.update(
            ready=ready,
            connect_failures=merge_counts([x["failures"] for x in replies]),
            setup_p50_ms=ms(pct(setup, 50)),
            setup_p99_ms=ms(pct(setup, 99)),
            connect_rate=ready / r["connect_s"] if r["connect_s"] else None,
        )
        time.sleep(opts.settle)
        rss1 = self.worker_rss()
        r.update(
            rss_before_kib=rss0,
            rss_after_kib=rss1,
            rss_per_conn_kib=(rss1 - rss0) / ready if ready else None,
            threads_before=threads0,
            threads_after=threads_of(self.workers[0]),
        )
        if ready < n:
            log(f"{self.target} N={n}: only {ready} of {n} connected: {r['connect_failures']}")
        if self.stall:
            self.lgs[0].call({"cmd": "stall", "index": 0})
        self.others = ready - (1 if self.stall else 0)  # the clients that read

    # ------------------------------------------------------------------ the two phases

    def gather(self, latencies: bool = False) -> list[dict]:
        """Every client process's counters (and latency samples)."""
        for lg in self.lgs:
            lg.send(
                {
                    "cmd": "stats",
                    "latencies": latencies,
                    "exclude": (self.exclude or {}).get(lg.index, []),
                }
            )
        return [lg.reader.read(30) for lg in self.lgs]

    def drain(self, expected: int, quiet: float, limit: float) -> list[dict]:
        """Wait until the clients received ``expected`` events, or nothing came for ``quiet``
        seconds, or ``limit`` seconds passed; return the last stats."""
        end = time.monotonic() + limit
        last_total, last_change = -1, time.monotonic()
        while True:
            stats = self.gather()
            total = sum(s["received"] for s in stats)
            now = time.monotonic()
            if total != last_total:
                last_total, last_change = total, now
            if total >= expected or now - last_change >= quiet or now >= end:
                return stats
            time.sleep(0.2)

    def reset_clients(self, decode_every: int) -> None:
        check_deadline()
        for lg in self.lgs:
            lg.call({"cmd": "reset", "decode_every": decode_every})

    def received(self) -> tuple[int, list[float]]:
        """Events received by the clients since the reset, and the latency samples."""
        stats = self.gather(latencies=True)
        return sum(s["received"] for s in stats), [x for s in stats for x in s["latencies"]]

    def latency_phase(self) -> None:
        """Publish at ``--rate`` on one connection; publish → receive latency."""
        opts = self.opts
        self.reset_clients(1)
        pub = run_publisher(
            self.ports,
            1,
            opts.latency_duration,
            opts.rate,
            opts.latency_duration + 30,
            pad=self.pad,
        )
        expected = pub["ok"] * self.others
        self.drain(expected, quiet=1.5, limit=10)
        received, lat = self.received()
        self.r.update(
            lat_events=pub["ok"],
            lat_rate=pub["rate"],
            lat_expected=expected,
            lat_received=received,
            lat_missing=expected - received,
            p50_ms=ms(pct(lat, 50)),
            p99_ms=ms(pct(lat, 99)),
            lat_max_ms=ms(max(lat) if lat else None),
            lat_samples=len(lat),
            lat_errors=pub["errors"],
        )

    def saturation_phase(self, publishers: int, out: dict[str, Any]) -> None:
        """Publish as fast as ``publishers`` connections allow; deliveries/s and CPU over the
        publishing window, then what arrived once the stragglers are in (into ``out``)."""
        opts = self.opts
        self.out = out
        self.reset_clients(opts.sat_decode_every)
        self.window: dict[str, Any] = {}
        duration = opts.slow_duration if self.slow else opts.duration
        self.watcher = (
            StallWatcher(self.servers[0], self.r["ready"], self.lgs[0]) if self.stall else None
        )
        try:
            pub = run_publisher(
                self.ports,
                publishers,
                duration,
                0,
                duration + 60,
                pad=self.pad,
                on_started=self.window_opens,
            )
        finally:
            if self.watcher:
                self.watcher.stop()
        self.window_closes()
        expected = pub["ok"] * self.others
        stats = self.drain(expected, quiet=opts.drain_quiet, limit=opts.drain_limit)
        drained_at = time.monotonic()
        received, lat = self.received()
        out.update(self.publisher_figures(pub))
        out.update(
            sat_expected=expected,
            sat_received=received,
            sat_missing=expected - received,
            sat_p50_ms=ms(pct(lat, 50)),
            sat_p99_ms=ms(pct(lat, 99)),
            sat_min_per_client=min(s["min"] for s in stats),
            sat_max_per_client=max(s["max"] for s in stats),
            closes=merge_counts([s["closes"] for s in stats]),
            ready_after=sum(s["ready"] for s in stats),
            drain_s=drained_at - self.window["t_end"],
        )
        if out.get("worker_restarted"):  # a worker was replaced: its CPU is meaningless
            out.update(
                cpu_server_s=None, cpu_server_split=None, cpu_per_server_s=None, quota_use=None
            )

    def window_opens(self) -> None:
        """The publisher is connected: the counters at the start of the saturation window."""
        w, servers = self.window, self.servers
        w["s0"] = self.gather()
        w["c0"] = (sum(s.cpu() for s in servers), sum(lg.cpu() for lg in self.lgs))
        w["c0_split"] = server_cpu_split(servers)
        w["c0_each"] = [s.cpu() for s in servers]
        w["thr0"] = [cgroups.cgroup_throttling(s.cgroup) for s in servers]
        w["t0"] = time.monotonic()
        w["m0"] = cpu_times()  # the whole machine: Redis and foreign load included
        w["f0"] = self.fol.cpu() if self.fol else 0.0
        if self.opts.profile and self.out is self.r:  # the first saturation phase only
            w["spy"] = pyspy.start(
                self.workers[0], self.opts.duration, self.workdir / f"{self.target}-{self.n}.spy"
            )
        if self.watcher:
            self.watcher.start()

    def window_closes(self) -> None:
        """The publisher is done: CPU and deliveries/s over the window."""
        w, r, servers = self.window, self.out, self.servers
        s1 = self.gather()
        c1 = (sum(s.cpu() for s in servers), sum(lg.cpu() for lg in self.lgs))
        r["cpu_per_server_s"] = [round(s.cpu() - c0, 2) for s, c0 in zip(servers, w["c0_each"])]
        r["cpu_window_s"] = time.monotonic() - w["t0"]
        r["machine_busy"] = round(busy_share(w["m0"], cpu_times()), 3)
        if self.cpu_cap:
            r.update(
                cgroups.capped_use(
                    self.cpu_cap,
                    r["cpu_per_server_s"],
                    r["cpu_window_s"],
                    w["thr0"],
                    [cgroups.cgroup_throttling(s.cgroup) for s in servers],
                )
            )
        if self.fol:
            r["cpu_followers_s"] = self.fol.cpu() - w["f0"]
        w["t_end"] = time.monotonic()
        if [s.worker_pid() for s in servers] != self.workers:
            r["worker_restarted"] = True
        r["cpu_clients_user_s"] = sum(b["cpu_user"] - a["cpu_user"] for a, b in zip(w["s0"], s1))
        r["cpu_clients_sys_s"] = sum(b["cpu_sys"] - a["cpu_sys"] for a, b in zip(w["s0"], s1))
        r["cpu_server_split"] = server_cpu_split(servers, w["c0_split"])
        if w.get("spy"):
            r["profile"] = pyspy.finish(*w["spy"])
        r["deliveries_per_s"] = sum(
            (
                (b["received"] - a["received"]) / (b["t"] - a["t"])
                for a, b in zip(w["s0"], s1)
                if b["t"] > a["t"]
            ),
            0.0,
        )
        r["cpu_server_s"] = c1[0] - w["c0"][0]
        r["cpu_clients_s"] = c1[1] - w["c0"][1]

    def publisher_figures(self, pub: dict) -> dict:
        return dict(
            sat_events=pub["ok"],
            worker_pid=self.workers[0],
            sat_publish_rate=pub["rate"],
            sat_errors=pub["errors"],
            sat_throttled=pub.get("throttled"),
            sat_reconnects=pub["reconnects"],
            sat_recipients=pub["recipients"],
            sat_http_p50_ms=pub["http_p50_ms"],
            sat_http_p99_ms=pub["http_p99_ms"],
            cpu_publisher_s=pub.get("cpu_s"),
            sat_window_s=pub["elapsed"],
        )

    # ------------------------------------------------------------------ the main matrix's extras

    def more_phases(self) -> None:
        """The further publisher counts, each a saturation phase of its own, then the burst;
        each count's figures also under ``pub<k>_`` keys. Skipped once the server collapsed
        (they would only wait for the drain's limits)."""
        opts, r = self.opts, self.r
        r.update(phase_figures(opts.publishers, r))
        last = r
        for k in opts.publisher_counts[1:]:
            if self.collapsed(last):
                return
            last = {}
            self.saturation_phase(k, last)
            r.update(phase_figures(k, last))
            if last.get("worker_restarted"):
                r["worker_restarted"] = True
        if opts.burst and not self.collapsed(last):
            self.burst_phase()

    def collapsed(self, r: dict) -> bool:
        """Clients lost, or next to nothing delivered: the report's *collapsed*."""
        return (r.get("ready_after") or 0) < 0.99 * self.n or (
            r.get("deliveries_per_s") or 0
        ) < 0.01 * self.n

    def burst_phase(self) -> None:
        """``--burst`` events back to back on one connection, each POST waiting for its answer;
        from the first POST until the last subscriber has the last event (``t_last`` of the
        client processes: the same monotonic clock as the publisher's ``t0``)."""
        opts = self.opts
        self.reset_clients(0)
        pub = run_publisher(
            self.ports, 1, opts.burst_limit, 0, opts.burst_limit + 30, count=opts.burst
        )
        expected = pub["ok"] * self.others
        stats = self.drain(expected, quiet=opts.drain_quiet, limit=opts.burst_limit)
        received = sum(s["received"] for s in stats)
        last = max((s.get("t_last") or 0.0) for s in stats)
        seconds = last - pub["t0"] if last > pub["t0"] else None
        self.r.update(
            burst_events=pub["ok"],
            burst_errors=pub["errors"],
            burst_throttled=pub.get("throttled"),
            burst_publish_s=pub["elapsed"],
            burst_http_p99_ms=pub["http_p99_ms"],
            burst_expected=expected,
            burst_received=received,
            burst_missing=expected - received,
            burst_s=seconds,
            burst_deliveries_per_s=received / seconds if seconds else None,
        )

    def publish_path(self) -> None:
        """No subscriber: one keep-alive connection publishing as fast as answers come, for
        ``--publish-duration`` s; then, for local_bridge, as long of ``POST /api/events/batch``
        with ``--batch-size`` events per request. Server CPU over each window."""
        opts, r = self.opts, self.r
        d = opts.publish_duration
        cpu0 = sum(s.cpu() for s in self.servers)
        pub = run_publisher(self.ports, 1, d, 0, d + 30)
        cpu1 = sum(s.cpu() for s in self.servers)
        r.update(
            publish_rate=pub["rate"],
            publish_events=pub["ok"],
            publish_errors=pub["errors"],
            publish_http_p50_ms=pub["http_p50_ms"],
            publish_http_p99_ms=pub["http_p99_ms"],
            publish_cpu_server_s=round(cpu1 - cpu0, 2),
            publish_window_s=pub["elapsed"],
        )
        if not (self.target.startswith("local_bridge") and opts.batch_size):
            return  # the peers have no batch endpoint (not asked of them)
        pub = run_publisher(
            self.ports, 1, d, 0, d + 60, batch=opts.batch_size, path="/api/events/batch"
        )
        r.update(
            batch_size=opts.batch_size,
            batch_events_per_s=pub["events"] / pub["elapsed"] if pub["elapsed"] else None,
            batch_requests=pub["ok"],
            batch_errors=pub["errors"],
            batch_http_p50_ms=pub["http_p50_ms"],
            batch_http_p99_ms=pub["http_p99_ms"],
            batch_cpu_server_s=round(sum(s.cpu() for s in self.servers) - cpu1, 2),
        )


#: A saturation phase's figures kept per publisher count (as ``pub<k>_<key>``).
PHASE_KEYS = (
    "deliveries_per_s",
    "sat_p50_ms",
    "sat_p99_ms",
    "sat_missing",
    "sat_expected",
    "sat_publish_rate",
    "sat_http_p99_ms",
    "sat_throttled",
    "cpu_server_s",
    "cpu_clients_s",
    "ready_after",
)


def phase_counts(r: dict) -> list[int]:
    """The publisher counts a measurement has ``pub<k>_`` figures of, in ascending order."""
    return sorted({int(key[3:].partition("_")[0]) for key in r if PHASE_KEY.match(key)})


PHASE_KEY = re.compile(r"pub[0-9]+_")


def phase_figures(publishers: int, out: dict) -> dict:
    """One saturation phase's figures under ``pub<publishers>_`` keys."""
    figures = {f"pub{publishers}_{key}": out.get(key) for key in PHASE_KEYS}
    figures[f"pub{publishers}_errors"] = out.get("sat_errors")
    return figures


class StallWatcher(threading.Thread):
    """During saturation, poll the server's connection count; when the stalled client has been
    dropped (N-1), start reading it again at once, so a close frame queued for it can arrive."""

    def __init__(self, server: Server, ready: int, lg: Loadgen):
        super().__init__(daemon=True)
        self.server, self.ready, self.lg = server, ready, lg
        self.halt = threading.Event()
        self.t0 = time.monotonic()
        self.dropped_after: float | None = None

    def run(self) -> None:
        self.t0 = time.monotonic()
        while not self.halt.wait(0.5) and not STOP["flag"]:
            answer = http_call(self.server.http_port, "GET", "/api/system/status", timeout=5)
            if answer.error:
                continue
            try:
                total = answer.body["connections"]["total"] if answer.status == 200 else self.ready
            except (KeyError, TypeError):
                continue
            if total < self.ready:
                self.dropped_after = time.monotonic() - self.t0
                self.lg.call({"cmd": "resume", "index": 0})
                return

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def stalled_client_fate(lg: Loadgen, server: Server) -> dict:
    """Did the server close the slow client with 4008? Read it again and see."""
    fate: dict[str, Any] = {"server_connections": connections(server.http_port)}
    lg.call({"cmd": "resume", "index": 0})
    end = time.monotonic() + 10
    while True:
        state = lg.call({"cmd": "conn", "index": 0})
        if state["state"] == 5 or time.monotonic() > end:  # 5: CLOSED
            break
        time.sleep(0.25)
    fate.update(
        close_code=state["close_code"], closed=state["state"] == 5, events_received=state["seen"]
    )
    return fate
