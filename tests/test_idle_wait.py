"""The gevent worker's wait for a kept-alive connection's next request, which a graceful stop
ends at once (``gunicorn_app.IdleWait``): it ends that wait and nothing else."""

from __future__ import annotations

import pytest

from support import run_under_gevent

# A connection's greenlet waits for a request inside an IdleWait; the request arrives (here:
# `arrived` is set, which wakes the greenlet through the event loop, as a readable socket
# does) in the same turn of the loop as the stop that ends every idle wait. The greenlet has
# left its IdleWait and is serving the request (here: waiting on `served`, as a long poll
# does) when the stop reaches it.
PROGRAM = """
import gevent
from gevent.event import Event
from local_bridge.gunicorn_app import IdleWait

waiting = {}
arrived, served = Event(), Event()
outcome = []

def connection():
    with IdleWait(waiting, 5):
        arrived.wait()
    outcome.append("request read")
    try:
        served.wait(0.5)
        outcome.append("request served")
    except BaseException as exc:
        outcome.append("request broken by " + type(exc).__name__)

def idle_connection():
    with IdleWait(waiting, 5):
        gevent.sleep(5)
        outcome.append("idle wait not ended")
    outcome.append("idle wait ended")

busy, idle = gevent.spawn(connection), gevent.spawn(idle_connection)
gevent.sleep(0.05)
assert len(waiting) == 2, waiting
arrived.set()  # the request's wake-up is queued first...
for wait in list(waiting.values()):  # ...then the stop (BusGeventWorker.handle_exit)
    wait.end_now()
gevent.joinall([busy, idle], timeout=5)
print(sorted(outcome))
"""


@pytest.mark.e2e  # a process of its own
def test_ending_the_idle_waits_at_a_stop_spares_a_request_read_meanwhile():
    out = run_under_gevent(PROGRAM)
    assert out.strip() == str(sorted(["request read", "request served", "idle wait ended"]))
