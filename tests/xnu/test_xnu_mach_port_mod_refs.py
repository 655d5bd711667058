"""Port of xnu-11417.101.15 tests/mach_port_mod_refs.c.

The C test turns off TASK_EXC_GUARD_MP_DELIVER around the failing calls
(task_get_exc_guard_behavior / task_set_exc_guard_behavior) so that XNU's
optional Mach port guard exceptions do not kill it. pymach raises no
EXC_GUARD and does not have those two routines yet (docs/deviations.md):
test_mach_port_mod_refs runs every other step with its expected code, and
test_mach_port_mod_refs_with_guard_behavior, the C test whole, skips until
they exist."""

from __future__ import annotations

import ctypes

import pytest

import pymach.mach as M
from pymach.mach import byref

TASK_EXC_GUARD_MP_DELIVER = 0x10


def test_mach_port_mod_refs() -> None:
    """mach_port_mod_refs, without the guard-behavior steps."""
    _mach_port_mod_refs(False)


def test_mach_port_mod_refs_with_guard_behavior() -> None:
    """mach_port_mod_refs, whole."""
    if not hasattr(M, "task_get_exc_guard_behavior"):
        pytest.skip("task_get/set_exc_guard_behavior: pymach has no EXC_GUARD delivery yet (docs/deviations.md)")
    _mach_port_mod_refs(True)


def _mach_port_mod_refs(guard_steps: bool) -> None:
    port_set = M.mach_port_t()
    port = M.mach_port_t()

    ret = M.mach_port_allocate(M.mach_task_self(), M.MACH_PORT_RIGHT_PORT_SET, byref(port_set))
    assert ret == M.KERN_SUCCESS, "mach_port_allocate MACH_PORT_RIGHT_PORT_SET"

    ret = M.mach_port_allocate(M.mach_task_self(), M.MACH_PORT_RIGHT_RECEIVE, byref(port))
    assert ret == M.KERN_SUCCESS, "mach_port_allocate MACH_PORT_RIGHT_RECEIVE"

    # Disable [optional] Mach port guard exceptions to avoid fatal crash
    get_behavior = getattr(M, "task_get_exc_guard_behavior", None)
    set_behavior = getattr(M, "task_set_exc_guard_behavior", None)
    old = ctypes.c_uint32()
    if guard_steps:
        assert get_behavior is not None and set_behavior is not None
        ret = get_behavior(M.mach_task_self(), byref(old))
        assert ret == M.KERN_SUCCESS, "task_get_exc_guard_behavior"
        ret = set_behavior(M.mach_task_self(), old.value & ~TASK_EXC_GUARD_MP_DELIVER)
        assert ret == M.KERN_SUCCESS, "task_set_exc_guard_behavior new"

    # Test all known variants of port rights on each type of port
    cases = [
        # can't subtract a send right if it doesn't exist
        (port, M.MACH_PORT_RIGHT_SEND, M.KERN_INVALID_RIGHT, "SEND: -1 on a RECV right"),
        # can't subtract a send once right if it doesn't exist
        (port, M.MACH_PORT_RIGHT_SEND_ONCE, M.KERN_INVALID_RIGHT, "SEND_ONCE: -1 on a RECV right"),
        # can't subtract a PORT SET right if it's not a port set
        (port, M.MACH_PORT_RIGHT_PORT_SET, M.KERN_INVALID_RIGHT, "PORT_SET: -1 on a RECV right"),
        # can't subtract a dead name right if it doesn't exist
        (port, M.MACH_PORT_RIGHT_DEAD_NAME, M.KERN_INVALID_RIGHT, "DEAD_NAME: -1 on a RECV right"),
        # can't subtract a LABELH right if it doesn't exist
        (port, M.MACH_PORT_RIGHT_LABELH, M.KERN_INVALID_RIGHT, "LABELH: -1 on a RECV right"),
        # can't subtract an invalid right-type
        (port, M.MACH_PORT_RIGHT_NUMBER, M.KERN_INVALID_VALUE, "NUMBER: -1 on a RECV right"),
        (port, M.MACH_PORT_RIGHT_NUMBER + 1, M.KERN_INVALID_VALUE, "NUMBER+1: -1 on a RECV right"),

        (port_set, M.MACH_PORT_RIGHT_SEND, M.KERN_INVALID_RIGHT, "SEND: -1 on a PORT_SET right"),
        (port_set, M.MACH_PORT_RIGHT_SEND_ONCE, M.KERN_INVALID_RIGHT, "SEND_ONCE: -1 on a PORT_SET right"),
        # can't subtract a receive right if it's a port set
        (port_set, M.MACH_PORT_RIGHT_RECEIVE, M.KERN_INVALID_RIGHT, "RECV: -1 on a PORT_SET right"),
        (port_set, M.MACH_PORT_RIGHT_DEAD_NAME, M.KERN_INVALID_RIGHT, "DEAD_NAME: -1 on a PORT_SET right"),
        (port_set, M.MACH_PORT_RIGHT_LABELH, M.KERN_INVALID_RIGHT, "LABELH: -1 on a PORT_SET right"),
        (port_set, M.MACH_PORT_RIGHT_NUMBER, M.KERN_INVALID_VALUE, "NUMBER: -1 on a PORT_SET right"),
        (port_set, M.MACH_PORT_RIGHT_NUMBER + 1, M.KERN_INVALID_VALUE, "NUMBER+1: -1 on a PORT_SET right"),
    ]
    for name, right, expected, what in cases:
        ret = M.mach_port_mod_refs(M.mach_task_self(), name, right, -1)
        assert ret == expected, f"mach_port_mod_refs {what}: {M.mach_error_string(ret)}"

    # restore the old guard behavior
    if guard_steps:
        assert set_behavior is not None
        ret = set_behavior(M.mach_task_self(), old.value)
        assert ret == M.KERN_SUCCESS, "task_set_exc_guard_behavior old"

    # deallocate the ports/sets
    ret = M.mach_port_mod_refs(M.mach_task_self(), port_set, M.MACH_PORT_RIGHT_PORT_SET, -1)
    assert ret == M.KERN_SUCCESS, "mach_port_mod_refs(PORT_SET, -1)"

    ret = M.mach_port_mod_refs(M.mach_task_self(), port, M.MACH_PORT_RIGHT_RECEIVE, -1)
    assert ret == M.KERN_SUCCESS, "mach_port_mod_refs(RECV_RIGHT, -1)"
