"""Unit tests of local_bridge.protocol: frames, client-message parsing, channels, envelopes."""

from __future__ import annotations

import json
import re
import struct
from datetime import UTC, datetime, timedelta, timezone

import pytest

from local_bridge import protocol as p

TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def decode_frame(frame: bytes) -> tuple[bool, int, bytes]:
    """(fin, opcode, payload) of one unmasked frame, decoded from its header per RFC 6455 5.2;
    asserts that the frame holds exactly one frame."""
    fin, opcode = bool(frame[0] & 0x80), frame[0] & 0x0F
    assert frame[0] & 0x70 == 0, "RSV bits must be clear"
    assert frame[1] & 0x80 == 0, "server frames are never masked"
    length, offset = frame[1] & 0x7F, 2
    if length == 126:
        (length,), offset = struct.unpack("!H", frame[2:4]), 4
    elif length == 127:
        (length,), offset = struct.unpack("!Q", frame[2:10]), 10
    payload = frame[offset:]
    assert len(payload) == length
    return fin, opcode, payload


# --------------------------------------------------------------------------- frames


@pytest.mark.parametrize(
    "size, len_byte, header_len",
    [
        (0, 0, 2),
        (125, 125, 2),  # 7-bit length
        (126, 126, 4),
        (65535, 126, 4),  # 16-bit extended length
        (65536, 127, 10),  # 64-bit extended length
    ],
)
def test_encode_frame_length_forms(size, len_byte, header_len):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frame = p.encode_frame(payload)
    assert frame[0] == 0x81  # FIN + text
    assert frame[1] == len_byte
    assert len(frame) == header_len + size
    if header_len == 4:
        assert struct.unpack("!H", frame[2:4])[0] == size
    elif header_len == 10:
        assert struct.unpack("!Q", frame[2:10])[0] == size
    assert frame[header_len:] == payload


def test_encode_frame_opcode_and_fixed_frames():
    assert decode_frame(p.encode_frame(b"\x00\x01", opcode=0x2)) == (True, 0x2, b"\x00\x01")
    assert p.PING_FRAME == b"\x89\x00"
    assert p.PLAIN_PONG_FRAME == b"\x81\x04pong"


def test_text_frame_is_compact_utf8_json():
    fin, opcode, payload = decode_frame(p.text_frame({"type": "x", "name": "café", "n": [1, 2]}))
    assert (fin, opcode) == (True, 0x1)
    assert payload == '{"type":"x","name":"café","n":[1,2]}'.encode()


def test_close_frame_carries_code_and_reason():
    fin, opcode, payload = decode_frame(p.close_frame(p.CloseCode.SLOW_CONSUMER, "slow consumer"))
    assert (fin, opcode) == (True, 0x8)
    assert struct.unpack("!H", payload[:2])[0] == 4008
    assert payload[2:] == b"slow consumer"
    _, _, bare = decode_frame(p.close_frame(1000))
    assert bare == b"\x03\xe8"


def test_close_frame_reason_fits_a_control_frame():
    """Control frame payloads are at most 125 bytes: 2 for the code, 123 for the reason."""
    frame = p.close_frame(1001, "x" * 500)
    _, _, payload = decode_frame(frame)
    assert len(payload) == 125
    assert frame[1] == 125


def test_close_frame_truncation_keeps_valid_utf8():
    _, _, payload = decode_frame(p.close_frame(1000, "é" * 100))  # 200 bytes of UTF-8
    assert len(payload) <= 125
    payload[2:].decode("utf-8")  # must not raise


def test_close_codes_match_protocol_table():
    assert {c.name: int(c) for c in p.CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "MESSAGE_TOO_BIG": 1009,
        "INTERNAL_ERROR": 1011,
        "UNAUTHORIZED": 4001,
        "FORBIDDEN": 4003,
        "NOT_FOUND": 4004,
        "SLOW_CONSUMER": 4008,
        "ADMIN_DISCONNECT": 4009,
        "RATE_LIMITED": 4029,
    }
    assert set(p.CLOSE_REASONS) == set(p.CloseCode)


# --------------------------------------------------------------------------- time and replies


def test_utc_timestamp_format():
    moment = datetime(2026, 11, 22, 14, 32, 15, 123456, tzinfo=UTC)
    assert p.utc_timestamp(moment) == "2026-11-22T14:32:15.123456Z"
    assert p.utc_timestamp(moment.replace(microsecond=0)) == "2026-11-22T14:32:15.000000Z"


def test_utc_timestamp_now_is_current_utc():
    before = datetime.now(UTC)
    stamp = p.utc_timestamp()
    after = datetime.now(UTC)
    assert TIMESTAMP_RE.match(stamp)
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before <= parsed <= after


def test_utc_timestamp_converts_aware_datetime_to_utc():
    moment = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert p.utc_timestamp(moment) == "2026-01-01T10:00:00.000000Z"


def test_reply_and_error_reply_envelope():
    message = p.reply("registered", client_id="abc")
    assert list(message) == ["type", "timestamp", "client_id"]
    assert message["type"] == "registered" and TIMESTAMP_RE.match(message["timestamp"])
    error = p.error_reply(p.ErrorCode.UNKNOWN_TYPE, "nope")
    assert error["type"] == "error"
    assert {k: error[k] for k in ("code", "message", "request_type")} == {
        "code": "unknown_type",
        "message": "nope",
        "request_type": None,
    }


# --------------------------------------------------------------------------- parse_client_frame


def _protocol_error(data) -> p.ProtocolError:
    with pytest.raises(p.ProtocolError) as info:
        p.parse_client_frame(data)
    return info.value


@pytest.mark.parametrize("data", ["{", "not json", '{"type": "ping",}', ""])
def test_parse_invalid_json(data):
    assert _protocol_error(data).code == p.ErrorCode.INVALID_JSON


@pytest.mark.parametrize("data", ["[1, 2]", '"ping"', "42", "null", "true"])
def test_parse_non_object(data):
    assert _protocol_error(data).code == p.ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize(
    "data", ["{}", '{"type": 5}', '{"type": ""}', '{"type": null}', '{"channels": ["jobs"]}']
)
def test_parse_missing_or_bad_type_names_the_field(data):
    error = _protocol_error(data)
    assert error.code == p.ErrorCode.INVALID_MESSAGE
    assert "type" in error.message


@pytest.mark.parametrize("data", [b'{"type": "ping"}', bytearray(b"ping")])
def test_parse_binary_frame_is_invalid_message(data):
    assert _protocol_error(data).code == p.ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize("data", ["ping", " ping\n"])
def test_parse_plain_ping(data):
    assert p.parse_client_frame(data) is p.PLAIN_PING


def test_parse_json_ping_is_a_message_not_plain_ping():
    message = p.parse_client_frame('{"type": "ping", "extra": [1]}')
    assert isinstance(message, p.ClientMessage)
    assert message.type == "ping"
    assert message.body == {"type": "ping", "extra": [1]}


def test_parse_deeply_nested_json_is_invalid_json():
    assert _protocol_error("[" * 50000).code == p.ErrorCode.INVALID_JSON


@pytest.mark.parametrize(
    "data, says",
    [
        ('{"type": "ping", "n": ' + "1" * 5000 + "}", "a number has too many digits"),
        ('{"type": "ping", "n": 1e400}', "a number is too large"),
        ('{"type": "ping", "n": -1e400}', "a number is too large"),
        ('{"type": "ping", "n": NaN}', "NaN is not a JSON value"),
        ('{"type": "ping", "n": Infinity}', "Infinity is not a JSON value"),
        ('{"type": "ping",}', "(line 1, column 17)"),
        ('{\n  "type": oops}', "Expecting value (line 2, column 11)"),
    ],
)
def test_invalid_json_messages_are_plain(data, says):
    error = _protocol_error(data)
    assert error.code == p.ErrorCode.INVALID_JSON and error.request_type is None
    assert says in error.message, error.message
    for internal in ("sys.", "int_max_str_digits", "Exceeds the limit", "char "):
        assert internal not in error.message


# --------------------------------------------------------------------------- validators


def test_validate_register_accepts_boundaries():
    assert p.validate_register({"client_type": "gui", "client_name": "Desk"}) == ("gui", "Desk")
    longest = "a" + "b" * 31
    assert p.validate_register({"client_type": longest, "client_name": "n" * 128}) == (
        longest,
        "n" * 128,
    )
    assert p.validate_register({"client_type": "web-app_2", "client_name": "x"})[0] == "web-app_2"


@pytest.mark.parametrize(
    "client_type", [None, 5, "", "Gui", "1gui", "-x", "a" * 33, "gui app", "gü", "gui\n"]
)
def test_validate_register_bad_client_type(client_type):
    with pytest.raises(p.ProtocolError) as info:
        p.validate_register({"client_type": client_type, "client_name": "x"})
    assert info.value.code == p.ErrorCode.INVALID_MESSAGE
    assert info.value.request_type == "register"
    assert "client_type" in info.value.message


@pytest.mark.parametrize("client_name", [None, "", "n" * 129, 7, ["x"]])
def test_validate_register_bad_client_name(client_name):
    with pytest.raises(p.ProtocolError) as info:
        p.validate_register({"client_type": "gui", "client_name": client_name})
    assert "client_name" in info.value.message
    assert info.value.request_type == "register"


def test_validate_channel_list_splits_valid_and_unknown():
    body = {"channels": ["jobs", "bogus", "jobs", 5, "sessions:12", None, "system:1"]}
    valid, unknown = p.validate_channel_list(body, "subscribe")
    assert valid == ["jobs", "sessions:12"]  # duplicates collapse, order kept
    assert unknown == ["bogus", 5, None, "system:1"]


def test_validate_channel_list_accepts_64_names():
    names = [f"jobs:{i}" for i in range(64)]
    assert p.validate_channel_list({"channels": names}, "subscribe") == (names, [])


@pytest.mark.parametrize(
    "channels", [None, "jobs", {"jobs": 1}, [], [f"jobs:{i}" for i in range(65)]]
)
def test_validate_channel_list_refuses_malformed_whole(channels):
    body = {} if channels is None else {"channels": channels}
    with pytest.raises(p.ProtocolError) as info:
        p.validate_channel_list(body, "unsubscribe")
    assert info.value.code == p.ErrorCode.INVALID_MESSAGE
    assert info.value.request_type == "unsubscribe"
    assert "channels" in info.value.message


@pytest.mark.parametrize(
    "body, expected",
    [
        ({}, (None, None)),
        ({"since": 0}, (0, None)),
        ({"since": 17, "epoch": "e1"}, (17, "e1")),
        ({"since": None, "epoch": None}, (None, None)),
        ({"since": 2**63 - 1}, (2**63 - 1, None)),
    ],
)
def test_validate_resume_valid(body, expected):
    assert p.validate_resume(body) == expected


@pytest.mark.parametrize(
    "body, field",
    [
        ({"since": -1}, "since"),
        ({"since": True}, "since"),
        ({"since": 1.0}, "since"),
        ({"since": "5"}, "since"),
        ({"since": 1, "epoch": 5}, "epoch"),
        ({"epoch": ["e"]}, "epoch"),
        ({"since": 2**63}, "since"),
        ({"since": 10**4000}, "since"),
    ],
)
def test_validate_resume_invalid(body, field):
    with pytest.raises(p.ProtocolError) as info:
        p.validate_resume(body)
    assert info.value.code == p.ErrorCode.INVALID_MESSAGE
    assert info.value.request_type == "subscribe"
    assert field in info.value.message


# --------------------------------------------------------------------------- channels


@pytest.mark.parametrize(
    "name",
    sorted(p.CHANNELS) + ["jobs:abc123", "sessions:12", "photos:A-b_c.9", "jobs:" + "x" * 64],
)
def test_is_valid_channel_true(name):
    assert p.is_valid_channel(name)


@pytest.mark.parametrize(
    "name",
    [
        None,
        5,
        ["jobs"],
        "",
        "Jobs",
        "job",
        "jobs:",
        "jobs:" + "x" * 65,
        "jobs:a b",
        "jobs:a:b",
        "system:1",
        "queue:1",
        "export:1",
        "approval:1",
        ":1",
        "jobs:é",
        "jobs:a\n",
    ],
)
def test_is_valid_channel_false(name):
    assert not p.is_valid_channel(name)


def test_entity_channels_main_channel_adds_named_entities():
    targets = p.entity_channels(
        "photos", {"photo_id": "p1", "session_id": "12", "job_id": "j9", "other": "x"}
    )
    assert targets[0] == "photos"
    assert sorted(targets[1:]) == ["jobs:j9", "photos:p1", "sessions:12"]


def test_entity_channels_skips_unset_ids():
    assert p.entity_channels("export", {"photo_id": None, "session_id": "", "job_id": None}) == (
        "export",
    )
    assert p.entity_channels("jobs", {"job_id": 0}) == ("jobs", "jobs:0")


def test_entity_channels_sub_channel_and_none():
    assert p.entity_channels("jobs:7", {"job_id": "7", "session_id": "3"}) == ("jobs:7",)
    assert p.entity_channels(None, {"job_id": "7"}) == ()


# --------------------------------------------------------------------------- make_event


def test_make_event_envelope_first_and_flat_fields():
    event = p.make_event(
        42,
        "job_progress",
        "jobs",
        {"job_id": "j1", "progress": 45.5},
        timestamp="2026-11-22T14:32:15.123456Z",
    )
    assert list(event.message) == ["type", "timestamp", "channel", "seq", "job_id", "progress"]
    assert event.message == {
        "type": "job_progress",
        "timestamp": "2026-11-22T14:32:15.123456Z",
        "channel": "jobs",
        "seq": 42,
        "job_id": "j1",
        "progress": 45.5,
    }
    assert (event.seq, event.type, event.channel) == (42, "job_progress", "jobs")
    assert event.targets == ("jobs", "jobs:j1")
    assert event.client_types is None
    _, opcode, payload = decode_frame(event.frame)
    assert opcode == 0x1 and json.loads(payload) == event.message


def test_make_event_fields_cannot_override_envelope():
    fields = {"type": "evil", "timestamp": "then", "channel": "system", "seq": 1, "job_id": "j1"}
    event = p.make_event(7, "job_cancelled", "jobs", fields)
    assert event.message["type"] == "job_cancelled"
    assert event.message["channel"] == "jobs"
    assert event.message["seq"] == 7
    assert TIMESTAMP_RE.match(event.message["timestamp"])
    assert event.targets == ("jobs", "jobs:j1")
    assert json.loads(decode_frame(event.frame)[2])["type"] == "job_cancelled"


def test_make_event_for_everyone_and_client_types():
    event = p.make_event(3, "notice", None, {"text": "hi"}, client_types=frozenset({"gui"}))
    assert event.channel is None and event.message["channel"] is None
    assert event.targets == ()
    assert event.client_types == frozenset({"gui"})


def test_plain_ping_is_a_value_of_its_own_type():
    assert isinstance(p.PLAIN_PING, p.PlainPing) and not isinstance(p.PLAIN_PING, p.ClientMessage)
