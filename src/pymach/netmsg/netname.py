"""The network name service as the proxy answers it (Mach's netname.defs,
subsystem 1040): the requests decoded and the replies built with the
layouts of pymach's netname.defs (pymach.mach.netname_mig), the names
this host has checked in, and the look-up subjects on NATS.

Names checked in here are Entry values: the port's send right and the
signature, held by the proxy. A look-up of another host asks that host's
proxy on ``pm.<host>.lookup`` (which exports the port to the asker); a
look-up for any host ("*") first asks ``pm.names.<hex of the name>``,
which each proxy subscribes to for the names it holds and answers with its
host name.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ..mach import netname_mig as NMIG
from ..mach.netname import (NETNAME_HOST_NOT_FOUND as NETNAME_HOST_NOT_FOUND,
                            NETNAME_INVALID_PORT as NETNAME_INVALID_PORT,
                            NETNAME_NO_SUCH_HOST as NETNAME_NO_SUCH_HOST,
                            NETNAME_NOT_CHECKED_IN as NETNAME_NOT_CHECKED_IN, NETNAME_NOT_YOURS as NETNAME_NOT_YOURS,
                            NETNAME_SERVICE as NETNAME_SERVICE, NETNAME_SUCCESS as NETNAME_SUCCESS)
from .._kern import message_defs as MD

VERSION: Final = "pymach netmsg 1"

_RETCODE: Final = struct.Struct("<IIIIIi8si")  # mig_reply_error_t
_LOOKUP_REPLY: Final = struct.Struct("<i")


def names_subject(name: str) -> str:
    """The NATS subject where proxies holding ``name`` answer "*" look-ups."""
    return "pm.names." + name.encode().hex()


def lookup_subject(host: str) -> str:
    return f"pm.{host}.lookup"


def error_reply(reply: int, reply_bits: int, msg_id: int, kr: int) -> bytes:
    """A mig_reply_error_t to the reply right ``reply`` (its received type
    in ``reply_bits``): what MIG servers answer a failed routine with."""
    disp = MD.MACH_MSG_TYPE_MOVE_SEND_ONCE if reply_bits == MD.MACH_MSG_TYPE_PORT_SEND_ONCE \
        else MD.MACH_MSG_TYPE_COPY_SEND
    return _RETCODE.pack(MD.MACH_MSGH_BITS(disp, 0), _RETCODE.size, reply, 0, 0, msg_id + NMIG.REPLY_ID_DELTA,
                         NMIG.NDR_RECORD, kr)


def port_reply(reply: int, reply_bits: int, port: int, disposition: int) -> bytes:
    """netname_look_up's reply carrying ``port`` with ``disposition``."""
    disp = MD.MACH_MSG_TYPE_MOVE_SEND_ONCE if reply_bits == MD.MACH_MSG_TYPE_PORT_SEND_ONCE \
        else MD.MACH_MSG_TYPE_COPY_SEND
    return NMIG.netname_look_up_reply.pack(
        msgh_bits=MD.MACH_MSGH_BITS(disp, 0) | MD.MACH_MSGH_BITS_COMPLEX, msgh_remote_port=reply,
        port_id=port, port_id_disposition=disposition, port_id_type=MD.MACH_MSG_PORT_DESCRIPTOR)


def version_reply(reply: int, reply_bits: int, text: str) -> bytes:
    disp = MD.MACH_MSG_TYPE_MOVE_SEND_ONCE if reply_bits == MD.MACH_MSG_TYPE_PORT_SEND_ONCE \
        else MD.MACH_MSG_TYPE_COPY_SEND
    return NMIG.netname_version_reply.pack(msgh_bits=MD.MACH_MSGH_BITS(disp, 0), msgh_remote_port=reply,
                                           RetCode=0, version=text.encode()[:79])


def text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


@dataclass
class Entry:
    """A checked-in name: the send right (name in the proxy's space) and
    the signature's name (0 for none)."""

    port: int
    signature: int


def pack_lookup_request(host: str, incarnation: int, name: str) -> bytes:
    """A look-up on ``pm.<host>.lookup``: the asking host and incarnation
    (the port is exported to that incarnation) and the name."""
    return b"%s\0%016x\0%s" % (host.encode(), incarnation, name.encode())


def unpack_lookup_request(data: bytes) -> tuple[str, int, str] | None:
    """(host, incarnation, name) of a look-up; None if malformed."""
    parts = data.split(b"\0", 2)
    if len(parts) != 3 or len(parts[1]) != 16:
        return None
    try:
        return parts[0].decode(), int(parts[1], 16), parts[2].decode("utf-8", "surrogateescape")
    except (UnicodeDecodeError, ValueError):
        return None


def pack_lookup_reply(code: int, ref: bytes = b"") -> bytes:
    """A look-up's answer on NATS: the code, then the port's wire Ref."""
    return _LOOKUP_REPLY.pack(code) + ref


def unpack_lookup_reply(data: bytes) -> tuple[int, bytes]:
    if len(data) < _LOOKUP_REPLY.size:
        return NETNAME_HOST_NOT_FOUND, b""
    return _LOOKUP_REPLY.unpack_from(data)[0], data[_LOOKUP_REPLY.size:]
