"""Port of xnu-11417.101.15 tests/mach_port_deallocate_21692215.c."""

from __future__ import annotations

import pymach.mach as M
from pymach.mach import byref

NR_PORTS = 4


def test_mach_port_deallocate() -> None:
    """mach_port_deallocate deallocates also PORT_SET"""
    port_set = M.mach_port_t()
    port = (M.mach_port_t * NR_PORTS)()

    ret = M.mach_port_allocate(M.mach_task_self(), M.MACH_PORT_RIGHT_PORT_SET, byref(port_set))
    assert ret == M.KERN_SUCCESS, "mach_port_allocate MACH_PORT_RIGHT_PORT_SET"

    for i in range(NR_PORTS):
        ret = M.mach_port_allocate(M.mach_task_self(), M.MACH_PORT_RIGHT_RECEIVE, byref(port, i * 4))
        assert ret == M.KERN_SUCCESS, "mach_port_allocate MACH_PORT_RIGHT_RECEIVE"

        ret = M.mach_port_move_member(M.mach_task_self(), port[i], port_set)
        assert ret == M.KERN_SUCCESS, "mach_port_move_member"

    # Ports created; do something

    for i in range(NR_PORTS):
        ret = M.mach_port_mod_refs(M.mach_task_self(), port[i], M.MACH_PORT_RIGHT_RECEIVE, -1)
        assert ret == M.KERN_SUCCESS, "mach_port_mod_refs -1 RIGHT_RECEIVE"

    ret = M.mach_port_deallocate(M.mach_task_self(), port_set)
    assert ret == M.KERN_SUCCESS, "mach_port_deallocate PORT_SET"

    # Ports erased: the names denote nothing now
    ptype = M.mach_port_type_t()
    for n in (*port, port_set.value):
        assert M.mach_port_type(M.mach_task_self(), n, byref(ptype)) == M.KERN_INVALID_NAME
