"""Floods against a local_bridge server on 127.0.0.1, run as a process of their own.

``python flood.py PORT SECONDS [ROUND [FLOOD,...]]`` runs every flood (or those named) at once, each from its own loopback source
address, each bounded in count and in time, and prints what each saw as one JSON object. The
test (test_floods.py) runs this beside a polite client whose measurements must not share an
interpreter (and its lock) with the attackers.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import time

from frames import CLOSE, TEXT, RawSocket, frame, text

#: Source addresses, one per flood: the per-address limits apply to each on its own. Each
#: round of a long run (``ROUND``) comes from a network of its own, so no round inherits the
#: per-minute connect window of another.
CONNECT_FLOOD = HOLDERS = MESSAGE_FLOOD = HTTP_FLOOD = BODY_FLOOD = SLOW_CONSUMER = SLOW_FEEDER = ""


def use_round(round_: int) -> None:
    global CONNECT_FLOOD, HOLDERS, MESSAGE_FLOOD, HTTP_FLOOD, BODY_FLOOD, SLOW_CONSUMER, SLOW_FEEDER
    net = f"127.{10 + round_ % 240}"
    CONNECT_FLOOD = f"{net}.4.1"
    HOLDERS = [f"{net}.1.{i}" for i in range(1, 9)]
    MESSAGE_FLOOD = f"{net}.2.1"
    HTTP_FLOOD = f"{net}.3.1"
    BODY_FLOOD = f"{net}.3.2"
    SLOW_CONSUMER = f"{net}.5.1"
    SLOW_FEEDER = f"{net}.5.2"


use_round(0)

CONNECT_PACE = 40.0  # connects per second: under HTTP_RATE, so CONNECT_RATE is what refuses
MAX_CONNECT_ATTEMPTS = 400
MAX_HELD = 120
MAX_FLOOD_MESSAGES = 3000
MESSAGE_PACE = 100.0  # pings per second: five times MESSAGE_RATE
MAX_HTTP_REQUESTS = 2000
HTTP_FLOOD_CONNECTIONS = 8
#: What the HTTP flood asks for: a poll past the last event, answered from memory (no
#: database, an empty page), so that the flood's share of a worker that every flood keeps
#: busy is as many requests as possible.
HTTP_FLOOD_PATH = f"/api/events?since={2**63 - 1}"
BIG_EVENT = "x" * 500_000  # under MAX_BODY_SIZE (1 MiB)
MAX_BIG_EVENTS = 400
#: Set once the connect flood has been refused: only then do the holders fill the server up
#: (the connection limit is checked first, and would hide the connect rate's 429).
connect_refused = threading.Event()


def http_connection(port: int, source: str) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))


def connect_flood(port: int, seconds: float, out: dict) -> None:
    """New connections, each closed at once, from one address, faster than CONNECT_RATE."""
    statuses, messages = [], set()
    deadline = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < deadline and len(statuses) < MAX_CONNECT_ATTEMPTS:
        sock = RawSocket(port, source=CONNECT_FLOOD)
        statuses.append(sock.status)
        if sock.status != 101:
            messages.add(json.loads(sock.body)["error"]["message"])
            connect_refused.set()
        sock.close()
        next_at += 1 / CONNECT_PACE
        time.sleep(max(0.0, next_at - time.monotonic()))  # pacing, not synchronisation
    out["connect_flood"] = {"statuses": statuses, "messages": sorted(messages)}


def connection_limit_flood(port: int, seconds: float, out: dict) -> None:
    """Connections held open until the server refuses more, from several addresses (each under
    CONNECT_RATE), then held for the rest of the flood."""
    held, statuses, peak = [], [], 0
    deadline = time.monotonic() + seconds
    connect_refused.wait(seconds / 2)
    status_conn = http_connection(port, HOLDERS[-1])
    while time.monotonic() < deadline and len(statuses) < MAX_HELD:
        source = HOLDERS[len(statuses) % (len(HOLDERS) - 1)]
        sock = RawSocket(port, source=source)
        statuses.append(sock.status)
        if sock.status == 101:
            held.append(sock)
        else:
            sock.close()
            status_conn.request("GET", "/api/system/status")
            answer = status_conn.getresponse().read()
            peak = max(peak, json.loads(answer)["connections"]["total"])
            break
    out["connection_limit_flood"] = {"statuses": statuses, "peak": peak}
    # hold them while the other floods go on, then let go
    while time.monotonic() < deadline:
        time.sleep(0.05)  # holding: nothing to wait for but the end of the flood
    for sock in held:
        sock.close()
    status_conn.close()


def message_flood(port: int, seconds: float, out: dict) -> None:
    """One connection sending pings as fast as it can until the server closes it."""
    sock = RawSocket(port, source=MESSAGE_FLOOD)
    assert sock.recv_json()["type"] == "connected"
    replies: list[dict] = []
    ending: dict = {}

    def read() -> None:
        while True:
            try:
                opcode, data = sock.recv_frame(seconds + 10)
            except OSError as exc:
                ending["error"] = repr(exc)
                return
            if opcode == CLOSE:
                ending["code"] = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                return
            if opcode == TEXT:
                replies.append(json.loads(data))

    reader = threading.Thread(target=read)
    reader.start()
    ping = text({"type": "ping"})
    sent = 0
    started = time.monotonic()
    deadline = started + seconds
    while reader.is_alive() and sent < MAX_FLOOD_MESSAGES and time.monotonic() < deadline:
        if not sock.send(ping):
            break
        sent += 1
        # paced, so that the flood outlasts a second or two: several warnings, then the close
        time.sleep(max(0.0, started + sent / MESSAGE_PACE - time.monotonic()))
    reader.join(seconds + 10)
    sock.close()
    out["message_flood"] = {
        "sent": sent,
        "seconds": time.monotonic() - started,
        "pongs": sum(1 for r in replies if r.get("type") == "pong"),
        "errors": [r for r in replies if r.get("type") == "error"],
        "close": ending,
    }


def http_flood(port: int, seconds: float, out: dict) -> None:
    """Keep-alive GETs from one address as fast as they go, on HTTP_FLOOD_CONNECTIONS
    connections at once: the worker serves every flood at once, and a few connections asking
    for something costly did not outrun HTTP_RATE on a slow or busy machine."""
    statuses: list[int] = []
    refusals: set[str] = set()
    started = time.monotonic()

    def flood_one() -> None:
        conn = http_connection(port, HTTP_FLOOD)
        try:
            while time.monotonic() - started < seconds and len(statuses) < MAX_HTTP_REQUESTS:
                conn.request("GET", HTTP_FLOOD_PATH)
                response = conn.getresponse()
                body = response.read()
                statuses.append(response.status)
                if response.status == 429:
                    refusals.add(json.loads(body)["error"]["code"])
        finally:
            conn.close()

    floods = [threading.Thread(target=flood_one) for _ in range(HTTP_FLOOD_CONNECTIONS)]
    for flood in floods:
        flood.start()
    for flood in floods:
        flood.join(seconds + 30)
    out["http_flood"] = {
        "statuses": statuses,
        "seconds": time.monotonic() - started,
        "codes": sorted(refusals),
    }


def body_flood(port: int, seconds: float, out: dict) -> None:
    """Request bodies over MAX_BODY_SIZE, sent whole or only announced."""
    answers = []
    started = time.monotonic()
    for i in range(20):
        if time.monotonic() - started > seconds:
            break
        conn = http_connection(port, BODY_FLOOD)
        headers = {"Content-Type": "application/json"}
        if i % 2:  # announced, never sent: the answer must not wait for it
            conn.putrequest("POST", "/api/websocket/broadcast")
            for name, value in {**headers, "Content-Length": str(10**12)}.items():
                conn.putheader(name, value)
            conn.endheaders()
        else:
            body = json.dumps({"type": "flood.big", "data": {"pad": "y" * 2_100_000}})
            conn.request("POST", "/api/websocket/broadcast", body, headers)
        response = conn.getresponse()
        answer = response.read()
        answers.append((response.status, json.loads(answer)["error"]["code"]))
        conn.close()
    out["body_flood"] = {"answers": answers}


def slow_consumer(port: int, seconds: float, out: dict) -> None:
    """A client that subscribes and never reads, fed big events until the server drops it."""
    sock = RawSocket(port, source=SLOW_CONSUMER, handshake=False)
    sock.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.handshake("/ws")
    assert sock.recv_json()["type"] == "connected"
    sock.send(text({"type": "subscribe", "channels": ["export"]}))
    assert sock.recv_json()["type"] == "subscribed"
    # from here on it reads nothing
    feeder = http_connection(port, SLOW_FEEDER)
    published, recipients = 0, 1
    started = time.monotonic()
    while recipients and published < MAX_BIG_EVENTS and time.monotonic() - started < seconds:
        body = json.dumps({"type": "flood.big", "channel": "export", "data": {"pad": BIG_EVENT}})
        feeder.request(
            "POST", "/api/websocket/broadcast", body, {"Content-Type": "application/json"}
        )
        response = feeder.getresponse()
        answer = json.loads(response.read())
        if response.status == 429:  # the feeder's own HTTP_RATE: slow down a little
            time.sleep(0.02)  # pacing, not synchronisation
            continue
        if response.status != 202:
            raise AssertionError(f"publishing refused: {response.status} {answer}")
        published += 1
        recipients = answer["recipients"]
    feeder.close()
    dropped_after = published
    # now read what the kernel holds for it, up to the close frame; with the tiny window the
    # sender would only probe it every few hundred milliseconds
    sock.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    code = None
    try:
        while True:
            opcode, data = sock.recv_frame(10)
            if opcode == CLOSE:
                code = int.from_bytes(data[:2], "big")
                break
    except OSError as exc:
        code = repr(exc)
    sock.send(frame(b"\x03\xe8", CLOSE))
    sock.close()
    out["slow_consumer"] = {"published": dropped_after, "recipients": recipients, "close": code}


FLOODS = [
    connect_flood,
    connection_limit_flood,
    message_flood,
    http_flood,
    body_flood,
    slow_consumer,
]


def main() -> None:
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    use_round(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    chosen = sys.argv[4].split(",") if len(sys.argv) > 4 else [f.__name__ for f in FLOODS]
    out: dict = {}
    failures: list[str] = []

    def run(flood) -> None:
        started = time.monotonic()
        try:
            flood(port, seconds, out)
        except Exception as exc:  # reported to the test, which fails with it
            failures.append(f"{flood.__name__}: {exc!r}")
        print(f"{flood.__name__}: {time.monotonic() - started:.2f} s", file=sys.stderr)

    threads = [
        threading.Thread(target=run, args=(flood,), daemon=True)
        for flood in FLOODS
        if flood.__name__ in chosen
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    out["failures"] = failures
    print(json.dumps(out))


if __name__ == "__main__":
    main()
