"""mach_port_insert_right under a name other than the right's: the name is
checked as XNU's ipc_entry_alloc_name checks it, before any existing right
is looked for, and a free name gets a send-once right or a moved right, as
_kernelrpc_mach_port_insert_right_trap does (ipc_object_copyin, then
mach_port_insert_right, then ipc_object_copyout_name)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import pytest

import pymach.mach as M
from machutil import (COPY_SEND, MAKE_SEND, MAKE_SEND_ONCE, OK, TY_DEAD_NAME, TY_RECEIVE, TY_SEND,
                      TY_SEND_ONCE, Space, TextRcv, send_text, status, type_kr, type_of)
from pymach.mach import byref

T = M.mach_task_self
MOVE_SEND = M.MACH_MSG_TYPE_MOVE_SEND
MOVE_SEND_ONCE = M.MACH_MSG_TYPE_MOVE_SEND_ONCE
MOVE_RECEIVE = M.MACH_MSG_TYPE_MOVE_RECEIVE
R_SEND = M.MACH_PORT_RIGHT_SEND


@pytest.fixture
def space() -> Iterator[Space]:
    s = Space()
    yield s
    s.destroy_all()


def free_name(space: Space) -> int:
    """A name whose index is past every name in use, generation 3."""
    names, types = M.mach_port_array_t(), M.mach_port_type_array_t()
    ncnt, tcnt = M.mach_msg_type_number_t(), M.mach_msg_type_number_t()
    assert M.mach_port_names(T(), byref(names), byref(ncnt), byref(types), byref(tcnt)) == OK
    top = max(M.MACH_PORT_INDEX(names[i]) for i in range(ncnt.value))
    for arr, n in ((names, ncnt.value), (types, tcnt.value)):
        assert M.mach_vm_deallocate(T(), ctypes.cast(arr, ctypes.c_void_p).value, n * 4) == OK
    return space.keep(((top + 5) << 8) | 0x03)


def refs(name: int) -> int:
    n = M.mach_port_urefs_t()
    assert M.mach_port_get_refs(T(), name, R_SEND, byref(n)) == OK
    return n.value


def receive(port: int) -> tuple[int, bytes]:
    r = TextRcv()
    kr = M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), port, 5000, 0)
    return kr, bytes(r.text).rstrip(b"\0")


def test_name_checks_come_before_the_existing_right(space: Space) -> None:
    p = space.alloc()
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    assert M.mach_port_mod_refs(T(), p, R_SEND, 9) == OK
    big = ((305834 + 1) << 8) | 0x03
    for disp in (MAKE_SEND, COPY_SEND, MOVE_SEND, MAKE_SEND_ONCE):
        assert M.mach_port_insert_right(T(), 0x7B, p, disp) == M.KERN_FAILURE  # index 0
        assert M.mach_port_insert_right(T(), 0x7A, p, disp) == M.KERN_INVALID_VALUE  # generation bits
        assert M.mach_port_insert_right(T(), big, p, disp) == M.KERN_NO_SPACE
        # p's index under another generation
        assert M.mach_port_insert_right(T(), p ^ 0x04, p, disp) == M.KERN_FAILURE
    # each MOVE_SEND that failed lost its reference and each MAKE_SEND counted,
    # as XNU destroys the right it copied in; each send-once right made was
    # released unused (a send-once notification each)
    assert type_of(p) == TY_RECEIVE | TY_SEND and refs(p) == 10 - 4
    assert status(p).mps_mscount == 1 + 4
    for _ in range(4):
        assert receive(p)[0] == OK
    assert M.mach_port_allocate_name(T(), M.MACH_PORT_RIGHT_RECEIVE, big) == M.KERN_NO_SPACE
    assert M.mach_port_allocate_name(T(), M.MACH_PORT_RIGHT_RECEIVE, p ^ 0x04) == M.KERN_FAILURE


def test_make_send_once_under_a_free_name(space: Space) -> None:
    p = space.alloc()
    n = free_name(space)
    assert M.mach_port_insert_right(T(), n, p, MAKE_SEND_ONCE) == OK
    assert type_of(n) == TY_SEND_ONCE and type_of(p) == TY_RECEIVE
    assert send_text(n, b"once", M.MACH_MSG_TYPE_MOVE_SEND_ONCE) == OK
    assert receive(p) == (OK, b"once")
    assert type_kr(n)[0] == M.KERN_INVALID_NAME  # the right went with the message
    # into a held name: KERN_NAME_EXISTS, and the right made is released unused
    q = space.alloc()
    assert M.mach_port_insert_right(T(), q, p, MAKE_SEND_ONCE) == M.KERN_NAME_EXISTS
    kr, _ = receive(p)
    assert kr == OK  # MACH_NOTIFY_SEND_ONCE
    assert type_of(q) == TY_RECEIVE


def test_moved_rights_take_the_new_name(space: Space) -> None:
    p = space.alloc()
    # a receive right alone moves to the name given
    n = free_name(space)
    assert M.mach_port_insert_right(T(), n, p, MOVE_RECEIVE) == OK
    assert type_kr(p)[0] == M.KERN_INVALID_NAME and type_of(n) == TY_RECEIVE
    # the last send reference moves too
    s = free_name(space)
    assert M.mach_port_insert_right(T(), s, n, MAKE_SEND) == M.KERN_RIGHT_EXISTS  # n names the port
    assert status(n).mps_mscount == 1  # the send right made was released
    held = space.alloc(M.MACH_PORT_RIGHT_DEAD_NAME)
    assert M.mach_port_insert_right(T(), n, n, MAKE_SEND) == OK
    so = free_name(space)
    assert M.mach_port_insert_right(T(), so, n, MAKE_SEND_ONCE) == OK
    so2 = free_name(space)
    assert M.mach_port_insert_right(T(), so2, so, MOVE_SEND_ONCE) == OK
    assert type_kr(so)[0] == M.KERN_INVALID_NAME and type_of(so2) == TY_SEND_ONCE
    assert M.mach_port_insert_right(T(), held, so2, MOVE_SEND_ONCE) == M.KERN_NAME_EXISTS
    assert type_kr(so2)[0] == M.KERN_INVALID_NAME  # destroyed: a send-once notification
    assert receive(n)[0] == OK
    assert type_of(held) == TY_DEAD_NAME
    # a receive right with send rights under its name: the name keeps it
    assert M.mach_port_insert_right(T(), s, n, MOVE_RECEIVE) == M.KERN_RIGHT_EXISTS
    assert type_of(n) == TY_DEAD_NAME  # XNU destroyed the receive right it copied in


def test_a_dead_name_copied_in_is_refused_after_the_name_check(space: Space) -> None:
    d = space.alloc(M.MACH_PORT_RIGHT_DEAD_NAME)
    assert M.mach_port_mod_refs(T(), d, M.MACH_PORT_RIGHT_DEAD_NAME, 2) == OK  # 3 references
    n = free_name(space)
    # ipc_right_copyin gives MACH_PORT_DEAD; mach_port_insert_right checks the
    # name first (KERN_INVALID_VALUE), then the port (KERN_INVALID_CAPABILITY)
    assert M.mach_port_insert_right(T(), M.MACH_PORT_NULL, d, COPY_SEND) == M.KERN_INVALID_VALUE
    assert M.mach_port_insert_right(T(), n, d, COPY_SEND) == M.KERN_INVALID_CAPABILITY
    dead = M.mach_port_urefs_t()
    assert M.mach_port_get_refs(T(), d, M.MACH_PORT_RIGHT_DEAD_NAME, byref(dead)) == OK and dead.value == 3
    # a move takes a reference of the dead name with it
    assert M.mach_port_insert_right(T(), n, d, MOVE_SEND) == M.KERN_INVALID_CAPABILITY
    assert M.mach_port_get_refs(T(), d, M.MACH_PORT_RIGHT_DEAD_NAME, byref(dead)) == OK and dead.value == 2
    # MAKE_SEND needs a receive right: refused by the copyin
    assert M.mach_port_insert_right(T(), n, d, MAKE_SEND) == M.KERN_INVALID_RIGHT
    assert type_kr(n)[0] == M.KERN_INVALID_NAME
