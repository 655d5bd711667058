"""Port of xnu-11417.101.15 tests/vm/vm_user.c: the semantics of
VM_FLAGS_PERMANENT mappings. Each attempt to get rid of a permanent mapping
(an OVERWRITE allocation, a VM_PROT_COPY protect, an OVERWRITE remap, a
deallocation) leaves the entry in place without any access, so the next
read of it kills the child that made it.

macOS delivers SIGBUS for an access that the protection forbids; Linux
delivers SIGSEGV (SEGV_ACCERR) for the same fault, so the child's death
by the protection fault is checked against PROTECTION_FAULT."""

from __future__ import annotations

import signal

import pymach.mach as M
from pymach.mach import byref, mach_task_self, mach_vm_address_t

from procutil import child_exit_code, peek, poke

PROTECTION_FAULT = -signal.SIGSEGV  # SIGBUS on macOS


class ChildFailed(AssertionError):
    pass


def check(cond: bool, what: str) -> None:
    # a failed T_ASSERT in the C child: the child exits with an error
    if not cond:
        raise ChildFailed(what)


def read_int(addr: int) -> int:
    return int.from_bytes(peek(addr, 4), "little", signed=True)


def protections(addr: int) -> tuple[int, int]:
    a = mach_vm_address_t(addr)
    s = M.mach_vm_size_t()
    info = M.vm_region_basic_info_data_64_t()
    c = M.mach_msg_type_number_t(M.VM_REGION_BASIC_INFO_COUNT_64)
    o = M.mach_port_t()
    kr = M.mach_vm_region(mach_task_self(), byref(a), byref(s), M.VM_REGION_BASIC_INFO_64, byref(info),
                          byref(c), byref(o))
    check(kr == M.KERN_SUCCESS and a.value <= addr < a.value + s.value, f"mach_vm_region: {kr:#x}")
    return info.protection, info.max_protection


def neutered(addr: int) -> None:
    # (not in the C test) the entry is still there, with no access at all,
    # then the read that must kill the child
    check(protections(addr) == (M.VM_PROT_NONE, M.VM_PROT_NONE), f"protections {protections(addr)}")
    read_int(addr)


def get_permanent_mapping(size: int) -> int:
    addr = mach_vm_address_t(0)
    kr = M.mach_vm_allocate(mach_task_self(), byref(addr), size, M.VM_FLAGS_ANYWHERE | M.VM_FLAGS_PERMANENT)
    check(kr == M.KERN_SUCCESS, f"mach_vm_allocate(PERMANENT): {kr:#x}")
    poke(addr.value, (42).to_bytes(4, "little"))
    kr = M.mach_vm_protect(mach_task_self(), addr.value, size, False, M.VM_PROT_READ)
    check(kr == M.KERN_SUCCESS, f"mach_vm_protect(PERMANENT, READ): {kr:#x}")
    check(read_int(addr.value) == 42, "we can still read what we wrote")
    return addr.value


SIZE = 1 << 20


def overwrite_child() -> None:
    addr = get_permanent_mapping(SIZE)
    check(read_int(addr) == 42, "we can still read what we wrote")
    addr2 = mach_vm_address_t(addr)
    kr2 = M.mach_vm_allocate(mach_task_self(), byref(addr2), SIZE, M.VM_FLAGS_FIXED | M.VM_FLAGS_OVERWRITE)
    # because the permanent mapping wasn't removed, we should get an error
    check(kr2 == M.KERN_NO_SPACE, f"mach_vm_allocate(VM_FLAGS_OVERWRITE): {kr2:#x}")
    # because the permanent mapping was neutered, accessing it should crash
    neutered(addr)


def prot_copy_child() -> None:
    addr = get_permanent_mapping(SIZE)
    check(read_int(addr) == 42, "we can still read what we wrote")
    kr2 = M.mach_vm_protect(mach_task_self(), addr, SIZE, True, M.VM_PROT_COPY | M.VM_PROT_DEFAULT)
    check(kr2 == M.KERN_NO_SPACE, f"mach_vm_protect(VM_PROT_COPY): {kr2:#x}")
    neutered(addr)


def remap_child() -> None:
    addr = get_permanent_mapping(SIZE)
    check(read_int(addr) == 42, "we can still read what we wrote")
    addr2 = mach_vm_address_t(0)
    kr2 = M.mach_vm_allocate(mach_task_self(), byref(addr2), SIZE, M.VM_FLAGS_ANYWHERE)
    check(kr2 == M.KERN_SUCCESS, f"vm_allocate(): {kr2:#x}")
    remap_addr = mach_vm_address_t(addr)
    cur_prot, max_prot = M.vm_prot_t(), M.vm_prot_t()
    kr2 = M.mach_vm_remap(mach_task_self(), byref(remap_addr), SIZE, 0, M.VM_FLAGS_FIXED | M.VM_FLAGS_OVERWRITE,
                          mach_task_self(), addr2.value, True, byref(cur_prot), byref(max_prot),
                          M.VM_INHERIT_DEFAULT)
    check(kr2 == M.KERN_NO_SPACE, f"mach_vm_remap(): {kr2:#x}")
    neutered(addr)


def deallocate_child() -> None:
    addr = get_permanent_mapping(SIZE)
    check(read_int(addr) == 42, "we can still read what we wrote")
    kr2 = M.mach_vm_deallocate(mach_task_self(), addr, SIZE)
    # the permanent mapping wasn't removed but was made inaccessible
    check(kr2 == M.KERN_SUCCESS, f"mach_vm_deallocate(): {kr2:#x}")
    neutered(addr)


def test_permanent_mapping() -> None:
    # try to bypass permanent mappings with VM_FLAGS_OVERWRITE
    assert child_exit_code(overwrite_child) == PROTECTION_FAULT, "accessing the mapping caused a SIGBUS"
    # try to bypass permanent mappings with a VM_PROT_COPY mprotect
    assert child_exit_code(prot_copy_child) == PROTECTION_FAULT, "accessing the mapping caused a SIGBUS"
    # try to bypass permanent mappings with a vm_remap
    assert child_exit_code(remap_child) == PROTECTION_FAULT, "accessing the mapping caused a SIGBUS"
    # try to bypass permanent mappings with a vm_deallocate
    assert child_exit_code(deallocate_child) == PROTECTION_FAULT, "accessing the mapping caused a SIGBUS"
