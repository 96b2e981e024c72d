"""What the peer servers share: the event envelope local_bridge sends, built the same way.

An event published as ``{"type": T, "channel": C, "data": {...}}`` reaches subscribers as
``{"type": T, "timestamp": ISO-8601, "channel": C, "seq": n, ...data}`` (PROTOCOL.md section 2),
serialized once for all recipients. The asyncio peers also share their HTTP publishing listener
(:func:`http_publish_handler`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime

ENVELOPE = ("type", "timestamp", "channel", "seq")
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(type_: str, channel: str | None, seq: int, data: dict) -> dict:
    message = {"type": type_, "timestamp": now_iso(), "channel": channel, "seq": seq}
    message.update((k, v) for k, v in data.items() if k not in ENVELOPE)
    return message


def dumps(message: dict) -> str:
    return _dumps(message)


def reply(type_: str, **fields) -> str:
    return dumps({"type": type_, "timestamp": now_iso(), **fields})


def parse_publish(body: bytes | str) -> tuple[str, str | None, dict]:
    """``(type, channel, data)`` of a publish request body; ValueError when malformed."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        raise ValueError("body needs a string 'type'")
    data = doc.get("data") or {}
    if not isinstance(data, dict):
        raise ValueError("'data' must be an object")
    return doc["type"], doc.get("channel"), data


def _response(status: str, body: bytes, keep_alive: bool) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode() + body


def http_publish_handler(publish: Callable[[str, str | None, dict], tuple[int, int]]):
    """An ``asyncio.start_server`` handler: a tiny HTTP/1.1 keep-alive listener for peers whose
    WebSocket library speaks only GET. ``POST /api/websocket/broadcast`` with local_bridge's body
    calls ``publish(type, channel, data)`` -> ``(seq, recipients)`` and answers 202 ``{"seq",
    "recipients"}`` (400 when malformed); ``GET /health`` answers 200."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, _, rest = lines[0].partition(" ")
                path = rest.partition(" ")[0]
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                keep_alive = headers.get("connection", "").lower() != "close"
                if method == "POST" and path == "/api/websocket/broadcast":
                    try:
                        type_, channel, data = parse_publish(body)
                    except (ValueError, TypeError) as exc:
                        out = _response(
                            "400 Bad Request", dumps({"error": str(exc)}).encode(), keep_alive
                        )
                    else:
                        seq, recipients = publish(type_, channel, data)
                        out = _response(
                            "202 Accepted",
                            dumps({"seq": seq, "recipients": recipients}).encode(),
                            keep_alive,
                        )
                elif method == "GET" and path == "/health":
                    out = _response("200 OK", b'{"status":"ok"}', keep_alive)
                else:
                    out = _response("404 Not Found", b'{"error":"not found"}', keep_alive)
                writer.write(out)
                await writer.drain()
                if not keep_alive:
                    return
        except ConnectionError:
            pass
        finally:
            writer.close()

    return handler


def recipients_of(subscribers: dict[str, set], channel: str | None):
    """The subscribers of ``channel``, or of any channel when it is None (an event for all)."""
    if channel:
        return subscribers.get(channel, ())
    return {sub for group in subscribers.values() for sub in group}


def loopback_args(description: str, *flags: tuple[str, str]) -> argparse.Namespace:
    """``--host`` (loopback only), ``--port`` (WebSocket), ``--http-port`` (publishing) and
    the peer's own on/off ``flags`` (name, help)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    for name, text in flags:
        parser.add_argument(name, action="store_true", help=text)
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("loopback only")
    return args
