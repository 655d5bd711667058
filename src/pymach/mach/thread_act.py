"""<mach/task.h> and <mach/thread_act.h>: task_suspend, task_resume,
task_threads, thread_get_state and thread_set_state on another task, with
C names and kern_return_t results. They run by ptrace inside the target
(pymach._kern.vm_remote); x86_64 only."""

from __future__ import annotations

import ctypes
from typing import Any

from .._kern import kern_return as K
from .._kern import task_user as TU
from .._kern import vm_remote
from .._kern.vm_remote import x86_THREAD_STATE64, x86_THREAD_STATE64_COUNT, x86_thread_state64_t
from ._args import counted, i32, out, out_address, set_out, store, u32
from ._errors import returns_kr
from .mach_port import _ool_array
from .types import THREAD_FLAVOR_READ

thread_act_t = ctypes.c_uint32
thread_act_array_t = ctypes.POINTER(thread_act_t)
thread_state_flavor_t = ctypes.c_int


def mach_thread_self() -> int:
    """The name of a send right to the calling thread's port, one more
    user reference each call, as XNU's (release it with
    mach_port_deallocate). It takes exception ports; its state is not
    read or set (KERN_NOT_SUPPORTED: tracing our own process)."""
    return TU.thread_self()


@returns_kr()
def task_suspend(target_task: Any) -> int:
    """Stop the task's threads (counted). KERN_SUCCESS, KERN_FAILURE,
    KERN_INVALID_ARGUMENT, KERN_NOT_SUPPORTED (our own task),
    MACH_SEND_INVALID_DEST."""
    TU.task_suspend(u32(target_task))
    return 0


@returns_kr()
def task_resume(target_task: Any) -> int:
    """Undo one task_suspend. KERN_SUCCESS, KERN_FAILURE (not suspended),
    KERN_INVALID_ARGUMENT, KERN_NOT_SUPPORTED, MACH_SEND_INVALID_DEST."""
    TU.task_resume(u32(target_task))
    return 0


def task_threads(target_task: Any, act_list: Any, act_listCnt: Any) -> int:
    """The task's threads, as an array of thread ports in new memory
    (release it with vm_deallocate, and each port with
    mach_port_deallocate); our own task's too (the ports mach_thread_self
    gives in each thread). An ``act_list`` too narrow for an address is a
    TypeError. KERN_SUCCESS, KERN_INVALID_ARGUMENT,
    MACH_SEND_INVALID_DEST."""
    list_out = out_address(act_list)
    # (not returns_kr: the array is made after the code is known, and a
    # failure to make it raises)
    try:
        names = TU.task_threads(u32(target_task))
    except K.MachError as e:
        return e.kr
    if list_out is not None:
        store(list_out, _ool_array(names))
    set_out(act_listCnt, len(names))
    return 0


@returns_kr()
def thread_get_state(target_act: Any, flavor: Any, old_state: Any, old_stateCnt: Any) -> int:
    """The thread's registers: x86_THREAD_STATE64 into ``old_state`` (a
    buffer of at least x86_THREAD_STATE64_COUNT natural_t), ``old_stateCnt``
    in/out; a count larger than ``old_state`` holds counts as what it holds.
    KERN_SUCCESS, KERN_INVALID_ARGUMENT (flavor, a short count),
    KERN_NOT_SUPPORTED, MACH_SEND_INVALID_DEST, KERN_FAILURE."""
    cnt = out(old_stateCnt)
    where, n = counted(old_state, cnt.value)
    if i32(flavor) != x86_THREAD_STATE64 or n < x86_THREAD_STATE64_COUNT:
        return K.KERN_INVALID_ARGUMENT
    th = TU.traced_thread_of(u32(target_act), THREAD_FLAVOR_READ)  # thread_read_t
    st = vm_remote.thread_get_state(th.pid, th.pidfd, th.tid, x86_THREAD_STATE64)
    ctypes.memmove(where, ctypes.addressof(st), ctypes.sizeof(st))
    cnt.value = x86_THREAD_STATE64_COUNT
    return 0


@returns_kr()
def thread_set_state(target_act: Any, flavor: Any, new_state: Any, new_stateCnt: Any) -> int:
    """Set the thread's registers from x86_THREAD_STATE64; a count larger
    than ``new_state`` holds counts as what it holds. KERN_SUCCESS,
    KERN_INVALID_ARGUMENT (flavor, a short count, non-canonical rip/rsp),
    KERN_NOT_SUPPORTED, MACH_SEND_INVALID_DEST, KERN_FAILURE."""
    where, n = counted(new_state, u32(new_stateCnt), writable=False)
    if i32(flavor) != x86_THREAD_STATE64 or n < x86_THREAD_STATE64_COUNT:
        return K.KERN_INVALID_ARGUMENT
    st = x86_thread_state64_t.from_buffer_copy(ctypes.string_at(where, ctypes.sizeof(x86_thread_state64_t)))
    th = TU.traced_thread_of(u32(target_act))
    vm_remote.thread_set_state(th.pid, th.pidfd, th.tid, x86_THREAD_STATE64, st)
    return 0


__all__ = [
    "mach_thread_self", "task_suspend", "task_resume", "task_threads", "thread_get_state", "thread_set_state",
    "thread_act_t", "thread_act_array_t", "thread_state_flavor_t", "x86_THREAD_STATE64",
    "x86_THREAD_STATE64_COUNT", "x86_thread_state64_t",
]
