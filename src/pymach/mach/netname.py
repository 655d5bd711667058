"""Mach's network name service (<servers/netname.h>): netname_check_in,
netname_look_up, netname_check_out and netname_version with C names and
kern_return_t results, and ``name_server_port``.

Each routine is a MIG request (pymach's netname.defs, subsystem 1040:
netname_mig) to the name server port with a MAKE_SEND_ONCE reply port,
answered by the netmsg proxy of this host (``pymach netmsg serve``).

``name_server_port`` is the send right to that proxy: looked up at the
bootstrap server (``com.pymach.netmsg``) on first use and kept (the kernel's
pymach._kern.netname_port), MACH_PORT_NULL when no proxy is checked in. Read
it as ``pymach.mach.netname.name_server_port`` or
``pymach.mach.name_server_port`` (each read looks again if the kept right
died), or call get_name_server_port(). A routine called on
MACH_PORT_NULL fails at once with MACH_SEND_INVALID_DEST, as any message to
a null name does.

Host names: ``""`` is this host, ``"*"`` any host that has the name
checked in, anything else the host a proxy was started for (``--host``).
"""

from __future__ import annotations

import ctypes
from typing import Any, Final

from .._kern import kern_return as K
from .._kern import message_defs as MD
from .._kern import netname_port as NP
from . import netname_mig as NMIG
from ._args import set_out, u32
from .bootstrap import bootstrap_look_up, bootstrap_port
from .message import mach_msg_audit_trailer_t, mach_msg_header_t
from .mig import exchange, mach_msg_destroy, mig_reply_error_t

# <servers/netname_defs.h> (Mach 3's netmsgserver)
NETNAME_SUCCESS: Final = 0
NETNAME_PENDING: Final = -1
NETNAME_NOT_YOURS: Final = 1000
NETNAME_NOT_CHECKED_IN: Final = 1001
NETNAME_NO_SUCH_HOST: Final = 1002
NETNAME_HOST_NOT_FOUND: Final = 1003
NETNAME_INVALID_PORT: Final = 1004

NETNAME_NAME_LEN: Final = 80
netname_name_t = ctypes.c_char * NETNAME_NAME_LEN

NETNAME_SERVICE: Final = NP.SERVICE_NAME

_STRINGS: Final = {
    NETNAME_SUCCESS: "(netname) success",
    NETNAME_NOT_YOURS: "(netname) the name is checked in with another signature",
    NETNAME_NOT_CHECKED_IN: "(netname) no such name checked in",
    NETNAME_NO_SUCH_HOST: "(netname) no proxy answers for that host",
    NETNAME_HOST_NOT_FOUND: "(netname) the host could not be reached",
    NETNAME_INVALID_PORT: "(netname) not a port that can be checked in",
}


class netname_reply_buffer_t(ctypes.Union):
    """Room for any reply of the service, with an audit trailer."""

    _pack_ = 4
    _fields_ = [("Head", mach_msg_header_t),
                ("bytes", ctypes.c_char * (max([ctypes.sizeof(mig_reply_error_t)] + [
                    m.size for m in (NMIG.netname_check_in_reply, NMIG.netname_look_up_reply,
                                     NMIG.netname_check_out_reply, NMIG.netname_version_reply)])
                                       + ctypes.sizeof(mach_msg_audit_trailer_t)))]


def netname_strerror(kr: Any) -> str:
    """The netname codes' strings; mach_error_string for the rest."""
    from .._kern.kern_return import mach_error_string
    code = int(getattr(kr, "value", kr))
    return _STRINGS.get(code) or mach_error_string(code)


def encode_name(value: Any) -> bytes | None:
    """The bytes of a netname_name_t argument (str, bytes, a char array,
    c_char_p), or None if it does not fit: at most 79 bytes, no NUL."""
    if isinstance(value, str):
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return None
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    elif isinstance(value, ctypes.Array):
        raw = bytes(value).split(b"\0", 1)[0]
    elif isinstance(value, ctypes.c_char_p):
        raw = value.value or b""
    else:
        return None
    if b"\0" in raw or len(raw) >= NETNAME_NAME_LEN:
        return None
    return raw


def _look_up_proxy() -> int:
    port = ctypes.c_uint32(0)
    if bootstrap_look_up(bootstrap_port, NETNAME_SERVICE, ctypes.byref(port)) != K.KERN_SUCCESS:
        return 0
    return int(port.value)


def get_name_server_port() -> int:
    """The send right to this host's netmsg proxy, looked up on first use;
    MACH_PORT_NULL when no proxy is checked in (or no bootstrap server
    answers)."""
    return NP.get(_look_up_proxy)


def name_server_port_disconnect() -> None:
    """Release the kept send right to the proxy: the next use looks it up
    again (a program that changes bootstrap servers)."""
    NP.forget()


def __getattr__(attr: str) -> int:
    if attr == "name_server_port":
        return get_name_server_port()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def _call(server: Any, build: Any, msg_id: int, rcv: netname_reply_buffer_t) -> int:
    """The routine's exchange with the proxy (mig.exchange);
    MACH_SEND_INVALID_DEST for MACH_PORT_NULL (no proxy runs)."""
    dest = u32(server)
    if not dest:
        return K.MACH_SEND_INVALID_DEST
    return exchange(dest, build, msg_id, rcv)


def _ret_code(rcv: netname_reply_buffer_t, size: int) -> int:
    h = rcv.Head
    if h.msgh_bits & MD.MACH_MSGH_BITS_COMPLEX or h.msgh_size not in (size, ctypes.sizeof(mig_reply_error_t)):
        mach_msg_destroy(rcv)
        return K.MIG_TYPE_ERROR
    return int(mig_reply_error_t.from_buffer(rcv).RetCode)


def netname_check_in(name_server_port: Any, port_name: Any, signature: Any, port_id: Any) -> int:
    """Make the send right ``port_id`` (copied) known on the network as
    ``port_name``; ``signature`` (a send right, or MACH_PORT_NULL) must
    come again with netname_check_out. Checking in a name again with the
    same signature replaces its port.

    NETNAME_SUCCESS, NETNAME_NOT_YOURS (checked in with another
    signature), NETNAME_INVALID_PORT (``port_id`` is null or dead),
    KERN_INVALID_ARGUMENT (a name over 79 bytes or with a NUL), and the
    MACH_SEND_* / MIG_* codes of the exchange (MACH_SEND_INVALID_DEST for
    MACH_PORT_NULL: no proxy runs)."""
    raw = encode_name(port_name)
    if raw is None or not raw:
        return K.KERN_INVALID_ARGUMENT
    sig, port = u32(signature), u32(port_id)
    if not port:
        return NETNAME_INVALID_PORT
    rcv = netname_reply_buffer_t()
    kr = _call(name_server_port, lambda d, r: NMIG.netname_check_in_request.pack(
        msgh_remote_port=d, msgh_local_port=r, port_name=raw, signature=sig, port_id=port,
        signature_disposition=MD.MACH_MSG_TYPE_COPY_SEND),
        NMIG.netname_check_in_id, rcv)
    return kr or _ret_code(rcv, NMIG.netname_check_in_reply.size)


def netname_look_up(name_server_port: Any, host_name: Any, port_name: Any, port_id: Any) -> int:
    """A send right to the port checked in as ``port_name`` on
    ``host_name`` ("" this host, "*" whichever host answers first) into
    ``port_id`` (byref of a mach_port_t). A port of another host arrives
    as a port of this host's proxy, which forwards what is sent to it.

    NETNAME_SUCCESS, NETNAME_NOT_CHECKED_IN, NETNAME_NO_SUCH_HOST (no
    proxy answers for that host), NETNAME_HOST_NOT_FOUND (the proxy has no
    network to ask), KERN_INVALID_ARGUMENT, and the MACH_SEND_* / MIG_*
    codes of the exchange (MACH_SEND_INVALID_DEST for MACH_PORT_NULL: no
    proxy runs)."""
    host, raw = encode_name(host_name), encode_name(port_name)
    if host is None or raw is None or not raw:
        return K.KERN_INVALID_ARGUMENT
    rcv = netname_reply_buffer_t()
    kr = _call(name_server_port, lambda d, r: NMIG.netname_look_up(d, host, raw, reply_port=r),
               NMIG.netname_look_up_id, rcv)
    if kr:
        return kr
    h = rcv.Head
    if not h.msgh_bits & MD.MACH_MSGH_BITS_COMPLEX:
        return _ret_code(rcv, ctypes.sizeof(mig_reply_error_t))
    v = NMIG.netname_look_up_reply.unpack(rcv)
    if (h.msgh_size != NMIG.netname_look_up_reply.size or v["msgh_body"] != 1
            or v["port_id_type"] != MD.MACH_MSG_PORT_DESCRIPTOR
            or v["port_id_disposition"] != MD.MACH_MSG_TYPE_PORT_SEND):
        mach_msg_destroy(rcv)
        return K.MIG_TYPE_ERROR
    set_out(port_id, v["port_id"])
    return K.KERN_SUCCESS


def netname_check_out(name_server_port: Any, port_name: Any, signature: Any) -> int:
    """Withdraw ``port_name``, given the signature it was checked in with.

    NETNAME_SUCCESS, NETNAME_NOT_CHECKED_IN, NETNAME_NOT_YOURS,
    KERN_INVALID_ARGUMENT, and the MACH_SEND_* / MIG_* codes of the
    exchange."""
    raw = encode_name(port_name)
    if raw is None or not raw:
        return K.KERN_INVALID_ARGUMENT
    sig = u32(signature)
    rcv = netname_reply_buffer_t()
    kr = _call(name_server_port, lambda d, r: NMIG.netname_check_out_request.pack(
        msgh_remote_port=d, msgh_local_port=r, port_name=raw, signature=sig,
        signature_disposition=MD.MACH_MSG_TYPE_COPY_SEND),
        NMIG.netname_check_out_id, rcv)
    return kr or _ret_code(rcv, NMIG.netname_check_out_reply.size)


def netname_version(name_server_port: Any, version: Any) -> int:
    """The proxy's version string into ``version`` (a netname_name_t).

    NETNAME_SUCCESS and the MACH_SEND_* / MIG_* codes of the exchange."""
    rcv = netname_reply_buffer_t()
    kr = _call(name_server_port, lambda d, r: NMIG.netname_version(d, reply_port=r), NMIG.netname_version_id, rcv)
    if kr:
        return kr
    h = rcv.Head
    if h.msgh_size != NMIG.netname_version_reply.size or h.msgh_bits & MD.MACH_MSGH_BITS_COMPLEX:
        return _ret_code(rcv, NMIG.netname_version_reply.size)
    v = NMIG.netname_version_reply.unpack(rcv)
    if v["RetCode"]:
        return int(v["RetCode"])
    text = v["version"].split(b"\0", 1)[0]
    if not isinstance(version, ctypes.Array) or ctypes.sizeof(version) < 1:
        return K.KERN_INVALID_ARGUMENT
    text = text[:ctypes.sizeof(version) - 1] + b"\0"
    ctypes.memmove(version, text, len(text))
    return K.KERN_SUCCESS


__all__ = [
    "NETNAME_SUCCESS", "NETNAME_PENDING", "NETNAME_NOT_YOURS", "NETNAME_NOT_CHECKED_IN", "NETNAME_NO_SUCH_HOST",
    "NETNAME_HOST_NOT_FOUND", "NETNAME_INVALID_PORT", "NETNAME_NAME_LEN", "netname_name_t",
    "netname_check_in", "netname_look_up", "netname_check_out", "netname_version", "netname_strerror",
    "get_name_server_port", "name_server_port_disconnect",
]
