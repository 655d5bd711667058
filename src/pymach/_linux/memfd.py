"""memfds: the memory objects behind memory entries and out-of-line data.

Kernel facts this module relies on:

- memfd_create makes an anonymous tmpfs file: its pages are the memory,
  mapped shared by every holder, copied-on-write by MAP_PRIVATE mappings.
  It lives while any fd or mapping of it does, in any process.
- Seals (MFD_ALLOW_SEALING at creation, then fcntl F_ADD_SEALS) belong to
  the file: every fd of it, in every process, sees them, and none can be
  removed. F_SEAL_SHRINK and F_SEAL_GROW fix its size, so that no holder
  can truncate it and make another holder's mapping take SIGBUS;
  F_SEAL_WRITE forbids every write, through write() or a mapping;
  F_SEAL_SEAL forbids further seals.
- F_ADD_SEALS with F_SEAL_WRITE fails with EBUSY while any writable shared
  mapping of the file exists (ours, or another process's). F_GET_SEALS on
  a file that is not a memfd fails (EINVAL): that tells a memfd from any
  other fd a peer may send.
- Opening /proc/self/fd/N makes a new open file description of the same
  file, with an access mode of its own: mmap(PROT_WRITE, MAP_SHARED) of an
  O_RDONLY one fails with EACCES, and so does a later mprotect(PROT_WRITE)
  of such a mapping. A read-only memory entry stays read-only for every
  holder, whatever the holder's runtime does.
- write() into a memfd copies from the caller's pages with the kernel's
  user-copy routine; pread() copies out without a mapping.
- fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) frees a range of a
  tmpfs file's pages: every mapping of it, in every process, then reads
  zeros there. F_SEAL_WRITE forbids it (EPERM); the size seals do not.
- tmpfs keeps user.* extended attributes (Linux 6.6 and later): set
  through one fd, every fd of the file in every process reads them.
"""

from __future__ import annotations

import ctypes
import fcntl
import os

from . import libc

F_SEAL_SEAL = fcntl.F_SEAL_SEAL
F_SEAL_SHRINK = fcntl.F_SEAL_SHRINK
F_SEAL_GROW = fcntl.F_SEAL_GROW
F_SEAL_WRITE = fcntl.F_SEAL_WRITE


def create(name: str, size: int, *, sealing: bool = True) -> int:
    """A close-on-exec memfd of ``size`` bytes (that allows sealing, unless
    ``sealing`` is False)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if sealing else 0))
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def add_seals(fd: int, seals: int) -> None:
    """F_ADD_SEALS. OSError: EBUSY (F_SEAL_WRITE while a writable shared
    mapping exists), EPERM (F_SEAL_SEAL is set), EINVAL (not a memfd)."""
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)


def seals(fd: int) -> int:
    """The seals of the memfd ``fd``. OSError EINVAL if it is not a memfd."""
    return fcntl.fcntl(fd, fcntl.F_GET_SEALS)


def filled(name: str, data: bytes | memoryview, seal: int) -> int:
    """A new memfd holding ``data``, then sealed with ``seal``."""
    fd = create(name, 0)
    try:
        view, done, size = memoryview(data), 0, len(data)
        while done < size:
            done += os.write(fd, view[done:])
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seal)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read(fd: int, size: int, offset: int = 0) -> bytes:
    """Up to ``size`` bytes of the file at ``offset`` (pread: short at its end)."""
    return os.pread(fd, size, offset)


def reopen(fd: int, writable: bool) -> int:
    """A new close-on-exec fd of the same file, O_RDWR if ``writable``,
    else O_RDONLY (a new open file description: see above)."""
    return os.open(f"/proc/self/fd/{fd}", (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)


FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
_fallocate = libc.fn("fallocate", libc.c_int, libc.c_int, libc.c_int, ctypes.c_int64, ctypes.c_int64)


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Free the pages of [offset, offset + length): they read as zeros.
    OSError EPERM if the file is sealed against writes."""
    if _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length):
        libc.raise_errno("fallocate")


def get_attr(fd: int, name: str) -> bytes | None:
    """The user.* extended attribute ``name`` of the file, or None if it
    has none (or the file system keeps none)."""
    try:
        return os.getxattr(fd, name)
    except OSError:
        return None


def set_attr(fd: int, name: str, value: bytes) -> bool:
    """Set the extended attribute ``name``; False if the file system
    refuses it."""
    try:
        os.setxattr(fd, name, value)
    except OSError:
        return False
    return True
