"""<mach/mach_port.h> and mach_msg: the port routines with C names and
kern_return_t results, over pymach.kern.ipc_right and kern.mach_msg."""

from __future__ import annotations

import ctypes
import struct
from typing import Any

from ..kern import ipc_right as R
from ..kern import kern_return as K
from ..kern import mach_msg as KM
from ..kern import message_defs as MD
from ..kern.ipc_space import MACH_PORT_TYPE_RECEIVE, MACH_PORT_TYPE_SEND
from ..kern.task import SELF
from ._args import address_of, i32, out, set_out, u32

MachError = K.MachError


def _space(task: Any):  # type: ignore[no-untyped-def]
    t = u32(task)
    if t != SELF.task_name:
        e = SELF.space.lookup(t)
        raise MachError(K.MACH_SEND_INVALID_DEST if e is None else K.KERN_INVALID_TASK, f"{t:#x}")
    return SELF.space


def mach_port_allocate(task: Any, right: Any, name: Any) -> int:
    """Allocate a receive right, port set or dead name; ``name`` is out.

    KERN_SUCCESS, KERN_INVALID_VALUE, KERN_INVALID_TASK, MACH_SEND_INVALID_DEST."""
    try:
        n = R.allocate(_space(task), u32(right))
    except MachError as e:
        return e.kr
    set_out(name, n)
    return 0


def mach_port_allocate_name(task: Any, right: Any, name: Any) -> int:
    """Allocate a right under a name the caller picks.

    KERN_SUCCESS, KERN_INVALID_VALUE, KERN_NAME_EXISTS, KERN_INVALID_TASK."""
    try:
        R.allocate_name(_space(task), u32(right), u32(name))
    except MachError as e:
        return e.kr
    return 0


def mach_port_deallocate(task: Any, name: Any) -> int:
    """Release one user reference of a send, send-once or dead-name right.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT, KERN_INVALID_TASK."""
    try:
        R.deallocate(_space(task), u32(name))
    except MachError as e:
        return e.kr
    return 0


def mach_port_destroy(task: Any, name: Any) -> int:
    """Release every right the name holds.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_TASK."""
    try:
        R.destroy(_space(task), u32(name))
    except MachError as e:
        return e.kr
    return 0


def mach_port_mod_refs(task: Any, name: Any, right: Any, delta: Any) -> int:
    """Add ``delta`` user references of ``right`` to ``name``.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT, KERN_INVALID_VALUE,
    KERN_UREFS_OVERFLOW, KERN_INVALID_TASK."""
    try:
        R.mod_refs(_space(task), u32(name), u32(right), i32(delta))
    except MachError as e:
        return e.kr
    return 0


def mach_port_get_refs(task: Any, name: Any, right: Any, refs: Any) -> int:
    """The user references of ``right`` under ``name``; ``refs`` is out.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_VALUE, KERN_INVALID_TASK."""
    try:
        n = R.get_refs(_space(task), u32(name), u32(right))
    except MachError as e:
        return e.kr
    set_out(refs, n)
    return 0


def mach_port_type(task: Any, name: Any, ptype: Any) -> int:
    """The MACH_PORT_TYPE_* bits of ``name``; ``ptype`` is out.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_TASK."""
    try:
        t = R.type_of(_space(task), u32(name))
    except MachError as e:
        return e.kr
    set_out(ptype, t)
    return 0


def mach_port_insert_right(task: Any, name: Any, poly: Any, polyPoly: Any) -> int:
    """Give ``name`` a right to the port named ``poly``. pymach supports
    inserting a send right to a port whose receive right we hold under the
    same name (MAKE_SEND), and copying a send right (COPY_SEND/MOVE_SEND
    with name == poly, which adds a reference).

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT, KERN_INVALID_VALUE,
    KERN_NAME_EXISTS, KERN_UREFS_OVERFLOW, KERN_INVALID_TASK."""
    try:
        space = _space(task)
        n, p, disp = u32(name), u32(poly), u32(polyPoly)
        with space.lock:
            e = space.lookup(p)
            if e is None:
                raise MachError(K.KERN_INVALID_NAME, f"{p:#x}")
            if n != p:
                raise MachError(K.KERN_NAME_EXISTS if space.lookup(n) else K.KERN_INVALID_VALUE,
                                "pymach inserts rights only under the port's own name")
            if disp == MD.MACH_MSG_TYPE_MAKE_SEND:
                R.insert_send_of_own_port(space, n, e)
            elif disp in (MD.MACH_MSG_TYPE_COPY_SEND, MD.MACH_MSG_TYPE_MOVE_SEND):
                if not e.type & MACH_PORT_TYPE_SEND:
                    raise MachError(K.KERN_INVALID_RIGHT, f"{p:#x} holds no send right")
                if disp == MD.MACH_MSG_TYPE_COPY_SEND:
                    R.mod_refs(space, n, 0, 1)
            elif disp == MD.MACH_MSG_TYPE_MAKE_SEND_ONCE and not e.type & MACH_PORT_TYPE_RECEIVE:
                raise MachError(K.KERN_INVALID_RIGHT, f"{p:#x} holds no receive right")
            else:
                raise MachError(K.KERN_INVALID_VALUE, f"disposition {disp}")
    except MachError as e:
        return e.kr
    return 0


def mach_port_names(task: Any, names: Any, namesCnt: Any, types: Any, typesCnt: Any) -> int:
    """Every name and its type. ``names`` and ``types`` are out-parameters
    (byref of a mach_port_array_t / mach_port_type_array_t) that receive
    arrays in new memory, to be released with vm_deallocate as in C.

    KERN_SUCCESS, KERN_INVALID_TASK."""
    try:
        ns, ts = R.names(_space(task))
    except MachError as e:
        return e.kr
    set_out(names, _ool_array(ns))
    set_out(namesCnt, len(ns))
    set_out(types, _ool_array(ts))
    set_out(typesCnt, len(ts))
    return 0


def _ool_array(values: list[int]) -> int:
    """An array of 32-bit values in fresh VM memory, as MIG returns
    out-of-line arrays: the caller releases it with vm_deallocate."""
    data = struct.pack(f"<{len(values)}I", *values)
    if not data:
        return 0
    addr = SELF.map.allocate(0, (len(data) + 0xFFF) & ~0xFFF, True, False, 20)
    SELF.map.copy_in(addr, data)
    return addr


TASK_PORT_REGISTER_MAX = 3


def mach_ports_register(target_task: Any, init_port_set: Any, init_port_setCnt: Any) -> int:
    """Register up to TASK_PORT_REGISTER_MAX send rights with the task;
    fork children inherit them (mach_ports_lookup gives them back).

    KERN_SUCCESS, KERN_INVALID_ARGUMENT (more than 3), KERN_INVALID_RIGHT
    (a name that is not a send right), KERN_INVALID_TASK."""
    try:
        space = _space(target_task)
        n = u32(init_port_setCnt)
        if n > TASK_PORT_REGISTER_MAX:
            return K.KERN_INVALID_ARGUMENT
        base = address_of(init_port_set)[0]
        wanted = [ctypes.c_uint32.from_address(base + 4 * i).value for i in range(n)] if n else []
        caps: list[object] = []
        for name in wanted:
            if name in (0, 0xFFFFFFFF):
                caps.append(None)
                continue
            e = space.lookup(name)
            if e is None or not e.type & MACH_PORT_TYPE_SEND or e.cap is None:
                for c in caps:
                    if c is not None:
                        c.close()  # type: ignore[attr-defined]
                return K.KERN_INVALID_RIGHT
            caps.append(type(e.cap)(e.cap.sock.dup()))  # type: ignore[attr-defined]
        caps += [None] * (TASK_PORT_REGISTER_MAX - len(caps))
        for old in SELF.registered:
            if old is not None:
                old.close()  # type: ignore[attr-defined]
        SELF.registered = caps
    except MachError as e:
        return e.kr
    return 0


def mach_ports_lookup(target_task: Any, init_port_set: Any, init_port_setCnt: Any) -> int:
    """The registered send rights, as an array in new memory (release it
    with vm_deallocate); each becomes a name in our space.

    KERN_SUCCESS, KERN_INVALID_TASK."""
    try:
        space = _space(target_task)
        names = []
        for cap in SELF.registered:
            if cap is None:
                names.append(0)
            else:
                names.append(R.copyout_send(space, cap.sock.dup().detach(), False))  # type: ignore[attr-defined]
    except MachError as e:
        return e.kr
    set_out(init_port_set, _ool_array(names))
    set_out(init_port_setCnt, len(names))
    return 0


def mach_msg(msg: Any, option: Any, send_size: Any, rcv_size: Any, rcv_name: Any, timeout: Any,
             notify: Any) -> int:
    """Send and/or receive a message. ``msg`` is the header that starts the
    message buffer (or byref/pointer to it, or an address).

    MACH_MSG_SUCCESS and the MACH_SEND_* / MACH_RCV_* codes."""
    return mach_msg_overwrite(msg, option, send_size, rcv_size, rcv_name, timeout, notify, None, 0)


def mach_msg_overwrite(msg: Any, option: Any, send_size: Any, rcv_size: Any, rcv_name: Any, timeout: Any,
                       notify: Any, rcv_msg: Any, rcv_limit: Any) -> int:
    """mach_msg, receiving into ``rcv_msg`` when it is given."""
    opt = i32(option) & 0xFFFFFFFF
    addr, _room = address_of(msg)
    space = SELF.space
    if opt & MD.MACH_SEND_MSG:
        size = u32(send_size)
        if size < 24 or size % 4:
            return K.MACH_SEND_MSG_TOO_SMALL
        try:
            KM.send(space, ctypes.string_at(addr, size), opt, u32(timeout))
        except MachError as e:
            return e.kr
    if opt & MD.MACH_RCV_MSG:
        raddr = address_of(rcv_msg)[0] if rcv_msg is not None else addr
        limit = u32(rcv_size)
        try:
            data = KM.receive(space, u32(rcv_name), limit, opt, u32(timeout))
        except KM.TooLarge as e:
            ctypes.c_uint32.from_address(raddr + 4).value = e.needed
            return e.kr
        except MachError as e:
            return e.kr
        ctypes.memmove(raddr, data, len(data))
    return 0


__all__ = [
    "mach_ports_register", "mach_ports_lookup", "TASK_PORT_REGISTER_MAX", "mach_port_allocate", "mach_port_allocate_name", "mach_port_deallocate",
    "mach_port_destroy", "mach_port_mod_refs", "mach_port_get_refs", "mach_port_type",
    "mach_port_insert_right", "mach_port_names", "mach_msg", "mach_msg_overwrite",
]
