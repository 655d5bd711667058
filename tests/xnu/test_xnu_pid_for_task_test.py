"""Port of xnu-11417.101.15 tests/pid_for_task_test.c: pid_for_task
through a task name port of our own process."""

from __future__ import annotations

import ctypes
import os

from pymach.mach import byref, mach_port_deallocate, mach_port_t, mach_task_self, pid_for_task, task_name_for_pid


def test_pid_for_task_test():
    """Test pid_for_task with task name port"""
    tname = mach_port_t()
    pid = ctypes.c_int()

    kr = task_name_for_pid(mach_task_self(), os.getpid(), byref(tname))
    assert kr == 0, "task_name_for_pid should succeed on current pid"
    pid_for_task(tname, byref(pid))
    assert pid.value == os.getpid(), "pid_for_task should return the same value as getpid()"

    mach_port_deallocate(mach_task_self(), tname.value)
