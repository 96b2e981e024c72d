"""The servers under test: ``local-bridge serve`` (its public entry point) and the peers of
``bench/peers``, each started fresh on a free loopback port."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import cgroups
from bench.control import check_deadline
from bench.httpcalls import http_call
from bench.procs import children_of, cpu_seconds, free_port, spawn, terminate
from bench.wsclient import HOST

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / "peers"
ALL_TARGETS = ("local_bridge", "websockets", "picows", "flask-sock", "flask-socketio")
# asyncio peers: one process, the WebSocket port plus an HTTP port for publishing (script, flags)
ASYNCIO_PEERS = {
    "websockets": ("websockets_server.py",),
    "picows": ("picows_server.py",),  # on aiofastnet's transports: picows' default
    "picows-asyncio": ("picows_server.py", "--plain-asyncio"),
}
EXTRA_TARGETS = ("local_bridge-gthread", "local_bridge-baseline", "picows-asyncio")
# the Redis scenario: one or two `local-bridge serve` processes sharing one Redis
REDIS_TARGETS = ("local_bridge-redis", "local_bridge-redis-x2")
LABELS = {
    "local_bridge": "local_bridge (gevent)",
    "local_bridge-gthread": "local_bridge (gthread)",
    "local_bridge-baseline": "local_bridge (gevent), baseline tree",
    "local_bridge-redis": "local_bridge, Redis backplane, 1 process",
    "local_bridge-redis-x2": "local_bridge, Redis backplane, 2 processes",
    "websockets": "websockets (asyncio)",
    "picows": "picows (asyncio)",
    "picows-asyncio": "picows (asyncio's own transports)",
    "flask-sock": "flask-sock naive (gthread)",
    "flask-socketio": "Flask-SocketIO (threading)",
}
BASELINE = {"tree": ""}  # --baseline-tree: another checkout, for before/after comparisons
LOG_PROBLEMS = ("Traceback", "ERROR", "CRITICAL", "WORKER TIMEOUT", "Exception", "Error:")


def serve_command() -> list[str]:
    """``local-bridge serve`` of this interpreter's environment (or ``python -m``)."""
    exe = Path(sys.executable).with_name("local-bridge")
    if os.access(exe, os.X_OK):
        return [str(exe), "serve"]
    found = shutil.which("local-bridge")
    if found:
        return [found, "serve"]
    return [sys.executable, "-m", "local_bridge.cli", "serve"]


def serve_env(port: int, n: int, database: Path, worker_class: str) -> dict[str, str]:
    """The environment of a measured ``local-bridge serve``: product defaults except no connect
    rate limit, room for N connections, a throw-away SQLite file (the caller's LOCAL_BRIDGE_*
    variables are not passed on)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "LOCAL_BRIDGE_HOST": HOST,
            "LOCAL_BRIDGE_PORT": str(port),
            "LOCAL_BRIDGE_CONNECT_RATE": "0",
            "LOCAL_BRIDGE_MAX_CONNECTIONS": str(n + 100),
            "LOCAL_BRIDGE_DATABASE_URL": f"sqlite:///{database}",
            "LOCAL_BRIDGE_WORKER_CLASS": worker_class,
        }
    )
    return env


def log_problems(path: Path | str) -> list[str]:
    """Lines of a server log that signal a problem (tracebacks, worker timeouts, errors)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return [f"cannot read {path}"]
    return [line for line in text.splitlines() if any(k in line for k in LOG_PROBLEMS)]


class Server:
    """One target server process (and, for gunicorn, its worker); given ``cpu_cap``, both in
    a cgroup of their own allowed that many cores."""

    def __init__(
        self,
        target: str,
        n: int,
        workdir: Path,
        max_queue: int | None = None,
        heartbeat: float | None = None,
        redis_url: str | None = None,
        redis_prefix: str | None = None,
        index: int = 0,
        cpu_cap: float | None = None,
    ):
        self.target = target
        self.n = n
        self.port = free_port()
        self.http_port = self.port
        self.proto = "socketio" if target == "flask-socketio" else "bus"
        self.health = "/api/system/health" if target.startswith("local_bridge") else "/health"
        self.log_path = (
            workdir / f"{target}-{n}-{os.getpid()}-{int(time.time() * 1000)}-{index}.log"
        )
        self.proc: subprocess.Popen | None = None
        self.max_queue = max_queue
        self.heartbeat = heartbeat
        self.redis_url, self.redis_prefix = redis_url, redis_prefix
        self.cpu_cap = cpu_cap
        self.cgroup: Path | None = None
        self._log = None

    def command(self) -> tuple[list[str], dict[str, str]]:
        if self.target.startswith("local_bridge"):
            return self.local_bridge_command()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")}
        env["PYTHONUNBUFFERED"] = "1"
        if self.target in ASYNCIO_PEERS:
            self.http_port = free_port()
            script, *flags = ASYNCIO_PEERS[self.target]
            return [
                sys.executable,
                str(PEERS / script),
                "--port",
                str(self.port),
                "--http-port",
                str(self.http_port),
                *flags,
            ], env
        apps = {"flask-sock": "flask_sock_naive:app", "flask-socketio": "socketio_server:app"}
        return self.gunicorn_command() + [apps[self.target]], env

    def gunicorn_command(self) -> list[str]:
        """A peer app under gunicorn's threaded worker, a thread per connection."""
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            "1",
            "-k",
            "gthread",
            "--threads",
            str(self.n + 64),
            "--worker-connections",
            str(self.n + 100),
            "--backlog",
            "2048",
            "--bind",
            f"{HOST}:{self.port}",
            "--timeout",
            "120",
            "--graceful-timeout",
            "3",
            "--keep-alive",
            "30",
            "--log-level",
            "warning",
            "--chdir",
            str(PEERS),
        ]

    def local_bridge_command(self) -> tuple[list[str], dict[str, str]]:
        worker = "gthread" if self.target.endswith("gthread") else "gevent"
        env = serve_env(self.port, self.n, self.log_path.with_suffix(".db"), worker)
        cmd = serve_command()
        if self.target == "local_bridge-baseline":  # the other tree's package comes first
            env["PYTHONPATH"] = BASELINE["tree"]
            cmd = [sys.executable, "-m", "local_bridge.cli", "serve"]
        if self.max_queue is not None:
            env["LOCAL_BRIDGE_MAX_QUEUE"] = str(self.max_queue)
        if self.heartbeat is not None:
            env["LOCAL_BRIDGE_HEARTBEAT_INTERVAL"] = str(self.heartbeat)
        if self.redis_url:
            env["LOCAL_BRIDGE_REDIS_URL"] = self.redis_url
            env["LOCAL_BRIDGE_REDIS_PREFIX"] = self.redis_prefix or "bench:"
        return cmd, env

    def start(self, timeout: float = 60.0) -> None:
        cmd, env = self.command()
        self._log = open(self.log_path, "wb")
        if self.cpu_cap:
            self.cgroup = cgroups.cgroup_new(self.cpu_cap)
        # `python -m` puts the working directory first on sys.path: the baseline must run
        # from its own tree, or it would import this one.
        cwd = BASELINE["tree"] if self.target == "local_bridge-baseline" else str(ROOT)
        self.proc = spawn(
            cmd,
            cgroup=self.cgroup,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Until the health check answers 200 and the worker process is there."""
        end = time.monotonic() + timeout
        while True:
            check_deadline()
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.target} exited at start (status {self.proc.returncode}); "
                    f"see {self.log_path}"
                )
            if (
                http_call(self.http_port, "GET", self.health, timeout=2).status == 200
                and self.worker_pid()
            ):
                self.check_cgroup()
                return
            if time.monotonic() > end:
                raise TimeoutError(f"{self.target} not ready within {timeout:.0f} s")
            time.sleep(0.1)

    @property
    def gunicorn(self) -> bool:
        return self.target not in ASYNCIO_PEERS

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
        return sum(cpu_seconds(pid) or 0.0 for pid in self.pids())

    def check_cgroup(self) -> None:
        """A capped server's master and worker must both be in its group, or the cap is fake."""
        if self.cgroup is None:
            return
        want = cgroups.cgroup_rel(self.cgroup)
        wrong = {
            pid: cgroups.cgroup_of(pid) for pid in self.pids() if cgroups.cgroup_of(pid) != want
        }
        if wrong:
            raise RuntimeError(f"{self.target}: processes outside their cgroup {want}: {wrong}")

    def stop(self) -> None:
        terminate(self.proc, grace=12.0)
        if self._log:
            self._log.close()
            self._log = None
        if self.cgroup is not None:  # its processes are gone now
            cgroups.cgroup_remove(self.cgroup)
            self.cgroup = None

    def problems(self) -> list[str]:
        """Error lines in the server's log (at most 20)."""
        if not self.log_path.exists():
            return []
        return log_problems(self.log_path)[:20]
