"""Message constants of <mach/message.h>, with XNU's values, and the
MACH_MSGH_BITS* macros as functions."""

from __future__ import annotations

import struct
from typing import Final

MACH_MSG_TIMEOUT_NONE: Final = 0

MACH_MSGH_BITS_ZERO: Final = 0x00000000
MACH_MSGH_BITS_REMOTE_MASK: Final = 0x0000001F
MACH_MSGH_BITS_LOCAL_MASK: Final = 0x00001F00
MACH_MSGH_BITS_VOUCHER_MASK: Final = 0x001F0000
MACH_MSGH_BITS_PORTS_MASK: Final = (
    MACH_MSGH_BITS_REMOTE_MASK | MACH_MSGH_BITS_LOCAL_MASK | MACH_MSGH_BITS_VOUCHER_MASK)
MACH_MSGH_BITS_COMPLEX: Final = 0x80000000
MACH_MSGH_BITS_USER: Final = 0x801F1F1F
MACH_MSGH_BITS_RAISEIMP: Final = 0x20000000
MACH_MSGH_BITS_DENAP: Final = MACH_MSGH_BITS_RAISEIMP
MACH_MSGH_BITS_IMPHOLDASRT: Final = 0x10000000
MACH_MSGH_BITS_DENAPHOLDASRT: Final = MACH_MSGH_BITS_IMPHOLDASRT
MACH_MSGH_BITS_CIRCULAR: Final = 0x10000000
MACH_MSGH_BITS_USED: Final = 0xB01F1F1F


def MACH_MSGH_BITS(remote: int, local: int) -> int:
    """The legacy header bits for a remote and a local disposition."""
    return remote | (local << 8)


def MACH_MSGH_BITS_SET_PORTS(remote: int, local: int, voucher: int) -> int:
    """Header bits for the remote, local and voucher dispositions."""
    return ((remote & MACH_MSGH_BITS_REMOTE_MASK) | ((local << 8) & MACH_MSGH_BITS_LOCAL_MASK)
            | ((voucher << 16) & MACH_MSGH_BITS_VOUCHER_MASK))


def MACH_MSGH_BITS_SET(remote: int, local: int, voucher: int, other: int) -> int:
    """Header bits for the three dispositions and the other bits."""
    return MACH_MSGH_BITS_SET_PORTS(remote, local, voucher) | (other & ~MACH_MSGH_BITS_PORTS_MASK & 0xFFFFFFFF)


def MACH_MSGH_BITS_REMOTE(bits: int) -> int:
    """The remote (destination) disposition."""
    return bits & MACH_MSGH_BITS_REMOTE_MASK


def MACH_MSGH_BITS_LOCAL(bits: int) -> int:
    """The local (reply) disposition."""
    return (bits & MACH_MSGH_BITS_LOCAL_MASK) >> 8


def MACH_MSGH_BITS_VOUCHER(bits: int) -> int:
    """The voucher disposition."""
    return (bits & MACH_MSGH_BITS_VOUCHER_MASK) >> 16


def MACH_MSGH_BITS_PORTS(bits: int) -> int:
    """The three disposition fields."""
    return bits & MACH_MSGH_BITS_PORTS_MASK


def MACH_MSGH_BITS_OTHER(bits: int) -> int:
    """Everything but the disposition fields."""
    return bits & ~MACH_MSGH_BITS_PORTS_MASK & 0xFFFFFFFF


def MACH_MSGH_BITS_HAS_REMOTE(bits: int) -> bool:
    return MACH_MSGH_BITS_REMOTE(bits) != MACH_MSGH_BITS_ZERO


def MACH_MSGH_BITS_HAS_LOCAL(bits: int) -> bool:
    return MACH_MSGH_BITS_LOCAL(bits) != MACH_MSGH_BITS_ZERO


def MACH_MSGH_BITS_HAS_VOUCHER(bits: int) -> bool:
    return MACH_MSGH_BITS_VOUCHER(bits) != MACH_MSGH_BITS_ZERO


def MACH_MSGH_BITS_IS_COMPLEX(bits: int) -> bool:
    return (bits & MACH_MSGH_BITS_COMPLEX) != MACH_MSGH_BITS_ZERO


MACH_MSG_TYPE_MOVE_RECEIVE: Final = 16
MACH_MSG_TYPE_MOVE_SEND: Final = 17
MACH_MSG_TYPE_MOVE_SEND_ONCE: Final = 18
MACH_MSG_TYPE_COPY_SEND: Final = 19
MACH_MSG_TYPE_MAKE_SEND: Final = 20
MACH_MSG_TYPE_MAKE_SEND_ONCE: Final = 21
MACH_MSG_TYPE_COPY_RECEIVE: Final = 22
MACH_MSG_TYPE_DISPOSE_RECEIVE: Final = 24
MACH_MSG_TYPE_DISPOSE_SEND: Final = 25
MACH_MSG_TYPE_DISPOSE_SEND_ONCE: Final = 26
MACH_MSG_TYPE_PORT_NONE: Final = 0
MACH_MSG_TYPE_PORT_NAME: Final = 15
MACH_MSG_TYPE_PORT_RECEIVE: Final = MACH_MSG_TYPE_MOVE_RECEIVE
MACH_MSG_TYPE_PORT_SEND: Final = MACH_MSG_TYPE_MOVE_SEND
MACH_MSG_TYPE_PORT_SEND_ONCE: Final = MACH_MSG_TYPE_MOVE_SEND_ONCE
MACH_MSG_TYPE_LAST: Final = 22
MACH_MSG_TYPE_POLYMORPHIC: Final = 0xFFFFFFFF

MACH_MSG_PHYSICAL_COPY: Final = 0
MACH_MSG_VIRTUAL_COPY: Final = 1
MACH_MSG_ALLOCATE: Final = 2
MACH_MSG_OVERWRITE: Final = 3
MACH_MSG_KALLOC_COPY_T: Final = 4

MACH_MSG_PORT_DESCRIPTOR: Final = 0
MACH_MSG_OOL_DESCRIPTOR: Final = 1
MACH_MSG_OOL_PORTS_DESCRIPTOR: Final = 2
MACH_MSG_OOL_VOLATILE_DESCRIPTOR: Final = 3
MACH_MSG_GUARDED_PORT_DESCRIPTOR: Final = 4
MACH_MSG_DESCRIPTOR_MAX: Final = MACH_MSG_GUARDED_PORT_DESCRIPTOR

MACH_MSG_GUARD_FLAGS_NONE: Final = 0x0000
MACH_MSG_GUARD_FLAGS_IMMOVABLE_RECEIVE: Final = 0x0001  # move the receive right and make it immovable
MACH_MSG_GUARD_FLAGS_UNGUARDED_ON_SEND: Final = 0x0002  # check that the port is unguarded
MACH_MSG_GUARD_FLAGS_MASK: Final = 0x0003

MACH_MSG_OPTION_NONE: Final = 0x00000000
MACH_SEND_MSG: Final = 0x00000001
MACH_RCV_MSG: Final = 0x00000002
MACH_RCV_LARGE: Final = 0x00000004
MACH_RCV_LARGE_IDENTITY: Final = 0x00000008
MACH_SEND_TIMEOUT: Final = 0x00000010
MACH_SEND_OVERRIDE: Final = 0x00000020
MACH_SEND_INTERRUPT: Final = 0x00000040
MACH_SEND_NOTIFY: Final = 0x00000080
MACH_SEND_FILTER_NONFATAL: Final = 0x00010000
MACH_SEND_TRAILER: Final = 0x00020000
MACH_SEND_NOIMPORTANCE: Final = 0x00040000
MACH_SEND_SYNC_OVERRIDE: Final = 0x00100000
MACH_SEND_PROPAGATE_QOS: Final = 0x00200000
MACH_SEND_SYNC_BOOTSTRAP_CHECKIN: Final = 0x00800000
MACH_RCV_TIMEOUT: Final = 0x00000100
MACH_RCV_NOTIFY: Final = 0x00000000
MACH_RCV_INTERRUPT: Final = 0x00000400
MACH_RCV_VOUCHER: Final = 0x00000800
MACH_RCV_OVERWRITE: Final = 0x00000000
MACH_RCV_GUARDED_DESC: Final = 0x00001000
MACH_RCV_SYNC_WAIT: Final = 0x00004000
MACH_RCV_SYNC_PEEK: Final = 0x00008000
MACH_MSG_STRICT_REPLY: Final = 0x00000200

MACH_MSG_TRAILER_FORMAT_0: Final = 0
MACH_RCV_TRAILER_NULL: Final = 0
MACH_RCV_TRAILER_SEQNO: Final = 1
MACH_RCV_TRAILER_SENDER: Final = 2
MACH_RCV_TRAILER_AUDIT: Final = 3
MACH_RCV_TRAILER_CTX: Final = 4
MACH_RCV_TRAILER_AV: Final = 7
MACH_RCV_TRAILER_LABELS: Final = 8
MACH_RCV_TRAILER_MASK: Final = 0xF << 24


def MACH_RCV_TRAILER_TYPE(x: int) -> int:
    """The trailer-format bits of a receive option."""
    return (x & 0xF) << 28


def MACH_RCV_TRAILER_ELEMENTS(x: int) -> int:
    """The trailer-elements bits of a receive option."""
    return (x & 0xF) << 24


MACH_MSG_SIZE_MAX: Final = 0xFFFFFFFF
MACH_MSG_SIZE_RELIABLE: Final = 256 * 1024


# The layouts of <mach/message.h> that the kernel reads and writes.
HDR: Final = struct.Struct("<IIIIIi")  # mach_msg_header_t
PORT_DESC: Final = struct.Struct("<IIBBBB")  # mach_msg_port_descriptor_t: name, pad1, pad2, disposition, type
OOL_DESC: Final = struct.Struct("<QBBBBI")  # mach_msg_ool_descriptor_t: address, deallocate, copy, pad, type, size
GUARDED_DESC: Final = struct.Struct("<QHBBI")  # mach_msg_guarded_port_descriptor_t: context, flags, disposition, type, name
