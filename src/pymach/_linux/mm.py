"""Memory-management system calls: mmap and its family, process_vm_readv/
writev, mincore and /proc/self/pagemap.

Kernel facts this module relies on:

- A mapping is a VMA: a page-aligned range with one set of protections and
  one backing (anonymous memory, or a file such as a memfd at an offset).
  mprotect/madvise split VMAs, and the kernel merges neighbours that become
  identical again, so /proc/PID/maps may show fewer lines than the Mach
  entries pymach keeps; coverage, not line count, is what must agree.
- mprotect/madvise/msync/mlock fail with ENOMEM when any page of the range is
  not mapped. mmap fails with ENOMEM when there is no room; with
  MAP_FIXED_NOREPLACE it fails with EEXIST when the range is taken.
- MADV_DONTFORK leaves a range unmapped in a fork child, MADV_DOFORK undoes
  it. MAP_PRIVATE pages are copied-on-write into the child; MAP_SHARED pages
  stay shared. This is Mach's VM_INHERIT_NONE / COPY / SHARE.
- process_vm_readv/writev copy between address spaces (our own included)
  with the kernel's user-copy routines: a fault is an EFAULT or a short count,
  never a signal. That is what makes the "safe" accessors safe. They never
  override page protections: a write into a read-only page fails.
- /proc/self/pagemap has one 64-bit word per virtual page: bit 63 present,
  bit 62 swapped, bit 61 file-page or shared-anon, bit 56 exclusively mapped.
  The frame number in bits 0-54 reads as zero without CAP_SYS_ADMIN.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import threading

from .libc import c_int, c_long, c_size_t, c_ssize_t, c_ulong, c_void_p, fn, raise_errno

PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE")
PAGE_MASK: int = PAGE_SIZE - 1


def _mmap_min_addr() -> int:
    try:
        with open("/proc/sys/vm/mmap_min_addr") as f:
            return max(int(f.read()), PAGE_SIZE)
    except (OSError, ValueError):
        return 65536


# the lowest address the kernel lets a process map (vm.mmap_min_addr)
MMAP_MIN_ADDR: int = _mmap_min_addr()

PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_FIXED_NOREPLACE = 0x100000

MADV_NORMAL = 0
MADV_RANDOM = 1
MADV_SEQUENTIAL = 2
MADV_WILLNEED = 3
MADV_DONTNEED = 4
MADV_FREE = 8
MADV_DONTFORK = 10
MADV_HUGEPAGE = 14
MADV_DOFORK = 11
MADV_COLD = 20
MADV_PAGEOUT = 21

MS_ASYNC = 1
MS_INVALIDATE = 2
MS_SYNC = 4

MAP_FAILED = ctypes.c_void_p(-1).value

_mmap = fn("mmap", c_void_p, c_void_p, c_size_t, c_int, c_int, c_int, c_long)
_munmap = fn("munmap", c_int, c_void_p, c_size_t)
_mprotect = fn("mprotect", c_int, c_void_p, c_size_t, c_int)
_madvise = fn("madvise", c_int, c_void_p, c_size_t, c_int)
_msync = fn("msync", c_int, c_void_p, c_size_t, c_int)
_mlock = fn("mlock", c_int, c_void_p, c_size_t)
_munlock = fn("munlock", c_int, c_void_p, c_size_t)
_mincore = fn("mincore", c_int, c_void_p, c_size_t, ctypes.c_char_p)
_prctl = fn("prctl", c_int, c_int, c_ulong, c_ulong, c_ulong, c_ulong)


class iovec(ctypes.Structure):
    _fields_ = [("iov_base", c_void_p), ("iov_len", c_size_t)]


_process_vm_writev = fn("process_vm_writev", c_ssize_t, c_int, ctypes.POINTER(iovec), c_ulong,
                        ctypes.POINTER(iovec), c_ulong, c_ulong)


def mmap(addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
    """mmap(2); returns the address or raises OSError."""
    r = _mmap(addr or None, length, prot, flags, fd, offset)
    if r == MAP_FAILED:
        raise_errno("mmap")
    return r  # type: ignore[no-any-return]


_mremap = fn("mremap", c_void_p, c_void_p, c_size_t, c_size_t, c_int, c_void_p)
MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2


def mremap_fixed(old: int, size: int, new: int) -> None:
    """Move the pages at ``old`` to ``new``, replacing whatever was mapped
    there, in one step (mremap MREMAP_MAYMOVE|MREMAP_FIXED)."""
    if _mremap(old, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, new) == MAP_FAILED:
        raise_errno("mremap")


def munmap(addr: int, length: int) -> None:
    """munmap(2). Unmapped pages inside the range are not an error."""
    if _munmap(addr, length):
        raise_errno("munmap")


# The bare binding, for hot paths that check the result themselves: returns
# 0, or -1 with the cause in get_errno(). VM_PROT_* bits equal PROT_* bits.
raw_mprotect = _mprotect
raw_munmap = _munmap
raw_mmap = _mmap  # MAP_FAILED on failure
get_errno = ctypes.get_errno


def python_mmap() -> type:
    """Python's own mmap.mmap type (a buffer over a mapping), imported on
    first use: what a benchmark compares the bare calls with."""
    import mmap as python
    return python.mmap


def mprotect(addr: int, length: int, prot: int) -> None:
    """mprotect(2); ENOMEM if any page of the range is unmapped."""
    if _mprotect(addr, length, prot):
        raise_errno("mprotect")


def madvise(addr: int, length: int, advice: int) -> None:
    """madvise(2); ENOMEM if any page of the range is unmapped."""
    if _madvise(addr, length, advice):
        raise_errno("madvise")


def msync(addr: int, length: int, flags: int) -> None:
    """msync(2); ENOMEM if any page of the range is unmapped."""
    if _msync(addr, length, flags):
        raise_errno("msync")


def mlock(addr: int, length: int) -> None:
    """mlock(2). Without CAP_IPC_LOCK the total is capped by RLIMIT_MEMLOCK
    (ENOMEM past it, EPERM when the limit is zero)."""
    if _mlock(addr, length):
        raise_errno("mlock")


def munlock(addr: int, length: int) -> None:
    """munlock(2)."""
    if _munlock(addr, length):
        raise_errno("munlock")


def view(addr: int, n: int) -> memoryview:
    """A writable memoryview of ``n`` bytes at ``addr``. Touching it obeys
    the page protections: a fault here is a real SIGSEGV."""
    return memoryview((ctypes.c_char * n).from_address(addr)).cast("B")


def buffer_address(buf: bytearray) -> int:
    """The address of a bytearray's storage (valid while it is not resized)."""
    if not buf:
        return 0
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


def memset(addr: int, value: int, n: int) -> None:
    """memset(3) on raw memory (faults are real signals)."""
    ctypes.memset(addr, value, n)


def mincore(addr: int, length: int) -> bytes:
    """mincore(2): one byte per page, bit 0 set when the page is resident."""
    n = (length + PAGE_MASK) // PAGE_SIZE
    vec = ctypes.create_string_buffer(n)
    if _mincore(addr, length, vec):
        raise_errno("mincore")
    return vec.raw


PM_PRESENT = 1 << 63
PM_SWAPPED = 1 << 62
PM_FILE_OR_SHARED = 1 << 61
PM_EXCLUSIVE = 1 << 56
PM_SOFT_DIRTY = 1 << 55
PM_PFN_MASK = (1 << 55) - 1


def pagemap(addr: int, npages: int, pid: int | str = "self") -> tuple[int, ...]:
    """The /proc/PID/pagemap words for ``npages`` pages from ``addr``."""
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.pread(fd, 8 * npages, (addr // PAGE_SIZE) * 8)
    finally:
        os.close(fd)
    return struct.unpack(f"<{len(data) // 8}Q", data)


# /proc/kpageflags bits (readable with CAP_SYS_ADMIN only)
KPF_REFERENCED = 1 << 2
KPF_DIRTY = 1 << 4


def kpage(pfn: int) -> tuple[int, int] | None:
    """(flags, mapcount) of a physical frame, or None without privilege."""
    try:
        with open("/proc/kpageflags", "rb", buffering=0) as f:
            f.seek(pfn * 8)
            flags = struct.unpack("<Q", f.read(8))[0]
        with open("/proc/kpagecount", "rb", buffering=0) as f:
            f.seek(pfn * 8)
            count = struct.unpack("<Q", f.read(8))[0]
    except OSError:
        return None
    return flags, count


_IOV = threading.local()  # one pair of iovecs per thread, reused

# process_vm_readv bound again without argtypes, for the remote-read hot
# path: _vm_rw passes only C-ready ints and byref(), so ctypes can skip its
# per-argument conversion checks.
_process_vm_readv_hot = ctypes.CDLL(None, use_errno=True).process_vm_readv
_process_vm_readv_hot.restype = c_ssize_t


def _vm_rw(call: object, pid: int, local: int, remote: int, length: int) -> int:
    try:
        liov, riov, lref, rref = _IOV.pair
    except AttributeError:
        liov, riov = iovec(), iovec()
        lref, rref = ctypes.byref(liov), ctypes.byref(riov)
        _IOV.pair = liov, riov, lref, rref
    liov.iov_base, liov.iov_len, riov.iov_base, riov.iov_len = local, length, remote, length
    r = call(pid, lref, 1, rref, 1, 0)  # type: ignore[operator]
    if r < 0:
        raise_errno("process_vm")
    return r  # type: ignore[no-any-return]


# the bare binding: (pid, byref(local iovec), 1, byref(remote iovec), 1, 0)
# returns the count copied, or -1 with the cause in get_errno()
raw_process_vm_readv = _process_vm_readv_hot


def process_vm_readv(pid: int, local: int, remote: int, length: int) -> int:
    """Copy ``length`` bytes at ``remote`` in ``pid`` to ``local`` in us.
    Returns the count copied; a fault stops the copy early (or EFAULT)."""
    return _vm_rw(_process_vm_readv_hot, pid, local, remote, length)


def process_vm_writev(pid: int, local: int, remote: int, length: int) -> int:
    """Copy ``length`` bytes at ``local`` in us to ``remote`` in ``pid``."""
    return _vm_rw(_process_vm_writev, pid, local, remote, length)


# prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME): names an anonymous range so that
# /proc/PID/maps shows "[anon:NAME]". Needs CONFIG_ANON_VMA_NAME (5.17+);
# VMAs with different names never merge.
PR_SET_VMA = 0x53564D41
PR_SET_VMA_ANON_NAME = 0


def name_anon(addr: int, length: int, name: bytes | None) -> bool:
    """Name an anonymous range; False when the kernel lacks the feature."""
    buf = ctypes.c_char_p(name) if name else None
    p = ctypes.cast(buf, c_void_p).value if buf is not None else 0
    return bool(_prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, addr, length, p or 0) == 0)


def memfd(name: str, size: int) -> int:
    """A close-on-exec memfd of ``size`` bytes that allows sealing."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def copy_range(src_fd: int, dst_fd: int, length: int, src_off: int = 0, dst_off: int = 0) -> None:
    """Copy file bytes in the kernel (copy_file_range, or sendfile)."""
    done = 0
    while done < length:
        n = os.copy_file_range(src_fd, dst_fd, length - done, src_off + done, dst_off + done)
        if n == 0:
            break
        done += n


def copy_data(src_fd: int, dst_fd: int, length: int, src_off: int = 0, dst_off: int = 0) -> None:
    """copy_range that skips the holes of the source: the destination range
    must already read as zeros (a fresh memfd).

    tmpfs (hence a memfd) reports its holes through lseek SEEK_DATA and
    SEEK_HOLE: pages never written are holes, so copying a large, mostly
    untouched object costs only its written pages. copy_file_range alone
    would read the holes as zeros and allocate a page for each. The lseek
    moves the file position that every dup of ``src_fd`` shares; pymach
    never reads or writes memfds at the file position."""
    pos, end = src_off, src_off + length
    while pos < end:
        try:
            data = os.lseek(src_fd, pos, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # no data at or after pos
                return
            raise
        if data >= end:
            return
        hole = min(os.lseek(src_fd, data, os.SEEK_HOLE), end)
        copy_range(src_fd, dst_fd, hole - data, data, dst_off + (data - src_off))
        pos = hole


def write_memory(fd: int, addr: int, length: int, offset: int) -> None:
    """pwrite ``length`` bytes of our memory at ``addr`` into ``fd`` at
    ``offset``. The kernel copies from our pages with its user-copy
    routine: an unreadable page is OSError(EFAULT), never a signal."""
    buf = view(addr, length)
    done = 0
    while done < length:
        done += os.pwrite(fd, buf[done:], offset + done)


try:
    _malloc_trim = fn("malloc_trim", c_int, c_size_t)
except AttributeError:  # another C library
    _malloc_trim = None


def release_free_heap() -> None:
    """Give the pages of free heap memory back to the kernel
    (malloc_trim(0)): glibc's malloc keeps what the heap grew by while
    one small block lives above it, so a process that has just let go of
    tens of MiB of MiB-sized buffers would go on holding them. Nothing
    happens under another C library."""
    if _malloc_trim is not None:
        _malloc_trim(0)
