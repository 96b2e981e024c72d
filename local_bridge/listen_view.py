"""What ``local-bridge listen`` prints: one readable line per event (or its JSON), the type
filter, and the one-line notices of reconnects and lost history (standard error)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

_ENVELOPE = ("type", "timestamp", "channel", "seq")


def wanted(event_type: str, patterns: Iterable[str]) -> bool:
    """Whether ``event_type`` matches one of the shell-style ``patterns`` (all, when none)."""
    patterns = list(patterns)
    return not patterns or any(fnmatchcase(event_type, pattern) for pattern in patterns)


def event_line(event: dict[str, Any]) -> str:
    """``14:32:15.123  #1042  jobs  job_progress  job_id=abc stage=analyzing progress=45.5``:
    the time of day (UTC), seq, channel, type, then the fields that have a value."""
    stamp = str(event.get("timestamp") or "")
    clock = stamp[11:23] if len(stamp) >= 23 else stamp
    seq = event.get("seq")
    head = [clock, f"#{seq}" if seq is not None else "#-", str(event.get("channel") or "*")]
    fields = " ".join(
        f"{name}={_value(value)}"
        for name, value in event.items()
        if name not in _ENVELOPE and value is not None
    )
    return "  ".join([*head, str(event.get("type")), fields]).rstrip()


def _value(value: Any) -> str:
    if isinstance(value, str):
        plain = value and not any(c.isspace() or c in "\"'=" for c in value)
        return value if plain else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def resync_notice(message: dict[str, Any]) -> str:
    """The one line for ``recovered: false``."""
    return (
        f"local_bridge: events after seq {message.get('since')} are no longer available "
        "(the server restarted without history, or its history expired); "
        "some may be missing above, reload over REST if it matters"
    )


def lost_notice(describe: str) -> str:
    """The one line when the connection drops."""
    return f"local_bridge: connection lost: {describe}; reconnecting"


def resumed_notice(seq: int | None) -> str:
    """The one line when it is back."""
    return f"local_bridge: reconnected, resuming after seq {seq}"
