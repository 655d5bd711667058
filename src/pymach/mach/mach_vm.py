"""<mach/mach_vm.h> and <mach/vm_map.h>: the VM routines with C names,
C argument order and kern_return_t results. Each is a veneer over
pymach._kern.vm_user: it unpacks ctypes arguments, calls, and stores the
out-parameters only on success, as MIG-generated stubs do."""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from .._kern import kern_return as K
from .._kern import vm_defs as V
from .._kern import task_user as TU
from .._kern import vm_user as U
from .._kern.ipc_space import MACH_PORT_NULL
from .._kern.task import SELF
from . import types as T
from ._args import _Simple, address_of, counted, i32, out, out_address, set_out, store, u32, u64, val
from ._errors import returns_errno, returns_kr

MachError = K.MachError
_CArg = type(ctypes.byref(ctypes.c_int()))
_U64 = (1 << 64) - 1


def mach_task_self() -> int:
    """The name of our task's own task port."""
    return SELF.task_name


def mach_host_self() -> int:
    """The name of the host port; for root it is the privileged host port
    (host_priv), as on macOS."""
    return SELF.host_name


@returns_kr()
def mach_vm_allocate(target_task: Any, address: Any, size: Any, flags: Any) -> int:
    """Allocate zero-filled memory; ``address`` is in/out.

    KERN_SUCCESS, KERN_INVALID_ARGUMENT, KERN_NO_SPACE, KERN_INVALID_ADDRESS,
    KERN_NOT_SUPPORTED, MACH_SEND_INVALID_DEST."""
    a = out(address)
    a.value = U.vm_allocate(u32(target_task), a.value, u64(size), i32(flags))
    return 0


@returns_kr()
def mach_vm_deallocate(target: Any, address: Any, size: Any) -> int:
    """Unmap [address, address+size), rounded to pages; holes are fine.

    KERN_SUCCESS, KERN_INVALID_ARGUMENT, MACH_SEND_INVALID_DEST."""
    U.vm_deallocate(u32(target), u64(address), u64(size))
    return 0


@returns_kr()
def mach_vm_protect(target_task: Any, address: Any, size: Any, set_maximum: Any, new_protection: Any) -> int:
    """Set the current (or, with set_maximum, the maximum) protection.

    KERN_SUCCESS, KERN_PROTECTION_FAILURE, KERN_INVALID_ADDRESS,
    KERN_INVALID_ARGUMENT, KERN_NOT_SUPPORTED, MACH_SEND_INVALID_DEST."""
    U.vm_protect(u32(target_task), u64(address), u64(size), i32(set_maximum), i32(new_protection))
    return 0


@returns_kr()
def mach_vm_inherit(target_task: Any, address: Any, size: Any, new_inheritance: Any) -> int:
    """Set the inheritance of a range (VM_INHERIT_SHARE/COPY/NONE).

    KERN_SUCCESS, KERN_INVALID_ARGUMENT, KERN_INVALID_ADDRESS,
    KERN_NOT_SUPPORTED, MACH_SEND_INVALID_DEST."""
    U.vm_inherit(u32(target_task), u64(address), u64(size), u32(new_inheritance))
    return 0


@returns_kr()
def mach_vm_read(target_task: Any, address: Any, size: Any, data: Any, dataCnt: Any) -> int:
    """Copy a range into new memory of ours; ``data`` (pointer_t) and
    ``dataCnt`` are out. Release the copy with mach_vm_deallocate.

    KERN_SUCCESS, KERN_INVALID_ADDRESS, KERN_PROTECTION_FAILURE,
    KERN_INVALID_ARGUMENT, KERN_NO_SPACE, MACH_SEND_INVALID_DEST. A
    ``data`` too narrow for an address is a TypeError."""
    data_out = out_address(data)
    d, n = U.vm_read(u32(target_task), u64(address), u64(size))
    if data_out is not None:
        store(data_out, d)
    set_out(dataCnt, n)
    return 0


@returns_kr()
def mach_vm_read_overwrite(target_task: Any, address: Any, size: Any, data: Any, outsize: Any) -> int:
    """Copy a range into our buffer at ``data``: an address in our task (an
    int, as in C), or a ctypes object or buffer, which the copy never
    writes past; ``outsize`` is out.

    KERN_SUCCESS, KERN_INVALID_ADDRESS (also ``size`` larger than the
    buffer ``data`` names), KERN_PROTECTION_FAILURE, KERN_INVALID_ARGUMENT,
    MACH_SEND_INVALID_DEST."""
    if type(target_task) is int and type(address) is int and type(size) is int and type(data) is int \
            and 0 <= target_task <= 0xFFFFFFFF and 0 <= address <= _U64 and 0 <= size <= _U64:
        n = U.vm_read_overwrite(target_task, address, size, data & _U64)  # ints as they are
    else:
        where, room = address_of(data, True)
        sz = u64(size)
        if room is not None and sz > room:
            # the bytes past the buffer are not the caller's to
            # overwrite: as for a destination that is not mapped
            TU.task_target(u32(target_task), check=False, flavor=T.TASK_FLAVOR_READ)
            return K.KERN_INVALID_ADDRESS
        n = U.vm_read_overwrite(u32(target_task), u64(address), sz, where & _U64)
    if type(outsize) is _CArg and isinstance(outsize._obj, _Simple):  # type: ignore[attr-defined]
        outsize._obj.value = n  # type: ignore[attr-defined]  # byref(x): the common out-parameter
    else:
        set_out(outsize, n)
    return 0


@returns_kr()
def mach_vm_write(target_task: Any, address: Any, data: Any, dataCnt: Any) -> int:
    """Write ``dataCnt`` bytes from our ``data`` (an address in our task,
    or a ctypes object or buffer, never read past) to ``address``.

    KERN_SUCCESS, KERN_INVALID_ADDRESS, KERN_PROTECTION_FAILURE,
    KERN_INVALID_ARGUMENT, MACH_SEND_INVALID_DEST, MACH_SEND_INVALID_MEMORY
    (``data`` unreadable, or ``dataCnt`` larger than the buffer)."""
    where, room = address_of(data)
    n = u32(dataCnt)
    if room is not None and n > room:
        # as for a source that is not mapped: the message that would
        # carry it could not be sent
        TU.task_target(u32(target_task))
        return K.MACH_SEND_INVALID_MEMORY
    U.vm_write(u32(target_task), u64(address), where & _U64, n)
    return 0


@returns_kr()
def mach_vm_copy(target_task: Any, source_address: Any, size: Any, dest_address: Any) -> int:
    """Copy a range within the task; overlapping ranges are allowed.

    KERN_SUCCESS, KERN_INVALID_ADDRESS, KERN_PROTECTION_FAILURE,
    KERN_INVALID_ARGUMENT, MACH_SEND_INVALID_DEST."""
    U.vm_copy(u32(target_task), u64(source_address), u64(size), u64(dest_address))
    return 0


@returns_kr()
def _region(target_task: Any, address: Any, size: Any, flavor: Any, info: Any, infoCnt: Any,
            object_name: Any, legacy: bool = False) -> int:
    TU.task_target(u32(target_task), flavor=T.TASK_FLAVOR_READ)
    fl = i32(flavor)
    # mach_vm_region and vm_region_64 serve VM_REGION_BASIC_INFO as the
    # 64-bit flavor; only the legacy vm_region keeps the 32-bit struct.
    if fl == V.VM_REGION_BASIC_INFO_64 or (fl == V.VM_REGION_BASIC_INFO and not legacy):
        st: type[ctypes.Structure] = T.vm_region_basic_info_64
    elif fl == V.VM_REGION_BASIC_INFO:
        st = T.vm_region_basic_info
    else:
        return K.KERN_INVALID_ARGUMENT
    need = ctypes.sizeof(st) // 4
    cnt = out(infoCnt)
    where, held = counted(info, cnt.value)
    if held < need:
        return K.KERN_INVALID_ARGUMENT
    a = out(address)
    r = U.vm_region(u32(target_task), a.value)
    rec = st(r.protection, r.max_protection, r.inheritance, int(r.shared), int(r.reserved),
             r.offset & (0xFFFFFFFF if st is T.vm_region_basic_info else (1 << 64) - 1),
             r.behavior, r.user_wired_count)
    ctypes.memmove(where, ctypes.addressof(rec), ctypes.sizeof(st))
    a.value = r.start
    out(size).value = r.end - r.start
    cnt.value = need
    set_out(object_name, MACH_PORT_NULL)
    return 0


def mach_vm_region(target_task: Any, address: Any, size: Any, flavor: Any, info: Any, infoCnt: Any,
                   object_name: Any) -> int:
    """Describe the region at or above ``address`` (in/out); ``size``,
    ``info`` (VM_REGION_BASIC_INFO_64 or VM_REGION_BASIC_INFO), ``infoCnt``
    and ``object_name`` (always MACH_PORT_NULL, as in XNU) are out.

    KERN_SUCCESS, KERN_INVALID_ADDRESS (nothing at or above),
    KERN_INVALID_ARGUMENT (unknown flavor, count too small),
    MACH_SEND_INVALID_DEST."""
    return _region(target_task, address, size, flavor, info, infoCnt, object_name)


def vm_region(target_task: Any, address: Any, size: Any, flavor: Any, info: Any, infoCnt: Any,
              object_name: Any) -> int:
    """The legacy vm_region: as mach_vm_region, except that
    VM_REGION_BASIC_INFO fills the 32-bit vm_region_basic_info (8 ints).

    KERN_SUCCESS, KERN_INVALID_ADDRESS, KERN_INVALID_ARGUMENT,
    MACH_SEND_INVALID_DEST."""
    return _region(target_task, address, size, flavor, info, infoCnt, object_name, legacy=True)


@returns_kr()
def mach_vm_region_recurse(target_task: Any, address: Any, size: Any, nesting_depth: Any, info: Any,
                           infoCnt: Any) -> int:
    """Describe the region at or above ``address`` (in/out), descending
    into submaps; Linux has none, so ``nesting_depth`` comes back 0.
    ``infoCnt`` chooses the struct: VM_REGION_SUBMAP_INFO_COUNT_64 (or the
    V1/V0 counts) a vm_region_submap_info_64, with page counts from smaps;
    VM_REGION_SUBMAP_SHORT_INFO_COUNT_64 a vm_region_submap_short_info_64.

    KERN_SUCCESS, KERN_INVALID_ADDRESS (nothing at or above),
    KERN_INVALID_ARGUMENT (count below the short struct, not a task),
    MACH_SEND_INVALID_DEST."""
    TU.task_target(u32(target_task), flavor=T.TASK_FLAVOR_READ)
    cnt = out(infoCnt)
    where, n = counted(info, cnt.value)
    if n < T.VM_REGION_SUBMAP_SHORT_INFO_COUNT_64:
        return K.KERN_INVALID_ARGUMENT
    a = out(address)
    r, (resident, dirty, swapped, private) = U.vm_region_recurse(u32(target_task), a.value)
    rec: ctypes.Structure
    if n < T.VM_REGION_SUBMAP_INFO_V0_COUNT_64:
        rec = T.vm_region_submap_short_info_64(
            protection=r.protection, max_protection=r.max_protection, inheritance=r.inheritance,
            offset=r.offset, user_tag=r.user_tag, ref_count=1, shadow_depth=0, external_pager=0,
            share_mode=r.share_mode, is_submap=0, behavior=r.behavior, object_id=0,
            user_wired_count=r.user_wired_count)
        nbytes, newcnt = ctypes.sizeof(rec), T.VM_REGION_SUBMAP_SHORT_INFO_COUNT_64
    else:
        rec = T.vm_region_submap_info_64(
            protection=r.protection, max_protection=r.max_protection, inheritance=r.inheritance,
            offset=r.offset, user_tag=r.user_tag, pages_resident=resident,
            pages_shared_now_private=private if r.share_mode == V.SM_COW else 0,
            pages_swapped_out=swapped, pages_dirtied=dirty, ref_count=1, shadow_depth=0,
            external_pager=int(bool(r.path.startswith("/"))), share_mode=r.share_mode, is_submap=0,
            behavior=r.behavior, object_id=0, user_wired_count=r.user_wired_count, pages_reusable=0,
            object_id_full=0)
        newcnt = (T.VM_REGION_SUBMAP_INFO_V2_COUNT_64 if n >= T.VM_REGION_SUBMAP_INFO_V2_COUNT_64 else
                  T.VM_REGION_SUBMAP_INFO_V1_COUNT_64 if n >= T.VM_REGION_SUBMAP_INFO_V1_COUNT_64 else
                  T.VM_REGION_SUBMAP_INFO_V0_COUNT_64)
        nbytes = newcnt * 4
    ctypes.memmove(where, ctypes.addressof(rec), nbytes)
    a.value = r.start
    out(size).value = r.end - r.start
    out(nesting_depth).value = 0
    cnt.value = newcnt
    return 0


vm_region_recurse_64 = mach_vm_region_recurse


@returns_kr()
def mach_vm_read_list(target_task: Any, data_list: Any, count: Any) -> int:
    """Copy each of the first ``count`` entries of ``data_list`` (an array
    of mach_vm_read_entry: address, size) into new memory of ours; each
    entry's address is replaced by its copy's, or address and size by 0 for
    an entry that failed. Returns the code of the last entry with a size,
    as XNU's loop does.

    KERN_SUCCESS, KERN_INVALID_ARGUMENT (count above VM_MAP_ENTRY_MAX or
    above what ``data_list`` holds, not a task), KERN_INVALID_ADDRESS,
    KERN_PROTECTION_FAILURE, MACH_SEND_INVALID_DEST."""
    n = u32(count)
    if n > T.VM_MAP_ENTRY_MAX:
        return K.KERN_INVALID_ARGUMENT
    where, held = counted(data_list, n, ctypes.sizeof(T.mach_vm_read_entry))
    if held < n:
        return K.KERN_INVALID_ARGUMENT
    arr = (T.mach_vm_read_entry * max(n, 1)).from_address(where)
    kr, res = U.vm_read_list(u32(target_task), [(arr[i].address, arr[i].size) for i in range(n)])
    for i, (a, sz) in enumerate(res):
        arr[i].address, arr[i].size = a, sz
    return kr


@returns_kr(on_error=lambda target_tport, pid, t: set_out(t, MACH_PORT_NULL))
def task_for_pid(target_tport: Any, pid: Any, t: Any) -> int:
    """Get a send right to the task of ``pid`` into ``t`` (MACH_PORT_NULL on
    failure). Granted when Linux lets us ptrace the process.

    KERN_SUCCESS, KERN_FAILURE (pid 0, a bad ``target_tport``, no such
    process, or access refused)."""
    set_out(t, TU.task_for_pid(u32(target_tport), i32(pid)))
    return 0


@returns_kr(on_error=lambda target_tport, pid, tn: set_out(tn, MACH_PORT_NULL))
def task_name_for_pid(target_tport: Any, pid: Any, tn: Any) -> int:
    """Get a task name port for ``pid`` into ``tn`` (MACH_PORT_NULL on
    failure): good for pid_for_task and task_info only.

    KERN_SUCCESS, KERN_FAILURE (a bad ``target_tport``, no such process, or
    another user's process)."""
    set_out(tn, TU.task_name_for_pid(u32(target_tport), i32(pid)))
    return 0


@returns_errno(on_error=lambda target_tport, pid, t: set_out(t, MACH_PORT_NULL))
def task_read_for_pid(target_tport: Any, pid: Any, t: Any) -> int:
    """Get a send right to the task read port of ``pid`` into ``t``: it
    reads memory and regions, and refuses writes and control. Our own pid
    gives the port task_get_special_port(TASK_READ_PORT) gives. A BSD
    system call in XNU (<sys/proc.h>): 0, or -1 with errno set
    (ctypes.get_errno) and MACH_PORT_NULL stored.

    EPERM (pid 0, access refused as for task_for_pid, a zombie), EINVAL
    (``target_tport`` not a task control port), ESRCH (no such process)."""
    set_out(t, TU.task_flavor_for_pid(u32(target_tport), i32(pid), T.TASK_FLAVOR_READ))
    return 0


@returns_errno(on_error=lambda target_tport, pid, t: set_out(t, MACH_PORT_NULL))
def task_inspect_for_pid(target_tport: Any, pid: Any, t: Any) -> int:
    """Get a send right to the task inspect port of ``pid`` into ``t``: it
    answers task_info and task_threads (inspect thread ports), and reads no
    memory. Our own pid gives task_get_special_port(TASK_INSPECT_PORT).
    0, or -1 with errno set, as task_read_for_pid."""
    set_out(t, TU.task_flavor_for_pid(u32(target_tport), i32(pid), T.TASK_FLAVOR_INSPECT))
    return 0


def mach_task_is_self(task: Any) -> int:
    """TRUE (1) when ``task`` is a port of our own task of any flavor
    (control, read, inspect or name), FALSE (0) otherwise, a name that is
    no task port included."""
    return int(TU.task_is_self(u32(task)))


@returns_kr(on_error=lambda t, x: set_out(x, -1))
def pid_for_task(t: Any, x: Any) -> int:
    """Store the pid of task port ``t`` in ``x`` (-1 on failure).

    KERN_SUCCESS, KERN_FAILURE (not a task port, or its process exited)."""
    set_out(x, TU.pid_for_task(u32(t)))
    return 0


def _time_value(seconds: float) -> Any:
    us = int(round(seconds * 1_000_000))
    return T.time_value_t(us // 1_000_000, us % 1_000_000)


@returns_kr()
def task_info(target_task: Any, flavor: Any, task_info_out: Any, task_info_outCnt: Any) -> int:
    """Information about a task: TASK_BASIC_INFO (task_basic_info_64 on
    LP64), TASK_BASIC_INFO_32 and MACH_TASK_BASIC_INFO from /proc;
    TASK_SECURITY_TOKEN (security_token_t) and TASK_AUDIT_TOKEN
    (audit_token_t) with the task's credentials; TASK_DYLD_INFO
    (task_dyld_info, which needs a read port or stronger). Every other
    flavor takes a port of any flavor. ``task_info_outCnt`` is in/out.

    KERN_SUCCESS, KERN_INVALID_ARGUMENT (an unknown flavor, a count too
    small, not a task, a port too weak for the flavor),
    MACH_SEND_INVALID_DEST (the task's process exited), KERN_FAILURE
    (/proc refused)."""
    fl = i32(flavor)
    task = u32(target_task)
    cnt = out(task_info_outCnt)
    if fl == T.TASK_SECURITY_TOKEN or fl == T.TASK_AUDIT_TOKEN:
        vals = TU.task_security_token(task) if fl == T.TASK_SECURITY_TOKEN else TU.task_audit_token(task)
        where, held = counted(task_info_out, cnt.value)
        if held < len(vals):
            return K.KERN_INVALID_ARGUMENT
        (ctypes.c_uint * len(vals)).from_address(where)[:] = list(vals)
        cnt.value = len(vals)
        return 0
    if fl == T.TASK_DYLD_INFO:
        addr, size, fmt = TU.task_dyld_info(task)
        where, held = counted(task_info_out, cnt.value)
        if held < T.TASK_DYLD_INFO_COUNT - 1:  # XNU's TASK_LEGACY_DYLD_INFO_COUNT: no format field
            return K.KERN_INVALID_ARGUMENT
        di = T.task_dyld_info(addr, size, fmt)
        n = T.TASK_DYLD_INFO_COUNT if held >= T.TASK_DYLD_INFO_COUNT else T.TASK_DYLD_INFO_COUNT - 1
        ctypes.memmove(where, ctypes.addressof(di), n * 4)
        cnt.value = n
        return 0
    st: type[ctypes.Structure]
    if fl == T.MACH_TASK_BASIC_INFO:
        st = T.mach_task_basic_info
    elif fl == T.TASK_BASIC_INFO_64:
        st = T.task_basic_info_64
    elif fl == T.TASK_BASIC_INFO_32:
        st = T.task_basic_info_32
    else:
        TU.task_of(task, flavor=T.TASK_FLAVOR_NAME)
        return K.KERN_INVALID_ARGUMENT
    where, held = counted(task_info_out, cnt.value)
    need = ctypes.sizeof(st) // 4
    b = TU.task_basic_info(task)
    if held < need:
        return K.KERN_INVALID_ARGUMENT
    if st is T.task_basic_info_32:
        vs, rs = min(b.virtual_size, 0xFFFFFFFF), min(b.resident_size, 0xFFFFFFFF)
    else:
        vs, rs = b.virtual_size, b.resident_size
    rec = st(virtual_size=vs, resident_size=rs, user_time=_time_value(b.user_time),
             system_time=_time_value(b.system_time), policy=b.policy, suspend_count=b.suspend_count)
    if st is T.mach_task_basic_info:
        rec.resident_size_max = b.resident_size_max
    ctypes.memmove(where, ctypes.addressof(rec), ctypes.sizeof(st))
    cnt.value = need
    return 0


@returns_kr()
def mach_vm_msync(target_task: Any, address: Any, size: Any, sync_flags: Any) -> int:
    """Synchronise a range with its backing store (VM_SYNC_*).

    KERN_SUCCESS, KERN_INVALID_ARGUMENT, KERN_INVALID_ADDRESS,
    MACH_SEND_INVALID_DEST."""
    U.vm_msync(u32(target_task), u64(address), u64(size), u32(sync_flags))
    return 0


@returns_kr()
def mach_vm_behavior_set(target_task: Any, address: Any, size: Any, new_behavior: Any) -> int:
    """Set the paging behavior of a range (VM_BEHAVIOR_*).

    KERN_SUCCESS, KERN_INVALID_ARGUMENT, KERN_INVALID_ADDRESS,
    KERN_PROTECTION_FAILURE, MACH_SEND_INVALID_DEST."""
    U.vm_behavior_set(u32(target_task), u64(address), u64(size), i32(new_behavior))
    return 0


@returns_kr()
def mach_vm_page_query(target_map: Any, offset: Any, disposition: Any, ref_count: Any) -> int:
    """Query one page: VM_PAGE_QUERY_PAGE_* bits and a reference count.

    KERN_SUCCESS, KERN_INVALID_ADDRESS, MACH_SEND_INVALID_DEST."""
    d, r = U.vm_page_query(u32(target_map), u64(offset))
    set_out(disposition, d)
    set_out(ref_count, r)
    return 0


@returns_kr()
def mach_vm_wire(host_priv: Any, task: Any, address: Any, size: Any, desired_access: Any) -> int:
    """Wire a range into memory (mlock), or unwire it with VM_PROT_NONE.

    KERN_SUCCESS, KERN_INVALID_HOST (not host_priv), KERN_INVALID_ARGUMENT,
    KERN_INVALID_ADDRESS, KERN_PROTECTION_FAILURE, KERN_RESOURCE_SHORTAGE,
    KERN_INVALID_TASK, MACH_SEND_INVALID_RIGHT, MACH_SEND_INVALID_DEST."""
    U.vm_wire(u32(host_priv), u32(task), u64(address), u64(size), i32(desired_access))
    return 0


# The classic vm_* names take vm_address_t/vm_size_t; on LP64 they are the
# same routines.
vm_allocate = mach_vm_allocate
vm_deallocate = mach_vm_deallocate
vm_protect = mach_vm_protect
vm_inherit = mach_vm_inherit
vm_read = mach_vm_read
vm_read_overwrite = mach_vm_read_overwrite
vm_write = mach_vm_write
vm_copy = mach_vm_copy
vm_region_64 = mach_vm_region
vm_msync = mach_vm_msync
vm_behavior_set = mach_vm_behavior_set
vm_wire = mach_vm_wire


def mach_error_string(error_value: Any) -> str:
    """The text of a kern_return_t, as libsyscall gives it."""
    return K.mach_error_string(val(error_value))


def mach_error_type(error_value: Any) -> str:
    """The subsystem of a kern_return_t, such as "(os/kern)"."""
    return K.mach_error_type(val(error_value))


def mach_error(str_: str, error_value: Any) -> None:
    """Print ``str_`` and the error's text on stderr, as libsyscall's
    mach_error does: "vm_protect: (os/kern) protection failure"."""
    line = f"{str_} {K.mach_error_text(val(error_value), null='')}\n".encode(errors="replace")
    # libsyscall formats into a 1024-byte buffer: at most 1023 bytes get out
    sys.stderr.write(line[:1023].decode(errors="replace"))
    sys.stderr.flush()


@returns_kr()
def mach_make_memory_entry_64(target_task: Any, size: Any, offset: Any, permission: Any, object_handle: Any,
                              parent_entry: Any) -> int:
    """Name memory with a memory entry: [offset, offset + *size) of our map
    (shared, or a snapshot with MAP_MEM_VM_COPY), part of ``parent_entry``,
    or a fresh object (MAP_MEM_NAMED_CREATE). ``size`` is in/out;
    ``object_handle`` gets the name (MACH_PORT_NULL for MAP_MEM_ONLY and a
    NAMED_CREATE of size 0). Neither is touched on failure.

    KERN_SUCCESS, KERN_INVALID_VALUE, KERN_INVALID_ARGUMENT,
    KERN_INVALID_RIGHT, KERN_FAILURE, KERN_INVALID_ADDRESS,
    KERN_PROTECTION_FAILURE, KERN_NOT_SUPPORTED, MACH_SEND_INVALID_RIGHT,
    MACH_SEND_INVALID_DEST."""
    sz = out(size)
    name, length = U.vm_make_memory_entry(u32(target_task), u64(sz.value), u64(offset), i32(permission),
                                          u32(parent_entry))
    sz.value = length
    set_out(object_handle, name)
    return 0


def mach_make_memory_entry(target_task: Any, size: Any, offset: Any, permission: Any, object_handle: Any,
                           parent_entry: Any) -> int:
    """The vm_size_t variant of mach_make_memory_entry_64 (the same on LP64)."""
    return mach_make_memory_entry_64(target_task, size, offset, permission, object_handle, parent_entry)


@returns_kr()
def mach_memory_object_memory_entry_64(host: Any, internal: Any, size: Any, permission: Any, pager: Any,
                                       entry_handle: Any) -> int:
    """A memory entry for a new anonymous object of ``size`` bytes (with
    ``internal`` TRUE; a pager port names no object from user space).
    ``entry_handle`` gets the name; it is not touched on failure.

    KERN_SUCCESS, KERN_INVALID_HOST, KERN_INVALID_ARGUMENT,
    MACH_SEND_INVALID_RIGHT, MACH_SEND_INVALID_DEST."""
    set_out(entry_handle, U.memory_object_memory_entry(u32(host), i32(internal), u64(size), i32(permission),
                                                      u32(pager)))
    return 0


def mach_memory_object_memory_entry(host: Any, internal: Any, size: Any, permission: Any, pager: Any,
                                    entry_handle: Any) -> int:
    """The vm_size_t variant of mach_memory_object_memory_entry_64 (the
    same on LP64)."""
    return mach_memory_object_memory_entry_64(host, internal, size, permission, pager, entry_handle)


@returns_kr()
def mach_vm_purgable_control(target_task: Any, address: Any, control: Any, state: Any) -> int:
    """Set (VM_PURGABLE_SET_STATE) or get (VM_PURGABLE_GET_STATE) the state
    of the purgeable object mapped at ``address``, or empty every volatile
    one (VM_PURGABLE_PURGE_ALL). ``state`` is in/out: SET_STATE gives back
    the old state. It is not touched on failure.

    KERN_SUCCESS, KERN_INVALID_ARGUMENT, KERN_INVALID_ADDRESS,
    KERN_PROTECTION_FAILURE, KERN_NOT_SUPPORTED, MACH_SEND_INVALID_DEST."""
    st = out(state)
    st.value = U.vm_purgable_control(u32(target_task), u64(address), i32(control), i32(st.value))
    return 0


vm_purgable_control = mach_vm_purgable_control


@returns_kr()
def mach_memory_entry_purgable_control(mem_entry: Any, control: Any, state: Any) -> int:
    """Set (VM_PURGABLE_SET_STATE) or get (VM_PURGABLE_GET_STATE) the state
    of the purgeable object a memory entry names, for every task that maps
    it. ``state`` is in/out, as for mach_vm_purgable_control.

    KERN_SUCCESS, KERN_INVALID_ARGUMENT (no memory entry, a copy entry, an
    entry smaller than its object, an object that is not purgeable, a bad
    control or state), KERN_PROTECTION_FAILURE, MACH_SEND_INVALID_RIGHT."""
    st = out(state)
    st.value = U.memory_entry_purgable_control(u32(mem_entry), i32(control), i32(st.value))
    return 0


@returns_kr()
def mach_vm_map(target_task: Any, address: Any, size: Any, mask: Any, flags: Any, object: Any, offset: Any,
                copy: Any, cur_protection: Any, max_protection: Any, inheritance: Any) -> int:
    """Map a memory entry, shared or (copy TRUE) as a snapshot taken now;
    with MACH_PORT_NULL, fresh zero-filled memory. ``address`` is in/out.

    KERN_SUCCESS, KERN_INVALID_ARGUMENT, KERN_INVALID_OBJECT,
    KERN_INVALID_RIGHT, KERN_NOT_SUPPORTED, KERN_NO_SPACE,
    KERN_INVALID_ADDRESS, MACH_SEND_INVALID_RIGHT, MACH_SEND_INVALID_DEST."""
    a = out(address)
    a.value = U.vm_map_enter_mem_object(u32(target_task), a.value, u64(size), u64(mask), i32(flags), u32(object),
                             u64(offset), i32(copy), i32(cur_protection), i32(max_protection),
                             i32(inheritance))
    return 0


vm_map = mach_vm_map


@returns_kr()
def mach_vm_remap(target_task: Any, target_address: Any, size: Any, mask: Any, flags: Any, src_task: Any,
                  src_address: Any, copy: Any, cur_protection: Any, max_protection: Any,
                  inheritance: Any) -> int:
    """Map the pages of [src_address, +size) of our own task a second time
    (copy FALSE), or a snapshot of them (copy TRUE); each new entry keeps
    its source's protections. ``target_address`` is in/out;
    ``cur_protection`` and ``max_protection`` get the AND of the sources'.

    KERN_SUCCESS, KERN_INVALID_ARGUMENT, KERN_INVALID_ADDRESS,
    KERN_PROTECTION_FAILURE, KERN_NOT_SUPPORTED, KERN_NO_SPACE,
    MACH_SEND_INVALID_RIGHT, MACH_SEND_INVALID_DEST."""
    a = out(target_address)
    addr, cur, mx = U.vm_remap(u32(target_task), a.value, u64(size), u64(mask), i32(flags), u32(src_task),
                               u64(src_address), i32(copy), i32(inheritance))
    a.value = addr
    set_out(cur_protection, cur)
    set_out(max_protection, mx)
    return 0


vm_remap = mach_vm_remap


@returns_kr()
def mach_vm_remap_new(target_task: Any, target_address: Any, size: Any, mask: Any, flags: Any, src_task: Any,
                      src_address: Any, copy: Any, cur_protection: Any, max_protection: Any,
                      inheritance: Any) -> int:
    """As mach_vm_remap, but ``cur_protection`` and ``max_protection`` are
    in/out: the new mapping gets exactly them, and the address returned
    points at src_address's byte (VM_FLAGS_RETURN_DATA_ADDR is implied).

    KERN_SUCCESS, KERN_INVALID_ARGUMENT, KERN_PROTECTION_FAILURE,
    KERN_INVALID_ADDRESS, KERN_NOT_SUPPORTED, KERN_NO_SPACE,
    MACH_SEND_INVALID_RIGHT, MACH_SEND_INVALID_DEST."""
    a = out(target_address)
    c, m = out(cur_protection), out(max_protection)
    addr, cur, mx = U.vm_remap_new(u32(target_task), a.value, u64(size), u64(mask), i32(flags),
                                   u32(src_task), u64(src_address), i32(copy), i32(c.value), i32(m.value),
                                   i32(inheritance))
    a.value = addr
    c.value = cur
    m.value = mx
    return 0


vm_remap_new = mach_vm_remap_new


__all__ = [
    "mach_vm_region_recurse", "vm_region_recurse_64", "mach_vm_read_list", "task_for_pid",
    "task_name_for_pid", "pid_for_task", "task_info", "task_read_for_pid", "task_inspect_for_pid",
    "mach_task_is_self",
    "mach_make_memory_entry_64", "mach_make_memory_entry", "mach_memory_object_memory_entry_64",
    "mach_memory_object_memory_entry", "mach_vm_purgable_control", "mach_memory_entry_purgable_control", "vm_purgable_control", "mach_vm_map", "vm_map",
    "mach_vm_remap",
    "vm_remap", "mach_vm_remap_new", "vm_remap_new",
    "mach_task_self", "mach_host_self", "mach_vm_allocate", "mach_vm_deallocate",
    "mach_vm_protect", "mach_vm_inherit", "mach_vm_read", "mach_vm_read_overwrite",
    "mach_vm_write", "mach_vm_copy", "mach_vm_region", "vm_region", "mach_vm_msync",
    "mach_vm_behavior_set", "mach_vm_page_query", "mach_vm_wire", "mach_error_string",
    "mach_error_type", "mach_error", "vm_allocate", "vm_deallocate", "vm_protect", "vm_inherit",
    "vm_read", "vm_read_overwrite", "vm_write", "vm_copy", "vm_region_64", "vm_msync",
    "vm_behavior_set", "vm_wire",
]
