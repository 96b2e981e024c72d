"""The application-side API of the bus (seed design names), on an in-process server.

The application is served by Werkzeug's threaded server in this process so the test can
register handlers and call :class:`~local_bridge.WebSocketServer` directly, while real
WebSocket clients talk to it over loopback.
"""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from local_bridge import create_app, state_of
from local_bridge import websocket_events as events
from local_bridge.catalog import EventValidationError
from support import BusClient, free_port


@pytest.fixture
def live(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/t.db"})
    bus = state_of(app).ws_server
    port = free_port()
    httpd = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    clients = []

    def connect():
        client = BusClient(f"ws://127.0.0.1:{port}/ws")
        clients.append(client)
        return client

    yield app, bus, connect
    for client in clients:
        client.close()
    httpd.shutdown()
    thread.join(5)


def test_register_handler_adds_a_message_type(live):
    app, bus, connect = live
    seen = []

    def on_rating(client, message):
        seen.append((client.client_type, message["stars"]))
        return {"type": "rating_saved", "stars": message["stars"]}

    bus.register_handler("rate_photo", on_rating)
    client = connect()
    client.register("lightroom", "LR")
    reply = client.request({"type": "rate_photo", "stars": 4}, "rating_saved")
    assert reply["stars"] == 4 and reply["timestamp"]
    assert seen == [("lightroom", 4)]


def test_a_failing_handler_answers_internal_error_and_keeps_the_connection(live):
    app, bus, connect = live
    bus.register_handler("explode", lambda client, message: 1 / 0)
    client = connect()
    error = client.request({"type": "explode"}, "error")
    assert (error["code"], error["request_type"]) == ("internal_error", "explode")
    assert client.request({"type": "ping"}, "pong")


def test_builtin_types_cannot_be_replaced(live):
    app, bus, connect = live
    for name in ("subscribe", "ping", "error"):
        with pytest.raises(ValueError):
            bus.register_handler(name, lambda c, m: None)


def test_broadcast_send_to_client_type_get_clients_disconnect(live):
    app, bus, connect = live
    gui, web = connect(), connect()
    gui.register("gui", "Desktop")
    web.register("web", "Browser")
    web.subscribe("jobs")
    published = bus.broadcast({"type": "job_cancelled", "job_id": "9", "reason": "user"})
    assert published.recipients == 1
    event = web.recv()
    assert (event["type"], event["channel"], event["seq"]) == (
        "job_cancelled",
        "jobs",
        published.seq,
    )
    only_gui = bus.send_to_client_type("gui", {"type": "gui.reload"})
    assert gui.recv()["seq"] == only_gui.seq
    listed = {c["client_id"]: c for c in bus.get_connected_clients()}
    assert listed[gui.client_id]["client_name"] == "Desktop"
    assert listed[web.client_id]["channels"] == ["jobs"]
    assert bus.disconnect(gui.client_id) is True
    assert gui.close_code() == 4009
    assert bus.disconnect(gui.client_id) is False


def test_broadcast_functions_use_the_app_bus(live):
    app, bus, connect = live
    client = connect()
    client.subscribe("jobs:abc")
    with app.app_context():
        published = events.broadcast_job_progress(
            "abc", "analyzing", 45.5, "Analyzing image quality"
        )
    event = client.recv()
    assert event["seq"] == published.seq
    assert (
        event["job_id"],
        event["stage"],
        event["progress"],
        event["message"],
        event["counters"],
    ) == ("abc", "analyzing", 45.5, "Analyzing image quality", None)
    with pytest.raises(EventValidationError), app.app_context():
        events.broadcast_job_progress("abc", "analyzing", "half")
    assert client.request({"type": "ping"}, "pong")  # nothing was published before it
