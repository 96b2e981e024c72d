"""What the peer servers share: the event envelope local_bridge sends, built the same way.

An event published as ``{"type": T, "channel": C, "data": {...}}`` reaches subscribers as
``{"type": T, "timestamp": ISO-8601, "channel": C, "seq": n, ...data}`` (PROTOCOL.md section 2),
serialized once for all recipients.
"""

from __future__ import annotations

import json
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
