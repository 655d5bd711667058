"""<mach/semaphore.h>, <mach/sync_policy.h> and the semaphore routines of
<mach/task.h>, in the C layer: C names, kern_return_t results.

A semaphore is a send right (semaphore_t is a mach_port_t): it travels in
a port descriptor, and every task that holds it signals and waits on the
same count (pymach._kern.sync_sema). semaphore_create and
semaphore_destroy are also served by message on the task port (task.defs
3418 and 3419)."""

from __future__ import annotations

import ctypes
from typing import Any

from .._kern import sync_sema as SEMA
from .._kern import task_user as TU
from .._kern.sync_sema import (SYNC_POLICY_FIFO, SYNC_POLICY_FIXED_PRIORITY, SYNC_POLICY_LIFO,
                               SYNC_POLICY_ORDER_MASK, SYNC_POLICY_PREPOST, SYNC_POLICY_REVERSED,
                               SYNC_POLICY_USER_MASK)
from ._args import i32, out, set_out, u32
from ._errors import returns_kr

semaphore_t = ctypes.c_uint32
semaphore_consume_ref_t = ctypes.c_uint32
THREAD_NULL = 0
SEMAPHORE_NULL = 0


def _timespec(wait_time: Any) -> tuple[int, int]:
    """(tv_sec, tv_nsec) of a mach_timespec_t, or of a (sec, nsec) pair."""
    if isinstance(wait_time, tuple):
        sec, nsec = wait_time
        return u32(sec), i32(nsec)
    return u32(wait_time.tv_sec), i32(wait_time.tv_nsec)


def _clear(task: Any, semaphore: Any, policy: Any, value: Any) -> None:
    set_out(semaphore, 0)


@returns_kr(on_error=_clear)
def semaphore_create(task: Any, semaphore: Any, policy: Any, value: Any) -> int:
    """A new semaphore owned by ``task``, holding ``value``; the name of a
    send right to it into ``semaphore`` (MACH_PORT_NULL on failure).
    KERN_SUCCESS, KERN_INVALID_ARGUMENT (a policy outside
    SYNC_POLICY_USER_MASK, a negative value, a port that is not a task),
    MACH_SEND_INVALID_DEST (a name that is no task port),
    KERN_RESOURCE_SHORTAGE (no fd)."""
    o = out(semaphore)
    name = SEMA.semaphore_create(TU.task_of(u32(task)), i32(policy), i32(value))
    o.value = name
    return 0


@returns_kr()
def semaphore_destroy(task: Any, semaphore: Any) -> int:
    """Destroy the semaphore when ``task`` owns it (its waiters, in every
    task, return KERN_TERMINATED) and release the caller's send right.
    KERN_SUCCESS (also when ``task`` does not own it: only the right is
    released, as XNU), KERN_INVALID_ARGUMENT (not a semaphore, not a task),
    MACH_SEND_INVALID_DEST."""
    SEMA.semaphore_destroy(TU.task_of(u32(task)), u32(semaphore))
    return 0


@returns_kr()
def semaphore_signal(semaphore: Any) -> int:
    """Wake one waiter, or raise the count when none waits. KERN_SUCCESS,
    KERN_TERMINATED (destroyed), KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_INVALID_CAPABILITY (a send right to something else)."""
    SEMA.signal(u32(semaphore))
    return 0


@returns_kr()
def semaphore_signal_all(semaphore: Any) -> int:
    """Wake every thread waiting now; the count does not change.
    KERN_SUCCESS, KERN_TERMINATED, KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_INVALID_CAPABILITY."""
    SEMA.signal_all(u32(semaphore))
    return 0


@returns_kr()
def semaphore_signal_thread(semaphore: Any, thread: Any) -> int:
    """Wake ``thread`` (a thread port: mach_thread_self(), task_threads)
    if it waits on the semaphore, or with THREAD_NULL any one waiter; the
    count does not change. KERN_SUCCESS, KERN_NOT_WAITING (no such
    waiter), KERN_INVALID_ARGUMENT (``thread`` is not a thread port),
    KERN_TERMINATED, KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_INVALID_CAPABILITY."""
    SEMA.signal_thread(u32(semaphore), u32(thread))
    return 0


@returns_kr()
def semaphore_wait(semaphore: Any) -> int:
    """Take one from the count, waiting as long as it takes. KERN_SUCCESS
    (taken, or woken by semaphore_signal_all / semaphore_signal_thread),
    KERN_TERMINATED (destroyed, before or while waiting), KERN_ABORTED (a
    signal handler ran while it waited), KERN_INVALID_NAME,
    KERN_INVALID_RIGHT, KERN_INVALID_CAPABILITY."""
    return SEMA.wait(u32(semaphore), None)


@returns_kr()
def semaphore_timedwait(semaphore: Any, wait_time: Any) -> int:
    """semaphore_wait for at most ``wait_time`` (a mach_timespec_t, by
    value; {0, 0} does not block). The codes of semaphore_wait, and
    KERN_OPERATION_TIMED_OUT, KERN_INVALID_VALUE (tv_nsec outside
    [0, NSEC_PER_SEC))."""
    sec, nsec = _timespec(wait_time)
    return SEMA.wait(u32(semaphore), SEMA.deadline_of(sec, nsec))


@returns_kr()
def semaphore_wait_signal(wait_semaphore: Any, signal_semaphore: Any) -> int:
    """Signal ``signal_semaphore`` and wait on ``wait_semaphore`` in one
    step: the signal is given once this thread waits (or has taken the
    count). The codes of semaphore_wait; KERN_TERMINATED when either is
    destroyed."""
    return SEMA.wait(u32(wait_semaphore), None, u32(signal_semaphore))


@returns_kr()
def semaphore_timedwait_signal(wait_semaphore: Any, signal_semaphore: Any, wait_time: Any) -> int:
    """semaphore_wait_signal for at most ``wait_time``. The codes of
    semaphore_timedwait and semaphore_wait_signal."""
    sec, nsec = _timespec(wait_time)
    return SEMA.wait(u32(wait_semaphore), SEMA.deadline_of(sec, nsec), u32(signal_semaphore))


__all__ = ["semaphore_t", "semaphore_consume_ref_t", "THREAD_NULL", "SEMAPHORE_NULL", "SYNC_POLICY_FIFO",
           "SYNC_POLICY_FIXED_PRIORITY", "SYNC_POLICY_REVERSED", "SYNC_POLICY_ORDER_MASK", "SYNC_POLICY_LIFO",
           "SYNC_POLICY_PREPOST", "SYNC_POLICY_USER_MASK", "semaphore_create", "semaphore_destroy",
           "semaphore_signal", "semaphore_signal_all", "semaphore_signal_thread", "semaphore_wait",
           "semaphore_timedwait", "semaphore_wait_signal", "semaphore_timedwait_signal"]
