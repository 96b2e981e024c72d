"""Raw WebSocket frames, well-formed or not, and a bare-socket client that sends them.

Nothing here checks what it builds: a frame may lie about its length, set reserved bits, use
reserved opcodes, go unmasked or carry a close code no peer may send. The hostile-input suites
send such frames to the real server and watch what comes back.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

TEXT, BINARY, CONTINUATION = 0x1, 0x2, 0x0
CLOSE, PING, PONG = 0x8, 0x9, 0xA
TIMEOUT = 5.0


def frame(
    payload: bytes = b"",
    opcode: int = TEXT,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
    length_form: int | None = None,
) -> bytes:
    """One frame. ``length`` claims another payload length than the payload's own (up to
    2^64-1); ``length_form`` forces the 7-bit (0), 16-bit (126) or 64-bit (127) length field."""
    claimed = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode & 0xF
    masked = 0x80 if mask else 0
    form = length_form
    if form is None:
        form = 0 if claimed < 126 else 126 if claimed < 65536 else 127
    if form == 0:
        header = struct.pack("!BB", first, masked | (claimed & 0x7F))
    elif form == 126:
        header = struct.pack("!BBH", first, masked | 126, claimed & 0xFFFF)
    else:
        header = struct.pack("!BBQ", first, masked | 127, claimed & 0xFFFFFFFFFFFFFFFF)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + _xor(payload, key)


def _xor(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    whole = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(whole, "big")).to_bytes(
        len(payload), "big"
    )


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    """A close frame's payload: a 2-byte code and a reason (any bytes); None: no payload."""
    return b"" if code is None else struct.pack("!H", code) + reason


def text(message: object) -> bytes:
    """A masked text frame carrying ``message`` as JSON (a str is sent as it is)."""
    data = message if isinstance(message, str) else json.dumps(message)
    return frame(data.encode())


@dataclass
class Answer:
    """What a raw connection received: data frames, and how it ended."""

    frames: list[tuple[int, bytes]]
    close_code: int | None = None  # None: no close frame (the server dropped the connection)
    closed: bool = False  # the server closed the TCP connection, or sent a close frame
    matched: bool = False  # the frame waited for arrived

    def texts(self) -> list[str]:
        return [data.decode("utf-8", "replace") for op, data in self.frames if op == TEXT]


class RawSocket:
    """A WebSocket connection on a bare socket, optionally from another loopback address."""

    def __init__(
        self,
        port: int,
        path: str = "/ws",
        source: str | None = None,
        timeout: float = TIMEOUT,
        handshake: bool = True,
    ):
        self.port = port
        self.sock = socket.socket()
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.buffer = b""
        self.status = 0
        self.head = ""
        self.body = b""
        if handshake:
            self.handshake(path)

    def handshake(self, path: str = "/ws") -> int:
        """Send the upgrade request; return the answer's status (101 when upgraded). A refusal's
        body is read into ``self.body``."""
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.head = head.decode("latin-1")
        self.status = int(self.head.split()[1])
        if self.status != 101:
            length = 0
            for line in self.head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            while len(self.buffer) < length:
                chunk = self.sock.recv(4096)
                if not chunk:
                    break
                self.buffer += chunk
            self.body, self.buffer = self.buffer[:length], self.buffer[length:]
        return self.status

    def send(self, data: bytes) -> bool:
        """Send raw bytes; False when the server has already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _read(self, n: int, deadline: float) -> bytes:
        while len(self.buffer) < n:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv_frame(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        """The next frame the server sent: ``(opcode, payload)``. Raises ConnectionError when
        the server closed the connection, TimeoutError when nothing came in time."""
        deadline = time.monotonic() + timeout
        first, second = self._read(2, deadline)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2, deadline))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read(8, deadline))[0]
        return first & 0x0F, self._read(length, deadline)

    def recv_json(self, timeout: float = TIMEOUT) -> dict:
        opcode, data = self.recv_frame(timeout)
        assert opcode == TEXT, (opcode, data)
        return json.loads(data)

    def drain(self, until: float) -> Answer:
        """Read frames until the server closes (close frame or end of stream) or ``until``
        seconds pass; pings are answered, as every peer does."""
        return self.drain_until(None, until)

    def drain_until(self, wanted: Callable[[int, bytes], bool] | None, until: float) -> Answer:
        """:meth:`drain`, stopping early at the first frame for which ``wanted(opcode, payload)``
        is true (``matched``)."""
        answer = Answer([])
        deadline = time.monotonic() + until
        while time.monotonic() < deadline:
            try:
                opcode, data = self.recv_frame(deadline - time.monotonic())
            except TimeoutError:
                break
            except OSError:  # ConnectionError, reset
                answer.closed = True
                break
            if opcode == CLOSE:
                answer.close_code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                answer.closed = True
                self.send(frame(data[:2], CLOSE))  # the closing handshake's answer
                break
            if opcode == PING:
                self.send(frame(data, PONG))
                continue
            answer.frames.append((opcode, data))
            if wanted is not None and wanted(opcode, data):
                answer.matched = True
                break
        return answer

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
