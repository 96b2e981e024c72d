"""Several server processes on one Redis and one PostgreSQL behave as one bus (issue: outgrow
one process)."""

from __future__ import annotations

import json
import signal
import struct
import threading
import time

import pytest
import websocket

from redis_support import PrivateRedis, drop_prefix, fresh_prefix, redis_url
from support import ServerProcess, marker


@pytest.fixture
def pair(postgres_url):
    """Two servers sharing a fresh Redis key space and one PostgreSQL database."""
    url, prefix = redis_url(), fresh_prefix()
    settings = {"REDIS_URL": url, "REDIS_PREFIX": prefix, "DATABASE_URL": postgres_url}
    servers = [ServerProcess(dict(settings)).start() for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()
    drop_prefix(url, prefix)


def test_published_on_b_is_received_on_a_with_one_seq(pair):
    a, b = pair
    on_a, on_b = a.client(), b.client()
    assert on_a.connected["epoch"] == on_b.connected["epoch"]
    on_a.subscribe("jobs")
    on_b.subscribe("jobs")
    first = b.publish("job_cancelled", {"job_id": "1"}, channel="jobs")["seq"]
    second = a.publish("job_cancelled", {"job_id": "2"}, channel="jobs")["seq"]
    assert second == first + 1
    for client in (on_a, on_b):
        assert [client.recv()["seq"], client.recv()["seq"]] == [first, second]
    # The workflow too: a session created through B reaches A's subscriber.
    on_a.subscribe("sessions")
    created = b.post("/api/sessions", json={"name": "Shared", "import_folder": "/"})
    assert created.status_code == 201
    event = on_a.until(lambda m: m["type"] == "session_created")[-1]
    assert event["session_id"] == created.json()["id"]
    assert a.get(f"/api/sessions/{created.json()['id']}").json()["name"] == "Shared"


def test_resume_on_b_after_leaving_a_misses_nothing(pair):
    a, b = pair
    leaving = a.client()
    leaving.subscribe("jobs")
    epoch, since = leaving.connected["epoch"], marker(a)
    leaving.recv()
    leaving.close()
    missed = [
        (a if i % 2 else b).publish("job_cancelled", {"job_id": str(i)}, channel="jobs")["seq"]
        for i in range(6)
    ]
    back = b.client()
    back.send({"type": "subscribe", "channels": ["jobs"], "since": since, "epoch": epoch})
    assert back.recv()["type"] == "subscribed"
    replayed = back.until(lambda m: m["type"] == "replay_complete")
    assert [m["seq"] for m in replayed[:-1]] == missed
    assert replayed[-1]["recovered"] is True
    polled = b.get("/api/events", params={"since": since, "channels": "jobs"}).json()
    assert [e["seq"] for e in polled["items"]] == missed and polled["recovered"] is True


def test_admin_lists_and_disconnects_clients_of_every_process(pair):
    a, b = pair
    on_a = a.client()
    on_a.register("gui", "on A")
    on_b = b.client()
    on_b.register("web", "on B")
    listed = {c["client_id"]: c for c in b.get("/api/websocket/clients?limit=500").json()["items"]}
    assert {on_a.client_id, on_b.client_id} <= set(listed)
    assert listed[on_a.client_id]["client_name"] == "on A"
    response = b.post(f"/api/websocket/disconnect/{on_a.client_id}", json={})
    assert response.status_code == 200 and response.json()["disconnected"] is True
    assert on_a.close_code() == 4009
    assert b.post("/api/websocket/disconnect/" + "f" * 32, json={}).status_code == 404


def test_redis_restart_mid_run(tmp_path):
    """Redis goes away: writes answer 503, health says so, clients stay connected; when it
    returns the bus works again in a new epoch (Redis kept nothing), and the clients, whose
    epoch is void, are closed 1011 to resume."""
    redis_server = PrivateRedis().start()
    server = ServerProcess(
        {"REDIS_URL": redis_server.url, "DATABASE_URL": f"sqlite:///{tmp_path}/r.db"}
    ).start()
    try:
        client = server.client()
        client.subscribe("jobs")
        epoch = client.connected["epoch"]
        before = server.publish("job_cancelled", {"job_id": "1"}, channel="jobs")["seq"]
        assert client.recv()["seq"] == before
        redis_server.stop()
        response = server.post("/api/websocket/broadcast", json={"type": "x.y", "data": {}})
        assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
        created = server.post("/api/sessions", json={"name": "n", "import_folder": "/"})
        assert created.status_code == 503
        assert server.get("/api/sessions").json()["items"] == [], "a refused write wrote nothing"
        health = server.get("/api/system/health")
        assert health.status_code == 503 and health.json()["checks"]["backplane"] != "ok"
        assert client.request({"type": "ping"}, "pong"), "connections are kept"
        redis_server.start()
        deadline = time.monotonic() + 20
        while server.get("/api/system/health").status_code != 200:
            assert time.monotonic() < deadline, "the backplane must reconnect by itself"
            time.sleep(0.1)
        assert client.close_code() == 1011
        client = server.client()
        assert client.connected["epoch"] != epoch
        client.send({"type": "subscribe", "channels": ["jobs"], "since": before, "epoch": epoch})
        assert client.recv()["type"] == "subscribed"
        assert client.until(lambda m: m["type"] == "replay_complete")[-1]["recovered"] is False
        after = server.publish("job_cancelled", {"job_id": "2"}, channel="jobs")["seq"]
        assert after > before, "seq never goes backwards, even though Redis forgot it"
        assert client.recv()["seq"] == after
        client.close()
    finally:
        server.stop()
        redis_server.stop()


def test_client_closed_1001_by_a_restart_resumes_on_the_other_process(pair):
    a, b = pair
    client = a.client()
    client.subscribe("jobs")
    epoch = client.connected["epoch"]
    last = a.publish("job_cancelled", {"job_id": "before"}, channel="jobs")["seq"]
    assert client.recv()["seq"] == last
    a.signal(signal.SIGTERM)
    assert client.close_code(timeout=10) == 1001
    missed = [
        b.publish("job_cancelled", {"job_id": f"while-{i}"}, channel="jobs")["seq"]
        for i in range(3)
    ]
    back = b.client()
    back.send({"type": "subscribe", "channels": ["jobs"], "since": last, "epoch": epoch})
    assert back.recv()["type"] == "subscribed"
    replayed = back.until(lambda m: m["type"] == "replay_complete")
    assert [m["seq"] for m in replayed[:-1]] == missed and replayed[-1]["recovered"] is True


# ---------------------------------------------------------------------- Redis lost its data

OUTAGE_EVENT = "test.outage"


class Recorder:
    """Reads one bus client in a thread of its own: the outage events it receives, in order,
    and the code of the server's close frame if one comes."""

    def __init__(self, client, first: int = 0):
        self.client = client
        self.first = first  # the first event (by index) published after it subscribed
        self.epoch = client.connected["epoch"]
        self.last_seq = client.subscribe("system")["seq"]
        self.received: list[int] = []
        self.close_code: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                opcode, data = self.client.recv_frame(timeout=0.2)
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError):
                self.close_code = -1  # dropped without a close frame: a failure of its own
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                self.close_code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                return
            message = json.loads(data)
            if message.get("type") == OUTAGE_EVENT:
                self.received.append(message["i"])
                self.last_seq = message["seq"]

    def expected(self, accepted: list[int]) -> list[int]:
        return [i for i in accepted if i >= self.first]

    def settled(self, accepted: list[int]) -> bool:
        return self.close_code is not None or self.received == self.expected(accepted)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()


def _publish_outage_event(server: ServerProcess, i: int) -> int:
    response = server.post(
        "/api/websocket/broadcast",
        json={"type": OUTAGE_EVENT, "channel": "system", "data": {"i": i}},
    )
    assert response.status_code in (202, 503), response.text
    return response.status_code


def _wait_healthy(*servers: ServerProcess, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    for server in servers:
        while server.get("/api/system/health").status_code != 200:
            assert time.monotonic() < deadline, "the backplane must come back by itself"
            time.sleep(0.05)  # polling the health endpoint: nothing announces recovery


def _assert_nothing_missed_silently(
    recorder: Recorder, accepted: list[int], server: ServerProcess
) -> None:
    """Every accepted event reached the client, or the client was closed 1011 and, resuming
    with since and epoch, is told ``recovered: false``."""
    received, accepted = recorder.received, recorder.expected(accepted)
    assert received == accepted[: len(received)], (
        f"delivered out of order, twice, or past a silent gap: {received} vs {accepted}"
    )
    if len(received) == len(accepted):
        return
    assert recorder.close_code == 1011, (
        f"events {accepted[len(received) :][:10]}... never arrived, and the client was not told"
    )
    back = server.client()
    try:
        back.send(
            {
                "type": "subscribe",
                "channels": ["system"],
                "since": recorder.last_seq,
                "epoch": recorder.epoch,
            }
        )
        assert back.recv()["type"] == "subscribed"
        done = back.until(lambda m: m["type"] == "replay_complete")[-1]
        assert done["recovered"] is False, done
    finally:
        back.close()


def _outage_run(restart_gap: int, total: int = 300, down_at: int = 100) -> None:
    """Two processes on a private Redis; events published through B at 50/s while Redis is
    stopped at ``down_at`` and started again (empty) ``restart_gap`` events later. Clients of
    A and B subscribed before, and (for a long outage) one that joined A while Redis was down:
    its ``connected`` carried the epoch Redis then lost."""
    redis_server = PrivateRedis().start()
    servers = [ServerProcess({"REDIS_URL": redis_server.url}).start() for _ in range(2)]
    a, b = servers
    recorders: list[Recorder] = []
    try:
        recorders = [Recorder(a.client()), Recorder(b.client())]
        statuses: dict[int, int] = {}
        started = time.monotonic()
        for i in range(total):
            if i == down_at:
                redis_server.stop()
            if i == down_at + restart_gap // 2 and restart_gap:
                recorders.append(Recorder(a.client(), first=i))
            if i == down_at + restart_gap:
                redis_server.start()
            delay = started + i * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the publisher at 50 events/s, not synchronisation
            statuses[i] = _publish_outage_event(b, i)
        accepted = [i for i in range(total) if statuses[i] == 202]
        assert len(accepted) > down_at, "the bus took events again after Redis came back"
        deadline = time.monotonic() + 15
        while not all(r.settled(accepted) for r in recorders) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the readers' state, each bounded by the deadline
        for recorder in recorders:
            recorder.stop()
        _wait_healthy(a, b)
        for recorder, server in zip(recorders, [a, b, a]):
            _assert_nothing_missed_silently(recorder, accepted, server)
        # The bus works again for everyone: an event through B reaches new clients of both.
        fresh = [a.client(), b.client()]
        for client in fresh:
            client.subscribe("system")
        seq = b.publish(OUTAGE_EVENT, {"i": total}, channel="system")["seq"]
        for client in fresh:
            assert client.until(lambda m: m.get("type") == OUTAGE_EVENT)[-1]["seq"] == seq
            client.close()
    finally:
        for recorder in recorders:
            recorder.stop()
        for server in servers:
            server.stop()
        redis_server.stop()


def test_events_accepted_after_redis_lost_its_data_are_delivered_or_announced():
    """Redis down for 60 events and back empty: no event B accepted is missing on A without
    A's client being closed 1011 (and told ``recovered: false`` when it resumes)."""
    _outage_run(restart_gap=60)


def test_fast_redis_restart_is_noticed():
    """Redis stopped and started again at once (empty): the same guarantee."""
    _outage_run(restart_gap=0, total=200)


def test_redis_restored_from_an_older_snapshot_starts_a_new_epoch():
    """Redis comes back with the bus's epoch but an older sequence (restored from a snapshot):
    those seqs would be numbered again and dropped as already delivered, so the processes
    start a new epoch and close their clients 1011 instead."""
    import redis

    redis_server = PrivateRedis().start()
    servers = [ServerProcess({"REDIS_URL": redis_server.url}).start() for _ in range(2)]
    a, b = servers
    direct = redis.Redis.from_url(redis_server.url)
    try:
        client = a.client()
        client.subscribe("system")
        epoch = client.connected["epoch"]
        seqs = [b.publish(OUTAGE_EVENT, {"i": i}, channel="system")["seq"] for i in range(6)]
        assert [client.recv()["seq"] for _ in seqs] == seqs
        # What a restore from a snapshot taken three events ago looks like, then the restart's
        # broken connections.
        direct.set("local_bridge:seq", seqs[2])
        direct.xdel("local_bridge:stream", *[f"{seq}-1" for seq in seqs[3:]])
        assert direct.client_kill_filter(_type="pubsub") >= 2
        assert client.close_code(timeout=10) == 1011
        _wait_healthy(a, b)
        back = a.client()
        assert back.connected["epoch"] != epoch
        back.send({"type": "subscribe", "channels": ["system"], "since": seqs[-1], "epoch": epoch})
        assert back.recv()["type"] == "subscribed"
        assert back.until(lambda m: m["type"] == "replay_complete")[-1]["recovered"] is False
        after = b.publish(OUTAGE_EVENT, {"i": 6}, channel="system")["seq"]
        assert after > seqs[-1]
        assert back.recv()["seq"] == after
        back.close()
    finally:
        direct.close()
        for server in servers:
            server.stop()
        redis_server.stop()


# ---------------------------------------------------------------------- gaps in the live feed


@pytest.fixture
def private_pair():
    """Two servers on a private Redis (default key prefix), and a direct Redis client."""
    import redis

    redis_server = PrivateRedis().start()
    servers = [ServerProcess({"REDIS_URL": redis_server.url}).start() for _ in range(2)]
    direct = redis.Redis.from_url(redis_server.url)
    yield servers[0], servers[1], direct
    direct.close()
    for server in servers:
        server.stop()
    redis_server.stop()


def _numbered_elsewhere(direct, seq: int, publish: bool) -> None:
    """Number event ``seq`` as the publish script does, but write it to only one of the two
    paths: the stream (its pub/sub message lost) or pub/sub (its stream entry trimmed)."""
    epoch = direct.get("local_bridge:epoch")
    meta = json.dumps(
        {"type": OUTAGE_EVENT, "channel": "system", "targets": ["system"], "types": None},
        separators=(",", ":"),
    )
    text = json.dumps(
        {
            "type": OUTAGE_EVENT,
            "timestamp": "2026-01-01T00:00:00.000Z",
            "channel": "system",
            "seq": seq,
            "i": seq,
        },
        separators=(",", ":"),
    )
    direct.set("local_bridge:seq", seq)
    if publish:
        direct.publish(
            "local_bridge:events",
            b"\n".join([epoch, str(seq).encode(), meta.encode(), text.encode()]),
        )
    else:
        direct.xadd(
            "local_bridge:stream",
            {"m": meta, "t": text, "at": int(time.time() * 1000)},
            id=f"{seq}-1",
        )


def test_listeners_cut_off_catch_up_from_the_stream(private_pair):
    """Every pub/sub connection dropped while events are published (Redis keeps its data):
    what the listeners missed comes from the stream; nobody is closed, nothing is lost."""
    a, b, direct = private_pair
    recorders = [Recorder(a.client()), Recorder(b.client())]
    try:
        statuses = {}
        started = time.monotonic()
        for i in range(100):
            if i == 50:
                assert direct.client_kill_filter(_type="pubsub") >= 2
            delay = started + i * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the publisher at 50 events/s, not synchronisation
            statuses[i] = _publish_outage_event(b, i)
        accepted = [i for i in range(100) if statuses[i] == 202]
        deadline = time.monotonic() + 10
        while not all(r.settled(accepted) for r in recorders) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the readers' state, each bounded by the deadline
        for recorder in recorders:
            assert recorder.received == accepted and recorder.close_code is None
    finally:
        for recorder in recorders:
            recorder.stop()


def test_an_event_missing_from_pubsub_is_fetched_from_the_stream(private_pair):
    """An event numbered and recorded whose pub/sub message never came: each process
    delivers it from the stream within a couple of its one-second checks."""
    a, b, direct = private_pair
    client = a.client()
    client.subscribe("system")
    last = b.publish(OUTAGE_EVENT, {"i": 0}, channel="system")["seq"]
    assert client.recv()["seq"] == last
    _numbered_elsewhere(direct, last + 1, publish=False)
    assert client.recv(timeout=5)["seq"] == last + 1
    after = b.publish(OUTAGE_EVENT, {"i": 2}, channel="system")["seq"]
    assert after == last + 2 and client.recv()["seq"] == after
    client.close()


def test_a_gap_the_stream_cannot_fill_closes_clients_1011(private_pair):
    """A seq jump on the live feed whose events the stream no longer holds: the clients of
    every process are closed 1011 rather than left with a silent gap."""
    a, b, direct = private_pair
    clients = [a.client(), b.client()]
    for client in clients:
        client.subscribe("system")
    epoch = clients[0].connected["epoch"]
    last = b.publish(OUTAGE_EVENT, {"i": 0}, channel="system")["seq"]
    for client in clients:
        assert client.recv()["seq"] == last
    _numbered_elsewhere(direct, last + 5, publish=True)  # last+1 .. last+4: trimmed
    for client in clients:
        assert client.close_code(timeout=5) == 1011
    back = a.client()
    assert back.connected["epoch"] == epoch  # the numbering itself is sound
    back.send({"type": "subscribe", "channels": ["system"], "since": last, "epoch": epoch})
    assert back.recv()["type"] == "subscribed"
    assert back.until(lambda m: m["type"] == "replay_complete")[-1]["recovered"] is False
    after = b.publish(OUTAGE_EVENT, {"i": 6}, channel="system")["seq"]
    assert after == last + 6 and back.recv()["seq"] == after
    back.close()


def test_a_batch_through_a_reaches_b_in_order(pair):
    a, b = pair
    on_b = b.client()
    on_b.subscribe("jobs")
    events = [
        {"type": "job_cancelled", "channel": "jobs", "data": {"job_id": str(i)}} for i in range(20)
    ]
    answer = a.post("/api/events/batch", json={"events": events})
    assert answer.status_code == 202, answer.text
    seqs = answer.json()["seqs"]
    assert seqs == sorted(seqs) and len(set(seqs)) == 20
    received = [on_b.recv() for _ in range(20)]
    assert [(m["seq"], m["job_id"]) for m in received] == list(zip(seqs, map(str, range(20))))
