"""Peer for the benchmark: the naive flask-sock bus, served by gunicorn's threaded worker.

A list of subscribed ``ws`` objects per channel; on ``POST /api/websocket/broadcast`` the request
thread runs ``for ws in clients: ws.send(text)``. One lock serializes publishing and the
``subscribed`` replies, because simple-websocket's ``send`` is not safe from two threads at once
on one connection (without it, concurrent publishers could interleave frames). ``GET /health``
answers 200.

    gunicorn -k gthread -w 1 --threads N+64 --worker-connections N+100 \
        --chdir bench/peers flask_sock_naive:app
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import dumps, envelope, parse_publish, reply  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402
from flask_sock import ConnectionClosed, Sock  # noqa: E402

app = Flask(__name__)
sock = Sock(app)
lock = threading.Lock()
subscribers: dict[str, list] = {}
state = {"seq": 0}


@sock.route("/ws")
def bus(ws):
    joined: set[str] = set()
    with lock:
        ws.send(reply("connected", client_id=hex(id(ws)), seq=state["seq"]))
    try:
        while True:
            message = ws.receive()
            try:
                doc = json.loads(message)
            except (TypeError, ValueError):
                continue
            if doc.get("type") == "subscribe":
                with lock:
                    for channel in doc.get("channels") or ():
                        if channel not in joined:
                            subscribers.setdefault(channel, []).append(ws)
                            joined.add(channel)
                    ws.send(reply("subscribed", channels=sorted(joined), seq=state["seq"]))
    except ConnectionClosed:
        pass
    finally:
        with lock:
            for channel in joined:
                try:
                    subscribers[channel].remove(ws)
                except (KeyError, ValueError):
                    pass


@app.post("/api/websocket/broadcast")
def broadcast():
    try:
        type_, channel, data = parse_publish(request.get_data())
    except (ValueError, TypeError) as exc:
        return jsonify(error=str(exc)), 400
    sent = 0
    with lock:
        state["seq"] += 1
        seq = state["seq"]
        text = dumps(envelope(type_, channel, seq, data))
        for ws in list(subscribers.get(channel, ())):
            try:
                ws.send(text)
                sent += 1
            except (ConnectionClosed, OSError):
                pass
    return jsonify(seq=seq, recipients=sent), 202


@app.get("/health")
def health():
    return jsonify(status="ok")
