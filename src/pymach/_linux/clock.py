"""The kernel's clocks, as Mach time reads them.

- CLOCK_MONOTONIC counts from boot and stops while the machine is
  suspended: macOS's mach_absolute_time does the same (it is the timebase
  that stops in sleep).
- CLOCK_BOOTTIME is CLOCK_MONOTONIC plus the time spent suspended:
  mach_continuous_time's meaning.
- CLOCK_MONOTONIC_COARSE is CLOCK_MONOTONIC as of the last scheduler tick
  (a few milliseconds old at most), read without touching the clock
  hardware: mach_approximate_time's trade.
- CLOCK_REALTIME is the calendar (CALENDAR_CLOCK).

All four are read through the vDSO on x86_64: no system call.
"""

from __future__ import annotations

import time

MONOTONIC = time.CLOCK_MONOTONIC
BOOTTIME = time.CLOCK_BOOTTIME
MONOTONIC_COARSE = getattr(time, "CLOCK_MONOTONIC_COARSE", 6)  # (Linux's number when Python lacks the name)
REALTIME = time.CLOCK_REALTIME


def now_ns(clock: int) -> int:
    """The clock's time in nanoseconds."""
    return time.clock_gettime_ns(clock)


def sleep_until_ns(clock: int, deadline: int) -> None:
    """Sleep until the clock reads ``deadline`` (ns) or later; at once if it
    already does. time.sleep resumes after a signal handler (PEP 475), so
    the wait ends only at the deadline."""
    while True:
        left = deadline - time.clock_gettime_ns(clock)
        if left <= 0:
            return
        time.sleep(left / 1e9)


def resolution_ns(clock: int) -> int:
    """The clock's resolution in nanoseconds (clock_getres)."""
    return round(time.clock_getres(clock) * 1e9) or 1
