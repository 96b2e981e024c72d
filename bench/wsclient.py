"""The one raw WebSocket client of the measurement tools (RFC 6455, client side, no library).

A library client would cost more CPU than the servers it measures, so the load generators speak
the protocol themselves: :func:`handshake_request` and :func:`handshake_status` for the opening
handshake, :func:`masked_frame` for what a client sends, :func:`frame_at` for what a server
sends. :class:`BlockingClient` puts them together on one blocking socket; the many-connection
loops (``bench.loadgen.subscribers``, ``bench.capacity.clients``) drive the same functions from
their own event loops.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct

HOST = "127.0.0.1"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
# One fixed masking key: masking is there against proxies' caches, and a random key per frame
# would only cost the load generator CPU.
MASK = b"\x9b\x3e\xa1\x57"


def masked_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """A final, masked client frame (RFC 6455 section 5.2) around ``payload``."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = (MASK * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + MASK + body


def close_frame(code: int = 1000) -> bytes:
    """A masked close frame carrying ``code``."""
    return masked_frame(struct.pack("!H", code), OP_CLOSE)


def close_code(payload: bytes) -> int:
    """The status code of a close frame's payload (1005: none given)."""
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


def handshake_request(port: int, path: str = "/ws") -> bytes:
    """The opening GET of a WebSocket to ``HOST:port`` (a fresh random key each call)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def handshake_status(buf: bytes | bytearray) -> tuple[str, int] | None:
    """(status code, where the frames start) of the server's answer in ``buf``; None while the
    answer is incomplete. The status is "101" when the WebSocket is open."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    status_line = bytes(buf[: buf.find(b"\r\n")])
    parts = status_line.split(b" ", 2)
    return (parts[1].decode("latin-1", "replace") if len(parts) > 1 else "?"), end + 4


def frame_at(buf: bytes | bytearray, pos: int) -> tuple[int, int, int] | None:
    """(first byte, payload start, payload end) of the server frame at ``buf[pos:]``; None while
    the frame is incomplete. The first byte holds FIN (0x80) and the opcode (0x0F)."""
    size = len(buf)
    if size - pos < 2:
        return None
    n = buf[pos + 1] & 0x7F
    head = 2
    if n == 126:
        if size - pos < 4:
            return None
        n = (buf[pos + 2] << 8) | buf[pos + 3]
        head = 4
    elif n == 127:
        if size - pos < 10:
            return None
        n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
        head = 10
    end = pos + head + n
    return None if end > size else (buf[pos], pos + head, end)


def read_some(sock: socket.socket, size: int) -> tuple[bytes | None, OSError | None]:
    """(data, error) of one read on a non-blocking socket: (None, None) when nothing is there
    yet, (b"", None) at EOF, (None, the error) when it failed."""
    try:
        return sock.recv(size), None
    except BlockingIOError:
        return None, None
    except OSError as exc:
        return None, exc


def send_some(sock: socket.socket, data: bytes) -> tuple[int, OSError | None]:
    """(bytes sent, error) of one send on a non-blocking socket (0 sent when its buffer is full)."""
    try:
        return sock.send(data), None
    except BlockingIOError:
        return 0, None
    except OSError as exc:
        return 0, exc


class BlockingClient:
    """One WebSocket client on a blocking socket: handshake, server frames in, masked frames out."""

    def __init__(self, port: int, timeout: float, path: str = "/ws"):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.sendall(handshake_request(port, path))
        self.buf, self.pos = b"", 0
        while (answer := handshake_status(self.buf)) is None:
            self._fill()
        status, start = answer
        if status != "101":
            raise ConnectionError(f"handshake answered HTTP {status}")
        self.buf = self.buf[start:]

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0

    def message(self) -> dict | None:
        """The next text message, decoded; None for a close frame. Pings are answered. Raises
        ``TimeoutError`` when nothing complete arrives within the socket's timeout."""
        while True:
            frame = frame_at(self.buf, self.pos)
            if frame is None:
                self._fill()
                continue
            first, start, end = frame
            self.pos = end
            opcode, payload = first & 0x0F, self.buf[start:end]
            if opcode == OP_TEXT:
                return json.loads(payload)
            if opcode == OP_PING:
                self.send(payload, OP_PONG)
            elif opcode == OP_CLOSE:
                return None

    def send(self, payload: bytes, opcode: int = OP_TEXT) -> None:
        self.sock.sendall(masked_frame(payload, opcode))

    def send_json(self, doc: dict) -> None:
        self.send(json.dumps(doc).encode())

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
