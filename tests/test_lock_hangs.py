"""Waits under the runtime's locks that must end.

1. A receive with a timeout keeps it while another thread of ours is
   blocked receiving on the same port. The runtime's receivers take turns
   (the port's receive lock), and the one whose turn it is sleeps in
   epoll_wait; a second receiver waits for the turn no longer than its
   timeout. XNU gives every waiter its own timeout: a receive that finds
   no message blocks on the port's wait queue until its own deadline, and
   with a timeout of 0 does not block at all; both are MACH_RCV_TIMED_OUT
   (ipc_mqueue_receive_on_thread_and_unlock, osfmk/ipc/ipc_mqueue.c:978
   and :1065 in xnu-11417.101.15).
2. A receive right moves with its whole queue, however large. In XNU the
   port itself goes in transit with its messages (ipc_right_copyin,
   MACH_MSG_TYPE_MOVE_RECEIVE, osfmk/ipc/ipc_right.c:2249): the size of
   the queue cannot make the move wait or fail. Here the messages the
   runtime already took off their connections travel in a sealed memfd
   (their fds in a carrier), so a queue larger than any socket buffer
   moves at once, to another process, by a send or by a port-destroyed
   notification; and a send of the right that fails leaves the queue as it
   was.
3. A fork child of a process whose other thread held one of the runtime's
   locks at the fork finds that lock free (the thread that held it did not
   follow the fork).

Every wait has a bound: a receive its timeout, a thread a join with a
bound, a fork child a bounded wait for its report (it is killed after).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pymach
import pymach.mach as M
from machutil import (MAKE_SEND, MAKE_SEND_ONCE, OK, PORT_RECEIVE, R_RECEIVE, PortMsgRcv, Space, T, TextRcv,
                      alloc_name, lookup_registered, register, send_port, send_text, start_watcher, status,
                      wait_blocked)
from procutil import POLLS, Doomed, InThread, thread_syscall
from pymach._linux import introspect as linux_introspect
from pymach._linux import ptrace
from pymach._kern import bootstrap_port, vm_remote
from pymach._kern.ipc_port import Port as KPort
from pymach._kern.task import SELF

JOIN_S = 10.0  # the bound on every wait for a thread, and for a fork child's report
WAIT_MS = 10_000
TIMED_OUT = M.MACH_RCV_TIMED_OUT
MOVE_RECEIVE = M.MACH_MSG_TYPE_MOVE_RECEIVE
FUTEX = 202  # x86_64: a thread waiting for a lock sleeps here


@pytest.fixture(scope="module", autouse=True)
def watcher_started() -> None:
    start_watcher()


@pytest.fixture
def space() -> Iterator[Space]:
    s = Space()
    yield s
    s.destroy_all()


Run = InThread


def wait_for_lock_wait(th: threading.Thread) -> None:
    """Until thread ``th`` sleeps waiting for a lock (a futex)."""
    deadline = time.monotonic() + JOIN_S
    while thread_syscall(th) != FUTEX:
        assert th.is_alive(), "the thread returned instead of waiting"
        assert time.monotonic() < deadline, f"the thread never waited for a lock (syscall {thread_syscall(th)})"
        time.sleep(0.005)


def send_right(space: Space) -> int:
    """A port of ours with a send right under the same name."""
    p = space.alloc()
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    return p


def c_receive(name: int, timeout_ms: int | None = None) -> Callable[[], tuple[int, bytes]]:
    """mach_msg(MACH_RCV_MSG), with MACH_RCV_TIMEOUT when ``timeout_ms`` is
    given: (kr, text)."""
    def fn() -> tuple[int, bytes]:
        r = TextRcv()
        opt = M.MACH_RCV_MSG | (M.MACH_RCV_TIMEOUT if timeout_ms is not None else 0)
        kr = M.mach_msg(r.header, opt, 0, ctypes.sizeof(r), name,
                        M.MACH_MSG_TIMEOUT_NONE if timeout_ms is None else timeout_ms, 0)
        return kr, r.text
    return fn


# -- 1. a receive's timeout covers its wait for the receive turn --------------------------------------

@pytest.mark.parametrize("timeout_ms", [0, 200])
def test_mach_msg_times_out_while_another_thread_receives_on_the_port(space: Space, timeout_ms: int) -> None:
    p = send_right(space)
    first = Run(c_receive(p))  # no timeout: it takes the turn and sleeps in epoll_wait
    wait_blocked(first.th)
    second = Run(c_receive(p, timeout_ms))
    assert second.result() == (TIMED_OUT, b"")
    assert send_text(p, b"wake") == OK
    assert first.result() == (OK, b"wake")


@pytest.mark.parametrize("timeout", [0, 0.2])
def test_port_receive_times_out_while_another_thread_receives_on_the_port(timeout: float) -> None:
    with pymach.Port() as p, p.make_send() as s:
        first = Run(p.receive)
        wait_blocked(first.th)

        def timed() -> object:
            try:
                return p.receive(timeout=timeout)
            except pymach.MachError as e:
                return e.kr
        assert Run(timed).result() == TIMED_OUT
        s.send(b"wake")
        m = first.result()
        assert isinstance(m, pymach.Message) and m.data == b"wake", m


def test_a_receive_waiting_for_the_turn_gets_a_message_within_its_timeout(space: Space) -> None:
    """The turn comes back before the timeout: the waiting receive takes it
    and gets the second message."""
    p = send_right(space)
    first = Run(c_receive(p))
    wait_blocked(first.th)
    second = Run(c_receive(p, WAIT_MS))
    wait_for_lock_wait(second.th)
    assert send_text(p, b"one") == OK
    assert send_text(p, b"two") == OK
    assert sorted([first.result(), second.result()]) == [(OK, b"one"), (OK, b"two")]  # type: ignore[type-var]


# -- 2. a receive right moves with a queue larger than a socket buffer --------------------------------

COUNT = 10
SIZE = 60_000  # ten of them: 600 KB, past the default socket buffer (212992 bytes)
FIRST_ID = 100


class Big(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t), ("data", ctypes.c_char * SIZE)]


class BigRcv(ctypes.Structure):
    _pack_ = 4
    _fields_ = Big._fields_ + [("trailer", M.mach_msg_trailer_t)]


def body(i: int) -> bytes:
    return bytes([0x41 + i]) * SIZE


def send_big(dest: int, i: int) -> int:
    """Message FIRST_ID + i to ``dest`` made with MAKE_SEND: a connection of
    its own, closed after the send."""
    m = Big()
    m.header.msgh_bits = M.MACH_MSGH_BITS(MAKE_SEND, 0)
    m.header.msgh_size = ctypes.sizeof(Big)
    m.header.msgh_remote_port = dest
    m.header.msgh_id = FIRST_ID + i
    m.data = body(i)
    return M.mach_msg(m.header, M.MACH_SEND_MSG | M.MACH_SEND_TIMEOUT, m.header.msgh_size, 0, 0, WAIT_MS, 0)


def recv_big(name: int, timeout_ms: int = WAIT_MS) -> tuple[int, int, bytes]:
    """(kr, msgh_id, body) of the next message on ``name``."""
    r = BigRcv()
    kr = M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), name, timeout_ms, 0)
    if kr != OK:
        return kr, 0, b""
    return kr, r.header.msgh_id, ctypes.string_at(ctypes.addressof(r) + Big.data.offset, SIZE)


def request(name: int, msgid: int, notify: int, sync: int = 0) -> None:
    prev = M.mach_port_t()
    assert M.mach_port_request_notification(T(), name, msgid, sync, notify, MAKE_SEND_ONCE, ctypes.byref(prev)) == OK


def queued_in_the_runtime(name: int) -> int:
    """Messages of our port ``name`` that the runtime took off their
    connections (the notification watcher drains a connection whose every
    sender closed while nobody received)."""
    e = SELF.space.lookup(name)
    assert e is not None and isinstance(e.object, KPort)
    return len(e.object.held)


def queue_held(a: int, count: int, space: Space | None = None) -> None:
    """Queue ``count`` messages of SIZE bytes on our port ``a`` that the
    runtime takes off their connections itself. With a no-senders request
    armed (sync 1: not fired at once, with no sender yet), every
    connection's close is watched, and one that closes with messages on
    it is drained into the port's queue; a send right made now stays, so
    that the request never fires."""
    notify = alloc_name(R_RECEIVE) if space is None else space.alloc()
    request(a, M.MACH_NOTIFY_NO_SENDERS, notify, 1)
    assert M.mach_port_insert_right(T(), a, a, MAKE_SEND) == OK
    for i in range(count):
        assert send_big(a, i) == OK
    deadline = time.monotonic() + JOIN_S
    while queued_in_the_runtime(a) < count:
        assert time.monotonic() < deadline, f"{queued_in_the_runtime(a)} of {count} messages drained"
        time.sleep(0.01)


def queue_and_move(how: str) -> int:
    """In a fork child: a port whose COUNT messages of SIZE bytes the runtime
    holds itself, its receive right sent to the parent's mailbox, either
    moved in a message or, destroyed with a port-destroyed request armed,
    by way of the notification. Returns the send's kr."""
    mailbox = lookup_registered()[0]
    a = alloc_name(R_RECEIVE)
    pd = 0
    if how == "port_destroyed":
        pd = alloc_name(R_RECEIVE)
        request(a, M.MACH_NOTIFY_PORT_DESTROYED, pd)
    queue_held(a, COUNT)
    if how == "port_destroyed":
        assert M.mach_port_destroy(T(), a) == OK  # the right goes to pd, with its queue
        n = (ctypes.c_char * 256)()
        hdr = M.mach_msg_header_t.from_buffer(n)
        assert M.mach_msg(hdr, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, 256, pd, WAIT_MS, 0) == OK
        assert hdr.msgh_id == M.MACH_NOTIFY_PORT_DESTROYED
        a = M.mach_port_destroyed_notification_t.from_buffer(n).not_port.name
        assert queued_in_the_runtime(a) == COUNT
    return send_port(mailbox, a, MOVE_RECEIVE)


@pytest.mark.parametrize("how", ["move_receive", "port_destroyed"])
def test_a_receive_right_moves_with_a_queue_larger_than_a_socket_buffer(space: Space, how: str) -> None:
    mailbox = send_right(space)
    assert register(mailbox) == OK
    try:
        with Doomed(lambda: queue_and_move(how)) as kid:
            assert kid.ready(JOIN_S) == OK
            r = PortMsgRcv()
            assert M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), mailbox,
                              WAIT_MS, 0) == OK
            assert r.port.disposition == PORT_RECEIVE
            a = space.keep(r.port.name)
            assert status(a).mps_msgcount == COUNT
            got = [recv_big(a) for _ in range(COUNT)]
            assert [(kr, msg_id) for kr, msg_id, _b in got] == [(OK, FIRST_ID + i) for i in range(COUNT)]
            assert all(b == body(i) for i, (_kr, _id, b) in enumerate(got))
            assert recv_big(a, 0)[0] == TIMED_OUT
            kid.kill()
    finally:
        assert register() == OK


def test_a_receive_right_whose_move_fails_keeps_its_queue(space: Space) -> None:
    """The message carrying the right waits for a place in a full queue,
    then fails (its destination is destroyed): the right stays with its
    queue, in order, and a thread that began to receive on it meanwhile
    (and found nothing: the queue was on its way) wakes and takes the
    first message. XNU gives the rights of a send that failed back to the
    sender, a receive right with its queue (mach_msg_receive_pseudo,
    osfmk/ipc/mach_msg.c:619 in xnu-11417.101.15)."""
    a = space.alloc()
    queue_held(a, 3, space)
    dest = send_right(space)
    for _ in range(5):  # MACH_PORT_QLIMIT_DEFAULT: the queue is full
        assert send_text(dest, b"fill") == OK
    mover = Run(lambda: send_port(dest, a, MOVE_RECEIVE))
    wait_blocked(mover.th)  # waiting for a place, the right copied in
    receiver = Run(lambda: recv_big(a))
    deadline = time.monotonic() + JOIN_S
    while receiver.th.is_alive() and thread_syscall(receiver.th) not in POLLS:
        assert time.monotonic() < deadline, "the receive neither returned nor waited"
        time.sleep(0.005)
    assert M.mach_port_destroy(T(), dest) == OK
    assert mover.result() == M.MACH_SEND_INVALID_DEST
    first = receiver.result()
    assert isinstance(first, tuple)
    got = [first] + [recv_big(a) for _ in range(2)]
    assert [(kr, msg_id) for kr, msg_id, _b in got] == [(OK, FIRST_ID + i) for i in range(3)]
    assert all(b == body(i) for i, (_kr, _id, b) in enumerate(got))
    assert recv_big(a, 0)[0] == TIMED_OUT


# -- 3. a fork child finds the locks that another thread held free ------------------------------------

class _StallAppend(list):  # type: ignore[type-arg]
    """A list whose append, called by ``thread`` in this process, waits
    (for ``go``) after saying so (``inside``): that thread stops inside
    the section that appends, with whatever lock guards it held."""

    def __init__(self, thread: threading.Thread) -> None:
        super().__init__()
        self.thread, self.pid = thread, os.getpid()
        self.inside, self.go = threading.Event(), threading.Event()

    def append(self, item: Any) -> None:
        if os.getpid() == self.pid and threading.current_thread() is self.thread:
            self.inside.set()
            self.go.wait(JOIN_S)
        super().append(item)


def _holding(lock: Any) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """A thread that holds ``lock`` until told to let go."""
    inside, go = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            inside.set()
            go.wait(JOIN_S)
    th = threading.Thread(target=hold, daemon=True)
    th.start()
    return th, inside, go


def _in_child_reply_port() -> bool:
    return bootstrap_port.reply_port() != 0


def _in_child_suspend(pid: int) -> list[int]:
    fd = os.pidfd_open(pid)
    try:
        vm_remote.task_suspend(pid, fd)
        counts = [vm_remote.suspend_count(pid, fd)]
        vm_remote.task_resume(pid, fd)
        return counts + [vm_remote.suspend_count(pid, fd)]
    finally:
        os.close(fd)


def _in_child_introspect() -> bool:
    return bool(linux_introspect.listener_fds())


@pytest.mark.parametrize("facility", ["reply_port", "task_suspend", "ptrace", "introspection"])
def test_a_fork_child_uses_what_another_thread_held_locked_at_the_fork(
        facility: str, monkeypatch: pytest.MonkeyPatch, sleeper: Any) -> None:
    fn: Callable[[], object]
    expected: object = True
    if facility == "reply_port":
        # another thread inside reply_port(), adding its new port to the list of reply ports
        stall: _StallAppend | None = None

        def make_reply_port() -> None:
            name = bootstrap_port.reply_port()
            bootstrap_port.discard_reply_port(name)
        th = threading.Thread(target=make_reply_port, daemon=True)
        stall = _StallAppend(th)
        monkeypatch.setattr(bootstrap_port, "_REPLIES", stall)
        th.start()
        inside, go = stall.inside, stall.go
        fn = _in_child_reply_port
    elif facility == "task_suspend":
        th, inside, go = _holding(vm_remote._suspend_lock)  # pylint: disable=protected-access
        fn, expected = (lambda: _in_child_suspend(sleeper.pid)), [1, 0]
    elif facility == "ptrace":
        th, inside, go = _holding(ptrace._lock)  # pylint: disable=protected-access
        fn, expected = ptrace.release_stragglers, 0
    else:
        assert linux_introspect.listener_fds(), "this process does not serve introspection"
        th, inside, go = _holding(linux_introspect._lock)  # pylint: disable=protected-access
        fn = _in_child_introspect
    try:
        assert inside.wait(JOIN_S)
        with Doomed(fn) as kid:
            assert kid.ready(JOIN_S) == expected
            kid.kill()
    finally:
        go.set()
        th.join(JOIN_S)
    assert not th.is_alive()
