"""The capacity test's report: a markdown table, one column per worker class."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
from typing import Any

from bench.machine import versions as installed


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 1000:.1f}"


def _mib(v: int | None) -> str:
    return "n/a" if v is None else f"{v / 1024:.1f}"


def render(results: list[dict[str, Any]], args: argparse.Namespace, header: str) -> str:
    lines = [
        header,
        "",
        "| metric | " + " | ".join(r["worker_class"] for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    lines += [row(results, label, fn) for label, fn in metrics(args)]
    lines += problem_notes(results)
    return "\n".join(lines) + "\n"


def row(results: list[dict[str, Any]], label: str, fn) -> str:
    cells = []
    for r in results:
        try:
            cells.append(fn(r))
        except (KeyError, TypeError, ZeroDivisionError):
            cells.append("n/a")
    return f"| {label} | " + " | ".join(cells) + " |"


def health(key: str):
    def fn(r):
        h = r[key]
        return f"{_ms(h['p50'])} / {_ms(h['p99'])} / {_ms(h['max'])} ({h['ok']}/{h['count']} ok)"

    return fn


def metrics(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(label, the cell of one worker class's result) of each row."""
    n = args.connections
    return [
        ("result", lambda r: "PASS" if not r["problems"] else "**FAIL**"),
        ("WebSockets opened (of N)", lambda r: f"{r['opened']} / {n}"),
        (
            "connect failures",
            lambda r: ", ".join(f"{k}: {v}" for k, v in r["connect_failures"].items()) or "0",
        ),
        ("connect wall time (s)", lambda r: f"{r['connect_wall']:.2f}"),
        ("connections/s", lambda r: f"{r['connect_rate']:.0f}"),
        (
            "handshake+subscribe latency p50 / p99 (ms)",
            lambda r: f"{_ms(r['handshake_p50'])} / {_ms(r['handshake_p99'])}",
        ),
        ("worker CPU during connect (s)", lambda r: f"{r['connect_cpu']:.2f}"),
        ("worker RSS before (MiB)", lambda r: _mib(r["rss_before"])),
        ("worker RSS with N open (MiB)", lambda r: _mib(r["rss_held"])),
        ("**RSS per connection (KiB)**", lambda r: f"{r['rss_per_conn']:.1f}"),
        ("worker RSS after broadcast (MiB)", lambda r: _mib(r["rss_after_broadcast"])),
        ("worker RSS after all closed (MiB)", lambda r: _mib(r["rss_after_close"])),
        ("worker peak RSS, VmHWM (MiB)", lambda r: _mib(r["rss_hwm"])),
        (
            "worker threads before / with N / after close",
            lambda r: f"{r['threads_before']} / {r['threads_held']} / {r['threads_after_close']}",
        ),
        ("worker open fds before / with N", lambda r: f"{r['fds_before']} / {r['fds_held']}"),
        ("/health idle p50 / p99 / max (ms)", health("health_idle")),
        ("**/health with N open p50 / p99 / max (ms)**", health("health_held")),
        (
            "/status with N open (ms); connections.total",
            lambda r: f"{_ms(r['status_latency'])}; {r['status_total']}",
        ),
        (
            "broadcast POST (ms); recipients",
            lambda r: f"{_ms(r['broadcast_post'])}; {r['broadcast_recipients']}",
        ),
        ("**broadcast delivered to all N (ms)**", lambda r: _ms(r["broadcast_all"])),
        (
            "broadcast delivery p50 (ms); missing",
            lambda r: f"{_ms(r['broadcast_p50'])}; {r['broadcast_missing']}",
        ),
        (
            "all N clients close at once: server counts 0 after (s)",
            lambda r: (
                f"**not within {args.drain_timeout:g} s**"
                if r["drain"] is None
                else f"{r['drain']:.2f}"
                + (" **(worker killed, new worker)**" if r["drain_worker_replaced"] else "")
            ),
        ),
        ("worker CPU from the close until then (s)", lambda r: f"{r['drain_cpu']:.2f}"),
        (
            f"/status polls failed during that ({args.http_timeout:g} s timeout); slowest (ms)",
            lambda r: f"{r['drain_polls'][1]}/{r['drain_polls'][0]}; {_ms(r['drain_polls'][2])}",
        ),
        (
            "server shutdown (SIGTERM); worker exited gracefully",
            lambda r: f"{r['shutdown']}; {'yes' if r['graceful_exit'] else '**no**'}",
        ),
        (
            "server log error lines; workers booted",
            lambda r: f"{len(r['log_problems'])}; {r['worker_boots']}",
        ),
        (
            "machine CPU busy / steal during connect (%)",
            lambda r: "{:.0f} / {:.0f}".format(*r["cpu_machine_connect"]),
        ),
        (
            "machine CPU busy / steal in 1 s before the server started (%)",
            lambda r: "{:.0f} / {:.0f}".format(*r["cpu_background"]),
        ),
    ]


def problem_notes(results: list[dict[str, Any]]) -> list[str]:
    notes = []
    for r in results:
        for p in r["problems"]:
            notes.append(f"- {r['worker_class']}: {p}")
        for line in r.get("log_problems", [])[:5]:
            notes.append(f"  - log: `{line[:200]}`")
    return ["", "Problems:", ""] + notes if notes else []


def project_commit() -> str:
    """The git commit of the local_bridge being measured (best effort)."""
    try:
        import local_bridge

        where = os.path.dirname(os.path.dirname(os.path.abspath(local_bridge.__file__)))
        out = subprocess.run(
            ["git", "-C", where, "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except Exception:  # noqa: BLE001 - only informative
        return "unknown"


def versions() -> str:
    out = [f"local_bridge {project_commit()}", f"Python {platform.python_version()}"]
    found = installed(("gunicorn", "gevent", "simple-websocket", "flask-sock"))
    out += [f"{name.replace('-', '_')} {v}" for name, v in found.items() if v]
    return ", ".join(out)
