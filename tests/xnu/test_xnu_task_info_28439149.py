"""Port of xnu-11417.101.15 tests/task_info_28439149.c: task_info's
permission checks on a task port and a task name port of a forked child.

TASK_BASIC_INFO_64 takes a port of any flavor; TASK_DYLD_INFO takes a read
port or stronger (task_info_from_user converts with
convert_port_to_task_read), so through a name port it is
KERN_INVALID_ARGUMENT."""

from __future__ import annotations

from procutil import forked
from pymach.mach import (KERN_INVALID_ARGUMENT, KERN_SUCCESS, TASK_BASIC_INFO_64, TASK_BASIC_INFO_64_COUNT,
                         TASK_DYLD_INFO, TASK_DYLD_INFO_COUNT, byref, cast, mach_msg_type_number_t,
                         mach_port_deallocate, mach_task_self, task_basic_info_64, task_dyld_info_data_t,
                         task_for_pid, task_info, task_info_t, task_name_for_pid, task_t)


def _do_child(sync):
    # the C child blocks reading its pipe until the parent writes 1
    sync()
    return 1


def test_task_info_28439149():
    """ensure that task_info has the correct permission"""
    child = forked(_do_child)
    with child as sync:
        pid = child.pid
        assert pid is not None
        count = mach_msg_type_number_t()
        ti = task_basic_info_64()
        di = task_dyld_info_data_t()

        self = mach_task_self()
        other_name = task_t()
        other = task_t()

        assert task_for_pid(self, pid, byref(other)) == KERN_SUCCESS
        assert task_name_for_pid(self, pid, byref(other_name)) == KERN_SUCCESS
        try:
            count.value = TASK_BASIC_INFO_64_COUNT
            assert task_info(self, TASK_BASIC_INFO_64, cast(byref(ti), task_info_t), byref(count)) == KERN_SUCCESS, \
                "task_info(self, TASK_BASIC_INFO_64 ...)"
            count.value = TASK_BASIC_INFO_64_COUNT
            assert task_info(other, TASK_BASIC_INFO_64, cast(byref(ti), task_info_t), byref(count)) == KERN_SUCCESS, \
                "task_info(other_name, TASK_BASIC_INFO_64 ...)"
            count.value = TASK_BASIC_INFO_64_COUNT
            assert task_info(other_name, TASK_BASIC_INFO_64, cast(byref(ti), task_info_t),
                             byref(count)) == KERN_SUCCESS, "task_info(other_name, TASK_BASIC_INFO_64 ...)"

            count.value = TASK_DYLD_INFO_COUNT
            assert task_info(self, TASK_DYLD_INFO, cast(byref(di), task_info_t), byref(count)) == KERN_SUCCESS, \
                "task_info(self, TASK_DYLD_INFO ...)"
            count.value = TASK_DYLD_INFO_COUNT
            assert task_info(other, TASK_DYLD_INFO, cast(byref(di), task_info_t), byref(count)) == KERN_SUCCESS, \
                "task_info(other_name, TASK_DYLD_INFO ...)"
            count.value = TASK_DYLD_INFO_COUNT
            ret = task_info(other_name, TASK_DYLD_INFO, cast(byref(di), task_info_t), byref(count))
            assert ret == KERN_INVALID_ARGUMENT, "task info TASK_DYLD_INFO should fail with mach_port_name"
        finally:
            # the C test leaks its rights (T_META_CHECK_LEAKS(false)); ours hold pidfds
            mach_port_deallocate(self, other.value)
            mach_port_deallocate(self, other_name.value)
            sync()
