"""Exception ports, set and got as XNU sets and gets them
(osfmk/kern/ipc_tt.c, ipc_host.c): task_/thread_/host_ set, get and swap,
with XNU's codes, its coalescing of the types that share a port, behavior
and flavor into one entry, its walk that stops when the caller's arrays
are full, send rights that the tables own (released when replaced,
cleared, or when their task or thread is gone), inheritance across
os.fork and pymach.spawn, the routines served by message (task.defs
3413-3415, thread_act.defs 3613-3615), and the exception messages'
interfaces (exc.defs, mach_exc.defs) with their generated modules.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pymach
import pymach.mach as M
from pymach.mach import byref
from machutil import OK, alloc_name, send_text, status
from procutil import Doomed, become_nobody, run_in_child

ROOT = Path(__file__).resolve().parent.parent
DEFS = ROOT / "src" / "pymach" / "defs"
EXC = ROOT / "src" / "pymach" / "mig" / "exc"
T = M.mach_task_self
N = M.EXC_TYPES_COUNT
SI64 = M.EXCEPTION_STATE_IDENTITY | M.MACH_EXCEPTION_CODES
ARR = ctypes.c_uint32 * N


def _i32(v: int) -> int:
    return (v + (1 << 31)) % (1 << 32) - (1 << 31)


def new_port() -> int:
    """A receive right with a send right under the same name."""
    p = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
    assert M.mach_port_insert_right(T(), p, p, M.MACH_MSG_TYPE_MAKE_SEND) == OK
    return p


def refs(name: int) -> int:
    r = M.mach_port_urefs_t()
    assert M.mach_port_get_refs(T(), name, M.MACH_PORT_RIGHT_SEND, byref(r)) == OK
    return r.value


def names() -> list[tuple[int, int]]:
    ns, ts = M.mach_port_name_array_t(), M.mach_port_type_array_t()
    n, m = M.mach_msg_type_number_t(), M.mach_msg_type_number_t()
    assert M.mach_port_names(T(), byref(ns), byref(n), byref(ts), byref(m)) == OK
    out = [(ns[i], ts[i]) for i in range(n.value)]
    M.mach_vm_deallocate(T(), ctypes.cast(ns, ctypes.c_void_p).value, 4 * n.value)
    M.mach_vm_deallocate(T(), ctypes.cast(ts, ctypes.c_void_p).value, 4 * m.value)
    return out


Entries = list[tuple[int, int, int, int]]


def get(fn: Any, target: int, mask: int = M.EXC_MASK_ALL, room: int = N, release: bool = True) -> tuple[int, Entries]:
    """(kr, [(mask, port, behavior, flavor)...]) of a get; the ports
    released (the names they had are kept in the result) unless not
    ``release``."""
    masks, handlers, behaviors, flavors = ARR(), ARR(), ARR(), ARR()
    cnt = M.mach_msg_type_number_t(room)
    kr = fn(target, mask, masks, byref(cnt), handlers, behaviors, flavors)
    out = [(masks[j], handlers[j], _i32(behaviors[j]), _i32(flavors[j])) for j in range(cnt.value)] if kr == OK else []
    if release:
        for _m, port, _b, _f in out:
            if port:
                assert M.mach_port_deallocate(T(), port) == OK
    return kr, out


def swap(fn: Any, target: int, mask: int, port: int, behavior: int, flavor: int, room: int = N,
         release: bool = True) -> tuple[int, Entries]:
    masks, handlers, behaviors, flavors = ARR(), ARR(), ARR(), ARR()
    cnt = M.mach_msg_type_number_t(room)
    kr = fn(target, mask, port, behavior, flavor, masks, byref(cnt), handlers, behaviors, flavors)
    out = [(masks[j], handlers[j], _i32(behaviors[j]), _i32(flavors[j])) for j in range(cnt.value)] if kr == OK else []
    if release:
        for _m, p, _b, _f in out:
            if p:
                assert M.mach_port_deallocate(T(), p) == OK
    return kr, out


def clear_task(task: int | None = None) -> None:
    assert M.task_set_exception_ports(T() if task is None else task, M.EXC_MASK_VALID, 0, 0, 0) == OK


@pytest.fixture(autouse=True)
def _clean_task() -> Iterator[None]:
    """Our own task's exception ports are unset before and after each test."""
    clear_task()
    yield
    clear_task()
    me = M.mach_thread_self()
    assert M.thread_set_exception_ports(me, M.EXC_MASK_VALID, 0, 0, 0) == OK  # this thread's too
    M.mach_port_deallocate(T(), me)
    if os.geteuid() == 0:
        assert M.host_set_exception_ports(M.mach_host_self(), M.EXC_MASK_VALID, 0, 0, 0) == OK


@pytest.fixture
def port() -> Iterator[int]:
    p = new_port()
    yield p
    M.mach_port_destroy(T(), p)


UNSET = M.EXC_MASK_ALL  # every type of EXC_MASK_ALL, none set


# -- the constants -------------------------------------------------------------------------

def test_the_constants_are_xnus() -> None:
    ns: dict[str, Any] = {}
    exec("from pymach.mach import *", ns)
    assert ns["EXC_BAD_ACCESS"] == 1 and ns["EXC_CORPSE_NOTIFY"] == 13 and ns["EXC_GUARD"] == 12
    assert ns["EXC_MASK_ALL"] == 0x1BFE  # EXC_CRASH and EXC_CORPSE_NOTIFY are asked for by name
    assert ns["EXC_MASK_VALID"] == 0x3FFE
    assert ns["EXC_TYPES_COUNT"] == 14 and ns["FIRST_EXCEPTION"] == 1
    assert (ns["EXCEPTION_DEFAULT"], ns["EXCEPTION_STATE"], ns["EXCEPTION_STATE_IDENTITY"],
            ns["EXCEPTION_IDENTITY_PROTECTED"]) == (1, 2, 3, 4)
    assert ns["MACH_EXCEPTION_CODES"] == 0x80000000 and ns["MACH_EXCEPTION_MASK"] == 0xE0000000
    assert (ns["EXC_I386_DIV"], ns["EXC_I386_INVOP"], ns["EXC_I386_SGL"], ns["EXC_I386_BPT"]) == (1, 1, 1, 2)
    assert (ns["x86_THREAD_STATE64"], ns["THREAD_STATE_NONE"], ns["x86_THREAD_STATE64_COUNT"]) == (4, 13, 42)
    assert ns["EXC_SOFT_SIGNAL"] == 0x10003
    for t in ("exception_mask_t", "exception_behavior_t", "exception_handler_t", "exception_mask_array_t",
              "exception_handler_array_t", "exception_behavior_array_t", "exception_flavor_array_t",
              "mach_exception_data_type_t", "exception_type_t", "task_set_exception_ports",
              "task_get_exception_ports", "task_swap_exception_ports", "thread_set_exception_ports",
              "thread_get_exception_ports", "thread_swap_exception_ports", "host_set_exception_ports",
              "host_get_exception_ports", "host_swap_exception_ports", "mach_thread_self"):
        assert t in ns, t
    assert ctypes.sizeof(ns["mach_exception_data_type_t"]) == 8 and ctypes.sizeof(ns["exception_mask_t"]) == 4


# -- set and get: XNU's coalescing -----------------------------------------------------------

def test_get_coalesces_the_types_that_share_port_behavior_and_flavor(port: int) -> None:
    before = refs(port)
    assert M.task_set_exception_ports(T(), M.EXC_MASK_BAD_ACCESS | M.EXC_MASK_ARITHMETIC, port, SI64,
                                      M.x86_THREAD_STATE64) == OK
    assert M.task_set_exception_ports(T(), M.EXC_MASK_BREAKPOINT, port, M.EXCEPTION_DEFAULT,
                                      M.THREAD_STATE_NONE) == OK
    assert refs(port) == before  # the task's rights are its own, not names in our space
    kr, got = get(M.task_get_exception_ports, T(), release=False)
    assert kr == OK
    # XNU walks the types in order: a new entry for each new (port, behavior, flavor)
    unset = M.EXC_MASK_ALL & ~(M.EXC_MASK_BAD_ACCESS | M.EXC_MASK_ARITHMETIC | M.EXC_MASK_BREAKPOINT)
    assert got == [(M.EXC_MASK_BAD_ACCESS | M.EXC_MASK_ARITHMETIC, port, _i32(SI64), M.x86_THREAD_STATE64),
                   (unset, 0, 0, 0),
                   (M.EXC_MASK_BREAKPOINT, port, M.EXCEPTION_DEFAULT, M.THREAD_STATE_NONE)]
    assert refs(port) == before + 2  # each entry is a new send right, under the port's name
    for _m, p, _b, _f in got:
        if p:
            M.mach_port_deallocate(T(), p)
    # only the types asked for
    assert get(M.task_get_exception_ports, T(), M.EXC_MASK_ARITHMETIC | M.EXC_MASK_CRASH)[1] == [
        (M.EXC_MASK_ARITHMETIC, port, _i32(SI64), M.x86_THREAD_STATE64), (M.EXC_MASK_CRASH, 0, 0, 0)]
    assert get(M.task_get_exception_ports, T(), 0)[1] == []


def test_get_fills_at_most_the_count_and_still_coalesces_into_what_it_has(port: int) -> None:
    other = new_port()
    try:
        assert M.task_set_exception_ports(T(), M.EXC_MASK_BAD_ACCESS | M.EXC_MASK_BREAKPOINT, port,
                                          M.EXCEPTION_DEFAULT, 0) == OK
        assert M.task_set_exception_ports(T(), M.EXC_MASK_ARITHMETIC, other, M.EXCEPTION_DEFAULT, 0) == OK
        # room for one: BAD_ACCESS makes it; ARITHMETIC would need a second (left
        # out), BREAKPOINT joins the first
        kr, got = get(M.task_get_exception_ports, T(), room=1)
        assert kr == OK and got == [(M.EXC_MASK_BAD_ACCESS | M.EXC_MASK_BREAKPOINT, port, 1, 0)]
        kr, got = get(M.task_get_exception_ports, T(), room=0)
        assert kr == OK and got == []
        # a count larger than the arrays counts as what they hold
        masks, handlers = (ctypes.c_uint32 * 2)(), ARR()
        cnt = M.mach_msg_type_number_t(N)
        assert M.task_get_exception_ports(T(), M.EXC_MASK_ALL, masks, byref(cnt), handlers, ARR(), ARR()) == OK
        assert cnt.value == 2 and handlers[0] == port and handlers[1] == 0
        M.mach_port_deallocate(T(), port)
    finally:
        M.mach_port_destroy(T(), other)


def test_clearing_releases_the_tables_rights(port: int) -> None:
    assert M.task_set_exception_ports(T(), M.EXC_MASK_BAD_ACCESS | M.EXC_MASK_SOFTWARE, port,
                                      M.EXCEPTION_DEFAULT, 0) == OK
    assert M.mach_port_deallocate(T(), port) == OK  # our own send right goes
    assert status(port).mps_srights  # the table's remain
    assert M.task_set_exception_ports(T(), M.EXC_MASK_BAD_ACCESS, 0, M.EXCEPTION_STATE, 0) == OK
    assert status(port).mps_srights  # EXC_SOFTWARE's
    # a cleared type keeps the behavior and flavor it was given, as in XNU
    assert get(M.task_get_exception_ports, T(), M.EXC_MASK_BAD_ACCESS | M.EXC_MASK_SOFTWARE)[1] == [
        (M.EXC_MASK_BAD_ACCESS, 0, M.EXCEPTION_STATE, 0), (M.EXC_MASK_SOFTWARE, port, 1, 0)]
    assert M.mach_port_get_refs(T(), port, M.MACH_PORT_RIGHT_SEND, byref(M.mach_port_urefs_t())) == OK
    # replaced by another port: released too
    other = new_port()
    try:
        assert M.task_set_exception_ports(T(), M.EXC_MASK_SOFTWARE, other, M.EXCEPTION_DEFAULT, 0) == OK
        assert not status(port).mps_srights
    finally:
        M.mach_port_destroy(T(), other)


def test_swap_returns_what_it_replaces_and_stops_when_the_arrays_are_full(port: int) -> None:
    other = new_port()
    try:
        assert M.task_set_exception_ports(T(), M.EXC_MASK_BAD_ACCESS, port, M.EXCEPTION_DEFAULT, 0) == OK
        assert M.task_set_exception_ports(T(), M.EXC_MASK_ARITHMETIC, other, M.EXCEPTION_STATE,
                                          M.x86_THREAD_STATE64) == OK
        kr, old = swap(M.task_swap_exception_ports, T(), M.EXC_MASK_BAD_ACCESS | M.EXC_MASK_BAD_INSTRUCTION,
                       other, SI64, M.x86_THREAD_STATE64)
        assert kr == OK and old == [(M.EXC_MASK_BAD_ACCESS, port, 1, 0), (M.EXC_MASK_BAD_INSTRUCTION, 0, 0, 0)]
        assert get(M.task_get_exception_ports, T(), 0xE)[1] == [
            (M.EXC_MASK_BAD_ACCESS | M.EXC_MASK_BAD_INSTRUCTION, other, _i32(SI64), M.x86_THREAD_STATE64),
            (M.EXC_MASK_ARITHMETIC, other, M.EXCEPTION_STATE, M.x86_THREAD_STATE64)]
        # room for one entry: XNU's loop ends as soon as the arrays are full,
        # right after BAD_ACCESS: BAD_INSTRUCTION, which would have joined its
        # entry, and ARITHMETIC keep their actions
        kr, old = swap(M.task_swap_exception_ports, T(), 0xE, port, M.EXCEPTION_DEFAULT, 0, room=1)
        assert kr == OK and old == [(M.EXC_MASK_BAD_ACCESS, other, _i32(SI64), M.x86_THREAD_STATE64)]
        assert get(M.task_get_exception_ports, T(), 0xE)[1] == [
            (M.EXC_MASK_BAD_ACCESS, port, 1, 0),
            (M.EXC_MASK_BAD_INSTRUCTION, other, _i32(SI64), M.x86_THREAD_STATE64),
            (M.EXC_MASK_ARITHMETIC, other, M.EXCEPTION_STATE, M.x86_THREAD_STATE64)]
        # room for none: nothing changes
        assert swap(M.task_swap_exception_ports, T(), 0xE, 0, 0, 0, room=0) == (OK, [])
        assert len(get(M.task_get_exception_ports, T(), 0xE)[1]) == 3
    finally:
        M.mach_port_destroy(T(), other)


# -- the codes --------------------------------------------------------------------------------

def _special(which: int) -> int:
    p = M.mach_port_t()
    assert M.task_get_special_port(T(), which, byref(p)) == OK
    return p.value


def test_the_codes_are_xnus(port: int) -> None:
    S, B = M.task_set_exception_ports, M.EXC_MASK_BAD_ACCESS
    # masks outside EXC_MASK_VALID: bit 0 (illegal) and past EXC_CORPSE_NOTIFY
    for mask in (1, 1 << 14, 1 << 31):
        assert S(T(), mask, port, M.EXCEPTION_DEFAULT, 0) == M.KERN_INVALID_ARGUMENT
        assert get(M.task_get_exception_ports, T(), mask)[0] == M.KERN_INVALID_ARGUMENT
    assert S(T(), M.EXC_MASK_VALID, port, M.EXCEPTION_DEFAULT, 0) == OK
    # behaviors: checked only with a port
    for b in (0, 6, M.MACH_EXCEPTION_CODES, 0x10000001):
        assert S(T(), B, port, b, 0) == M.KERN_INVALID_ARGUMENT
    assert S(T(), B, 0, 77, 0) == OK
    assert S(T(), B, port, M.EXCEPTION_STATE_IDENTITY_PROTECTED | M.MACH_EXCEPTION_CODES, 0) == OK
    # an identity protected behavior needs MACH_EXCEPTION_CODES, port or not
    assert S(T(), B, port, M.EXCEPTION_IDENTITY_PROTECTED, 0) == M.KERN_INVALID_ARGUMENT
    assert S(T(), B, 0, M.EXCEPTION_IDENTITY_PROTECTED, 0) == M.KERN_INVALID_ARGUMENT
    assert S(T(), B, port, M.EXCEPTION_IDENTITY_PROTECTED | M.MACH_EXCEPTION_CODES, 0) == OK
    assert S(T(), B, port, M.EXCEPTION_DEFAULT | M.MACH_EXCEPTION_BACKTRACE_PREFERRED, 0) == M.KERN_INVALID_ARGUMENT
    # flavors: VALID_THREAD_STATE_FLAVOR, or 0; 14 and 15 are the kernel's own
    for f in (14, 15, 26, -1, 1000):
        assert S(T(), B, port, M.EXCEPTION_STATE, f) == M.KERN_INVALID_ARGUMENT
        assert S(T(), B, 0, 0, f) == M.KERN_INVALID_ARGUMENT
    for f in (0, M.x86_THREAD_STATE64, M.THREAD_STATE_NONE, M.x86_FLOAT_STATE64, M.x86_AVX512_STATE,
              M.x86_LAST_BRANCH_STATE):
        assert S(T(), B, port, M.EXCEPTION_STATE, f) == OK
    # the task: a control port only (XNU's convert_port_to_task), for get too
    for which in (M.TASK_READ_PORT, M.TASK_INSPECT_PORT, M.TASK_NAME_PORT):
        weak = _special(which)
        assert S(weak, B, port, M.EXCEPTION_DEFAULT, 0) == M.KERN_INVALID_ARGUMENT
        assert get(M.task_get_exception_ports, weak)[0] == M.KERN_INVALID_ARGUMENT
        assert swap(M.task_swap_exception_ports, weak, B, port, 1, 0)[0] == M.KERN_INVALID_ARGUMENT
        M.mach_port_deallocate(T(), weak)
    assert S(port, B, port, M.EXCEPTION_DEFAULT, 0) == M.KERN_INVALID_ARGUMENT  # not a task
    assert S(M.mach_host_self(), B, port, M.EXCEPTION_DEFAULT, 0) == M.KERN_INVALID_ARGUMENT
    assert S(0x7777707, B, port, M.EXCEPTION_DEFAULT, 0) == M.MACH_SEND_INVALID_DEST
    # the new port: what its message would carry (MACH_MSG_TYPE_COPY_SEND)
    receive_only = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
    pset = alloc_name(M.MACH_PORT_RIGHT_PORT_SET)
    try:
        assert S(T(), B, receive_only, M.EXCEPTION_DEFAULT, 0) == M.MACH_SEND_INVALID_RIGHT
        assert S(T(), B, pset, M.EXCEPTION_DEFAULT, 0) == M.MACH_SEND_INVALID_RIGHT
        assert S(T(), B, 0x7777707, M.EXCEPTION_DEFAULT, 0) == M.MACH_SEND_INVALID_RIGHT
    finally:
        M.mach_port_destroy(T(), receive_only)
        M.mach_port_destroy(T(), pset)
    # a kernel object's port is no exception port (XNU: immovable send rights)
    assert S(T(), B, T(), M.EXCEPTION_DEFAULT, 0) == M.KERN_INVALID_RIGHT
    assert S(T(), B, M.mach_host_self(), M.EXCEPTION_DEFAULT, 0) == M.KERN_INVALID_RIGHT
    # a failed call changed nothing
    assert get(M.task_get_exception_ports, T(), B)[1] == [
        (B, port, _i32(M.EXCEPTION_STATE), M.x86_LAST_BRANCH_STATE)]
    # no ports array
    cnt = M.mach_msg_type_number_t(N)
    assert M.task_get_exception_ports(T(), B, ARR(), byref(cnt), None, ARR(), ARR()) == M.KERN_INVALID_ARGUMENT


def test_a_dead_name_sets_no_port(port: int) -> None:
    """COPY_SEND of a dead name carries MACH_PORT_DEAD, which is no valid
    port: the types are cleared, as by MACH_PORT_NULL."""
    doomed = new_port()
    send = M.mach_port_t()
    got = M.mach_msg_type_name_t()
    assert M.mach_port_extract_right(T(), doomed, M.MACH_MSG_TYPE_MAKE_SEND, byref(send), byref(got)) == OK
    assert M.task_set_exception_ports(T(), M.EXC_MASK_GUARD, port, M.EXCEPTION_DEFAULT, 0) == OK
    M.mach_port_destroy(T(), doomed)  # send is a dead name now (or a fresh name for the send right)
    if send.value != doomed:
        assert M.task_set_exception_ports(T(), M.EXC_MASK_GUARD, send.value, M.EXCEPTION_STATE, 0) == OK
        assert get(M.task_get_exception_ports, T(), M.EXC_MASK_GUARD)[1] == [
            (M.EXC_MASK_GUARD, 0, M.EXCEPTION_STATE, 0)]
        M.mach_port_deallocate(T(), send.value)
    assert M.task_set_exception_ports(T(), M.EXC_MASK_GUARD, M.MACH_PORT_DEAD, M.EXCEPTION_DEFAULT, 0) == OK
    assert get(M.task_get_exception_ports, T(), M.EXC_MASK_GUARD)[1] == [(M.EXC_MASK_GUARD, 0, 1, 0)]


# -- threads ----------------------------------------------------------------------------------

def test_thread_ports_of_our_own_threads(port: int) -> None:
    me = M.mach_thread_self()
    try:
        assert M.mach_thread_self() == me  # one port per thread, a reference more
        M.mach_port_deallocate(T(), me)
        # never set: no entries at all, as XNU's thread without actions
        fresh: list[Any] = []

        def body() -> None:
            th = M.mach_thread_self()
            fresh.append(get(M.thread_get_exception_ports, th))
            fresh.append(M.thread_set_exception_ports(th, M.EXC_MASK_CRASH, 0, 0, 0))
            fresh.append(get(M.thread_get_exception_ports, th, M.EXC_MASK_CRASH | M.EXC_MASK_GUARD))
            fresh.append(th != me)
            M.mach_port_deallocate(T(), th)

        t = threading.Thread(target=body)
        t.start()
        t.join(10)
        assert fresh == [(OK, []), OK, (OK, [(M.EXC_MASK_CRASH | M.EXC_MASK_GUARD, 0, 0, 0)]), True]
        assert M.thread_set_exception_ports(me, M.EXC_MASK_BAD_ACCESS, port, SI64, M.x86_THREAD_STATE64) == OK
        assert get(M.thread_get_exception_ports, me, M.EXC_MASK_BAD_ACCESS | M.EXC_MASK_SOFTWARE)[1] == [
            (M.EXC_MASK_BAD_ACCESS, port, _i32(SI64), M.x86_THREAD_STATE64), (M.EXC_MASK_SOFTWARE, 0, 0, 0)]
        # the task's are apart
        assert get(M.task_get_exception_ports, T(), M.EXC_MASK_BAD_ACCESS)[1] == [(M.EXC_MASK_BAD_ACCESS, 0, 0, 0)]
        kr, old = swap(M.thread_swap_exception_ports, me, M.EXC_MASK_BAD_ACCESS, 0, 0, 0)
        assert kr == OK and old == [(M.EXC_MASK_BAD_ACCESS, port, _i32(SI64), M.x86_THREAD_STATE64)]
        assert not status(port).mps_srights or refs(port) == 1
        # task_threads on our own task gives the same ports
        acts, n = M.thread_act_array_t(), M.mach_msg_type_number_t()
        assert M.task_threads(T(), byref(acts), byref(n)) == OK
        ours = [acts[i] for i in range(n.value)]
        M.mach_vm_deallocate(T(), ctypes.cast(acts, ctypes.c_void_p).value, 4 * n.value)
        assert me in ours and len(set(ours)) == len(ours)
        for t in ours:
            M.mach_port_deallocate(T(), t)
        # their state is not ours to trace
        st = (ctypes.c_uint32 * M.x86_THREAD_STATE64_COUNT)()
        cnt = M.mach_msg_type_number_t(M.x86_THREAD_STATE64_COUNT)
        assert M.thread_get_state(me, M.x86_THREAD_STATE64, st, byref(cnt)) == M.KERN_NOT_SUPPORTED
        # a thread port is no task port, and a task port no thread port
        assert M.thread_set_exception_ports(T(), 2, port, 1, 0) == M.KERN_INVALID_ARGUMENT
        assert M.task_set_exception_ports(me, 2, port, 1, 0) == M.KERN_INVALID_ARGUMENT
    finally:
        M.mach_port_deallocate(T(), me)


def test_a_thread_that_exited_is_kern_failure_and_its_rights_go(port: int) -> None:
    got: list[int] = []

    def body() -> None:
        th = M.mach_thread_self()
        got.append(M.thread_set_exception_ports(th, M.EXC_MASK_ALL, port, M.EXCEPTION_DEFAULT, 0))
        got.append(th)

    t = threading.Thread(target=body)
    t.start()
    t.join(10)
    assert not t.is_alive()
    tid = t.native_id
    # join returns before the kernel has done with the thread: wait for it
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/self/task/{tid}") and time.monotonic() < deadline:
        time.sleep(0.01)
    kr, th = got
    assert kr == OK
    M.mach_port_deallocate(T(), port)
    # the thread is gone: its actions go at the next call, their rights with them
    assert M.thread_set_exception_ports(th, M.EXC_MASK_ALL, 0, 0, 0) in (M.KERN_FAILURE, M.MACH_SEND_INVALID_DEST)
    assert get(M.thread_get_exception_ports, th)[0] in (M.KERN_FAILURE, M.MACH_SEND_INVALID_DEST)
    assert not status(port).mps_srights
    M.mach_port_deallocate(T(), th)


# -- other tasks ----------------------------------------------------------------------------

def _child() -> int:
    return os.getpid()


def test_another_tasks_and_its_threads_ports_are_kept_here(port: int) -> None:
    with Doomed(_child) as d:
        d.ready()
        task = M.mach_port_t()
        assert M.task_for_pid(T(), d.pid, byref(task)) == OK
        try:
            assert get(M.task_get_exception_ports, task.value, M.EXC_MASK_BAD_ACCESS)[1] == [
                (M.EXC_MASK_BAD_ACCESS, 0, 0, 0)]
            assert M.task_set_exception_ports(task.value, M.EXC_MASK_BAD_ACCESS | M.EXC_MASK_BREAKPOINT, port,
                                              SI64, M.x86_THREAD_STATE64) == OK
            assert get(M.task_get_exception_ports, task.value, 0x42)[1] == [
                (0x42, port, _i32(SI64), M.x86_THREAD_STATE64)]
            assert get(M.task_get_exception_ports, T(), 0x42)[1] == [(0x42, 0, 0, 0)]  # ours are apart
            acts, n = M.thread_act_array_t(), M.mach_msg_type_number_t()
            assert M.task_threads(task.value, byref(acts), byref(n)) == OK
            th, others = acts[0], [acts[i] for i in range(1, n.value)]
            M.mach_vm_deallocate(T(), ctypes.cast(acts, ctypes.c_void_p).value, 4 * n.value)
            for o in others:
                M.mach_port_deallocate(T(), o)
            assert get(M.thread_get_exception_ports, th) == (OK, [])
            assert M.thread_set_exception_ports(th, M.EXC_MASK_ARITHMETIC, port, M.EXCEPTION_DEFAULT, 0) == OK
            assert get(M.thread_get_exception_ports, th, M.EXC_MASK_ARITHMETIC)[1] == [
                (M.EXC_MASK_ARITHMETIC, port, 1, 0)]
            M.mach_port_deallocate(T(), port)
            assert status(port).mps_srights
            # the target dies: its tables go at the next call, and their rights
            d.kill()
            assert get(M.task_get_exception_ports, T(), 2)[0] == OK
            assert not status(port).mps_srights
            assert M.task_set_exception_ports(task.value, 2, 0, 0, 0) == M.MACH_SEND_INVALID_DEST
            M.mach_port_deallocate(T(), th)
        finally:
            M.mach_port_deallocate(T(), task.value)


def test_a_task_that_exited_unreaped_has_its_ports_released(port: int) -> None:
    """A task that exited and that its parent has not reaped yet (a
    zombie: its /proc entry stays) is gone as well: the next call releases
    its exception ports' rights."""
    with Doomed(_child) as d:
        d.ready()
        task = M.mach_port_t()
        assert M.task_for_pid(T(), d.pid, byref(task)) == OK
        try:
            assert M.task_set_exception_ports(task.value, M.EXC_MASK_BAD_ACCESS, port, M.EXCEPTION_DEFAULT, 0) == OK
            M.mach_port_deallocate(T(), port)
            assert status(port).mps_srights
            os.kill(d.pid, signal.SIGKILL)  # not reaped: a zombie
            deadline = time.monotonic() + 30
            while _state(d.pid) != "Z":
                assert time.monotonic() < deadline, _state(d.pid)
                time.sleep(0.01)
            assert get(M.task_get_exception_ports, T(), 2)[0] == OK
            assert not status(port).mps_srights
        finally:
            M.mach_port_deallocate(T(), task.value)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


# -- the host ---------------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="host_priv needs root (or CAP_IPC_LOCK)")
def test_host_ports_need_host_priv(port: int) -> None:
    H = M.mach_host_self()
    assert M.host_set_exception_ports(H, M.EXC_MASK_ALL, port, M.EXCEPTION_DEFAULT, 0) == OK
    assert get(M.host_get_exception_ports, H)[1] == [(M.EXC_MASK_ALL, port, 1, 0)]
    kr, old = swap(M.host_swap_exception_ports, H, M.EXC_MASK_BAD_ACCESS, 0, M.EXCEPTION_STATE, 0)
    assert kr == OK and old == [(M.EXC_MASK_BAD_ACCESS, port, 1, 0)]
    assert M.host_set_exception_ports(H, 1, port, 1, 0) == M.KERN_INVALID_ARGUMENT
    assert M.host_set_exception_ports(T(), 2, port, 1, 0) == M.KERN_INVALID_ARGUMENT  # not the host
    assert M.host_set_exception_ports(0x7777707, 2, port, 1, 0) == M.MACH_SEND_INVALID_DEST

    def nobody() -> tuple[int, ...]:
        # the host's table is the same host's: a fork child keeps a copy
        kept = get(M.host_get_exception_ports, M.mach_host_self(), M.EXC_MASK_ARITHMETIC)
        become_nobody()
        p = new_port()
        return (kept[0], kept[1][0][0], kept[1][0][2],
                M.host_set_exception_ports(M.mach_host_self(), M.EXC_MASK_ALL, p, M.EXCEPTION_DEFAULT, 0),
                get(M.host_get_exception_ports, M.mach_host_self())[0],
                swap(M.host_swap_exception_ports, M.mach_host_self(), 2, 0, 1, 0)[0],
                M.task_set_exception_ports(T(), M.EXC_MASK_ALL, p, M.EXCEPTION_DEFAULT, 0))

    # the last: a process that changed its credentials is not dumpable, so
    # no tracer may trace it and its faults could not be delivered: the
    # set fails, changing nothing (docs/deviations.md)
    assert run_in_child(nobody) == (OK, M.EXC_MASK_ARITHMETIC, 1, M.KERN_INVALID_ARGUMENT,
                                    M.KERN_INVALID_ARGUMENT, M.KERN_INVALID_ARGUMENT, M.KERN_FAILURE)
    assert M.host_set_exception_ports(H, M.EXC_MASK_VALID, 0, 0, 0) == OK
    M.mach_port_deallocate(T(), port)
    assert not status(port).mps_srights


# -- inheritance ------------------------------------------------------------------------------

def test_a_fork_child_inherits_the_task_ports_not_the_threads(port: int) -> None:
    me = M.mach_thread_self()
    try:
        assert M.task_set_exception_ports(T(), M.EXC_MASK_BAD_ACCESS, port, SI64, M.x86_THREAD_STATE64) == OK
        assert M.thread_set_exception_ports(me, M.EXC_MASK_BAD_ACCESS, port, M.EXCEPTION_DEFAULT, 0) == OK

        def child() -> tuple[Any, ...]:
            kr, got = get(M.task_get_exception_ports, T(), M.EXC_MASK_BAD_ACCESS, release=False)
            (mask, handler, behavior, flavor), = got
            sent = send_text(handler, b"child", msg_id=4242)  # the same port: it reaches the parent
            M.mach_port_deallocate(T(), handler)
            th = M.mach_thread_self()
            threads = get(M.thread_get_exception_ports, th)
            M.mach_port_deallocate(T(), th)
            # the child's settings are its own
            clear_task()
            return kr, mask, behavior, flavor, sent, threads

        kr, mask, behavior, flavor, sent, threads = run_in_child(child)
        assert (kr, mask, behavior, flavor, sent) == (OK, M.EXC_MASK_BAD_ACCESS, _i32(SI64),
                                                       M.x86_THREAD_STATE64, OK)
        assert threads == (OK, [])
        assert _receive(port) == 4242
        # the child's clearing changed nothing here
        assert get(M.task_get_exception_ports, T(), M.EXC_MASK_BAD_ACCESS)[1] == [
            (M.EXC_MASK_BAD_ACCESS, port, _i32(SI64), M.x86_THREAD_STATE64)]
    finally:
        M.mach_port_deallocate(T(), me)


def test_a_fork_child_holds_no_right_of_its_parents_threads_ports(port: int) -> None:
    me = M.mach_thread_self()
    try:
        assert M.thread_set_exception_ports(me, M.EXC_MASK_ALL, port, M.EXCEPTION_DEFAULT, 0) == OK
        with Doomed(_child) as d:
            d.ready()
            # the child lives on; clearing here releases the last send right
            assert M.thread_set_exception_ports(me, M.EXC_MASK_ALL, 0, 0, 0) == OK
            assert M.mach_port_deallocate(T(), port) == OK
            assert not status(port).mps_srights
    finally:
        M.mach_port_deallocate(T(), me)


def _receive(port: int) -> int:
    class Rcv(ctypes.Structure):
        _fields_ = [("header", M.mach_msg_header_t), ("body", ctypes.c_char * 256)]
    r = Rcv()
    assert M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), port, 30000, 0) == OK
    M.mach_msg_destroy(r.header)
    return int(r.header.msgh_id)


SPAWNED = r"""
import ctypes
from pymach.mach import *
N = EXC_TYPES_COUNT
A = ctypes.c_uint32 * N
m, h, b, f = A(), A(), A(), A()
c = mach_msg_type_number_t(N)
kr = task_get_exception_ports(mach_task_self(), EXC_MASK_ALL, m, byref(c), h, b, f)
out = [(m[j], b[j], f[j]) for j in range(c.value) if h[j]]
class Msg(Structure):
    _fields_ = [("header", mach_msg_header_t)]
msg = Msg()
msg.header.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, 0)
msg.header.msgh_size = sizeof(msg)
msg.header.msgh_remote_port = h[0]
msg.header.msgh_id = 4343
sent = mach_msg(msg.header, MACH_SEND_MSG, sizeof(msg), 0, 0, 0, 0)
th = mach_thread_self()
c2 = mach_msg_type_number_t(N)
kr2 = thread_get_exception_ports(th, EXC_MASK_ALL, m, byref(c2), h, b, f)
print(kr, out, sent, kr2, c2.value)
"""


def test_a_spawned_program_inherits_the_task_ports(port: int) -> None:
    assert M.task_set_exception_ports(T(), M.EXC_MASK_BAD_ACCESS | M.EXC_MASK_ARITHMETIC, port, SI64,
                                      M.x86_THREAD_STATE64) == OK
    assert M.task_set_exception_ports(T(), M.EXC_MASK_BREAKPOINT, port, M.EXCEPTION_DEFAULT, 0) == OK
    env = {**os.environ, "PYTHONPATH": str(Path(pymach.__file__).resolve().parent.parent)}
    p = pymach.spawn([sys.executable, "-c", SPAWNED], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err.decode()
    assert out.decode().split() == f"0 [(10, {SI64 & 0xFFFFFFFF}, 4), (64, 1, 0)] 0 0 0".split()
    assert _receive(port) == 4343


# -- by message: task.defs and thread_act.defs ------------------------------------------------

def test_the_routines_are_served_by_message(port: int) -> None:
    pytest.importorskip("pcpp")
    from pymach.mig import compile_defs
    from pymach.mig.rpc import Interface
    tk = Interface(compile_defs(str(DEFS / "task.defs")))
    ta = Interface(compile_defs(str(DEFS / "thread_act.defs")))
    M.mig_get_reply_port()
    before = names()
    assert tk.c.task_set_exception_ports(T(), M.EXC_MASK_BAD_ACCESS | M.EXC_MASK_SOFTWARE, port, SI64,
                                         M.x86_THREAD_STATE64) == OK
    assert tk.c.task_set_exception_ports(T(), 1, port, 1, 0) == M.KERN_INVALID_ARGUMENT
    assert get(tk.c.task_get_exception_ports, T(), 0x22)[1] == [(0x22, port, _i32(SI64), M.x86_THREAD_STATE64)]
    assert get(M.task_get_exception_ports, T(), 0x22)[1] == [(0x22, port, _i32(SI64), M.x86_THREAD_STATE64)]
    kr, old = swap(tk.c.task_swap_exception_ports, T(), 0x2, 0, 0, 0)
    assert kr == OK and old == [(0x2, port, _i32(SI64), M.x86_THREAD_STATE64)]
    me = M.mach_thread_self()
    assert ta.c.thread_set_exception_ports(me, M.EXC_MASK_GUARD, port, M.EXCEPTION_DEFAULT, 0) == OK
    assert get(ta.c.thread_get_exception_ports, me, M.EXC_MASK_GUARD)[1] == [(M.EXC_MASK_GUARD, port, 1, 0)]
    kr, old = swap(ta.c.thread_swap_exception_ports, me, M.EXC_MASK_GUARD, 0, 0, 0)
    assert kr == OK and old == [(M.EXC_MASK_GUARD, port, 1, 0)]
    M.mach_port_deallocate(T(), me)
    assert names() == before and refs(port) == 1
    M.mig_dealloc_reply_port(M.mig_get_reply_port())


# -- the exception messages' interfaces --------------------------------------------------------

def test_exc_and_mach_exc_have_apples_layouts() -> None:
    pytest.importorskip("pcpp")
    from pymach.mig import compile_defs
    ref = json.loads((ROOT / "tests" / "data" / "mig_apple_layouts.json").read_text())
    for name, ids in (("exc", [2401, 2402, 2403]), ("mach_exc", [2405, 2406, 2407])):
        sub = compile_defs(str(DEFS / f"{name}.defs"))
        assert sub.name == name and sub.base == ref[name]["base"]
        apple = {r["id"]: r for r in ref[name]["routines"]}
        assert sorted(rt.id for rt in sub.routines) == ids == sorted(apple)
        for rt in sub.routines:
            want = apple[rt.id]
            assert rt.name == want["routine"] and rt.simple == want["simple"]
            assert [rt.request.size, [[f.name, f.offset, f.size] for f in rt.request.fields]] == \
                [want["request"]["size"], want["request"]["fields"]], rt.name
            assert [rt.reply.size, [[f.name, f.offset, f.size] for f in rt.reply.fields]] == \
                [want["reply"]["size"], want["reply"]["fields"]], rt.name


@pytest.mark.parametrize("name", ["exc", "mach_exc"])
def test_the_committed_exc_modules_are_what_pymach_mig_makes(name: str, tmp_path: Path) -> None:
    pytest.importorskip("pcpp")
    env = {**os.environ, "PYTHONPATH": str(Path(pymach.__file__).resolve().parent.parent)}
    user, server = tmp_path / f"{name}_user.py", tmp_path / f"{name}_server.py"
    r = subprocess.run([sys.executable, "-m", "pymach", "mig", "-user", str(user), "-server", str(server),
                        f"{name}.defs"], cwd=DEFS, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    for made in (user, server):
        assert made.read_text() == (EXC / made.name).read_text(), (
            f"regenerate: cd src/pymach/defs && pymach mig -user ../mig/exc/{name}_user.py "
            f"-server ../mig/exc/{name}_server.py {name}.defs")


class Handler:
    """A mach_exc handler: it moves the faulting rip past a 2-byte
    instruction and sets rax, as a handler that skips an instruction does."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def catch_mach_exception_raise(self, port: int, thread: int, task: int, exception: int,
                                   code: list[int]) -> int:
        raise M.MachError(M.KERN_FAILURE, "not this one")

    def catch_mach_exception_raise_state(self, port: int, exception: int, code: list[int], flavor: int,
                                         old_state: list[int]) -> tuple[int, list[int]]:
        raise M.MachError(M.KERN_FAILURE, "not this one")

    def catch_mach_exception_raise_state_identity(self, port: int, thread: int, task: int, exception: int,
                                                  code: list[int], flavor: int,
                                                  old_state: list[int]) -> tuple[int, list[int]]:
        st = M.x86_thread_state64_t.from_buffer_copy(bytes((ctypes.c_uint32 * len(old_state))(*old_state)))
        self.seen.append((exception, list(code), flavor, getattr(st, "__rip"), getattr(st, "__rax")))
        for name in (thread, task):
            if name:
                M.mach_port_deallocate(T(), name)
        # (getattr: ``st.__rip`` in a class body would be name-mangled)
        setattr(st, "__rip", getattr(st, "__rip") + 2)
        setattr(st, "__rax", 0x4D616368)
        new = ctypes.cast(ctypes.pointer(st), ctypes.POINTER(ctypes.c_uint32 * M.x86_THREAD_STATE64_COUNT))
        return flavor, list(new.contents)


def test_a_generated_handler_answers_a_generated_client_in_a_fork_child(port: int) -> None:
    pytest.importorskip("pcpp")
    from pymach.mig.exc import mach_exc_server, mach_exc_user
    handler = Handler()
    mach_exc_server.implementation = handler
    before = names()
    arr = (M.mach_port_t * 1)(port)
    assert M.mach_ports_register(T(), arr, 1) == OK
    results: list[int] = []

    def serve() -> None:
        results.append(M.mach_msg_server_once(mach_exc_server.mach_exc_server, mach_exc_server.mach_exc_max_size,
                                              port, 0))

    server = threading.Thread(target=serve)
    server.start()

    def child() -> tuple[Any, ...]:
        signal.alarm(60)
        ports, cnt = M.mach_port_array_t(), M.mach_msg_type_number_t()
        assert M.mach_ports_lookup(T(), byref(ports), byref(cnt)) == OK
        dest = ports[0]
        st = M.x86_thread_state64_t()
        st.__rip, st.__rax = 0x401000, 7
        old = ctypes.cast(ctypes.pointer(st), ctypes.POINTER(ctypes.c_uint32 * M.x86_THREAD_STATE64_COUNT)).contents
        code = (M.mach_exception_data_type_t * 2)(M.KERN_PROTECTION_FAILURE, 0x7FFF00001000)
        flavor = ctypes.c_int(M.x86_THREAD_STATE64)
        new = (ctypes.c_uint32 * 1296)()
        new_cnt = M.mach_msg_type_number_t(1296)
        ident = new_port()  # the identity ports: plain send rights here
        kr = mach_exc_user.mach_exception_raise_state_identity(
            dest, ident, ident, M.EXC_BAD_ACCESS, code, 2, byref(flavor), old, M.x86_THREAD_STATE64_COUNT,
            new, byref(new_cnt))
        got = M.x86_thread_state64_t.from_buffer_copy(bytes(new)[:ctypes.sizeof(M.x86_thread_state64_t)])
        return kr, flavor.value, new_cnt.value, got.__rip, got.__rax

    try:
        kr, flavor, cnt, rip, rax = run_in_child(child)
    finally:
        M.mach_ports_register(T(), arr, 0)
        server.join(30)
    assert not server.is_alive() and results == [OK]
    assert (kr, flavor, cnt, rip, rax) == (OK, M.x86_THREAD_STATE64, M.x86_THREAD_STATE64_COUNT, 0x401002,
                                           0x4D616368)
    assert handler.seen == [(M.EXC_BAD_ACCESS, [M.KERN_PROTECTION_FAILURE, 0x7FFF00001000], M.x86_THREAD_STATE64,
                             0x401000, 7)]
    assert names() == before


def test_nothing_leaks(port: int) -> None:
    before = names()
    me = M.mach_thread_self()
    for _ in range(20):
        assert M.task_set_exception_ports(T(), M.EXC_MASK_ALL, port, M.EXCEPTION_DEFAULT, 0) == OK
        assert M.thread_set_exception_ports(me, M.EXC_MASK_ALL, port, M.EXCEPTION_DEFAULT, 0) == OK
        assert get(M.task_get_exception_ports, T())[0] == OK
        assert swap(M.thread_swap_exception_ports, me, M.EXC_MASK_ALL, 0, 0, 0)[0] == OK
        clear_task()
    M.mach_port_deallocate(T(), me)
    assert names() == before and refs(port) == 1
    M.mach_port_deallocate(T(), port)
    assert not status(port).mps_srights
