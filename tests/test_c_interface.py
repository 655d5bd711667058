"""pymach.mach exports what <mach/mach.h> does, with XNU's LP64 layouts."""

from __future__ import annotations

import ctypes

import pymach.mach as M
from pymach.lowlevel import kern_return


def test_every_code_is_exported_by_the_c_interface() -> None:
    codes = [n for n in vars(kern_return) if n.startswith(("KERN_", "MACH_", "MIG_"))]
    assert len([n for n in codes if n.startswith("KERN_")]) == 58  # 0..56 and KERN_RETURN_MAX
    for name in codes:
        assert getattr(M, name) == getattr(kern_return, name), name
    assert set(codes) <= set(kern_return.__all__)


def test_vm_region_basic_info_64_layout() -> None:
    st = M.vm_region_basic_info_data_64_t
    assert ctypes.sizeof(st) == 36 and M.VM_REGION_BASIC_INFO_COUNT_64 == 9
    offsets = {name: getattr(st, name).offset for name, _t in st._fields_}
    assert offsets == {"protection": 0, "max_protection": 4, "inheritance": 8, "shared": 12,
                       "reserved": 16, "offset": 20, "behavior": 28, "user_wired_count": 32}
    legacy = M.vm_region_basic_info_data_t
    assert ctypes.sizeof(legacy) == 32 and M.VM_REGION_BASIC_INFO_COUNT == 8
    assert (legacy.offset.offset, legacy.behavior.offset, legacy.user_wired_count.offset) == (20, 24, 28)


def test_type_sizes_are_lp64() -> None:
    sizes = {
        "kern_return_t": 4, "natural_t": 4, "integer_t": 4, "boolean_t": 4, "mach_port_t": 4,
        "mach_msg_type_number_t": 4, "vm_prot_t": 4, "vm_inherit_t": 4, "vm_behavior_t": 4,
        "vm_address_t": 8, "vm_offset_t": 8, "vm_size_t": 8, "mach_vm_address_t": 8,
        "mach_vm_size_t": 8, "mach_vm_offset_t": 8, "memory_object_offset_t": 8,
    }
    for name, size in sizes.items():
        assert ctypes.sizeof(getattr(M, name)) == size, name


def test_by_value_arguments_wrap_as_c_converts_them() -> None:
    # a mach_vm_size_t of -1 is 2**64 - 1: the range wraps, as in C
    assert M.mach_vm_deallocate(M.mach_task_self(), M.vm_page_size, -1) == M.KERN_INVALID_ARGUMENT
    assert M.mach_vm_deallocate(M.mach_task_self(), ctypes.c_uint64(0), ctypes.c_uint64(0)) == 0
