"""Load generators of the benchmark, each a child process of ``python -m bench`` (127.0.0.1 only):

``python -m bench.loadgen clients --port P --proto bus|socketio`` (:mod:`.subscribers`)
    Many WebSocket subscribers in one process, driven by one epoll loop. Commands arrive as JSON
    lines on stdin, one JSON line is answered on stdout for each:

    * ``{"cmd": "connect", "n": 500, "concurrency": 64, "timeout": 120, "sample": 100,
      "small_rcvbuf": [0]}``: open ``n`` connections (at most ``concurrency`` handshakes in flight),
      each doing the handshake, waiting for ``connected``, subscribing to ``jobs`` and waiting for
      ``subscribed`` (Socket.IO: open packet, ``40``, ``subscribe`` event, ``subscribed`` event).
      ``sample`` connections, spread evenly, are latency samplers; the listed indexes get a
      4 KiB receive buffer (the slow client). Answers counts and per-connection setup times.
    * ``{"cmd": "reset", "decode_every": 1}``: zero the counters; from now on samplers decode
      every ``decode_every``-th event for latency (0: none).
    * ``{"cmd": "stats", "latencies": true}``: counters (and the latency samples so far);
      ``t_last`` is the ``time.monotonic()`` (system-wide) at which the last event since the
      reset arrived (the bursts are timed until the last subscriber has the last event).
    * ``{"cmd": "stall", "index": 0}`` / ``{"cmd": "resume", "index": 0}``: stop / restart
      reading one connection (the slow client); ``{"cmd": "conn", "index": 0}``: its state.
    * ``{"cmd": "quit"}`` (or end of stdin): close everything and exit.

``python -m bench.loadgen publish --port P[,P2...] --conns 4 --duration 10 [--rate 20]`` (:mod:`.publisher`)
    POSTs ``{"type": "bench.event", "channel": "jobs", "data": {"t": <time.time()>, ...}}`` to
    ``/api/websocket/broadcast`` on ``--conns`` keep-alive connections, one thread each, as fast
    as answers come (or at ``--rate`` events/s in total), for ``--duration`` seconds; with several
    ports, connection k publishes to port k modulo their number. Prints
    ``{"event": "started"}`` once every connection is open, then one JSON result line (``t0``:
    the ``time.monotonic()`` publishing started at). ``--count K`` stops after K events (a
    burst); ``--batch B`` POSTs ``{"events": [B such events]}`` to ``--path``
    (``/api/events/batch``) and counts ``events`` = B per accepted request. A 429 or 503 with
    ``Retry-After`` is obeyed: the same event is sent again after that many seconds (counted
    as ``throttled``, not as an error), while the phase lasts.

``python -m bench.loadgen followers --ports P1,P2 --clients 10 --kind resuming|steady`` (:mod:`.followers`)
    Prints ``{"event": "started"}`` once all are subscribed; runs until a line (or end) on
    stdin, then prints one JSON result line: resumes, replayed events, ``recovered: false``
    count, missing, duplicated and out-of-order events.

Every loop is bounded by a deadline (``--deadline`` seconds after start, then the process exits).
"""
