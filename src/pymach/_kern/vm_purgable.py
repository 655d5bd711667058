"""Purgeable memory (XNU's purgeable VM objects): vm_purgable_control.

A purgeable object is made by VM_FLAGS_PURGABLE (mach_vm_allocate,
mach_vm_map of fresh memory) or by MAP_MEM_PURGABLE (a memory entry's
object, wherever it is mapped). Its state is NONVOLATILE (its pages are
kept), VOLATILE (the kernel may empty it) or EMPTY (its pages are gone and
read as zeros); a volatile object that was emptied stays empty until it is
made nonvolatile again.

Here the object is what the map entries sharing one ``Purgable`` record
map (the pieces of a split entry share it, as XNU's entries share their
object). Its state is kept:

- for private anonymous memory, in the record;
- for memory backed by a memfd (a purgeable memory entry's object, or
  memory shared since), in the memfd's user.mach.purgable attribute too,
  so that every process mapping the object reads the same state.

Emptying is real: private pages are discarded (MADV_DONTNEED: they read
as zeros), a memfd's pages are freed (FALLOC_FL_PUNCH_HOLE: zeros in every
mapping, in every process). Wired (mlocked) private pages are kept, as XNU
keeps wired pages of a purged object.

Volatile memory is emptied when pymach empties it: SET_STATE EMPTY, or
VM_PURGABLE_PURGE_ALL. Linux's reclaim does not discard it on its own.
The nearest Linux fact, MADV_FREE, cannot be taken back safely: only a
write cancels it, and a write to a page the kernel has discarded makes a
new zero page that /proc/self/pagemap cannot tell from the old one (its
frame number is hidden without CAP_SYS_ADMIN, and a freed frame can come
back; the soft-dirty bit exists only with CONFIG_MEM_SOFT_DIRTY), so
pymach could not then say truthfully whether the object is still whole.
docs/deviations.md says so.
"""

from __future__ import annotations

from .._linux import files, memfd, mm, procfs
from . import kern_return as K
from . import vm_defs as V
from .vm_map import VmEntry, VmMap

_ATTR = "user.mach.purgable"
_PAGE_MASK = mm.PAGE_MASK
_EINVAL = 22


class Purgable:
    """One purgeable object's state (for its private memory)."""

    __slots__ = ("state", "volatile_empty")

    def __init__(self) -> None:
        self.state = V.VM_PURGABLE_NONVOLATILE
        self.volatile_empty = False  # VM_PURGABLE_DEBUG_EMPTY: volatile means empty

    def __repr__(self) -> str:
        return f"<Purgable state={self.state}>"


def make_purgable(vm_map: VmMap, start: int, end: int) -> None:
    """Make the entries of [start, end) one purgeable object, nonvolatile.
    A memfd that already carries a state (a purgeable memory entry's
    object mapped again) keeps it.

    Conditions: the map's lock is not held by this thread; takes it."""
    p = Purgable()
    with vm_map.lock:
        for e in _entries_in(vm_map, start, end):
            e.purgable = p
            if e.obj is not None:
                have = memfd.get_attr(e.obj.fd, _ATTR)
                if have is not None and have[:1].isdigit():
                    p.state = int(have[:1])


def vm_purgable_control(vm_map: VmMap, addr: int, control: int, state: int) -> int:
    """mach_vm_purgable_control on our own map: returns the state to give
    back (the old state for SET_STATE, the state for GET_STATE, ``state``
    unchanged for PURGE_ALL).

    In XNU's order: KERN_INVALID_ARGUMENT (a control other than SET_STATE,
    GET_STATE and PURGE_ALL; for SET_STATE, state bits outside
    VM_PURGABLE_ALL_MASKS), KERN_INVALID_ADDRESS (nothing mapped at
    ``addr``), KERN_PROTECTION_FAILURE (not writable, except for
    GET_STATE), KERN_INVALID_ARGUMENT (memory that is not purgeable; a new
    state of VM_PURGABLE_DENY).

    Conditions: the map's lock is not held by this thread; takes it, and
    makes system calls under it (reads /proc/self/maps for memory pymach
    did not map)."""
    if control not in (V.VM_PURGABLE_SET_STATE, V.VM_PURGABLE_GET_STATE, V.VM_PURGABLE_PURGE_ALL):
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"control {control} (SET_STATE_FROM_KERNEL is the kernel's)")
    if control == V.VM_PURGABLE_PURGE_ALL:
        purge_all(vm_map)
        return state
    if control == V.VM_PURGABLE_SET_STATE and state & ~V.VM_PURGABLE_ALL_MASKS & 0xFFFFFFFF:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"state {state:#x}")
    addr &= ~_PAGE_MASK
    with vm_map.lock:
        e = vm_map.lookup(addr)
        if e is None:
            _check_foreign(vm_map, addr, control)
            raise K.MachError(K.KERN_INVALID_ARGUMENT, f"{addr:#x} is not purgeable memory")
        if not e.prot & V.VM_PROT_WRITE and control != V.VM_PURGABLE_GET_STATE:
            raise K.MachError(K.KERN_PROTECTION_FAILURE, f"{addr:#x} is not writable")
        p = e.purgable
        if not isinstance(p, Purgable):
            raise K.MachError(K.KERN_INVALID_ARGUMENT, f"{addr:#x} is not purgeable memory")
        entries = [x for x in list(vm_map._entries) if x.purgable is p]
        old = _current(p, entries)
        if control == V.VM_PURGABLE_GET_STATE:
            return old
        if state & V.VM_PURGABLE_DEBUG_EMPTY:
            p.volatile_empty = True
        new = state & V.VM_PURGABLE_STATE_MASK
        if new == V.VM_PURGABLE_VOLATILE and (old == V.VM_PURGABLE_EMPTY or p.volatile_empty):
            new = V.VM_PURGABLE_EMPTY  # what has been emptied stays empty
        if new == V.VM_PURGABLE_DENY:
            raise K.MachError(K.KERN_INVALID_ARGUMENT, "purgeable memory cannot be made non-purgeable")
        if new == V.VM_PURGABLE_EMPTY:
            _empty(entries)
        _set(p, entries, new)
        return old


def purge_all(vm_map: VmMap) -> None:
    """VM_PURGABLE_PURGE_ALL: empty every volatile object of our map.

    Conditions: the map's lock is not held by this thread; takes it."""
    with vm_map.lock:
        objects: dict[int, tuple[Purgable, list[VmEntry]]] = {}
        for e in vm_map._entries:
            if isinstance(e.purgable, Purgable):
                objects.setdefault(id(e.purgable), (e.purgable, []))[1].append(e)
        for p, entries in objects.values():
            if _current(p, entries) == V.VM_PURGABLE_VOLATILE:
                _empty(entries)
                _set(p, entries, V.VM_PURGABLE_EMPTY)


def _entries_in(vm_map: VmMap, start: int, end: int) -> list[VmEntry]:
    """Conditions: the map's lock is held."""
    return [e for e in vm_map._entries if e.start < end and e.end > start]


def _check_foreign(vm_map: VmMap, addr: int, control: int) -> None:
    """KERN_INVALID_ADDRESS if nothing is mapped at ``addr``;
    KERN_PROTECTION_FAILURE if memory pymach did not map is not writable
    (and the control changes a state).

    Conditions: the map's lock is held."""
    for _s, _t, what in vm_map.pieces(addr, addr + mm.PAGE_SIZE):
        if what is None:
            raise K.MachError(K.KERN_INVALID_ADDRESS, f"{addr:#x} is not mapped")
        if isinstance(what, procfs.Vma) and what.perms[1] != "w" and control != V.VM_PURGABLE_GET_STATE:
            raise K.MachError(K.KERN_PROTECTION_FAILURE, f"{addr:#x} is not writable")


def _current(p: Purgable, entries: list[VmEntry]) -> int:
    """The object's state: a memfd's attribute (another process may have
    changed it) when one of its entries is backed by a memfd.

    Conditions: the map's lock is held."""
    for e in entries:
        if e.obj is not None and e.shared:
            have = memfd.get_attr(e.obj.fd, _ATTR)
            if have is not None and have[:1].isdigit():
                p.state = int(have[:1])
            break
    return p.state


def _set(p: Purgable, entries: list[VmEntry], state: int) -> None:
    """Conditions: the map's lock is held."""
    p.state = state
    done: set[int] = set()
    for e in entries:
        if e.obj is not None and e.shared and e.obj.ino not in done:
            done.add(e.obj.ino)
            memfd.set_attr(e.obj.fd, _ATTR, b"%d" % state)


def _empty(entries: list[VmEntry]) -> None:
    """Discard the object's pages: they read as zeros afterwards. A memfd's
    pages are freed in the file (every mapping sees it); private pages are
    dropped, except wired ones (mlock), which XNU keeps too.

    Conditions: the map's lock is held."""
    for e in entries:
        if e.obj is not None and e.shared:
            try:
                memfd.punch_hole(e.obj.fd, e.offset, e.end - e.start)
            except OSError as err:
                raise K.MachError(K.kr_from_oserror(err), "emptying a purgeable object") from err
        else:
            _dontneed(e.start, e.end)


def _dontneed(start: int, end: int) -> None:
    """MADV_DONTNEED over [start, end), leaving out locked VMAs (the kernel
    refuses those with EINVAL, and their pages stay).

    Conditions: the map's lock is held."""
    try:
        mm.madvise(start, end - start, mm.MADV_DONTNEED)
        return
    except OSError as err:
        if err.errno != _EINVAL:
            raise K.MachError(K.kr_from_oserror(err), "emptying a purgeable object") from err
    for v in procfs.read_smaps():
        lo, hi = max(v.start, start), min(v.end, end)
        if lo < hi and "lo" not in v.vmflags:
            try:
                mm.madvise(lo, hi - lo, mm.MADV_DONTNEED)
            except OSError as err:
                raise K.MachError(K.kr_from_oserror(err), "emptying a purgeable object") from err


def entry_purgable_control(fd: int, offset: int, size: int, is_copy: bool, purgable: bool, control: int,
                           state: int) -> int:
    """mach_memory_entry_purgable_control on the object a memory entry
    names (the memfd ``fd``, the entry's [offset, offset + size)): the old
    state for SET_STATE, the state for GET_STATE. The state lives in the
    memfd's attribute, so every process mapping the object sees it.

    In XNU's order (memory_entry_purgeable_control_internal):
    KERN_INVALID_ARGUMENT for a control other than SET_STATE, GET_STATE and
    SET_STATE_FROM_KERNEL, for state bits outside VM_PURGABLE_ALL_MASKS, for
    a copy entry, for an entry that does not cover its whole object, for an
    object that is not purgeable and for a new state of VM_PURGABLE_DENY;
    KERN_PROTECTION_FAILURE when the object cannot be emptied through a
    read-only entry.

    Conditions: nothing locked."""
    if control not in (V.VM_PURGABLE_SET_STATE, V.VM_PURGABLE_GET_STATE, V.VM_PURGABLE_SET_STATE_FROM_KERNEL):
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"control {control}")
    if control != V.VM_PURGABLE_GET_STATE and state & ~V.VM_PURGABLE_ALL_MASKS & 0xFFFFFFFF:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"state {state:#x}")
    if is_copy:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, "a copy entry names no object")
    if offset != 0 or files.size(fd) != size:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, "the entry does not cover its whole object")
    if not purgable:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, "the object is not purgeable")
    have = memfd.get_attr(fd, _ATTR)
    old = int(have[:1]) if have is not None and have[:1].isdigit() else V.VM_PURGABLE_NONVOLATILE
    if control == V.VM_PURGABLE_GET_STATE:
        return old
    new = state & V.VM_PURGABLE_STATE_MASK
    if new == V.VM_PURGABLE_DENY:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, "purgeable memory cannot be made non-purgeable")
    if new == V.VM_PURGABLE_VOLATILE and (old == V.VM_PURGABLE_EMPTY or state & V.VM_PURGABLE_DEBUG_EMPTY):
        new = V.VM_PURGABLE_EMPTY  # what has been emptied stays empty
    if new == V.VM_PURGABLE_EMPTY:
        try:
            memfd.punch_hole(fd, 0, size)
        except OSError as err:
            raise K.MachError(K.KERN_PROTECTION_FAILURE, "the object cannot be emptied through this entry") from err
    memfd.set_attr(fd, _ATTR, b"%d" % new)
    return old
