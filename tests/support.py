"""Test support: run the real server on a free loopback port, and talk to it like a client."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import websocket

STARTUP_TIMEOUT = 20.0
RECV_TIMEOUT = 5.0


def service_url(variable: str, service: str) -> str:
    """The URL of a test service from the environment; without it the test is skipped, except
    under CI (``CI=true``), where a missing service is a failure."""
    url = os.environ.get(variable)
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{variable} is not set; CI must test {service}")
        pytest.skip(f"{variable} is not set: {service} tests skipped")
    return url


def unreachable(variable: str, exc: Exception) -> None:
    """A service named by ``variable`` did not answer: skip, or under CI fail."""
    if os.environ.get("CI") == "true":
        raise exc
    pytest.skip(f"the service at {variable} is unreachable: {exc.__class__.__name__}")


def run_under_gevent(code: str, timeout: float = 60) -> str:
    """Run ``code`` in a fresh interpreter after gevent's ``patch_all()``; its standard output.
    Fails the test with the program's standard error when it exits non-zero."""
    program = "from gevent import monkey; monkey.patch_all()\n" + code
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def has_ipv6_loopback() -> bool:
    """Whether this machine can bind ``::1`` (IPv6 tests skip without it)."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """``local-bridge serve`` in a subprocess, with its settings given as environment."""

    settings: dict[str, Any] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    args: tuple[str, ...] = ()  # extra `serve` arguments

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> ServerProcess:
        if getattr(self, "_dir", None) is None:  # a restart keeps the database
            self._dir = tempfile.TemporaryDirectory(prefix="local-bridge-test-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")}
        env.update(
            {
                "LOCAL_BRIDGE_PORT": str(self.port),
                "LOCAL_BRIDGE_DATABASE_URL": f"sqlite:///{self._dir.name}/test.db",
                "LOCAL_BRIDGE_CONNECT_RATE": "0",
            }
        )
        env.update({f"LOCAL_BRIDGE_{k}": str(v) for k, v in self.settings.items()})
        self.log_path = os.path.join(self._dir.name, "server.log")
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local_bridge.cli", "serve", *self.args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.http + "/api/system/health", timeout=1).status_code in (
                    200,
                    503,
                ):
                    return self  # answering: up (503 is a degraded dependency, still up)
            except requests.RequestException:
                pass
            time.sleep(0.05)  # polling for readiness: the server has no other way to tell us
        self.stop()
        raise RuntimeError(f"server did not become ready:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        self._end_process()
        if getattr(self, "_dir", None) is not None:
            self._dir.cleanup()
            self._dir = None

    def restart(self) -> ServerProcess:
        """Stop the server (SIGTERM: clients are closed 1001) and start it again on the same port
        and database; with the in-memory backplane its history and epoch start anew."""
        self._end_process()
        return self.start()

    def _end_process(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if getattr(self, "_log", None) is not None:
            self._log.close()

    # ------------------------------------------------------------------ HTTP helpers

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.http + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.http + path, timeout=10, **kwargs)

    def patch(self, path: str, **kwargs) -> requests.Response:
        return requests.patch(self.http + path, timeout=10, **kwargs)

    def publish(
        self,
        type_: str,
        data: dict[str, Any],
        channel: str | None = None,
        client_types: list[str] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"type": type_, "data": data}
        if channel is not None:
            body["channel"] = channel
        if client_types is not None:
            body["client_types"] = client_types
        response = self.post("/api/websocket/broadcast", json=body)
        assert response.status_code == 202, response.text
        return response.json()

    def client(self, **kwargs) -> BusClient:
        return BusClient(self.ws_url, **kwargs)


class BusClient:
    """A real WebSocket client (websocket-client) with helpers for the bus protocol."""

    def __init__(self, url: str, **options: Any):
        self.ws = websocket.create_connection(url, timeout=RECV_TIMEOUT, **options)
        self.connected = self.recv()
        assert self.connected["type"] == "connected", self.connected
        self.client_id = self.connected["client_id"]

    def send(self, message: dict[str, Any] | str) -> None:
        self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def recv_frame(self, timeout: float = RECV_TIMEOUT) -> tuple[int, bytes]:
        """The next data or close frame (pings are answered by the library)."""
        self.ws.settimeout(timeout)
        while True:
            opcode, frame = self.ws.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_PING:
                self.ws.pong(frame.data)
                continue
            if opcode == websocket.ABNF.OPCODE_PONG:
                continue
            return opcode, frame.data

    def recv_text(self, timeout: float = RECV_TIMEOUT) -> str:
        opcode, data = self.recv_frame(timeout)
        assert opcode == websocket.ABNF.OPCODE_TEXT, (opcode, data)
        return data.decode()

    def recv(self, timeout: float = RECV_TIMEOUT, skip_heartbeats: bool = True) -> dict[str, Any]:
        while True:
            message = json.loads(self.recv_text(timeout))
            if not (skip_heartbeats and message.get("type") == "heartbeat"):
                return message

    def request(self, message: dict[str, Any], expect: str) -> dict[str, Any]:
        """Send ``message`` and return the next message, which must be of type ``expect``."""
        self.send(message)
        reply = self.recv()
        assert reply["type"] == expect, reply
        return reply

    def register(self, client_type: str = "gui", name: str = "test client") -> dict[str, Any]:
        return self.request(
            {"type": "register", "client_type": client_type, "client_name": name}, "registered"
        )

    def subscribe(self, *channels: str) -> dict[str, Any]:
        return self.request({"type": "subscribe", "channels": list(channels)}, "subscribed")

    def until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = RECV_TIMEOUT
    ) -> list[dict[str, Any]]:
        """Messages up to and including the first that satisfies ``predicate``."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            seen.append(self.recv(max(0.01, deadline - time.monotonic())))
            if predicate(seen[-1]):
                return seen

    def close_code(self, timeout: float = RECV_TIMEOUT) -> int:
        """Read until the server's close frame; return its code (data frames are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            opcode, data = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass


def marker(server: ServerProcess, name: str = "test.marker") -> int:
    """Publish an event every connected client receives; return its seq.

    A client that must receive nothing after some action reads until the marker and checks
    that nothing came first: no sleeping, no guessing.
    """
    return server.publish(name, {})["seq"]


def expect_only_marker(client: BusClient, seq: int) -> None:
    message = client.recv()
    assert message["type"] == "test.marker" and message["seq"] == seq, message


class RawClient:
    """A WebSocket client on a bare socket: it can stop reading, or never answer pings."""

    def __init__(
        self,
        port: int,
        path: str = "/ws",
        rcvbuf: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(RECV_TIMEOUT)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.status_line = head.split(b"\r\n")[0].decode()
        self.response_head = head.decode()

    def send_frame(self, payload: bytes, opcode: int = 0x1) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_json(self, message: dict[str, Any]) -> None:
        self.send_frame(json.dumps(message).encode())

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv_frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read(8))[0]
        return first & 0x0F, self._read(length)

    def recv_json(self) -> dict[str, Any]:
        opcode, data = self.recv_frame()
        assert opcode == 0x1, (opcode, data)
        return json.loads(data)

    def close(self) -> None:
        self.sock.close()


def json_of(response) -> dict[str, Any]:
    """The JSON body of a ``requests`` response or of a Flask test client's (empty: ``{}``)."""
    if hasattr(response, "get_json"):  # the in-process tier's Flask test client
        return response.get_json() if response.data else {}
    return response.json() if response.content else {}


def ok(response, status: int = 200) -> dict[str, Any]:
    """The JSON body of a response that must have ``status`` (empty body: ``{}``)."""
    assert response.status_code == status, response.text
    return json_of(response)


def error(response, status: int, code: str) -> dict[str, Any]:
    """The ``error`` object of a JSON error response with ``status`` and ``code``."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = json_of(response)["error"]
    assert body["code"] == code and body["message"], body
    return body


ALL_CHANNELS = ["jobs", "photos", "sessions", "system", "queue", "approval", "export"]


class Watcher:
    """A bus client subscribed to channels; :meth:`after` returns what one action published."""

    def __init__(self, server: ServerProcess, channels: list[str] | None = None):
        self.server = server
        self.client = server.client()
        self.client.subscribe(*(channels or ALL_CHANNELS))

    def drain(self) -> list[dict[str, Any]]:
        """Every event up to a fresh marker (the marker itself left out)."""
        seq = marker(self.server)
        return [
            m
            for m in self.client.until(lambda m: m.get("seq") == seq, timeout=15)
            if m.get("seq") != seq
        ]

    def after(self, action: Callable[[], Any]) -> tuple[Any, list[dict[str, Any]]]:
        """Run ``action``; return its result and the events it published, in order."""
        self.drain()
        result = action()
        return result, self.drain()

    def close(self) -> None:
        self.client.close()


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


class LateSocket(socket.socket):
    """A socket whose first read starts 200 ms late: whatever the server sent by then (the
    101 and the first frames) arrives in that one read."""

    first_read = True

    def recv(self, *args):
        if self.first_read:
            self.first_read = False
            time.sleep(0.2)
        return super().recv(*args)


def non_daemon_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if not t.daemon}
