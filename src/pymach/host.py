"""The host, Pythonic: its page size, processors, memory statistics and
load, and Mach time (pymach.mach has the same as host_info,
host_statistics64, host_processor_info, clock_get_time and
mach_absolute_time)::

    import pymach.host

    vm = pymach.host.vm_statistics()
    print(vm.free_count * pymach.host.page_size(), "bytes free")
    t0 = pymach.host.absolute_time()

Each call reads the kernel's counters afresh; a failure is a MachError
with XNU's code (KERN_FAILURE when /proc cannot be read).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ._kern import clock as KC
from ._kern import host as KH
from ._kern import kern_return as K
from ._linux import clock as CLK
from ._kern.task import SELF

__all__ = ["HostBasicInfo", "CpuTicks", "VmStatistics", "page_size", "basic_info", "vm_statistics", "cpu_load",
           "processor_load", "load_average", "absolute_time", "continuous_time", "approximate_time",
           "clock_time", "SYSTEM_CLOCK", "CALENDAR_CLOCK"]

SYSTEM_CLOCK = KC.SYSTEM_CLOCK
CALENDAR_CLOCK = KC.CALENDAR_CLOCK


class HostBasicInfo(NamedTuple):
    """host_basic_info."""

    max_cpus: int
    avail_cpus: int
    memory_size: int  # capped at 2 GiB, as XNU's; max_mem is the whole
    cpu_type: int
    cpu_subtype: int
    cpu_threadtype: int
    physical_cpu: int
    physical_cpu_max: int
    logical_cpu: int
    logical_cpu_max: int
    max_mem: int


class CpuTicks(NamedTuple):
    """cpu_ticks[CPU_STATE_MAX]: 10 ms ticks in each state."""

    user: int
    system: int
    idle: int
    nice: int


class VmStatistics(NamedTuple):
    """vm_statistics64: page counts and event counters (pymach._kern.host
    says which Linux counter stands behind each; those with none are 0)."""

    free_count: int
    active_count: int
    inactive_count: int
    wire_count: int
    zero_fill_count: int
    reactivations: int
    pageins: int
    pageouts: int
    faults: int
    cow_faults: int
    lookups: int
    hits: int
    purges: int
    purgeable_count: int
    speculative_count: int
    decompressions: int
    compressions: int
    swapins: int
    swapouts: int
    compressor_page_count: int
    throttled_count: int
    external_page_count: int
    internal_page_count: int
    total_uncompressed_pages_in_compressor: int


def page_size() -> int:
    """host_page_size."""
    return KH.page_size(SELF.host_name)


def basic_info() -> HostBasicInfo:
    """host_info(HOST_BASIC_INFO)."""
    data, _n = KH.info(SELF.host_name, KH.HOST_BASIC_INFO, KH.HOST_BASIC_INFO_COUNT)
    return HostBasicInfo(*struct.unpack("<iiIiiiiiiiQ", data))


def vm_statistics() -> VmStatistics:
    """host_statistics64(HOST_VM_INFO64)."""
    return VmStatistics(*KH.vm_statistics64_now())


def cpu_load() -> CpuTicks:
    """host_statistics(HOST_CPU_LOAD_INFO): the whole machine's ticks."""
    data, _n = KH.statistics(SELF.host_name, KH.HOST_CPU_LOAD_INFO, KH.HOST_CPU_LOAD_INFO_COUNT, False)
    return CpuTicks(*struct.unpack("<4I", data))


def processor_load() -> list[CpuTicks]:
    """host_processor_info(PROCESSOR_CPU_LOAD_INFO): each processor's
    ticks (zero for one offline)."""
    n, data = KH.processor_info(SELF.host_name, KH.PROCESSOR_CPU_LOAD_INFO)
    return [CpuTicks(*struct.unpack_from("<4I", data, 16 * i)) for i in range(n)]


def load_average() -> tuple[float, float, float]:
    """host_statistics(HOST_LOAD_INFO)'s avenrun, unscaled: the 1, 5 and
    15 minute load averages."""
    data, _n = KH.statistics(SELF.host_name, KH.HOST_LOAD_INFO, KH.HOST_LOAD_INFO_COUNT, False)
    one, five, fifteen = struct.unpack("<3i", data[:12])
    return one / KH.LOAD_SCALE, five / KH.LOAD_SCALE, fifteen / KH.LOAD_SCALE


def absolute_time() -> int:
    """mach_absolute_time: nanoseconds since boot, not counting time
    suspended (the timebase is 1/1)."""
    return CLK.now_ns(CLK.MONOTONIC)


def continuous_time() -> int:
    """mach_continuous_time: nanoseconds since boot, suspended time too."""
    return CLK.now_ns(CLK.BOOTTIME)


def approximate_time() -> int:
    """mach_approximate_time: absolute_time as of the last tick."""
    return CLK.now_ns(CLK.MONOTONIC_COARSE)


def clock_time(clock: int = SYSTEM_CLOCK) -> tuple[int, int]:
    """clock_get_time on host_get_clock_service(clock): (seconds,
    nanoseconds) of SYSTEM_CLOCK (since boot) or CALENDAR_CLOCK (since the
    epoch). MachError KERN_INVALID_ARGUMENT for another clock."""
    if type(clock) is not int or not 0 <= clock < len(KC.CLOCKS):
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"clock_time(): no clock {clock!r}")
    return KC.CLOCKS[clock].get_time()
