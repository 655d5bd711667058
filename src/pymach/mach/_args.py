"""How C arguments arrive from Python: ints or ctypes scalars by value,
byref()/pointer() for out-parameters, ctypes objects or addresses for
buffers."""

from __future__ import annotations

import ctypes
from collections.abc import Collection, Iterator
from typing import Any

from .._kern import kern_return as K

_Pointer = ctypes._Pointer
_Simple = ctypes._SimpleCData
_CArg = type(ctypes.byref(ctypes.c_int()))
_addressof, _sizeof, _c_void_p, _memmove = ctypes.addressof, ctypes.sizeof, ctypes.c_void_p, ctypes.memmove


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


def _carg_address(p: Any) -> int:
    """The address a byref() object stands for: its object's address plus
    the offset given to byref, which ctypes keeps nowhere but in that
    address. memmove returns its destination, so a copy of no bytes hands
    the address back for the cost of one foreign call."""
    return _memmove(p, p, 0) or 0


def out(p: Any) -> Any:
    """The ctypes object an out-parameter points at: byref(x), pointer(x),
    or x itself; a scalar or a pointer. An array stands for its element at
    the offset (byref(arr, 4 * i) or pointer(arr) is ``&arr[i]``), as an
    array decays to a pointer in C; anything else is a TypeError, and an
    offset outside the array a ValueError: nothing is written outside the
    object the caller passed. (For byref(x, offset) of a scalar, ``x``
    itself is the parameter.)"""
    if type(p) is _CArg:
        o = p._obj  # type: ignore[attr-defined]
        if isinstance(o, _Simple):
            return o
        if isinstance(o, ctypes.Array):
            return _element_at(o, _carg_address(p) - ctypes.addressof(o))
    elif isinstance(p, _Pointer):
        o = p.contents
        if isinstance(o, ctypes.Array):
            return _element_at(o, 0)
        return o
    else:
        o = p
        if isinstance(o, ctypes.Array):
            return _element_at(o, 0)
    if isinstance(o, (_Simple, _Pointer)):
        return o
    raise TypeError(f"out-parameter must be byref(x) or pointer(x) of a scalar, not of {type(o).__name__}")


def _element_at(arr: Any, off: int) -> Any:
    et = arr._type_
    n = ctypes.sizeof(et)
    if off < 0 or off % n or off + n > ctypes.sizeof(arr):
        raise ValueError(f"out-parameter at offset {off} is outside its {type(arr).__name__}")
    e = et.from_buffer(arr, off)
    return _element_at(e, 0) if isinstance(e, ctypes.Array) else e


def set_out(p: Any, value: int) -> None:
    """Store ``value`` through an out-parameter (None means the C NULL)."""
    if p is not None:
        store(out(p), value)


def store(o: Any, value: int) -> None:
    """Store ``value`` in the object out() gave."""
    if isinstance(o, _Pointer):
        # an out-pointer (mach_port_array_t, vm_offset_t *): store the address
        ctypes.c_void_p.from_address(ctypes.addressof(o)).value = value or None
    else:
        o.value = value


def out_address(p: Any) -> Any:
    """The object an out-parameter that receives an address points at (the
    array in new memory of mach_port_names, pointer_t of mach_vm_read): a
    pointer or a 64-bit integer, or None for NULL. A narrower object cannot
    hold the address: TypeError, before anything is allocated."""
    if p is None:
        return None
    o = out(p)
    if isinstance(o, (_Pointer, ctypes.c_void_p)) or (_sizeof(o) == 8 and type(o.value) is int):
        return o
    raise TypeError(f"out-parameter for an address must be a pointer or 64 bits wide, not {type(o).__name__}")


_Struct = (ctypes.Structure, ctypes.Union, ctypes.Array)
_NOTHING = ctypes.c_char * 0


def address_of(p: Any, writable: bool = False) -> tuple[int, int | None]:
    """(address, room) of a buffer argument: the address to read or write
    at, and how many bytes from there lie inside the memory of the object
    the caller passed, which pymach.mach never reads or writes past.

    - a ctypes object, a view into one (``send_msg.header``), byref(x) and
      byref(x, offset), pointer(x): the memory of the object at the root of
      its ``_b_base_`` chain (its own, or the buffer it was made on with
      from_buffer), from the address given;
    - bytes (read only: ``writable`` refuses it), bytearray, memoryview and
      other writable buffers: their bytes;
    - an int, a c_void_p or a 64-bit integer scalar (mach_vm_address_t),
      a ctypes object made with from_address, and a pointer made from an
      address (``cast(addr, POINTER(T))``, ``cast(byref(x), ...)``): a raw
      address, and room None. As in C, its extent is the caller's promise.

    NULL (None, 0) has room 0."""
    if type(p) is int:
        return p, (None if p else 0)
    if p is None:
        return 0, 0
    if isinstance(p, _Struct):
        a = _addressof(p)
        b: Any = p._b_base_
        if b is None:
            if p._b_needsfree_:  # owns its memory
                return a, _sizeof(p)
        elif b._b_base_ is None and b._b_needsfree_ and not isinstance(b, _Pointer):
            return a, _addressof(b) + _sizeof(b) - a  # a view into such an object
        return a, _room(_span(p), a)
    if type(p) is _CArg:
        a = _carg_address(p)
        o = p._obj  # type: ignore[attr-defined]
        if o._b_base_ is None and o._b_needsfree_:
            start = _addressof(o)
            return a, _room((start, start + _sizeof(o)), a)
        return a, _room(_span(o), a)
    if isinstance(p, _Pointer):
        a = _c_void_p.from_address(_addressof(p)).value or 0
        return a, (_room(_pointee_span(p, a, 0), a) if a else 0)
    if isinstance(p, _Simple):
        if isinstance(p, (ctypes.c_void_p, ctypes.c_char_p)) or (_sizeof(p) == 8 and type(p.value) is int):
            a = int(p.value or 0)  # a pointer-wide scalar holds an address
            return a, (None if a else 0)
        a = _addressof(p)
        return a, _room(_span(p), a)
    if type(p) is bytes:
        if writable:
            raise TypeError("a bytes object is read-only: pass a bytearray or a ctypes buffer")
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


def counted(p: Any, count: int, unit: int = 4, writable: bool = True) -> tuple[int, int]:
    """(address, count) of an array argument that comes with a count of
    ``unit``-byte elements (natural_t by default): the count the caller
    claims, cut down to what the memory of the object holds. A routine then
    treats a count cut short as XNU treats a short count."""
    a, room = address_of(p, writable)
    if room is not None and room < count * unit:
        count = room // unit
    return a, count


class NaturalArray(Collection[int]):
    """``count`` natural_t of an array argument (anything address_of
    takes), read only when iterated: the kernel checks a count before it
    reads the array. Iterating raises MachError(MACH_SEND_INVALID_MEMORY)
    when the memory the caller passed holds fewer, as XNU's copyin of an
    out-of-line array that cannot be read fails (osfmk/ipc/ipc_kmsg.c:
    ipc_kmsg_copyin_ool_ports_descriptor)."""

    def __init__(self, p: Any, count: int) -> None:
        self._p = p
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        n = self._count
        base, held = counted(self._p, n, writable=False)
        if held < n:
            raise K.MachError(K.MACH_SEND_INVALID_MEMORY, f"the array holds {held} of {n}")
        return iter([ctypes.c_uint32.from_address(base + 4 * i).value for i in range(n)])

    def __contains__(self, x: object) -> bool:
        return x in list(self)


def _room(span: tuple[int, int] | None, a: int) -> int | None:
    if span is None:
        return None
    start, end = span
    return end - a if start <= a <= end else 0


def _span(o: Any, depth: int = 0) -> tuple[int, int] | None:
    """[start, end) of the memory that the ctypes object ``o`` lives in, or
    None when ctypes cannot know it (an object made with from_address).
    A field or element view shares the memory of its ``_b_base_``; the root
    of that chain owns its memory (``_b_needsfree_``), or was made with
    from_buffer and keeps the exporter's memoryview in ``_objects``; the
    object that p.contents and p[i] give has the pointer as its base."""
    b = o._b_base_
    while b is not None:
        if isinstance(b, _Pointer):
            return _pointee_span(b, ctypes.addressof(o), depth + 1)
        o, b = b, b._b_base_
    start = ctypes.addressof(o)
    if o._b_needsfree_:
        return start, start + ctypes.sizeof(o)
    kept = o._objects
    if type(kept) is dict:
        v = kept.get("ffffffff")  # where from_buffer keeps it (index -1)
        if type(v) is memoryview:
            return _buffer_span(v)
        for v in kept.values():
            if type(v) is memoryview:
                return _buffer_span(v)
    return None


def _buffer_span(mv: memoryview) -> tuple[int, int] | None:
    src: Any = mv.obj
    n = mv.nbytes
    if hasattr(src, "_b_base_") and n == ctypes.sizeof(src):
        start = ctypes.addressof(src)  # all of a ctypes object
    else:
        try:
            start = ctypes.addressof(_NOTHING.from_buffer(mv))
        except (TypeError, ValueError):
            return None
    return start, start + n


def _pointee_span(p: Any, a: int, depth: int) -> tuple[int, int] | None:
    """The span, among the objects pointer ``p`` keeps alive (the target of
    pointer(x), and through ctypes.cast the source's), that holds address
    ``a``; an empty span at ``a`` when ``a`` lies outside all of them, and
    None when ``p`` keeps none (a pointer made from an address)."""
    if depth > 8:
        return None
    kept = p._objects
    if type(kept) is dict:
        t = kept.get("1")  # the target of pointer(x) and POINTER(T)(x)
        if t is not None and not isinstance(t, _Pointer) and hasattr(t, "_b_base_"):
            s = _span(t, depth + 1)
            if s is not None and s[0] <= a < s[1]:
                return s
    outside = False
    for c in _kept(p._objects, 0):
        if c is p:
            continue
        if isinstance(c, _Pointer):
            s = _pointee_span(c, a, depth + 1)
        elif type(c) is _CArg:
            s = _span(c._obj, depth + 1)  # type: ignore[attr-defined]
        elif hasattr(c, "_b_base_"):
            s = _span(c, depth + 1)
        else:
            continue
        if s is not None:
            if s[0] <= a < s[1]:
                return s
            outside = True
    return (a, a) if outside else None


def _kept(objs: Any, depth: int) -> Any:
    if type(objs) is dict:
        if depth < 4:
            for v in objs.values():
                yield from _kept(v, depth + 1)
    elif objs is not None:
        yield objs
