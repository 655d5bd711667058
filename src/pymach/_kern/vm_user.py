"""The Mach VM entry points: argument checks, then the VM map.

As XNU's vm_user.c does, each routine only validates and rounds its
arguments, following XNU's vm_sanitize rules and their per-caller
compatibility rewrites, and delegates to the map. Every routine takes plain
ints and raises MachError; the C interface turns that into a kern_return_t
and the Pythonic one lets it propagate.
"""

from __future__ import annotations

import os

from .._linux import files, mm, procfs
from . import kern_return as K
from . import vm_defs as V
from . import ipc_right as R
from .ipc_space import (MACH_PORT_DEAD, MACH_PORT_NULL, MACH_PORT_RIGHT_SEND, MACH_PORT_TYPE_DEAD_NAME,
                        MACH_PORT_TYPE_SEND)
from .task import SELF, TASK_FLAVOR_CONTROL, TASK_FLAVOR_READ, Host, Task
from .vm_map import RegionInfo, VmMap
from .vm_memory_entry import MemoryEntry
from .task_user import task_of, task_target
from .vm_map_foreign import ForeignMap
from . import vm_purgable as PG

PAGE_SIZE = mm.PAGE_SIZE
PAGE_MASK = mm.PAGE_MASK
_U64 = (1 << 64) - 1
_LOW_HALF = 1 << 47  # user addresses on x86_64: a range below it neither wraps nor crosses 2**48
_2MB = 2 << 20

# Map bounds. The low bound is Linux's vm.mmap_min_addr (macOS's is the end
# of __PAGEZERO, 4 GiB); the high bound is x86_64's MACH_VM_MAX_ADDRESS.
MAP_MIN = mm.MMAP_MIN_ADDR
MAP_MAX = V.MACH_VM_MAX_ADDRESS

# Copies this small go through a kernel buffer in XNU, where a fault on an
# unreadable or unwritable page reads as KERN_INVALID_ADDRESS rather than
# KERN_PROTECTION_FAILURE (msg_ool_size_small, x86_64).
OOL_SIZE_SMALL = 16384

_PROT_VALID = V.VM_PROT_ALL | V.VM_PROT_COPY


def _fail(kr: int, what: str) -> K.MachError:
    return K.MachError(kr, what)


# -- name translation (the convert_port_to_* of MIG) ---------------------------

def task_map(name: int, flavor: int = TASK_FLAVOR_CONTROL) -> VmMap:
    """The VM map behind a task name, through a port of ``flavor`` or
    stronger. MACH_SEND_INVALID_DEST when the name denotes nothing;
    KERN_INVALID_ARGUMENT when it is not a task with a map pymach can
    operate on, or a weaker port."""
    s = SELF
    if name == s.task_name:
        return s.map
    obj = task_of(name, flavor=flavor)  # MACH_SEND_INVALID_DEST for nothing or a dead task
    if obj.map is None:
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
    With VM_FLAGS_ANYWHERE the input address is ignored, as in XNU
    (mach_vm_allocate searches from the bottom of the map).

    In XNU's order: KERN_INVALID_ARGUMENT (flags outside
    VM_FLAGS_USER_ALLOCATE), KERN_NOT_SUPPORTED (VM_FLAGS_TPRO without a
    superpage: refused before anything is done), KERN_INVALID_ARGUMENT (a
    size that rounds to 0), KERN_INVALID_ADDRESS (a FIXED range that
    wraps), then as _enter_anonymous, MACH_SEND_INVALID_DEST."""
    vm_map = SELF.map if task == SELF.task_name else task_target(task)
    if flags == V.VM_FLAGS_ANYWHERE and 0 < size <= MAP_MAX - MAP_MIN:
        return vm_map.allocate(0, (size + PAGE_MASK) & ~PAGE_MASK, True, False, 0)
    flags &= 0xFFFFFFFF  # an int in C: tags of 128 and up set the sign bit
    if flags & ~V.VM_FLAGS_USER_ALLOCATE:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"flags {flags:#x}")
    if size == 0:
        return 0
    if flags & V.VM_FLAGS_TPRO and not flags & V.VM_FLAGS_SUPERPAGE_MASK:
        raise _fail(K.KERN_NOT_SUPPORTED, "TPRO memory has no Linux equivalent")
    if _round(size) > _U64:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"size {size:#x} rounds to 0")
    start = 0
    if not flags & V.VM_FLAGS_ANYWHERE:
        start = _trunc(addr)
        if addr > _U64 or start + _round(size) > _U64:
            raise _fail(K.KERN_INVALID_ADDRESS, f"[{addr:#x}, +{size:#x}) wraps around the address space")
    return _enter_anonymous(vm_map, start, _round(size), 0, flags, V.VM_PROT_DEFAULT, V.VM_PROT_ALL,
                            V.VM_INHERIT_DEFAULT)


def _enter_anonymous(vm_map: VmMap | ForeignMap, start: int, length: int, mask: int, flags: int, cur: int, max_prot: int,
                     inheritance: int) -> int:
    """vm_map_enter without an object: fresh zero-filled memory at
    ``start`` (FIXED) or first fit from the hint ``start`` (ANYWHERE).

    In vm_map_enter's order: KERN_INVALID_ARGUMENT (a bad superpage size
    or size), KERN_PROTECTION_FAILURE (VM_FLAGS_TPRO without read and
    write in max or read in cur), KERN_INVALID_ARGUMENT (a purgeable
    object larger than ANON_MAX_SIZE), then the placement: KERN_NO_SPACE (no room; a FIXED address
    against the mask, 2 MiB for superpages; a FIXED range in use, or
    holding a permanent entry with OVERWRITE), KERN_INVALID_ADDRESS (a
    FIXED range outside the map); then KERN_INVALID_ARGUMENT (a superpage
    that is also purgeable or TPRO) and KERN_NOT_SUPPORTED (VM_FLAGS_TPRO:
    no Linux equivalent)."""
    anywhere = bool(flags & V.VM_FLAGS_ANYWHERE)
    superpage = flags & V.VM_FLAGS_SUPERPAGE_MASK
    if superpage:
        length, mask = _superpage(flags, length)  # the superpage size replaces the mask
    if flags & V.VM_FLAGS_TPRO and (max_prot & (V.VM_PROT_READ | V.VM_PROT_WRITE)
                                    != V.VM_PROT_READ | V.VM_PROT_WRITE or not cur & V.VM_PROT_READ):
        raise _fail(K.KERN_PROTECTION_FAILURE, "TPRO memory must be readable and writable")
    if flags & V.VM_FLAGS_PURGABLE and length > ANON_MAX_SIZE:
        raise _fail(K.KERN_INVALID_ARGUMENT, "a purgeable object is at most ANON_MAX_SIZE")
    # (vm_map_is_map_size_valid sets no limit on x86_64: a size too large
    # for the map fails in the placement)
    if anywhere:
        mask = _anywhere_mask(mask)
        if flags & V.VM_FLAGS_RANDOM_ADDR and length < MAP_MAX - MAP_MIN:
            start = _trunc(int.from_bytes(os.urandom(6), "little") % (MAP_MAX - length - MAP_MIN) + MAP_MIN)
    else:
        if start & mask:
            raise _fail(K.KERN_NO_SPACE, f"{start:#x} is not aligned to mask {mask:#x}")
        if start < MAP_MIN or start + length > MAP_MAX:
            raise _fail(K.KERN_INVALID_ADDRESS, f"{start:#x}-{start + length:#x} is outside the map")
    refuse = None
    if superpage and flags & (V.VM_FLAGS_PURGABLE | V.VM_FLAGS_TPRO):
        refuse = _fail(K.KERN_INVALID_ARGUMENT, "a superpage cannot be purgeable or TPRO")
    elif flags & V.VM_FLAGS_TPRO:
        refuse = _fail(K.KERN_NOT_SUPPORTED, "TPRO memory has no Linux equivalent")
    overwrite = bool(flags & V.VM_FLAGS_OVERWRITE) and not anywhere
    tag, permanent = V.VM_GET_FLAGS_ALIAS(flags), bool(flags & V.VM_FLAGS_PERMANENT)
    if isinstance(vm_map, ForeignMap):
        if refuse is not None:
            raise refuse
        a = vm_map.allocate(start, length, anywhere, overwrite, tag, mask, permanent)
    else:
        a = vm_map.allocate(start, length, anywhere, overwrite, tag, mask, permanent, refuse)
    try:
        if cur != V.VM_PROT_DEFAULT or max_prot != V.VM_PROT_ALL:
            vm_map.protect(a, a + length, True, max_prot)
            vm_map.protect(a, a + length, False, cur)
        if inheritance != V.VM_INHERIT_DEFAULT:
            vm_map.inherit(a, a + length, inheritance)
        if superpage:
            vm_map.behavior_hugepage(a, a + length)
        if flags & V.VM_FLAGS_PURGABLE and isinstance(vm_map, VmMap):
            PG.make_purgable(vm_map, a, a + length)
    except BaseException:
        vm_map.deallocate(a, a + length)
        raise
    return a


def vm_deallocate(task: int, addr: int, size: int) -> None:
    """Unmap the pages of [addr, addr + size). Holes are not an error, and a
    range reaching outside the map removes nothing (as XNU does).

    KERN_INVALID_ARGUMENT (a wrapping range), MACH_SEND_INVALID_DEST."""
    vm_map = SELF.map if task == SELF.task_name else task_target(task)
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
    vm_map = SELF.map if task == SELF.task_name else task_target(task)
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
    vm_map = task_target(task)
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


def _check_source(vm_map: VmMap | ForeignMap, addr: int, size: int) -> None:
    """XNU copies the source in before it places the copy: a source in a
    hole must fail even where the copy would have been placed.

    Conditions: nothing locked; takes the map's lock."""
    if isinstance(vm_map, VmMap):
        with vm_map.lock:
            try:
                vm_map.check_range(_trunc(addr), _round(addr + size), V.VM_PROT_READ)
            except K.MachError as err:
                raise _small_fault(err, size, addr) from None


def vm_read(task: int, addr: int, size: int) -> tuple[int, int]:
    """Copy a range into fresh memory of ours: (address of the data, count).
    Free the copy with vm_deallocate.

    KERN_INVALID_ARGUMENT (count past 32 bits), KERN_INVALID_ADDRESS
    (unmapped, wrapping, or small and unreadable), KERN_PROTECTION_FAILURE
    (large and unreadable), KERN_NO_SPACE, MACH_SEND_INVALID_DEST (no
    such name, or the task's process exited)."""
    vm_map = task_target(task, flavor=TASK_FLAVOR_READ)  # vm_map_read_t
    if size > 0xFFFFFFFF:
        raise _fail(K.KERN_INVALID_ARGUMENT, "the count is 32 bits")
    if size == 0:
        return 0, 0
    start, end = user_range(addr, size)
    # small copies come out page-aligned; large ones keep the in-page offset
    off = 0 if size <= OOL_SIZE_SMALL else addr - start
    _check_source(vm_map, addr, size)
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
    MACH_SEND_INVALID_DEST.

    Conditions: nothing locked; takes the space's lock (task_target) and the
    map's lock (read_into, check_range)."""
    s = SELF
    if task != s.task_name and 0 < size and addr + size <= _LOW_HALF and data + size <= _LOW_HALF:
        # the common case, in few steps: another live task, a whole copy
        e = s.space.lookup(task)
        t = e.object if e is not None else None
        if type(t) is Task and t.view is not None and t.flavor <= TASK_FLAVOR_READ:  # (a port that may read)
            try:
                n = mm.process_vm_readv(t.pid, data, addr, size)
            except OSError:
                n = -1
            if n == size and not t.exited():  # the pid named our process for the whole copy
                return size
            # anything else: the general path below finds the right code
    vm_map = task_target(task, check=False, flavor=TASK_FLAVOR_READ)  # the copy asks afterwards
    if size == 0:
        return 0
    user_range(addr, size)
    user_range(data, size)
    try:
        try:
            vm_map.read_into(addr, data, size)
        except K.MachError:
            if isinstance(vm_map, ForeignMap):
                # our own buffer may be what faulted: it is named first
                with SELF.map.lock:
                    SELF.map.check_range(*_range(data, size, K.KERN_INVALID_ADDRESS), V.VM_PROT_WRITE)
            raise
    except K.MachError as err:
        raise _small_fault(err, size, addr) from None
    return size


def vm_write(task: int, addr: int, data: int, count: int) -> None:
    """Copy ``count`` bytes from our ``data`` to ``addr`` in the task.

    MACH_SEND_INVALID_MEMORY (our source is unreadable: the message carrying
    it could not be sent), KERN_INVALID_ADDRESS, KERN_PROTECTION_FAILURE
    (large copies), MACH_SEND_INVALID_DEST.

    Conditions: nothing locked; takes the space's lock (task_target) and the
    map's lock (our source's range, then read_into)."""
    vm_map = task_target(task)
    if count == 0:
        return
    if count > 0xFFFFFFFF:
        raise _fail(K.KERN_INVALID_ARGUMENT, "the count is 32 bits")
    try:
        with SELF.map.lock:
            SELF.map.check_range(*_range(data, count, K.MACH_SEND_INVALID_MEMORY), V.VM_PROT_READ)
    except K.MachError as err:
        raise _fail(K.MACH_SEND_INVALID_MEMORY, err.context or "") from None
    user_range(addr, count)
    try:
        if isinstance(vm_map, ForeignMap):
            vm_map.write_from(data, addr, count)
        else:
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
    vm_map = task_target(task, flavor=TASK_FLAVOR_READ)
    info = vm_map.region(_trunc(addr)) if 0 <= addr <= _U64 else None
    if info is None:
        raise _fail(K.KERN_INVALID_ADDRESS, f"no region at or above {addr:#x}")
    return info


VM_MAP_ENTRY_MAX = 256


def vm_read_list(task: int, entries: list[tuple[int, int]]) -> tuple[int, list[tuple[int, int]]]:
    """mach_vm_read_list: copy each (address, size) into fresh memory of
    ours. Returns the code of the last entry with a size (XNU's loop keeps
    only that one) and, per entry, (address of the copy, size), or (0, 0)
    for an entry that failed or had size 0.

    KERN_INVALID_ARGUMENT (more than VM_MAP_ENTRY_MAX entries, not a task),
    MACH_SEND_INVALID_DEST; per entry, the codes of vm_read."""
    vm_map = task_target(task, flavor=TASK_FLAVOR_READ)
    if len(entries) > VM_MAP_ENTRY_MAX:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"{len(entries)} entries (at most {VM_MAP_ENTRY_MAX})")
    kr = K.KERN_SUCCESS
    out: list[tuple[int, int]] = []
    for addr, size in entries:
        if size == 0:
            out.append((0, 0))
            continue
        try:
            start, end = user_range(addr, size)
            off = addr - start
            _check_source(vm_map, addr, size)
            dst = SELF.map.allocate(0, end - start, True, False, V.VM_MEMORY_MACH_MSG)
            try:
                vm_map.read_into(addr, dst + off, size)
            except BaseException:
                SELF.map.deallocate(dst, dst + end - start)
                raise
        except K.MachError as err:
            if err.kr == K.MACH_SEND_INVALID_DEST:
                raise
            kr = err.kr
            out.append((0, 0))
            continue
        kr = K.KERN_SUCCESS
        out.append((dst + off, size))
    return kr, out


def vm_region_recurse(task: int, addr: int) -> tuple[RegionInfo, tuple[int, int, int, int]]:
    """The region at or above ``addr`` for mach_vm_region_recurse (there are
    no submaps on Linux: the depth stays 0), with its page counts from
    smaps: (resident, dirtied, swapped out, shared now private).

    KERN_INVALID_ADDRESS (nothing at or above), KERN_INVALID_ARGUMENT,
    MACH_SEND_INVALID_DEST."""
    vm_map = task_target(task, flavor=TASK_FLAVOR_READ)
    info = vm_map.region(_trunc(addr)) if 0 <= addr <= _U64 else None
    if info is None:
        raise _fail(K.KERN_INVALID_ADDRESS, f"no region at or above {addr:#x}")
    vmas = vm_map.vmas(sizes=True) if isinstance(vm_map, ForeignMap) else procfs.read_smaps()
    return info, page_counts(vmas, info.start, info.end)


def vm_region_walk(task: int) -> list[tuple[RegionInfo, tuple[int, int, int, int]]]:
    """Every region of the task in order, each with its page counts as
    vm_region_recurse gives them (what vmmap prints).

    KERN_INVALID_ARGUMENT, MACH_SEND_INVALID_DEST."""
    vm_map = task_target(task, flavor=TASK_FLAVOR_READ)
    if isinstance(vm_map, ForeignMap):
        vmas = vm_map.vmas(sizes=True)
        regions = vm_map.regions()
    else:
        regions = vm_map.regions()
        vmas = procfs.read_smaps()
    return [(r, page_counts(vmas, r.start, r.end)) for r in regions]


def page_counts(vmas: list[procfs.Vma], start: int, end: int) -> tuple[int, int, int, int]:
    """(resident, dirty, swapped, private dirty) pages of [start, end), from
    the smaps sizes of the VMAs it overlaps (shared out in proportion when
    a VMA only partly overlaps)."""
    res = dirty = swap = priv = 0.0
    for v in vmas:
        lo, hi = max(start, v.start), min(end, v.end)
        if lo >= hi:
            continue
        frac = (hi - lo) / (v.end - v.start)
        f = v.fields
        res += f.get("Rss", 0) * frac
        dirty += (f.get("Private_Dirty", 0) + f.get("Shared_Dirty", 0)) * frac
        swap += f.get("Swap", 0) * frac
        priv += f.get("Private_Dirty", 0) * frac
    kb = PAGE_SIZE // 1024
    return int(res) // kb, int(dirty) // kb, int(swap) // kb, int(priv) // kb


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
    vm_map = task_map(task, TASK_FLAVOR_READ)  # vm_map_read_t
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
    if e is None or not isinstance(e.object, Task) or e.object.map is None or e.object.flavor:  # vm_map_t: control
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

# XNU's largest anonymous object on LP64: 0xFFFFFFFF pages
ANON_MAX_SIZE = 0xFFFFFFFF * PAGE_SIZE
_DATA_ADDR = V.MAP_MEM_USE_DATA_ADDR | V.MAP_MEM_4K_DATA_ADDR
_RETURN_DATA = V.VM_FLAGS_RETURN_DATA_ADDR | V.VM_FLAGS_RETURN_4K_DATA_ADDR
_MAP_PROT_VALID = V.VM_PROT_ALL | V.VM_PROT_IS_MASK
# flags a copy entry (MAP_MEM_VM_COPY, MAP_MEM_VM_SHARE) may be mapped with
_COPY_ENTRY_FLAGS = (V.VM_FLAGS_FIXED | V.VM_FLAGS_ANYWHERE | V.VM_FLAGS_OVERWRITE | _RETURN_DATA
                     | V.VM_FLAGS_ALIAS_MASK)
# the part of a mask that addresses inside the map can violate
_VA_MASK = (1 << MAP_MAX.bit_length()) - 1


def port_argument(name: int) -> object:
    """What a port argument of a kernel call denotes, as mach_msg copies it
    in with COPY_SEND: None for MACH_PORT_NULL, MACH_PORT_DEAD and dead
    names (the kernel sees no port); otherwise the right's object (a
    MemoryEntry, a SendCap, a Task, a Host). MACH_SEND_INVALID_RIGHT when
    the name denotes nothing or holds no send right.

    Conditions: nothing locked; takes the space's lock."""
    if name in (MACH_PORT_NULL, MACH_PORT_DEAD):
        return None
    space = SELF.space
    with space.lock:
        e = space.lookup(name)
        if e is None:
            raise _fail(K.MACH_SEND_INVALID_RIGHT, f"{name:#x} is not a valid name")
        R.check_dead(space, name, e)
        if e.type & MACH_PORT_TYPE_DEAD_NAME:
            return None
        if not e.type & MACH_PORT_TYPE_SEND:
            raise _fail(K.MACH_SEND_INVALID_RIGHT, f"{name:#x} holds no send right")
        return e.cap if e.cap is not None else e.object


def _entry_range(offset: int, size: int) -> tuple[int, int]:
    """[trunc(offset), round(offset + size)) of a memory entry's range; an
    empty one for size 0 (SIZE_ZERO_FALLTHROUGH). KERN_INVALID_ARGUMENT
    when offset + size carries past 2**64 or the end rounds to 0."""
    if offset < 0 or size < 0 or offset + size > _U64:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"[{offset:#x}, +{size:#x}) wraps around")
    start = _trunc(offset)
    if size == 0:
        return start, start
    end = _round(offset + size)
    if end > _U64 or end <= start:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"[{offset:#x}, +{size:#x}) rounds past the end")
    return start, end


def _data_offset(offset: int, start: int, permission: int) -> int:
    """Where the data starts in the first page, with MAP_MEM_USE_DATA_ADDR
    (or its 4 KiB variant); 0 otherwise."""
    if not permission & _DATA_ADDR:
        return 0
    off = offset - start
    return off & ~0xFFF if permission & V.MAP_MEM_4K_DATA_ADDR else off


def _install(ent: MemoryEntry) -> int:
    try:
        return R.copyout_entry(SELF.space, ent)
    except BaseException:
        ent.close()
        raise


def vm_make_memory_entry(task: int, size: int, offset: int, permission: int, parent: int) -> tuple[int, int]:
    """mach_make_memory_entry_64: a memory entry for [offset, offset + size)
    of our map (the share path, MAP_MEM_VM_SHARE, MAP_MEM_VM_COPY), of a
    parent entry, or of a fresh object (MAP_MEM_NAMED_CREATE). Returns
    (name, *size). Each call makes a new entry with a new name, except
    MAP_MEM_NAMED_REUSE with a matching parent, which returns the parent's
    name with one more user reference; MAP_MEM_ONLY and NAMED_CREATE of
    size 0 return MACH_PORT_NULL.

    In XNU's check order: MACH_SEND_INVALID_DEST (task),
    MACH_SEND_INVALID_RIGHT (a parent name that is not a send right),
    KERN_INVALID_VALUE (unknown MAP_MEM flags), KERN_INVALID_ARGUMENT (a
    copy parent, size 0, a wrapping range, data-address flags where not
    allowed, MAP_MEM_ONLY without a parent, MAP_MEM_PURGABLE without
    VM_PROT_WRITE, a range past the parent), KERN_INVALID_RIGHT
    (MAP_MEM_ONLY changing the cache mode of a read-only parent),
    KERN_FAILURE (NAMED_CREATE larger than ANON_MAX_SIZE),
    KERN_INVALID_ADDRESS (unmapped; a hole with VM_SHARE or VM_COPY),
    KERN_PROTECTION_FAILURE (more than the region's current or maximum
    protection, or the parent's; nothing left with VM_PROT_IS_MASK; an
    unreadable range for VM_COPY), KERN_NOT_SUPPORTED (sharing memory
    pymach did not map; VM_SHARE over entries on different objects)."""
    vm_map = task_map(task)
    parent_obj = port_argument(parent)
    permission &= 0xFFFFFFFF
    if permission & V.MAP_MEM_FLAGS_MASK & ~V.MAP_MEM_FLAGS_USER:
        raise _fail(K.KERN_INVALID_VALUE, f"permission flags {permission & V.MAP_MEM_FLAGS_MASK:#x}")
    # vm_sanitize_memory_entry_perm: other protection bits are dropped
    permission &= ~V.MAP_MEM_PROT_MASK | V.VM_PROT_ALL | V.VM_PROT_IS_MASK
    pe = parent_obj if isinstance(parent_obj, MemoryEntry) else None  # other ports are ignored
    if pe is not None and pe.is_copy:
        raise _fail(K.KERN_INVALID_ARGUMENT, "a copy entry cannot be a parent")
    prot = permission & V.VM_PROT_ALL
    is_mask = bool(permission & V.VM_PROT_IS_MASK)
    access = V.GET_MAP_MEM(permission)
    data_addr = permission & _DATA_ADDR

    if permission & V.MAP_MEM_ONLY:
        _entry_range(offset, size)
        if data_addr or pe is None:
            raise _fail(K.KERN_INVALID_ARGUMENT, "MAP_MEM_ONLY needs a parent entry")
        if access != pe.access and not pe.protection & V.VM_PROT_WRITE:
            raise _fail(K.KERN_INVALID_RIGHT, "the parent entry is read-only")
        if access:
            pe.access = access
        return MACH_PORT_NULL, size  # XNU leaves *size as it was

    if permission & V.MAP_MEM_NAMED_CREATE:
        if size == 0:
            return MACH_PORT_NULL, 0
        start, end = _entry_range(offset, size)
        if data_addr:
            raise _fail(K.KERN_INVALID_ARGUMENT, "NAMED_CREATE takes no data address")
        if end - start > ANON_MAX_SIZE:
            raise _fail(K.KERN_FAILURE, f"size {end - start:#x} exceeds ANON_MAX_SIZE")
        purgable = bool(permission & V.MAP_MEM_PURGABLE)
        if purgable and not prot & V.VM_PROT_WRITE:
            raise _fail(K.KERN_INVALID_ARGUMENT, "a purgeable object must be writable")
        return _install(MemoryEntry.named_create(end - start, prot, purgable, access)), end - start

    if permission & V.MAP_MEM_VM_COPY:
        if size == 0:
            raise _fail(K.KERN_INVALID_ARGUMENT, "size 0")
        start, end = _entry_range(offset, size)
        dofs = _data_offset(offset, start, permission)
        parts = vm_map.parts_of(start, end)
        fd = vm_map.snapshot(start, end)
        try:
            ent = MemoryEntry.of_object(fd, 0, end - start, prot, is_copy=True, data_offset=dofs, parts=parts)
        finally:
            files.close(fd)
        return _install(ent), end - start - dofs

    if permission & (V.MAP_MEM_VM_SHARE | V.MAP_MEM_NAMED_REUSE) or pe is None:
        if size == 0:
            raise _fail(K.KERN_INVALID_ARGUMENT, "size 0")
        start, end = _entry_range(offset, size)
        dofs = _data_offset(offset, start, permission)
        whole = bool(permission & V.MAP_MEM_VM_SHARE)
        fd, obj_offset, length, prot = vm_map.share_range(start, end, prot, is_mask, whole)
        try:
            if (not whole and permission & V.MAP_MEM_NAMED_REUSE and pe is not None
                    and pe.ino == files.inode(fd) and pe.offset == obj_offset == 0
                    and pe.size == length and pe.data_offset == dofs):
                # the parent names exactly this: another send right to it
                R.mod_refs(SELF.space, parent, MACH_PORT_RIGHT_SEND, 1)
                return parent, pe.size - pe.data_offset
            ent = MemoryEntry.of_object(fd, obj_offset, length, prot, is_copy=whole, data_offset=dofs,
                                        access=access, parts=vm_map.parts_of(start, end) if whole else ())
        finally:
            files.close(fd)
        return _install(ent), length - dofs

    # a sub-entry of the parent: the offset is relative to it
    assert pe is not None
    if data_addr:
        offset += pe.data_offset
    if offset < 0 or size < 0 or offset + size > _U64:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"[{offset:#x}, +{size:#x}) wraps around")
    start = _trunc(offset)
    end = _round(offset + size)
    if size and (end > _U64 or end <= start):
        raise _fail(K.KERN_INVALID_ARGUMENT, f"[{offset:#x}, +{size:#x}) rounds past the end")
    if end > pe.size:
        raise _fail(K.KERN_INVALID_ARGUMENT, "the range runs past the parent entry")
    if is_mask:
        prot &= pe.protection
    if prot & ~pe.protection:
        raise _fail(K.KERN_PROTECTION_FAILURE, "more access than the parent entry allows")
    dofs = _data_offset(offset, start, permission)
    return _install(pe.sub(start, end - start, prot, dofs, access)), end - start - dofs


def memory_object_memory_entry(host: int, internal: int, size: int, permission: int, pager: int) -> int:
    """mach_memory_object_memory_entry_64: a memory entry for a new object
    of ``size`` bytes (rounded to pages), with the protection and cache
    mode of ``permission`` (its other bits are ignored). From user space
    every pager port converts to MEMORY_OBJECT_NULL (XNU's
    convert_port_to_memory_object), so only ``internal`` TRUE makes an
    object: an anonymous, zero-filled one. Returns the entry's name.

    In XNU's order: MACH_SEND_INVALID_DEST (``host`` names nothing),
    MACH_SEND_INVALID_RIGHT (``pager`` names no send right),
    KERN_INVALID_HOST (not a host port), KERN_INVALID_ARGUMENT (size 0 or
    rounding past 2**64; ``internal`` FALSE: no object)."""
    e = SELF.space.lookup(host)
    if e is None:
        raise _fail(K.MACH_SEND_INVALID_DEST, f"{host:#x} is not a valid name")
    port_argument(pager)  # copied in by MIG, then converted to MEMORY_OBJECT_NULL
    if not isinstance(e.object, Host):
        raise _fail(K.KERN_INVALID_HOST, f"{host:#x} is not a host port")
    if size == 0:
        raise _fail(K.KERN_INVALID_ARGUMENT, "size 0")
    length = _round(size)
    if length > _U64:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"size {size:#x} rounds to 0")
    if not internal:
        raise _fail(K.KERN_INVALID_ARGUMENT, "no memory object: a pager port names none from user space")
    prot = permission & V.VM_PROT_ALL
    return _install(MemoryEntry.named_create(length, prot, False, V.GET_MAP_MEM(permission & 0xFFFFFFFF)))


def vm_purgable_control(task: int, addr: int, control: int, state: int) -> int:
    """mach_vm_purgable_control: set or get the state of the purgeable
    object mapped at ``addr``, or empty every volatile one (PURGE_ALL).
    Returns the state to give back (see vm_purgable.vm_purgable_control).

    MACH_SEND_INVALID_DEST (``task`` names nothing), KERN_INVALID_ARGUMENT
    (not a task; then as vm_purgable.vm_purgable_control),
    KERN_INVALID_ADDRESS, KERN_PROTECTION_FAILURE, KERN_NOT_SUPPORTED
    (another task: its objects' states are kept by its own runtime)."""
    vm_map = task_target(task)
    if not isinstance(vm_map, VmMap):
        raise _fail(K.KERN_NOT_SUPPORTED, "purgeable control of another task's memory")
    return PG.vm_purgable_control(vm_map, addr, control, state)


def _anywhere_mask(mask: int) -> int:
    """The alignment mask of an ANYWHERE placement as a low run of bits:
    bits above the map are met by every address in it. (A mask too large
    for the map fails to place: KERN_NO_SPACE.)"""
    m = mask & _VA_MASK
    for shift in (1, 2, 4, 8, 16, 32):
        m |= m >> shift
    return m


def _superpage(flags: int, length: int) -> tuple[int, int]:
    """(length, alignment mask) for the superpage bits of ``flags``.
    KERN_INVALID_ARGUMENT for a bad superpage size."""
    superpage = flags & V.VM_FLAGS_SUPERPAGE_MASK
    if superpage == V.VM_FLAGS_SUPERPAGE_SIZE_ANY:
        return (length + _2MB - 1) & ~(_2MB - 1), _2MB - 1
    if superpage == V.VM_FLAGS_SUPERPAGE_SIZE_2MB:
        if length & (_2MB - 1):
            raise _fail(K.KERN_INVALID_ARGUMENT, "superpage size is not a multiple of 2 MiB")
        return length, _2MB - 1
    if superpage:
        raise _fail(K.KERN_INVALID_ARGUMENT, "unknown superpage size")
    return length, 0


def vm_map_enter_mem_object(task: int, addr: int, size: int, mask: int, flags: int, name: int, offset: int,
                 copy: int, cur: int, max_prot: int, inheritance: int) -> int:
    """mach_vm_map: map what a memory entry names, shared (copy FALSE) or
    as a private snapshot taken now (copy TRUE); with MACH_PORT_NULL (or a
    dead name), fresh zero-filled memory. A copy entry is mapped whole.
    With VM_FLAGS_ANYWHERE the address is a hint: the search starts there
    (first fit). Returns the address (plus the data offset with
    VM_FLAGS_RETURN_DATA_ADDR).

    In XNU's check order: MACH_SEND_INVALID_DEST (task),
    MACH_SEND_INVALID_RIGHT (an object name that is not a send right),
    KERN_INVALID_ARGUMENT (flags outside VM_FLAGS_USER_MAP, protection bits
    outside R|W|X|VM_PROT_IS_MASK, an inheritance above VM_INHERIT_NONE,
    size 0, a range or offset that wraps), KERN_INVALID_OBJECT (a port
    that is no memory entry), KERN_INVALID_RIGHT (cur or max beyond the
    entry's protection, copy TRUE too), KERN_INVALID_ARGUMENT (a range past
    the entry, flags a copy entry refuses, superpages, an unaligned offset
    without RETURN_DATA_ADDR, VM_FLAGS_PURGABLE on a non-purgeable or
    partial object), KERN_NOT_SUPPORTED (VM_FLAGS_TPRO), KERN_NO_SPACE (no
    room at or above the hint, a FIXED address against ``mask`` or taken,
    or an OVERWRITE range holding a permanent entry, which is left without
    access), KERN_INVALID_ADDRESS (a FIXED range outside the map); without
    an object, the codes of _enter_anonymous instead of these last ones.
    cur beyond max is cur &= max (XNU's compatibility rewrite)."""
    vm_map = task_target(task)
    obj = port_argument(name)
    flags &= 0xFFFFFFFF
    if flags & ~V.VM_FLAGS_USER_MAP:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"flags {flags:#x}")
    if cur & ~_MAP_PROT_VALID or max_prot & ~_MAP_PROT_VALID:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"protections {cur:#x}/{max_prot:#x}")
    if cur & ~max_prot & V.VM_PROT_ALL:
        cur &= max_prot  # vm_sanitize_err_compat_cur_and_max_prots_vm_map
    if not 0 <= inheritance <= V.VM_INHERIT_LAST_VALID:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"inheritance {inheritance}")
    anywhere = bool(flags & V.VM_FLAGS_ANYWHERE)
    if size == 0:
        raise _fail(K.KERN_INVALID_ARGUMENT, "size 0")
    start = 0 if anywhere else _trunc(addr)
    if start + size > _U64 or _round(start + size) > _U64:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"size {size:#x} wraps around")
    length = _round(start + size) - start
    if obj is not None and (offset + length > _U64 or _round(offset + length) > _U64):
        raise _fail(K.KERN_INVALID_ARGUMENT, f"offset {offset:#x} wraps around")
    if obj is not None and not isinstance(obj, MemoryEntry):
        raise _fail(K.KERN_INVALID_OBJECT, f"{name:#x} is not a memory entry")
    cur_mask, max_mask = cur & V.VM_PROT_IS_MASK, max_prot & V.VM_PROT_IS_MASK
    cur &= V.VM_PROT_ALL
    max_prot &= V.VM_PROT_ALL
    in_mapping = 0
    if obj is None:
        fd = -1
        offset = 0
    else:
        ent = obj
        if flags & _RETURN_DATA:
            offset += ent.data_offset
            if offset + length > _U64:
                raise _fail(K.KERN_INVALID_ARGUMENT, f"offset {offset:#x} wraps around")
        if max_mask:
            max_prot &= ent.protection
        if cur_mask:
            cur &= ent.protection
        if max_prot & ~ent.protection:
            raise _fail(K.KERN_INVALID_RIGHT, "max_protection exceeds the memory entry's")
        if cur & ~ent.protection:
            raise _fail(K.KERN_INVALID_RIGHT, "cur_protection exceeds the memory entry's")
        if ent.size < offset + size:
            raise _fail(K.KERN_INVALID_ARGUMENT, "the range runs past the memory entry")
        if flags & _RETURN_DATA:
            in_mapping = offset & PAGE_MASK
            if flags & V.VM_FLAGS_RETURN_4K_DATA_ADDR:
                in_mapping &= ~0xFFF
        if ent.is_copy:
            if flags & ~_COPY_ENTRY_FLAGS:
                raise _fail(K.KERN_INVALID_ARGUMENT, f"flags {flags:#x} for a copy entry")
            offset, length = 0, ent.size  # a copy is mapped whole
        else:
            if flags & V.VM_FLAGS_SUPERPAGE_MASK:
                raise _fail(K.KERN_INVALID_ARGUMENT, "superpages cannot map an object")
            if in_mapping:
                offset -= in_mapping
                length = _round(size + in_mapping)
            if offset & PAGE_MASK:
                raise _fail(K.KERN_INVALID_ARGUMENT, f"offset {offset:#x} is not page aligned")
            if flags & V.VM_FLAGS_PURGABLE and not (ent.purgable and offset == 0 and ent.offset == 0
                                                    and length == files.size(ent.fd)):
                raise _fail(K.KERN_INVALID_ARGUMENT, "VM_FLAGS_PURGABLE needs a whole purgeable object")
        fd = ent.fd
        offset += ent.offset
    # ANYWHERE: the address is where the search starts (vm_sanitize_addr)
    hint = _trunc(addr) if anywhere and 0 <= addr <= _U64 else start
    if obj is None:
        return _enter_anonymous(vm_map, hint, length, mask, flags, cur, max_prot, inheritance)
    if flags & V.VM_FLAGS_TPRO:
        raise _fail(K.KERN_NOT_SUPPORTED, "TPRO memory has no Linux equivalent")
    if anywhere:
        if length > MAP_MAX - MAP_MIN:
            raise _fail(K.KERN_NO_SPACE, f"size {size:#x} exceeds the address space")
        mask = _anywhere_mask(mask)
    else:
        if start & mask:
            raise _fail(K.KERN_NO_SPACE, f"{start:#x} is not aligned to mask {mask:#x}")
        if start < MAP_MIN or start + length > MAP_MAX:
            raise _fail(K.KERN_INVALID_ADDRESS, f"{start:#x}-{start + length:#x} is outside the map")
        mask = 0
    overwrite = bool(flags & V.VM_FLAGS_OVERWRITE) and not anywhere
    tag = V.VM_GET_FLAGS_ALIAS(flags)
    permanent = bool(flags & V.VM_FLAGS_PERMANENT)
    if isinstance(obj, MemoryEntry) and obj.parts and isinstance(vm_map, VmMap):
        # a copy entry made over several map entries maps back as them
        a = vm_map.map_object(hint, length, mask, anywhere, overwrite, fd, offset, bool(copy), cur, max_prot,
                              inheritance, tag, permanent, obj.parts)
        return a + in_mapping
    a = vm_map.map_object(hint, length, mask, anywhere, overwrite, fd, offset, bool(copy), cur, max_prot,
                          inheritance, tag, permanent)
    if isinstance(obj, MemoryEntry) and obj.purgable and not copy and isinstance(vm_map, VmMap):
        PG.make_purgable(vm_map, a, a + length)  # the entry's object is purgeable wherever it is mapped
    return a + in_mapping


def _remap_args(task: int, size: int, mask: int, flags: int, src_task: int, src: int, copy: int,
                inheritance: int, cur_max: tuple[int, int] | None) -> tuple[VmMap, int, int, int, Task]:
    """The checks mach_vm_remap and mach_vm_remap_new share, in XNU's
    order. Returns (map, start, end, mask, source task). Another task is
    a source only for mach_vm_remap_new with a copy or a maximum of
    VM_PROT_NONE (ForeignMap.remap_into)."""
    vm_map = task_map(task)
    src_obj = port_argument(src_task)
    flags &= 0xFFFFFFFF
    if flags & ~V.VM_FLAGS_USER_REMAP:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"flags {flags:#x}")
    if cur_max is not None:
        cur, max_prot = cur_max
        if cur & ~V.VM_PROT_ALL or max_prot & ~V.VM_PROT_ALL or cur & ~max_prot:
            raise _fail(K.KERN_INVALID_ARGUMENT, f"protections {cur:#x}/{max_prot:#x}")
        if max_prot & (V.VM_PROT_WRITE | V.VM_PROT_EXECUTE) == V.VM_PROT_WRITE | V.VM_PROT_EXECUTE:
            raise _fail(K.KERN_PROTECTION_FAILURE, "max_protection is both writable and executable")
    if isinstance(src_obj, Task) and not src_obj.allows(
            TASK_FLAVOR_READ if cur_max is not None and (copy or cur_max[1] in (V.VM_PROT_READ, V.VM_PROT_NONE))
            else TASK_FLAVOR_CONTROL):
        # mach_vm_remap_new converts src_task with convert_port_to_map_read
        # for a copy or a maximum of READ or NONE, else (and mach_vm_remap
        # always) with convert_port_to_map: a weaker port is VM_MAP_NULL
        raise _fail(K.KERN_INVALID_ARGUMENT, f"{src_task:#x}: a task port too weak for this remap")
    if not isinstance(src_obj, Task) or src_obj.map is None:
        if not isinstance(src_obj, Task):
            raise _fail(K.KERN_INVALID_ARGUMENT, f"{src_task:#x} is not a task")
        if cur_max is None or not (copy or cur_max[1] == V.VM_PROT_NONE):
            raise _fail(K.KERN_NOT_SUPPORTED, "sharing memory of another task")
    elif src_obj.map is not vm_map:
        raise _fail(K.KERN_NOT_SUPPORTED, "remapping into another task")
    if not 0 <= inheritance <= V.VM_INHERIT_LAST_VALID:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"inheritance {inheritance}")
    if size == 0:
        raise _fail(K.KERN_INVALID_ARGUMENT, "size 0")
    start = _trunc(src)
    # without RETURN_DATA_ADDR XNU realigns the start and keeps the size:
    # [trunc(src), trunc(src) + round(size)) may miss the last page
    first = src if flags & V.VM_FLAGS_RETURN_DATA_ADDR else start
    if src < 0 or size < 0 or first + size > _U64 or _round(first + size) > _U64:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"[{src:#x}, +{size:#x}) wraps around")
    end = _round(first + size)
    if flags & V.VM_FLAGS_RESILIENT_MEDIA and not copy:
        raise _fail(K.KERN_INVALID_ARGUMENT, "RESILIENT_MEDIA needs a copy")
    return vm_map, start, end, _anywhere_mask(mask) if flags & V.VM_FLAGS_ANYWHERE else mask, src_obj


def vm_remap(task: int, addr: int, size: int, mask: int, flags: int, src_task: int, src: int, copy: int,
             inheritance: int) -> tuple[int, int, int]:
    """mach_vm_remap (legacy) within our own task: the pages of the source
    range mapped a second time (copy FALSE) or a snapshot of them (copy
    TRUE); each new entry keeps its source's protections. With
    VM_FLAGS_ANYWHERE the address is a hint, as for mach_vm_map. Returns
    (address, cur, max): cur and max are the AND over the source entries.
    The range is [trunc(src), trunc(src) + round(size)), or with
    VM_FLAGS_RETURN_DATA_ADDR [trunc(src), round(src + size)) and the
    address returned points at src's byte.

    In XNU's check order: MACH_SEND_INVALID_DEST (task),
    MACH_SEND_INVALID_RIGHT (a src_task name that is not a send right),
    KERN_INVALID_ARGUMENT (flags outside VM_FLAGS_USER_REMAP, tags
    included; src_task not a task; an inheritance above VM_INHERIT_NONE;
    size 0 or a wrapping range; RESILIENT_MEDIA without copy),
    KERN_NOT_SUPPORTED (another task), KERN_INVALID_ADDRESS (a hole in the
    source), KERN_NOT_SUPPORTED (copy FALSE of anonymous memory pymach did
    not map, or of a private file mapping of others that is writable or
    written: vm_map.VmMap.remap), KERN_PROTECTION_FAILURE (copy TRUE of
    unreadable memory pymach did not
    map), KERN_NO_SPACE (no room; a FIXED target taken or against
    ``mask``), KERN_INVALID_ADDRESS (a FIXED target outside the map)."""
    vm_map, start, end, mask, _src = _remap_args(task, size, mask, flags, src_task, src, copy, inheritance, None)
    anywhere = bool(flags & V.VM_FLAGS_ANYWHERE)
    target = _trunc(addr)  # ANYWHERE: where the search starts
    a, cur, max_prot = vm_map.remap(target, end - start, mask, anywhere, bool(flags & V.VM_FLAGS_OVERWRITE),
                                    start, bool(copy), inheritance, (MAP_MIN, MAP_MAX),
                                    codesign=bool(flags & V.VM_FLAGS_RESILIENT_CODESIGN))
    return a + (src - start if flags & V.VM_FLAGS_RETURN_DATA_ADDR else 0), cur, max_prot


def vm_remap_new(task: int, addr: int, size: int, mask: int, flags: int, src_task: int, src: int, copy: int,
                 cur: int, max_prot: int, inheritance: int) -> tuple[int, int, int]:
    """mach_vm_remap_new within our own task: as vm_remap, but every new
    entry gets exactly ``cur``/``max_prot`` (even more than the source, for
    a copy), and the address returned always points at src's byte
    (VM_FLAGS_RETURN_DATA_ADDR). Returns (address, cur, max): the
    protections asked for (R/R with VM_FLAGS_RESILIENT_CODESIGN).

    In XNU's check order: MACH_SEND_INVALID_DEST, MACH_SEND_INVALID_RIGHT,
    KERN_INVALID_ARGUMENT (flags; protection bits outside R|W|X; cur not
    within max), KERN_PROTECTION_FAILURE (max both writable and
    executable), then as vm_remap, with KERN_PROTECTION_FAILURE after the
    hole check: copy FALSE and a source entry whose current or maximum
    protection lacks cur or max; copy TRUE and one without maximum
    VM_PROT_READ.

    ``src_task`` is converted as XNU converts it: with a copy or a maximum
    of VM_PROT_READ or VM_PROT_NONE a read port will do, else it takes a
    control port (a weaker one is KERN_INVALID_ARGUMENT). Another task is a
    source for a copy, or for a mapping whose maximum is VM_PROT_NONE
    (ForeignMap.remap_into); sharing another task's memory with any access
    is KERN_NOT_SUPPORTED."""
    flags = (flags & 0xFFFFFFFF) | V.VM_FLAGS_RETURN_DATA_ADDR
    vm_map, start, end, mask, src_obj = _remap_args(task, size, mask, flags, src_task, src, copy, inheritance,
                                                    (cur, max_prot))
    anywhere = bool(flags & V.VM_FLAGS_ANYWHERE)
    target = _trunc(addr)  # ANYWHERE: where the search starts
    if src_obj.map is None:  # another task: a copy, or a mapping without access (ForeignMap.remap_into)
        fm = task_target(src_task, flavor=TASK_FLAVOR_READ)
        assert isinstance(fm, ForeignMap)
        a = fm.remap_into(vm_map, target, start, end, mask if anywhere else 0, anywhere,
                          bool(flags & V.VM_FLAGS_OVERWRITE), bool(copy), cur, max_prot, inheritance)
        return a + (src - start), cur, max_prot
    codesign = bool(flags & V.VM_FLAGS_RESILIENT_CODESIGN)
    a, cur_out, max_out = vm_map.remap(target, end - start, mask, anywhere, bool(flags & V.VM_FLAGS_OVERWRITE),
                                       start, bool(copy), inheritance, (MAP_MIN, MAP_MAX), (cur, max_prot),
                                       codesign)
    return a + (src - start), (cur_out if codesign else cur), (max_out if codesign else max_prot)



def memory_entry_purgable_control(entry: int, control: int, state: int) -> int:
    """mach_memory_entry_purgable_control: set or get the state of the
    purgeable object that the memory entry ``entry`` names, in every task
    that maps it. Returns the state to give back.

    KERN_INVALID_ARGUMENT (``entry`` names no memory entry; then as
    vm_purgable.entry_purgable_control), KERN_PROTECTION_FAILURE,
    MACH_SEND_INVALID_RIGHT (a name that denotes nothing).

    Conditions: nothing locked; takes the space's lock for a moment."""
    ent = port_argument(entry)
    if not isinstance(ent, MemoryEntry):
        raise _fail(K.KERN_INVALID_ARGUMENT, f"{entry:#x} names no memory entry")
    return PG.entry_purgable_control(ent.fd, ent.offset, ent.size, ent.is_copy, ent.purgable, control, state)
