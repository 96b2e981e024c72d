"""``Bridge`` against a scripted server: resume without loss or duplicates, the close codes,
``recovered: false``, heartbeats, the read deadline, token refresh, callbacks and threads."""

from __future__ import annotations

import threading
import time

import pytest
from scripted import HANG, Connection, Script, event, replay_complete, subscribed

from local_bridge.client import Backoff, Bridge, BusError, ResyncRequired, Unrecoverable
from local_bridge.client import bridge as bridge_module

FAST = Backoff(initial=0.01, maximum=0.05, rate_limited=0.05)


@pytest.fixture
def script(monkeypatch):
    """Install a script: the Bridge's connections are the ones it lists."""

    def install(*connections):
        plan = Script(*connections)
        monkeypatch.setattr(bridge_module, "BusClient", plan.factory)
        return plan

    return install


def collect(bridge: Bridge, count: int) -> list[dict]:
    received = bridge.events(timeout=5)
    return [next(received) for _ in range(count)]


def seqs_and_types(messages: list[dict]) -> list:
    return [m.get("seq", m["type"]) for m in messages]


def test_a_reconnect_resumes_after_the_last_seq_and_drops_repeats(script):
    plan = script(
        Connection([subscribed(5), event(6), event(7)], end=4008),
        Connection([subscribed(8), event(7), event(8), replay_complete(7, 8, True), event(9)]),
    )
    with Bridge("ws://bus/ws", backoff=FAST) as bridge:
        got = collect(bridge, 5)
        assert seqs_and_types(got) == [6, 7, 8, "replay_complete", 9]
        first, second = plan.opened
        assert first.sent_of("subscribe") == [{"type": "subscribe", "channels": ["jobs"]}]
        assert second.sent_of("subscribe") == [
            {"type": "subscribe", "channels": ["jobs"], "since": 7, "epoch": "e1"}
        ]
        assert (bridge.seq, bridge.epoch, bridge.reconnects) == (9, "e1", 1)
        assert bridge.last_close_code == 4008 and bridge.last_recovered is True
        assert not bridge.needs_resync and bridge.client_id == second.client_id


def test_recovered_false_is_surfaced_and_the_new_numbering_followed(script):
    script(
        Connection([subscribed(2), event(3)], end=1001),
        Connection([subscribed(1), replay_complete(3, 1, False), event(2)], epoch="e2"),
    )
    resyncs = []
    bridge = Bridge("ws://bus/ws", backoff=FAST)
    bridge.on_resync(resyncs.append)
    with bridge:
        got = collect(bridge, 3)
    assert seqs_and_types(got) == [3, "replay_complete", 2]  # 2 < 3, yet new: not dropped
    assert resyncs == [got[1]] and got[1]["recovered"] is False
    assert bridge.needs_resync and bridge.last_recovered is False
    assert (bridge.seq, bridge.epoch) == (2, "e2")


def test_raise_on_resync_raises_then_goes_on(script):
    script(
        Connection([subscribed(3)], end=1006),
        Connection([subscribed(0), replay_complete(3, 0, False), event(1)], epoch="e2"),
    )
    with Bridge("ws://bus/ws", backoff=FAST, raise_on_resync=True) as bridge:
        received = bridge.events(timeout=5)
        assert next(received)["type"] == "replay_complete"
        with pytest.raises(ResyncRequired) as raised:
            next(received)
        assert raised.value.info["since"] == 3
        assert next(bridge.events(timeout=5))["seq"] == 1


@pytest.mark.parametrize("code", [4009, 4003, 4004, 1009, 1000])
def test_a_stopping_close_code_ends_events_with_unrecoverable(script, code):
    plan = script(Connection([subscribed(0), event(1)], end=code), Connection())
    with Bridge("ws://bus/ws", backoff=FAST) as bridge:
        received = bridge.events(timeout=5)
        assert next(received)["seq"] == 1
        with pytest.raises(Unrecoverable) as raised:
            next(received)
        assert raised.value.code == code
        with pytest.raises(Unrecoverable):
            bridge.wait(5)
        assert bridge.state == "closed" and bridge.error is raised.value
    assert len(plan.connections) == 1, "it must not reconnect"


def test_a_bad_token_stops_but_a_callable_gets_one_more_try(script):
    script(Connection([subscribed(0)], end=4001), Connection())
    with Bridge("ws://bus/ws", backoff=FAST, token="t") as bridge:
        with pytest.raises(Unrecoverable):
            bridge.wait(5)
    tokens = iter(["old", "new"])
    plan = script(Connection([subscribed(0)], end=4001), Connection([subscribed(0), event(1)]))
    with Bridge("ws://bus/ws", backoff=FAST, token=lambda: next(tokens)) as bridge:
        assert next(bridge.events(timeout=5))["seq"] == 1
    assert len(plan.opened) == 2


def test_failed_attempts_back_off_until_the_server_answers(script):
    plan = script(
        Connection([subscribed(0)], end=1011),
        ConnectionRefusedError(),
        TimeoutError(),
        Connection([subscribed(0), replay_complete(0, 0, True), event(1)]),
    )
    states = []
    bridge = Bridge("ws://bus/ws", backoff=FAST)
    bridge.on_state(states.append)
    with bridge:
        assert seqs_and_types(collect(bridge, 2)) == ["replay_complete", 1]
    assert states == ["connecting", "connected", "reconnecting", "connected", "closed"]
    assert len(plan.opened) == 2 and not plan.connections


def test_heartbeats_are_answered(script):
    plan = script(Connection([subscribed(0), {"type": "heartbeat"}, event(1)]))
    with Bridge("ws://bus/ws") as bridge:
        assert next(bridge.events(timeout=5))["seq"] == 1
    assert plan.opened[0].sent_of("pong") == [{"type": "pong"}]


def test_a_silent_connection_is_dropped_at_the_read_deadline(script):
    plan = script(
        Connection([subscribed(0), event(1)], end=HANG),
        Connection([subscribed(1), replay_complete(1, 1, True), event(2)]),
    )
    started = time.monotonic()
    with Bridge("ws://bus/ws", backoff=FAST, read_deadline=0.3) as bridge:
        assert seqs_and_types(collect(bridge, 3)) == [1, "replay_complete", 2]
        assert bridge.last_close_code == 1006
    assert 0.3 <= time.monotonic() - started < 3
    assert len(plan.opened) == 2


def test_the_token_is_authenticated_by_message_and_refreshed_before_it_expires(script):
    issued = []

    def fresh() -> str:
        issued.append(f"token-{len(issued)}")
        return issued[-1]

    plan = script(Connection([subscribed(0)], auth="token", expires_in=0.5))
    with Bridge("ws://bus/ws?x=1", token=fresh) as bridge:
        connection = plan.opened[0]
        assert connection.url == "ws://bus/ws?x=1", "the token stays out of the URL"
        assert connection.sent[0] == {"type": "authenticate", "token": "token-0"}
        deadline = time.monotonic() + 5
        while not connection.sent_of("refresh"):
            assert time.monotonic() < deadline, "no refresh before the expiry"
            time.sleep(0.02)
        assert connection.sent_of("refresh") == [{"type": "refresh", "token": "token-1"}]
        assert bridge.connected


def test_the_query_mode_puts_the_token_in_the_url(script):
    plan = script(Connection([subscribed(0)], auth="token"))
    with Bridge("ws://bus/ws", token="a b", auth="query"):
        assert plan.opened[0].url == "ws://bus/ws?token=a+b"
        assert not plan.opened[0].sent_of("authenticate")


def test_a_server_that_wants_a_token_when_there_is_none(script):
    script(Connection([subscribed(0)], auth="token"))
    with pytest.raises(Unrecoverable) as raised:
        Bridge("ws://bus/ws").connect()
    assert raised.value.code == 4001 and "requires a token" in str(raised.value)


def test_callbacks_per_type_and_for_everything(script):
    script(Connection([subscribed(0), event(1), event(2, "job_completed"), event(3)]))
    progress, everything, done = [], [], threading.Event()
    bridge = Bridge("ws://bus/ws", queue_events=False)
    remove = bridge.on("job_progress", lambda e: progress.append(e["seq"]))
    bridge.on("*", lambda e: everything.append(e["seq"]))
    bridge.on("job_completed", lambda e: 1 / 0)  # a failing callback changes nothing
    bridge.on("*", lambda e: e["seq"] == 3 and done.set())
    with bridge:
        assert done.wait(5)
        remove()
        with pytest.raises(RuntimeError):
            bridge.events()
    assert progress == [1, 3] and everything == [1, 2, 3]


def test_subscribe_waits_for_the_reply_and_is_kept_for_the_next_connection(script):
    plan = script(
        Connection([subscribed(0)], end=None),
    )
    with Bridge("ws://bus/ws", channels=["jobs"]) as bridge:
        reply = bridge.subscribe(["photos"])
        assert reply is not None and reply["channels"] == ["photos"]
        assert bridge.channels == ["jobs", "photos"]
        bridge.unsubscribe(["jobs"])
        assert bridge.channels == ["photos"]
    assert [m["channels"] for m in plan.opened[0].sent_of("subscribe")] == [["jobs"], ["photos"]]


def test_a_refused_subscription_raises_and_is_not_kept(script, monkeypatch):
    plan = script(Connection([subscribed(0)]))
    with Bridge("ws://bus/ws") as bridge:
        bus = plan.opened[0]

        def refuse(message):
            bus.sent.append(message)
            bus.push({"type": "error", "code": "unknown_channel", "request_type": "subscribe"})
            bus.push(subscribed(0, ["jobs"]))

        monkeypatch.setattr(bus, "send", refuse)
        with pytest.raises(BusError):
            bridge.subscribe(["nope"])
        assert bridge.channels == ["jobs"]


def test_close_leaves_no_thread_and_a_failed_connect_none_either(script):
    before = set(threading.enumerate())
    script(Connection([subscribed(0)]))
    bridge = Bridge("ws://bus/ws").connect()
    bridge.close()
    bridge.close()
    assert set(threading.enumerate()) <= before
    assert list(bridge.events(timeout=1)) == []  # closed: the iterator just ends
    script(ConnectionRefusedError())
    with pytest.raises(ConnectionRefusedError):
        Bridge("ws://bus/ws").connect()
    assert set(threading.enumerate()) <= before


def test_jwt_expiry_is_read_without_verifying():
    from local_bridge.auth.tokens import mint

    token, claims = mint("s" * 32, sub="x", role="client", ttl=60)
    assert bridge_module._jwt_expiry(token) == claims.exp
    assert bridge_module._jwt_expiry("not a jwt") is None


def test_a_failing_token_callable_at_a_reconnect_is_retried(script):
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("token service down")
        return "t"

    plan = script(
        Connection([subscribed(0)], end=1006, auth="token"),
        Connection([subscribed(0), replay_complete(0, 0, True), event(1)], auth="token"),
    )
    with Bridge("ws://bus/ws", backoff=FAST, token=flaky) as bridge:
        assert seqs_and_types(collect(bridge, 2)) == ["replay_complete", 1]
    assert len(calls) == 3 and len(plan.opened) == 2


def test_a_handshake_answered_429_waits_the_rate_limited_delay(script, monkeypatch):
    from local_bridge.client import HandshakeError

    delays = []
    backoff = Backoff(initial=0.01, maximum=0.01, rate_limited=0.02)
    real = Backoff.delay

    def spy(self, attempt, code=1006, random_fraction=None):
        delays.append(code)
        return real(self, attempt, code)

    monkeypatch.setattr(Backoff, "delay", spy)
    script(
        Connection([subscribed(0)], end=1011),
        HandshakeError(429, b""),
        Connection([subscribed(0), replay_complete(0, 0, True)]),
    )
    with Bridge("ws://bus/ws", backoff=backoff) as bridge:
        assert next(bridge.events(timeout=5))["type"] == "replay_complete"
    assert delays == [1011, 4029]
