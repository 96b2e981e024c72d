"""Processes: children started in sessions of their own and stopped for sure, what /proc says
about a process (CPU, RSS, threads, fds, children), and the few system odds and ends."""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

from bench.control import check_deadline
from bench.wsclient import HOST

CLK_TCK = os.sysconf("SC_CLK_TCK")
CHILDREN: list[subprocess.Popen] = []  # every child still running, for kill_all_children()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def raise_nofile() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --------------------------------------------------------------------------- children


def _child_setup() -> None:
    """In each child: die with the parent (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def spawn(cmd: list[str], cgroup: Path | None = None, **kwargs) -> subprocess.Popen:
    """Start a child in a session of its own (and, given ``cgroup``, in that cgroup)."""
    setup = _child_setup if cgroup is None else _joining(cgroup)
    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=setup, **kwargs)
    CHILDREN.append(proc)
    return proc


def _joining(cgroup: Path):
    """A child setup that also joins ``cgroup`` before exec, so every process it forks is in
    it too."""
    procs = str(cgroup / "cgroup.procs")

    def setup() -> None:
        _child_setup()
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    return setup


def terminate(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``grace`` seconds."""
    if proc is None:
        return
    if proc.poll() is None:
        signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    signal_group(proc.pid, signal.SIGKILL)  # what is left (gunicorn workers, threads in I/O)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    if proc in CHILDREN:
        CHILDREN.remove(proc)


def kill_all_children() -> None:
    for proc in list(CHILDREN):
        signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
    CHILDREN.clear()


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class LineReader:
    """Read JSON lines from a child's stdout with a timeout (no blocking readline)."""

    def __init__(self, proc: subprocess.Popen, name: str):
        self.proc = proc
        self.name = name
        self.fd = proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buf = b""

    def read(self, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            check_deadline()
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no answer within {timeout:.0f} s")
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise RuntimeError(f"{self.name} exited (status {self.proc.poll()})")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


# --------------------------------------------------------------------------- /proc


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the ``(comm)`` field: [state, ppid, pgrp, ...]."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def proc_status(pid: int, key: str) -> str | None:
    """One field of /proc/PID/status (``VmRSS``, ``Threads``...), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name == key:
                    return value.strip()
    except OSError:
        pass
    return None


def _first_int(value: str | None) -> int | None:
    return int(value.split()[0]) if value else None


def rss_kib(pid: int) -> int | None:
    return _first_int(proc_status(pid, "VmRSS"))


def hwm_kib(pid: int) -> int | None:
    """Peak RSS."""
    return _first_int(proc_status(pid, "VmHWM"))


def threads_of(pid: int) -> int | None:
    return _first_int(proc_status(pid, "Threads"))


def fds_of(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far."""
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK if fields else None


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` so far (zeros when it is gone)."""
    fields = proc_stat(pid)
    return (int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK) if fields else (0.0, 0.0)


def _processes(field: int, value: int) -> list[int]:
    """Live (not zombie) processes whose /proc/PID/stat field ``field`` is ``value``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = proc_stat(int(name))
            if fields and len(fields) > field and fields[field] == str(value) and fields[0] != "Z":
                found.append(int(name))
    return sorted(found)


def children_of(ppid: int) -> list[int]:
    return _processes(1, ppid)


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``."""
    return _processes(2, pgid)


def ancestors(pid: int) -> set[int]:
    found = set()
    for _ in range(50):
        fields = proc_stat(pid)
        if not fields or int(fields[1]) <= 1:
            break
        pid = int(fields[1])
        found.add(pid)
    return found


def cpu_times() -> list[int]:
    """The machine's CPU time so far, in ticks: the fields of /proc/stat's ``cpu`` line
    (user, nice, system, idle, iowait, irq, softirq, steal, ...)."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]
