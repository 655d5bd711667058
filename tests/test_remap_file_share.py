"""mach_vm_remap with copy FALSE of file mappings pymach did not map.

A MAP_SHARED file mapping is shared through its file (the same file, the
same offset, MAP_SHARED); a MAP_PRIVATE one only while it is not writable
and none of its pages was written, and then the share's maximum protection
excludes VM_PROT_WRITE. Anonymous memory pymach did not map, and written or
writable private file mappings, stay KERN_NOT_SUPPORTED
(docs/deviations.md, "Memory entries: what can be shared").
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import pymach.mach as M
from pymach.mach import byref
from procutil import ROOT_ONLY, become_nobody, open_fds, peek, poke, run_in_child

T = M.mach_task_self
P = M.vm_page_size
R, W, X = M.VM_PROT_READ, M.VM_PROT_WRITE, M.VM_PROT_EXECUTE

_libc = ctypes.CDLL(None, use_errno=True)


def _addr(m: mmap.mmap) -> int:
    buf = ctypes.c_char.from_buffer(m)
    try:
        return ctypes.addressof(buf)
    finally:
        del buf


def _remap(src: int, size: int, inherit: int = M.VM_INHERIT_DEFAULT, copy: bool = False) -> tuple[int, int, int, int]:
    addr = M.mach_vm_address_t(0)
    cur, mx = M.vm_prot_t(), M.vm_prot_t()
    kr = M.mach_vm_remap(T(), byref(addr), size, 0, M.VM_FLAGS_ANYWHERE, T(), src, copy, byref(cur), byref(mx),
                         inherit)
    return kr, addr.value, cur.value, mx.value


def _vma(addr: int) -> list[str]:
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= addr < hi:
                return parts
    raise AssertionError(f"{addr:#x} is not mapped")


@pytest.fixture
def shared_file(tmp_path: Path) -> Iterator[mmap.mmap]:
    path = tmp_path / "data"
    path.write_bytes(b"\0" * (2 * P))
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        m = mmap.mmap(fd, 2 * P, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    yield m
    m.close()


def _private_file(tmp_path: Path, prot: int) -> mmap.mmap:
    path = tmp_path / "private"
    path.write_bytes(b"a" * P + b"b" * P)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        return mmap.mmap(fd, 2 * P, mmap.MAP_PRIVATE, prot)
    finally:
        os.close(fd)


def test_shared_file_mapping_share_sees_writes_both_ways(shared_file: mmap.mmap, tmp_path: Path) -> None:
    src = _addr(shared_file)
    before = open_fds()
    kr, a, cur, mx = _remap(src, 2 * P)
    assert kr == M.KERN_SUCCESS
    try:
        assert open_fds() == before, "the file was left open"
        assert (cur, mx) == (R | W, R | W | X)  # the source's protections, as XNU's remap returns them
        assert _vma(a)[1] == "rw-s" and _vma(a)[2:5] == _vma(src)[2:5]  # the same file and offset
        poke(a + 5, b"through the share")
        assert shared_file[5:22] == b"through the share"
        shared_file[P + 1:P + 9] = b"original"
        assert peek(a + P + 1, 8) == b"original"
        assert (tmp_path / "data").read_bytes()[P + 1:P + 9] == b"original"
        info = M.vm_region_basic_info_data_64_t()
        addr, size = M.mach_vm_address_t(a), M.mach_vm_size_t(0)
        count, obj = M.mach_msg_type_number_t(M.VM_REGION_BASIC_INFO_COUNT_64), M.mach_port_t(0)
        assert M.mach_vm_region(T(), byref(addr), byref(size), M.VM_REGION_BASIC_INFO_64, byref(info),
                                byref(count), byref(obj)) == M.KERN_SUCCESS
        assert (addr.value, size.value, info.shared, info.protection, info.max_protection) == (
            a, 2 * P, 1, R | W, R | W | X)
    finally:
        assert M.mach_vm_deallocate(T(), a, 2 * P) == M.KERN_SUCCESS


def test_share_inherited_by_fork_child(shared_file: mmap.mmap) -> None:
    src = _addr(shared_file)
    kr, shared, _cur, _mx = _remap(src, P, M.VM_INHERIT_SHARE)
    assert kr == M.KERN_SUCCESS
    kr, copied, _cur, _mx = _remap(src, P, M.VM_INHERIT_COPY)
    assert kr == M.KERN_SUCCESS
    try:
        shared_file[0:4] = b"seen"

        def child() -> bytes:
            got = peek(copied, 4)
            poke(shared, b"SHARE")
            poke(copied + 8, b"COPY")
            return got

        assert run_in_child(child) == b"seen"  # the copy was taken at the fork
        assert shared_file[0:5] == b"SHARE"  # VM_INHERIT_SHARE: the child's write is ours
        assert shared_file[8:12] == b"\0\0\0\0"  # VM_INHERIT_COPY: the child's is its own
    finally:
        assert M.mach_vm_deallocate(T(), shared, P) == M.KERN_SUCCESS
        assert M.mach_vm_deallocate(T(), copied, P) == M.KERN_SUCCESS


def test_share_of_libc_text_reads_the_same_bytes() -> None:
    text = ctypes.cast(_libc.printf, ctypes.c_void_p).value
    assert text is not None
    page = text & ~(P - 1)
    before = open_fds()
    kr, a, cur, mx = _remap(page, P)
    assert kr == M.KERN_SUCCESS
    try:
        assert open_fds() == before
        # a copy of the share reads the file's bytes, its pages untouched yet
        kr, c, _cur, _mx = _remap(a, P, copy=True)
        assert kr == M.KERN_SUCCESS
        try:
            assert peek(c, P) == peek(page, P)
        finally:
            assert M.mach_vm_deallocate(T(), c, P) == M.KERN_SUCCESS
        # the share is read-only at most: a write would not reach the
        # private mapping of libc, whose pages stay the page cache's
        assert (cur, mx) == (R | X, R | X)
        assert peek(a, P) == peek(page, P)
        vma, src_vma = _vma(a), _vma(page)
        assert vma[1] == "r-xs" and vma[3:] == src_vma[3:]  # device, inode, path
        assert int(vma[2], 16) == int(src_vma[2], 16) + (page - int(src_vma[0].split("-")[0], 16))
        assert M.mach_vm_protect(T(), a, P, False, R | W) == M.KERN_PROTECTION_FAILURE
        # a share of the share is the file again
        kr, s2, cur2, mx2 = _remap(a, P)
        assert (kr, cur2, mx2) == (M.KERN_SUCCESS, R | X, R | X)
        try:
            assert peek(s2, P) == peek(page, P)
            assert _vma(s2)[2:] == vma[2:]
        finally:
            assert M.mach_vm_deallocate(T(), s2, P) == M.KERN_SUCCESS
        # no memfd object to name: a memory entry of it is refused
        size, handle = M.memory_object_size_t(P), M.mach_port_t(0)
        assert M.mach_make_memory_entry_64(T(), byref(size), a, R, byref(handle), 0) == M.KERN_NOT_SUPPORTED
    finally:
        assert M.mach_vm_deallocate(T(), a, P) == M.KERN_SUCCESS


def test_written_private_file_mapping_is_refused(tmp_path: Path) -> None:
    m = _private_file(tmp_path, mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        src = _addr(m)
        # writable: a write through the original would not reach the share
        assert _remap(src + P, P)[0] == M.KERN_NOT_SUPPORTED
        m[0:5] = b"local"  # page 0 becomes the process's own copy
        assert M.mach_vm_protect(T(), src, 2 * P, False, R) == M.KERN_SUCCESS
        before = open_fds()
        assert _remap(src, P)[0] == M.KERN_NOT_SUPPORTED
        assert _remap(src, 2 * P)[0] == M.KERN_NOT_SUPPORTED
        assert open_fds() == before
        kr, a, cur, mx = _remap(src + P, P)  # page 1 is still the file's
        # the source's maximum (rwx, as Linux allows any private mapping)
        # without VM_PROT_WRITE
        assert (kr, cur, mx) == (M.KERN_SUCCESS, R, R | X)
        try:
            assert peek(a, P) == b"b" * P
            # VM_PROT_COPY makes the share a private, writable copy, as in XNU
            assert M.mach_vm_protect(T(), a, P, False, R | W | M.VM_PROT_COPY) == M.KERN_SUCCESS
            poke(a, b"mine")
            assert peek(a, 5) == b"mineb" and m[P:P + 4] == b"bbbb"
            assert (tmp_path / "private").read_bytes()[P:P + 4] == b"bbbb"
        finally:
            assert M.mach_vm_deallocate(T(), a, P) == M.KERN_SUCCESS
        # a copy is still possible
        kr, c, _cur, _mx = _remap(src, P, copy=True)
        assert kr == M.KERN_SUCCESS
        try:
            assert peek(c, 5) == b"local"
        finally:
            assert M.mach_vm_deallocate(T(), c, P) == M.KERN_SUCCESS
    finally:
        m.close()


def test_anonymous_private_memory_pymach_did_not_map_is_refused() -> None:
    m = mmap.mmap(-1, P, mmap.MAP_PRIVATE)
    try:
        m[0] = 1
        assert _remap(_addr(m), P)[0] == M.KERN_NOT_SUPPORTED
        assert _remap(id(m) & ~(P - 1), P)[0] == M.KERN_NOT_SUPPORTED  # the interpreter's heap
    finally:
        m.close()


def test_shared_anonymous_memory_pymach_did_not_map() -> None:
    """MAP_SHARED | MAP_ANONYMOUS memory is a shmem file that only
    /proc/self/map_files opens again (CAP_SYS_ADMIN): shared for real with
    it, KERN_NOT_SUPPORTED without it."""
    m = mmap.mmap(-1, P)  # Python's anonymous mmap is MAP_SHARED
    try:
        m[0:3] = b"abc"
        kr, a, _cur, _mx = _remap(_addr(m), P)
        try:
            try:
                os.close(os.open(f"/proc/self/map_files/{_vma(_addr(m))[0]}", os.O_RDONLY))
                privileged = True
            except PermissionError:
                privileged = False
            if not privileged:
                assert kr == M.KERN_NOT_SUPPORTED
                return
            assert kr == M.KERN_SUCCESS
            poke(a + 3, b"def")
            assert m[0:6] == b"abcdef"
        finally:
            if kr == M.KERN_SUCCESS:
                assert M.mach_vm_deallocate(T(), a, P) == M.KERN_SUCCESS
    finally:
        m.close()


@ROOT_ONLY
def test_share_of_libc_text_without_privilege() -> None:
    """Without CAP_SYS_ADMIN, map_files cannot be opened: the file is found
    by the path that /proc/self/maps shows, checked by device and inode."""
    text = ctypes.cast(_libc.printf, ctypes.c_void_p).value
    assert text is not None
    page = text & ~(P - 1)

    def child() -> tuple[int, int, int, bool, bool]:
        become_nobody()
        # setuid made us undumpable, which makes /proc/self/pagemap root's:
        # a process started as an ordinary user is dumpable
        assert _libc.prctl(4, 1, 0, 0, 0) == 0  # PR_SET_DUMPABLE
        try:
            os.close(os.open(f"/proc/self/map_files/{_vma(page)[0]}", os.O_RDONLY))
            denied = False
        except PermissionError:
            denied = True
        kr, a, cur, mx = _remap(page, P)
        return kr, cur, mx, denied, kr == M.KERN_SUCCESS and peek(a, P) == peek(page, P)

    assert run_in_child(child) == (M.KERN_SUCCESS, R | X, R | X, True, True)
