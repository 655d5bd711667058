"""The pieces of MIG's runtime that hand-written stubs and servers use:
mig_reply_error_t (<mach/mig_errors.h>), and mach_msg_destroy
(<mach/message.h>, defined beside mach_msg in mach_port.py), which
releases every right and region a received message holds."""

from __future__ import annotations

import ctypes

from .mach_port import mach_msg_destroy
from .message import mach_msg_header_t
from .notify import NDR_record_t
from .types import kern_return_t



class mig_reply_error_t(ctypes.Structure):
    """The reply of a routine that failed (and of a routine whose only
    result is its return code)."""

    _pack_ = 4
    _fields_ = [("Head", mach_msg_header_t), ("NDR", NDR_record_t), ("RetCode", kern_return_t)]


__all__ = ["mig_reply_error_t", "mach_msg_destroy"]
