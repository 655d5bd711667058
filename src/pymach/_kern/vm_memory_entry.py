"""Memory entries (XNU's vm_named_entry): a name for a range of a VM object.

A memory entry is held as a send right. It travels in port descriptors
like any send right, and mach_vm_map maps what it names.

Here a memory entry is an open memfd and a range [offset, offset + size)
of it, with the entry's protection. The fd's access mode enforces the
protection where the kernel can:

- an entry with VM_PROT_WRITE holds an O_RDWR fd;
- any other entry holds an O_RDONLY fd. It is re-opened through
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

An entry is one of XNU's two kinds:

- an object entry (the default and parent paths, MAP_MEM_NAMED_CREATE):
  mach_vm_map maps any page-aligned part of it;
- a copy entry (``is_copy``: MAP_MEM_VM_COPY, MAP_MEM_VM_SHARE): mapped
  whole, and refused as a parent.

A copy entry keeps the map entries it was made over, as XNU's vm_map_copy
keeps its entry list: ``parts`` holds the length and user tag
of each, in order, and mach_vm_map makes one map entry of each part (with
the caller's protections and inheritance, and the part's tag unless the
caller gives one, as vm_map_enter_mem_object does). The object stays one
memfd. In a message the parts travel as a second fd, a small memfd sealed
against every change, holding one PART record per part.
"""

from __future__ import annotations

import struct

from .._linux import files, memfd, mm
from . import kern_return as K
from . import vm_defs as V

SEALS = memfd.F_SEAL_SHRINK | memfd.F_SEAL_GROW

# The wire form of an entry (a right of kind KIND_ENTRY): its size is page
# aligned, so the low bits of the size field carry the flags and the top 16
# bits the data offset; aux is the object offset in pages.
_WIRE_PROT = 0x7
_WIRE_COPY = 0x8
_WIRE_PURGABLE = 0x10
_WIRE_FLAGS = _WIRE_PROT | _WIRE_COPY | _WIRE_PURGABLE
_WIRE_DATA_SHIFT = 48
_WIRE_SIZE_MASK = (1 << _WIRE_DATA_SHIFT) - 1

# a part of a copy entry on the wire: its length and user tag
PART = struct.Struct("<QI4x")
# the most parts a received entry may name (XNU's copies are bounded by
# the map's entry count; this bounds what a peer can make us read)
MAX_PARTS = 1 << 16
# what a received table must have (no holder can then change it)
_TABLE_NEEDED = memfd.F_SEAL_WRITE | memfd.F_SEAL_SHRINK | memfd.F_SEAL_GROW
_TABLE_SEALS = _TABLE_NEEDED | memfd.F_SEAL_SEAL

Parts = tuple[tuple[int, int], ...]


class MemoryEntry:
    """An owned fd of a sealed memfd, and the range it names."""

    __slots__ = ("fd", "offset", "size", "protection", "ino", "is_copy", "data_offset", "purgable",
                 "access", "parts", "table_fd")

    def __init__(self, fd: int, offset: int, size: int, protection: int, *, is_copy: bool = False,
                 data_offset: int = 0, purgable: bool = False, access: int = 0, parts: Parts = (),
                 table_fd: int = -1) -> None:
        self.fd = fd
        self.offset = offset
        self.size = size
        self.protection = protection & V.VM_PROT_ALL
        self.ino = files.inode(fd)
        self.is_copy = is_copy
        self.data_offset = data_offset  # MAP_MEM_USE_DATA_ADDR: where the data starts in the first page
        self.purgable = purgable
        self.access = access  # the cache mode (GET_MAP_MEM); Linux has no per-object caching
        # (length, tag) of each map entry a copy entry was made over, when
        # there are several or one has a tag; the sealed memfd that carries
        # them (owned)
        self.parts = parts
        self.table_fd = table_fd

    @classmethod
    def of_object(cls, fd: int, offset: int, size: int, protection: int, *, is_copy: bool = False,
                  data_offset: int = 0, purgable: bool = False, access: int = 0,
                  parts: Parts = ()) -> "MemoryEntry":
        """A new entry for [offset, offset + size) of the memfd ``fd`` (not
        taken over), with ``protection``; ``parts`` (a copy entry's map
        entries) is kept when there are two or more, or a tag. The memfd is sealed
        against shrinking and growing first. KERN_FAILURE if it cannot be,
        or if the parts' table cannot be made."""
        try:
            memfd.add_seals(fd, SEALS)
        except OSError as err:
            if memfd.seals(fd) & SEALS != SEALS:
                raise K.MachError(K.KERN_FAILURE, "the object cannot be sealed") from err
        table = -1
        if len(parts) > 1 or any(t for _n, t in parts):
            try:
                table = memfd.filled("mach.copy_entries", b"".join(PART.pack(n, t) for n, t in parts),
                                     _TABLE_SEALS)
            except OSError as err:
                raise K.MachError(K.kr_from_oserror(err), "the copy's entry table") from err
        else:
            parts = ()
        try:
            own = _reopen(fd, protection)
        except BaseException:
            if table >= 0:
                files.close(table)
            raise
        return cls(own, offset, size, protection, is_copy=is_copy, data_offset=data_offset,
                   purgable=purgable, access=access, parts=parts, table_fd=table)

    @classmethod
    def named_create(cls, size: int, protection: int, purgable: bool = False,
                     access: int = 0) -> "MemoryEntry":
        """MAP_MEM_NAMED_CREATE: a fresh zero-filled object of ``size``."""
        try:
            fd = mm.memfd("mach.memory_entry", size)
        except OSError as err:
            raise K.MachError(K.kr_from_oserror(err), "memfd") from err
        try:
            return cls.of_object(fd, 0, size, protection, purgable=purgable, access=access)
        finally:
            files.close(fd)

    def sub(self, offset: int, size: int, protection: int, data_offset: int, access: int) -> "MemoryEntry":
        """A child entry for [offset, offset + size) of this one (already
        checked against it), on the same object."""
        return MemoryEntry(_reopen(self.fd, protection), self.offset + offset, size, protection,
                           data_offset=data_offset, purgable=self.purgable,
                           access=access or self.access)

    def key(self) -> tuple[str, int, int, int, int, bool, int, Parts]:
        """What makes two handles name the same entry: they coalesce when
        one arrives in a message."""
        return ("memory_entry", self.ino, self.offset, self.size, self.protection, self.is_copy,
                self.data_offset, self.parts)

    def wire(self) -> tuple[int, int]:
        """(size field, aux) of this entry's right in a message record."""
        flags = self.protection | (_WIRE_COPY if self.is_copy else 0) | (_WIRE_PURGABLE if self.purgable else 0)
        return self.size | flags | self.data_offset << _WIRE_DATA_SHIFT, self.offset // mm.PAGE_SIZE

    @classmethod
    def from_wire(cls, fds: list[int], size_field: int, aux: int) -> "MemoryEntry":
        """The entry a record carries (its fds are taken over: the memfd,
        and the parts' table if there is one); check_entry has passed."""
        table = fds[1] if len(fds) > 1 else -1
        try:
            parts = _read_parts(table) if table >= 0 else ()
        except BaseException:
            files.close_all(list(fds))
            raise
        return cls(fds[0], aux * mm.PAGE_SIZE, size_field & _WIRE_SIZE_MASK & ~_WIRE_FLAGS,
                   size_field & _WIRE_PROT, is_copy=bool(size_field & _WIRE_COPY),
                   data_offset=size_field >> _WIRE_DATA_SHIFT, purgable=bool(size_field & _WIRE_PURGABLE),
                   parts=parts, table_fd=table)

    def dup(self) -> "MemoryEntry":
        fd = files.dup(self.fd)
        try:
            table = files.dup(self.table_fd) if self.table_fd >= 0 else -1
        except BaseException:
            files.close(fd)
            raise
        return MemoryEntry(fd, self.offset, self.size, self.protection, is_copy=self.is_copy,
                           data_offset=self.data_offset, purgable=self.purgable, access=self.access,
                           parts=self.parts, table_fd=table)

    def wire_fds(self) -> list[int]:
        return [self.fd] if self.table_fd < 0 else [self.fd, self.table_fd]

    def close(self) -> None:
        if self.table_fd >= 0:
            table, self.table_fd = self.table_fd, -1
            files.close(table)
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            files.close(fd)

    forget = close  # a fork child drops its copy: nothing else happens

    def __repr__(self) -> str:
        kind = "copy" if self.is_copy else "object"
        return (f"<MemoryEntry {kind} fd={self.fd} [{self.offset:#x}, +{self.size:#x}) "
                f"prot={self.protection}>")


def _reopen(fd: int, protection: int) -> int:
    """An fd of the same memfd whose access mode allows ``protection``."""
    return memfd.reopen(fd, bool(protection & V.VM_PROT_WRITE))


def _read_parts(table: int) -> Parts:
    """The parts a received table holds (check_entry has passed)."""
    data = memfd.read(table, files.size(table))
    return tuple((n, t) for n, t in PART.iter_unpack(data))


def check_entry(fds: list[int], size_field: int, aux: int) -> None:
    """A memory entry that arrived in a message: its fd must be a memfd
    sealed against resizing, at least as long as the range it names, and
    writable if the entry claims VM_PROT_WRITE; a second fd, the parts of a
    copy entry, must be a memfd sealed against every change whose parts
    are page multiples that add up to the entry's size (MachError
    MACH_RCV_BODY_ERROR otherwise)."""
    fd = fds[0]
    if len(fds) > 1:
        _check_parts(fds[1], size_field)
    try:
        seals = memfd.seals(fd)
        length = files.size(fd)
        mode = files.access_mode(fd)
    except OSError:
        raise K.MachError(K.MACH_RCV_BODY_ERROR, "a memory entry that is not a memfd") from None
    size = size_field & _WIRE_SIZE_MASK & ~_WIRE_FLAGS
    data_offset = size_field >> _WIRE_DATA_SHIFT
    if (seals & SEALS != SEALS or length < aux * mm.PAGE_SIZE + size or size % mm.PAGE_SIZE
            or data_offset >= mm.PAGE_SIZE or data_offset > size):
        raise K.MachError(K.MACH_RCV_BODY_ERROR, "a memory entry that does not match its object")
    if size_field & V.VM_PROT_WRITE and mode != files.O_RDWR:
        raise K.MachError(K.MACH_RCV_BODY_ERROR, "a writable memory entry on a read-only fd")


def _check_parts(table: int, size_field: int) -> None:
    """Conditions: none (checks a received fd)."""
    try:
        seals = memfd.seals(table)
        length = files.size(table)
    except OSError:
        raise K.MachError(K.MACH_RCV_BODY_ERROR, "a copy entry's table that is not a memfd") from None
    if (seals & _TABLE_NEEDED != _TABLE_NEEDED or length % PART.size or length < PART.size
            or length > MAX_PARTS * PART.size or not size_field & _WIRE_COPY):
        raise K.MachError(K.MACH_RCV_BODY_ERROR, "a copy entry's table that does not match it")
    size = size_field & _WIRE_SIZE_MASK & ~_WIRE_FLAGS
    parts = _read_parts(table)
    if any(n <= 0 or n % mm.PAGE_SIZE or t > 0xFF for n, t in parts) or sum(n for n, _t in parts) != size:
        raise K.MachError(K.MACH_RCV_BODY_ERROR, "a copy entry's parts do not add up to it")
