"""MIG's generated code, made at run time from a compiled subsystem: the
messages of each routine encoded and decoded by its layout (the fields,
offsets and kinds that ``layout.struct_layout`` computes), with the
checks of mig's user code (``user.c``: the reply's id, MIG_SERVER_DIED,
MIG_TYPE_ERROR) and server code (``server.c``: sizes, the complex bit,
descriptor counts, types and dispositions, counts against maxima, c_strings'
terminators: MIG_BAD_ARGUMENTS, MIG_TYPE_ERROR; unknown ids: MIG_BAD_ID).

Values, as the Pythonic layer gives and takes them:

- a scalar: an int (a struct or fixed array: a list of ints, or bytes
  when its elements are bytes); a c_string: str;
- a variable in-line array: a list of ints, or bytes for bytes;
- out-of-line data: bytes (received: copied, and the region released);
- a port: its name (an int); a polymorphic port: (name, disposition);
- a port array: a list of names;
- an audit token: a tuple of 8 ints, a security token of 2; a seqno: an int.
"""

from __future__ import annotations

import ctypes
import struct
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from .. import mach as M
from ..mach import _args as A
from ..mach.mig import _serve as _serve_received
from .layout import (AKB_RETURN, AKB_SEND, AKB_SERVER_ARG, AKB_USER_ARG, AKE_AUDIT_TOKEN, AKE_CONTEXT_TOKEN,
                     AKE_COUNT, AKE_COUNT_IN_OUT, AKE_DEALLOC, AKE_MSG_SEQNO, AKE_NDR_CODE, AKE_POLY, AKE_REPLY_PORT,
                     AKE_REQUEST_PORT, AKE_RET_CODE, AKE_SAME_COUNT, AKE_SEC_TOKEN, AKE_SUB_COUNT, OOL_DESCRIPTOR,
                     OOL_PORTS_DESCRIPTOR, PORT_DESCRIPTOR, Argument, Field, Layout, Routine, ak_check, ak_ident)
from .lexer import TYPE_MAKE_SEND_ONCE, TYPE_POLYMORPHIC
from .parser import Subsystem
from .types import IpcType

NDR = bytes([0, 0, 0, 0, 1, 0, 0, 0])          # NDR_record: little-endian ints, ASCII, IEEE floats
_TRAILER_NEEDS = {AKE_MSG_SEQNO: 12, AKE_SEC_TOKEN: 20, AKE_AUDIT_TOKEN: 52, AKE_CONTEXT_TOKEN: 60}
_TRAILER_ELEMENTS = {12: M.MACH_RCV_TRAILER_SEQNO, 20: M.MACH_RCV_TRAILER_SENDER, 52: M.MACH_RCV_TRAILER_AUDIT,
                     60: M.MACH_RCV_TRAILER_CTX}
_HIDDEN = (AKE_COUNT, AKE_COUNT_IN_OUT, AKE_SAME_COUNT, AKE_SUB_COUNT, AKE_DEALLOC, AKE_RET_CODE, AKE_NDR_CODE,
           AKE_POLY)
_SIGNED = frozenset({"int", "int8_t", "int16_t", "int32_t", "int64_t", "integer_t", "kern_return_t", "boolean_t",
                     "long", "short", "vm_prot_t", "policy_t", "task_flavor_t"})
_SEND_DISP = {M.MACH_MSG_TYPE_MOVE_RECEIVE: (M.MACH_MSG_TYPE_MOVE_RECEIVE,),
              M.MACH_MSG_TYPE_MOVE_SEND_ONCE: (M.MACH_MSG_TYPE_MOVE_SEND_ONCE, M.MACH_MSG_TYPE_MAKE_SEND_ONCE),
              M.MACH_MSG_TYPE_MOVE_SEND: (M.MACH_MSG_TYPE_MOVE_SEND, M.MACH_MSG_TYPE_MAKE_SEND,
                                          M.MACH_MSG_TYPE_COPY_SEND)}


class _Bad(Exception):
    """A message that fails mig's checks: its code."""

    def __init__(self, kr: int) -> None:
        super().__init__(kr)
        self.kr = kr


def _signed(it: IpcType | None) -> bool:
    while it is not None:
        for n in (it.name, it.server_type, it.user_type):
            if n in _SIGNED:
                return True
        it = it.element
    return False


def _elem_bytes(it: IpcType) -> int:
    """Bytes of one element of a fixed in-line type."""
    return max(it.size // 8, 1)


def _unit(it: IpcType) -> int:
    """Bytes that one count of a variable array stands for."""
    if not it.in_line:
        return max(it.size // 8, 1)
    e = it.element
    return e.type_size if e is not None and e.type_size else _elem_bytes(it)


def _max_count(it: IpcType) -> int:
    e = it.element
    return it.number // max(e.number if e is not None else 1, 1)


def _ints(raw: bytes, size: int, signed: bool) -> list[int]:
    return [int.from_bytes(raw[i:i + size], "little", signed=signed) for i in range(0, len(raw) - size + 1, size)]


def _to_bytes(v: Any, esize: int, what: str) -> bytes:
    """Plain data as bytes: bytes-like, a ctypes object, an int or a
    sequence of ints (``esize`` bytes each)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (ctypes.Structure, ctypes.Union, ctypes.Array)):
        return bytes(memoryview(v).cast("B"))
    if isinstance(v, (int, ctypes._SimpleCData)):
        return (A.val(v) & ((1 << (8 * esize)) - 1)).to_bytes(esize, "little")
    if isinstance(v, Sequence):
        return b"".join((A.val(x) & ((1 << (8 * esize)) - 1)).to_bytes(esize, "little") for x in v)
    raise TypeError(f"{what}: expected an int, bytes or a sequence of ints, not {type(v).__name__}")


def _from_fixed(it: IpcType, raw: bytes) -> Any:
    if it.string:
        return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    es = _elem_bytes(it)
    if it.number == 1 and es in (1, 2, 4, 8) and len(raw) == es:
        return int.from_bytes(raw, "little", signed=_signed(it))
    if es == 1:
        return raw
    return _ints(raw, es, _signed(it))


def _from_var(it: IpcType, raw: bytes) -> Any:
    if it.string:
        return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    unit = _unit(it)
    if unit == 1:
        return raw
    e = it.element
    if e is not None and e.number == 1 and unit in (2, 4, 8):
        return _ints(raw, unit, _signed(e))
    return [raw[i:i + unit] for i in range(0, len(raw), unit)]


def _deref(v: Any) -> Any:
    """The value an in-out reference holds."""
    return A.out(v).value if v is not None else 0


def _c_string(v: Any) -> bytes:
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).split(b"\0", 1)[0]
    if isinstance(v, ctypes.c_char_p):
        return v.value or b""
    if isinstance(v, ctypes.Array):
        return bytes(memoryview(v).cast("B")).split(b"\0", 1)[0]
    raise TypeError(f"expected a string, not {type(v).__name__}")


_INT_FORMATS = {(1, True): "b", (1, False): "B", (2, True): "h", (2, False): "H", (4, True): "i", (4, False): "I",
                (8, True): "q", (8, False): "Q"}


def _plain_struct(fields: list[tuple[Field, Argument | None]]) -> tuple[struct.Struct | None, list[str]]:
    """For a message of scalars only (no descriptor, no array, no string):
    one struct.Struct for the whole of it (the header as six ints) and the
    names of its data fields in order; (None, []) for any other message."""
    fmt = "<IIIIIi"
    names: list[str] = []
    for f, arg in fields[1:]:
        if f.kind == "ndr":
            fmt += "8s"
        elif f.kind == "retcode":
            fmt += "i"
        elif f.kind == "pad":
            fmt += f"{f.size}x"
        elif f.kind == "data" and arg is not None and arg.itype.number == 1 and not arg.itype.string \
                and (f.size, _signed(arg.itype)) in _INT_FORMATS and f.size == _elem_bytes(arg.itype):
            fmt += _INT_FORMATS[(f.size, _signed(arg.itype))]
            names.append(arg.name)
        else:
            return None, []
    return struct.Struct(fmt), names


def _desc_expected(arg: Argument) -> int:
    """The descriptor type an argument travels in."""
    return {PORT_DESCRIPTOR: M.MACH_MSG_PORT_DESCRIPTOR, OOL_DESCRIPTOR: M.MACH_MSG_OOL_DESCRIPTOR,
            OOL_PORTS_DESCRIPTOR: M.MACH_MSG_OOL_PORTS_DESCRIPTOR}[arg.kpd_type or ""]


class Direction:
    """One message of a routine (its request or its reply), encoded and
    decoded by its layout."""

    def __init__(self, rt: Routine, layout: Layout, request: bool) -> None:
        self.rt = rt
        self.layout = layout
        self.request = request
        self.args = {a.name: a for a in rt.args}
        self.fields: list[tuple[Field, Argument | None]] = [(f, self.args.get(f.arg or "")) for f in layout.fields]
        self.variable = any(f.kind == "variable" for f in layout.fields)
        self.pad_after_var = {i for i, (f, _) in enumerate(self.fields)
                              if f.kind == "pad" and i and self.fields[i - 1][0].kind == "variable"}
        self.fast, self.fast_names = _plain_struct(self.fields)

    # -- encoding

    def encode(self, values: dict[str, Any], keep: list[Any]) -> bytearray:
        """The message after its header, from ``values`` (by argument name:
        ints, bytes, lists; a descriptor's (address, size) or name). Memory
        that the descriptors point at is appended to ``keep``."""
        out = bytearray()
        for i, (f, arg) in enumerate(self.fields):
            k = f.kind
            if k == "header":
                continue
            if k == "body":
                out += struct.pack("<I", self.layout.descriptors)
            elif k == "descriptor":
                assert arg is not None
                out += self._encode_desc(arg, values, keep)
            elif k == "ndr":
                out += NDR
            elif k == "retcode":
                out += struct.pack("<i", values.get("RetCode", 0))
            elif k == "count":
                out += struct.pack("<I", A.u32(values.get(f.arg or "", 0)))
            elif k == "offset":
                out += bytes(4)
            elif k == "variable":
                assert arg is not None
                raw = values[arg.name]
                out += raw + bytes(-len(raw) % 4)
            elif k == "pad":
                if i not in self.pad_after_var:
                    out += bytes(f.size)
            else:
                assert arg is not None
                raw = values[arg.name]
                if len(raw) != f.size:
                    raise ValueError(f"{self.rt.name}: {arg.name} takes {f.size} bytes, not {len(raw)}")
                out += raw
        return out

    def _encode_desc(self, arg: Argument, values: dict[str, Any], keep: list[Any]) -> bytes:
        it = arg.itype
        poly = values.get(arg.poly.name) if arg.poly is not None else None
        v = values[arg.name]
        if arg.kpd_type == PORT_DESCRIPTOR:
            disp = A.u32(poly) if poly is not None else it.in_name
            names = list(v) if it.multiple_kpd else [v]
            names += [0] * (it.kpd_number - len(names) if it.multiple_kpd else 0)
            return b"".join(struct.pack("<IIHBB", A.u32(n), 0, 0, disp, M.MACH_MSG_PORT_DESCRIPTOR) for n in names)
        addr, n = v
        dealloc = 1 if arg.deallocate == "yes" or (arg.dealloc is not None and values.get(arg.dealloc.name)) else 0
        if arg.kpd_type == OOL_DESCRIPTOR:
            return struct.pack("<QBBBBI", addr, dealloc, M.MACH_MSG_VIRTUAL_COPY, 0, M.MACH_MSG_OOL_DESCRIPTOR, n)
        disp = A.u32(poly) if poly is not None else it.in_name
        return struct.pack("<QBBBBI", addr, dealloc, M.MACH_MSG_VIRTUAL_COPY, disp, M.MACH_MSG_OOL_PORTS_DESCRIPTOR, n)

    # -- decoding, with mig's checks

    def decode(self, buf: bytes, size: int, bad: int) -> dict[str, Any]:
        """The values of a received message ``buf`` of ``size`` bytes (the
        header's msgh_size, already checked against the layout's bounds):
        by argument name; a port descriptor gives its name (and the poly
        argument its disposition), out-of-line data (address, size), port
        arrays (address, count). Raises _Bad: ``bad`` for counts and sizes
        (the server's MIG_BAD_ARGUMENTS, the user's MIG_TYPE_ERROR),
        MIG_TYPE_ERROR for descriptors."""
        vals: dict[str, Any] = {}
        lay = self.layout
        fixed_rest = 0
        off = 24
        for i, (f, arg) in enumerate(self.fields):
            k = f.kind
            if k == "header":
                continue
            if k == "body":
                off += 4
                continue
            if k == "descriptor":
                assert arg is not None
                self._decode_desc(arg, buf, off, vals)
                off += f.size
                continue
            if k == "pad" and i in self.pad_after_var:
                continue
            if k == "variable":
                assert arg is not None and arg.count is not None
                it = arg.itype
                cnt = vals.get(arg.count.name, 0)
                if cnt > _max_count(it):
                    raise _Bad(bad)
                n = cnt * _unit(it)
                nbytes = n + (-n % 4)
                # the rest of the message must hold it and the fixed fields after it
                fixed_rest = sum(g.size for g, _ in self.fields[i + 1:] if g.kind not in ("variable",)
                                 and not (g.kind == "pad" and self.fields.index((g, _)) in self.pad_after_var))
                last = not any(g.kind == "variable" for g, _ in self.fields[i + 1:])
                if off + nbytes + fixed_rest > size or (last and off + nbytes + fixed_rest != size):
                    raise _Bad(bad)
                raw = buf[off:off + n]
                if it.string and (not n or b"\0" not in raw):
                    raise _Bad(M.MIG_BAD_ARGUMENTS if bad == M.MIG_BAD_ARGUMENTS else bad)
                vals[arg.name] = raw
                off += nbytes
                continue
            raw = buf[off:off + f.size]
            if len(raw) < f.size or off + f.size > size:
                raise _Bad(bad)
            off += f.size
            if k in ("count",):
                vals[f.arg or ""] = int.from_bytes(raw, "little")
            elif k == "retcode":
                vals["RetCode"] = int.from_bytes(raw, "little", signed=True)
            elif k == "data" and arg is not None:
                if arg.itype.string and b"\0" not in raw:
                    raise _Bad(M.MIG_BAD_ARGUMENTS if bad == M.MIG_BAD_ARGUMENTS else bad)
                vals[arg.name] = raw
        if not self.variable and off != size and lay.size == size:
            raise _Bad(bad)
        self._check_ool_counts(vals)
        return vals

    def _decode_desc(self, arg: Argument, buf: bytes, off: int, vals: dict[str, Any]) -> None:
        it = arg.itype
        want = _desc_expected(arg)
        if arg.kpd_type == PORT_DESCRIPTOR:
            names = []
            for j in range(it.kpd_number if it.multiple_kpd else 1):
                name, _p, _q, disp, dtype = struct.unpack_from("<IIHBB", buf, off + 12 * j)
                if dtype != want:
                    raise _Bad(M.MIG_TYPE_ERROR)
                if not it.var_array:
                    if arg.poly is not None:
                        allowed = _SEND_DISP.get(it.out_name)
                        if allowed is not None and disp not in allowed:
                            raise _Bad(M.MIG_TYPE_ERROR)
                    elif disp != it.out_name:
                        raise _Bad(M.MIG_TYPE_ERROR)
                names.append(name)
                if arg.poly is not None:
                    vals[arg.poly.name] = disp
            vals[arg.name] = names if it.multiple_kpd else names[0]
            return
        addr, _d, _c, disp, dtype, n = struct.unpack_from("<QBBBBI", buf, off)
        if arg.kpd_type == OOL_DESCRIPTOR:
            if dtype != want or (not it.var_array and n != (it.number * it.size + 7) // 8):
                raise _Bad(M.MIG_TYPE_ERROR)
        else:
            if dtype != want or (not it.var_array and n != it.number):
                raise _Bad(M.MIG_TYPE_ERROR)
            if arg.poly is None and disp != it.out_name:
                raise _Bad(M.MIG_TYPE_ERROR)
            if arg.poly is not None:
                vals[arg.poly.name] = disp
        vals[arg.name] = (addr, n)

    def _check_ool_counts(self, vals: dict[str, Any]) -> None:
        for f, arg in self.fields:
            if f.kind != "descriptor" or arg is None or arg.kpd_type == PORT_DESCRIPTOR:
                continue
            it = arg.itype
            if not it.var_array or arg.count is None:
                continue
            _addr, n = vals[arg.name]
            cnt = vals.get(arg.count.name, 0)
            units = n // _unit(it) if arg.kpd_type == OOL_DESCRIPTOR else n
            if units != cnt or (it.ool_number and cnt > it.ool_number):
                raise _Bad(M.MIG_TYPE_ERROR)
        for f, arg in self.fields:
            if f.kind == "descriptor" and arg is not None and arg.kpd_type == PORT_DESCRIPTOR \
                    and arg.itype.multiple_kpd and arg.itype.var_array and arg.count is not None:
                cnt = vals.get(arg.count.name, 0)
                if cnt > arg.itype.kpd_number:
                    raise _Bad(M.MIG_BAD_ARGUMENTS)
                vals[arg.name] = vals[arg.name][:cnt]


def _trailer_need(rt: Routine, side: int) -> int:
    """The trailer size that the routine's tokens on ``side`` need (0: none)."""
    return max([_TRAILER_NEEDS.get(ak_ident(a.kind), 0) for a in rt.args if ak_check(a.kind, side)
                and ak_ident(a.kind) in _TRAILER_NEEDS] or [0])


def _trailer_values(rt: Routine, side: int, buf: bytes, size: int) -> dict[str, Any]:
    """The trailer tokens (MIG_TRAILER_ERROR for a trailer that lacks them)."""
    need = _trailer_need(rt, side)
    if not need:
        return {}
    t = (size + 3) & ~3
    if len(buf) < t + 8:
        raise _Bad(M.MIG_TRAILER_ERROR)
    fmt, tsize = struct.unpack_from("<II", buf, t)
    if fmt != M.MACH_MSG_TRAILER_FORMAT_0 or tsize < need or len(buf) < t + need:
        raise _Bad(M.MIG_TRAILER_ERROR)
    out: dict[str, Any] = {}
    for a in rt.args:
        ident = ak_ident(a.kind)
        if not ak_check(a.kind, side) or ident not in _TRAILER_NEEDS:
            continue
        if ident == AKE_MSG_SEQNO:
            out[a.name] = struct.unpack_from("<I", buf, t + 8)[0]
        elif ident == AKE_SEC_TOKEN:
            out[a.name] = struct.unpack_from("<2I", buf, t + 12)
        elif ident == AKE_AUDIT_TOKEN:
            out[a.name] = struct.unpack_from("<8I", buf, t + 20)
        else:
            out[a.name] = struct.unpack_from("<Q", buf, t + 52)[0]
    return out


def _trailer_option(need: int) -> int:
    if not need:
        return 0
    return M.MACH_RCV_TRAILER_TYPE(M.MACH_MSG_TRAILER_FORMAT_0) | M.MACH_RCV_TRAILER_ELEMENTS(_TRAILER_ELEMENTS[need])


def _size_ok(lay: Layout, complex_: bool, bits: int, size: int, buf: bytes, bad: int) -> None:
    """The checks that open mig's __MIG_check__ routines."""
    if complex_:
        if not bits & M.MACH_MSGH_BITS_COMPLEX:
            raise _Bad(bad)
        if len(buf) < 28 or struct.unpack_from("<I", buf, 24)[0] != lay.descriptors:
            raise _Bad(bad)
    elif bits & M.MACH_MSGH_BITS_COMPLEX:
        raise _Bad(bad)
    if size < lay.min_size or size > lay.size or size % 4:
        raise _Bad(bad)


# -- conversions between the Pythonic values and the message's ------------------------------

def _in_values(rt: Routine, direction: Direction, py: dict[str, Any], keep: list[Any]) -> dict[str, Any]:
    """The message values of the Pythonic arguments ``py`` (by name)."""
    out: dict[str, Any] = {}
    for f, arg in direction.fields:
        if arg is None or f.kind in ("header", "body", "ndr", "retcode", "pad", "offset"):
            continue
        if f.kind == "count":
            array = direction.args.get(arg.name[:-3]) if ak_ident(arg.kind) == AKE_COUNT_IN_OUT else None
            if array is not None and array.type is not None:
                out[arg.name] = _max_count(array.itype)     # CountInOut: the room for the reply's array
            continue
        it = arg.itype
        v: Any = py.get(arg.name)
        if f.kind == "descriptor":
            if arg.poly is not None:
                name, disp = v if isinstance(v, tuple) else (v, it.in_name if it.in_name != TYPE_POLYMORPHIC
                                                                   else M.MACH_MSG_TYPE_COPY_SEND)
                out[arg.poly.name] = disp
                v = name
            if arg.kpd_type == PORT_DESCRIPTOR:
                out[arg.name] = [A.u32(x) for x in v] if it.multiple_kpd else A.u32(v)
                if it.multiple_kpd and arg.count is not None:
                    out[arg.count.name] = len(v)
            elif arg.kpd_type == OOL_DESCRIPTOR:
                raw = _to_bytes(v if v is not None else b"", _unit(it), arg.name)
                buf = ctypes.create_string_buffer(raw, max(len(raw), 1))
                keep.append(buf)
                out[arg.name] = (ctypes.addressof(buf) if raw else 0, len(raw))
                if arg.count is not None:
                    out[arg.count.name] = len(raw) // _unit(it)
            else:
                names = list(v or [])
                arr = (ctypes.c_uint32 * max(len(names), 1))(*[A.u32(x) for x in names])
                keep.append(arr)
                out[arg.name] = (ctypes.addressof(arr) if names else 0, len(names))
                if arg.count is not None:
                    out[arg.count.name] = len(names)
        elif f.kind == "variable":
            if it.string:
                raw = _to_bytes(v, 1, arg.name).split(b"\0", 1)[0][:_max_count(it) - 1] + b"\0"
            else:
                raw = _to_bytes(v if v is not None else b"", _unit(it), arg.name)
            if len(raw) // _unit(it) > _max_count(it):
                raise ValueError(f"{rt.name}: {arg.name} holds at most {_max_count(it)} elements")
            out[arg.name] = raw
            assert arg.count is not None
            out[arg.count.name] = len(raw) // _unit(it)
        else:
            if it.string:
                raw = _to_bytes(v, 1, arg.name).split(b"\0", 1)[0][:f.size - 1]
            else:
                raw = _to_bytes(v if v is not None else 0, _elem_bytes(it), arg.name)
            if len(raw) > f.size:
                raise ValueError(f"{rt.name}: {arg.name} takes {f.size} bytes, not {len(raw)}")
            out[arg.name] = raw + bytes(f.size - len(raw))
    return out


def _py_values(direction: Direction, vals: dict[str, Any], copy_ool: bool) -> dict[str, Any]:
    """The Pythonic values of a decoded message: out-of-line data and port
    arrays copied out of their regions, which are released."""
    out: dict[str, Any] = {}
    for f, arg in direction.fields:
        if arg is None or arg.name not in vals or f.kind in ("count", "retcode", "ndr", "offset", "pad"):
            continue
        it = arg.itype
        v = vals[arg.name]
        if f.kind == "descriptor":
            if arg.kpd_type == PORT_DESCRIPTOR:
                pass
            else:
                addr, n = v
                nbytes = n if arg.kpd_type == OOL_DESCRIPTOR else 4 * n
                raw = ctypes.string_at(addr, nbytes) if addr and nbytes else b""
                if copy_ool and addr and nbytes:
                    M.mach_vm_deallocate(M.mach_task_self(), addr, nbytes)
                v = _from_var(it, raw) if arg.kpd_type == OOL_DESCRIPTOR else list(_ints(raw, 4, False))
            if arg.poly is not None:
                v = (v, vals.get(arg.poly.name, 0))
            out[arg.name] = v
        elif f.kind == "variable":
            out[arg.name] = _from_var(it, v)
        else:
            out[arg.name] = _from_fixed(it, v)
    return out


def _release_regions(direction: Direction, vals: dict[str, Any]) -> None:
    """Deallocate the out-of-line regions of decoded values (their data
    was copied; the rights in a port array are kept)."""
    for f, arg in direction.fields:
        if f.kind != "descriptor" or arg is None or arg.name not in vals or arg.kpd_type == PORT_DESCRIPTOR:
            continue
        addr, n = vals[arg.name]
        nbytes = n if arg.kpd_type == OOL_DESCRIPTOR else 4 * n
        if addr and nbytes:
            M.mach_vm_deallocate(M.mach_task_self(), addr, nbytes)


def _visible(rt: Routine, side: int) -> list[Argument]:
    """The arguments a Pythonic caller (side AKB_USER_ARG) or implementation
    (AKB_SERVER_ARG) sees, in order: the hidden counts, dispositions and
    dealloc flags folded into their arrays and ports."""
    return [a for a in rt.args if ak_check(a.kind, side) and ak_ident(a.kind) not in _HIDDEN
            and ak_ident(a.kind) != AKE_REPLY_PORT and not a.name.startswith("dummy ")]


def _is_in(arg: Argument) -> bool:
    return ak_check(arg.kind, AKB_SEND) and ak_ident(arg.kind) not in _TRAILER_NEEDS


def _is_out(arg: Argument) -> bool:
    return ak_check(arg.kind, AKB_RETURN)


# -- the client -------------------------------------------------------------------------------

class RoutineCodec:
    """A routine's request and reply."""

    def __init__(self, rt: Routine) -> None:
        self.rt = rt
        self.req = Direction(rt, rt.request, True)
        self.rep = Direction(rt, rt.reply, False)
        self.user_trailer = _trailer_need(rt, AKB_USER_ARG)
        self.server_trailer = _trailer_need(rt, AKB_SERVER_ARG)
        self.request_disp = (rt.request_port.itype.in_name if rt.request_port is not None
                             and rt.request_port.type is not None else M.MACH_MSG_TYPE_COPY_SEND)
        self.user_args = _visible(rt, AKB_USER_ARG)
        self.server_args = _visible(rt, AKB_SERVER_ARG)
        self.ins = [a for a in self.user_args if a is not rt.request_port and _is_in(a)]
        self.c_args = [a for a in rt.args if ak_check(a.kind, AKB_USER_ARG) and not a.name.startswith("dummy ")
                       and ak_ident(a.kind) != AKE_REPLY_PORT]
        self.c_server_args = [a for a in rt.args if ak_check(a.kind, AKB_SERVER_ARG)
                              and not a.name.startswith("dummy ") and ak_ident(a.kind) != AKE_REPLY_PORT]
        self.outs = [a for a in self.user_args if _is_out(a)]
        # the fast path: both messages plain scalars, no trailer, a reply
        self.plain = (not rt.simple and self.req.fast is not None and self.rep.fast is not None
                      and not self.user_trailer and not self.server_trailer and "NDR" in
                      [f.name for f in rt.request.fields] and "RetCode" in [f.name for f in rt.reply.fields])
        ins = [a.name for a in self.ins]
        outs = [a.name for a in self.outs]
        if self.plain and sorted(self.req.fast_names) == sorted(ins) and sorted(self.rep.fast_names) == sorted(outs):
            self.req_order = [ins.index(n) for n in self.req.fast_names]
            self.rep_order = [self.rep.fast_names.index(n) for n in outs]
        else:
            self.plain = False
        self.bits = M.MACH_MSGH_BITS(self.request_disp, TYPE_MAKE_SEND_ONCE)
        self.c_plain_ins = [(n, ak_check(self.req.args[n].kind, AKB_RETURN)) for n in self.req.fast_names]
        # the server's order: the implementation's in arguments, from the request's fields,
        # and the reply's fields, from the out values it returns
        s_ins = [a.name for a in self.server_args if a is not rt.request_port and _is_in(a)]
        s_outs = [a.name for a in self.server_args if _is_out(a)]
        self.rep_names = s_outs
        if self.plain and sorted(s_ins) == sorted(self.req.fast_names) and sorted(s_outs) == sorted(
                self.rep.fast_names) and len(self.server_args) == 1 + len(s_ins) + len(s_outs) - len(
                set(s_ins) & set(s_outs)):
            self.server_order = [7 + self.req.fast_names.index(n) for n in s_ins]   # after header and NDR
            self.server_rep_order = [s_outs.index(n) for n in self.rep.fast_names]
        else:
            self.plain = False

    def call(self, target: Any, values: dict[str, Any], timeout: int | None = None) -> tuple[int, dict[str, Any],
                                                                                           dict[str, Any]]:
        """Send the request with ``values`` to ``target`` and, for a routine,
        receive and check the reply as mig's user code does: (kr, reply
        values, trailer values). The values are the message's: descriptors
        as (address, size), ports as names."""
        rt = self.rt
        keep: list[Any] = []
        body = self.req.encode(values, keep)
        size = 24 + len(body)
        bits_complex = M.MACH_MSGH_BITS_COMPLEX if self.rt.request.complex else 0
        reply_size = rt.reply.size + (M.MAX_TRAILER_SIZE if not rt.simple else 0)
        buf = ctypes.create_string_buffer(max(size, reply_size, 36))
        reply = 0 if rt.simple else M.mig_get_reply_port()
        if not rt.simple and not reply:
            return M.KERN_RESOURCE_SHORTAGE, {}, {}
        struct.pack_into("<IIIIII", buf, 0,
                         M.MACH_MSGH_BITS(self.request_disp, 0 if rt.simple else TYPE_MAKE_SEND_ONCE) | bits_complex,
                         size, A.u32(target), reply, 0, rt.id)
        ctypes.memmove(ctypes.addressof(buf) + 24, bytes(body), len(body))
        opt = M.MACH_SEND_MSG
        if rt.simple:
            return M.mach_msg(buf, opt, size, 0, 0, 0, 0), {}, {}
        opt |= M.MACH_RCV_MSG | _trailer_option(self.user_trailer)
        tmo = 0
        if timeout is not None:
            opt |= M.MACH_SEND_TIMEOUT | M.MACH_RCV_TIMEOUT
            tmo = timeout
        kr = M.mach_msg(buf, opt, size, len(buf), reply, tmo, 0)
        if kr:
            if kr in (M.MACH_SEND_INVALID_DATA, M.MACH_SEND_INVALID_DEST, M.MACH_SEND_INVALID_HEADER):
                M.mig_put_reply_port(reply)
            else:
                M.mig_dealloc_reply_port(reply)
            return kr, {}, {}
        raw = buf.raw
        bits, rsize, _r, _l, _v, rid = struct.unpack_from("<IIIIIi", raw, 0)
        try:
            if rid != rt.reply_id:
                raise _Bad(M.MIG_SERVER_DIED if rid == M.MACH_NOTIFY_SEND_ONCE else M.MIG_REPLY_MISMATCH)
            if rt.reply.complex and not bits & M.MACH_MSGH_BITS_COMPLEX:
                # a complex reply that came back simple is an error's
                if rsize != 36:
                    raise _Bad(M.MIG_TYPE_ERROR)
                code = struct.unpack_from("<i", raw, 32)[0]
                raise _Bad(code or M.MIG_TYPE_ERROR)
            if not rt.reply.complex and not bits & M.MACH_MSGH_BITS_COMPLEX and rsize == 36 and rt.reply.size != 36:
                code = struct.unpack_from("<i", raw, 32)[0]
                raise _Bad(code or M.MIG_TYPE_ERROR)
            _size_ok(rt.reply, rt.reply.complex, bits, rsize, raw, M.MIG_TYPE_ERROR)
            vals = self.rep.decode(raw, rsize, M.MIG_TYPE_ERROR)
            if vals.get("RetCode", 0):
                raise _Bad(vals["RetCode"])
            trailer = _trailer_values(rt, AKB_USER_ARG, raw, rsize)
        except _Bad as e:
            M.mach_msg_destroy(buf)
            return e.kr, {}, {}
        return 0, vals, trailer

    def call_c(self, cargs: Sequence[Any]) -> int:
        """The C-layer call: ``cargs`` are mig's user arguments in order
        (the request port, in values, counts and dispositions by value; out
        arguments and out counts by reference, byref or pointer). The
        kern_return_t."""
        c_args = self.c_args
        if len(cargs) != len(c_args):
            raise TypeError(f"{self.rt.user_name}() takes {len(c_args)} arguments "
                            f"({', '.join(a.name for a in c_args)}), not {len(cargs)}")
        given = {a.name: v for a, v in zip(c_args, cargs)}
        if self.plain:
            return self._call_c_plain(given)
        target = given.get(self.rt.request_port.name if self.rt.request_port is not None else "", 0)
        values: dict[str, Any] = {}
        keep: list[Any] = []
        for f, arg in self.req.fields:
            if arg is None or f.kind in ("header", "body", "ndr", "retcode", "pad", "offset"):
                continue
            it = arg.itype
            v: Any = given.get(arg.name)
            if f.kind == "count":
                if arg.name in given:
                    values[arg.name] = A.u32(_deref(v) if ak_check(arg.kind, AKB_RETURN) else v)
                continue
            if f.kind == "descriptor":
                if arg.poly is not None:
                    values[arg.poly.name] = A.u32(given.get(arg.poly.name, it.in_name))
                if arg.kpd_type == PORT_DESCRIPTOR:
                    if it.multiple_kpd:
                        n = A.u32(given.get(arg.count.name, it.kpd_number)) if arg.count is not None else it.kpd_number
                        addr = A.address_of(v)[0]
                        values[arg.name] = list((ctypes.c_uint32 * n).from_address(addr)) if n else []
                        if arg.count is not None:
                            values[arg.count.name] = n
                    else:
                        values[arg.name] = A.u32(v)
                    continue
                if it.var_array and arg.count is not None:
                    n = A.u32(given.get(arg.count.name, 0))
                else:
                    n = it.number if arg.kpd_type == OOL_PORTS_DESCRIPTOR else (it.number * it.size + 7) // 8
                    n = n // (_unit(it) if arg.kpd_type == OOL_DESCRIPTOR and it.var_array else 1)
                addr = A.val(v) if isinstance(v, (int, ctypes.c_void_p)) or v is None else A.address_of(v)[0]
                nbytes = n * _unit(it) if arg.kpd_type == OOL_DESCRIPTOR and it.var_array else n
                values[arg.name] = (addr if n else 0, nbytes)
                continue
            if f.kind == "variable":
                assert arg.count is not None
                if it.string:
                    raw = _c_string(v)[:_max_count(it) - 1] + b"\0"
                    values[arg.name] = raw
                    values[arg.count.name] = len(raw)
                    continue
                n = A.u32(given.get(arg.count.name, 0))
                if n > _max_count(it):
                    return M.MIG_ARRAY_TOO_LARGE
                if isinstance(v, (bytes, bytearray, list, tuple)):
                    raw = _to_bytes(v, _unit(it), arg.name)[:n * _unit(it)]
                else:
                    raw = ctypes.string_at(A.address_of(v)[0], n * _unit(it)) if n else b""
                values[arg.name] = raw
                values[arg.count.name] = n
                continue
            src = _deref(v) if ak_check(arg.kind, AKB_RETURN) else v
            if it.string:
                raw = _c_string(src)[:f.size - 1]
            else:
                raw = _to_bytes(src, _elem_bytes(it), arg.name)
            values[arg.name] = raw[:f.size] + bytes(max(f.size - len(raw), 0))
        kr, vals, trailer = self.call(target, values)
        if kr:
            return kr
        for f, arg in self.rep.fields:
            if arg is None or arg.name not in given or f.kind in ("header", "body", "ndr", "retcode", "pad"):
                continue
            ref = given[arg.name]
            v = vals[arg.name] if arg.name in vals else 0
            it = arg.itype
            if f.kind == "count":
                A.set_out(ref, v or 0)
            elif f.kind == "descriptor":
                if arg.kpd_type == PORT_DESCRIPTOR:
                    if it.multiple_kpd:
                        names = v or []
                        ctypes.memmove(A.address_of(ref, True)[0], (ctypes.c_uint32 * max(len(names), 1))(*names),
                                       4 * len(names))
                    else:
                        A.set_out(ref, v)
                else:
                    A.store(A.out_address(ref), v[0])
                    if arg.count is not None and arg.count.name in given:
                        n = v[1] // _unit(it) if arg.kpd_type == OOL_DESCRIPTOR else v[1]
                        A.set_out(given[arg.count.name], n)
                if arg.poly is not None and arg.poly.name in given:
                    A.set_out(given[arg.poly.name], vals.get(arg.poly.name, 0))
            elif f.kind == "variable":
                dst, room = A.address_of(ref, True)
                raw = v or b""
                n = len(raw) if room is None else min(len(raw), room)
                ctypes.memmove(dst, raw, n)
            else:
                if it.number == 1 and not it.string and _elem_bytes(it) in (1, 2, 4, 8):
                    A.set_out(ref, int.from_bytes(v, "little", signed=_signed(it)))
                else:
                    dst, room = A.address_of(ref, True)
                    n = len(v) if room is None else min(len(v), room)
                    ctypes.memmove(dst, v, n)
        for name, tok in trailer.items():
            if name in given and given[name] is not None:
                raw = struct.pack(f"<{len(tok)}I", *tok) if isinstance(tok, tuple) else struct.pack("<Q", tok)
                dst, room = A.address_of(given[name], True)
                ctypes.memmove(dst, raw, len(raw) if room is None else min(len(raw), room))
        return 0

    def call_python(self, target: Any, args: Sequence[Any], timeout: int | None = None) -> Any:
        """The Pythonic call: ``args`` are the visible in arguments after the
        request port; the out arguments come back (one value, a tuple, or
        None). Raises MachError."""
        ins = self.ins
        if self.plain and len(args) == len(ins):
            try:
                return self._call_plain(target, args, timeout)
            except struct.error:
                pass  # a value to wrap as C converts it: the general path does
        if len(args) != len(ins):
            raise TypeError(f"{self.rt.name}() takes {len(ins)} arguments after the port "
                            f"({', '.join(a.name for a in ins)}), not {len(args)}")
        keep: list[Any] = []
        values = _in_values(self.rt, self.req, {a.name: v for a, v in zip(ins, args)}, keep)
        kr, vals, trailer = self.call(target, values, timeout)
        if kr:
            raise M.MachError(kr, f"{self.rt.name}")
        py = _py_values(self.rep, vals, True)
        py.update(trailer)
        outs = [py.get(a.name) for a in self.user_args if _is_out(a) or
                (ak_ident(a.kind) in _TRAILER_NEEDS and a.name in py)]
        if not outs:
            return None
        return outs[0] if len(outs) == 1 else tuple(outs)


    def _call_c_plain(self, given: dict[str, Any]) -> int:
        """call_c for a routine of scalars."""
        rt = self.rt
        req, rep = self.req.fast, self.rep.fast
        assert req is not None and rep is not None and rt.request_port is not None
        vals = [_deref(given[n]) if inout else A.val(given[n]) for n, inout in self.c_plain_ins]
        reply = M.mig_get_reply_port()
        if not reply:
            return M.KERN_RESOURCE_SHORTAGE
        buf = ctypes.create_string_buffer(rep.size + M.MAX_TRAILER_SIZE)
        try:
            req.pack_into(buf, 0, self.bits, req.size, A.u32(given[rt.request_port.name]), reply, 0, rt.id, NDR, *vals)
        except struct.error:
            # a value to wrap as C converts it
            vals = [int.from_bytes(_to_bytes(v, f.size, n), "little", signed=_signed(self.req.args[n].itype))
                    for v, n, f in zip(vals, self.req.fast_names, [f for f, a in self.req.fields if f.kind == "data"])]
            req.pack_into(buf, 0, self.bits, req.size, A.u32(given[rt.request_port.name]), reply, 0, rt.id, NDR, *vals)
        kr = M.mach_msg(buf, M.MACH_SEND_MSG | M.MACH_RCV_MSG, req.size, len(buf), reply, 0, 0)
        if kr:
            if kr in (M.MACH_SEND_INVALID_DATA, M.MACH_SEND_INVALID_DEST, M.MACH_SEND_INVALID_HEADER):
                M.mig_put_reply_port(reply)
            else:
                M.mig_dealloc_reply_port(reply)
            return int(kr)
        bits, size, _r, _l, _v, rid = struct.unpack_from("<IIIIIi", buf, 0)
        if rid == rt.reply_id and not bits & M.MACH_MSGH_BITS_COMPLEX and size == rep.size:
            got = rep.unpack_from(buf, 0)
            if got[7]:
                return int(got[7])
            for n, v in zip(self.rep.fast_names, got[8:]):
                A.set_out(given[n], v)
            return 0
        if rid == rt.reply_id and not bits & M.MACH_MSGH_BITS_COMPLEX and size == 36:
            return struct.unpack_from("<i", buf, 32)[0] or M.MIG_TYPE_ERROR
        M.mach_msg_destroy(buf)
        if rid != rt.reply_id:
            return M.MIG_SERVER_DIED if rid == M.MACH_NOTIFY_SEND_ONCE else M.MIG_REPLY_MISMATCH
        return M.MIG_TYPE_ERROR

    def _call_plain(self, target: Any, args: Sequence[Any], timeout: int | None) -> Any:
        """call_python for a routine of scalars: one struct for each message."""
        rt = self.rt
        req, rep = self.req.fast, self.rep.fast
        assert req is not None and rep is not None
        reply = M.mig_get_reply_port()
        if not reply:
            raise M.MachError(M.KERN_RESOURCE_SHORTAGE, rt.name)
        buf = ctypes.create_string_buffer(rep.size + M.MAX_TRAILER_SIZE)
        vals = [A.val(args[i]) for i in self.req_order]
        req.pack_into(buf, 0, self.bits, req.size, target if type(target) is int else A.u32(target), reply, 0,
                      rt.id, NDR, *vals)
        opt = M.MACH_SEND_MSG | M.MACH_RCV_MSG
        tmo = 0
        if timeout is not None:
            opt |= M.MACH_SEND_TIMEOUT | M.MACH_RCV_TIMEOUT
            tmo = timeout
        kr = M.mach_msg(buf, opt, req.size, len(buf), reply, tmo, 0)
        if kr:
            if kr in (M.MACH_SEND_INVALID_DATA, M.MACH_SEND_INVALID_DEST, M.MACH_SEND_INVALID_HEADER):
                M.mig_put_reply_port(reply)
            else:
                M.mig_dealloc_reply_port(reply)
            raise M.MachError(kr, rt.name)
        bits, size, _r, _l, _v, rid = struct.unpack_from("<IIIIIi", buf, 0)
        if rid == rt.reply_id and not bits & M.MACH_MSGH_BITS_COMPLEX and size == rep.size:
            got = rep.unpack_from(buf, 0)
            code = got[7]
            if code:
                raise M.MachError(code, rt.name)
            outs = got[8:]
            if len(outs) == 1:
                return outs[0]
            return tuple(outs[i] for i in self.rep_order) if outs else None
        if rid == rt.reply_id and not bits & M.MACH_MSGH_BITS_COMPLEX and size == 36:
            code = struct.unpack_from("<i", buf, 32)[0]
            raise M.MachError(code or M.MIG_TYPE_ERROR, rt.name)
        M.mach_msg_destroy(buf)
        if rid != rt.reply_id:
            raise M.MachError(M.MIG_SERVER_DIED if rid == M.MACH_NOTIFY_SEND_ONCE else M.MIG_REPLY_MISMATCH, rt.name)
        raise M.MachError(M.MIG_TYPE_ERROR, rt.name)


# -- the server -------------------------------------------------------------------------------

def _reply_header(in_bits: int, in_reply: int, in_id: int) -> bytes:
    rid = (in_id + 100 + (1 << 31)) % (1 << 32) - (1 << 31)     # C's int arithmetic wraps
    return struct.pack("<IIIIIi", M.MACH_MSGH_BITS(M.MACH_MSGH_BITS_REMOTE(in_bits), 0), 36, in_reply, 0, 0, rid)


class Server:
    """A subsystem's server for an implementation ``impl``: an object whose
    methods are named as the routines (with the subsystem's ServerPrefix)
    and take the request port's name and the routine's in arguments (the
    trailer tokens, MsgSeqno and the audit token among them, where the
    .defs puts them), and return the out arguments (one value, a tuple, or
    None); a MachError they raise is the routine's return code.

    ``demux(InHeadP, OutHeadP)`` is ``<subsystem>_server``: it checks the
    request as mig's server code does and writes the reply (a
    mig_reply_error_t for an error or a bad id) into OutHeadP's buffer;
    True when the id is one of the subsystem's."""

    def __init__(self, sub: Subsystem, impl: object, c_layer: bool = False, kernel: bool = False) -> None:
        self.sub = sub
        self.impl = impl
        self.c_layer = c_layer or kernel
        self.kernel = kernel  # the implementation gives its out-of-line memory away (kobject.py)
        self.codecs = {rt.id: RoutineCodec(rt) for rt in sub.routines}
        self.max_request = max([rt.request.size for rt in sub.routines] + [36])
        self.max_reply = max([rt.reply.size for rt in sub.routines] + [36])
        self.max_size = max(self.max_request, self.max_reply)    # mach_msg_server's max_size
        self.trailer = max([c.server_trailer for c in self.codecs.values()] + [0])
        self.rcv_options = _trailer_option(self.trailer) if self.trailer else 0

    def server_routine(self, InHeadP: Any) -> Callable[[Any, Any], None] | None:
        """``<subsystem>_server_routine``: the routine that handles the
        request's id, or None."""
        hdr = M.mach_msg_header_t.from_address(A.address_of(InHeadP)[0])
        codec = self.codecs.get(hdr.msgh_id)
        if codec is None:
            return None
        return lambda i, o: self._run(codec, i, o)

    def demux(self, InHeadP: Any, OutHeadP: Any) -> bool:
        """``<subsystem>_server``: handle the request; False for an id that is not the subsystem's."""
        in_addr, in_room = A.address_of(InHeadP)
        out_addr, out_room = A.address_of(OutHeadP, True)
        if out_room is not None and out_room < 36:
            raise ValueError("the reply buffer holds less than a mig_reply_error_t")
        if in_room is not None and in_room < 24:
            raise ValueError("the request buffer holds less than a message header")
        hdr = M.mach_msg_header_t.from_address(in_addr)
        codec = self.codecs.get(hdr.msgh_id)
        if codec is None:
            ctypes.memmove(out_addr, _reply_header(hdr.msgh_bits, hdr.msgh_remote_port, hdr.msgh_id), 24)
            ctypes.memmove(out_addr + 24, NDR, 8)
            ctypes.c_int32.from_address(out_addr + 32).value = M.MIG_BAD_ID
            return False
        self._run_at(codec, hdr, in_addr, in_room, out_addr, out_room)
        return True

    def _run(self, codec: RoutineCodec, InHeadP: Any, OutHeadP: Any) -> None:
        in_addr, in_room = A.address_of(InHeadP)
        out_addr, out_room = A.address_of(OutHeadP, True)
        self._run_at(codec, M.mach_msg_header_t.from_address(in_addr), in_addr, in_room, out_addr, out_room)

    def _run_at(self, codec: RoutineCodec, hdr: Any, in_addr: int, in_room: int | None, out_addr: int,
                out_room: int | None) -> None:
        size = hdr.msgh_size
        avail = size + M.MAX_TRAILER_SIZE if in_room is None else in_room
        raw = ctypes.string_at(in_addr, min(avail, size + M.MAX_TRAILER_SIZE + 4))
        rt = codec.rt
        ctypes.memmove(out_addr, _reply_header(hdr.msgh_bits, hdr.msgh_remote_port, hdr.msgh_id), 24)
        ctypes.memmove(out_addr + 24, NDR, 8)
        code = ctypes.c_int32.from_address(out_addr + 32)
        if codec.plain and not self.c_layer and (out_room is None or out_room >= rt.reply.size):
            self._run_plain(codec, hdr, raw, out_addr, code)
            return
        try:
            _size_ok(rt.request, rt.request.complex, hdr.msgh_bits, size, raw, M.MIG_BAD_ARGUMENTS)
            vals = codec.req.decode(raw, size, M.MIG_BAD_ARGUMENTS)
            trailer = _trailer_values(rt, AKB_SERVER_ARG, raw, size)
        except _Bad as e:
            code.value = e.kr
            return
        except struct.error:  # a buffer shorter than its msgh_size says
            code.value = M.MIG_BAD_ARGUMENTS
            return
        fn = getattr(self.impl, rt.server_name, None) or getattr(self.impl, rt.name, None)
        if fn is None:
            code.value = M.MIG_BAD_ID
            return
        outs = [a for a in codec.server_args if _is_out(a)]
        try:
            if self.c_layer:
                kr, named = _c_invoke(codec, fn, hdr.msgh_local_port, vals, trailer, self.kernel)
                if kr:
                    # a failed routine consumed nothing: mach_msg_server destroys the request
                    code.value = kr
                    return
            else:
                py = _py_values(codec.req, vals, False)
                py.update(trailer)
                call_args = []
                for a in codec.server_args:
                    if a is rt.request_port:
                        call_args.append(hdr.msgh_local_port)
                    elif _is_in(a) or ak_ident(a.kind) in _TRAILER_NEEDS:
                        call_args.append(py.get(a.name))
                result = fn(*call_args)
                results = ([] if result is None else list(result) if isinstance(result, tuple) else [result]) \
                    if len(outs) != 1 else [result]
                if len(results) != len(outs) and not rt.simple:
                    raise TypeError(f"{rt.server_name} returned {len(results)} values for {len(outs)} out arguments")
                named = {a.name: v for a, v in zip(outs, results)}
        except M.MachError as e:
            code.value = e.kr
            return
        except Exception:  # noqa: BLE001 - the implementation's bug: printed, the routine fails
            traceback.print_exc()
            code.value = M.KERN_FAILURE
            return
        # the request's rights are the implementation's now; the Pythonic
        # layer copied its regions, the C layer's implementation owns them
        if not self.c_layer:
            _release_regions(codec.req, vals)
        hdr.msgh_bits &= ~M.MACH_MSGH_BITS_COMPLEX
        if rt.simple:
            code.value = M.MIG_NO_REPLY
            return
        keep: list[Any] = []
        try:
            out_vals = _in_values(rt, codec.rep, named, keep)
            body = codec.rep.encode(out_vals, keep)
        except (TypeError, ValueError, OverflowError, struct.error):
            traceback.print_exc()
            code.value = M.KERN_FAILURE
            return
        total = 24 + len(body)
        if out_room is not None and total > out_room:
            code.value = M.MIG_ARRAY_TOO_LARGE
            return
        ctypes.memmove(out_addr + 24, bytes(body), len(body))
        oh = M.mach_msg_header_t.from_address(out_addr)
        oh.msgh_size = total
        if rt.reply.complex:
            oh.msgh_bits |= M.MACH_MSGH_BITS_COMPLEX
        self._keep = keep      # the reply's out-of-line memory lives until the next request


    def _run_plain(self, codec: RoutineCodec, hdr: Any, raw: bytes, out_addr: int, code: Any) -> None:
        """_run for a routine of scalars: one struct for each message."""
        rt = codec.rt
        req, rep = codec.req.fast, codec.rep.fast
        assert req is not None and rep is not None
        if hdr.msgh_bits & M.MACH_MSGH_BITS_COMPLEX or hdr.msgh_size != req.size or len(raw) < req.size:
            code.value = M.MIG_BAD_ARGUMENTS
            return
        got = req.unpack_from(raw, 0)
        fn = getattr(self.impl, rt.server_name, None) or getattr(self.impl, rt.name, None)
        if fn is None:
            code.value = M.MIG_BAD_ID
            return
        try:
            result = fn(hdr.msgh_local_port, *[got[i] for i in codec.server_order])
        except M.MachError as e:
            code.value = e.kr
            return
        except Exception:  # noqa: BLE001 - the implementation's bug: printed, the routine fails
            traceback.print_exc()
            code.value = M.KERN_FAILURE
            return
        n = len(codec.rep_names)
        results = [result] if n == 1 else [] if result is None else list(result) if isinstance(result, tuple) \
            else [result]
        try:
            if len(results) != n:
                raise TypeError(f"{rt.server_name} returned {len(results)} values for {n} out arguments")
            b = bytearray(rep.size)
            rep.pack_into(b, 0, 0, 0, 0, 0, 0, 0, NDR, 0, *[A.val(results[i]) for i in codec.server_rep_order])
        except (TypeError, ValueError, OverflowError, struct.error):
            traceback.print_exc()
            code.value = M.KERN_FAILURE
            return
        ctypes.memmove(out_addr + 36, bytes(b[36:]), rep.size - 36)
        ctypes.c_uint32.from_address(out_addr + 4).value = rep.size


def _c_scalar_type(it: IpcType) -> Any:
    return {(1, True): ctypes.c_int8, (1, False): ctypes.c_uint8, (2, True): ctypes.c_int16,
            (2, False): ctypes.c_uint16, (4, True): ctypes.c_int32, (4, False): ctypes.c_uint32,
            (8, True): ctypes.c_int64, (8, False): ctypes.c_uint64}.get((_elem_bytes(it), _signed(it)))


def _c_invoke(codec: RoutineCodec, fn: Callable[..., Any], local: int, vals: dict[str, Any],
              trailer: dict[str, Any], kernel: bool = False) -> tuple[int, dict[str, Any]]:
    """Call a C-layer implementation with mig's server signature: in
    values by value (arrays as ctypes arrays, out-of-line data and port
    arrays as their address, ports as names, counts and dispositions as
    arguments of their own), out arguments through references it fills;
    (its kern_return_t, the out values as the Pythonic layer gives them).
    With ``kernel`` the out-of-line memory it returns is released once
    read, as the kernel gives its copy away with the reply."""
    rt = codec.rt
    args: list[Any] = []
    refs: dict[str, Any] = {}
    fields = {f.arg: f for f, _ in codec.req.fields + codec.rep.fields if f.arg}
    for a in codec.c_server_args:
        ident = ak_ident(a.kind)
        it = a.itype
        f = fields.get(a.name)
        if a is rt.request_port:
            args.append(local)
        elif ident in _TRAILER_NEEDS:
            args.append(trailer.get(a.name))
        elif not _is_out(a) and (ident != AKE_COUNT or not _is_out(a.parent or a)):
            v: Any = vals.get(a.name)
            if f is not None and f.kind == "descriptor" and a.kpd_type == PORT_DESCRIPTOR and it.multiple_kpd:
                v = (ctypes.c_uint32 * max(len(v), 1))(*v)
            elif f is not None and f.kind == "descriptor" and a.kpd_type != PORT_DESCRIPTOR:
                v = v[0]
            elif f is not None and f.kind == "variable":
                # an array of its element's C type, as mig's server passes it
                et = _c_scalar_type(it.element) if it.element is not None and not it.string else None
                if et is None or ctypes.sizeof(et) == 1 or len(v) % ctypes.sizeof(et):
                    et = ctypes.c_char  # bytes and strings: a char array
                v = (et * max(len(v) // ctypes.sizeof(et), 1)).from_buffer_copy(
                    v + bytes(max(ctypes.sizeof(et) - len(v), 0)))
            elif f is not None and f.kind == "data":
                v = _from_fixed(it, v) if it.number == 1 and not it.string else (
                    ctypes.c_char * len(v)).from_buffer_copy(v)
            args.append(v)
        else:
            kind = f.kind if f is not None else ("count" if ident in (AKE_COUNT, AKE_POLY) else "data")
            init = vals.get(a.name)
            ref: Any
            if ident == AKE_POLY or kind == "count" or (kind == "descriptor" and a.kpd_type == PORT_DESCRIPTOR
                                                        and not it.multiple_kpd):
                room = _max_count(a.parent.itype) if ident == AKE_COUNT and a.parent is not None and \
                    a.parent.itype.in_line else 0
                ref = ctypes.c_uint32(room)
                args.append(ctypes.byref(ref))
            elif kind == "descriptor" and a.kpd_type == PORT_DESCRIPTOR:
                ref = (ctypes.c_uint32 * it.kpd_number)()
                args.append(ref)
            elif kind == "descriptor":
                ref = ctypes.c_void_p()
                args.append(ctypes.byref(ref))
            elif kind == "variable" or not (it.number == 1 and not it.string and _c_scalar_type(it) is not None):
                size = f.size if f is not None else 0
                ref = (ctypes.c_char * max(size, 1))()
                if isinstance(init, bytes):
                    ctypes.memmove(ref, init, min(len(init), size))
                args.append(ref)
            else:
                ref = _c_scalar_type(it)(_from_fixed(it, init) if isinstance(init, bytes) else 0)
                args.append(ctypes.byref(ref))
            refs[a.name] = ref
    kr = fn(*args)
    if kr:
        return int(kr), {}
    named: dict[str, Any] = {}
    for a in codec.server_args:
        if not _is_out(a):
            continue
        it = a.itype
        out_ref: Any = refs.get(a.name)
        count = refs[a.count.name].value if a.count is not None and a.count.name in refs else None
        poly = refs[a.poly.name].value if a.poly is not None and a.poly.name in refs else None
        ref = out_ref
        if a.kpd_type == PORT_DESCRIPTOR:
            v = list(ref)[:count if count is not None else it.kpd_number] if it.multiple_kpd else ref.value
        elif a.kpd_type == OOL_DESCRIPTOR:
            n = (count or 0) * _unit(it) if it.var_array else (it.number * it.size + 7) // 8
            v = ctypes.string_at(ref.value, n) if ref.value and n else b""
            if kernel and ref.value and n:
                M.mach_vm_deallocate(M.mach_task_self(), ref.value, n)
        elif a.kpd_type == OOL_PORTS_DESCRIPTOR:
            n = count or 0
            v = list((ctypes.c_uint32 * n).from_address(ref.value)) if ref.value and n else []
            if kernel and ref.value and n:
                M.mach_vm_deallocate(M.mach_task_self(), ref.value, 4 * n)
        elif isinstance(ref, ctypes.Array):
            raw = bytes(memoryview(ref).cast("B"))
            if it.string:
                v = raw.split(b"\0", 1)[0]
            elif it.var_array:
                v = raw[:(count or 0) * _unit(it)]
            else:
                v = raw
        else:
            v = ref.value
        named[a.name] = (v, poly) if poly is not None else v
    return 0, named


class Serving:
    """A server answering requests on a port or port set in a thread of
    its own, until stop()."""

    def __init__(self, server: Server, port: int, poll_ms: int = 100) -> None:
        self.server = server
        self.port = port
        self.poll_ms = poll_ms
        self.result = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"mig {server.sub.name}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        opt = self.server.rcv_options | M.MACH_RCV_TIMEOUT
        while not self._stop.is_set():
            kr = serve_once(self.server, self.port, opt, self.poll_ms)
            if kr in (0, M.MACH_RCV_TIMED_OUT, M.MACH_RCV_TOO_LARGE) or kr & ~0xFF == 0x10000000:  # MACH_SEND_*
                continue  # (a reply that could not be sent was released: its client hears of it)
            self.result = kr
            return

    def stop(self, timeout: float = 10.0) -> None:
        """Stop answering (within the poll interval) and join the thread."""
        self._stop.set()
        self.thread.join(timeout)

    def __enter__(self) -> Serving:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_once(server: Server, port: int, options: int = 0, timeout_ms: int = 0) -> int:
    """Receive one request on ``port`` and answer it, as
    mach_msg_server_once does (with a receive timeout when ``options``
    has MACH_RCV_TIMEOUT)."""
    size = server.max_request + M.MAX_TRAILER_SIZE
    request = ctypes.create_string_buffer(size)
    reply = ctypes.create_string_buffer(max(server.max_reply, 36) + M.MAX_TRAILER_SIZE)
    opt = options | server.rcv_options
    kr = M.mach_msg(request, M.MACH_RCV_MSG | opt, 0, size, port, timeout_ms, 0)
    if kr:
        return int(kr)
    return _serve_received(server.demux, request, reply, opt & ~(M.MACH_RCV_TIMEOUT | M.MACH_RCV_LARGE))


class _Namespace:
    """Attributes made at run time (the C-layer stubs)."""

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


class Interface:
    """A subsystem's client and server, made without writing files.

    ``iface.<routine>(port, *ins)``: the Pythonic client (the outs, one
    value or a tuple; MachError). ``iface.c.<user_prefix><routine>(port,
    in..., byref(out)...)``: the C-layer stub, mig's signature, returning
    kern_return_t. ``iface.server(impl)``: a Server (``demux`` is
    ``<subsystem>_server``); ``iface.serve(impl, port)``: a Serving
    thread, until its stop()."""

    def __init__(self, sub: Subsystem) -> None:
        self.subsystem = sub
        self.codecs = {rt.name: RoutineCodec(rt) for rt in sub.routines}
        self.c = _Namespace()
        for rt in sub.routines:
            codec = self.codecs[rt.name]
            setattr(self.c, rt.user_name, _c_stub(codec))
            setattr(self, rt.name, _py_stub(codec))

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"{self.subsystem.name} has no routine {name!r}")

    def server(self, impl: object, c_layer: bool = False) -> Server:
        """The server of ``impl`` (see Server); ``c_layer``: its methods
        have mig's server signature (see _c_invoke)."""
        return Server(self.subsystem, impl, c_layer)

    def serve(self, impl: object, port: Any, poll_ms: int = 100) -> Serving:
        """Answer requests on ``port`` (a receive right or a port set) with
        ``impl`` in a thread, until stop()."""
        return Serving(self.server(impl), A.u32(port), poll_ms)


def _c_stub(codec: RoutineCodec) -> Callable[..., int]:
    def stub(*args: Any) -> int:
        return codec.call_c(args)
    stub.__name__ = codec.rt.user_name
    stub.__doc__ = (f"kr = {codec.rt.user_name}("
                    + ", ".join(a.name for a in codec.rt.args if ak_check(a.kind, AKB_USER_ARG)
                                and not a.name.startswith("dummy ") and ak_ident(a.kind) != AKE_REPLY_PORT) + ")")
    return stub


def _py_stub(codec: RoutineCodec) -> Callable[..., Any]:
    def stub(port: Any, *args: Any, timeout: int | None = None) -> Any:
        return codec.call_python(port, args, timeout)
    stub.__name__ = codec.rt.name
    stub.__doc__ = (f"{codec.rt.name}(" + ", ".join(a.name for a in codec.user_args if _is_in(a))
                    + ") -> (" + ", ".join(a.name for a in codec.user_args if _is_out(a)) + ")")
    return stub
