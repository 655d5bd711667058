"""<mach/notify.h>: notification ids and message structs (pack 4).

The structs are notify.defs' messages as pymach's kernel sends them (the
layouts of pymach/_kern/notify_mig.py, which `pymach mig -static`
generates from pymach's notify.defs), under <mach/notify.h>'s names
(not_header, not_port, not_count, not_body) and with the trailer that a
receiver asks for."""

from __future__ import annotations

import ctypes

from .._kern import notify_mig as NM
from .._kern.ipc_notify import (MACH_NOTIFY_DEAD_NAME, MACH_NOTIFY_FIRST, MACH_NOTIFY_LAST,
                               MACH_NOTIFY_NO_SENDERS, MACH_NOTIFY_PORT_DELETED, MACH_NOTIFY_PORT_DESTROYED,
                               MACH_NOTIFY_SEND_ONCE, MACH_NOTIFY_SEND_POSSIBLE)
from ._layouts import NDR_record_t, message_fields
from .message import mach_msg_format_0_trailer_t
from .types import mach_port_name_t

# <mach/notify.h>'s member names for notify.defs' fields
NOTIFY_NAMES = {"Head": "not_header", "msgh_body": "not_body", "name": "not_port", "rights": "not_port",
                "mscount": "not_count"}
_TRAILER = [("trailer", mach_msg_format_0_trailer_t)]


class mach_port_deleted_notification_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = message_fields(NM.mach_notify_port_deleted_request, NOTIFY_NAMES,
                              {"name": mach_port_name_t}) + _TRAILER


class mach_send_possible_notification_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = message_fields(NM.mach_notify_send_possible_request, NOTIFY_NAMES,
                              {"name": mach_port_name_t}) + _TRAILER


class mach_dead_name_notification_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = message_fields(NM.mach_notify_dead_name_request, NOTIFY_NAMES,
                              {"name": mach_port_name_t}) + _TRAILER


class mach_no_senders_notification_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = message_fields(NM.mach_notify_no_senders_request, NOTIFY_NAMES) + _TRAILER


class mach_send_once_notification_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = message_fields(NM.mach_notify_send_once_request, NOTIFY_NAMES) + _TRAILER


class mach_port_destroyed_notification_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = message_fields(NM.mach_notify_port_destroyed_request, NOTIFY_NAMES) + _TRAILER


__all__ = [
    "MACH_NOTIFY_FIRST", "MACH_NOTIFY_PORT_DELETED", "MACH_NOTIFY_SEND_POSSIBLE", "MACH_NOTIFY_PORT_DESTROYED",
    "MACH_NOTIFY_NO_SENDERS", "MACH_NOTIFY_SEND_ONCE", "MACH_NOTIFY_DEAD_NAME", "MACH_NOTIFY_LAST",
    "NDR_record_t", "mach_port_deleted_notification_t", "mach_send_possible_notification_t",
    "mach_dead_name_notification_t", "mach_no_senders_notification_t", "mach_send_once_notification_t",
    "mach_port_destroyed_notification_t",
]
