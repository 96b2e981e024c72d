#!/usr/bin/env python3
"""Capacity of ``local-bridge serve`` per gunicorn worker class: N idle WebSockets at once.

For each worker class (gevent, gthread) the script starts ``local-bridge serve`` on a free
loopback port as a subprocess, opens N WebSocket connections with a raw-socket client driven by
one ``selectors`` loop (handshake by hand, wait for ``connected``, subscribe to ``jobs``, wait
for ``subscribed``) and, while all N are held open, measures:

* connect wall time and connections/s, per-connection handshake latency, worker CPU spent;
* the gunicorn worker's VmRSS before and with N open (and per connection), its threads and fds;
* ``GET /api/system/health`` latency (idle server, then with N open);
* one ``POST /api/websocket/broadcast`` on ``jobs``: time until every client got the event;
* ``GET /api/system/status`` ``connections.total`` (must be N);
* after the client closes every socket: time until the server counts 0 connections.

It prints a markdown table with one column per worker class (and writes it to ``--output``).
Exit status: 0 when every class held all N connections, delivered the broadcast to all of them
and answered every HTTP request; 1 otherwise; 2 on a usage or environment error.

Only the script's own RLIMIT_NOFILE (and its server subprocess's) is raised; the server runs with
its product defaults except LOCAL_BRIDGE_CONNECT_RATE=0, LOCAL_BRIDGE_MAX_CONNECTIONS=N+100, a
throw-away SQLite file and the chosen port and worker class (other LOCAL_BRIDGE_* variables of
the calling environment are not passed on).

Example::

    . .venv/bin/activate
    python scripts/capacity.py --connections 2000 --output /tmp/capacity.md
    python scripts/capacity.py -w gevent --connections 10000 --deadline 300
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import http.client
import json
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from typing import Any

HOST = "127.0.0.1"
WORKER_CLASSES = ("gevent", "gthread")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------- small helpers


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


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


def proc_status(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                out[key] = value.strip()
    except OSError:
        pass
    return out


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the ``(comm)`` field: [state, ppid, pgrp, ...]."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data.rpartition(")")[2].split()


def rss_kib(pid: int) -> int | None:
    value = proc_status(pid).get("VmRSS")
    return int(value.split()[0]) if value else None


def hwm_kib(pid: int) -> int | None:
    value = proc_status(pid).get("VmHWM")
    return int(value.split()[0]) if value else None


def threads_of(pid: int) -> int | None:
    value = proc_status(pid).get("Threads")
    return int(value) if value else None


def fds_of(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cpu_seconds(pid: int) -> float | None:
    fields = proc_stat(pid)
    if not fields:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def children_of(ppid: int) -> list[int]:
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = proc_stat(int(name))
            if fields and len(fields) > 1 and fields[1] == str(ppid) and fields[0] != "Z":
                kids.append(int(name))
    return sorted(kids)


def cpu_times() -> tuple[int, int, int]:
    """Machine-wide (busy, steal, total) jiffies from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    steal = values[7] if len(values) > 7 else 0
    total = sum(values[:8])
    return total - idle - steal, steal, total


def cpu_busy_since(before: tuple[int, int, int]) -> tuple[float, float]:
    """Machine CPU busy and steal percentages since ``before`` (from :func:`cpu_times`)."""
    busy, steal, total = (a - b for a, b in zip(cpu_times(), before))
    return (100.0 * busy / total, 100.0 * steal / total) if total > 0 else (0.0, 0.0)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = proc_stat(int(name))
            if fields and len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
                members.append(int(name))
    return members


def http_call(port: int, method: str, path: str, body: Any = None,
              timeout: float = 10.0) -> tuple[int | None, Any, float, str | None]:
    """One request on a fresh connection: (status, parsed JSON or None, seconds, error)."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Connection": "close"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        elapsed = time.perf_counter() - start
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return response.status, parsed, elapsed, None
    except (OSError, http.client.HTTPException) as exc:
        return None, None, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def mask_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final, masked client frame (RFC 6455 5.2) around ``payload``."""
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    if n:
        repeated = (key * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    else:
        masked = b""
    return header + key + masked


# --------------------------------------------------------------------------- the load generator

CONNECTING, HANDSHAKE, WAIT_CONNECTED, WAIT_SUBSCRIBED, OPEN, DONE = range(6)


class Conn:
    __slots__ = ("sock", "state", "buf", "out", "t_start", "t_open", "t_event", "frag",
                 "frag_op", "events")

    def __init__(self, sock: socket.socket, now: float):
        self.sock = sock
        self.state = CONNECTING
        self.buf = bytearray()
        self.out = b""
        self.t_start = now
        self.t_open: float | None = None
        self.t_event: float | None = None
        self.frag: bytearray | None = None
        self.frag_op = 0
        self.events = selectors.EVENT_WRITE


class LoadGenerator:
    """Opens ``n`` WebSockets to ``port`` and keeps them open, all in one selector loop.

    The loop runs in its own thread (:meth:`start`); the main thread only reads counters and
    calls :meth:`stop`. Every phase is bounded by the deadlines given to it.
    """

    def __init__(self, port: int, n: int, window: int, connect_timeout: float, marker: str):
        self.port = port
        self.n = n
        self.window = window
        self.connect_timeout = connect_timeout
        self.marker = marker.encode()
        self.sel = selectors.DefaultSelector()
        self.conns: list[Conn] = []
        self.inflight: set[Conn] = set()
        self.started = 0
        self.opened = 0
        self.failures: Counter[str] = Counter()
        self.lost_after_open: Counter[str] = Counter()  # open connections the server dropped
        self.event_count = 0
        self.pings = 0
        self.connect_deadline = float("inf")
        self.t_first: float | None = None
        self.t_last_open: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self.loop_error: BaseException | None = None
        host = f"{HOST}:{port}"
        self._request_head = ("GET /ws HTTP/1.1\r\nHost: " + host +
                              "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ")
        self._subscribe = mask_frame(json.dumps({"type": "subscribe", "channels": ["jobs"]}).encode())

    # -- control (main thread)

    def start(self, connect_deadline: float) -> None:
        self.connect_deadline = connect_deadline
        self._thread.start()

    @property
    def settled(self) -> int:
        """Connections that are open or have failed (or been lost)."""
        return self.opened + sum(self.failures.values())

    @property
    def open_now(self) -> int:
        return self.opened - sum(self.lost_after_open.values())

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(10)

    def close_all(self) -> None:
        """Send a 1000 close frame on every open socket and close it (after :meth:`stop`)."""
        bye = mask_frame(struct.pack("!H", 1000), opcode=0x8)
        for c in self.conns:
            if c.sock is None:
                continue
            if c.state == OPEN:
                try:
                    c.sock.send(bye)
                except OSError:
                    pass
            try:
                c.sock.close()
            except OSError:
                pass
            c.sock = None
        try:
            self.sel.close()
        except (OSError, RuntimeError):
            pass

    def reset_events(self) -> None:
        for c in self.conns:
            c.t_event = None
        self.event_count = 0

    # -- the loop (load thread)

    def _run(self) -> None:
        try:
            last_sweep = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic()
                connecting = self.started < self.n and now < self.connect_deadline
                while connecting and len(self.inflight) < self.window and self.started < self.n:
                    self._open_one(now)
                timeout = 0.005 if connecting else 0.1
                for key, mask in self.sel.select(timeout):
                    self._on_ready(key.data, mask)
                now = time.monotonic()
                if self.inflight and (now - last_sweep > 0.25 or now >= self.connect_deadline):
                    last_sweep = now
                    for c in list(self.inflight):
                        if now >= self.connect_deadline:
                            self._fail(c, "connect phase deadline")
                        elif now - c.t_start > self.connect_timeout:
                            self._fail(c, f"no 'subscribed' within {self.connect_timeout:g} s")
        except BaseException as exc:  # reported by the main thread
            self.loop_error = exc

    def _open_one(self, now: float) -> None:
        self.started += 1
        if self.t_first is None:
            self.t_first = now
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            self.failures[f"socket(): {errno.errorcode.get(exc.errno, exc.errno)}"] += 1
            return
        sock.setblocking(False)
        c = Conn(sock, now)
        self.conns.append(c)
        self.inflight.add(c)
        err = sock.connect_ex((HOST, self.port))
        if err not in (0, errno.EINPROGRESS):
            self._fail(c, f"connect: {errno.errorcode.get(err, err)}")
            return
        self.sel.register(sock, selectors.EVENT_WRITE, c)

    def _fail(self, c: Conn, reason: str) -> None:
        if c.state == DONE:
            return
        if c.state == OPEN:
            self.lost_after_open[reason] += 1
        else:
            self.failures[reason] += 1
        c.state = DONE
        self.inflight.discard(c)
        if c.sock is not None:
            try:
                self.sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            try:
                c.sock.close()
            except OSError:
                pass
            c.sock = None

    def _want(self, c: Conn, events: int) -> None:
        if c.events != events and c.sock is not None:
            c.events = events
            self.sel.modify(c.sock, events, c)

    def _send(self, c: Conn, data: bytes) -> None:
        if c.out:
            c.out += data
            return
        try:
            sent = c.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._fail(c, f"send: {errno.errorcode.get(exc.errno, exc.errno)}")
            return
        if sent < len(data):
            c.out = data[sent:]
            self._want(c, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def _on_ready(self, c: Conn, mask: int) -> None:
        if c.state == DONE or c.sock is None:
            return
        if mask & selectors.EVENT_WRITE:
            if c.state == CONNECTING:
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._fail(c, f"connect: {errno.errorcode.get(err, err)}")
                    return
                c.state = HANDSHAKE
                key = base64.b64encode(os.urandom(16)).decode()
                self._want(c, selectors.EVENT_READ)
                self._send(c, (self._request_head + key + "\r\n\r\n").encode())
                return
            if c.out:
                try:
                    sent = c.sock.send(c.out)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    self._fail(c, f"send: {errno.errorcode.get(exc.errno, exc.errno)}")
                    return
                c.out = c.out[sent:]
                if not c.out:
                    self._want(c, selectors.EVENT_READ)
        if mask & selectors.EVENT_READ:
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                self._fail(c, f"recv: {errno.errorcode.get(exc.errno, exc.errno)}")
                return
            if not data:
                self._fail(c, "server closed the TCP connection (EOF)")
                return
            c.buf += data
            if c.state == HANDSHAKE:
                end = c.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(c.buf) > 16384:
                        self._fail(c, "oversized handshake answer")
                    return
                status_line = bytes(c.buf[:c.buf.find(b"\r\n")])
                parts = status_line.split(b" ", 2)
                if len(parts) < 2 or parts[1] != b"101":
                    code = parts[1].decode(errors="replace") if len(parts) > 1 else "?"
                    self._fail(c, f"handshake answered HTTP {code}")
                    return
                del c.buf[:end + 4]
                c.state = WAIT_CONNECTED
            self._frames(c)

    def _frames(self, c: Conn) -> None:
        buf = c.buf
        pos = 0
        size = len(buf)
        while c.state != DONE and size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = struct.unpack_from("!H", buf, pos + 2)[0]
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if b1 & 0x80:
                self._fail(c, "server sent a masked frame")
                return
            if size - pos < head + length:
                break
            payload = bytes(buf[pos + head:pos + head + length])
            pos += head + length
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode == 0x0:  # continuation
                if c.frag is None:
                    self._fail(c, "unexpected continuation frame")
                    return
                c.frag += payload
                if fin:
                    payload, opcode, c.frag = bytes(c.frag), c.frag_op, None
                else:
                    continue
            elif opcode in (0x1, 0x2) and not fin:
                c.frag, c.frag_op = bytearray(payload), opcode
                continue
            if opcode == 0x1 or opcode == 0x2:
                self._message(c, payload)
            elif opcode == 0x9:  # ping: answer with a pong carrying the same payload
                self.pings += 1
                self._send(c, mask_frame(payload, opcode=0xA))
            elif opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self._fail(c, f"server sent close {code}")
                return
        if c.state != DONE:
            del buf[:pos]

    def _message(self, c: Conn, payload: bytes) -> None:
        if c.state == OPEN:
            if self.marker in payload and c.t_event is None:
                c.t_event = time.monotonic()
                self.event_count += 1
            return
        try:
            message = json.loads(payload)
        except ValueError:
            self._fail(c, "non-JSON text frame before 'subscribed'")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if c.state == WAIT_CONNECTED:
            if kind == "connected":
                c.state = WAIT_SUBSCRIBED
                self._send(c, self._subscribe)
            elif kind == "error":
                self._fail(c, f"error before 'connected': {message.get('code')}")
        elif c.state == WAIT_SUBSCRIBED:
            if kind == "subscribed":
                if "jobs" not in (message.get("channels") or ()):
                    self._fail(c, "'subscribed' without jobs")
                    return
                c.state = OPEN
                c.t_open = time.monotonic()
                self.t_last_open = c.t_open
                self.opened += 1
                self.inflight.discard(c)
            elif kind == "error":
                self._fail(c, f"subscribe refused: {message.get('code')}")


# --------------------------------------------------------------------------- one server run


class Server:
    """``local-bridge serve`` as a subprocess in a session of its own."""

    def __init__(self, worker_class: str, port: int, n: int, workdir: str):
        self.worker_class = worker_class
        self.port = port
        self.log_path = os.path.join(workdir, f"server-{worker_class}-{port}.log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")}
        env.update({
            "LOCAL_BRIDGE_HOST": HOST,
            "LOCAL_BRIDGE_PORT": str(port),
            "LOCAL_BRIDGE_WORKER_CLASS": worker_class,
            "LOCAL_BRIDGE_CONNECT_RATE": "0",
            "LOCAL_BRIDGE_MAX_CONNECTIONS": str(n + 100),
            "LOCAL_BRIDGE_DATABASE_URL": "sqlite:///" + os.path.join(workdir, f"bridge-{port}.db"),
            "PYTHONUNBUFFERED": "1",
        })
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.graceful_exit = False  # set by log_problems()

    @staticmethod
    def command() -> list[str]:
        exe = os.path.join(os.path.dirname(sys.executable), "local-bridge")
        if os.access(exe, os.X_OK):
            return [exe, "serve"]
        found = shutil.which("local-bridge")
        if found:
            return [found, "serve"]
        return [sys.executable, "-m", "local_bridge.cli", "serve"]

    def start(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

        def child_limits() -> None:  # runs in the child only
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

        self._log = open(self.log_path, "wb")
        with _no_interrupt():  # never lose track of a child between fork and assignment
            self.proc = subprocess.Popen(self.command(), env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=self._log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=child_limits)

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
        outcome = "already exited"
        if self.proc.poll() is None:
            pgid = self.proc.pid  # start_new_session: the group is ours alone
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
                outcome = f"exited {self.proc.returncode} after SIGTERM"
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
                outcome = f"SIGKILLed after {grace:g} s"
        else:
            outcome = f"had exited with {self.proc.returncode}"
        # Kill any leftover of the group (a worker orphaned by the master's exit) and wait,
        # boundedly, until it is gone: a worker with thousands of threads takes a moment.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
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

    def log_problems(self) -> tuple[list[str], int]:
        """Lines of the server log that signal a problem, and how many workers booted."""
        problems: list[str] = []
        boots = 0
        self.graceful_exit = False
        try:
            with open(self.log_path, errors="replace") as f:
                for line in f:
                    if "Booting worker" in line:
                        boots += 1
                    if "Worker exiting" in line:
                        self.graceful_exit = True
                    if ("[ERROR]" in line or "[CRITICAL]" in line or "Traceback" in line
                            or "WORKER TIMEOUT" in line or "Exception" in line
                            or "Error:" in line):
                        problems.append(line.rstrip())
        except OSError:
            problems.append(f"cannot read {self.log_path}")
        return problems, boots


def measure_health(port: int, count: int, deadline: float, timeout: float) -> dict[str, Any]:
    times: list[float] = []
    errors: Counter[str] = Counter()
    attempted = 0
    for _ in range(count):
        if time.monotonic() >= deadline:
            break
        attempted += 1
        status, body, elapsed, err = http_call(
            port, "GET", "/api/system/health",
            timeout=min(timeout, max(0.5, deadline - time.monotonic())))
        if status == 200:
            times.append(elapsed)
        else:
            errors[err or f"HTTP {status}"] += 1
    return {"count": count, "attempted": attempted, "ok": len(times), "errors": dict(errors),
            "p50": percentile(times, 50), "p99": percentile(times, 99),
            "max": max(times) if times else None}


def run_class(worker_class: str, args: argparse.Namespace, class_deadline: float,
              workdir: str) -> dict[str, Any]:
    n = args.connections
    r: dict[str, Any] = {"worker_class": worker_class, "n": n, "problems": []}
    # Load that is not ours: machine CPU use over one second before the server starts.
    sample = cpu_times()
    time.sleep(1.0)
    r["cpu_background"] = cpu_busy_since(sample)
    problems: list[str] = r["problems"]
    port = free_port()
    server = Server(worker_class, port, n, workdir)
    load: LoadGenerator | None = None
    budget = class_deadline - time.monotonic()

    def left() -> float:
        return class_deadline - time.monotonic()

    try:
        server.start()
        worker, err = server.wait_ready(time.monotonic() + min(30.0, max(1.0, left())))
        if worker is None:
            problems.append(f"server did not start: {err}")
            return r
        r["worker_pid"] = worker

        # Warm up (imports, first WebSocket, first broadcast) so the baseline is comparable.
        warm = LoadGenerator(port, 1, 1, 10.0, "warmup")
        warm.start(time.monotonic() + min(10.0, max(1.0, left())))
        while warm.settled < 1 and time.monotonic() < warm.connect_deadline:
            time.sleep(0.01)
        http_call(port, "POST", "/api/websocket/broadcast", {
            "type": "job_progress", "channel": "jobs", "data": {"job_id": "warmup", "progress": 1}})
        warm.stop()
        warm.close_all()
        if warm.opened != 1:
            problems.append(f"warm-up WebSocket failed: {dict(warm.failures)}")
        drain_until = time.monotonic() + min(5.0, max(0.5, left()))
        while time.monotonic() < drain_until:
            status, body, _, _ = http_call(port, "GET", "/api/system/status", timeout=2)
            if status == 200 and isinstance(body, dict) and body["connections"]["total"] == 0:
                break
            time.sleep(0.05)
        time.sleep(0.5)

        r["rss_before"] = rss_kib(worker)
        r["threads_before"] = threads_of(worker)
        r["fds_before"] = fds_of(worker)
        r["health_idle"] = measure_health(port, args.health_requests,
                                          time.monotonic() + min(30.0, max(1.0, left())),
                                          args.http_timeout)

        # Connect phase: at most 60 % of what is left for this class.
        marker = "cap-" + uuid.uuid4().hex[:12]
        load = LoadGenerator(port, n, args.window, args.connect_timeout, marker)
        cpu0 = cpu_seconds(worker)
        machine0 = cpu_times()
        t0 = time.monotonic()
        load.start(t0 + max(1.0, 0.6 * left()))
        while load.settled < n and time.monotonic() < load.connect_deadline + 1.0:
            if load.loop_error is not None:
                break
            time.sleep(0.02)
        cpu1 = cpu_seconds(worker)
        r["cpu_machine_connect"] = cpu_busy_since(machine0)
        end = load.t_last_open or time.monotonic()
        r["connect_wall"] = end - (load.t_first or t0)
        r["opened"] = load.opened
        r["connect_failures"] = dict(load.failures)
        if load.started < n:
            r["connect_failures"]["not attempted before the deadline"] = n - load.started
        r["connect_rate"] = load.opened / r["connect_wall"] if r["connect_wall"] > 0 else None
        lat = [c.t_open - c.t_start for c in load.conns if c.t_open is not None]
        r["handshake_p50"] = percentile(lat, 50)
        r["handshake_p99"] = percentile(lat, 99)
        r["connect_cpu"] = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
        if load.loop_error is not None:
            problems.append(f"load generator crashed: {load.loop_error!r}")
        if load.opened < n:
            problems.append(f"only {load.opened}/{n} connections opened: {r['connect_failures']}")

        # Hold: let the server settle, then read its process state.
        time.sleep(min(args.settle, max(0.0, left() - 5)))
        r["rss_held"] = rss_kib(worker)
        r["threads_held"] = threads_of(worker)
        r["fds_held"] = fds_of(worker)
        if r.get("rss_before") and r.get("rss_held") and load.open_now:
            r["rss_per_conn"] = (r["rss_held"] - r["rss_before"]) / load.open_now
        status, body, elapsed, err = http_call(port, "GET", "/api/system/status",
                                               timeout=args.http_timeout)
        r["status_total"] = body["connections"]["total"] if status == 200 and body else None
        r["status_latency"] = elapsed if status == 200 else None
        if status != 200:
            problems.append(f"/api/system/status failed: {err or status}")
        elif r["status_total"] != n:
            problems.append(f"/api/system/status connections.total={r['status_total']}, expected {n}")

        r["health_held"] = measure_health(port, args.health_requests,
                                          time.monotonic() + max(1.0, min(60.0, left() - 10)),
                                          args.http_timeout)
        h = r["health_held"]
        if h["ok"] < h["count"]:
            problems.append(f"/health with {n} open: {h['ok']}/{h['count']} answered "
                            f"({h['errors'] or 'deadline'})")

        # One broadcast to every subscriber.
        load.reset_events()
        expected = load.open_now
        t_post = time.monotonic()
        status, body, elapsed, err = http_call(
            port, "POST", "/api/websocket/broadcast",
            {"type": "job_progress", "channel": "jobs", "data": {"job_id": marker, "progress": 50}},
            timeout=args.http_timeout)
        r["broadcast_post"] = elapsed
        r["broadcast_recipients"] = body.get("recipients") if status == 202 and body else None
        if status != 202:
            problems.append(f"broadcast POST failed: {err or status} {body}")
        wait_until = time.monotonic() + max(1.0, min(args.broadcast_timeout, left() - 3))
        while load.event_count < expected and time.monotonic() < wait_until:
            time.sleep(0.002)
        got = [c.t_event - t_post for c in load.conns if c.t_event is not None]
        r["broadcast_all"] = max(got) if got and load.event_count >= expected else None
        r["broadcast_p50"] = percentile(got, 50)
        r["broadcast_last"] = max(got) if got else None
        r["broadcast_missing"] = expected - load.event_count
        if r["broadcast_missing"]:
            problems.append(f"broadcast missed {r['broadcast_missing']}/{expected} clients")
        if r["broadcast_recipients"] is not None and r["broadcast_recipients"] != n:
            problems.append(f"broadcast recipients={r['broadcast_recipients']}, expected {n}")

        r["rss_after_broadcast"] = rss_kib(worker)
        r["lost_after_open"] = dict(load.lost_after_open)
        if load.lost_after_open:
            problems.append(f"server dropped open connections: {dict(load.lost_after_open)}")
        r["pings_answered"] = load.pings
        if server.worker() != worker:
            problems.append(f"worker {worker} is gone (now {server.worker()}): restarted or crashed")

        # Release: close every client at once, then wait for the server to count zero.
        load.stop()
        cpu_close = cpu_seconds(worker)
        load.close_all()
        t_close = time.monotonic()
        r["drain"] = None
        drain_until = t_close + max(1.0, min(args.drain_timeout, left()))
        last_total = None
        polls = failed_polls = 0
        slowest = 0.0
        while time.monotonic() < drain_until:
            polls += 1
            status, body, elapsed, _ = http_call(
                port, "GET", "/api/system/status",
                timeout=max(0.2, min(args.http_timeout, drain_until - time.monotonic())))
            slowest = max(slowest, elapsed)
            if status == 200 and isinstance(body, dict):
                last_total = body["connections"]["total"]
                if last_total == 0:
                    r["drain"] = time.monotonic() - t_close
                    break
            else:
                failed_polls += 1
            time.sleep(0.05)
        r["drain_polls"] = (polls, failed_polls, slowest)
        cpu_drained = cpu_seconds(worker)
        r["drain_cpu"] = (cpu_drained - cpu_close) if None not in (cpu_close, cpu_drained) else None
        r["drain_worker_replaced"] = server.worker() != worker
        if r["drain_worker_replaced"]:
            problems.append(f"worker {worker} died after the clients closed (now "
                            f"{server.worker()}): its count of 0 is a new worker's")
        if r["drain"] is None:
            seen = ("no /api/system/status answer" if last_total is None
                    else f"last count {last_total}")
            problems.append(f"server did not count 0 connections within "
                            f"{drain_until - t_close:.0f} s of the clients closing ({seen})")
        if failed_polls:
            problems.append(f"HTTP stopped answering after the clients closed: {failed_polls}/"
                            f"{polls} /api/system/status polls failed "
                            f"({args.http_timeout:g} s timeout)")
        time.sleep(0.5)
        r["rss_after_close"] = rss_kib(worker)
        r["threads_after_close"] = threads_of(worker)
        r["rss_hwm"] = hwm_kib(worker)
        return r
    finally:
        with _no_interrupt():
            if load is not None:
                load.stop()
                load.close_all()
            r["shutdown"] = server.stop()
            log_problems, boots = server.log_problems()
            r["log_problems"] = log_problems
            r["worker_boots"] = boots
            r["graceful_exit"] = server.graceful_exit
            if log_problems:
                problems.append(f"{len(log_problems)} error line(s) in the server log")
            if boots > 1:
                problems.append(f"{boots} workers booted (a worker died or was restarted)")
            r["log_path"] = server.log_path
            r["budget"] = budget


# --------------------------------------------------------------------------- report


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 1000:.1f}"


def _mib(v: int | None) -> str:
    return "n/a" if v is None else f"{v / 1024:.1f}"


def _num(v: Any, fmt: str = "{}") -> str:
    return "n/a" if v is None else fmt.format(v)


def render(results: list[dict[str, Any]], args: argparse.Namespace, header: str) -> str:
    def row(label: str, fn) -> str:
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

    n = args.connections
    lines = [header, "",
             "| metric | " + " | ".join(r["worker_class"] for r in results) + " |",
             "|---|" + "---|" * len(results)]
    lines += [
        row("result", lambda r: "PASS" if not r["problems"] else "**FAIL**"),
        row("WebSockets opened (of N)", lambda r: f"{r['opened']} / {n}"),
        row("connect failures", lambda r: ", ".join(f"{k}: {v}" for k, v in r["connect_failures"].items()) or "0"),
        row("connect wall time (s)", lambda r: f"{r['connect_wall']:.2f}"),
        row("connections/s", lambda r: f"{r['connect_rate']:.0f}"),
        row("handshake+subscribe latency p50 / p99 (ms)", lambda r: f"{_ms(r['handshake_p50'])} / {_ms(r['handshake_p99'])}"),
        row("worker CPU during connect (s)", lambda r: f"{r['connect_cpu']:.2f}"),
        row("worker RSS before (MiB)", lambda r: _mib(r["rss_before"])),
        row("worker RSS with N open (MiB)", lambda r: _mib(r["rss_held"])),
        row("**RSS per connection (KiB)**", lambda r: f"{r['rss_per_conn']:.1f}"),
        row("worker RSS after broadcast (MiB)", lambda r: _mib(r["rss_after_broadcast"])),
        row("worker RSS after all closed (MiB)", lambda r: _mib(r["rss_after_close"])),
        row("worker peak RSS, VmHWM (MiB)", lambda r: _mib(r["rss_hwm"])),
        row("worker threads before / with N / after close",
            lambda r: f"{r['threads_before']} / {r['threads_held']} / {r['threads_after_close']}"),
        row("worker open fds before / with N", lambda r: f"{r['fds_before']} / {r['fds_held']}"),
        row("/health idle p50 / p99 / max (ms)", health("health_idle")),
        row("**/health with N open p50 / p99 / max (ms)**", health("health_held")),
        row("/status with N open (ms); connections.total",
            lambda r: f"{_ms(r['status_latency'])}; {r['status_total']}"),
        row("broadcast POST (ms); recipients",
            lambda r: f"{_ms(r['broadcast_post'])}; {r['broadcast_recipients']}"),
        row("**broadcast delivered to all N (ms)**", lambda r: _ms(r["broadcast_all"])),
        row("broadcast delivery p50 (ms); missing",
            lambda r: f"{_ms(r['broadcast_p50'])}; {r['broadcast_missing']}"),
        row("all N clients close at once: server counts 0 after (s)",
            lambda r: ("**not within " f"{args.drain_timeout:g} s**" if r["drain"] is None
                       else f"{r['drain']:.2f}" + (" **(worker killed, new worker)**"
                                                   if r["drain_worker_replaced"] else ""))),
        row("worker CPU from the close until then (s)", lambda r: f"{r['drain_cpu']:.2f}"),
        row(f"/status polls failed during that ({args.http_timeout:g} s timeout); slowest (ms)",
            lambda r: f"{r['drain_polls'][1]}/{r['drain_polls'][0]}; {_ms(r['drain_polls'][2])}"),
        row("server shutdown (SIGTERM); worker exited gracefully",
            lambda r: f"{r['shutdown']}; {'yes' if r['graceful_exit'] else '**no**'}"),
        row("server log error lines; workers booted",
            lambda r: f"{len(r['log_problems'])}; {r['worker_boots']}"),
        row("machine CPU busy / steal during connect (%)",
            lambda r: "{:.0f} / {:.0f}".format(*r["cpu_machine_connect"])),
        row("machine CPU busy / steal in 1 s before the server started (%)",
            lambda r: "{:.0f} / {:.0f}".format(*r["cpu_background"])),
    ]
    notes = []
    for r in results:
        for p in r["problems"]:
            notes.append(f"- {r['worker_class']}: {p}")
        for line in r.get("log_problems", [])[:5]:
            notes.append(f"  - log: `{line[:200]}`")
    if notes:
        lines += ["", "Problems:", ""] + notes
    return "\n".join(lines) + "\n"


def project_commit() -> str:
    """The git commit of the local_bridge being measured (best effort)."""
    try:
        import local_bridge
        where = os.path.dirname(os.path.dirname(os.path.abspath(local_bridge.__file__)))
        out = subprocess.run(["git", "-C", where, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except Exception:  # noqa: BLE001 - only informative
        return "unknown"


def versions() -> str:
    out = [f"local_bridge {project_commit()}", f"Python {platform.python_version()}"]
    for name in ("gunicorn", "gevent", "simple_websocket", "flask_sock"):
        try:
            from importlib.metadata import version
            out.append(f"{name} {version(name.replace('_', '-'))}")
        except Exception:  # noqa: BLE001 - only informative
            pass
    return ", ".join(out)


# --------------------------------------------------------------------------- main


class _Terminated(Exception):
    pass


_signals: dict[str, Any] = {"seen": False, "defer": 0, "pending": None}


def _on_signal(signum, frame):
    """The first SIGINT/SIGTERM/SIGHUP unwinds the run (the finally blocks stop the server);
    inside :func:`_no_interrupt` it waits until the block is done. Later signals are ignored
    so that the clean-up, itself bounded, is never cut short."""
    if _signals["seen"]:
        return
    _signals["seen"] = True
    exc = KeyboardInterrupt() if signum == signal.SIGINT else _Terminated(signal.Signals(signum).name)
    if _signals["defer"]:
        _signals["pending"] = exc
        return
    raise exc


@contextlib.contextmanager
def _no_interrupt():
    """Defer a signal's exception until the block (starting or stopping the server) is done."""
    _signals["defer"] += 1
    try:
        yield
    finally:
        _signals["defer"] -= 1
    if not _signals["defer"] and _signals["pending"] is not None:
        exc, _signals["pending"] = _signals["pending"], None
        raise exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-w", "--worker-class", action="append", choices=WORKER_CLASSES,
                        help="worker class to measure (repeatable; default: gevent and gthread)")
    parser.add_argument("-n", "--connections", type=int, default=2000,
                        help="concurrent WebSocket connections to hold (default 2000)")
    parser.add_argument("--deadline", type=float, default=120.0,
                        help="overall time budget in seconds, shared by the worker classes "
                             "(default 120; stopping each server may add up to ~30 s)")
    parser.add_argument("--output", help="also write the markdown table to this file")
    parser.add_argument("--window", type=int, default=256,
                        help="handshakes in flight at once (default 256)")
    parser.add_argument("--connect-timeout", type=float, default=30.0,
                        help="per-connection limit from connect() to 'subscribed' (default 30 s)")
    parser.add_argument("--health-requests", type=int, default=50,
                        help="GET /api/system/health requests per measurement (default 50)")
    parser.add_argument("--http-timeout", type=float, default=10.0,
                        help="timeout of one HTTP request (default 10 s)")
    parser.add_argument("--broadcast-timeout", type=float, default=30.0,
                        help="longest wait for the broadcast to reach every client (default 30 s)")
    parser.add_argument("--drain-timeout", type=float, default=20.0,
                        help="longest wait for the server to count 0 after closing (default 20 s)")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="pause between the last connect and the measurements (default 1 s)")
    parser.add_argument("--keep-logs", metavar="DIR",
                        help="keep the server logs in DIR (default: a temporary directory)")
    args = parser.parse_args(argv)
    classes = args.worker_class or list(WORKER_CLASSES)
    if args.connections < 1 or args.window < 1 or args.deadline <= 0 or args.health_requests < 1:
        parser.error("--connections, --window, --health-requests and --deadline must be positive")

    start = time.monotonic()
    deadline = start + args.deadline
    soft, hard = raise_nofile()
    needed = args.connections + 64
    if soft < needed:
        print(f"RLIMIT_NOFILE is {soft} (hard {hard}); {needed} descriptors are needed",
              file=sys.stderr)
        return 2

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)

    workdir = args.keep_logs or tempfile.mkdtemp(prefix="lb-capacity-")
    os.makedirs(workdir, exist_ok=True)
    results: list[dict[str, Any]] = []
    interrupted = None
    try:
        for i, worker_class in enumerate(classes):
            remaining = deadline - time.monotonic()
            if remaining <= 1:
                print(f"deadline reached before {worker_class}", file=sys.stderr)
                break
            class_deadline = time.monotonic() + remaining / (len(classes) - i)
            print(f"[capacity] {worker_class}: N={args.connections}, budget "
                  f"{class_deadline - time.monotonic():.0f} s", file=sys.stderr, flush=True)
            r = run_class(worker_class, args, class_deadline, workdir)
            results.append(r)
            print(f"[capacity] {worker_class}: {'PASS' if not r['problems'] else 'FAIL'} "
                  f"{'; '.join(r['problems'])}", file=sys.stderr, flush=True)
    except (KeyboardInterrupt, _Terminated) as exc:
        interrupted = type(exc).__name__ if isinstance(exc, KeyboardInterrupt) else str(exc)
        print(f"[capacity] interrupted ({interrupted}); server stopped", file=sys.stderr)
    finally:
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)

    header = (f"### N = {args.connections} WebSockets, {time.strftime('%Y-%m-%d %H:%M:%S')}\n\n"
              f"{os.cpu_count()} CPUs, {versions()}; client window {args.window}, "
              f"{args.health_requests} /health requests per row, wall time "
              f"{time.monotonic() - start:.0f} s")
    report = render(results, args, header) if results else header + "\n\nno result\n"
    print(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(report)
    failed = (interrupted is not None or len(results) < len(classes)
              or any(r["problems"] for r in results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
