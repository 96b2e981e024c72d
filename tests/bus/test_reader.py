"""LoopReader: under gevent, simple-websocket's frames are read from the event loop.

Each test runs a small program in a gevent-patched interpreter: a simple-websocket server over
one end of a socket pair (through local_bridge's Transport, as in the server) and a wsproto
client on the other end, speaking real frames.
"""

from __future__ import annotations

import textwrap

import pytest

from support import run_under_gevent

pytestmark = pytest.mark.e2e  # each test runs a gevent-patched process of its own

PRELUDE = textwrap.dedent("""
    import socket, threading
    import gevent, simple_websocket
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import (AcceptConnection, CloseConnection, Ping, Pong, Request,
                                TextMessage)
    from local_bridge.bus.reader import LoopReader, reader_class
    from local_bridge.bus.transport import Transport

    server_sock, peer = socket.socketpair()
    peer.settimeout(5)
    client = WSConnection(ConnectionType.CLIENT)
    request = client.send(Request(host="bus", target="/ws"))
    environ = {"gunicorn.socket": server_sock}
    for line in request.decode().split("\\r\\n")[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            environ["HTTP_" + name.strip().upper().replace("-", "_")] = value.strip()
    transport = Transport(environ, 100)
    assert reader_class() is LoopReader
    ws = simple_websocket.Server.accept(environ, thread_class=LoopReader, max_message_size=64)
    transport.attach(ws)

    def events():
        while True:
            found = list(client.events())
            if found:
                return found
            data = peer.recv(65536)
            assert data, "the server closed the connection"
            client.receive_data(data)

    assert isinstance(events()[0], AcceptConnection)
""")


def run(body: str) -> str:
    return run_under_gevent(PRELUDE + textwrap.dedent(body))


def test_messages_arrive_without_a_reader_thread():
    out = run("""
        assert isinstance(ws.thread, LoopReader) and ws.thread.is_alive()
        frame = client.send(TextMessage("hello, bus"))
        peer.sendall(frame[:3]); gevent.sleep(0.05); peer.sendall(frame[3:])  # split frame
        assert ws.receive(timeout=5) == "hello, bus"
        assert threading.active_count() == 1  # no thread (greenlet) was started to read
        print("ok")
    """)
    assert out.strip() == "ok"


def test_pings_are_answered_from_the_event_loop():
    out = run("""
        peer.sendall(client.send(Ping(b"are you there")))
        answer = events()
        assert isinstance(answer[0], Pong) and answer[0].payload == b"are you there", answer
        print("ok")
    """)
    assert out.strip() == "ok"


def test_the_peer_closing_ends_reading_and_flushes_the_outbox():
    out = run("""
        peer.sendall(client.send(CloseConnection(code=1000)))
        answer = events()
        assert isinstance(answer[0], CloseConnection), answer  # the library's close echo
        ws.thread.join(5)
        assert not ws.connected and ws.close_reason == 1000
        assert not ws.thread.is_alive()
        assert transport.outbox.wait_closed(5)
        print("ok")
    """)
    assert out.strip() == "ok"


def test_an_oversized_message_is_refused_with_1009():
    out = run("""
        peer.sendall(client.send(TextMessage("x" * 200)))
        answer = events()
        assert isinstance(answer[0], CloseConnection) and answer[0].code == 1009, answer
        print("ok")
    """)
    assert out.strip() == "ok"


def test_a_vanished_peer_ends_reading():
    out = run("""
        peer.shutdown(socket.SHUT_RDWR)
        peer.close()
        ws.thread.join(5)
        assert not ws.thread.is_alive() and not ws.connected
        try:
            ws.receive(timeout=1)
        except simple_websocket.ConnectionClosed:
            pass
        else:
            raise AssertionError("receive() on a closed connection must raise")
        print("ok")
    """)
    assert out.strip() == "ok"


def test_the_server_hands_the_loop_reader_to_simple_websocket_under_gevent(tmp_path):
    """What makes an idle connection cheap in the real server: its routes pass LoopReader."""
    out = run_under_gevent(
        "from local_bridge import create_app\n"
        "from local_bridge.bus.reader import LoopReader\n"
        f"app = create_app({{'DATABASE_URL': 'sqlite:///{tmp_path}/bus.db'}})\n"
        "print(app.config['WEBSOCKET_SERVER_OPTIONS']['thread_class'] is LoopReader)\n"
    )
    assert out.strip() == "True"
