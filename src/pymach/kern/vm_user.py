"""The Mach VM entry points: argument checks, then the VM map.

As XNU's vm_user.c does, each routine only validates and rounds its
arguments, following XNU's vm_sanitize rules and their per-caller
compatibility rewrites, and delegates to the map. Every routine takes plain
ints and raises MachError; the C interface turns that into a kern_return_t
and the Pythonic one lets it propagate.
"""

from __future__ import annotations

import os

from .._linux import mm
from . import kern_return as K
from . import vm_defs as V
from .task import SELF, Host, Task
from .vm_map import RegionInfo, VmMap
from .vm_memory_entry import MemoryEntry

PAGE_SIZE = mm.PAGE_SIZE
PAGE_MASK = mm.PAGE_MASK
_U64 = (1 << 64) - 1
_2MB = 2 << 20

# Map bounds. The low bound is Linux's vm.mmap_min_addr (macOS's is the end
# of __PAGEZERO, 4 GiB); the high bound is x86_64's MACH_VM_MAX_ADDRESS.
try:
    with open("/proc/sys/vm/mmap_min_addr") as _f:
        MAP_MIN = max(int(_f.read()), PAGE_SIZE)
except OSError:
    MAP_MIN = 65536
MAP_MAX = V.MACH_VM_MAX_ADDRESS

# Copies this small go through a kernel buffer in XNU, where a fault on an
# unreadable or unwritable page reads as KERN_INVALID_ADDRESS rather than
# KERN_PROTECTION_FAILURE (msg_ool_size_small, x86_64).
OOL_SIZE_SMALL = 16384

_ALLOC_UNSUPPORTED = V.VM_FLAGS_TPRO
_PROT_VALID = V.VM_PROT_ALL | V.VM_PROT_COPY


def _fail(kr: int, what: str) -> K.MachError:
    return K.MachError(kr, what)


# -- name translation (the convert_port_to_* of MIG) ---------------------------

def task_map(name: int) -> VmMap:
    """The VM map behind a task name. MACH_SEND_INVALID_DEST when the name
    denotes nothing; KERN_INVALID_ARGUMENT when it is not a task with a map
    pymach can operate on."""
    s = SELF
    if name == s.task_name:
        return s.map
    e = s.space.lookup(name)
    if e is None:
        raise _fail(K.MACH_SEND_INVALID_DEST, f"{name:#x} is not a valid name")
    obj = e.object
    if not isinstance(obj, Task) or obj.map is None:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"{name:#x} is not a task port of ours")
    return obj.map


def host_priv(name: int) -> Host:
    """The privileged host behind a name: KERN_INVALID_HOST otherwise."""
    e = SELF.space.lookup(name)
    if e is None:
        raise _fail(K.MACH_SEND_INVALID_DEST, f"{name:#x} is not a valid name")
    if not isinstance(e.object, Host) or not e.object.privileged:
        raise _fail(K.KERN_INVALID_HOST, "host_priv is needed (root on Linux)")
    return e.object


# -- ranges (vm_sanitize_addr_size) ------------------------------------------

def _trunc(x: int) -> int:
    return x & ~PAGE_MASK


def _round(x: int) -> int:
    return (x + PAGE_MASK) & ~PAGE_MASK


def _range(addr: int, size: int, kr: int = K.KERN_INVALID_ARGUMENT) -> tuple[int, int]:
    """[trunc(addr), round(addr + size)) for size > 0; ``kr`` when addr +
    size carries past 2**64 or rounds to at or below trunc(addr)."""
    start = addr & ~PAGE_MASK
    end = (addr + size + PAGE_MASK) & ~PAGE_MASK
    if end > _U64 or end <= start or addr < 0 or size < 0:
        raise _fail(kr, f"[{addr:#x}, +{size:#x}) wraps around the address space")
    return start, end


def user_range(addr: int, size: int) -> tuple[int, int]:
    """A range for the copy routines: KERN_INVALID_ADDRESS if it wraps or
    crosses 2**48 (VM_SANITIZE_FLAGS_CHECK_ADDR_RANGE)."""
    start, end = _range(addr, size, K.KERN_INVALID_ADDRESS)
    if start >> 48 != end >> 48 and end != 1 << 48:
        raise _fail(K.KERN_INVALID_ADDRESS, f"{start:#x}-{end:#x} crosses 2**48")
    return start, end


# -- routines -----------------------------------------------------------------

def vm_allocate(task: int, addr: int, size: int, flags: int) -> int:
    """Allocate zero-filled memory; returns its address (0 for size 0).

    KERN_INVALID_ARGUMENT (flags outside VM_FLAGS_USER_ALLOCATE, a size that
    rounds to 0, a bad superpage size), KERN_INVALID_ADDRESS (FIXED range
    outside the map or wrapping), KERN_NO_SPACE (FIXED range in use without
    OVERWRITE, or no room), KERN_NOT_SUPPORTED (VM_FLAGS_TPRO),
    MACH_SEND_INVALID_DEST."""
    vm_map = SELF.map if task == SELF.task_name else task_map(task)
    if flags == V.VM_FLAGS_ANYWHERE and 0 < size <= MAP_MAX - MAP_MIN:
        return vm_map.allocate(0, (size + PAGE_MASK) & ~PAGE_MASK, True, False, 0)
    flags &= 0xFFFFFFFF  # an int in C: tags of 128 and up set the sign bit
    if flags & ~V.VM_FLAGS_USER_ALLOCATE:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"flags {flags:#x}")
    if size == 0:
        return 0
    if flags & _ALLOC_UNSUPPORTED:
        raise _fail(K.KERN_NOT_SUPPORTED, "TPRO memory has no Linux equivalent")
    if _round(size) > _U64:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"size {size:#x} rounds to 0")
    if flags & V.VM_FLAGS_PURGABLE and _round(size) // PAGE_SIZE > 0xFFFFFFFF:
        raise _fail(K.KERN_INVALID_ARGUMENT, "a purgeable object is at most ANON_MAX_SIZE")
    length = _round(size)
    superpage = flags & V.VM_FLAGS_SUPERPAGE_MASK
    align = 0
    if superpage == V.VM_FLAGS_SUPERPAGE_SIZE_ANY:
        length = (length + _2MB - 1) & ~(_2MB - 1)
        align = _2MB - 1
    elif superpage == V.VM_FLAGS_SUPERPAGE_SIZE_2MB:
        if length & (_2MB - 1):
            raise _fail(K.KERN_INVALID_ARGUMENT, "superpage size is not a multiple of 2 MiB")
        align = _2MB - 1
    elif superpage:
        raise _fail(K.KERN_INVALID_ARGUMENT, "unknown superpage size")
    tag = V.VM_GET_FLAGS_ALIAS(flags)
    permanent = bool(flags & V.VM_FLAGS_PERMANENT)
    if flags & V.VM_FLAGS_ANYWHERE:
        if length > MAP_MAX - MAP_MIN:
            raise _fail(K.KERN_NO_SPACE, f"size {size:#x} exceeds the address space")
        hint = 0
        if flags & V.VM_FLAGS_RANDOM_ADDR:
            hint = _trunc(int.from_bytes(os.urandom(6), "little") % (MAP_MAX - length - MAP_MIN) + MAP_MIN)
        a = vm_map.allocate(hint, length, True, False, tag, align, permanent)
    else:
        start = _trunc(addr)
        if addr > _U64 or start + length > _U64:
            raise _fail(K.KERN_INVALID_ADDRESS, f"[{addr:#x}, +{size:#x}) wraps around the address space")
        if start < MAP_MIN or start + length > MAP_MAX:
            raise _fail(K.KERN_INVALID_ADDRESS, f"{start:#x}-{start + length:#x} is outside the map")
        if align and start & align:
            raise _fail(K.KERN_INVALID_ARGUMENT, "superpages need a 2 MiB aligned address")
        a = vm_map.allocate(start, length, False, bool(flags & V.VM_FLAGS_OVERWRITE), tag, 0, permanent)
    if superpage:
        vm_map.behavior_hugepage(a, a + length)
    return a


def vm_deallocate(task: int, addr: int, size: int) -> None:
    """Unmap the pages of [addr, addr + size). Holes are not an error, and a
    range reaching outside the map removes nothing (as XNU does).

    KERN_INVALID_ARGUMENT (a wrapping range), MACH_SEND_INVALID_DEST."""
    vm_map = SELF.map if task == SELF.task_name else task_map(task)
    if size == 0:
        return
    start, end = _range(addr, size)
    if start < MAP_MIN or end > MAP_MAX:
        return
    vm_map.deallocate(start, end)


def vm_protect(task: int, addr: int, size: int, set_maximum: int, prot: int) -> None:
    """Set the current or (set_maximum) the maximum protection of a range.
    All-or-nothing: the whole range is checked before anything changes.

    KERN_PROTECTION_FAILURE (above the maximum, or raising the maximum),
    KERN_INVALID_ADDRESS (a hole, or outside the map),
    KERN_INVALID_ARGUMENT (bad bits, a wrapping range), MACH_SEND_INVALID_DEST."""
    vm_map = SELF.map if task == SELF.task_name else task_map(task)
    if size == 0:
        return
    if prot & ~_PROT_VALID:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"protection {prot:#x}")
    start = addr & ~PAGE_MASK
    end = (addr + size + PAGE_MASK) & ~PAGE_MASK
    if end > _U64 or end <= start:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"[{addr:#x}, +{size:#x}) wraps around the address space")
    if start >= MAP_MAX:
        raise _fail(K.KERN_INVALID_ADDRESS, f"{start:#x} is outside the map")
    vm_map.protect(start, end, bool(set_maximum), prot)


def vm_inherit(task: int, addr: int, size: int, inheritance: int) -> None:
    """Set how a range passes to a fork child. Holes are skipped.

    KERN_INVALID_ARGUMENT (a value above VM_INHERIT_NONE, a wrapping range),
    KERN_NOT_SUPPORTED (see docs/deviations.md), MACH_SEND_INVALID_DEST."""
    vm_map = task_map(task)
    if size == 0:
        return
    if not 0 <= inheritance <= V.VM_INHERIT_LAST_VALID:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"inheritance {inheritance}")
    start, end = _range(addr, size)
    start, end = max(start, MAP_MIN), min(end, MAP_MAX)
    if start < end:
        vm_map.inherit(start, end, inheritance)


def _small_fault(err: K.MachError, size: int, src: int) -> K.MachError:
    # XNU copies small ranges inside the map through a kernel buffer:
    # protection faults there come back as KERN_INVALID_ADDRESS.
    if err.kr == K.KERN_PROTECTION_FAILURE and size <= OOL_SIZE_SMALL and (
            MAP_MIN <= src and src + size <= MAP_MAX):
        return _fail(K.KERN_INVALID_ADDRESS, err.context or "")
    return err


def vm_read(task: int, addr: int, size: int) -> tuple[int, int]:
    """Copy a range into fresh memory of ours: (address of the data, count).
    Free the copy with vm_deallocate.

    KERN_INVALID_ARGUMENT (count past 32 bits), KERN_INVALID_ADDRESS
    (unmapped, wrapping, or small and unreadable), KERN_PROTECTION_FAILURE
    (large and unreadable), KERN_NO_SPACE, MACH_SEND_INVALID_DEST."""
    vm_map = task_map(task)
    if size > 0xFFFFFFFF:
        raise _fail(K.KERN_INVALID_ARGUMENT, "the count is 32 bits")
    if size == 0:
        return 0, 0
    start, end = user_range(addr, size)
    # small copies come out page-aligned; large ones keep the in-page offset
    off = 0 if size <= OOL_SIZE_SMALL else addr - start
    dst = SELF.map.allocate(0, _round(off + size), True, False, V.VM_MEMORY_MACH_MSG)
    try:
        vm_map.read_into(addr, dst + off, size)
    except K.MachError as err:
        SELF.map.deallocate(dst, dst + _round(off + size))
        raise _small_fault(err, size, addr) from None
    except BaseException:
        SELF.map.deallocate(dst, dst + _round(off + size))
        raise
    return dst + off, size


def vm_read_overwrite(task: int, addr: int, size: int, data: int) -> int:
    """Copy a range into our memory at ``data``; returns the count.

    KERN_INVALID_ADDRESS, KERN_PROTECTION_FAILURE (large copies),
    MACH_SEND_INVALID_DEST."""
    vm_map = task_map(task)
    if size == 0:
        return 0
    user_range(addr, size)
    user_range(data, size)
    try:
        vm_map.read_into(addr, data, size)
    except K.MachError as err:
        raise _small_fault(err, size, addr) from None
    return size


def vm_write(task: int, addr: int, data: int, count: int) -> None:
    """Copy ``count`` bytes from our ``data`` to ``addr`` in the task.

    MACH_SEND_INVALID_MEMORY (our source is unreadable: the message carrying
    it could not be sent), KERN_INVALID_ADDRESS, KERN_PROTECTION_FAILURE
    (large copies), MACH_SEND_INVALID_DEST."""
    vm_map = task_map(task)
    if count == 0:
        return
    if count > 0xFFFFFFFF:
        raise _fail(K.KERN_INVALID_ARGUMENT, "the count is 32 bits")
    try:
        SELF.map.check_range(*_range(data, count, K.MACH_SEND_INVALID_MEMORY), V.VM_PROT_READ)
    except K.MachError as err:
        raise _fail(K.MACH_SEND_INVALID_MEMORY, err.context or "") from None
    user_range(addr, count)
    try:
        vm_map.read_into(data, addr, count)
    except K.MachError as err:
        raise _small_fault(err, count, addr) from None


def vm_copy(task: int, src: int, size: int, dst: int) -> None:
    """Copy a range to another place in the same task (memmove semantics).

    KERN_INVALID_ADDRESS, KERN_PROTECTION_FAILURE (large copies),
    MACH_SEND_INVALID_DEST."""
    vm_map = task_map(task)
    if size == 0:
        return
    user_range(src, size)
    user_range(dst, size)
    try:
        vm_map.read_into(src, dst, size)
    except K.MachError as err:
        raise _small_fault(err, size, src) from None


def vm_region(task: int, addr: int) -> RegionInfo:
    """The region containing ``addr``, or the first one above it.

    KERN_INVALID_ADDRESS (nothing at or above), MACH_SEND_INVALID_DEST."""
    vm_map = task_map(task)
    info = vm_map.region(_trunc(addr)) if 0 <= addr <= _U64 else None
    if info is None:
        raise _fail(K.KERN_INVALID_ADDRESS, f"no region at or above {addr:#x}")
    return info


def vm_msync(task: int, addr: int, size: int, flags: int) -> None:
    """Synchronise, deactivate or discard a range's pages. Holes are
    skipped unless VM_SYNC_CONTIGUOUS; unknown flag bits are ignored.

    KERN_INVALID_ARGUMENT (both SYNCHRONOUS and ASYNCHRONOUS),
    KERN_INVALID_ADDRESS (a wrapping range; a hole with CONTIGUOUS),
    MACH_SEND_INVALID_DEST."""
    vm_map = task_map(task)
    if size == 0:
        return
    if flags & V.VM_SYNC_ASYNCHRONOUS and flags & V.VM_SYNC_SYNCHRONOUS:
        raise _fail(K.KERN_INVALID_ARGUMENT, "both synchronous and asynchronous")
    start, end = _range(addr, size, K.KERN_INVALID_ADDRESS)
    vm_map.msync(start, end, flags)


def vm_behavior_set(task: int, addr: int, size: int, behavior: int) -> None:
    """Advise how a range will be used (VM_BEHAVIOR_*).

    KERN_INVALID_ARGUMENT (unknown behavior, VM_BEHAVIOR_PAGEOUT as on
    release kernels, a carrying range), KERN_NO_SPACE (outside the map),
    KERN_INVALID_ADDRESS (a hole), KERN_PROTECTION_FAILURE (ZERO, REUSABLE
    or ZERO_WIRED_PAGES on memory that is not writable, ZERO on executable
    memory), MACH_SEND_INVALID_DEST."""
    vm_map = task_map(task)
    if not 0 <= behavior <= V.VM_BEHAVIOR_LAST_VALID:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"behavior {behavior}")
    if size == 0:
        return
    if addr + size > _U64:
        raise _fail(K.KERN_INVALID_ARGUMENT, "the range wraps around the address space")
    start, end = _range(addr, size, K.KERN_NO_SPACE)
    if start < MAP_MIN or end > MAP_MAX:
        raise _fail(K.KERN_NO_SPACE, f"{start:#x}-{end:#x} is outside the map")
    if behavior == V.VM_BEHAVIOR_PAGEOUT:
        raise _fail(K.KERN_INVALID_ARGUMENT, "VM_BEHAVIOR_PAGEOUT is for development kernels")
    vm_map.behavior_set(start, end, behavior)


def vm_page_query(task: int, offset: int) -> tuple[int, int]:
    """(disposition, ref_count) of the page holding ``offset``; (0, 0) for
    memory that is unmapped or never touched.

    KERN_INVALID_ADDRESS (the last page of the 64-bit space),
    MACH_SEND_INVALID_DEST."""
    vm_map = task_map(task)
    _range(offset, 1, K.KERN_INVALID_ADDRESS)
    if not MAP_MIN <= offset < MAP_MAX:
        return 0, 0
    return vm_map.page_query(_trunc(offset))


def vm_wire(host: int, task: int, addr: int, size: int, prot: int) -> None:
    """Wire a range (mlock), or unwire it with VM_PROT_NONE (munlock).

    KERN_INVALID_HOST (not host_priv), KERN_INVALID_ARGUMENT (bad
    protection, a wrapping range), KERN_INVALID_ADDRESS (a hole),
    KERN_PROTECTION_FAILURE (the range lacks the access),
    KERN_RESOURCE_SHORTAGE (RLIMIT_MEMLOCK), KERN_INVALID_TASK (the task
    is null or not a task), MACH_SEND_INVALID_RIGHT (the task name is not
    valid), MACH_SEND_INVALID_DEST (host is not a valid name)."""
    host_priv(host)
    # the task travels as a port argument of a message sent to host_priv
    e = SELF.space.lookup(task) if task else None
    if task and e is None:
        raise _fail(K.MACH_SEND_INVALID_RIGHT, f"{task:#x} is not a valid name")
    if e is None or not isinstance(e.object, Task) or e.object.map is None:
        raise _fail(K.KERN_INVALID_TASK, f"{task:#x} is not a task")
    vm_map = e.object.map
    if size == 0:
        return
    start, end = _range(addr, size)
    if prot & ~V.VM_PROT_ALL:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"protection {prot:#x}")
    start, end = max(start, MAP_MIN), min(end, MAP_MAX)
    if start < end:
        vm_map.wire(start, end, prot)


# -- memory entries --------------------------------------------------------------

def _memory_entry(name: int) -> MemoryEntry:
    """The memory entry a name holds a send right to."""
    e = SELF.space.lookup(name)
    if e is None or not isinstance(e.cap, MemoryEntry):
        raise _fail(K.KERN_INVALID_ARGUMENT, f"{name:#x} is not a memory entry")
    return e.cap


def vm_make_memory_entry(task: int, size: int, offset: int, permission: int, parent: int) -> tuple[int, int]:
    """A memory entry for [offset, offset + size) of our map, of a parent
    entry, or (MAP_MEM_NAMED_CREATE) of a fresh object. Returns (name,
    size rounded to pages).

    KERN_INVALID_ARGUMENT (size 0, a wrapping range, flags pymach does not
    know, a range past the parent), KERN_INVALID_ADDRESS (unmapped),
    KERN_PROTECTION_FAILURE (more than the region's maximum protection or
    the parent's permission), KERN_NOT_SUPPORTED (memory pymach did not
    map; MAP_MEM_PURGABLE, MAP_MEM_VM_COPY), MACH_SEND_INVALID_DEST."""
    vm_map = task_map(task)
    flags = permission & V.MAP_MEM_FLAGS_MASK
    prot = permission & V.VM_PROT_ALL
    if flags & ~V.MAP_MEM_FLAGS_USER:
        raise _fail(K.KERN_INVALID_VALUE, f"permission flags {flags:#x}")
    if flags & (V.MAP_MEM_PURGABLE | V.MAP_MEM_VM_COPY):
        raise _fail(K.KERN_NOT_SUPPORTED, "purgeable and copy entries have no Linux equivalent")
    if size == 0:
        raise _fail(K.KERN_INVALID_ARGUMENT, "size 0")
    if flags & V.MAP_MEM_NAMED_CREATE:
        length = _round(size)
        if length > _U64 or length > MAP_MAX:
            raise _fail(K.KERN_INVALID_ARGUMENT, f"size {size:#x}")
        ent = MemoryEntry.named_create(length, prot)
    elif parent:
        pe = _memory_entry(parent)
        start, end = _range(offset, size)
        ent = pe.sub(start, end - start, prot)
    else:
        start, end = _range(offset, size)
        fd, obj_offset = vm_map.entry_object(start, end, prot)
        ent = MemoryEntry.of_object(fd, obj_offset, end - start, prot)
    from .ipc_right import copyout_entry
    return copyout_entry(SELF.space, ent), ent.size


def vm_map_entry(task: int, addr: int, size: int, mask: int, flags: int, name: int, offset: int,
                 copy: int, cur: int, max_prot: int, inheritance: int) -> int:
    """mach_vm_map: map what a memory entry names (MACH_PORT_NULL: fresh
    zero-filled memory); shared, or with ``copy`` a private snapshot.
    Returns the address.

    KERN_INVALID_ARGUMENT (flags, size 0, a range past the entry, cur not
    within max, a bad inheritance, a name that is no memory entry),
    KERN_PROTECTION_FAILURE (more access than the entry gives, for a shared
    mapping), KERN_NO_SPACE, KERN_INVALID_ADDRESS, MACH_SEND_INVALID_DEST."""
    vm_map = task_map(task)
    flags &= 0xFFFFFFFF
    if flags & ~V.VM_FLAGS_USER_MAP:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"flags {flags:#x}")
    if size == 0:
        raise _fail(K.KERN_INVALID_ARGUMENT, "size 0")
    if cur & ~max_prot & V.VM_PROT_ALL:
        raise _fail(K.KERN_INVALID_ARGUMENT, "cur_protection exceeds max_protection")
    if not 0 <= inheritance <= V.VM_INHERIT_LAST_VALID:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"inheritance {inheritance}")
    cur &= V.VM_PROT_ALL
    max_prot &= V.VM_PROT_ALL
    anywhere = bool(flags & V.VM_FLAGS_ANYWHERE)
    overwrite = bool(flags & V.VM_FLAGS_OVERWRITE)
    length = _round(size)
    if length > MAP_MAX - MAP_MIN:
        raise _fail(K.KERN_NO_SPACE if anywhere else K.KERN_INVALID_ADDRESS, f"size {size:#x}")
    start = 0
    if not anywhere:
        start = _trunc(addr)
        if start < MAP_MIN or start + length > MAP_MAX:
            raise _fail(K.KERN_INVALID_ADDRESS, f"{start:#x}-{start + length:#x} is outside the map")
    if not name:
        a = vm_map.allocate(start, length, anywhere, overwrite, V.VM_GET_FLAGS_ALIAS(flags), mask)
        if cur != V.VM_PROT_DEFAULT or max_prot != V.VM_PROT_ALL:
            vm_map.protect(a, a + length, True, max_prot)
            vm_map.protect(a, a + length, False, cur)
        if inheritance != V.VM_INHERIT_DEFAULT:
            vm_map.inherit(a, a + length, inheritance)
        return a
    ent = _memory_entry(name)
    off = _trunc(offset)
    if offset < 0 or off + length > ent.size:
        raise _fail(K.KERN_INVALID_ARGUMENT, "the range runs past the memory entry")
    if not copy and (cur | max_prot) & ~ent.protection & (V.VM_PROT_READ | V.VM_PROT_WRITE):
        raise _fail(K.KERN_PROTECTION_FAILURE, "more access than the memory entry gives")
    return vm_map.map_object(start, length, mask, anywhere, overwrite, ent.fd, ent.offset + off,
                             bool(copy), cur, max_prot, inheritance)


def vm_remap(task: int, addr: int, size: int, mask: int, flags: int, src_task: int, src: int, copy: int,
             inheritance: int) -> tuple[int, int, int]:
    """mach_vm_remap within our own map. Returns (address, cur, max).

    KERN_INVALID_ARGUMENT (flags, size 0, a bad inheritance, the range spans
    several entries), KERN_INVALID_ADDRESS (the source is not mapped),
    KERN_NOT_SUPPORTED (memory pymach did not map), KERN_NO_SPACE,
    MACH_SEND_INVALID_DEST."""
    vm_map = task_map(task)
    if task_map(src_task) is not vm_map:
        raise _fail(K.KERN_NOT_SUPPORTED, "remapping from another task")
    flags &= 0xFFFFFFFF
    if flags & ~V.VM_FLAGS_USER_REMAP:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"flags {flags:#x}")
    if size == 0:
        raise _fail(K.KERN_INVALID_ARGUMENT, "size 0")
    if not 0 <= inheritance <= V.VM_INHERIT_LAST_VALID:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"inheritance {inheritance}")
    start, end = _range(src, size)
    anywhere = bool(flags & V.VM_FLAGS_ANYWHERE)
    target = 0 if anywhere else _trunc(addr)
    if not anywhere and (target < MAP_MIN or target + (end - start) > MAP_MAX):
        raise _fail(K.KERN_INVALID_ADDRESS, f"{target:#x} is outside the map")
    a, cur, max_prot = vm_map.remap(target, end - start, mask, anywhere, bool(flags & V.VM_FLAGS_OVERWRITE),
                                    start, bool(copy), inheritance)
    return a + (src - start if flags & V.VM_FLAGS_RETURN_DATA_ADDR else 0), cur, max_prot
