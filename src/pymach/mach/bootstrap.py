"""<servers/bootstrap.h>: the bootstrap routines with C names and
kern_return_t results, and this process's bootstrap port.

Each routine is a MIG-style request to the bootstrap port with a
MAKE_SEND_ONCE reply port, answered with a return code (the layouts are in
bootstrap_defs).

As a C program has ``bootstrap_port`` before main() runs, a pymach program
has ``bootstrap_port`` (``from pymach.mach import *``): a constant, the name
BOOTSTRAP_PORT_NAME that the task's IPC space keeps for the bootstrap port.
Importing connects nothing. The first use of the name (any lookup of it:
a routine, mach_msg, mach_port_type, task_get_bootstrap_port) connects it:

- from TASK_BOOTSTRAP_PORT when the task has one (inherited across fork
  and by pymach.spawn) and its port lives;
- else through the rendezvous socket (pymach.servers.rendezvous),
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
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator
from ctypes import byref, sizeof
from typing import Any, Final

from ..kern import ipc_right as R
from ..kern import kern_return as K
from ..kern import message_defs as MD
from ..kern.ipc_notify import MACH_NOTIFY_SEND_ONCE
from ..kern.ipc_port import LOCAL_SENDS, SendCap
from ..kern.ipc_space import MACH_PORT_RIGHT_RECEIVE, MACH_PORT_TYPE_DEAD_NAME, MACH_PORT_TYPE_SEND, IpcEntry
from ..kern.task import BOOTSTRAP_PORT_NAME, SELF, TASK_BOOTSTRAP_PORT
from ..servers import rendezvous
from . import bootstrap_defs as D
from ._args import i32, set_out, u32
from .bootstrap_defs import (BOOTSTRAP_MAX_CMD_LEN, BOOTSTRAP_MAX_LOOKUP_COUNT, BOOTSTRAP_MAX_NAME_LEN,  # noqa: F401
                             BOOTSTRAP_BAD_COUNT, BOOTSTRAP_NAME_IN_USE, BOOTSTRAP_NO_CHILDREN, BOOTSTRAP_NO_MEMORY,
                             BOOTSTRAP_NOT_PRIVILEGED, BOOTSTRAP_SERVICE_ACTIVE, BOOTSTRAP_STATUS_ACTIVE,
                             BOOTSTRAP_STATUS_INACTIVE, BOOTSTRAP_STATUS_ON_DEMAND, BOOTSTRAP_SUCCESS,
                             BOOTSTRAP_UNKNOWN_SERVICE, bootstrap_service_array_t, bootstrap_service_info_t,
                             bootstrap_status_t, cmd_t, name_t)
from .mach_port import mach_msg, mach_port_allocate, mach_port_deallocate, mach_port_destroy, mach_port_type
from .mig import mach_msg_destroy, mig_reply_error_t
from .notify import NDR_record_t
from .types import mach_port_t, mach_port_type_t

_NDR = NDR_record_t.from_buffer_copy(D.NDR_RECORD)

bootstrap_port: Final = BOOTSTRAP_PORT_NAME
"""This task's bootstrap port: <servers/bootstrap.h>'s global, connected on
first use."""


def _type(name: int) -> int:
    t = mach_port_type_t()
    return t.value if mach_port_type(SELF.task_name, name, byref(t)) == K.KERN_SUCCESS else 0


class _Connection:
    """This process's bootstrap port.

    ``name`` is its name while connected (one user reference is ours):
    bootstrap_port, or after a reconnect a fresh name. ``stale`` holds the
    names it had before: dead names we keep, so that they are not reused and
    still route to the bootstrap port. ``set_special``: we set
    TASK_BOOTSTRAP_PORT to it ourselves. ``changed``: the program set
    TASK_BOOTSTRAP_PORT, which then is no longer what bootstrap_port
    connects from. ``error`` says why the last connection failed.

    The space's lock guards all of it, so that a lookup of bootstrap_port
    (made under that lock or not) and the routines agree on one connection;
    ``busy`` marks this thread's work inside, during which a lookup of
    bootstrap_port does not connect again."""

    def __init__(self) -> None:
        self.name = 0
        self.stale: set[int] = set()
        self.set_special = False
        self.changed = False
        self.busy = False
        self.error = ""

    def forked(self) -> None:
        # the names were the parent's; TASK_BOOTSTRAP_PORT is inherited and
        # is what the child's bootstrap_port connects from
        self.name = 0
        self.stale = set()
        self.set_special = False
        self.changed = False
        self.busy = False

    @contextlib.contextmanager
    def _locked(self) -> Iterator[bool]:
        """Hold the space's lock; True unless this thread is inside already."""
        with SELF.space.lock:
            outer = not self.busy
            self.busy = True
            try:
                yield outer
            finally:
                if outer:
                    self.busy = False

    def fill(self, name: int) -> IpcEntry | None:
        """A lookup of bootstrap_port found no right under it: connect (see
        the module's docstring). Its entry, or None."""
        with self._locked() as outer:
            if not outer:
                return None
            space = SELF.space
            e = space.peek(name)
            if e is None:  # (else another thread connected it meanwhile)
                kr, current = self._get()
                if kr or current != name:
                    return None
                e = space.peek(name)
            return e

    def get(self) -> tuple[int, int]:
        """(kr, name): the bootstrap port, connected if need be."""
        with self._locked():
            return self._get()

    def _get(self) -> tuple[int, int]:
        if self.name and SELF.space.peek(self.name) is None:
            self.name = 0  # the program released every reference to it
        if not self.name:
            kr = self._connect()
            if kr:
                return kr, 0
        return K.KERN_SUCCESS, self.name

    def _connect(self) -> int:
        fds: list[int] | None = None
        special = None if self.changed else SELF.special.get(TASK_BOOTSTRAP_PORT)
        if isinstance(special, SendCap) and not special.dead():
            try:
                fds = special.dup().detach_fds()
            except OSError as err:
                self.error = f"cannot copy TASK_BOOTSTRAP_PORT: {err}"
                return K.kr_from_oserror(err)
        inherited = fds is not None
        if fds is None:
            path, private = rendezvous.socket_path()
            try:
                try:
                    fds, _pid = rendezvous.connect(path, private)
                except rendezvous.NoServer:
                    if not rendezvous.autostart_enabled():
                        raise
                    rendezvous.autostart()
                    fds, _pid = rendezvous.connect(path, private)
            except rendezvous.NoServer as err:
                self.error = str(err) + ("" if rendezvous.autostart_enabled()
                                         else f" (autostart is off: {rendezvous.NO_AUTOSTART_ENV} is set)")
                return K.MACH_SEND_INVALID_DEST
            except rendezvous.Refused as err:
                self.error = f"refusing the bootstrap rendezvous: {err}"
                return BOOTSTRAP_NOT_PRIVILEGED
            except rendezvous.Busy as err:
                self.error = str(err)
                return BOOTSTRAP_NO_MEMORY
            except OSError as err:
                self.error = f"cannot reach the bootstrap server at {path}: {err}"
                return K.MACH_SEND_INVALID_DEST
        try:
            self.name = self._install(fds)
        except OSError as err:
            self.error = f"cannot install the bootstrap port: {err}"
            return K.kr_from_oserror(err)
        self.error = ""
        if not inherited and not self.changed:
            # as launchd gives every process its bootstrap port: children inherit it
            e = SELF.space.peek(self.name)
            if e is not None and isinstance(e.cap, SendCap):
                try:
                    SELF.set_special(TASK_BOOTSTRAP_PORT, e.cap.dup())
                    self.set_special = True
                except OSError:
                    pass  # no fd for the copy: children connect on their own
        return K.KERN_SUCCESS

    @staticmethod
    def _install(fds: list[int]) -> int:
        """Install a send right to the bootstrap port under bootstrap_port
        while that name is free, else as any send right arrives."""
        space = SELF.space
        with space.lock:
            ino = os.fstat(fds[0]).st_ino
            if space.peek(BOOTSTRAP_PORT_NAME) is None and not space.name_for(("ino", ino)) \
                    and ino not in LOCAL_SENDS:
                cap = SendCap.adopt(fds)
                space.install_reserved(cap, MACH_PORT_TYPE_SEND, 1, ("ino", cap.ino)).cap = cap
                return BOOTSTRAP_PORT_NAME
            return R.copyout_send(space, fds, False)

    def ours(self, name: int) -> bool:
        return name != 0 and (name == self.name or name in self.stale)

    def route(self, name: int) -> int:
        """The name to send to for ``name``: a stale bootstrap name goes to
        the current bootstrap port."""
        if not name or name not in self.stale:
            return name
        with self._locked():
            return self._get()[1] if name in self.stale else name

    def reconnect(self, dead: int) -> int:
        """The bootstrap port ``dead`` turned out dead: connect afresh
        (once per call of a routine). Returns the new name, or 0."""
        with self._locked():
            if self.name and self.name != dead:
                return self.name  # another thread has reconnected already
            if self.name:
                self.stale.add(self.name)
                self.name = 0
            if self.set_special:
                SELF.set_special(TASK_BOOTSTRAP_PORT, None)
                self.set_special = False
            return self.name if self._connect() == K.KERN_SUCCESS else 0

    def special_name(self) -> int:
        """task_get_special_port(TASK_BOOTSTRAP_PORT): a send right to the
        task's bootstrap port under the name the space has for it, one more
        user reference. While it is the port bootstrap_port connects from
        (the program has not set it), it is connected first, or reconnected
        if its server died. MACH_PORT_NULL when the task has none."""
        with self._locked():
            if not self.changed:
                kr, name = self._get()
                if kr == K.KERN_SUCCESS and _type(name) & MACH_PORT_TYPE_DEAD_NAME:
                    self.reconnect(name)
            cap = SELF.special.get(TASK_BOOTSTRAP_PORT)
            if not isinstance(cap, SendCap):
                return 0
            return R.copyout_send(SELF.space, cap.dup().detach_fds(), False)

    def special_changing(self) -> None:
        """The program is about to set TASK_BOOTSTRAP_PORT: bootstrap_port
        keeps standing for the port it was given (an inherited one is taken
        now); later connections of it go through the socket and leave the
        special port alone."""
        with self._locked():
            if not self.changed and not self.name:
                special = SELF.special.get(TASK_BOOTSTRAP_PORT)
                if isinstance(special, SendCap) and not special.dead():
                    try:
                        self.name = self._install(special.dup().detach_fds())
                    except OSError:
                        pass  # then it connects through the socket on first use
            self.changed = True
            self.set_special = False

    def disconnect(self) -> None:
        """Release the bootstrap port and the dead names it left; clear
        TASK_BOOTSTRAP_PORT if we set it; forget that the program set it."""
        with self._locked():
            task = SELF.task_name
            for name in [self.name, *self.stale]:
                if name:
                    mach_port_deallocate(task, name)
            if self.set_special:
                SELF.set_special(TASK_BOOTSTRAP_PORT, None)
            self.name, self.stale, self.set_special, self.changed = 0, set(), False, False


_CONN = _Connection()
SELF.bootstrap = _CONN
os.register_at_fork(after_in_child=_CONN.forked)


def bootstrap_port_connect(bp: Any = None) -> int:
    """Connect this process's bootstrap port if need be (see the module's
    docstring) and store its name in ``bp`` (byref of a mach_port_t):
    bootstrap_port, or after a reconnect the name of the new connection.

    KERN_SUCCESS, MACH_SEND_INVALID_DEST (no server: none listens and
    autostart is off or failed), BOOTSTRAP_NOT_PRIVILEGED (the rendezvous
    belongs to someone else), BOOTSTRAP_NO_MEMORY (the server's limits)."""
    kr, name = _CONN.get()
    if kr == K.KERN_SUCCESS:
        set_out(bp, name)
    return kr


def bootstrap_port_error() -> str:
    """Why the last connection of the bootstrap port failed ('' if it did
    not): the path, and what was wrong with it."""
    return _CONN.error


def get_bootstrap_port() -> int:
    """The connected bootstrap port's name, or MACH_PORT_NULL when it
    cannot be connected (bootstrap_port_error() says why)."""
    return _CONN.get()[1]


def _disconnect() -> None:
    """Forget the bootstrap port and the reply ports (tests; a program that
    switches servers)."""
    _CONN.disconnect()
    with _REPLY_LOCK:
        ports, _REPLIES[:] = list(_REPLIES), []
    for pid, port in ports:
        if pid == os.getpid():
            mach_port_destroy(SELF.task_name, port.value)
    _REPLY.port = None


# -- the exchange -----------------------------------------------------------------------

def _exchange(dest: int, req: ctypes.Structure, msg_id: int, rcv: D.bootstrap_reply_buffer_t) -> int:
    """Send ``req`` to ``dest`` with a fresh MAKE_SEND_ONCE reply port and
    receive the reply into ``rcv``. MIG's codes: MIG_SERVER_DIED when the
    reply right died unanswered, MIG_REPLY_MISMATCH for a stray reply."""
    task = SELF.task_name
    reply = _reply_port()
    if reply is None:
        return K.KERN_RESOURCE_SHORTAGE
    ok = False
    try:
        h = req.Head
        h.msgh_bits = MD.MACH_MSGH_BITS(MD.MACH_MSG_TYPE_COPY_SEND, MD.MACH_MSG_TYPE_MAKE_SEND_ONCE) | (
            h.msgh_bits & MD.MACH_MSGH_BITS_COMPLEX)
        h.msgh_size = sizeof(req)
        h.msgh_remote_port = dest
        h.msgh_local_port = reply.value
        h.msgh_voucher_port = 0
        h.msgh_id = msg_id
        kr = mach_msg(h, MD.MACH_SEND_MSG, sizeof(req), 0, 0, MD.MACH_MSG_TIMEOUT_NONE, 0)
        if kr:
            return kr
        kr = mach_msg(rcv.Head, MD.MACH_RCV_MSG, 0, sizeof(rcv), reply.value, MD.MACH_MSG_TIMEOUT_NONE, 0)
        if kr:
            return kr
        got = rcv.Head.msgh_id
        if got == MACH_NOTIFY_SEND_ONCE:
            return K.MIG_SERVER_DIED
        if got != msg_id + D.REPLY_ID_OFFSET:
            mach_msg_destroy(rcv)
            return K.MIG_REPLY_MISMATCH
        ok = True
        return K.KERN_SUCCESS
    finally:
        if not ok:
            # a reply may still come to it: start the next call afresh
            _REPLY.port = None
            with _REPLY_LOCK:
                _REPLIES[:] = [(p, r) for p, r in _REPLIES if r is not reply]
            mach_port_destroy(task, reply.value)


_REPLY = threading.local()
_REPLIES: list[tuple[int, mach_port_t]] = []  # every thread's, for _disconnect
_REPLY_LOCK = threading.Lock()


def _reply_port() -> mach_port_t | None:
    """This thread's reply port, made once (MIG's mig_get_reply_port); a
    fork child makes its own."""
    cached = getattr(_REPLY, "port", None)
    if cached is not None and _REPLY.pid == os.getpid():
        return cached  # type: ignore[no-any-return]
    reply = mach_port_t()
    if mach_port_allocate(SELF.task_name, MACH_PORT_RIGHT_RECEIVE, byref(reply)):
        return None
    _REPLY.port, _REPLY.pid = reply, os.getpid()
    with _REPLY_LOCK:
        _REPLIES.append((os.getpid(), reply))
    return reply


def _call(bp: Any, req: ctypes.Structure, msg_id: int, rcv: D.bootstrap_reply_buffer_t) -> int:
    """_exchange with the bootstrap port ``bp``. When it is this process's
    bootstrap port and turns out dead (the send fails with
    MACH_SEND_INVALID_DEST, or the reply right dies with the port),
    reconnect once and send again."""
    dest = _CONN.route(u32(bp))
    kr = _exchange(dest, req, msg_id, rcv)
    if _CONN.ours(dest) and (kr == K.MACH_SEND_INVALID_DEST or (
            kr == K.MIG_SERVER_DIED and _type(dest) & MACH_PORT_TYPE_DEAD_NAME)):
        fresh = _CONN.reconnect(dest)
        if fresh:
            kr = _exchange(fresh, req, msg_id, rcv)
    return kr


def _name_request(service_name: Any) -> D.bootstrap_name_request_t | None:
    raw = D.encode_name(service_name)
    if raw is None:
        return None
    req = D.bootstrap_name_request_t()
    req.NDR = _NDR
    req.service_name = raw
    return req


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

def _name_to_port(bp: Any, service_name: Any, msg_id: int, kind: int, sp: Any) -> int:
    """A routine that sends a name and gets a right of ``kind`` into ``sp``."""
    req = _name_request(service_name)
    if req is None:
        return K.KERN_INVALID_ARGUMENT
    rcv = D.bootstrap_reply_buffer_t()
    kr = _call(bp, req, msg_id, rcv)
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
    return _name_to_port(bp, service_name, D.BOOTSTRAP_CHECK_IN_ID, MD.MACH_MSG_TYPE_PORT_RECEIVE, sp)


def bootstrap_create_service(bp: Any, service_name: Any, sp: Any) -> int:
    """Reserve ``service_name`` for a server that will check in later; a
    send right to its port into ``sp``. Until the check-in the bootstrap
    server holds the receive right, look-ups succeed, and messages queue.

    BOOTSTRAP_SUCCESS, BOOTSTRAP_NAME_IN_USE (the name exists),
    BOOTSTRAP_NOT_PRIVILEGED, BOOTSTRAP_NO_MEMORY, KERN_INVALID_ARGUMENT,
    and the MACH_SEND_* / MIG_* codes of the exchange."""
    return _name_to_port(bp, service_name, D.BOOTSTRAP_CREATE_SERVICE_ID, MD.MACH_MSG_TYPE_PORT_SEND, sp)


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
    req = D.bootstrap_register_request_t()
    req.Head.msgh_bits = MD.MACH_MSGH_BITS_COMPLEX
    req.msgh_body.msgh_descriptor_count = 1
    req.service_port.name = u32(sp)
    req.service_port.disposition = MD.MACH_MSG_TYPE_COPY_SEND
    req.service_port.type = MD.MACH_MSG_PORT_DESCRIPTOR
    req.NDR = _NDR
    req.service_name = raw
    rcv = D.bootstrap_reply_buffer_t()
    kr = _call(bp, req, D.BOOTSTRAP_REGISTER_ID, rcv)
    return kr or _ret_code(rcv, success_ok=True)


def bootstrap_look_up(bp: Any, service_name: Any, sp: Any) -> int:
    """A send right to the service ``service_name`` into ``sp``: also for a
    name made by bootstrap_create_service that nobody has checked in yet.

    BOOTSTRAP_SUCCESS, BOOTSTRAP_UNKNOWN_SERVICE, BOOTSTRAP_NOT_PRIVILEGED,
    KERN_INVALID_ARGUMENT, and the MACH_SEND_* / MIG_* codes of the
    exchange."""
    return _name_to_port(bp, service_name, D.BOOTSTRAP_LOOK_UP_ID, MD.MACH_MSG_TYPE_PORT_SEND, sp)


def bootstrap_status(bp: Any, service_name: Any, service_active: Any) -> int:
    """The status of ``service_name`` into ``service_active``:
    BOOTSTRAP_STATUS_ACTIVE (checked in or registered),
    BOOTSTRAP_STATUS_INACTIVE (made by bootstrap_create_service, not
    checked in). pymach has no on-demand servers, so
    BOOTSTRAP_STATUS_ON_DEMAND is never given.

    BOOTSTRAP_SUCCESS, BOOTSTRAP_UNKNOWN_SERVICE, BOOTSTRAP_NOT_PRIVILEGED,
    KERN_INVALID_ARGUMENT, and the MACH_SEND_* / MIG_* codes of the
    exchange."""
    req = _name_request(service_name)
    if req is None:
        return K.KERN_INVALID_ARGUMENT
    rcv = D.bootstrap_reply_buffer_t()
    kr = _call(bp, req, D.BOOTSTRAP_STATUS_ID, rcv)
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
    req = D.bootstrap_list_request_t()
    rcv = D.bootstrap_reply_buffer_t()
    kr = _call(bp, req, D.BOOTSTRAP_LIST_ID, rcv)
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
    "bootstrap_port_error", "get_bootstrap_port", "bootstrap_port",
]
