"""The task's ports, as XNU's osfmk/kern/ipc_tt.c keeps them: which space a
task port names (convert_port_to_space), the special ports
(task_get_special_port, task_set_special_port) and the registered ports
(mach_ports_register, mach_ports_lookup).

A task has a port of each flavor (kern.task: TASK_FLAVOR_CONTROL, READ,
INSPECT, NAME), each a port of its own: TASK_KERNEL_PORT, TASK_READ_PORT,
TASK_INSPECT_PORT and TASK_NAME_PORT give them, and the flavor of the port
asked through bounds what it may get, so no port leads to a stronger one.

The special and registered ports are send capabilities that the task holds
outside its IPC space (kern.task: ``SELF.special``, ``SELF.registered``):
a fork child inherits them, as on Mach, and pymach.spawn passes them to a
new program. Giving one out makes a name for it in the space, as XNU's
copyout of a send right does (one more user reference under the name the
space already has for the port). TASK_BOOTSTRAP_PORT is also what the
bootstrap port connects from (kern.bootstrap_port).
"""

from __future__ import annotations

from collections.abc import Collection

from . import ipc_right as R
from . import bootstrap_port as BP
from . import kern_return as K
from .ipc_port import SendCap
from .ipc_space import MACH_PORT_TYPE_SEND, IpcSpace
from . import task as KT
from . import task_user as TU
from .task import (SETTABLE_SPECIAL_PORTS, TASK_BOOTSTRAP_PORT, TASK_HOST_PORT, TASK_INSPECT_PORT,
                   TASK_KERNEL_PORT, TASK_MAX_SPECIAL_PORT, TASK_NAME_PORT, TASK_PORT_REGISTER_MAX, TASK_READ_PORT)

# special port numbers <mach/task_special_ports.h> leaves unassigned
_UNASSIGNED_SPECIAL_PORTS = (7, 8)


def space_of(task: int, flavor: int = KT.TASK_FLAVOR_CONTROL) -> IpcSpace:
    """convert_port_to_space: the IPC space of the task that ``task``
    names in ours, through a task port of ``flavor`` or stronger (the
    routines of mach_port.defs take ipc_space_t, a control port, or
    ipc_space_read_t, a read port). Only our own task's space is reachable.

    KERN_INVALID_TASK (another task's port, a port too weak, or any other
    right), MACH_SEND_INVALID_DEST (a name that denotes nothing).

    Conditions: nothing locked; a lookup of the bootstrap port's name may
    connect it (kern.bootstrap_port: the space's lock, waiting up to about
    50 s)."""
    if task != KT.SELF.task_name:
        e = KT.SELF.space.lookup(task)
        t = e.object if e is not None else None
        if isinstance(t, KT.Task) and t.map is not None and t.allows(flavor):
            return KT.SELF.space  # a weaker port of our own task
        raise K.MachError(K.MACH_SEND_INVALID_DEST if e is None else K.KERN_INVALID_TASK, f"{task:#x}")
    return KT.SELF.space


def _special_allowed(which: int, flavor: int) -> bool:
    # XNU's special_port_allowed_with_task_flavor: a control port gets
    # every special port; a read port the read, inspect and name ports; an
    # inspect port the inspect and name ports
    if flavor == KT.TASK_FLAVOR_CONTROL:
        return True
    if flavor == KT.TASK_FLAVOR_READ:
        return which in (TASK_READ_PORT, TASK_INSPECT_PORT, TASK_NAME_PORT)
    return which in (TASK_INSPECT_PORT, TASK_NAME_PORT)


_PORT_FLAVOR = {TASK_KERNEL_PORT: KT.TASK_FLAVOR_CONTROL, TASK_READ_PORT: KT.TASK_FLAVOR_READ,
                TASK_INSPECT_PORT: KT.TASK_FLAVOR_INSPECT, TASK_NAME_PORT: KT.TASK_FLAVOR_NAME}


def get_special_port(task: int, which: int) -> int:
    """task_get_special_port (XNU's task_get_special_port_from_user): a
    name in our space for the special port ``which`` of the task ``task``
    names, one more user reference under the name the space already has
    for the port; MACH_PORT_NULL when none is set.

    ``task`` is converted as task_inspect_t: a control, read or inspect
    port (a name port is KERN_INVALID_ARGUMENT), and the port's flavor
    bounds what it gets, so that no port leads to a stronger one: a read
    port gets TASK_READ_PORT, TASK_INSPECT_PORT and TASK_NAME_PORT, an
    inspect port TASK_INSPECT_PORT and TASK_NAME_PORT
    (KERN_INVALID_CAPABILITY otherwise). TASK_KERNEL_PORT, TASK_READ_PORT,
    TASK_INSPECT_PORT and TASK_NAME_PORT are the task's ports of those
    flavors, each a port (a name) of its own; TASK_HOST_PORT is the host.
    TASK_BOOTSTRAP_PORT is connected first (kern.bootstrap_port): unless
    the program set it, it gives bootstrap_port. The bootstrap and the
    other settable ports of another process are kept in that process, out
    of our reach: KERN_NOT_SUPPORTED.

    MACH_SEND_INVALID_DEST (a name that denotes nothing, or a task that
    exited), KERN_INVALID_ARGUMENT (not a task port, a name port, an
    unknown port), KERN_INVALID_CAPABILITY (a port too weak for
    ``which``), KERN_NOT_SUPPORTED; KERN_NO_SPACE or
    KERN_RESOURCE_SHORTAGE as an OSError (its fds cannot be copied).

    Conditions: nothing locked; takes the space's lock (task_of, insert,
    copyout_send; connecting TASK_BOOTSTRAP_PORT may wait up to about 50 s
    under it); reads the special ports without it."""
    t = TU.task_of(task, flavor=KT.TASK_FLAVOR_INSPECT)
    if not 1 <= which <= TASK_MAX_SPECIAL_PORT or which in _UNASSIGNED_SPECIAL_PORTS:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"special port {which}")
    if not _special_allowed(which, t.flavor):
        raise K.MachError(K.KERN_INVALID_CAPABILITY, f"special port {which} through a task port of flavor {t.flavor}")
    space = KT.SELF.space
    if which in _PORT_FLAVOR:
        return TU.task_port(t, _PORT_FLAVOR[which])
    if which == TASK_HOST_PORT:
        return space.insert(KT.SELF.host, MACH_PORT_TYPE_SEND)
    if t.map is None:
        raise K.MachError(K.KERN_NOT_SUPPORTED, f"special port {which} of another process")
    if which == TASK_BOOTSTRAP_PORT:
        return BP.CONNECTION.special_name()
    if which in SETTABLE_SPECIAL_PORTS:
        cap = KT.SELF.special.get(which)
        return R.copyout_send(space, cap.dup().detach_fds(), False) if cap is not None else 0  # type: ignore[attr-defined]
    raise K.MachError(K.KERN_INVALID_ARGUMENT, f"special port {which}")


def set_special_port(space: IpcSpace, which: int, name: int) -> None:
    """task_set_special_port: the task's special port ``which`` becomes a
    copy of the send right ``name`` (MACH_PORT_NULL clears it). Fork
    children and programs started with pymach.spawn inherit it.
    TASK_BOOTSTRAP_PORT changes what children get, not what bootstrap_port
    stands for (in C, libc's global).

    KERN_INVALID_ARGUMENT (an unknown port), KERN_NO_ACCESS (the task's own
    and the host ports cannot be replaced), KERN_INVALID_NAME,
    KERN_INVALID_RIGHT (not a send right).

    Conditions: nothing locked; reads the entry, turns a dead right into a
    dead name (check_dead) and replaces the special port without the
    space's lock, which kern.bootstrap_port holds to change the same port;
    special_changing takes it."""
    if not 1 <= which <= TASK_MAX_SPECIAL_PORT or which in _UNASSIGNED_SPECIAL_PORTS:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"special port {which}")
    if which not in SETTABLE_SPECIAL_PORTS:
        raise K.MachError(K.KERN_NO_ACCESS, f"special port {which} is the task's own or the host's")
    cap = None
    if name not in (0, 0xFFFFFFFF):
        e = space.lookup(name)
        if e is None:
            raise K.MachError(K.KERN_INVALID_NAME, f"{name:#x}")
        R.check_dead(space, name, e)
        if not e.type & MACH_PORT_TYPE_SEND or e.cap is None:
            raise K.MachError(K.KERN_INVALID_RIGHT, f"{name:#x} holds no send right")
        cap = e.cap.dup()  # type: ignore[attr-defined]
    if which == TASK_BOOTSTRAP_PORT:
        BP.CONNECTION.special_changing()
    KT.SELF.set_special(which, cap)


def ports_register(space: IpcSpace, names: Collection[int]) -> None:
    """mach_ports_register: the task's registered ports become copies of
    the send rights ``names`` (MACH_PORT_NULL and MACH_PORT_DEAD leave a
    slot empty), up to TASK_PORT_REGISTER_MAX; fork children and programs
    started with pymach.spawn inherit them. The count is checked before
    ``names`` is read.

    KERN_INVALID_ARGUMENT (more than TASK_PORT_REGISTER_MAX),
    KERN_INVALID_RIGHT (a name that is not a send right to a port).

    Conditions: nothing locked; reads the entries and replaces the
    registered ports without the space's lock."""
    if len(names) > TASK_PORT_REGISTER_MAX:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"{len(names)} ports: at most {TASK_PORT_REGISTER_MAX}")
    caps: list[object] = []
    for name in list(names):
        if name in (0, 0xFFFFFFFF):
            caps.append(None)
            continue
        e = space.lookup(name)
        if e is None or not e.type & MACH_PORT_TYPE_SEND or not isinstance(e.cap, SendCap):
            for c in caps:
                if c is not None:
                    c.close()  # type: ignore[attr-defined]
            raise K.MachError(K.KERN_INVALID_RIGHT, f"{name:#x} is not a send right to a port")
        caps.append(e.cap.dup())
    caps += [None] * (TASK_PORT_REGISTER_MAX - len(caps))
    for old in KT.SELF.registered:
        if old is not None:
            old.close()  # type: ignore[attr-defined]
    KT.SELF.registered = caps


def ports_lookup(space: IpcSpace) -> list[int]:
    """mach_ports_lookup: a name in ``space`` for each registered port
    (MACH_PORT_NULL for an empty slot), TASK_PORT_REGISTER_MAX of them.

    KERN_NO_SPACE or KERN_RESOURCE_SHORTAGE as an OSError (fds cannot be
    copied).

    Conditions: nothing locked; takes the space's lock for each name
    (copyout_send); reads the registered ports without it."""
    names = []
    for cap in KT.SELF.registered:
        if cap is None:
            names.append(0)
        else:
            names.append(R.copyout_send(space, cap.dup().detach_fds(), False))  # type: ignore[attr-defined]
    return names
