"""mach_vm_region over memory pymach mapped, memory it did not, and the
VMAs where the kernel merged the two; and wiring under RLIMIT_MEMLOCK."""

from __future__ import annotations

import ctypes
import os
import resource

import pytest

import pymach
from pymach._linux import mm, procfs
from pymach.mach import (KERN_INVALID_HOST, KERN_RESOURCE_SHORTAGE, KERN_SUCCESS, VM_PROT_NONE,
                         VM_PROT_READ, mach_host_self, mach_task_self, mach_vm_wire)

from procutil import run_in_child

P = mm.PAGE_SIZE


def test_region_splits_a_vma_the_kernel_merged() -> None:
    task = pymach.Task.self()
    with task.allocate(3 * P) as arena:
        base = arena.address
        arena.deallocate()
        # foreign (raw mmap) | ours | foreign, all anonymous rw with the same
        # flags as pymach's: one VMA to the kernel
        flags = mm.MAP_PRIVATE | mm.MAP_ANONYMOUS | mm.MAP_NORESERVE | mm.MAP_FIXED
        mm.mmap(base, P, 3, flags)
        mm.mmap(base + 2 * P, P, 3, flags)
        ours = task.allocate(P, address=base + P)
        try:
            lines = [v for v in procfs.read_maps() if v.start <= base < v.end]
            assert lines and lines[0].end >= base + 3 * P  # the kernel merged them
            r0 = task.region(base)
            assert (r0.start, r0.end, r0.pymach) == (base, base + P, False)
            r1 = task.region(base + P)
            assert (r1.start, r1.end, r1.pymach) == (base + P, base + 2 * P, True)
            r2 = task.region(base + 2 * P + 100)
            assert (r2.start, r2.end, r2.pymach) == (base + 2 * P, base + 3 * P, False)
            walk = [r for r in task.regions() if base <= r.start < base + 3 * P]
            assert [(r.start, r.end) for r in walk] == [(base, base + P), (base + P, base + 2 * P),
                                                        (base + 2 * P, base + 3 * P)]
        finally:
            ours.deallocate()
            mm.munmap(base, 3 * P)


def test_region_of_an_address_inside_a_foreign_vma_starts_at_the_vma() -> None:
    task = pymach.Task.self()
    a = mm.mmap(0, 4 * P, 1, mm.MAP_PRIVATE | mm.MAP_ANONYMOUS)
    try:
        r = task.region(a + 2 * P + 5)
        assert (r.start, r.end, r.protection, r.pymach) == (a, a + 4 * P, VM_PROT_READ, False)
    finally:
        mm.munmap(a, 4 * P)


def test_regions_are_ordered_and_disjoint() -> None:
    regions = list(pymach.Task.self().regions())
    assert regions
    for lo, hi in zip(regions, regions[1:]):
        assert lo.start < lo.end <= hi.start


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _drop_cap_ipc_lock() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    hdr = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    assert libc.capget(ctypes.byref(hdr), data) == 0
    data[0].effective &= ~(1 << 14)
    data[0].permitted &= ~(1 << 14)
    assert libc.capset(ctypes.byref(hdr), data) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to shape privileges in a child")
def test_wire_past_rlimit_memlock_is_resource_shortage() -> None:
    # root without CAP_IPC_LOCK: host_priv (euid 0) but mlock obeys RLIMIT_MEMLOCK
    def child() -> int:
        _drop_cap_ipc_lock()
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (P, P))
        with pymach.Task.self().allocate(4 * P) as r:
            kr = mach_vm_wire(mach_host_self(), mach_task_self(), r.address, 4 * P, VM_PROT_READ)
            if kr != KERN_RESOURCE_SHORTAGE:
                return 10
            kr = mach_vm_wire(mach_host_self(), mach_task_self(), r.address, P, VM_PROT_READ)
            if kr != KERN_SUCCESS:
                return 11
            if mach_vm_wire(mach_host_self(), mach_task_self(), r.address, P, VM_PROT_NONE):
                return 12
        return 0
    assert run_in_child(child) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges in a child")
def test_wire_as_an_ordinary_user_is_invalid_host() -> None:
    def child() -> int:
        os.setgid(65534)
        os.setuid(65534)
        with pymach.Task.self().allocate(P) as r:
            kr = mach_vm_wire(mach_host_self(), mach_task_self(), r.address, P, VM_PROT_READ)
        return 0 if kr == KERN_INVALID_HOST else 1
    assert run_in_child(child) == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="runs as an ordinary user")
def test_wire_without_privilege_is_invalid_host() -> None:
    with pymach.Task.self().allocate(P) as r:
        kr = mach_vm_wire(mach_host_self(), mach_task_self(), r.address, P, VM_PROT_READ)
    assert kr == KERN_INVALID_HOST
