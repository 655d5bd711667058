"""<mach/exception_types.h>, <mach/i386/exception.h>, the flavors of
<mach/i386/thread_status.h>, and the routines that set and get exception
ports: task_set_exception_ports, task_get_exception_ports,
task_swap_exception_ports, their thread_* and host_* versions, with the
libsyscall signatures and kern_return_t results. The semantics are
pymach._kern.exception's (XNU's osfmk/kern/ipc_tt.c and ipc_host.c).

The out arrays are the caller's, as in C: ``masks``, ``old_handlers``,
``old_behaviors`` and ``old_flavors`` hold ``*masksCnt`` elements (usually
EXC_TYPES_COUNT), and ``masksCnt`` comes back as the number of entries
written; an array shorter than the count claims counts as what it holds."""

from __future__ import annotations

import ctypes
from typing import Any

from .._kern import exception as E
from .._kern.exception import *  # noqa: F401,F403
from .._kern import kern_return as K
from ._args import counted, i32, out, u32
from ._errors import returns_kr
from .types import mach_port_t

exception_type_t = ctypes.c_int
exception_data_type_t = ctypes.c_int32
mach_exception_data_type_t = ctypes.c_int64
exception_behavior_t = ctypes.c_int
exception_data_t = ctypes.POINTER(exception_data_type_t)
mach_exception_data_t = ctypes.POINTER(mach_exception_data_type_t)
exception_mask_t = ctypes.c_uint
exception_handler_t = mach_port_t
exception_port_t = mach_port_t
exception_mask_array_t = ctypes.POINTER(exception_mask_t)
exception_behavior_array_t = ctypes.POINTER(exception_behavior_t)
exception_flavor_array_t = ctypes.POINTER(ctypes.c_int)
exception_handler_array_t = ctypes.POINTER(exception_handler_t)
exception_port_array_t = exception_handler_array_t
mach_exception_code_t = mach_exception_data_type_t
mach_exception_subcode_t = mach_exception_data_type_t


def _put(entries: list[E.Entry], masks: Any, cnt: Any, handlers: Any, behaviors: Any,
         flavors: Any) -> None:
    """Write the entries into the caller's arrays and their count."""
    for j, (m, name, b, f) in enumerate(entries):
        ctypes.c_uint32.from_address(masks + 4 * j).value = m
        ctypes.c_uint32.from_address(handlers + 4 * j).value = name
        ctypes.c_int32.from_address(behaviors + 4 * j).value = b
        ctypes.c_int32.from_address(flavors + 4 * j).value = f
    cnt.value = len(entries)


def _room(masksCnt: Any, *arrays: Any) -> tuple[Any, int, list[int]]:
    """(the count object, the room the arrays have, their addresses)."""
    cnt = out(masksCnt)
    room = cnt.value
    addrs = []
    for arr in arrays:
        a, n = counted(arr, room)
        addrs.append(a)
        room = min(room, n)
    return cnt, room, addrs


def _set(kind: str, target: Any, exception_mask: Any, new_port: Any, behavior: Any, new_flavor: Any) -> int:
    E.set_ports(kind, u32(target), u32(exception_mask), u32(new_port), i32(behavior), i32(new_flavor))
    return 0


def _get(kind: str, target: Any, exception_mask: Any, masks: Any, masksCnt: Any, old_handlers: Any,
         old_behaviors: Any, old_flavors: Any) -> int:
    if old_handlers is None:
        return K.KERN_INVALID_ARGUMENT  # XNU: no ports array
    cnt, room, (m, h, b, f) = _room(masksCnt, masks, old_handlers, old_behaviors, old_flavors)
    _put(E.get_ports(kind, u32(target), u32(exception_mask), room), m, cnt, h, b, f)
    return 0


def _swap(kind: str, target: Any, exception_mask: Any, new_port: Any, behavior: Any, new_flavor: Any, masks: Any,
          masksCnt: Any, old_handlers: Any, old_behaviors: Any, old_flavors: Any) -> int:
    cnt, room, (m, h, b, f) = _room(masksCnt, masks, old_handlers, old_behaviors, old_flavors)
    entries = E.swap_ports(kind, u32(target), u32(exception_mask), u32(new_port), i32(behavior),
                           i32(new_flavor), room)
    _put(entries, m, cnt, h, b, f)
    return 0


@returns_kr()
def task_set_exception_ports(task: Any, exception_mask: Any, new_port: Any, behavior: Any, new_flavor: Any) -> int:
    """Set the task's exception port, behavior and flavor for the types in
    ``exception_mask`` (MACH_PORT_NULL clears); the task keeps a copy of
    the send right. KERN_SUCCESS, KERN_INVALID_ARGUMENT (not a task
    control port, a mask outside EXC_MASK_VALID, a bad behavior or
    flavor), KERN_INVALID_RIGHT (a kernel object's port),
    MACH_SEND_INVALID_RIGHT (no send right under ``new_port``),
    MACH_SEND_INVALID_DEST, KERN_FAILURE (the task is gone)."""
    return _set("task", task, exception_mask, new_port, behavior, new_flavor)


@returns_kr()
def task_get_exception_ports(task: Any, exception_mask: Any, masks: Any, masksCnt: Any, old_handlers: Any,
                             old_behaviors: Any, old_flavors: Any) -> int:
    """The task's exception ports for the types in ``exception_mask``,
    coalesced (types with the same port, behavior and flavor share an
    entry); each port is a new send right. KERN_SUCCESS,
    KERN_INVALID_ARGUMENT (not a task control port, a mask outside
    EXC_MASK_VALID, no ``old_handlers``), MACH_SEND_INVALID_DEST,
    KERN_FAILURE."""
    return _get("task", task, exception_mask, masks, masksCnt, old_handlers, old_behaviors, old_flavors)


@returns_kr()
def task_swap_exception_ports(task: Any, exception_mask: Any, new_port: Any, behavior: Any, new_flavor: Any,
                              masks: Any, masksCnt: Any, old_handlers: Any, old_behaviors: Any,
                              old_flavors: Any) -> int:
    """task_set_exception_ports, giving back the ports it replaces as
    task_get_exception_ports does. The codes of task_set_exception_ports."""
    return _swap("task", task, exception_mask, new_port, behavior, new_flavor, masks, masksCnt, old_handlers,
                 old_behaviors, old_flavors)


@returns_kr()
def thread_set_exception_ports(thread: Any, exception_mask: Any, new_port: Any, behavior: Any,
                               new_flavor: Any) -> int:
    """task_set_exception_ports for one thread (a thread control port:
    mach_thread_self, task_threads). Its codes; KERN_FAILURE when the
    thread has exited."""
    return _set("thread", thread, exception_mask, new_port, behavior, new_flavor)


@returns_kr()
def thread_get_exception_ports(thread: Any, exception_mask: Any, masks: Any, masksCnt: Any, old_handlers: Any,
                               old_behaviors: Any, old_flavors: Any) -> int:
    """task_get_exception_ports for one thread; a thread whose exception
    ports were never set has no entries (``*masksCnt`` 0), as in XNU. Its
    codes."""
    return _get("thread", thread, exception_mask, masks, masksCnt, old_handlers, old_behaviors, old_flavors)


@returns_kr()
def thread_swap_exception_ports(thread: Any, exception_mask: Any, new_port: Any, behavior: Any, new_flavor: Any,
                                masks: Any, masksCnt: Any, old_handlers: Any, old_behaviors: Any,
                                old_flavors: Any) -> int:
    """task_swap_exception_ports for one thread. Its codes."""
    return _swap("thread", thread, exception_mask, new_port, behavior, new_flavor, masks, masksCnt, old_handlers,
                 old_behaviors, old_flavors)


@returns_kr()
def host_set_exception_ports(host_priv: Any, exception_mask: Any, new_port: Any, behavior: Any,
                             new_flavor: Any) -> int:
    """The host's exception ports: where a fault that neither the thread's
    nor the task's ports handle goes, for the tasks of this process (and
    its fork children). It needs host_priv (root or CAP_IPC_LOCK):
    mach_host_self of an unprivileged process is KERN_INVALID_ARGUMENT, as
    XNU's conversion to host_priv_t gives. The other codes of
    task_set_exception_ports."""
    return _set("host", host_priv, exception_mask, new_port, behavior, new_flavor)


@returns_kr()
def host_get_exception_ports(host_priv: Any, exception_mask: Any, masks: Any, masksCnt: Any, old_handlers: Any,
                             old_behaviors: Any, old_flavors: Any) -> int:
    """task_get_exception_ports for the host (host_priv). Its codes."""
    return _get("host", host_priv, exception_mask, masks, masksCnt, old_handlers, old_behaviors, old_flavors)


@returns_kr()
def host_swap_exception_ports(host_priv: Any, exception_mask: Any, new_port: Any, behavior: Any, new_flavor: Any,
                              masks: Any, masksCnt: Any, old_handlers: Any, old_behaviors: Any,
                              old_flavors: Any) -> int:
    """task_swap_exception_ports for the host (host_priv). Its codes."""
    return _swap("host", host_priv, exception_mask, new_port, behavior, new_flavor, masks, masksCnt, old_handlers,
                 old_behaviors, old_flavors)


__all__ = [
    "exception_type_t", "exception_data_type_t", "mach_exception_data_type_t", "exception_behavior_t",
    "exception_data_t", "mach_exception_data_t", "exception_mask_t", "exception_handler_t", "exception_port_t",
    "exception_mask_array_t", "exception_behavior_array_t", "exception_flavor_array_t",
    "exception_handler_array_t", "exception_port_array_t", "mach_exception_code_t", "mach_exception_subcode_t",
    "task_set_exception_ports", "task_get_exception_ports", "task_swap_exception_ports",
    "thread_set_exception_ports", "thread_get_exception_ports", "thread_swap_exception_ports",
    "host_set_exception_ports", "host_get_exception_ports", "host_swap_exception_ports",
]
__all__ += E.__all__
