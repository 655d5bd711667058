"""<mach/mach_host.h> and <mach/clock.h>: the host's information and
statistics, and its clock services, in the C layer.

The numbers are Linux's (see pymach._kern.host for which counter stands
behind each field, and which have none); the structures, flavors, counts
and codes are XNU's."""

from __future__ import annotations

import ctypes
import struct
from typing import Any

from .._kern import clock as KC
from .._kern import host as KH
from .._kern import kern_return as K
from .._kern.host import (CPU_STATE_IDLE, CPU_STATE_MAX, CPU_STATE_NICE, CPU_STATE_SYSTEM, CPU_STATE_USER,
                          HOST_BASIC_INFO, HOST_BASIC_INFO_COUNT, HOST_CAN_HAS_DEBUGGER,
                          HOST_CAN_HAS_DEBUGGER_COUNT, HOST_CPU_LOAD_INFO, HOST_CPU_LOAD_INFO_COUNT,
                          HOST_EXPIRED_TASK_INFO, HOST_EXTMOD_INFO64, HOST_LOAD_INFO, HOST_LOAD_INFO_COUNT,
                          HOST_MACH_MSG_TRAP, HOST_PREFERRED_USER_ARCH, HOST_PREFERRED_USER_ARCH_COUNT,
                          HOST_PRIORITY_INFO, HOST_RESOURCE_SIZES, HOST_SCHED_INFO, HOST_SEMAPHORE_TRAPS,
                          HOST_VM_INFO, HOST_VM_INFO64, HOST_VM_INFO64_COUNT, HOST_VM_INFO64_REV0_COUNT,
                          HOST_VM_INFO64_REV1_COUNT, HOST_VM_INFO_COUNT, HOST_VM_INFO_REV0_COUNT,
                          HOST_VM_INFO_REV1_COUNT, HOST_VM_INFO_REV2_COUNT, HOST_VM_PURGABLE, LOAD_SCALE,
                          PROCESSOR_BASIC_INFO, PROCESSOR_BASIC_INFO_COUNT, PROCESSOR_CPU_LOAD_INFO,
                          PROCESSOR_CPU_LOAD_INFO_COUNT)
from .._kern.clock import (CALENDAR_CLOCK, CLOCK_ALARM_CURRES, CLOCK_ALARM_MAXRES, CLOCK_ALARM_MINRES,
                           CLOCK_GET_TIME_RES, REALTIME_CLOCK, SYSTEM_CLOCK)
from ._args import counted, i32, out, out_address, set_out, store, u32
from ._errors import returns_kr
from .mach_port import _ool_array
from .types import integer_t, mach_timespec_t, natural_t

host_flavor_t = integer_t
processor_flavor_t = ctypes.c_int
clock_id_t = ctypes.c_int
clock_flavor_t = ctypes.c_int
clock_res_t = ctypes.c_int
host_t = natural_t
host_name_port_t = natural_t
clock_serv_t = natural_t
host_info_t = ctypes.POINTER(integer_t)
host_info64_t = ctypes.POINTER(integer_t)
processor_info_array_t = ctypes.POINTER(integer_t)


class host_basic_info(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("max_cpus", integer_t), ("avail_cpus", integer_t), ("memory_size", natural_t),
                ("cpu_type", integer_t), ("cpu_subtype", integer_t), ("cpu_threadtype", integer_t),
                ("physical_cpu", integer_t), ("physical_cpu_max", integer_t), ("logical_cpu", integer_t),
                ("logical_cpu_max", integer_t), ("max_mem", ctypes.c_uint64)]


class vm_statistics64(ctypes.Structure):
    _fields_ = [(name, natural_t if i in (0, 1, 2, 3, 13, 14, 19, 20, 21, 22) else ctypes.c_uint64)
                for i, name in enumerate(KH.VM64_FIELDS)]


class vm_statistics(ctypes.Structure):
    _fields_ = [(name, natural_t) for name in (
        "free_count", "active_count", "inactive_count", "wire_count", "zero_fill_count", "reactivations",
        "pageins", "pageouts", "faults", "cow_faults", "lookups", "hits", "purgeable_count", "purges",
        "speculative_count")]


class host_cpu_load_info(ctypes.Structure):
    _fields_ = [("cpu_ticks", natural_t * CPU_STATE_MAX)]


class host_load_info(ctypes.Structure):
    _fields_ = [("avenrun", integer_t * 3), ("mach_factor", integer_t * 3)]


class processor_basic_info(ctypes.Structure):
    _fields_ = [("cpu_type", integer_t), ("cpu_subtype", integer_t), ("running", integer_t),
                ("slot_num", ctypes.c_int), ("is_master", integer_t)]


class processor_cpu_load_info(ctypes.Structure):
    _fields_ = [("cpu_ticks", ctypes.c_uint * CPU_STATE_MAX)]


host_basic_info_data_t = host_basic_info
vm_statistics64_data_t = vm_statistics64
vm_statistics_data_t = vm_statistics
host_cpu_load_info_data_t = host_cpu_load_info
host_load_info_data_t = host_load_info
processor_basic_info_data_t = processor_basic_info
processor_cpu_load_info_data_t = processor_cpu_load_info


def _fill(info: Any, count: Any, fill: Any) -> int:
    """Run ``fill(words the buffer holds)`` and store its words in ``info``
    and their number in ``count`` (in/out, as MIG's out array)."""
    cnt = out(count)
    where, held = counted(info, u32(cnt.value))
    data, n = fill(held)
    ctypes.memmove(where, data, len(data))
    cnt.value = n
    return 0


@returns_kr()
def host_page_size(host: Any, out_page_size: Any) -> int:
    """The page size, into ``out_page_size`` (a vm_size_t by reference).
    KERN_SUCCESS, KERN_INVALID_ARGUMENT (not the host port),
    MACH_SEND_INVALID_DEST."""
    set_out(out_page_size, KH.page_size(u32(host)))
    return 0


@returns_kr()
def host_info(host: Any, flavor: Any, host_info_out: Any, host_info_outCnt: Any) -> int:
    """HOST_BASIC_INFO (host_basic_info; the old five words for a count
    under HOST_BASIC_INFO_COUNT), HOST_CAN_HAS_DEBUGGER,
    HOST_PREFERRED_USER_ARCH, and the trap gestalts (count 0).
    ``host_info_outCnt`` is in/out, in natural_t words.

    KERN_SUCCESS, KERN_FAILURE (the count is too small),
    KERN_INVALID_ARGUMENT (an unknown flavor, not the host port),
    KERN_NOT_SUPPORTED (HOST_SCHED_INFO, HOST_PRIORITY_INFO,
    HOST_VM_PURGABLE: see docs/deviations.md), MACH_SEND_INVALID_DEST."""
    name, fl = u32(host), i32(flavor)
    return _fill(host_info_out, host_info_outCnt, lambda held: KH.info(name, fl, held))


@returns_kr()
def host_statistics(host_priv: Any, flavor: Any, host_info_out: Any, host_info_outCnt: Any) -> int:
    """HOST_LOAD_INFO, HOST_VM_INFO (vm_statistics, by revision of the
    count), HOST_CPU_LOAD_INFO. ``host_info_outCnt`` is in/out.

    KERN_SUCCESS, KERN_FAILURE (the count is too small),
    KERN_INVALID_ARGUMENT (an unknown flavor, or HOST_VM_INFO64),
    KERN_INVALID_HOST (not the host port), KERN_NOT_SUPPORTED,
    MACH_SEND_INVALID_DEST."""
    name, fl = u32(host_priv), i32(flavor)
    return _fill(host_info_out, host_info_outCnt, lambda held: KH.statistics(name, fl, held, False))


@returns_kr()
def host_statistics64(host_priv: Any, flavor: Any, host_info64_out: Any, host_info64_outCnt: Any) -> int:
    """HOST_VM_INFO64 (vm_statistics64: HOST_VM_INFO64_COUNT, or the
    REV0 count without the compressor's fields) and every
    host_statistics flavor. ``host_info64_outCnt`` is in/out.

    KERN_SUCCESS, KERN_FAILURE (the count is too small),
    KERN_INVALID_ARGUMENT (an unknown flavor), KERN_INVALID_HOST,
    KERN_NOT_SUPPORTED (HOST_EXTMOD_INFO64, HOST_EXPIRED_TASK_INFO),
    MACH_SEND_INVALID_DEST."""
    name, fl = u32(host_priv), i32(flavor)
    return _fill(host_info64_out, host_info64_outCnt, lambda held: KH.statistics(name, fl, held, True))


@returns_kr()
def host_processor_info(host: Any, flavor: Any, out_processor_count: Any, out_processor_info: Any,
                        out_processor_infoCnt: Any) -> int:
    """Each processor's PROCESSOR_BASIC_INFO or PROCESSOR_CPU_LOAD_INFO,
    one after the other in new memory (``out_processor_info``, by
    reference to a processor_info_array_t), to be released with
    vm_deallocate as in C; the number of processors and of words in
    ``out_processor_count`` and ``out_processor_infoCnt``.

    KERN_SUCCESS, KERN_FAILURE (another flavor), KERN_INVALID_ARGUMENT
    (not the host port), MACH_SEND_INVALID_DEST."""
    where = out_address(out_processor_info)
    pcount, data = KH.processor_info(u32(host), i32(flavor))
    words = list(struct.unpack(f"<{len(data) // 4}I", data))
    if where is not None:
        store(where, _ool_array(words))
    set_out(out_processor_count, pcount)
    set_out(out_processor_infoCnt, len(words))
    return 0


@returns_kr()
def host_get_clock_service(host: Any, clock_id: Any, clock_serv: Any) -> int:
    """A send right to SYSTEM_CLOCK (the time since boot, as
    mach_absolute_time counts it) or CALENDAR_CLOCK (the time of day),
    named in ``clock_serv``. The same clock gets the same name.

    KERN_SUCCESS, KERN_INVALID_ARGUMENT (no such clock, not the host
    port), MACH_SEND_INVALID_DEST."""
    c = out(clock_serv)
    c.value = 0  # CLOCK_NULL until it succeeds, as XNU's
    c.value = KC.get_clock_service(u32(host), i32(clock_id))
    return 0


@returns_kr()
def clock_get_time(clock_serv: Any, cur_time: Any) -> int:
    """The clock's time, into ``cur_time`` (a mach_timespec_t by
    reference). KERN_SUCCESS, KERN_INVALID_ARGUMENT (not a clock),
    MACH_SEND_INVALID_DEST."""
    sec, nsec = KC.clock_of(u32(clock_serv)).get_time()
    ts = mach_timespec_t.from_address(counted(cur_time, 2)[0])
    ts.tv_sec, ts.tv_nsec = sec, nsec
    return 0


@returns_kr()
def clock_get_attributes(clock_serv: Any, flavor: Any, clock_attr: Any, clock_attrCnt: Any) -> int:
    """CLOCK_GET_TIME_RES (the clock's resolution, ns) or an alarm
    resolution (0: no alarms), one clock_res_t into ``clock_attr``;
    ``clock_attrCnt`` must be 1.

    KERN_SUCCESS, KERN_FAILURE (a count other than 1),
    KERN_INVALID_VALUE (another flavor), KERN_INVALID_ARGUMENT (not a
    clock), MACH_SEND_INVALID_DEST."""
    clk = KC.clock_of(u32(clock_serv))
    cnt = out(clock_attrCnt)
    if cnt.value != 1:
        return K.KERN_FAILURE
    value = clk.get_attribute(i32(flavor))
    where, held = counted(clock_attr, 1)
    if held < 1:
        raise ValueError("clock_get_attributes: clock_attr holds no clock_res_t")
    ctypes.c_int.from_address(where).value = value
    return 0


__all__ = [
    "host_flavor_t", "processor_flavor_t", "clock_id_t", "clock_flavor_t",
    "clock_res_t", "host_t", "host_name_port_t", "clock_serv_t", "host_info_t", "host_info64_t",
    "processor_info_array_t", "host_basic_info", "vm_statistics64",
    "vm_statistics", "host_cpu_load_info", "host_load_info", "processor_basic_info", "processor_cpu_load_info",
    "host_basic_info_data_t", "vm_statistics64_data_t", "vm_statistics_data_t", "host_cpu_load_info_data_t",
    "host_load_info_data_t", "processor_basic_info_data_t", "processor_cpu_load_info_data_t",
    "host_page_size", "host_info", "host_statistics", "host_statistics64", "host_processor_info",
    "host_get_clock_service", "clock_get_time", "clock_get_attributes",
    "CPU_STATE_IDLE", "CPU_STATE_MAX", "CPU_STATE_NICE", "CPU_STATE_SYSTEM", "CPU_STATE_USER",
    "HOST_BASIC_INFO", "HOST_BASIC_INFO_COUNT", "HOST_CAN_HAS_DEBUGGER", "HOST_CAN_HAS_DEBUGGER_COUNT",
    "HOST_CPU_LOAD_INFO", "HOST_CPU_LOAD_INFO_COUNT", "HOST_EXPIRED_TASK_INFO", "HOST_EXTMOD_INFO64",
    "HOST_LOAD_INFO", "HOST_LOAD_INFO_COUNT", "HOST_MACH_MSG_TRAP", "HOST_PREFERRED_USER_ARCH",
    "HOST_PREFERRED_USER_ARCH_COUNT", "HOST_PRIORITY_INFO", "HOST_RESOURCE_SIZES", "HOST_SCHED_INFO",
    "HOST_SEMAPHORE_TRAPS", "HOST_VM_INFO", "HOST_VM_INFO64", "HOST_VM_INFO64_COUNT", "HOST_VM_INFO64_REV0_COUNT",
    "HOST_VM_INFO64_REV1_COUNT", "HOST_VM_INFO_COUNT", "HOST_VM_INFO_REV0_COUNT", "HOST_VM_INFO_REV1_COUNT",
    "HOST_VM_INFO_REV2_COUNT", "HOST_VM_PURGABLE", "LOAD_SCALE", "PROCESSOR_BASIC_INFO",
    "PROCESSOR_BASIC_INFO_COUNT", "PROCESSOR_CPU_LOAD_INFO", "PROCESSOR_CPU_LOAD_INFO_COUNT",
    "CALENDAR_CLOCK", "CLOCK_ALARM_CURRES", "CLOCK_ALARM_MAXRES", "CLOCK_ALARM_MINRES", "CLOCK_GET_TIME_RES",
    "REALTIME_CLOCK", "SYSTEM_CLOCK",
]
