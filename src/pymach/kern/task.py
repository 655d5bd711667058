"""Tasks and the host, as kernel objects, and our own task's state.

A task is a process. Our own task owns the VM map and the IPC space that the
runtime keeps. After os.fork the child gets a task of its own: a new task
object, a new space with a fresh self name, and the map entries that its
inheritance settings carried over.
"""

from __future__ import annotations

import os
import threading

from .ipc_space import MACH_PORT_TYPE_SEND, IpcSpace
from .vm_map import VmMap


class Host:
    """The host port. It acts as host_priv while the process is privileged:
    effective uid 0, or CAP_IPC_LOCK (what Linux asks for wiring memory
    without limit). Checked at each use, so dropping privileges takes
    effect at once."""

    __slots__ = ()

    @property
    def privileged(self) -> bool:
        return os.geteuid() == 0 or _has_cap_ipc_lock()


class Task:
    """A task: a process id and, for our own task, its VM map."""

    __slots__ = ("pid", "map", "__weakref__")

    def __init__(self, pid: int, vm_map: VmMap | None) -> None:
        self.pid = pid
        self.map = vm_map

    def __repr__(self) -> str:
        return f"<Task pid={self.pid}>"


def _has_cap_ipc_lock() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 14))
    except OSError:
        pass
    return False


class _Self:
    """Our task's kernel state, rebuilt in a fork child."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.map = VmMap()
        self.map.install_fork_hooks()
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    # mach_ports_register: up to TASK_PORT_REGISTER_MAX send rights that a
    # fork child inherits (the capabilities own their fds)
    registered: list[object]

    def _reset(self) -> None:
        if not hasattr(self, "registered"):
            self.registered = [None, None, None]
        old = getattr(self, "space", None)
        if old is not None:
            _close_rights(old)  # a fork child holds none of its parent's rights
        self.space = IpcSpace()
        self.task = Task(os.getpid(), self.map)
        self.task_name = self.space.insert(self.task, MACH_PORT_TYPE_SEND)
        self.host = Host()
        self.host_name = self.space.insert(self.host, MACH_PORT_TYPE_SEND)


def _close_rights(space: IpcSpace) -> None:
    """Close, in this process only, every fd behind the rights of ``space``."""
    for _name, e in space.names():
        for o in (e.cap, e.object):
            close = getattr(o, "destroy", None) if not hasattr(o, "sock") else getattr(o, "close", None)
            if close is not None and not isinstance(o, (Task, Host)):
                close()


SELF = _Self()
