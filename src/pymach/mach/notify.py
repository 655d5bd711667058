"""<mach/notify.h>: notification ids and message structs (pack 4)."""

from __future__ import annotations

import ctypes

from .._kern.ipc_notify import (MACH_NOTIFY_DEAD_NAME, MACH_NOTIFY_FIRST, MACH_NOTIFY_LAST,
                               MACH_NOTIFY_NO_SENDERS, MACH_NOTIFY_PORT_DELETED, MACH_NOTIFY_PORT_DESTROYED,
                               MACH_NOTIFY_SEND_ONCE, MACH_NOTIFY_SEND_POSSIBLE)
from .message import mach_msg_body_t, mach_msg_format_0_trailer_t, mach_msg_header_t, mach_msg_port_descriptor_t
from .types import mach_msg_type_number_t, mach_port_name_t


class NDR_record_t(ctypes.Structure):
    _fields_ = [(n, ctypes.c_ubyte) for n in ("mig_vers", "if_vers", "reserved1", "mig_encoding", "int_rep",
                                              "char_rep", "float_rep", "reserved2")]


class mach_port_deleted_notification_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("not_header", mach_msg_header_t), ("NDR", NDR_record_t), ("not_port", mach_port_name_t),
                ("trailer", mach_msg_format_0_trailer_t)]


class mach_send_possible_notification_t(mach_port_deleted_notification_t):
    pass


class mach_dead_name_notification_t(mach_port_deleted_notification_t):
    pass


class mach_no_senders_notification_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("not_header", mach_msg_header_t), ("NDR", NDR_record_t),
                ("not_count", mach_msg_type_number_t), ("trailer", mach_msg_format_0_trailer_t)]


class mach_send_once_notification_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("not_header", mach_msg_header_t), ("trailer", mach_msg_format_0_trailer_t)]


class mach_port_destroyed_notification_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("not_header", mach_msg_header_t), ("not_body", mach_msg_body_t),
                ("not_port", mach_msg_port_descriptor_t), ("trailer", mach_msg_format_0_trailer_t)]


__all__ = [
    "MACH_NOTIFY_FIRST", "MACH_NOTIFY_PORT_DELETED", "MACH_NOTIFY_SEND_POSSIBLE", "MACH_NOTIFY_PORT_DESTROYED",
    "MACH_NOTIFY_NO_SENDERS", "MACH_NOTIFY_SEND_ONCE", "MACH_NOTIFY_DEAD_NAME", "MACH_NOTIFY_LAST",
    "NDR_record_t", "mach_port_deleted_notification_t", "mach_send_possible_notification_t",
    "mach_dead_name_notification_t", "mach_no_senders_notification_t", "mach_send_once_notification_t",
    "mach_port_destroyed_notification_t",
]
