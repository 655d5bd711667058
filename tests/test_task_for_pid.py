"""task_for_pid, task_name_for_pid, pid_for_task and task_info across real
processes: grants, refusals with dropped privileges, dead and reused pids."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from machutil import tfp
from procutil import forked, sleep_process, spawn_with_pid, stop_process
from pymach import mach as M
from pymach.mach import byref
from pymach.task import Task


def test_task_for_pid_grants_a_send_right_over_a_pidfd():
    p = sleep_process()
    try:
        kr, t = tfp(p.pid)
        assert kr == M.KERN_SUCCESS and t not in (0, M.mach_task_self())
        typ = M.mach_port_type_t()
        assert M.mach_port_type(M.mach_task_self(), t, byref(typ)) == 0
        assert typ.value == M.MACH_PORT_TYPE_SEND
        pid = ctypes.c_int()
        assert M.pid_for_task(t, byref(pid)) == 0 and pid.value == p.pid
        # the right holds a pidfd of the target
        assert any(os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
                   for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}"))
        # a second call names the same right, with one more reference
        kr2, t2 = tfp(p.pid)
        assert kr2 == 0 and t2 == t
        refs = M.mach_port_urefs_t()
        assert M.mach_port_get_refs(M.mach_task_self(), t, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0
        assert refs.value == 2
        assert M.mach_port_deallocate(M.mach_task_self(), t) == 0
        assert M.mach_port_deallocate(M.mach_task_self(), t) == 0  # closes the pidfd (fd-leak check)
        assert M.pid_for_task(t, byref(pid)) == M.KERN_FAILURE and pid.value == -1
    finally:
        stop_process(p)


def test_task_for_pid_failures_are_kern_failure_with_a_null_name():
    assert tfp(0) == (M.KERN_FAILURE, 0)
    assert tfp(-5) == (M.KERN_FAILURE, 0)
    p = subprocess.Popen(["true"])
    p.wait()
    assert tfp(p.pid) == (M.KERN_FAILURE, 0)  # no such process
    t = M.mach_port_t(7)
    assert M.task_for_pid(0x4242, os.getpid(), byref(t)) == M.KERN_FAILURE and t.value == 0


def test_task_for_pid_of_ourselves_is_mach_task_self():
    assert tfp(os.getpid()) == (0, M.mach_task_self())
    refs = M.mach_port_urefs_t()
    M.mach_port_get_refs(M.mach_task_self(), M.mach_task_self(), M.MACH_PORT_RIGHT_SEND, byref(refs))
    before = refs.value
    with Task.for_pid(os.getpid()) as me:
        assert me.port == M.mach_task_self() and me.pid == os.getpid()
    M.mach_port_get_refs(M.mach_task_self(), M.mach_task_self(), M.MACH_PORT_RIGHT_SEND, byref(refs))
    assert refs.value == before  # the C call keeps its reference; close() dropped the Pythonic one
    assert M.mach_port_deallocate(M.mach_task_self(), M.mach_task_self()) == 0


def test_a_zombie_is_refused():
    p = sleep_process()
    p.kill()
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # dead, and a zombie until waited for
    try:
        assert tfp(p.pid) == (M.KERN_FAILURE, 0)
    finally:
        p.wait()


def test_a_task_port_dies_with_its_process():
    p = sleep_process()
    kr, t = tfp(p.pid)
    assert kr == 0
    stop_process(p)
    data, cnt = M.pointer_t(), M.mach_msg_type_number_t()
    assert M.mach_vm_read(t, 0x1000, 16, byref(data), byref(cnt)) == M.MACH_SEND_INVALID_DEST
    typ = M.mach_port_type_t()
    assert M.mach_port_type(M.mach_task_self(), t, byref(typ)) == 0
    assert typ.value == M.MACH_PORT_TYPE_DEAD_NAME
    pid = ctypes.c_int()
    assert M.pid_for_task(t, byref(pid)) == M.KERN_FAILURE
    assert M.mach_port_deallocate(M.mach_task_self(), t) == 0


def test_a_reused_pid_is_never_answered():
    p = sleep_process()
    old_pid = p.pid
    kr, t = tfp(old_pid)
    assert kr == 0
    stop_process(p)
    q = spawn_with_pid(old_pid, ["sleep", "100"])
    if q is None:
        M.mach_port_deallocate(M.mach_task_self(), t)
        pytest.skip("cannot choose the next pid here (ns_last_pid)")
    try:
        pid = ctypes.c_int()
        assert M.pid_for_task(t, byref(pid)) == M.KERN_FAILURE
        addr, size = M.mach_vm_address_t(0), M.mach_vm_size_t()
        info = M.vm_region_basic_info_data_64_t()
        cnt = M.mach_msg_type_number_t(M.VM_REGION_BASIC_INFO_COUNT_64)
        assert M.mach_vm_region(t, byref(addr), byref(size), M.VM_REGION_BASIC_INFO_64, byref(info),
                                byref(cnt), byref(M.mach_port_t())) == M.MACH_SEND_INVALID_DEST
        ti = M.mach_task_basic_info()
        cnt = M.mach_msg_type_number_t(M.MACH_TASK_BASIC_INFO_COUNT)
        assert M.task_info(t, M.MACH_TASK_BASIC_INFO, byref(ti), byref(cnt)) == M.MACH_SEND_INVALID_DEST
        # a fresh task_for_pid names the new process, under a new name
        kr, t2 = tfp(old_pid)
        assert kr == 0 and t2 != t
        assert M.mach_port_deallocate(M.mach_task_self(), t2) == 0
    finally:
        M.mach_port_deallocate(M.mach_task_self(), t)
        stop_process(q)


def test_a_task_name_port_answers_pid_and_info_but_not_memory():
    p = sleep_process()
    try:
        n = M.mach_port_t()
        assert M.task_name_for_pid(M.mach_task_self(), p.pid, byref(n)) == 0
        pid = ctypes.c_int()
        assert M.pid_for_task(n, byref(pid)) == 0 and pid.value == p.pid
        ti = M.task_basic_info()
        cnt = M.mach_msg_type_number_t(M.TASK_BASIC_INFO_COUNT)
        assert M.task_info(n, M.TASK_BASIC_INFO, byref(ti), byref(cnt)) == 0
        assert ti.virtual_size > 0
        data, dcnt = M.pointer_t(), M.mach_msg_type_number_t()
        assert M.mach_vm_read(n, 0x1000, 16, byref(data), byref(dcnt)) == M.KERN_INVALID_ARGUMENT
        assert M.mach_port_deallocate(M.mach_task_self(), n) == 0
    finally:
        stop_process(p)


def test_task_info_counts_and_layouts():
    assert ctypes.sizeof(M.task_basic_info_64) == 40 and M.TASK_BASIC_INFO_COUNT == 10
    assert M.TASK_BASIC_INFO == M.TASK_BASIC_INFO_64 == 5
    assert ctypes.sizeof(M.task_basic_info_32) == 32 and M.TASK_BASIC_INFO_32_COUNT == 8
    assert ctypes.sizeof(M.mach_task_basic_info) == 48 and M.MACH_TASK_BASIC_INFO_COUNT == 12
    assert M.MACH_TASK_BASIC_INFO == 20


def test_task_info_of_a_process():
    # the child spends 0.3 s of its own user time (not of the clock), so a
    # busy machine only makes it take longer
    code = ("import os, sys\n"
            "while os.times().user < 0.3:\n"
            "    for _ in range(10000): pass\n"
            "print('ready', flush=True); sys.stdin.read()\n")
    p = subprocess.Popen([sys.executable, "-c", code],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        with Task.for_pid(p.pid) as task:
            t = task.port
            ti = M.mach_task_basic_info()
            cnt = M.mach_msg_type_number_t(M.MACH_TASK_BASIC_INFO_COUNT)
            assert M.task_info(t, M.MACH_TASK_BASIC_INFO, byref(ti), byref(cnt)) == 0
            assert cnt.value == M.MACH_TASK_BASIC_INFO_COUNT
            page = os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{p.pid}/statm") as f:
                total, resident = (int(x) for x in f.read().split()[:2])
            assert ti.virtual_size == total * page
            assert abs(ti.resident_size - resident * page) < 64 * page
            assert ti.resident_size_max >= ti.resident_size
            assert ti.user_time.seconds + ti.user_time.microseconds / 1e6 >= 0.2
            assert ti.policy == 1 and ti.suspend_count == 0
            small = M.mach_msg_type_number_t(M.MACH_TASK_BASIC_INFO_COUNT - 1)
            assert M.task_info(t, M.MACH_TASK_BASIC_INFO, byref(ti), byref(small)) == M.KERN_INVALID_ARGUMENT
            assert M.task_info(t, 999, byref(ti), byref(cnt)) == M.KERN_INVALID_ARGUMENT
            assert task.info().virtual_size > 0 and task.pid == p.pid
        assert task.pid == -1  # released
    finally:
        p.stdin.close()  # type: ignore[union-attr]
        stop_process(p)
        p.stdout.close()  # type: ignore[union-attr]
    own = M.mach_task_basic_info()
    cnt = M.mach_msg_type_number_t(M.MACH_TASK_BASIC_INFO_COUNT)
    assert M.task_info(M.mach_task_self(), M.MACH_TASK_BASIC_INFO, byref(own), byref(cnt)) == 0
    assert own.virtual_size > 0


def test_fork_child_drops_task_rights():
    p = sleep_process()
    try:
        with Task.for_pid(p.pid) as task:
            def child(sync):
                pid = ctypes.c_int()
                return M.pid_for_task(task.port, byref(pid))
            c = forked(child)
            with c:
                pass
            assert c.result == M.KERN_FAILURE
            assert task.pid == p.pid
    finally:
        stop_process(p)


def test_destroy_and_mod_refs_release_the_pidfd():
    p = sleep_process()
    try:
        kr, t = tfp(p.pid)
        assert kr == 0
        assert M.mach_port_destroy(M.mach_task_self(), t) == 0
        kr, t = tfp(p.pid)
        assert kr == 0
        assert M.mach_port_mod_refs(M.mach_task_self(), t, M.MACH_PORT_RIGHT_SEND, -1) == 0
        typ = M.mach_port_type_t()
        assert M.mach_port_type(M.mach_task_self(), t, byref(typ)) == M.KERN_INVALID_NAME
        # the 32-bit basic info, with a fresh right
        kr, t = tfp(p.pid)
        ti = M.task_basic_info_32()
        cnt = M.mach_msg_type_number_t(M.TASK_BASIC_INFO_32_COUNT)
        assert M.task_info(t, M.TASK_BASIC_INFO_32, byref(ti), byref(cnt)) == 0
        assert cnt.value == 8 and ti.virtual_size > 0 and ti.policy == 1
        assert M.mach_port_deallocate(M.mach_task_self(), t) == 0
    finally:
        stop_process(p)
