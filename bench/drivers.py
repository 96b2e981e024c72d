"""The load generators' processes (``python -m bench.loadgen``), as the measurement drives them."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.procs import LineReader, cpu_seconds, spawn, terminate
from bench.servers import ROOT, Server

LOADGEN = [sys.executable, "-m", "bench.loadgen"]


def _start(args: list[str], stdin=subprocess.PIPE) -> subprocess.Popen:
    return spawn(LOADGEN + args, stdin=stdin, stdout=subprocess.PIPE, cwd=str(ROOT))


class Loadgen:
    """One ``clients`` process: subscribers of one server, driven by JSON commands."""

    def __init__(self, server: Server, index: int, deadline: float):
        self.index = index
        self.proc = _start(
            [
                "clients",
                "--port",
                str(server.port),
                "--proto",
                server.proto,
                "--deadline",
                str(deadline),
            ]
        )
        self.reader = LineReader(self.proc, f"loadgen {index}")

    def send(self, cmd: dict) -> None:
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def call(self, cmd: dict, timeout: float = 30.0) -> dict:
        self.send(cmd)
        return self.reader.read(timeout)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid) or 0.0

    def close(self) -> None:
        try:
            self.send({"cmd": "quit"})
            self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        terminate(self.proc, grace=2.0)


class Followers:
    """One ``followers`` process: the Redis scenario's steady or resuming clients."""

    def __init__(self, servers: list[Server], kind: str, opts, deadline: float):
        self.kind = kind
        self.proc = _start(
            [
                "followers",
                "--ports",
                ",".join(str(s.port) for s in servers),
                "--clients",
                str(opts.followers),
                "--kind",
                kind,
                "--live",
                str(opts.follow_live),
                "--away",
                str(opts.follow_away),
                "--deadline",
                str(deadline),
            ]
        )
        self.reader = LineReader(self.proc, f"followers ({kind})")
        started = self.reader.read(60)
        if started.get("event") != "started" or started.get("subscribed") != opts.followers:
            raise RuntimeError(f"followers did not start: {started}")

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid) or 0.0

    def finish(self) -> dict:
        """Stop them; their counts and their streams checked against the witness's."""
        self.proc.stdin.write(b"quit\n")
        self.proc.stdin.flush()
        return self.reader.read(60)

    def close(self) -> None:
        terminate(self.proc, grace=2.0)


def run_publisher(
    port: int | str,
    conns: int,
    duration: float,
    rate: float,
    deadline: float,
    on_started=None,
    pad: int = 0,
    count: int = 0,
    batch: int = 0,
    path: str = "/api/websocket/broadcast",
) -> dict:
    """One ``publish`` process from start to result; ``on_started`` runs once it is connected;
    ``count``: at most that many requests (0: until ``duration``); ``batch``: events per request
    (``{"events": [...]}`` to ``path``; 0: one event per request)."""
    proc = _start(
        [
            "publish",
            "--port",
            str(port),
            "--conns",
            str(conns),
            "--duration",
            str(duration),
            "--rate",
            str(rate),
            "--deadline",
            str(deadline),
            "--pad",
            str(pad),
            "--count",
            str(count),
            "--batch",
            str(batch),
            "--path",
            path,
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        reader = LineReader(proc, "publisher")
        first = reader.read(30)
        assert first.get("event") == "started", first
        if on_started:
            on_started()
        return reader.read(duration + 60)
    finally:
        terminate(proc, grace=5.0)
