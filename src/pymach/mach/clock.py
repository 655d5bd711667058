"""<mach/mach_time.h>: Mach's absolute time, in the C layer.

On x86_64 macOS the timebase is 1/1: an absolute time is nanoseconds, as
here. mach_absolute_time stops while the machine sleeps and
mach_continuous_time does not (Linux's CLOCK_MONOTONIC and CLOCK_BOOTTIME:
see pymach._linux.clock)."""

from __future__ import annotations

import ctypes
from typing import Any

from .._kern import kern_return as K
from .._linux import clock as CLK
from ._args import address_of, u64

# <mach/mach_time.h>
class mach_timebase_info_data_t(ctypes.Structure):
    """numer/denom: absolute time units times numer/denom are nanoseconds."""

    _fields_ = [("numer", ctypes.c_uint32), ("denom", ctypes.c_uint32)]


mach_timebase_info_t = ctypes.POINTER(mach_timebase_info_data_t)


def mach_absolute_time() -> int:
    """Nanoseconds since boot, not counting time suspended (CLOCK_MONOTONIC)."""
    return CLK.now_ns(CLK.MONOTONIC)


def mach_approximate_time() -> int:
    """mach_absolute_time as of the last scheduler tick, cheaper to read
    (CLOCK_MONOTONIC_COARSE: a few milliseconds behind at most)."""
    return CLK.now_ns(CLK.MONOTONIC_COARSE)


def mach_continuous_time() -> int:
    """Nanoseconds since boot, counting time suspended (CLOCK_BOOTTIME)."""
    return CLK.now_ns(CLK.BOOTTIME)


def mach_timebase_info(info: Any) -> int:
    """The timebase, 1/1 as on x86_64, into ``info`` (a
    mach_timebase_info_data_t by reference, or its address). KERN_SUCCESS;
    a buffer smaller than the struct is a ValueError."""
    where, room = address_of(info, True)
    if room is not None and room < ctypes.sizeof(mach_timebase_info_data_t):
        raise ValueError("mach_timebase_info: the buffer holds less than a mach_timebase_info_data_t")
    t = mach_timebase_info_data_t.from_address(where)
    t.numer, t.denom = 1, 1
    return K.KERN_SUCCESS


def mach_wait_until(deadline: Any) -> int:
    """Sleep until mach_absolute_time() reaches ``deadline``. KERN_SUCCESS
    (at once for a deadline already past)."""
    CLK.sleep_until_ns(CLK.MONOTONIC, u64(deadline))
    return K.KERN_SUCCESS


__all__ = ["mach_timebase_info_data_t", "mach_timebase_info_t", "mach_absolute_time", "mach_approximate_time",
           "mach_continuous_time", "mach_timebase_info", "mach_wait_until"]
