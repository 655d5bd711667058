"""Argument checks of the Pythonic layer, in one place.

The Pythonic layer is where Python values become Mach's C types, so that is
where they are checked, by one rule:

- A value of the wrong type is a TypeError that names the call, the
  parameter and the type expected:
  ``Task.for_pid() argument 'pid' must be int, not str``.
- A number outside the C type it becomes (a pid_t, a mach_vm_size_t, a
  32-bit msgh_id, a timeout in mach_msg_timeout_t milliseconds) is a
  ValueError that names the type and its range. Mach never sees such a
  value, so there is no kern_return_t for it: ``allocate(-1)`` and
  ``allocate(-4096)`` are both ValueError, where the C interface, given the
  same bits as a mach_vm_size_t, answers as XNU does (KERN_INVALID_ARGUMENT
  for a size whose rounding wraps, KERN_NO_SPACE for one that does not fit).
- A number inside its C type goes on to the kernel, which answers with the
  code XNU gives, as a MachError. Offsets into a Region are the Region's
  own: a range outside it is InvalidArgumentError (KERN_INVALID_ARGUMENT),
  whichever side it misses on.
- ``bool`` is refused where a number is meant: True is an int to Python,
  but ``allocate(True)`` or ``Port(True)`` is a mistake, not one byte or
  name 0x1. Integers of other types with ``__index__`` are accepted.

A MachError raised under a Pythonic call gets the call's name in front of
its context (``Port.receive(): no message: (ipc/rcv) timed out``).

The hot paths (send, receive) test ``type(x) is int and lo <= x <= hi``
inline and come here only when that fails.
"""

from __future__ import annotations

import functools
import operator
from typing import Callable, NamedTuple, NoReturn, ParamSpec, SupportsIndex, TypeVar, cast

from ._kern import kern_return as K

__all__ = ["CType", "PID", "MSG_ID", "PROT", "INHERIT", "FLAGS", "TAG", "NAME", "MSG_SIZE", "ADDRESS",
           "SIZE", "OFFSET", "TIMEOUT_MAX", "type_error", "integer", "index", "optional_integer", "timeout_ms",
           "data", "instance", "optional", "service_name", "named", "fail", "names_call"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")


class CType(NamedTuple):
    """A C integer type: its name and range, and whether its values read
    best in hex."""

    name: str
    lo: int
    hi: int
    hex: bool = False

    def text(self, v: int) -> str:
        return f"{v:#x}" if self.hex and v > 0 else str(v)


_I32 = (-(1 << 31), (1 << 31) - 1)
PID = CType("pid_t", *_I32)
MSG_ID = CType("mach_msg_id_t", *_I32)
PROT = CType("vm_prot_t", *_I32, True)
INHERIT = CType("vm_inherit_t", 0, (1 << 32) - 1)
# a flags word is a C int, but its constants are written unsigned (0xFF000000)
FLAGS = CType("32-bit flags word", -(1 << 31), (1 << 32) - 1, True)
TAG = CType("VM tag", 0, 255)  # VM_MAKE_TAG: the top byte of the flags
NAME = CType("mach_port_name_t", 0, (1 << 32) - 1, True)
MSG_SIZE = CType("mach_msg_size_t", 0, (1 << 32) - 1)
ADDRESS = CType("mach_vm_address_t", 0, (1 << 64) - 1, True)
SIZE = CType("mach_vm_size_t", 0, (1 << 64) - 1, True)
OFFSET = CType("mach_vm_offset_t", 0, (1 << 64) - 1, True)

# mach_msg_timeout_t is a natural_t of milliseconds
TIMEOUT_MAX = 0xFFFFFFFF / 1000


def type_error(call: str, param: str, expected: str, value: object) -> TypeError:
    """The TypeError for ``value`` given as ``param`` of ``call``."""
    return TypeError(f"{call} argument '{param}' must be {expected}, not {type(value).__name__}")


def _range_error(call: str, param: str, ctype: CType, value: int) -> ValueError:
    return ValueError(f"{call} argument '{param}' is out of range: {ctype.text(value)} is not a {ctype.name} "
                      f"({ctype.text(ctype.lo)} to {ctype.text(ctype.hi)})")


def integer(value: object, call: str, param: str, ctype: CType) -> int:
    """``value`` as an int of ``ctype``: TypeError for a non-integer (bool
    included), ValueError outside the type's range."""
    if type(value) is not int:
        if isinstance(value, bool) or not hasattr(type(value), "__index__"):
            raise type_error(call, param, "int", value)
        value = operator.index(cast(SupportsIndex, value))
    assert isinstance(value, int)
    if not ctype.lo <= value <= ctype.hi:
        raise _range_error(call, param, ctype, value)
    return value


def index(value: object, call: str, param: str) -> int:
    """``value`` as an int, whatever its size (an offset that the callee
    checks against an object of its own): TypeError for a non-integer."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise type_error(call, param, "int", value)
    return operator.index(cast(SupportsIndex, value))


def optional_integer(value: object, call: str, param: str, ctype: CType) -> int | None:
    """As integer(), with None passed through."""
    if value is None:
        return None
    if type(value) is not int:
        if isinstance(value, bool) or not hasattr(type(value), "__index__"):
            raise type_error(call, param, "int or None", value)
    return integer(value, call, param, ctype)


def timeout_ms(value: object, call: str, param: str = "timeout") -> int | None:
    """A timeout in seconds as mach_msg_timeout_t milliseconds (rounded
    down), or None for no timeout. TypeError for a non-number; ValueError
    below 0, above 4294967.295 s (2**32 - 1 ms), or NaN: a longer wait is
    None, which waits for as long as it takes."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise type_error(call, param, "a number of seconds or None", value)
    ms = value * 1000
    if not 0 <= ms < 1 << 32:
        raise ValueError(f"{call} argument '{param}' is out of range: {value!r} s is not a mach_msg_timeout_t "
                         f"(0 to {TIMEOUT_MAX} s, in milliseconds); None waits without a limit")
    return int(ms)


def data(value: object, call: str, param: str, expected: str = "bytes-like") -> bytes:
    """The bytes of a bytes-like object (the buffer protocol: bytes,
    bytearray, memoryview, array, mmap...). A str or an int is a TypeError:
    ``bytes(5)`` would be five NUL bytes, never what was meant."""
    if type(value) is bytes:
        return value
    try:
        return memoryview(value).tobytes()  # type: ignore[arg-type]
    except TypeError:
        raise type_error(call, param, expected, value) from None


def instance(value: object, cls: type[_T], call: str, param: str, expected: str | None = None) -> _T:
    """``value`` if it is a ``cls``; otherwise a TypeError."""
    if isinstance(value, cls):
        return value
    raise type_error(call, param, expected or cls.__name__, value)


def optional(value: object, cls: type[_T], call: str, param: str) -> _T | None:
    """``value`` if it is a ``cls`` or None; otherwise a TypeError."""
    if value is None or isinstance(value, cls):
        return value
    raise type_error(call, param, f"{cls.__name__} or None", value)


def service_name(value: object, call: str, param: str = "name") -> str | bytes:
    """A name_t as the C interface takes it: str or bytes."""
    if isinstance(value, (str, bytes)):
        return value
    raise type_error(call, param, "str or bytes", value)


def named(err: K.MachError, call: str) -> K.MachError:
    """Put ``call`` in front of ``err``'s context (once) and return it."""
    ctx = err.context
    if not ctx:
        err.context = call
    elif not ctx.startswith(call):
        err.context = f"{call}: {ctx}"
    return err


def fail(kr: int, call: str, what: str) -> NoReturn:
    """Raise the MachError for ``kr``, its context naming ``call``."""
    raise K.MachError(kr, f"{call}: {what}")


def names_call(call: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """A decorator: MachErrors raised under the function name ``call``."""
    def wrap(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def inner(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return fn(*args, **kwargs)
            except K.MachError as e:
                named(e, call)
                raise
        return inner
    return wrap
