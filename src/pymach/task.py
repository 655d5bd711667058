"""The Pythonic task and its memory: ``Task.self()``, ``Region``.

Reads and writes here are safe: they go through the kernel's user-copy
routines (process_vm_readv/writev), so protected or unmapped memory raises
MachError (KERN_PROTECTION_FAILURE, KERN_INVALID_ADDRESS) instead of killing
the interpreter.
"""

from __future__ import annotations

from typing import Iterator

from . import _check as C
from . import _format as F
from ._kern import kern_return as K
from ._kern import vm_defs as V
from ._kern import ipc_right as R
from ._kern import task_user as TU
from ._kern import vm_user as U
from ._kern.task import SELF, TASK_FLAVOR_READ
from ._kern.vm_map import RegionInfo
from .ipc import MemoryEntry

__all__ = ["Task", "Region", "RegionInfo"]


class Task:
    """A Mach task. ``Task.self()`` is the calling process."""

    __slots__ = ("_name", "_owned", "_closed")

    def __init__(self, name: int, *, owned: bool = False) -> None:
        if type(name) is not int or not 0 <= name <= 0xFFFFFFFF:
            name = C.integer(name, "Task()", "name", C.NAME)
        self._name = name
        self._owned = owned  # we release our reference on close()
        self._closed = False

    def _port(self, call: str) -> int:
        """The task port's name; InvalidNameError (MACH_SEND_INVALID_DEST,
        what a call on a name we no longer hold gives) once closed."""
        if self._closed:
            C.fail(K.MACH_SEND_INVALID_DEST, call, f"the task port {self._name:#x} is closed")
        return self._name

    @classmethod
    @C.names_call("Task.for_pid()")
    def for_pid(cls, pid: int) -> "Task":
        """The task of another process (task_for_pid): a send right over a
        pidfd, released by close() or on leaving a ``with`` block. Our own
        pid gives our own task (close() then drops the reference that
        task_for_pid added to it).

        Raises TypeError (``pid`` not an int), ValueError (outside pid_t),
        MachError KERN_FAILURE when there is no such process, or when Linux
        would not let us ptrace it (the message says the rule: the same
        user, subject to Yama's ptrace_scope, or CAP_SYS_PTRACE)."""
        pid = C.integer(pid, "Task.for_pid()", "pid", C.PID)
        return cls(TU.task_for_pid(SELF.task_name, pid), owned=True)

    def close(self) -> None:
        """Release the send right that for_pid gave (idempotent; nothing for
        Task.self())."""
        if self._owned:
            self._owned = False
            self._closed = True
            R.deallocate(SELF.space, self._name)

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @C.names_call("Task.info()")
    def info(self) -> TU.BasicInfo:
        """task_info(MACH_TASK_BASIC_INFO): sizes, times, policy.

        Raises MachError: MACH_SEND_INVALID_DEST (the process exited, or
        the task was closed)."""
        return TU.task_basic_info(self._port("Task.info()"))

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
        """The process id (-1 once the task is closed or its process gone)."""
        if self._name == SELF.task_name:
            return SELF.task.pid
        if self._closed:
            return -1
        try:
            return TU.pid_for_task(self._name)
        except K.MachError:
            return -1

    @C.names_call("Task.allocate()")
    def allocate(self, size: int, *, address: int | None = None, overwrite: bool = False,
                 tag: int = 0, flags: int = 0) -> "Region":
        """Allocate zero-filled memory: anywhere, or at ``address``. Size 0
        gives an empty Region at address 0, as mach_vm_allocate does.

        Raises TypeError, ValueError (``size`` or ``address`` outside
        mach_vm_size_t / mach_vm_address_t, such as a negative size; ``tag``
        outside 0..255), MachError: KERN_INVALID_ARGUMENT (a size that
        rounds to 0), KERN_NO_SPACE, KERN_INVALID_ADDRESS,
        KERN_NOT_SUPPORTED."""
        call = "Task.allocate()"
        size = C.integer(size, call, "size", C.SIZE)
        where = C.optional_integer(address, call, "address", C.ADDRESS)
        tag = C.integer(tag, call, "tag", C.TAG)
        f = C.integer(flags, call, "flags", C.FLAGS) | V.VM_MAKE_TAG(tag)
        if where is None:
            f |= V.VM_FLAGS_ANYWHERE
        elif overwrite:
            f |= V.VM_FLAGS_OVERWRITE
        a = U.vm_allocate(self._port(call), where or 0, size, f)
        return Region(self, a, _round(size))

    @C.names_call("Task.region()")
    def region(self, address: int) -> RegionInfo:
        """The region at ``address`` or the first above it.

        Raises TypeError, ValueError, MachError: KERN_INVALID_ADDRESS."""
        call = "Task.region()"
        return U.vm_region(self._port(call), C.integer(address, call, "address", C.ADDRESS))

    def regions(self) -> Iterator[RegionInfo]:
        """Every region of the address space, in order (vmmap's walk)."""
        yield from TU.task_target(self._port("Task.regions()"), flavor=TASK_FLAVOR_READ).regions()

    @C.names_call("Task.read()")
    def read(self, address: int, size: int) -> bytes:
        """Copy bytes out of the task, safely.

        Raises TypeError, ValueError, MachError: KERN_INVALID_ADDRESS,
        KERN_PROTECTION_FAILURE."""
        call = "Task.read()"
        address = C.integer(address, call, "address", C.ADDRESS)
        size = C.integer(size, call, "size", C.SIZE)
        return _read(self._port(call), address, size)

    @C.names_call("Task.write()")
    def write(self, address: int, data: bytes | bytearray | memoryview) -> None:
        """Copy bytes into the task, safely; all or nothing.

        Raises TypeError (``data`` not bytes-like), ValueError, MachError:
        KERN_INVALID_ADDRESS, KERN_PROTECTION_FAILURE."""
        call = "Task.write()"
        address = C.integer(address, call, "address", C.ADDRESS)
        _write(self._port(call), address, _bytes(data, call))

    @C.names_call("Task.protect()")
    def protect(self, address: int, size: int, protection: int, *, set_maximum: bool = False) -> None:
        """mach_vm_protect. Raises TypeError, ValueError, MachError:
        KERN_PROTECTION_FAILURE, KERN_INVALID_ADDRESS, KERN_INVALID_ARGUMENT."""
        call = "Task.protect()"
        address = C.integer(address, call, "address", C.ADDRESS)
        size = C.integer(size, call, "size", C.SIZE)
        protection = C.integer(protection, call, "protection", C.PROT)
        U.vm_protect(self._port(call), address, size, set_maximum, protection)

    @C.names_call("Task.inherit()")
    def inherit(self, address: int, size: int, inheritance: int) -> None:
        """mach_vm_inherit. Raises TypeError, ValueError, MachError:
        KERN_INVALID_ARGUMENT, KERN_INVALID_ADDRESS, KERN_NOT_SUPPORTED."""
        call = "Task.inherit()"
        address = C.integer(address, call, "address", C.ADDRESS)
        size = C.integer(size, call, "size", C.SIZE)
        inheritance = C.integer(inheritance, call, "inheritance", C.INHERIT)
        U.vm_inherit(self._port(call), address, size, inheritance)

    @C.names_call("Task.deallocate()")
    def deallocate(self, address: int, size: int) -> None:
        """mach_vm_deallocate. Raises TypeError, ValueError, MachError:
        KERN_INVALID_ARGUMENT."""
        call = "Task.deallocate()"
        address = C.integer(address, call, "address", C.ADDRESS)
        size = C.integer(size, call, "size", C.SIZE)
        U.vm_deallocate(self._port(call), address, size)

    @C.names_call("Task.copy()")
    def copy(self, source: int, size: int, dest: int) -> None:
        """mach_vm_copy. Raises TypeError, ValueError, MachError:
        KERN_INVALID_ADDRESS, KERN_PROTECTION_FAILURE."""
        call = "Task.copy()"
        source = C.integer(source, call, "source", C.ADDRESS)
        size = C.integer(size, call, "size", C.SIZE)
        dest = C.integer(dest, call, "dest", C.ADDRESS)
        U.vm_copy(self._port(call), source, size, dest)

    def __repr__(self) -> str:
        if self._closed:
            return f"<Task port={self._name:#x} closed>"
        pid = self.pid
        me = " self" if self._name == SELF.task_name else ""
        return f"<Task pid={pid} port={self._name:#x}{me}>" if pid >= 0 else \
            f"<Task port={self._name:#x} exited>"


def _bytes(data: object, call: str) -> bytes | bytearray | memoryview:
    """Bytes-like ``data`` as a buffer whose len() counts bytes."""
    if isinstance(data, (bytes, bytearray)):
        return data
    if isinstance(data, memoryview) and data.c_contiguous:
        return data.cast("B") if data.format != "B" or data.ndim != 1 else data
    return C.data(data, call, "data")


def _read(port: int, address: int, size: int) -> bytes:
    if size == 0:
        return b""
    U.user_range(address, size)
    return TU.task_target(port, flavor=TASK_FLAVOR_READ).copy_out(address, size)


def _write(port: int, address: int, data: bytes | bytearray | memoryview) -> None:
    if len(data):
        U.user_range(address, len(data))
        TU.task_target(port).copy_in(address, data)


class Region:
    """Memory allocated in a task: a context manager that deallocates it.
    ``close()`` is idempotent. Offsets are from the region's start; a range
    outside the region is InvalidArgumentError (KERN_INVALID_ARGUMENT)."""

    __slots__ = ("task", "address", "size", "_live")

    def __init__(self, task: Task, address: int, size: int) -> None:
        self.task = C.instance(task, Task, "Region()", "task")
        self.address = C.integer(address, "Region()", "address", C.ADDRESS)
        self.size = C.integer(size, "Region()", "size", C.SIZE)
        self._live = True

    @property
    def end(self) -> int:
        return self.address + self.size

    def _check(self, call: str, offset: object, n: object) -> int:
        """The address of [offset, offset + n) after checking it lies in
        the region (InvalidArgumentError) and the region is still there
        (InvalidAddressError)."""
        offset = C.index(offset, call, "offset")
        n = C.index(n, call, "size")
        if not self._live:
            C.fail(K.KERN_INVALID_ADDRESS, call, f"the region {self.address:#x}-{self.end:#x} was deallocated")
        if offset < 0 or n < 0 or offset + n > self.size:
            C.fail(K.KERN_INVALID_ARGUMENT, call,
                   f"[{offset:#x}, {offset + n:#x}) is outside the region (size {self.size:#x})")
        return self.address + offset

    def _rest(self, call: str, offset: object, size: object) -> int:
        """``size``, or with None the bytes from ``offset`` to the end."""
        if size is None:
            return self.size - C.index(offset, call, "offset")
        return C.index(size, call, "size")

    @C.names_call("Region.read()")
    def read(self, offset: int = 0, size: int | None = None) -> bytes:
        """Bytes of the region, safely. Raises TypeError, MachError:
        KERN_PROTECTION_FAILURE, KERN_INVALID_ADDRESS, KERN_INVALID_ARGUMENT."""
        call = "Region.read()"
        n = self._rest(call, offset, size)
        return _read(self.task._port(call), self._check(call, offset, n), n)

    @C.names_call("Region.write()")
    def write(self, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        """Write bytes into the region, safely. Raises TypeError, MachError:
        KERN_PROTECTION_FAILURE, KERN_INVALID_ADDRESS, KERN_INVALID_ARGUMENT."""
        call = "Region.write()"
        data = _bytes(data, call)
        _write(self.task._port(call), self._check(call, offset, len(data)), data)

    @C.names_call("Region.protect()")
    def protect(self, protection: int, *, set_maximum: bool = False, offset: int = 0,
                size: int | None = None) -> None:
        """Change the protection of the region or part of it
        (mach_vm_protect). Raises TypeError, ValueError (``protection``
        outside vm_prot_t), MachError: KERN_PROTECTION_FAILURE,
        KERN_INVALID_ARGUMENT."""
        call = "Region.protect()"
        protection = C.integer(protection, call, "protection", C.PROT)
        n = self._rest(call, offset, size)
        U.vm_protect(self.task._port(call), self._check(call, offset, n), n, set_maximum, protection)

    @C.names_call("Region.inherit()")
    def inherit(self, inheritance: int) -> None:
        """Set what a fork child gets: VM_INHERIT_COPY, SHARE or NONE.
        Raises TypeError, ValueError, MachError: KERN_INVALID_ARGUMENT."""
        call = "Region.inherit()"
        inheritance = C.integer(inheritance, call, "inheritance", C.INHERIT)
        U.vm_inherit(self.task._port(call), self._check(call, 0, self.size), self.size, inheritance)

    @C.names_call("Region.memory_entry()")
    def memory_entry(self, protection: int = V.VM_PROT_READ | V.VM_PROT_WRITE, *, offset: int = 0,
                     size: int | None = None) -> "MemoryEntry":
        """A memory entry sharing the region (or part of it), for another
        task to map. It covers at most the map entry the range starts in
        (a region split by protect() gives the first part). Raises
        TypeError, ValueError, MachError (KERN_PROTECTION_FAILURE: more
        than the current or maximum protection; KERN_INVALID_ARGUMENT:
        outside the region)."""
        call = "Region.memory_entry()"
        protection = C.integer(protection, call, "protection", C.PROT)
        n = self._rest(call, offset, size)
        name, _size = U.vm_make_memory_entry(self.task._port(call), n, self._check(call, offset, n), protection, 0)
        return MemoryEntry(name)

    @C.names_call("Region.remap()")
    def remap(self, *, copy: bool = False) -> "Region":
        """A second mapping of the region's pages (mach_vm_remap), or with
        ``copy`` a private snapshot of them taken now. Raises MachError
        (KERN_INVALID_ADDRESS: a hole; KERN_NO_SPACE)."""
        call = "Region.remap()"
        port = self.task._port(call)
        a, _cur, _max = U.vm_remap(port, 0, self.size, 0, V.VM_FLAGS_ANYWHERE, port,
                                   self._check(call, 0, self.size), int(copy), V.VM_INHERIT_DEFAULT)
        return Region(self.task, a, self.size)

    @C.names_call("Region.info()")
    def info(self) -> RegionInfo:
        """mach_vm_region for the region's first page."""
        call = "Region.info()"
        return U.vm_region(self.task._port(call), self._check(call, 0, 0))

    @C.names_call("Region.deallocate()")
    def deallocate(self) -> None:
        """Unmap the region. Calling it again does nothing."""
        if self._live:
            self._live = False
            U.vm_deallocate(self.task._port("Region.deallocate()"), self.address, self.size)

    close = deallocate

    def __enter__(self) -> "Region":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        head = f"<Region {self.address:#x}-{self.end:#x} size={F.size(self.size)}"
        if self.task._name != SELF.task_name:
            head += f" pid={self.task.pid}"
        if not self._live:
            return f"{head} deallocated>"
        return f"{head} {self._protection()}>"

    def _protection(self) -> str:
        """'rw-/rwx' of the region's map entry; for a region that spans
        entries that differ, each one's ('r--/rwx,rw-/rwx'); 'unmapped'
        where a part is not mapped (deallocated behind the Region's back)."""
        if self.size == 0:
            return "empty"
        parts: list[str] = []
        at = self.address
        try:
            while at < self.end and len(parts) < 4:
                info = U.vm_region(self.task._name, at)
                if info.start > at:
                    return "unmapped"
                parts.append(F.prots(info.protection, info.max_protection))
                at = info.end
        except (K.MachError, OSError):
            return "?"
        return ",".join(parts) + ("..." if at < self.end else "")


def _round(n: int) -> int:
    return (n + U.PAGE_MASK) & ~U.PAGE_MASK
