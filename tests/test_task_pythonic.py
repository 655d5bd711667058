"""The Pythonic layer: Task.self(), Region, RegionInfo, MachError.

Memory contents are checked independently of pymach's accessors with
ctypes (peek/poke) where the pages are accessible, and mappings are checked
against /proc/self/maps and /proc/self/smaps, so a test does not only trust
pymach's own record of itself.
"""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import os
import pickle
import signal

import pytest

import pymach
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
    InvalidArgumentError,
    MachError,
    NoSpaceError,
    ProtectionFailureError,
    Region,
    RegionInfo,
    Task,
    mach_error_string,
    vm_page_size,
)
from pymach.lowlevel import SELF, vm_defs

from procutil import child_exit_code, mapped_in, maps, peek, perms_at, poke, run_in_child, vmflags_at

P = vm_page_size


# -- helpers -------------------------------------------------------------------

def entries_in(start: int, end: int):
    return [e for e in SELF.map.entries() if e.start < end and e.end > start]


@pytest.fixture
def task() -> Task:
    return Task.self()


# -- allocate ------------------------------------------------------------------

def test_task_self_is_our_process(task):
    assert task.pid == os.getpid()
    assert task.port == SELF.task_name
    assert Task.self().port == task.port


def test_allocate_rounds_up_and_maps_zeroed_rw_pages(task):
    r = task.allocate(3 * P + 1)
    try:
        assert isinstance(r, Region)
        assert r.address % P == 0
        assert r.size == len(r) == 4 * P
        assert r.end == r.address + 4 * P
        assert peek(r.address, r.size) == bytes(r.size)
        # the kernel really maps it, readable and writable, private
        covered = mapped_in(r.address, r.end)
        assert covered and covered[0][0] <= r.address and covered[-1][1] >= r.end
        assert all(m[2] == "rw-p" for m in covered)
        poke(r.address + 4 * P - 1, b"\xff")  # the last rounded-up byte is usable
        assert peek(r.address + 4 * P - 1, 1) == b"\xff"
        # and the runtime records it with Mach's defaults
        (e,) = entries_in(r.address, r.end)
        assert (e.start, e.end) == (r.address, r.end)
        assert e.prot == VM_PROT_DEFAULT and e.max_prot == VM_PROT_ALL
        assert e.inherit == VM_INHERIT_COPY and not e.shared
    finally:
        r.deallocate()


def test_allocate_two_regions_do_not_overlap(task):
    with task.allocate(2 * P) as a, task.allocate(2 * P) as b:
        assert a.end <= b.address or b.end <= a.address


def test_allocate_with_tag_is_reported(task):
    with task.allocate(P, tag=77) as r:
        info = r.info()
        assert info.user_tag == 77
        assert info.pymach


def test_allocate_fixed_without_overwrite_refuses_a_used_range(task):
    with task.allocate(2 * P) as r:
        poke(r.address, b"keep")
        with pytest.raises(NoSpaceError) as ei:
            task.allocate(P, address=r.address + P)
        assert ei.value.kr == 3
        assert peek(r.address, 4) == b"keep"
        assert len(entries_in(r.address, r.end)) == 1


def test_allocate_fixed_overwrite_replaces_with_zero_pages(task):
    with task.allocate(3 * P) as r:
        poke(r.address, b"A" * 8)
        poke(r.address + P, b"B" * 8)
        poke(r.address + 2 * P, b"C" * 8)
        r.protect(VM_PROT_READ, offset=P, size=P)
        new = task.allocate(P, address=r.address + P, overwrite=True)
        assert new.address == r.address + P
        assert peek(r.address, 8) == b"A" * 8
        assert peek(r.address + P, 8) == bytes(8)  # fresh zero-filled page
        assert peek(r.address + 2 * P, 8) == b"C" * 8
        assert perms_at(r.address + P) == "rw-p"  # the new page has default protection
        mid = [e for e in entries_in(r.address, r.end) if e.start == r.address + P]
        assert len(mid) == 1 and mid[0].end == r.address + 2 * P
        assert mid[0].prot == VM_PROT_DEFAULT


def test_allocate_fixed_into_a_hole(task):
    r = task.allocate(3 * P)
    try:
        task.deallocate(r.address + P, P)
        assert mapped_in(r.address + P, r.address + 2 * P) == []
        mid = task.allocate(P, address=r.address + P)
        assert mid.address == r.address + P
        assert perms_at(mid.address) == "rw-p"
    finally:
        task.deallocate(r.address, r.size)


# -- read / write ----------------------------------------------------------------

def test_write_then_read_roundtrip(task):
    with task.allocate(2 * P) as r:
        r.write(b"Hello, Mach!", 2048)
        assert r.read(2048, 12) == b"Hello, Mach!"
        assert peek(r.address + 2048, 12) == b"Hello, Mach!"  # really in memory
        # a write crossing the page boundary
        data = bytes(range(256)) * 2
        r.write(data, P - 256)
        assert peek(r.address + P - 256, 512) == data
        assert r.read(P - 256, 512) == data
        # default size: to the end of the region
        assert len(r.read(P)) == P
        assert r.read() == peek(r.address, 2 * P)
        # Task-level accessors at absolute addresses
        task.write(r.address + 5, bytearray(b"xyz"))
        assert task.read(r.address + 5, 3) == b"xyz"
        task.write(r.address + 9, memoryview(b"mv"))
        assert peek(r.address + 9, 2) == b"mv"


def test_task_read_and_write_memory_pymach_did_not_map(task):
    buf = ctypes.create_string_buffer(b"interpreter heap", 32)
    addr = ctypes.addressof(buf)
    assert task.read(addr, 16) == b"interpreter heap"
    task.write(addr, b"INTERPRETER")
    assert buf.raw[:16] == b"INTERPRETER heap"


def test_task_write_to_a_read_only_mapping_pymach_did_not_map(task):
    # a read-only page of some library or of the interpreter itself
    ro = next(m for m in maps() if m[2] == "r--p" and m[3].startswith("/"))
    before = peek(ro[0], 64)
    with pytest.raises(ProtectionFailureError):
        task.write(ro[0], b"x" * 64)
    assert peek(ro[0], 64) == before
    assert task.read(ro[0], 64) == before


def test_region_accessors_check_bounds(task):
    # these are refused by Region itself before any memory access
    with task.allocate(P) as r:
        with pytest.raises(InvalidArgumentError):
            r.read(P - 1, 2)
        with pytest.raises(InvalidArgumentError):
            r.read(-1, 1)
        with pytest.raises(InvalidArgumentError):
            r.write(b"xy", P - 1)
        with pytest.raises(InvalidArgumentError):
            r.protect(VM_PROT_READ, offset=0, size=2 * P)
        assert perms_at(r.address) == "rw-p"


def test_read_and_write_of_prot_none_raise_protection_failure(task):
    with task.allocate(P) as r:
        poke(r.address, b"secret")
        r.protect(VM_PROT_NONE)
        assert perms_at(r.address) == "---p"
        with pytest.raises(ProtectionFailureError) as ei:
            r.read(0, 6)
        assert ei.value.kr == 2
        with pytest.raises(ProtectionFailureError) as ei:
            r.write(b"x")
        assert ei.value.kr == 2
        with pytest.raises(ProtectionFailureError):
            task.read(r.address + 100, 1)
        # still alive, and the data was not touched
        r.protect(VM_PROT_READ)
        assert peek(r.address, 6) == b"secret"


def test_write_to_read_only_memory_raises_and_leaves_it_alone(task):
    with task.allocate(P) as r:
        poke(r.address, b"original")
        r.protect(VM_PROT_READ)
        with pytest.raises(ProtectionFailureError) as ei:
            r.write(b"changed!")
        assert ei.value.kr == 2
        assert peek(r.address, 8) == b"original"
        assert r.read(0, 8) == b"original"


def test_protection_faults_do_not_signal_a_fork_child(task):
    r = task.allocate(2 * P)
    try:
        r.protect(VM_PROT_NONE, offset=0, size=P)
        r.protect(VM_PROT_READ, offset=P, size=P)

        def child():
            faulthandler.disable()  # a real SIGSEGV would kill us outright
            me = Task.self()
            for fn in (lambda: r.read(0, 1), lambda: me.read(r.address, 16),
                       lambda: r.write(b"x"), lambda: r.write(b"x", P),
                       lambda: me.write(r.address + P, b"y")):
                try:
                    fn()
                except ProtectionFailureError as e:
                    assert e.kr == 2
                else:
                    raise AssertionError("no ProtectionFailureError")

        run_in_child(child)
    finally:
        r.deallocate()


def test_raw_access_to_prot_none_does_signal_a_child(task):
    # The control for the test above: touching the same page without the
    # safe accessors is a real SIGSEGV, so an exit code of 0 proves something.
    with task.allocate(P) as r:
        r.protect(VM_PROT_NONE)
        code = child_exit_code(lambda: peek(r.address, 1))
        assert code == -signal.SIGSEGV


def test_read_of_unmapped_memory_raises_invalid_address(task):
    r = task.allocate(2 * P)
    addr = r.address
    r.deallocate()
    assert entries_in(addr, addr + 2 * P) == []
    with pytest.raises(InvalidAddressError) as ei:
        task.read(addr, 16)
    assert ei.value.kr == 1
    with pytest.raises(InvalidAddressError):
        task.write(addr + P, b"x")


def test_read_running_into_a_hole_raises_invalid_address(task):
    r = task.allocate(2 * P)
    try:
        task.deallocate(r.address + P, P)
        with pytest.raises(InvalidAddressError):
            task.read(r.address + P - 8, 16)
        with pytest.raises(InvalidAddressError):
            task.write(r.address + P - 8, bytes(16))
        assert peek(r.address + P - 8, 8) == bytes(8)
    finally:
        task.deallocate(r.address, r.size)


def test_region_read_after_deallocate_raises_invalid_address(task):
    r = task.allocate(P)
    r.deallocate()
    with pytest.raises(InvalidAddressError):
        r.read(0, 1)
    with pytest.raises(InvalidAddressError):
        r.write(b"x")
    with pytest.raises(InvalidAddressError):
        r.info()


def test_write_is_all_or_nothing_across_a_read_only_page(task):
    with task.allocate(2 * P) as r:
        poke(r.address + P - 8, b"L" * 8)
        poke(r.address + P, b"R" * 8)
        r.protect(VM_PROT_READ, offset=P, size=P)
        with pytest.raises(ProtectionFailureError):
            r.write(b"z" * 16, P - 8)
        # not one byte landed, neither on the writable page nor the other
        assert peek(r.address + P - 8, 16) == b"L" * 8 + b"R" * 8
        with pytest.raises(ProtectionFailureError):
            task.write(r.address, bytes(2 * P))
        assert peek(r.address + P - 8, 8) == b"L" * 8


# -- protect -----------------------------------------------------------------------

def test_protect_changes_the_real_protection(task):
    with task.allocate(P) as r:
        for prot, perms in ((VM_PROT_READ, "r--p"), (VM_PROT_NONE, "---p"),
                            (VM_PROT_ALL, "rwxp"), (VM_PROT_DEFAULT, "rw-p")):
            r.protect(prot)
            assert perms_at(r.address) == perms
            info = r.info()
            assert info.protection == prot and info.max_protection == VM_PROT_ALL


def test_protect_part_of_a_region(task):
    with task.allocate(3 * P) as r:
        r.protect(VM_PROT_READ, offset=P, size=P)
        assert [perms_at(r.address + i * P) for i in range(3)] == ["rw-p", "r--p", "rw-p"]
        prots = [(e.start - r.address, e.end - r.address, e.prot) for e in entries_in(r.address, r.end)]
        assert prots == [(0, P, VM_PROT_DEFAULT), (P, 2 * P, VM_PROT_READ), (2 * P, 3 * P, VM_PROT_DEFAULT)]
        # a sub-page size covers the whole page
        r.protect(VM_PROT_NONE, offset=2 * P, size=1)
        assert perms_at(r.address + 2 * P) == "---p"


def test_set_maximum_lowers_max_and_clips_current(task):
    with task.allocate(P) as r:
        r.protect(VM_PROT_READ, set_maximum=True)
        info = r.info()
        assert info.max_protection == VM_PROT_READ and info.protection == VM_PROT_READ
        assert perms_at(r.address) == "r--p"
        with pytest.raises(ProtectionFailureError) as ei:
            r.protect(VM_PROT_DEFAULT)
        assert ei.value.kr == 2
        with pytest.raises(ProtectionFailureError):
            r.protect(VM_PROT_DEFAULT, set_maximum=True)  # the maximum never goes up
        assert perms_at(r.address) == "r--p"
        assert r.info().max_protection == VM_PROT_READ
        r.protect(VM_PROT_NONE)
        assert perms_at(r.address) == "---p"
        r.protect(VM_PROT_READ)
        assert perms_at(r.address) == "r--p"


def test_protect_is_all_or_nothing(task):
    with task.allocate(2 * P) as r:
        r.protect(VM_PROT_READ, set_maximum=True, offset=P, size=P)
        with pytest.raises(ProtectionFailureError):
            r.protect(VM_PROT_WRITE)  # allowed on page 0, above the maximum on page 1
        assert [perms_at(r.address), perms_at(r.address + P)] == ["rw-p", "r--p"]
        assert [e.prot for e in entries_in(r.address, r.end)] == [VM_PROT_DEFAULT, VM_PROT_READ]


def test_protect_unmapped_range_raises_invalid_address(task):
    r = task.allocate(2 * P)
    try:
        task.deallocate(r.address + P, P)
        with pytest.raises(InvalidAddressError) as ei:
            task.protect(r.address, 2 * P, VM_PROT_READ)
        assert ei.value.kr == 1
        assert perms_at(r.address) == "rw-p"  # nothing changed before the hole
    finally:
        task.deallocate(r.address, r.size)


# -- inherit -------------------------------------------------------------------------

def test_inherit_is_recorded_and_applied(task):
    with task.allocate(P) as r:
        assert r.info().inheritance == VM_INHERIT_COPY
        assert "dc" not in vmflags_at(r.address)
        r.inherit(VM_INHERIT_NONE)
        assert r.info().inheritance == VM_INHERIT_NONE
        assert "dc" in vmflags_at(r.address)  # MADV_DONTFORK
        r.inherit(VM_INHERIT_COPY)
        assert r.info().inheritance == VM_INHERIT_COPY
        assert "dc" not in vmflags_at(r.address)
        assert perms_at(r.address) == "rw-p"


def test_inherit_rejects_bad_values(task):
    with task.allocate(P) as r:
        with pytest.raises(InvalidArgumentError):
            r.inherit(3)
        assert r.info().inheritance == VM_INHERIT_COPY


def test_region_info_shared_after_inherit_share(task):
    with task.allocate(2 * P) as r:
        poke(r.address, b"kept")
        poke(r.address + P + 7, b"also")
        before = r.info()
        assert not before.shared and before.share_mode != vm_defs.SM_SHARED
        r.inherit(VM_INHERIT_SHARE)
        info = r.info()
        assert isinstance(info, RegionInfo)
        assert info.shared and info.inheritance == VM_INHERIT_SHARE
        assert info.share_mode == vm_defs.SM_SHARED
        assert info.protection == VM_PROT_DEFAULT and info.max_protection == VM_PROT_ALL
        # really MAP_SHARED, and the contents moved with it
        assert perms_at(r.address) == "rw-s" and perms_at(r.address + P) == "rw-s"
        assert peek(r.address, 4) == b"kept" and peek(r.address + P + 7, 4) == b"also"
        assert all(e.shared for e in entries_in(r.address, r.end))
        # staying shared after going back to COPY
        r.inherit(VM_INHERIT_COPY)
        assert r.info().shared and r.info().inheritance == VM_INHERIT_COPY
    # leaving the block closed the memfd (the conftest fixture checks)


def test_inherit_share_keeps_protection(task):
    with task.allocate(P) as r:
        poke(r.address, b"ro")
        r.protect(VM_PROT_NONE)
        r.inherit(VM_INHERIT_SHARE)
        assert perms_at(r.address) == "---s"
        r.protect(VM_PROT_READ)
        assert peek(r.address, 2) == b"ro"


# -- deallocate, close, context manager ------------------------------------------------

def test_deallocate_unmaps(task):
    r = task.allocate(2 * P)
    addr = r.address
    r.deallocate()
    assert mapped_in(addr, addr + 2 * P) == []
    assert entries_in(addr, addr + 2 * P) == []
    assert "deallocated" in repr(r)


def test_deallocate_part_of_a_region(task):
    r = task.allocate(3 * P)
    try:
        task.deallocate(r.address + P, P)
        assert mapped_in(r.address + P, r.address + 2 * P) == []
        assert perms_at(r.address) == "rw-p" and perms_at(r.address + 2 * P) == "rw-p"
        assert [(e.start, e.end) for e in entries_in(r.address, r.end)] == [
            (r.address, r.address + P), (r.address + 2 * P, r.end)]
    finally:
        task.deallocate(r.address, r.size)
    assert mapped_in(r.address, r.end) == []


def test_region_is_a_context_manager(task):
    with task.allocate(P) as r:
        assert isinstance(r, Region)
        addr = r.address
        assert perms_at(addr) == "rw-p"
    assert mapped_in(addr, addr + P) == []
    assert entries_in(addr, addr + P) == []


def test_context_manager_deallocates_on_exception(task):
    with pytest.raises(RuntimeError, match="boom"):
        with task.allocate(P) as r:
            addr = r.address
            raise RuntimeError("boom")
    assert mapped_in(addr, addr + P) == []
    assert entries_in(addr, addr + P) == []


def test_close_is_idempotent_and_does_not_free_a_reuser(task):
    r = task.allocate(P)
    addr = r.address
    r.close()
    r.close()
    r.deallocate()
    # something else now lives at the same address: a stale close must not unmap it
    other = task.allocate(P, address=addr)
    try:
        poke(addr, b"mine")
        r.close()
        r.deallocate()
        with r:
            pass
        assert perms_at(addr) == "rw-p"
        assert peek(addr, 4) == b"mine"
        assert len(entries_in(addr, addr + P)) == 1
    finally:
        other.close()


def test_shared_region_close_releases_its_memfd(task):
    r = task.allocate(2 * P)
    r.inherit(VM_INHERIT_SHARE)
    fds = {e.obj.fd for e in entries_in(r.address, r.end)}
    assert fds and all(fd >= 0 for fd in fds)
    for fd in fds:
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
    r.close()
    r.close()
    for fd in fds:
        with pytest.raises(OSError) as ei:
            os.fstat(fd)
        assert ei.value.errno == errno.EBADF


# -- regions() -----------------------------------------------------------------------

def test_regions_walks_the_whole_address_space_in_order(task):
    r = task.allocate(3 * P, tag=99)
    try:
        r.protect(VM_PROT_READ, offset=P, size=P)
        task.protect(r.address + 2 * P, P, VM_PROT_READ, set_maximum=True)
        task.inherit(r.address + 2 * P, P, VM_INHERIT_NONE)
        before = maps()
        walk = list(task.regions())
        after = maps()
        # in order, non-overlapping
        for a, b in zip(walk, walk[1:]):
            assert a.start < a.end <= b.start
        # it covers everything from the first mapping to the last, [vsyscall] included
        assert walk[0].start == after[0][0]
        assert walk[-1].end == after[-1][1]
        # every VMA that stayed put during the walk begins inside some region
        # of it (the interpreter may map or unmap its own memory meanwhile)
        spans = [(g.start, g.end) for g in walk]
        for lo, hi, _perms, path in set(before) & set(after):
            assert any(s <= lo < e for s, e in spans), f"{lo:#x}-{hi:#x} {path} missing from the walk"
        # and ours is there, page by page, with its attributes
        ours = [g for g in walk if r.address <= g.start < r.end]
        got = [(g.start - r.address, g.end - r.address, g.protection, g.max_protection,
                g.inheritance, g.user_tag, g.pymach) for g in ours]
        assert got == [
            (0, P, VM_PROT_DEFAULT, VM_PROT_ALL, VM_INHERIT_COPY, 99, True),
            (P, 2 * P, VM_PROT_READ, VM_PROT_ALL, VM_INHERIT_COPY, 99, True),
            (2 * P, 3 * P, VM_PROT_READ, VM_PROT_READ, VM_INHERIT_NONE, 99, True),
        ]
    finally:
        r.deallocate()


def test_region_lookup_finds_the_next_region_above_a_hole(task):
    r = task.allocate(3 * P)
    try:
        task.deallocate(r.address, P)
        info = task.region(r.address)
        assert info.start == r.address + P and info.pymach
    finally:
        task.deallocate(r.address, r.size)


def test_region_above_everything_raises_invalid_address(task):
    with pytest.raises(InvalidAddressError):
        task.region(maps()[-1][1])


# -- MachError ---------------------------------------------------------------------------

def test_mach_error_is_an_oserror_with_kr_and_the_mach_string(task):
    with task.allocate(P) as r:
        r.protect(VM_PROT_READ, set_maximum=True)
        with pytest.raises(MachError) as ei:
            r.protect(VM_PROT_DEFAULT)
    e = ei.value
    assert isinstance(e, OSError)
    assert isinstance(e, ProtectionFailureError) and isinstance(e, PermissionError)
    assert e.kr == 2
    assert mach_error_string(2) == "(os/kern) protection failure"
    assert mach_error_string(2) in str(e)
    assert e.errno == errno.EACCES


def test_mach_error_invalid_address_from_a_real_call(task):
    r = task.allocate(P)
    r.deallocate()
    with pytest.raises(OSError) as ei:
        task.protect(r.address, P, VM_PROT_READ)
    e = ei.value
    assert type(e) is InvalidAddressError and isinstance(e, MachError)
    assert e.kr == 1
    assert mach_error_string(1) == "(os/kern) invalid address"
    assert mach_error_string(1) in str(e)


def test_mach_error_builds_the_registered_subclass():
    for kr, cls in ((1, InvalidAddressError), (2, ProtectionFailureError), (3, NoSpaceError),
                    (4, InvalidArgumentError)):
        e = MachError(kr, "ctx")
        assert type(e) is cls and e.kr == kr
        assert str(e).startswith("ctx: ") and mach_error_string(kr) in str(e)
        again = pickle.loads(pickle.dumps(e))
        assert type(again) is cls and again.kr == kr


def test_mach_error_carries_the_errno_it_maps_to():
    e = MachError(2, "ctx")
    assert e.errno == errno.EACCES
    assert e.strerror == mach_error_string(2)
    assert MachError(1).errno == errno.EFAULT
    assert MachError(4).errno == errno.EINVAL
