"""History and resume (PROTOCOL.md section 3): exactly the missed events, in order, once."""

from __future__ import annotations

import json
import struct
import threading

from support import BusClient, RawClient, marker


def _resume(server, channels, since, epoch, client_type=None) -> tuple[BusClient, list, dict]:
    """Reconnect and resume; return the client, the replayed events and replay_complete."""
    client = server.client()
    if client_type:
        client.register(client_type, "resumer")
    message = {"type": "subscribe", "channels": channels, "since": since}
    if epoch is not None:
        message["epoch"] = epoch
    client.send(message)
    assert client.recv()["type"] == "subscribed"
    replayed = client.until(lambda m: m["type"] == "replay_complete")
    return client, replayed[:-1], replayed[-1]


def test_resume_replays_exactly_what_was_missed(server):
    first = server.client()
    first.register("web", "w")
    first.subscribe("jobs")
    epoch, since = first.connected["epoch"], marker(server)
    first.recv()
    first.close()
    missed = [
        server.publish("job_cancelled", {"job_id": str(i)}, channel="jobs")["seq"] for i in range(5)
    ]
    server.publish("photo_approved", {"photo_id": "1"}, channel="photos")  # not subscribed
    everyone = server.publish("studio.notice", {"text": "hi"})["seq"]  # reaches every client
    server.publish("gui.only", {}, client_types=["gui"])  # not this client's type
    client, replayed, done = _resume(server, ["jobs"], since, epoch, client_type="web")
    assert [e["seq"] for e in replayed] == missed + [everyone]
    assert (done["since"], done["recovered"]) == (since, True) and done["to"] >= everyone
    live = server.publish("job_cancelled", {"job_id": "live"}, channel="jobs")["seq"]
    assert client.recv()["seq"] == live
    client.close()


def test_resume_under_concurrent_publishing_loses_and_repeats_nothing(server):
    witness = server.client()  # connected all along: what the resumer must end up with
    witness.subscribe("jobs")
    leaver = server.client()
    leaver.subscribe("jobs")
    epoch, since = leaver.connected["epoch"], marker(server)
    leaver.close()
    witness.recv()
    stop = threading.Event()

    def publish_forever():
        for i in range(400):
            if stop.is_set():
                return
            server.publish("job_cancelled", {"job_id": f"c{i}"}, channel="jobs")

    publisher = threading.Thread(target=publish_forever)
    publisher.start()
    for _ in range(30):  # let some events be missed before resuming
        server.publish("job_cancelled", {"job_id": "early"}, channel="jobs")
    client, replayed, done = _resume(server, ["jobs"], since, epoch)
    assert done["recovered"] is True
    last = marker(server)  # everything published up to here must arrive, then stop
    stop.set()
    publisher.join(60)
    final = marker(server)
    after = client.until(lambda m: m["seq"] == final, timeout=30)
    resumed = [e["seq"] for e in replayed + after]
    seen = [e["seq"] for e in witness.until(lambda m: m["seq"] == final, timeout=30)]
    assert resumed == seen, "the resumed client has exactly what a connected one has"
    assert resumed == sorted(set(resumed)) and last in resumed
    client.close()
    witness.close()


def test_trimmed_history_is_not_recovered(make_server):
    server = make_server(HISTORY_SIZE=5)
    leaver = server.client()
    epoch, since = leaver.connected["epoch"], leaver.connected["seq"]
    leaver.close()
    seqs = [
        server.publish("job_cancelled", {"job_id": str(i)}, channel="jobs")["seq"] for i in range(8)
    ]
    client, replayed, done = _resume(server, ["jobs"], since, epoch)
    assert done["recovered"] is False
    assert [e["seq"] for e in replayed] == seqs[-5:]  # what is still held, in order
    client.close()
    fresh, replayed, done = _resume(server, ["jobs"], seqs[-3], epoch)
    assert done["recovered"] is True and [e["seq"] for e in replayed] == seqs[-2:]
    fresh.close()


def test_another_epoch_after_restart_is_not_recovered(make_server):
    server = make_server()
    client = server.client()
    epoch, since = client.connected["epoch"], marker(server)
    client.close()
    restarted = make_server()  # a new process: a new in-memory history, a new epoch
    resumed, replayed, done = _resume(restarted, ["jobs"], since, epoch)
    assert resumed.connected["epoch"] != epoch
    assert done["recovered"] is False and replayed == []
    resumed.close()


def test_slow_consumer_resumes_without_a_gap(make_server):
    server = make_server(MAX_QUEUE=20)
    stalled = RawClient(server.port, rcvbuf=4096)
    hello = stalled.recv_json()
    stalled.send_json({"type": "subscribe", "channels": ["jobs"]})
    stalled.recv_json()
    seqs = [
        server.publish("bulk.event", {"pad": "x" * 32768}, channel="jobs")["seq"]
        for _ in range(200)
    ]
    stalled.sock.settimeout(10)
    got = []
    while True:
        opcode, data = stalled.recv_frame()
        if opcode == 0x8:
            assert struct.unpack("!H", data[:2])[0] == 4008
            break
        got.append(json.loads(data)["seq"])
    stalled.close()
    since = got[-1] if got else hello["seq"]
    client, replayed, done = _resume(server, ["jobs"], since, hello["epoch"])
    assert done["recovered"] is True
    assert got + [e["seq"] for e in replayed] == seqs
    client.close()
