"""How C arguments arrive from Python: ints or ctypes scalars by value,
byref()/pointer() for out-parameters, ctypes objects or addresses for
buffers."""

from __future__ import annotations

import ctypes
from typing import Any

_Pointer = ctypes._Pointer  # type: ignore[attr-defined]
_Simple = ctypes._SimpleCData  # type: ignore[attr-defined]
_CArg = type(ctypes.byref(ctypes.c_int()))


def val(x: Any) -> int:
    """A by-value argument as an int: an int, a ctypes scalar, or None/NULL."""
    if type(x) is int:
        return x
    if x is None:
        return 0
    v = getattr(x, "value", x)
    if v is None:
        return 0
    if isinstance(v, (bytes, str)):
        raise TypeError(f"expected an integer, got {type(x).__name__}")
    return int(v)


_U64 = (1 << 64) - 1


def u64(x: Any) -> int:
    """A by-value 64-bit unsigned argument (mach_vm_address_t, _size_t),
    wrapped as C converts it: -1 is 0xffffffffffffffff."""
    if type(x) is int and 0 <= x <= _U64:
        return x
    return val(x) & _U64


def u32(x: Any) -> int:
    """A by-value 32-bit unsigned argument (mach_port_t, vm_inherit_t...)."""
    if type(x) is int and 0 <= x <= 0xFFFFFFFF:
        return x
    return val(x) & 0xFFFFFFFF


def i32(x: Any) -> int:
    """A by-value int argument (vm_prot_t, flags, boolean_t)."""
    if type(x) is int and -0x80000000 <= x <= 0x7FFFFFFF:
        return x
    v = val(x) & 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def out(p: Any) -> Any:
    """The ctypes object an out-parameter points at: byref(x), pointer(x),
    or x itself."""
    if type(p) is _CArg:
        return p._obj  # type: ignore[attr-defined]
    if isinstance(p, _Pointer):
        return p.contents
    if isinstance(p, (_Simple, ctypes.Structure, ctypes.Union, ctypes.Array)):
        return p
    raise TypeError(f"out-parameter must be byref(x) or pointer(x), not {type(p).__name__}")


def set_out(p: Any, value: int) -> None:
    """Store ``value`` through an out-parameter (None means the C NULL)."""
    if p is None:
        return
    o = out(p)
    if isinstance(o, _Pointer):
        # an out-pointer (mach_port_array_t, vm_offset_t *): store the address
        ctypes.c_void_p.from_address(ctypes.addressof(o)).value = value or None
    else:
        o.value = value


def address_of(p: Any) -> tuple[int, int | None]:
    """(address, size or None) of a buffer argument: byref/pointer to a
    ctypes object, a ctypes object, a writable buffer, or an address."""
    if p is None:
        return 0, None
    if type(p) is int:
        return p, None
    if type(p) is _CArg:
        o = p._obj  # type: ignore[attr-defined]
        return ctypes.addressof(o) + getattr(p, "_offset", 0), ctypes.sizeof(o)
    if isinstance(p, _Pointer):
        return ctypes.cast(p, ctypes.c_void_p).value or 0, None
    if isinstance(p, (ctypes.Structure, ctypes.Union, ctypes.Array)):
        return ctypes.addressof(p), ctypes.sizeof(p)
    if isinstance(p, _Simple):
        if isinstance(p, (ctypes.c_void_p, ctypes.c_char_p)) or type(p.value) is int:
            return int(p.value or 0), None
    if type(p) is bytes:
        # c_char_p of a bytes object points at the object's own storage,
        # which lives as long as the caller's reference to it
        return ctypes.cast(ctypes.c_char_p(p), ctypes.c_void_p).value or 0, len(p)
    try:
        mv = memoryview(p)
    except TypeError:
        raise TypeError(f"expected a buffer or an address, not {type(p).__name__}") from None
    if mv.readonly:
        raise TypeError("a read-only buffer other than bytes has no stable address")
    return ctypes.addressof((ctypes.c_char * mv.nbytes).from_buffer(mv)), mv.nbytes
