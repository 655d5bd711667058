"""Port of xnu-11417.101.15 tests/vm/mach_vm_map.c: mach_vm_map of memory
entries with misaligned offsets and sizes, and the overflow checks of
vm_map_enter_mem_object.

mach_vm_map_unaligned runs its table (six kinds of memory entry, forty
ranges, with and without VM_FLAGS_RETURN_DATA_ADDR) over a scratch
allocation; it is split by memory entry kind and RETURN_DATA_ADDR, each
part with its own scratch allocation and running the forty ranges as the C
loop does."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import pytest

import pymach.mach as M
from pymach.mach import byref, mach_task_self

PAGE_SIZE = 4096
PAGE_MASK = PAGE_SIZE - 1
U64 = (1 << 64) - 1
VM_MEMORY_SCENEKIT = 86  # <mach/vm_statistics.h>; pymach.mach does not name this tag

MO_SPECS = [
    (0, "0"),
    (M.MAP_MEM_VM_COPY, "MAP_MEM_VM_COPY"),
    (M.MAP_MEM_VM_SHARE, "MAP_MEM_VM_SHARE"),
    (M.MAP_MEM_USE_DATA_ADDR, "MAP_MEM_USE_DATA_ADDR"),
    (M.MAP_MEM_VM_COPY | M.MAP_MEM_USE_DATA_ADDR, "MAP_MEM_VM_COPY | MAP_MEM_USE_DATA_ADDR"),
    (M.MAP_MEM_VM_SHARE | M.MAP_MEM_USE_DATA_ADDR, "MAP_MEM_VM_SHARE | MAP_MEM_USE_DATA_ADDR"),
]

sz16k = 16 << 10
scratch_size = 3 * sz16k
mo_offset = sz16k - 128
mo_size = sz16k + 256

RANGE_SPECS = [
    (0, 64), (0, 128), (0, 256), (0, PAGE_SIZE), (0, PAGE_SIZE + 64), (0, 2 * PAGE_SIZE - 64),
    (0, 2 * PAGE_SIZE), (64, PAGE_SIZE), (64, PAGE_SIZE + 64), (64, 2 * PAGE_SIZE - 64), (64, 2 * PAGE_SIZE),
    (PAGE_SIZE - 64, PAGE_SIZE), (PAGE_SIZE - 64, PAGE_SIZE + 64), (PAGE_SIZE - 64, 2 * PAGE_SIZE - 64),
    (PAGE_SIZE - 64, 2 * PAGE_SIZE), (PAGE_SIZE, PAGE_SIZE + 64), (PAGE_SIZE, 2 * PAGE_SIZE - 64),
    (PAGE_SIZE, 2 * PAGE_SIZE), (PAGE_SIZE + 64, 2 * PAGE_SIZE - 64), (PAGE_SIZE + 64, 2 * PAGE_SIZE),
    (0, sz16k + 64), (0, sz16k + 128), (0, sz16k + 256), (0, sz16k + PAGE_SIZE), (0, sz16k + PAGE_SIZE + 64),
    (0, sz16k + 2 * PAGE_SIZE - 64), (0, sz16k + 2 * PAGE_SIZE), (64, sz16k + PAGE_SIZE),
    (64, sz16k + PAGE_SIZE + 64), (64, sz16k + 2 * PAGE_SIZE - 64), (64, sz16k + 2 * PAGE_SIZE),
    (PAGE_SIZE - 64, sz16k + PAGE_SIZE), (PAGE_SIZE - 64, sz16k + PAGE_SIZE + 64),
    (PAGE_SIZE - 64, sz16k + 2 * PAGE_SIZE - 64), (PAGE_SIZE - 64, sz16k + 2 * PAGE_SIZE),
    (PAGE_SIZE, sz16k + PAGE_SIZE + 64), (PAGE_SIZE, sz16k + 2 * PAGE_SIZE - 64),
    (PAGE_SIZE, sz16k + 2 * PAGE_SIZE), (PAGE_SIZE + 64, sz16k + 2 * PAGE_SIZE - 64),
    (PAGE_SIZE + 64, sz16k + 2 * PAGE_SIZE),
]


def trunc_page(x: int) -> int:
    return x & ~PAGE_MASK


def round_page(x: int) -> int:
    return (x + PAGE_MASK) & ~PAGE_MASK


@pytest.fixture
def scratch_addr() -> Iterator[int]:
    addr = M.mach_vm_address_t(0)
    kr = M.mach_vm_map(mach_task_self(), byref(addr), scratch_size, (64 << 10) - 1, M.VM_FLAGS_ANYWHERE,
                       M.MACH_PORT_NULL, 0, True, M.VM_PROT_DEFAULT, M.VM_PROT_DEFAULT, M.VM_INHERIT_DEFAULT)
    assert kr == M.KERN_SUCCESS, "allocated scratch space"
    words = (ctypes.c_uint32 * (scratch_size // 4)).from_address(addr.value)
    for i in range(scratch_size // 4):
        words[i] = i
    yield addr.value
    assert M.mach_vm_deallocate(mach_task_self(), addr.value, scratch_size) == M.KERN_SUCCESS


def mach_vm_map_unaligned_test(scratch_addr: int, mo_flags: int, vmflags: int, map_offset: int,
                               map_size: int) -> None:
    tag = M.VM_MAKE_TAG(VM_MEMORY_SCENEKIT)
    should_fail = False
    size = M.memory_object_size_t(mo_size)
    mo_port = M.mach_port_t()
    kr = M.mach_make_memory_entry_64(mach_task_self(), byref(size), scratch_addr + mo_offset,
                                     M.VM_PROT_DEFAULT | mo_flags, byref(mo_port), M.MACH_PORT_NULL)
    if vmflags & M.VM_FLAGS_RETURN_DATA_ADDR:
        used_offset_for_size = map_offset
        if mo_flags & M.MAP_MEM_USE_DATA_ADDR:
            used_offset_for_size += mo_offset
    else:
        used_offset_for_size = 0
    if round_page(used_offset_for_size + map_size) > round_page(mo_offset + mo_size):
        should_fail = True
    if (map_offset & PAGE_MASK) and not vmflags & M.VM_FLAGS_RETURN_DATA_ADDR and \
            not mo_flags & (M.MAP_MEM_VM_COPY | M.MAP_MEM_VM_SHARE):
        should_fail = True
    ctx = f"[{map_offset:#x}, {map_offset + map_size:#x})"
    assert kr == M.KERN_SUCCESS, f"made memory entry for {ctx}"
    try:
        if mo_flags & M.MAP_MEM_USE_DATA_ADDR:
            assert size.value == (mo_offset & PAGE_MASK) + mo_size, "check memory entry's size"
        else:
            assert size.value == round_page((mo_offset & PAGE_MASK) + mo_size), "check memory entry's size"
        map_addr = M.mach_vm_address_t(0)
        kr = M.mach_vm_map(mach_task_self(), byref(map_addr), map_size, 0, tag | vmflags, mo_port.value,
                           map_offset, True, M.VM_PROT_DEFAULT, M.VM_PROT_DEFAULT, M.VM_INHERIT_DEFAULT)
        if should_fail:
            assert kr == M.KERN_INVALID_ARGUMENT, f"mach_vm_map(mo_port, {ctx}) = {kr:#x}"
        else:
            assert kr == M.KERN_SUCCESS, f"mach_vm_map(mo_port, {ctx}) = {kr:#x}"
        if kr == M.KERN_SUCCESS:
            if vmflags & M.VM_FLAGS_RETURN_DATA_ADDR:
                assert map_addr.value & PAGE_MASK == used_offset_for_size & PAGE_MASK, \
                    "check returned address maintained offset"
            else:
                assert map_addr.value & PAGE_MASK == 0, "check returned address is aligned"
            r_addr = M.mach_vm_address_t(map_addr.value)
            r_size = M.mach_vm_size_t()
            info = M.vm_region_basic_info_data_64_t()
            icount = M.mach_msg_type_number_t(M.VM_REGION_BASIC_INFO_COUNT_64)
            kr = M.mach_vm_region(mach_task_self(), byref(r_addr), byref(r_size), M.VM_REGION_BASIC_INFO_64,
                                  byref(info), byref(icount), byref(M.mach_port_t(0)))
            if not should_fail:
                want_addr = trunc_page(map_addr.value)
                if mo_flags & (M.MAP_MEM_VM_COPY | M.MAP_MEM_VM_SHARE):
                    # mach_vm_map() only does full objects
                    want_size = round_page(mo_offset + mo_size) - trunc_page(mo_offset)
                else:
                    want_size = round_page(used_offset_for_size + map_size) - trunc_page(used_offset_for_size)
                if mo_flags & (M.MAP_MEM_VM_COPY | M.MAP_MEM_VM_SHARE):
                    want_data = trunc_page(mo_offset) // 4
                elif mo_flags & M.MAP_MEM_USE_DATA_ADDR:
                    want_data = (trunc_page(map_offset + mo_offset) & 0xFFFFFFFF) // 4
                else:
                    want_data = ((trunc_page(map_offset) + trunc_page(mo_offset)) & 0xFFFFFFFF) // 4
                assert kr == M.KERN_SUCCESS, f"mach_vm_region({map_addr.value:#x})"
                assert r_addr.value == want_addr, "validate region base"
                assert r_size.value == want_size, "validate region size"
                for offs in range(4, r_size.value, PAGE_SIZE):
                    got = ctypes.c_uint32.from_address(r_addr.value + offs).value
                    assert got == (want_data + offs // 4) & 0xFFFFFFFF, f"validate content at offset {offs}"
            kr = M.mach_vm_deallocate(mach_task_self(), r_addr.value, r_size.value)
            assert kr == M.KERN_SUCCESS, f"vm_deallocate({r_addr.value:#x}, {r_size.value})"
    finally:
        kr = M.mach_port_deallocate(mach_task_self(), mo_port.value)
        assert kr == M.KERN_SUCCESS, "m_p_d(mo_port)"


@pytest.mark.parametrize("return_data_addr", [0, 1], ids=["return_data_addr0", "return_data_addr1"])
@pytest.mark.parametrize("mo_flags", [f for f, _s in MO_SPECS], ids=[s for _f, s in MO_SPECS])
def test_mach_vm_map_unaligned(scratch_addr: int, mo_flags: int, return_data_addr: int) -> None:
    """check mach_vm_map() with misaligned offsets and sizes"""
    vmflags = M.VM_FLAGS_ANYWHERE | (M.VM_FLAGS_RETURN_DATA_ADDR if return_data_addr else 0)
    for start, end in RANGE_SPECS:
        mach_vm_map_unaligned_test(scratch_addr, mo_flags, vmflags, start, end - start)


def test_vm_map_enter_mem_object_overflow() -> None:
    """Test overflow cases in vm_map_enter_mem_object"""
    size_16kb = 16 * 1024
    # Create an allocation in the source map, then get a non-page-aligned
    # copy entry causing data_offset to be nonzero.
    alloced_addr = M.mach_vm_address_t(0)
    kr = M.mach_vm_allocate(mach_task_self(), byref(alloced_addr), 2 * size_16kb, M.VM_FLAGS_ANYWHERE)
    assert kr == M.KERN_SUCCESS, "set up allocation"
    entry_handle = M.mach_port_t()
    try:
        entry_size = M.memory_object_size_t(size_16kb)
        entry_offset = alloced_addr.value + size_16kb // 2
        kr = M.mach_make_memory_entry_64(mach_task_self(), byref(entry_size), entry_offset,
                                         M.MAP_MEM_VM_COPY | M.MAP_MEM_USE_DATA_ADDR | M.VM_PROT_ALL,
                                         byref(entry_handle), M.MACH_PORT_NULL)
        assert kr == M.KERN_SUCCESS, "set up copy memory entry"
        # (target_addr is uninitialized in the C test: any hint; 0 here)
        target_addr = M.mach_vm_address_t(0)

        # vm_map_enter_mem_object_sanitize: obj_size overflows when size rounds up to 0
        vmflags = M.VM_FLAGS_ANYWHERE
        kr = M.mach_vm_map(mach_task_self(), byref(target_addr), U64, 0, vmflags, entry_handle.value, 0, True,
                           M.VM_PROT_ALL, M.VM_PROT_ALL, M.VM_INHERIT_DEFAULT)
        assert kr == M.KERN_INVALID_ARGUMENT, "obj_size overflow case"

        # vm_map_enter_adjust_offset: obj_offs + quantity (the data offset) overflows
        vmflags = M.VM_FLAGS_ANYWHERE | M.VM_FLAGS_RETURN_DATA_ADDR
        target_offset = U64
        kr = M.mach_vm_map(mach_task_self(), byref(target_addr), size_16kb, 0, vmflags, entry_handle.value,
                           target_offset, True, M.VM_PROT_ALL, M.VM_PROT_ALL, M.VM_INHERIT_DEFAULT)
        assert kr == M.KERN_INVALID_ARGUMENT, "obj_offs overflow case"

        # obj_end + quantity overflows
        target_offset = (-(size_16kb + 1)) & U64
        kr = M.mach_vm_map(mach_task_self(), byref(target_addr), size_16kb, 0, vmflags, entry_handle.value,
                           target_offset, True, M.VM_PROT_ALL, M.VM_PROT_ALL, M.VM_INHERIT_DEFAULT)
        assert kr == M.KERN_INVALID_ARGUMENT, "obj_end overflow case"

        # obj_end points at the last page: obj_end + data_offset rounds up to 0
        target_offset = (-(2 * size_16kb)) & U64
        kr = M.mach_vm_map(mach_task_self(), byref(target_addr), size_16kb, 0, vmflags, entry_handle.value,
                           target_offset, True, M.VM_PROT_ALL, M.VM_PROT_ALL, M.VM_INHERIT_DEFAULT)
        assert kr == M.KERN_INVALID_ARGUMENT, "round-to-0 case should be detected"
    finally:
        if entry_handle.value:
            M.mach_port_deallocate(mach_task_self(), entry_handle.value)
        M.mach_vm_deallocate(mach_task_self(), alloced_addr.value, 2 * size_16kb)
