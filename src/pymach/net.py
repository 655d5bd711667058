"""The network name service, Pythonic: check a port in on this host's
netmsg proxy and look ports up on any host.

    with Port() as port:
        net.check_in("com.example.echo", port.make_send())   # on host B
    ...
    echo = net.look_up("com.example.echo", host="hostB")     # on host A: a SendRight
    reply = pymach.request(echo, b"ping", timeout=5)

A right to a port of another host is a send right to a port of the local
proxy, which forwards what is sent to it: send, request, MIG stubs and
notifications (dead name, no-senders) work as they do locally. The proxy
is ``pymach netmsg serve`` (the ``net`` extra); without one, every call
raises NetnameError with MACH_SEND_INVALID_DEST at once.
"""

from __future__ import annotations

from . import _check as C
from ._kern import kern_return as K
from .ipc import SendRight
from .mach import netname as MN
from .mach.netname import (NETNAME_HOST_NOT_FOUND, NETNAME_INVALID_PORT, NETNAME_NO_SUCH_HOST,
                           NETNAME_NOT_CHECKED_IN, NETNAME_NOT_YOURS, NETNAME_SUCCESS)
from .mach.types import mach_port_t

__all__ = [
    "NetnameError", "check_in", "look_up", "check_out", "version", "strerror",
    "NETNAME_SUCCESS", "NETNAME_NOT_YOURS", "NETNAME_NOT_CHECKED_IN", "NETNAME_NO_SUCH_HOST",
    "NETNAME_HOST_NOT_FOUND", "NETNAME_INVALID_PORT",
]


class NetnameError(K.MachError):
    """A netname routine failed: ``kr`` is its code (NETNAME_* or a
    MACH_SEND_* / MIG_* code of the exchange)."""

    def __init__(self, kr: int, context: str = "") -> None:
        super().__init__(kr, f"{context}: {MN.netname_strerror(kr)}" if context else MN.netname_strerror(kr))


NetnameError.__module__ = "pymach.net"


def strerror(kr: int) -> str:
    return MN.netname_strerror(kr)


def _server(what: str) -> int:
    port = MN.get_name_server_port()
    if not port:
        raise NetnameError(K.MACH_SEND_INVALID_DEST, f"{what}: no netmsg proxy is checked in at the bootstrap "
                                                     f"server (pymach netmsg serve)")
    return port


def _name(value: object, call: str, param: str) -> str:
    if not isinstance(value, str):
        raise C.type_error(call, param, "str", value)
    if MN.encode_name(value) is None:
        raise ValueError(f"{call}: {param} is at most 79 bytes and holds no NUL: {value!r}")
    return value


def check_in(name: str, right: SendRight, signature: SendRight | None = None) -> None:
    """Make ``right`` (copied) known on the network as ``name``.
    ``signature`` must come again with check_out (None: anyone of this
    user may check it out). Raises TypeError, ValueError, NetnameError
    (NETNAME_NOT_YOURS, NETNAME_INVALID_PORT, MACH_SEND_INVALID_DEST: no
    proxy)."""
    _name(name, "net.check_in()", "name")
    C.instance(right, SendRight, "net.check_in()", "right")
    kr = MN.netname_check_in(_server("check_in"), name, signature.name if signature is not None else 0, right.name)
    if kr:
        raise NetnameError(kr, f"netname_check_in({name!r})")


def look_up(name: str, host: str = "") -> SendRight:
    """A send right to the port checked in as ``name`` on ``host`` (""
    this host, "*" any host that has it). Raises TypeError, ValueError,
    NetnameError (NETNAME_NOT_CHECKED_IN, NETNAME_NO_SUCH_HOST,
    NETNAME_HOST_NOT_FOUND, MACH_SEND_INVALID_DEST: no proxy)."""
    _name(name, "net.look_up()", "name")
    _name(host, "net.look_up()", "host")
    p = mach_port_t()
    kr = MN.netname_look_up(_server("look_up"), host, name, p)
    if kr:
        raise NetnameError(kr, f"netname_look_up({host!r}, {name!r})")
    return SendRight(p.value)


def check_out(name: str, signature: SendRight | None = None) -> None:
    """Withdraw ``name``. Raises TypeError, ValueError, NetnameError
    (NETNAME_NOT_CHECKED_IN, NETNAME_NOT_YOURS)."""
    _name(name, "net.check_out()", "name")
    kr = MN.netname_check_out(_server("check_out"), name, signature.name if signature is not None else 0)
    if kr:
        raise NetnameError(kr, f"netname_check_out({name!r})")


def version() -> str:
    """The local proxy's version string: version, host, incarnation."""
    v = MN.netname_name_t()
    kr = MN.netname_version(_server("version"), v)
    if kr:
        raise NetnameError(kr, "netname_version()")
    return bytes(v.value).decode()
