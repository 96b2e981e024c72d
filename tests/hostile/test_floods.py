"""Every limit holds at once under flood, while a polite client keeps its service.

tests/hostile/flood.py floods the real server on loopback from its own process, every flood at
once and each from its own source address: connects faster than ``CONNECT_RATE``, connections
held up to ``MAX_CONNECTIONS``, pings faster than ``MESSAGE_RATE``/``MESSAGE_BURST``, HTTP
requests faster than ``HTTP_RATE``, bodies over ``MAX_BODY_SIZE``, and a client that never reads
while big events pile up for it (``MAX_QUEUE``). Meanwhile a polite client (from 127.0.0.2,
tests/hostile/watch.py) receives events published over REST 20 times a second: it is never
refused or disconnected, gets every event in order, and its publish→receive p99 stays under
100 ms. The limits one by one have their own tests (tests/e2e/test_lifecycle_e2e.py,
test_slow_consumer_e2e.py); here they must hold together.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from budget import LONG
from support import ServerProcess
from watch import PoliteClient, client_ids, log_size, settle, tracebacks, worker_pids

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600 if LONG else 120)]

HERE = Path(__file__).parent
LIMITS = {
    "CONNECT_RATE": 30,  # per minute per address
    "MAX_CONNECTIONS": 50,
    "MESSAGE_RATE": 20,
    "MESSAGE_BURST": 50,
    "HTTP_RATE": 50,
    "MAX_QUEUE": 50,
    "MAX_BODY_SIZE": 1 << 20,
    "SLOW_CLOSE_GRACE": 5,
}
P99_BOUND = 0.100  # seconds, publish→receive, for the polite client
FLOOD_SECONDS = 4.0  # one round
ROUNDS = 20 if LONG else 1


@pytest.fixture(scope="module", params=["gevent", "gthread"])
def flooded(request):
    server = ServerProcess({"WORKER_CLASS": request.param, **LIMITS}).start()
    yield server
    server.stop()


def test_every_limit_holds_under_flood_while_a_polite_client_keeps_its_service(flooded):
    server = flooded
    workers = worker_pids(server)
    log_start = log_size(server)
    baseline = client_ids(server)  # the polite client leaves with the attackers
    polite = PoliteClient(server).start()
    rounds = []
    try:
        for round_ in range(ROUNDS):  # one in CI; the long run floods again and again
            rounds.append(flood(server, round_))
            settle(server, baseline | {polite.client.client_id})
    finally:
        polite.stop()  # every event, in order; never refused, never disconnected
    for results in rounds:
        check_limits(results)
    assert polite.p99() < P99_BOUND, polite.latencies()[-10:]  # ... and it never noticed
    settle(server, baseline)
    assert worker_pids(server) == workers, "the worker crashed or was restarted"
    if found := tracebacks(server, log_start):
        pytest.fail(f"the server logged {len(found)} traceback(s); the first:\n{found[0]}")


def flood(server: ServerProcess, round_: int) -> dict:
    """One round of every flood at once (tests/hostile/flood.py); what each saw."""
    attack = subprocess.run(
        [sys.executable, str(HERE / "flood.py"), str(server.port), str(FLOOD_SECONDS), str(round_)],
        capture_output=True,
        text=True,
        timeout=FLOOD_SECONDS + 90,
        cwd=HERE,
    )
    assert attack.returncode == 0, attack.stderr
    results = json.loads(attack.stdout)
    assert not results["failures"], results["failures"]
    return results


def check_limits(results: dict) -> None:
    """Every limit held in one round of floods."""
    # CONNECT_RATE: the connections beyond it are refused with 429 at the handshake
    connects = results["connect_flood"]["statuses"]
    rate = LIMITS["CONNECT_RATE"]
    assert connects[:rate] == [101] * rate and connects[rate] == 429, connects
    assert connects.count(101) == rate and set(connects) <= {101, 429, 503}, connects
    assert "too many new connections from this address" in results["connect_flood"]["messages"]

    # MAX_CONNECTIONS: never more at once; the one beyond is refused with 503
    held = results["connection_limit_flood"]
    assert held["statuses"][-1] == 503 and set(held["statuses"]) == {101, 503}, held
    assert held["peak"] <= LIMITS["MAX_CONNECTIONS"], held

    # MESSAGE_RATE / _BURST: dropped beyond them, one rate_limited a second, 4029 after 100 drops
    flood = results["message_flood"]
    assert flood["close"].get("code") == 4029, flood["close"]
    allowed = LIMITS["MESSAGE_BURST"] + LIMITS["MESSAGE_RATE"] * flood["seconds"] + 1
    assert flood["pongs"] <= allowed, flood
    assert flood["sent"] - flood["pongs"] > 100, flood
    assert flood["errors"] and {e["code"] for e in flood["errors"]} == {"rate_limited"}, flood
    stamps = [datetime.fromisoformat(e["timestamp"].rstrip("Z")) for e in flood["errors"]]
    gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])]
    assert all(gap >= 0.99 for gap in gaps), gaps

    # HTTP_RATE: 429 rate_limited beyond it, nothing else
    http = results["http_flood"]
    served = http["statuses"].count(200)
    assert served <= LIMITS["HTTP_RATE"] * (http["seconds"] + 1) + 1, (served, http["seconds"])
    assert 429 in http["statuses"] and set(http["statuses"]) == {200, 429}
    assert http["codes"] == ["rate_limited"]

    # MAX_BODY_SIZE: 413, whether the body is sent or only announced
    assert results["body_flood"]["answers"], results["body_flood"]
    assert {tuple(a) for a in results["body_flood"]["answers"]} == {(413, "payload_too_large")}

    # MAX_QUEUE: the client that never reads is dropped and closed 4008
    slow = results["slow_consumer"]
    assert slow["recipients"] == 0 and slow["close"] == 4008, slow


def test_a_refused_body_is_skipped_only_so_far(flooded):
    """A body announced far over MAX_BODY_SIZE gets its 413 at once; what the client sends of
    it afterwards is read and discarded only up to a bound, then the connection is closed:
    refusing a request must not cost the server the whole of it."""
    announced = 1 << 30
    with socket.create_connection(("127.0.0.1", flooded.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/websocket/broadcast HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % announced
        )
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 413 "), head[:200]
        chunk, sent = b" " * (1 << 20), 0
        try:
            while sent < announced:
                sent += sock.send(chunk)
        except OSError:  # closed by the server: what it took is bounded
            pass
    assert sent < 64 << 20, f"the server read {sent >> 20} MiB of a refused body"
