"""``local_bridge.client.BusClient`` (client/connection.py): the handshake, failures that leave nothing behind, the bus."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from local_bridge import protocol as p
from local_bridge.client import BusClient, HandshakeError
from support import LateSocket, non_daemon_threads

CONNECTED = p.text_frame(
    {
        "type": "connected",
        "client_id": "c" * 32,
        "seq": 0,
        "epoch": "e",
        "heartbeat_interval": 30,
        "protocol": 1,
    }
)


def switching_protocols(key: bytes) -> bytes:
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


class FakeBus:
    """A bare TCP server on a thread: it answers one upgrade request with the chunks ``answer``
    returns for the request's key (one ``sendall`` each; ``None``: hang up), then reads until
    the client's EOF, answering a close frame."""

    def __init__(self, answer: Callable[[bytes], list[bytes] | None]):
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.eof = threading.Event()
        self.connection: socket.socket | None = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.listener.settimeout(30)
        self.connection, _ = self.listener.accept()
        self.connection.settimeout(30)
        request = b""
        while b"\r\n\r\n" not in request:
            request += self.connection.recv(4096)
        key = re.search(rb"Sec-WebSocket-Key: *(\S+)", request, re.IGNORECASE).group(1)
        chunks = self.answer(key)
        if chunks is None:
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        for chunk in chunks:
            self.connection.sendall(chunk)
        try:
            while data := self.connection.recv(4096):
                if data[0] == 0x88:  # the client's close frame: answer it, as a server does
                    self.connection.sendall(p.encode_frame(b"\x03\xe8", opcode=0x8))  # 1000
            self.eof.set()
        except OSError:
            pass

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.listener.close()


@pytest.fixture
def fake_bus():
    started: list[FakeBus] = []

    def start(answer: Callable[[bytes], list[bytes] | None]) -> FakeBus:
        started.append(FakeBus(answer))
        return started[-1]

    yield start
    for bus in started:
        bus.close()


# ---------------------------------------------------------------------- the handshake


def test_a_frame_in_the_same_packet_as_the_101_is_read_at_once(fake_bus):
    bus = fake_bus(lambda key: [switching_protocols(key) + CONNECTED])
    started = time.monotonic()
    with BusClient(bus.url, timeout=3) as client:
        assert time.monotonic() - started < 2
        assert client.hello["type"] == "connected" and client.client_id == "c" * 32
    assert bus.eof.wait(5), "the client never closed its socket"


def test_a_late_first_read_finds_the_101_and_the_frame_together(fake_bus, monkeypatch):
    bus = fake_bus(lambda key: [switching_protocols(key), CONNECTED])
    monkeypatch.setattr(socket, "socket", LateSocket)
    with BusClient(bus.url, timeout=3) as client:
        assert client.client_id == "c" * 32


def test_frames_after_the_handshake_are_kept_in_order(fake_bus):
    events = [p.text_frame({"type": "job_progress", "seq": n, "channel": "jobs"}) for n in (1, 2)]
    bus = fake_bus(lambda key: [switching_protocols(key) + CONNECTED + b"".join(events)])
    with BusClient(bus.url, timeout=3) as client:
        received = client.events()
        assert [next(received)["seq"], next(received)["seq"]] == [1, 2]


def test_no_connected_message_is_a_timeout_that_leaves_nothing_behind(fake_bus):
    bus = fake_bus(lambda key: [switching_protocols(key)])
    before = non_daemon_threads()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        BusClient(bus.url, timeout=0.5)
    assert time.monotonic() - started < 2
    assert bus.eof.wait(5), "the socket was left open"
    assert non_daemon_threads() <= before


@pytest.mark.e2e  # a process of its own
def test_a_process_whose_connect_times_out_exits(fake_bus):
    bus = fake_bus(lambda key: [switching_protocols(key)])
    program = f"from local_bridge.client import BusClient\nBusClient({bus.url!r}, timeout=0.5)\n"
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 1 and "TimeoutError" in result.stderr, result.stderr
    assert bus.eof.wait(5)


def test_a_server_that_never_answers_the_upgrade_is_a_timeout(fake_bus):
    bus = fake_bus(lambda key: [])
    before = non_daemon_threads()
    with pytest.raises(TimeoutError):
        BusClient(bus.url, timeout=0.5)
    assert bus.eof.wait(5)
    assert non_daemon_threads() <= before


def test_a_refused_upgrade_names_the_status_and_the_servers_error(fake_bus):
    body = b'{"error": {"code": "unavailable", "message": "too many connections"}}'
    head = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    bus = fake_bus(lambda key: [head + body])
    with pytest.raises(HandshakeError) as raised:
        BusClient(bus.url, timeout=3)
    assert raised.value.status == 503
    assert "503" in str(raised.value) and "too many connections" in str(raised.value)
    assert bus.eof.wait(5)


def test_a_connection_closed_during_the_handshake_is_an_error(fake_bus):
    bus = fake_bus(lambda key: None)
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        BusClient(bus.url, timeout=3)
    assert time.monotonic() - started < 2


def test_a_refused_tcp_connection_raises_at_once():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        BusClient(f"ws://127.0.0.1:{port}/ws", timeout=3)
