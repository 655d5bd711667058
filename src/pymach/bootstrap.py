"""The Pythonic bootstrap client: names for ports, through the per-user
bootstrap server (started on demand; see pymach.mach.bootstrap)::

    import pymach.bootstrap as bootstrap

    with bootstrap.check_in("com.example.echo") as port:    # a pymach.Port
        ...
    right = bootstrap.look_up("com.example.echo")           # a pymach.SendRight

Every failure raises BootstrapError, a MachError whose ``kr`` is the code
(BOOTSTRAP_UNKNOWN_SERVICE, BOOTSTRAP_SERVICE_ACTIVE, ... or the
MACH_SEND_* code of an unreachable server) and whose text is
bootstrap_strerror's.

``private_server()`` runs a bootstrap server of this process's own for the
length of a ``with`` block (tests, harnesses, a program that must leave the
user's services alone)::

    with bootstrap.private_server():
        ...                                                 # names live and die with the block
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from ctypes import POINTER, byref, sizeof
from dataclasses import dataclass
from typing import Any

from . import _check as C
from ._linux import rendezvous
from .ipc import Port, SendRight
from ._kern import bootstrap_port as BP
from ._kern import kern_return as K
from ._kern import task as KT
from ._kern.task import TASK_BOOTSTRAP_PORT
from .mach import bootstrap as MB
from .mach import bootstrap_defs as D
from .mach.bootstrap_defs import (BOOTSTRAP_BAD_COUNT, BOOTSTRAP_NAME_IN_USE, BOOTSTRAP_NO_CHILDREN,
                                  BOOTSTRAP_NO_MEMORY, BOOTSTRAP_NOT_PRIVILEGED, BOOTSTRAP_SERVICE_ACTIVE,
                                  BOOTSTRAP_STATUS_ACTIVE, BOOTSTRAP_STATUS_INACTIVE, BOOTSTRAP_STATUS_ON_DEMAND,
                                  BOOTSTRAP_SUCCESS, BOOTSTRAP_UNKNOWN_SERVICE)
from .mach.mach_vm import mach_vm_deallocate
from .mach.types import mach_msg_type_number_t, mach_port_t

__all__ = [
    "BootstrapError", "ServiceInfo", "check_in", "look_up", "register", "create_service", "status", "services",
    "strerror", "private_server", "PrivateServer",
    "BOOTSTRAP_SUCCESS", "BOOTSTRAP_NOT_PRIVILEGED", "BOOTSTRAP_NAME_IN_USE",
    "BOOTSTRAP_UNKNOWN_SERVICE", "BOOTSTRAP_SERVICE_ACTIVE", "BOOTSTRAP_BAD_COUNT", "BOOTSTRAP_NO_MEMORY",
    "BOOTSTRAP_NO_CHILDREN", "BOOTSTRAP_STATUS_INACTIVE", "BOOTSTRAP_STATUS_ACTIVE", "BOOTSTRAP_STATUS_ON_DEMAND",
]


class BootstrapError(K.MachError):
    """A bootstrap routine failed. ``kr`` is the code: one of
    <servers/bootstrap.h> (BOOTSTRAP_NOT_PRIVILEGED ... BOOTSTRAP_NO_CHILDREN,
    which ``MachError(kr)`` maps to this class), or the kern_return_t or
    MACH_SEND_* code the routine gave (KERN_INVALID_ARGUMENT for a bad
    name, MACH_SEND_INVALID_DEST when no server can be reached)."""

    codes = (BOOTSTRAP_NOT_PRIVILEGED, BOOTSTRAP_NAME_IN_USE, BOOTSTRAP_UNKNOWN_SERVICE, BOOTSTRAP_SERVICE_ACTIVE,
             BOOTSTRAP_BAD_COUNT, BOOTSTRAP_NO_MEMORY, BOOTSTRAP_NO_CHILDREN)

    def __str__(self) -> str:
        head = f"{D.strerror(self.kr)} (kr={self.kr})"
        return f"{self.context}: {head}" if self.context else head


BootstrapError.__module__ = "pymach"


@dataclass(frozen=True)
class ServiceInfo:
    """A line of ``pymach bootstrap list``: the name, its status
    (BOOTSTRAP_STATUS_*), and the pid that checked in or registered it
    (None if nobody has)."""

    name: str
    status: int
    pid: int | None

    @property
    def status_name(self) -> str:
        """'active', 'inactive' or 'on-demand'."""
        return D.STATUS_WORDS.get(self.status, str(self.status))

    def __repr__(self) -> str:
        pid = f" pid={self.pid}" if self.pid is not None else ""
        return f"<ServiceInfo {self.name!r} {self.status_name}{pid}>"


def _check(kr: int, what: str) -> None:
    if kr != K.KERN_SUCCESS:
        context = what
        if kr in (K.MACH_SEND_INVALID_DEST, BOOTSTRAP_NOT_PRIVILEGED) and MB.bootstrap_port_error():
            context = f"{what}: {MB.bootstrap_port_error()}"
        raise BootstrapError(kr, context)


def _bootstrap_port() -> int:
    bp = mach_port_t()
    _check(MB.bootstrap_port_connect(byref(bp)), "bootstrap port")
    return bp.value


def strerror(kr: int) -> str:
    """bootstrap_strerror(kr)."""
    return D.strerror(kr)


def check_in(name: str | bytes) -> Port:
    """The receive right of the service ``name`` (new if nobody holds the
    name). Raises TypeError (``name`` not str or bytes), BootstrapError
    (BOOTSTRAP_SERVICE_ACTIVE when a live process has checked in or
    registered it)."""
    C.service_name(name, "bootstrap.check_in()")
    p = mach_port_t()
    _check(MB.bootstrap_check_in(_bootstrap_port(), name, byref(p)), f"bootstrap_check_in({name!r})")
    return Port(p.value)


def look_up(name: str | bytes) -> SendRight:
    """A send right to the service ``name``. Raises TypeError,
    BootstrapError (BOOTSTRAP_UNKNOWN_SERVICE)."""
    C.service_name(name, "bootstrap.look_up()")
    p = mach_port_t()
    _check(MB.bootstrap_look_up(_bootstrap_port(), name, byref(p)), f"bootstrap_look_up({name!r})")
    return SendRight(p.value)


def register(name: str | bytes, right: SendRight | None) -> None:
    """Bind ``name`` to ``right`` (copied; None removes a name made by
    create_service and not checked in). Raises TypeError (``name`` not str
    or bytes, ``right`` not a SendRight or None), BootstrapError
    (BOOTSTRAP_SERVICE_ACTIVE)."""
    C.service_name(name, "bootstrap.register()")
    C.optional(right, SendRight, "bootstrap.register()", "right")
    _check(MB.bootstrap_register(_bootstrap_port(), name, right.name if right is not None else 0),
           f"bootstrap_register({name!r})")


def create_service(name: str | bytes) -> SendRight:
    """Reserve ``name`` for a process that will check in later; a send
    right to its port (messages queue until then). Raises TypeError,
    BootstrapError (BOOTSTRAP_NAME_IN_USE)."""
    C.service_name(name, "bootstrap.create_service()")
    p = mach_port_t()
    _check(MB.bootstrap_create_service(_bootstrap_port(), name, byref(p)), f"bootstrap_create_service({name!r})")
    return SendRight(p.value)


def status(name: str | bytes) -> int:
    """BOOTSTRAP_STATUS_ACTIVE or BOOTSTRAP_STATUS_INACTIVE. Raises
    TypeError, BootstrapError (BOOTSTRAP_UNKNOWN_SERVICE)."""
    C.service_name(name, "bootstrap.status()")
    st = D.bootstrap_status_t()
    _check(MB.bootstrap_status(_bootstrap_port(), name, byref(st)), f"bootstrap_status({name!r})")
    return st.value


def services() -> list[ServiceInfo]:
    """Every service the server knows, by name."""
    arr = POINTER(D.bootstrap_service_info_t)()
    cnt = mach_msg_type_number_t()
    _check(MB.bootstrap_list(_bootstrap_port(), byref(arr), byref(cnt)), "bootstrap_list")
    try:
        return [ServiceInfo(D.text(arr[i].service_name), arr[i].service_active, arr[i].pid or None)
                for i in range(cnt.value)]
    finally:
        if cnt.value:
            mach_vm_deallocate(KT.SELF.task_name, _address(arr), cnt.value * sizeof(D.bootstrap_service_info_t))


@dataclass(frozen=True)
class PrivateServer:
    """The bootstrap server of a ``with private_server()`` block: ``path``
    is its socket, in ``directory`` (made for the block: 0700, ours), and
    ``pid`` its process, a child of ours (None with ``serve=False``)."""

    path: str
    directory: str
    pid: int | None


_SUN_PATH_MAX = 107  # sockaddr_un.sun_path: 108 bytes, the last one NUL


@contextlib.contextmanager
def private_server(*, serve: bool = True) -> Iterator[PrivateServer]:
    """A bootstrap server of this process's own, for the length of a
    ``with`` block, which this process and the children it starts meanwhile
    use instead of the per-user one::

        with bootstrap.private_server() as server:                  # serving server.path
            with bootstrap.check_in("com.example.echo") as port:
                ...                  # a child forked or started here finds it too

    On entry: a fresh directory (0700) for the socket;
    PYMACH_BOOTSTRAP_SOCKET set to the socket and PYMACH_NO_AUTOSTART to 1,
    so that no other server starts there; ``pymach bootstrap serve`` started
    on it as our child, and waited for until it accepts; this process's
    bootstrap port released (as by pymach.mach.bootstrap_port_disconnect)
    and TASK_BOOTSTRAP_PORT set aside. The next use of the bootstrap port
    therefore connects to the new server, and children find it by the
    environment, or by the TASK_BOOTSTRAP_PORT they inherit once this
    process has connected.

    On exit, whatever happened in the block: the bootstrap port released
    again, the server stopped (SIGTERM; SIGKILL after 10 s) and reaped, the
    previous TASK_BOOTSTRAP_PORT and both variables put back, the directory
    removed. No fd, thread or process of the block is left, and the next
    use of the bootstrap port connects afresh, as before the block.

    With ``serve=False`` no server is started: the caller runs one at
    ``path`` itself (tests of the server, a harness that kills and
    restarts its server).

    Blocks nest. The environment and the bootstrap port are the
    process's: enter and leave a block while no other thread uses the
    bootstrap port or changes these variables. Raises BootstrapError with
    MACH_SEND_INVALID_DEST when the server does not start (nothing is left
    behind, then)."""
    import shutil  # (imported on first use: importing pymach stays cheap)
    import subprocess
    import tempfile

    base = tempfile.gettempdir()
    longest = os.path.join(base, "pymach-bootstrap-" + "x" * 8, rendezvous.SOCKET_NAME)  # mkdtemp adds 8
    if len(os.fsencode(longest)) > _SUN_PATH_MAX:
        base = "/tmp"  # $TMPDIR is too deep for a socket path
    directory = tempfile.mkdtemp(prefix="pymach-bootstrap-", dir=base)
    path = os.path.join(directory, rendezvous.SOCKET_NAME)
    saved_env = {k: os.environ.get(k) for k in (rendezvous.SOCKET_ENV, rendezvous.NO_AUTOSTART_ENV)}
    saved_special: object = None
    proc: subprocess.Popen[bytes] | None = None
    try:
        os.environ[rendezvous.SOCKET_ENV] = path
        os.environ[rendezvous.NO_AUTOSTART_ENV] = "1"
        if serve:
            try:
                proc = rendezvous.spawn(dict(os.environ), stdout=subprocess.DEVNULL)
            except rendezvous.NoServer as err:
                raise BootstrapError(K.MACH_SEND_INVALID_DEST, f"private_server(): {err}") from None
        BP.disconnect()
        # a TASK_BOOTSTRAP_PORT we inherited would be connected before the socket
        saved_special = KT.SELF.special.pop(TASK_BOOTSTRAP_PORT, None)
        yield PrivateServer(path, directory, proc.pid if proc is not None else None)
    finally:
        try:
            BP.disconnect()
            KT.SELF.set_special(TASK_BOOTSTRAP_PORT, saved_special)
        finally:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            shutil.rmtree(directory, ignore_errors=True)


def _address(p: Any) -> int:
    from ctypes import c_void_p, cast
    return cast(p, c_void_p).value or 0
