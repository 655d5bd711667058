"""The pieces of MIG's runtime that hand-written stubs and servers use:
mig_reply_error_t (<mach/mig_errors.h>) and mach_msg_destroy
(<mach/message.h>), which releases every right and region a received
message holds."""

from __future__ import annotations

import ctypes
from typing import Any

from ..kern import message_defs as MD
from ..kern.ipc_space import MACH_PORT_RIGHT_RECEIVE
from ..kern.task import SELF
from ._args import address_of
from .mach_port import mach_port_deallocate, mach_port_mod_refs
from .mach_vm import mach_vm_deallocate
from .message import mach_msg_header_t
from .notify import NDR_record_t
from .types import kern_return_t



class mig_reply_error_t(ctypes.Structure):
    """The reply of a routine that failed (and of a routine whose only
    result is its return code)."""

    _pack_ = 4
    _fields_ = [("Head", mach_msg_header_t), ("NDR", NDR_record_t), ("RetCode", kern_return_t)]


def _destroy_port(name: int, disposition: int) -> None:
    if name in (0, 0xFFFFFFFF):
        return
    if disposition in (MD.MACH_MSG_TYPE_MOVE_SEND, MD.MACH_MSG_TYPE_MOVE_SEND_ONCE):
        mach_port_deallocate(SELF.task_name, name)
    elif disposition == MD.MACH_MSG_TYPE_MOVE_RECEIVE:
        mach_port_mod_refs(SELF.task_name, name, MACH_PORT_RIGHT_RECEIVE, -1)


def mach_msg_destroy(msg: Any) -> None:
    """Release what a received message holds: its reply right, the rights
    in its port and port-array descriptors, and its out-of-line regions
    (libsyscall's mach_msg_destroy, for received messages: the MAKE_*
    dispositions of an unsent message are not rights yet and are left
    alone). Descriptors are read only as far as ``msgh_size`` reaches, and
    never past the memory of the object ``msg`` lives in."""
    base, room = address_of(msg)
    if room is not None and room < ctypes.sizeof(mach_msg_header_t):
        return
    hdr = mach_msg_header_t.from_address(base)
    bits, size = hdr.msgh_bits, hdr.msgh_size
    if room is not None:
        size = min(size, room)
    _destroy_port(hdr.msgh_remote_port, MD.MACH_MSGH_BITS_REMOTE(bits))
    _destroy_port(hdr.msgh_voucher_port, MD.MACH_MSGH_BITS_VOUCHER(bits))
    if not bits & MD.MACH_MSGH_BITS_COMPLEX or size < 28:
        return
    end = base + size
    count = ctypes.c_uint32.from_address(base + 24).value
    off = base + 28
    for _ in range(count):
        if off + 12 > end:
            return
        dtype = ctypes.c_uint8.from_address(off + 11).value
        if dtype == MD.MACH_MSG_PORT_DESCRIPTOR:
            _destroy_port(ctypes.c_uint32.from_address(off).value, ctypes.c_uint8.from_address(off + 10).value)
            off += 12
            continue
        if off + 16 > end:
            return
        addr = ctypes.c_uint64.from_address(off).value
        n = ctypes.c_uint32.from_address(off + 12).value
        if dtype in (MD.MACH_MSG_OOL_DESCRIPTOR, MD.MACH_MSG_OOL_VOLATILE_DESCRIPTOR):
            if addr and n:
                mach_vm_deallocate(SELF.task_name, addr, n)
        elif dtype == MD.MACH_MSG_OOL_PORTS_DESCRIPTOR:
            disposition = ctypes.c_uint8.from_address(off + 10).value
            if addr and n:
                for i in range(n):
                    _destroy_port(ctypes.c_uint32.from_address(addr + 4 * i).value, disposition)
                mach_vm_deallocate(SELF.task_name, addr, 4 * n)
        elif dtype == MD.MACH_MSG_GUARDED_PORT_DESCRIPTOR:
            _destroy_port(ctypes.c_uint32.from_address(off + 12).value, ctypes.c_uint8.from_address(off + 10).value)
        off += 16


__all__ = ["mig_reply_error_t", "mach_msg_destroy"]
