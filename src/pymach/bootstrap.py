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
"""

from __future__ import annotations

from ctypes import POINTER, byref, sizeof
from dataclasses import dataclass
from typing import Any

from . import _check as C
from .ipc import Port, SendRight
from .kern import kern_return as K
from .kern.task import SELF
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
    "strerror", "BOOTSTRAP_SUCCESS", "BOOTSTRAP_NOT_PRIVILEGED", "BOOTSTRAP_NAME_IN_USE",
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
            mach_vm_deallocate(SELF.task_name, _address(arr), cnt.value * sizeof(D.bootstrap_service_info_t))


def _address(p: Any) -> int:
    from ctypes import c_void_p, cast
    return cast(p, c_void_p).value or 0
