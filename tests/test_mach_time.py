"""Mach time (<mach/mach_time.h>): mach_absolute_time and its kin, read
from the kernel's clocks, against Python's readings of the same clocks."""

from __future__ import annotations

import time

import pymach.mach as M
from pymach.mach import byref


def test_absolute_time_is_the_monotonic_clock_in_nanoseconds() -> None:
    for _ in range(1000):
        before = time.monotonic_ns()
        t = M.mach_absolute_time()
        after = time.monotonic_ns()
        assert before <= t <= after


def test_absolute_time_never_goes_back() -> None:
    last = M.mach_absolute_time()
    for _ in range(10000):
        now = M.mach_absolute_time()
        assert now >= last
        last = now


def test_the_timebase_is_one_to_one() -> None:
    info = M.mach_timebase_info_data_t(7, 7)
    assert M.mach_timebase_info(byref(info)) == M.KERN_SUCCESS
    assert (info.numer, info.denom) == (1, 1)


def test_continuous_time_counts_suspend_and_approximate_time_lags_at_most_a_tick() -> None:
    a = M.mach_absolute_time()
    c = M.mach_continuous_time()
    assert c >= a  # CLOCK_BOOTTIME: the monotonic clock plus time suspended
    x = M.mach_approximate_time()
    assert x <= M.mach_absolute_time()
    assert x >= a - 1_000_000_000  # a coarse reading, not a different clock


def test_wait_until_returns_at_or_after_the_deadline() -> None:
    deadline = M.mach_absolute_time() + 20_000_000
    assert M.mach_wait_until(deadline) == M.KERN_SUCCESS
    assert M.mach_absolute_time() >= deadline
    assert M.mach_wait_until(0) == M.KERN_SUCCESS  # a deadline already past: at once
