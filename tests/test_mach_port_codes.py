"""mach_port_* return codes and effects, checked against XNU's rules:
names and generations, user references, the rights of each routine, port
sets, attributes, construct/destruct, and rights that cross os.fork.

Each section cites where XNU returns the codes its tests expect, as
file:line in apple-oss-distributions/xnu at tag xnu-11417.101.15 (paths
under osfmk/ipc/ unless they say otherwise). A user-space call reaches
those routines through libsyscall's trap wrappers
(libsyscall/mach/mach_port.c, osfmk/ipc/mach_kernelrpc.c).

Every test cleans up after itself: the ``space`` fixture destroys every
name a test records, and conftest checks that no fd was leaked.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import threading
from collections.abc import Callable, Iterator

import pytest

import pymach.mach as M
from pymach.mach import byref
from procutil import child_exit_code, forked, is_free, open_fds, perms_at
from machutil import PortMsg, PortMsgRcv, wait_blocked
from machutil import Text as Simple
from machutil import TextRcv as SimpleRcv

T = M.mach_task_self
OK = M.KERN_SUCCESS
DEAD = M.MACH_PORT_DEAD
NULL = M.MACH_PORT_NULL

R_SEND = M.MACH_PORT_RIGHT_SEND
R_RECEIVE = M.MACH_PORT_RIGHT_RECEIVE
R_SEND_ONCE = M.MACH_PORT_RIGHT_SEND_ONCE
R_PORT_SET = M.MACH_PORT_RIGHT_PORT_SET
R_DEAD_NAME = M.MACH_PORT_RIGHT_DEAD_NAME
R_LABELH = M.MACH_PORT_RIGHT_LABELH

TY_SEND = M.MACH_PORT_TYPE_SEND
TY_RECEIVE = M.MACH_PORT_TYPE_RECEIVE
TY_SEND_RECEIVE = M.MACH_PORT_TYPE_SEND_RECEIVE
TY_SEND_ONCE = M.MACH_PORT_TYPE_SEND_ONCE
TY_PORT_SET = M.MACH_PORT_TYPE_PORT_SET
TY_DEAD_NAME = M.MACH_PORT_TYPE_DEAD_NAME

MOVE_RECEIVE = M.MACH_MSG_TYPE_MOVE_RECEIVE  # 16
MOVE_SEND = M.MACH_MSG_TYPE_MOVE_SEND  # 17
MOVE_SEND_ONCE = M.MACH_MSG_TYPE_MOVE_SEND_ONCE  # 18
COPY_SEND = M.MACH_MSG_TYPE_COPY_SEND  # 19
MAKE_SEND = M.MACH_MSG_TYPE_MAKE_SEND  # 20
MAKE_SEND_ONCE = M.MACH_MSG_TYPE_MAKE_SEND_ONCE  # 21
PORT_RECEIVE = M.MACH_MSG_TYPE_PORT_RECEIVE  # 16
PORT_SEND = M.MACH_MSG_TYPE_PORT_SEND  # 17
PORT_SEND_ONCE = M.MACH_MSG_TYPE_PORT_SEND_ONCE  # 18

UREFS_MAX = 65535
ROLLOVER_GENS = (0x3B, 0x7B, 0xBB, 0xFB)  # the last generation of each rollover period


# -- helpers -----------------------------------------------------------------------

class Space:
    """Names a test created; all destroyed when the test ends."""

    def __init__(self) -> None:
        self.names: list[int] = []
        self.guards: dict[int, int] = {}

    def keep(self, name: int) -> int:
        self.names.append(name)
        return name

    def alloc(self, right: int = R_RECEIVE) -> int:
        n = M.mach_port_t(0)
        assert M.mach_port_allocate(T(), right, byref(n)) == OK
        return self.keep(n.value)

    def with_send(self, urefs: int = 1) -> int:
        """A receive right with ``urefs`` send references under its name."""
        p = self.alloc()
        for _ in range(urefs):
            assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
        return p

    def send_once(self, port: int) -> int:
        """A new send-once right to ``port`` (whose receive right we hold)."""
        so, poly = M.mach_port_t(), M.mach_msg_type_name_t()
        assert M.mach_port_extract_right(T(), port, MAKE_SEND_ONCE, byref(so), byref(poly)) == OK
        assert poly.value == PORT_SEND_ONCE
        return self.keep(so.value)

    def construct(self, flags: int = 0, qlimit: int = 0, context: int = 0) -> int:
        kr, name = construct(flags, qlimit, context)
        assert kr == OK
        if flags & M.MPO_CONTEXT_AS_GUARD:
            self.guards[name] = context
        return self.keep(name)


@pytest.fixture
def space() -> Iterator[Space]:
    s = Space()
    yield s
    for name, guard in s.guards.items():  # a guarded receive right goes only with its guard
        M.mach_port_destruct(T(), name, 0, guard)
    for name in reversed(s.names):
        M.mach_port_destroy(T(), name)


def alloc_name(right: int) -> int:
    """mach_port_allocate outside a test's Space (in a fork child)."""
    n = M.mach_port_t()
    assert M.mach_port_allocate(T(), right, byref(n)) == OK
    return n.value


def construct(flags: int, qlimit: int = 0, context: int = 0) -> tuple[int, int]:
    opts = M.mach_port_options_t()
    opts.flags = flags
    opts.mpl.mpl_qlimit = qlimit
    name = M.mach_port_t(0xDEAD0)
    kr = M.mach_port_construct(T(), byref(opts), context, byref(name))
    return kr, name.value


def type_of(name: int) -> int:
    t = M.mach_port_type_t()
    kr = M.mach_port_type(T(), name, byref(t))
    assert kr == OK, f"mach_port_type({name:#x}) = {kr}"
    return t.value


def type_kr(name: int) -> int:
    t = M.mach_port_type_t()
    return M.mach_port_type(T(), name, byref(t))


def refs(name: int, right: int) -> int:
    r = M.mach_port_urefs_t(0xBAD)
    kr = M.mach_port_get_refs(T(), name, right, byref(r))
    assert kr == OK, f"mach_port_get_refs({name:#x}, {right}) = {kr}"
    return r.value


def mod_refs(name: int, right: int, delta: int) -> int:
    return M.mach_port_mod_refs(T(), name, right, delta)


def status(name: int) -> M.mach_port_status_t:
    st = M.mach_port_status_t()
    cnt = M.mach_msg_type_number_t(M.MACH_PORT_RECEIVE_STATUS_COUNT)
    assert M.mach_port_get_attributes(T(), name, M.MACH_PORT_RECEIVE_STATUS, byref(st), byref(cnt)) == OK
    assert cnt.value == M.MACH_PORT_RECEIVE_STATUS_COUNT
    return st


def qlimit_of(name: int) -> int:
    lim = M.mach_port_limits_t()
    cnt = M.mach_msg_type_number_t(M.MACH_PORT_LIMITS_INFO_COUNT)
    assert M.mach_port_get_attributes(T(), name, M.MACH_PORT_LIMITS_INFO, byref(lim), byref(cnt)) == OK
    return lim.mpl_qlimit


def set_qlimit(name: int, q: int, count: int = 1) -> int:
    lim = M.mach_port_limits_t(q)
    return M.mach_port_set_attributes(T(), name, M.MACH_PORT_LIMITS_INFO, byref(lim), count)


def extract(name: int, msgt: int) -> tuple[int, int, int]:
    poly, poly_poly = M.mach_port_t(0xABC), M.mach_msg_type_name_t(0xABC)
    kr = M.mach_port_extract_right(T(), name, msgt, byref(poly), byref(poly_poly))
    return kr, poly.value, poly_poly.value


def names_and_types() -> dict[int, int]:
    """mach_port_names as a dict, releasing the out-of-line arrays."""
    names, types = M.mach_port_array_t(), M.mach_port_type_array_t()
    ncnt, tcnt = M.mach_msg_type_number_t(), M.mach_msg_type_number_t()
    assert M.mach_port_names(T(), byref(names), byref(ncnt), byref(types), byref(tcnt)) == OK
    assert ncnt.value == tcnt.value
    out = {names[i]: types[i] for i in range(ncnt.value)}
    for arr, n in ((names, ncnt.value), (types, tcnt.value)):
        assert M.mach_vm_deallocate(T(), ctypes.cast(arr, ctypes.c_void_p).value, n * 4) == OK
    return out


def gen(name: int) -> int:
    return name & 0xFF


def next_gen(old: int, new: int) -> bool:
    """``new`` is the generation XNU may give after ``old`` (+4, or a
    restart at 3 when the period ends)."""
    return gen(new) == gen(old) + 4 or (gen(new) == 0x03 and gen(old) in ROLLOVER_GENS + (0xFF,))


def lookup_registered() -> list[int]:
    """mach_ports_lookup, releasing the out-of-line array."""
    ports, cnt = M.mach_port_array_t(), M.mach_msg_type_number_t()
    assert M.mach_ports_lookup(T(), byref(ports), byref(cnt)) == OK
    assert cnt.value == M.TASK_PORT_REGISTER_MAX
    out = [ports[i] for i in range(cnt.value)]
    assert M.mach_vm_deallocate(T(), ctypes.cast(ports, ctypes.c_void_p).value, cnt.value * 4) == OK
    return out


def register(*names: int) -> int:
    arr = (M.mach_port_t * max(1, len(names)))(*names)
    return M.mach_ports_register(T(), arr, len(names))


def call_reclaiming(fn, *args):  # type: ignore[no-untyped-def]
    """``fn(*args)`` for a call that should create nothing: returns its
    result and the fds it left open, after closing them (so that the fd
    check of conftest stays about the test's own rights)."""
    gc.collect()
    before = open_fds()
    result = fn(*args)
    gc.collect()
    leaked = []
    for fd in sorted(open_fds() - before):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        leaked.append(f"{fd}:{target}")
        if target == "anon_inode:[eventfd]":  # a bare fd number that no object will close
            os.close(int(fd))
    return result, leaked


def socket_inodes() -> set[int]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


# -- messages -------------------------------------------------------------------------

def send(dest: int, disposition: int = COPY_SEND, text: bytes = b"x") -> int:
    m = Simple()
    m.header.msgh_bits = M.MACH_MSGH_BITS(disposition, 0)
    m.header.msgh_size = ctypes.sizeof(Simple)
    m.header.msgh_remote_port = dest
    m.header.msgh_id = 1234
    m.text = text
    return M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0)


def recv(name: int, timeout: int = 3000) -> tuple[int, SimpleRcv]:
    r = SimpleRcv()
    opt = M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT | M.MACH_RCV_TRAILER_ELEMENTS(M.MACH_RCV_TRAILER_CTX)
    return M.mach_msg(r.header, opt, 0, ctypes.sizeof(r), name, timeout, 0), r


def send_port(dest: int, name: int, disposition: int, dest_disposition: int = COPY_SEND) -> int:
    m = PortMsg()
    m.header.msgh_bits = M.MACH_MSGH_BITS(dest_disposition, 0) | M.MACH_MSGH_BITS_COMPLEX
    m.header.msgh_size = ctypes.sizeof(PortMsg)
    m.header.msgh_remote_port = dest
    m.body.msgh_descriptor_count = 1
    m.port.name = name
    m.port.disposition = disposition
    m.port.type = M.MACH_MSG_PORT_DESCRIPTOR
    return M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0)


def recv_port(name: int, timeout: int = 5000) -> tuple[int, PortMsgRcv]:
    r = PortMsgRcv()
    return M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), name, timeout, 0), r


# -- mach_port_allocate ------------------------------------------------------------
# mach_port.c:668-670 KERN_INVALID_VALUE for a right other than RECEIVE, PORT_SET
# and DEAD_NAME (mach_port_allocate_full); :664-666 a dead name; the empty set's
# receive times out at ipc_mqueue.c:855-857; a send to a dead name is
# MACH_SEND_INVALID_DEST at ipc_kmsg.c:2016-2019.

def test_allocate_receive_makes_a_fresh_port(space: Space) -> None:
    p = space.alloc(R_RECEIVE)
    assert M.MACH_PORT_VALID(p) and p & 3 == 3
    assert type_of(p) == TY_RECEIVE
    assert refs(p, R_RECEIVE) == 1 and refs(p, R_SEND) == 0
    st = status(p)
    assert (st.mps_pset, st.mps_seqno, st.mps_mscount, st.mps_qlimit, st.mps_msgcount, st.mps_sorights,
            st.mps_srights, st.mps_pdrequest, st.mps_nsrequest) == (0, 0, 0, M.MACH_PORT_QLIMIT_DEFAULT,
                                                                     0, 0, 0, 0, 0)
    assert qlimit_of(p) == 5
    # it really is a port: a message to it arrives
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    assert send(p, text=b"alloc") == OK
    kr, r = recv(p)
    assert kr == OK and r.text == b"alloc" and r.header.msgh_local_port == p


def test_allocate_port_set_and_dead_name(space: Space) -> None:
    s = space.alloc(R_PORT_SET)
    d = space.alloc(R_DEAD_NAME)
    assert s & 3 == 3 and d & 3 == 3 and s != d
    assert type_of(s) == TY_PORT_SET and refs(s, R_PORT_SET) == 1
    assert type_of(d) == TY_DEAD_NAME and refs(d, R_DEAD_NAME) == 1
    # an empty set: nothing to receive
    assert recv(s, timeout=10)[0] == M.MACH_RCV_TIMED_OUT
    # a dead name is no destination
    assert send(d) == M.MACH_SEND_INVALID_DEST


@pytest.mark.parametrize("right", [R_SEND, R_SEND_ONCE, R_LABELH, M.MACH_PORT_RIGHT_NUMBER, 99, 0xFFFFFFFF])
def test_allocate_invalid_rights(space: Space, right: int) -> None:
    before = names_and_types()
    name = M.mach_port_t(0x5A5A)
    assert M.mach_port_allocate(T(), right, byref(name)) == M.KERN_INVALID_VALUE
    assert name.value == 0x5A5A
    assert names_and_types() == before


# -- mach_port_allocate_name ---------------------------------------------------------
# mach_port.c:489-490 KERN_INVALID_VALUE for MACH_PORT_NULL and MACH_PORT_DEAD,
# :668-670 for a bad right; ipc_entry.c:331-333 KERN_INVALID_VALUE for a name
# without its generation's low bits; ipc_entry.c:335-336 KERN_FAILURE for index 0,
# :431-435 for an index in use under another generation; ipc_object.c:502-505
# KERN_NAME_EXISTS; mach_port.c:664-666 a dead name gets a name of XNU's choosing.

def _free_name(space: Space) -> int:
    """A name at an index beyond every name in use, low bits 3."""
    top = max(M.MACH_PORT_INDEX(n) for n in names_and_types())
    return ((top + 3) << 8) | 0x03


def test_allocate_name_receive_and_port_set(space: Space) -> None:
    n = space.keep(_free_name(space))
    assert M.mach_port_allocate_name(T(), R_RECEIVE, n) == OK
    assert type_of(n) == TY_RECEIVE
    assert M.mach_port_insert_right(T(), n, n, MAKE_SEND) == OK
    assert send(n, text=b"named") == OK
    kr, r = recv(n)
    assert kr == OK and r.text == b"named" and r.header.msgh_local_port == n
    s = space.keep(n + 0x100)
    assert M.mach_port_allocate_name(T(), R_PORT_SET, s) == OK
    assert type_of(s) == TY_PORT_SET
    assert M.mach_port_insert_member(T(), n, s) == OK
    # the same name again, whatever the right
    for right, name in ((R_RECEIVE, n), (R_PORT_SET, n), (R_RECEIVE, s), (R_PORT_SET, s)):
        assert call_reclaiming(M.mach_port_allocate_name, T(), right, name)[0] == M.KERN_NAME_EXISTS
    assert type_of(n) == TY_SEND_RECEIVE and type_of(s) == TY_PORT_SET
    assert status(n).mps_pset == 1


def test_allocate_name_reuses_a_freed_name(space: Space) -> None:
    d = space.alloc(R_DEAD_NAME)
    assert M.mach_port_deallocate(T(), d) == OK
    assert M.mach_port_allocate_name(T(), R_RECEIVE, d) == OK
    assert type_of(d) == TY_RECEIVE


@pytest.mark.parametrize("low", [0x00, 0x01, 0x02, 0x04, 0x06, 0xFE])
def test_allocate_name_low_bits_must_be_3(space: Space, low: int) -> None:
    n = (_free_name(space) & ~0xFF) | low
    before = names_and_types()
    assert M.mach_port_allocate_name(T(), R_RECEIVE, n) == M.KERN_INVALID_VALUE
    assert M.mach_port_allocate_name(T(), R_PORT_SET, n) == M.KERN_INVALID_VALUE
    assert names_and_types() == before


@pytest.mark.parametrize("right", [R_RECEIVE, R_PORT_SET, R_DEAD_NAME, R_SEND])
@pytest.mark.parametrize("name", [NULL, DEAD])
def test_allocate_name_null_or_dead_is_invalid_value(space: Space, right: int, name: int) -> None:
    before = names_and_types()
    assert M.mach_port_allocate_name(T(), right, name) == M.KERN_INVALID_VALUE
    assert names_and_types() == before


@pytest.mark.parametrize("right", [R_SEND, R_SEND_ONCE, R_LABELH, 6, 99])
def test_allocate_name_invalid_right(space: Space, right: int) -> None:
    n = _free_name(space)
    assert M.mach_port_allocate_name(T(), right, n) == M.KERN_INVALID_VALUE
    assert type_kr(n) == M.KERN_INVALID_NAME


def test_allocate_name_dead_name_ignores_the_name(space: Space) -> None:
    n = _free_name(space)
    before = names_and_types()
    assert M.mach_port_allocate_name(T(), R_DEAD_NAME, n) == OK
    after = names_and_types()
    assert n not in after and type_kr(n) == M.KERN_INVALID_NAME
    new = set(after) - set(before)
    assert len(new) == 1
    d = space.keep(new.pop())
    assert after[d] == TY_DEAD_NAME and refs(d, R_DEAD_NAME) == 1
    # even a name in use is no obstacle
    p = space.alloc()
    assert M.mach_port_allocate_name(T(), R_DEAD_NAME, p) == OK
    assert type_of(p) == TY_RECEIVE
    for name, t in names_and_types().items():
        if name not in before and name != d and name != p:
            space.keep(name)
            assert t == TY_DEAD_NAME


@pytest.mark.parametrize("name", [0x03, 0x7B])
def test_allocate_name_index_zero_is_failure(space: Space, name: int) -> None:
    assert call_reclaiming(M.mach_port_allocate_name, T(), R_RECEIVE, name)[0] == M.KERN_FAILURE


def test_allocate_name_generation_collision_is_failure(space: Space) -> None:
    p = space.alloc()
    other = (p & ~0xFF) | ((gen(p) + 4) & 0xFF)
    assert call_reclaiming(M.mach_port_allocate_name, T(), R_RECEIVE, other)[0] == M.KERN_FAILURE


def test_failed_allocate_name_leaks_no_fd(space: Space) -> None:
    p = space.alloc()
    s = space.alloc(R_PORT_SET)
    leaked = []
    for name in (p, s, 0x03, 0x7B, (p & ~0xFF) | ((gen(p) + 4) & 0xFF)):
        kr, fds = call_reclaiming(M.mach_port_allocate_name, T(), R_RECEIVE, name)
        assert kr != OK
        leaked += fds
    assert leaked == []


# -- names and generations -------------------------------------------------------------
# ipc_entry.c:122-126 a name whose generation differs from the entry's is no
# name (KERN_INVALID_NAME at ipc_right.c:300-302, MACH_RCV_INVALID_NAME at
# ipc_mqueue.c:1576-1577); ipc_entry.c:228-236 each claim takes the next
# generation, rolling over; :480-482 and :213-220 the free list is LIFO.

def test_freed_index_is_reused_with_next_generation(space: Space) -> None:
    a = space.alloc()
    assert M.mach_port_destroy(T(), a) == OK
    b = space.alloc()
    assert M.MACH_PORT_INDEX(b) == M.MACH_PORT_INDEX(a) and next_gen(a, b), (hex(a), hex(b))
    # the stale name denotes nothing, although its index is in use again
    assert type_kr(a) == M.KERN_INVALID_NAME
    assert M.mach_port_deallocate(T(), a) == M.KERN_INVALID_NAME
    assert M.mach_port_destroy(T(), a) == M.KERN_INVALID_NAME
    assert mod_refs(a, R_RECEIVE, -1) == M.KERN_INVALID_NAME
    assert M.mach_port_get_refs(T(), a, R_RECEIVE, byref(M.mach_port_urefs_t())) == M.KERN_INVALID_NAME
    assert M.mach_port_insert_right(T(), a, a, MAKE_SEND) == M.KERN_INVALID_NAME
    assert M.mach_port_set_mscount(T(), a, 1) == M.KERN_INVALID_NAME
    assert recv(a, timeout=0)[0] == M.MACH_RCV_INVALID_NAME
    assert type_of(b) == TY_RECEIVE  # untouched by all of the above


def test_freed_indices_are_reused_lifo(space: Space) -> None:
    a, b, c = space.alloc(R_DEAD_NAME), space.alloc(R_PORT_SET), space.alloc(R_RECEIVE)
    for n in (a, c, b):  # b's index is freed last
        assert M.mach_port_destroy(T(), n) == OK
    x, y, z = space.alloc(R_RECEIVE), space.alloc(R_DEAD_NAME), space.alloc(R_PORT_SET)
    assert [M.MACH_PORT_INDEX(n) for n in (x, y, z)] == [M.MACH_PORT_INDEX(n) for n in (b, c, a)]
    assert next_gen(b, x) and next_gen(c, y) and next_gen(a, z)
    assert (type_of(x), type_of(y), type_of(z)) == (TY_RECEIVE, TY_DEAD_NAME, TY_PORT_SET)


def test_every_name_has_low_bits_3(space: Space) -> None:
    made = [space.alloc(r) for r in (R_RECEIVE, R_PORT_SET, R_DEAD_NAME)]
    made.append(space.send_once(made[0]))
    made.append(space.construct())
    for n in made + list(names_and_types()):
        assert n & 3 == 3, hex(n)


def test_generation_rolls_over_as_in_xnu(space: Space) -> None:
    seen = []
    for _ in range(70):
        d = M.mach_port_t()
        assert M.mach_port_allocate(T(), R_DEAD_NAME, byref(d)) == OK
        seen.append(d.value)
        assert M.mach_port_deallocate(T(), d.value) == OK
    assert len({M.MACH_PORT_INDEX(n) for n in seen}) == 1  # LIFO: one index throughout
    for old, new in zip(seen, seen[1:]):
        assert gen(new) == gen(old) + 4 or (gen(new) == 0x03 and gen(old) in ROLLOVER_GENS), (hex(old), hex(new))


# -- mach_port_deallocate ---------------------------------------------------------------
# mach_port.c:751-752 KERN_SUCCESS for MACH_PORT_NULL and MACH_PORT_DEAD;
# ipc_right.c:300-302 KERN_INVALID_NAME; ipc_right.c:1216-1219 KERN_INVALID_RIGHT
# for a receive right alone (ipc_right_dealloc); :1043-1058 a port set is
# destroyed, waking its receiver with THREAD_RESTART (ipc_pset.c:232), which is
# MACH_RCV_PORT_CHANGED at ipc_mqueue.c:863-866.

@pytest.mark.parametrize("name", [NULL, DEAD])
def test_deallocate_null_and_dead_are_no_ops(space: Space, name: int) -> None:
    before = names_and_types()
    assert M.mach_port_deallocate(T(), name) == OK
    assert names_and_types() == before


def test_deallocate_unknown_name(space: Space) -> None:
    assert M.mach_port_deallocate(T(), _free_name(space)) == M.KERN_INVALID_NAME


def test_deallocate_receive_only_is_invalid_right(space: Space) -> None:
    p = space.alloc()
    assert M.mach_port_deallocate(T(), p) == M.KERN_INVALID_RIGHT
    assert type_of(p) == TY_RECEIVE


def test_deallocate_send_urefs_one_at_a_time(space: Space) -> None:
    p = space.with_send(3)
    assert refs(p, R_SEND) == 3
    assert M.mach_port_deallocate(T(), p) == OK
    assert refs(p, R_SEND) == 2 and type_of(p) == TY_SEND_RECEIVE
    assert M.mach_port_deallocate(T(), p) == OK
    assert M.mach_port_deallocate(T(), p) == OK
    assert type_of(p) == TY_RECEIVE and refs(p, R_SEND) == 0
    assert status(p).mps_srights == 0
    assert M.mach_port_deallocate(T(), p) == M.KERN_INVALID_RIGHT
    assert send(p) == M.MACH_SEND_INVALID_DEST  # no send right left


def test_deallocate_dead_name_and_send_once(space: Space) -> None:
    d = space.alloc(R_DEAD_NAME)
    assert mod_refs(d, R_DEAD_NAME, 1) == OK
    assert M.mach_port_deallocate(T(), d) == OK
    assert refs(d, R_DEAD_NAME) == 1
    assert M.mach_port_deallocate(T(), d) == OK
    assert type_kr(d) == M.KERN_INVALID_NAME
    p = space.alloc()
    so = space.send_once(p)
    assert type_of(so) == TY_SEND_ONCE
    assert M.mach_port_deallocate(T(), so) == OK
    assert type_kr(so) == M.KERN_INVALID_NAME
    assert type_of(p) == TY_RECEIVE


def test_deallocate_port_set_destroys_it(space: Space) -> None:
    s = space.alloc(R_PORT_SET)
    p = space.alloc()
    assert M.mach_port_insert_member(T(), p, s) == OK
    assert status(p).mps_pset == 1
    assert M.mach_port_deallocate(T(), s) == OK
    assert type_kr(s) == M.KERN_INVALID_NAME
    assert status(p).mps_pset == 0 and type_of(p) == TY_RECEIVE
    assert recv(s, timeout=0)[0] == M.MACH_RCV_INVALID_NAME


def test_deallocating_a_set_wakes_its_receiver(space: Space) -> None:
    s = space.alloc(R_PORT_SET)
    p = space.alloc()
    assert M.mach_port_insert_member(T(), p, s) == OK
    result: list[object] = []

    def receiver() -> None:
        try:
            result.append(recv(s, timeout=800)[0])
        except BaseException as e:  # noqa: BLE001
            result.append(e)

    th = threading.Thread(target=receiver)
    th.start()
    wait_blocked(th)
    assert M.mach_port_deallocate(T(), s) == OK
    th.join(5)
    assert result == [M.MACH_RCV_PORT_CHANGED]


# -- mach_port_destroy -------------------------------------------------------------------
# mach_port.c:705-706 KERN_SUCCESS for MACH_PORT_NULL and MACH_PORT_DEAD;
# ipc_right.c:300-302 KERN_INVALID_NAME; ipc_right.c:952-962 KERN_INVALID_RIGHT
# (and a guard exception) for a guarded receive right (ipc_right_destroy), as
# ipc_right.c:1333-1339 and :1678-1679 for mod_refs(RECEIVE, -1).

@pytest.mark.parametrize("name", [NULL, DEAD])
def test_destroy_null_and_dead(space: Space, name: int) -> None:
    before = names_and_types()
    assert M.mach_port_destroy(T(), name) == OK
    assert names_and_types() == before


def test_destroy_every_kind_of_entry(space: Space) -> None:
    assert M.mach_port_destroy(T(), _free_name(space)) == M.KERN_INVALID_NAME
    d = space.alloc(R_DEAD_NAME)
    assert mod_refs(d, R_DEAD_NAME, 9) == OK
    s = space.alloc(R_PORT_SET)
    p = space.with_send(4)
    q = space.alloc()
    so = space.send_once(q)
    assert M.mach_port_insert_member(T(), q, s) == OK
    for n in (d, so, s, p):
        assert M.mach_port_destroy(T(), n) == OK, hex(n)
        assert type_kr(n) == M.KERN_INVALID_NAME
    assert status(q).mps_pset == 0  # the set went away under its member
    # a receive right with messages queued: they go with it
    assert M.mach_port_insert_right(T(), q, q, MAKE_SEND) == OK
    assert send(q) == OK
    assert M.mach_port_destroy(T(), q) == OK
    assert type_kr(q) == M.KERN_INVALID_NAME
    assert recv(q, timeout=0)[0] == M.MACH_RCV_INVALID_NAME


def _guard_bypass_child(how: str) -> None:
    kr, g = construct(M.MPO_CONTEXT_AS_GUARD, context=0xFEED)
    assert kr == OK
    if how == "destroy":
        kr = M.mach_port_destroy(T(), g)
    else:
        kr = mod_refs(g, R_RECEIVE, -1)
    assert kr == M.KERN_INVALID_RIGHT, kr
    assert type_of(g) == TY_RECEIVE


@pytest.mark.parametrize("how", ["destroy", "mod_refs"])
def test_guarded_port_is_not_destroyed_without_its_guard(how: str) -> None:
    # the spec makes this guard exception fatal: a child killed by a signal passes
    code = child_exit_code(lambda: _guard_bypass_child(how))
    assert code == 0 or code < 0, f"the child returned {code}"


# -- mach_port_mod_refs -----------------------------------------------------------------------
# mach_port.c:902-903 KERN_INVALID_VALUE for a right out of range; :906-911
# KERN_SUCCESS for SEND and SEND_ONCE on MACH_PORT_NULL/DEAD, else
# KERN_INVALID_NAME; ipc_right.c (ipc_right_delta): port set :1271-1285,
# receive :1303-1315, send-once :1406-1433, dead name :1469-1505, send
# :1535-1585 (KERN_INVALID_RIGHT at :1663-1668, KERN_INVALID_VALUE at
# :1670-1676); LABELH :1649-1650; urefs pegged at MACH_PORT_UREFS_MAX, only
# -MACH_PORT_UREFS_MAX releases them: :1493-1509 and :1573-1589.

@pytest.mark.parametrize("right", [M.MACH_PORT_RIGHT_NUMBER, 7, 99, 0xFFFFFFFF])
def test_mod_refs_right_out_of_range(space: Space, right: int) -> None:
    p = space.alloc()
    for name in (p, NULL, DEAD):
        assert mod_refs(name, right, 0) == M.KERN_INVALID_VALUE


def test_mod_refs_null_and_dead_names(space: Space) -> None:
    for name in (NULL, DEAD):
        for right in (R_SEND, R_SEND_ONCE):
            assert mod_refs(name, right, 5) == OK
            assert mod_refs(name, right, -1) == OK
        for right in (R_RECEIVE, R_PORT_SET, R_DEAD_NAME):
            assert mod_refs(name, right, 0) == M.KERN_INVALID_NAME
    for right in (R_SEND, R_RECEIVE, R_SEND_ONCE, R_PORT_SET, R_DEAD_NAME):
        assert mod_refs(_free_name(space), right, 0) == M.KERN_INVALID_NAME


def test_mod_refs_labelh_on_a_right_is_invalid_right(space: Space) -> None:
    for n in (space.alloc(), space.alloc(R_DEAD_NAME), space.with_send()):
        assert mod_refs(n, R_LABELH, 0) == M.KERN_INVALID_RIGHT


def test_mod_refs_labelh_on_no_name_is_invalid_name(space: Space) -> None:
    for name in (NULL, DEAD, _free_name(space)):
        assert mod_refs(name, R_LABELH, 0) == M.KERN_INVALID_NAME


def test_mod_refs_receive(space: Space) -> None:
    p = space.alloc()
    assert mod_refs(p, R_RECEIVE, 0) == OK
    for delta in (1, -2, 2, 65535, -65535):
        assert mod_refs(p, R_RECEIVE, delta) == M.KERN_INVALID_VALUE
    assert type_of(p) == TY_RECEIVE
    for n in (space.alloc(R_PORT_SET), space.alloc(R_DEAD_NAME), space.send_once(p)):
        assert mod_refs(n, R_RECEIVE, -1) == M.KERN_INVALID_RIGHT
        assert mod_refs(n, R_RECEIVE, 0) == M.KERN_INVALID_RIGHT
    s = space.alloc(R_PORT_SET)
    assert M.mach_port_insert_member(T(), p, s) == OK
    assert mod_refs(p, R_RECEIVE, -1) == OK
    assert type_kr(p) == M.KERN_INVALID_NAME
    assert type_of(s) == TY_PORT_SET  # the set stays, without its member
    assert recv(s, timeout=10)[0] == M.MACH_RCV_TIMED_OUT


def test_mod_refs_receive_leaves_send_urefs_as_a_dead_name(space: Space) -> None:
    p = space.with_send(3)
    assert mod_refs(p, R_RECEIVE, -1) == OK
    assert type_of(p) == TY_DEAD_NAME
    assert refs(p, R_DEAD_NAME) == 3 and refs(p, R_SEND) == 0 and refs(p, R_RECEIVE) == 0
    assert send(p) == M.MACH_SEND_INVALID_DEST
    assert M.mach_port_deallocate(T(), p) == OK
    assert refs(p, R_DEAD_NAME) == 2


def test_mod_refs_port_set(space: Space) -> None:
    s = space.alloc(R_PORT_SET)
    assert mod_refs(s, R_PORT_SET, 0) == OK
    for delta in (1, -2, 3):
        assert mod_refs(s, R_PORT_SET, delta) == M.KERN_INVALID_VALUE
    for n in (space.alloc(), space.alloc(R_DEAD_NAME)):
        assert mod_refs(n, R_PORT_SET, -1) == M.KERN_INVALID_RIGHT
    assert mod_refs(s, R_PORT_SET, -1) == OK
    assert type_kr(s) == M.KERN_INVALID_NAME


def test_mod_refs_send_once(space: Space) -> None:
    p = space.alloc()
    so = space.send_once(p)
    assert mod_refs(so, R_SEND_ONCE, 0) == OK
    for delta in (1, -2, 5):
        assert mod_refs(so, R_SEND_ONCE, delta) == M.KERN_INVALID_VALUE
    assert refs(so, R_SEND_ONCE) == 1
    for right in (R_SEND, R_DEAD_NAME, R_RECEIVE):
        assert mod_refs(so, right, 0) == M.KERN_INVALID_RIGHT
    assert mod_refs(p, R_SEND_ONCE, -1) == M.KERN_INVALID_RIGHT
    assert mod_refs(so, R_SEND_ONCE, -1) == OK
    assert type_kr(so) == M.KERN_INVALID_NAME


def test_mod_refs_send(space: Space) -> None:
    p = space.alloc()
    # a receive right alone cannot grow a send right this way
    assert mod_refs(p, R_SEND, 1) == M.KERN_INVALID_RIGHT
    assert mod_refs(p, R_SEND, 0) == M.KERN_INVALID_RIGHT
    for n in (space.alloc(R_PORT_SET), space.alloc(R_DEAD_NAME)):
        assert mod_refs(n, R_SEND, 1) == M.KERN_INVALID_RIGHT
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    assert mod_refs(p, R_SEND, 4) == OK and refs(p, R_SEND) == 5
    assert mod_refs(p, R_SEND, 0) == OK and refs(p, R_SEND) == 5
    assert mod_refs(p, R_SEND, -6) == M.KERN_INVALID_VALUE  # underflow
    assert mod_refs(p, R_SEND, 65536) == M.KERN_INVALID_VALUE
    assert mod_refs(p, R_SEND, -65536) == M.KERN_INVALID_VALUE
    assert refs(p, R_SEND) == 5
    assert mod_refs(p, R_SEND, -2) == OK and refs(p, R_SEND) == 3
    assert mod_refs(p, R_DEAD_NAME, 1) == M.KERN_INVALID_RIGHT  # a live send right is no dead name
    assert mod_refs(p, R_SEND, -3) == OK
    assert type_of(p) == TY_RECEIVE  # the send right is gone, the receive right stays
    assert send(p) == M.MACH_SEND_INVALID_DEST


def test_mod_refs_dead_name(space: Space) -> None:
    d = space.alloc(R_DEAD_NAME)
    assert mod_refs(d, R_DEAD_NAME, 0) == OK
    assert mod_refs(d, R_DEAD_NAME, 6) == OK and refs(d, R_DEAD_NAME) == 7
    assert mod_refs(d, R_DEAD_NAME, -8) == M.KERN_INVALID_VALUE
    assert mod_refs(d, R_DEAD_NAME, 65536) == M.KERN_INVALID_VALUE
    assert refs(d, R_DEAD_NAME) == 7
    for right in (R_SEND, R_RECEIVE, R_SEND_ONCE, R_PORT_SET):
        assert mod_refs(d, right, 0) == M.KERN_INVALID_RIGHT
    for n in (space.alloc(), space.alloc(R_PORT_SET)):
        assert mod_refs(n, R_DEAD_NAME, 1) == M.KERN_INVALID_RIGHT
    assert mod_refs(d, R_DEAD_NAME, -7) == OK
    assert type_kr(d) == M.KERN_INVALID_NAME


@pytest.mark.parametrize("right", [R_SEND, R_DEAD_NAME])
def test_urefs_saturate_and_only_minus_max_releases(space: Space, right: int) -> None:
    n = space.with_send(1) if right == R_SEND else space.alloc(R_DEAD_NAME)
    # below the limit nothing saturates
    assert mod_refs(n, right, 65533) == OK and refs(n, right) == 65534
    assert M.mach_port_deallocate(T(), n) == OK and refs(n, right) == 65533
    # reaching the limit pegs, with no error (no KERN_UREFS_OVERFLOW)
    assert mod_refs(n, right, 10) == OK and refs(n, right) == UREFS_MAX
    assert mod_refs(n, right, 1) == OK and refs(n, right) == UREFS_MAX
    assert mod_refs(n, right, 65535) == OK and refs(n, right) == UREFS_MAX
    # pegged: -1, deallocate and any other delta leave it
    assert M.mach_port_deallocate(T(), n) == OK and refs(n, right) == UREFS_MAX
    for delta in (-1, -100, -65534, 0, 7):
        assert mod_refs(n, right, delta) == OK and refs(n, right) == UREFS_MAX
    assert mod_refs(n, right, -65536) == M.KERN_INVALID_VALUE
    # only -65535 removes it
    assert mod_refs(n, right, -65535) == OK
    if right == R_SEND:
        assert type_of(n) == TY_RECEIVE
    else:
        assert type_kr(n) == M.KERN_INVALID_NAME


def test_receive_minus_one_keeps_pegged_send_urefs(space: Space) -> None:
    p = space.with_send(1)
    assert mod_refs(p, R_SEND, 65535) == OK and refs(p, R_SEND) == UREFS_MAX
    assert mod_refs(p, R_RECEIVE, -1) == OK
    assert type_of(p) == TY_DEAD_NAME and refs(p, R_DEAD_NAME) == UREFS_MAX


# -- mach_port_get_refs, mach_port_type -------------------------------------------------
# mach_port.c:815-816 KERN_INVALID_VALUE for a right out of range; :819-825 one
# send or send-once reference on MACH_PORT_NULL/DEAD, else KERN_INVALID_NAME;
# :841-865 the count per right (LABELH and a right not held: 0). mach_port_type:
# :418-419 KERN_INVALID_NAME for MACH_PORT_NULL, :422-424 a dead name for
# MACH_PORT_DEAD, ipc_right.c:300-302 KERN_INVALID_NAME.

def test_get_refs_rules(space: Space) -> None:
    out = M.mach_port_urefs_t(0xBAD)
    p = space.alloc()
    for right in (M.MACH_PORT_RIGHT_NUMBER, 99):
        for name in (p, NULL, DEAD):
            assert M.mach_port_get_refs(T(), name, right, byref(out)) == M.KERN_INVALID_VALUE
    assert out.value == 0xBAD
    for name in (NULL, DEAD):
        for right in (R_SEND, R_SEND_ONCE):
            out.value = 0xBAD
            assert M.mach_port_get_refs(T(), name, right, byref(out)) == OK and out.value == 1
        for right in (R_RECEIVE, R_PORT_SET, R_DEAD_NAME):
            assert M.mach_port_get_refs(T(), name, right, byref(out)) == M.KERN_INVALID_NAME
    assert M.mach_port_get_refs(T(), _free_name(space), R_SEND, byref(out)) == M.KERN_INVALID_NAME
    s, d = space.alloc(R_PORT_SET), space.alloc(R_DEAD_NAME)
    so = space.send_once(p)
    sr = space.with_send(6)
    expect = {
        p: {R_RECEIVE: 1, R_SEND: 0, R_SEND_ONCE: 0, R_PORT_SET: 0, R_DEAD_NAME: 0},
        s: {R_RECEIVE: 0, R_SEND: 0, R_SEND_ONCE: 0, R_PORT_SET: 1, R_DEAD_NAME: 0},
        d: {R_RECEIVE: 0, R_SEND: 0, R_SEND_ONCE: 0, R_PORT_SET: 0, R_DEAD_NAME: 1},
        so: {R_RECEIVE: 0, R_SEND: 0, R_SEND_ONCE: 1, R_PORT_SET: 0, R_DEAD_NAME: 0},
        sr: {R_RECEIVE: 1, R_SEND: 6, R_SEND_ONCE: 0, R_PORT_SET: 0, R_DEAD_NAME: 0},
    }
    for name, by_right in expect.items():
        for right, want in by_right.items():
            assert refs(name, right) == want, (hex(name), right)


def test_get_refs_labelh_is_zero(space: Space) -> None:
    assert refs(space.alloc(), R_LABELH) == 0


def test_type_of_each_kind(space: Space) -> None:
    t = M.mach_port_type_t(0xBAD)
    assert M.mach_port_type(T(), DEAD, byref(t)) == OK and t.value == TY_DEAD_NAME
    t.value = 0xBAD
    assert M.mach_port_type(T(), NULL, byref(t)) == M.KERN_INVALID_NAME and t.value == 0xBAD
    assert M.mach_port_type(T(), _free_name(space), byref(t)) == M.KERN_INVALID_NAME
    p = space.alloc()
    assert type_of(p) == TY_RECEIVE
    assert type_of(space.with_send()) == TY_SEND_RECEIVE
    assert type_of(space.send_once(p)) == TY_SEND_ONCE
    assert type_of(space.alloc(R_PORT_SET)) == TY_PORT_SET
    assert type_of(space.alloc(R_DEAD_NAME)) == TY_DEAD_NAME
    assert type_of(T()) == TY_SEND


# -- mach_port_names ------------------------------------------------------------------------
# mach_port.c:223 (mach_port_names): every name and its type, in memory the call
# allocates in the caller's map.

def test_names_lists_every_right_in_new_memory(space: Space) -> None:
    p = space.alloc()
    sr = space.with_send(2)
    s = space.alloc(R_PORT_SET)
    d = space.alloc(R_DEAD_NAME)
    so = space.send_once(p)
    names, types = M.mach_port_array_t(), M.mach_port_type_array_t()
    ncnt, tcnt = M.mach_msg_type_number_t(), M.mach_msg_type_number_t()
    assert M.mach_port_names(T(), byref(names), byref(ncnt), byref(types), byref(tcnt)) == OK
    assert ncnt.value == tcnt.value >= 7
    naddr = ctypes.cast(names, ctypes.c_void_p).value
    taddr = ctypes.cast(types, ctypes.c_void_p).value
    assert naddr and taddr and naddr != taddr
    # each call hands out arrays of its own
    again = names_and_types()
    assert again == {names[i]: types[i] for i in range(ncnt.value)}
    names2, types2 = M.mach_port_array_t(), M.mach_port_type_array_t()
    assert M.mach_port_names(T(), byref(names2), byref(ncnt), byref(types2), byref(tcnt)) == OK
    addrs2 = [ctypes.cast(a, ctypes.c_void_p).value for a in (names2, types2)]
    assert not {naddr, taddr} & set(addrs2)
    for a in addrs2:
        assert M.mach_vm_deallocate(T(), a, ncnt.value * 4) == OK
    assert perms_at(naddr) == "rw-p" and perms_at(taddr) == "rw-p"
    got = {names[i]: types[i] for i in range(ncnt.value)}
    listed = [names[i] for i in range(ncnt.value)]
    assert [M.MACH_PORT_INDEX(n) for n in listed] == sorted(M.MACH_PORT_INDEX(n) for n in listed)
    assert got[p] == TY_RECEIVE and got[sr] == TY_SEND_RECEIVE and got[s] == TY_PORT_SET
    assert got[d] == TY_DEAD_NAME and got[so] == TY_SEND_ONCE and got[T()] == TY_SEND
    for name, t in got.items():
        assert type_of(name) == t
    page = M.vm_page_size
    for addr in (naddr, taddr):
        assert M.mach_vm_deallocate(T(), addr, ncnt.value * 4) == OK
        assert is_free(addr, addr + page)
    assert M.mach_port_destroy(T(), d) == OK
    assert d not in names_and_types()


# -- mach_port_insert_right ----------------------------------------------------------------------
# mach_kernelrpc.c:234-245 MAKE_SEND and COPY_SEND under the port's own name take
# ipc_object_insert_send_right: ipc_right.c:300-302 KERN_INVALID_NAME,
# ipc_object.c:857-859 KERN_INVALID_CAPABILITY for a dead name, :861-863
# KERN_INVALID_RIGHT for a port set, :871-897 KERN_INVALID_RIGHT without the
# receive (MAKE) or send (COPY) right, pegged urefs at :879 and :891. Other
# dispositions go through ipc_object_copyin (mach_kernelrpc.c:248):
# ipc_right.c:2589-2591 KERN_INVALID_RIGHT (MOVE_SEND without a send right, a
# disposition that is no right); then mach_port.c:1711-1713 KERN_INVALID_VALUE
# for a NULL or DEAD name, ipc_object.c:1092-1100 KERN_RIGHT_EXISTS (the port's
# send right has another name), :1105-1108 KERN_NAME_EXISTS.

def test_insert_right_make_copy_and_move_send(space: Space) -> None:
    p = space.alloc()
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    assert type_of(p) == TY_SEND_RECEIVE and refs(p, R_SEND) == 1
    st = status(p)
    assert st.mps_mscount == 1 and st.mps_srights == 1
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    assert refs(p, R_SEND) == 2 and status(p).mps_mscount == 2
    assert M.mach_port_insert_right(T(), p, p, COPY_SEND) == OK
    assert refs(p, R_SEND) == 3 and status(p).mps_mscount == 2  # copying makes nothing
    assert M.mach_port_insert_right(T(), p, p, MOVE_SEND) == OK
    assert refs(p, R_SEND) == 3  # moved out and back under the same name
    assert send(p, text=b"ins") == OK
    kr, r = recv(p)
    assert kr == OK and r.text == b"ins"


def test_insert_right_copy_send_pegged(space: Space) -> None:
    p = space.with_send(1)
    assert mod_refs(p, R_SEND, 65534) == OK
    assert M.mach_port_insert_right(T(), p, p, COPY_SEND) == OK
    assert refs(p, R_SEND) == UREFS_MAX


def test_insert_right_make_send_pegged(space: Space) -> None:
    p = space.with_send(1)
    assert mod_refs(p, R_SEND, 65534) == OK
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    assert refs(p, R_SEND) == UREFS_MAX and status(p).mps_mscount == 2


def test_insert_right_errors(space: Space) -> None:
    p = space.alloc()
    s = space.alloc(R_PORT_SET)
    so = space.send_once(p)
    unknown = _free_name(space)
    assert M.mach_port_insert_right(T(), unknown, unknown, MAKE_SEND) == M.KERN_INVALID_NAME
    assert M.mach_port_insert_right(T(), unknown, unknown, COPY_SEND) == M.KERN_INVALID_NAME
    # COPY_SEND needs a send right, MAKE_SEND a receive right
    assert M.mach_port_insert_right(T(), p, p, COPY_SEND) == M.KERN_INVALID_RIGHT
    assert M.mach_port_insert_right(T(), p, p, MOVE_SEND) == M.KERN_INVALID_RIGHT
    for n in (s, so):
        assert M.mach_port_insert_right(T(), n, n, MAKE_SEND) == M.KERN_INVALID_RIGHT
        assert M.mach_port_insert_right(T(), n, n, COPY_SEND) == M.KERN_INVALID_RIGHT
    # a NULL or DEAD name cannot receive the right
    for name in (NULL, DEAD):
        assert M.mach_port_insert_right(T(), name, p, MAKE_SEND) == M.KERN_INVALID_VALUE
    assert type_of(p) == TY_RECEIVE and type_of(so) == TY_SEND_ONCE and type_of(s) == TY_PORT_SET


def test_insert_right_on_dead_name_is_invalid_capability(space: Space) -> None:
    d = space.alloc(R_DEAD_NAME)
    assert M.mach_port_insert_right(T(), d, d, MAKE_SEND) == M.KERN_INVALID_CAPABILITY
    assert M.mach_port_insert_right(T(), d, d, COPY_SEND) == M.KERN_INVALID_CAPABILITY


@pytest.mark.parametrize("disposition", [0, M.MACH_MSG_TYPE_PORT_NAME, 22, 99])
def test_insert_right_bad_disposition_is_invalid_right(space: Space, disposition: int) -> None:
    p = space.with_send(1)
    assert M.mach_port_insert_right(T(), p, p, disposition) == M.KERN_INVALID_RIGHT


def test_insert_right_under_another_name_is_right_exists(space: Space) -> None:
    p = space.with_send(1)
    q = space.alloc()
    free = space.alloc(R_DEAD_NAME)
    assert M.mach_port_deallocate(T(), free) == OK
    assert M.mach_port_insert_right(T(), free, p, MAKE_SEND) == M.KERN_RIGHT_EXISTS
    assert M.mach_port_insert_right(T(), free, p, COPY_SEND) == M.KERN_RIGHT_EXISTS
    assert M.mach_port_insert_right(T(), q, p, MAKE_SEND) == M.KERN_RIGHT_EXISTS
    assert type_of(q) == TY_RECEIVE and refs(p, R_SEND) == 1


def test_insert_right_send_once_into_used_name(space: Space) -> None:
    p = space.alloc()
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND_ONCE) == M.KERN_NAME_EXISTS


# -- mach_port_extract_right -----------------------------------------------------------------
# mach_port.c:1753-1754 KERN_INVALID_VALUE for a disposition that is no port
# right, :1757-1763 KERN_INVALID_RIGHT for MACH_PORT_NULL/DEAD; then
# ipc_right_copyin: ipc_right.c:300-302 KERN_INVALID_NAME, :2589-2591
# KERN_INVALID_RIGHT for a right the name does not hold, :2596-2629 a dead
# name's send and send-once rights come out as MACH_PORT_DEAD.

@pytest.mark.parametrize("msgt", [0, M.MACH_MSG_TYPE_PORT_NAME, 22, 99])
def test_extract_right_invalid_disposition(space: Space, msgt: int) -> None:
    p = space.with_send(1)
    for name in (p, NULL, DEAD):
        kr, poly, pp = extract(name, msgt)
        assert kr == M.KERN_INVALID_VALUE and (poly, pp) == (0xABC, 0xABC)
    assert refs(p, R_SEND) == 1


def test_extract_right_name_errors(space: Space) -> None:
    for msgt in (MOVE_RECEIVE, MOVE_SEND, MOVE_SEND_ONCE, COPY_SEND, MAKE_SEND, MAKE_SEND_ONCE):
        for name in (NULL, DEAD):
            assert extract(name, msgt)[0] == M.KERN_INVALID_RIGHT
        assert extract(_free_name(space), msgt)[0] == M.KERN_INVALID_NAME
    p = space.alloc()
    s = space.alloc(R_PORT_SET)
    so = space.send_once(p)
    d = space.alloc(R_DEAD_NAME)
    cases = [(p, COPY_SEND), (p, MOVE_SEND), (p, MOVE_SEND_ONCE), (s, MAKE_SEND), (s, MOVE_RECEIVE),
             (s, COPY_SEND), (so, MAKE_SEND), (so, COPY_SEND), (so, MOVE_RECEIVE), (d, MAKE_SEND),
             (d, MAKE_SEND_ONCE), (d, MOVE_RECEIVE)]
    for name, msgt in cases:
        assert extract(name, msgt)[0] == M.KERN_INVALID_RIGHT, (hex(name), msgt)
    assert (type_of(p), type_of(s), type_of(so), type_of(d)) == (TY_RECEIVE, TY_PORT_SET, TY_SEND_ONCE,
                                                                 TY_DEAD_NAME)


def test_extract_right_send_dispositions_coalesce(space: Space) -> None:
    p = space.alloc()
    assert extract(p, MAKE_SEND) == (OK, p, PORT_SEND)
    assert type_of(p) == TY_SEND_RECEIVE and refs(p, R_SEND) == 1 and status(p).mps_mscount == 1
    assert extract(p, COPY_SEND) == (OK, p, PORT_SEND)
    assert refs(p, R_SEND) == 2
    assert extract(p, MOVE_SEND) == (OK, p, PORT_SEND)
    assert refs(p, R_SEND) == 2
    assert status(p).mps_mscount == 1


def test_extract_right_send_once_dispositions(space: Space) -> None:
    p = space.alloc()
    kr, so, pp = extract(p, MAKE_SEND_ONCE)
    space.keep(so)
    assert kr == OK and pp == PORT_SEND_ONCE and so != p
    assert type_of(so) == TY_SEND_ONCE and type_of(p) == TY_RECEIVE
    assert status(p).mps_sorights == 1
    kr, moved, pp = extract(so, MOVE_SEND_ONCE)
    space.keep(moved)
    assert kr == OK and pp == PORT_SEND_ONCE and type_of(moved) == TY_SEND_ONCE
    # it still reaches the port, once
    assert send(moved, MOVE_SEND_ONCE, b"once") == OK
    kr, r = recv(p)
    assert kr == OK and r.text == b"once"
    assert M.MACH_MSGH_BITS_LOCAL(r.header.msgh_bits) == PORT_SEND_ONCE
    assert type_kr(moved) == M.KERN_INVALID_NAME


def test_extract_right_move_receive(space: Space) -> None:
    p = space.alloc()
    kr, moved, pp = extract(p, MOVE_RECEIVE)
    space.keep(moved)
    assert kr == OK and pp == PORT_RECEIVE
    assert type_of(moved) == TY_RECEIVE
    sr = space.with_send(2)
    assert extract(sr, MOVE_RECEIVE) == (OK, sr, PORT_RECEIVE)  # rejoins its send right's name
    assert type_of(sr) == TY_SEND_RECEIVE and refs(sr, R_SEND) == 2


@pytest.mark.parametrize("msgt", [MOVE_RECEIVE, MOVE_SEND_ONCE])
def test_extract_right_moved_right_gets_a_new_name(space: Space, msgt: int) -> None:
    p = space.alloc()
    old = p if msgt == MOVE_RECEIVE else space.send_once(p)
    kr, new, _pp = extract(old, msgt)
    space.keep(new)
    assert kr == OK
    assert new != old and M.MACH_PORT_INDEX(new) == M.MACH_PORT_INDEX(old) and next_gen(old, new)
    assert type_kr(old) == M.KERN_INVALID_NAME


def test_extract_right_move_receive_clears_receiver_state(space: Space) -> None:
    p = space.with_send(1)
    s = space.alloc(R_PORT_SET)
    assert M.mach_port_insert_member(T(), p, s) == OK
    assert send(p) == OK and recv(p)[0] == OK
    st = status(p)
    assert (st.mps_mscount, st.mps_seqno, st.mps_pset) == (1, 1, 1)
    assert extract(p, MOVE_RECEIVE) == (OK, p, PORT_RECEIVE)
    st = status(p)
    assert (st.mps_mscount, st.mps_seqno, st.mps_pset) == (0, 0, 0)


def test_extract_right_from_dead_name(space: Space) -> None:
    d = space.alloc(R_DEAD_NAME)
    assert mod_refs(d, R_DEAD_NAME, 2) == OK
    assert extract(d, COPY_SEND) == (OK, DEAD, PORT_SEND)
    assert refs(d, R_DEAD_NAME) == 3
    assert extract(d, MOVE_SEND) == (OK, DEAD, PORT_SEND)
    assert refs(d, R_DEAD_NAME) == 2
    kr, poly, _pp = extract(d, MOVE_SEND_ONCE)
    assert (kr, poly) == (OK, DEAD)
    assert refs(d, R_DEAD_NAME) == 1


def test_extract_right_dead_send_once_type(space: Space) -> None:
    d = space.alloc(R_DEAD_NAME)
    assert extract(d, MOVE_SEND_ONCE) == (OK, DEAD, PORT_SEND_ONCE)


# -- port sets -----------------------------------------------------------------------------------
# insert/extract_member: mach_port.c:2214-2215 and :2273-2274 KERN_INVALID_RIGHT
# for a NULL or DEAD name; ipc_right.c:342-350 KERN_INVALID_NAME;
# ipc_object.c:326-340 KERN_INVALID_RIGHT when the member is no receive right or
# the set no set; kern/waitq.c:1918 KERN_ALREADY_IN_SET; mach_port.c:2294
# KERN_NOT_IN_SET. move_member: mach_port.c:1418-1423 KERN_INVALID_RIGHT, :1426-1443
# the same translation, and KERN_NOT_IN_SET when moving out of no set.

def test_insert_member_and_receive_through_the_set(space: Space) -> None:
    s = space.alloc(R_PORT_SET)
    a, b = space.with_send(1), space.with_send(1)
    # a message queued before the port joins becomes visible on the set
    assert send(a, text=b"early") == OK
    assert M.mach_port_insert_member(T(), a, s) == OK
    assert M.mach_port_insert_member(T(), b, s) == OK
    assert status(a).mps_pset == 1 and status(b).mps_pset == 1
    kr, r = recv(s)
    assert kr == OK and r.text == b"early" and r.header.msgh_local_port == a
    assert r.trailer.msgh_seqno == 0
    assert send(b, text=b"to b") == OK
    kr, r = recv(s)
    assert kr == OK and r.text == b"to b" and r.header.msgh_local_port == b
    assert send(a, text=b"again") == OK
    kr, r = recv(s)
    assert kr == OK and r.header.msgh_local_port == a and r.trailer.msgh_seqno == 1
    assert status(a).mps_seqno == 2 and status(b).mps_seqno == 1
    # a member can still be received from directly
    assert send(b, text=b"direct") == OK
    kr, r = recv(b)
    assert kr == OK and r.text == b"direct" and r.header.msgh_local_port == b
    assert recv(s, timeout=10)[0] == M.MACH_RCV_TIMED_OUT


def test_member_errors(space: Space) -> None:
    s = space.alloc(R_PORT_SET)
    p = space.alloc()
    d = space.alloc(R_DEAD_NAME)
    so = space.send_once(p)
    unknown = _free_name(space)
    for call in (M.mach_port_insert_member, M.mach_port_extract_member):
        for member, pset in ((NULL, s), (DEAD, s), (p, NULL), (p, DEAD)):
            assert call(T(), member, pset) == M.KERN_INVALID_RIGHT
        assert call(T(), unknown, s) == M.KERN_INVALID_NAME
        assert call(T(), p, unknown) == M.KERN_INVALID_NAME
        for member in (s, d, so):
            assert call(T(), member, s) == M.KERN_INVALID_RIGHT
        for pset in (p, d, so):
            assert call(T(), p, pset) == M.KERN_INVALID_RIGHT
    assert M.mach_port_extract_member(T(), p, s) == M.KERN_NOT_IN_SET
    assert M.mach_port_insert_member(T(), p, s) == OK
    assert M.mach_port_insert_member(T(), p, s) == M.KERN_ALREADY_IN_SET
    assert M.mach_port_extract_member(T(), p, s) == OK
    assert M.mach_port_extract_member(T(), p, s) == M.KERN_NOT_IN_SET
    assert status(p).mps_pset == 0


def test_port_in_several_sets(space: Space) -> None:
    s1, s2 = space.alloc(R_PORT_SET), space.alloc(R_PORT_SET)
    p = space.with_send(1)
    assert M.mach_port_insert_member(T(), p, s1) == OK
    assert M.mach_port_insert_member(T(), p, s2) == OK
    for s in (s1, s2):
        assert send(p) == OK
        kr, r = recv(s)
        assert kr == OK and r.header.msgh_local_port == p
    assert M.mach_port_extract_member(T(), p, s1) == OK
    assert status(p).mps_pset == 1  # still in s2
    assert send(p) == OK
    assert recv(s1, timeout=10)[0] == M.MACH_RCV_TIMED_OUT
    kr, r = recv(s2)
    assert kr == OK and r.header.msgh_local_port == p
    assert M.mach_port_extract_member(T(), p, s2) == OK
    assert status(p).mps_pset == 0


def test_move_member(space: Space) -> None:
    s1, s2, s3 = (space.alloc(R_PORT_SET) for _ in range(3))
    p = space.with_send(1)
    assert M.mach_port_move_member(T(), p, NULL) == M.KERN_NOT_IN_SET
    assert M.mach_port_insert_member(T(), p, s1) == OK
    assert M.mach_port_insert_member(T(), p, s2) == OK
    assert M.mach_port_move_member(T(), p, s3) == OK  # into s3, out of every other set
    assert M.mach_port_extract_member(T(), p, s1) == M.KERN_NOT_IN_SET
    assert M.mach_port_extract_member(T(), p, s2) == M.KERN_NOT_IN_SET
    assert M.mach_port_move_member(T(), p, s3) == OK  # already a member: still fine
    assert send(p) == OK
    kr, r = recv(s3)
    assert kr == OK and r.header.msgh_local_port == p
    assert M.mach_port_insert_member(T(), p, s1) == OK
    assert M.mach_port_move_member(T(), p, NULL) == OK  # out of all sets
    assert status(p).mps_pset == 0
    assert M.mach_port_extract_member(T(), p, s1) == M.KERN_NOT_IN_SET
    assert M.mach_port_extract_member(T(), p, s3) == M.KERN_NOT_IN_SET
    assert M.mach_port_move_member(T(), p, NULL) == M.KERN_NOT_IN_SET


def test_move_member_errors(space: Space) -> None:
    s = space.alloc(R_PORT_SET)
    p = space.alloc()
    d = space.alloc(R_DEAD_NAME)
    for member, after in ((NULL, s), (DEAD, s), (p, DEAD)):
        assert M.mach_port_move_member(T(), member, after) == M.KERN_INVALID_RIGHT
    assert M.mach_port_move_member(T(), _free_name(space), s) == M.KERN_INVALID_NAME
    assert M.mach_port_move_member(T(), p, _free_name(space)) == M.KERN_INVALID_NAME
    assert M.mach_port_move_member(T(), s, s) == M.KERN_INVALID_RIGHT
    assert M.mach_port_move_member(T(), d, s) == M.KERN_INVALID_RIGHT
    assert M.mach_port_move_member(T(), p, d) == M.KERN_INVALID_RIGHT
    assert M.mach_port_move_member(T(), p, p) == M.KERN_INVALID_RIGHT
    assert status(p).mps_pset == 0


def test_destroying_a_member_leaves_the_set(space: Space) -> None:
    s = space.alloc(R_PORT_SET)
    a, b = space.with_send(1), space.with_send(1)
    assert M.mach_port_insert_member(T(), a, s) == OK
    assert M.mach_port_insert_member(T(), b, s) == OK
    assert M.mach_port_destroy(T(), a) == OK
    assert send(b, text=b"b") == OK
    kr, r = recv(s)
    assert kr == OK and r.header.msgh_local_port == b
    assert M.mach_port_deallocate(T(), s) == OK
    assert status(b).mps_pset == 0


# -- attributes ---------------------------------------------------------------------------------
# mach_port_get_attributes: mach_port.c:1847-1848, :1871-1872, :1893-1894
# KERN_FAILURE for a short count; :1851-1853 a NULL or DEAD name gives count 0
# for LIMITS_INFO; :1897-1899 a size of 0 for DNREQUESTS_SIZE (XNU leaves the
# count as it was there, pymach gives 0); :1875-1876 KERN_INVALID_RIGHT for
# RECEIVE_STATUS on them; :1966-1967 KERN_INVALID_ARGUMENT for another flavor;
# ipc_object.c:282-284 KERN_INVALID_RIGHT without a receive right.
# mach_port_set_attributes: :2015-2016 KERN_FAILURE, :2019-2020
# KERN_INVALID_VALUE above MACH_PORT_QLIMIT_MAX (before the name), :2023-2024
# KERN_INVALID_RIGHT for NULL/DEAD, :2038-2043 DNREQUESTS_SIZE, :2173-2174
# KERN_INVALID_ARGUMENT. mach_port_set_mscount: :1052-1053 KERN_INVALID_RIGHT.
# MACH_RCV_TOO_LARGE without consuming the message: ipc_mqueue.c:1232.

def test_get_attributes_codes(space: Space) -> None:
    p = space.alloc()
    lim, st = M.mach_port_limits_t(), M.mach_port_status_t()
    cnt = M.mach_msg_type_number_t(0)
    assert M.mach_port_get_attributes(T(), p, M.MACH_PORT_LIMITS_INFO, byref(lim), byref(cnt)) == M.KERN_FAILURE
    cnt.value = M.MACH_PORT_RECEIVE_STATUS_COUNT - 1
    assert M.mach_port_get_attributes(T(), p, M.MACH_PORT_RECEIVE_STATUS, byref(st), byref(cnt)) == \
        M.KERN_FAILURE
    for flavor in (0, 99, -1):
        cnt.value = 17
        assert M.mach_port_get_attributes(T(), p, flavor, byref(st), byref(cnt)) == M.KERN_INVALID_ARGUMENT
    # a larger count is fine, and comes back as the flavor's size
    cnt.value = 17
    assert M.mach_port_get_attributes(T(), p, M.MACH_PORT_LIMITS_INFO, byref(lim), byref(cnt)) == OK
    assert cnt.value == M.MACH_PORT_LIMITS_INFO_COUNT and lim.mpl_qlimit == 5
    cnt.value = 17
    assert M.mach_port_get_attributes(T(), p, M.MACH_PORT_RECEIVE_STATUS, byref(st), byref(cnt)) == OK
    assert cnt.value == M.MACH_PORT_RECEIVE_STATUS_COUNT
    for name in (NULL, DEAD):
        cnt.value = 1
        assert M.mach_port_get_attributes(T(), name, M.MACH_PORT_LIMITS_INFO, byref(lim), byref(cnt)) == OK
        assert cnt.value == 0
        cnt.value = 10
        assert M.mach_port_get_attributes(T(), name, M.MACH_PORT_RECEIVE_STATUS, byref(st), byref(cnt)) == \
            M.KERN_INVALID_RIGHT
    size = M.natural_t(0xBAD)
    cnt.value = 0
    assert M.mach_port_get_attributes(T(), p, M.MACH_PORT_DNREQUESTS_SIZE, byref(size), byref(cnt)) == \
        M.KERN_FAILURE
    cnt.value = 1
    assert M.mach_port_get_attributes(T(), p, M.MACH_PORT_DNREQUESTS_SIZE, byref(size), byref(cnt)) == OK
    assert cnt.value == M.MACH_PORT_DNREQUESTS_SIZE_COUNT and size.value != 0xBAD
    assert M.mach_port_get_attributes(T(), NULL, M.MACH_PORT_DNREQUESTS_SIZE, byref(size), byref(cnt)) == OK
    assert cnt.value == 0
    cnt.value = 10
    assert M.mach_port_get_attributes(T(), _free_name(space), M.MACH_PORT_RECEIVE_STATUS, byref(st),
                                      byref(cnt)) == M.KERN_INVALID_NAME
    for n in (space.alloc(R_PORT_SET), space.alloc(R_DEAD_NAME), space.send_once(p)):
        for flavor in (M.MACH_PORT_LIMITS_INFO, M.MACH_PORT_RECEIVE_STATUS):
            cnt.value = 10
            assert M.mach_port_get_attributes(T(), n, flavor, byref(st), byref(cnt)) == M.KERN_INVALID_RIGHT


def test_set_attributes_qlimit(space: Space) -> None:
    p = space.alloc()
    for q in (17, 0, M.MACH_PORT_QLIMIT_MAX, 1):
        assert set_qlimit(p, q) == OK
        assert qlimit_of(p) == q and status(p).mps_qlimit == q
    assert set_qlimit(p, 1025) == M.KERN_INVALID_VALUE
    assert set_qlimit(p, 0xFFFFFFFF) == M.KERN_INVALID_VALUE
    assert qlimit_of(p) == 1
    assert set_qlimit(p, 9, count=0) == M.KERN_FAILURE
    assert qlimit_of(p) == 1
    # the value is checked before the name
    for name in (NULL, DEAD, _free_name(space)):
        assert set_qlimit(name, 1025) == M.KERN_INVALID_VALUE
    assert set_qlimit(NULL, 3) == M.KERN_INVALID_RIGHT
    assert set_qlimit(DEAD, 3) == M.KERN_INVALID_RIGHT
    assert set_qlimit(_free_name(space), 3) == M.KERN_INVALID_NAME
    for n in (space.alloc(R_PORT_SET), space.alloc(R_DEAD_NAME), space.send_once(p)):
        assert set_qlimit(n, 3) == M.KERN_INVALID_RIGHT
    st = M.mach_port_status_t()
    for flavor in (M.MACH_PORT_RECEIVE_STATUS, 99):
        assert M.mach_port_set_attributes(T(), p, flavor, byref(st), 10) == M.KERN_INVALID_ARGUMENT
    assert qlimit_of(p) == 1
    # DNREQUESTS_SIZE: accepted on a receive right, and changes nothing
    size = M.natural_t(64)
    assert M.mach_port_set_attributes(T(), p, M.MACH_PORT_DNREQUESTS_SIZE, byref(size), 1) == OK
    assert M.mach_port_set_attributes(T(), p, M.MACH_PORT_DNREQUESTS_SIZE, byref(size), 0) == M.KERN_FAILURE
    assert M.mach_port_set_attributes(T(), space.alloc(R_PORT_SET), M.MACH_PORT_DNREQUESTS_SIZE, byref(size),
                                      1) == M.KERN_INVALID_RIGHT
    assert qlimit_of(p) == 1


def test_receive_status_counts_real_operations(space: Space) -> None:
    p = space.alloc()
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK  # mscount 1
    st = status(p)
    assert (st.mps_mscount, st.mps_srights, st.mps_seqno, st.mps_msgcount) == (1, 1, 0, 0)
    assert send(p, MAKE_SEND, b"one") == OK  # mscount 2
    assert send_port(p, p, MAKE_SEND) == OK  # mscount 3 (descriptor), dest by COPY_SEND
    assert extract(p, MAKE_SEND)[0] == OK  # mscount 4
    st = status(p)
    assert (st.mps_mscount, st.mps_msgcount, st.mps_seqno) == (4, 2, 0)
    kr, r = recv(p)
    assert kr == OK and r.text == b"one" and r.trailer.msgh_seqno == 0
    kr, pm = recv_port(p)
    assert kr == OK and pm.port.name == p and pm.trailer.msgh_trailer_size == 8
    st = status(p)
    assert st.mps_seqno == 2 and st.mps_msgcount == 0 and st.mps_mscount == 4
    assert refs(p, R_SEND) == 3  # insert + extract + the descriptor's right, coalesced
    # send-once rights: made, then one consumed by a message
    so1, so2 = space.send_once(p), space.send_once(p)
    assert status(p).mps_sorights == 2
    assert send(so1, MOVE_SEND_ONCE, b"so") == OK
    assert status(p).mps_msgcount == 1
    kr, r = recv(p)
    assert kr == OK and r.text == b"so" and r.trailer.msgh_seqno == 2
    st = status(p)
    assert (st.mps_sorights, st.mps_seqno, st.mps_msgcount) == (1, 3, 0)
    assert type_of(so2) == TY_SEND_ONCE


def test_set_mscount(space: Space) -> None:
    p = space.alloc()
    assert M.mach_port_set_mscount(T(), p, 41) == OK
    assert status(p).mps_mscount == 41
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    assert status(p).mps_mscount == 42
    assert M.mach_port_set_mscount(T(), p, 0) == OK and status(p).mps_mscount == 0
    for name in (NULL, DEAD):
        assert M.mach_port_set_mscount(T(), name, 1) == M.KERN_INVALID_RIGHT
    assert M.mach_port_set_mscount(T(), _free_name(space), 1) == M.KERN_INVALID_NAME
    for n in (space.alloc(R_PORT_SET), space.alloc(R_DEAD_NAME), space.send_once(p)):
        assert M.mach_port_set_mscount(T(), n, 1) == M.KERN_INVALID_RIGHT


def test_receive_status_srights_drop_to_zero(space: Space) -> None:
    p = space.with_send(2)
    assert status(p).mps_srights == 1
    assert mod_refs(p, R_SEND, -2) == OK
    assert type_of(p) == TY_RECEIVE
    assert status(p).mps_srights == 0
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    assert status(p).mps_srights == 1
    assert M.mach_port_deallocate(T(), p) == OK
    assert status(p).mps_srights == 0


def test_receive_status_sorights_after_deallocating_a_send_once_right(space: Space) -> None:
    p = space.alloc()
    so1, so2 = space.send_once(p), space.send_once(p)
    assert status(p).mps_sorights == 2
    assert M.mach_port_deallocate(T(), so1) == OK
    assert status(p).mps_sorights == 1
    assert mod_refs(so2, R_SEND_ONCE, -1) == OK
    assert status(p).mps_sorights == 0


def test_receive_status_msgcount_counts_messages(space: Space) -> None:
    p = space.with_send(1)
    for i in range(3):
        assert send(p, text=b"%d" % i) == OK
    assert status(p).mps_msgcount == 3
    assert recv(p)[0] == OK
    assert status(p).mps_msgcount == 2


def test_rcv_large_does_not_consume_a_seqno(space: Space) -> None:
    p = space.with_send(1)
    assert send(p) == OK
    small = M.mach_msg_empty_rcv_t()
    assert M.mach_msg(small.header, M.MACH_RCV_MSG | M.MACH_RCV_LARGE, 0, ctypes.sizeof(small), p, 0, 0) == \
        M.MACH_RCV_TOO_LARGE
    assert status(p).mps_seqno == 0
    kr, r = recv(p)
    assert kr == OK and r.trailer.msgh_seqno == 0


# -- construct and destruct ----------------------------------------------------------------
# mach_port_construct: mach_port.c:2565-2571 KERN_INVALID_VALUE for a qlimit above
# MACH_PORT_QLIMIT_MAX. mach_port_destruct: :2680-2681 KERN_INVALID_NAME for
# NULL/DEAD, ipc_right.c:300-302 for an unknown name; ipc_right_destruct:
# ipc_right.c:1715-1722 KERN_INVALID_RIGHT without a receive right, :1725-1728
# with srdelta but no send right, :1731-1732 and :1768-1770 KERN_INVALID_VALUE
# (srdelta above 0, or below the urefs), :1743-1749 KERN_INVALID_ARGUMENT for a
# wrong guard (checked after srdelta's sign).

def test_construct_options(space: Space) -> None:
    p = space.construct()
    assert type_of(p) == TY_RECEIVE and qlimit_of(p) == 5
    st = status(p)
    assert (st.mps_mscount, st.mps_srights, st.mps_flags) == (0, 0, 0)
    # the qlimit field only counts with MPO_QLIMIT
    assert qlimit_of(space.construct(0, qlimit=77)) == 5
    assert qlimit_of(space.construct(M.MPO_QLIMIT, qlimit=77)) == 77
    assert qlimit_of(space.construct(M.MPO_QLIMIT, qlimit=0)) == 0
    assert qlimit_of(space.construct(M.MPO_QLIMIT, qlimit=1024)) == 1024
    assert qlimit_of(space.construct(M.MPO_QLIMIT, qlimit=1)) == 1
    # unknown flag bits are ignored
    assert type_of(space.construct(0x10000000)) == TY_RECEIVE
    ps = space.construct(M.MPO_INSERT_SEND_RIGHT | M.MPO_QLIMIT, qlimit=9)
    assert type_of(ps) == TY_SEND_RECEIVE and refs(ps, R_SEND) == 1 and qlimit_of(ps) == 9
    st = status(ps)
    assert (st.mps_mscount, st.mps_srights) == (1, 1)
    assert send(ps, text=b"built") == OK
    kr, r = recv(ps)
    assert kr == OK and r.text == b"built" and r.header.msgh_local_port == ps
    g = space.construct(M.MPO_CONTEXT_AS_GUARD, context=0xC0FFEE)
    assert status(g).mps_flags & 0x02  # MACH_PORT_STATUS_FLAG_GUARDED


def test_construct_qlimit_too_large(space: Space) -> None:
    before = names_and_types()
    for q in (1025, 65534, 0xFFFFFFFF):
        kr, name = construct(M.MPO_QLIMIT | M.MPO_INSERT_SEND_RIGHT, qlimit=q)
        assert kr == M.KERN_INVALID_VALUE and name == 0xDEAD0
    assert names_and_types() == before


def test_construct_context_reaches_the_trailer(space: Space) -> None:
    p = space.construct(M.MPO_INSERT_SEND_RIGHT, context=0x1234_5678_9ABC)
    assert send(p) == OK
    kr, r = recv(p)
    assert kr == OK and r.trailer.msgh_trailer_size == 60
    assert r.trailer.msgh_context == 0x1234_5678_9ABC


def test_destruct_name_and_right_errors(space: Space) -> None:
    for name in (NULL, DEAD, _free_name(space)):
        assert M.mach_port_destruct(T(), name, 0, 0) == M.KERN_INVALID_NAME
    p = space.alloc()
    for n in (space.alloc(R_PORT_SET), space.alloc(R_DEAD_NAME), space.send_once(p)):
        assert M.mach_port_destruct(T(), n, 0, 0) == M.KERN_INVALID_RIGHT
        assert type_kr(n) == OK
    # srdelta needs a send right, checked before its sign
    assert M.mach_port_destruct(T(), p, -1, 0) == M.KERN_INVALID_RIGHT
    assert M.mach_port_destruct(T(), p, 1, 0) == M.KERN_INVALID_RIGHT
    assert type_of(p) == TY_RECEIVE
    # a port made by mach_port_allocate destructs too; the guard of an unguarded port is ignored
    assert M.mach_port_destruct(T(), p, 0, 0x5555) == OK
    assert type_kr(p) == M.KERN_INVALID_NAME


def test_destruct_srdelta_rules(space: Space) -> None:
    p = space.construct(M.MPO_INSERT_SEND_RIGHT)
    assert mod_refs(p, R_SEND, 2) == OK  # 3 send urefs
    assert M.mach_port_destruct(T(), p, 1, 0) == M.KERN_INVALID_VALUE
    assert M.mach_port_destruct(T(), p, -4, 0) == M.KERN_INVALID_VALUE
    assert type_of(p) == TY_SEND_RECEIVE and refs(p, R_SEND) == 3
    assert M.mach_port_destruct(T(), p, -1, 0) == OK
    assert type_of(p) == TY_DEAD_NAME and refs(p, R_DEAD_NAME) == 2  # what is left becomes a dead name
    assert send(p) == M.MACH_SEND_INVALID_DEST
    q = space.construct(M.MPO_INSERT_SEND_RIGHT)
    assert mod_refs(q, R_SEND, 1) == OK
    assert M.mach_port_destruct(T(), q, -2, 0) == OK
    assert type_kr(q) == M.KERN_INVALID_NAME  # every send uref went with it
    r = space.construct(M.MPO_INSERT_SEND_RIGHT)
    assert M.mach_port_destruct(T(), r, 0, 0) == OK
    assert type_of(r) == TY_DEAD_NAME and refs(r, R_DEAD_NAME) == 1


def test_destruct_pegged_send_urefs(space: Space) -> None:
    p = space.construct(M.MPO_INSERT_SEND_RIGHT)
    assert mod_refs(p, R_SEND, 65534) == OK and refs(p, R_SEND) == UREFS_MAX
    assert M.mach_port_destruct(T(), p, -1, 0) == OK  # pegged: -1 does not act
    assert type_of(p) == TY_DEAD_NAME and refs(p, R_DEAD_NAME) == UREFS_MAX
    q = space.construct(M.MPO_INSERT_SEND_RIGHT)
    assert mod_refs(q, R_SEND, 65534) == OK
    assert M.mach_port_destruct(T(), q, -65535, 0) == OK
    assert type_kr(q) == M.KERN_INVALID_NAME


def test_destruct_guarded_port(space: Space) -> None:
    guard = 0xFEED_FACE_CAFE
    g = space.construct(M.MPO_CONTEXT_AS_GUARD | M.MPO_INSERT_SEND_RIGHT, context=guard)
    s = space.alloc(R_PORT_SET)
    assert M.mach_port_insert_member(T(), g, s) == OK
    for wrong in (0, guard + 1, guard & 0xFFFFFFFF):
        assert M.mach_port_destruct(T(), g, 0, wrong) == M.KERN_INVALID_ARGUMENT
    # the guard is checked after the sign of srdelta and before its size
    assert M.mach_port_destruct(T(), g, 1, 0) == M.KERN_INVALID_VALUE
    assert M.mach_port_destruct(T(), g, -5, 0) == M.KERN_INVALID_ARGUMENT
    assert M.mach_port_destruct(T(), g, -5, guard) == M.KERN_INVALID_VALUE
    assert type_of(g) == TY_SEND_RECEIVE and status(g).mps_pset == 1
    assert send(g) == OK and recv(g)[0] == OK  # still a working port
    assert M.mach_port_destruct(T(), g, -1, guard) == OK
    assert type_kr(g) == M.KERN_INVALID_NAME
    assert recv(s, timeout=10)[0] == M.MACH_RCV_TIMED_OUT


# -- registered ports and os.fork ------------------------------------------------------------------
# a right to a port whose receiver died turns into a dead name when looked at
# (ipc_right.c:651 ipc_right_check): KERN_INVALID_RIGHT for mod_refs(SEND) at
# ipc_right.c:1555-1559, MACH_SEND_INVALID_DEST at ipc_kmsg.c:2058-2066.

def test_lookup_in_own_task_coalesces_with_the_receive_right(space: Space) -> None:
    p = space.with_send(1)
    assert register(p) == OK
    try:
        assert M.mach_port_deallocate(T(), p) == OK  # the registered right is a copy
        assert type_of(p) == TY_RECEIVE
        got = lookup_registered()
        assert got == [p, NULL, NULL]
        assert type_of(p) == TY_SEND_RECEIVE and refs(p, R_SEND) == 1
        assert lookup_registered()[0] == p and refs(p, R_SEND) == 2
    finally:
        assert register() == OK
    assert lookup_registered() == [NULL, NULL, NULL]


def test_child_finds_the_registered_right(space: Space) -> None:
    p = space.with_send(1)
    assert register(p) == OK
    try:
        assert M.mach_port_deallocate(T(), p) == OK

        def child(_sync: object) -> int:
            got = lookup_registered()
            s = got[0]
            assert got[1:] == [NULL, NULL] and M.MACH_PORT_VALID(s)
            assert type_of(s) == TY_SEND and refs(s, R_SEND) == 1
            assert lookup_registered()[0] == s and refs(s, R_SEND) == 2  # the same right coalesces
            assert send(s, text=b"child") == OK
            return s

        f = forked(child)
        with f:
            pid = f.pid
        kr, r = recv(p)
        assert kr == OK and r.text == b"child" and r.header.msgh_local_port == p
        assert r.trailer.msgh_audit.val[5] == pid
    finally:
        assert register() == OK


def test_child_space_holds_no_rights_of_the_parent(space: Space) -> None:
    before = socket_inodes()
    p = space.with_send(1)
    q = space.with_send(1)
    s = space.alloc(R_PORT_SET)
    d = space.alloc(R_DEAD_NAME)
    assert M.mach_port_insert_member(T(), q, s) == OK
    ours = socket_inodes() - before  # both ends of p's and q's connections
    assert len(ours) == 4
    assert register(p) == OK
    try:
        def child(_sync: object) -> None:
            first = names_and_types()
            assert len(first) == 2 and set(first.values()) == {TY_SEND}  # our task and the host
            assert T() in first
            # a fresh space: the first names are (index << 8) | 3 in order
            # (index 3 is kept for bootstrap_port, connected on first use)
            made = []
            for _ in range(6):
                made.append(alloc_name(R_DEAD_NAME))
            assert sorted(first) + made == [(i << 8) | 3 for i in range(1, 10) if i != 3]
            for dn in made:
                assert M.mach_port_deallocate(T(), dn) == OK
            for n in (p, q, s, d):
                assert type_kr(n) == M.KERN_INVALID_NAME
            assert recv(p, timeout=0)[0] == M.MACH_RCV_INVALID_NAME
            assert recv(s, timeout=0)[0] == M.MACH_RCV_INVALID_NAME
            # of the parent's connections, only the registered send end is here
            assert len(socket_inodes() & ours) == 1
            got = lookup_registered()[0]
            after = names_and_types()
            assert set(after) - set(first) == {got} and after[got] == TY_SEND
            assert send(got, text=b"only") == OK

        with forked(child):
            pass
        kr, r = recv(p)
        assert kr == OK and r.text == b"only"
        assert type_of(q) == TY_SEND_RECEIVE and status(q).mps_pset == 1
    finally:
        assert register() == OK


def test_rights_from_a_child_coalesce_and_die_with_it(space: Space) -> None:
    p = space.with_send(1)
    assert register(p) == OK
    try:
        assert M.mach_port_deallocate(T(), p) == OK
        assert type_of(p) == TY_RECEIVE

        def child(sync: Callable[[], None]) -> None:
            s = lookup_registered()[0]
            c = alloc_name(R_RECEIVE)
            assert M.mach_port_insert_right(T(), c, c, MAKE_SEND) == OK
            assert send_port(s, c, COPY_SEND) == OK
            assert send_port(s, c, MAKE_SEND) == OK
            assert send_port(s, s, COPY_SEND) == OK  # the parent's own port
            assert send_port(s, c, MAKE_SEND_ONCE) == OK
            sync()  # the parent has looked at the rights; now exit

        with forked(child) as sync:
            got = []
            for _ in range(4):
                kr, r = recv_port(p)
                assert kr == OK and r.header.msgh_local_port == p
                got.append((r.port.name, r.port.disposition))
            (n1, d1), (n2, d2), (n3, d3), (n4, d4) = got
            space.keep(n1)
            space.keep(n4)
            assert (d1, d2, d3, d4) == (PORT_SEND, PORT_SEND, PORT_SEND, PORT_SEND_ONCE)
            # the same connection: one name with two user references
            assert n2 == n1 and type_of(n1) == TY_SEND and refs(n1, R_SEND) == 2
            # a send right to our own port joins its receive right
            assert n3 == p and type_of(p) == TY_SEND_RECEIVE and refs(p, R_SEND) == 1
            # a send-once right never coalesces
            assert n4 not in (n1, p) and type_of(n4) == TY_SEND_ONCE
            assert send(n1, text=b"live") == OK
            sync()
        # the child exited: its port is dead, our rights to it are dead names
        assert mod_refs(n1, R_SEND, -1) == M.KERN_INVALID_RIGHT  # converted on the way
        assert type_of(n1) == TY_DEAD_NAME
        assert refs(n1, R_DEAD_NAME) == 2 and refs(n1, R_SEND) == 0
        assert send(n1) == M.MACH_SEND_INVALID_DEST
        assert refs(n4, R_DEAD_NAME) == 1 and type_of(n4) == TY_DEAD_NAME
        assert mod_refs(n4, R_SEND_ONCE, -1) == M.KERN_INVALID_RIGHT
        listed = names_and_types()
        assert listed[n1] == TY_DEAD_NAME and listed[n4] == TY_DEAD_NAME
        assert M.mach_port_deallocate(T(), n1) == OK and refs(n1, R_DEAD_NAME) == 1
        assert M.mach_port_deallocate(T(), n1) == OK and type_kr(n1) == M.KERN_INVALID_NAME
        assert M.mach_port_deallocate(T(), n4) == OK and type_kr(n4) == M.KERN_INVALID_NAME
        assert type_of(p) == TY_SEND_RECEIVE  # our own port lives on
    finally:
        assert register() == OK


def test_port_destroyed_by_a_live_child(space: Space) -> None:
    p = space.with_send(1)
    assert register(p) == OK
    try:
        def child(sync: Callable[[], None]) -> None:
            s = lookup_registered()[0]
            c = alloc_name(R_RECEIVE)
            assert send_port(s, c, MAKE_SEND) == OK
            sync()
            assert M.mach_port_destroy(T(), c) == OK
            sync()
            sync()  # stay alive while the parent checks

        with forked(child) as sync:
            kr, r = recv_port(p)
            assert kr == OK
            n = space.keep(r.port.name)
            assert type_of(n) == TY_SEND
            sync()
            sync()
            # the first operation after the death converts, then adds a uref to the dead name
            assert mod_refs(n, R_DEAD_NAME, 1) == OK
            assert type_of(n) == TY_DEAD_NAME and refs(n, R_DEAD_NAME) == 2
            assert extract(n, COPY_SEND) == (OK, DEAD, PORT_SEND)
            assert send(n) == M.MACH_SEND_INVALID_DEST
            assert M.mach_port_destroy(T(), n) == OK
            assert type_kr(n) == M.KERN_INVALID_NAME
            sync()
    finally:
        assert register() == OK


def test_sigkilled_child_leaves_dead_names(space: Space) -> None:
    p = space.with_send(1)
    assert register(p) == OK
    r_fd, w_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(w_fd)
            s = lookup_registered()[0]
            c = M.mach_port_t()
            M.mach_port_allocate(T(), R_RECEIVE, byref(c))
            send_port(s, c.value, MAKE_SEND)
            send_port(s, c.value, MAKE_SEND_ONCE)
            os.read(r_fd, 1)  # until killed
        finally:
            os._exit(1)
    try:
        os.close(r_fd)
        r_fd = -1
        kr, m1 = recv_port(p)
        assert kr == OK
        kr, m2 = recv_port(p)
        assert kr == OK
        n_send, n_once = space.keep(m1.port.name), space.keep(m2.port.name)
        assert type_of(n_send) == TY_SEND and type_of(n_once) == TY_SEND_ONCE
        os.kill(pid, signal.SIGKILL)
        _, st = os.waitpid(pid, 0)
        pid = 0
        assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL
        assert send(n_send) == M.MACH_SEND_INVALID_DEST
        assert type_of(n_send) == TY_DEAD_NAME and refs(n_send, R_DEAD_NAME) == 1
        assert refs(n_once, R_SEND_ONCE) == 0 and refs(n_once, R_DEAD_NAME) == 1
        assert type_of(n_once) == TY_DEAD_NAME
        assert M.mach_port_insert_right(T(), n_send, n_send, COPY_SEND) != OK
        assert M.mach_port_deallocate(T(), n_send) == OK and type_kr(n_send) == M.KERN_INVALID_NAME
        assert M.mach_port_deallocate(T(), n_once) == OK and type_kr(n_once) == M.KERN_INVALID_NAME
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        if r_fd >= 0:
            os.close(r_fd)
        os.close(w_fd)
        assert register() == OK
