"""Memory entries, mach_vm_map of an entry, mach_vm_remap and
mach_vm_remap_new: XNU's cases that make sense on Linux, their effects
checked with ctypes, and entries shared with real fork children.

The cases are numbered by routine (M: mach_make_memory_entry_64, V:
mach_vm_map of an entry, R: mach_vm_remap and mach_vm_remap_new, P: the
entry's handle). Each section cites where XNU decides each case, as
file:line in apple-oss-distributions/xnu at tag xnu-11417.101.15 (paths
under osfmk/vm/ unless they say otherwise).

Where pymach differs by design (docs/deviations.md, "Memory entries"), the
test checks what pymach documents: memory pymach did not map is
KERN_NOT_SUPPORTED for sharing, MAP_MEM_PURGABLE is ordinary memory, and
mach_vm_region reports every shared mapping as shared.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from collections.abc import Callable

import pytest

import pymach
import pymach.mach as M
from pymach._kern.ipc_port import SendCap
from pymach._kern.task import SELF
from pymach._kern.vm_memory_entry import MemoryEntry as KEntry
from pymach.mach import byref
from procutil import forked, peek, poke

T = M.mach_task_self
P = M.vm_page_size
R = M.VM_PROT_READ
W = M.VM_PROT_WRITE
X = M.VM_PROT_EXECUTE
RW = R | W
NONE = M.VM_PROT_NONE
ALL = M.VM_PROT_ALL
MASK = M.VM_PROT_IS_MASK
U64 = (1 << 64) - 1
SENTINEL = 0x5EED
ANY = M.VM_FLAGS_ANYWHERE
FIXED = M.VM_FLAGS_FIXED
INH = M.VM_INHERIT_DEFAULT

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


class Mem:
    """The regions and names a test makes, all released at the end."""

    def __init__(self) -> None:
        self.regions: list[tuple[int, int]] = []
        self.names: list[int] = []

    def alloc(self, pages: int, fill: bytes | None = b"B") -> int:
        a = M.mach_vm_address_t()
        assert M.mach_vm_allocate(T(), byref(a), pages * P, ANY) == 0
        self.regions.append((a.value, pages * P))
        if fill is not None:
            for i in range(pages):
                poke(a.value + i * P, fill * 8)
        return a.value

    def make(self, size: int, offset: int, perm: int, parent: int = 0) -> tuple[int, int, int]:
        """(kr, *size, handle); both out-parameters start as sentinels."""
        sz = M.memory_object_size_t(size & U64)
        h = M.mach_port_t(SENTINEL)
        kr = M.mach_make_memory_entry_64(T(), byref(sz), offset, perm, byref(h), parent)
        if kr == 0 and h.value not in (0, SENTINEL):
            self.names.append(h.value)
        return kr, sz.value, h.value

    def entry(self, size: int, offset: int, perm: int, parent: int = 0) -> int:
        kr, _sz, h = self.make(size, offset, perm, parent)
        assert kr == 0, M.mach_error_string(kr)
        return h

    def map(self, name: int, size: int, *, offset: int = 0, copy: int = 0, cur: int = RW, mx: int = RW,
            flags: int = ANY, addr: int | None = None, mask: int = 0, inh: int = INH,
            unmap: int | None = None) -> tuple[int, int]:
        """(kr, address); the address starts as ``addr``, or a sentinel."""
        a = M.mach_vm_address_t(SENTINEL if addr is None else addr)
        kr = M.mach_vm_map(T(), byref(a), size, mask, flags, name, offset, copy, cur, mx, inh)
        if kr == 0:
            self.regions.append((a.value & ~(P - 1), unmap or _round(size + (a.value & (P - 1)))))
        return kr, a.value

    def remap(self, src: int, size: int, *, copy: int = 0, flags: int = ANY, addr: int | None = None,
              mask: int = 0, inh: int = INH, src_task: int | None = None, new: tuple[int, int] | None = None
              ) -> tuple[int, int, int, int]:
        """(kr, address, cur, max) of mach_vm_remap, or with ``new`` (cur,
        max) of mach_vm_remap_new; out-parameters start as sentinels."""
        a = M.mach_vm_address_t(SENTINEL if addr is None else addr)
        cur, mx = M.vm_prot_t(new[0] if new else SENTINEL), M.vm_prot_t(new[1] if new else SENTINEL)
        call = M.mach_vm_remap_new if new else M.mach_vm_remap
        kr = call(T(), byref(a), size, mask, flags, T() if src_task is None else src_task, src, copy,
                  byref(cur), byref(mx), inh)
        if kr == 0:
            self.regions.append((a.value & ~(P - 1), _round(size + (a.value & (P - 1)))))
        return kr, a.value, cur.value, mx.value

    def close(self) -> None:
        for name in self.names:
            M.mach_port_destroy(T(), name)
        for a, n in self.regions:
            M.mach_vm_deallocate(T(), a, n)


def _round(n: int) -> int:
    return (n + P - 1) & ~(P - 1)


@pytest.fixture
def mem():
    m = Mem()
    try:
        yield m
    finally:
        m.close()


def info(addr: int) -> pymach.RegionInfo:
    return pymach.Task.self().region(addr)


def kentry(name: int) -> KEntry:
    e = SELF.space.lookup(name)
    assert e is not None and isinstance(e.cap, KEntry)
    return e.cap


def protect(addr: int, size: int, prot: int, set_max: bool = False) -> None:
    assert M.mach_vm_protect(T(), addr, size, int(set_max), prot) == 0


def new_port(send: bool = False) -> int:
    p = M.mach_port_t()
    assert M.mach_port_allocate(T(), M.MACH_PORT_RIGHT_RECEIVE, byref(p)) == 0
    if send:
        assert M.mach_port_insert_right(T(), p, p, M.MACH_MSG_TYPE_MAKE_SEND) == 0
    return p.value


# -- mach_make_memory_entry_64 ---------------------------------------------------------
# vm_memory_entry.c:1143-1208 mach_make_memory_entry_internal picks the path.
# M1 vm_sanitize.c:796-802 KERN_INVALID_VALUE for an unknown MAP_MEM_* flag; M2
# :808-809 other protection bits are dropped. Share path (vm_memory_entry.c:615):
# M3 :646-647 size 0 is KERN_INVALID_ARGUMENT (the copy path :528-529), M5/M6
# :663-671 a carry or a range rounding to nothing (vm_sanitize.c:539-546); M7/M8
# :916-917 the size given back counts from the data address; M13-M15 :790-813
# KERN_PROTECTION_FAILURE for protections the range does not have (with
# MAP_MEM_VM_SHARE or MASK: what is left, :796-799); M16/M17 :725-726 only the
# first entry's object is taken (vmkf_copy_single_object), MAP_MEM_VM_SHARE takes
# every entry; M18/M19 holes are KERN_INVALID_ADDRESS (vm_map.c:17636-17643, and
# the copy path through vm_map_copyin, vm_map.c:12189-12190); M27 :827-847
# MAP_MEM_NAMED_REUSE gives the parent back. Named create (:301): M4 :324-326 size 0
# succeeds with no handle, M9-M12 :358-360 KERN_INVALID_ARGUMENT with
# MAP_MEM_USE_DATA_ADDR, :367-369 KERN_FAILURE above ANON_MAX_SIZE, :400-406
# KERN_INVALID_ARGUMENT for MAP_MEM_PURGABLE without write; a purgable mapping
# must be zero-fill memory of its own (vm_map.c:3132-3141). Copy path (:504): M20
# a snapshot, M21 KERN_PROTECTION_FAILURE for unreadable memory
# (vm_map.c:12317-12320). From a parent (:1005): M22 :1175-1176 a copy entry is no
# parent (KERN_INVALID_ARGUMENT), M23/M25 :983-984 a range past the parent,
# M24 :1070-1071 KERN_PROTECTION_FAILURE beyond the parent's protection, M28/M29 a
# port that is no entry is no parent (:1174, then the share path). M26 MAP_MEM_ONLY
# (:156): :195-196 KERN_INVALID_ARGUMENT without a parent or with a data
# address, :206-208 KERN_INVALID_RIGHT for another cache mode. Memory pymach did
# not map, and MAP_MEM_VM_SHARE over two objects, are KERN_NOT_SUPPORTED: a
# documented deviation.

def test_m1_unknown_flag_is_invalid_value_and_leaves_the_out_parameters(mem: Mem) -> None:
    b = mem.alloc(4)
    for bit in (0x100, 0x1000, 0x1F00):
        assert mem.make(P, b, RW | bit) == (M.KERN_INVALID_VALUE, P, SENTINEL)


def test_m2_other_protection_bits_are_dropped(mem: Mem) -> None:
    b = mem.alloc(4)
    for bit in (0x8, 0x10, 0x20, 0x80):
        kr, size, h = mem.make(P, b, RW | bit)
        assert (kr, size) == (0, P) and kentry(h).protection == RW


def test_m3_m5_m6_size_zero_and_wrapping_ranges(mem: Mem) -> None:
    b = mem.alloc(4)
    assert mem.make(0, b, RW) == (M.KERN_INVALID_ARGUMENT, 0, SENTINEL)
    assert mem.make(0, b, RW | M.MAP_MEM_VM_COPY) == (M.KERN_INVALID_ARGUMENT, 0, SENTINEL)
    assert mem.make(0, b, RW | M.MAP_MEM_VM_SHARE) == (M.KERN_INVALID_ARGUMENT, 0, SENTINEL)
    assert mem.make(U64, b, RW) == (M.KERN_INVALID_ARGUMENT, U64, SENTINEL)
    assert mem.make(U64 - b - 10, b, RW)[0] == M.KERN_INVALID_ARGUMENT  # the end rounds to 0


def test_m4_named_create_of_size_zero_succeeds_with_no_handle(mem: Mem) -> None:
    assert mem.make(0, 0, RW | M.MAP_MEM_NAMED_CREATE) == (0, 0, M.MACH_PORT_NULL)
    assert mem.make(0, 0x100, RW | M.MAP_MEM_NAMED_CREATE | M.MAP_MEM_USE_DATA_ADDR) == (0, 0, 0)


def test_m7_m8_size_and_the_data_address(mem: Mem) -> None:
    b = mem.alloc(4)
    assert mem.make(0x100, b + 0x100, RW)[:2] == (0, P)
    assert mem.make(0x100, b + 0x100, RW | M.MAP_MEM_USE_DATA_ADDR)[:2] == (0, P - 0x100)
    assert mem.make(0x100, b + 0x100, RW | M.MAP_MEM_VM_COPY | M.MAP_MEM_USE_DATA_ADDR)[:2] == (0, P - 0x100)
    assert mem.make(P, b + P - 1, RW)[:2] == (0, 2 * P)


def test_m9_to_m12_named_create(mem: Mem) -> None:
    assert mem.make(P, 0x100, RW | M.MAP_MEM_NAMED_CREATE)[:2] == (0, 2 * P)  # the offset only rounds
    assert mem.make((1 << 64) - P, 0, RW | M.MAP_MEM_NAMED_CREATE) == (M.KERN_FAILURE, (1 << 64) - P, SENTINEL)
    assert mem.make(P, 0, RW | M.MAP_MEM_NAMED_CREATE | M.MAP_MEM_USE_DATA_ADDR)[0] == M.KERN_INVALID_ARGUMENT
    assert mem.make(P, 0, R | M.MAP_MEM_NAMED_CREATE | M.MAP_MEM_PURGABLE)[0] == M.KERN_INVALID_ARGUMENT
    # writable purgeable memory is ordinary memory (docs/deviations.md)
    kr, size, h = mem.make(2 * P, 0, RW | M.MAP_MEM_NAMED_CREATE | M.MAP_MEM_PURGABLE)
    assert (kr, size) == (0, 2 * P)
    assert mem.map(h, 2 * P, flags=ANY | M.VM_FLAGS_PURGABLE)[0] == 0
    assert mem.map(h, P, flags=ANY | M.VM_FLAGS_PURGABLE)[0] == M.KERN_INVALID_ARGUMENT  # not the whole object
    plain = mem.entry(2 * P, 0, RW | M.MAP_MEM_NAMED_CREATE)
    assert mem.map(plain, 2 * P, flags=ANY | M.VM_FLAGS_PURGABLE)[0] == M.KERN_INVALID_ARGUMENT


def test_named_create_is_zero_filled_and_sealed(mem: Mem) -> None:
    h = mem.entry(3 * P, 0, RW | M.MAP_MEM_NAMED_CREATE)
    kr, a = mem.map(h, 3 * P)
    assert kr == 0 and peek(a, 3 * P) == bytes(3 * P)
    fd = kentry(h).fd
    with pytest.raises(PermissionError):
        os.ftruncate(fd, P)
    with pytest.raises(PermissionError):
        os.ftruncate(fd, 4 * P)


def test_m13_m14_m15_the_current_and_maximum_protection(mem: Mem) -> None:
    b = mem.alloc(4)
    protect(b, 4 * P, R)  # current R, maximum ALL
    assert mem.make(P, b, RW) == (M.KERN_PROTECTION_FAILURE, P, SENTINEL)
    kr, _size, h = mem.make(P, b, RW | MASK)
    assert kr == 0 and kentry(h).protection == R
    assert mem.map(h, P, cur=RW, mx=RW)[0] == M.KERN_INVALID_RIGHT
    assert mem.map(h, P, cur=R, mx=R)[0] == 0
    c = mem.alloc(2)
    assert mem.make(P, c, R | X)[0] == M.KERN_PROTECTION_FAILURE
    protect(c, 2 * P, R, set_max=True)  # maximum R
    assert mem.make(P, c, RW)[0] == M.KERN_PROTECTION_FAILURE
    assert mem.make(P, c, R)[0] == 0
    d = mem.alloc(1)
    protect(d, P, NONE)
    assert mem.make(P, d, RW | MASK)[0] == M.KERN_PROTECTION_FAILURE  # nothing left


def test_m16_m17_a_range_over_two_entries(mem: Mem) -> None:
    b = mem.alloc(4)
    protect(b + 2 * P, 2 * P, R)
    assert mem.make(4 * P, b, R)[:2] == (0, 2 * P)  # the first entry only
    b = mem.alloc(4)
    protect(b + 2 * P, 2 * P, R)
    assert mem.make(4 * P, b, R | M.MAP_MEM_VM_SHARE)[:2] == (0, 4 * P)
    assert mem.make(4 * P, b, RW | M.MAP_MEM_VM_SHARE)[0] == M.KERN_PROTECTION_FAILURE


def test_m18_m19_holes(mem: Mem) -> None:
    b = mem.alloc(2)
    assert M.mach_vm_deallocate(T(), b + P, P) == 0
    for flag in (0, M.MAP_MEM_VM_SHARE, M.MAP_MEM_VM_COPY):
        assert mem.make(P, b + P, RW | flag) == (M.KERN_INVALID_ADDRESS, P, SENTINEL)
    assert mem.make(2 * P, b, RW)[:2] == (0, P)
    assert mem.make(2 * P, b, RW | M.MAP_MEM_VM_SHARE)[0] == M.KERN_INVALID_ADDRESS
    assert mem.make(2 * P, b, RW | M.MAP_MEM_VM_COPY)[0] == M.KERN_INVALID_ADDRESS


def test_m20_v20_a_copy_entry_is_a_snapshot(mem: Mem) -> None:
    b = mem.alloc(2)
    poke(b, b"before")
    protect(b, 2 * P, R)
    kr, size, h = mem.make(2 * P, b, RW | M.MAP_MEM_VM_COPY)  # protection not checked against the region
    assert (kr, size) == (0, 2 * P) and kentry(h).is_copy
    protect(b, 2 * P, RW)
    poke(b, b"after!")
    kr, a = mem.map(h, 2 * P)
    assert kr == 0 and peek(a, 6) == b"before"
    poke(a, b"mapped")
    assert peek(b, 6) == b"after!"
    kr, a2 = mem.map(h, 2 * P)  # two copy=FALSE mappings of one copy entry share it
    assert kr == 0 and peek(a2, 6) == b"mapped"


def test_m21_copy_of_unreadable_memory(mem: Mem) -> None:
    b = mem.alloc(1)
    protect(b, P, NONE, set_max=True)
    assert mem.make(P, b, R | M.MAP_MEM_VM_COPY) == (M.KERN_PROTECTION_FAILURE, P, SENTINEL)
    c = mem.alloc(1, fill=b"C")
    protect(c, P, NONE)  # maximum still ALL: the copy reads it
    h = mem.entry(P, c, R | M.MAP_MEM_VM_COPY)
    kr, a = mem.map(h, P, cur=R, mx=R)
    assert kr == 0 and peek(a, 8) == b"C" * 8


def test_m22_a_copy_or_vm_share_entry_is_no_parent(mem: Mem) -> None:
    b = mem.alloc(2)
    for flag in (M.MAP_MEM_VM_COPY, M.MAP_MEM_VM_SHARE):
        parent = mem.entry(2 * P, b, RW | flag)
        for perm in (RW, RW | M.MAP_MEM_ONLY, RW | M.MAP_MEM_NAMED_REUSE, RW | M.MAP_MEM_NAMED_CREATE):
            assert mem.make(P, 0, perm, parent) == (M.KERN_INVALID_ARGUMENT, P, SENTINEL)


def test_m23_m25_sub_entries_of_a_parent(mem: Mem) -> None:
    parent = mem.entry(2 * P, 0, RW | M.MAP_MEM_NAMED_CREATE)
    kr, size, child = mem.make(P, P, RW, parent)
    assert (kr, size) == (0, P) and child != parent
    kr, whole = mem.map(parent, 2 * P)
    kr2, part = mem.map(child, P)
    assert kr == kr2 == 0
    poke(part, b"second page")
    assert peek(whole + P, 11) == b"second page"
    assert mem.make(2 * P, P, RW, parent) == (M.KERN_INVALID_ARGUMENT, 2 * P, SENTINEL)
    assert mem.make(P, 0x100, RW, parent)[:2] == (0, 2 * P)  # from trunc(0x100) to round(P + 0x100)
    assert mem.make(P - 0x100, 0x100, RW | M.MAP_MEM_USE_DATA_ADDR, parent)[:2] == (0, P - 0x100)
    kr, size, empty = mem.make(0, P, RW, parent)
    assert (kr, size) == (0, 0) and kentry(empty).size == 0  # no size-0 check on this path


def test_m24_a_sub_entry_gets_at_most_the_parent_protection(mem: Mem) -> None:
    parent = mem.entry(2 * P, 0, R | M.MAP_MEM_NAMED_CREATE)
    assert mem.make(P, 0, RW, parent) == (M.KERN_PROTECTION_FAILURE, P, SENTINEL)
    kr, _size, child = mem.make(P, 0, RW | MASK, parent)
    assert kr == 0 and kentry(child).protection == R


def test_m26_map_mem_only(mem: Mem) -> None:
    assert mem.make(P, 0, RW | M.MAP_MEM_ONLY) == (M.KERN_INVALID_ARGUMENT, P, SENTINEL)
    parent = mem.entry(P, 0, RW | M.MAP_MEM_NAMED_CREATE)
    assert mem.make(12345, 0, RW | M.MAP_MEM_ONLY, parent) == (0, 12345, M.MACH_PORT_NULL)
    assert mem.make(P, 0, M.SET_MAP_MEM(M.MAP_MEM_WCOMB, RW | M.MAP_MEM_ONLY), parent)[:2] == (0, P)
    assert mem.make(P, 0, RW | M.MAP_MEM_ONLY | M.MAP_MEM_USE_DATA_ADDR, parent)[0] == M.KERN_INVALID_ARGUMENT
    ro = mem.entry(P, 0, R | M.MAP_MEM_NAMED_CREATE)
    assert mem.make(P, 0, M.SET_MAP_MEM(M.MAP_MEM_IO, R | M.MAP_MEM_ONLY), ro)[0] == M.KERN_INVALID_RIGHT
    assert mem.make(P, 0, R | M.MAP_MEM_ONLY, ro)[:2] == (0, P)  # same cache mode: allowed


def test_m27_named_reuse_returns_the_parent(mem: Mem) -> None:
    b = mem.alloc(2)
    parent = mem.entry(P, b, RW)
    kr, size, h = mem.make(P, b, RW | M.MAP_MEM_NAMED_REUSE, parent)
    assert (kr, size, h) == (0, P, parent)
    refs = M.mach_port_urefs_t()
    assert M.mach_port_get_refs(T(), parent, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0 and refs.value == 2
    kr, size, other = mem.make(2 * P, b, RW | M.MAP_MEM_NAMED_REUSE, parent)
    assert kr == 0 and other != parent


def test_m28_m29_parents_that_are_not_entries(mem: Mem) -> None:
    b = mem.alloc(2)
    port = new_port(send=True)
    dead = new_port(send=True)
    try:
        assert M.mach_port_mod_refs(T(), dead, M.MACH_PORT_RIGHT_RECEIVE, -1) == 0  # now a dead name
        for parent in (port, dead, T()):
            kr, size, h = mem.make(2 * P, b, RW, parent)
            assert (kr, size) == (0, 2 * P) and h not in (parent, SENTINEL)  # the share path
        assert mem.make(P, b, RW, 0x7777703) == (M.MACH_SEND_INVALID_RIGHT, P, SENTINEL)
        recv_only = new_port()
        try:
            assert mem.make(P, b, RW, recv_only)[0] == M.MACH_SEND_INVALID_RIGHT
        finally:
            M.mach_port_destroy(T(), recv_only)
    finally:
        M.mach_port_destroy(T(), port)
        M.mach_port_destroy(T(), dead)


def test_p3_each_call_makes_a_new_name(mem: Mem) -> None:
    b = mem.alloc(1)
    names = {mem.entry(P, b, RW) for _ in range(3)}
    assert len(names) == 3


def test_memory_pymach_did_not_map_is_not_shared_but_can_be_copied(mem: Mem) -> None:
    buf = bytearray(b"heap" * (P // 2))
    addr = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
    page = _round(addr)
    assert mem.make(P, page, RW)[0] == M.KERN_NOT_SUPPORTED
    assert mem.make(P, page, RW | M.MAP_MEM_VM_SHARE)[0] == M.KERN_NOT_SUPPORTED
    assert mem.remap(page, P)[0] == M.KERN_NOT_SUPPORTED
    h = mem.entry(P, page, R | M.MAP_MEM_VM_COPY)
    kr, a = mem.map(h, P, cur=R, mx=R)
    assert kr == 0 and peek(a, P) == peek(page, P)
    kr, c, _cur, _max = mem.remap(page, P, copy=1)
    assert kr == 0 and peek(c, P) == peek(page, P)


def test_vm_share_over_two_objects_is_not_supported(mem: Mem) -> None:
    b = mem.alloc(2)
    protect(b + P, P, R)
    mem.entry(P, b, RW)  # each page now lies on its own object
    mem.entry(P, b + P, R)
    assert mem.make(2 * P, b, R | M.MAP_MEM_VM_SHARE) == (M.KERN_NOT_SUPPORTED, 2 * P, SENTINEL)


def test_vm_share_entry_maps_whole_and_shares(mem: Mem) -> None:
    b = mem.alloc(3)
    protect(b + 2 * P, P, R)
    h = mem.entry(3 * P, b, R | M.MAP_MEM_VM_SHARE)
    kr, a = mem.map(h, P, cur=R, mx=R, unmap=3 * P)  # a copy entry is mapped whole
    # as its two map entries (vm_map.c:4325-4567 enters a copy's entries one by one)
    assert kr == 0 and info(a).end - a == 2 * P and info(a + 2 * P).end - a == 3 * P
    poke(b + 2 * P - 8, b"live")
    assert peek(a + 2 * P - 8, 4) == b"live"
    assert mem.map(h, 3 * P, cur=R, mx=R, flags=ANY | M.VM_FLAGS_PURGABLE)[0] == M.KERN_INVALID_ARGUMENT


# -- mach_vm_map -----------------------------------------------------------------------
# vm_user.c:754-755 KERN_INVALID_ARGUMENT for flags outside VM_FLAGS_USER_MAP;
# vm_map.c:3900-3983 vm_map_enter_mem_object_sanitize: V1-V4 size 0
# (vm_sanitize.c:356-357) and a size rounding to nothing (:375-377) are
# KERN_INVALID_ARGUMENT, protections (vm_sanitize.c:636-638) and inheritance
# (:828-830) out of range too, a size no map can hold is KERN_NO_SPACE
# (vm_map.c:2260-2262); V5 a current protection beyond the maximum is cut to it
# (vm_sanitize_error_compat.c:250-252). V6-V8 placement: vm_map.c:2262 KERN_NO_SPACE
# for a mask nothing fits, :2470-2473 KERN_INVALID_ADDRESS below the map,
# :3169-3172 KERN_NO_SPACE over a mapping, :2435-2436 KERN_NO_SPACE for a fixed
# address against the mask. V9-V11 :4100-4106 KERN_INVALID_RIGHT for protections
# the entry does not have; V12/V13 :4114-4115 KERN_INVALID_ARGUMENT past the entry,
# :3077-3080 for an unaligned offset; V14-V16 :4680-4681 KERN_INVALID_OBJECT for a
# port that is no memory object; V21 :4232-4234 a copy entry refuses other flags.

def test_v1_to_v4_argument_checks(mem: Mem) -> None:
    assert mem.map(0, 0) == (M.KERN_INVALID_ARGUMENT, SENTINEL)
    assert mem.map(0, U64) == (M.KERN_INVALID_ARGUMENT, SENTINEL)
    assert mem.map(0, (1 << 64) - P) == (M.KERN_NO_SPACE, SENTINEL)
    assert mem.map(0, P, flags=ANY | M.VM_FLAGS_RESILIENT_CODESIGN)[0] == M.KERN_INVALID_ARGUMENT
    assert mem.map(0, P, flags=ANY | 0x100)[0] == M.KERN_INVALID_ARGUMENT
    assert mem.map(0, P, inh=M.VM_INHERIT_DONATE_COPY)[0] == M.KERN_INVALID_ARGUMENT
    assert mem.map(0, P, cur=0x10)[0] == M.KERN_INVALID_ARGUMENT
    assert mem.map(0, P, mx=0x7FFFFFFF)[0] == M.KERN_INVALID_ARGUMENT


def test_v5_cur_beyond_max_is_cut_to_max(mem: Mem) -> None:
    kr, a = mem.map(0, P, cur=RW, mx=R)
    assert kr == 0 and (info(a).protection, info(a).max_protection) == (R, R)


def test_v6_to_v8_placement(mem: Mem) -> None:
    assert mem.map(0, P, mask=U64)[0] == M.KERN_NO_SPACE
    assert mem.map(0, P, flags=FIXED, addr=0) == (M.KERN_INVALID_ADDRESS, 0)
    b = mem.alloc(2)
    assert mem.map(0, P, flags=FIXED, addr=b)[0] == M.KERN_NO_SPACE
    free = mem.alloc(2, fill=None)
    assert M.mach_vm_deallocate(T(), free, 2 * P) == 0
    odd = free if free & P else free + P
    assert mem.map(0, P, flags=FIXED, addr=odd, mask=P)[0] == M.KERN_NO_SPACE  # against the mask
    assert mem.map(0, P, flags=FIXED, addr=odd)[:2] == (0, odd)
    kr, a = mem.map(0, P, flags=FIXED | M.VM_FLAGS_OVERWRITE, addr=b)
    assert (kr, a) == (0, b) and peek(b, 8) == bytes(8)
    kr, a = mem.map(0, P, mask=(1 << 21) - 1)
    assert kr == 0 and a % (1 << 21) == 0


def test_v9_to_v11_an_entry_limits_the_mapping(mem: Mem) -> None:
    ro = mem.entry(2 * P, 0, R | M.MAP_MEM_NAMED_CREATE)
    for copy in (0, 1):
        assert mem.map(ro, P, copy=copy, cur=RW, mx=RW) == (M.KERN_INVALID_RIGHT, SENTINEL)
        assert mem.map(ro, P, copy=copy, cur=R, mx=RW) == (M.KERN_INVALID_RIGHT, SENTINEL)
    kr, a = mem.map(ro, P, cur=RW | MASK, mx=RW | MASK)
    assert kr == 0 and (info(a).protection, info(a).max_protection) == (R, R)


def test_v12_v13_offsets(mem: Mem) -> None:
    b = mem.alloc(2)
    poke(b + 0x100, b"at 0x100")
    e = mem.entry(2 * P, b, RW)
    assert mem.map(e, 2 * P, offset=P)[0] == M.KERN_INVALID_ARGUMENT
    assert mem.map(e, P, offset=P)[0] == 0
    assert mem.map(e, 2 * P + 1)[0] == M.KERN_INVALID_ARGUMENT
    assert mem.map(e, P, offset=0x100) == (M.KERN_INVALID_ARGUMENT, SENTINEL)
    kr, a = mem.map(e, P, offset=0x100, flags=ANY | M.VM_FLAGS_RETURN_DATA_ADDR)
    assert kr == 0 and a % P == 0x100 and peek(a, 8) == b"at 0x100"
    assert mem.map(e, P, offset=U64 - 10)[0] == M.KERN_INVALID_ARGUMENT


def test_v14_to_v16_the_object_port(mem: Mem) -> None:
    port = new_port(send=True)
    dead = new_port(send=True)
    try:
        assert mem.map(port, P) == (M.KERN_INVALID_OBJECT, SENTINEL)
        assert mem.map(T(), P)[0] == M.KERN_INVALID_OBJECT  # the kernel takes the task port, then refuses it
        assert mem.map(0x7777703, P) == (M.MACH_SEND_INVALID_RIGHT, SENTINEL)
        recv_only = new_port()
        try:
            assert mem.map(recv_only, P)[0] == M.MACH_SEND_INVALID_RIGHT
        finally:
            M.mach_port_destroy(T(), recv_only)
        assert M.mach_port_mod_refs(T(), dead, M.MACH_PORT_RIGHT_RECEIVE, -1) == 0  # now a dead name
        kr, a = mem.map(dead, P, offset=0x123, copy=1)  # a dead name is no object
        assert kr == 0 and peek(a, P) == bytes(P)
    finally:
        M.mach_port_destroy(T(), port)
        M.mach_port_destroy(T(), dead)


def test_v17_copy_false_shares(mem: Mem) -> None:
    b = mem.alloc(2)
    e = mem.entry(2 * P, b, RW)
    kr, a = mem.map(e, 2 * P)
    assert kr == 0
    poke(a + P, b"through the mapping")
    assert peek(b + P, 19) == b"through the mapping"
    poke(b, b"through the source")
    assert peek(a, 18) == b"through the source"
    for addr in (a, b):
        i = info(addr)
        assert i.shared and i.share_mode == M.SM_TRUESHARED  # documented: XNU says FALSE for the target


def test_v18_copy_true_is_a_snapshot_at_map_time(mem: Mem) -> None:
    b = mem.alloc(2)
    poke(b, b"original")
    e = mem.entry(2 * P, b, RW)
    kr, a = mem.map(e, 2 * P, copy=1)
    assert kr == 0 and peek(a, 8) == b"original"
    poke(b, b"changed!")
    assert peek(a, 8) == b"original"
    poke(a + P, b"private")
    assert peek(b + P, 7) == b"B" * 7
    i = info(a)
    assert not i.shared and i.share_mode == M.SM_COW


def test_v19_named_create_mapped_twice(mem: Mem) -> None:
    e = mem.entry(2 * P, 0, RW | M.MAP_MEM_NAMED_CREATE)
    (kr1, a1), (kr2, a2) = mem.map(e, 2 * P), mem.map(e, 2 * P)
    assert kr1 == kr2 == 0 and a1 != a2
    poke(a1 + P, b"one")
    assert peek(a2 + P, 3) == b"one"
    assert info(a2).share_mode == M.SM_TRUESHARED


def test_v21_a_copy_entry_refuses_other_flags(mem: Mem) -> None:
    b = mem.alloc(1)
    e = mem.entry(P, b, RW | M.MAP_MEM_VM_COPY)
    assert mem.map(e, P, flags=ANY | M.VM_FLAGS_PURGABLE) == (M.KERN_INVALID_ARGUMENT, SENTINEL)
    assert mem.map(e, P, flags=ANY | M.VM_MAKE_TAG(200))[0] == 0  # tags are allowed


# -- mach_vm_remap and mach_vm_remap_new ----------------------------------------------------
# vm_user.c:931-932 and :851-852 KERN_INVALID_ARGUMENT for flags outside
# VM_FLAGS_USER_REMAP; vm_map.c:19226-19302 vm_map_remap_sanitize: R1-R5 size 0
# (vm_sanitize.c:514-516) and a carry (:539-541) are KERN_INVALID_ARGUMENT, and so
# is a bad inheritance; R18-R20 vm_map.c:19345-19346 KERN_INVALID_ARGUMENT when the
# source task is no task, :19408-19411 VM_FLAGS_RESILIENT_MEDIA without copy; an
# unmapped source or one past its entries is KERN_INVALID_ADDRESS
# (vm_map.c:17636-17643). mach_vm_remap_new: R7-R11 vm_sanitize.c:747-750
# KERN_INVALID_ARGUMENT for a current protection beyond the maximum (no compat
# rewrite for remap, vm_sanitize_error_compat.c:257-261), vm_user.c:871-877
# KERN_PROTECTION_FAILURE for a writable and executable maximum (checked before
# the inheritance), vm_map.c:17829 for protections the source does not have.
# R16/R17 vm_map.c:19515-19518 KERN_NO_SPACE over a mapping, :2435-2436 against the
# mask, :2470-2473 KERN_INVALID_ADDRESS below the map.

def test_r1_to_r5_r18_r19_r20_argument_checks(mem: Mem) -> None:
    b = mem.alloc(4)
    untouched = (SENTINEL, SENTINEL, SENTINEL)
    assert mem.remap(b, 0) == (M.KERN_INVALID_ARGUMENT, *untouched)
    assert mem.remap(b, U64 - 1) == (M.KERN_INVALID_ARGUMENT, *untouched)
    assert mem.remap(b, P, flags=ANY | M.VM_MAKE_TAG(100))[0] == M.KERN_INVALID_ARGUMENT
    assert mem.remap(b, P, flags=ANY | M.VM_FLAGS_PURGABLE)[0] == M.KERN_INVALID_ARGUMENT
    assert mem.remap(b, P, inh=3)[0] == M.KERN_INVALID_ARGUMENT
    assert mem.remap(b, P, flags=ANY | M.VM_FLAGS_RESILIENT_MEDIA)[0] == M.KERN_INVALID_ARGUMENT
    assert mem.remap(b, P, src_task=0) == (M.KERN_INVALID_ARGUMENT, *untouched)
    assert mem.remap(b, P, src_task=0, new=(R, R))[0] == M.KERN_INVALID_ARGUMENT
    port = new_port(send=True)
    try:
        assert mem.remap(b, P, src_task=port)[0] == M.KERN_INVALID_ARGUMENT
    finally:
        M.mach_port_destroy(T(), port)
    assert mem.remap(b, P, src_task=0x7777703)[0] == M.MACH_SEND_INVALID_RIGHT
    assert M.mach_vm_deallocate(T(), b + P, P) == 0
    assert mem.remap(b + P, P) == (M.KERN_INVALID_ADDRESS, *untouched)
    assert mem.remap(b, 3 * P) == (M.KERN_INVALID_ADDRESS, *untouched)


def test_r6_legacy_keeps_each_entry_protection(mem: Mem) -> None:
    b = mem.alloc(4)
    protect(b + 2 * P, 2 * P, R)
    kr, a, cur, mx = mem.remap(b, 4 * P)
    assert (kr, cur, mx) == (0, R, ALL)
    assert (info(a).protection, info(a).end) == (RW, a + 2 * P)
    assert (info(a + 2 * P).protection, info(a + 2 * P).max_protection) == (R, ALL)
    poke(a + P, b"first")
    assert peek(b + P, 5) == b"first"
    assert peek(a + 3 * P, 8) == b"B" * 8


def test_r7_to_r11_remap_new_protections(mem: Mem) -> None:
    b = mem.alloc(4)
    protect(b + 2 * P, 2 * P, R)
    assert mem.remap(b, 4 * P, new=(RW, RW)) == (M.KERN_PROTECTION_FAILURE, SENTINEL, RW, RW)
    assert mem.remap(b, P, new=(RW, R))[0] == M.KERN_INVALID_ARGUMENT
    assert mem.remap(b, P, new=(R | 0x40, R | 0x40))[0] == M.KERN_INVALID_ARGUMENT
    assert mem.remap(b, P, new=(R, ALL))[0] == M.KERN_PROTECTION_FAILURE
    assert mem.remap(b, P, new=(R, ALL), inh=7)[0] == M.KERN_PROTECTION_FAILURE  # W^X comes first
    kr, a, cur, mx = mem.remap(b + 2 * P, 2 * P, copy=1, new=(RW, RW))  # a writable copy of R memory
    assert (kr, cur, mx) == (0, RW, RW) and (info(a).protection, info(a).max_protection) == (RW, RW)
    poke(a, b"copy")
    assert peek(b + 2 * P, 4) == b"BBBB"
    kr, a, cur, mx = mem.remap(b, P, new=(NONE, NONE))
    assert (kr, cur, mx) == (0, NONE, NONE) and (info(a).protection, info(a).max_protection) == (NONE, NONE)
    kr, a, cur, mx = mem.remap(b, 2 * P, new=(R, R))  # exactly what was asked, not the source's
    assert (kr, cur, mx) == (0, R, R) and (info(a).protection, info(a).max_protection) == (R, R)
    peek(a, 8)


def test_r12_r13_sharing_and_copying(mem: Mem) -> None:
    b = mem.alloc(2)
    kr, a, _c, _m = mem.remap(b, 2 * P)
    assert kr == 0
    poke(a, b"new")
    assert peek(b, 3) == b"new"
    poke(b + P, b"source")
    assert peek(a + P, 6) == b"source"
    for addr in (a, b):
        assert info(addr).shared and info(addr).share_mode == M.SM_TRUESHARED
    kr, c, _c, _m = mem.remap(b, 2 * P, copy=1)
    assert kr == 0 and peek(c, 3) == b"new"
    poke(c, b"cpy")
    poke(b + P, b"later")
    assert (peek(b, 3), peek(c + P, 6)) == (b"new", b"source")
    assert not info(c).shared and info(c).share_mode == M.SM_COW


def test_r14_r15_legacy_rounding(mem: Mem) -> None:
    b = mem.alloc(4)
    poke(b + P - 0x10, b"straddles the page edge!")
    kr, a, _c, _m = mem.remap(b + P - 0x10, 0x20)
    assert kr == 0 and a % P == 0 and info(a).end - a == P
    kr, a, _c, _m = mem.remap(b + P - 0x10, 0x20, flags=ANY | M.VM_FLAGS_RETURN_DATA_ADDR)
    assert kr == 0 and a % P == P - 0x10 and info(a).end - (a & ~(P - 1)) == 2 * P
    assert peek(a, 24) == b"straddles the page edge!"
    kr, a, _c, _m = mem.remap(b + P - 0x10, 0x20, new=(RW, RW))
    assert kr == 0 and a % P == P - 0x10 and peek(a, 24) == b"straddles the page edge!"


def test_r16_r17_fixed_targets(mem: Mem) -> None:
    b = mem.alloc(2)
    t = mem.alloc(2, fill=b"T")
    assert mem.remap(b, P, flags=FIXED, addr=t)[0] == M.KERN_NO_SPACE
    free = mem.alloc(2, fill=None)
    assert M.mach_vm_deallocate(T(), free, 2 * P) == 0
    odd = free if free & P else free + P
    assert mem.remap(b, P, flags=FIXED, addr=odd, mask=P)[0] == M.KERN_NO_SPACE
    assert mem.remap(b, P, flags=FIXED, addr=0)[:2] == (M.KERN_INVALID_ADDRESS, 0)
    kr, a, _c, _m = mem.remap(b, P, flags=FIXED | M.VM_FLAGS_OVERWRITE, addr=t)
    assert (kr, a) == (0, t) and peek(t, 8) == b"B" * 8


def test_remap_of_a_region_onto_itself_keeps_the_pages(mem: Mem) -> None:
    b = mem.alloc(2, fill=b"S")
    kr, a, _c, _m = mem.remap(b, 2 * P, flags=FIXED | M.VM_FLAGS_OVERWRITE, addr=b, copy=1)
    assert (kr, a) == (0, b) and peek(b + P, 8) == b"S" * 8


def test_remap_resilient_codesign_is_read_only(mem: Mem) -> None:
    b = mem.alloc(1)
    kr, a, cur, mx = mem.remap(b, P, copy=1, flags=ANY | M.VM_FLAGS_RESILIENT_CODESIGN)
    assert (kr, cur, mx) == (0, R, R) and info(a).protection == R


# -- handles -------------------------------------------------------------------------------
# P1-P5 the handle is a send right to a kernel object (vm_memory_entry.c:1241
# mach_memory_entry_allocate), deallocated like any (osfmk/ipc/ipc_right.c:1124-1178);
# P6/P7 a message the object does not serve is answered MIG_BAD_ID
# (osfmk/kern/ipc_kobject.c:536).

def test_p1_p2_p4_p5_the_handle_is_a_send_right(mem: Mem) -> None:
    b = mem.alloc(1)
    h = mem.entry(P, b, RW)
    t = M.mach_port_type_t()
    assert M.mach_port_type(T(), h, byref(t)) == 0 and t.value == M.MACH_PORT_TYPE_SEND
    refs = M.mach_port_urefs_t()
    assert M.mach_port_get_refs(T(), h, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0 and refs.value == 1
    assert M.mach_port_get_refs(T(), h, M.MACH_PORT_RIGHT_RECEIVE, byref(refs)) == 0 and refs.value == 0
    kr, a = mem.map(h, P)
    assert kr == 0
    assert M.mach_port_deallocate(T(), h) == 0
    assert M.mach_port_type(T(), h, byref(t)) == M.KERN_INVALID_NAME
    assert M.mach_port_deallocate(T(), h) == M.KERN_INVALID_NAME
    poke(a, b"still mapped")
    assert peek(b, 12) == b"still mapped"


class _Request(ctypes.Structure):
    _fields_ = [("header", M.mach_msg_header_t), ("body", ctypes.c_char * 64)]


def test_p6_p7_a_message_to_the_handle_gets_mig_bad_id(mem: Mem) -> None:
    h = mem.entry(P, 0, RW | M.MAP_MEM_NAMED_CREATE)
    reply = new_port()
    try:
        m = _Request()
        m.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE)
        m.header.msgh_size = 24
        m.header.msgh_remote_port = h
        m.header.msgh_local_port = reply
        m.header.msgh_id = 0x7777
        kr = M.mach_msg(m.header, M.MACH_SEND_MSG | M.MACH_RCV_MSG, 24, ctypes.sizeof(m), reply, 0, 0)
        assert kr == M.MACH_MSG_SUCCESS
        assert (m.header.msgh_id, m.header.msgh_size) == (0x77DB, 36)
        assert struct.unpack_from("<i", bytes(m), 32)[0] == M.MIG_BAD_ID
        m.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0)
        m.header.msgh_remote_port, m.header.msgh_local_port = h, 0
        assert M.mach_msg(m.header, M.MACH_SEND_MSG, 24, 0, 0, 0, 0) == M.MACH_MSG_SUCCESS
        kr = M.mach_msg(m.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(m), reply, 0, 0)
        assert kr == M.MACH_RCV_TIMED_OUT
        # MOVE_SEND consumes the handle with the message
        m.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_MOVE_SEND, 0)
        m.header.msgh_remote_port = h
        assert M.mach_msg(m.header, M.MACH_SEND_MSG, 24, 0, 0, 0, 0) == M.MACH_MSG_SUCCESS
        assert M.mach_port_type(T(), h, byref(M.mach_port_type_t())) == M.KERN_INVALID_NAME
    finally:
        M.mach_port_destroy(T(), reply)


def test_deallocating_the_last_handle_and_mapping_frees_the_memfd(mem: Mem) -> None:
    def fds_of(ino: int) -> list[int]:
        out = []
        for n in os.listdir("/proc/self/fd"):
            try:
                if os.stat(f"/proc/self/fd/{n}").st_ino == ino and os.readlink(f"/proc/self/fd/{n}").startswith(
                        "/memfd:"):
                    out.append(int(n))
            except OSError:
                pass
        return out

    b = mem.alloc(2)
    h = mem.entry(2 * P, b, RW)
    ino = os.fstat(kentry(h).fd).st_ino
    a = M.mach_vm_address_t()
    assert M.mach_vm_map(T(), byref(a), 2 * P, 0, ANY, h, 0, 0, RW, RW, INH) == 0
    assert len(fds_of(ino)) == 3  # the source region's object, the handle, the new mapping
    assert M.mach_port_deallocate(T(), h) == 0
    assert len(fds_of(ino)) == 2
    assert M.mach_vm_deallocate(T(), a, 2 * P) == 0
    assert M.mach_vm_deallocate(T(), b, 2 * P) == 0
    mem.regions.clear()
    assert fds_of(ino) == []
    with open("/proc/self/maps") as f:
        assert all(int(line.split()[4]) != ino for line in f)


# -- across processes ----------------------------------------------------------------------

class _EntryMsg(ctypes.Structure):
    _fields_ = [("header", M.mach_msg_header_t), ("body", M.mach_msg_body_t),
                ("entry", M.mach_msg_port_descriptor_t)]


class _RequestRcv(ctypes.Structure):
    _fields_ = [("header", M.mach_msg_header_t), ("body", ctypes.c_char * 256)]


@pytest.fixture
def server():
    """A port of ours whose send right fork children inherit (registered)."""
    port = new_port(send=True)
    arr = (M.mach_port_t * 1)(port)
    assert M.mach_ports_register(T(), arr, 1) == 0
    try:
        yield port
    finally:
        M.mach_ports_register(T(), arr, 0)
        M.mach_port_destroy(T(), port)


def serve_entry(port: int, handle: int, disposition: int) -> None:
    """Receive one request on ``port`` and answer it with ``handle`` in a
    port descriptor."""
    r = _RequestRcv()
    assert M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), port, 5000, 0) == 0
    m = _EntryMsg()
    m.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_MOVE_SEND_ONCE, 0) | M.MACH_MSGH_BITS_COMPLEX
    m.header.msgh_size = ctypes.sizeof(m)
    m.header.msgh_remote_port = r.header.msgh_remote_port
    m.body.msgh_descriptor_count = 1
    m.entry.name, m.entry.disposition, m.entry.type = handle, disposition, M.MACH_MSG_PORT_DESCRIPTOR
    assert M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0) == 0


def fetch_entry() -> pymach.MemoryEntry:
    """In a fork child: ask the registered server for its entry."""
    server = pymach.registered_ports()[0]
    assert server is not None
    m = pymach.request(server, b"entry please", timeout=5)
    (ent,) = m.rights
    assert isinstance(ent, pymach.MemoryEntry)
    return ent


@pytest.mark.parametrize("disposition", [M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MOVE_SEND])
def test_an_entry_in_a_message_is_shared_with_a_child(mem: Mem, server: int, disposition: int) -> None:
    b = mem.alloc(2)
    poke(b, b"hello child")
    h = mem.entry(2 * P, b, RW)

    def child(sync: Callable[[], None]) -> object:
        ent = fetch_entry()
        assert (ent.size, ent.protection) == (2 * P, RW)
        r = ent.map()
        assert r.read(0, 11) == b"hello child"
        r.write(b"hello parent", P)
        sync()
        sync()
        return r.read(0, 10)

    with forked(child) as sync:
        serve_entry(server, h, disposition)
        sync()
        assert peek(b + P, 12) == b"hello parent"
        poke(b, b"written now")
        sync()
    t = M.mach_port_type_t()
    kr = M.mach_port_type(T(), h, byref(t))
    assert kr == (M.KERN_INVALID_NAME if disposition == M.MACH_MSG_TYPE_MOVE_SEND else 0)


def test_copy_true_and_false_across_processes(mem: Mem, server: int) -> None:
    b = mem.alloc(1)
    poke(b, b"v1")
    h = mem.entry(P, b, RW)

    def child(sync: Callable[[], None]) -> object:
        ent = fetch_entry()
        shared, private = ent.map(), ent.map(copy=True)
        sync()  # mapped
        sync()  # the parent has written v2
        seen = (shared.read(0, 2), private.read(0, 2))
        private.write(b"c!")
        shared.write(b"s!", 8)
        sync()  # written
        return seen

    run = forked(child)
    with run as sync:
        serve_entry(server, h, M.MACH_MSG_TYPE_COPY_SEND)
        sync()
        poke(b, b"v2")
        sync()
        sync()
        assert (peek(b, 2), peek(b + 8, 2)) == (b"v2", b"s!")  # not the child's private "c!"
    assert run.result == (b"v2", b"v1")


def test_a_read_only_entry_is_read_only_for_the_kernel_too(mem: Mem, server: int) -> None:
    b = mem.alloc(1)
    h = mem.entry(P, b, R)

    def child(sync: Callable[[], None]) -> object:
        ent = fetch_entry()
        assert ent.protection == R
        with pytest.raises(pymach.MachError) as e:
            ent.map(protection=RW)
        assert e.value.kr == M.KERN_INVALID_RIGHT
        fd = kentry(ent.name).fd
        with pytest.raises(PermissionError):
            mmap.mmap(fd, P, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        r = ent.map()
        assert _libc.mprotect(r.address, P, mmap.PROT_READ | mmap.PROT_WRITE) == -1
        assert ctypes.get_errno() == errno.EACCES
        with pytest.raises(OSError):
            os.ftruncate(fd, 0)  # not even open for writing
        return r.read(0, 8)

    with forked(child):
        serve_entry(server, h, M.MACH_MSG_TYPE_COPY_SEND)


def test_no_holder_can_resize_a_writable_entry(mem: Mem, server: int) -> None:
    h = mem.entry(P, 0, RW | M.MAP_MEM_NAMED_CREATE)

    def child(sync: Callable[[], None]) -> object:
        fd = kentry(fetch_entry().name).fd
        for size in (0, P // 2, 4 * P):
            try:
                os.ftruncate(fd, size)
            except PermissionError:
                continue
            raise AssertionError(f"ftruncate({size}) succeeded")
        return os.fstat(fd).st_size

    child_run = forked(child)
    with child_run:
        serve_entry(server, h, M.MACH_MSG_TYPE_COPY_SEND)
    assert child_run.result == P
    kr, a = mem.map(h, P)
    assert kr == 0 and peek(a, 8) == bytes(8)


# -- the Pythonic layer --------------------------------------------------------------------

def test_region_memory_entry_map_sub_and_create() -> None:
    task = pymach.Task.self()
    with task.allocate(3 * P) as region:
        region.write(b"pythonic", P)
        with region.memory_entry() as ent:
            assert (ent.size, ent.protection) == (3 * P, RW)
            with ent.map() as view:
                assert view.read(P, 8) == b"pythonic"
                view.write(b"both ways")
                assert region.read(0, 9) == b"both ways"
            with ent.sub(P, P, R) as part, part.map() as pv:
                assert pv.read(0, 8) == b"pythonic" and pv.info().protection == R
            with ent.map(copy=True) as snap:
                region.write(b"later")
                assert snap.read(0, 5) == b"both "
        with region.memory_entry(R, offset=P, size=P) as ro:
            with pytest.raises(pymach.MachError) as e:
                ro.map(protection=RW)
            assert e.value.kr == M.KERN_INVALID_RIGHT
    with pymach.MemoryEntry.create(2 * P) as fresh, fresh.map() as a, fresh.map() as b:
        a.write(b"same object")
        assert b.read(0, 11) == b"same object"
    with pytest.raises(pymach.MachError):
        pymach.MemoryEntry.create(0)


def test_region_remap() -> None:
    task = pymach.Task.self()
    with task.allocate(2 * P) as region:
        region.write(b"remapped")
        with region.remap() as alias, region.remap(copy=True) as copy:
            alias.write(b"aliased!")
            assert region.read(0, 8) == b"aliased!"
            assert copy.read(0, 8) == b"remapped"
            copy.write(b"mine")
            assert region.read(0, 4) == b"alia"


def test_a_memory_entry_travels_in_message_rights(server: int) -> None:
    task = pymach.Task.self()
    with task.allocate(P) as region:
        region.write(b"via Message.rights")
        ent = region.memory_entry()

        def child(sync: Callable[[], None]) -> object:
            got = fetch_entry()
            with got.map() as r:
                data = r.read(0, 18)
                r.write(b"VIA")
            return data

        run = forked(child)
        with run:
            port = pymach.Port(server)
            m = port.receive(timeout=5)
            assert m.reply is not None
            m.reply.send(pymach.Message(b"here", rights=[ent]))
            m.release()
        assert run.result == b"via Message.rights"
        assert region.read(0, 3) == b"VIA"
        ent.close()


# -- entries in records are untrusted ---------------------------------------------------------

def _entry_record(fd: int, size_field: int, aux: int = 0) -> bytes:
    from pymach._kern import ipc_kmsg as KM
    body = struct.pack("<I", 1) + KM.PORT_DESC.pack(1, 0, 0, 0, M.MACH_MSG_TYPE_PORT_SEND,
                                                    M.MACH_MSG_PORT_DESCRIPTOR) + struct.pack("<I", 0)
    rights = KM.RIGHT.pack(KM.KIND_NONE, 0, 0, 0) + KM.RIGHT.pack(KM.KIND_ENTRY, 1, size_field, aux)
    bits = M.MACH_MSGH_BITS_SET(0, M.MACH_MSG_TYPE_PORT_SEND, 0, M.MACH_MSGH_BITS_COMPLEX)
    return KM.WIRE.pack(KM.MAGIC, bits, 7, len(body), 2, 1, 0, 0) + rights + body


def _sealed(size: int, mode: int = os.O_RDWR) -> int:
    import fcntl
    fd = os.memfd_create("forged", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    if mode == os.O_RDWR:
        return fd
    ro = os.open(f"/proc/self/fd/{fd}", mode)
    os.close(fd)
    return ro


@pytest.mark.parametrize("case", ["unsealed", "short", "claims_write", "unaligned", "data_offset", "good"])
def test_forged_entries_are_refused(case: str) -> None:
    import socket

    if case == "unsealed":
        fd = os.memfd_create("forged")
        os.ftruncate(fd, P)
    else:
        fd = _sealed(P, os.O_RDONLY if case == "claims_write" else os.O_RDWR)
    size_field = {"short": 2 * P | R, "claims_write": P | RW, "unaligned": P + 0x100 | R,
                  "data_offset": P | R | (P << 48)}.get(case, P | RW)
    with pymach.Port() as port, port.make_send() as send:
        try:
            ie = SELF.space.lookup(port.name)
            assert ie is not None and isinstance(ie.cap, SendCap)
            ie.cap.sock.sendmsg([_entry_record(fd, size_field)],
                               [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
        finally:
            os.close(fd)
        if case == "good":
            m = port.receive(timeout=2)
            (ent,) = m.rights
            assert isinstance(ent, pymach.MemoryEntry) and (ent.size, ent.protection) == (P, RW)
            with ent.map() as r:
                r.write(b"fine")
            m.release()
        else:
            with pytest.raises(pymach.MachError) as e:
                port.receive(timeout=2)
            assert e.value.kr == M.MACH_RCV_BODY_ERROR
        send.send(b"next")
        assert port.receive(timeout=2).data == b"next"


def test_entry_kind_protection_and_data_offset_travel(mem: Mem) -> None:
    b = mem.alloc(2)
    copy = mem.entry(P - 0x10, b + 0x10, R | M.MAP_MEM_VM_COPY | M.MAP_MEM_USE_DATA_ADDR)
    port = new_port(send=True)
    try:
        m = _EntryMsg()
        m.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0) | M.MACH_MSGH_BITS_COMPLEX
        m.header.msgh_size = ctypes.sizeof(m)
        m.header.msgh_remote_port = port
        m.body.msgh_descriptor_count = 1
        m.entry.name, m.entry.disposition = copy, M.MACH_MSG_TYPE_COPY_SEND
        m.entry.type = M.MACH_MSG_PORT_DESCRIPTOR
        assert M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0) == 0
        r = _RequestRcv()
        assert M.mach_msg(r.header, M.MACH_RCV_MSG, 0, ctypes.sizeof(r), port, 0, 0) == 0
        got = _EntryMsg.from_buffer_copy(bytes(r)[:ctypes.sizeof(_EntryMsg)]).entry.name
        assert got == copy  # the same entry comes back under its name
        refs = M.mach_port_urefs_t()
        assert M.mach_port_get_refs(T(), copy, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0 and refs.value == 2
        ent = kentry(copy)
        assert (ent.is_copy, ent.protection, ent.data_offset) == (True, R, 0x10)
        assert mem.make(P, 0, R, copy)[0] == M.KERN_INVALID_ARGUMENT  # still a copy entry
    finally:
        M.mach_port_destroy(T(), port)


def test_a_message_to_an_entry_destroys_what_it_carries(mem: Mem) -> None:
    h = mem.entry(P, 0, RW | M.MAP_MEM_NAMED_CREATE)
    carried = new_port(send=True)
    moved = mem.entry(P, 0, R | M.MAP_MEM_NAMED_CREATE)
    m = _EntryMsg()
    m.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0) | M.MACH_MSGH_BITS_COMPLEX
    m.header.msgh_size = ctypes.sizeof(m)
    m.header.msgh_remote_port = h
    m.body.msgh_descriptor_count = 1
    m.entry.name, m.entry.disposition = carried, M.MACH_MSG_TYPE_MOVE_RECEIVE
    m.entry.type = M.MACH_MSG_PORT_DESCRIPTOR
    assert M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0) == 0
    t = M.mach_port_type_t()
    assert M.mach_port_type(T(), carried, byref(t)) == 0 and t.value == M.MACH_PORT_TYPE_DEAD_NAME
    M.mach_port_destroy(T(), carried)
    m.entry.name, m.entry.disposition = moved, M.MACH_MSG_TYPE_MOVE_SEND
    assert M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0) == 0
    assert M.mach_port_type(T(), moved, byref(t)) == M.KERN_INVALID_NAME
    m.entry.name = 0x7777703
    assert M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0) == M.MACH_SEND_INVALID_RIGHT
