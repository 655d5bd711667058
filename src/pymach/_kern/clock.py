"""Clock services (osfmk/kern/clock_oldops.c): the kernel objects that
host_get_clock_service hands out and clock_get_time reads.

SYSTEM_CLOCK (REALTIME_CLOCK) is the time since boot, as XNU's
rtclock_gettime reads clock_get_system_nanotime: the clock
mach_absolute_time counts, CLOCK_MONOTONIC here. CALENDAR_CLOCK is the
time of day since the epoch, XNU's clock_get_calendar_nanotime:
CLOCK_REALTIME. Each is one object, so every request for it gets the same
send right (coalesced under one name, as XNU's clock_list entries are one
port each).
"""

from __future__ import annotations

from typing import Final

from .._linux import clock as CLK
from . import kern_return as K
from .host import host_of
from .ipc_space import MACH_PORT_TYPE_SEND
from .task import SELF

# <mach/clock_types.h>
SYSTEM_CLOCK: Final = 0
CALENDAR_CLOCK: Final = 1
REALTIME_CLOCK: Final = 0
CLOCK_GET_TIME_RES: Final = 1
CLOCK_ALARM_CURRES: Final = 3
CLOCK_ALARM_MINRES: Final = 4
CLOCK_ALARM_MAXRES: Final = 5
NSEC_PER_SEC: Final = 1_000_000_000


class Clock:
    """A clock service port's object."""

    __slots__ = ("id", "source")

    def __init__(self, clock_id: int, source: int) -> None:
        self.id = clock_id
        self.source = source  # the Linux clock behind it

    def __repr__(self) -> str:
        return f"<Clock {('SYSTEM_CLOCK', 'CALENDAR_CLOCK')[self.id]}>"

    def get_time(self) -> tuple[int, int]:
        """(tv_sec, tv_nsec) of a mach_timespec_t. tv_sec is an unsigned
        int, as XNU truncates it."""
        sec, nsec = divmod(CLK.now_ns(self.source), NSEC_PER_SEC)
        return sec & 0xFFFFFFFF, nsec

    def get_attribute(self, flavor: int) -> int:
        """clock_get_attributes' one value (a clock_res_t, nanoseconds):
        CLOCK_GET_TIME_RES is the Linux clock's own resolution; the alarm
        resolutions are 0, XNU's "no alarm": pymach has no clock_alarm.
        KERN_INVALID_VALUE for another flavor."""
        if flavor == CLOCK_GET_TIME_RES:
            return CLK.resolution_ns(self.source)
        if flavor in (CLOCK_ALARM_CURRES, CLOCK_ALARM_MINRES, CLOCK_ALARM_MAXRES):
            return 0
        raise K.MachError(K.KERN_INVALID_VALUE, f"no clock attribute flavor {flavor}")


CLOCKS: Final = (Clock(SYSTEM_CLOCK, CLK.MONOTONIC), Clock(CALENDAR_CLOCK, CLK.REALTIME))


def get_clock_service(host_name: int, clock_id: int) -> int:
    """host_get_clock_service: a send right to clock ``clock_id``, named in
    our space. KERN_INVALID_ARGUMENT (no such clock, or not the host),
    MACH_SEND_INVALID_DEST.

    Conditions: nothing locked; takes the space's lock (insert)."""
    host_of(host_name)
    if not 0 <= clock_id < len(CLOCKS):
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"no clock {clock_id} (SYSTEM_CLOCK 0, CALENDAR_CLOCK 1)")
    return SELF.space.insert(CLOCKS[clock_id], MACH_PORT_TYPE_SEND)


def clock_of(name: int) -> Clock:
    """The clock behind ``name``. MACH_SEND_INVALID_DEST when the name
    denotes nothing; KERN_INVALID_ARGUMENT when it is not a clock (XNU's
    conversion gives CLOCK_NULL, which the routines refuse so).

    Conditions: nothing locked; one lookup without the space's lock."""
    e = SELF.space.lookup(name)
    if e is None or e.object is None:
        raise K.MachError(K.MACH_SEND_INVALID_DEST, f"{name:#x} is not a valid name")
    if not isinstance(e.object, Clock):
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"{name:#x} is not a clock")
    return e.object
