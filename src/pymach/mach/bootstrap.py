"""<servers/bootstrap.h>: the bootstrap routines with C names and
kern_return_t results, and this process's bootstrap port.

Each routine is a MIG request to the bootstrap port with a
MAKE_SEND_ONCE reply port, answered with a return code (the messages are
those of pymach's bootstrap.defs: bootstrap_mig, bootstrap_defs).

As a C program has ``bootstrap_port`` before main() runs, a pymach program
has ``bootstrap_port`` (``from pymach.mach import *``): a constant, the name
BOOTSTRAP_PORT_NAME that the task's IPC space keeps for the bootstrap port.
Importing connects nothing. The first use of the name (any lookup of it:
a routine, mach_msg, mach_port_type, task_get_bootstrap_port) connects it:

- from TASK_BOOTSTRAP_PORT when the task has one (inherited across fork
  and by pymach.spawn) and its port lives;
- else through the rendezvous socket (pymach._linux.rendezvous),
  starting the server first if nobody serves it, unless
  PYMACH_NO_AUTOSTART=1. A port got this way becomes the task's
  TASK_BOOTSTRAP_PORT, as launchd gives every process one, so that
  children inherit it.

When no server can be reached the name holds nothing: its uses fail as a
name that denotes nothing does (MACH_SEND_INVALID_DEST for a message),
each use tries again, and bootstrap_port_error() says why.
``bootstrap_port_connect(&port)`` connects it and gives the code:
MACH_SEND_INVALID_DEST when no server can be reached,
BOOTSTRAP_NOT_PRIVILEGED when the rendezvous is not trustworthy (a socket
or directory of another user, a server of another uid), BOOTSTRAP_NO_MEMORY
when the server already holds as many of our connections as its limits
allow.

task_get_bootstrap_port gives the name the space has for the task's
TASK_BOOTSTRAP_PORT with one more user reference, as XNU's copyout does:
bootstrap_port itself. task_set_bootstrap_port changes the special port,
which children inherit, and not what bootstrap_port stands for (in C it is
libc's global, set once at start).

When the bootstrap port turns out dead (the server was killed, perhaps
restarted), a routine called on it reconnects once and sends again; so
does task_get_bootstrap_port. The new connection gets a fresh name; the
old one stays ours as a dead name (a port never comes back to life), and
the routines still accept it as the bootstrap port, so a C program's
``bootstrap_port`` keeps working with them.

The connection, its reconnection and the routines' reply ports are the
kernel's (pymach._kern.bootstrap_port); this module sends the requests
that the stubs generated from pymach's bootstrap.defs build
(bootstrap_mig) and reads the replies with the generated layouts
(bootstrap_defs' structs).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from ctypes import sizeof
from typing import Any, Final

from .._kern import bootstrap_port as BP
from .._kern import kern_return as K
from .._kern import message_defs as MD
from .._kern.task import BOOTSTRAP_PORT_NAME
from . import bootstrap_defs as D
from . import bootstrap_mig as BMIG
from ._args import i32, set_out, u32
from .bootstrap_defs import (BOOTSTRAP_MAX_CMD_LEN, BOOTSTRAP_MAX_LOOKUP_COUNT, BOOTSTRAP_MAX_NAME_LEN,  # noqa: F401
                             BOOTSTRAP_BAD_COUNT, BOOTSTRAP_NAME_IN_USE, BOOTSTRAP_NO_CHILDREN, BOOTSTRAP_NO_MEMORY,
                             BOOTSTRAP_NOT_PRIVILEGED, BOOTSTRAP_SERVICE_ACTIVE, BOOTSTRAP_STATUS_ACTIVE,
                             BOOTSTRAP_STATUS_INACTIVE, BOOTSTRAP_STATUS_ON_DEMAND, BOOTSTRAP_SUCCESS,
                             BOOTSTRAP_UNKNOWN_SERVICE, bootstrap_service_array_t, bootstrap_service_info_t,
                             bootstrap_status_t, cmd_t, name_t)
from .mig import exchange, mach_msg_destroy, mig_reply_error_t

bootstrap_port: Final = BOOTSTRAP_PORT_NAME
"""This task's bootstrap port: <servers/bootstrap.h>'s global, connected on
first use."""


def bootstrap_port_connect(bp: Any = None) -> int:
    """Connect this process's bootstrap port if need be (see the module's
    docstring) and store its name in ``bp`` (byref of a mach_port_t):
    bootstrap_port, or after a reconnect the name of the new connection.

    KERN_SUCCESS, MACH_SEND_INVALID_DEST (no server: none listens and
    autostart is off or failed), BOOTSTRAP_NOT_PRIVILEGED (the rendezvous
    belongs to someone else), BOOTSTRAP_NO_MEMORY (the server's limits)."""
    kr, name = BP.connect()
    if kr == K.KERN_SUCCESS:
        set_out(bp, name)
    return kr


def bootstrap_port_error() -> str:
    """Why the last connection of the bootstrap port failed ('' if it did
    not): the path, and what was wrong with it."""
    return BP.error()


def get_bootstrap_port() -> int:
    """The connected bootstrap port's name, or MACH_PORT_NULL when it
    cannot be connected (bootstrap_port_error() says why)."""
    return BP.connect()[1]


def bootstrap_port_disconnect() -> None:
    """Release this process's bootstrap port (and TASK_BOOTSTRAP_PORT if
    connecting set it), the dead names it left and every thread's reply
    port; the next use of bootstrap_port connects afresh (a program that
    switches servers)."""
    BP.disconnect()


# -- the exchange -----------------------------------------------------------------------

def _call(bp: Any, build: Callable[[int, int], bytes], msg_id: int, rcv: D.bootstrap_reply_buffer_t) -> int:
    """mig.exchange with the bootstrap port ``bp``, reconnected once if it is
    this process's and turns out dead (kern.bootstrap_port.call)."""
    return BP.call(u32(bp), lambda dest: exchange(dest, build, msg_id, rcv))


def _ret_code(rcv: D.bootstrap_reply_buffer_t, success_ok: bool = False) -> int:
    """The return code of a simple reply (mig_reply_error_t). A reply of
    another shape, or a success where data was due, is MIG_TYPE_ERROR."""
    h = rcv.Head
    r = mig_reply_error_t.from_buffer(rcv)
    if h.msgh_bits & MD.MACH_MSGH_BITS_COMPLEX or h.msgh_size != sizeof(mig_reply_error_t) or (
            r.RetCode == K.KERN_SUCCESS and not success_ok):
        mach_msg_destroy(rcv)
        return K.MIG_TYPE_ERROR
    return int(r.RetCode)


def _port_reply(rcv: D.bootstrap_reply_buffer_t, disposition: int, sp: Any) -> int:
    """A reply that carries a port (success) or a return code."""
    h = rcv.Head
    if not h.msgh_bits & MD.MACH_MSGH_BITS_COMPLEX:
        return _ret_code(rcv)
    r = D.bootstrap_port_reply_t.from_buffer(rcv)
    d = r.service_port
    if (h.msgh_size != sizeof(D.bootstrap_port_reply_t) or r.msgh_body.msgh_descriptor_count != 1
            or d.type != MD.MACH_MSG_PORT_DESCRIPTOR or d.disposition != disposition):
        mach_msg_destroy(rcv)
        return K.MIG_TYPE_ERROR
    set_out(sp, d.name)
    return K.KERN_SUCCESS


# -- the routines ---------------------------------------------------------------------------

def _name_to_port(bp: Any, service_name: Any, stub: Callable[..., bytes], msg_id: int, kind: int, sp: Any) -> int:
    """A routine that sends a name and gets a right of ``kind`` into ``sp``."""
    raw = D.encode_name(service_name)
    if raw is None:
        return K.KERN_INVALID_ARGUMENT
    rcv = D.bootstrap_reply_buffer_t()
    kr = _call(bp, lambda dest, reply: stub(dest, raw, reply_port=reply), msg_id, rcv)
    return kr or _port_reply(rcv, kind, sp)


def bootstrap_check_in(bp: Any, service_name: Any, sp: Any) -> int:
    """The receive right of the service ``service_name`` into ``sp``. A
    name nobody holds gets a new port (as launchd does for a process
    outside its jobs); a name made by bootstrap_create_service gives the
    port made then, with the messages already sent to it.

    BOOTSTRAP_SUCCESS, BOOTSTRAP_SERVICE_ACTIVE (a live process checked in
    or registered the name), BOOTSTRAP_NOT_PRIVILEGED (the request came
    from another uid), BOOTSTRAP_NO_MEMORY, KERN_INVALID_ARGUMENT (a name
    that is empty, longer than 127 bytes or holds a NUL), and the
    MACH_SEND_* / MIG_* codes of the exchange."""
    return _name_to_port(bp, service_name, BMIG.bootstrap_check_in, D.BOOTSTRAP_CHECK_IN_ID,
                         MD.MACH_MSG_TYPE_PORT_RECEIVE, sp)


def bootstrap_create_service(bp: Any, service_name: Any, sp: Any) -> int:
    """Reserve ``service_name`` for a server that will check in later; a
    send right to its port into ``sp``. Until the check-in the bootstrap
    server holds the receive right, look-ups succeed, and messages queue.

    BOOTSTRAP_SUCCESS, BOOTSTRAP_NAME_IN_USE (the name exists),
    BOOTSTRAP_NOT_PRIVILEGED, BOOTSTRAP_NO_MEMORY, KERN_INVALID_ARGUMENT,
    and the MACH_SEND_* / MIG_* codes of the exchange."""
    return _name_to_port(bp, service_name, BMIG.bootstrap_create_service, D.BOOTSTRAP_CREATE_SERVICE_ID,
                         MD.MACH_MSG_TYPE_PORT_SEND, sp)


def bootstrap_register(bp: Any, service_name: Any, sp: Any) -> int:
    """Bind ``service_name`` to the send right ``sp`` (copied). Over a name
    made by bootstrap_create_service and not checked in, the new right
    replaces it; MACH_PORT_NULL removes such a name.

    BOOTSTRAP_SUCCESS, BOOTSTRAP_SERVICE_ACTIVE (a live process checked in
    or registered the name: what launchd's and mach_init's code return),
    BOOTSTRAP_NOT_PRIVILEGED, BOOTSTRAP_NO_MEMORY, KERN_INVALID_ARGUMENT,
    MACH_SEND_INVALID_RIGHT (``sp`` is not a send right), and the
    MACH_SEND_* / MIG_* codes of the exchange."""
    raw = D.encode_name(service_name)
    if raw is None:
        return K.KERN_INVALID_ARGUMENT
    right = u32(sp)
    rcv = D.bootstrap_reply_buffer_t()
    kr = _call(bp, lambda dest, reply: BMIG.bootstrap_register(dest, raw, right, reply_port=reply),
               D.BOOTSTRAP_REGISTER_ID, rcv)
    return kr or _ret_code(rcv, success_ok=True)


def bootstrap_look_up(bp: Any, service_name: Any, sp: Any) -> int:
    """A send right to the service ``service_name`` into ``sp``: also for a
    name made by bootstrap_create_service that nobody has checked in yet.

    BOOTSTRAP_SUCCESS, BOOTSTRAP_UNKNOWN_SERVICE, BOOTSTRAP_NOT_PRIVILEGED,
    KERN_INVALID_ARGUMENT, and the MACH_SEND_* / MIG_* codes of the
    exchange."""
    return _name_to_port(bp, service_name, BMIG.bootstrap_look_up, D.BOOTSTRAP_LOOK_UP_ID,
                         MD.MACH_MSG_TYPE_PORT_SEND, sp)


def bootstrap_status(bp: Any, service_name: Any, service_active: Any) -> int:
    """The status of ``service_name`` into ``service_active``:
    BOOTSTRAP_STATUS_ACTIVE (checked in or registered),
    BOOTSTRAP_STATUS_INACTIVE (made by bootstrap_create_service, not
    checked in). pymach has no on-demand servers, so
    BOOTSTRAP_STATUS_ON_DEMAND is never given.

    BOOTSTRAP_SUCCESS, BOOTSTRAP_UNKNOWN_SERVICE, BOOTSTRAP_NOT_PRIVILEGED,
    KERN_INVALID_ARGUMENT, and the MACH_SEND_* / MIG_* codes of the
    exchange."""
    raw = D.encode_name(service_name)
    if raw is None:
        return K.KERN_INVALID_ARGUMENT
    rcv = D.bootstrap_reply_buffer_t()
    kr = _call(bp, lambda dest, reply: BMIG.bootstrap_status(dest, raw, reply_port=reply), D.BOOTSTRAP_STATUS_ID, rcv)
    if kr:
        return kr
    h = rcv.Head
    if not h.msgh_bits & MD.MACH_MSGH_BITS_COMPLEX and h.msgh_size == sizeof(D.bootstrap_status_reply_t):
        r = D.bootstrap_status_reply_t.from_buffer(rcv)
        if r.RetCode:
            return int(r.RetCode)
        set_out(service_active, r.service_active)
        return K.KERN_SUCCESS
    return _ret_code(rcv)


def bootstrap_list(bp: Any, services: Any, servicesCnt: Any) -> int:
    """pymach's: every service, as an array of bootstrap_service_info_t in
    new memory (``services`` is byref of a bootstrap_service_array_t;
    release it with mach_vm_deallocate, ``servicesCnt`` records long), as
    MIG returns out-of-line arrays.

    BOOTSTRAP_SUCCESS, BOOTSTRAP_NOT_PRIVILEGED, BOOTSTRAP_NO_MEMORY, and
    the MACH_SEND_* / MIG_* codes of the exchange."""
    rcv = D.bootstrap_reply_buffer_t()
    kr = _call(bp, lambda dest, reply: BMIG.bootstrap_list(dest, reply_port=reply), D.BOOTSTRAP_LIST_ID, rcv)
    if kr:
        return kr
    h = rcv.Head
    if not h.msgh_bits & MD.MACH_MSGH_BITS_COMPLEX:
        return _ret_code(rcv)
    r = D.bootstrap_list_reply_t.from_buffer(rcv)
    d = r.services
    if (h.msgh_size != sizeof(D.bootstrap_list_reply_t) or r.msgh_body.msgh_descriptor_count != 1
            or d.type != MD.MACH_MSG_OOL_DESCRIPTOR
            or d.size != r.servicesCnt * sizeof(bootstrap_service_info_t)
            or (d.size and not d.address)):
        mach_msg_destroy(rcv)
        return K.MIG_TYPE_ERROR
    set_out(services, d.address or 0)
    set_out(servicesCnt, r.servicesCnt)
    return K.KERN_SUCCESS


def bootstrap_strerror(r: Any) -> str:
    """launchd's bootstrap_strerror: the bootstrap codes' own strings,
    mach_error_string for the rest."""
    return D.strerror(i32(r))


__all__ = [
    "BOOTSTRAP_MAX_NAME_LEN", "BOOTSTRAP_MAX_CMD_LEN", "BOOTSTRAP_MAX_LOOKUP_COUNT", "BOOTSTRAP_SUCCESS",
    "BOOTSTRAP_NOT_PRIVILEGED", "BOOTSTRAP_NAME_IN_USE", "BOOTSTRAP_UNKNOWN_SERVICE",
    "BOOTSTRAP_SERVICE_ACTIVE", "BOOTSTRAP_BAD_COUNT", "BOOTSTRAP_NO_MEMORY", "BOOTSTRAP_NO_CHILDREN",
    "BOOTSTRAP_STATUS_INACTIVE", "BOOTSTRAP_STATUS_ACTIVE", "BOOTSTRAP_STATUS_ON_DEMAND", "name_t", "cmd_t",
    "bootstrap_status_t", "bootstrap_service_info_t", "bootstrap_service_array_t",
    "bootstrap_check_in", "bootstrap_create_service", "bootstrap_register", "bootstrap_look_up",
    "bootstrap_status", "bootstrap_list", "bootstrap_strerror", "bootstrap_port_connect",
    "bootstrap_port_error", "get_bootstrap_port", "bootstrap_port_disconnect", "bootstrap_port",
]
