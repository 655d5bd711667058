"""The bootstrap protocol: what the client routines (pymach.mach.bootstrap)
and the server (pymach.servers.bootstrap) agree on, in one place.

- The codes and types of <servers/bootstrap.h> (launchd's
  liblaunch/bootstrap.h) and the strings of its bootstrap_strerror.
- The messages: those of pymach's bootstrap.defs (pymach/defs), which
  `pymach mig -static` compiles into bootstrap_mig (its ids, layouts and
  struct packers; tests/test_mig_own_defs.py checks that the module is
  what the .defs gives). The classic bootstrap subsystem's request ids
  (subsystem 400: check_in 402, register 403, look_up 404, status 407,
  create_service 410), replies at id + 100, an NDR record before inline
  data, the name inline as a 128-byte name_t, rights in port descriptors.
  A successful reply that carries a port is a complex message with no
  return code; a failure is a mig_reply_error_t (<mach/mig_errors.h>),
  as MIG servers send it. ``bootstrap_list`` (420) is pymach's: it
  answers ``pymach bootstrap list`` with an out-of-line array of
  bootstrap_service_info_t. The ctypes structs here are the generated
  layouts under the names the client and the server use.
- The rule for names: 1 to 127 bytes, no NUL (see docs/deviations.md).
"""

from __future__ import annotations

import ctypes
from typing import Any, Final

from .._kern.bootstrap_port import BOOTSTRAP_NO_MEMORY, BOOTSTRAP_NOT_PRIVILEGED
from . import bootstrap_mig as BMIG
from ._layouts import message_fields
from .message import mach_msg_audit_trailer_t, mach_msg_header_t
from .mig import mig_reply_error_t

# <servers/bootstrap.h>
BOOTSTRAP_MAX_NAME_LEN: Final = 128
BOOTSTRAP_MAX_CMD_LEN: Final = 512
BOOTSTRAP_MAX_LOOKUP_COUNT: Final = 20

BOOTSTRAP_SUCCESS: Final = 0
# BOOTSTRAP_NOT_PRIVILEGED (1100) and BOOTSTRAP_NO_MEMORY (1105) are the
# kernel's too: connecting the bootstrap port gives them (imported above)
BOOTSTRAP_NAME_IN_USE: Final = 1101
BOOTSTRAP_UNKNOWN_SERVICE: Final = 1102
BOOTSTRAP_SERVICE_ACTIVE: Final = 1103
BOOTSTRAP_BAD_COUNT: Final = 1104
BOOTSTRAP_NO_CHILDREN: Final = 1106

BOOTSTRAP_STATUS_INACTIVE: Final = 0
BOOTSTRAP_STATUS_ACTIVE: Final = 1
BOOTSTRAP_STATUS_ON_DEMAND: Final = 2

name_t = ctypes.c_char * BOOTSTRAP_MAX_NAME_LEN
cmd_t = ctypes.c_char * BOOTSTRAP_MAX_CMD_LEN
bootstrap_status_t = ctypes.c_int

# launchd's bootstrap_strerror (liblaunch/libbootstrap.c); other codes read
# as mach_error_string gives them
_STRINGS: Final = {
    BOOTSTRAP_SUCCESS: "Success",
    BOOTSTRAP_NOT_PRIVILEGED: "Permission denied",
    BOOTSTRAP_NAME_IN_USE: "Service name already exists",
    BOOTSTRAP_SERVICE_ACTIVE: "Service name already exists",
    BOOTSTRAP_UNKNOWN_SERVICE: "Unknown service name",
    BOOTSTRAP_BAD_COUNT: "Too many lookups were requested in one request",
    BOOTSTRAP_NO_MEMORY: "Out of memory",
}

STATUS_WORDS: Final = {
    BOOTSTRAP_STATUS_INACTIVE: "inactive",
    BOOTSTRAP_STATUS_ACTIVE: "active",
    BOOTSTRAP_STATUS_ON_DEMAND: "on-demand",
}


def strerror(r: int) -> str:
    """bootstrap_strerror's text for ``r``."""
    from .._kern.kern_return import mach_error_string
    text = _STRINGS.get(r)
    return text if text is not None else mach_error_string(r)


# -- request ids: the classic subsystem 400 (pymach's bootstrap.defs) ---------------------

BOOTSTRAP_SUBSYSTEM: Final = BMIG.BASE
BOOTSTRAP_CHECK_IN_ID: Final = BMIG.bootstrap_check_in_id
BOOTSTRAP_REGISTER_ID: Final = BMIG.bootstrap_register_id
BOOTSTRAP_LOOK_UP_ID: Final = BMIG.bootstrap_look_up_id
BOOTSTRAP_STATUS_ID: Final = BMIG.bootstrap_status_id
BOOTSTRAP_CREATE_SERVICE_ID: Final = BMIG.bootstrap_create_service_id
BOOTSTRAP_LIST_ID: Final = BMIG.bootstrap_list_id  # pymach's: the table, for `pymach bootstrap list`
REPLY_ID_OFFSET: Final = BMIG.REPLY_ID_DELTA  # MIG: a reply's id is the request's plus 100
ROUTINE_NAMES: Final = {
    BOOTSTRAP_CHECK_IN_ID: "bootstrap_check_in",
    BOOTSTRAP_REGISTER_ID: "bootstrap_register",
    BOOTSTRAP_LOOK_UP_ID: "bootstrap_look_up",
    BOOTSTRAP_STATUS_ID: "bootstrap_status",
    BOOTSTRAP_CREATE_SERVICE_ID: "bootstrap_create_service",
    BOOTSTRAP_LIST_ID: "bootstrap_list",
}

# NDR_record: MIG and interface versions 0, little-endian ints, ASCII, IEEE floats
NDR_RECORD: Final = BMIG.NDR_RECORD


# -- messages: the generated layouts as ctypes structs (pack 4, as MIG's __MigPackStructs) --

class bootstrap_name_request_t(ctypes.Structure):
    """check_in, look_up, status and create_service: the name only
    (``__Request__bootstrap_check_in_t``; the four are laid out alike)."""

    _pack_ = 4
    _fields_ = message_fields(BMIG.bootstrap_check_in_request)


class bootstrap_register_request_t(ctypes.Structure):
    """register: the service's send right (COPY_SEND), then the name."""

    _pack_ = 4
    _fields_ = message_fields(BMIG.bootstrap_register_request)


class bootstrap_list_request_t(ctypes.Structure):
    """list: no arguments."""

    _pack_ = 4
    _fields_ = message_fields(BMIG.bootstrap_list_request)


class bootstrap_port_reply_t(ctypes.Structure):
    """The successful reply of check_in (the receive right), look_up and
    create_service (a send right): ``__Reply__bootstrap_check_in_t``."""

    _pack_ = 4
    _fields_ = message_fields(BMIG.bootstrap_check_in_reply)


class bootstrap_status_reply_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = message_fields(BMIG.bootstrap_status_reply, types={"service_active": bootstrap_status_t})


class bootstrap_service_info_t(ctypes.Structure):
    """One service in a bootstrap_list reply (bootstrap.defs: struct[34] of
    uint32_t). ``pid`` is the process that checked in or registered, as the
    request's audit trailer showed it; 0 when nobody has (a service made by
    bootstrap_create_service)."""

    _pack_ = 4
    _fields_ = [("service_name", name_t), ("service_active", bootstrap_status_t), ("pid", ctypes.c_int)]


bootstrap_service_array_t = ctypes.POINTER(bootstrap_service_info_t)


class bootstrap_list_reply_t(ctypes.Structure):
    _pack_ = 4
    _fields_ = message_fields(BMIG.bootstrap_list_reply)


class bootstrap_reply_buffer_t(ctypes.Union):
    """Room for any reply, with an audit trailer."""

    _pack_ = 4
    _fields_ = [("Head", mach_msg_header_t),
                ("bytes", ctypes.c_char * (max([ctypes.sizeof(mig_reply_error_t)] + [
                    m.size for m in (BMIG.bootstrap_check_in_reply, BMIG.bootstrap_register_reply,
                                     BMIG.bootstrap_look_up_reply, BMIG.bootstrap_status_reply,
                                     BMIG.bootstrap_create_service_reply, BMIG.bootstrap_list_reply)])
                                           + ctypes.sizeof(mach_msg_audit_trailer_t)))]


# the largest request, with its trailer: a server's receive buffer holds it
MAX_REQUEST_SIZE: Final = max(m.size for m in (
    BMIG.bootstrap_check_in_request, BMIG.bootstrap_register_request, BMIG.bootstrap_look_up_request,
    BMIG.bootstrap_status_request, BMIG.bootstrap_create_service_request, BMIG.bootstrap_list_request))


# -- names ----------------------------------------------------------------------------

def encode_name(value: Any) -> bytes | None:
    """The bytes of a service name as a caller passes it (str, bytes, a
    name_t or other char array, c_char_p), or None if it breaks the rule:
    1 to 127 bytes, no NUL. A char array or c_char_p ends at its first NUL,
    as in C; a str or bytes that holds a NUL is refused (C could not have
    passed it)."""
    if isinstance(value, str):
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return None
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    elif isinstance(value, ctypes.Array) and getattr(value, "_type_", None) is ctypes.c_char:
        raw = bytes(value)
        nul = raw.find(b"\0")
        raw = raw if nul < 0 else raw[:nul]
    elif isinstance(value, ctypes.c_char_p):
        raw = value.value or b""
    else:
        return None
    if not 0 < len(raw) < BOOTSTRAP_MAX_NAME_LEN or b"\0" in raw:
        return None
    return raw


def decode_field(field: bytes) -> bytes | None:
    """The name in a received 128-byte name_t: the bytes before the first
    NUL. None when there is no NUL in the field (MIG's type check refuses
    that string) or the name is empty."""
    nul = field.find(b"\0")
    if nul <= 0:
        return None
    return field[:nul]


def text(name: bytes) -> str:
    """A name for display and for the Pythonic layer (undecodable bytes
    survive as surrogates, so the name round-trips)."""
    return name.decode("utf-8", "surrogateescape")


__all__ = [
    "BOOTSTRAP_MAX_NAME_LEN", "BOOTSTRAP_MAX_CMD_LEN", "BOOTSTRAP_MAX_LOOKUP_COUNT", "BOOTSTRAP_SUCCESS",
    "BOOTSTRAP_NOT_PRIVILEGED", "BOOTSTRAP_NAME_IN_USE", "BOOTSTRAP_UNKNOWN_SERVICE",
    "BOOTSTRAP_SERVICE_ACTIVE", "BOOTSTRAP_BAD_COUNT", "BOOTSTRAP_NO_MEMORY", "BOOTSTRAP_NO_CHILDREN",
    "BOOTSTRAP_STATUS_INACTIVE", "BOOTSTRAP_STATUS_ACTIVE", "BOOTSTRAP_STATUS_ON_DEMAND", "name_t", "cmd_t",
    "bootstrap_status_t", "bootstrap_service_info_t", "bootstrap_service_array_t",
]
