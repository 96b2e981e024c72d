"""The machine: whether it is quiet enough to measure on (no other measurement running, CPU
idle), how busy it was during a measurement, and what it is (cores, versions, commit)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib import metadata

from bench.control import check_deadline, log
from bench.procs import CHILDREN, ancestors, cpu_seconds, cpu_times, proc_stat
from bench.servers import ROOT

# What other measurements' command lines contain (this tree's and older ones').
MEASUREMENTS = ("bench.capacity", "capacity.py", "-m bench", "scripts/bench")
CASE_WAIT = {"left": 120.0}  # seconds all the per-measurement waits of one run may add up to


def foreign_measurements() -> list[str]:
    """Other benchmark/capacity processes (not ours) that are using CPU."""
    mine = {os.getpid()} | {p.pid for p in CHILDREN} | ancestors(os.getpid())
    samples = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in mine:
            continue
        cmd = _cmdline(int(name))
        if cmd and (_is_measurement(cmd) or "local-bridge serve" in cmd):
            if not _ancestor_is(int(name), os.getpid()):
                samples[int(name)] = (cmd, cpu_seconds(int(name)) or 0.0)
    if not samples:
        return []
    time.sleep(1.0)
    found = []
    for pid, (cmd, before) in samples.items():
        busy = (cpu_seconds(pid) or 0.0) - before
        if busy < 0:  # the pid was reused
            continue
        if _is_measurement(cmd) or busy > 0.05:
            found.append(f"{pid} ({busy:.2f} CPU s/s) {cmd[:80]}")
    return found


def _is_measurement(cmd: str) -> bool:
    return any(mark in cmd for mark in MEASUREMENTS)


def _cmdline(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None


def wait_for_others(max_wait: float, every: float = 5.0) -> float:
    """Before one measurement: wait (at most ``max_wait`` s, and at most what is left of the
    run's waiting budget) while another measurement runs."""
    t0 = time.monotonic()
    max_wait = min(max_wait, CASE_WAIT["left"])
    while time.monotonic() - t0 < max_wait:
        check_deadline()
        others = foreign_measurements()
        if not others:
            break
        log(f"    another measurement is running ({others[0][:70]}...): waiting")
        time.sleep(every)
    waited = time.monotonic() - t0
    CASE_WAIT["left"] = max(0.0, CASE_WAIT["left"] - waited)
    return waited


def _ancestor_is(pid: int, ancestor: int) -> bool:
    for _ in range(50):
        fields = proc_stat(pid)
        if not fields:
            return False
        pid = int(fields[1])
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def busy_share(before: list[int], after: list[int]) -> float:
    """Share of the machine's CPU time spent busy between two ``cpu_times()``."""
    delta = [b - a for a, b in zip(before, after)]
    total, idle = sum(delta), delta[3] + delta[4]  # idle + iowait
    return 1.0 - idle / total if total > 0 else 0.0


def busy_and_steal(before: list[int]) -> tuple[float, float]:
    """Machine CPU busy and steal percentages since ``before`` (a ``cpu_times()``), over the
    eight first fields (the guest ones are already counted in user and nice)."""
    delta = [b - a for a, b in zip(before, cpu_times())][:8]
    total, steal = sum(delta), (delta[7] if len(delta) > 7 else 0)
    busy = total - delta[3] - (delta[4] if len(delta) > 4 else 0) - steal
    return (100.0 * busy / total, 100.0 * steal / total) if total > 0 else (0.0, 0.0)


def cpu_busy(seconds: float = 3.0) -> float:
    """Share of the machine's CPU time spent busy over ``seconds``."""
    before = cpu_times()
    time.sleep(seconds)
    return busy_share(before, cpu_times())


def wait_for_quiet(max_load: float, max_wait: float, every: float = 30.0) -> dict:
    """Wait (bounded) until no other measurement runs and the machine is quiet: a 1-minute load
    average below ``max_load``, or, since a burst of thousands of threads keeps that average
    high for minutes after they are gone, less than 15 % of the CPU busy over 3 s."""
    end = time.monotonic() + max_wait
    waited = 0.0
    while True:
        load = os.getloadavg()
        busy = cpu_busy()
        others = foreign_measurements()
        if (load[0] <= max_load or busy <= 0.15) and not others:
            return {"load": load, "cpu_busy": busy, "waited_s": waited, "busy": False}
        if time.monotonic() + every > end:
            log(
                f"machine still busy after {waited:.0f} s (load {load[0]:.1f}, CPU {busy:.0%} busy, "
                f"others: {others}); measuring anyway"
            )
            return {
                "load": load,
                "cpu_busy": busy,
                "waited_s": waited,
                "busy": True,
                "others": others,
            }
        log(
            f"machine busy (load {load[0]:.1f}, CPU {busy:.0%} busy, others: {others or 'none'}): "
            f"waiting {every:.0f} s"
        )
        t = time.monotonic()
        while time.monotonic() - t < every:
            check_deadline()
            time.sleep(1.0)
        waited += every


def machine_info() -> dict:
    """Cores, memory, kernel, Python, the versions of the servers' packages, and the last
    commit touching local_bridge/ (with a mark when the tree has uncommitted changes)."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or "?",
        "mem_mib": int((_proc_field("/proc/meminfo", "MemTotal") or "0").split()[0]) // 1024,
        "lb_commit": _lb_commit(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": versions(VERSIONS),
    }


VERSIONS = (
    "local-bridge",
    "flask",
    "flask-sock",
    "simple-websocket",
    "gunicorn",
    "gevent",
    "websockets",
    "picows",
    "aiofastnet",
    "flask-socketio",
    "python-socketio",
    "python-engineio",
)


def versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """The installed version of each package (None when it is not installed)."""
    found: dict[str, str | None] = {}
    for pkg in packages:
        try:
            found[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            found[pkg] = None
    return found


def _proc_field(path: str, key: str) -> str | None:
    """The value of the first ``key: value`` line of a /proc file."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _lb_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args, "--", "local_bridge"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()

    try:
        commit, dirty = git("log", "-1", "--format=%h %ci"), git("status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (commit or "?") + (" + uncommitted changes" if dirty else "")
