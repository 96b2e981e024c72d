"""Peer for the benchmark: Flask-SocketIO in threading mode, served by gunicorn's threaded worker.

Clients speak Socket.IO 5 over Engine.IO 4 (the load generator uses the WebSocket transport
directly: ``/socket.io/?EIO=4&transport=websocket``, then ``40`` to join the default namespace).
A client emits ``subscribe`` with ``{"channels": [...]}`` and is put in one room per channel, then
gets ``subscribed``. ``POST /api/websocket/broadcast`` (local_bridge's body) builds the same
envelope and emits it as the event named by ``type`` to the channel's room. ``GET /health``
answers 200.

    gunicorn -k gthread -w 1 --threads N+64 --worker-connections N+100 \
        --chdir bench/peers socketio_server:app
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import envelope, now_iso, parse_publish  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402
from flask_socketio import SocketIO, emit, join_room  # noqa: E402

app = Flask(__name__)
socketio = SocketIO(app, async_mode="threading", logger=False, engineio_logger=False)
seq_lock = threading.Lock()
state = {"seq": 0}


@socketio.on("subscribe")
def on_subscribe(body):
    channels = [c for c in (body or {}).get("channels") or () if isinstance(c, str)]
    for channel in channels:
        join_room(channel)
    emit(
        "subscribed",
        {
            "type": "subscribed",
            "timestamp": now_iso(),
            "channels": sorted(channels),
            "seq": state["seq"],
        },
    )


@app.post("/api/websocket/broadcast")
def broadcast():
    try:
        type_, channel, data = parse_publish(request.get_data())
    except (ValueError, TypeError) as exc:
        return jsonify(error=str(exc)), 400
    with seq_lock:
        state["seq"] += 1
        seq = state["seq"]
    message = envelope(type_, channel, seq, data)
    socketio.emit(type_, message, to=channel)
    room = socketio.server.manager.rooms.get("/", {}).get(channel, ())
    return jsonify(seq=seq, recipients=len(room)), 202


@app.get("/health")
def health():
    return jsonify(status="ok")
