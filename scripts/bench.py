#!/usr/bin/env python3
"""Benchmark local_bridge against peer Python WebSocket event buses (run it as ``scripts/bench``).

Targets (one server process each, 127.0.0.1 only, started fresh for every measurement):

* ``local_bridge``: ``local-bridge serve`` (gunicorn, gevent worker; product defaults except
  CONNECT_RATE=0, MESSAGE_RATE=0, MAX_CONNECTIONS=N+100 and a throw-away SQLite file);
* ``websockets``: asyncio + ``websockets.broadcast()`` (``scripts/peers/websockets_server.py``);
* ``flask-sock``: naive flask-sock loop ``for ws in clients: ws.send(text)`` under gunicorn's
  threaded worker (``scripts/peers/flask_sock_naive.py``);
* ``flask-socketio``: Flask-SocketIO, threading mode, under gunicorn's threaded worker
  (``scripts/peers/socketio_server.py``), spoken to over the raw Engine.IO 4 WebSocket transport.

For each N, each round runs every target once, in turn (A,B,C,D,A,B,C,D...). One measurement:
start the server; open N subscribers (``scripts/loadgen.py clients``, one epoll loop per
process); read the server's RSS before and after; publish at 20 events/s for a few seconds
(latency); publish as fast as ``--publishers`` keep-alive HTTP connections allow for
``--duration`` seconds (saturation: deliveries counted at the clients, CPU from /proc); wait for
the stragglers; stop everything. A slow-client scenario follows for local_bridge at N=1,000.

The Redis scenario (``--redis-n``, skipped with a note when Redis is unreachable) measures the
same way, alternating: local_bridge in memory; one process on Redis; two processes on the same
Redis (subscribers and publishing connections split between them); and the two processes again
with ``--followers`` extra clients (``loadgen.py followers``) that either stay connected
(*steady*) or keep dropping their connection and resuming on the other process (*resuming*),
every follower's stream checked against a witness's. Its ratios: two processes / one, and
resuming / steady (the cost of resume to live delivery). Since the client processes share the
cores with the servers, an uncapped pair is soon bound by the machine, not by the servers: the
*capped* cases (``--redis-server-cpu C``, default 0.4; 0 skips them) run one and two processes
again with each server process (gunicorn master and worker) in a cgroup of its own allowed C
cores (cgroup v1 ``cpu.cfs_quota_us`` or v2 ``cpu.max``; needs a writable cpu controller, i.e.
root, else they are skipped with a note), so the servers together leave cores to the clients;
the >= 1.5x target is judged on that pair, and each server's share of its quota is reported.
The cgroups are made under ``local_bridge_bench-<pid>`` and removed on every way out.

``--baseline-tree DIR`` adds the target ``local_bridge-baseline``: the same server run from
another checkout (``PYTHONPATH``), for before/after comparisons side by side.

The generated part of ``docs/benchmarks.md`` (between ``<!-- bench:start -->`` and
``<!-- bench:end -->``) and ``docs/benchmarks.png`` are rewritten; the rest of the file is kept.
"""
from __future__ import annotations

import argparse
import atexit
import ctypes
import datetime as dt
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis  # a dependency of local_bridge itself, so in the README's .venv

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / "peers"
LOADGEN = HERE / "loadgen.py"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_MARK = "<!-- bench:start -->"
END_MARK = "<!-- bench:end -->"
ALL_TARGETS = ("local_bridge", "websockets", "flask-sock", "flask-socketio")
EXTRA_TARGETS = ("local_bridge-gthread", "local_bridge-baseline")
BASELINE = {"tree": ""}  # --baseline-tree: another checkout, for before/after comparisons
# the Redis scenario: one or two `local-bridge serve` processes sharing one Redis
REDIS_TARGETS = ("local_bridge-redis", "local_bridge-redis-x2")
LABELS = {
    "local_bridge": "local_bridge (gevent)",
    "local_bridge-gthread": "local_bridge (gthread)",
    "local_bridge-baseline": "local_bridge (gevent), baseline tree",
    "local_bridge-redis": "local_bridge, Redis backplane, 1 process",
    "local_bridge-redis-x2": "local_bridge, Redis backplane, 2 processes",
    "websockets": "websockets (asyncio)",
    "flask-sock": "flask-sock naive (gthread)",
    "flask-socketio": "Flask-SocketIO (threading)",
}

STOP = {"flag": False}  # the global deadline / interrupt flag every loop checks
DEADLINE = {"t": float("inf")}
CHILDREN: list[subprocess.Popen] = []


class Deadline(Exception):
    """The run's global deadline passed (or it was interrupted)."""


def check_deadline() -> None:
    if STOP["flag"] or time.monotonic() > DEADLINE["t"]:
        STOP["flag"] = True
        raise Deadline("global deadline reached")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# =========================================================================== processes

def _child_setup() -> None:
    """In each child: die with the parent (PR_SET_PDEATHSIG), keep the raised fd limit."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def spawn(cmd: list[str], cgroup: Path | None = None, **kwargs) -> subprocess.Popen:
    """Start a child in a session of its own (and, given ``cgroup``, in that cgroup)."""
    setup = _child_setup
    if cgroup is not None:
        procs = str(cgroup / "cgroup.procs")

        def setup() -> None:  # joined before exec, so every process it forks is in it too
            _child_setup()
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=setup, **kwargs)
    CHILDREN.append(proc)
    return proc


def terminate(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``grace`` seconds."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # whatever is left of the group (gunicorn workers, threads stuck in I/O)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    if proc in CHILDREN:
        CHILDREN.remove(proc)


def kill_all_children() -> None:
    for proc in list(CHILDREN):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
    CHILDREN.clear()


def raise_nofile() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def server_cpu_split(servers: list, before: tuple[float, float] | None = None) -> tuple[float, float]:
    """(user, system) CPU seconds of the servers' processes (minus ``before``)."""
    user = system = 0.0
    for pid in (pid for server in servers for pid in server.pids()):
        fields = proc_stat(pid)
        if fields:
            user += int(fields[11]) / CLK_TCK
            system += int(fields[12]) / CLK_TCK
    if before:
        return round(user - before[0], 2), round(system - before[1], 2)
    return user, system


def cpu_seconds(pid: int) -> float:
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK if fields else 0.0


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def threads_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children_of(ppid: int) -> list[int]:
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = proc_stat(int(name))
            if fields and fields[1] == str(ppid) and fields[0] != "Z":
                kids.append(int(name))
    return sorted(kids)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


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
            import select
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


# =========================================================================== CPU caps (cgroups)

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
        return "no cgroup cpu controller (neither /sys/fs/cgroup/cpu nor a cgroup v2 /sys/fs/cgroup)"
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
        proc = spawn([sys.executable, "-c", "import time; time.sleep(30)"], cgroup=probe,
                     stdin=subprocess.DEVNULL)
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
        pid = parent.name[len(CGROUP_PREFIX):]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        for path in [*parent.glob("server-*"), parent]:
            try:
                path.rmdir()
            except OSError:
                pass  # still busy or not ours to remove: leave it


# =========================================================================== HTTP helpers

def http_json(port: int, method: str, path: str, body: Any = None, timeout: float = 10.0):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=payload,
                     headers={"Content-Type": "application/json"} if payload else {})
        response = conn.getresponse()
        data = response.read()
        try:
            return response.status, json.loads(data) if data else None
        except ValueError:
            return response.status, data.decode("utf-8", "replace")
    finally:
        conn.close()


# =========================================================================== servers

class Server:
    """One target server process (and, for gunicorn, its worker); given ``cpu_cap``, both in
    a cgroup of their own allowed that many cores."""

    def __init__(self, target: str, n: int, workdir: Path, max_queue: int | None = None,
                 heartbeat: float | None = None, redis_url: str | None = None,
                 redis_prefix: str | None = None, index: int = 0, cpu_cap: float | None = None):
        self.target = target
        self.n = n
        self.port = free_port()
        self.http_port = self.port
        self.proto = "socketio" if target == "flask-socketio" else "bus"
        self.health = "/api/system/health" if target.startswith("local_bridge") else "/health"
        self.log_path = workdir / f"{target}-{n}-{os.getpid()}-{int(time.time() * 1000)}-{index}.log"
        self.proc: subprocess.Popen | None = None
        self.max_queue = max_queue
        self.heartbeat = heartbeat
        self.redis_url, self.redis_prefix = redis_url, redis_prefix
        self.cpu_cap = cpu_cap
        self.cgroup: Path | None = None
        self._log = None

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")}
        env["PYTHONUNBUFFERED"] = "1"
        py = sys.executable
        threads = self.n + 64
        gunicorn = [py, "-m", "gunicorn", "-w", "1", "-k", "gthread", "--threads", str(threads),
                    "--worker-connections", str(self.n + 100), "--backlog", "2048",
                    "--bind", f"{HOST}:{self.port}", "--timeout", "120",
                    "--graceful-timeout", "3", "--keep-alive", "30", "--log-level", "warning",
                    "--chdir", str(PEERS)]
        if self.target.startswith("local_bridge"):
            exe = Path(py).with_name("local-bridge")
            cmd = [str(exe), "serve"] if exe.exists() else [py, "-m", "local_bridge.cli", "serve"]
            if self.target == "local_bridge-baseline":  # the other tree's package comes first
                env["PYTHONPATH"] = BASELINE["tree"]
                cmd = [py, "-m", "local_bridge.cli", "serve"]
            env.update({
                "LOCAL_BRIDGE_HOST": HOST,
                "LOCAL_BRIDGE_PORT": str(self.port),
                "LOCAL_BRIDGE_CONNECT_RATE": "0",
                "LOCAL_BRIDGE_MESSAGE_RATE": "0",
                "LOCAL_BRIDGE_MAX_CONNECTIONS": str(self.n + 100),
                "LOCAL_BRIDGE_DATABASE_URL": f"sqlite:///{self.log_path.with_suffix('.db')}",
                "LOCAL_BRIDGE_WORKER_CLASS": "gthread" if self.target.endswith("gthread") else "gevent",
            })
            if self.max_queue is not None:
                env["LOCAL_BRIDGE_MAX_QUEUE"] = str(self.max_queue)
            if self.heartbeat is not None:
                env["LOCAL_BRIDGE_HEARTBEAT_INTERVAL"] = str(self.heartbeat)
            if self.redis_url:
                env["LOCAL_BRIDGE_REDIS_URL"] = self.redis_url
                env["LOCAL_BRIDGE_REDIS_PREFIX"] = self.redis_prefix or "bench:"
            return cmd, env
        if self.target == "websockets":
            self.http_port = free_port()
            return [py, str(PEERS / "websockets_server.py"), "--port", str(self.port),
                    "--http-port", str(self.http_port)], env
        if self.target == "flask-sock":
            return gunicorn + ["flask_sock_naive:app"], env
        if self.target == "flask-socketio":
            return gunicorn + ["socketio_server:app"], env
        raise ValueError(self.target)

    def start(self, timeout: float = 60.0) -> None:
        cmd, env = self.command()
        self._log = open(self.log_path, "wb")
        if self.cpu_cap:
            self.cgroup = cgroup_new(self.cpu_cap)
        # `python -m` puts the working directory first on sys.path: the baseline must run
        # from its own tree, or it would import this one.
        cwd = BASELINE["tree"] if self.target == "local_bridge-baseline" else str(ROOT)
        self.proc = spawn(cmd, cgroup=self.cgroup, env=env, stdin=subprocess.DEVNULL,
                          stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd)
        end = time.monotonic() + timeout
        while True:
            check_deadline()
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.target} exited at start (status {self.proc.returncode}); "
                                   f"see {self.log_path}")
            try:
                status, _ = http_json(self.http_port, "GET", self.health, timeout=2)
                if status == 200 and self.worker_pid():
                    self.check_cgroup()
                    return
            except OSError:
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"{self.target} not ready within {timeout:.0f} s")
            time.sleep(0.1)

    @property
    def gunicorn(self) -> bool:
        return self.target != "websockets"

    def worker_pid(self) -> int | None:
        if self.proc is None:
            return None
        if not self.gunicorn:
            return self.proc.pid
        kids = children_of(self.proc.pid)
        return kids[0] if kids else None

    def pids(self) -> list[int]:
        pids = [self.proc.pid] if self.proc else []
        worker = self.worker_pid()
        if worker and worker not in pids:
            pids.append(worker)
        return pids

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def check_cgroup(self) -> None:
        """A capped server's master and worker must both be in its group, or the cap is fake."""
        if self.cgroup is None:
            return
        want = cgroup_rel(self.cgroup)
        wrong = {pid: cgroup_of(pid) for pid in self.pids() if cgroup_of(pid) != want}
        if wrong:
            raise RuntimeError(f"{self.target}: processes outside their cgroup {want}: {wrong}")

    def stop(self) -> None:
        terminate(self.proc, grace=12.0)
        if self._log:
            self._log.close()
            self._log = None
        if self.cgroup is not None:  # its processes are gone now
            cgroup_remove(self.cgroup)
            self.cgroup = None

    def problems(self) -> list[str]:
        """Error lines in the server's log (tracebacks, worker timeouts, errors)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        keys = ("Traceback", "ERROR", "CRITICAL", "WORKER TIMEOUT", "Exception", "Error:")
        lines = [line for line in text.splitlines() if any(k in line for k in keys)]
        return lines[:20]


class Loadgen:
    """One ``loadgen.py clients`` process."""

    def __init__(self, server: Server, index: int, deadline: float):
        self.index = index
        self.proc = spawn([sys.executable, str(LOADGEN), "clients", "--port", str(server.port),
                           "--proto", server.proto, "--deadline", str(deadline)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(ROOT))
        self.reader = LineReader(self.proc, f"loadgen {index}")

    def send(self, cmd: dict) -> None:
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def call(self, cmd: dict, timeout: float = 30.0) -> dict:
        self.send(cmd)
        return self.reader.read(timeout)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def close(self) -> None:
        try:
            self.send({"cmd": "quit"})
            self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        terminate(self.proc, grace=2.0)


class Followers:
    """One ``loadgen.py followers`` process: the Redis scenario's steady or resuming clients."""

    def __init__(self, servers: list[Server], kind: str, opts, deadline: float):
        self.kind = kind
        self.proc = spawn([sys.executable, str(LOADGEN), "followers",
                           "--ports", ",".join(str(s.port) for s in servers),
                           "--clients", str(opts.followers), "--kind", kind,
                           "--live", str(opts.follow_live), "--away", str(opts.follow_away),
                           "--deadline", str(deadline)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(ROOT))
        self.reader = LineReader(self.proc, f"followers ({kind})")
        started = self.reader.read(60)
        if started.get("event") != "started" or started.get("subscribed") != opts.followers:
            raise RuntimeError(f"followers did not start: {started}")

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def finish(self) -> dict:
        """Stop them; their counts and their streams checked against the witness's."""
        self.proc.stdin.write(b"quit\n")
        self.proc.stdin.flush()
        return self.reader.read(60)

    def close(self) -> None:
        terminate(self.proc, grace=2.0)


def run_publisher(port: int | str, conns: int, duration: float, rate: float, deadline: float,
                  on_started=None, pad: int = 0) -> dict:
    proc = spawn([sys.executable, str(LOADGEN), "publish", "--port", str(port),
                  "--conns", str(conns), "--duration", str(duration), "--rate", str(rate),
                  "--deadline", str(deadline), "--pad", str(pad)],
                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, cwd=str(ROOT))
    try:
        reader = LineReader(proc, "publisher")
        first = reader.read(30)
        assert first.get("event") == "started", first
        if on_started:
            on_started()
        result = reader.read(duration + 60)
        return result
    finally:
        terminate(proc, grace=5.0)


# =========================================================================== one measurement

def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def gather(lgs: list[Loadgen], latencies: bool = False, exclude: dict[int, list[int]] | None = None) -> list[dict]:
    for lg in lgs:
        lg.send({"cmd": "stats", "latencies": latencies,
                 "exclude": (exclude or {}).get(lg.index, [])})
    return [lg.reader.read(30) for lg in lgs]


def drain(lgs: list[Loadgen], expected: int, quiet: float, limit: float,
          exclude: dict[int, list[int]] | None = None) -> list[dict]:
    """Wait until the clients received ``expected`` events, or nothing came for ``quiet``
    seconds, or ``limit`` seconds passed; return the last stats."""
    end = time.monotonic() + limit
    last_total, last_change = -1, time.monotonic()
    while True:
        stats = gather(lgs, exclude=exclude)
        total = sum(s["received"] for s in stats)
        now = time.monotonic()
        if total != last_total:
            last_total, last_change = total, now
        if total >= expected or now - last_change >= quiet or now >= end:
            return stats
        time.sleep(0.2)


def measure(target: str, n: int, opts, workdir: Path, stall: bool = False,
            max_queue: int | None = None, followers: str | None = None,
            cpu_cap: float | None = None) -> dict:
    """One server (two for ``-x2`` targets), N subscribers spread over them: connect, RSS,
    latency at a fixed rate, saturation. ``followers``: a ``loadgen.py followers`` process of
    that kind runs through both phases (the Redis scenario). ``cpu_cap``: each server process
    capped at that many cores (its share of the quota used is recorded)."""
    r: dict[str, Any] = {"target": target, "n": n, "stall": stall, "t": time.time()}
    if cpu_cap:
        r["server_cpu"] = cpu_cap
    if followers:
        r["followers"] = followers
    slow = max_queue is not None  # the slow-client scenario (both of its runs)
    redis_url = opts.redis_url if target in REDIS_TARGETS else None
    prefix = f"bench-{os.getpid()}-{int(time.time() * 1000)}:" if redis_url else None
    servers = [Server(target, n, workdir, max_queue=max_queue,
                      heartbeat=opts.slow_heartbeat if slow and opts.slow_heartbeat else None,
                      redis_url=redis_url, redis_prefix=prefix, index=i, cpu_cap=cpu_cap)
               for i in range(2 if target.endswith("-x2") else 1)]
    server = servers[0]
    pad = opts.slow_pad if slow else 0
    lgs: list[Loadgen] = []
    fol: Followers | None = None
    procs = max(opts.loadgen_procs or (1 if n <= 1000 else 2), len(servers))
    lg_deadline = max(60.0, DEADLINE["t"] - time.monotonic() + 30)
    try:
        for s in servers:
            s.start()
        ports = ",".join(str(s.http_port) for s in servers)  # known once started
        workers = [s.worker_pid() for s in servers]
        worker = workers[0]
        # warm up the publish path (no subscriber yet), then the idle baseline
        for s in servers:
            for _ in range(3):
                http_json(s.http_port, "POST", "/api/websocket/broadcast",
                          {"type": "bench.event", "channel": "jobs", "data": {"t": time.time()}})
        time.sleep(0.5)
        rss0 = sum(rss_kib(w) for w in workers)
        threads0 = threads_of(worker)
        # client process i talks to server i mod the number of servers
        lgs = [Loadgen(servers[i % len(servers)], i, lg_deadline) for i in range(procs)]
        shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        sample = max(1, opts.samplers // procs)
        t0 = time.monotonic()
        for lg, share in zip(lgs, shares):
            lg.send({"cmd": "connect", "n": share, "concurrency": opts.concurrency,
                     "timeout": opts.connect_timeout, "sample": sample,
                     "small_rcvbuf": [0] if (stall and lg.index == 0) else []})
        replies = [lg.reader.read(opts.connect_timeout + 30) for lg in lgs]
        r["connect_s"] = time.monotonic() - t0
        ready = sum(x["ok"] for x in replies)
        setup = sorted(v for x in replies for v in x["setup"])
        r.update(ready=ready, connect_failures=_merge([x["failures"] for x in replies]),
                 setup_p50_ms=_ms(pct(setup, 50)), setup_p99_ms=_ms(pct(setup, 99)),
                 connect_rate=ready / r["connect_s"] if r["connect_s"] else None)
        time.sleep(opts.settle)
        rss1 = sum(rss_kib(w) for w in workers)
        r.update(rss_before_kib=rss0, rss_after_kib=rss1,
                 rss_per_conn_kib=(rss1 - rss0) / ready if ready else None,
                 threads_before=threads0, threads_after=threads_of(worker))
        if ready < n:
            log(f"{target} N={n}: only {ready} of {n} connected: {r['connect_failures']}")
        exclude = {0: [0]} if stall else None
        if stall:
            lgs[0].call({"cmd": "stall", "index": 0})
        others = ready - (1 if stall else 0)
        if followers:
            fol = Followers(servers, followers, opts, lg_deadline)

        # ---- latency at a fixed rate
        check_deadline()
        for lg in lgs:
            lg.call({"cmd": "reset", "decode_every": 1})
        pub = run_publisher(ports, 1, opts.latency_duration, opts.rate,
                            opts.latency_duration + 30, pad=pad)
        expected = pub["ok"] * others
        stats = drain(lgs, expected, quiet=1.5, limit=10, exclude=exclude)
        stats = gather(lgs, latencies=True, exclude=exclude)
        received = sum(s["received"] for s in stats)
        lat = [x for s in stats for x in s["latencies"]]
        r.update(lat_events=pub["ok"], lat_rate=pub["rate"], lat_expected=expected,
                 lat_received=received, lat_missing=expected - received,
                 p50_ms=_ms(pct(lat, 50)), p99_ms=_ms(pct(lat, 99)), lat_max_ms=_ms(max(lat) if lat else None),
                 lat_samples=len(lat), lat_errors=pub["errors"])

        # ---- saturation
        check_deadline()
        for lg in lgs:
            lg.call({"cmd": "reset", "decode_every": opts.sat_decode_every})
        window: dict[str, Any] = {}

        def started() -> None:
            window["s0"] = gather(lgs, exclude=exclude)
            window["c0"] = (sum(s.cpu() for s in servers), sum(lg.cpu() for lg in lgs))
            window["c0_split"] = server_cpu_split(servers)
            window["c0_each"] = [s.cpu() for s in servers]
            window["thr0"] = [cgroup_throttling(s.cgroup) for s in servers]
            window["t0"] = time.monotonic()
            window["m0"] = cpu_times()  # the whole machine: Redis and foreign load included
            window["f0"] = fol.cpu() if fol else 0.0
            if opts.profile:
                window["spy"] = start_py_spy(worker, opts.duration, workdir / f"{target}-{n}.spy")

        duration = opts.slow_duration if slow else opts.duration
        watcher = StallWatcher(server, ready, lgs[0]) if stall else None
        try:
            pub = run_publisher(ports, opts.publishers, duration, 0,
                                duration + 60, pad=pad,
                                on_started=lambda: (started(), watcher and watcher.start()))
        finally:
            if watcher:
                watcher.stop()
        s1 = gather(lgs, exclude=exclude)
        c1 = (sum(s.cpu() for s in servers), sum(lg.cpu() for lg in lgs))
        r["cpu_per_server_s"] = [round(s.cpu() - c0, 2) for s, c0 in zip(servers, window["c0_each"])]
        r["cpu_window_s"] = time.monotonic() - window["t0"]
        r["machine_busy"] = round(busy_share(window["m0"], cpu_times()), 3)
        if cpu_cap:
            r.update(capped_use(cpu_cap, r["cpu_per_server_s"], r["cpu_window_s"], window["thr0"],
                                [cgroup_throttling(s.cgroup) for s in servers]))
        if fol:
            r["cpu_followers_s"] = fol.cpu() - window["f0"]
        window["t_end"] = time.monotonic()
        if [s.worker_pid() for s in servers] != workers:  # a worker was replaced: CPU is meaningless
            r["worker_restarted"] = True
        r["cpu_clients_user_s"] = sum(b["cpu_user"] - a["cpu_user"] for a, b in zip(window["s0"], s1))
        r["cpu_clients_sys_s"] = sum(b["cpu_sys"] - a["cpu_sys"] for a, b in zip(window["s0"], s1))
        r["cpu_server_split"] = server_cpu_split(servers, window["c0_split"])
        if window.get("spy"):
            r["profile"] = finish_py_spy(*window["spy"])
        rate = 0.0
        for a, b in zip(window["s0"], s1):
            if b["t"] > a["t"]:
                rate += (b["received"] - a["received"]) / (b["t"] - a["t"])
        expected = pub["ok"] * others
        stats = drain(lgs, expected, quiet=opts.drain_quiet, limit=opts.drain_limit, exclude=exclude)
        drained_at = time.monotonic()
        stats = gather(lgs, latencies=True, exclude=exclude)
        received = sum(s["received"] for s in stats)
        lat = [x for s in stats for x in s["latencies"]]
        r.update(sat_events=pub["ok"], worker_pid=worker, sat_publish_rate=pub["rate"], sat_errors=pub["errors"],
                 sat_reconnects=pub["reconnects"], sat_recipients=pub["recipients"],
                 sat_http_p50_ms=pub["http_p50_ms"], sat_http_p99_ms=pub["http_p99_ms"],
                 deliveries_per_s=rate, sat_expected=expected, sat_received=received,
                 sat_missing=expected - received,
                 sat_p50_ms=_ms(pct(lat, 50)), sat_p99_ms=_ms(pct(lat, 99)),
                 sat_min_per_client=min(s["min"] for s in stats),
                 sat_max_per_client=max(s["max"] for s in stats),
                 closes=_merge([s["closes"] for s in stats]),
                 ready_after=sum(s["ready"] for s in stats),
                 cpu_server_s=c1[0] - window["c0"][0], cpu_clients_s=c1[1] - window["c0"][1],
                 cpu_publisher_s=pub.get("cpu_s"), sat_window_s=pub["elapsed"],
                 drain_s=drained_at - window["t_end"])
        if r.get("worker_restarted"):
            r["cpu_server_s"] = None
            r["cpu_server_split"] = None
            r["cpu_per_server_s"] = r["quota_use"] = None
        if stall:
            r["stalled"] = stalled_client_fate(lgs[0], server, opts)
            r["stalled"]["dropped_after_s"] = watcher.dropped_after
        if fol:
            r["followers_result"] = fol.finish()
        r["server_problems"] = [line for s in servers for line in s.problems()]
        return r
    except Deadline:
        raise
    except Exception as exc:  # one failed measurement must not lose the others
        log(f"{target} N={n}: FAILED: {exc!r}")
        r["error"] = repr(exc)
        r["server_problems"] = [line for s in servers for line in s.problems()]
        return r
    finally:
        if fol:
            fol.close()
        for lg in lgs:
            lg.close()
        for s in servers:
            s.stop()
        if prefix:
            forget_redis_keys(redis_url, prefix)


def capped_use(cap: float, cpu_each: list[float], window: float, before: list, after: list) -> dict:
    """Each capped server's share of its quota over the saturation window (CPU s / (cap x
    window): near 1, the cap was the limit) and the share of its periods it was throttled in."""
    throttled = []
    for a, b in zip(before, after):
        periods = b[0] - a[0] if a and b else 0
        throttled.append(round((b[1] - a[1]) / periods, 3) if periods > 0 else None)
    return {"quota_use": [round(c / (cap * window), 3) if window > 0 else None for c in cpu_each],
            "throttled_share": throttled}


def start_py_spy(pid: int, duration: float, path: Path):
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    proc = spawn([exe, "record", "--pid", str(pid), "--duration", str(max(1, int(duration) - 1)),
                  "--rate", "200", "--nonblocking", "--format", "raw", "-o", str(path)],
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, path


def finish_py_spy(proc: subprocess.Popen, path: Path) -> dict:
    """Top functions of a py-spy raw (collapsed stacks) profile: self and inclusive share."""
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
    terminate(proc, 2)
    self_counts: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {"error": f"no profile at {path}"}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        count = int(count)
        total += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].split("/")[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        if frames:
            self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count
    top_self = sorted(self_counts.items(), key=lambda kv: -kv[1])[:25]
    top_incl = sorted(incl.items(), key=lambda kv: -kv[1])[:40]
    return {"samples": total, "path": str(path),
            "self": [(f, round(100.0 * c / total, 1)) for f, c in top_self] if total else [],
            "inclusive": [(f, round(100.0 * c / total, 1)) for f, c in top_incl] if total else []}


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
            try:
                status, body = http_json(self.server.http_port, "GET", "/api/system/status", timeout=5)
                total = body["connections"]["total"] if status == 200 else self.ready
            except (OSError, KeyError, TypeError):
                continue
            if total < self.ready:
                self.dropped_after = time.monotonic() - self.t0
                self.lg.call({"cmd": "resume", "index": 0})
                return

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def stalled_client_fate(lg: Loadgen, server: Server, opts) -> dict:
    """Did the server close the slow client with 4008? Read it again and see."""
    fate: dict[str, Any] = {}
    try:
        status, body = http_json(server.http_port, "GET", "/api/system/status")
        fate["server_connections"] = body["connections"]["total"] if status == 200 else None
    except (OSError, KeyError, TypeError):
        fate["server_connections"] = None
    lg.call({"cmd": "resume", "index": 0})
    end = time.monotonic() + 10
    while True:
        state = lg.call({"cmd": "conn", "index": 0})
        if state["state"] == 5 or time.monotonic() > end:  # 5: CLOSED
            break
        time.sleep(0.25)
    fate.update(close_code=state["close_code"], closed=state["state"] == 5,
                events_received=state["seen"])
    return fate


def _merge(dicts: list[dict]) -> dict:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in (d or {}).items():
            out[k] = out.get(k, 0) + v
    return out


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1000.0


# =========================================================================== machine

def foreign_measurements() -> list[str]:
    """Other benchmark/capacity processes (not ours) that are using CPU."""
    mine = {os.getpid()} | {p.pid for p in CHILDREN} | ancestors(os.getpid())
    found = []
    samples = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in mine:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if "capacity.py" in cmd or "local-bridge serve" in cmd or "scripts/bench" in cmd:
            if _ancestor_is(int(name), os.getpid()):
                continue
            samples[int(name)] = (cmd, cpu_seconds(int(name)))
    if not samples:
        return []
    time.sleep(1.0)
    for pid, (cmd, before) in samples.items():
        busy = cpu_seconds(pid) - before
        if busy < 0:  # the pid was reused
            continue
        if "capacity.py" in cmd or "scripts/bench" in cmd or busy > 0.05:
            found.append(f"{pid} ({busy:.2f} CPU s/s) {cmd[:80]}")
    return found


def ancestors(pid: int) -> set[int]:
    found = set()
    for _ in range(50):
        fields = proc_stat(pid)
        if not fields or int(fields[1]) <= 1:
            break
        pid = int(fields[1])
        found.add(pid)
    return found


CASE_WAIT = {"left": 120.0}  # seconds all the per-measurement waits of one run may add up to


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


def cpu_times() -> tuple[int, int]:
    """The machine's (total, idle + iowait) CPU time so far, in ticks (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of the machine's CPU time spent busy between two ``cpu_times()``."""
    total, idle = after[0] - before[0], after[1] - before[1]
    return 1.0 - idle / total if total > 0 else 0.0


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
            log(f"machine still busy after {waited:.0f} s (load {load[0]:.1f}, CPU {busy:.0%} busy, "
                f"others: {others}); measuring anyway")
            return {"load": load, "cpu_busy": busy, "waited_s": waited, "busy": True, "others": others}
        log(f"machine busy (load {load[0]:.1f}, CPU {busy:.0%} busy, others: {others or 'none'}): "
            f"waiting {every:.0f} s")
        t = time.monotonic()
        while time.monotonic() - t < every:
            check_deadline()
            time.sleep(1.0)
        waited += every


def redis_unreachable(url: str) -> str | None:
    """None when Redis answers PING at ``url``, else why it does not."""
    try:
        redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping()
    except (OSError, ValueError, redis.RedisError) as exc:
        return repr(exc)
    return None


def forget_redis_keys(url: str, prefix: str) -> None:
    """Delete one measurement's keys (its sequence, history stream, presence)."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    except (OSError, redis.RedisError) as exc:
        log(f"could not delete the Redis keys {prefix}*: {exc!r}")


def machine_info() -> dict:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    from importlib import metadata
    for pkg in ("local-bridge", "flask", "flask-sock", "simple-websocket", "gunicorn", "gevent",
                "websockets", "flask-socketio", "python-socketio", "python-engineio"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %ci", "--",
                                 "local_bridge"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "local_bridge"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit = (commit or "?") + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_mib": mem, "lb_commit": commit,
            "python": platform.python_version(), "kernel": platform.release(),
            "versions": versions}


# =========================================================================== report

def med(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(x: float | None, digits: int = 0, unit: str = "") -> str:
    if x is None:
        return "—"
    if digits == 0:
        return f"{x:,.0f}{unit}"
    return f"{x:,.{digits}f}{unit}"


def summarize(results: list[dict], targets: list[str], ns: list[int]) -> dict:
    table = {}
    for n in ns:
        for t in targets:
            rows = [r for r in results if r["target"] == t and r["n"] == n and not r["stall"]
                    and not r.get("slow_client_baseline") and not r.get("scenario")]
            rs = [r for r in rows if "error" not in r]
            errs = [r for r in rows if "error" in r]
            if not rs:
                table[(t, n)] = {"rounds": 0, "errors": len(errs)}
                continue
            s = {"rounds": len(rs), "errors": len(errs)}
            for key in ("deliveries_per_s", "p50_ms", "p99_ms", "sat_p99_ms", "connect_s",
                        "rss_per_conn_kib", "cpu_server_s", "cpu_clients_s", "cpu_publisher_s",
                        "sat_publish_rate", "sat_window_s", "connect_rate", "setup_p99_ms"):
                s[key] = med([r.get(key) for r in rs])
            s["missing"] = sum(max(0, r.get("sat_missing") or 0) + max(0, r.get("lat_missing") or 0)
                               for r in rs)
            s["publish_errors"] = sum(sum((r.get("sat_errors") or {}).values())
                                      + sum((r.get("lat_errors") or {}).values()) for r in rs)
            s["expected"] = sum((r.get("sat_expected") or 0) + (r.get("lat_expected") or 0) for r in rs)
            s["ready_min"] = min(r.get("ready", 0) for r in rs)
            s["restarts"] = sum(1 for r in rs if r.get("worker_restarted"))
            # collapsed: clients lost, the worker killed, or (almost) nothing delivered
            s["collapsed"] = any(r.get("worker_restarted") or (r.get("ready_after") or 0) < 0.99 * n
                                 or (r.get("deliveries_per_s") or 0) < 0.01 * n for r in rs)
            s["closes"] = _merge([r.get("closes") or {} for r in rs])
            table[(t, n)] = s
    return table


def render(results: list[dict], targets: list[str], ns: list[int], opts, info: dict,
           started: dict, command: str, elapsed: float) -> str:
    table = summarize(results, targets, ns)
    out = []
    date = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    out.append(f"Generated by `{command}` on {date} in {elapsed / 60:.1f} min: "
               f"{info['cpus']} cores ({info['cpu_model']}), {info['mem_mib']:,} MiB, "
               f"Python {info['python']}, Linux {info['kernel']}. "
               f"Load average at start {started['load'][0]:.2f}"
               + (f", CPU {started['cpu_busy']:.0%} busy" if "cpu_busy" in started else "")
               + (f" (after waiting {started['waited_s']:.0f} s)" if started.get("waited_s") else "")
               + (" — **the machine was busy**" if started.get("busy") else "") + ".")
    out.append("")
    out.append(f"Rounds: {opts.rounds} (targets alternate within each round; medians shown), "
               f"saturation {opts.duration:g} s with {opts.publishers} publishing connections, "
               f"latency {opts.latency_duration:g} s at {opts.rate:g} events/s. Versions: "
               + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
               + f"; local_bridge code: last commit touching local_bridge/ {info.get('lb_commit')}.")
    out.append("")
    out.append("| N | server | deliveries/s | p50 ms | p99 ms | p99 ms saturated | connect s | "
               "RSS KiB/conn | missing | CPU s server | CPU s clients | CPU s publisher | "
               "events/s accepted |")
    out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in ns:
        for t in targets:
            s = table[(t, n)]
            if not s.get("rounds"):
                out.append(f"| {n:,} | {LABELS[t]} | failed ({s.get('errors')} errors) |"
                           + " |" * 10)
                continue
            missing = f"{s['missing']:,}"
            if s["expected"]:
                missing += f" ({100.0 * s['missing'] / s['expected']:.3g}%)" if s["missing"] else ""
            if s["closes"]:
                missing += " closes: " + ", ".join(f"{k}×{v}" for k, v in sorted(s["closes"].items()))
            if s["ready_min"] < n:
                missing += f"; only {s['ready_min']:,} connected"
            if s["publish_errors"]:
                missing += f"; {s['publish_errors']:,} publish errors"
            if s["restarts"]:
                missing += f"; worker killed (timeout) in {s['restarts']} round(s)"
            if s["collapsed"]:
                missing += " — **collapsed**"
            out.append(f"| {n:,} | {LABELS[t]} | {fmt(s['deliveries_per_s'])} | "
                       f"{fmt(s['p50_ms'], 1)} | {fmt(s['p99_ms'], 1)} | {fmt(s['sat_p99_ms'], 0)} | "
                       f"{fmt(s['connect_s'], 2)} | {fmt(s['rss_per_conn_kib'], 1)} | {missing} | "
                       f"{fmt(s['cpu_server_s'], 1)} | {fmt(s['cpu_clients_s'], 1)} | "
                       f"{fmt(s['cpu_publisher_s'], 1)} | {fmt(s['sat_publish_rate'])} |")
    out.append("")
    lb = "local_bridge"
    peers = [t for t in targets if t != lb]
    if lb in targets and peers:
        out.append("Ratios local_bridge / peer (deliveries/s: above 1 means local_bridge delivers more; "
                   "p99, connect time and RSS: below 1 means local_bridge is better):")
        out.append("")
        out.append("| N | peer | deliveries/s | p99 (20 ev/s) | p99 saturated | connect time | RSS/conn |")
        out.append("|---:|---|---:|---:|---:|---:|---:|")
        for n in ns:
            a = table[(lb, n)]
            for t in peers:
                b = table[(t, n)]
                cells = []
                for key in ("deliveries_per_s", "p99_ms", "sat_p99_ms", "connect_s", "rss_per_conn_kib"):
                    x, y = a.get(key), b.get(key)
                    if (a.get("collapsed") or b.get("collapsed")) and key in ("deliveries_per_s", "p99_ms", "sat_p99_ms"):
                        cells.append("— (" + ("peer" if b.get("collapsed") else "local_bridge") + " collapsed)")
                    else:
                        cells.append(f"{x / y:.2f}×" if x is not None and y else "—")
                out.append(f"| {n:,} | {LABELS[t]} | " + " | ".join(cells) + " |")
        out.append("")
    stall = [r for r in results if r["stall"]]
    if stall:
        base = [r for r in results if r.get("slow_client_baseline")]
        out.append(f"Slow client: local_bridge, N={stall[0]['n']:,}, LOCAL_BRIDGE_MAX_QUEUE="
                   f"{opts.slow_max_queue}; one client (4 KiB receive buffer, 536-byte MSS) stops "
                   "reading before the latency phase and resumes as soon as the server has dropped "
                   "it (its connection count, polled every 0.5 s) or after saturation. Saturation "
                   f"lasts {opts.slow_duration:g} s in both runs"
                   + (f", events carry {opts.slow_pad:,} extra characters" if opts.slow_pad else "")
                   + ", LOCAL_BRIDGE_HEARTBEAT_INTERVAL="
                   + (f"{opts.slow_heartbeat:g}" if opts.slow_heartbeat else "30 (default)")
                   + f". Figures are for the other {stall[0]['n'] - 1:,} clients; "
                   f"{len(stall)} round(s), alternating.")
        out.append("")
        out.append("| run | deliveries/s | p99 ms (20 ev/s) | p99 ms saturated | missing | "
                   "stalled client | connections after |")
        out.append("|---|---:|---:|---:|---:|---|---:|")
        for label, rs in (("no stall", base), ("one client stalled", stall)):
            ok = [r for r in rs if "error" not in r]
            if not ok:
                out.append(f"| {label} | failed |  |  |  |  |  |")
                continue
            fate = ""
            conns = "—"
            if label != "no stall":
                fates = [r.get("stalled") or {} for r in ok]
                fate = "; ".join(
                    (f"closed {f.get('close_code')}" if f.get("close_code") else
                     ("dropped without close frame" if f.get("closed") else "still open"))
                    + f" after {f.get('events_received', 0):,} events"
                    + (f", dropped {f['dropped_after_s']:.1f} s into saturation"
                       if f.get("dropped_after_s") is not None else ", not dropped") for f in fates)
                conns = ", ".join(str(f.get("server_connections")) for f in fates)
            out.append(f"| {label} | {fmt(med([r['deliveries_per_s'] for r in ok]))} | "
                       f"{fmt(med([r['p99_ms'] for r in ok]), 1)} | "
                       f"{fmt(med([r['sat_p99_ms'] for r in ok]))} | "
                       f"{sum(r['sat_missing'] + r['lat_missing'] for r in ok):,} | {fate} | {conns} |")
        okb = [r for r in base if "error" not in r]
        oks = [r for r in stall if "error" not in r]
        if okb and oks:
            d = med([r["deliveries_per_s"] for r in oks]) / med([r["deliveries_per_s"] for r in okb])
            p = _ratio(med([r["p99_ms"] for r in oks]), med([r["p99_ms"] for r in okb]))
            ps = _ratio(med([r["sat_p99_ms"] for r in oks]), med([r["sat_p99_ms"] for r in okb]))
            out.append("")
            out.append(f"Stalled / no stall: deliveries/s {d:.2f}×, p99 (20 ev/s) {p}, "
                       f"p99 saturated {ps}.")
        out.append("")
    out.extend(render_redis(results, opts))
    out.extend(render_targets(table, results, opts))
    problems = [(r["target"], r["n"], line) for r in results for line in r.get("server_problems") or []]
    errors = [(r["target"], r["n"], r["error"]) for r in results if "error" in r]
    if problems or errors:
        out.append("Errors seen during the run:")
        out.append("")
        for t, n, line in (errors + problems)[:20]:
            out.append(f"- {t} N={n}: `{line.strip()[:160]}`")
        out.append("")
    out.append("<details><summary>Every measurement (JSON lines)</summary>")
    out.append("")
    out.append("```")
    keep = ("target", "n", "stall", "slow_client_baseline", "ready", "connect_s", "rss_per_conn_kib",
            "threads_after", "p50_ms", "p99_ms", "lat_missing", "deliveries_per_s", "sat_events",
            "sat_publish_rate", "sat_missing", "sat_p99_ms", "sat_http_p99_ms", "cpu_server_s",
            "cpu_clients_s", "cpu_clients_user_s", "cpu_clients_sys_s", "cpu_server_split",
            "cpu_publisher_s", "closes", "stalled", "scenario", "followers", "cpu_followers_s",
            "followers_result", "server_cpu", "cpu_per_server_s", "quota_use", "throttled_share",
            "machine_busy", "error")
    for r in results:
        row = {k: (round(r[k], 2) if isinstance(r.get(k), float) else r[k]) for k in keep if k in r}
        out.append(json.dumps(row, separators=(",", ":")))
    out.append("```")
    out.append("")
    out.append("</details>")
    return "\n".join(out)


def case_rows(results: list[dict], n: int, target: str, followers: str | None,
              cap: float | None) -> list[dict]:
    """The Redis scenario's measurements of one case (failed ones included)."""
    return [r for r in results if r.get("scenario") == "redis" and r["n"] == n
            and r["target"] == target and r.get("followers") == followers
            and r.get("server_cpu") == cap]


def redis_medians(results: list[dict], opts) -> dict[tuple, dict]:
    """{(n, target, followers, cap): medians of the Redis scenario's measurements of that case}."""
    cores = os.cpu_count() or 1
    medians: dict[tuple, dict] = {}
    for n in opts.redis_ns:
        for target, followers, cap in redis_cases(opts):
            rs = [r for r in case_rows(results, n, target, followers, cap) if "error" not in r]
            if not rs:
                continue
            m = {key: med([r.get(key) for r in rs]) for key in
                 ("deliveries_per_s", "p50_ms", "p99_ms", "sat_p99_ms", "cpu_server_s", "cpu_clients_s")}
            m["machine"] = med([(r["cpu_server_s"] + r["cpu_clients_s"] + (r.get("cpu_publisher_s") or 0)
                                 + (r.get("cpu_followers_s") or 0)) / (cores * r["sat_window_s"])
                                for r in rs if r.get("cpu_server_s") is not None and r.get("sat_window_s")])
            m["per_cpu"] = med([r["deliveries_per_s"] * r["sat_window_s"] / r["cpu_server_s"]
                                for r in rs if r.get("cpu_server_s") and r.get("sat_window_s")])
            m["machine_busy"] = med([r.get("machine_busy") for r in rs])
            if cap:  # per server process, in the order of the servers
                for key in ("quota_use", "throttled_share"):
                    m[key] = [med([(r.get(key) or [None] * (i + 1))[i] for r in rs])
                              for i in range(2 if target.endswith("-x2") else 1)]
            medians[(n, target, followers, cap)] = m
    return medians


#: Quota use at least this: the cap was the limit. Machine CPU at least this: the machine was.
CAP_BOUND = 0.9
MACHINE_BOUND = 0.9


def quota_text(m: dict | None, key: str = "quota_use") -> str:
    """'98 %' or '97 % and 96 %': each capped server's median share of its quota (or ``key``)."""
    uses = (m or {}).get(key) or []
    return " and ".join(fmt(u if u is None else 100 * u, 0, " %") for u in uses) or "—"


def capped_caveats(one: dict, two: dict, short: bool = False) -> str:
    """What else than the cap may have limited the capped pair (empty when nothing)."""
    notes = []
    low = [u for m in (one, two) for u in m.get("quota_use") or []
           if u is not None and round(100 * u) < 100 * CAP_BOUND]  # as shown, not 89.6 as "90 %"
    if low:
        notes.append("quota not used up" if short else
                     f"a server used less than {CAP_BOUND:.0%} of its quota, so not only the cap "
                     "limited it")
    busy = [x for m in (one, two) for x in (m.get("machine"), m.get("machine_busy"))
            if x is not None and x >= MACHINE_BOUND]
    if busy:
        notes.append("machine saturated" if short else
                     f"the machine was still saturated ({100 * max(busy):.0f} % busy): the clients "
                     "and the publisher (and whatever else ran) took the cores the cap left, so the "
                     "machine, not only the cap, limited the servers")
    return "; ".join(notes)


#: Ratios closer to 1 than this are within what two measurements of one case differ by here.
NOISE = 0.15


def render_targets(table: dict, results: list[dict], opts) -> list[str]:
    """Each target of the benchmark (N = 1,000 unless said), measured value, met or not."""
    rows: list[tuple[str, str, bool | None]] = []

    def ratio(a, b):
        return a / b if a is not None and b else None

    n = 1000
    lb = table.get(("local_bridge", n), {})
    for peer, at_least in (("websockets", 2.0), ("flask-sock", 3.0)):
        x = ratio(lb.get("deliveries_per_s"), table.get((peer, n), {}).get("deliveries_per_s"))
        if x is not None:
            rows.append((f"deliveries/s ≥ {at_least:g}× {LABELS[peer]}", f"{x:.2f}×", x >= at_least))
    ws = table.get(("websockets", n), {})
    x = ratio(lb.get("p99_ms"), ws.get("p99_ms"))
    if x is not None:
        rows.append(("p99 at 20 events/s no worse than websockets", f"{x:.2f}×", x <= 1.0))
    x = ratio(lb.get("rss_per_conn_kib"), ws.get("rss_per_conn_kib"))
    if x is not None:
        rows.append(("RSS per idle connection ≤ 2× websockets", f"{x:.2f}×", x <= 2.0))
    base = [r for r in results if r.get("slow_client_baseline") and "error" not in r]
    stall = [r for r in results if r["stall"] and "error" not in r]
    if base and stall:
        d = med([r["deliveries_per_s"] for r in stall]) / med([r["deliveries_per_s"] for r in base])
        q = med([r["p99_ms"] for r in stall]) / med([r["p99_ms"] for r in base])
        rows.append(("slow client: the others keep ≥ 90 % of their deliveries/s",
                     f"{d:.2f}×", d >= 0.9))
        rows.append(("slow client: the others keep their p99 (at most 1/0.9 = 1.11×)",
                     f"{q:.2f}×", q <= 1 / 0.9))
        codes = [(r.get("stalled") or {}).get("close_code") for r in stall]
        rows.append(("slow client: the stalled one is closed 4008",
                     ", ".join(str(c) for c in codes), all(c == 4008 for c in codes)))
    medians = redis_medians(results, opts)
    cap = opts.redis_server_cpu
    for rn in opts.redis_ns:
        def get(target, followers, key, cap=None):
            return (medians.get((rn, target, followers, cap)) or {}).get(key)
        one_c = medians.get((rn, "local_bridge-redis", None, cap)) if cap else None
        two_c = medians.get((rn, "local_bridge-redis-x2", None, cap)) if cap else None
        xc = ratio(two_c and two_c.get("deliveries_per_s"), one_c and one_c.get("deliveries_per_s"))
        if xc is not None:  # the target: servers on a fixed CPU budget, cores left to the clients
            caveats = capped_caveats(one_c, two_c, short=True)
            rows.append((f"Redis, N = {rn:,}: two processes deliver ≥ 1.5× one, each capped at "
                         f"{cap:g} cores",
                         f"{xc:.2f}× (quota used: one {quota_text(one_c)}, two {quota_text(two_c)}; "
                         f"machine CPU {fmt(one_c.get('machine') and 100 * one_c['machine'], 0, ' %')} / "
                         f"{fmt(two_c.get('machine') and 100 * two_c['machine'], 0, ' %')})"
                         + (f" — {caveats}" if caveats else ""), xc >= 1.5))
        x = ratio(get("local_bridge-redis-x2", None, "deliveries_per_s"),
                  get("local_bridge-redis", None, "deliveries_per_s"))
        if x is not None:
            cpu = get("local_bridge-redis-x2", None, "machine")
            value = f"{x:.2f}×" + (f" (machine CPU {100 * cpu:.0f} %)" if cpu else "")
            if xc is not None:  # for reference: uncapped, the pair is bound by the machine
                rows.append((f"Redis, N = {rn:,}: two uncapped processes / one (reference; "
                             "they share the cores with the clients)", value, None))
            else:
                why = opts.redis_cap_skipped or "capped cases failed"
                rows.append((f"Redis, N = {rn:,}: two processes deliver ≥ 1.5× one (uncapped: "
                             f"the capped cases did not run: {why})", value, x >= 1.5))
        d = ratio(get("local_bridge-redis-x2", "resuming", "deliveries_per_s"),
                  get("local_bridge-redis-x2", "steady", "deliveries_per_s"))
        q = ratio(get("local_bridge-redis-x2", "resuming", "p99_ms"),
                  get("local_bridge-redis-x2", "steady", "p99_ms"))
        if d is not None and q is not None:
            rows.append((f"Redis, N = {rn:,}: resuming followers cost live delivery nothing "
                         f"measurable (deliveries/s and p99 within ±{NOISE:.0%})",
                         f"{d:.2f}×, p99 {q:.2f}×", abs(d - 1) <= NOISE and abs(q - 1) <= NOISE))
    if not rows:
        return []
    out = ["Targets (N = 1,000 unless said; medians of this run):", "",
           "| target | measured | met |", "|---|---|---|"]
    for name, value, met in rows:
        out.append(f"| {name} | {value} | {'—' if met is None else 'yes' if met else '**no**'} |")
    out += ["", "10,000 connections in one process: `scripts/capacity.py` (docs/worker-choice.md).", ""]
    return out


def render_redis(results: list[dict], opts) -> list[str]:
    """The Redis scenario's table and ratios."""
    if opts.redis_skipped:
        return [f"Redis scenario: not run ({opts.redis_skipped}).", ""]
    rows = [r for r in results if r.get("scenario") == "redis"]
    if not rows:
        return []
    cores = os.cpu_count() or 1
    cap = opts.redis_server_cpu
    out = [f"Redis scenario: `local-bridge serve` processes sharing one Redis ({opts.redis_url}, "
           "keys under a prefix of their own, deleted afterwards), subscribers split evenly "
           "between the processes (one client process each), publishing connections alternating "
           "between them; the in-memory backplane alongside for reference. The follower runs add "
           f"{opts.followers} followers of `jobs` and a witness in one more client process: "
           f"*steady* ones stay connected, *resuming* ones drop their connection every "
           f"{opts.follow_live:g} s, stay away {opts.follow_away:g} s and resume with `since` + "
           "`epoch` on the other process; each follower's stream is checked against the "
           f"witness's. {opts.redis_rounds} round(s), cases alternating, medians shown. "
           f"**Machine CPU** is the CPU all processes of the measurement used during saturation "
           f"(servers, clients, followers, publisher; Redis not counted) over {cores} cores × "
           "the window: near 100 % the machine, not the server, is the limit."]
    out[-1] += capped_method(opts, cores)
    out += ["", "| N | case | deliveries/s | p50 ms | p99 ms | p99 ms saturated | missing | "
            "CPU s servers | deliveries per server CPU s | CPU s clients | machine CPU | quota used | "
            "followers: resumes / replayed / recovered false / missing / duplicated / out of order |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    medians = redis_medians(results, opts)
    for n in opts.redis_ns:
        for target, followers, c in redis_cases(opts):
            rs = [r for r in case_rows(rows, n, target, followers, c) if "error" not in r]
            label = case_label(target, followers, c)
            if not rs:
                out.append(f"| {n:,} | {label} | failed |" + " |" * 10)
                continue
            m = medians[(n, target, followers, c)]
            missing = sum(max(0, r.get("sat_missing") or 0) + max(0, r.get("lat_missing") or 0) for r in rs)
            fol = ""
            if followers:
                fr = [r.get("followers_result") or {} for r in rs]
                fol = " / ".join(f"{sum(f.get(key, 0) for f in fr):,}" for key in
                                 ("resumes", "replayed", "unrecovered", "missing", "duplicates",
                                  "out_of_order"))
            out.append(f"| {n:,} | {label} | {fmt(m['deliveries_per_s'])} | {fmt(m['p50_ms'], 1)} | "
                       f"{fmt(m['p99_ms'], 1)} | {fmt(m['sat_p99_ms'])} | {missing:,} | "
                       f"{fmt(m['cpu_server_s'], 1)} | {fmt(m['per_cpu'])} | {fmt(m['cpu_clients_s'], 1)} | "
                       f"{fmt(m['machine'] and 100 * m['machine'], 0, ' %')} | "
                       f"{quota_text(m) if c else ''} | {fol} |")
    out.append("")
    for n in opts.redis_ns:
        def get(target, followers, key, cap=None):
            return (medians.get((n, target, followers, cap)) or {}).get(key)
        one = ("local_bridge-redis", None)
        two = ("local_bridge-redis-x2", None)
        steady = ("local_bridge-redis-x2", "steady")
        resuming = ("local_bridge-redis-x2", "resuming")
        one_c = medians.get((n, *one, cap)) if cap else None
        two_c = medians.get((n, *two, cap)) if cap else None
        judged = ("machine CPU " + fmt(get(*two, "machine") and 100 * get(*two, "machine"), 0, " %")
                  + "; the target is judged on the capped pair") if one_c and two_c else "target ≥ 1.5×"
        out.append(f"- N = {n:,}: two processes / one process on Redis, deliveries/s "
                   f"{_ratio(get(*two, 'deliveries_per_s'), get(*one, 'deliveries_per_s'))} ({judged}), "
                   f"per server CPU second {_ratio(get(*two, 'per_cpu'), get(*one, 'per_cpu'))}; "
                   f"one process on Redis / in memory "
                   f"{_ratio(get(*one, 'deliveries_per_s'), get('local_bridge', None, 'deliveries_per_s'))}; "
                   f"resuming / steady followers: deliveries/s "
                   f"{_ratio(get(*resuming, 'deliveries_per_s'), get(*steady, 'deliveries_per_s'))}, "
                   f"p99 {_ratio(get(*resuming, 'p99_ms'), get(*steady, 'p99_ms'))}, "
                   f"p99 saturated {_ratio(get(*resuming, 'sat_p99_ms'), get(*steady, 'sat_p99_ms'))}.")
        if one_c and two_c:
            caveats = capped_caveats(one_c, two_c)
            pair = (one_c, two_c)
            out.append(f"- N = {n:,}, each process capped at {cap:g} cores: two processes / one, "
                       f"deliveries/s {_ratio(two_c['deliveries_per_s'], one_c['deliveries_per_s'])} "
                       f"(target ≥ 1.5×); quota used: one process {quota_text(one_c)} (throttled in "
                       f"{quota_text(one_c, 'throttled_share')} of the periods), two processes "
                       f"{quota_text(two_c)} (throttled in {quota_text(two_c, 'throttled_share')}); "
                       "machine CPU " + " / ".join(fmt(m["machine"] and 100 * m["machine"], 0, " %")
                                                   for m in pair)
                       + " (the whole machine, Redis and any other process included: "
                       + " / ".join(fmt(m.get("machine_busy") and 100 * m["machine_busy"], 0, " %")
                                    for m in pair) + " busy)"
                       + (f". **Caveat:** {caveats}." if caveats else
                          ": each server used (nearly) all its quota with cores to spare, so the "
                          "cap, not the machine, was the limit."))
    out.append("")
    return out


def capped_method(opts, cores: int) -> str:
    """How the capped cases were run, or why they were not."""
    cap = opts.redis_server_cpu
    if opts.redis_cap_skipped:
        return f" Capped cases: not run ({opts.redis_cap_skipped})."
    kind = CGROUPS["kind"]
    knob = "`cpu.cfs_quota_us`" if kind == "v1" else "`cpu.max`"
    text = (f" *Capped* cases: each server process (gunicorn master and its worker) runs in a "
            f"cgroup of its own (cgroup {kind}, {knob} = {cap:g} × a {CFS_PERIOD_US // 1000} ms "
            f"period), so one process gets at most {cap:g} cores and two at most {2 * cap:g} of "
            f"the {cores}, the rest being left to the clients and the publisher; **quota used** is "
            f"a server's CPU seconds during saturation over {cap:g} × the window: near 100 % the "
            "cap, not the machine, is the limit.")
    if 2 * cap >= cores:
        text += (f" **With {cap:g} cores each, two capped servers can take the whole machine: "
                 "lower `--redis-server-cpu`.**")
    return text


def _ratio(a, b) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "—"


def write_markdown(path: Path, section: str) -> None:
    generated = f"{START_MARK}\n{section}\n{END_MARK}"
    if path.exists():
        text = path.read_text()
        if START_MARK in text and END_MARK in text:
            head, _, rest = text.partition(START_MARK)
            _, _, tail = rest.partition(END_MARK)
            path.write_text(head + generated + tail)
            return
        path.write_text(text.rstrip() + "\n\n" + generated + "\n")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Benchmarks\n\n" + generated + "\n")


def plot(results: list[dict], targets: list[str], ns: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarize(results, targets, ns)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.6))
    for t in targets:
        xs, dv, p99 = [], [], []
        collapsed = []
        for n in ns:
            s = table[(t, n)]
            if not s.get("rounds") or s.get("collapsed") or not s.get("deliveries_per_s"):
                collapsed.append(n)
                continue
            xs.append(n)
            dv.append(s["deliveries_per_s"])
            p99.append(s["p99_ms"])
        label = LABELS[t] + (" (collapsed at N=" + ", ".join(f"{n:,}" for n in collapsed) + ")"
                             if collapsed else "")
        style = dict(marker="o", linewidth=2.5 if t == "local_bridge" else 1.5)
        a1.plot(xs, dv, label=label, **style)
        a2.plot(xs, p99, label=label, **style)
    for ax in (a1, a2):
        ax.set_xscale("log")
        ax.set_xticks(ns)
        ax.set_xticklabels([f"{n:,}" for n in ns])
        ax.set_xlabel("subscribers (N)")
        ax.grid(True, which="both", alpha=0.3)
    a1.set_yscale("log")
    a1.set_ylabel("deliveries/s at saturation")
    a1.set_title("Throughput (higher is better)")
    a2.set_yscale("log")
    a2.set_ylabel("publish → receive p99 (ms)")
    a2.set_title("p99 latency at 20 events/s (lower is better)")
    handles, labels = a1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# =========================================================================== main

def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", default="100,1000,5000", help="subscriber counts, comma-separated [%(default)s]")
    p.add_argument("--targets", default=",".join(ALL_TARGETS),
                   help=f"comma-separated, from {', '.join(ALL_TARGETS + EXTRA_TARGETS + REDIS_TARGETS)} [%(default)s]")
    p.add_argument("--rounds", type=int, default=2, help="rounds per N (targets alternate) [%(default)s]")
    p.add_argument("--duration", type=float, default=6.0, help="saturation seconds [%(default)s]")
    p.add_argument("--latency-duration", type=float, default=3.0,
                   help="seconds of publishing at --rate for latency [%(default)s]")
    p.add_argument("--rate", type=float, default=20.0, help="events/s of the latency phase [%(default)s]")
    p.add_argument("--publishers", type=int, default=4,
                   help="concurrent keep-alive HTTP connections publishing at saturation [%(default)s]")
    p.add_argument("--loadgen-procs", type=int, default=0,
                   help="client processes (0: 1 up to N=1000, else 2) [%(default)s]")
    p.add_argument("--samplers", type=int, default=200, help="latency-sampling clients [%(default)s]")
    p.add_argument("--sat-decode-every", type=int, default=10,
                   help="samplers decode every k-th event at saturation [%(default)s]")
    p.add_argument("--concurrency", type=int, default=64, help="handshakes in flight per client process")
    p.add_argument("--connect-timeout", type=float, default=120.0)
    p.add_argument("--settle", type=float, default=1.0, help="seconds idle before reading RSS")
    p.add_argument("--drain-quiet", type=float, default=2.0)
    p.add_argument("--drain-limit", type=float, default=15.0)
    p.add_argument("--slow-client-n", type=int, default=1000, help="N of the slow-client scenario (0: skip)")
    p.add_argument("--slow-rounds", type=int, default=1)
    p.add_argument("--slow-max-queue", type=int, default=1000)
    p.add_argument("--slow-pad", type=int, default=0,
                   help="extra characters in each event of the slow-client runs, so that kernel "
                        "buffers hold fewer events and the queue overflows sooner [%(default)s]")
    p.add_argument("--slow-heartbeat", type=float, default=0.0,
                   help="LOCAL_BRIDGE_HEARTBEAT_INTERVAL of the slow-client runs (0: the default "
                        "30 s, whose liveness check drops a client silent for 60 s: raise it when "
                        "the queue would take longer than that to overflow) [%(default)s]")
    p.add_argument("--slow-duration", type=float, default=30.0,
                   help="saturation seconds of the slow-client runs (the stalled client must fall "
                        "MAX_QUEUE events behind) [%(default)s]")
    p.add_argument("--redis-n", default="1000,5000",
                   help="subscriber counts of the Redis scenario, comma-separated ('' to skip) "
                        "[%(default)s]")
    p.add_argument("--redis-url", default=os.environ.get("LOCAL_BRIDGE_TEST_REDIS_URL")
                   or "redis://127.0.0.1:6379/0",
                   help="Redis of the Redis scenario; every key is under a prefix of its own and "
                        "deleted afterwards [$LOCAL_BRIDGE_TEST_REDIS_URL or %(default)s]")
    p.add_argument("--redis-rounds", type=int, default=2)
    p.add_argument("--redis-server-cpu", type=float, default=0.4, metavar="CORES",
                   help="the Redis scenario's capped cases: one and two processes with each "
                        "server process (master and worker) in a cgroup of its own allowed this "
                        "many cores (a CFS quota), so the servers leave cores to the clients; the "
                        "≥ 1.5× target is judged on them. Needs a writable cgroup cpu controller "
                        "(v1 or v2, i.e. root), else they are skipped with a note (0: skip) "
                        "[%(default)s]")
    p.add_argument("--followers", type=int, default=10,
                   help="steady or resuming followers in the Redis scenario's resume runs [%(default)s]")
    p.add_argument("--follow-live", type=float, default=0.5,
                   help="seconds a resuming follower stays connected per visit [%(default)s]")
    p.add_argument("--follow-away", type=float, default=0.2,
                   help="seconds a resuming follower stays away between visits [%(default)s]")
    p.add_argument("--baseline-tree", default="",
                   help="a checkout of local_bridge (e.g. made by `git worktree add`) measured as "
                        "target local_bridge-baseline, beside this tree's local_bridge")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: N=100, 1 round, short phases, slow client at N=100; "
                        "writes to a temporary file unless --output is given")
    p.add_argument("--output", help="markdown file to update [docs/benchmarks.md]")
    p.add_argument("--plot", help="PNG to write [docs/benchmarks.png, next to --output]")
    p.add_argument("--json", help="also write every measurement as JSON here")
    p.add_argument("--plot-only", metavar="JSON",
                   help="only redraw --plot from the measurements a run saved with --json")
    p.add_argument("--deadline", type=float, default=1800.0, help="global time limit, seconds")
    p.add_argument("--retries", type=int, default=1, choices=(0, 1),
                   help="measure again once when a measurement failed (e.g. its server was killed)")
    p.add_argument("--max-load", type=float, default=3.0, help="wait while the 1-min load is above this")
    p.add_argument("--max-wait", type=float, default=600.0, help="longest wait for a quiet machine, seconds")
    p.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    p.add_argument("--case-wait", type=float, default=30.0,
                   help="before each measurement, wait up to this many seconds while another "
                        "measurement (capacity.py, another bench) runs [%(default)s]")
    p.add_argument("--case-wait-total", type=float, default=120.0,
                   help="at most this many seconds of such waits in one run [%(default)s]")
    p.add_argument("--profile", action="store_true",
                   help="py-spy the server during each saturation phase (skews the numbers: "
                        "diagnosis only; writes to a temporary file unless --output is given)")
    opts = p.parse_args(argv)
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    if opts.quick:
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
        if "--slow-duration" not in given:
            opts.slow_duration = 10.0
        opts.drain_limit = min(opts.drain_limit, 8.0)
        opts.deadline = min(opts.deadline, 600.0)
    if opts.profile and "--slow-client-n" not in given:
        opts.slow_client_n = 0
    if opts.profile and "--redis-n" not in given:
        opts.redis_n = ""
    CASE_WAIT["left"] = opts.case_wait_total
    opts.ns = [int(x.replace("_", "")) for x in opts.n.split(",") if x.strip()]
    opts.redis_ns = [int(x.replace("_", "")) for x in opts.redis_n.split(",") if x.strip()]
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
        opts.output = str(Path(tempfile.gettempdir()) / "bench-quick.md") if (opts.quick or opts.profile) \
            else str(ROOT / "docs" / "benchmarks.md")
    if opts.plot is None:
        opts.plot = str(Path(opts.output).with_suffix(".png"))
    return opts


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    if opts.plot_only:
        results = json.loads(Path(opts.plot_only).read_text())
        plot([r for r in results if not r.get("slow_client_baseline") and not r.get("scenario")],
             opts.target_list, opts.ns,
             Path(opts.plot))
        log(f"wrote {opts.plot}")
        return 0
    soft, hard = raise_nofile()
    need = max(opts.ns + opts.redis_ns + [opts.slow_client_n]) + 200
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
    command = "scripts/bench " + " ".join(argv) if argv else "scripts/bench"
    started_at = time.monotonic()
    results: list[dict] = []
    try:
        seen = {"load": os.getloadavg(), "waited_s": 0.0}
        if not opts.no_wait:
            seen = wait_for_quiet(opts.max_load, opts.max_wait)
        DEADLINE["t"] = time.monotonic() + opts.deadline  # the wait above is bounded on its own
        started_at = time.monotonic()
        total = len(opts.ns) * opts.rounds * len(opts.target_list)
        k = 0
        for n in opts.ns:
            for rnd in range(opts.rounds):
                for target in opts.target_list:
                    check_deadline()
                    k += 1
                    if not opts.no_wait:
                        wait_for_others(opts.case_wait)
                    log(f"[{k}/{total}] {target} N={n} round {rnd + 1} (load {os.getloadavg()[0]:.1f})")
                    r = run_case(results, opts, rnd, target, n, workdir)
                    if r.get("profile"):
                        print_profile(r)
        if opts.slow_client_n and "local_bridge" in opts.target_list:
            n = opts.slow_client_n
            for rnd in range(opts.slow_rounds):
                for stall in (False, True):
                    check_deadline()
                    if not opts.no_wait:
                        wait_for_others(opts.case_wait)
                    log(f"slow client: local_bridge N={n} {'one client stalled' if stall else 'no stall'}")
                    marks = {} if stall else {"slow_client_baseline": True}
                    r = run_case(results, opts, rnd, "local_bridge", n, workdir, marks, stall=stall,
                                 max_queue=opts.slow_max_queue)
                    if stall:
                        log(f"    stalled: {r.get('stalled')}")
        if opts.redis_ns:
            run_redis_scenario(results, opts, workdir)
    except (KeyboardInterrupt, Deadline) as exc:
        log(f"stopped: {exc!r}; writing what was measured")
    except Exception as exc:  # a bug of this script must not lose what was measured
        import traceback
        traceback.print_exc()
        log(f"stopped by an error: {exc!r}; writing what was measured")
    finally:
        kill_all_children()
        remove_cgroups()  # rmdir needs the groups' processes gone
    main_results = [r for r in results if not r.get("slow_client_baseline") and not r.get("scenario")]
    elapsed = time.monotonic() - started_at
    save_json(opts.json, results)
    if not results:
        log("nothing measured")
        return 1
    section = render(results, opts.target_list, opts.ns, opts, info, seen, command, elapsed)
    write_markdown(Path(opts.output), section)
    try:
        plot(main_results, opts.target_list, opts.ns, Path(opts.plot))
    except Exception as exc:  # the table matters more than the picture
        log(f"plot failed: {exc!r}")
    print(section.split("<details>")[0])
    log(f"wrote {opts.output} and {opts.plot} ({elapsed / 60:.1f} min)")
    return 0 if all("error" not in r for r in results) else 1


def run_case(results: list[dict], opts, rnd: int, target: str, n: int, workdir: Path,
             marks: dict | None = None, **kwargs) -> dict:
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


# (target, followers, capped) of each Redis-scenario measurement, in the order they alternate;
# capped: each server process in a cgroup of its own allowed --redis-server-cpu cores
REDIS_CASES = (("local_bridge", None, False), ("local_bridge-redis", None, False),
               ("local_bridge-redis-x2", None, False), ("local_bridge-redis", None, True),
               ("local_bridge-redis-x2", None, True), ("local_bridge-redis-x2", "steady", False),
               ("local_bridge-redis-x2", "resuming", False))


def redis_cases(opts) -> list[tuple[str, str | None, float | None]]:
    """(target, followers, cores per server or None) of the cases this run measures."""
    cap = None if opts.redis_cap_skipped else opts.redis_server_cpu
    return [(t, f, cap if capped else None) for t, f, capped in REDIS_CASES if cap or not capped]


def case_label(target: str, followers: str | None, cap: float | None) -> str:
    label = LABELS[target]
    if cap:
        label += f", capped at {cap:g} cores" + (" each" if target.endswith("-x2") else "")
    return label + (f" + {followers} followers" if followers else "")


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
        opts.redis_cap_skipped = cgroup_setup()
        if opts.redis_cap_skipped:
            log(f"capped Redis cases skipped: {opts.redis_cap_skipped}")
    cases = redis_cases(opts)
    total = len(opts.redis_ns) * opts.redis_rounds * len(cases)
    k = 0
    for n in opts.redis_ns:
        for rnd in range(opts.redis_rounds):
            for target, followers, cap in cases:
                check_deadline()
                k += 1
                if not opts.no_wait:
                    wait_for_others(opts.case_wait)
                log(f"[redis {k}/{total}] {case_label(target, followers, cap)} N={n} round {rnd + 1}")
                r = run_case(results, opts, rnd, target, n, workdir, {"scenario": "redis"},
                             followers=followers, cpu_cap=cap)
                if followers:
                    log(f"    followers: {r.get('followers_result')}")


def print_profile(r: dict) -> None:
    prof = r["profile"]
    print(f"\n## py-spy: {r['target']} N={r['n']} ({prof.get('samples')} samples, {prof.get('path')})")
    print("\nself %  function")
    for f, share in prof.get("self", []):
        print(f"{share:6.1f}  {f}")
    print("\ninclusive %  function")
    for f, share in prof.get("inclusive", []):
        print(f"{share:6.1f}  {f}")
    sys.stdout.flush()


def brief(r: dict) -> str:
    if "error" in r:
        return f"error: {r['error']}"

    def f(key, fmt="{:.1f}"):
        value = r.get(key)
        return "—" if value is None else fmt.format(value)

    return (f"ready {r.get('ready')} connect {f('connect_s', '{:.2f}')}s "
            f"rss/conn {f('rss_per_conn_kib')}KiB p50 {f('p50_ms')}ms p99 {f('p99_ms')}ms | "
            f"sat {f('deliveries_per_s', '{:,.0f}')}/s ({f('sat_publish_rate', '{:.0f}')} ev/s) "
            f"missing {r.get('sat_missing')}+{r.get('lat_missing')} sat-p99 {f('sat_p99_ms', '{:.0f}')}ms "
            f"cpu srv {f('cpu_server_s')}s cli {f('cpu_clients_s')}s (usr {f('cpu_clients_user_s')} "
            f"sys {f('cpu_clients_sys_s')}) srv usr/sys {r.get('cpu_server_split')} "
            f"pub {f('cpu_publisher_s')}s closes {r.get('closes')}"
            + (f" cap {r['server_cpu']:g} cores: quota used "
               + ", ".join("—" if u is None else f"{u:.0%}" for u in r.get("quota_use") or [])
               + " throttled in " + ", ".join("—" if t is None else f"{t:.0%}"
                                              for t in r.get("throttled_share") or [])
               + " of periods" if r.get("server_cpu") else "")
            + (" WORKER RESTARTED" if r.get("worker_restarted") else ""))


def save_json(path: str | None, results: list[dict]) -> None:
    if path:
        try:
            Path(path).write_text(json.dumps(results, indent=1, default=str))
        except OSError as exc:
            log(f"could not write {path}: {exc}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
