"""Port of xnu-11417.101.15 tests/mach_port_insert_right.c."""

from __future__ import annotations

import pymach.mach as M
from pymach.mach import byref


def get_port_type(mp: int) -> int:
    ptype = M.mach_port_type_t()
    assert M.mach_port_type(M.mach_task_self(), mp, byref(ptype)) == M.KERN_SUCCESS, "mach_port_type(mP)"
    return ptype.value


def test_mach_port_insert_right() -> None:
    """insert send right for an existing right"""
    port = M.mach_port_t(M.MACH_PORT_NULL)
    port2 = M.mach_port_t(M.MACH_PORT_NULL)
    task = M.mach_task_self()

    retval = M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, byref(port))
    assert retval == M.KERN_SUCCESS, f"allocate a port=[{port.value}]"
    try:
        assert get_port_type(port.value) == M.MACH_PORT_TYPE_RECEIVE

        retval = M.mach_port_insert_right(task, port, port, M.MACH_MSG_TYPE_MAKE_SEND)
        assert retval == M.KERN_SUCCESS
        assert get_port_type(port.value) == M.MACH_PORT_TYPE_RECEIVE | M.MACH_PORT_TYPE_SEND

        name = 123
        # 0x7B: the low two bits are 0b11, a valid generation, but index 0 is invalid
        retval = M.mach_port_insert_right(task, name, port, M.MACH_MSG_TYPE_MAKE_SEND)
        assert retval == M.KERN_FAILURE, M.mach_error_string(retval)

        name = 122
        # an invalid generation: KERN_INVALID_VALUE
        retval = M.mach_port_insert_right(task, name, port, M.MACH_MSG_TYPE_MAKE_SEND)
        assert retval == M.KERN_INVALID_VALUE, M.mach_error_string(retval)

        retval = M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, byref(port2))
        assert retval == M.KERN_SUCCESS, f"allocate a port=[{port2.value}]"

        assert get_port_type(port2.value) == M.MACH_PORT_TYPE_RECEIVE

        name = port.value
        retval = M.mach_port_insert_right(task, name, port2, M.MACH_MSG_TYPE_MAKE_SEND)
        assert retval == M.KERN_RIGHT_EXISTS, M.mach_error_string(retval)
    finally:
        # T_META_CHECK_LEAKS(false) in C: here the rights are released so
        # that the test ends with its fds at their baseline
        for p in (port.value, port2.value):
            if p:
                M.mach_port_destroy(task, p)
