"""The runtime's record of the VM map agrees with /proc/self/maps.

A Hypothesis state machine allocates (anywhere, fixed, fixed|overwrite),
deallocates (partially, across several entries, across holes), protects
(current and maximum) and sets inheritance (all three) inside an arena that
it reserved. After every step:

- every page of every recorded entry is mapped with the entry's rwx
  protection and p/s flag, MADV_DONTFORK ("dc") exactly when the entry is
  VM_INHERIT_NONE, a memfd behind shared entries and anonymous memory
  behind private ones;
- arena pages without an entry are not mapped at all;
- max_prot contains prot;
- the record matches a model of what the operations should have done,
  page by page, including the bytes last written to each page.

The arena is 32 usable pages between two guard pages that are never
released. The guards bound every hole the machine makes to 32 pages
(128 KiB), smaller than any mapping the interpreter makes on its own
(pymalloc arenas are 1 MiB, glibc mmaps chunks of more than 128 KiB), so
nothing foreign lands in a hole and "unmapped" can be checked strictly.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pymach import (
    VM_INHERIT_COPY,
    VM_INHERIT_NONE,
    VM_INHERIT_SHARE,
    VM_PROT_ALL,
    VM_PROT_DEFAULT,
    VM_PROT_NONE,
    VM_PROT_READ,
    VM_PROT_WRITE,
    InvalidAddressError,
    NoSpaceError,
    ProtectionFailureError,
    Task,
    vm_page_size,
)
from pymach._linux import mm
from pymach.lowlevel import SELF

from procutil import Vma, peek, poke, read_vmas

P = vm_page_size
N = 32  # usable arena pages
MAX_EXTRAS = 4


# -- /proc/self/smaps ------------------------------------------------------------

def rwx(prot: int) -> str:
    return ("r" if prot & 1 else "-") + ("w" if prot & 2 else "-") + ("x" if prot & 4 else "-")


class Maps:
    """A snapshot of the VMAs, searchable by address."""

    def __init__(self) -> None:
        self.vmas = read_vmas()
        self.starts = [v.start for v in self.vmas]

    def at(self, addr: int) -> Vma | None:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and addr < self.vmas[i].end:
            return self.vmas[i]
        return None


def check_record_agrees_with_maps(entries=None, maps: Maps | None = None) -> None:
    """Every page of every entry is mapped as the entry says."""
    entries = SELF.map.entries() if entries is None else entries
    maps = Maps() if maps is None else maps
    prev_end = 0
    for e in entries:
        assert e.start % P == 0 and e.end % P == 0 and e.start < e.end, e
        assert e.start >= prev_end, f"entries overlap or are out of order at {e}"
        prev_end = e.end
        assert e.prot & ~e.max_prot == 0, f"prot exceeds max_prot: {e}"
        for a in range(e.start, e.end, P):
            v = maps.at(a)
            assert v is not None, f"{a:#x} of {e} is not mapped"
            assert v.perms[:3] == rwx(e.prot), f"{a:#x}: maps says {v.perms}, record {e}"
            assert v.perms[3] == ("s" if e.shared else "p"), f"{a:#x}: maps says {v.perms}, record {e}"
            assert ("dc" in v.flags) == (e.inherit == VM_INHERIT_NONE), \
                f"{a:#x}: VmFlags {sorted(v.flags)}, record {e}"
            if e.shared:
                assert v.path.startswith("/memfd:"), f"{a:#x}: shared entry backed by {v.path!r}"
            else:
                assert v.inode == 0, f"{a:#x}: private entry backed by {v.path!r}"


# -- the model ---------------------------------------------------------------------

@dataclass(frozen=True)
class Page:
    prot: int = VM_PROT_DEFAULT
    max_prot: int = VM_PROT_ALL
    inherit: int = VM_INHERIT_COPY
    shared: bool = False
    tag: int = 0
    data: bytes = bytes(8)  # the first 8 bytes of the page


pages = st.integers(0, N - 1)
lengths = st.integers(1, 12)
prots = st.integers(VM_PROT_NONE, VM_PROT_ALL)
inherits = st.sampled_from([VM_INHERIT_SHARE, VM_INHERIT_COPY, VM_INHERIT_NONE])


# Known bug: VM_INHERIT_SHARE on a private entry that is VM_INHERIT_NONE
# leaves it MADV_DONTFORK (VmMap._make_shared calls _reapply while the entry
# still says NONE), so the record says SHARE and a fork child gets nothing.
# test_none_then_share_keeps_the_record_and_maps_in_agreement replays it; the
# random machine routes around it (sets such pages to COPY first) so that it
# keeps looking for other disagreements. Set this to False once it is fixed.
ROUTE_AROUND_NONE_TO_SHARE = False


class MapsAgree(RuleBasedStateMachine):
    route_around_none_to_share = ROUTE_AROUND_NONE_TO_SHARE

    def __init__(self) -> None:
        super().__init__()
        self.task = Task.self()
        self.arena = self.task.allocate((N + 2) * P)
        self.lo = self.arena.address          # guard page
        self.base = self.lo + P               # first usable page
        self.hi = self.base + N * P           # guard page
        self.task.protect(self.lo, P, VM_PROT_NONE)
        self.task.protect(self.hi, P, VM_PROT_NONE)
        self.serial = 0
        self.model: list[Page | None] = [self.fresh(i, 0) for i in range(N)]
        self.extras: list[tuple[int, int]] = []

    def teardown(self) -> None:
        try:
            self.task.deallocate(self.lo, (N + 2) * P)
        finally:
            for a, size in self.extras:
                self.task.deallocate(a, size)
            self.extras = []
        assert not [e for e in SELF.map.entries() if e.start < self.hi + P and e.end > self.lo]

    # -- helpers ------------------------------------------------------------------

    def addr(self, page: int) -> int:
        return self.base + page * P

    def span(self, start: int, n: int) -> range:
        return range(start, min(start + n, N))

    def fresh(self, page: int, tag: int) -> Page:
        """A newly allocated page, stamped with contents of its own so that
        a page lost or moved by a later operation shows."""
        self.serial += 1
        data = b"%02d:%05d" % (page, self.serial % 100000)
        poke(self.addr(page), data)
        return Page(tag=tag, data=data)

    # -- rules ----------------------------------------------------------------------

    @rule(start=pages, n=lengths, overwrite=st.booleans(), tag=st.sampled_from([0, 0, 200]))
    def allocate_fixed(self, start: int, n: int, overwrite: bool, tag: int) -> None:
        span = self.span(start, n)
        taken = any(self.model[i] is not None for i in span)
        if taken and not overwrite:
            with pytest.raises(NoSpaceError):
                self.task.allocate(len(span) * P, address=self.addr(start), tag=tag)
            return
        r = self.task.allocate(len(span) * P, address=self.addr(start), overwrite=overwrite, tag=tag)
        assert (r.address, r.size) == (self.addr(start), len(span) * P)
        for i in span:
            assert peek(self.addr(i), 8) == bytes(8), f"page {i} is not zero-filled"
            self.model[i] = self.fresh(i, tag)

    @precondition(lambda self: len(self.extras) < MAX_EXTRAS)
    @rule(n=st.integers(1, 4))
    def allocate_anywhere(self, n: int) -> None:
        r = self.task.allocate(n * P)
        if self.base <= r.address < self.hi:  # it found a hole in the arena
            assert r.end <= self.hi
            for i in range((r.address - self.base) // P, (r.end - self.base) // P):
                assert self.model[i] is None, f"allocated over page {i}"
                self.model[i] = self.fresh(i, 0)
        else:
            assert r.end <= self.lo or r.address >= self.hi + P
            self.extras.append((r.address, r.size))

    @precondition(lambda self: self.extras)
    @rule(data=st.data())
    def deallocate_extra(self, data) -> None:
        a, size = self.extras.pop(data.draw(st.integers(0, len(self.extras) - 1)))
        self.task.deallocate(a, size)

    @rule(start=pages, n=lengths)
    def deallocate(self, start: int, n: int) -> None:
        span = self.span(start, n)
        self.task.deallocate(self.addr(start), len(span) * P)
        for i in span:
            self.model[i] = None

    @rule(start=pages, n=lengths, prot=prots, set_max=st.booleans())
    def protect(self, start: int, n: int, prot: int, set_max: bool) -> None:
        span = self.span(start, n)
        # As XNU's vm_map_protect, the range is checked in address order and
        # the first problem decides: a hole, or a page whose maximum is exceeded.
        error = None
        for i in span:
            p = self.model[i]
            if p is None:
                error = InvalidAddressError
                break
            if prot & ~p.max_prot:
                error = ProtectionFailureError
                break
        if error is not None:
            with pytest.raises(error):
                self.task.protect(self.addr(start), len(span) * P, prot, set_maximum=set_max)
        else:
            self.task.protect(self.addr(start), len(span) * P, prot, set_maximum=set_max)
            for i in span:
                p = self.model[i]
                self.model[i] = (replace(p, max_prot=prot, prot=p.prot & prot) if set_max
                                 else replace(p, prot=prot))

    @rule(start=pages, n=lengths, inheritance=inherits)
    def inherit(self, start: int, n: int, inheritance: int) -> None:
        span = self.span(start, n)
        if self.route_around_none_to_share and inheritance == VM_INHERIT_SHARE:
            for i in span:
                p = self.model[i]
                if p is not None and p.inherit == VM_INHERIT_NONE and not p.shared:
                    self.task.inherit(self.addr(i), P, VM_INHERIT_COPY)
                    self.model[i] = replace(p, inherit=VM_INHERIT_COPY)
        self.task.inherit(self.addr(start), len(span) * P, inheritance)  # holes are skipped
        for i in span:
            p = self.model[i]
            if p is not None:
                self.model[i] = replace(p, inherit=inheritance,
                                        shared=p.shared or inheritance == VM_INHERIT_SHARE)

    @rule(page=pages, data=st.binary(min_size=8, max_size=8))
    def stamp(self, page: int, data: bytes) -> None:
        p = self.model[page]
        if p is not None and p.prot & VM_PROT_WRITE:
            poke(self.addr(page), data)
            self.model[page] = replace(p, data=data)

    @rule(page=pages, data=st.binary(min_size=1, max_size=8))
    def safe_write(self, page: int, data: bytes) -> None:
        p = self.model[page]
        if p is None:
            with pytest.raises(InvalidAddressError):
                self.task.write(self.addr(page), data)
        elif not p.prot & VM_PROT_WRITE:
            with pytest.raises(ProtectionFailureError):
                self.task.write(self.addr(page), data)
        else:
            self.task.write(self.addr(page), data)
            self.model[page] = replace(p, data=data + p.data[len(data):])

    @rule(page=pages)
    def safe_read(self, page: int) -> None:
        p = self.model[page]
        if p is None:
            with pytest.raises(InvalidAddressError):
                self.task.read(self.addr(page), 8)
        elif not p.prot & VM_PROT_READ:
            with pytest.raises(ProtectionFailureError):
                self.task.read(self.addr(page), 8)
        else:
            assert self.task.read(self.addr(page), 8) == p.data

    @rule(page=pages)
    def region_info(self, page: int) -> None:
        a = self.addr(page)
        info = self.task.region(a)
        p = self.model[page]
        if p is None:
            assert info.start > a
        else:
            assert info.start <= a < info.end and info.pymach
            assert (info.protection, info.max_protection, info.inheritance, info.shared, info.user_tag) \
                == (p.prot, p.max_prot, p.inherit, p.shared, p.tag)

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def record_agrees_with_maps_and_model(self) -> None:
        entries = SELF.map.entries()
        maps = Maps()
        check_record_agrees_with_maps(entries, maps)
        starts = [e.start for e in entries]

        def entry_at(a):
            i = bisect.bisect_right(starts, a) - 1
            return entries[i] if i >= 0 and a < entries[i].end else None

        for a in (self.lo, self.hi):
            g = entry_at(a)
            assert g is not None and g.prot == VM_PROT_NONE, f"guard page {a:#x} lost: {g}"
        for i, p in enumerate(self.model):
            a = self.addr(i)
            e = entry_at(a)
            if p is None:
                assert e is None, f"page {i} should have no entry: {e}"
                v = maps.at(a)
                assert v is None, f"page {i} has no entry but is mapped: {v}"
                continue
            assert e is not None, f"page {i} lost its entry"
            assert (e.prot, e.max_prot, e.inherit, e.shared, e.tag) == \
                (p.prot, p.max_prot, p.inherit, p.shared, p.tag), f"page {i}: record {e}, model {p}"
            if p.prot & VM_PROT_READ:
                assert peek(a, 8) == p.data, f"page {i} lost its contents"
        for a, size in self.extras:
            got = [(e.start, e.end, e.prot, e.inherit, e.shared) for e in entries
                   if e.start < a + size and e.end > a]
            assert got == [(a, a + size, VM_PROT_DEFAULT, VM_INHERIT_COPY, False)]


def test_record_agrees_with_proc_maps():
    run_state_machine_as_test(MapsAgree, settings=settings(
        max_examples=30, stateful_step_count=20, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow]))


def test_none_then_share_keeps_the_record_and_maps_in_agreement():
    # the failure the state machine found, replayed deterministically
    state = MapsAgree()
    state.route_around_none_to_share = False
    try:
        state.record_agrees_with_maps_and_model()
        state.inherit(start=2, n=1, inheritance=VM_INHERIT_NONE)
        state.record_agrees_with_maps_and_model()
        state.inherit(start=0, n=4, inheritance=VM_INHERIT_SHARE)
        state.record_agrees_with_maps_and_model()
    finally:
        state.teardown()


# -- the checker can fail ----------------------------------------------------------------

def test_checker_catches_a_protection_changed_behind_the_records_back():
    task = Task.self()
    with task.allocate(2 * P) as r:
        check_record_agrees_with_maps()
        mm.mprotect(r.address + P, P, mm.PROT_READ)
        try:
            with pytest.raises(AssertionError, match="maps says r--p"):
                check_record_agrees_with_maps()
        finally:
            mm.mprotect(r.address + P, P, mm.PROT_READ | mm.PROT_WRITE)
        check_record_agrees_with_maps()


def test_checker_catches_an_unmapping_and_a_lost_dontfork():
    task = Task.self()
    with task.allocate(2 * P) as r:
        r.inherit(VM_INHERIT_NONE)
        mm.madvise(r.address, P, mm.MADV_DOFORK)
        try:
            with pytest.raises(AssertionError, match="VmFlags"):
                check_record_agrees_with_maps()
        finally:
            mm.madvise(r.address, P, mm.MADV_DONTFORK)
        mm.munmap(r.address + P, P)
        with pytest.raises(AssertionError, match="is not mapped"):
            check_record_agrees_with_maps()
