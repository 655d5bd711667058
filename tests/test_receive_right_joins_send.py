"""A receive right that arrives where we hold send rights to the same port
joins their name, as XNU's ipc_right_copyout does for
MACH_MSG_TYPE_PORT_RECEIVE (the entry holds both rights, its send
references kept); and a send right that arrives later for a port whose
receive right came to us joins the receive right's name. The rights
travel between real processes, whose connections pymach in this process
never made: the kernel proves the sameness (sock_diag's peer inodes)."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from typing import Callable

import pytest

import pymach.mach as M
from machutil import (MAKE_SEND, OK, PORT_RECEIVE, PORT_SEND, R_RECEIVE, TY_RECEIVE, TY_SEND, PortMsgRcv,
                      Space, TextRcv, alloc_name, check_in, create, look_up, lookup_registered,
                      private_bootstrap, register, send_port, send_text, start_watcher, type_kr, type_of)
from procutil import forked
from pymach.mach import byref

T = M.mach_task_self
MOVE_RECEIVE = M.MACH_MSG_TYPE_MOVE_RECEIVE
COPY_SEND = M.MACH_MSG_TYPE_COPY_SEND
WAIT_MS = 10_000


@pytest.fixture(scope="module", autouse=True)
def watcher_started() -> None:
    start_watcher()


@pytest.fixture
def space() -> Iterator[Space]:
    s = Space()
    yield s
    s.destroy_all()


@contextlib.contextmanager
def mailbox(space: Space) -> Iterator[int]:
    """A port of ours whose send right is registered for a fork child."""
    mb = space.alloc()
    assert M.mach_port_insert_right(T(), mb, mb, MAKE_SEND) == OK
    assert register(mb) == OK
    assert M.mach_port_deallocate(T(), mb) == OK
    try:
        yield mb
    finally:
        assert register() == OK


def recv_port(name: int) -> tuple[int, int]:
    """(disposition, name) of the right a message to ``name`` carried."""
    r = PortMsgRcv()
    kr = M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), name, WAIT_MS, 0)
    assert kr == OK, f"{kr:#x}"
    return r.port.disposition, r.port.name


def recv_text(name: int) -> bytes:
    r = TextRcv()
    kr = M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), name, WAIT_MS, 0)
    assert kr == OK, f"{kr:#x}"
    return bytes(r.text).rstrip(b"\0")


def send_refs(name: int) -> int:
    n = M.mach_port_urefs_t()
    assert M.mach_port_get_refs(T(), name, M.MACH_PORT_RIGHT_SEND, byref(n)) == OK
    return n.value


def names() -> set[int]:
    ns, ts = M.mach_port_array_t(), M.mach_port_type_array_t()
    nc, tc = M.mach_msg_type_number_t(), M.mach_msg_type_number_t()
    assert M.mach_port_names(T(), byref(ns), byref(nc), byref(ts), byref(tc)) == OK
    out = {ns[i] for i in range(nc.value)}
    for arr, n in ((ns, nc.value), (ts, tc.value)):
        assert M.mach_vm_deallocate(T(), ctypes.cast(arr, ctypes.c_void_p).value, n * 4) == OK
    return out


def test_in_one_task_the_receive_right_comes_back_under_its_name(space: Space) -> None:
    """tests/ipc/mach_msg_transport.c's MOVE_RECEIVE case: a port with a send
    right sends its receive right to another port of ours."""
    rcv = space.alloc()
    assert M.mach_port_insert_right(T(), rcv, rcv, MAKE_SEND) == OK
    p = space.alloc()
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    assert M.mach_port_mod_refs(T(), p, M.MACH_PORT_RIGHT_SEND, 2) == OK
    assert send_port(rcv, p, MOVE_RECEIVE) == OK
    assert type_of(p) == TY_SEND
    assert recv_port(rcv) == (PORT_RECEIVE, p)
    assert type_of(p) == TY_RECEIVE | TY_SEND and send_refs(p) == 3
    assert send_text(p, b"same") == OK
    assert recv_text(p) == b"same"


def _child_sends_send_then_receive(sync: Callable[[], None]) -> None:
    mb = lookup_registered()[0]
    c = alloc_name(R_RECEIVE)
    assert send_port(mb, c, MAKE_SEND) == OK  # a connection this child makes
    sync()
    assert send_port(mb, c, MOVE_RECEIVE) == OK
    sync()


def test_a_receive_right_from_another_task_joins_our_send_right(space: Space) -> None:
    with mailbox(space) as mb, forked(_child_sends_send_then_receive) as sync:
        disp, s = recv_port(mb)
        assert disp == PORT_SEND
        space.keep(s)
        assert type_of(s) == TY_SEND and send_refs(s) == 1
        sync()
        before = names()
        assert recv_port(mb) == (PORT_RECEIVE, s)
        assert names() == before  # no new name
        sync()
    assert type_of(s) == TY_RECEIVE | TY_SEND and send_refs(s) == 1
    assert send_text(s, b"joined") == OK
    assert recv_text(s) == b"joined"


def _child_returns_the_receive_right(sync: Callable[[], None]) -> None:
    mb = lookup_registered()[0]
    own = alloc_name(R_RECEIVE)
    assert send_port(mb, own, MAKE_SEND) == OK  # where the parent sends the right
    disp, r = recv_port(own)
    assert disp == PORT_RECEIVE
    assert send_port(mb, r, MOVE_RECEIVE) == OK
    sync()


def test_a_receive_right_sent_away_and_back_rejoins_its_name(space: Space) -> None:
    with mailbox(space) as mb:
        p = space.alloc()
        assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
        with forked(_child_returns_the_receive_right) as sync:
            disp, child = recv_port(mb)
            assert disp == PORT_SEND
            space.keep(child)
            assert send_port(child, p, MOVE_RECEIVE) == OK
            assert type_of(p) == TY_SEND
            sync()  # the child has sent it back
            assert recv_port(mb) == (PORT_RECEIVE, p)
        assert type_of(p) == TY_RECEIVE | TY_SEND and send_refs(p) == 1
        assert send_text(p, b"back") == OK
        assert recv_text(p) == b"back"


def _child_sends_receive_then_send(sync: Callable[[], None]) -> None:
    mb = lookup_registered()[0]
    c = alloc_name(R_RECEIVE)
    assert M.mach_port_insert_right(T(), c, c, MAKE_SEND) == OK  # made before the right leaves
    assert send_port(mb, c, MOVE_RECEIVE) == OK
    sync()
    assert send_port(mb, c, COPY_SEND) == OK
    sync()


def test_a_send_right_arriving_after_the_receive_right_joins_it(space: Space) -> None:
    with mailbox(space) as mb, forked(_child_sends_receive_then_send) as sync:
        disp, r = recv_port(mb)
        assert disp == PORT_RECEIVE
        space.keep(r)
        assert type_of(r) == TY_RECEIVE
        sync()
        assert recv_port(mb) == (PORT_SEND, r)
        assert type_of(r) == TY_RECEIVE | TY_SEND and send_refs(r) == 1
        sync()
    assert send_text(r, b"later") == OK
    assert recv_text(r) == b"later"
    assert type_kr(r)[0] == OK


def test_bootstrap_check_in_and_look_up_give_one_name() -> None:
    """bootstrap_create_service gives a send right; bootstrap_check_in then
    hands over the receive right, made and held by the server until then:
    it joins that name, and a look-up gives the same name again."""
    with private_bootstrap():
        kr, s = create(b"joins.send")
        assert kr == OK and type_of(s) == TY_SEND
        try:
            kr, r = check_in(b"joins.send")
            assert kr == OK and r == s
            assert type_of(s) == TY_RECEIVE | TY_SEND and send_refs(s) == 1
            kr, again = look_up(b"joins.send")
            assert kr == OK and again == s and send_refs(s) == 2
            assert send_text(s, b"svc") == OK
            assert recv_text(s) == b"svc"
        finally:
            M.mach_port_destroy(T(), s)


def _child_returns_the_send_right(sync: Callable[[], None]) -> None:
    mb = lookup_registered()[0]
    own = alloc_name(R_RECEIVE)
    assert send_port(mb, own, MAKE_SEND) == OK
    disp, s = recv_port(own)
    assert disp == PORT_SEND
    assert send_port(mb, s, M.MACH_MSG_TYPE_MOVE_SEND) == OK
    sync()


def test_a_send_right_made_while_no_senders_is_armed_comes_back_to_its_port(space: Space) -> None:
    """Made on a connection of its own (so that its close is seen), the
    right still comes back under the receive right's name."""
    with mailbox(space) as mb:
        p = space.alloc()
        notify = space.alloc()
        prev = M.mach_port_t()
        # sync 1: armed now (no send right was made yet), fired by the last sender
        assert M.mach_port_request_notification(T(), p, M.MACH_NOTIFY_NO_SENDERS, 1, notify,
                                                M.MACH_MSG_TYPE_MAKE_SEND_ONCE, byref(prev)) == OK
        with forked(_child_returns_the_send_right) as sync:
            disp, child = recv_port(mb)
            assert disp == PORT_SEND
            space.keep(child)
            assert send_port(child, p, MAKE_SEND) == OK
            sync()
            assert recv_port(mb) == (PORT_SEND, p)
        assert type_of(p) == TY_RECEIVE | TY_SEND and send_refs(p) == 1
        r = TextRcv()
        kr = M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), notify, 0, 0)
        assert kr == M.MACH_RCV_TIMED_OUT  # a sender is left: ours
        assert M.mach_port_deallocate(T(), p) == OK  # the last sender: no-senders fires
        kr = M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT | M.MACH_RCV_LARGE, 0, ctypes.sizeof(r),
                        notify, WAIT_MS, 0)
        assert kr in (OK, M.MACH_RCV_TOO_LARGE) and r.header.msgh_id == M.MACH_NOTIFY_NO_SENDERS
