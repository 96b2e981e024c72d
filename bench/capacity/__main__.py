"""``python -m bench.capacity``: the command line of the capacity test (see :mod:`bench.capacity`)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import bench.capacity
from bench.capacity import interrupts
from bench.capacity.report import render, versions
from bench.capacity.run import run_class
from bench.procs import raise_nofile

WORKER_CLASSES = ("gevent", "gthread")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.capacity",
        description=bench.capacity.__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-w",
        "--worker-class",
        action="append",
        choices=WORKER_CLASSES,
        help="worker class to measure (repeatable; default: gevent and gthread)",
    )
    parser.add_argument(
        "-n",
        "--connections",
        type=int,
        default=2000,
        help="concurrent WebSocket connections to hold (default 2000)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=120.0,
        help="overall time budget in seconds, shared by the worker classes "
        "(default 120; stopping each server may add up to ~30 s)",
    )
    parser.add_argument("--output", help="also write the markdown table to this file")
    parser.add_argument(
        "--window", type=int, default=256, help="handshakes in flight at once (default 256)"
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        help="per-connection limit from connect() to 'subscribed' (default 30 s)",
    )
    parser.add_argument(
        "--health-requests",
        type=int,
        default=50,
        help="GET /api/system/health requests per measurement (default 50)",
    )
    parser.add_argument(
        "--http-timeout",
        type=float,
        default=10.0,
        help="timeout of one HTTP request (default 10 s)",
    )
    parser.add_argument(
        "--broadcast-timeout",
        type=float,
        default=30.0,
        help="longest wait for the broadcast to reach every client (default 30 s)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=20.0,
        help="longest wait for the server to count 0 after closing (default 20 s)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="pause between the last connect and the measurements (default 1 s)",
    )
    parser.add_argument(
        "--keep-logs",
        metavar="DIR",
        help="keep the server logs in DIR (default: a temporary directory)",
    )
    args = parser.parse_args(argv)
    if args.connections < 1 or args.window < 1 or args.deadline <= 0 or args.health_requests < 1:
        parser.error("--connections, --window, --health-requests and --deadline must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 when every class held all N connections, delivered the broadcast to all
    of them and answered every HTTP request; 1 otherwise; 2 on a usage or environment error."""
    args = parse_args(argv)
    classes = args.worker_class or list(WORKER_CLASSES)
    start = time.monotonic()
    soft, hard = raise_nofile()
    needed = args.connections + 64
    if soft < needed:
        print(
            f"RLIMIT_NOFILE is {soft} (hard {hard}); {needed} descriptors are needed",
            file=sys.stderr,
        )
        return 2
    interrupts.install()
    workdir = args.keep_logs or tempfile.mkdtemp(prefix="lb-capacity-")
    os.makedirs(workdir, exist_ok=True)
    results: list[dict[str, Any]] = []
    try:
        interrupted = run_classes(classes, args, start + args.deadline, workdir, results)
    finally:
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    header = (
        f"### N = {args.connections} WebSockets, {time.strftime('%Y-%m-%d %H:%M:%S')}\n\n"
        f"{os.cpu_count()} CPUs, {versions()}; client window {args.window}, "
        f"{args.health_requests} /health requests per row, wall time "
        f"{time.monotonic() - start:.0f} s"
    )
    report = render(results, args, header) if results else header + "\n\nno result\n"
    print(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(report)
    failed = (
        interrupted is not None
        or len(results) < len(classes)
        or any(r["problems"] for r in results)
    )
    return 1 if failed else 0


def run_classes(
    classes: list[str],
    args: argparse.Namespace,
    deadline: float,
    workdir: str,
    results: list[dict[str, Any]],
) -> str | None:
    """Each worker class in turn, sharing what is left of the time; None, or what interrupted it."""
    try:
        for i, worker_class in enumerate(classes):
            remaining = deadline - time.monotonic()
            if remaining <= 1:
                print(f"deadline reached before {worker_class}", file=sys.stderr)
                break
            class_deadline = time.monotonic() + remaining / (len(classes) - i)
            print(
                f"[capacity] {worker_class}: N={args.connections}, budget "
                f"{class_deadline - time.monotonic():.0f} s",
                file=sys.stderr,
                flush=True,
            )
            r = run_class(worker_class, args, class_deadline, workdir)
            results.append(r)
            print(
                f"[capacity] {worker_class}: {'PASS' if not r['problems'] else 'FAIL'} "
                f"{'; '.join(r['problems'])}",
                file=sys.stderr,
                flush=True,
            )
    except (KeyboardInterrupt, interrupts.Terminated) as exc:
        interrupted = type(exc).__name__ if isinstance(exc, KeyboardInterrupt) else str(exc)
        print(f"[capacity] interrupted ({interrupted}); server stopped", file=sys.stderr)
        return interrupted
    return None


if __name__ == "__main__":
    sys.exit(main())
