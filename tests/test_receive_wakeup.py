"""A receive blocked on a port or port set wakes when the port or set goes.

XNU clears a receive right (destroyed, or moved away in a message) with
ipc_port_clear_receiver (osfmk/ipc/ipc_port.c:731 in xnu-11417.101.15),
which wakes the threads blocked on its queue with THREAD_RESTART
(ipc_mqueue_changed, osfmk/ipc/ipc_mqueue.c:434). ipc_mqueue_receive_results
turns that into MACH_RCV_PORT_CHANGED (ipc_mqueue.c:863), as it does for a
receive that finds its port or set already gone (ipc_mqueue.c:1049) and for
a destroyed port set (ipc_pset.c:231). (message.h still calls that code
"no longer a returned error"; the code above returns it, and no path of
XNU's returns MACH_RCV_PORT_DIED.) A later receive on the name, which no
longer denotes a receive right or set, is MACH_RCV_INVALID_NAME. Taking a
port out of a set wakes nobody: a receiver on the set keeps waiting for
the other members, and finds messages that wait on them.

Every receive runs in a daemon thread and is joined with a bound: one that
never wakes fails the test (and the interpreter does not wait for it)."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import pymach
import pymach.mach as M
from pymach import Port, PortSet
from pymach._kern.ipc_port import Port as KPort
from pymach._kern.task import SELF
from machutil import (OK, R_RECEIVE, MAKE_SEND, PORT_RECEIVE, PortMsgRcv, Space, T, TextRcv, alloc_name,
                      lookup_registered, register, send_port, send_text, start_watcher, type_kr)
from procutil import POLLS, InThread, forked, thread_syscall

CHANGED = M.MACH_RCV_PORT_CHANGED
INVALID_NAME = M.MACH_RCV_INVALID_NAME
MOVE_RECEIVE = M.MACH_MSG_TYPE_MOVE_RECEIVE
JOIN_S = 10.0  # the bound on every wait for a thread
WAIT_MS = 10_000
LONG_MS = 600_000  # a receive timeout far beyond the test

# x86_64: futex, where a thread waiting for a lock sleeps (POLLS, the
# waits a receive sleeps in, is in procutil)
FUTEX = frozenset({202})


@pytest.fixture(scope="module", autouse=True)
def watcher_started() -> None:
    start_watcher()


@pytest.fixture
def space() -> Iterator[Space]:
    s = Space()
    yield s
    s.destroy_all()


def _in_function(th: threading.Thread, name: str) -> bool:
    frame = sys._current_frames().get(th.ident or 0)  # pylint: disable=protected-access
    while frame is not None:
        if frame.f_code.co_name == name:
            return True
        frame = frame.f_back
    return False


class Blocked(InThread):
    """``fn()`` in a daemon thread, returned once the thread sleeps in one
    of ``calls`` (inside ``within``, when given; at once for None).
    ``result()`` joins it with a bound and returns what ``fn`` returned (or
    raised)."""

    def __init__(self, fn: Callable[[], object], calls: frozenset[int] | None = POLLS,
                 within: str | None = None) -> None:
        super().__init__(fn)
        if calls is not None:
            self.wait(calls, within)

    def wait(self, calls: frozenset[int], within: str | None = None) -> None:
        """Until the thread sleeps in one of ``calls`` (inside ``within``)."""
        deadline = time.monotonic() + JOIN_S
        while not (thread_syscall(self.th) in calls and (within is None or _in_function(self.th, within))):
            assert self.th.is_alive(), f"the receive returned: {self.out}"
            assert time.monotonic() < deadline, f"the receive never blocked there (syscall {thread_syscall(self.th)})"
            time.sleep(0.005)


# -- the two layers' receives ----------------------------------------------------------------------

def py_receive(r: pymach.Port | pymach.PortSet, timeout: float | None = None) -> Callable[[], object]:
    """Port.receive / PortSet.receive: the Message, or the MachError's code."""
    def fn() -> object:
        try:
            return r.receive(timeout)
        except pymach.MachError as e:
            return e.kr
    return fn


def c_receive(name: int, timeout_ms: int | None = None) -> Callable[[], object]:
    """mach_msg(MACH_RCV_MSG): (kr, text, msgh_local_port)."""
    def fn() -> object:
        r = TextRcv()
        opt = M.MACH_RCV_MSG | (M.MACH_RCV_TIMEOUT if timeout_ms is not None else 0)
        kr = M.mach_msg(r.header, opt, 0, ctypes.sizeof(r), name,
                        M.MACH_MSG_TIMEOUT_NONE if timeout_ms is None else timeout_ms, 0)
        return kr, r.text, r.header.msgh_local_port
    return fn


def c_kr(out: object) -> int:
    assert isinstance(out, tuple), out
    return int(out[0])


def recv_text(name: int, timeout_ms: int = WAIT_MS) -> tuple[int, bytes, int]:
    out = c_receive(name, timeout_ms)()
    assert isinstance(out, tuple)
    return out


def send_right(space: Space) -> int:
    """A port of ours with a send right under the same name."""
    p = space.alloc()
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    return p


def kp_of(name: int) -> KPort:
    """The runtime's port behind a receive right of ours."""
    e = SELF.space.lookup(name)
    assert e is not None and isinstance(e.object, KPort)
    return e.object


# -- pymach.Port -------------------------------------------------------------------------------------

@pytest.mark.parametrize("timeout", [None, LONG_MS / 1000], ids=["no-timeout", "long-timeout"])
def test_port_close_wakes_its_receiver(timeout: float | None) -> None:
    p = Port()
    name = p.name
    rx = Blocked(py_receive(p, timeout))
    p.close()
    assert rx.result() == CHANGED
    assert recv_text(name, 0)[0] == INVALID_NAME


def test_port_close_wakes_every_receiver() -> None:
    """One receiver sleeps in the poll; the other waits for its turn (the
    port's receive lock). Both wake."""
    p = Port()
    first = Blocked(py_receive(p))
    second = Blocked(py_receive(p), FUTEX, within="dequeue")
    p.close()
    assert first.result() == CHANGED
    assert second.result() == CHANGED


def test_port_close_wakes_its_receiver_with_a_send_right_and_queued_rights() -> None:
    """Senders see a dead name; the messages still queued (here, carrying
    send rights) are destroyed with their fds; the receiver wakes."""
    with Port() as other, other.make_send() as to_other:
        p = Port()
        s = p.make_send()
        rx = Blocked(py_receive(p))
        p.close()
        assert rx.result() == CHANGED
        with pytest.raises(pymach.MachError) as e:
            s.send(b"late")
        assert e.value.kr in (M.MACH_SEND_INVALID_DEST, M.KERN_INVALID_NAME)
        s.close()
        # a port nobody receives on, its queue holding rights, destroyed
        q = Port()
        to_q = q.make_send()
        for _ in range(3):
            to_q.send(pymach.Message(b"carry", rights=[to_other]))
        q.close()
        to_q.close()


# -- pymach.PortSet ------------------------------------------------------------------------------------

def test_port_set_close_wakes_its_receiver() -> None:
    with Port() as a:
        ps = PortSet([a])
        name = ps.name
        rx = Blocked(py_receive(ps))
        ps.close()
        assert rx.result() == CHANGED
        assert recv_text(name, 0)[0] == INVALID_NAME


@pytest.mark.parametrize("how", ["remove", "close"])
def test_a_port_leaving_a_set_does_not_strand_its_receiver(how: str) -> None:
    """The set's receiver keeps waiting for the other members; a message to
    the port that left is not the set's."""
    with Port() as a, Port() as b, PortSet([a, b]) as ps, b.make_send() as to_b:
        to_a = a.make_send()
        rx = Blocked(py_receive(ps))
        if how == "remove":
            ps.remove(a)
            to_a.send(b"to a")
        else:
            a.close()
        to_b.send(b"to b")
        m = rx.result()
        assert isinstance(m, pymach.Message), m
        assert m.data == b"to b"
        if how == "remove":
            assert a.receive(timeout=0).data == b"to a"
        to_a.close()


def test_port_close_wakes_its_own_receiver_not_the_sets() -> None:
    """A thread on the port and one on a set holding it: closing the port
    wakes the first (MACH_RCV_PORT_CHANGED); the second waits on."""
    with Port() as b, b.make_send() as to_b:
        a = Port()
        with PortSet([a, b]) as ps:
            on_set = Blocked(py_receive(ps))
            on_port = Blocked(py_receive(a))
            a.close()
            assert on_port.result() == CHANGED
            to_b.send(b"still here")
            m = on_set.result()
            assert isinstance(m, pymach.Message) and m.data == b"still here"


def test_a_set_receiver_does_not_wait_for_a_thread_blocked_on_a_member() -> None:
    """A thread receiving on a member directly keeps the member's turn while
    it sleeps, and may take it again before the set's receiver, woken by
    the same message, gets it. Here the test holds the turn as that thread
    would, asleep, with a message left on the member: the set's receiver
    does not wait for it for ever, and a message to another member reaches
    it."""
    with Port() as a, Port() as b, PortSet([a, b]) as ps, a.make_send() as to_a, b.make_send() as to_b:
        kp = kp_of(a.name)
        assert kp.rcv_lock.acquire(timeout=JOIN_S)
        kp.sleeping = True
        try:
            rx = Blocked(py_receive(ps))
            to_a.send(b"to a")
            rx.wait(FUTEX, within="dequeue")  # woken by a's message, waiting for a's turn
            to_b.send(b"to b")
            m = rx.result()
            assert isinstance(m, pymach.Message) and m.data == b"to b", m
        finally:
            kp.sleeping = False
            kp.rcv_lock.release()
        assert a.receive(timeout=0).data == b"to a"


# -- pymach.mach: mach_msg and the mach_port_* routines ---------------------------------------------------

@pytest.mark.parametrize("timeout_ms", [None, LONG_MS], ids=["MACH_MSG_TIMEOUT_NONE", "long-timeout"])
@pytest.mark.parametrize("how", ["destroy", "mod_refs", "destruct"])
def test_mach_msg_wakes_when_its_receive_right_is_destroyed(space: Space, how: str, timeout_ms: int | None) -> None:
    p = send_right(space)  # the name stays as a dead name after mod_refs and destruct
    rx = Blocked(c_receive(p, timeout_ms))
    if how == "destroy":
        assert M.mach_port_destroy(T(), p) == OK
    elif how == "mod_refs":
        assert M.mach_port_mod_refs(T(), p, R_RECEIVE, -1) == OK
    else:
        assert M.mach_port_destruct(T(), p, 0, 0) == OK
    assert c_kr(rx.result()) == CHANGED
    assert recv_text(p, 0)[0] == INVALID_NAME
    assert send_text(p, b"late") == M.MACH_SEND_INVALID_DEST


def test_mach_msg_wakes_when_its_receive_right_moves_away(space: Space) -> None:
    """MOVE_RECEIVE in a message (here to another port of ours): the old
    name's receiver wakes; the right, received under a new name, gets what
    is sent to the send right that stayed behind."""
    p = send_right(space)
    box = space.alloc()
    assert M.mach_port_insert_right(T(), box, box, MAKE_SEND) == OK
    rx = Blocked(c_receive(p))
    assert send_port(box, p, MOVE_RECEIVE) == OK
    assert c_kr(rx.result()) == CHANGED
    assert type_kr(p)[1] == M.MACH_PORT_TYPE_SEND
    m = PortMsgRcv()
    assert M.mach_msg(m.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(m), box, WAIT_MS, 0) == OK
    assert m.port.disposition == PORT_RECEIVE
    q = space.keep(m.port.name)
    assert send_text(p, b"after") == OK
    kr, text, local = recv_text(q)
    assert (kr, text, local) == (OK, b"after", q)


def test_mach_msg_wakes_when_port_destroyed_sends_the_right_away(space: Space) -> None:
    """mach_port_destroy with a port-destroyed request armed: the right
    travels to the notify port instead, and the receiver wakes."""
    p = space.alloc()
    notify = space.alloc()
    prev = M.mach_port_t()
    assert M.mach_port_request_notification(T(), p, M.MACH_NOTIFY_PORT_DESTROYED, 0, notify,
                                            M.MACH_MSG_TYPE_MAKE_SEND_ONCE, ctypes.byref(prev)) == OK
    rx = Blocked(c_receive(p))
    assert M.mach_port_destroy(T(), p) == OK
    assert c_kr(rx.result()) == CHANGED
    n = (ctypes.c_char * 256)()
    hdr = M.mach_msg_header_t.from_buffer(n)
    assert M.mach_msg(hdr, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, 256, notify, WAIT_MS, 0) == OK
    assert hdr.msgh_id == M.MACH_NOTIFY_PORT_DESTROYED
    d = M.mach_port_destroyed_notification_t.from_buffer(n)
    space.keep(d.not_port.name)


@pytest.mark.parametrize("how", ["mach_port_destroy", "mach_port_deallocate", "mach_port_mod_refs"])
def test_mach_msg_on_a_set_wakes_when_the_set_is_destroyed(space: Space, how: str) -> None:
    s = space.alloc(M.MACH_PORT_RIGHT_PORT_SET)
    a = space.alloc()
    assert M.mach_port_insert_member(T(), a, s) == OK
    rx = Blocked(c_receive(s))
    if how == "mach_port_destroy":
        assert M.mach_port_destroy(T(), s) == OK
    elif how == "mach_port_deallocate":
        assert M.mach_port_deallocate(T(), s) == OK
    else:
        assert M.mach_port_mod_refs(T(), s, M.MACH_PORT_RIGHT_PORT_SET, -1) == OK
    assert c_kr(rx.result()) == CHANGED
    assert recv_text(s, 0)[0] == INVALID_NAME
    assert type_kr(a)[1] == M.MACH_PORT_TYPE_RECEIVE  # the member lives on


@pytest.mark.parametrize("how", ["move_member_null", "move_member_other", "extract_member", "destroy_member",
                                 "move_receive"])
def test_mach_msg_on_a_set_waits_on_when_a_member_leaves(space: Space, how: str) -> None:
    s = space.alloc(M.MACH_PORT_RIGHT_PORT_SET)
    a = send_right(space)
    b = send_right(space)
    for m in (a, b):
        assert M.mach_port_insert_member(T(), m, s) == OK
    rx = Blocked(c_receive(s))
    if how == "move_member_null":
        assert M.mach_port_move_member(T(), a, M.MACH_PORT_NULL) == OK
    elif how == "move_member_other":
        assert M.mach_port_move_member(T(), a, space.alloc(M.MACH_PORT_RIGHT_PORT_SET)) == OK
    elif how == "extract_member":
        assert M.mach_port_extract_member(T(), a, s) == OK
    elif how == "destroy_member":
        assert M.mach_port_mod_refs(T(), a, R_RECEIVE, -1) == OK
    else:
        box = send_right(space)
        assert send_port(box, a, MOVE_RECEIVE) == OK
    if how != "destroy_member":
        assert send_text(a, b"to a") == OK  # not the set's any more
    assert send_text(b, b"to b") == OK
    out = rx.result()
    assert out == (OK, b"to b", b), out
    if how in ("move_member_null", "move_member_other", "extract_member"):
        assert recv_text(a, 0)[:2] == (OK, b"to a")


@pytest.mark.parametrize("layer", ["pymach", "mach_msg"])
def test_a_set_receive_after_too_large_gets_the_message_it_left(space: Space, layer: str) -> None:
    """MACH_RCV_LARGE leaves a message too large for the buffer queued; the
    next receive on the set, blocked until then, gets it."""
    if layer == "pymach":
        with Port() as a, PortSet([a]) as ps, a.make_send() as to_a:
            to_a.send(b"x" * 5000)
            with pytest.raises(pymach.MachError) as e:
                ps.receive(timeout=WAIT_MS / 1000, max_size=100)
            assert e.value.kr == M.MACH_RCV_TOO_LARGE
            rx = Blocked(py_receive(ps), None)
            m = rx.result()
            assert isinstance(m, pymach.Message) and m.data == b"x" * 5000, m
        return
    s = space.alloc(M.MACH_PORT_RIGHT_PORT_SET)
    member = send_right(space)
    assert M.mach_port_insert_member(T(), member, s) == OK
    assert send_text(member, b"big") == OK
    hdr = M.mach_msg_header_t()
    kr = M.mach_msg(hdr, M.MACH_RCV_MSG | M.MACH_RCV_LARGE | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(hdr), s,
                    WAIT_MS, 0)
    assert kr == M.MACH_RCV_TOO_LARGE
    rx = Blocked(c_receive(s), None)
    assert rx.result() == (OK, b"big", member)


def test_a_set_receive_gets_what_the_watcher_took_off_a_closed_connection(space: Space) -> None:
    """With no-senders armed, the watcher thread reads what a closed
    connection still held into the port's queue (then sends no-senders).
    A receive on a set holding the port, made after that, gets it."""
    s = space.alloc(M.MACH_PORT_RIGHT_PORT_SET)
    a = send_right(space)
    notify = space.alloc()
    assert M.mach_port_insert_member(T(), a, s) == OK
    prev = M.mach_port_t()
    assert M.mach_port_request_notification(T(), a, M.MACH_NOTIFY_NO_SENDERS, 1, notify,
                                            M.MACH_MSG_TYPE_MAKE_SEND_ONCE, ctypes.byref(prev)) == OK
    assert send_text(a, b"last") == OK
    assert M.mach_port_deallocate(T(), a) == OK  # the last send right: its connection closes
    n = (ctypes.c_char * 256)()
    hdr = M.mach_msg_header_t.from_buffer(n)
    assert M.mach_msg(hdr, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, 256, notify, WAIT_MS, 0) == OK
    assert hdr.msgh_id == M.MACH_NOTIFY_NO_SENDERS  # sent after the message was taken off
    rx = Blocked(c_receive(s), None)
    assert rx.result() == (OK, b"last", a)


# -- a receive right moved to a fork child ---------------------------------------------------------------

@pytest.mark.parametrize("layer", ["pymach", "mach_msg"])
def test_receive_right_moved_to_a_fork_child_wakes_the_parents_receiver(space: Space, layer: str) -> None:
    """A thread of ours is blocked on the port when the process forks and
    when the right leaves for the child in a message. The thread wakes; the
    child (whose copy of our epoll set was closed at the fork) receives
    what was queued for the port meanwhile."""
    box = space.alloc()  # the child's port comes back here
    assert M.mach_port_insert_right(T(), box, box, MAKE_SEND) == OK
    assert register(box) == OK
    try:
        p = Port() if layer == "pymach" else None
        name = p.name if p is not None else send_right(space)
        if p is not None:
            p.make_send()  # under the same name: it stays when the receive right goes
        kp = kp_of(name)
        ep_fd = kp.ep.fileno()
        ep_ino = os.fstat(ep_fd).st_ino
        rx = Blocked(py_receive(p) if p is not None else c_receive(name))

        def child(sync: Callable[[], None]) -> list[bytes]:
            try:
                inherited = os.fstat(ep_fd).st_ino
            except OSError:
                inherited = -1
            assert inherited != ep_ino, "the fork child still holds the parent's epoll set of the port"
            mb = lookup_registered()[0]
            c = alloc_name(R_RECEIVE)
            assert send_port(mb, c, MAKE_SEND) == OK
            m = PortMsgRcv()
            assert M.mach_msg(m.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(m), c,
                              WAIT_MS, 0) == OK
            assert m.port.disposition == PORT_RECEIVE
            moved = m.port.name
            sync()  # the parent has queued its messages
            got = []
            for _ in range(2):
                kr, text, local = recv_text(moved)
                assert (kr, local) == (OK, moved)
                got.append(text)
            return got

        fk = forked(child)
        with fk as sync:
            m = PortMsgRcv()
            assert M.mach_msg(m.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(m), box,
                              WAIT_MS, 0) == OK
            to_child = space.keep(m.port.name)
            assert send_port(to_child, name, MOVE_RECEIVE) == OK
            out = rx.result()
            assert (out if p is not None else c_kr(out)) == CHANGED
            assert type_kr(name)[1] == M.MACH_PORT_TYPE_SEND  # our send right stays
            assert send_text(name, b"one") == OK
            assert send_text(name, b"two") == OK
            sync()
        assert fk.result == [b"one", b"two"]
        assert M.mach_port_deallocate(T(), name) == OK
    finally:
        assert register() == OK


# -- what the last receiver out closes ------------------------------------------------------------------

def test_a_fork_child_closes_the_fds_of_a_port_whose_receiver_has_not_left() -> None:
    p = Port()
    kp = kp_of(p.name)
    assert kp.rcv_lock.acquire(timeout=JOIN_S)  # as a receiver inside dequeue()
    try:
        p.close()
        assert not kp.ep.closed and kp.wake >= 0
        fds = (kp.ep.fileno(), kp.wake)
        inos = tuple(os.fstat(fd).st_ino for fd in fds)

        def child(_sync: Callable[[], None]) -> bool:
            for fd, ino in zip(fds, inos):
                try:
                    if os.fstat(fd).st_ino == ino:
                        return False
                except OSError:
                    pass
            return True

        fk = forked(child)
        with fk:
            pass
        assert fk.result is True
    finally:
        kp._rcv_release()  # pylint: disable=protected-access
    assert kp.ep.closed and kp.wake == -1
