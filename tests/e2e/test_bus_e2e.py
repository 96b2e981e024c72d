"""The /ws protocol of PROTOCOL.md sections 2, 3 and 5, against the real server."""

from __future__ import annotations

import json
import re

import pytest

from support import expect_only_marker, marker

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_connected_is_sent_first(connect):
    client = connect()
    hello = client.connected
    assert re.fullmatch(r"[0-9a-f]{32}", hello["client_id"])
    assert isinstance(hello["seq"], int) and hello["seq"] >= 0
    assert isinstance(hello["epoch"], str) and hello["epoch"]
    assert hello["heartbeat_interval"] == 30
    assert hello["protocol"] == 1
    assert TIMESTAMP.match(hello["timestamp"])


def test_connected_seq_is_latest_seq_of_bus(server, connect):
    seq = marker(server)
    assert connect().connected["seq"] >= seq


def test_register_and_rename(server, connect):
    client = connect()
    reply = client.register("lightroom", "Lightroom Classic")
    assert reply["client_id"] == client.client_id
    assert (reply["client_type"], reply["client_name"]) == ("lightroom", "Lightroom Classic")
    assert TIMESTAMP.match(reply["timestamp"])
    client.register("web", "renamed")
    listed = {
        c["client_id"]: c for c in server.get("/api/websocket/clients?limit=500").json()["items"]
    }
    assert (listed[client.client_id]["client_type"], listed[client.client_id]["client_name"]) == (
        "web",
        "renamed",
    )


def test_unregistered_client_type_is_unknown(server, connect):
    client = connect()
    listed = {
        c["client_id"]: c for c in server.get("/api/websocket/clients?limit=500").json()["items"]
    }
    assert listed[client.client_id]["client_type"] == "unknown"


@pytest.mark.parametrize(
    "message",
    [
        {"type": "register", "client_type": "GUI", "client_name": "x"},
        {"type": "register", "client_type": "9gui", "client_name": "x"},
        {"type": "register", "client_type": "g" * 33, "client_name": "x"},
        {"type": "register", "client_type": "gui", "client_name": ""},
        {"type": "register", "client_type": "gui", "client_name": "n" * 129},
        {"type": "register", "client_type": "gui"},
        {"type": "register", "client_name": "x"},
    ],
)
def test_register_with_wrong_fields_is_refused(connect, message):
    client = connect()
    error = client.request(message, "error")
    assert error["code"] == "invalid_message"
    assert error["request_type"] == "register"
    assert client.request({"type": "ping"}, "pong")  # still open and unchanged


def test_subscribe_reports_all_current_channels(server, connect):
    client = connect()
    first = client.subscribe("jobs")
    assert first["channels"] == ["jobs"]
    assert isinstance(first["seq"], int)
    second = client.subscribe("photos", "jobs:42", "sessions:s-1")
    assert second["channels"] == sorted(["jobs", "photos", "jobs:42", "sessions:s-1"])


def test_subscribe_with_unknown_channel_applies_the_valid_ones(server, connect):
    client = connect()
    client.send({"type": "subscribe", "channels": ["jobs", "nope", "job:1"]})
    error = client.recv()
    assert (error["type"], error["code"], error["request_type"]) == (
        "error",
        "unknown_channel",
        "subscribe",
    )
    assert "nope" in error["message"]
    subscribed = client.recv()
    assert subscribed["type"] == "subscribed" and subscribed["channels"] == ["jobs"]
    seq = server.publish("job_cancelled", {"job_id": "j1"}, channel="jobs")["seq"]
    assert client.recv()["seq"] == seq


@pytest.mark.parametrize("channels", ["jobs", [], [f"c{i}" for i in range(65)], None, [1, 2]])
def test_malformed_subscribe_is_refused_whole(server, connect, channels):
    client = connect()
    client.subscribe("photos")
    message = {"type": "subscribe"}
    if channels is not None:
        message["channels"] = channels
    if channels == [1, 2]:  # a list of non-names: each is unknown, nothing applied
        client.send(message)
        assert client.recv()["code"] == "unknown_channel"
        assert client.recv()["channels"] == ["photos"]
        return
    error = client.request(message, "error")
    assert (error["code"], error["request_type"]) == ("invalid_message", "subscribe")
    assert "channels" in error["message"]
    assert client.subscribe("photos")["channels"] == ["photos"]


def test_too_many_channels_is_invalid(connect):
    client = connect()
    error = client.request({"type": "subscribe", "channels": ["jobs"] * 65}, "error")
    assert error["code"] == "invalid_message"


def test_unsubscribe(server, connect):
    client = connect()
    client.subscribe("jobs", "photos")
    reply = client.request({"type": "unsubscribe", "channels": ["jobs"]}, "unsubscribed")
    assert reply["channels"] == ["photos"]
    server.publish("job_cancelled", {"job_id": "j2"}, channel="jobs")
    expect_only_marker(client, marker(server))


def test_json_ping_gets_pong(connect):
    pong = connect().request({"type": "ping"}, "pong")
    assert TIMESTAMP.match(pong["timestamp"])
    assert "seq" not in pong


def test_plain_text_ping_gets_plain_text_pong(connect):
    client = connect()
    client.send("ping")
    assert client.recv_text() == "pong"


def test_client_pong_is_accepted_silently(server, connect):
    client = connect()
    client.send({"type": "pong", "timestamp": "2026-01-01T00:00:00.000000Z"})
    expect_only_marker(client, marker(server))


@pytest.mark.parametrize(
    "frame, code",
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('{"no_type": 1}', "invalid_message"),
        ('{"type": 5}', "invalid_message"),
        ('{"type": "launch_rockets"}', "unknown_type"),
    ],
)
def test_bad_messages_get_errors_and_the_connection_stays(connect, frame, code):
    client = connect()
    client.send(frame)
    error = client.recv()
    assert error["type"] == "error" and error["code"] == code, error
    assert error["message"]
    assert "request_type" in error
    if code == "unknown_type":
        assert error["request_type"] == "launch_rockets"
    assert client.request({"type": "ping"}, "pong")


def test_binary_frame_is_invalid_message(connect):
    client = connect()
    client.ws.send_binary(b"\x00\x01")
    error = client.recv()
    assert (error["type"], error["code"]) == ("error", "invalid_message")


def test_oversized_frame_closes_1009(server, connect):
    client = connect()
    client.send(json.dumps({"type": "ping", "pad": "x" * 70000}))
    assert client.close_code() == 1009


def test_frame_just_under_the_limit_is_accepted(connect):
    client = connect()
    padding = 65536 - len(json.dumps({"type": "ping", "pad": ""})) - 10
    client.send(json.dumps({"type": "ping", "pad": "x" * padding}))
    assert client.recv()["type"] == "pong"


def _resume(client, since, epoch=None):
    message = {"type": "subscribe", "channels": ["jobs"], "since": since}
    if epoch is not None:
        message["epoch"] = epoch
    client.send(message)
    assert client.recv()["type"] == "subscribed"
    done = client.recv()
    assert done["type"] == "replay_complete"
    return done


def test_resume_needs_the_epoch(server, connect):
    client = connect()
    epoch = client.connected["epoch"]
    seq = marker(server)
    client.recv()  # the marker itself
    done = _resume(client, seq, epoch)
    assert (done["since"], done["to"], done["recovered"]) == (seq, seq, True)
    assert _resume(client, seq)["recovered"] is False, "no epoch: completeness cannot be proven"
    assert _resume(client, seq, "another-epoch")["recovered"] is False
    assert _resume(client, seq + 100, epoch)["recovered"] is False


def test_size_limit_counts_bytes_not_characters(connect):
    client = connect()
    client.send(json.dumps({"type": "ping", "pad": "\u00e9" * 40000}, ensure_ascii=False))  # 80 kB
    assert client.close_code() == 1009
