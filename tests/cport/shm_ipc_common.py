"""shm_ipc_common.h (Mac OS X Internals, Figure 8-17), ported line by line
with ``from pymach.mach import *``: the programs take it in with
``from shm_ipc_common import *``, as they #include it."""

import sys

from pymach.mach import *

SERVICE_NAME = "com.osxbook.SHMServer"
SHM_MSG_ID = 400


def EXIT_ON_MACH_ERROR(msg, retval, success_retval):
    # the macro tests the caller's kr, which every call site passes as retval
    if retval != success_retval:
        mach_error(msg + ":", retval)
        sys.exit(retval)


# send-side version of the request message (as seen by the client)
class msg_format_request_t(Structure):
    _fields_ = [("header", mach_msg_header_t)]


# receive-side version of the request message (as seen by the server)
class msg_format_request_r_t(Structure):
    _fields_ = [("header", mach_msg_header_t),
                ("trailer", mach_msg_trailer_t)]


# send-side version of the response message (as seen by the server)
class msg_format_response_t(Structure):
    _fields_ = [("header", mach_msg_header_t),
                ("body", mach_msg_body_t),              # start of kernel processed data
                ("data", mach_msg_port_descriptor_t)]   # end of kernel processed data


# receive-side version of the response message (as seen by the client)
class msg_format_response_r_t(Structure):
    _fields_ = [("header", mach_msg_header_t),
                ("body", mach_msg_body_t),              # start of kernel processed data
                ("data", mach_msg_port_descriptor_t),   # end of kernel processed data
                ("trailer", mach_msg_trailer_t)]
