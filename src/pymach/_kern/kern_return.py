"""kern_return_t: the codes of <mach/kern_return.h> and <mach/message.h>,
the strings of libsyscall's mach_error_string, the MachError exception tree,
and the one place where Linux errno values become kern_return_t.
"""

from __future__ import annotations

import errno as _errno
import sys
from typing import Final, Mapping

from . import _error_strings as S

# What `from kern_return import *` gives the C interface: the codes and the
# exception tree (the string functions have C-typed wrappers there).
__all__ = [
    "KERN_SUCCESS", "KERN_INVALID_ADDRESS", "KERN_PROTECTION_FAILURE", "KERN_NO_SPACE",
    "KERN_INVALID_ARGUMENT", "KERN_FAILURE", "KERN_RESOURCE_SHORTAGE", "KERN_NOT_RECEIVER",
    "KERN_NO_ACCESS", "KERN_MEMORY_FAILURE", "KERN_MEMORY_ERROR", "KERN_ALREADY_IN_SET",
    "KERN_NOT_IN_SET", "KERN_NAME_EXISTS", "KERN_ABORTED", "KERN_INVALID_NAME",
    "KERN_INVALID_TASK", "KERN_INVALID_RIGHT", "KERN_INVALID_VALUE", "KERN_UREFS_OVERFLOW",
    "KERN_INVALID_CAPABILITY", "KERN_RIGHT_EXISTS", "KERN_INVALID_HOST", "KERN_MEMORY_PRESENT",
    "KERN_MEMORY_DATA_MOVED", "KERN_MEMORY_RESTART_COPY", "KERN_INVALID_PROCESSOR_SET",
    "KERN_POLICY_LIMIT", "KERN_INVALID_POLICY", "KERN_INVALID_OBJECT", "KERN_ALREADY_WAITING",
    "KERN_DEFAULT_SET", "KERN_EXCEPTION_PROTECTED", "KERN_INVALID_LEDGER",
    "KERN_INVALID_MEMORY_CONTROL", "KERN_INVALID_SECURITY", "KERN_NOT_DEPRESSED",
    "KERN_TERMINATED", "KERN_LOCK_SET_DESTROYED", "KERN_LOCK_UNSTABLE", "KERN_LOCK_OWNED",
    "KERN_LOCK_OWNED_SELF", "KERN_SEMAPHORE_DESTROYED", "KERN_RPC_SERVER_TERMINATED",
    "KERN_RPC_TERMINATE_ORPHAN", "KERN_RPC_CONTINUE_ORPHAN", "KERN_NOT_SUPPORTED",
    "KERN_NODE_DOWN", "KERN_NOT_WAITING", "KERN_OPERATION_TIMED_OUT", "KERN_CODESIGN_ERROR",
    "KERN_POLICY_STATIC", "KERN_INSUFFICIENT_BUFFER_SIZE", "KERN_DENIED", "KERN_MISSING_KC",
    "KERN_INVALID_KC", "KERN_NOT_FOUND", "KERN_RETURN_MAX", "MACH_MSG_SUCCESS", "MACH_MSG_MASK",
    "MACH_MSG_IPC_SPACE", "MACH_MSG_VM_SPACE", "MACH_MSG_IPC_KERNEL", "MACH_MSG_VM_KERNEL",
    "MACH_SEND_IN_PROGRESS", "MACH_SEND_INVALID_DATA", "MACH_SEND_INVALID_DEST",
    "MACH_SEND_TIMED_OUT", "MACH_SEND_INVALID_VOUCHER", "MACH_SEND_INTERRUPTED",
    "MACH_SEND_MSG_TOO_SMALL", "MACH_SEND_INVALID_REPLY", "MACH_SEND_INVALID_RIGHT",
    "MACH_SEND_INVALID_NOTIFY", "MACH_SEND_INVALID_MEMORY", "MACH_SEND_NO_BUFFER",
    "MACH_SEND_TOO_LARGE", "MACH_SEND_INVALID_TYPE", "MACH_SEND_INVALID_HEADER",
    "MACH_SEND_INVALID_TRAILER", "MACH_SEND_INVALID_CONTEXT", "MACH_SEND_INVALID_OPTIONS",
    "MACH_SEND_INVALID_RT_OOL_SIZE", "MACH_SEND_NO_GRANT_DEST", "MACH_SEND_MSG_FILTERED",
    "MACH_SEND_AUX_TOO_SMALL", "MACH_SEND_AUX_TOO_LARGE", "MACH_RCV_IN_PROGRESS",
    "MACH_RCV_INVALID_NAME", "MACH_RCV_TIMED_OUT", "MACH_RCV_TOO_LARGE", "MACH_RCV_INTERRUPTED",
    "MACH_RCV_PORT_CHANGED", "MACH_RCV_INVALID_NOTIFY", "MACH_RCV_INVALID_DATA",
    "MACH_RCV_PORT_DIED", "MACH_RCV_IN_SET", "MACH_RCV_HEADER_ERROR", "MACH_RCV_BODY_ERROR",
    "MACH_RCV_INVALID_TYPE", "MACH_RCV_SCATTER_SMALL", "MACH_RCV_INVALID_TRAILER",
    "MACH_RCV_IN_PROGRESS_TIMED", "MACH_RCV_INVALID_REPLY", "MACH_RCV_INVALID_ARGUMENTS",
    "MIG_TYPE_ERROR", "MIG_REPLY_MISMATCH", "MIG_REMOTE_ERROR", "MIG_BAD_ID",
    "MIG_BAD_ARGUMENTS", "MIG_NO_REPLY", "MIG_EXCEPTION", "MIG_ARRAY_TOO_LARGE",
    "MIG_SERVER_DIED", "MIG_TRAILER_ERROR", "NO_SUCH_ERROR", "MachError", "InvalidAddressError",
    "ProtectionFailureError", "NoSpaceError", "InvalidArgumentError", "KernFailureError",
    "ResourceShortageError", "NoAccessError", "InvalidNameError", "NotSupportedError",
    "MachTimeoutError", "check", "kr_from_errno", "kr_from_oserror",
]

# <mach/kern_return.h>
KERN_SUCCESS: Final = 0
KERN_INVALID_ADDRESS: Final = 1
KERN_PROTECTION_FAILURE: Final = 2
KERN_NO_SPACE: Final = 3
KERN_INVALID_ARGUMENT: Final = 4
KERN_FAILURE: Final = 5
KERN_RESOURCE_SHORTAGE: Final = 6
KERN_NOT_RECEIVER: Final = 7
KERN_NO_ACCESS: Final = 8
KERN_MEMORY_FAILURE: Final = 9
KERN_MEMORY_ERROR: Final = 10
KERN_ALREADY_IN_SET: Final = 11
KERN_NOT_IN_SET: Final = 12
KERN_NAME_EXISTS: Final = 13
KERN_ABORTED: Final = 14
KERN_INVALID_NAME: Final = 15
KERN_INVALID_TASK: Final = 16
KERN_INVALID_RIGHT: Final = 17
KERN_INVALID_VALUE: Final = 18
KERN_UREFS_OVERFLOW: Final = 19
KERN_INVALID_CAPABILITY: Final = 20
KERN_RIGHT_EXISTS: Final = 21
KERN_INVALID_HOST: Final = 22
KERN_MEMORY_PRESENT: Final = 23
KERN_MEMORY_DATA_MOVED: Final = 24
KERN_MEMORY_RESTART_COPY: Final = 25
KERN_INVALID_PROCESSOR_SET: Final = 26
KERN_POLICY_LIMIT: Final = 27
KERN_INVALID_POLICY: Final = 28
KERN_INVALID_OBJECT: Final = 29
KERN_ALREADY_WAITING: Final = 30
KERN_DEFAULT_SET: Final = 31
KERN_EXCEPTION_PROTECTED: Final = 32
KERN_INVALID_LEDGER: Final = 33
KERN_INVALID_MEMORY_CONTROL: Final = 34
KERN_INVALID_SECURITY: Final = 35
KERN_NOT_DEPRESSED: Final = 36
KERN_TERMINATED: Final = 37
KERN_LOCK_SET_DESTROYED: Final = 38
KERN_LOCK_UNSTABLE: Final = 39
KERN_LOCK_OWNED: Final = 40
KERN_LOCK_OWNED_SELF: Final = 41
KERN_SEMAPHORE_DESTROYED: Final = 42
KERN_RPC_SERVER_TERMINATED: Final = 43
KERN_RPC_TERMINATE_ORPHAN: Final = 44
KERN_RPC_CONTINUE_ORPHAN: Final = 45
KERN_NOT_SUPPORTED: Final = 46
KERN_NODE_DOWN: Final = 47
KERN_NOT_WAITING: Final = 48
KERN_OPERATION_TIMED_OUT: Final = 49
KERN_CODESIGN_ERROR: Final = 50
KERN_POLICY_STATIC: Final = 51
KERN_INSUFFICIENT_BUFFER_SIZE: Final = 52
KERN_DENIED: Final = 53
KERN_MISSING_KC: Final = 54
KERN_INVALID_KC: Final = 55
KERN_NOT_FOUND: Final = 56
KERN_RETURN_MAX: Final = 0x100

# <mach/message.h>: mach_msg_return_t
MACH_MSG_SUCCESS: Final = 0x00000000
MACH_MSG_MASK: Final = 0x00003E00
MACH_MSG_IPC_SPACE: Final = 0x00002000
MACH_MSG_VM_SPACE: Final = 0x00001000
MACH_MSG_IPC_KERNEL: Final = 0x00000800
MACH_MSG_VM_KERNEL: Final = 0x00000400
MACH_SEND_IN_PROGRESS: Final = 0x10000001
MACH_SEND_INVALID_DATA: Final = 0x10000002
MACH_SEND_INVALID_DEST: Final = 0x10000003
MACH_SEND_TIMED_OUT: Final = 0x10000004
MACH_SEND_INVALID_VOUCHER: Final = 0x10000005
MACH_SEND_INTERRUPTED: Final = 0x10000007
MACH_SEND_MSG_TOO_SMALL: Final = 0x10000008
MACH_SEND_INVALID_REPLY: Final = 0x10000009
MACH_SEND_INVALID_RIGHT: Final = 0x1000000A
MACH_SEND_INVALID_NOTIFY: Final = 0x1000000B
MACH_SEND_INVALID_MEMORY: Final = 0x1000000C
MACH_SEND_NO_BUFFER: Final = 0x1000000D
MACH_SEND_TOO_LARGE: Final = 0x1000000E
MACH_SEND_INVALID_TYPE: Final = 0x1000000F
MACH_SEND_INVALID_HEADER: Final = 0x10000010
MACH_SEND_INVALID_TRAILER: Final = 0x10000011
MACH_SEND_INVALID_CONTEXT: Final = 0x10000012
MACH_SEND_INVALID_OPTIONS: Final = 0x10000013
MACH_SEND_INVALID_RT_OOL_SIZE: Final = 0x10000015
MACH_SEND_NO_GRANT_DEST: Final = 0x10000016
MACH_SEND_MSG_FILTERED: Final = 0x10000017
MACH_SEND_AUX_TOO_SMALL: Final = 0x10000018
MACH_SEND_AUX_TOO_LARGE: Final = 0x10000019
MACH_RCV_IN_PROGRESS: Final = 0x10004001
MACH_RCV_INVALID_NAME: Final = 0x10004002
MACH_RCV_TIMED_OUT: Final = 0x10004003
MACH_RCV_TOO_LARGE: Final = 0x10004004
MACH_RCV_INTERRUPTED: Final = 0x10004005
MACH_RCV_PORT_CHANGED: Final = 0x10004006
MACH_RCV_INVALID_NOTIFY: Final = 0x10004007
MACH_RCV_INVALID_DATA: Final = 0x10004008
MACH_RCV_PORT_DIED: Final = 0x10004009
MACH_RCV_IN_SET: Final = 0x1000400A
MACH_RCV_HEADER_ERROR: Final = 0x1000400B
MACH_RCV_BODY_ERROR: Final = 0x1000400C
MACH_RCV_INVALID_TYPE: Final = 0x1000400D
MACH_RCV_SCATTER_SMALL: Final = 0x1000400E
MACH_RCV_INVALID_TRAILER: Final = 0x1000400F
MACH_RCV_IN_PROGRESS_TIMED: Final = 0x10004011
MACH_RCV_INVALID_REPLY: Final = 0x10004012
MACH_RCV_INVALID_ARGUMENTS: Final = 0x10004013

# <mach/mig_errors.h>
MIG_TYPE_ERROR: Final = -300
MIG_REPLY_MISMATCH: Final = -301
MIG_REMOTE_ERROR: Final = -302
MIG_BAD_ID: Final = -303
MIG_BAD_ARGUMENTS: Final = -304
MIG_NO_REPLY: Final = -305
MIG_EXCEPTION: Final = -306
MIG_ARRAY_TOO_LARGE: Final = -307
MIG_SERVER_DIED: Final = -308
MIG_TRAILER_ERROR: Final = -309

# ---------------------------------------------------------------------------
# mach_error_string / mach_error_type: a port of libsyscall/mach/
# mach_error_string.c over the tables of err_*.sub, quirks included
# (system 7 holds the vm table, and "(vm/kernel)" reads the send codes).

NO_SUCH_ERROR: Final = "unknown error code"

# (name, codes, sparse code map) per subsystem; None for a NULL subsystem.
_Sub = tuple[str | None, tuple[str, ...], tuple[tuple[int, int], ...]]


def _sub(name: str | None, codes: tuple[str, ...] = (), cmap: tuple[tuple[int, int], ...] = ()) -> _Sub:
    return (name, codes, cmap)


# system -> (bad_sub, subsystems, sparse subsystem map)
_SYSTEMS: Final[dict[int, tuple[str | None, tuple[_Sub, ...], tuple[tuple[int, int], ...]]]] = {
    0x00: ("(operating system/?) unknown subsystem error", (
        _sub("(os/kern)", S.ERR_CODES_KERN), _sub("(os/?)"), _sub("(os/?)"),
        _sub("(os/unix)", S.ERR_CODES_UNIX)), ()),
    0x01: ("(user space/?) unknown subsystem error", (_sub(None),), ()),
    0x02: ("(server/?) unknown subsystem error", (
        _sub("(server/netname)", S.ERR_CODES_NETNAME),
        _sub("(server/env_mgr)", S.ERR_CODES_ENV_MGR),
        _sub("(server/execd)", S.ERR_CODES_EXECD),
        _sub("(server/netmemory)", S.ERR_CODES_NETMEMORY),
        _sub("(server/ufs)", S.ERR_CODES_UFS),
        _sub("(server/task_master)", S.ERR_CODES_TASK_MASTER),
        _sub("(server/ns)", S.ERR_CODES_NS),
        _sub("(server/io)", S.ERR_CODES_IO),
        _sub("(server/auth)", S.ERR_CODES_AUTH),
        _sub("(server/us)", S.ERR_CODES_US),
        _sub("(server/sunrpc)", S.ERR_CODES_SUNRPC),
        _sub("(server/object system)", S.ERR_CODES_MACHOBJ),
        _sub("(server/loader)", S.ERR_CODES_LOADER),
        _sub("(server/exception)", S.ERR_CODES_EXCEPTION),
        _sub("(server/unix-signal)", S.ERR_CODES_UX_SIGNAL),
        _sub("(server/xkernel)", S.ERR_CODES_XKERNEL)), ()),
    0x03: ("(ipc/?) unknown subsystem error", (
        _sub("(ipc/send)", S.ERR_CODES_SEND), _sub("(ipc/rcv)", S.ERR_CODES_RCV),
        _sub("(ipc/mig)", S.ERR_CODES_MIG)), ()),
    0x04: ("(ipc/?) unknown subsystem error", (
        _sub("(ipc/send)", S.ERR_CODES_MACH_SEND), _sub("(ipc/rcv)", S.ERR_CODES_MACH_RCV),
        _sub("(ipc/mig)", S.ERR_CODES_MACH_MIG)), ()),
    0x07: ("(vm/?) unknown subsystem error", (
        _sub("(vm/kernel)", S.ERR_CODES_MACH_SEND[:len(S.ERR_CODES_VM_KERN)]),
        _sub("(vm/reclaim)", S.ERR_CODES_VM_RECLAIM)), ()),
    0x37: ("(libkern/?) unknown subsystem error", (
        _sub("(libkern/common)", S.ERR_CODES_LIBKERN_COMMON),
        _sub("(libkern/metaclass)", S.ERR_CODES_LIBKERN_METACLASS),
        _sub("(libkern/kext)", S.ERR_CODES_LIBKERN_KEXT)), ()),
    # IOKit: the common family is tabled; the bus families' sparse code
    # maps come from IOKit headers that are not part of XNU, so their codes
    # read as NO_SUCH_ERROR (see docs/deviations.md).
    0x38: ("(iokit/?) unknown subsystem error", (
        _sub("(iokit/common)", S.ERR_CODES_IOKIT_COMMON, ((0x001, 0x001), (0x2BC, 0x2F0))),
        _sub("(iokit/usb)"), _sub("(iokit/firewire)"), _sub("(iokit/?"),
        _sub("(iokit/blkstorage)"), _sub("(iokit/graphics)"), _sub("(iokit/?"),
        _sub("(iokit/?"), _sub("(iokit/bluetooth)", S.ERR_CODES_IOKIT_BLUETOOTH),
        _sub("(iokit/pmu)"), _sub("(iokit/vendor)"), _sub("(iokit/reserved)")),
        ((0, 9), (0xFFE, 0xFFF))),
}
_NULL_SYSTEM: Final = (None, (), ())

# The NULL entries of the tables: mach_error_string/type give what glibc's
# printf("%s", NULL) shows; mach_error, which formats with libsyscall's own
# vsnprintf, prints them as empty strings.
_NULL: Final = "(null)"


def _compat(err: int) -> int:
    # do_compat(): old negative IPC codes and server codes.
    if -200 < err <= -100:
        return -(err + 100) | 0x0C000000
    if -300 < err <= -200:
        return -(err + 200) | 0x0C004000
    if -400 < err <= -300:
        return -(err + 300) | 0x10008000
    if 1000 <= err < 1100:
        return (err - 1000) | 0x08000000
    if 1600 <= err < 1700:
        return (err - 1600) | 0x08004000
    if 27600 <= err < 27700:
        return (err - 27600) | 0x08008000
    return err


def _sparse(old: int, table: tuple[tuple[int, int], ...]) -> int:
    ret = 0
    for start, end in table:
        if start <= old <= end:
            return ret + old - start
        ret += end - start + 1
    return sys.maxsize


def _decode(err: int) -> tuple[int, int, int]:
    err = _compat(_to_int32(err)) & 0xFFFFFFFF
    return (err >> 26) & 0x3F, (err >> 14) & 0xFFF, err & 0x3FFF


def _to_int32(v: int) -> int:
    v = int(v) & 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _lookup(err: int) -> tuple[str, bool]:
    system, sub, code = _decode(err)
    bad_sub, subs, smap = _SYSTEMS.get(system, _NULL_SYSTEM)
    if smap:
        sub = _sparse(sub, smap)
    if sub >= len(subs):
        return (bad_sub if bad_sub is not None else _NULL), True
    _name, codes, cmap = subs[sub]
    if cmap:
        code = _sparse(code, cmap)
    if code >= len(codes):
        return NO_SUCH_ERROR, True
    return codes[code], False


def mach_error_type(err: int) -> str:
    """The subsystem part of a code's string, as libsyscall's mach_error_type."""
    system, sub, _code = _decode(err)
    _bad, subs, smap = _SYSTEMS.get(system, _NULL_SYSTEM)
    if smap:
        sub = _sparse(sub, smap)
    if sub >= len(subs):
        return "(?/?)"
    name = subs[sub][0]
    return name if name is not None else _NULL


def mach_error_string(err: int) -> str:
    """The string libsyscall's mach_error_string gives for ``err``."""
    return _lookup(err)[0]


def mach_error_text(err: int, null: str = _NULL) -> str:
    """What mach_error() prints after the caller's prefix: the string, and for
    a code the tables do not know, the subsystem and the code in hex.
    ``null`` stands for the tables' NULL entries."""
    text, diag = _lookup(err)
    if text is _NULL:
        text = null
    if diag:
        typ = mach_error_type(err)
        if typ is _NULL:
            typ = null
        return f"{typ} {text} ({_to_int32(err) & 0xFFFFFFFF:x})"
    return text


# ---------------------------------------------------------------------------
# The exception tree.

_KR_ERRNO: Final[Mapping[int, int]] = {
    KERN_INVALID_ADDRESS: _errno.EFAULT,
    KERN_PROTECTION_FAILURE: _errno.EACCES,
    KERN_NO_SPACE: _errno.ENOMEM,
    KERN_INVALID_ARGUMENT: _errno.EINVAL,
    KERN_FAILURE: _errno.EPERM,
    KERN_RESOURCE_SHORTAGE: _errno.ENOMEM,
    KERN_NO_ACCESS: _errno.EACCES,
    KERN_INVALID_NAME: _errno.EBADF,
    KERN_INVALID_TASK: _errno.ESRCH,
    KERN_INVALID_RIGHT: _errno.EBADF,
    KERN_INVALID_VALUE: _errno.EINVAL,
    KERN_INVALID_HOST: _errno.EPERM,
    KERN_NOT_SUPPORTED: _errno.EOPNOTSUPP,
    KERN_OPERATION_TIMED_OUT: _errno.ETIMEDOUT,
    KERN_ABORTED: _errno.EINTR,
    KERN_TERMINATED: _errno.ESRCH,
    KERN_DENIED: _errno.EPERM,
    MACH_SEND_TIMED_OUT: _errno.ETIMEDOUT,
    MACH_RCV_TIMED_OUT: _errno.ETIMEDOUT,
    MACH_SEND_INVALID_DEST: _errno.EBADF,
    MACH_RCV_INVALID_NAME: _errno.EBADF,
    MACH_RCV_PORT_DIED: _errno.EBADF,
    MACH_RCV_PORT_CHANGED: _errno.EBADF,
}

_REGISTRY: dict[int, type["MachError"]] = {}


class MachError(OSError):
    """A Mach call failed. ``kr`` is the kern_return_t; ``str()`` gives
    mach_error_string's text and the context of the failure.

    ``MachError(kr, ...)`` builds the subclass registered for ``kr``
    (InvalidAddressError for KERN_INVALID_ADDRESS, and so on).
    """

    kr: int
    codes: tuple[int, ...] = ()

    def __new__(cls, kr: int, context: str | None = None) -> "MachError":
        if cls is MachError:
            cls = _REGISTRY.get(kr, MachError)
        # OSError's __new__ sets errno, strerror and args (its __init__ does
        # nothing once __new__ is overridden)
        return super().__new__(cls, _KR_ERRNO.get(kr), mach_error_text(kr))

    def __init__(self, kr: int, context: str | None = None) -> None:
        self.kr = kr
        self.context = context

    def __reduce__(self) -> tuple[type["MachError"], tuple[int, str | None]]:
        return (MachError, (self.kr, self.context))

    def __str__(self) -> str:
        head = f"{mach_error_text(self.kr)} (kr={self.kr:#x})"
        return f"{self.context}: {head}" if self.context else head

    def __init_subclass__(cls, **kw: object) -> None:
        super().__init_subclass__(**kw)
        for kr in cls.__dict__.get("codes", ()):
            _REGISTRY[kr] = cls


class InvalidAddressError(MachError):
    """KERN_INVALID_ADDRESS: the address is not mapped, or out of range."""
    codes = (KERN_INVALID_ADDRESS,)


class ProtectionFailureError(MachError, PermissionError):
    """KERN_PROTECTION_FAILURE: the protection does not allow the access."""
    codes = (KERN_PROTECTION_FAILURE,)


class NoSpaceError(MachError):
    """KERN_NO_SPACE: no room in the address space, or the range is taken."""
    codes = (KERN_NO_SPACE,)


class InvalidArgumentError(MachError, ValueError):
    """KERN_INVALID_ARGUMENT / KERN_INVALID_VALUE."""
    codes = (KERN_INVALID_ARGUMENT, KERN_INVALID_VALUE)


class KernFailureError(MachError):
    """KERN_FAILURE: the operation failed; for task ports, it was refused."""
    codes = (KERN_FAILURE,)


class ResourceShortageError(MachError, MemoryError):
    """KERN_RESOURCE_SHORTAGE: the kernel ran out of a resource."""
    codes = (KERN_RESOURCE_SHORTAGE,)


class NoAccessError(MachError, PermissionError):
    """KERN_NO_ACCESS / KERN_INVALID_HOST / KERN_DENIED: not privileged."""
    codes = (KERN_NO_ACCESS, KERN_INVALID_HOST, KERN_DENIED)


class InvalidNameError(MachError):
    """KERN_INVALID_NAME / KERN_INVALID_RIGHT / KERN_INVALID_TASK /
    MACH_SEND_INVALID_DEST / MACH_RCV_INVALID_NAME: the name does not denote
    the right needed; MACH_RCV_PORT_DIED / MACH_RCV_PORT_CHANGED: it
    stopped denoting it during a receive (the port or set was destroyed
    or moved away)."""
    codes = (KERN_INVALID_NAME, KERN_INVALID_RIGHT, KERN_INVALID_TASK, MACH_SEND_INVALID_DEST,
             MACH_RCV_INVALID_NAME, MACH_RCV_PORT_DIED, MACH_RCV_PORT_CHANGED)


class NotSupportedError(MachError):
    """KERN_NOT_SUPPORTED: Linux cannot do this (see docs/deviations.md)."""
    codes = (KERN_NOT_SUPPORTED,)


class MachTimeoutError(MachError, TimeoutError):
    """A timeout: MACH_SEND_TIMED_OUT, MACH_RCV_TIMED_OUT, KERN_OPERATION_TIMED_OUT."""
    codes = (MACH_SEND_TIMED_OUT, MACH_RCV_TIMED_OUT, KERN_OPERATION_TIMED_OUT)


for _cls in (MachError, *_REGISTRY.values()):
    _cls.__module__ = "pymach"


def check(kr: int, context: str | None = None) -> None:
    """Raise the MachError for ``kr`` unless it is KERN_SUCCESS."""
    if kr:
        raise MachError(kr, context)


# ---------------------------------------------------------------------------
# errno -> kern_return_t. Every syscall failure passes through here. The
# same errno means different things to different calls (ENOMEM from mmap is
# "no room", from mprotect it is "not mapped"), so callers name their table.

ERRNO_DEFAULT: Final[Mapping[int, int]] = {
    _errno.EFAULT: KERN_INVALID_ADDRESS,
    _errno.ENOMEM: KERN_RESOURCE_SHORTAGE,
    _errno.EINVAL: KERN_INVALID_ARGUMENT,
    _errno.EACCES: KERN_PROTECTION_FAILURE,
    _errno.EPERM: KERN_NO_ACCESS,
    _errno.EAGAIN: KERN_RESOURCE_SHORTAGE,
    _errno.EEXIST: KERN_NO_SPACE,
    _errno.ESRCH: KERN_INVALID_TASK,
    _errno.EBADF: KERN_INVALID_NAME,
    _errno.EMFILE: KERN_RESOURCE_SHORTAGE,
    _errno.ENFILE: KERN_RESOURCE_SHORTAGE,
    _errno.EINTR: KERN_ABORTED,
    _errno.ENOSYS: KERN_NOT_SUPPORTED,
    _errno.EOPNOTSUPP: KERN_NOT_SUPPORTED,
    _errno.ETIMEDOUT: KERN_OPERATION_TIMED_OUT,
}

# mmap: ENOMEM means the address space is full or the range is out of reach.
ERRNO_MAP: Final[Mapping[int, int]] = {**ERRNO_DEFAULT, _errno.ENOMEM: KERN_NO_SPACE}
# mprotect/madvise/msync/mlock: ENOMEM means part of the range is unmapped.
ERRNO_RANGE: Final[Mapping[int, int]] = {**ERRNO_DEFAULT, _errno.ENOMEM: KERN_INVALID_ADDRESS}
# making a right: its fds are the task's names for it, so running out of
# fds (RLIMIT_NOFILE) is a full IPC space, XNU's KERN_NO_SPACE when the
# entry table is at its limit; the system's file table or memory running
# out stays KERN_RESOURCE_SHORTAGE.
ERRNO_SPACE: Final[Mapping[int, int]] = {**ERRNO_DEFAULT, _errno.EMFILE: KERN_NO_SPACE}
# mlock: EPERM/ENOMEM past RLIMIT_MEMLOCK is a resource limit.
ERRNO_WIRE: Final[Mapping[int, int]] = {
    **ERRNO_DEFAULT, _errno.ENOMEM: KERN_RESOURCE_SHORTAGE, _errno.EPERM: KERN_NO_ACCESS}


def kr_from_errno(err: int, table: Mapping[int, int] = ERRNO_DEFAULT) -> int:
    """Translate an errno through ``table``; unknown ones are KERN_FAILURE."""
    return table.get(err, KERN_FAILURE)


def kr_from_oserror(exc: OSError, table: Mapping[int, int] = ERRNO_DEFAULT) -> int:
    """Translate an OSError (or a MachError, which keeps its code)."""
    if isinstance(exc, MachError):
        return exc.kr
    return kr_from_errno(exc.errno or 0, table)
