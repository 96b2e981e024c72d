"""The run: every measurement of the benchmark, in the order they alternate.

For each N, each round runs every target once, in turn (A,B,C,D,A,B,C,D...); each of these
measurements (but the gthread peers') also saturates with every further ``--publishers`` count
and publishes a ``--burst``. Then the publish path (no subscriber; batches for local_bridge) and the idle RSS at
each ``--rss-n``, every target but the gthread peers, rounds alternating likewise. A
slow-client scenario follows for local_bridge, then the Redis scenario (``bench.cases``): local_bridge in
memory; one process on Redis; two processes on the same Redis; the two again with followers
that stay connected (*steady*) or keep resuming on the other process (*resuming*); and, given a
writable cgroup cpu controller, one and two processes each capped at ``--redis-server-cpu``
cores, so that the servers leave cores to the clients.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench import cgroups, pyspy
from bench.cases import case_label, redis_cases
from bench.control import check_deadline, log
from bench.machine import wait_for_others
from bench.measure import measure, phase_counts
from bench.redisdb import redis_unreachable

#: Thread-per-connection peers: only in the main table, without the further publisher counts,
#: the burst, the publish path and idle RSS (the targets these answer compare local_bridge with
#: the asyncio peers; Flask-SocketIO accepts ~5 events/s at N = 1,000, so a 1,000-event burst
#: would only wait for the limits, and 10,000 threads say little).
GTHREAD_PEERS = ("flask-sock", "flask-socketio")


def run_all(results: list[dict], opts, workdir: Path) -> None:
    """The main matrix, the publish path, idle RSS, the slow client and the Redis scenario;
    ``results`` grows as they go."""
    run_matrix(results, opts, workdir)
    if opts.publish_duration > 0:
        run_publish_path(results, opts, workdir)
    if opts.rss_ns:
        run_idle_rss(results, opts, workdir)
    if opts.slow_client_n and "local_bridge" in opts.target_list:
        run_slow_client(results, opts, workdir)
    if opts.redis_ns:
        run_redis_scenario(results, opts, workdir)


def before_case(opts) -> None:
    check_deadline()
    if not opts.no_wait:
        wait_for_others(opts.case_wait)


def run_matrix(results: list[dict], opts, workdir: Path) -> None:
    total = len(opts.ns) * opts.rounds * len(opts.target_list)
    k = 0
    for n in opts.ns:
        for rnd in range(opts.rounds):
            for target in opts.target_list:
                before_case(opts)
                k += 1
                log(f"[{k}/{total}] {target} N={n} round {rnd + 1} (load {os.getloadavg()[0]:.1f})")
                phases = target not in GTHREAD_PEERS
                r = run_case(results, opts, rnd, target, n, workdir, phases=phases)
                if r.get("profile"):
                    pyspy.print_report(r)


def scenario_targets(opts) -> list[str]:
    return [t for t in opts.target_list if t not in GTHREAD_PEERS]


def run_publish_path(results: list[dict], opts, workdir: Path) -> None:
    """Each target fresh, no subscriber: publishes/s from one keep-alive connection (and, for
    local_bridge, batch events/s); ``--rounds`` rounds, targets alternating."""
    targets = scenario_targets(opts)
    for rnd in range(opts.rounds):
        for target in targets:
            before_case(opts)
            log(f"publish path: {target} round {rnd + 1}")
            run_case(
                results, opts, rnd, target, 0, workdir, {"scenario": "publish"}, mode="publish"
            )


def run_idle_rss(results: list[dict], opts, workdir: Path) -> None:
    """Each target fresh with N idle subscribers: RSS per connection, nothing published."""
    targets = scenario_targets(opts)
    for n in opts.rss_ns:
        for rnd in range(opts.rounds):
            for target in targets:
                before_case(opts)
                log(f"idle RSS: {target} N={n} round {rnd + 1}")
                run_case(results, opts, rnd, target, n, workdir, {"scenario": "rss"}, mode="idle")


def run_slow_client(results: list[dict], opts, workdir: Path) -> None:
    """local_bridge with a small MAX_QUEUE, without and with one client that stops reading."""
    n = opts.slow_client_n
    for rnd in range(opts.slow_rounds):
        for stall in (False, True):
            before_case(opts)
            log(f"slow client: local_bridge N={n} {'one client stalled' if stall else 'no stall'}")
            marks = {} if stall else {"slow_client_baseline": True}
            r = run_case(
                results,
                opts,
                rnd,
                "local_bridge",
                n,
                workdir,
                marks,
                stall=stall,
                max_queue=opts.slow_max_queue,
            )
            if stall:
                log(f"    stalled: {r.get('stalled')}")


def run_case(
    results: list[dict],
    opts,
    rnd: int,
    target: str,
    n: int,
    workdir: Path,
    marks: dict | None = None,
    **kwargs,
) -> dict:
    """One measurement (again once if it failed and --retries allows), recorded and logged."""
    r = measure(target, n, opts, workdir, **kwargs)
    if "error" in r and opts.retries:
        log(f"    retrying once: {r['error']}")
        r = measure(target, n, opts, workdir, **kwargs)
        r["retried"] = True
    r.update(marks or {}, round=rnd + 1)
    results.append(r)
    save_json(opts.json, results)
    log("    " + brief(r))
    return r


def run_redis_scenario(results: list[dict], opts, workdir: Path) -> None:
    """One process on Redis against two, uncapped and capped, and steady against resuming
    followers (module doc)."""
    why = redis_unreachable(opts.redis_url)
    if why:
        opts.redis_skipped = f"Redis at {opts.redis_url} unreachable: {why}"
        log(f"Redis scenario skipped: {opts.redis_skipped}")
        return
    if opts.redis_server_cpu <= 0:
        opts.redis_cap_skipped = "--redis-server-cpu 0"
    else:
        opts.redis_cap_skipped = cgroups.cgroup_setup()
        if opts.redis_cap_skipped:
            log(f"capped Redis cases skipped: {opts.redis_cap_skipped}")
    cases = redis_cases(opts)
    total = len(opts.redis_ns) * opts.redis_rounds * len(cases)
    k = 0
    for n in opts.redis_ns:
        for rnd in range(opts.redis_rounds):
            for target, followers, cap in cases:
                before_case(opts)
                k += 1
                log(
                    f"[redis {k}/{total}] {case_label(target, followers, cap)} N={n} round {rnd + 1}"
                )
                r = run_case(
                    results,
                    opts,
                    rnd,
                    target,
                    n,
                    workdir,
                    {"scenario": "redis"},
                    followers=followers,
                    cpu_cap=cap,
                )
                if followers:
                    log(f"    followers: {r.get('followers_result')}")


def brief(r: dict) -> str:
    """One measurement on one log line."""
    if "error" in r:
        return f"error: {r['error']}"

    def f(key, fmt="{:.1f}"):
        value = r.get(key)
        return "—" if value is None else fmt.format(value)

    if r.get("scenario") == "publish":
        return (
            f"publishes/s {f('publish_rate', '{:,.0f}')} (http p99 {f('publish_http_p99_ms')}ms, "
            f"errors {r.get('publish_errors')}, cpu srv {f('publish_cpu_server_s')}s)"
            + (
                f" | batch events/s {f('batch_events_per_s', '{:,.0f}')} "
                f"({r.get('batch_requests')} requests, errors {r.get('batch_errors')})"
                if "batch_size" in r
                else ""
            )
        )
    if r.get("scenario") == "rss":
        return (
            f"ready {r.get('ready')} connect {f('connect_s', '{:.2f}')}s "
            f"rss/conn {f('rss_per_conn_kib')}KiB"
        )
    extra = "".join(
        f" | {k} pub {f(f'pub{k}_deliveries_per_s', '{:,.0f}')}/s "
        f"sat-p99 {f(f'pub{k}_sat_p99_ms', '{:.0f}')}ms missing {r.get(f'pub{k}_sat_missing')}"
        for k in phase_counts(r)
    )
    if "burst_events" in r:
        extra += (
            f" | burst {r['burst_events']} events: {f('burst_deliveries_per_s', '{:,.0f}')}/s "
            f"in {f('burst_s', '{:.2f}')}s (published in {f('burst_publish_s', '{:.2f}')}s) "
            f"missing {r.get('burst_missing')}"
        )

    return (
        f"ready {r.get('ready')} connect {f('connect_s', '{:.2f}')}s "
        f"rss/conn {f('rss_per_conn_kib')}KiB p50 {f('p50_ms')}ms p99 {f('p99_ms')}ms | "
        f"sat {f('deliveries_per_s', '{:,.0f}')}/s ({f('sat_publish_rate', '{:.0f}')} ev/s) "
        f"missing {r.get('sat_missing')}+{r.get('lat_missing')} sat-p99 {f('sat_p99_ms', '{:.0f}')}ms "
        f"cpu srv {f('cpu_server_s')}s cli {f('cpu_clients_s')}s (usr {f('cpu_clients_user_s')} "
        f"sys {f('cpu_clients_sys_s')}) srv usr/sys {r.get('cpu_server_split')} "
        f"pub {f('cpu_publisher_s')}s closes {r.get('closes')}"
        + (
            f" cap {r['server_cpu']:g} cores: quota used "
            + ", ".join("—" if u is None else f"{u:.0%}" for u in r.get("quota_use") or [])
            + " throttled in "
            + ", ".join("—" if t is None else f"{t:.0%}" for t in r.get("throttled_share") or [])
            + " of periods"
            if r.get("server_cpu")
            else ""
        )
        + (" WORKER RESTARTED" if r.get("worker_restarted") else "")
        + extra
    )


def save_json(path: str | None, results: list[dict]) -> None:
    """Every measurement so far, as JSON (``--json``), rewritten after each one."""
    if path:
        try:
            Path(path).write_text(json.dumps(results, indent=1, default=str))
        except OSError as exc:
            log(f"could not write {path}: {exc}")
