"""shm_ipc_common.h (Mac OS X Internals, Figure 8-17), line by line: the
service name, the message id and the four message layouts that the
shared-memory client and server agree on."""

import sys

from pymach.mach import (mach_error, mach_msg_body_t, mach_msg_header_t, mach_msg_port_descriptor_t,
                         mach_msg_trailer_t)
from ctypes import Structure

SERVICE_NAME = "com.osxbook.SHMServer"
SHM_MSG_ID = 400


def EXIT_ON_MACH_ERROR(msg: str, retval: int, success_retval: int) -> None:
    # the macro compares the caller's kr, which every call site passes as retval
    if retval != success_retval:
        mach_error(msg + ":", retval)
        sys.exit(retval)


# send-side version of the request message (as seen by the client)
class msg_format_request_t(Structure):
    _pack_ = 4
    _fields_ = [("header", mach_msg_header_t)]


# receive-side version of the request message (as seen by the server)
class msg_format_request_r_t(Structure):
    _pack_ = 4
    _fields_ = [("header", mach_msg_header_t),
                ("trailer", mach_msg_trailer_t)]


# send-side version of the response message (as seen by the server)
class msg_format_response_t(Structure):
    _pack_ = 4
    _fields_ = [("header", mach_msg_header_t),
                ("body", mach_msg_body_t),              # start of kernel processed data
                ("data", mach_msg_port_descriptor_t)]   # end of kernel processed data


# receive-side version of the response message (as seen by the client)
class msg_format_response_r_t(Structure):
    _pack_ = 4
    _fields_ = [("header", mach_msg_header_t),
                ("body", mach_msg_body_t),              # start of kernel processed data
                ("data", mach_msg_port_descriptor_t),   # end of kernel processed data
                ("trailer", mach_msg_trailer_t)]
