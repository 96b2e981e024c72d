"""How fast can any server answer the publish path on this stack? (``python -m bench.floor``)

Publishes/s from one keep-alive connection (``POST /api/websocket/broadcast``, no subscriber,
as the publish-path scenario of ``scripts/bench``) against local_bridge, against a Flask view
and a bare WSGI callable that do nothing behind the request on the same gunicorn gevent
worker (bench/peers/floor_apps.py), and against the asyncio peers' own HTTP. Rounds alternate
the servers; medians are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.control import DEADLINE, log
from bench.drivers import run_publisher
from bench.servers import LABELS, PEERS, Server

FLOORS = {
    "flask-floor": ("floor_apps:flask", "Flask view doing nothing (gunicorn gevent)"),
    "wsgi-floor": ("floor_apps:wsgi", "bare WSGI callable (gunicorn gevent)"),
}
TARGETS = ("local_bridge", "flask-floor", "wsgi-floor", "websockets", "picows")


class FloorServer(Server):
    """One of the FLOORS apps under gunicorn's gevent worker, configured as local_bridge's."""

    def command(self) -> tuple[list[str], dict[str, str]]:
        if self.target not in FLOORS:
            return super().command()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")}
        gunicorn = [sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gevent"]
        options = ["--bind", f"127.0.0.1:{self.port}", "--keep-alive", "30"]
        options += ["--log-level", "warning", "--chdir", str(PEERS)]
        return [*gunicorn, *options, FLOORS[self.target][0]], env


def measure(target: str, seconds: float, workdir: Path) -> float:
    server = FloorServer(target, 0, workdir)
    server.start()
    try:
        result = run_publisher(server.http_port, 1, seconds, 0.0, time.monotonic() + 120)
        return result["ok"] / result["elapsed"]
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--targets", default=",".join(TARGETS))
    opts = parser.parse_args()
    targets = [t for t in opts.targets.split(",") if t]
    DEADLINE["t"] = time.monotonic() + 1800
    rates: dict[str, list[float]] = {t: [] for t in targets}
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        for round_ in range(opts.rounds):
            for target in targets:
                rates[target].append(measure(target, opts.seconds, Path(tmp)))
                log(f"round {round_ + 1} {target}: {rates[target][-1]:,.0f} publishes/s")
    print("| server | publishes/s (median) | rounds |")
    print("|---|---:|---|")
    for target in targets:
        label = FLOORS[target][1] if target in FLOORS else LABELS[target]
        each = ", ".join(f"{r:,.0f}" for r in rates[target])
        print(f"| {label} | {statistics.median(rates[target]):,.0f} | {each} |")


if __name__ == "__main__":
    main()
