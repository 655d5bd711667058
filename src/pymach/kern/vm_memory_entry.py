"""Memory entries (XNU's vm_named_entry): a name for a range of a VM object.

A memory entry is held as a send right. It travels in port descriptors
like any send right, and mach_vm_map maps what it names.

Here a memory entry is an open memfd and a range [offset, offset + size)
of it. The entry's permission is the access mode its fd was opened with:

- VM_PROT_READ|VM_PROT_WRITE is an O_RDWR fd;
- VM_PROT_READ alone is an O_RDONLY fd. It is re-opened through
  /proc/self/fd, which gives a new open file description with its own mode.

Kernel facts this relies on:

- mmap(PROT_WRITE, MAP_SHARED) of an O_RDONLY fd fails with EACCES, and so
  does a later mprotect(PROT_WRITE) of such a mapping. So a read-only entry
  stays read-only for every holder, whatever the holder's runtime does.
- A memfd sealed with F_SEAL_SHRINK and F_SEAL_GROW cannot change size. No
  holder can truncate it and make another holder's mapping raise SIGBUS.
  The seals cannot be removed, and every fd of the memfd shares them.
- mmap(MAP_PRIVATE) of a memfd copies a page only when this mapping writes
  it. Pages it has not written still show later writes through other
  mappings. A true snapshot (copy=TRUE) is therefore copied at map time.
"""

from __future__ import annotations

import fcntl
import os

from .._linux import mm
from . import kern_return as K
from . import vm_defs as V

SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW


class MemoryEntry:
    """An owned fd of a sealed memfd, and the range it names."""

    __slots__ = ("fd", "offset", "size", "protection", "ino")

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self.fd = fd
        self.offset = offset
        self.size = size
        writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
        self.protection = V.VM_PROT_READ | (V.VM_PROT_WRITE if writable else 0)
        self.ino = os.fstat(fd).st_ino

    @classmethod
    def of_object(cls, fd: int, offset: int, size: int, protection: int) -> "MemoryEntry":
        """A new entry for [offset, offset + size) of the memfd ``fd`` (not
        taken over), with ``protection``. The memfd is sealed against
        shrinking and growing first."""
        try:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
        except OSError as err:
            if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & SEALS != SEALS:
                raise K.MachError(K.KERN_FAILURE, "the object cannot be sealed") from err
        return cls(_reopen(fd, protection), offset, size)

    @classmethod
    def named_create(cls, size: int, protection: int) -> "MemoryEntry":
        """MAP_MEM_NAMED_CREATE: a fresh zero-filled object of ``size``."""
        fd = mm.memfd("mach.memory_entry", size)
        try:
            return cls.of_object(fd, 0, size, protection)
        finally:
            os.close(fd)

    def sub(self, offset: int, size: int, protection: int) -> "MemoryEntry":
        """A child entry for [offset, offset + size) of this one (a parent
        handle). KERN_PROTECTION_FAILURE asking for more than we allow;
        KERN_INVALID_ARGUMENT for a range past our end."""
        if protection & ~self.protection & (V.VM_PROT_READ | V.VM_PROT_WRITE):
            raise K.MachError(K.KERN_PROTECTION_FAILURE, "more access than the parent entry allows")
        if offset + size > self.size:
            raise K.MachError(K.KERN_INVALID_ARGUMENT, "the range runs past the parent entry")
        return MemoryEntry(_reopen(self.fd, protection), self.offset + offset, size)

    def key(self) -> tuple[str, int, int, int, int]:
        """What makes two handles name the same entry (they coalesce)."""
        return ("memory_entry", self.ino, self.offset, self.size, self.protection)

    def dup(self) -> "MemoryEntry":
        return MemoryEntry(os.dup(self.fd), self.offset, self.size)

    def wire_fds(self) -> list[int]:
        return [self.fd]

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    forget = close  # a fork child drops its copy: nothing else happens

    def __repr__(self) -> str:
        return f"<MemoryEntry fd={self.fd} [{self.offset:#x}, +{self.size:#x}) prot={self.protection}>"


def _reopen(fd: int, protection: int) -> int:
    """An fd of the same memfd whose access mode is ``protection``."""
    mode = os.O_RDWR if protection & V.VM_PROT_WRITE else os.O_RDONLY
    return os.open(f"/proc/self/fd/{fd}", mode | os.O_CLOEXEC)


def check_entry(fd: int, offset: int, size: int) -> None:
    """A memory entry that arrived in a message: its fd must be a memfd
    sealed against resizing, at least as long as the range it names
    (MachError MACH_RCV_BODY_ERROR otherwise)."""
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        length = os.fstat(fd).st_size
    except OSError:
        raise K.MachError(K.MACH_RCV_BODY_ERROR, "a memory entry that is not a memfd") from None
    if seals & SEALS != SEALS or length < offset + size or not size or size % mm.PAGE_SIZE:
        raise K.MachError(K.MACH_RCV_BODY_ERROR, "a memory entry that does not match its object")
