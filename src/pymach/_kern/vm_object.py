"""VM objects: the memory behind shared mappings, held as a memfd.

Private anonymous memory needs no object: the Linux kernel keeps it in the
process's own page tables. An object exists once memory must be reachable
from more than one mapping or process (VM_INHERIT_SHARE, memory entries,
out-of-line data); it is then a memfd that the runtime holds open.
"""

from __future__ import annotations

import os

from .._linux import files, mm


class VmObject:
    """A reference-counted memfd. The last release closes it.

    ``true_share`` marks an object that a memory entry or a shared remap
    names (XNU's true_share): writes through any of its mappings, in any
    process, reach the same pages."""

    __slots__ = ("fd", "size", "refs", "true_share", "_ino", "__weakref__")

    def __init__(self, fd: int, size: int, true_share: bool = False) -> None:
        self.fd = fd
        self.size = size
        self.refs = 1
        self.true_share = true_share
        self._ino = 0

    @classmethod
    def create(cls, size: int, name: str = "mach.vm_object") -> "VmObject":
        """A fresh zero-filled object of ``size`` bytes."""
        return cls(mm.memfd(name, size), size)

    @property
    def ino(self) -> int:
        """The memfd's inode: the same for every fd of the same memory."""
        if not self._ino:
            self._ino = files.inode(self.fd)
        return self._ino

    def reference(self) -> "VmObject":
        self.refs += 1
        return self

    def release(self) -> None:
        self.refs -= 1
        if self.refs <= 0 and self.fd >= 0:
            fd, self.fd = self.fd, -1
            files.close(fd)

    def __repr__(self) -> str:
        return f"<VmObject fd={self.fd} size={self.size:#x} refs={self.refs}>"
