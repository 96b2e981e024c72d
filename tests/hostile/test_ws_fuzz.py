"""Hostile input on the WebSocket protocol: raw frames over a real socket to the real server.

Random and mutated frames and JSON, deep nesting, huge numbers, invalid UTF-8, binary and
fragmented frames, bad close codes, unmasked frames, reserved bits and opcodes, lengths claiming
2^63 bytes, frames beyond ``MAX_MESSAGE_SIZE`` and partial frames that never finish. Whatever
arrives, the server

- answers only well-formed frames: JSON text with a ``type`` (or the plain ``pong``), never a
  traceback, never ``internal_error`` or close 1011;
- closes a connection only with the code the protocol gives (1002, 1007, 1009), or echoes the
  client's own close;
- keeps its one worker (same pid before and after: no crash, no restart) and its log free of
  tracebacks;
- leaks no connection: the clients list returns to its baseline;
- keeps serving a polite client (tests/hostile/watch.py): every event published during the attack
  arrives, in order, within ``LATENCY_BOUND``.

``LOCAL_BRIDGE_HOSTILE=long`` (``scripts/hostile``) runs many more examples, against both worker
classes.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from budget import LONG, examples, seconds
from frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    Answer,
    RawSocket,
    close_payload,
    frame,
    text,
)
from support import ServerProcess
from watch import PoliteClient, client_ids, log_size, settle, tracebacks, worker_pids

# the long run's properties take minutes each: past the suite's per-test timeout
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600 if LONG else 120)]

MAX_MESSAGE_SIZE = 65536
#: The longest a polite client's event may take from publish to receipt during an attack.
LATENCY_BOUND = 0.5
#: Error codes a client may provoke; ``internal_error`` is a server bug.
CLIENT_ERRORS = {
    "invalid_json",
    "invalid_message",
    "unknown_type",
    "unknown_channel",
    "job_not_found",
}
#: Close codes the server may choose for a connection that broke the protocol.
PROTOCOL_CLOSES = {1002, 1007, 1009}
REPLY_TIMEOUT = 3.0  # a server that is alive answers a sentinel within this


def _fuzz_settings(ci: int, long: int):
    return settings(
        max_examples=examples(ci, long),
        deadline=None,
        derandomize=not LONG,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,  # the guard watches the whole test, by design
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


@pytest.fixture(scope="module", params=["gevent", "gthread"])
def target(request):
    server = ServerProcess(
        {"WORKER_CLASS": request.param, "MAX_MESSAGE_SIZE": MAX_MESSAGE_SIZE}
    ).start()
    yield server
    server.stop()


@pytest.fixture
def polite(target):
    """A polite client served by the attacked server (checked by ``guarded``)."""
    return PoliteClient(target).start()


@pytest.fixture
def guarded(target, polite):
    """The attacked server, watched from before the attack to after it has settled."""
    workers = worker_pids(target)
    assert len(workers) == 1, workers
    log_start = log_size(target)
    baseline = client_ids(target)
    try:
        yield target
        settle(target, baseline)
    finally:
        polite.stop()
    assert polite.latencies() and polite.latencies()[-1] < LATENCY_BOUND, polite.latencies()[-5:]
    assert worker_pids(target) == workers, "the worker crashed or was restarted"
    assert target.get("/api/system/health").status_code == 200
    if found := tracebacks(target, log_start):
        pytest.fail(f"the server logged {len(found)} traceback(s); the first:\n{found[0]}")


# --------------------------------------------------------------------------- checking answers


def check_frames(answer: Answer, closes: set[int] = frozenset()) -> None:
    """Everything the server sent is well-formed; its close code, if any, is allowed."""
    for opcode, data in answer.frames:
        assert opcode in (TEXT, PONG), (opcode, data[:200])
        if opcode == PONG:
            continue
        body = data.decode("utf-8")  # the server sends valid UTF-8 only
        assert "Traceback" not in body and 'File "' not in body, body
        if body == "pong":
            continue
        message = json.loads(body)
        assert isinstance(message, dict) and isinstance(message.get("type"), str), body
        assert message.get("timestamp"), body
        if message["type"] == "error":
            assert message["code"] in CLIENT_ERRORS, message
            assert isinstance(message["message"], str) and message["message"], message
    if answer.close_code is not None:
        assert answer.close_code in PROTOCOL_CLOSES | set(closes), answer.close_code


def attack(port: int, data: bytes, nonce: str, wait: float = REPLY_TIMEOUT) -> tuple[Answer, bool]:
    """Connect to the bus, send ``data``, then a sentinel ``register`` named ``nonce``; read until
    its ``registered`` (the connection is alive: True) or until the server closes (False)."""
    sock = RawSocket(port)
    try:
        assert sock.recv_json()["type"] == "connected"
        sock.send(data)
        sock.send(text({"type": "register", "client_type": "fuzz", "client_name": nonce}))
        answer = sock.drain_until(
            lambda op, body: op == TEXT and nonce.encode() in body and b'"registered"' in body,
            wait,
        )
        return answer, answer.matched
    finally:
        sock.close()


def attack_job_stream(port: int, job_id: str, data: bytes) -> tuple[Answer, bool]:
    """:func:`attack` on a job's stream, whose sentinel is a ``ping`` (its ``pong``)."""
    sock = RawSocket(port, f"/ws/jobs/{job_id}")
    try:
        assert sock.recv_json()["type"] == "job_status"
        sock.send(data)
        sock.send(text({"type": "ping"}))
        answer = sock.drain_until(lambda op, body: op == TEXT and b'"pong"' in body, REPLY_TIMEOUT)
        return answer, answer.matched
    finally:
        sock.close()


# --------------------------------------------------------------------------- strategies

TEMPLATES = [
    {"type": "register", "client_type": "gui", "client_name": "Lightroom Classic"},
    {"type": "subscribe", "channels": ["jobs", "photos", "sessions:12"]},
    {"type": "subscribe", "channels": ["jobs"], "since": 0, "epoch": "e"},
    {"type": "unsubscribe", "channels": ["jobs"]},
    {"type": "ping"},
    {"type": "pong", "timestamp": "2026-01-01T00:00:00.000000Z"},
]
#: Number-like literals Python's json would read differently from other parsers, or not at all.
LITERALS = [
    "1e400",
    "-1e400",
    "1e-400",
    "-0",
    "-0.0",
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    str(2**70),
    str(-(2**63) - 1),
    str(2**63),
    "9" * 5000,
    "0." + "0" * 400 + "1",
    "1E+99999999999",
    "true",
    "null",
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"\\u0000"',
    "[" * 2000 + "]" * 2000,
    '{"a":' * 1200 + "1" + "}" * 1200,
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=12,
)


NASTY_STRINGS = [
    "\ud800",
    "x\udc00y",
    "\udfff\ud800",
    "\ud83d\ude00",
    "\x00",
    "\u2028\u2029",
    "\u202e",
    "%s%n",
    "' OR 1=1 --",
    "<script>",
    "jobs:" + "9" * 70,
    "x" * 5000,
]
PLACEHOLDER = "\x01literal\x01"


@st.composite
def mutated_json(draw) -> bytes:
    """A valid client message, mutated in its fields, then maybe in its text or its bytes."""
    message = dict(draw(st.sampled_from(TEMPLATES)))
    literal = None
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*message, *message, "type", "channels", "since", "x"]))
        how = draw(st.sampled_from(["delete", "value", "string", "string", "in list", "literal"]))
        if how == "delete":
            message.pop(key, None)
        elif how == "value":
            message[key] = draw(json_values)
        elif how == "string":
            message[key] = draw(st.sampled_from(NASTY_STRINGS))
        elif how == "in list":
            message[key] = [draw(st.sampled_from(NASTY_STRINGS) | json_values), "jobs"]
        else:  # a raw literal where a value stands, the JSON around it intact
            message[key] = PLACEHOLDER
            literal = draw(st.sampled_from(LITERALS))
    raw = json.dumps(message, ensure_ascii=draw(st.sampled_from([True, True, False])))
    if literal is not None:
        raw = raw.replace(json.dumps(PLACEHOLDER), literal)
    how = draw(
        st.sampled_from(["none"] * 6 + ["literal", "delete", "duplicate", "truncate", "bytes"])
    )
    if how == "literal":  # a raw literal anywhere
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from(LITERALS)) + raw[at:]
    elif how == "delete":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + raw[at + draw(st.integers(1, 8)) :]
    elif how == "duplicate":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + raw[at : at + draw(st.integers(1, 20))] * 3 + raw[at:]
    elif how == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    data = raw.encode("utf-8", "surrogatepass")  # a lone surrogate unescaped: not UTF-8
    if how == "bytes":  # may no longer be UTF-8
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        data = bytes(data)
    return data


#: Close codes a client must not send (RFC 6455 section 7.4), and some it may.
BAD_CLOSE_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]
close_payloads = st.one_of(
    st.builds(
        close_payload,
        st.sampled_from(BAD_CLOSE_CODES) | st.integers(0, 65535),
        st.sampled_from([b"", b"bye", b"\xff\xfe", b"\xc3", b"x" * 123, b"x" * 124]),
    ),
    st.binary(max_size=3),
)


@st.composite
def raw_frame(draw) -> tuple[bytes, bool, int | None]:
    """One frame, often broken: ``(bytes, whether its length lies, its close code if a
    well-formed close)``."""
    opcode = draw(
        st.sampled_from([TEXT, TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG])
        | st.sampled_from([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
    )
    if opcode == CLOSE:
        payload = draw(close_payloads)
    elif opcode == TEXT or opcode == CONTINUATION:
        payload = draw(mutated_json() | st.binary(max_size=64))
    else:
        payload = draw(st.binary(max_size=200))
    fin = (
        draw(st.booleans())
        if opcode in (TEXT, BINARY, CONTINUATION)
        else draw(st.sampled_from([True, True, True, False]))
    )
    rsv = draw(st.sampled_from([0, 0, 0, 0, 1, 2, 4, 7]))
    mask = draw(st.sampled_from([True] * 9 + [False]))
    lie = draw(st.sampled_from([None] * 8 + [0, 1, len(payload) + 1, 2**63, 2**63 - 1, 2**64 - 1]))
    form = draw(st.sampled_from([None] * 6 + [126, 127]))
    code = None
    if opcode == CLOSE:  # the server may echo it; no code at all reads as 1005
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    data = frame(payload, opcode, fin=fin, rsv=rsv, mask=mask, length=lie, length_form=form)
    return data, lie is not None and lie != len(payload), code


# --------------------------------------------------------------------------- properties


@_fuzz_settings(ci=300, long=20000)
@given(data=mutated_json(), fragments=st.integers(1, 4))
def test_mutated_json_gets_well_formed_answers_and_the_connection_stays(guarded, data, fragments):
    nonce = os.urandom(8).hex()
    size = max(1, -(-len(data) // fragments))
    parts = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    sent = b"".join(
        frame(part, TEXT if i == 0 else CONTINUATION, fin=i == len(parts) - 1)
        for i, part in enumerate(parts)
    )
    answer, alive = attack(guarded.port, sent, nonce)
    check_frames(answer)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        assert not alive and answer.close_code in (1007, None), answer
        return
    assert alive, answer  # text within the limits never costs the connection


@_fuzz_settings(ci=300, long=20000)
@given(frames=st.lists(raw_frame(), min_size=1, max_size=6))
def test_random_frames_get_well_formed_answers_or_a_protocol_close(guarded, frames):
    nonce = os.urandom(8).hex()
    lies = any(lie for _, lie, _ in frames)
    echoed = {code for _, _, code in frames if code is not None}
    if lies:  # the server parses other frames than those built: it may echo any close it reads
        echoed = set(range(1000, 5000)) - {1011} | {1005}
    answer, alive = attack(
        guarded.port, b"".join(f for f, _, _ in frames), nonce, 0.3 if lies else REPLY_TIMEOUT
    )
    check_frames(answer, closes=echoed)
    if not lies:  # nothing left the parser waiting: the server decided, one way or the other
        assert alive or answer.closed, answer


# --------------------------------------------------------------------------- named cases


def _fragments(payload: bytes, size: int, interleave: bytes = b"") -> bytes:
    parts = [payload[i : i + size] for i in range(0, len(payload), size)]
    out = b""
    for i, part in enumerate(parts):
        out += frame(part, TEXT if i == 0 else CONTINUATION, fin=i == len(parts) - 1)
        if i < len(parts) - 1:
            out += interleave
    return out


PING_JSON = b'{"type":"ping"}'
#: name -> (bytes sent, what must follow): ("alive", error code or None) for a connection that
#: stays (with the error it must get), or ("close", codes) for one the server must end.
CASES: dict[str, tuple[bytes, tuple]] = {
    "100k [ (over the size limit)": (frame(b"[" * 100_000), ("close", {1009})),
    "60k [ (nesting, within the limit)": (frame(b"[" * 60_000), ("alive", "invalid_json")),
    "30k nested objects": (frame(b'{"a":' * 12_000), ("alive", "invalid_json")),
    "1e400": (frame(b'{"type":"ping","x":1e400}'), ("alive", "invalid_json")),
    "since 2**70": (
        frame(b'{"type":"subscribe","channels":["jobs"],"since":%d}' % 2**70),
        ("alive", "invalid_message"),
    ),
    "since -0": (frame(b'{"type":"subscribe","channels":["jobs"],"since":-0}'), ("alive", None)),
    "since NaN": (
        frame(b'{"type":"subscribe","channels":["jobs"],"since":NaN}'),
        ("alive", "invalid_json"),
    ),
    "since -Infinity": (
        frame(b'{"type":"subscribe","channels":["jobs"],"since":-Infinity}'),
        ("alive", "invalid_json"),
    ),
    "5000-digit integer": (
        frame(b'{"type":"ping","x":' + b"9" * 5000 + b"}"),
        ("alive", "invalid_json"),
    ),
    "lone surrogate as type": (frame(b'{"type":"\\ud800"}'), ("alive", "invalid_json")),
    "lone surrogate as channel": (
        frame(b'{"type":"subscribe","channels":["\\udc00"]}'),
        ("alive", "invalid_json"),
    ),
    "lone surrogate as client name": (
        frame(b'{"type":"register","client_type":"gui","client_name":"\\ud800"}'),
        ("alive", "invalid_json"),
    ),
    "invalid UTF-8 in a text frame": (frame(b'{"type":"\xff\xfe"}'), ("close", {1007})),
    "overlong UTF-8": (frame(b'{"type":"\xc0\xaf"}'), ("close", {1007})),
    "UTF-8 split across fragments": (
        frame(b'{"type":"\xc3', fin=False) + frame(b'\xa9"}', CONTINUATION),
        ("alive", "unknown_type"),
    ),
    "binary frame": (frame(b"\x00\x01\x02", BINARY), ("alive", "invalid_message")),
    "fragmented text": (_fragments(PING_JSON, 3), ("alive", None)),
    "fragmented, a ping between": (_fragments(PING_JSON, 5, frame(b"hi", PING)), ("alive", None)),
    "fragmented, a close between": (
        _fragments(PING_JSON, 5, frame(close_payload(1000), CLOSE)),
        ("close", {1000}),
    ),
    "continuation without a start": (frame(b"abc", CONTINUATION), ("close", {1002})),
    "new text inside a fragmented one": (
        frame(b'{"type":', fin=False) + frame(b'"ping"}'),
        ("close", {1002}),
    ),
    "fragmented ping": (
        frame(b"ab", PING, fin=False) + frame(b"c", CONTINUATION),
        ("close", {1002}),
    ),
    "ping over 125 bytes": (frame(b"x" * 126, PING), ("close", {1002})),
    "unmasked client frame": (frame(PING_JSON, mask=False), ("close", {1002})),
    "reserved bit 1": (frame(PING_JSON, rsv=4), ("close", {1002})),
    "reserved bit 3": (frame(PING_JSON, rsv=1), ("close", {1002})),
    "reserved opcode 3": (frame(b"x", 3), ("close", {1002})),
    "reserved opcode 0xB": (frame(b"x", 0xB), ("close", {1002})),
    "length 2^63 (MSB set)": (frame(b"abc", length=2**63, length_form=127), ("close", {1002})),
    "length 2^64-1": (frame(b"abc", length=2**64 - 1, length_form=127), ("close", {1002})),
    "length 2^63-1, then 70 kB": (
        frame(b"x" * 70_000, length=2**63 - 1, length_form=127),
        ("close", {1009}),
    ),
    "binary claiming 2^63-1, then 70 kB": (
        frame(b"\x00" * 70_000, BINARY, length=2**63 - 1, length_form=127),
        ("close", {1009}),
    ),
    "non-minimal length": (frame(PING_JSON, length_form=127), ("close", {1002})),
    "one frame over MAX_MESSAGE_SIZE": (frame(b"x" * (MAX_MESSAGE_SIZE + 1)), ("close", {1009})),
    "fragments summing over MAX_MESSAGE_SIZE": (
        _fragments(b"x" * (MAX_MESSAGE_SIZE + 10), 20_000),
        ("close", {1009}),
    ),
    "close without code": (frame(b"", CLOSE), ("close", {1000, 1005})),
    "close with a 1-byte payload": (frame(b"\x03", CLOSE), ("close", {1002})),
    "close reason invalid UTF-8": (
        frame(close_payload(1000, b"\xff\xfe"), CLOSE),
        ("close", {1007}),
    ),
    **{
        f"close code {code}": (frame(close_payload(code), CLOSE), ("close", {1002}))
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
    },
    "close code 4999": (frame(close_payload(4999), CLOSE), ("close", {4999})),
}


@pytest.mark.parametrize("case", list(CASES))
def test_named_hostile_frames(guarded, case):
    sent, (outcome, expected) = CASES[case]
    nonce = os.urandom(8).hex()
    answer, alive = attack(guarded.port, sent, nonce)
    if outcome == "alive":
        check_frames(answer)
        assert alive, answer
        errors = [json.loads(t) for t in answer.texts() if '"type":"error"' in t]
        if expected is None:
            assert not errors, errors
        else:
            assert errors and errors[0]["code"] == expected, answer.texts()
    else:
        check_frames(answer, closes=expected)
        assert answer.closed and not alive, answer
        # a close frame may be lost to a reset when the peer sent more after the offence
        assert answer.close_code in expected or answer.close_code is None, answer


# --------------------------------------------------------------------------- the job stream


@pytest.fixture(scope="module")
def queued_job(target) -> str:
    """A job that stays queued: its stream stays open for the attack."""
    response = target.post("/api/jobs", json={"kind": "hostile-fuzz", "priority": 1})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@_fuzz_settings(ci=100, long=5000)
@given(data=mutated_json() | raw_frame().map(lambda f: f[0] if not f[1] else frame(b"x", 3)))
def test_job_stream_answers_hostile_frames_like_the_bus(guarded, queued_job, data):
    if not data.startswith(b"\x83"):  # a mutated message, not a raw frame
        data = frame(data)
    answer, alive = attack_job_stream(guarded.port, queued_job, data)
    check_frames(answer, closes={1000, 1005} | set(range(1000, 5000)) - {1011})
    assert alive or answer.closed, answer


@_fuzz_settings(ci=50, long=2000)
@given(job_id=st.text(min_size=1, max_size=80))
@example(job_id="/0")  # a doubled slash: once a 308 with an HTML body
@example(job_id="..")
def test_any_job_id_is_a_job_stream_or_a_clear_refusal(guarded, job_id):
    sock = RawSocket(guarded.port, handshake=False)
    try:
        status = sock.handshake("/ws/jobs/" + quote(job_id, safe=""))
        if status != 101:  # refused before the upgrade: the JSON envelope, never a crash
            assert 400 <= status < 500, (status, sock.body)
            assert json.loads(sock.body)["error"]["code"], sock.body
            return
        answer = sock.drain(REPLY_TIMEOUT)
        check_frames(answer, closes={4004})
        assert answer.close_code in (4004, None) and answer.closed, answer
        assert json.loads(answer.texts()[0])["code"] == "job_not_found", answer
    finally:
        sock.close()


# --------------------------------------------------------------------------- slowloris


def test_partial_frames_and_handshakes_hold_nothing_up(guarded, polite):
    """Connections that stop in the middle of a handshake or a frame cost the server nothing
    but their sockets: a message trickled one byte at a time is still answered, the polite
    client keeps its service while they hang, and closing them leaves nothing behind."""
    port = guarded.port
    hanging = []
    for _ in range(5):  # half a handshake
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webso")
        hanging.append(sock)
    partial_frames = [
        frame(PING_JSON)[:1],
        frame(PING_JSON)[:2],
        frame(b"x" * 300)[:5],  # inside the 16-bit length
        frame(b"x" * 300)[:9],  # inside the mask
        frame(b"abc", length=2**63 - 1, length_form=127),  # a payload that never ends
        frame(PING_JSON, fin=False),  # a message that never ends
    ]
    for partial in partial_frames * 3:
        raw = RawSocket(port)
        assert raw.recv_json()["type"] == "connected"
        raw.send(partial)
        hanging.append(raw.sock)
    trickle = RawSocket(port)
    assert trickle.recv_json()["type"] == "connected"
    for byte in text({"type": "ping"}):
        trickle.send(bytes([byte]))
    hanging.append(trickle.sock)
    assert trickle.drain_until(lambda op, body: b'"pong"' in body, REPLY_TIMEOUT).matched
    polite.wait_ticks(int(seconds(1, 30) * polite.rate))  # the attack lasts this long
    for sock in hanging:
        sock.close()
