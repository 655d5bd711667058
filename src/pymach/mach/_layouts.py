"""ctypes structs for the messages of a ``pymach mig -static`` module: a
generated Message's fields (name, offset, size, kind, C type or struct
format) as a ``_fields_`` list of <mach/message.h>'s types, so that the
structs of the C layer are the generated layouts (checked by
``check_struct``)."""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

from .message import (mach_msg_body_t, mach_msg_header_t, mach_msg_ool_descriptor_t, mach_msg_ool_ports_descriptor_t,
                      mach_msg_port_descriptor_t)
from .types import kern_return_t, mach_msg_type_number_t


class NDR_record_t(ctypes.Structure):
    """<mach/ndr.h>: the data representation of a MIG message's plain data."""

    _fields_ = [(n, ctypes.c_ubyte) for n in ("mig_vers", "if_vers", "reserved1", "mig_encoding", "int_rep",
                                              "char_rep", "float_rep", "reserved2")]


_C_TYPES: dict[str, Any] = {
    "mach_msg_header_t": mach_msg_header_t, "mach_msg_body_t": mach_msg_body_t, "NDR_record_t": NDR_record_t,
    "kern_return_t": kern_return_t, "mach_msg_type_number_t": mach_msg_type_number_t,
    "mach_msg_port_descriptor_t": mach_msg_port_descriptor_t, "mach_msg_ool_descriptor_t": mach_msg_ool_descriptor_t,
    "mach_msg_ool_ports_descriptor_t": mach_msg_ool_ports_descriptor_t,
    "b": ctypes.c_int8, "B": ctypes.c_uint8, "h": ctypes.c_int16, "H": ctypes.c_uint16, "i": ctypes.c_int32,
    "I": ctypes.c_uint32, "q": ctypes.c_int64, "Q": ctypes.c_uint64,
}


def message_fields(msg: Any, rename: Mapping[str, str] | None = None,
                   types: Mapping[str, Any] | None = None) -> list[tuple[str, Any]]:
    """The ``_fields_`` of a struct (``_pack_ = 4``) for the generated
    Message ``msg``: each field under its mig name (or ``rename``'s), with
    its C type (or ``types``' for that mig name): a data field of bytes is
    a char array, padding a byte array, several descriptors in one field
    an array of them."""
    out: list[tuple[str, Any]] = []
    for name, _offset, size, _kind, ctype in msg.fields:
        t = (types or {}).get(name) or _C_TYPES.get(ctype)
        if t is None:
            t = (ctypes.c_char if ctype.endswith("s") else ctypes.c_uint8) * size
        elif ctypes.sizeof(t) != size:
            t = t * (size // ctypes.sizeof(t))
        out.append(((rename or {}).get(name, name), t))
    return out


def check_struct(cls: type[ctypes.Structure], msg: Any, rename: Mapping[str, str] | None = None) -> None:
    """Raise AssertionError unless ``cls`` starts with the generated
    Message ``msg``'s fields, at its offsets and sizes."""
    for name, offset, size, _kind, _ctype in msg.fields:
        f = getattr(cls, (rename or {}).get(name, name))
        if (f.offset, f.size) != (offset, size):
            raise AssertionError(f"{cls.__name__}.{name}: at {f.offset}, {f.size} bytes; "
                                 f"{msg.name} has it at {offset}, {size} bytes")
    if msg.struct is not None and ctypes.sizeof(cls) < msg.size:
        raise AssertionError(f"{cls.__name__} is {ctypes.sizeof(cls)} bytes; {msg.name} is {msg.size}")
