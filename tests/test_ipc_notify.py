"""Mach notifications as XNU defines them (osfmk/mach/notify.h), each one
received with mach_msg and checked field by field: msgh_id, the name or
make-send count in the body, msgh_bits, msgh_size, and the trailer's
security token, which is the kernel's {0, 1} (KERNEL_SECURITY_TOKEN).

The facts behind them are real: a forked child killed with SIGKILL, a port
destroyed in another process, a send right released. Rights reach a child
as registered ports (inherited at fork) and through messages; a child that
is to be killed waits in ``Doomed`` and is always reaped.

No test sleeps to let things settle. A notification is waited for with a
receive timeout of a few seconds, an upper bound only. Where a test checks
that a notification has *not* (yet) been sent, it first receives on the
port whose senders are watched (``settle``): that receive reads and
accounts for every connection close already visible, so a notification due
to those closes would already be queued.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator

import pytest

import pymach.mach as M
from pymach.mach import byref
from procutil import Doomed, forked
from machutil import (Space, start_watcher, expect_nothing_more, T, OK, NULL, R_RECEIVE, TY_SEND, TY_RECEIVE, TY_SEND_ONCE, TY_DEAD_NAME, MAKE_SEND,
                      MAKE_SEND_ONCE, PORT_RECEIVE, PORT_SEND, PORT_SEND_ONCE, alloc_name, type_kr, type_of,
                      status, request, register, lookup_registered, TextRcv, PortMsgRcv, send_text,
                      send_port)


R_SEND = M.MACH_PORT_RIGHT_SEND
R_DEAD_NAME = M.MACH_PORT_RIGHT_DEAD_NAME

TY_SEND_RECEIVE = M.MACH_PORT_TYPE_SEND_RECEIVE
TY_DNREQUEST = M.MACH_PORT_TYPE_DNREQUEST


# notify.h, in octal there
PORT_DELETED, PORT_DESTROYED, NO_SENDERS, SEND_ONCE, DEAD_NAME = 0x41, 0x45, 0x46, 0x47, 0x48

WAIT_MS = 3000  # the upper bound on the wait for a notification that is due
NDR = bytes([0, 0, 0, 0, 1, 0, 0, 0])  # NDR_record: mig/if versions 0, little-endian ints


def test_notification_ids_are_xnus() -> None:
    assert (M.MACH_NOTIFY_PORT_DELETED, M.MACH_NOTIFY_PORT_DESTROYED, M.MACH_NOTIFY_NO_SENDERS,
            M.MACH_NOTIFY_SEND_ONCE, M.MACH_NOTIFY_DEAD_NAME) == (
        PORT_DELETED, PORT_DESTROYED, NO_SENDERS, SEND_ONCE, DEAD_NAME)
    # the structs as they are received, with a format-0 (security) trailer
    assert [ctypes.sizeof(s) for s in (
        M.mach_port_deleted_notification_t, M.mach_dead_name_notification_t,
        M.mach_no_senders_notification_t, M.mach_send_once_notification_t,
        M.mach_port_destroyed_notification_t)] == [36 + 20, 36 + 20, 36 + 20, 24 + 20, 40 + 20]


# -- the names a test makes ---------------------------------------------------------------------

@pytest.fixture
def space() -> Iterator[Space]:
    s = Space()
    yield s
    s.destroy_all()


@pytest.fixture(scope="module", autouse=True)
def watcher_started() -> None:
    start_watcher()


# -- helpers ------------------------------------------------------------------------------------


def refs(name: int, right: int) -> int:
    r = M.mach_port_urefs_t(0xBAD)
    kr = M.mach_port_get_refs(T(), name, right, byref(r))
    assert kr == OK, f"mach_port_get_refs({name:#x}, {right}) = {kr:#x}"
    return r.value


@contextlib.contextmanager
def mailbox(space: Space) -> Iterator[int]:
    """A port of ours whose send right is registered: a fork child finds it
    with mach_ports_lookup and sends us its rights there."""
    mb = space.alloc()
    assert M.mach_port_insert_right(T(), mb, mb, MAKE_SEND) == OK
    assert register(mb) == OK
    assert M.mach_port_deallocate(T(), mb) == OK  # the registered copy is enough
    try:
        yield mb
    finally:
        assert register() == OK


def recv_text(name: int, timeout: int = WAIT_MS) -> tuple[int, TextRcv]:
    r = TextRcv()
    opt = M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT | M.MACH_RCV_TRAILER_ELEMENTS(M.MACH_RCV_TRAILER_CTX)
    return M.mach_msg(r.header, opt, 0, ctypes.sizeof(r), name, timeout, 0), r


def recv_port(name: int, timeout: int = WAIT_MS) -> tuple[int, PortMsgRcv]:
    r = PortMsgRcv()
    return M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), name, timeout, 0), r


def receive_a_port_right(mb: int, disposition: int = PORT_SEND) -> int:
    """The name of the right a child sent to our mailbox."""
    kr, m = recv_port(mb)
    assert kr == OK, f"no right from the child: {kr:#x}"
    assert m.port.disposition == disposition
    return m.port.name


class Notification(ctypes.Union):
    """Room for any notification, received with a format-0 trailer."""

    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t),
                ("deleted", M.mach_port_deleted_notification_t),
                ("dead_name", M.mach_dead_name_notification_t),
                ("no_senders", M.mach_no_senders_notification_t),
                ("send_once", M.mach_send_once_notification_t),
                ("destroyed", M.mach_port_destroyed_notification_t),
                ("room", ctypes.c_char * 256)]


def recv_notification(notify: int, timeout: int = WAIT_MS) -> tuple[int, Notification]:
    n = Notification()
    opt = M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT | M.MACH_RCV_TRAILER_ELEMENTS(M.MACH_RCV_TRAILER_SENDER)
    return M.mach_msg(n.header, opt, 0, ctypes.sizeof(n), notify, timeout, 0), n


def check_from_the_kernel(n: Notification, notify: int, msg_id: int, size: int, complex_: bool = False) -> None:
    """The header and trailer every notification has: sent by the kernel to
    the notify port's send-once right, no reply port, the security trailer
    right after msgh_size carrying KERNEL_SECURITY_TOKEN {0, 1}."""
    h = n.header
    assert h.msgh_id == msg_id, f"msgh_id {h.msgh_id:#x}, expected {msg_id:#x}"
    assert h.msgh_size == size
    assert h.msgh_bits == M.MACH_MSGH_BITS(0, PORT_SEND_ONCE) | (M.MACH_MSGH_BITS_COMPLEX if complex_ else 0)
    assert (h.msgh_remote_port, h.msgh_local_port, h.msgh_voucher_port) == (NULL, notify, 0)
    trailer = M.mach_msg_security_trailer_t.from_buffer_copy(ctypes.string_at(ctypes.addressof(n) + size, 20))
    assert trailer.msgh_trailer_type == M.MACH_MSG_TRAILER_FORMAT_0
    assert trailer.msgh_trailer_size == 20
    assert list(trailer.msgh_sender.val) == [0, 1]


def expect_name_notification(notify: int, msg_id: int, name: int) -> None:
    """A dead-name or port-deleted notification for ``name`` arrives."""
    kr, n = recv_notification(notify)
    assert kr == OK, f"no notification {msg_id:#x} within {WAIT_MS} ms: {kr:#x}"
    check_from_the_kernel(n, notify, msg_id, 36)
    body = n.dead_name if msg_id == DEAD_NAME else n.deleted
    assert bytes(body.NDR) == NDR
    assert body.not_port == name
    # the struct's own trailer field sits where the trailer was written
    assert list(body.trailer.msgh_sender.val) == [0, 1]


def expect_no_senders(notify: int, mscount: int, timeout: int = WAIT_MS) -> None:
    kr, n = recv_notification(notify, timeout)
    assert kr == OK, f"no no-senders notification within {WAIT_MS} ms: {kr:#x}"
    check_from_the_kernel(n, notify, NO_SENDERS, 36)
    assert bytes(n.no_senders.NDR) == NDR
    assert n.no_senders.not_count == mscount
    assert list(n.no_senders.trailer.msgh_sender.val) == [0, 1]


def expect_send_once(notify: int) -> None:
    kr, n = recv_notification(notify)
    assert kr == OK, f"no send-once notification within {WAIT_MS} ms: {kr:#x}"
    check_from_the_kernel(n, notify, SEND_ONCE, 24)
    assert list(n.send_once.trailer.msgh_sender.val) == [0, 1]


def expect_nothing(notify: int) -> None:
    """Nothing more arrives, a late duplicate included (machutil's fence)."""
    expect_nothing_more(notify)


def settle(port: int) -> None:
    """Receive on ``port`` (whose receive right we hold and whose queue is
    empty) without waiting: the closes of its connections that are already
    visible are read and accounted for on the way."""
    kr, _r = recv_text(port, timeout=0)
    assert kr == M.MACH_RCV_TIMED_OUT


def child_gives_a_port(disposition: int = MAKE_SEND) -> int:
    """In a child: a new port, whose ``disposition`` right goes to the
    parent's mailbox. Returns the port's name."""
    mb = lookup_registered()[0]
    assert M.MACH_PORT_VALID(mb)
    c = alloc_name(R_RECEIVE)
    assert send_port(mb, c, disposition) == OK
    return c


# -- 1. dead-name ----------------------------------------------------------------------------------

def test_dead_name_when_the_receiver_is_sigkilled(space: Space) -> None:
    notify = space.alloc()
    with mailbox(space) as mb, Doomed(child_gives_a_port) as child:
        child.ready()
        name = space.keep(receive_a_port_right(mb))
        assert M.mach_port_mod_refs(T(), name, R_SEND, 1) == OK
        assert type_of(name) == TY_SEND and refs(name, R_SEND) == 2
        assert request(name, DEAD_NAME, 0, notify) == (OK, NULL)
        assert type_of(name) == TY_SEND | TY_DNREQUEST
        assert send_text(name, b"alive") == OK  # the port lives until the kill
        expect_nothing(notify)
        child.kill()
        expect_name_notification(notify, DEAD_NAME, name)
    # the request held a user reference: the dead name has one more than the send right had
    assert type_of(name) == TY_DEAD_NAME
    assert refs(name, R_DEAD_NAME) == 3 and refs(name, R_SEND) == 0
    assert send_text(name, b"gone") == M.MACH_SEND_INVALID_DEST
    expect_nothing(notify)  # one request, one notification
    for left in (2, 1):
        assert M.mach_port_deallocate(T(), name) == OK and refs(name, R_DEAD_NAME) == left
    assert M.mach_port_deallocate(T(), name) == OK
    assert type_kr(name)[0] == M.KERN_INVALID_NAME


def test_dead_name_when_the_receiver_destroys_its_port_and_exits(space: Space) -> None:
    notify = space.alloc()

    def child(sync: Callable[[], None]) -> None:
        c = child_gives_a_port()
        sync()  # 1: the parent holds the send right and asked for the notification
        assert M.mach_port_destroy(T(), c) == OK
        sync()  # 2: the port is destroyed; the child lives on
        sync()  # 3: the parent has checked

    with mailbox(space) as mb, forked(child) as sync:
        name = space.keep(receive_a_port_right(mb))
        assert request(name, DEAD_NAME, 0, notify) == (OK, NULL)
        sync()
        sync()
        # while the child is still alive: the destruction is what notifies
        expect_name_notification(notify, DEAD_NAME, name)
        assert type_of(name) == TY_DEAD_NAME and refs(name, R_DEAD_NAME) == 2
        sync()
    expect_nothing(notify)
    assert type_of(name) == TY_DEAD_NAME and refs(name, R_DEAD_NAME) == 2


# -- 2. a dead-name request on a name that is already dead ---------------------------------------------

def _already_dead_name(space: Space, how: str) -> int:
    if how == "allocated":
        return space.alloc(R_DEAD_NAME)

    def child(_sync: object) -> None:  # its port dies when it exits
        child_gives_a_port()

    with mailbox(space) as mb:
        with forked(child):
            pass
        return space.keep(receive_a_port_right(mb))  # a send right whose port has died


@pytest.mark.parametrize("how", ["allocated", "port_died"])
def test_dead_name_request_on_a_dead_name_with_sync_fires_at_once(space: Space, how: str) -> None:
    notify = space.alloc()
    name = _already_dead_name(space, how)
    assert request(name, DEAD_NAME, 1, notify) == (OK, NULL)
    expect_name_notification(notify, DEAD_NAME, name)
    assert type_of(name) == TY_DEAD_NAME and refs(name, R_DEAD_NAME) == 2
    expect_nothing(notify)


@pytest.mark.parametrize("how", ["allocated", "port_died"])
def test_dead_name_request_on_a_dead_name_without_sync_is_invalid_argument(space: Space, how: str) -> None:
    notify = space.alloc()
    name = _already_dead_name(space, how)
    assert request(name, DEAD_NAME, 0, notify) == (M.KERN_INVALID_ARGUMENT, 0xABCD)
    assert type_of(name) == TY_DEAD_NAME and refs(name, R_DEAD_NAME) == 1  # no reference taken
    # the notify right made for the failed call is destroyed unused: a send-once notification
    expect_send_once(notify)
    expect_nothing(notify)
    assert status(notify).mps_sorights == 0


# -- 3. port-deleted -----------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["deallocate", "mod_refs", "destroy"])
def test_port_deleted_when_the_send_right_goes_and_the_port_lives(space: Space, how: str) -> None:
    notify = space.alloc()

    def child(sync: Callable[[], None]) -> None:
        c = child_gives_a_port()
        sync()  # 1: the parent has released its send right; our port is alive
        kr, r = recv_text(c)
        assert kr == OK and r.text == b"last"
        sync()  # 2: exit, destroying the port

    with mailbox(space) as mb, forked(child) as sync:
        name = space.keep(receive_a_port_right(mb))
        assert M.mach_port_mod_refs(T(), name, R_SEND, 1) == OK  # two user references
        assert request(name, DEAD_NAME, 0, notify) == (OK, NULL)
        assert send_text(name, b"last") == OK
        if how == "deallocate":
            assert M.mach_port_deallocate(T(), name) == OK
            assert type_of(name) == TY_SEND | TY_DNREQUEST and refs(name, R_SEND) == 1
            expect_nothing(notify)  # a reference is left: the name still holds the right
            assert M.mach_port_deallocate(T(), name) == OK
        elif how == "mod_refs":
            assert M.mach_port_mod_refs(T(), name, R_SEND, -2) == OK
        else:
            assert M.mach_port_destroy(T(), name) == OK
        expect_name_notification(notify, PORT_DELETED, name)
        assert type_kr(name)[0] == M.KERN_INVALID_NAME
        sync()
        sync()
    expect_nothing(notify)  # the request went with the name: no dead-name when the port dies


@pytest.mark.parametrize("how", ["destination", "descriptor"])
def test_port_deleted_when_a_send_once_right_is_moved_into_a_message(space: Space, how: str) -> None:
    # XNU's ipc_right_copyin cancels the dead-name request of a send-once
    # right moved into a message, and the send delivers it as port-deleted
    notify, q, mb = space.alloc(), space.alloc(), space.alloc()
    assert send_text(mb, b"carrier", disposition=MAKE_SEND, reply=q, reply_disp=MAKE_SEND_ONCE) == OK
    kr, r = recv_text(mb)
    assert kr == OK and r.text == b"carrier"
    so = r.header.msgh_remote_port  # a send-once right to q, under a name of ours
    assert type_of(so) == TY_SEND_ONCE
    assert request(so, DEAD_NAME, 0, notify) == (OK, NULL)
    assert type_of(so) == TY_SEND_ONCE | TY_DNREQUEST
    if how == "destination":
        assert send_text(so, b"reply", disposition=M.MACH_MSG_TYPE_MOVE_SEND_ONCE) == OK
        kr, r = recv_text(q)
        assert kr == OK and r.text == b"reply"
    else:
        assert M.mach_port_insert_right(T(), mb, mb, MAKE_SEND) == OK
        assert send_port(mb, so, M.MACH_MSG_TYPE_MOVE_SEND_ONCE) == OK
        kr, m = recv_port(mb)
        assert kr == OK and m.port.disposition == PORT_SEND_ONCE
        space.keep(m.port.name)
    expect_name_notification(notify, PORT_DELETED, so)
    assert type_kr(so)[0] == M.KERN_INVALID_NAME
    expect_nothing(notify)  # the request went with the name


# -- 4. no-senders ---------------------------------------------------------------------------------------

def _hold_a_send_right() -> None:
    """In a child: give the parent a port of ours, and get back a send right
    on it (the right whose death the parent watches)."""
    c = child_gives_a_port()
    kr, m = recv_port(c)
    assert kr == OK and m.port.disposition == PORT_SEND and M.MACH_PORT_VALID(m.port.name)
    assert type_of(m.port.name) == TY_SEND


def _only_registered_send_right() -> None:
    """In a child: the send right is the registered one we inherited."""
    s = lookup_registered()[0]
    assert M.MACH_PORT_VALID(s) and type_of(s) == TY_SEND


def _kill_senders_one_by_one(p: int, notify: int, kids: list[Doomed], mscount: int) -> None:
    for kid in kids[:-1]:
        kid.kill()
        settle(p)
        expect_nothing(notify)  # senders are left
        st = status(p)
        assert (st.mps_srights, st.mps_nsrequest) == (1, 1)
    kids[-1].kill()
    expect_no_senders(notify, mscount)
    settle(p)
    expect_nothing(notify)  # exactly once
    st = status(p)
    assert (st.mps_srights, st.mps_nsrequest, st.mps_mscount) == (0, 0, mscount)


@pytest.mark.parametrize("sync_rule", ["sync_0", "sync_mscount_plus_1"])
def test_no_senders_after_the_last_of_three_sigkilled_children(space: Space, sync_rule: str) -> None:
    """Each child gets a send right made for it (MAKE_SEND in a message)."""
    p = space.alloc()
    notify = space.alloc()
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK  # our own sender while we arm
    sync = 0 if sync_rule == "sync_0" else status(p).mps_mscount + 1
    assert request(p, NO_SENDERS, sync, notify) == (OK, NULL)
    expect_nothing(notify)
    with mailbox(space) as mb, contextlib.ExitStack() as stack:
        kids = [stack.enter_context(Doomed(_hold_a_send_right)) for _ in range(3)]
        for _ in kids:
            c = space.keep(receive_a_port_right(mb))
            assert send_port(c, p, MAKE_SEND) == OK
        for kid in kids:
            kid.ready()
        assert status(p).mps_mscount == 4
        assert M.mach_port_deallocate(T(), p) == OK  # our sender goes first
        assert type_of(p) == TY_RECEIVE
        settle(p)
        expect_nothing(notify)
        _kill_senders_one_by_one(p, notify, kids, 4)


def test_no_senders_after_children_holding_the_registered_right_die(space: Space) -> None:
    """Two children hold only the send right they inherited as a registered
    port, a copy of the one made send right (mscount 1)."""
    p = space.alloc()
    notify = space.alloc()
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    assert register(p) == OK
    try:
        assert M.mach_port_deallocate(T(), p) == OK  # the registered copy is our only sender
        assert request(p, NO_SENDERS, 0, notify) == (OK, NULL)
        expect_nothing(notify)
        with contextlib.ExitStack() as stack:
            kids = [stack.enter_context(Doomed(_only_registered_send_right)) for _ in range(2)]
            for kid in kids:
                kid.ready()
            assert register() == OK  # our registered copy goes: the children are the senders
            settle(p)
            expect_nothing(notify)
            _kill_senders_one_by_one(p, notify, kids, 1)
    finally:
        assert register() == OK


def test_no_senders_sync_is_only_compared_when_armed(space: Space) -> None:
    """Armed with sync = mscount + 1 while senders exist, and no send right
    is made afterwards: XNU still notifies when the last sender dies."""
    p = space.alloc()
    notify = space.alloc()
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK  # mscount 1
    assert register(p) == OK
    try:
        assert M.mach_port_deallocate(T(), p) == OK
        with contextlib.ExitStack() as stack:
            kids = [stack.enter_context(Doomed(_only_registered_send_right)) for _ in range(2)]
            for kid in kids:
                kid.ready()
            assert register() == OK  # the children are the senders
            assert request(p, NO_SENDERS, 2, notify) == (OK, NULL)
            expect_nothing(notify)
            assert status(p).mps_nsrequest == 1
            _kill_senders_one_by_one(p, notify, kids, 1)
    finally:
        assert register() == OK


@pytest.mark.parametrize("made, sync", [(0, 0), (1, 0), (1, 1)])
def test_no_senders_request_with_no_senders_fires_at_once(space: Space, made: int, sync: int) -> None:
    p = space.alloc()
    notify = space.alloc()
    for _ in range(made):
        assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
        assert M.mach_port_deallocate(T(), p) == OK
    assert status(p).mps_mscount == made
    assert request(p, NO_SENDERS, sync, notify) == (OK, NULL)
    # queued before the call returns, as in XNU
    expect_no_senders(notify, made, timeout=0)
    settle(p)
    st = status(p)
    assert (st.mps_nsrequest, st.mps_srights) == (0, 0)  # fired, so no longer armed
    expect_nothing(notify)


def test_no_senders_request_with_sync_above_mscount_waits(space: Space) -> None:
    p = space.alloc()
    notify = space.alloc()
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    assert M.mach_port_deallocate(T(), p) == OK  # mscount 1, no sender
    assert request(p, NO_SENDERS, 2, notify) == (OK, NULL)
    expect_nothing(notify)  # sync > mscount: armed, not fired
    assert status(p).mps_nsrequest == 1
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK  # mscount 2
    assert M.mach_port_deallocate(T(), p) == OK  # and no sender again
    expect_no_senders(notify, 2)
    settle(p)
    expect_nothing(notify)
    assert status(p).mps_nsrequest == 0


# -- 5. send-once -------------------------------------------------------------------------------------------

def _take_the_request(c: int) -> int:
    """In a child: receive the request on our port; returns the name of the
    reply right it carries."""
    kr, r = recv_text(c)
    assert kr == OK and r.text == b"request"
    assert M.MACH_MSGH_BITS_REMOTE(r.header.msgh_bits) == PORT_SEND_ONCE
    reply = r.header.msgh_remote_port
    assert type_of(reply) == TY_SEND_ONCE
    return reply


def _send_the_request(space: Space, mb: int, reply: int) -> None:
    c = space.keep(receive_a_port_right(mb))
    assert send_text(c, b"request", reply=reply, reply_disp=MAKE_SEND_ONCE) == OK


def test_send_once_when_the_holder_is_sigkilled_without_replying(space: Space) -> None:
    reply = space.alloc()

    def child_fn() -> None:
        _take_the_request(child_gives_a_port())

    with mailbox(space) as mb, Doomed(child_fn) as child:
        _send_the_request(space, mb, reply)
        child.ready()  # the child holds the send-once right
        assert status(reply).mps_sorights == 1
        expect_nothing(reply)
        child.kill()
        expect_send_once(reply)
    expect_nothing(reply)
    assert status(reply).mps_sorights == 0


def test_send_once_when_the_holder_deallocates_it(space: Space) -> None:
    reply = space.alloc()

    def child(sync: Callable[[], None]) -> None:
        so = _take_the_request(child_gives_a_port())
        assert M.mach_port_deallocate(T(), so) == OK
        assert type_kr(so)[0] == M.KERN_INVALID_NAME
        sync()  # 1: deallocated; the child lives on
        sync()  # 2: the parent has checked

    with mailbox(space) as mb, forked(child) as sync:
        _send_the_request(space, mb, reply)
        sync()
        expect_send_once(reply)  # while the child is still alive
        assert status(reply).mps_sorights == 0
        sync()
    expect_nothing(reply)


# -- 6. port-destroyed ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["destroy", "mod_refs"])
def test_port_destroyed_hands_back_the_receive_right_with_its_queue(space: Space, how: str) -> None:
    p = space.alloc()
    notify = space.alloc()
    for i in range(4):
        assert send_text(p, b"m%d" % i, disposition=MAKE_SEND, msg_id=500 + i) == OK
    kr, r = recv_text(p, timeout=0)
    assert kr == OK and r.text == b"m0" and r.trailer.msgh_seqno == 0
    st = status(p)
    assert (st.mps_msgcount, st.mps_mscount, st.mps_seqno) == (3, 4, 1)
    assert request(p, PORT_DESTROYED, 0, notify) == (OK, NULL)
    assert status(p).mps_pdrequest == 1
    if how == "destroy":
        assert M.mach_port_destroy(T(), p) == OK
    else:
        assert M.mach_port_mod_refs(T(), p, R_RECEIVE, -1) == OK
    assert type_kr(p)[0] == M.KERN_INVALID_NAME

    kr, n = recv_notification(notify)
    assert kr == OK, f"no port-destroyed notification: {kr:#x}"
    check_from_the_kernel(n, notify, PORT_DESTROYED, 40, complex_=True)
    d = n.destroyed
    assert d.not_body.msgh_descriptor_count == 1
    assert (d.not_port.disposition, d.not_port.type) == (PORT_RECEIVE, M.MACH_MSG_PORT_DESCRIPTOR)
    assert list(d.trailer.msgh_sender.val) == [0, 1]
    q = space.keep(d.not_port.name)
    assert q != p and type_of(q) == TY_RECEIVE
    st = status(q)
    # the port itself survived: its messages are kept, its counters start again
    assert (st.mps_msgcount, st.mps_mscount, st.mps_seqno, st.mps_pdrequest) == (3, 0, 0, 0)
    for i in range(3):
        kr, r = recv_text(q, timeout=0)
        assert kr == OK
        assert (r.text, r.header.msgh_id, r.header.msgh_local_port) == (b"m%d" % (i + 1), 501 + i, q)
        assert r.trailer.msgh_seqno == i
    assert recv_text(q, timeout=0)[0] == M.MACH_RCV_TIMED_OUT
    expect_nothing(notify)


# -- 7. destroying a receive right that has a dead-name request ---------------------------------------------

def test_receive_right_under_a_send_name_dies_into_a_dead_name_notification(space: Space) -> None:
    p = space.alloc()
    notify = space.alloc()
    for _ in range(2):
        assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    assert request(p, DEAD_NAME, 0, notify) == (OK, NULL)
    assert type_of(p) == TY_SEND_RECEIVE | TY_DNREQUEST
    assert M.mach_port_mod_refs(T(), p, R_RECEIVE, -1) == OK
    expect_name_notification(notify, DEAD_NAME, p)  # dead-name, not port-deleted
    assert type_of(p) == TY_DEAD_NAME
    assert refs(p, R_DEAD_NAME) == 3 and refs(p, R_SEND) == 0 and refs(p, R_RECEIVE) == 0
    expect_nothing(notify)


@pytest.mark.parametrize("rights, how", [
    ("receive", "mod_refs"), ("receive", "destroy"), ("send_receive", "destroy")])
def test_receive_right_destroyed_with_its_name_gives_port_deleted(space: Space, rights: str, how: str) -> None:
    p = space.alloc()
    notify = space.alloc()
    if rights == "send_receive":
        assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    assert request(p, DEAD_NAME, 0, notify) == (OK, NULL)
    assert type_of(p) & TY_DNREQUEST
    if how == "destroy":
        assert M.mach_port_destroy(T(), p) == OK
    else:
        assert M.mach_port_mod_refs(T(), p, R_RECEIVE, -1) == OK
    expect_name_notification(notify, PORT_DELETED, p)
    assert type_kr(p)[0] == M.KERN_INVALID_NAME
    expect_nothing(notify)
