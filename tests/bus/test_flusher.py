"""The flusher: one pass sends the frames a queued fan-out left in many outboxes, each outbox's
queue in one non-blocking send; a socket that cannot take it all goes to its writer."""

from __future__ import annotations

import threading

import pytest

from fake_send import NonBlockingSend
from local_bridge.bus.outbox import Outbox, _split_sent
from support import run_under_gevent

TIMEOUT = 10.0


@pytest.fixture
def outboxes():
    made: list[tuple[Outbox, NonBlockingSend]] = []

    def make(sock: NonBlockingSend, **kwargs) -> Outbox:
        kwargs.setdefault("limit", 100)
        outbox = Outbox(sock.sendall, try_send=sock.try_send, **kwargs)
        made.append((outbox, sock))
        return outbox

    yield make
    for outbox, sock in made:
        sock.release.set()
        outbox.close(discard=True)
        assert outbox.wait_closed(TIMEOUT)


def wait_for(predicate, what: str) -> None:
    done = threading.Event()
    for _ in range(int(TIMEOUT / 0.01)):
        if predicate():
            return
        done.wait(0.01)  # polling a counter another thread advances; bounded
    raise AssertionError(f"timed out waiting for {what}")


def test_what_piles_up_behind_a_pass_goes_out_in_one_send(outboxes):
    first_sock, later_sock = NonBlockingSend(hold=True), NonBlockingSend()
    first, later = outboxes(first_sock), outboxes(later_sock)
    assert first.put(b"1", direct=False)
    assert first_sock.entered.wait(TIMEOUT)  # the pass is busy with the first outbox
    for frame in (b"a", b"b", b"c"):
        assert later.put(frame, direct=False)
    assert later.depth == 3  # queued, waiting for the pass: no writer woken
    first_sock.release.set()
    wait_for(lambda: later.sent == 3, "the second outbox's frames")
    assert later_sock.tries == [b"abc"]  # three frames, one system call
    assert later_sock.sendalls == [] and later._writer is None  # no writer was needed
    assert (first.sent, later.depth) == (1, 0)


def test_what_the_socket_does_not_take_goes_to_the_writer_in_order(outboxes):
    first_sock, sock = (
        NonBlockingSend(hold=True),
        NonBlockingSend(3, 0),
    )  # takes b"abc" of b"abcdefgh", then full
    first, outbox = outboxes(first_sock), outboxes(sock)
    assert first.put(b"1", direct=False)
    assert first_sock.entered.wait(TIMEOUT)  # the pass is busy with the first outbox
    assert outbox.put(b"abcdef", direct=False) and outbox.put(b"gh", direct=False)
    first_sock.release.set()
    wait_for(lambda: outbox.sent == 2, "the writer to finish the rest")
    assert sock.tries == [b"abcdefgh", b"defgh"]  # the pass's try, then the writer's
    assert sock.sendalls == [b"defgh"]  # the writer waited for the socket with the rest
    assert sock.written == b"abcdefgh"


def test_closing_while_a_pass_is_due_leaves_it_all_to_the_writer(outboxes):
    first_sock, sock = NonBlockingSend(hold=True), NonBlockingSend()
    first, outbox = outboxes(first_sock), outboxes(sock)
    assert first.put(b"1", direct=False)
    assert first_sock.entered.wait(TIMEOUT)
    assert outbox.put(b"a", direct=False) and outbox.put(b"b", direct=False)
    assert outbox.close(b"BYE")
    assert outbox.wait_closed(TIMEOUT)
    first_sock.release.set()
    wait_for(lambda: first.sent == 1, "the pass")
    assert sock.written == b"abBYE"  # the queue, then the final frame, once
    assert outbox.sent == 2


def test_a_direct_put_never_overtakes_a_queue_waiting_for_the_pass(outboxes):
    first_sock, sock = NonBlockingSend(hold=True), NonBlockingSend()
    first, outbox = outboxes(first_sock), outboxes(sock)
    assert first.put(b"1", direct=False)
    assert first_sock.entered.wait(TIMEOUT)
    assert outbox.put(b"a", direct=False)
    assert outbox.put(b"b")  # direct, but something waits: queued behind it
    assert sock.tries == []
    first_sock.release.set()
    wait_for(lambda: outbox.sent == 2, "the pass")
    assert sock.tries == [b"ab"]


@pytest.mark.parametrize(
    ("taken", "done", "rest"),
    [
        (0, 0, [b"abc", b"de"]),
        (2, 0, [b"c", b"de"]),
        (3, 1, [b"de"]),
        (4, 1, [b"e"]),
    ],
)
def test_split_sent_counts_whole_messages_and_keeps_the_rest(taken, done, rest):
    assert _split_sent([b"abc", b"de"], taken) == (done, rest)


@pytest.mark.e2e  # a process of its own
def test_under_gevent_one_pass_serves_many_sockets_and_a_full_one_gets_a_writer():
    out = run_under_gevent(
        "import socket, gevent\n"
        "from local_bridge.bus.outbox import Outbox\n"
        "def outbox(sock):  # the OS socket's send never waits; gevent's sendall yields\n"
        "    raw = getattr(sock, '_sock', sock)\n"
        "    try_send = lambda data: raw.send(data, socket.MSG_DONTWAIT)\n"
        "    return Outbox(sock.sendall, 10_000, try_send=try_send)\n"
        "pairs = [socket.socketpair() for _ in range(20)]\n"
        "boxes = [outbox(a) for a, _ in pairs]\n"
        "big = b'x' * 65536\n"
        "for i in range(64):  # 4 MiB each: more than a socket buffer holds\n"
        "    for box in boxes:\n"
        "        assert box.put(big, direct=False)\n"
        "def drain(b):\n"
        "    got = 0\n"
        "    while got < 64 * 65536:\n"
        "        got += len(b.recv(1 << 20))\n"
        "    return got\n"
        "readers = [gevent.spawn(drain, b) for _, b in pairs]\n"
        "gevent.joinall(readers, timeout=30, raise_error=True)\n"
        "assert all(r.dead and r.value == 64 * 65536 for r in readers)\n"
        "print(sum(box.sent for box in boxes), sum(box.depth for box in boxes))\n"
    )
    assert out.split() == [str(20 * 64), "0"]


def test_a_queue_at_its_limit_behind_a_busy_flusher_goes_to_the_socket_not_to_4008(outboxes):
    """A batch of events fans out in one go, before the flusher can run: a client that reads
    keeps up, however many events the batch holds."""
    first_sock, sock = NonBlockingSend(hold=True), NonBlockingSend()
    first, outbox = outboxes(first_sock), outboxes(sock, limit=3)
    assert first.put(b"1", direct=False)
    assert first_sock.entered.wait(TIMEOUT)  # the pass is busy: nothing else is flushed
    frames = [bytes([ord("a") + i]) for i in range(10)]
    assert all(outbox.put(frame, direct=False) for frame in frames)
    assert not outbox.overflowed
    first_sock.release.set()
    wait_for(lambda: outbox.sent == 10, "the pass")
    assert sock.written == b"".join(frames)  # all of them, in order
    assert sock.tries == [b"abc", b"def", b"ghi", b"j"]  # whole queues, as they filled


def test_a_queue_at_its_limit_whose_socket_is_full_still_overflows(outboxes):
    overflowed = threading.Event()
    first_sock, sock = NonBlockingSend(hold=True), NonBlockingSend(0, 0, 0)
    first = outboxes(first_sock)
    outbox = outboxes(sock, limit=3, overflow_frame=b"BYE", on_overflow=overflowed.set)
    assert first.put(b"1", direct=False)
    assert first_sock.entered.wait(TIMEOUT)
    assert [outbox.put(f, direct=False) for f in (b"a", b"b", b"c", b"d")] == [
        True,
        True,
        True,
        False,  # the socket took nothing: a slow consumer
    ]
    assert overflowed.is_set() and outbox.overflowed
    first_sock.release.set()
