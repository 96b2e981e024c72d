"""``local_bridge.client.BusClient``: the handshake, failures that leave nothing behind, the bus."""
from __future__ import annotations

import base64
import hashlib
import re
import socket
import subprocess
import sys
import threading
import time
from typing import Callable

import pytest

from local_bridge import protocol as p
from local_bridge.client import BusClient, ConnectionClosed, HandshakeError
from support import ServerProcess

CONNECTED = p.text_frame({"type": "connected", "client_id": "c" * 32, "seq": 0, "epoch": "e",
                          "heartbeat_interval": 30, "protocol": 1})


def switching_protocols(key: bytes) -> bytes:
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")


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


def test_a_process_whose_connect_times_out_exits(fake_bus):
    bus = fake_bus(lambda key: [switching_protocols(key)])
    program = ("from local_bridge.client import BusClient\n"
               f"BusClient({bus.url!r}, timeout=0.5)\n")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=20)
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
    head = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
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


# ---------------------------------------------------------------------- against the server

def test_register_subscribe_and_receive_an_event(server: ServerProcess):
    before = non_daemon_threads()
    with BusClient(server.ws_url) as client:
        assert non_daemon_threads() <= before, "the reader thread would keep the process alive"
        assert client.register("script", "client test")["client_name"] == "client test"
        assert client.subscribe(["jobs"])["channels"] == ["jobs"]
        seq = server.publish("job_progress", {"job_id": "c-1", "progress": 10, "stage": "s"},
                             channel="jobs")["seq"]
        event = next(e for e in client.events() if e.get("seq") == seq)
        assert (event["type"], event["job_id"], event["progress"]) == ("job_progress", "c-1", 10)


def test_a_late_first_read_against_the_server(server: ServerProcess, monkeypatch):
    monkeypatch.setattr(socket, "socket", LateSocket)
    with BusClient(server.ws_url, timeout=5) as client:
        assert client.hello["type"] == "connected"


def test_a_server_side_close_ends_events_with_its_code(server: ServerProcess):
    with BusClient(server.ws_url) as client:
        client.register("script", "to be disconnected")
        disconnect = server.post(f"/api/websocket/disconnect/{client.client_id}", json={})
        assert disconnect.status_code == 200, disconnect.text
        assert [e for e in client.events() if e["type"] != "heartbeat"] == []
        assert client.close_code == 4009
        with pytest.raises(ConnectionClosed):
            client.subscribe(["jobs"])


def test_close_leaves_the_server_and_no_thread(server: ServerProcess):
    before = non_daemon_threads()
    client = BusClient(server.ws_url)
    client.register("script", "closing client")
    client.close()
    client.close()  # twice is harmless
    assert client.close_code == 1000
    assert non_daemon_threads() <= before
    deadline = time.monotonic() + 10
    while any(c["client_id"] == client.client_id
              for c in server.get("/api/websocket/clients?limit=500").json()["items"]):
        assert time.monotonic() < deadline, "the server still lists the closed client"
        time.sleep(0.05)
