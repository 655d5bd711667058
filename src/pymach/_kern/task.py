"""Tasks and the host, as kernel objects, and our own task's state.

A task is a process. Our own task owns the VM map and the IPC space that the
runtime keeps. After os.fork the child gets a task of its own: a new task
object, a new space with a fresh self name, and the map entries that its
inheritance settings carried over.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Callable, Final, Hashable, Protocol

from .._linux import files, pidfd, procfs
from .._linux.pidfd import ExitPoll
from . import kern_return as K
from .ipc_space import MACH_PORT_TYPE_SEND, IpcEntry, IpcSpace
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


# <mach/mach_types.h>: the flavors of a task port, strongest first. A port
# of one flavor converts to its own flavor and every weaker one, never to a
# stronger (osfmk/kern/ipc_tt.c, task_port_kotype_valid_for_flavor)
TASK_FLAVOR_CONTROL: Final = 0  # task_t: everything
TASK_FLAVOR_READ: Final = 1  # task_read_t: read memory and regions, inspect
TASK_FLAVOR_INSPECT: Final = 2  # task_inspect_t: task_info and the like, no memory
TASK_FLAVOR_NAME: Final = 3  # task_name_t: pid_for_task, task_info
TASK_FLAVOR_MAX: Final = TASK_FLAVOR_NAME
_FLAVOR_NAMES: Final = ("control", "read", "inspect", "name")


class Task:
    """A task port: a process id, the port's flavor and, for our own task,
    its VM map.

    Another process's task (from task_for_pid, task_read_for_pid,
    task_inspect_for_pid or task_name_for_pid) holds a pidfd: its identity.
    ``alive()`` asks the pidfd, so a task whose process exited is dead even
    if its pid now names another process.

    ``flavor`` is the capability the port carries (TASK_FLAVOR_*), fixed
    when the port is made: each routine converts its task argument with
    the flavor it needs (kern.task_user.task_of), as XNU's MIG conversions
    do, so a read port reads memory and regions but never writes or
    controls, an inspect port answers task_info but reads no memory, and a
    name port answers pid_for_task and task_info. Our own task has one
    Task of each flavor (``flavored``); each is a port of its own, so each
    gets a name of its own in the space, as in XNU."""

    __slots__ = ("pid", "map", "pidfd", "flavor", "_poll", "view", "_flavored", "__weakref__")

    def __init__(self, pid: int, vm_map: VmMap | None, pidfd: int = -1,
                 flavor: int = TASK_FLAVOR_CONTROL) -> None:
        self.pid = pid
        self.map = vm_map
        self.pidfd = pidfd
        self.flavor = flavor
        self._poll: ExitPoll | None = None  # asks the pidfd whether the process exited
        self.view: object = None  # its ForeignMap, made once
        self._flavored: dict[int, Task] | None = None  # our own task's ports of the weaker flavors

    def __repr__(self) -> str:
        what = "" if self.flavor == TASK_FLAVOR_CONTROL else f" {_FLAVOR_NAMES[self.flavor]}"
        return f"<Task pid={self.pid}{what}>"

    @property
    def flavor_name(self) -> str:
        """"control", "read", "inspect" or "name"."""
        return _FLAVOR_NAMES[self.flavor]

    @property
    def name_only(self) -> bool:
        """A task name port (task_name_for_pid, TASK_NAME_PORT)."""
        return self.flavor == TASK_FLAVOR_NAME

    def allows(self, flavor: int) -> bool:
        """Whether this port converts to a task of ``flavor``: its own
        flavor or a weaker one (XNU's task_port_kotype_valid_for_flavor)."""
        return self.flavor <= flavor

    def flavored(self, flavor: int) -> Task:
        """Our own task's port of ``flavor`` (this Task for its own
        flavor); the same object every time, so the space names it once.
        Only our own control task makes them."""
        if flavor == self.flavor:
            return self
        assert self.map is not None and self.flavor == TASK_FLAVOR_CONTROL
        ports = self._flavored
        if ports is None:
            ports = self._flavored = {}
        t = ports.get(flavor)
        if t is None:
            t = ports[flavor] = Task(self.pid, self.map, -1, flavor)
        return t

    @property
    def foreign(self) -> bool:
        """A task of another process (it holds a pidfd)."""
        return self.map is None

    def alive(self) -> bool:
        """Our own task always; another one while its process has not
        exited (asked through the pidfd, never through the pid)."""
        if self.map is not None:
            return True
        return not self.exited()  # a pidfd polls readable once its process exited

    def exited(self) -> bool:
        """Another process's task whose process has exited (the pidfd polls
        readable). The hot path of a remote read asks this after its copy."""
        p = self._poll
        if p is None:
            if self.pidfd < 0:
                return True
            p = self._poll = pidfd.exit_poll(self.pidfd)
        return bool(p.poll(0))

    def close(self) -> None:
        """Release the pidfd (the last send right to the task went away)."""
        fd, self.pidfd = self.pidfd, -1
        self._poll = None
        if fd >= 0:
            files.close(fd)

    forget = close  # a fork child drops its parent's task rights the same way


class Thread(Task):
    """A thread of another process (task_threads): its tid, and a pidfd of
    its process, so a reused pid never redirects it."""

    __slots__ = ("tid",)

    def __init__(self, pid: int, tid: int, pidfd: int, flavor: int = TASK_FLAVOR_CONTROL) -> None:
        super().__init__(pid, None, pidfd, flavor)
        self.tid = tid

    def __repr__(self) -> str:
        return f"<Thread {self.tid} of pid {self.pid}>"


class OwnThread(Thread):
    """A thread of our own process (mach_thread_self, task_threads on our
    own task): its tid and its start time, which tell it from a later
    thread that reuses the tid. It holds no fd: it lives while
    /proc/self/task/TID shows the same start time."""

    __slots__ = ("start",)

    def __init__(self, pid: int, tid: int, start: int, flavor: int = TASK_FLAVOR_CONTROL) -> None:
        super().__init__(pid, tid, -1, flavor)
        self.start = start

    def __repr__(self) -> str:
        return f"<Thread {self.tid} of our pid {self.pid}>"

    def alive(self) -> bool:
        """While the thread runs (a fork child's copy of a port is dropped
        with the parent's space)."""
        return procfs.start_time(self.pid, self.tid) == self.start

    def exited(self) -> bool:
        return not self.alive()


def _has_cap_ipc_lock() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 14))
    except OSError:
        pass
    return False


# <mach/task_special_ports.h>
TASK_KERNEL_PORT = 1
TASK_HOST_PORT = 2
TASK_NAME_PORT = 3
TASK_BOOTSTRAP_PORT = 4
TASK_INSPECT_PORT = 5
TASK_READ_PORT = 6
TASK_ACCESS_PORT = 9
TASK_DEBUG_CONTROL_PORT = 10
TASK_RESOURCE_NOTIFY_PORT = 11
TASK_MAX_SPECIAL_PORT = TASK_RESOURCE_NOTIFY_PORT
TASK_PORT_REGISTER_MAX = 3

# special ports a task may set; the others are the task's own or the host's
SETTABLE_SPECIAL_PORTS = (TASK_BOOTSTRAP_PORT, TASK_ACCESS_PORT, TASK_DEBUG_CONTROL_PORT,
                          TASK_RESOURCE_NOTIFY_PORT)

# environment variable through which pymach.spawn hands a child its
# inherited ports: "kind:index=fd/fd,..." (kind "special" or "registered");
# a task exception port is "exception:MASK.BEHAVIOR.FLAVOR=fd/fd", MASK the
# exception types it handles with that behavior and flavor
INHERIT_ENV = "PYMACH_INHERIT_PORTS"

# <mach/i386/exception.h>: the exception types, 0 (illegal) included
EXC_TYPES_COUNT: Final = 14

# an exception action (XNU's struct exception_action): a send capability
# of its own (or None), the behavior, the thread state flavor
ExcAction = tuple[object | None, int, int]
NO_ACTION: Final[ExcAction] = (None, 0, 0)

# The name our space keeps for the bootstrap port, what a C program has in
# bootstrap_port: index 3, first generation, after the names of the task
# (0x103) and of the host (0x203).
BOOTSTRAP_PORT_NAME: Final = 0x303


class BootstrapHooks(Protocol):
    """What kern.bootstrap_port does for the space and the special port."""

    def fill(self, name: int) -> IpcEntry | None:
        """Connect the bootstrap port under ``name``; its entry, or None."""

    def special_name(self) -> int:
        """task_get_special_port(TASK_BOOTSTRAP_PORT): a name, or 0."""

    def special_changing(self) -> None:
        """TASK_BOOTSTRAP_PORT is about to be set by the program."""


class TaskSpace(IpcSpace):
    """Our task's space: an IpcSpace that keeps one name, ``reserved``, for
    the bootstrap port. No other right ever gets that name
    (mach_port_allocate_name on it is KERN_NAME_EXISTS), and while it holds
    no right a lookup of it calls ``fill(name)``, which may install the
    right (install_reserved) and returns its entry, or None. Looking other
    names up costs what it costs in IpcSpace."""

    def __init__(self, reserved: int, fill: Callable[[int], IpcEntry | None]) -> None:
        super().__init__()
        self.reserved = reserved
        self._fill = fill
        self._reserved_index = -1

    def reserve(self) -> None:
        """Take the reserved name's index out of use; made while the table
        ends just before it (a new space).

        Conditions: nothing locked; the space is new, not yet in SELF; takes
        the space's lock."""
        with self.lock:
            idx = self.reserved >> 8
            assert len(self._table) == idx, "the reserved name's index is taken"
            self._table.append(None)
            self._gens.append(self.reserved & 0xFF)
            self._reserved_index = idx

    def lookup(self, name: int) -> IpcEntry | None:
        """The entry a name denotes, or None; for the reserved name while it
        holds no right, what ``fill`` gives.

        Conditions: no lock but the space's may be held. For the reserved
        name while it holds no right it calls ``fill``, which takes the
        space's lock and may wait under it up to about 50 s
        (kern.bootstrap_port connects); any other name takes no lock, as
        IpcSpace.lookup."""
        idx = name >> 8
        if 0 < idx < len(self._table):
            e = self._table[idx]
            if e is not None and e.gen == (name & 0xFF):
                return e
        if name == self.reserved and self._reserved_index > 0:
            return self._fill(name)
        return None

    def peek(self, name: int) -> IpcEntry | None:
        """The entry a name denotes, or None; never fills.

        Conditions: as IpcSpace.lookup; it never fills."""
        return IpcSpace.lookup(self, name)

    def install_reserved(self, obj: object, typ: int, urefs: int, key: Hashable | None) -> IpcEntry:
        """Install rights under the reserved name, which must hold none.

        Conditions: nothing locked, or the space's lock held by this thread;
        takes it."""
        with self.lock:
            idx = self._reserved_index
            assert idx > 0 and self._table[idx] is None
            e = IpcEntry(obj, typ, urefs, self.reserved & 0xFF)
            self._table[idx] = e
            if key is not None:
                self.add_key(self.reserved, e, key)
            return e

    def alloc_name(self, name: int, obj: object, typ: int, urefs: int) -> IpcEntry:
        """IpcSpace.alloc_name; the reserved name (any generation of its
        index) is KERN_NAME_EXISTS (KERN_FAILURE), held or not.

        Conditions: as IpcSpace.alloc_name."""
        if self._reserved_index > 0 and name >> 8 == self._reserved_index:
            raise K.MachError(K.KERN_NAME_EXISTS if name == self.reserved else K.KERN_FAILURE,
                              f"{name:#x}: the bootstrap port's name")
        return super().alloc_name(name, obj, typ, urefs)

    def remove(self, name: int) -> IpcEntry:
        """IpcSpace.remove; the reserved name's index stays out of use.

        Conditions: as IpcSpace.remove."""
        with self.lock:
            e = super().remove(name)
            idx = name >> 8
            if idx == self._reserved_index:
                self._free.remove(idx)
            return e


class _Self:
    """Our task's kernel state, built on first use and rebuilt in a fork
    child.

    Importing pymach builds nothing that holds an fd or a thread: the first
    read of ``space``, ``task``, ``task_name``, ``host``, ``host_name``,
    ``special``, ``registered`` or ``exc_actions`` builds them all (the space with the names
    of the task, the host and the bootstrap port), adopts the ports the task
    inherited, and then runs the callbacks given to ``on_first_use``. After
    that they are plain attributes: reading them costs what it always did.
    The map is there from the start: an empty table, whose fork hooks are
    registered at import as they always were (their order among the
    runtime's fork hooks matters).

    ``special`` and ``registered`` hold send capabilities (each owning its
    fd) that are not names in the space: the special ports and the
    mach_ports_register array. ``exc_actions`` is the task's exception
    actions (kern.exception), one per exception type, each with a send
    capability of its own. A fork child inherits them all, as on Mach, and
    pymach.spawn passes them down to a new program."""

    # built on first use (see _build)
    space: TaskSpace
    task: Task
    task_name: int
    host: Host
    host_name: int
    special: dict[int, object]
    registered: list[object]
    exc_actions: list[ExcAction]

    def __init__(self) -> None:
        self.map = VmMap()  # an empty table until something is mapped
        self.map.install_fork_hooks()
        self.bootstrap: BootstrapHooks | None = None  # set by kern.bootstrap_port, when imported
        self._built = False
        self._building = threading.Lock()
        self._first_use: list[Callable[[], None]] = []
        self._inherited = _claim_inherited()
        os.register_at_fork(before=self._building.acquire, after_in_parent=self._building.release,
                            after_in_child=self._forked)

    def on_first_use(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once the state is built (now, if it is). It runs
        once, in the thread that builds, before a fork can happen; it must
        neither fork nor call on_first_use.

        Conditions: not the build lock, which is not reentrant (so not from
        a first-use callback); takes it. ``fn`` runs later, under it, in the
        thread that builds; or at once, with nothing locked, if the state is
        built."""
        with self._building:
            if not self._built:
                self._first_use.append(fn)
                return
        fn()

    def _build(self) -> None:
        """Conditions: nothing locked; takes the build lock and, under it, the
        new space's lock and what the first-use callbacks take (the
        introspection lock); a fork waits until it returns."""
        with self._building:
            if self._built:
                return
            special, registered, exc_actions = _adopt(self._inherited)
            self._inherited = []
            self.special, self.registered, self.exc_actions = special, registered, exc_actions
            self._new_space()
            self._built = True
            # a class without __getattr__ from now on: CPython specializes
            # attribute reads only on such classes, and SELF.space is read
            # on every message
            self.__class__ = _Self
            hooks, self._first_use = self._first_use, []
            for fn in hooks:  # under the lock: a fork child never misses what they start
                fn()

    def _new_space(self) -> None:
        # every attribute is whole before it is set: another thread that
        # finds one reads it without waiting for the rest
        """Conditions: the build lock is held (_build), or a fork child
        (_forked); takes the new space's lock."""
        space = TaskSpace(BOOTSTRAP_PORT_NAME, self._fill_bootstrap)
        task, host = Task(os.getpid(), self.map), Host()
        task_name = space.insert(task, MACH_PORT_TYPE_SEND)
        host_name = space.insert(host, MACH_PORT_TYPE_SEND)
        space.reserve()
        self.task, self.task_name, self.host, self.host_name = task, task_name, host, host_name
        self.space = space

    def _forked(self) -> None:
        # a fork child: no build was under way (the fork waited for it)
        """Conditions: a fork child, in the forking thread; the build lock is
        held (taken before the fork) and released first; then takes the old
        space's lock and its ports' and sets' locks (renewed), then the new
        space's."""
        self._building.release()
        if self._built:
            self.space.forget_rights()  # a fork child holds none of its parent's rights
            self._new_space()

    def _fill_bootstrap(self, name: int) -> IpcEntry | None:
        hooks = self.bootstrap
        return hooks.fill(name) if hooks is not None else None

    def set_special(self, which: int, cap: object) -> None:
        """Replace a special port (``cap`` a send capability of its own, or
        None); the one it replaces is closed.

        Conditions: nothing required: the special ports have no lock of
        their own. kern.bootstrap_port calls it under the space's lock,
        kern.ipc_tt and pymach.bootstrap without it."""
        old = self.special.pop(which, None)
        if cap is not None:
            self.special[which] = cap
        if old is not None:
            old.close()  # type: ignore[attr-defined]

    def inheritance(self) -> tuple[dict[str, str], list[int]]:
        """The environment entry and the fds that hand our special and
        registered ports to a spawned program.

        Conditions: nothing locked; reads the special and registered ports
        without a lock."""
        items, fds = [], []
        for kind, caps in (("special", list(self.special.items())), ("registered", list(enumerate(self.registered)))):
            for idx, cap in caps:
                if cap is not None:
                    mine = cap.wire_fds()  # type: ignore[attr-defined]
                    fds.extend(mine)
                    items.append(f"{kind}:{idx}=" + "/".join(map(str, mine)))
        # the exception actions, one item per capability (the table copies
        # one for each type it handles)
        by_cap: dict[int, tuple[object, int, int, int]] = {}
        for i, (cap, behavior, flavor) in enumerate(list(self.exc_actions)):
            if cap is not None:
                _c, mask, _b, _f = by_cap.get(id(cap), (cap, 0, behavior, flavor))
                by_cap[id(cap)] = (cap, mask | (1 << i), behavior, flavor)
        for cap, mask, behavior, flavor in by_cap.values():
            mine = cap.wire_fds()  # type: ignore[attr-defined]
            fds.extend(mine)
            items.append(f"exception:{mask}.{behavior & 0xFFFFFFFF}.{flavor}=" + "/".join(map(str, mine)))
        return ({INHERIT_ENV: ",".join(items)} if items else {}), fds


if TYPE_CHECKING:  # (mypy checks every attribute name against _Self)
    _Unbuilt = _Self
else:
    class _Unbuilt(_Self):
        """SELF before its first use: the first read of one of the state's
        attributes builds it (_Self._build), which makes SELF a _Self."""

        def __getattr__(self, attr: str) -> object:
            # called only for an attribute the instance lacks: before the
            # first use, one of the state's
            if attr not in _BUILT:
                raise AttributeError(f"'_Self' object has no attribute {attr!r}")
            self._build()
            return object.__getattribute__(self, attr)


_Claim = tuple[str, tuple[int, ...], list[int], list[int]]


def _claim_inherited() -> list[_Claim]:
    """Take the ports pymach.spawn handed us out of the environment:
    (kind, index (for an exception port: mask, behavior, flavor), fds,
    their inodes) each. Their fds stop being
    inheritable, so that a program we start does not get them, and the
    environment entry goes, so that it does not name them to anyone. No fd
    is made or wrapped here: _adopt does that on first use."""
    spec = os.environ.pop(INHERIT_ENV, "")
    out = []
    for item in filter(None, spec.split(",")):
        try:
            what, fds_s = item.split("=")
            kind, idx_s = what.split(":")
            fds, idx = [int(x) for x in fds_s.split("/")], tuple(int(x) for x in idx_s.split("."))
            inos = [files.inode(fd) for fd in fds]
            for fd in fds:
                files.close_on_exec(fd)
        except (ValueError, OSError):
            continue  # not ours to take: ignore malformed or closed entries
        out.append((kind, idx, fds, inos))
    return out


def _adopt(claims: list[_Claim]) -> tuple[dict[int, object], list[object], list[ExcAction]]:
    """The special and registered ports and the exception actions, as
    send capabilities, from the ports _claim_inherited took."""
    from .ipc_port import SendCap
    special: dict[int, object] = {}
    registered: list[object] = [None] * TASK_PORT_REGISTER_MAX
    exc_actions: list[ExcAction] = [NO_ACTION] * EXC_TYPES_COUNT
    for kind, idxs, fds, inos in claims:
        try:
            if [files.inode(fd) for fd in fds] != inos:
                continue  # closed by the program meanwhile, the number reused: not ours any more
            cap = SendCap.adopt(fds)
        except (ValueError, OSError):
            continue
        idx = idxs[0]
        if kind == "exception" and len(idxs) == 3 and 0 < idx < 1 << EXC_TYPES_COUNT and not idx & 1:
            behavior = (idxs[1] + (1 << 31)) % (1 << 32) - (1 << 31)  # an int, as C has it
            for i in range(1, EXC_TYPES_COUNT):
                if idx & (1 << i):
                    exc_actions[i] = (cap.dup(), behavior, idxs[2])
            cap.close()
        elif len(idxs) != 1:
            cap.close()
        elif kind == "special" and idx in SETTABLE_SPECIAL_PORTS:
            special[idx] = cap
        elif kind == "registered" and 0 <= idx < TASK_PORT_REGISTER_MAX:
            registered[idx] = cap
        else:
            cap.close()
    return special, registered, exc_actions


# the names of the state _Self builds on first use
_BUILT: Final = frozenset(("space", "task", "task_name", "host", "host_name", "special", "registered",
                           "exc_actions"))

SELF = _Unbuilt()
