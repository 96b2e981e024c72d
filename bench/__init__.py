"""Measurement tools for local_bridge: the benchmark against peer buses and the capacity test.

Not part of the installed package (``pip install .`` ships ``local_bridge`` only); run them from
a checkout, with the README's setup and ``bench/requirements.txt``:

* ``scripts/bench`` (``python -m bench``): local_bridge against websockets, picows, a naive
  flask-sock loop and Flask-SocketIO; writes docs/benchmarks.md's generated part (docs/benchmarks.md).
* ``python -m bench.capacity``: N idle WebSockets held by one worker, per worker class
  (docs/worker-choice.md).

Layout: ``wsclient`` (the one raw WebSocket client), ``procs`` and ``cgroups`` (processes and CPU
caps), ``servers`` and ``peers/`` (what is measured), ``loadgen/`` (the client processes),
``measure`` and ``scenarios`` (one measurement, the run), ``report``, ``report_redis``,
``targets`` and ``plot`` (what is written), ``capacity/``.
"""
