"""Port of xnu-11417.101.15 tests/vm/vm_memory_entry_parent_test.c, case by
case, with the C test's expected codes."""

from __future__ import annotations

import ctypes

from pymach.mach import (KERN_INVALID_ARGUMENT, KERN_INVALID_RIGHT, KERN_PROTECTION_FAILURE, KERN_SUCCESS,
                         MACH_PORT_NULL, MAP_MEM_NAMED_REUSE, MAP_MEM_USE_DATA_ADDR, MAP_MEM_VM_COPY,
                         VM_FLAGS_ANYWHERE, VM_INHERIT_DEFAULT, VM_INHERIT_NONE, VM_PROT_DEFAULT, VM_PROT_IS_MASK,
                         VM_PROT_READ, VM_PROT_WRITE, byref, mach_host_self, mach_make_memory_entry_64,
                         mach_memory_object_memory_entry_64, mach_port_deallocate, mach_port_t, mach_task_self,
                         mach_vm_address_t, mach_vm_allocate, mach_vm_deallocate, mach_vm_map, mach_vm_size_t,
                         memory_object_size_t)

KB4 = 4 * 1024
KB16 = 16 * 1024


class _Cleanup:
    """What a test made, released at its end (the C tests leave it to exit)."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.names: list[int] = []

    def release(self) -> None:
        for a, n in self.ranges:
            mach_vm_deallocate(mach_task_self(), a, n)
        for name in self.names:
            mach_port_deallocate(mach_task_self(), name)


def test_vm_memory_entry_parent() -> None:
    """Test that we properly align child memory_entries after vm_map."""
    c = _Cleanup()
    try:
        src_addr, mapped_addr = mach_vm_address_t(0), mach_vm_address_t(0)
        named_me_port, child_me_port = mach_port_t(), mach_port_t()
        size = KB16 * 2
        kr = mach_vm_allocate(mach_task_self(), byref(src_addr), size, VM_FLAGS_ANYWHERE)
        assert kr == KERN_SUCCESS, "vm_allocate"
        c.ranges.append((src_addr.value, size))
        for i in range(size // KB4):
            ctypes.memset(src_addr.value + KB4 * i, ((i + 1) * 0x11) & 0xFF, KB4)

        # a memory entry offset by KB4 * 2
        parent_offset = KB4 * 2
        parent_entry_size = mach_vm_size_t(size)
        kr = mach_make_memory_entry_64(mach_task_self(), byref(parent_entry_size), src_addr.value + parent_offset,
                                       VM_PROT_READ | VM_PROT_WRITE, byref(named_me_port), MACH_PORT_NULL)
        assert kr == KERN_SUCCESS, "parent mach_make_memory_entry()"
        c.names.append(named_me_port.value)

        # a memory entry offset into its parent by KB4 * 3
        child_offset = KB4 * 3
        child_entry_size = mach_vm_size_t(KB4 * 1)
        kr = mach_make_memory_entry_64(mach_task_self(), byref(child_entry_size), child_offset,
                                       VM_PROT_READ | VM_PROT_WRITE | MAP_MEM_USE_DATA_ADDR, byref(child_me_port),
                                       named_me_port)
        assert kr == KERN_SUCCESS, "child mach_make_memory_entry()"
        c.names.append(child_me_port.value)

        kr = mach_vm_map(mach_task_self(), byref(mapped_addr), child_entry_size.value, 0, VM_FLAGS_ANYWHERE,
                         child_me_port, 0, False, VM_PROT_READ | VM_PROT_WRITE, VM_PROT_READ | VM_PROT_WRITE,
                         VM_INHERIT_NONE)
        assert kr == KERN_SUCCESS, "mach_vm_map()"
        c.ranges.append((mapped_addr.value, child_entry_size.value))

        # x86_64, not under Rosetta: the mapping starts at the parent's offset
        # plus the child's
        n = child_entry_size.value
        assert ctypes.string_at(mapped_addr.value, n) == ctypes.string_at(
            src_addr.value + parent_offset + child_offset, n), "Mapped values equal src values"
    finally:
        c.release()


def test_vm_memory_entry_named_reuse_parent() -> None:
    """Test that we re-use the parent entry when possible with MAP_MEM_NAMED_REUSE."""
    c = _Cleanup()
    try:
        parent_handle, entry_handle = mach_port_t(), mach_port_t()
        kr = mach_memory_object_memory_entry_64(mach_host_self(), 1, KB16, VM_PROT_READ | VM_PROT_WRITE, 0,
                                                byref(parent_handle))
        assert kr == KERN_SUCCESS, "make parent_handle return value"
        c.names.append(parent_handle.value)

        alloced_addr = mach_vm_address_t()
        kr = mach_vm_map(mach_task_self(), byref(alloced_addr), KB16, 0, VM_FLAGS_ANYWHERE, parent_handle, 0, False,
                         VM_PROT_DEFAULT, VM_PROT_DEFAULT, VM_INHERIT_DEFAULT)
        assert kr == KERN_SUCCESS, "map parent_handle"
        c.ranges.append((alloced_addr.value, KB16))

        entry_size = memory_object_size_t(KB16)
        kr = mach_make_memory_entry_64(mach_task_self(), byref(entry_size), alloced_addr.value,
                                       MAP_MEM_NAMED_REUSE | VM_PROT_DEFAULT, byref(entry_handle), parent_handle)
        assert kr == KERN_SUCCESS, "make entry_handle return value"
        c.names.append(entry_handle.value)  # NAMED_REUSE added a user reference to the parent's name
        assert parent_handle.value == entry_handle.value, "NAMED_REUSE should re-use parent_handle"
    finally:
        c.release()


def test_vm_memory_entry_parent_copy() -> None:
    """Test that making a memory entry fails if the parent is a copy entry."""
    c = _Cleanup()
    try:
        alloced_addr = mach_vm_address_t()
        kr = mach_vm_allocate(mach_task_self(), byref(alloced_addr), KB16, VM_FLAGS_ANYWHERE)
        assert kr == KERN_SUCCESS, "mach_vm_allocate"
        c.ranges.append((alloced_addr.value, KB16))

        parent_size = memory_object_size_t(KB16)
        parent_handle = mach_port_t()
        kr = mach_make_memory_entry_64(mach_task_self(), byref(parent_size), alloced_addr.value,
                                       MAP_MEM_VM_COPY | VM_PROT_DEFAULT, byref(parent_handle), MACH_PORT_NULL)
        assert kr == KERN_SUCCESS, "make parent_handle return value"
        c.names.append(parent_handle.value)

        entry_size = memory_object_size_t(KB16)
        invalid_handle = 0xdeadbeef
        entry_handle = mach_port_t(invalid_handle)
        kr = mach_make_memory_entry_64(mach_task_self(), byref(entry_size), alloced_addr.value,
                                       MAP_MEM_VM_COPY | VM_PROT_DEFAULT, byref(entry_handle), parent_handle)
        assert kr == KERN_INVALID_ARGUMENT, "make entry_handle return value"
        assert entry_handle.value == invalid_handle, "make entry_handle handle unchanged on error"
        assert entry_size.value == KB16, "make entry_handle size unchanged on error"
    finally:
        c.release()


def test_vm_memory_entry_from_parent_entry_insufficient_permissions() -> None:
    """Test that parent permissions are correctly checked in
    mach_make_memory_entry_from_parent_entry."""
    c = _Cleanup()
    try:
        parent_handle = mach_port_t()
        kr = mach_memory_object_memory_entry_64(mach_host_self(), 1, KB16, VM_PROT_READ, 0, byref(parent_handle))
        assert kr == KERN_SUCCESS, "make parent_handle return value"
        c.names.append(parent_handle.value)

        entry_size = memory_object_size_t(KB16)
        invalid_handle = 0xdeadbeef
        entry_handle = mach_port_t(invalid_handle)
        kr = mach_make_memory_entry_64(mach_task_self(), byref(entry_size), 0, VM_PROT_READ | VM_PROT_WRITE,
                                       byref(entry_handle), parent_handle)
        assert kr == KERN_PROTECTION_FAILURE, "return value without mask_permissions"
        assert entry_handle.value == invalid_handle, "handle unchanged on failure"
        assert entry_size.value == KB16, "size unchanged on failure"

        # again with mask_permissions: only the read permission is given
        kr = mach_make_memory_entry_64(mach_task_self(), byref(entry_size), 0,
                                       VM_PROT_READ | VM_PROT_WRITE | VM_PROT_IS_MASK, byref(entry_handle),
                                       parent_handle)
        assert kr == KERN_SUCCESS, "return value with mask_permissions"
        c.names.append(entry_handle.value)

        alloced_addr = mach_vm_address_t()
        kr = mach_vm_map(mach_task_self(), byref(alloced_addr), KB16, 0, VM_FLAGS_ANYWHERE, parent_handle, 0, False,
                         VM_PROT_READ | VM_PROT_WRITE, VM_PROT_READ | VM_PROT_WRITE, VM_INHERIT_DEFAULT)
        assert kr == KERN_INVALID_RIGHT, "entry shouldn't have write permissions"
        kr = mach_vm_map(mach_task_self(), byref(alloced_addr), KB16, 0, VM_FLAGS_ANYWHERE, parent_handle, 0, False,
                         VM_PROT_READ, VM_PROT_READ, VM_INHERIT_DEFAULT)
        assert kr == KERN_SUCCESS, "entry should have read permissions"
        c.ranges.append((alloced_addr.value, KB16))
    finally:
        c.release()
