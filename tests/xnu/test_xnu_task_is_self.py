"""Port of xnu-11417.101.15 tests/task_is_self.c: mach_task_is_self is
TRUE for every flavor of our own task's port, and the read, inspect and
control ports are ports of their own (names of their own)."""

from __future__ import annotations

from pymach.mach import (KERN_SUCCESS, MACH_PORT_RIGHT_RECEIVE, TASK_INSPECT_PORT, TASK_NAME_PORT, TASK_READ_PORT,
                         byref, mach_port_allocate, mach_port_deallocate, mach_port_mod_refs, mach_port_t,
                         mach_task_is_self, mach_task_self, task_get_special_port)


def test_mach_task_is_self():
    """test task port comparison check"""
    self_insp, self_read, self_name, port = mach_port_t(), mach_port_t(), mach_port_t(), mach_port_t()

    assert task_get_special_port(mach_task_self(), TASK_READ_PORT, byref(self_read)) == KERN_SUCCESS, \
        "task_get_special_port failed"
    assert task_get_special_port(mach_task_self(), TASK_INSPECT_PORT, byref(self_insp)) == KERN_SUCCESS, \
        "task_get_special_port failed"
    assert task_get_special_port(mach_task_self(), TASK_NAME_PORT, byref(self_name)) == KERN_SUCCESS, \
        "task_get_special_port failed"

    assert mach_port_allocate(mach_task_self(), MACH_PORT_RIGHT_RECEIVE, byref(port)) == KERN_SUCCESS, \
        "mach_port_allocate failed"
    try:
        assert self_read.value != self_insp.value, "read and inspect port should be different"
        assert self_read.value != mach_task_self(), "read and control port should be different"

        assert mach_task_is_self(mach_task_self()) == 1, "control port should point to self"
        assert mach_task_is_self(self_read) == 1, "read port should point to self"
        assert mach_task_is_self(self_insp) == 1, "inspect port should point to self"
        assert mach_task_is_self(self_name) == 1, "name port should point to self"
        assert mach_task_is_self(port) != 1, "_port_ should not point to self"
    finally:
        # the C test leaves these to its exit
        for p in (self_read, self_insp, self_name):
            mach_port_deallocate(mach_task_self(), p.value)
        mach_port_mod_refs(mach_task_self(), port.value, MACH_PORT_RIGHT_RECEIVE, -1)
