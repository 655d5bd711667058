"""pymach: Mach virtual memory and IPC on Linux.

Tasks are real processes, memory is real pages that the MMU protects, and
errors are kern_return_t codes carried by MachError.

The C interface is :mod:`pymach.mach`; this package is the Pythonic one::

    import pymach
    from pymach import VM_PROT_READ

    with pymach.Task.self().allocate(4096) as region:
        region.write(b"Hello, Mach!", 2048)
        region.protect(VM_PROT_READ)

Arguments are checked where they enter: a wrong type is a TypeError and a
number outside the C type it becomes (a negative size, a pid beyond pid_t,
a msgh_id beyond int32, a timeout beyond 2**32 - 1 ms) a ValueError, each
naming the call and the parameter; what Mach itself refuses is a MachError
with XNU's code. TooLarge is the MachError of a message larger than the
receive allows (it stays queued; ``needed`` says how large it is).
"""

import typing as _typing

from ._kern.kern_return import (
    InvalidAddressError,
    InvalidArgumentError,
    InvalidNameError,
    KernFailureError,
    MachError,
    MachTimeoutError,
    NoAccessError,
    NoSpaceError,
    NotSupportedError,
    ProtectionFailureError,
    ResourceShortageError,
    mach_error_string,
)
from ._kern.vm_defs import (
    VM_BEHAVIOR_DEFAULT,
    VM_BEHAVIOR_RANDOM,
    VM_BEHAVIOR_SEQUENTIAL,
    VM_INHERIT_COPY,
    VM_INHERIT_NONE,
    VM_INHERIT_SHARE,
    VM_PROT_ALL,
    VM_PROT_DEFAULT,
    VM_PROT_EXECUTE,
    VM_PROT_NONE,
    VM_PROT_READ,
    VM_PROT_WRITE,
    vm_page_size,
)
from ._kern.exception import (
    EXC_ARITHMETIC,
    EXC_BAD_ACCESS,
    EXC_BAD_INSTRUCTION,
    EXC_BREAKPOINT,
    EXC_MASK_ARITHMETIC,
    EXC_MASK_BAD_ACCESS,
    EXC_MASK_BAD_INSTRUCTION,
    EXC_MASK_BREAKPOINT,
)
from ._linux.atfork import IMPORT_LOCK as _IMPORT_LOCK
from ._kern import exception as _exception
from ._kern import mach_msg as _km
from ._kern import task as _KT
from .spawn import spawn  # (bound now: the name is also its module's)

if _typing.TYPE_CHECKING:
    from .bootstrap import BootstrapError
    from .ipc import (MemoryEntry, Message, Port, PortSet, SendOnceRight, SendRight, register_ports,
                      registered_ports, request, request_async)
    from ._kern.mach_msg import TooLarge
    from .task import Region, RegionInfo, Task
    from .semaphore import Semaphore
    from .exceptions import Catcher, MachException, catch_exceptions

# Importing pymach loads the constants, the errors and the task's state,
# none of which holds an fd or a thread. The rest of the Pythonic layer
# (and the message path under it) is imported on first access of any of
# its names: name -> module, in the order they are imported.
_LAZY = {
    "TooLarge": "._kern.mach_msg",
    "MemoryEntry": ".ipc", "Message": ".ipc", "Port": ".ipc", "PortSet": ".ipc", "SendOnceRight": ".ipc",
    "SendRight": ".ipc", "register_ports": ".ipc", "registered_ports": ".ipc", "request": ".ipc",
    "request_async": ".ipc",
    "BootstrapError": ".bootstrap",
    "Region": ".task", "RegionInfo": ".task", "Task": ".task",
    "Semaphore": ".semaphore",
    "Catcher": ".exceptions", "MachException": ".exceptions", "catch_exceptions": ".exceptions",
}


def __getattr__(name: str) -> _typing.Any:
    # a name pymach lacks: import the rest of the layer (which also binds
    # its submodules, pymach.ipc, pymach.bootstrap, ..., as they always were)
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    g = globals()
    with _IMPORT_LOCK:  # a fork waits for it (see _linux/atfork.py)
        for attr, module in _LAZY.items():
            g[attr] = getattr(importlib.import_module(module, __name__), attr)
    g["TooLarge"].__module__ = "pymach"  # MACH_RCV_TOO_LARGE; ``needed`` is the size the message needs
    try:
        return g[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def _start_introspection() -> None:
    # (no IMPORT_LOCK here: SELF's build runs this under a lock os.fork waits for)
    from ._kern import introspect
    introspect.start()  # answers `pymach lsmp` and `pymach vmmap` about this process


_KT.SELF.on_first_use(_start_introspection)

__version__ = "0.1.0"

__all__ = [
    "Port", "PortSet", "SendRight", "SendOnceRight", "Message", "MemoryEntry", "request", "request_async", "spawn",
    "register_ports", "registered_ports", "BootstrapError",
    "Task", "Region", "RegionInfo", "Semaphore", "MachError", "InvalidAddressError", "InvalidArgumentError",
    "InvalidNameError", "KernFailureError", "MachTimeoutError", "NoAccessError", "NoSpaceError",
    "NotSupportedError", "ProtectionFailureError", "ResourceShortageError", "TooLarge", "mach_error_string",
    "VM_PROT_NONE", "VM_PROT_READ", "VM_PROT_WRITE", "VM_PROT_EXECUTE", "VM_PROT_DEFAULT",
    "VM_PROT_ALL", "VM_INHERIT_SHARE", "VM_INHERIT_COPY", "VM_INHERIT_NONE",
    "VM_BEHAVIOR_DEFAULT", "VM_BEHAVIOR_RANDOM", "VM_BEHAVIOR_SEQUENTIAL", "vm_page_size",
    "catch_exceptions", "Catcher", "MachException", "EXC_BAD_ACCESS", "EXC_BAD_INSTRUCTION", "EXC_ARITHMETIC",
    "EXC_BREAKPOINT", "EXC_MASK_BAD_ACCESS", "EXC_MASK_BAD_INSTRUCTION", "EXC_MASK_ARITHMETIC",
    "EXC_MASK_BREAKPOINT",
]


def _kobject_server(msg: bytes, option: int, timeout_ms: int) -> None:
    """A message to a kernel object: served by pymach.mig.kobject (imported
    on the first one: the compiler's import stays off the common path)."""
    from .mig import kobject
    kobject.serve(msg, option, timeout_ms)


_km.set_kobject_server(_kobject_server)


def _exception_actions_changed(pid: int, level: int, tid: int, changes: list[tuple[int, list[int], int, int]]) -> None:
    """Exception actions changed: pymach.exc_tracer tells the task's tracer
    (imported with the first action: nothing is traced before)."""
    from . import exc_tracer
    exc_tracer.on_change(pid, level, tid, changes)


_exception.set_change_hook(_exception_actions_changed)
