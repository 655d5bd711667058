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

from .kern.kern_return import (
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
from .kern.vm_defs import (
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
from .kern.mach_msg import TooLarge
from .ipc import (MemoryEntry, Message, Port, PortSet, SendOnceRight, SendRight, register_ports,
                  registered_ports, request)
from .bootstrap import BootstrapError
from .spawn import spawn
from .task import Region, RegionInfo, Task

from .servers import introspect as _introspect

TooLarge.__module__ = "pymach"  # MACH_RCV_TOO_LARGE; ``needed`` is the size the message needs

_introspect.start()  # answers `pymach lsmp` and `pymach vmmap` about this process

__version__ = "0.1.0"

__all__ = [
    "Port", "PortSet", "SendRight", "SendOnceRight", "Message", "MemoryEntry", "request", "spawn",
    "register_ports", "registered_ports", "BootstrapError",
    "Task", "Region", "RegionInfo", "MachError", "InvalidAddressError", "InvalidArgumentError",
    "InvalidNameError", "KernFailureError", "MachTimeoutError", "NoAccessError", "NoSpaceError",
    "NotSupportedError", "ProtectionFailureError", "ResourceShortageError", "TooLarge", "mach_error_string",
    "VM_PROT_NONE", "VM_PROT_READ", "VM_PROT_WRITE", "VM_PROT_EXECUTE", "VM_PROT_DEFAULT",
    "VM_PROT_ALL", "VM_INHERIT_SHARE", "VM_INHERIT_COPY", "VM_INHERIT_NONE",
    "VM_BEHAVIOR_DEFAULT", "VM_BEHAVIOR_RANDOM", "VM_BEHAVIOR_SEQUENTIAL", "vm_page_size",
]
