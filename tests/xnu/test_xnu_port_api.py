"""Port of xnu-11417.101.15 tests/ipc/port_api.c."""

from __future__ import annotations

import pymach.mach as M
from pymach.mach import byref


def test_mach_port_insert_right_123724977() -> None:
    """regression test for 123724977"""
    pset = M.mach_port_name_t()
    kr = M.mach_port_allocate(M.mach_task_self(), M.MACH_PORT_RIGHT_PORT_SET, byref(pset))
    assert kr == M.KERN_SUCCESS, "creating port set"
    try:
        kr = M.mach_port_insert_right(M.mach_task_self(), pset, pset, M.MACH_MSG_TYPE_MAKE_SEND)
        assert kr == M.KERN_INVALID_RIGHT, f"insert right fails: {M.mach_error_string(kr)}"
    finally:
        M.mach_port_destroy(M.mach_task_self(), pset)
