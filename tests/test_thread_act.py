"""task_suspend/resume, task_threads and thread_get/set_state through the
C interface, on a process that is not Python (`sleep`)."""

from __future__ import annotations

import ctypes
import time
from ctypes import byref

from pymach import mach as M
from procutil import start_sleep

T = M.mach_task_self


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1] for line in f if line.startswith("State:"))


def _tracer(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("TracerPid:"))


def _task(pid: int) -> int:
    t = M.mach_port_t()
    assert M.task_for_pid(T(), pid, byref(t)) == M.KERN_SUCCESS
    return t.value


def test_suspend_and_resume_are_counted() -> None:
    p = start_sleep()
    t = _task(p.pid)
    try:
        assert M.task_suspend(t) == M.KERN_SUCCESS
        assert M.task_suspend(t) == M.KERN_SUCCESS
        assert _state(p.pid) == "T"
        assert M.task_resume(t) == M.KERN_SUCCESS
        assert _state(p.pid) == "T"  # still suspended once
        assert M.task_resume(t) == M.KERN_SUCCESS
        deadline = time.monotonic() + 5
        while _state(p.pid) == "T":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert M.task_resume(t) == M.KERN_FAILURE  # not suspended
        assert M.task_suspend(T()) == M.KERN_NOT_SUPPORTED
    finally:
        M.mach_port_deallocate(T(), t)
        p.kill()
        p.wait()


def test_threads_and_their_state_move_sleep_to_exit() -> None:
    p = start_sleep()
    t = _task(p.pid)
    try:
        lst = M.vm_offset_t()
        cnt = M.mach_msg_type_number_t()
        assert M.task_threads(t, byref(lst), byref(cnt)) == M.KERN_SUCCESS
        assert cnt.value == 1
        (thread,) = (ctypes.c_uint32 * cnt.value).from_address(lst.value)
        st = M.x86_thread_state64_t()
        n = M.mach_msg_type_number_t(M.x86_THREAD_STATE64_COUNT)
        short = M.mach_msg_type_number_t(10)
        assert M.thread_get_state(thread, M.x86_THREAD_STATE64, byref(st), byref(short)) == M.KERN_INVALID_ARGUMENT
        assert M.thread_get_state(thread, M.x86_THREAD_STATE64, byref(st), byref(n)) == M.KERN_SUCCESS
        assert n.value == M.x86_THREAD_STATE64_COUNT and st.__rip != 0 and st.__rsp != 0
        # point the thread at exit_group(42): rax = 231, rdi = 42, at a syscall instruction
        # (sleep is in nanosleep: rip follows a `syscall`, so rip - 2 is one)
        st.__rax, st.__rdi = 231, 42
        st.__rip -= 2
        assert M.thread_set_state(thread, M.x86_THREAD_STATE64, byref(st), M.x86_THREAD_STATE64_COUNT) == 0
        assert p.wait(10) == 42
        assert M.thread_get_state(thread, M.x86_THREAD_STATE64, byref(st), byref(n)) == M.MACH_SEND_INVALID_DEST
        assert M.mach_port_deallocate(T(), thread) == M.KERN_SUCCESS
        M.mach_vm_deallocate(T(), lst, 4096)
    finally:
        M.mach_port_deallocate(T(), t)
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_task_port_is_not_a_thread_port() -> None:
    p = start_sleep()
    t = _task(p.pid)
    try:
        st = M.x86_thread_state64_t()
        n = M.mach_msg_type_number_t(M.x86_THREAD_STATE64_COUNT)
        assert M.thread_get_state(t, M.x86_THREAD_STATE64, byref(st), byref(n)) == M.KERN_INVALID_ARGUMENT
    finally:
        M.mach_port_deallocate(T(), t)
        p.kill()
        p.wait()


def test_remote_allocate_protect_map_on_sleep() -> None:
    import pymach
    p = start_sleep()
    t = _task(p.pid)
    try:
        a = M.mach_vm_address_t(0)
        assert M.mach_vm_allocate(t, byref(a), 8192, M.VM_FLAGS_ANYWHERE) == M.KERN_SUCCESS
        assert M.mach_vm_protect(t, a, 8192, 0, M.VM_PROT_READ) == M.KERN_SUCCESS
        with open(f"/proc/{p.pid}/maps") as f:
            assert any(line.startswith(f"{a.value:x}-") and " r--p " in line for line in f)
        with pymach.Task.self().allocate(4096) as r:
            r.write(b"seen by sleep")
            with r.memory_entry() as e:
                b = M.mach_vm_address_t(0)
                assert M.mach_vm_map(t, byref(b), 4096, 0, M.VM_FLAGS_ANYWHERE, e.name, 0, 0, 3, 3,
                                     M.VM_INHERIT_COPY) == M.KERN_SUCCESS
                data = M.vm_offset_t()
                cnt = M.mach_msg_type_number_t()
                r.write(b"SEEN")
                assert M.mach_vm_read(t, b, 13, byref(data), byref(cnt)) == M.KERN_SUCCESS
                assert ctypes.string_at(data.value, cnt.value) == b"SEEN by sleep"
                M.mach_vm_deallocate(T(), data, cnt.value)
        assert M.mach_vm_deallocate(t, a, 8192) == M.KERN_SUCCESS
        # left running, neither stopped nor traced (a busy machine may show it
        # runnable for a moment on its way back into nanosleep)
        assert _state(p.pid) in ("S", "R") and _tracer(p.pid) == 0
    finally:
        M.mach_port_deallocate(T(), t)
        p.kill()
        p.wait()
