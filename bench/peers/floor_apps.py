"""The floor under an HTTP publish on gunicorn's gevent worker (``python -m bench.floor``):
what answering ``POST /api/websocket/broadcast`` costs with nothing behind it.

``wsgi``: a bare WSGI callable that reads the body and answers the size of local_bridge's
reply; ``flask``: the same in a Flask view that parses the JSON body.
"""

from __future__ import annotations

from flask import Flask, jsonify, request

ANSWER = b'{"seq":1,"recipients":0}'


def wsgi(environ, start_response):
    """Read the request body, answer a fixed JSON reply (the health check answers the same)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response(
        "202 ACCEPTED" if environ["REQUEST_METHOD"] == "POST" else "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(ANSWER)))],
    )
    return [ANSWER]


flask = Flask(__name__)


@flask.get("/health")
def health():
    return jsonify(status="ok")


@flask.post("/api/websocket/broadcast")
def broadcast():
    request.get_json()
    return jsonify(seq=1, recipients=0), 202
