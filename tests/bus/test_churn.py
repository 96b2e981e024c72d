"""Connections that come and go leave nothing behind.

The server runs the cyclic garbage collector rarely (``server._tune_garbage_collector``), so a
connection whose objects reference each other in a cycle outlives its socket until a full
collection: under connection churn the worker's memory grew by about 100 bytes per connection
opened and closed. Each connection here goes through the real application (admission, the
WebSocket endpoint, the bus protocol) on one end of a socket pair, with the cyclic collector
off: when the application returns, every object of the connection must already be gone, freed
by reference counting alone. Under gevent (the default worker: the event loop reads the socket)
and with threads (the gthread worker: simple-websocket's reader thread).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from support import run_under_gevent

CONNECTIONS = 30  # per kind

PROGRAM = textwrap.dedent("""
    import collections, gc, json, socket, sys, threading
    import simple_websocket
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import (AcceptConnection, CloseConnection, Ping, Pong, Request,
                                TextMessage)
    from local_bridge import create_app
    from local_bridge.bus.connection import BusConnection
    from local_bridge.bus.gate import GatedTransport
    from local_bridge.bus.hub import Client
    from local_bridge.bus.outbox import Outbox
    from local_bridge.bus.reader import LoopReader
    from local_bridge.bus.transport import SocketProxy, Transport

    DATABASE, CONNECTIONS, GREEN = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "green"
    OURS = (BusConnection, Client, Transport, SocketProxy, Outbox, GatedTransport, LoopReader,
            simple_websocket.Server)
    app = create_app({"DATABASE_URL": DATABASE, "CONNECT_RATE": 0})

    def serve(environ):
        try:
            app(environ, lambda status, headers, exc_info=None: None)
        except StopIteration:  # how the endpoint tells gunicorn the socket is no longer HTTP
            pass

    class Peer:
        \"\"\"The client end of one connection, speaking WebSocket with wsproto.\"\"\"

        def __init__(self, path):
            server_sock, self.sock = socket.socketpair()
            self.sock.settimeout(5)
            self.ws = WSConnection(ConnectionType.CLIENT)
            request = self.ws.send(Request(host="localhost", target=path))
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "localhost",
                       "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                       "wsgi.url_scheme": "http", "REMOTE_ADDR": "127.0.0.1",
                       "gunicorn.socket": server_sock}
            for line in request.decode().split("\\r\\n")[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    environ["HTTP_" + name.strip().upper().replace("-", "_")] = value.strip()
            del server_sock  # the application's now
            if GREEN:
                import gevent
                self.server = gevent.spawn(serve, environ)
            else:
                self.server = threading.Thread(target=serve, args=(environ,))
                self.server.start()
            assert isinstance(self.next(), AcceptConnection)

        def next(self):
            while True:
                for event in self.ws.events():
                    if isinstance(event, Ping):
                        self.sock.sendall(self.ws.send(event.response()))
                        continue
                    return event
                data = self.sock.recv(65536)
                assert data, "the server closed the connection"
                self.ws.receive_data(data)

        def message(self):
            event = self.next()
            assert isinstance(event, TextMessage), event
            return json.loads(event.data)

        def send(self, message):
            self.sock.sendall(self.ws.send(TextMessage(json.dumps(message))))

        def end(self, close=True):
            if close:
                self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
                event = self.next()
                assert isinstance(event, CloseConnection), event
            self.sock.close()
            self.server.join(10)
            assert not (self.server.is_alive() if not GREEN else not self.server.dead)

    gc.collect()
    gc.disable()  # from here on, only reference counting frees anything
    for _ in range(CONNECTIONS):  # a bus client that subscribes, pings and says goodbye
        peer = Peer("/ws")
        assert peer.message()["type"] == "connected"
        peer.send({"type": "subscribe", "channels": ["jobs"]})
        assert peer.message()["type"] == "subscribed"
        peer.sock.sendall(peer.ws.send(Ping(b"alive?")))
        assert isinstance(peer.next(), Pong)
        peer.end()
    for _ in range(CONNECTIONS):  # a client that vanishes without a close frame
        peer = Peer("/ws")
        assert peer.message()["type"] == "connected"
        peer.end(close=False)
    for _ in range(CONNECTIONS):  # a job stream for a job that does not exist
        peer = Peer("/ws/jobs/999999")
        assert peer.message()["code"] == "job_not_found"
        event = peer.next()
        assert isinstance(event, CloseConnection) and event.code == 4004, event
        peer.end(close=False)
    del peer
    left = collections.Counter(type(o).__name__ for o in gc.get_objects() if isinstance(o, OURS))
    print(json.dumps({"left": left, "connected": len(app.extensions["local_bridge"].ws_server.hub)}))
""")


@pytest.mark.e2e  # processes of their own
@pytest.mark.parametrize("mode", ["green", "threads"])
def test_closed_connections_are_freed_without_the_cyclic_collector(tmp_path, mode):
    args = [f"sqlite:///{tmp_path}/churn.db", str(CONNECTIONS), mode]
    if mode == "green":
        out = run_under_gevent("import sys; sys.argv[1:] = " + repr(args) + "\n" + PROGRAM)
    else:
        done = subprocess.run(
            [sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        out = done.stdout
    result = __import__("json").loads(out.strip().splitlines()[-1])
    assert result == {"left": {}, "connected": 0}


def test_the_connect_rate_table_stays_bounded_while_every_address_is_active():
    """Per-address state is bounded even when no address has been idle for a minute."""
    from local_bridge.limits import ConnectRateLimiter

    now = [1000.0]
    limiter = ConnectRateLimiter(per_minute=5, clock=lambda: now[0])
    bound = ConnectRateLimiter.MAX_ADDRESSES
    for i in range(bound + 500):
        now[0] += 0.001
        assert limiter.allow(f"2001:db8::{i:x}")
    assert len(limiter._seen) == bound
    assert limiter.allow("2001:db8::1")  # forgotten: its count starts again
    assert [limiter.allow(f"2001:db8::{bound + 499:x}") for _ in range(5)] == [True] * 4 + [False]
