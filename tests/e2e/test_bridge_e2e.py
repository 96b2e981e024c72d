"""``local_bridge.client.Bridge`` against the real server: restarts with and without Redis
history, a slow-consumer close, a silent connection, an administrator's disconnect, tokens that
expire or are bad, a late first read, and no thread left behind."""

from __future__ import annotations

import asyncio
import selectors
import socket
import threading
import time

import pytest
import requests

from local_bridge.auth.tokens import mint
from local_bridge.client import Backoff, Bridge, Unrecoverable
from local_bridge.client.aio import AsyncBridge
from redis_support import drop_prefix, fresh_prefix, redis_url
from support import LateSocket, ServerProcess

FAST = Backoff(initial=0.05, maximum=0.5)
SECRET = "bridge-e2e-" + "0123456789abcdef" * 4


def publish(server: ServerProcess, n: int, channel: str = "jobs", **headers: str) -> list[int]:
    """``n`` job_cancelled events on ``channel``; their seqs."""
    seqs = []
    for i in range(n):
        response = requests.post(
            server.http + "/api/websocket/broadcast",
            json={"type": "job_cancelled", "data": {"job_id": f"j{i}"}, "channel": channel},
            headers=headers,
            timeout=10,
        )
        assert response.status_code == 202, response.text
        seqs.append(response.json()["seq"])
    return seqs


def take(bridge: Bridge, count: int, timeout: float = 10) -> list[dict]:
    received = bridge.events(timeout=timeout)
    return [next(received) for _ in range(count)]


class HeldReconnect:
    """Holds the bridge's thread as it starts reconnecting (callbacks run on it), so the test
    can restart the server and publish while the bridge is away; :meth:`release` lets it go."""

    def __init__(self, bridge: Bridge):
        self.away = threading.Event()
        self._go = threading.Event()
        bridge.on_state(self._state)

    def _state(self, state: str) -> None:
        if state == "reconnecting":
            self.away.set()
            assert self._go.wait(30)

    def release(self) -> None:
        self._go.set()


@pytest.fixture
def redis_server():
    url, prefix = redis_url(), fresh_prefix()
    server = ServerProcess({"REDIS_URL": url, "REDIS_PREFIX": prefix}).start()
    yield server
    server.stop()
    drop_prefix(url, prefix)


def test_a_restart_with_redis_history_loses_nothing_and_repeats_nothing(redis_server):
    with Bridge(redis_server.ws_url, backoff=FAST) as bridge:
        held = HeldReconnect(bridge)
        before = publish(redis_server, 3)
        assert [e["seq"] for e in take(bridge, 3)] == before
        redis_server.restart()  # 1001 to the bridge, which waits in its callback
        assert held.away.wait(10)
        missed = publish(redis_server, 3)  # while it is away
        held.release()
        replayed = take(bridge, 4)
        after = publish(redis_server, 2)
        live = take(bridge, 2)
        assert [e.get("seq") for e in replayed[:3]] == missed
        assert replayed[3]["type"] == "replay_complete" and replayed[3]["recovered"] is True
        assert [e["seq"] for e in live] == after
        assert before + missed + after == list(range(before[0], before[0] + 8))
        assert bridge.last_close_code == 1001 and not bridge.needs_resync
        with pytest.raises(TimeoutError):
            next(bridge.events(timeout=0.3))  # and nothing twice


def test_a_restart_without_history_says_recovered_false(make_server):
    server = make_server()
    resyncs = []
    bridge = Bridge(server.ws_url, backoff=FAST)
    bridge.on_resync(resyncs.append)
    with bridge:
        published = publish(server, 2)
        assert [e["seq"] for e in take(bridge, 2)] == published
        old_epoch = bridge.epoch
        server.restart()
        notice = take(bridge, 1)[0]
        assert notice["type"] == "replay_complete" and notice["recovered"] is False
        assert resyncs == [notice] and bridge.needs_resync and bridge.last_recovered is False
        # The new numbering starts again low: its events are new, not repeats.
        fresh = publish(server, 2)
        assert [e["seq"] for e in take(bridge, 2)] == fresh and fresh[0] <= 2
        assert bridge.epoch != old_epoch


def test_a_slow_consumer_close_resumes_with_nothing_lost(make_server):
    server = make_server(MAX_QUEUE=5, SLOW_CLOSE_GRACE=20)
    proxy = Proxy(server.port)
    try:
        with Bridge(proxy.ws_url, backoff=FAST) as bridge:
            proxy.freeze()  # the bridge's socket stops reading: the server's queue fills
            seqs = []
            deadline = time.monotonic() + 20
            while not _dropped(server, bridge.client_id):
                assert time.monotonic() < deadline, "never closed as a slow consumer"
                seqs += publish_big(server, 20)
            seqs += publish_big(server, 3)  # after the close: only history has them
            proxy.thaw()
            got = [e for e in take(bridge, len(seqs) + 1) if "seq" in e]
            assert [e["seq"] for e in got] == seqs
            # 4008 after whole frames: a frame the server had begun is finished before the close
            assert bridge.last_close_code == 4008 and bridge.reconnects == 1
    finally:
        proxy.close()


def publish_big(server: ServerProcess, n: int) -> list[int]:
    body = {
        "events": [
            {"type": "bulk.event", "channel": "jobs", "data": {"i": i, "pad": "x" * 32768}}
            for i in range(n)
        ]
    }
    response = requests.post(server.http + "/api/events/batch", json=body, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["seqs"]


def _dropped(server: ServerProcess, client_id: str | None) -> bool:
    clients = server.get("/api/websocket/clients?limit=500").json()["items"]
    return all(c["client_id"] != client_id for c in clients)


def test_a_silent_connection_is_noticed_and_replaced(make_server):
    server = make_server(HEARTBEAT_INTERVAL=0.5)
    proxy = Proxy(server.port)
    try:
        with Bridge(proxy.ws_url, backoff=FAST) as bridge:  # read deadline 2 * 0.5 + 2 s
            first = bridge.client_id
            proxy.freeze()  # no frame reaches the bridge any more, and no close either
            missed = publish(server, 2)
            started = time.monotonic()
            got = take(bridge, 3)
            assert 1.5 < time.monotonic() - started < 8
            assert [e.get("seq") for e in got[:2]] == missed and got[2]["recovered"] is True
            assert bridge.last_close_code == 1006 and bridge.client_id != first
    finally:
        proxy.close()


def test_an_administrators_disconnect_stops_with_unrecoverable(server):
    before = set(threading.enumerate())
    with Bridge(server.ws_url, backoff=FAST) as bridge:
        response = server.post(f"/api/websocket/disconnect/{bridge.client_id}", json={})
        assert response.status_code == 200
        with pytest.raises(Unrecoverable) as raised:
            list(bridge.events(timeout=10))
        assert raised.value.code == 4009 and bridge.state == "closed"
    assert set(threading.enumerate()) <= before


def test_a_late_first_read_still_connects(server, monkeypatch):
    monkeypatch.setattr(socket, "socket", LateSocket)
    with Bridge(server.ws_url, timeout=3) as bridge:
        monkeypatch.undo()
        published = publish(server, 1)
        assert [e["seq"] for e in take(bridge, 1)] == published


def test_close_leaves_no_thread_behind(server):
    before = set(threading.enumerate())
    for _ in range(3):
        with Bridge(server.ws_url) as bridge:
            assert bridge.connected
    assert set(threading.enumerate()) <= before


def test_async_bridge_follows_the_bus(server):
    async def main() -> list[int]:
        async with AsyncBridge(server.ws_url) as bridge:
            seqs = await asyncio.to_thread(publish, server, 2)
            got = []
            async for event in bridge.events():
                got.append(event["seq"])
                if len(got) == 2:
                    break
            assert got == seqs
            return got

    assert len(asyncio.run(asyncio.wait_for(main(), 20))) == 2


@pytest.fixture(scope="module")
def auth_server():
    server = ServerProcess({"AUTH": "token", "SECRET_KEY": SECRET}).start()
    yield server
    server.stop()


def admin() -> dict[str, str]:
    return {"Authorization": "Bearer " + mint(SECRET, sub="admin", role="admin", ttl=60)[0]}


def test_a_short_lived_token_is_refreshed_and_the_connection_outlives_it(auth_server):
    minted = []

    def fresh() -> str:
        token, claims = mint(SECRET, sub="bridge", role="client", ttl=2)
        minted.append(claims.exp)
        return token

    with Bridge(auth_server.ws_url, token=fresh) as bridge:
        first, client_id = minted[0], bridge.client_id
        while time.time() < first + 2.5:  # past the exp of the first two tokens
            time.sleep(0.1)
            assert bridge.client_id == client_id and bridge.connected
        published = publish(auth_server, 1, **admin())
        assert [e["seq"] for e in take(bridge, 1)] == published
        assert len(minted) >= 3 and bridge.reconnects == 0


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_a_missing_or_bad_token_stops(auth_server, token):
    with pytest.raises(Unrecoverable) as raised:
        Bridge(auth_server.ws_url, token=token).connect()
    assert raised.value.code == 4001


def test_a_token_in_the_query_string_works_too(auth_server):
    token = mint(SECRET, sub="q", role="client", ttl=60)[0]
    with Bridge(auth_server.ws_url, token=token, auth="query") as bridge:
        published = publish(auth_server, 1, **admin())
        assert [e["seq"] for e in take(bridge, 1)] == published


class Proxy:
    """A TCP proxy in front of the server whose current connections can be frozen: nothing is
    read or forwarded on them any more (a peer gone silent, or one that stopped reading), while
    new connections pass."""

    def __init__(self, port: int):
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.ws_url = f"ws://127.0.0.1:{self.listener.getsockname()[1]}/ws"
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._frozen: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def freeze(self) -> None:
        with self._lock:
            for sock in list(self._peers):
                self._frozen.add(sock)
                self._selector.unregister(sock)

    def thaw(self) -> None:
        with self._lock:
            for sock in self._frozen:
                self._selector.register(sock, selectors.EVENT_READ)
            self._frozen.clear()

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        for sock in [self.listener, *self._peers]:
            sock.close()

    def _run(self) -> None:
        while not self._stop:
            with self._lock:
                ready = self._selector.select(0.05)
                for key, _ in ready:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self.listener:
                        client, _ = self.listener.accept()
                        server = socket.create_connection(("127.0.0.1", self.upstream))
                        self._peers[client], self._peers[server] = server, client
                        for end in (client, server):
                            end.setblocking(True)
                            self._selector.register(end, selectors.EVENT_READ)
                        continue
                    if sock not in self._peers or sock in self._frozen:
                        continue
                    data = b""
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        pass
                    other = self._peers[sock]
                    if data:
                        try:
                            other.sendall(data)
                            continue
                        except OSError:
                            pass
                    for end in (sock, other):  # one side ended: end both
                        if end not in self._frozen:
                            self._selector.unregister(end)
                        self._frozen.discard(end)
                        self._peers.pop(end, None)
                        end.close()
