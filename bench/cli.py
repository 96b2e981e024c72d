"""Benchmark local_bridge against peer Python WebSocket event buses (run it as ``scripts/bench``).

``python -m bench``: the command line, and a run from the quiet machine it waits for to the
report it writes.

Targets, one server process each, 127.0.0.1 only, started fresh for every measurement
(``bench.servers``): ``local_bridge`` (``local-bridge serve``, gevent worker), ``websockets``
(asyncio + ``websockets.broadcast()``), ``picows`` (asyncio + picows, one pre-framed buffer sent
to each subscriber), ``flask-sock`` (a naive ``for ws in clients:
ws.send(text)`` loop under gunicorn's threaded worker) and ``flask-socketio`` (threading mode,
spoken to over the raw Engine.IO 4 WebSocket transport). ``--baseline-tree DIR`` adds
``local_bridge-baseline``: the same server run from another checkout, side by side.

What one measurement does: ``bench.measure``; the order of the run: ``bench.scenarios``; the
report (the generated part of ``docs/benchmarks.md`` and ``docs/benchmarks.png``):
``bench.report``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import tempfile
import time
import traceback
from pathlib import Path

from bench.cgroups import remove_cgroups
from bench.control import DEADLINE, STOP, Deadline, log
from bench.machine import CASE_WAIT, machine_info, wait_for_quiet
from bench.procs import kill_all_children, raise_nofile
from bench.report import render, write_markdown
from bench.scenarios import run_all, save_json
from bench.servers import ALL_TARGETS, BASELINE, EXTRA_TARGETS, REDIS_TARGETS, ROOT


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_matrix_args(p)
    add_scenario_args(p)
    add_slow_client_args(p)
    add_redis_args(p)
    add_run_args(p)
    opts = p.parse_args(argv)
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    if opts.quick:
        apply_quick(opts, given)
    if opts.profile and "--slow-client-n" not in given:
        opts.slow_client_n = 0
    if opts.profile and "--redis-n" not in given:
        opts.redis_n = ""
    if opts.profile and "--rss-n" not in given:
        opts.rss_n = ""
    if opts.profile and "--publish-duration" not in given:
        opts.publish_duration = 0.0
    check_args(p, opts)
    return opts


def add_matrix_args(p: argparse.ArgumentParser) -> None:
    """The main matrix: targets, N, rounds and the two phases of a measurement."""
    p.add_argument(
        "--n", default="100,1000,5000", help="subscriber counts, comma-separated [%(default)s]"
    )
    p.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help=f"comma-separated, from {', '.join(ALL_TARGETS + EXTRA_TARGETS + REDIS_TARGETS)} [%(default)s]",
    )
    p.add_argument(
        "--rounds", type=int, default=2, help="rounds per N (targets alternate) [%(default)s]"
    )
    p.add_argument("--duration", type=float, default=6.0, help="saturation seconds [%(default)s]")
    p.add_argument(
        "--latency-duration",
        type=float,
        default=3.0,
        help="seconds of publishing at --rate for latency [%(default)s]",
    )
    p.add_argument(
        "--rate", type=float, default=20.0, help="events/s of the latency phase [%(default)s]"
    )
    p.add_argument(
        "--publishers",
        default="4,1",
        help="concurrent keep-alive HTTP connections publishing at saturation, comma-separated: "
        "one saturation phase per count, in this order, with the same subscribers; the first "
        "fills the main table [%(default)s]",
    )
    p.add_argument(
        "--burst",
        type=int,
        default=1000,
        help="events of the burst phase: published back to back by one connection, each "
        "POST waiting for its answer, timed until the last subscriber has the last event "
        "(0: skip) [%(default)s]",
    )
    p.add_argument(
        "--burst-limit",
        type=float,
        default=120.0,
        help="seconds a burst may take to publish, and again to be delivered [%(default)s]",
    )
    p.add_argument(
        "--loadgen-procs",
        type=int,
        default=0,
        help="client processes (0: 1 up to N=1000, else 2) [%(default)s]",
    )
    p.add_argument(
        "--samplers", type=int, default=200, help="latency-sampling clients [%(default)s]"
    )
    p.add_argument(
        "--sat-decode-every",
        type=int,
        default=10,
        help="samplers decode every k-th event at saturation [%(default)s]",
    )
    p.add_argument(
        "--concurrency", type=int, default=64, help="handshakes in flight per client process"
    )
    p.add_argument("--connect-timeout", type=float, default=120.0)
    p.add_argument("--settle", type=float, default=1.0, help="seconds idle before reading RSS")
    p.add_argument("--drain-quiet", type=float, default=2.0)
    p.add_argument("--drain-limit", type=float, default=15.0)


def add_scenario_args(p: argparse.ArgumentParser) -> None:
    """The publish path and idle RSS scenarios (every target but the gthread peers)."""
    p.add_argument(
        "--publish-duration",
        type=float,
        default=3.0,
        help="publish path scenario: seconds of POST /api/websocket/broadcast with no "
        "subscriber from one keep-alive connection, then (local_bridge) as long of "
        "POST /api/events/batch (0: skip) [%(default)s]",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=500,
        help="events per POST /api/events/batch in the publish path scenario (0: no batch "
        "phase) [%(default)s]",
    )
    p.add_argument(
        "--rss-n",
        default="1000,10000",
        help="idle RSS scenario: subscriber counts, comma-separated; N idle subscribers, "
        "the worker's RSS before and after, nothing published ('' to skip) [%(default)s]",
    )


def add_slow_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--slow-client-n", type=int, default=1000, help="N of the slow-client scenario (0: skip)"
    )
    p.add_argument("--slow-rounds", type=int, default=1)
    p.add_argument("--slow-max-queue", type=int, default=1000)
    p.add_argument(
        "--slow-pad",
        type=int,
        default=0,
        help="extra characters in each event of the slow-client runs, so that kernel "
        "buffers hold fewer events and the queue overflows sooner [%(default)s]",
    )
    p.add_argument(
        "--slow-heartbeat",
        type=float,
        default=0.0,
        help="LOCAL_BRIDGE_HEARTBEAT_INTERVAL of the slow-client runs (0: the default "
        "30 s, whose liveness check drops a client silent for 60 s: raise it when "
        "the queue would take longer than that to overflow) [%(default)s]",
    )
    p.add_argument(
        "--slow-duration",
        type=float,
        default=30.0,
        help="saturation seconds of the slow-client runs (the stalled client must fall "
        "MAX_QUEUE events behind) [%(default)s]",
    )


def add_redis_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--redis-n",
        default="1000,5000",
        help="subscriber counts of the Redis scenario, comma-separated ('' to skip) [%(default)s]",
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("LOCAL_BRIDGE_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0",
        help="Redis of the Redis scenario; every key is under a prefix of its own and "
        "deleted afterwards [$LOCAL_BRIDGE_TEST_REDIS_URL or %(default)s]",
    )
    p.add_argument("--redis-rounds", type=int, default=2)
    p.add_argument(
        "--redis-server-cpu",
        type=float,
        default=0.4,
        metavar="CORES",
        help="the Redis scenario's capped cases: one and two processes with each "
        "server process (master and worker) in a cgroup of its own allowed this "
        "many cores (a CFS quota), so the servers leave cores to the clients; the "
        "≥ 1.5× target is judged on them. Needs a writable cgroup cpu controller "
        "(v1 or v2, i.e. root), else they are skipped with a note (0: skip) "
        "[%(default)s]",
    )
    p.add_argument(
        "--followers",
        type=int,
        default=10,
        help="steady or resuming followers in the Redis scenario's resume runs [%(default)s]",
    )
    p.add_argument(
        "--follow-live",
        type=float,
        default=0.5,
        help="seconds a resuming follower stays connected per visit [%(default)s]",
    )
    p.add_argument(
        "--follow-away",
        type=float,
        default=0.2,
        help="seconds a resuming follower stays away between visits [%(default)s]",
    )


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Where the report goes, how long the run may take, how it waits for a quiet machine."""
    p.add_argument(
        "--baseline-tree",
        default="",
        help="a checkout of local_bridge (e.g. made by `git worktree add`) measured as "
        "target local_bridge-baseline, beside this tree's local_bridge",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: N=100, 1 round, short phases, slow client at N=100; "
        "writes to a temporary file unless --output is given",
    )
    p.add_argument("--output", help="markdown file to update [docs/benchmarks.md]")
    p.add_argument("--plot", help="PNG to write [docs/benchmarks.png, next to --output]")
    p.add_argument("--json", help="also write every measurement as JSON here")
    p.add_argument(
        "--plot-only",
        metavar="JSON",
        help="only redraw --plot from the measurements a run saved with --json",
    )
    p.add_argument(
        "--deadline", type=float, default=3600.0, help="global time limit, seconds [%(default)s]"
    )
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        choices=(0, 1),
        help="measure again once when a measurement failed (e.g. its server was killed)",
    )
    p.add_argument(
        "--max-load", type=float, default=3.0, help="wait while the 1-min load is above this"
    )
    p.add_argument(
        "--max-wait", type=float, default=600.0, help="longest wait for a quiet machine, seconds"
    )
    p.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    p.add_argument(
        "--case-wait",
        type=float,
        default=30.0,
        help="before each measurement, wait up to this many seconds while another "
        "measurement (capacity.py, another bench) runs [%(default)s]",
    )
    p.add_argument(
        "--case-wait-total",
        type=float,
        default=120.0,
        help="at most this many seconds of such waits in one run [%(default)s]",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the server during each saturation phase (skews the numbers: "
        "diagnosis only; writes to a temporary file unless --output is given)",
    )


def apply_quick(opts, given: set[str]) -> None:
    """--quick: N=100, 1 round, short phases, slow client at N=100 (what is not given)."""
    if "--n" not in given:
        opts.n = "100"
    if "--rounds" not in given:
        opts.rounds = 1
    opts.duration = min(opts.duration, 3.0)
    opts.latency_duration = min(opts.latency_duration, 2.0)
    opts.slow_client_n = min(opts.slow_client_n, 100) if opts.slow_client_n else 0
    if "--redis-n" not in given:
        opts.redis_n = "100"
    if "--redis-rounds" not in given:
        opts.redis_rounds = 1
    if "--rss-n" not in given:
        opts.rss_n = "100"
    opts.publish_duration = min(opts.publish_duration, 2.0)
    opts.burst_limit = min(opts.burst_limit, 30.0)
    if "--slow-duration" not in given:
        opts.slow_duration = 10.0
    opts.drain_limit = min(opts.drain_limit, 8.0)
    opts.deadline = min(opts.deadline, 600.0)


def check_args(p: argparse.ArgumentParser, opts) -> None:
    """Parse the lists, check the choices, fill in the output paths."""
    CASE_WAIT["left"] = opts.case_wait_total
    opts.ns = [int(x.replace("_", "")) for x in opts.n.split(",") if x.strip()]
    opts.redis_ns = [int(x.replace("_", "")) for x in opts.redis_n.split(",") if x.strip()]
    opts.rss_ns = [int(x.replace("_", "")) for x in opts.rss_n.split(",") if x.strip()]
    try:
        opts.publisher_counts = [int(x) for x in opts.publishers.split(",") if x.strip()]
    except ValueError:
        p.error("--publishers: counts separated by commas, e.g. 4,1")
    if not opts.publisher_counts or min(opts.publisher_counts) < 1:
        p.error("--publishers: at least one count, each at least 1")
    opts.publishers = opts.publisher_counts[0]  # the main table's (and the other scenarios')
    opts.redis_skipped = None
    opts.redis_cap_skipped = None
    if opts.redis_server_cpu < 0 or 0 < opts.redis_server_cpu < 0.01:
        p.error("--redis-server-cpu: 0 (no capped cases) or at least 0.01 cores")
    opts.target_list = [t.strip() for t in opts.targets.split(",") if t.strip()]
    for t in opts.target_list:
        if t not in ALL_TARGETS + EXTRA_TARGETS + REDIS_TARGETS:
            p.error(f"unknown target {t!r}")
    BASELINE["tree"] = str(Path(opts.baseline_tree).resolve()) if opts.baseline_tree else ""
    if "local_bridge-baseline" in opts.target_list and not BASELINE["tree"]:
        p.error("target local_bridge-baseline needs --baseline-tree")
    if opts.output is None:
        opts.output = (
            str(Path(tempfile.gettempdir()) / "bench-quick.md")
            if (opts.quick or opts.profile)
            else str(ROOT / "docs" / "benchmarks.md")
        )
    if opts.plot is None:
        opts.plot = str(Path(opts.output).with_suffix(".png"))


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    if opts.plot_only:
        return plot_only(opts)
    soft, hard = raise_nofile()
    need = max(opts.ns + opts.redis_ns + opts.rss_ns + [opts.slow_client_n]) + 200
    if soft < need:
        log(f"RLIMIT_NOFILE is {soft} (hard {hard}): too low for N={need - 200}")
        return 2
    atexit.register(remove_cgroups)  # atexit runs last-in first-out: children are killed first
    atexit.register(kill_all_children)

    def on_signal(signum, frame):
        STOP["flag"] = True
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    log(f"logs and scratch files in {workdir}")
    info = machine_info()
    results: list[dict] = []
    seen, started_at = measure_all(results, opts, workdir)
    elapsed = time.monotonic() - started_at
    save_json(opts.json, results)
    if not results:
        log("nothing measured")
        return 1
    command = "scripts/bench " + " ".join(argv) if argv else "scripts/bench"
    write_report(results, opts, info, seen, command, elapsed)
    return 0 if all("error" not in r for r in results) else 1


def measure_all(results: list[dict], opts, workdir: Path) -> tuple[dict, float]:
    """Wait for a quiet machine, then run everything until done, the deadline or a signal
    (what was measured is kept); return the machine's state at the start and the start time."""
    started_at = time.monotonic()
    seen = {"load": os.getloadavg(), "waited_s": 0.0}
    try:
        if not opts.no_wait:
            seen = wait_for_quiet(opts.max_load, opts.max_wait)
        DEADLINE["t"] = time.monotonic() + opts.deadline  # the wait above is bounded on its own
        started_at = time.monotonic()
        run_all(results, opts, workdir)
    except (KeyboardInterrupt, Deadline) as exc:
        log(f"stopped: {exc!r}; writing what was measured")
    except Exception as exc:  # a bug of the benchmark must not lose what was measured
        traceback.print_exc()
        log(f"stopped by an error: {exc!r}; writing what was measured")
    finally:
        kill_all_children()
        remove_cgroups()  # rmdir needs the groups' processes gone
    return seen, started_at


def write_report(
    results: list[dict], opts, info: dict, seen: dict, command: str, elapsed: float
) -> None:
    from bench.plot import plot

    section = render(results, opts.target_list, opts.ns, opts, info, seen, command, elapsed)
    write_markdown(Path(opts.output), section)
    try:
        plot(main_matrix(results), opts.target_list, opts.ns, Path(opts.plot))
    except Exception as exc:  # the table matters more than the picture
        log(f"plot failed: {exc!r}")
    print(section.split("<details>")[0])
    log(f"wrote {opts.output} and {opts.plot} ({elapsed / 60:.1f} min)")


def main_matrix(results: list[dict]) -> list[dict]:
    return [r for r in results if not r.get("slow_client_baseline") and not r.get("scenario")]


def plot_only(opts) -> int:
    """--plot-only: redraw the picture from a run's --json."""
    from bench.plot import plot

    plot(
        main_matrix(json.loads(Path(opts.plot_only).read_text())),
        opts.target_list,
        opts.ns,
        Path(opts.plot),
    )
    log(f"wrote {opts.plot}")
    return 0
