"""The wire protocol of PROTOCOL.md, free of I/O.

Parsing and validating client messages, building server messages, encoding WebSocket frames,
and the error and close codes. Nothing here touches a socket, a thread or Flask.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, IntEnum
from typing import Any

PROTOCOL_VERSION = 1

#: The channels of PROTOCOL.md section 3.
CHANNELS = frozenset({"jobs", "photos", "sessions", "system", "queue", "approval", "export"})
#: Entity sub-channels: ``<channel>:<id>`` for these channels; the value names the event field.
ENTITY_CHANNELS = {"jobs": "job_id", "sessions": "session_id", "photos": "photo_id"}
#: Entity ids (and the ``<id>`` of a sub-channel); ``\Z`` because ``$`` admits a trailing newline.
ENTITY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}\Z")
CLIENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")
MAX_CHANNELS_PER_REQUEST = 64
MAX_CLIENT_NAME = 128
UNKNOWN_CLIENT_TYPE = "unknown"
#: Every integer a client sends (ids, seqs, counters, sizes) is a signed 64-bit integer: the
#: one bound shared by the wire, the event catalog and the REST API.
MIN_INT64 = -(2**63)
MAX_INT64 = 2**63 - 1


class CloseCode(IntEnum):
    """WebSocket close codes of PROTOCOL.md section 5."""

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    UNAUTHORIZED = 4001
    FORBIDDEN = 4003
    NOT_FOUND = 4004
    SLOW_CONSUMER = 4008
    ADMIN_DISCONNECT = 4009
    RATE_LIMITED = 4029


CLOSE_REASONS: dict[int, str] = {
    CloseCode.NORMAL: "normal closure",
    CloseCode.GOING_AWAY: "server shutting down",
    CloseCode.MESSAGE_TOO_BIG: "message too big",
    CloseCode.INTERNAL_ERROR: "internal error",
    CloseCode.UNAUTHORIZED: "unauthorized",
    CloseCode.FORBIDDEN: "forbidden",
    CloseCode.NOT_FOUND: "not found",
    CloseCode.SLOW_CONSUMER: "slow consumer",
    CloseCode.ADMIN_DISCONNECT: "disconnected by an administrator",
    CloseCode.RATE_LIMITED: "rate limited",
}


class ErrorCode:
    """The ``code`` values of an ``error`` reply."""

    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    UNKNOWN_CHANNEL = "unknown_channel"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    JOB_NOT_FOUND = "job_not_found"
    INTERNAL_ERROR = "internal_error"
    UNAUTHORIZED = "unauthorized"  # protocol 1.1: a message before `authenticate`, or a bad token


#: Types the server sends as replies; an administrator may not publish events with these names.
REPLY_TYPES = frozenset(
    {
        "connected",
        "registered",
        "subscribed",
        "unsubscribed",
        "pong",
        "error",
        "heartbeat",
        "replay_complete",
        "job_status",
        "authenticated",
        "refreshed",
    }
)


class ProtocolError(Exception):
    """A client message that must be answered with an ``error`` reply."""

    def __init__(self, code: str, message: str, request_type: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_type = request_type


# --------------------------------------------------------------------------- time and JSON


def utc_timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 UTC with microseconds and ``Z``."""
    moment = datetime.now(UTC) if moment is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def dumps(message: dict[str, Any]) -> str:
    """Compact JSON text of one message."""
    return _encoder.encode(message)


class JsonSyntaxError(ValueError):
    """Text that is not JSON; the message is written for the sender, free of parser internals."""


class _NotJsonValue(ValueError):
    """A token Python's parser reads but JSON does not have."""


def _refuse_constant(name: str) -> Any:
    # Python's parser accepts NaN and Infinity, which are not JSON and which no client can read.
    raise _NotJsonValue(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: beyond a double, Python would read it as infinity
        raise _NotJsonValue("a number is too large")
    return value


def parse_json(text: str | bytes) -> Any:
    """Parse JSON text strictly: NaN, Infinity and numbers beyond a double are refused.

    Raises :class:`JsonSyntaxError` whose message says what is wrong and, for a syntax error,
    where (``Expecting value (line 1, column 5)``).
    """
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise JsonSyntaxError(f"{exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except UnicodeDecodeError:
        raise JsonSyntaxError("the text is not valid UTF-8") from None
    except _NotJsonValue as exc:
        raise JsonSyntaxError(str(exc)) from None
    except ValueError as exc:
        # The only other ValueError of the parser: an integer past int_max_str_digits.
        raise JsonSyntaxError(
            "a number has too many digits" if "digits" in str(exc) else "not valid JSON"
        ) from None
    except RecursionError:
        raise JsonSyntaxError("nested too deeply") from None
    # An escape such as \ud800 alone parses into a string that UTF-8 cannot encode: every reply
    # or event that echoed it would fail to serialize. Only text with such an escape is walked.
    if isinstance(text, (bytes, bytearray)):
        text = text.decode(json.detect_encoding(text), "replace")
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(value)
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _refuse_lone_surrogates(value: Any) -> None:
    """Raise :class:`JsonSyntaxError` when a string (key or value) in ``value`` holds an
    unpaired UTF-16 surrogate (a paired one was already joined into one character)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise JsonSyntaxError("a string holds an unpaired surrogate escape") from None


# --------------------------------------------------------------------------- frames


def encode_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final, unmasked server frame (RFC 6455 section 5.2) around ``payload``."""
    length = len(payload)
    first = 0x80 | opcode
    if length < 126:
        header = struct.pack("!BB", first, length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


def text_frame(message: dict[str, Any]) -> bytes:
    """Serialize ``message`` and frame it as one text frame."""
    return encode_frame(dumps(message).encode())


def frame_payload(frame: bytes) -> bytes:
    """The payload of a frame made by :func:`encode_frame` (its header stripped)."""
    length = frame[1] & 0x7F
    return frame[2 + (2 if length == 126 else 8 if length == 127 else 0) :]


PING_FRAME = encode_frame(b"", opcode=0x9)
PLAIN_PONG_FRAME = encode_frame(b"pong")


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame carrying ``code`` and a short UTF-8 ``reason``."""
    # 123 bytes at most, cut on a character boundary: the reason must stay valid UTF-8
    reason_bytes = reason.encode()[:123].decode(errors="ignore").encode()
    return encode_frame(struct.pack("!H", code) + reason_bytes, opcode=0x8)


# --------------------------------------------------------------------------- server messages


def reply(type_: str, **fields: Any) -> dict[str, Any]:
    """A reply to a client's request: ``type`` and ``timestamp`` first, then ``fields``."""
    return {"type": type_, "timestamp": utc_timestamp(), **fields}


def error_reply(code: str, message: str, request_type: str | None = None) -> dict[str, Any]:
    """The ``error`` message of PROTOCOL.md section 5."""
    return reply("error", code=code, message=message, request_type=request_type)


# --------------------------------------------------------------------------- channels


def is_valid_channel(name: Any) -> bool:
    """A main channel, or an entity sub-channel (``jobs:<id>``, ``sessions:<id>``,
    ``photos:<id>``)."""
    if not isinstance(name, str):
        return False
    if name in CHANNELS:
        return True
    base, sep, entity = name.partition(":")
    return bool(sep) and base in ENTITY_CHANNELS and bool(ENTITY_ID_PATTERN.match(entity))


def entity_channels(channel: str | None, fields: dict[str, Any]) -> tuple[str, ...]:
    """Every channel an event on ``channel`` reaches: itself plus the entity sub-channels its
    ``job_id``/``session_id``/``photo_id`` fields name (PROTOCOL.md section 3)."""
    if channel is None:
        return ()
    if channel not in CHANNELS:  # published straight to a sub-channel: that one only
        return (channel,)
    targets = [channel]
    for base, key in ENTITY_CHANNELS.items():
        value = fields.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and ENTITY_ID_PATTERN.match(value):
            targets.append(f"{base}:{value}")
    return tuple(targets)


# --------------------------------------------------------------------------- bus events


@dataclass(frozen=True, slots=True)
class BusEvent:
    """A published event, serialized and framed once for all its recipients.

    ``targets`` are the channels whose subscribers receive it (empty with ``channel`` None:
    every connected client); ``client_types`` limits recipients when not None.
    """

    seq: int
    message: dict[str, Any]
    targets: tuple[str, ...]
    client_types: frozenset[str] | None
    frame: bytes

    @property
    def type(self) -> str:
        type_: str = self.message["type"]
        return type_

    @property
    def channel(self) -> str | None:
        channel: str | None = self.message["channel"]
        return channel

    @property
    def payload(self) -> bytes:
        """The event's JSON text (UTF-8), as its frame carries it: what SSE writes."""
        return frame_payload(self.frame)


ENVELOPE_FIELDS = ("type", "timestamp", "channel", "seq")
# Event fields must be JSON for every client: NaN and Infinity are refused, not written.
_event_encoder = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
)


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event with its fields serialized, waiting for its ``seq``.

    Serializing before numbering keeps the costly part out of the numbering lock, and a value
    that cannot be JSON fails here, before the event takes a ``seq``.
    """

    type: str
    channel: str | None
    fields: dict[str, Any]
    targets: tuple[str, ...]
    client_types: frozenset[str] | None
    _head: str  # '{"type":...,"timestamp":"'
    _middle: str  # '","channel":...,"seq":'
    _tail: str  # ',<fields>}' or '}'

    def parts(self) -> tuple[str, str, str]:
        """The text around the timestamp and the seq: ``head + ts + middle + seq + tail``."""
        return self._head, self._middle, self._tail

    def finish(self, seq: int, timestamp: str | None = None) -> BusEvent:
        """Number and timestamp the event, and frame it once for all recipients."""
        timestamp = timestamp or utc_timestamp()
        text = f"{self._head}{timestamp}{self._middle}{seq}{self._tail}"
        message = {
            "type": self.type,
            "timestamp": timestamp,
            "channel": self.channel,
            "seq": seq,
            **self.fields,
        }
        return BusEvent(seq, message, self.targets, self.client_types, encode_frame(text.encode()))


def draft_event(
    type_: str,
    channel: str | None,
    fields: dict[str, Any],
    client_types: frozenset[str] | None = None,
) -> EventDraft:
    """Serialize an event's fields; raises ValueError when they are not JSON (NaN, Infinity)."""
    fields = {k: v for k, v in fields.items() if k not in ENVELOPE_FIELDS}
    body = _event_encoder.encode(fields)
    return EventDraft(
        type_,
        channel,
        fields,
        entity_channels(channel, fields),
        client_types,
        '{"type":' + _encoder.encode(type_) + ',"timestamp":"',
        '","channel":' + _encoder.encode(channel) + ',"seq":',
        ("," + body[1:]) if len(body) > 2 else "}",
    )


def make_event(
    seq: int,
    type_: str,
    channel: str | None,
    fields: dict[str, Any],
    client_types: frozenset[str] | None = None,
    timestamp: str | None = None,
) -> BusEvent:
    """Build the envelope of PROTOCOL.md section 2 around ``fields`` and frame it."""
    return draft_event(type_, channel, fields, client_types).finish(seq, timestamp)


# --------------------------------------------------------------------------- client messages


@dataclass(frozen=True)
class ClientMessage:
    """A parsed client message: its ``type`` and the whole JSON object."""

    type: str
    body: dict[str, Any]


class PlainPing(Enum):
    """The plain-text frame ``ping``, answered by a plain-text ``pong`` (it has no JSON body,
    so it is not a :class:`ClientMessage`)."""

    PING = "ping"


PLAIN_PING = PlainPing.PING


def parse_client_frame(data: str | bytes) -> ClientMessage | PlainPing:
    """Decode one client frame into a :class:`ClientMessage`, or :data:`PLAIN_PING`.

    Raises :class:`ProtocolError` with ``invalid_json`` or ``invalid_message``.
    """
    if isinstance(data, (bytes, bytearray)):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, "binary frames are not accepted; send JSON text"
        )
    if data.strip() == "ping":
        return PLAIN_PING
    try:
        body = parse_json(data)
    except JsonSyntaxError as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a message must be a JSON object")
    type_ = body.get("type")
    if not isinstance(type_, str) or not type_:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field 'type' is missing or not a string")
    return ClientMessage(type_, body)


def validate_register(body: dict[str, Any]) -> tuple[str, str]:
    """``(client_type, client_name)`` of a ``register`` message."""
    client_type = body.get("client_type")
    if not isinstance(client_type, str) or not CLIENT_TYPE_PATTERN.match(client_type):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            "field 'client_type' must match ^[a-z][a-z0-9_-]{0,31}$",
            "register",
        )
    client_name = body.get("client_name")
    if not isinstance(client_name, str) or not 1 <= len(client_name) <= MAX_CLIENT_NAME:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"field 'client_name' must be a string of 1-{MAX_CLIENT_NAME} characters",
            "register",
        )
    return client_type, client_name


def validate_channel_list(body: dict[str, Any], request_type: str) -> tuple[list[str], list[Any]]:
    """``(valid, unknown)`` channel names of a ``subscribe``/``unsubscribe`` message.

    A malformed list (not a list, empty, over 64 names) is refused whole.
    """
    channels = body.get("channels")
    if not isinstance(channels, list) or not 1 <= len(channels) <= MAX_CHANNELS_PER_REQUEST:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"field 'channels' must be a list of 1-{MAX_CHANNELS_PER_REQUEST} channel names",
            request_type,
        )
    valid: list[str] = []
    unknown: list[Any] = []
    for name in channels:
        if is_valid_channel(name):
            if name not in valid:
                valid.append(name)
        else:
            unknown.append(name)
    return valid, unknown


def validate_resume(body: dict[str, Any]) -> tuple[int | None, str | None]:
    """The optional ``since`` and ``epoch`` of a ``subscribe`` message."""
    since = body.get("since")
    epoch = body.get("epoch")
    if since is not None and (
        isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= MAX_INT64
    ):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"field 'since' must be an integer from 0 to {MAX_INT64}",
            "subscribe",
        )
    if epoch is not None and not isinstance(epoch, str):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, "field 'epoch' must be a string", "subscribe"
        )
    return since, epoch
