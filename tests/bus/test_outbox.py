"""Unit tests of local_bridge.bus.outbox.Outbox with a fake, stallable sendall."""

from __future__ import annotations

import threading

import pytest

from fake_send import NonBlockingSend
from local_bridge.bus.outbox import Outbox
from support import run_under_gevent

TIMEOUT = 10.0


class FakeSocket:
    """Records every sendall call; while ``gate`` is clear, a call blocks (a stalled socket)."""

    def __init__(self, fail: Exception | None = None):
        self.calls: list[bytes] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = fail
        self._cond = threading.Condition()

    def sendall(self, data: bytes) -> None:
        with self._cond:
            self.calls.append(bytes(data))
            self._cond.notify_all()
        assert self.gate.wait(TIMEOUT), "the test never released the stalled socket"
        if self.fail is not None:
            raise self.fail

    def wait_calls(self, count: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.calls) >= count, TIMEOUT), self.calls


@pytest.fixture
def sock():
    return FakeSocket()


@pytest.fixture
def make_outbox(sock):
    made = []

    def make(**kwargs) -> Outbox:
        kwargs.setdefault("limit", 100)
        outbox = Outbox(sock.sendall, **kwargs)
        made.append(outbox)
        return outbox

    yield make
    sock.gate.set()  # never leave a writer blocked
    for outbox in made:
        outbox.close(discard=True)
        assert outbox.wait_closed(TIMEOUT)


def stall_on_first(sock: FakeSocket, outbox: Outbox, first: bytes = b"a") -> None:
    """Leave the writer blocked inside sendall(first), so later puts stay queued."""
    sock.gate.clear()
    assert outbox.put(first)
    sock.wait_calls(1)


def test_queued_messages_go_out_in_one_sendall(sock, make_outbox):
    outbox = make_outbox()
    stall_on_first(sock, outbox)
    for data in (b"b", b"c", b"d"):
        assert outbox.put(data)
    assert outbox.depth == 3
    sock.gate.set()
    sock.wait_calls(2)
    assert sock.calls == [b"a", b"bcd"]
    assert outbox.close() and outbox.wait_closed(TIMEOUT)
    assert (outbox.sent, outbox.dropped, outbox.depth) == (4, 0, 0)


def test_order_is_preserved(sock, make_outbox):
    outbox = make_outbox(limit=1000)
    messages = [f"<{i}>".encode() for i in range(500)]
    for data in messages:
        assert outbox.put(data)
    outbox.close()
    assert outbox.wait_closed(TIMEOUT)
    assert b"".join(sock.calls) == b"".join(messages)
    assert outbox.sent == 500


def test_overflow_discards_queue_and_sends_overflow_frame_last(sock, make_outbox):
    overflows = []
    outbox = make_outbox(limit=3, overflow_frame=b"CLOSE", on_overflow=lambda: overflows.append(1))
    stall_on_first(sock, outbox)
    assert all(outbox.put(data) for data in (b"b", b"c", b"d"))  # exactly `limit` queued
    assert overflows == [] and not outbox.overflowed
    assert not outbox.put(b"e")  # one more than the limit
    assert overflows == [1]
    assert outbox.overflowed and outbox.closing and outbox.depth == 0
    assert not outbox.put(b"f")  # refused from now on, and told only once
    assert not outbox.close(b"NORMAL-CLOSE")
    assert overflows == [1]
    sock.gate.set()
    assert outbox.wait_closed(TIMEOUT)
    assert sock.calls == [b"a", b"CLOSE"]
    assert (outbox.sent, outbox.dropped) == (1, 5)  # b c d discarded, e f refused


def test_on_overflow_runs_outside_the_lock(sock, make_outbox):
    """on_overflow is called without the outbox's lock held, so it may call back into the
    outbox; were it held, the publishing thread would deadlock."""
    seen = []
    outbox = make_outbox(
        limit=1,
        overflow_frame=b"X",
        on_overflow=lambda: seen.append((outbox.put(b"late"), outbox.depth)),
    )
    stall_on_first(sock, outbox)
    assert outbox.put(b"b")
    worker = threading.Thread(target=outbox.put, args=(b"c",), daemon=True)
    worker.start()
    worker.join(TIMEOUT)
    assert not worker.is_alive(), "put deadlocked calling on_overflow"
    assert seen == [(False, 0)]
    sock.gate.set()
    assert outbox.wait_closed(TIMEOUT)
    assert sock.calls == [b"a", b"X"]


def test_close_flushes_then_sends_final_frame(sock, make_outbox):
    outbox = make_outbox()
    stall_on_first(sock, outbox)
    assert outbox.put(b"b") and outbox.put(b"c")
    assert outbox.close(final=b"BYE")
    assert outbox.closing
    assert not outbox.put(b"d")
    assert not outbox.close(final=b"AGAIN")
    sock.gate.set()
    assert outbox.wait_closed(TIMEOUT)
    assert sock.calls == [b"a", b"bcBYE"]
    assert (outbox.sent, outbox.dropped) == (3, 1)


def test_close_with_nothing_queued_and_no_final_sends_nothing(sock, make_outbox):
    outbox = make_outbox()
    assert outbox.close()
    assert outbox.wait_closed(TIMEOUT)
    assert sock.calls == []


def test_close_discard_drops_queue_but_sends_final(sock, make_outbox):
    outbox = make_outbox()
    stall_on_first(sock, outbox)
    assert outbox.put(b"b") and outbox.put(b"c")
    assert outbox.close(final=b"BYE", discard=True)
    assert outbox.depth == 0
    sock.gate.set()
    assert outbox.wait_closed(TIMEOUT)
    assert sock.calls == [b"a", b"BYE"]
    assert (outbox.sent, outbox.dropped) == (1, 2)


def test_sendall_oserror_stops_writer_and_marks_failed(sock, make_outbox):
    outbox = make_outbox()
    stall_on_first(sock, outbox)
    assert outbox.put(b"b") and outbox.put(b"c")
    sock.fail = BrokenPipeError("peer gone")
    sock.gate.set()
    assert outbox.wait_closed(TIMEOUT)
    assert outbox.failed and outbox.closing
    assert sock.calls == [b"a"]
    assert (outbox.sent, outbox.dropped, outbox.depth) == (0, 2, 0)
    assert not outbox.put(b"d")
    assert outbox.dropped == 3
    assert not outbox.close(final=b"BYE")


def test_wait_closed_times_out_while_the_socket_is_stalled(sock, make_outbox):
    outbox = make_outbox()
    stall_on_first(sock, outbox)
    outbox.close(final=b"BYE")
    assert not outbox.wait_closed(0.05)  # still blocked in sendall
    sock.gate.set()
    assert outbox.wait_closed(TIMEOUT)
    assert sock.calls == [b"a", b"BYE"]


@pytest.mark.e2e  # a process of its own
def test_under_gevent_the_outbox_takes_the_os_lock():
    """gevent's patched Lock is Python code on the hot path; the outbox never switches greenlets
    while holding its lock, so it uses the OS lock gevent replaced."""
    out = run_under_gevent(
        "import threading\n"
        "from local_bridge.bus.outbox import Outbox\n"
        "box = Outbox(lambda data: None, 10)\n"
        "print(type(box._lock).__module__, type(box._lock).__name__, type(threading.Lock()).__module__)\n"
        "box.close()\n"
        "assert box.wait_closed(10)\n"
    )
    lock_module, lock_name, patched_module = out.split()
    assert (lock_module, lock_name) == ("_thread", "lock")
    assert patched_module.startswith("gevent")  # the patch was in force


def test_without_gevent_the_outbox_takes_threading_lock(make_outbox):
    assert isinstance(make_outbox()._lock, type(threading.Lock()))


def test_a_message_goes_straight_to_an_idle_socket_with_no_writer(sock, make_outbox):
    direct = NonBlockingSend()
    outbox = make_outbox(try_send=direct)
    assert outbox.put(b"one") and outbox.put(b"two")
    assert direct.written == b"onetwo"
    assert sock.calls == []
    assert outbox.sent == 2
    assert outbox._writer is None  # an idle connection costs no writer


def test_what_the_socket_does_not_take_goes_to_the_writer_first(sock, make_outbox):
    direct = NonBlockingSend(2, 0, 0)  # takes b"ab" of b"abcdef", then is full
    outbox = make_outbox(try_send=direct)
    sock.gate.clear()  # hold the writer inside its first sendall
    assert outbox.put(b"abcdef")
    sock.wait_calls(1)
    assert outbox.put(b"gh")  # the writer is busy: queued behind the remainder
    sock.gate.set()
    sock.wait_calls(2)
    # The writer offers each batch to the socket at once too, then waits for room.
    assert direct.tries == [b"abcdef", b"cdef", b"gh"]
    assert direct.written + b"".join(sock.calls) == b"abcdefgh"


def test_a_socket_that_would_block_leaves_everything_to_the_writer(sock, make_outbox):
    direct = NonBlockingSend(0, 0, 0)
    outbox = make_outbox(try_send=direct)
    sock.gate.clear()
    assert outbox.put(b"a")
    sock.wait_calls(1)
    assert outbox.socket_full  # the writer waits for the socket, not for the process
    assert outbox.put(b"b") and outbox.put(b"c")
    sock.gate.set()
    sock.wait_calls(2)
    assert direct.tries == [b"a", b"a", b"bc"]  # once directly, then once per writer batch
    assert sock.calls == [b"a", b"bc"]


def test_a_writer_batch_the_socket_takes_at_once_never_waits(sock, make_outbox):
    direct = NonBlockingSend(0)  # full for the first direct try only
    outbox = make_outbox(try_send=direct)
    assert outbox.put(b"a")
    assert outbox.close() and outbox.wait_closed(TIMEOUT)
    assert direct.written == b"a"
    assert sock.calls == []
    assert not outbox.socket_full


def test_queued_messages_wait_for_the_writer_and_batch(sock, make_outbox):
    direct = NonBlockingSend(0, 0, 0)  # the socket is full for the flusher and the writer
    outbox = make_outbox(try_send=direct)
    sock.gate.clear()
    assert outbox.put(b"a", direct=False)
    sock.wait_calls(1)
    assert outbox.put(b"b") and outbox.put(b"c", direct=False)  # busy writer: both queued
    sock.gate.set()
    sock.wait_calls(2)
    # The flusher's try, then the writer's own, one per batch: never a direct try while busy.
    assert direct.tries == [b"a", b"a", b"bc"]
    assert sock.calls == [b"a", b"bc"]


def test_an_idle_writer_retires_and_a_new_one_starts_for_new_work(sock, make_outbox, monkeypatch):
    monkeypatch.setattr("local_bridge.bus.outbox.WRITER_IDLE", 0.05)
    outbox = make_outbox()
    assert outbox.put(b"a")
    sock.wait_calls(1)
    first = outbox._writer
    assert first is not None and first.join(TIMEOUT)  # nothing more to do: it retires
    assert outbox._writer is None
    assert outbox.put(b"b")
    sock.wait_calls(2)
    assert sock.calls == [b"a", b"b"]
    outbox.close(b"BYE")
    assert outbox.wait_closed(TIMEOUT)
    assert sock.calls == [b"a", b"b", b"BYE"]


@pytest.mark.e2e  # a process of its own
def test_under_gevent_a_writer_starts_from_the_event_loop_without_waiting():
    """The loop reader answers pings from the event loop's own greenlet, where nothing may
    wait: starting a writer there must not block (threading.Thread.start would)."""
    out = run_under_gevent(
        "import gevent\n"
        "from local_bridge.bus.outbox import Outbox\n"
        "out = []\n"
        "box = Outbox(out.append, 10)\n"
        "gevent.get_hub().loop.run_callback(box.put, b'from the loop')\n"
        "gevent.sleep(0.1)\n"
        "box.close(b'bye')\n"
        "assert box.wait_closed(10)\n"
        "print(out)\n"
    )
    assert out.strip() == "[b'from the loop', b'bye']"


class HeldRunner:
    """Stands in for the outbox's writer runner: the writer starts only when released, as a
    greenlet does not run until its spawner yields."""

    made: list[HeldRunner] = []

    def __init__(self, target, name):
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        HeldRunner.made.append(self)

    def release(self) -> None:
        self._thread.start()

    def join(self, timeout):
        if not self._thread.is_alive() and self._thread.ident is None:
            self.release()
        self._thread.join(timeout)
        return not self._thread.is_alive()


@pytest.mark.parametrize("how", ["overflow", "close-discard"])
def test_discarding_keeps_the_rest_of_a_frame_already_begun(sock, make_outbox, monkeypatch, how):
    monkeypatch.setattr("local_bridge.bus.outbox._Runner", HeldRunner)
    HeldRunner.made.clear()
    direct = NonBlockingSend(2)  # the socket takes b"ab" of b"abcdef"
    outbox = make_outbox(limit=2, overflow_frame=b"CLOSE", try_send=direct)
    assert outbox.put(b"abcdef")  # the rest, b"cdef", waits for a writer not yet running
    assert outbox.put(b"gh")
    if how == "overflow":
        assert not outbox.put(b"ij")  # over the limit: the queue is discarded
        final = b"CLOSE"
    else:
        assert outbox.close(b"BYE", discard=True)
        final = b"BYE"
    HeldRunner.made[0].release()
    assert outbox.wait_closed(TIMEOUT)
    # The client reads whole frames: the begun one completed, then the final frame.
    assert direct.written + b"".join(sock.calls) == b"abcdef" + final
