"""The Pythonic task and its memory: ``Task.self()``, ``Region``.

Reads and writes here are safe: they go through the kernel's user-copy
routines (process_vm_readv/writev), so protected or unmapped memory raises
MachError (KERN_PROTECTION_FAILURE, KERN_INVALID_ADDRESS) instead of killing
the interpreter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from .kern import kern_return as K
from .kern import vm_defs as V
from .kern import ipc_right as R
from .kern import task_user as TU
from .kern import vm_user as U
from .kern.task import SELF
from .kern.vm_map import RegionInfo

if TYPE_CHECKING:
    from .ipc import MemoryEntry

__all__ = ["Task", "Region", "RegionInfo"]


class Task:
    """A Mach task. ``Task.self()`` is the calling process."""

    __slots__ = ("_name", "_owned")

    def __init__(self, name: int, *, owned: bool = False) -> None:
        self._name = name
        self._owned = owned  # we release our reference on close()

    @classmethod
    def for_pid(cls, pid: int) -> "Task":
        """The task of another process (task_for_pid): a send right over a
        pidfd, released by close() or on leaving a ``with`` block. Our own
        pid gives our own task (close() then drops the reference that
        task_for_pid added to it).

        Raises MachError KERN_FAILURE when there is no such process, or
        when Linux would not let us ptrace it (the message says the rule:
        the same user, subject to Yama's ptrace_scope, or CAP_SYS_PTRACE)."""
        return cls(TU.task_for_pid(SELF.task_name, pid), owned=True)

    def close(self) -> None:
        """Release the send right that for_pid gave (idempotent; nothing for
        Task.self())."""
        if self._owned:
            self._owned = False
            R.deallocate(SELF.space, self._name)

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> TU.BasicInfo:
        """task_info(MACH_TASK_BASIC_INFO): sizes, times, policy.

        Raises MachError: MACH_SEND_INVALID_DEST (the process exited)."""
        return TU.task_basic_info(self._name)

    @classmethod
    def self(cls) -> "Task":
        """Our own task (a fresh object after os.fork, for the child)."""
        return cls(SELF.task_name)

    @property
    def port(self) -> int:
        """The task port's name in our IPC space."""
        return self._name

    @property
    def pid(self) -> int:
        """The process id."""
        if self._name == SELF.task_name:
            return SELF.task.pid
        try:
            return TU.pid_for_task(self._name)
        except K.MachError:
            return -1

    def allocate(self, size: int, *, address: int | None = None, overwrite: bool = False,
                 tag: int = 0, flags: int = 0) -> "Region":
        """Allocate zero-filled memory: anywhere, or at ``address``.

        Raises MachError: KERN_INVALID_ARGUMENT, KERN_NO_SPACE,
        KERN_INVALID_ADDRESS, KERN_NOT_SUPPORTED."""
        f = flags | V.VM_MAKE_TAG(tag)
        if address is None:
            f |= V.VM_FLAGS_ANYWHERE
        elif overwrite:
            f |= V.VM_FLAGS_OVERWRITE
        a = U.vm_allocate(self._name, address or 0, size, f)
        return Region(self, a, _round(size))

    def region(self, address: int) -> RegionInfo:
        """The region at ``address`` or the first above it.

        Raises MachError: KERN_INVALID_ADDRESS."""
        return U.vm_region(self._name, address)

    def regions(self) -> Iterator[RegionInfo]:
        """Every region of the address space, in order (vmmap's walk)."""
        yield from U.task_target(self._name).regions()

    def read(self, address: int, size: int) -> bytes:
        """Copy bytes out of the task, safely.

        Raises MachError: KERN_INVALID_ADDRESS, KERN_PROTECTION_FAILURE."""
        if size == 0:
            return b""
        U.user_range(address, size)
        return U.task_target(self._name).copy_out(address, size)

    def write(self, address: int, data: bytes | bytearray | memoryview) -> None:
        """Copy bytes into the task, safely; all or nothing.

        Raises MachError: KERN_INVALID_ADDRESS, KERN_PROTECTION_FAILURE."""
        if len(data):
            U.user_range(address, len(data))
            U.task_target(self._name).copy_in(address, data)

    def protect(self, address: int, size: int, protection: int, *, set_maximum: bool = False) -> None:
        """mach_vm_protect. Raises MachError: KERN_PROTECTION_FAILURE,
        KERN_INVALID_ADDRESS, KERN_INVALID_ARGUMENT."""
        U.vm_protect(self._name, address, size, set_maximum, protection)

    def inherit(self, address: int, size: int, inheritance: int) -> None:
        """mach_vm_inherit. Raises MachError: KERN_INVALID_ARGUMENT,
        KERN_INVALID_ADDRESS, KERN_NOT_SUPPORTED."""
        U.vm_inherit(self._name, address, size, inheritance)

    def deallocate(self, address: int, size: int) -> None:
        """mach_vm_deallocate. Raises MachError: KERN_INVALID_ARGUMENT."""
        U.vm_deallocate(self._name, address, size)

    def copy(self, source: int, size: int, dest: int) -> None:
        """mach_vm_copy. Raises MachError: KERN_INVALID_ADDRESS,
        KERN_PROTECTION_FAILURE."""
        U.vm_copy(self._name, source, size, dest)

    def __repr__(self) -> str:
        return f"<Task port={self._name:#x} pid={self.pid}>"


class Region:
    """Memory allocated in a task: a context manager that deallocates it.
    ``close()`` is idempotent."""

    __slots__ = ("task", "address", "size", "_live")

    def __init__(self, task: Task, address: int, size: int) -> None:
        self.task = task
        self.address = address
        self.size = size
        self._live = True

    @property
    def end(self) -> int:
        return self.address + self.size

    def _check(self, offset: int, n: int) -> int:
        if not self._live:
            raise K.MachError(K.KERN_INVALID_ADDRESS, "the region was deallocated")
        if offset < 0 or n < 0 or offset + n > self.size:
            raise K.MachError(K.KERN_INVALID_ARGUMENT, f"[{offset}, {offset + n}) is outside the region")
        return self.address + offset

    def read(self, offset: int = 0, size: int | None = None) -> bytes:
        """Bytes of the region, safely. Raises MachError:
        KERN_PROTECTION_FAILURE, KERN_INVALID_ADDRESS, KERN_INVALID_ARGUMENT."""
        n = self.size - offset if size is None else size
        return self.task.read(self._check(offset, n), n)

    def write(self, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        """Write bytes into the region, safely. Raises MachError:
        KERN_PROTECTION_FAILURE, KERN_INVALID_ADDRESS, KERN_INVALID_ARGUMENT."""
        self.task.write(self._check(offset, len(data)), data)

    def protect(self, protection: int, *, set_maximum: bool = False, offset: int = 0,
                size: int | None = None) -> None:
        """Change the protection of the region or part of it."""
        n = self.size - offset if size is None else size
        self.task.protect(self._check(offset, n), n, protection, set_maximum=set_maximum)

    def inherit(self, inheritance: int) -> None:
        """Set what a fork child gets: VM_INHERIT_COPY, SHARE or NONE."""
        self.task.inherit(self._check(0, self.size), self.size, inheritance)

    def memory_entry(self, protection: int = V.VM_PROT_READ | V.VM_PROT_WRITE, *, offset: int = 0,
                     size: int | None = None) -> "MemoryEntry":
        """A memory entry sharing the region (or part of it), for another
        task to map. It covers at most the map entry the range starts in
        (a region split by protect() gives the first part). Raises
        MachError (KERN_PROTECTION_FAILURE: more than the current or maximum
        protection; KERN_INVALID_ARGUMENT: outside the region)."""
        from .ipc import MemoryEntry
        n = self.size - offset if size is None else size
        name, _size = U.vm_make_memory_entry(self.task.port, n, self._check(offset, n), protection, 0)
        return MemoryEntry(name)

    def remap(self, *, copy: bool = False) -> "Region":
        """A second mapping of the region's pages (mach_vm_remap), or with
        ``copy`` a private snapshot of them taken now. Raises MachError
        (KERN_INVALID_ADDRESS: a hole; KERN_NO_SPACE)."""
        a, _cur, _max = U.vm_remap(self.task.port, 0, self.size, 0, V.VM_FLAGS_ANYWHERE, self.task.port,
                                   self._check(0, self.size), int(copy), V.VM_INHERIT_DEFAULT)
        return Region(self.task, a, self.size)

    def info(self) -> RegionInfo:
        """mach_vm_region for the region's first page."""
        return self.task.region(self._check(0, 0))

    def deallocate(self) -> None:
        """Unmap the region. Calling it again does nothing."""
        if self._live:
            self._live = False
            self.task.deallocate(self.address, self.size)

    close = deallocate

    def __enter__(self) -> "Region":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        state = "" if self._live else " deallocated"
        return f"<Region {self.address:#x}-{self.end:#x}{state}>"


def _round(n: int) -> int:
    return (n + U.PAGE_MASK) & ~U.PAGE_MASK
