"""The C types of <mach/mach_types.h>, <mach/vm_types.h> and
<mach/vm_region.h> as ctypes types, LP64 (x86_64 and arm64)."""

from __future__ import annotations

import ctypes

# the flavors of mach_port_get_attributes / set_attributes
from .._kern.ipc_right import MACH_PORT_DNREQUESTS_SIZE as MACH_PORT_DNREQUESTS_SIZE
from .._kern.ipc_right import MACH_PORT_LIMITS_INFO as MACH_PORT_LIMITS_INFO
from .._kern.ipc_right import MACH_PORT_RECEIVE_STATUS as MACH_PORT_RECEIVE_STATUS

integer_t = ctypes.c_int
natural_t = ctypes.c_uint
boolean_t = ctypes.c_int  # int on x86_64 and arm64 (<mach/i386/boolean.h>)
kern_return_t = ctypes.c_int
mach_error_t = kern_return_t
mach_msg_return_t = kern_return_t

mach_port_name_t = natural_t
mach_port_t = mach_port_name_t  # user space: a name
mach_port_type_t = natural_t
mach_port_right_t = natural_t
mach_port_urefs_t = natural_t
mach_port_delta_t = integer_t
mach_port_array_t = ctypes.POINTER(mach_port_t)
mach_port_name_array_t = ctypes.POINTER(mach_port_name_t)
mach_port_type_array_t = ctypes.POINTER(mach_port_type_t)
task_t = mach_port_t
task_name_t = mach_port_t
vm_map_t = mach_port_t
vm_map_read_t = mach_port_t
host_t = mach_port_t
host_priv_t = mach_port_t
mem_entry_name_port_t = mach_port_t
ipc_space_t = mach_port_t

mach_msg_type_number_t = natural_t
mach_msg_size_t = natural_t
mach_msg_id_t = integer_t
mach_msg_bits_t = ctypes.c_uint
mach_msg_option_t = integer_t
mach_msg_timeout_t = natural_t

vm_offset_t = ctypes.c_ulong  # uintptr_t
vm_size_t = ctypes.c_ulong
vm_address_t = vm_offset_t
mach_vm_address_t = ctypes.c_uint64
mach_vm_offset_t = ctypes.c_uint64
mach_vm_size_t = ctypes.c_uint64
memory_object_offset_t = ctypes.c_ulonglong
memory_object_size_t = ctypes.c_ulonglong
vm_object_offset_t = ctypes.c_uint64
pointer_t = vm_offset_t
vm_prot_t = ctypes.c_int
vm_inherit_t = ctypes.c_uint
vm_behavior_t = ctypes.c_int
vm_sync_t = ctypes.c_uint
vm_machine_attribute_t = ctypes.c_uint
vm_region_flavor_t = ctypes.c_int
vm_region_info_t = ctypes.POINTER(ctypes.c_int)
vm_region_info_64_t = ctypes.POINTER(ctypes.c_int)
vm_region_recurse_info_t = ctypes.POINTER(ctypes.c_int)
vm_purgable_t = ctypes.c_int


class vm_region_basic_info_64(ctypes.Structure):
    """struct vm_region_basic_info_64, under #pragma pack(4): 36 bytes."""

    _pack_ = 4
    _fields_ = [
        ("protection", vm_prot_t),
        ("max_protection", vm_prot_t),
        ("inheritance", vm_inherit_t),
        ("shared", boolean_t),
        ("reserved", boolean_t),
        ("offset", memory_object_offset_t),
        ("behavior", vm_behavior_t),
        ("user_wired_count", ctypes.c_ushort),
    ]


vm_region_basic_info_data_64_t = vm_region_basic_info_64
vm_region_basic_info_64_t = ctypes.POINTER(vm_region_basic_info_64)
VM_REGION_BASIC_INFO_COUNT_64 = ctypes.sizeof(vm_region_basic_info_64) // ctypes.sizeof(ctypes.c_int)


class vm_region_basic_info(ctypes.Structure):
    """struct vm_region_basic_info (32-bit offset), under #pragma pack(4)."""

    _pack_ = 4
    _fields_ = [
        ("protection", vm_prot_t),
        ("max_protection", vm_prot_t),
        ("inheritance", vm_inherit_t),
        ("shared", boolean_t),
        ("reserved", boolean_t),
        ("offset", ctypes.c_uint32),
        ("behavior", vm_behavior_t),
        ("user_wired_count", ctypes.c_ushort),
    ]


vm_region_basic_info_data_t = vm_region_basic_info
VM_REGION_BASIC_INFO_COUNT = ctypes.sizeof(vm_region_basic_info) // ctypes.sizeof(ctypes.c_int)


mach_port_msgcount_t = natural_t
mach_port_mscount_t = natural_t
mach_port_rights_t = natural_t
mach_port_seqno_t = natural_t
mach_port_flavor_t = ctypes.c_int
mach_port_info_t = ctypes.POINTER(integer_t)
mach_port_context_t = ctypes.c_uint64


class mach_port_limits_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("mpl_qlimit", mach_port_msgcount_t)]


class mach_port_status_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [
        ("mps_pset", mach_port_rights_t),
        ("mps_seqno", mach_port_seqno_t),
        ("mps_mscount", mach_port_mscount_t),
        ("mps_qlimit", mach_port_msgcount_t),
        ("mps_msgcount", mach_port_msgcount_t),
        ("mps_sorights", mach_port_rights_t),
        ("mps_srights", boolean_t),
        ("mps_pdrequest", boolean_t),
        ("mps_nsrequest", boolean_t),
        ("mps_flags", natural_t),
    ]


class mach_port_options_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("flags", ctypes.c_uint32), ("mpl", mach_port_limits_t), ("reserved", ctypes.c_uint64 * 2)]


MACH_PORT_LIMITS_INFO_COUNT = ctypes.sizeof(mach_port_limits_t) // 4
MACH_PORT_RECEIVE_STATUS_COUNT = ctypes.sizeof(mach_port_status_t) // 4
MACH_PORT_DNREQUESTS_SIZE_COUNT = 1


# <mach/vm_region.h>, all under #pragma pack(4)
vm32_object_id_t = ctypes.c_uint32
vm_object_id_t = ctypes.c_uint64


class vm_region_submap_info_64(ctypes.Structure):
    """struct vm_region_submap_info_64, under #pragma pack(4): 80 bytes."""

    _pack_ = 4
    _fields_ = [
        ("protection", vm_prot_t),
        ("max_protection", vm_prot_t),
        ("inheritance", vm_inherit_t),
        ("offset", memory_object_offset_t),
        ("user_tag", ctypes.c_uint),
        ("pages_resident", ctypes.c_uint),
        ("pages_shared_now_private", ctypes.c_uint),
        ("pages_swapped_out", ctypes.c_uint),
        ("pages_dirtied", ctypes.c_uint),
        ("ref_count", ctypes.c_uint),
        ("shadow_depth", ctypes.c_ushort),
        ("external_pager", ctypes.c_ubyte),
        ("share_mode", ctypes.c_ubyte),
        ("is_submap", boolean_t),
        ("behavior", vm_behavior_t),
        ("object_id", vm32_object_id_t),
        ("user_wired_count", ctypes.c_ushort),
        ("pages_reusable", ctypes.c_uint),
        ("object_id_full", vm_object_id_t),
    ]


vm_region_submap_info_data_64_t = vm_region_submap_info_64
VM_REGION_SUBMAP_INFO_V2_SIZE = ctypes.sizeof(vm_region_submap_info_64)
VM_REGION_SUBMAP_INFO_V1_SIZE = VM_REGION_SUBMAP_INFO_V2_SIZE - ctypes.sizeof(vm_object_id_t)
VM_REGION_SUBMAP_INFO_V0_SIZE = VM_REGION_SUBMAP_INFO_V1_SIZE - ctypes.sizeof(ctypes.c_uint)
VM_REGION_SUBMAP_INFO_V2_COUNT_64 = VM_REGION_SUBMAP_INFO_V2_SIZE // 4
VM_REGION_SUBMAP_INFO_V1_COUNT_64 = VM_REGION_SUBMAP_INFO_V1_SIZE // 4
VM_REGION_SUBMAP_INFO_V0_COUNT_64 = VM_REGION_SUBMAP_INFO_V0_SIZE // 4
VM_REGION_SUBMAP_INFO_COUNT_64 = VM_REGION_SUBMAP_INFO_V2_COUNT_64


class vm_region_submap_short_info_64(ctypes.Structure):
    """struct vm_region_submap_short_info_64, under #pragma pack(4): 48 bytes."""

    _pack_ = 4
    _fields_ = [
        ("protection", vm_prot_t),
        ("max_protection", vm_prot_t),
        ("inheritance", vm_inherit_t),
        ("offset", memory_object_offset_t),
        ("user_tag", ctypes.c_uint),
        ("ref_count", ctypes.c_uint),
        ("shadow_depth", ctypes.c_ushort),
        ("external_pager", ctypes.c_ubyte),
        ("share_mode", ctypes.c_ubyte),
        ("is_submap", boolean_t),
        ("behavior", vm_behavior_t),
        ("object_id", vm32_object_id_t),
        ("user_wired_count", ctypes.c_ushort),
    ]


vm_region_submap_short_info_data_64_t = vm_region_submap_short_info_64
VM_REGION_SUBMAP_SHORT_INFO_COUNT_64 = ctypes.sizeof(vm_region_submap_short_info_64) // 4


class mach_vm_read_entry(ctypes.Structure):
    _fields_ = [("address", mach_vm_address_t), ("size", mach_vm_size_t)]


mach_vm_read_entry_t = mach_vm_read_entry * 256  # VM_MAP_ENTRY_MAX
VM_MAP_ENTRY_MAX = 256


# <mach/task_info.h>, under #pragma pack(4)
task_flavor_t = natural_t
task_info_t = ctypes.POINTER(integer_t)
policy_t = ctypes.c_int


class time_value_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("seconds", integer_t), ("microseconds", integer_t)]


class task_basic_info_64(ctypes.Structure):
    """struct task_basic_info_64 (TASK_BASIC_INFO on LP64): 44 bytes."""

    _pack_ = 4
    _fields_ = [
        ("suspend_count", integer_t),
        ("virtual_size", mach_vm_size_t),
        ("resident_size", mach_vm_size_t),
        ("user_time", time_value_t),
        ("system_time", time_value_t),
        ("policy", policy_t),
    ]


class task_basic_info_32(ctypes.Structure):
    """struct task_basic_info_32: 32-bit sizes, 32 bytes."""

    _pack_ = 4
    _fields_ = [
        ("suspend_count", integer_t),
        ("virtual_size", natural_t),
        ("resident_size", natural_t),
        ("user_time", time_value_t),
        ("system_time", time_value_t),
        ("policy", policy_t),
    ]


class mach_task_basic_info(ctypes.Structure):
    """struct mach_task_basic_info (MACH_TASK_BASIC_INFO): 48 bytes."""

    _pack_ = 4
    _fields_ = [
        ("virtual_size", mach_vm_size_t),
        ("resident_size", mach_vm_size_t),
        ("resident_size_max", mach_vm_size_t),
        ("user_time", time_value_t),
        ("system_time", time_value_t),
        ("policy", policy_t),
        ("suspend_count", integer_t),
    ]


task_basic_info = task_basic_info_64  # LP64
task_basic_info_data_t = task_basic_info
task_basic_info_64_data_t = task_basic_info_64
task_basic_info_32_data_t = task_basic_info_32
mach_task_basic_info_data_t = mach_task_basic_info
TASK_BASIC_INFO_32 = 4
TASK_BASIC_INFO_64 = 5
TASK_BASIC_INFO = TASK_BASIC_INFO_64
MACH_TASK_BASIC_INFO = 20
TASK_BASIC_INFO_32_COUNT = ctypes.sizeof(task_basic_info_32) // 4
TASK_BASIC_INFO_64_COUNT = ctypes.sizeof(task_basic_info_64) // 4
TASK_BASIC_INFO_COUNT = TASK_BASIC_INFO_64_COUNT
MACH_TASK_BASIC_INFO_COUNT = ctypes.sizeof(mach_task_basic_info) // 4


class task_dyld_info(ctypes.Structure):
    """struct task_dyld_info (TASK_DYLD_INFO): 20 bytes."""

    _pack_ = 4
    _fields_ = [
        ("all_image_info_addr", mach_vm_address_t),
        ("all_image_info_size", mach_vm_size_t),
        ("all_image_info_format", integer_t),
    ]


task_dyld_info_data_t = task_dyld_info
TASK_DYLD_INFO = 17
TASK_DYLD_INFO_COUNT = ctypes.sizeof(task_dyld_info) // 4
TASK_DYLD_ALL_IMAGE_INFO_32 = 0
TASK_DYLD_ALL_IMAGE_INFO_64 = 1
TASK_SECURITY_TOKEN = 13
TASK_SECURITY_TOKEN_COUNT = 2  # sizeof(security_token_t) / sizeof(natural_t)
TASK_AUDIT_TOKEN = 15
TASK_AUDIT_TOKEN_COUNT = 8  # sizeof(audit_token_t) / sizeof(natural_t)

# <mach/mach_types.h>: task port flavors, strongest first
mach_task_flavor_t = natural_t
TASK_FLAVOR_CONTROL = 0
TASK_FLAVOR_READ = 1
TASK_FLAVOR_INSPECT = 2
TASK_FLAVOR_NAME = 3
TASK_FLAVOR_MAX = TASK_FLAVOR_NAME
mach_thread_flavor_t = natural_t
THREAD_FLAVOR_CONTROL = 0
THREAD_FLAVOR_READ = 1
THREAD_FLAVOR_INSPECT = 2


class mach_timespec_t(ctypes.Structure):
    """<mach/clock_types.h>'s mach_timespec: seconds and nanoseconds
    (clock_res_t), a relative time for semaphore_timedwait."""

    _fields_ = [("tv_sec", ctypes.c_uint), ("tv_nsec", ctypes.c_int)]


mach_timespec = mach_timespec_t
