"""CPU caps: a server process in a cgroup of its own allowed a number of cores (cgroup v1
``cpu.cfs_quota_us`` or v2 ``cpu.max``; needs a writable cpu controller, i.e. root). The groups
are made under ``local_bridge_bench-<pid>`` and removed on every way out."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.control import log
from bench.procs import spawn, terminate

CFS_PERIOD_US = 100_000
# this run's cgroups: kind ("v1"/"v2"), the cpu hierarchy's root, our parent group, groups made
CGROUPS: dict[str, Any] = {"kind": None, "base": None, "parent": None, "made": [], "count": 0}
CGROUP_PREFIX = "local_bridge_bench-"


def cgroup_cpu_base() -> tuple[str, Path] | str:
    """("v1" or "v2", the root of the hierarchy with the cpu controller), or why there is none."""
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").exists():
        return "v1", v1
    v2 = Path("/sys/fs/cgroup")
    try:
        controllers = (v2 / "cgroup.controllers").read_text().split()
    except OSError:
        return (
            "no cgroup cpu controller (neither /sys/fs/cgroup/cpu nor a cgroup v2 /sys/fs/cgroup)"
        )
    if "cpu" not in controllers:
        return f"the cgroup v2 hierarchy /sys/fs/cgroup offers no cpu controller ({' '.join(controllers)})"
    return "v2", v2


def cgroup_setup() -> str | None:
    """Make this run's parent cgroup and check that a child really lands in a capped group of
    it; None when it does, else why not (the capped cases are then skipped)."""
    found = cgroup_cpu_base()
    if isinstance(found, str):
        return found
    kind, base = found
    CGROUPS.update(kind=kind, base=base)
    remove_stale_cgroups(base)
    try:
        if kind == "v2" and "cpu" not in (base / "cgroup.subtree_control").read_text().split():
            (base / "cgroup.subtree_control").write_text("+cpu")  # so our groups get cpu.max
        parent = base / f"{CGROUP_PREFIX}{os.getpid()}"
        parent.mkdir()
        CGROUPS["parent"] = parent
        if kind == "v2":
            (parent / "cgroup.subtree_control").write_text("+cpu")
        probe = cgroup_new(0.1)
        proc = spawn(
            [sys.executable, "-c", "import time; time.sleep(30)"],
            cgroup=probe,
            stdin=subprocess.DEVNULL,
        )
        try:
            where = cgroup_of(proc.pid)
        finally:
            terminate(proc, grace=2.0)
        cgroup_remove(probe)
    except (OSError, subprocess.SubprocessError) as exc:
        remove_cgroups()
        return f"cannot cap a process in {base} (cgroup {kind}): {exc}"
    if where != cgroup_rel(probe):
        remove_cgroups()
        return f"a process put into {probe} ended up in cgroup {where!r}"
    return None


def cgroup_new(cores: float) -> Path:
    """A new group under this run's parent, allowed ``cores`` CPUs per period."""
    CGROUPS["count"] += 1
    path = CGROUPS["parent"] / f"server-{os.getpid()}-{CGROUPS['count']}"
    path.mkdir()
    CGROUPS["made"].append(path)
    quota = max(1000, round(cores * CFS_PERIOD_US))  # the kernel's minimum quota is 1 ms
    if CGROUPS["kind"] == "v1":
        (path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
        (path / "cpu.cfs_quota_us").write_text(str(quota))
    else:
        (path / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
    return path


def cgroup_rel(path: Path) -> str:
    """``path`` as /proc/PID/cgroup names it."""
    return "/" + str(path.relative_to(CGROUPS["base"]))


def cgroup_of(pid: int) -> str | None:
    """The group of ``pid`` in the hierarchy of the cpu controller."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if (CGROUPS["kind"] == "v2" and not controllers) or "cpu" in controllers.split(","):
                    return path
    except (OSError, ValueError):
        pass
    return None


def cgroup_throttling(path: Path | None) -> tuple[int, int] | None:
    """(periods, periods throttled) of a group so far (cpu.stat: same keys in v1 and v2)."""
    if path is None:
        return None
    try:
        stat = dict(line.split() for line in (path / "cpu.stat").read_text().splitlines())
        return int(stat["nr_periods"]), int(stat["nr_throttled"])
    except (OSError, KeyError, ValueError):
        return None


def cgroup_remove(path: Path, wait: float = 5.0) -> None:
    """rmdir a group once its processes are gone (a killed process leaves it a moment late)."""
    end = time.monotonic() + wait
    while True:
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            if time.monotonic() < end:
                time.sleep(0.1)
                continue
            log(f"could not remove the cgroup {path}: {exc}")
            return
        if path in CGROUPS["made"]:
            CGROUPS["made"].remove(path)
        return


def remove_cgroups() -> None:
    """Remove every group this run made, and its parent (after the children are killed)."""
    for path in list(reversed(CGROUPS["made"])):
        cgroup_remove(path)
    if CGROUPS["parent"] is not None:
        cgroup_remove(CGROUPS["parent"])
        CGROUPS["parent"] = None


def remove_stale_cgroups(base: Path) -> None:
    """Remove the empty groups of earlier runs that died without cleaning up (SIGKILL)."""
    for parent in base.glob(CGROUP_PREFIX + "*"):
        pid = parent.name[len(CGROUP_PREFIX) :]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        for path in [*parent.glob("server-*"), parent]:
            try:
                path.rmdir()
            except OSError:
                pass  # still busy or not ours to remove: leave it


def capped_use(cap: float, cpu_each: list[float], window: float, before: list, after: list) -> dict:
    """Each capped server's share of its quota over the saturation window (CPU s / (cap x
    window): near 1, the cap was the limit) and the share of its periods it was throttled in."""
    throttled = []
    for a, b in zip(before, after):
        periods = b[0] - a[0] if a and b else 0
        throttled.append(round((b[1] - a[1]) / periods, 3) if periods > 0 else None)
    return {
        "quota_use": [round(c / (cap * window), 3) if window > 0 else None for c in cpu_each],
        "throttled_share": throttled,
    }
