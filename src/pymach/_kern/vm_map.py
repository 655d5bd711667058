"""The VM map of our own task: Mach's entries over Linux's VMAs.

The Linux kernel owns the mappings; this module keeps what Mach knows about
them and Linux does not: maximum protection, inheritance, behavior, user
tag and wiring, per entry. Every change goes through the syscall first and
the record second, under one lock, so the record agrees with
/proc/self/maps. Memory that pymach did not map (the interpreter's heap,
libraries) has no entry; calls on it read /proc/self/maps.

All ranges here are already page-aligned and validated by vm_user.
"""

from __future__ import annotations

import bisect
import errno
import os
import threading
from dataclasses import dataclass
from typing import Iterator

from .._linux import files, mapfile, mm, procfs
from . import kern_return as K
from . import vm_defs as V
from .vm_object import VmObject

_ACCESS = {V.VM_PROT_READ: "readable", V.VM_PROT_WRITE: "writable", V.VM_PROT_EXECUTE: "executable"}

_mprotect = mm.raw_mprotect
_munmap = mm.raw_munmap

# Mach protection -> mmap protection: the low three bits are the same.
_PROT_MASK = V.VM_PROT_ALL
_PROT_COPY = V.VM_PROT_COPY
_bisect_right = bisect.bisect_right

# VM_FLAGS_ANYWHERE searches first fit from the hint, and from here when the
# hint is lower: where the __PAGEZERO of a macOS process ends. The low 4 GiB
# stay for a non-PIE executable, its brk heap and FIXED requests.
ANYWHERE_FLOOR = 1 << 32
# room left free above the start of the brk heap, so that it can grow
BRK_RESERVE = 1 << 30
_PLACE_TRIES = 16

# behaviors that persist on an entry (the rest are one-shot actions)
_PERSISTENT_BEHAVIOR = {
    V.VM_BEHAVIOR_DEFAULT: mm.MADV_NORMAL,
    V.VM_BEHAVIOR_RANDOM: mm.MADV_RANDOM,
    V.VM_BEHAVIOR_SEQUENTIAL: mm.MADV_SEQUENTIAL,
    # Linux read-ahead has no reverse mode; sequential is the nearest hint.
    V.VM_BEHAVIOR_RSEQNTL: mm.MADV_SEQUENTIAL,
}


class VmEntry:
    """One Mach map entry: [start, end) with its attributes."""

    __slots__ = ("start", "end", "prot", "max_prot", "inherit", "behavior", "tag",
                 "wired", "obj", "offset", "shared", "permanent", "purgable")

    def __init__(self, start: int, end: int, prot: int, max_prot: int, inherit: int,
                 tag: int = 0, obj: VmObject | None = None, offset: int = 0,
                 shared: bool = False, behavior: int = V.VM_BEHAVIOR_DEFAULT, wired: int = 0) -> None:
        self.start = start
        self.end = end
        self.prot = prot
        self.max_prot = max_prot
        self.inherit = inherit
        self.behavior = behavior
        self.tag = tag
        self.wired = wired
        self.obj = obj
        self.offset = offset
        self.shared = shared
        self.permanent = False
        # the purgeable object this entry maps (vm_purgable.Purgable), shared
        # by the pieces of a split entry as XNU's entries share one object
        self.purgable: object = None

    def split(self, at: int) -> "VmEntry":
        """Cut at ``at``: self keeps the low part; the high part is returned."""
        hi = VmEntry(at, self.end, self.prot, self.max_prot, self.inherit, self.tag,
                     self.obj.reference() if self.obj else None, self.offset + (at - self.start),
                     self.shared, self.behavior, self.wired)
        hi.permanent = self.permanent
        hi.purgable = self.purgable
        self.end = at
        return hi

    def __repr__(self) -> str:
        return (f"<VmEntry {self.start:#x}-{self.end:#x} prot={self.prot} max={self.max_prot} "
                f"inh={self.inherit} tag={self.tag} shared={self.shared} obj={self.obj}>")


@dataclass(slots=True)
class RegionInfo:
    """What mach_vm_region reports for one region."""

    start: int
    end: int
    protection: int
    max_protection: int
    inheritance: int
    shared: bool
    reserved: bool
    offset: int
    behavior: int
    user_wired_count: int
    user_tag: int
    share_mode: int
    path: str
    pymach: bool

    @property
    def size(self) -> int:
        return self.end - self.start

    def __repr__(self) -> str:
        from .._format import behavior, inheritance, prots, share_mode, size
        extra = "".join((f" offset={self.offset:#x}" if self.offset else "",
                         f" tag={self.user_tag}" if self.user_tag else "",
                         f" wired={self.user_wired_count}" if self.user_wired_count else "",
                         f" behavior={behavior(self.behavior)}" if self.behavior else "",
                         " reserved" if self.reserved else "", f" path={self.path!r}" if self.path else ""))
        return (f"<RegionInfo {self.start:#x}-{self.end:#x} size={size(self.size)} "
                f"{prots(self.protection, self.max_protection)} inherit={inheritance(self.inheritance)} "
                f"share={share_mode(self.share_mode)}{extra}>")


def _lin_prot(p: int) -> int:
    return p & _PROT_MASK


def _prot_of_perms(perms: str) -> int:
    return ((V.VM_PROT_READ if perms[0] == "r" else 0) | (V.VM_PROT_WRITE if perms[1] == "w" else 0)
            | (V.VM_PROT_EXECUTE if perms[2] == "x" else 0))


class VmMap:
    """The calling process's address space, as a Mach vm_map."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._starts: list[int] = []
        self._entries: list[VmEntry] = []
        self._fork_snapshots: list[tuple[VmEntry, int]] = []
        # ranges mapped by others (the interpreter, libraries) and the brk
        # reserve, as last read from /proc/self/maps; refreshed on EEXIST
        self._foreign: list[tuple[int, int]] | None = None
        self._foreign_starts: list[int] = []
        # everything in [ANYWHERE_FLOOR, _first_free) is known to be taken
        self._first_free = 0

    # -- lookup -------------------------------------------------------------

    def entries(self) -> list[VmEntry]:
        """A snapshot of the entries, in address order.

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        with self.lock:
            return list(self._entries)

    def lookup(self, addr: int) -> VmEntry | None:
        """The entry containing ``addr``, if pymach mapped it.

        Conditions: the map's lock is held."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            e = self._entries[i]
            if addr < e.end:
                return e
        return None

    def _overlap(self, start: int, end: int) -> tuple[int, int]:
        """Index range [i, j) of the entries overlapping [start, end).

        Conditions: the map's lock is held."""
        starts = self._starts
        i = bisect.bisect_right(starts, start) - 1
        if i < 0 or self._entries[i].end <= start:
            i += 1
        j = bisect.bisect_left(starts, end, lo=max(i, 0))
        return i, j

    def _clip(self, start: int, end: int) -> tuple[int, int]:
        """Split entries so that none straddles ``start`` or ``end``; returns
        the index range of the entries inside [start, end).

        Conditions: the map's lock is held."""
        i, j = self._overlap(start, end)
        if i < j:
            e = self._entries[i]
            if e.start < start:
                hi = e.split(start)
                self._entries.insert(i + 1, hi)
                self._starts.insert(i + 1, hi.start)
                i += 1
                j += 1
            e = self._entries[j - 1]
            if e.end > end:
                hi = e.split(end)
                self._entries.insert(j, hi)
                self._starts.insert(j, hi.start)
        return i, j

    def pieces(self, start: int, end: int) -> list[tuple[int, int, VmEntry | procfs.Vma | None]]:
        """Cover [start, end) with our entries, foreign VMAs, and holes (None).

        Conditions: the map's lock is held."""
        out: list[tuple[int, int, VmEntry | procfs.Vma | None]] = []
        i, j = self._overlap(start, end)
        cur = start
        gaps: list[tuple[int, int]] = []
        for e in self._entries[i:j]:
            s, t = max(e.start, start), min(e.end, end)
            if s > cur:
                gaps.append((cur, s))
            out.append((s, t, e))
            cur = t
        if cur < end:
            gaps.append((cur, end))
        if gaps:
            vmas = procfs.read_maps()
            for gs, ge in gaps:
                c = gs
                for v in vmas:
                    if v.end <= c or v.start >= ge:
                        continue
                    s, t = max(v.start, c), min(v.end, ge)
                    if s > c:
                        out.append((c, s, None))
                    out.append((s, t, v))
                    c = t
                if c < ge:
                    out.append((c, ge, None))
            out.sort(key=lambda p: p[0])
        return out

    def check_range(self, start: int, end: int, need: int = 0) -> None:
        """Raise KERN_INVALID_ADDRESS if [start, end) has a hole, and
        KERN_PROTECTION_FAILURE if some part lacks the protection ``need``.

        Conditions: the map's lock is held."""
        for s, _t, what in self.pieces(start, end):
            if what is None:
                raise K.MachError(K.KERN_INVALID_ADDRESS, f"{s:#x} is not mapped")
            prot = what.prot if isinstance(what, VmEntry) else _prot_of_perms(what.perms)
            if need & ~prot:
                raise K.MachError(K.KERN_PROTECTION_FAILURE, f"{s:#x} is not {_ACCESS.get(need, 'accessible')}")

    # -- record keeping -----------------------------------------------------

    def _insert(self, e: VmEntry) -> None:
        """Conditions: the map's lock is held."""
        i = bisect.bisect_left(self._starts, e.start)
        self._starts.insert(i, e.start)
        self._entries.insert(i, e)

    def _forget(self, start: int, end: int) -> list[VmEntry]:
        """Drop the records of [start, end); returns the dropped entries.

        Conditions: the map's lock is held."""
        i, j = self._clip(start, end)
        gone = self._entries[i:j]
        del self._entries[i:j]
        del self._starts[i:j]
        if start < self._first_free:
            self._first_free = start
        for e in gone:
            if e.obj is not None:
                e.obj.release()
        return gone

    # -- operations ---------------------------------------------------------

    def allocate(self, addr: int, size: int, anywhere: bool, overwrite: bool, tag: int,
                 align_mask: int = 0, permanent: bool = False, refuse: K.MachError | None = None) -> int:
        """Map zero-filled private memory; returns its address. ``addr`` is
        the place (FIXED) or the hint (anywhere: first fit from there).
        With ``refuse``, the space is located as for a mapping, with its
        codes, and then ``refuse`` is raised: vm_map_enter's checks that
        come after the placement.

        KERN_NO_SPACE (no room; a FIXED range in use; a permanent entry in
        an OVERWRITE range, which is left without access), the errno's
        codes.

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        flags = mm.MAP_PRIVATE | mm.MAP_ANONYMOUS | mm.MAP_NORESERVE
        prot = mm.PROT_READ | mm.PROT_WRITE
        with self.lock:
            if refuse is not None:
                self._locate(addr, size, anywhere, overwrite, align_mask)
                raise refuse
            a = self._place(addr, size, anywhere, overwrite, align_mask, prot, flags)
            if tag:
                mm.name_anon(a, size, b"mach.tag.%d" % tag)
            e = VmEntry(a, a + size, V.VM_PROT_DEFAULT, V.VM_PROT_ALL, V.VM_INHERIT_DEFAULT, tag)
            e.permanent = permanent
            self._insert(e)
            return a

    def hand_off(self, start: int, size: int) -> int | None:
        """Out-of-line data sent with deallocate: if [start, start+size) is
        exactly one shared entry over a whole memfd, unmap it and return a
        dup of the memfd (the caller seals it): the pages change hands with
        no copy. None when the range is not such an entry or the unmap
        fails (then the data is copied); no kern_return_t of its own.

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        with self.lock:
            e = self.lookup(start)
            end = _round(start + size)
            if (e is None or e.start != start or e.end != end or not e.shared or e.obj is None
                    or e.offset or e.obj.size != end - start or e.permanent or e.wired
                    or e.obj.true_share):
                return None
            fd = files.dup(e.obj.fd)
            try:
                # Unmapped now, not moved aside (mremap) to unmap later: the
                # kernel refuses F_SEAL_WRITE (EBUSY) while any writable
                # shared mapping of the memfd exists, a moved one included.
                mm.munmap(start, end - start)
            except OSError:
                files.close(fd)
                return None
            self._forget(start, end)
            return fd

    # -- memory entries ----------------------------------------------------------

    def share_range(self, start: int, end: int, protections: int, mask: bool,
                    whole: bool) -> tuple[int, int, int, int]:
        """The memfd (a new fd, the caller's to close), object offset, size
        and protection of a memory entry that shares [start, end)
        (mach_make_memory_entry_64's share path).

        Without ``whole`` (the default path) only the entry holding
        ``start`` is taken and the size is clipped to its end, as XNU's
        single-object extraction does. With ``whole`` (MAP_MEM_VM_SHARE)
        the range must be mapped throughout. Each entry taken must allow
        ``protections`` in its current and maximum protection; with
        ``mask`` nothing is required and ``protections`` is ANDed with
        their current protections instead. Private entries are moved into
        a memfd first (as VM_INHERIT_SHARE does), so the pages are shared
        in place.

        KERN_INVALID_ADDRESS (the start is unmapped; with ``whole``, a
        hole), KERN_PROTECTION_FAILURE, KERN_NOT_SUPPORTED (memory pymach
        did not map: moving its pages into a shared object would change
        what a fork child shares; with ``whole``, entries already on
        different objects).

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        with self.lock:
            taken: list[VmEntry] = []
            cur_and = V.VM_PROT_ALL
            stop = start
            for s, t, what in self.pieces(start, end):
                if what is None:
                    if whole or not taken:
                        raise K.MachError(K.KERN_INVALID_ADDRESS, f"{s:#x} is not mapped")
                    break
                if isinstance(what, procfs.Vma):
                    raise K.MachError(K.KERN_NOT_SUPPORTED, f"{s:#x}: memory pymach did not map cannot be "
                                      "shared (allocate it with mach_vm_allocate)")
                if not mask and (what.prot & protections != protections
                                 or what.max_prot & protections != protections):
                    raise K.MachError(K.KERN_PROTECTION_FAILURE, f"{s:#x} does not allow {protections:#x}")
                taken.append(what)
                cur_and &= what.prot
                stop = t
                if not whole:
                    break
            if mask:
                protections &= cur_and
                if not protections:
                    raise K.MachError(K.KERN_PROTECTION_FAILURE, "no access at all")
            self._share_entries(taken)
            first = taken[0]
            assert first.obj is not None
            for e in taken:
                e.obj.true_share = True  # type: ignore[union-attr]
            return files.dup(first.obj.fd), first.offset + (start - first.start), stop - start, protections

    def snapshot(self, start: int, end: int) -> int:
        """A fresh memfd holding the bytes of [start, end) as they are now
        (MAP_MEM_VM_COPY). Shared memory is copied in the kernel, private
        memory through the kernel's user-copy routine.

        KERN_INVALID_ADDRESS (a hole), KERN_PROTECTION_FAILURE (a part with
        neither current nor maximum VM_PROT_READ, or unreadable memory
        pymach did not map).

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        with self.lock:
            pieces = self.pieces(start, end)
            for s, _t, what in pieces:
                if what is None:
                    raise K.MachError(K.KERN_INVALID_ADDRESS, f"{s:#x} is not mapped")
                readable = _prot(what) | (what.max_prot if isinstance(what, VmEntry) else 0)
                if not readable & V.VM_PROT_READ:
                    raise K.MachError(K.KERN_PROTECTION_FAILURE, f"{s:#x} is not readable")
            return self._snapshot(pieces, start, end - start)

    def _snapshot(self, pieces: list[tuple[int, int, "VmEntry | procfs.Vma | None"]], base: int,
                  size: int) -> int:
        """Conditions: the map's lock is held."""
        try:
            fd = mm.memfd("mach.copy", size)
        except OSError as err:
            raise K.MachError(K.kr_from_oserror(err), "memfd") from err
        try:
            for s, t, what in pieces:
                off = s - base
                if isinstance(what, VmEntry) and what.shared and what.obj is not None:
                    mm.copy_data(what.obj.fd, fd, t - s, what.offset + (s - what.start), off)
                elif isinstance(what, VmEntry):
                    readable = what.prot & V.VM_PROT_READ
                    if not readable:
                        mm.mprotect(s, t - s, _lin_prot(what.prot) | mm.PROT_READ)
                    try:
                        # a private file mapping (received out-of-line data) has
                        # pages that pagemap does not show until touched
                        # (nor does a share of a file: read it whole)
                        runs = [(s, t)] if what.obj is not None or what.shared else _populated_runs(s, t)
                        for rs, rt in runs:
                            mm.write_memory(fd, rs, rt - rs, off + (rs - s))
                    finally:
                        if not readable:
                            mm.mprotect(s, t - s, _lin_prot(what.prot))
                else:
                    mm.write_memory(fd, s, t - s, off)
        except OSError as err:
            files.close(fd)
            raise K.MachError(K.kr_from_oserror(err), "copying memory") from err
        except BaseException:
            files.close(fd)
            raise
        return fd

    def map_object(self, addr: int, size: int, mask: int, anywhere: bool, overwrite: bool, fd: int,
                   offset: int, copy: bool, cur: int, max_prot: int, inherit: int, tag: int = 0,
                   permanent: bool = False, parts: tuple[tuple[int, int], ...] = ()) -> int:
        """Map [offset, offset + size) of the memfd ``fd``: shared, or with
        ``copy`` a private copy-on-write view of a snapshot taken now.
        ``parts`` (a copy entry's (length, tag) list) makes one entry of
        each part, tagged ``tag`` or else the part's own tag.
        Returns the address. KERN_NO_SPACE, KERN_INVALID_ADDRESS and the
        errno's codes.

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        length = _round(size)
        if copy:
            try:
                snap = mm.memfd("mach.copy", length)
            except OSError as err:
                raise K.MachError(K.kr_from_oserror(err), "memfd") from err
            obj = VmObject(snap, length)
            try:
                mm.copy_data(fd, snap, length, offset, 0)
            except OSError as err:
                obj.release()
                raise K.MachError(K.kr_from_oserror(err), "copying memory") from err
            offset = 0
        else:
            obj = VmObject(files.dup(fd), files.size(fd), true_share=True)
        with self.lock:
            try:
                a = self._place(addr, length, anywhere, overwrite, mask, _lin_prot(cur),
                                mm.MAP_PRIVATE if copy else mm.MAP_SHARED, obj.fd, offset)
            except BaseException:
                obj.release()
                raise
            e = VmEntry(a, a + length, cur, max_prot, inherit, tag, obj, offset, not copy)
            e.permanent = permanent
            self._insert(e)  # the entry holds the object now
            self._reapply(e)
            if parts:
                self._split_parts(a, parts, tag)
            if copy and inherit == V.VM_INHERIT_SHARE:
                self._share_entries([e])
            return a

    def _split_parts(self, start: int, parts: tuple[tuple[int, int], ...], tag: int) -> None:
        """Cut the entry just made at ``start`` into one entry per part, each
        tagged ``tag`` or, without one, with its part's tag (as
        vm_map_enter_mem_object enters a copy's entries one by one).

        Conditions: the map's lock is held."""
        at = start
        for n, part_tag in parts:
            i, j = self._clip(at, at + n)
            for e in self._entries[i:j]:
                e.tag = tag or part_tag
            at += n

    def parts_of(self, start: int, end: int) -> tuple[tuple[int, int], ...]:
        """(length, tag) of each map entry (or foreign mapping, tag 0) over
        [start, end), in order: what a copy entry made of the range keeps.

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it; reads /proc/self/maps for memory pymach did
        not map."""
        with self.lock:
            return tuple((t - s, what.tag if isinstance(what, VmEntry) else 0)
                         for s, t, what in self.pieces(start, end) if what is not None)

    def remap(self, addr: int, size: int, mask: int, anywhere: bool, overwrite: bool, src: int, copy: bool,
              inherit: int, bounds: tuple[int, int], prots: tuple[int, int] | None = None,
              codesign: bool = False) -> tuple[int, int, int]:
        """mach_vm_remap within our map: map the pages of [src, src + size)
        a second time (copy FALSE: private sources are made shared first;
        file mappings pymach did not map are shared through their file, see
        _file_share_prots), or a snapshot of them taken now (copy TRUE).
        Each source entry becomes a new entry with its own protections (a
        private file mapping's maximum without VM_PROT_WRITE), or with ``prots``
        (cur, max: mach_vm_remap_new) exactly those; ``codesign``
        (VM_FLAGS_RESILIENT_CODESIGN) makes them read-only. Returns
        (address, cur, max): the AND of the sources' protections, R/R with
        ``codesign``.

        KERN_INVALID_ADDRESS (a hole in the source; a FIXED target outside
        ``bounds``), KERN_PROTECTION_FAILURE (``prots``: copy FALSE and a
        source not allowing them, copy TRUE and a source without maximum
        VM_PROT_READ; unreadable memory pymach did not map),
        KERN_NOT_SUPPORTED (copy FALSE of anonymous memory pymach did not
        map, of a private file mapping that is writable or written, or of
        one whose file cannot be opened again), KERN_NO_SPACE (no room, a
        FIXED target taken or against ``mask``), the errno's codes (opening
        the file: EACCES is KERN_PROTECTION_FAILURE).

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        lo, hi = bounds
        with self.lock:
            pieces = self.pieces(src, src + size)
            cur_and = max_and = V.VM_PROT_ALL
            for s, t, what in pieces:
                if what is None:
                    raise K.MachError(K.KERN_INVALID_ADDRESS, f"{s:#x} is not mapped")
                cur_p, max_p = _prot(what), _max_prot(what)
                if not copy and isinstance(what, procfs.Vma):
                    cur_p, max_p = _file_share_prots(s, t, what)
                if prots is not None and (
                        not max_p & V.VM_PROT_READ if copy
                        else cur_p & prots[0] != prots[0] or max_p & prots[1] != prots[1]):
                    raise K.MachError(K.KERN_PROTECTION_FAILURE, f"{s:#x} does not allow the protections")
                if isinstance(what, procfs.Vma) and copy and not cur_p & V.VM_PROT_READ:
                    raise K.MachError(K.KERN_PROTECTION_FAILURE, f"{s:#x} is not readable")
                cur_and &= cur_p
                max_and &= max_p
            if anywhere:
                if size > hi - lo:
                    raise K.MachError(K.KERN_NO_SPACE, f"size {size:#x} exceeds the address space")
            elif addr & mask:
                raise K.MachError(K.KERN_NO_SPACE, f"{addr:#x} is not aligned to mask {mask:#x}")
            elif addr < lo or addr + size > hi:
                raise K.MachError(K.KERN_INVALID_ADDRESS, f"{addr:#x}-{addr + size:#x} is outside the map")
            # (offset in the new range, length, object, object offset, cur, max,
            # tag, a file pymach did not map: the entry keeps no object)
            parts: list[tuple[int, int, VmObject, int, int, int, int, bool]] = []
            try:
                if copy:
                    snap = VmObject(self._snapshot(pieces, src, size), size)
                    try:
                        for s, t, what in pieces:
                            assert what is not None
                            parts.append((s - src, t - s, snap.reference(), s - src, _prot(what),
                                          _max_prot(what), what.tag if isinstance(what, VmEntry) else 0,
                                          False))
                    finally:
                        snap.release()
                else:
                    for s, t, what in pieces:
                        if isinstance(what, procfs.Vma) or (what is not None and what.shared
                                                            and what.obj is None):
                            parts.append(self._file_part(s, t, what, s - src))
                            continue
                        assert isinstance(what, VmEntry)
                        if not what.shared:
                            self._share_entries([what])
                        assert what.obj is not None
                        what.obj.true_share = True
                        parts.append((s - src, t - s, what.obj.reference(), what.offset + (s - what.start),
                                      what.prot, what.max_prot, what.tag, False))
                a = self._place(addr, size, anywhere, overwrite, mask, mm.PROT_NONE,
                                mm.MAP_PRIVATE | mm.MAP_ANONYMOUS | mm.MAP_NORESERVE, restore=False)
            except BaseException:
                for p in parts:
                    p[2].release()
                raise
            flags = (mm.MAP_PRIVATE if copy else mm.MAP_SHARED) | mm.MAP_FIXED
            made: list[VmEntry] = []
            try:
                while parts:
                    rel, n, obj, off, cur, mx, tag, file = parts[0]
                    if prots is not None:
                        cur, mx = prots
                    if codesign:
                        cur = mx = V.VM_PROT_READ
                    mm.mmap(a + rel, n, _lin_prot(cur), flags, obj.fd, off)
                    if file:  # the mapping holds the file: close ours now
                        obj.release()
                    e = VmEntry(a + rel, a + rel + n, cur, mx, inherit, tag, None if file else obj, off,
                                not copy)
                    parts.pop(0)
                    self._insert(e)
                    made.append(e)
                    self._reapply(e)
                if copy and inherit == V.VM_INHERIT_SHARE:
                    self._share_entries(made)
            except BaseException as err:
                for p in parts:
                    p[2].release()
                mm.munmap(a, size)
                self._forget(a, a + size)
                if isinstance(err, OSError):
                    raise K.MachError(K.kr_from_oserror(err, K.ERRNO_MAP), "mmap") from err
                raise
            if codesign:
                cur_and = max_and = V.VM_PROT_READ
            return a, cur_and, max_and

    def _file_part(self, s: int, t: int, what: "VmEntry | procfs.Vma",
                   rel: int) -> tuple[int, int, VmObject, int, int, int, int, bool]:
        """A copy FALSE remap's part for [s, t) of a file mapping that is not
        ours (or an earlier share of one): the file opened again (the
        object holds the fd until the part is mapped), its offset, and the
        protections the new entry gets. KERN_NOT_SUPPORTED when the file
        cannot be found again, the errno's codes when it cannot be opened.

        Conditions: the map's lock is held."""
        if isinstance(what, procfs.Vma):
            vma = what
            cur, mx = _file_share_prots(s, t, vma)
        else:
            found = [v for v in procfs.read_maps() if v.start <= s < v.end]
            if not found:
                raise K.MachError(K.KERN_INVALID_ADDRESS, f"{s:#x} is not mapped")
            vma, cur, mx = found[0], what.prot, what.max_prot
        try:
            fd = mapfile.open_vma_file(vma.start, vma.end, vma.path, vma.dev, vma.inode,
                                       vma.shared and bool(mx & V.VM_PROT_WRITE))
        except OSError as err:
            raise K.MachError(K.kr_from_oserror(err), f"opening the file mapped at {s:#x}") from err
        if fd is None:
            raise K.MachError(K.KERN_NOT_SUPPORTED, f"{s:#x}: the file this memory maps cannot be "
                              "opened again to share it")
        return rel, t - s, VmObject(fd, 0), vma.offset + (s - vma.start), cur, mx, 0, True

    def map_object_private(self, fd: int, size: int) -> int:
        """Map ``size`` bytes of a file MAP_PRIVATE anywhere: a copy-on-write
        view (out-of-line data on receipt).

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        length = _round(size)
        with self.lock:
            a = self._place(0, length, True, False, 0, mm.PROT_READ | mm.PROT_WRITE, mm.MAP_PRIVATE, fd, 0)
            e = VmEntry(a, a + length, V.VM_PROT_DEFAULT, V.VM_PROT_ALL, V.VM_INHERIT_DEFAULT,
                        V.VM_MEMORY_MACH_MSG)
            self._insert(e)
            return a

    def _place(self, addr: int, size: int, anywhere: bool, overwrite: bool, mask: int, prot: int,
               flags: int, fd: int = -1, offset: int = 0, restore: bool = True) -> int:
        """mmap for a new entry: anywhere (first fit from the hint ``addr``,
        aligned to ``mask``), at ``addr`` if free, or over whatever is
        there (OVERWRITE: those entries are forgotten). KERN_NO_SPACE when
        the place is taken, or when an OVERWRITE range holds a permanent
        entry (see _delete_for_overwrite; ``restore`` as there); the
        errno's code otherwise.

        Conditions: the map's lock is held."""
        if anywhere:
            return self._map_anywhere(addr, size, mask, prot, flags, fd, offset)
        if overwrite:
            i, j = self._overlap(addr, addr + size)
            if any(e.permanent for e in self._entries[i:j]):
                self._delete_for_overwrite(addr, addr + size, restore)
                raise K.MachError(K.KERN_NO_SPACE, "a permanent mapping is in the way")
        try:
            if overwrite:
                a = mm.mmap(addr, size, prot, flags | mm.MAP_FIXED, fd, offset)
            else:
                a = mm.mmap(addr, size, prot, flags | mm.MAP_FIXED_NOREPLACE, fd, offset)
        except OSError as err:
            raise K.MachError(K.kr_from_oserror(err, K.ERRNO_MAP), "mmap") from err
        if a != addr:  # a kernel without MAP_FIXED_NOREPLACE
            mm.munmap(a, size)
            raise K.MachError(K.KERN_NO_SPACE, f"{addr:#x} is in use")
        if overwrite:
            self._forget(a, a + size)
        return a

    def _locate(self, addr: int, size: int, anywhere: bool, overwrite: bool, mask: int) -> None:
        """The checks of a placement, without mapping: KERN_NO_SPACE as
        _place would give it (and an OVERWRITE over a permanent entry
        leaves it without access, as there).

        Conditions: the map's lock is held."""
        if anywhere:
            self._find_space(addr, size, mask)
            return
        i, j = self._overlap(addr, addr + size)
        if overwrite:
            if any(e.permanent for e in self._entries[i:j]):
                self._delete_for_overwrite(addr, addr + size, True)
                raise K.MachError(K.KERN_NO_SPACE, "a permanent mapping is in the way")
        elif any(w is not None for _s, _t, w in self.pieces(addr, addr + size)):
            raise K.MachError(K.KERN_NO_SPACE, f"{addr:#x} is in use")

    def _delete_for_overwrite(self, start: int, end: int, restore: bool) -> None:
        """What XNU's vm_map_delete does to [start, end) before an
        OVERWRITE that then fails on a permanent entry: every other
        mapping in the range is removed, and each permanent entry stays
        with protection and maximum protection VM_PROT_NONE (its pages
        kept). With ``restore`` (vm_map_enter) the removed mappings are
        put back when nothing left in the map lies within [first removed
        start, last removed end], the test vm_map_enter makes; vm_map_remap
        (and so VM_PROT_COPY) never puts them back.

        Conditions: the map's lock is held."""
        pieces = self.pieces(start, end)
        perm = [(s, t) for s, t, w in pieces if isinstance(w, VmEntry) and w.permanent]
        gone = [(s, t) for s, t, w in pieces if w is not None and not (isinstance(w, VmEntry) and w.permanent)]
        if gone and restore:
            zs, ze = gone[0][0], gone[-1][1]
            after = self.pieces(ze, ze + mm.PAGE_SIZE)[0][2] if ze < V.MACH_VM_MAX_ADDRESS else None
            if after is None and not any(s < ze and t > zs for s, t in perm):
                gone = []
        try:
            for s, t in gone:
                mm.munmap(s, t - s)
                self._forget(s, t)
            for s, t in perm:
                mm.mprotect(s, t - s, mm.PROT_NONE)
                i, j = self._clip(s, t)
                for e in self._entries[i:j]:
                    e.prot = e.max_prot = V.VM_PROT_NONE
        except OSError as err:
            raise K.MachError(K.kr_from_oserror(err, K.ERRNO_RANGE), "removing mappings") from err

    def _map_anywhere(self, hint: int, size: int, mask: int, prot: int, flags: int, fd: int = -1,
                      offset: int = 0) -> int:
        """mmap at the first free place at or above ``hint`` (first fit,
        as XNU's vm_map_locate_space_anywhere), with MAP_FIXED_NOREPLACE:
        a range someone mapped since /proc/self/maps was read fails with
        EEXIST, and the search goes on with a fresh read.

        Conditions: the map's lock is held."""
        for _try in range(_PLACE_TRIES):
            a = self._find_space(hint, size, mask)
            try:
                r = mm.mmap(a, size, prot, flags | mm.MAP_FIXED_NOREPLACE, fd, offset)
            except OSError as err:
                if err.errno == errno.EEXIST:
                    self._foreign = None
                    continue
                raise K.MachError(K.kr_from_oserror(err, K.ERRNO_MAP), "mmap") from err
            if r == a:
                if a == self._first_free:
                    self._first_free = a + size
                return a
            mm.munmap(r, size)  # a kernel without MAP_FIXED_NOREPLACE
            self._foreign = None
        raise K.MachError(K.KERN_NO_SPACE, "the address space keeps changing under the search")

    def _find_space(self, hint: int, size: int, mask: int) -> int:
        """The lowest address at or above ``hint`` (ANYWHERE_FLOOR when
        lower) with the bits of ``mask`` clear where ``size`` bytes are
        free of our entries and of the mappings of others. KERN_NO_SPACE
        when none is below the top of the map.

        Conditions: the map's lock is held."""
        if self._foreign is None:
            self._read_foreign()
        fo = self._foreign
        assert fo is not None
        top = V.MACH_VM_MAX_ADDRESS
        low = hint <= ANYWHERE_FLOOR
        a = self._first_free if low and self._first_free > ANYWHERE_FLOOR else max(hint, ANYWHERE_FLOOR)
        a = (a + mask) & ~mask
        ents, starts = self._entries, self._starts
        i = max(_bisect_right(starts, a) - 1, 0)
        k = max(_bisect_right(self._foreign_starts, a) - 1, 0)
        first_gap = -1
        while True:
            end = a + size
            if end > top:
                raise K.MachError(K.KERN_NO_SPACE, f"no room for {size:#x} bytes above {hint:#x}")
            while i < len(ents) and ents[i].end <= a:
                i += 1
            while k < len(fo) and fo[k][1] <= a:
                k += 1
            block = 0
            if i < len(ents) and ents[i].start < end:
                block = ents[i].end
                covered = ents[i].start <= a
            else:
                covered = False
            if k < len(fo) and fo[k][0] < end:
                block = max(block, fo[k][1])
                covered = covered or fo[k][0] <= a
            if first_gap < 0 and not covered:
                first_gap = a
            if not block:
                break
            a = (block + mask) & ~mask
        if low and not mask and first_gap >= 0:
            self._first_free = first_gap
        return a

    def _read_foreign(self) -> None:
        """Cache the ranges of /proc/self/maps that are not our entries, and
        the brk reserve above the start of the heap.

        Conditions: the map's lock is held."""
        out: list[tuple[int, int]] = []
        ents = self._entries
        i = 0
        for v in procfs.read_maps():
            if v.path == "[heap]":
                out.append((v.start, max(v.end, v.start + BRK_RESERVE)))
                continue
            cur = v.start
            while i < len(ents) and ents[i].end <= cur:
                i += 1
            j = i
            while cur < v.end:
                if j < len(ents) and ents[j].start < v.end:
                    if ents[j].start > cur:
                        out.append((cur, ents[j].start))
                    cur = max(cur, ents[j].end)
                    j += 1
                else:
                    out.append((cur, v.end))
                    cur = v.end
        out.sort()
        merged: list[tuple[int, int]] = []
        for s, e in out:  # the reserve may cover other ranges: merge them
            if merged and s <= merged[-1][1]:
                if e > merged[-1][1]:
                    merged[-1] = (merged[-1][0], e)
            else:
                merged.append((s, e))
        self._foreign = merged
        self._foreign_starts = [s for s, _e in merged]

    def deallocate(self, start: int, end: int) -> None:
        """Unmap [start, end); holes are not an error.

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        with self.lock:
            i = bisect.bisect_left(self._starts, start)
            if i < len(self._starts) and self._starts[i] == start:
                e = self._entries[i]
                if e.end == end and not e.permanent:
                    # fast path: exactly one entry
                    if _munmap(start, end - start):
                        raise K.MachError(K.kr_from_errno(mm.get_errno(), K.ERRNO_RANGE), "munmap")
                    del self._entries[i]
                    del self._starts[i]
                    if start < self._first_free:
                        self._first_free = start
                    if e.obj is not None:
                        e.obj.release()
                    return
            i, j = self._overlap(start, end)
            if any(e.permanent for e in self._entries[i:j]):
                self._deallocate_around_permanent(start, end)
                return
            try:
                mm.munmap(start, end - start)
            except OSError as err:
                raise K.MachError(K.kr_from_oserror(err, K.ERRNO_RANGE), "munmap") from err
            self._forget(start, end)

    def _deallocate_around_permanent(self, start: int, end: int) -> None:
        # VM_FLAGS_PERMANENT: the entry stays, stripped to VM_PROT_NONE.
        """Conditions: the map's lock is held."""
        cur = start
        i, j = self._clip(start, end)
        for e in list(self._entries[i:j]):
            if not e.permanent:
                continue
            if cur < e.start:
                mm.munmap(cur, e.start - cur)
                self._forget(cur, e.start)
            mm.mprotect(e.start, e.end - e.start, mm.PROT_NONE)
            e.prot = e.max_prot = V.VM_PROT_NONE
            cur = e.end
        if cur < end:
            mm.munmap(cur, end - cur)
            self._forget(cur, end)

    def protect(self, start: int, end: int, set_max: bool, prot: int) -> None:
        """mach_vm_protect on [start, end).

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        want = prot & _PROT_MASK
        with self.lock:
            if prot & _PROT_COPY:
                self._copy_private(start, end)
            i = _bisect_right(self._starts, start) - 1
            e = self._entries[i] if i >= 0 else None
            if e is not None and e.start == start and e.end == end:
                # fast path: the range is exactly one of our entries
                if want & ~e.max_prot:
                    raise K.MachError(K.KERN_PROTECTION_FAILURE, "the protection exceeds the maximum"
                                      if not set_max else "the maximum protection cannot be raised")
                new = (e.prot & want) if set_max else want
                if _mprotect(start, end - start, new):
                    raise K.MachError(K.kr_from_errno(mm.get_errno(), K.ERRNO_RANGE), "mprotect")
                if set_max:
                    e.max_prot = want
                e.prot = new
                return
            pieces = self.pieces(start, end)
            for s, _t, what in pieces:
                if what is None:
                    raise K.MachError(K.KERN_INVALID_ADDRESS, f"{s:#x} is not mapped")
                if isinstance(what, VmEntry) and want & ~what.max_prot:
                    raise K.MachError(K.KERN_PROTECTION_FAILURE, "the maximum protection cannot be raised"
                                      if set_max else "the protection exceeds the maximum protection")
            for s, t, what in pieces:
                assert what is not None
                new = (_prot(what) & want) if set_max else want
                try:
                    mm.mprotect(s, t - s, _lin_prot(new))
                except OSError as err:
                    raise K.MachError(K.kr_from_oserror(err, K.ERRNO_RANGE), "mprotect") from err
            ii, jj = self._clip(start, end)
            for e in self._entries[ii:jj]:
                if set_max:
                    e.max_prot = want
                    e.prot &= want
                else:
                    e.prot = want

    def inherit(self, start: int, end: int, inheritance: int) -> None:
        """mach_vm_inherit on [start, end).

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        with self.lock:
            pieces = [p for p in self.pieces(start, end) if p[2] is not None]
            for s, _t, what in pieces:
                if isinstance(what, procfs.Vma) and inheritance != V.VM_INHERIT_NONE and (
                        what.shared != (inheritance == V.VM_INHERIT_SHARE)):
                    raise K.MachError(K.KERN_NOT_SUPPORTED,
                                      f"{s:#x}: pymach can change only to NONE the inheritance "
                                      "of memory it did not map unless the mapping already matches")
            advice = mm.MADV_DONTFORK if inheritance == V.VM_INHERIT_NONE else mm.MADV_DOFORK
            for s, t, _what in pieces:
                try:
                    mm.madvise(s, t - s, advice)
                except OSError as err:
                    raise K.MachError(K.kr_from_oserror(err, K.ERRNO_RANGE), "madvise") from err
            i, j = self._clip(start, end)
            for e in self._entries[i:j]:
                old, e.inherit = e.inherit, inheritance
                if inheritance == V.VM_INHERIT_SHARE and not e.shared:
                    try:
                        self._make_shared(e)  # re-applies the VMA state from e
                    except BaseException:
                        e.inherit = old
                        raise

    def _make_shared(self, e: VmEntry) -> None:
        """Move a private entry's pages into a fresh memfd and map that
        MAP_SHARED at the same address, so that a fork child can share it.

        Conditions: the map's lock is held."""
        self._share_entries([e])

    def _share_entries(self, entries: list[VmEntry]) -> None:
        """Make adjacent ``entries`` MAP_SHARED views of one object at
        consecutive offsets: private ones are moved into a fresh memfd
        (only pages that exist, present or swapped, are copied).
        KERN_NOT_SUPPORTED when some already share an object and the run is
        not one object laid out in order.

        Conditions: the map's lock is held."""
        private = [e for e in entries if not e.shared]
        if not private:
            first = entries[0]
            if first.obj is None:  # a share of a file pymach did not map
                raise K.MachError(K.KERN_NOT_SUPPORTED, "a share of a file mapping pymach did not make "
                                  "has no object to name")
            for e in entries[1:]:
                if (e.obj is None or e.obj.ino != first.obj.ino
                        or e.offset - first.offset != e.start - first.start):
                    raise K.MachError(K.KERN_NOT_SUPPORTED, "the range spans several shared objects")
            return
        if len(private) != len(entries):
            raise K.MachError(K.KERN_NOT_SUPPORTED, "the range mixes shared and private memory")
        base = entries[0].start
        try:
            obj = VmObject.create(entries[-1].end - base, "mach.shared")
        except OSError as err:
            raise K.MachError(K.kr_from_oserror(err), "memfd") from err
        try:
            for e in entries:
                self._move_into(e, obj, e.start - base)
        finally:
            obj.release()

    def _move_into(self, e: VmEntry, obj: VmObject, off: int) -> None:
        """Copy a private entry's pages into ``obj`` at ``off`` and map that
        MAP_SHARED over the entry (MAP_FIXED replaces it in one step).

        Conditions: the map's lock is held."""
        size = e.end - e.start
        readable = e.prot & V.VM_PROT_READ
        try:
            if not readable:
                mm.mprotect(e.start, size, _lin_prot(e.prot) | mm.PROT_READ)
            # a private file mapping (received out-of-line data) has pages
            # that pagemap does not show until touched: copy it whole
            runs = [(e.start, e.end)] if e.obj is not None else _populated_runs(e.start, e.end)
            for s, t in runs:
                mm.write_memory(obj.fd, s, t - s, off + (s - e.start))
            mm.mmap(e.start, size, _lin_prot(e.prot), mm.MAP_SHARED | mm.MAP_FIXED, obj.fd, off)
        except OSError as err:
            if not readable:
                mm.mprotect(e.start, size, _lin_prot(e.prot))
            raise K.MachError(K.kr_from_oserror(err), "sharing memory") from err
        if e.obj is not None:
            e.obj.release()
        e.obj, e.offset, e.shared = obj.reference(), off, True
        self._reapply(e)

    def _copy_private(self, start: int, end: int) -> None:
        """VM_PROT_COPY: replace [start, end) with a private copy of itself
        whose maximum protection gains VM_PROT_WRITE. KERN_INVALID_ADDRESS
        (a hole), KERN_NOT_SUPPORTED (a shared mapping pymach did not
        make), KERN_NO_SPACE (a permanent entry in the range: it is left
        without access and the rest of the range is unmapped, as XNU's
        remap over itself does).

        Conditions: the map's lock is held."""
        pieces = self.pieces(start, end)
        for s, _t, what in pieces:
            if what is None:
                raise K.MachError(K.KERN_INVALID_ADDRESS, f"{s:#x} is not mapped")
            if isinstance(what, procfs.Vma) and what.shared:
                raise K.MachError(K.KERN_NOT_SUPPORTED,
                                  f"{s:#x}: VM_PROT_COPY of a shared mapping pymach did not make")
        i, j = self._overlap(start, end)
        if any(e.permanent for e in self._entries[i:j]):
            # XNU remaps the range over itself (FIXED | OVERWRITE): the
            # delete strips the permanent entry and drops the rest
            self._delete_for_overwrite(start, end, False)
            raise K.MachError(K.KERN_NO_SPACE, "VM_PROT_COPY of a permanent mapping")
        i, j = self._clip(start, end)
        for e in self._entries[i:j]:
            # XNU remaps the range onto itself with VM_INHERIT_DEFAULT
            if e.inherit == V.VM_INHERIT_NONE:
                mm.madvise(e.start, e.end - e.start, mm.MADV_DOFORK)
            e.inherit = V.VM_INHERIT_DEFAULT
            if e.shared:
                self._make_private(e)
            e.max_prot |= V.VM_PROT_WRITE

    def _make_private(self, e: VmEntry) -> None:
        """Copy a shared entry's pages into private anonymous memory and move
        that over the entry's address (mremap replaces it atomically).

        Conditions: the map's lock is held."""
        size = e.end - e.start
        tmp = mm.mmap(0, size, mm.PROT_READ | mm.PROT_WRITE, mm.MAP_PRIVATE | mm.MAP_ANONYMOUS)
        try:
            if not e.prot & V.VM_PROT_READ:
                mm.mprotect(e.start, size, mm.PROT_READ)
            try:
                _rw_all(os.getpid(), tmp, e.start, size)
            finally:
                if not e.prot & V.VM_PROT_READ:
                    mm.mprotect(e.start, size, _lin_prot(e.prot))
            mm.mprotect(tmp, size, _lin_prot(e.prot))
            mm.mremap_fixed(tmp, size, e.start)
        except BaseException:
            mm.munmap(tmp, size)
            raise
        if e.obj is not None:
            e.obj.release()
        e.obj, e.offset, e.shared = None, 0, False
        self._reapply(e)

    def _reapply(self, e: VmEntry) -> None:
        """Re-establish per-VMA state that a MAP_FIXED replacement drops.

        Conditions: the map's lock is held."""
        size = e.end - e.start
        if e.inherit == V.VM_INHERIT_NONE:
            mm.madvise(e.start, size, mm.MADV_DONTFORK)
        adv = _PERSISTENT_BEHAVIOR.get(e.behavior, mm.MADV_NORMAL)
        if adv != mm.MADV_NORMAL:
            mm.madvise(e.start, size, adv)
        if e.wired:
            mm.mlock(e.start, size)

    def behavior_set(self, start: int, end: int, behavior: int) -> None:
        """mach_vm_behavior_set: persistent hints are recorded on the
        entries; the others act on the pages now.

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        with self.lock:
            pieces = self.pieces(start, end)
            for s, _t, what in pieces:
                if what is None:
                    raise K.MachError(K.KERN_INVALID_ADDRESS, f"{s:#x} is not mapped")
                prot = _prot(what)
                if behavior in (V.VM_BEHAVIOR_ZERO, V.VM_BEHAVIOR_REUSABLE,
                                V.VM_BEHAVIOR_ZERO_WIRED_PAGES) and not prot & V.VM_PROT_WRITE:
                    raise K.MachError(K.KERN_PROTECTION_FAILURE, f"{s:#x} is not writable")
                if behavior == V.VM_BEHAVIOR_ZERO and prot & V.VM_PROT_EXECUTE:
                    raise K.MachError(K.KERN_PROTECTION_FAILURE, f"{s:#x} is executable")
            if behavior in _PERSISTENT_BEHAVIOR:
                self._advise(pieces, _PERSISTENT_BEHAVIOR[behavior])
                i, j = self._clip(start, end)
                for e in self._entries[i:j]:
                    e.behavior = behavior
            elif behavior == V.VM_BEHAVIOR_WILLNEED:
                self._advise(pieces, mm.MADV_WILLNEED)
            elif behavior == V.VM_BEHAVIOR_DONTNEED:
                # Mach's DONTNEED deactivates and keeps the data; Linux's
                # MADV_DONTNEED would zero private pages. MADV_COLD matches.
                self._advise(pieces, mm.MADV_COLD)
            elif behavior in (V.VM_BEHAVIOR_FREE, V.VM_BEHAVIOR_REUSABLE):
                # the contents become undefined: Linux reclaims them lazily
                self._advise([p for p in pieces if not _shared(p[2])], mm.MADV_FREE)
            elif behavior == V.VM_BEHAVIOR_ZERO:
                for s, t, what in pieces:
                    if _shared(what):
                        mm.memset(s, 0, t - s)
                    else:  # dropped private pages read back as zeros
                        self._advise([(s, t, what)], mm.MADV_DONTNEED)
            # REUSE, CAN_REUSE, ZERO_WIRED_PAGES: nothing to do on Linux

    def behavior_hugepage(self, start: int, end: int) -> None:
        """Back [start, end) with transparent huge pages where the kernel can.

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        with self.lock:
            self._advise(self.pieces(start, end), mm.MADV_HUGEPAGE)

    def page_query(self, addr: int) -> tuple[int, int]:
        """(VM_PAGE_QUERY_* disposition, reference count) of one page, from
        /proc/self/pagemap, and /proc/kpageflags when readable (root).

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        with self.lock:
            what = self.pieces(addr, addr + mm.PAGE_SIZE)[0][2]
            if what is None:
                return 0, 0
            shared = what.shared if isinstance(what, VmEntry) else what.perms[3] == "s"
            file_backed = isinstance(what, procfs.Vma) and (what.inode != 0)
        word = mm.pagemap(addr, 1)[0]
        disp = 0
        refs = 0
        if word & mm.PM_SWAPPED:
            disp |= V.VM_PAGE_QUERY_PAGE_PAGED_OUT
        if word & mm.PM_PRESENT:
            disp |= V.VM_PAGE_QUERY_PAGE_PRESENT
            refs = what.obj.refs if isinstance(what, VmEntry) and what.obj is not None else 1
            pfn = word & mm.PM_PFN_MASK
            kp = mm.kpage(pfn) if pfn else None
            if kp is not None:
                flags = kp[0]
                if flags & mm.KPF_REFERENCED:
                    disp |= V.VM_PAGE_QUERY_PAGE_REF
                if flags & mm.KPF_DIRTY:
                    disp |= V.VM_PAGE_QUERY_PAGE_DIRTY
            if word & mm.PM_EXCLUSIVE and not shared and not file_backed:
                # a private anonymous page mapped by us alone has been written:
                # reads map the shared zero page, which is never exclusive
                disp |= V.VM_PAGE_QUERY_PAGE_DIRTY | V.VM_PAGE_QUERY_PAGE_REF
        if file_backed and disp:
            disp |= V.VM_PAGE_QUERY_PAGE_EXTERNAL
        return disp, refs

    def _advise(self, pieces: list[tuple[int, int, VmEntry | procfs.Vma | None]], advice: int) -> None:
        """Conditions: the map's lock is held."""
        for s, t, _what in pieces:
            try:
                mm.madvise(s, t - s, advice)
            except OSError as err:
                raise K.MachError(K.kr_from_oserror(err, K.ERRNO_RANGE), "madvise") from err

    def msync(self, start: int, end: int, flags: int) -> None:
        """mach_vm_msync. Anonymous memory (ours, private or shared) has no
        backing store to write: SYNC/ASYNC/INVALIDATE only reach file
        mappings. KILLPAGES discards private pages and stops at a hole.

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        with self.lock:
            pieces = self.pieces(start, end)
            if flags & V.VM_SYNC_CONTIGUOUS and any(w is None for _s, _t, w in pieces):
                raise K.MachError(K.KERN_INVALID_ADDRESS, "the range has a hole")
            for s, t, what in pieces:
                if what is None:
                    if flags & V.VM_SYNC_KILLPAGES:
                        break
                    continue
                try:
                    if (isinstance(what, procfs.Vma) and what.inode
                            and flags & (V.VM_SYNC_SYNCHRONOUS | V.VM_SYNC_ASYNCHRONOUS | V.VM_SYNC_INVALIDATE)):
                        mf = mm.MS_SYNC if flags & V.VM_SYNC_SYNCHRONOUS else mm.MS_ASYNC
                        if flags & V.VM_SYNC_INVALIDATE:
                            mf |= mm.MS_INVALIDATE
                        mm.msync(s, t - s, mf)
                    if flags & V.VM_SYNC_KILLPAGES and not _shared(what) and _prot(what) & V.VM_PROT_WRITE:
                        mm.madvise(s, t - s, mm.MADV_DONTNEED)
                    if flags & V.VM_SYNC_DEACTIVATE:
                        mm.madvise(s, t - s, mm.MADV_COLD)
                except OSError as err:
                    raise K.MachError(K.kr_from_oserror(err, K.ERRNO_RANGE), "msync") from err

    def wire(self, start: int, end: int, prot: int) -> None:
        """mach_vm_wire: VM_PROT_NONE unwires (skipping holes after the
        start), anything else wires (all-or-nothing).

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        with self.lock:
            pieces = self.pieces(start, end)
            if pieces[0][2] is None:
                raise K.MachError(K.KERN_INVALID_ADDRESS, f"{start:#x} is not mapped")
            try:
                if prot == V.VM_PROT_NONE:
                    for s, t, what in pieces:
                        if what is not None:
                            mm.munlock(s, t - s)
                else:
                    self.check_range(start, end, prot)
                    mm.mlock(start, end - start)
            except OSError as err:
                raise K.MachError(K.kr_from_oserror(err, K.ERRNO_WIRE), "mlock") from err
            i, j = self._clip(start, end)
            for e in self._entries[i:j]:
                e.wired = 0 if prot == V.VM_PROT_NONE else 1

    # -- copying --------------------------------------------------------------

    def read_into(self, src: int, dst: int, size: int) -> None:
        """Copy [src, src+size) to dst, both in this task, as one checked
        operation: nothing is written unless the whole copy can succeed.

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        with self.lock:
            self.check_range(src & ~mm.PAGE_MASK, _round(src + size), V.VM_PROT_READ)
            self.check_range(dst & ~mm.PAGE_MASK, _round(dst + size), V.VM_PROT_WRITE)
            _self_copy(src, dst, size)

    def copy_out(self, src: int, size: int) -> bytes:
        """The bytes of [src, src+size): KERN_INVALID_ADDRESS or
        KERN_PROTECTION_FAILURE instead of a fault.

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        buf = bytearray(size)
        if size:
            with self.lock:
                self.check_range(src & ~mm.PAGE_MASK, _round(src + size), V.VM_PROT_READ)
                _rw_all(os.getpid(), mm.buffer_address(buf), src, size)
        return bytes(buf)

    def copy_in(self, dst: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``dst``, checked as a whole before any byte moves.

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        size = len(data)
        if not size:
            return
        src = bytearray(data) if not isinstance(data, bytearray) else data
        with self.lock:
            self.check_range(dst & ~mm.PAGE_MASK, _round(dst + size), V.VM_PROT_WRITE)
            try:
                n = mm.process_vm_writev(os.getpid(), mm.buffer_address(src), dst, size)
            except OSError as err:
                raise K.MachError(K.kr_from_oserror(err), "process_vm_writev") from err
            if n != size:
                raise K.MachError(K.KERN_INVALID_ADDRESS, f"fault at {dst + n:#x}")

    def region(self, addr: int) -> RegionInfo | None:
        """The region containing ``addr``, or the first one above it.

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        with self.lock:
            e = self.lookup(addr)
            if e is not None:
                return _entry_info(e)
        for r in self.regions():
            if r.end > addr:
                return r
        return None

    def regions(self) -> list[RegionInfo]:
        """Every region of the address space in order: our entries, and the
        parts of the kernel's VMAs (from one read of /proc/self/smaps) that
        no entry covers.

        Conditions: the map's lock is not held by this thread (it is not
        reentrant); takes it, and makes system calls under it, but waits on
        no other thread."""
        with self.lock:
            entries = list(self._entries)
            vmas = procfs.read_smaps()
        out = [_entry_info(e) for e in entries]
        j = 0
        for v in vmas:
            while j < len(entries) and entries[j].end <= v.start:
                j += 1
            cur, k = v.start, j
            while cur < v.end:
                if k < len(entries) and entries[k].start < v.end:
                    if entries[k].start > cur:
                        out.append(_vma_info(v, cur, entries[k].start))
                    cur = max(cur, entries[k].end)
                    k += 1
                else:
                    out.append(_vma_info(v, cur, v.end))
                    cur = v.end
        out.sort(key=lambda r: r.start)
        return out

    # -- fork -----------------------------------------------------------------

    def _before_fork(self) -> None:
        """Conditions: os.fork's before hook, once the build lock is taken (its
        hook runs first); takes the map's lock and leaves it held across the
        fork."""
        self.lock.acquire()
        snaps = []
        try:
            for e in self._entries:
                if e.shared and e.inherit == V.VM_INHERIT_COPY and e.obj is not None:
                    size = e.end - e.start
                    fd = mm.memfd("mach.copy", size)
                    mm.copy_data(e.obj.fd, fd, size, e.offset, 0)
                    snaps.append((e, fd))
                elif e.shared and e.inherit == V.VM_INHERIT_COPY:
                    # a share of a file pymach did not map: copy its pages
                    snaps.append((e, self._snapshot([(e.start, e.end, e)], e.start, e.end - e.start)))
        except BaseException:
            for _e, fd in snaps:
                files.close(fd)
            self.lock.release()
            raise
        self._fork_snapshots = snaps

    def _after_fork_parent(self) -> None:
        """Conditions: the map's lock is held (_before_fork); releases it."""
        for _e, fd in self._fork_snapshots:
            files.close(fd)
        self._fork_snapshots = []
        self.lock.release()

    def _after_fork_child(self) -> None:
        # VM_INHERIT_NONE entries were not mapped into us (MADV_DONTFORK);
        # wiring is never inherited; VM_INHERIT_COPY entries that were
        # MAP_SHARED get the snapshot taken just before the fork.
        """Conditions: a fork child, in the forking thread; replaces the map's
        lock."""
        snaps = dict((id(e), fd) for e, fd in self._fork_snapshots)
        self._fork_snapshots = []
        keep_e: list[VmEntry] = []
        for e in self._entries:
            if e.inherit == V.VM_INHERIT_NONE:
                if e.obj is not None:
                    e.obj.release()
                continue
            e.wired = 0
            fd = snaps.pop(id(e), None)
            if fd is not None:
                mm.mmap(e.start, e.end - e.start, _lin_prot(e.prot), mm.MAP_SHARED | mm.MAP_FIXED, fd, 0)
                if e.obj is not None:
                    e.obj.release()
                e.obj, e.offset = VmObject(fd, e.end - e.start), 0
                adv = _PERSISTENT_BEHAVIOR.get(e.behavior, mm.MADV_NORMAL)
                if adv != mm.MADV_NORMAL:
                    mm.madvise(e.start, e.end - e.start, adv)
            keep_e.append(e)
        for fd in snaps.values():
            files.close(fd)
        self._entries = keep_e
        self._starts = [e.start for e in keep_e]
        self._foreign = None
        self._first_free = 0
        self.lock = threading.Lock()

    def install_fork_hooks(self) -> None:
        os.register_at_fork(before=self._before_fork, after_in_parent=self._after_fork_parent,
                            after_in_child=self._after_fork_child)


# -- helpers -------------------------------------------------------------------

def _prot(what: "VmEntry | procfs.Vma") -> int:
    return what.prot if isinstance(what, VmEntry) else _prot_of_perms(what.perms)


def _max_prot(what: "VmEntry | procfs.Vma") -> int:
    if isinstance(what, VmEntry):
        return what.max_prot
    if not what.vmflags:
        return V.VM_PROT_ALL
    return ((V.VM_PROT_READ if "mr" in what.vmflags else 0) | (V.VM_PROT_WRITE if "mw" in what.vmflags else 0)
            | (V.VM_PROT_EXECUTE if "me" in what.vmflags else 0))


def _file_share_prots(s: int, t: int, v: procfs.Vma) -> tuple[int, int]:
    """(cur, max) of a copy FALSE remap of [s, t) of ``v``, a mapping
    pymach did not map, or KERN_NOT_SUPPORTED when Linux cannot share it.

    A MAP_SHARED file mapping is shared as it is: the same file at the same
    offset, MAP_SHARED, with its protections. A MAP_PRIVATE one maps the
    page cache's pages as long as none was written, so it is shared (a
    MAP_SHARED read-only view of the file) only while that holds: it must
    not be writable now, none of its pages in [s, t) may be an anonymous
    copy already, and the new mapping's maximum protection excludes
    VM_PROT_WRITE. Anonymous memory cannot be shared after the fact."""
    cur, mx = _prot(v), _max_prot(v)
    if not v.inode:
        raise K.MachError(K.KERN_NOT_SUPPORTED, f"{s:#x}: anonymous memory pymach did not map cannot be "
                          "shared (allocate it with mach_vm_allocate)")
    if v.shared:
        return cur, mx
    if cur & V.VM_PROT_WRITE:
        raise K.MachError(K.KERN_NOT_SUPPORTED, f"{s:#x}: a writable private file mapping pymach did not "
                          "map cannot be shared (its writes would not reach the new mapping)")
    try:
        written = mapfile.private_copies(s, t)
    except OSError as err:
        raise K.MachError(K.kr_from_oserror(err), "reading /proc/self/pagemap") from err
    if written:
        raise K.MachError(K.KERN_NOT_SUPPORTED, f"{s:#x}-{t:#x}: pages of this private file mapping were "
                          "written: they are the process's own copies, not the file's")
    return cur, mx & ~V.VM_PROT_WRITE


def _shared(what: "VmEntry | procfs.Vma | None") -> bool:
    return what is not None and (what.shared if isinstance(what, VmEntry) else what.perms[3] == "s")


def _round(x: int) -> int:
    return (x + mm.PAGE_MASK) & ~mm.PAGE_MASK


def _populated_runs(start: int, end: int) -> Iterator[tuple[int, int]]:
    """Runs of pages in [start, end) that are present or swapped out."""
    n = (end - start) // mm.PAGE_SIZE
    words = mm.pagemap(start, n)
    run = -1
    for k, w in enumerate(words):
        if w & (mm.PM_PRESENT | mm.PM_SWAPPED):
            if run < 0:
                run = k
        elif run >= 0:
            yield start + run * mm.PAGE_SIZE, start + k * mm.PAGE_SIZE
            run = -1
    if run >= 0:
        yield start + run * mm.PAGE_SIZE, end


def _self_copy(src: int, dst: int, size: int) -> None:
    """memmove within our own address space through process_vm_readv, so a
    fault is an error and not a signal."""
    if size == 0:
        return
    pid = os.getpid()
    if src < dst < src + size or dst < src < dst + size:
        tmp = mm.mmap(0, size, mm.PROT_READ | mm.PROT_WRITE, mm.MAP_PRIVATE | mm.MAP_ANONYMOUS)
        try:
            _rw_all(pid, tmp, src, size)
            _rw_all(pid, dst, tmp, size)
        finally:
            mm.munmap(tmp, size)
    else:
        _rw_all(pid, dst, src, size)


def _rw_all(pid: int, local: int, remote: int, size: int) -> None:
    done = 0
    while done < size:
        try:
            n = mm.process_vm_readv(pid, local + done, remote + done, size - done)
        except OSError as err:
            raise K.MachError(K.kr_from_oserror(err), "process_vm_readv") from err
        if n <= 0:
            raise K.MachError(K.KERN_INVALID_ADDRESS, f"fault at {remote + done:#x}")
        done += n


def _entry_info(e: VmEntry) -> RegionInfo:
    # A shared mapping reports shared, whoever made it: Linux maps it
    # MAP_SHARED. An object named by a memory entry or a shared remap is
    # true-shared; one shared only for a fork child is shared.
    if e.shared:
        # (no object: a copy FALSE remap of a file mapping pymach did not map)
        mode = V.SM_TRUESHARED if e.obj is None or e.obj.true_share else V.SM_SHARED
    elif e.obj is not None:
        mode = V.SM_COW
    else:
        mode = V.SM_PRIVATE
    return RegionInfo(e.start, e.end, e.prot, e.max_prot, e.inherit, e.shared, False, e.offset,
                      e.behavior, e.wired, e.tag, mode, "", True)


def _vma_info(v: procfs.Vma, start: int, end: int) -> RegionInfo:
    mx = _max_prot(v)
    shared = v.shared
    if shared:
        mode = V.SM_SHARED
    elif v.inode or v.path.startswith("/"):
        mode = V.SM_COW
    else:
        mode = V.SM_PRIVATE
    inherit = V.VM_INHERIT_NONE if "dc" in v.vmflags else (
        V.VM_INHERIT_SHARE if shared else V.VM_INHERIT_COPY)
    wired = 1 if "lo" in v.vmflags else 0
    return RegionInfo(start, end, _prot_of_perms(v.perms), mx, inherit, shared, False,
                      v.offset + (start - v.start), V.VM_BEHAVIOR_DEFAULT, wired, 0, mode, v.path, False)
