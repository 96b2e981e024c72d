"""``local-bridge serve`` for the capacity test: one worker class, as a subprocess in a session
of its own, stopped for sure (and how it stopped, said)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from pathlib import Path

from bench.capacity.interrupts import no_interrupt
from bench.httpcalls import http_call
from bench.procs import children_of, group_members, signal_group
from bench.servers import log_problems, serve_command, serve_env


class Server:
    """``local-bridge serve`` as a subprocess in a session of its own."""

    def __init__(self, worker_class: str, port: int, n: int, workdir: str):
        self.worker_class = worker_class
        self.port = port
        self.log_path = os.path.join(workdir, f"server-{worker_class}-{port}.log")
        self.env = serve_env(port, n, Path(workdir) / f"bridge-{port}.db", worker_class)
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.graceful_exit = False  # set by log_problems()

    def start(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

        def child_limits() -> None:  # runs in the child only
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

        self._log = open(self.log_path, "wb")
        with no_interrupt():  # never lose track of a child between fork and assignment
            self.proc = subprocess.Popen(
                serve_command(),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=child_limits,
            )

    @property
    def master(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, deadline: float) -> tuple[int | None, str | None]:
        """Wait for /health 200 and the worker process; return (worker pid, error)."""
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                return None, f"server exited with status {self.proc.returncode}"
            status, _, _, err = http_call(self.port, "GET", "/api/system/health", timeout=2)
            if status == 200:
                workers = children_of(self.master)
                if workers:
                    return workers[0], None
                last = "no worker process"
            else:
                last = err or f"HTTP {status}"
            time.sleep(0.1)
        return None, f"not ready in time ({last})"

    def worker(self) -> int | None:
        kids = children_of(self.master) if self.alive() else []
        return kids[0] if kids else None

    def stop(self, grace: float = 12.0) -> str:
        """SIGTERM the server's process group, SIGKILL it after ``grace``; say what happened."""
        if self.proc is None:
            return "not started"
        outcome = self._terminate(grace)
        # Kill any leftover of the group (a worker orphaned by the master's exit) and wait,
        # boundedly, until it is gone: a worker with thousands of threads takes a moment.
        signal_group(self.proc.pid, signal.SIGKILL)
        gone_by = time.monotonic() + 10.0
        while group_members(self.proc.pid) and time.monotonic() < gone_by:
            time.sleep(0.05)
        left = group_members(self.proc.pid)
        if left:
            outcome += f"; processes {left} still exiting"
        if self._log is not None:
            self._log.close()
            self._log = None
        return outcome

    def _terminate(self, grace: float) -> str:
        if self.proc.poll() is not None:
            return f"had exited with {self.proc.returncode}"
        pgid = self.proc.pid  # start_new_session: the group is ours alone
        signal_group(pgid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
            return f"exited {self.proc.returncode} after SIGTERM"
        except subprocess.TimeoutExpired:
            signal_group(pgid, signal.SIGKILL)
            self.proc.wait(5)
            return f"SIGKILLed after {grace:g} s"

    def log_problems(self) -> tuple[list[str], int]:
        """Lines of the server log that signal a problem, and how many workers booted."""
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            text = ""
        self.graceful_exit = "Worker exiting" in text
        return log_problems(self.log_path), text.count("Booting worker")
