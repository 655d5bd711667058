"""The structs of <mach/message.h>, byte for byte as XNU lays them out for
LP64 user space under ``#pragma pack(4)``."""

from __future__ import annotations

import ctypes

from .types import (boolean_t, integer_t, mach_msg_bits_t, mach_msg_id_t, mach_msg_size_t,
                    mach_port_name_t, mach_port_t, natural_t)

mach_msg_type_name_t = ctypes.c_uint
mach_msg_descriptor_type_t = ctypes.c_uint
mach_msg_copy_options_t = ctypes.c_uint
mach_msg_guard_flags_t = ctypes.c_uint
mach_msg_trailer_type_t = ctypes.c_uint
mach_msg_trailer_size_t = ctypes.c_uint
mach_port_seqno_t = natural_t
mach_port_context_t = ctypes.c_uint64  # mach_vm_address_t
mach_msg_filter_id = ctypes.c_int
mach_msg_options_t = integer_t


class mach_msg_header_t(ctypes.Structure):
    """The message header. ``msgh_reserved`` is the older name of
    ``msgh_voucher_port`` and reads and writes the same field."""

    _pack_ = 4
    _fields_ = [
        ("msgh_bits", mach_msg_bits_t),
        ("msgh_size", mach_msg_size_t),
        ("msgh_remote_port", mach_port_t),
        ("msgh_local_port", mach_port_t),
        ("msgh_voucher_port", mach_port_name_t),
        ("msgh_id", mach_msg_id_t),
    ]

    @property
    def msgh_reserved(self) -> int:
        return int(self.msgh_voucher_port)

    @msgh_reserved.setter
    def msgh_reserved(self, value: int) -> None:
        self.msgh_voucher_port = value


class mach_msg_body_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("msgh_descriptor_count", mach_msg_size_t)]


class mach_msg_base_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", mach_msg_header_t), ("body", mach_msg_body_t)]


class mach_msg_type_descriptor_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [
        ("pad1", natural_t),
        ("pad2", mach_msg_size_t),
        ("pad3", ctypes.c_uint, 24),
        ("type", ctypes.c_uint, 8),
    ]


class mach_msg_port_descriptor_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [
        ("name", mach_port_t),
        ("pad1", mach_msg_size_t),
        ("pad2", ctypes.c_uint, 16),
        ("disposition", ctypes.c_uint, 8),
        ("type", ctypes.c_uint, 8),
    ]


class mach_msg_ool_descriptor_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [
        ("address", ctypes.c_void_p),
        ("deallocate", ctypes.c_uint, 8),
        ("copy", ctypes.c_uint, 8),
        ("pad1", ctypes.c_uint, 8),
        ("type", ctypes.c_uint, 8),
        ("size", mach_msg_size_t),
    ]


mach_msg_ool_descriptor64_t = mach_msg_ool_descriptor_t


class mach_msg_ool_ports_descriptor_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [
        ("address", ctypes.c_void_p),
        ("deallocate", ctypes.c_uint, 8),
        ("copy", ctypes.c_uint, 8),
        ("disposition", ctypes.c_uint, 8),
        ("type", ctypes.c_uint, 8),
        ("count", mach_msg_size_t),
    ]


mach_msg_ool_ports_descriptor64_t = mach_msg_ool_ports_descriptor_t


class mach_msg_guarded_port_descriptor_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [
        ("context", mach_port_context_t),
        ("flags", ctypes.c_uint, 16),
        ("disposition", ctypes.c_uint, 8),
        ("type", ctypes.c_uint, 8),
        ("name", mach_port_name_t),
    ]


class mach_msg_descriptor_t(ctypes.Union):
    _pack_ = 4
    _fields_ = [
        ("port", mach_msg_port_descriptor_t),
        ("out_of_line", mach_msg_ool_descriptor_t),
        ("ool_ports", mach_msg_ool_ports_descriptor_t),
        ("type", mach_msg_type_descriptor_t),
        ("guarded_port", mach_msg_guarded_port_descriptor_t),
    ]


class mach_msg_trailer_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("msgh_trailer_type", mach_msg_trailer_type_t),
                ("msgh_trailer_size", mach_msg_trailer_size_t)]


class mach_msg_seqno_trailer_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = mach_msg_trailer_t._fields_ + [("msgh_seqno", mach_port_seqno_t)]


class security_token_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("val", ctypes.c_uint * 2)]


class audit_token_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("val", ctypes.c_uint * 8)]


class mach_msg_security_trailer_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = mach_msg_seqno_trailer_t._fields_ + [("msgh_sender", security_token_t)]


class mach_msg_audit_trailer_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = mach_msg_security_trailer_t._fields_ + [("msgh_audit", audit_token_t)]


class mach_msg_context_trailer_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = mach_msg_audit_trailer_t._fields_ + [("msgh_context", mach_port_context_t)]


class msg_labels_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("sender", mach_port_name_t)]


class mach_msg_mac_trailer_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = mach_msg_context_trailer_t._fields_ + [
        ("msgh_ad", mach_msg_filter_id), ("msgh_labels", msg_labels_t)]


mach_msg_max_trailer_t = mach_msg_mac_trailer_t
mach_msg_format_0_trailer_t = mach_msg_security_trailer_t
MAX_TRAILER_SIZE = ctypes.sizeof(mach_msg_max_trailer_t)
MACH_MSG_TRAILER_MINIMUM_SIZE = ctypes.sizeof(mach_msg_trailer_t)
MACH_MSG_TRAILER_FORMAT_0_SIZE = ctypes.sizeof(mach_msg_format_0_trailer_t)


class mach_msg_empty_send_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", mach_msg_header_t)]


class mach_msg_empty_rcv_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", mach_msg_header_t), ("trailer", mach_msg_trailer_t)]


class mach_msg_empty_t(ctypes.Union):
    _pack_ = 4
    _fields_ = [("send", mach_msg_empty_send_t), ("rcv", mach_msg_empty_rcv_t)]


__all__ = [
    "mach_msg_bits_t", "mach_msg_id_t", "mach_msg_size_t", "mach_msg_type_name_t",
    "mach_msg_descriptor_type_t", "mach_msg_copy_options_t", "mach_msg_guard_flags_t",
    "mach_msg_trailer_type_t", "mach_msg_trailer_size_t", "mach_msg_filter_id",
    "mach_msg_options_t", "mach_msg_header_t", "mach_msg_body_t", "mach_msg_base_t",
    "mach_msg_type_descriptor_t", "mach_msg_port_descriptor_t", "mach_msg_ool_descriptor_t",
    "mach_msg_ool_descriptor64_t", "mach_msg_ool_ports_descriptor_t",
    "mach_msg_ool_ports_descriptor64_t", "mach_msg_guarded_port_descriptor_t",
    "mach_msg_descriptor_t", "mach_msg_trailer_t", "mach_msg_seqno_trailer_t",
    "security_token_t", "audit_token_t", "mach_msg_security_trailer_t",
    "mach_msg_audit_trailer_t", "mach_msg_context_trailer_t", "msg_labels_t",
    "mach_msg_mac_trailer_t", "mach_msg_max_trailer_t", "mach_msg_format_0_trailer_t",
    "MAX_TRAILER_SIZE", "MACH_MSG_TRAILER_MINIMUM_SIZE", "MACH_MSG_TRAILER_FORMAT_0_SIZE",
    "mach_msg_empty_send_t", "mach_msg_empty_rcv_t", "mach_msg_empty_t", "boolean_t",
    "mach_port_seqno_t", "mach_port_context_t",
]
