"""Capacity of ``local-bridge serve`` per gunicorn worker class: N idle WebSockets at once
(``python -m bench.capacity``).

For each worker class (gevent, gthread) the script starts ``local-bridge serve`` on a free
loopback port as a subprocess, opens N WebSocket connections with the raw client of
``bench.wsclient`` driven by one ``selectors`` loop (handshake by hand, wait for ``connected``, subscribe to ``jobs``, wait
for ``subscribed``) and, while all N are held open, measures:

* connect wall time and connections/s, per-connection handshake latency, worker CPU spent;
* the gunicorn worker's VmRSS before and with N open (and per connection), its threads and fds;
* ``GET /api/system/health`` latency (idle server, then with N open);
* one ``POST /api/websocket/broadcast`` on ``jobs``: time until every client got the event;
* ``GET /api/system/status`` ``connections.total`` (must be N);
* after the client closes every socket: time until the server counts 0 connections.

It prints a markdown table with one column per worker class (and writes it to ``--output``).
Exit status: 0 when every class held all N connections, delivered the broadcast to all of them
and answered every HTTP request; 1 otherwise; 2 on a usage or environment error.

Only the script's own RLIMIT_NOFILE (and its server subprocess's) is raised; the server runs with
its product defaults except LOCAL_BRIDGE_CONNECT_RATE=0, LOCAL_BRIDGE_MAX_CONNECTIONS=N+100, a
throw-away SQLite file and the chosen port and worker class (other LOCAL_BRIDGE_* variables of
the calling environment are not passed on).

Example::

    . .venv/bin/activate
    python -m bench.capacity --connections 2000 --output /tmp/capacity.md
    python -m bench.capacity -w gevent --connections 10000 --deadline 300
"""
