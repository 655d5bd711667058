"""Exception actions, as XNU keeps them (osfmk/kern/ipc_tt.c,
osfmk/kern/ipc_host.c): for each exception type, a send right to the port
its message goes to, the behavior (which message: EXCEPTION_DEFAULT,
EXCEPTION_STATE, EXCEPTION_STATE_IDENTITY, ..., with or without
MACH_EXCEPTION_CODES) and the thread state flavor it carries (XNU's
struct exception_action). A fault goes to the thread's action for its
type, then the task's, then the host's.

Where the tables live:

- Our own task's: ``SELF.exc_actions`` (kern.task), beside the special
  ports. A fork child inherits it (the send rights are copied, as XNU's
  ipc_task_init copies the parent's), and pymach.spawn passes it down to a
  new program.
- Our own threads': here, per thread (its tid and start time name it),
  made by the first set, as XNU allocates a thread's actions on the first
  set (a get before that finds none: count 0). A fork child starts with
  none, as a new task's threads do.
- Another process's task and threads (task_for_pid, task_threads): here,
  per target, named by pid (and tid) and start time. Another process sees
  only its own settings: a task's actions live in the process that set
  them (docs/deviations.md).
- The host's: here. Setting it needs host_priv; a fork child keeps a copy.

Each table entry owns its send capability: a copy made when it is set,
closed when it is replaced or cleared, or when its task or thread is gone
(checked at each call here; our own task's close with the process).
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Final

from .._linux import procfs
from . import ipc_right as R
from . import kern_return as K
from . import task_user as TU
from . import ipc_port
from .ipc_port import SendCap
from .ipc_space import MACH_PORT_TYPE_DEAD_NAME, MACH_PORT_TYPE_SEND
from .task import EXC_TYPES_COUNT, NO_ACTION, SELF, TASK_FLAVOR_CONTROL, ExcAction, Host, OwnThread, Task, Thread

# <mach/exception_types.h>: the exception types
EXC_BAD_ACCESS: Final = 1  # could not access memory: code a kern_return_t, subcode the address
EXC_BAD_INSTRUCTION: Final = 2  # illegal or undefined instruction or operand
EXC_ARITHMETIC: Final = 3  # arithmetic exception: code says which
EXC_EMULATION: Final = 4  # emulation instruction
EXC_SOFTWARE: Final = 5  # software generated exception: code says which
EXC_BREAKPOINT: Final = 6  # trace, breakpoint
EXC_SYSCALL: Final = 7
EXC_MACH_SYSCALL: Final = 8
EXC_RPC_ALERT: Final = 9
EXC_CRASH: Final = 10  # abnormal process exit
EXC_RESOURCE: Final = 11  # hit a resource consumption limit
EXC_GUARD: Final = 12  # violated guarded resource protections
EXC_CORPSE_NOTIFY: Final = 13  # abnormal process exited to corpse state

# the behaviors: which message goes
EXCEPTION_DEFAULT: Final = 1  # [mach_]exception_raise: thread and task identity
EXCEPTION_STATE: Final = 2  # [mach_]exception_raise_state: the thread's state
EXCEPTION_STATE_IDENTITY: Final = 3  # [mach_]exception_raise_state_identity: both
EXCEPTION_IDENTITY_PROTECTED: Final = 4  # identity as protected (id) ports
EXCEPTION_STATE_IDENTITY_PROTECTED: Final = 5
MACH_EXCEPTION_BACKTRACE_PREFERRED: Final = 0x20000000
MACH_EXCEPTION_ERRORS: Final = 0x40000000
MACH_EXCEPTION_CODES: Final = 0x80000000  # 64-bit codes: mach_exc.defs instead of exc.defs
MACH_EXCEPTION_MASK: Final = MACH_EXCEPTION_CODES | MACH_EXCEPTION_ERRORS | MACH_EXCEPTION_BACKTRACE_PREFERRED

# <mach/i386/exception.h>: no machine-dependent exception type on x86
EXC_MASK_MACHINE: Final = 0

EXC_MASK_BAD_ACCESS: Final = 1 << EXC_BAD_ACCESS
EXC_MASK_BAD_INSTRUCTION: Final = 1 << EXC_BAD_INSTRUCTION
EXC_MASK_ARITHMETIC: Final = 1 << EXC_ARITHMETIC
EXC_MASK_EMULATION: Final = 1 << EXC_EMULATION
EXC_MASK_SOFTWARE: Final = 1 << EXC_SOFTWARE
EXC_MASK_BREAKPOINT: Final = 1 << EXC_BREAKPOINT
EXC_MASK_SYSCALL: Final = 1 << EXC_SYSCALL
EXC_MASK_MACH_SYSCALL: Final = 1 << EXC_MACH_SYSCALL
EXC_MASK_RPC_ALERT: Final = 1 << EXC_RPC_ALERT
EXC_MASK_CRASH: Final = 1 << EXC_CRASH
EXC_MASK_RESOURCE: Final = 1 << EXC_RESOURCE
EXC_MASK_GUARD: Final = 1 << EXC_GUARD
EXC_MASK_CORPSE_NOTIFY: Final = 1 << EXC_CORPSE_NOTIFY
# EXC_MASK_ALL leaves out EXC_CRASH and EXC_CORPSE_NOTIFY, which a handler
# asks for by name; EXC_MASK_VALID (the kernel's) is every type a mask may hold
EXC_MASK_ALL: Final = (EXC_MASK_BAD_ACCESS | EXC_MASK_BAD_INSTRUCTION | EXC_MASK_ARITHMETIC | EXC_MASK_EMULATION
                       | EXC_MASK_SOFTWARE | EXC_MASK_BREAKPOINT | EXC_MASK_SYSCALL | EXC_MASK_MACH_SYSCALL
                       | EXC_MASK_RPC_ALERT | EXC_MASK_RESOURCE | EXC_MASK_GUARD | EXC_MASK_MACHINE)
EXC_MASK_VALID: Final = EXC_MASK_ALL | EXC_MASK_CRASH | EXC_MASK_CORPSE_NOTIFY

FIRST_EXCEPTION: Final = 1  # 0 is illegal

# codes of EXC_SOFTWARE
EXC_SOFT_SIGNAL: Final = 0x10003  # a Unix signal
EXC_MACF_MIN: Final = 0x20000
EXC_MACF_MAX: Final = 0x2FFFF

# <mach/i386/exception.h>
EXCEPTION_CODE_MAX: Final = 2  # code and subcode
EXC_I386_INVOP: Final = 1  # EXC_BAD_INSTRUCTION: invalid opcode
EXC_I386_DIV: Final = 1  # EXC_ARITHMETIC: divide by zero
EXC_I386_INTO: Final = 2
EXC_I386_NOEXT: Final = 3
EXC_I386_EXTOVR: Final = 4
EXC_I386_EXTERR: Final = 5
EXC_I386_EMERR: Final = 6
EXC_I386_BOUND: Final = 7
EXC_I386_SSEEXTERR: Final = 8
EXC_I386_SGL: Final = 1  # EXC_BREAKPOINT: single step
EXC_I386_BPT: Final = 2  # EXC_BREAKPOINT: int3
# the x86 trap numbers
EXC_I386_DIVERR: Final = 0
EXC_I386_SGLSTP: Final = 1
EXC_I386_NMIFLT: Final = 2
EXC_I386_BPTFLT: Final = 3
EXC_I386_INTOFLT: Final = 4
EXC_I386_BOUNDFLT: Final = 5
EXC_I386_INVOPFLT: Final = 6
EXC_I386_NOEXTFLT: Final = 7
EXC_I386_DBLFLT: Final = 8
EXC_I386_EXTOVRFLT: Final = 9
EXC_I386_INVTSSFLT: Final = 10
EXC_I386_SEGNPFLT: Final = 11
EXC_I386_STKFLT: Final = 12
EXC_I386_GPFLT: Final = 13
EXC_I386_PGFLT: Final = 14
EXC_I386_EXTERRFLT: Final = 16
EXC_I386_ALIGNFLT: Final = 17
EXC_I386_ENDPERR: Final = 33
EXC_I386_ENOEXTFLT: Final = 32

# <mach/i386/thread_status.h>: the thread state flavors
x86_THREAD_STATE32: Final = 1
x86_FLOAT_STATE32: Final = 2
x86_EXCEPTION_STATE32: Final = 3
x86_THREAD_STATE64: Final = 4
x86_FLOAT_STATE64: Final = 5
x86_EXCEPTION_STATE64: Final = 6
x86_THREAD_STATE: Final = 7
x86_FLOAT_STATE: Final = 8
x86_EXCEPTION_STATE: Final = 9
x86_DEBUG_STATE32: Final = 10
x86_DEBUG_STATE64: Final = 11
x86_DEBUG_STATE: Final = 12
THREAD_STATE_NONE: Final = 13
x86_AVX_STATE32: Final = 16
x86_AVX_STATE64: Final = 17
x86_AVX_STATE: Final = 18
x86_AVX512_STATE32: Final = 19
x86_AVX512_STATE64: Final = 20
x86_AVX512_STATE: Final = 21
x86_PAGEIN_STATE: Final = 22
x86_THREAD_FULL_STATE64: Final = 23
x86_INSTRUCTION_STATE: Final = 24
x86_LAST_BRANCH_STATE: Final = 25
THREAD_STATE_FLAVORS: Final = 26
# VALID_THREAD_STATE_FLAVOR: the flavors an exception action may name
VALID_THREAD_STATE_FLAVORS: Final = frozenset((
    x86_THREAD_STATE32, x86_FLOAT_STATE32, x86_EXCEPTION_STATE32, x86_DEBUG_STATE32, x86_THREAD_STATE64,
    x86_THREAD_FULL_STATE64, x86_FLOAT_STATE64, x86_EXCEPTION_STATE64, x86_DEBUG_STATE64, x86_THREAD_STATE,
    x86_FLOAT_STATE, x86_EXCEPTION_STATE, x86_DEBUG_STATE, x86_AVX_STATE32, x86_AVX_STATE64, x86_AVX_STATE,
    x86_AVX512_STATE32, x86_AVX512_STATE64, x86_AVX512_STATE, x86_PAGEIN_STATE, x86_INSTRUCTION_STATE,
    x86_LAST_BRANCH_STATE, THREAD_STATE_NONE))

_BEHAVIORS: Final = frozenset((EXCEPTION_DEFAULT, EXCEPTION_STATE, EXCEPTION_STATE_IDENTITY,
                               EXCEPTION_IDENTITY_PROTECTED, EXCEPTION_STATE_IDENTITY_PROTECTED))

# one entry of a get or swap: (mask, the port's name or MACH_PORT_NULL, behavior, flavor)
Entry = tuple[int, int, int, int]


class _Table:
    """The actions of a task or thread of another process, or of one of
    our own threads, and what names it: (pid, tid or 0, start time)."""

    __slots__ = ("ident", "actions")

    def __init__(self, ident: tuple[int, int, int]) -> None:
        self.ident = ident
        self.actions: list[ExcAction] = [NO_ACTION] * EXC_TYPES_COUNT

    def alive(self) -> bool:
        """While its process (or thread) runs: a process that exited and
        is not yet reaped (a zombie, whose /proc entry stays) is gone."""
        pid, tid, start = self.ident
        if procfs.start_time(pid, tid or None) != start:
            return False
        try:
            return procfs.task_state(pid)[1] not in ("Z", "X")
        except OSError:
            return False


_lock = threading.Lock()  # XNU's itk_lock, thread_mtx_lock and host_lock: every table here and SELF.exc_actions
_tables: dict[tuple[int, int, int], _Table] = {}
_host: list[ExcAction] = [NO_ACTION] * EXC_TYPES_COUNT


def _i32(v: int) -> int:
    return (v + (1 << 31)) % (1 << 32) - (1 << 31)


# -- the target: which table a name leads to --------------------------------------------

def _ident(obj: Task) -> tuple[int, int, int]:
    """(pid, tid or 0, start time) of another process's task or of a
    thread. KERN_FAILURE when it is gone (XNU: the task or thread is no
    longer active).

    Conditions: the table lock is held (_actions); takes no lock."""
    tid = obj.tid if isinstance(obj, Thread) else 0
    start = procfs.start_time(obj.pid, tid or None)
    # asked after the read: the start time belongs to the process the port names
    if start is None or (isinstance(obj, OwnThread) and start != obj.start) or not obj.alive():
        raise K.MachError(K.KERN_FAILURE, f"{obj!r} is no longer active")
    return obj.pid, tid, start


def _prune() -> list[object]:
    """Drop the tables whose task or thread is gone; the capabilities
    they held, to be closed.

    Conditions: the table lock is held."""
    out: list[object] = []
    for ident, table in list(_tables.items()):
        if not table.alive():
            del _tables[ident]
            out.extend(cap for cap, _b, _f in table.actions if cap is not None)
            if any(cap is not None for cap, _b, _f in table.actions):
                _dropped.append(ident)
    return out


_dropped: list[tuple[int, int, int]] = []  # tables _prune dropped, for the tracer to hear of (the table lock)


def _tell_dropped() -> None:
    """Tell the tracer of the tables _prune dropped: their actions are gone.

    Conditions: nothing locked; takes the table lock for a moment."""
    with _lock:
        dropped = list(_dropped)
        _dropped.clear()
    if _on_change is None:
        return
    for pid, tid, _start in dropped:
        try:
            _on_change(pid, LEVEL_THREAD if tid else LEVEL_TASK, tid,
                       [(i, [], 0, 0) for i in range(FIRST_EXCEPTION, EXC_TYPES_COUNT)])
        except OSError:
            pass  # its tracer is gone with it


def _sweep() -> None:
    """Release what the tables of tasks and threads that are gone held.

    Conditions: nothing locked; takes the table lock, then releases the
    rights after it."""
    with _lock:
        gone = _prune()
    _close(gone)
    _tell_dropped()


def _target(kind: str, name: int) -> Task | Host:
    """What ``name`` converts to: a task control port ("task"), a thread
    control port ("thread"), host_priv ("host"). MACH_SEND_INVALID_DEST
    (a name that denotes nothing), KERN_INVALID_ARGUMENT (anything else:
    XNU's conversion gives TASK_NULL, THREAD_NULL or HOST_PRIV_NULL, which
    the routine refuses so).

    Conditions: nothing locked; takes the space's lock."""
    if kind == "task":
        return TU.task_of(name, flavor=TASK_FLAVOR_CONTROL)
    if kind == "thread":
        return TU.thread_of(name, TASK_FLAVOR_CONTROL)
    e = SELF.space.lookup(name)
    if e is None:
        raise K.MachError(K.MACH_SEND_INVALID_DEST, f"{name:#x} is not a valid name")
    if not isinstance(e.object, Host):
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"{name:#x} is not the host port")
    if not e.object.privileged:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, "host_priv is needed (root or CAP_IPC_LOCK on Linux)")
    return e.object


def _actions(obj: Task | Host, create: bool) -> list[ExcAction] | None:
    """The table of ``obj``. A thread or another process's task with no
    table gets a new one when ``create``; else a thread has none (None)
    and a task has one with no action set (a copy).

    Conditions: the table lock is held."""
    if isinstance(obj, Host):
        return _host
    if obj.map is not None and not isinstance(obj, Thread):
        return SELF.exc_actions
    ident = _ident(obj)
    table = _tables.get(ident)
    if table is None and create:
        table = _tables[ident] = _Table(ident)
    if table is None:
        return None if isinstance(obj, Thread) else [NO_ACTION] * EXC_TYPES_COUNT
    return table.actions


def _new_cap(name: int) -> SendCap | None:
    """What ``name`` gives as a new exception port, as the message of the
    call would carry it (MACH_MSG_TYPE_COPY_SEND): a copy of its send
    right; None for MACH_PORT_NULL, MACH_PORT_DEAD or a dead name (the
    message carries MACH_PORT_DEAD, which sets no port).

    MACH_SEND_INVALID_RIGHT (no send right under the name: the message
    could not be sent), KERN_INVALID_RIGHT (a send right to a kernel
    object: a task, thread or host port, or a memory entry, which XNU keeps
    out of exception ports).

    Conditions: nothing locked; takes the space's lock."""
    if name in (0, 0xFFFFFFFF):
        return None
    space = SELF.space
    with space.lock:
        e = space.lookup(name)
        if e is not None:
            R.check_dead(space, name, e)
        if e is None or not e.type & (MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_DEAD_NAME):
            raise K.MachError(K.MACH_SEND_INVALID_RIGHT, f"{name:#x} holds no send right")
        if e.type & MACH_PORT_TYPE_DEAD_NAME:
            return None
        cap = e.cap
        if not isinstance(cap, SendCap):
            raise K.MachError(K.KERN_INVALID_RIGHT, f"{name:#x} is a kernel object's port")
        return cap.dup()


def _validate(mask: int, cap: SendCap | None, behavior: int, flavor: int) -> None:
    """XNU's set_exception_ports_validation: KERN_INVALID_ARGUMENT for a
    mask outside EXC_MASK_VALID, an unknown behavior (with a port), a
    flavor VALID_THREAD_STATE_FLAVOR refuses (0 passes), or an identity
    protected behavior without MACH_EXCEPTION_CODES.

    Conditions: none."""
    if mask & ~EXC_MASK_VALID:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"exception mask {mask:#x} outside EXC_MASK_VALID")
    b = behavior & 0xFFFFFFFF
    if cap is not None and b & ~MACH_EXCEPTION_MASK not in _BEHAVIORS:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"exception behavior {b:#x}")
    if flavor != 0 and flavor not in VALID_THREAD_STATE_FLAVORS:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"thread state flavor {flavor}")
    if (b & ~MACH_EXCEPTION_MASK == EXCEPTION_IDENTITY_PROTECTED or b & MACH_EXCEPTION_BACKTRACE_PREFERRED) \
            and not b & MACH_EXCEPTION_CODES:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, "an identity protected behavior needs MACH_EXCEPTION_CODES")


def _same(cap: object | None) -> object:
    """What tells two exception ports apart, as XNU compares port
    pointers: the port, when we hold its receive right; else the
    connection (two connections made by separate MAKE_SENDs to another
    task's port cannot be told to be one port: docs/deviations.md)."""
    if cap is None:
        return None
    ino = cap.ino  # type: ignore[attr-defined]
    port = ipc_port.LOCAL_SENDS.get(ino)
    return ("port", id(port)) if port is not None else ("ino", ino)


def _close(caps: list[object]) -> None:
    """Release send rights the tables held (ipc_port_release_send).

    Conditions: nothing locked: a release may notify (no-senders)."""
    for cap in caps:
        cap.close()  # type: ignore[attr-defined]


# -- the tracer -------------------------------------------------------------------------

# (pid, level, tid, [(exception type, fds of the send right or [], behavior, flavor)])
ChangeHook = Callable[[int, int, int, list[tuple[int, list[int], int, int]]], None]
_on_change: ChangeHook | None = None
LEVEL_TASK: Final = 0
LEVEL_THREAD: Final = 1
LEVEL_HOST: Final = 2


def set_change_hook(hook: ChangeHook) -> None:
    """Install what turns faults into exception messages: it is told each
    change of the actions (pymach.exc_tracer, installed by the package).

    Conditions: nothing locked (set once, at import of the package)."""
    global _on_change
    _on_change = hook


def _changed(obj: Task | Host, actions: list[ExcAction], mask: int) -> None:
    """Tell the tracer the actions of the types in ``mask`` as they now
    are. KERN_FAILURE when no tracer can trace the task.

    Conditions: nothing locked; the table's rights stay open meanwhile
    (a change made by another thread after ours is told after it)."""
    if _on_change is None:
        return
    if isinstance(obj, Host):
        pid, level, tid = os.getpid(), LEVEL_HOST, 0
    elif isinstance(obj, Thread):
        pid, level, tid = obj.pid, LEVEL_THREAD, obj.tid
    else:
        pid, level, tid = (os.getpid() if obj.map is not None else obj.pid), LEVEL_TASK, 0
    changes = []
    for i in range(FIRST_EXCEPTION, EXC_TYPES_COUNT):
        if mask & (1 << i):
            cap, behavior, flavor = actions[i]
            fds = cap.wire_fds() if cap is not None else []  # type: ignore[attr-defined]
            changes.append((i, fds, behavior, flavor))
    try:
        _on_change(pid, level, tid, changes)
    except OSError as err:
        raise K.MachError(K.KERN_FAILURE, f"no tracer for process {pid}: {err}") from err


def _undo(actions: list[ExcAction], before: list[ExcAction], now: list[ExcAction], old: list[object]) -> None:
    """Put back the actions a change replaced, when no tracer could take
    it: the call fails, and nothing changed. The rights it made go to
    ``old``, to be released.

    Conditions: nothing locked; takes the table lock."""
    with _lock:
        for i, (was, made) in enumerate(zip(before, now)):
            if was is not made:
                if actions[i] is made:
                    actions[i] = was
                if made[0] is not None:
                    old.append(made[0])


# -- the routines ---------------------------------------------------------------------

def set_ports(kind: str, target: int, mask: int, new_port: int, behavior: int, flavor: int) -> None:
    """task_set_exception_ports, thread_set_exception_ports,
    host_set_exception_ports (``kind`` "task", "thread", "host"): the
    action of each exception type in ``mask`` becomes a copy of the send
    right ``new_port`` (MACH_PORT_NULL clears it) with ``behavior`` and
    ``flavor``; the rights it replaces are released.

    MACH_SEND_INVALID_DEST (``target`` denotes nothing),
    MACH_SEND_INVALID_RIGHT (``new_port`` holds no send right),
    KERN_INVALID_ARGUMENT (not a task control port, a thread control
    port or host_priv; the checks of _validate), KERN_INVALID_RIGHT
    (``new_port`` is a kernel object's port), KERN_FAILURE (the task or
    thread is gone).

    Conditions: nothing locked; takes the table lock (_sweep), the space's
    lock (the conversions), then the table lock; releases the old rights
    after it."""
    _sweep()
    obj = _target(kind, target)
    cap = _new_cap(new_port)
    old: list[object] = []
    try:
        _validate(mask & 0xFFFFFFFF, cap, behavior, flavor)
        behavior = _i32(behavior)
        with _lock:
            old = _prune()
            actions = _actions(obj, create=True)
            assert actions is not None
            before = list(actions)
            for i in range(FIRST_EXCEPTION, EXC_TYPES_COUNT):
                if mask & (1 << i):
                    actions[i] = (cap.dup() if cap is not None else None, behavior, flavor)
            now = list(actions)
        try:
            _changed(obj, now, mask & 0xFFFFFFFF)
        except K.MachError:
            _undo(actions, before, now, old)
            raise
        old.extend(c for (c, _b, _f), (n, _b2, _f2) in zip(before, now) if c is not None and c is not n)
    finally:
        if cap is not None:
            old.append(cap)  # (the call's own copy: "consume send right")
        _close(old)
        _tell_dropped()


def get_ports(kind: str, target: int, mask: int, room: int) -> list[Entry]:
    """task_get_exception_ports, thread_get_exception_ports,
    host_get_exception_ports: the actions of the types in ``mask``,
    coalesced as XNU returns them: types whose actions have the same port,
    behavior and flavor share one entry, whose mask holds them all; at
    most ``room`` entries (a type that would need another is left out).
    Each port is a new send right (a name) in our space; an unset type has
    MACH_PORT_NULL. A thread whose exception ports were never set has no
    entries.

    The codes of set_ports' target; KERN_INVALID_ARGUMENT (a mask outside
    EXC_MASK_VALID).

    Conditions: nothing locked; takes the table lock (_sweep), the space's
    lock, then the table lock; names the ports after it."""
    _sweep()
    obj = _target(kind, target)
    if mask & 0xFFFFFFFF & ~EXC_MASK_VALID:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"exception mask {mask & 0xFFFFFFFF:#x} outside EXC_MASK_VALID")
    with _lock:
        gone = _prune()
        actions = _actions(obj, create=False)
        found = _coalesce(actions or [], mask, room, stop_when_full=False)
        caps = [(m, cap.dup() if cap is not None else None, b, f) for m, cap, b, f in found]  # type: ignore
    _close(gone)
    _tell_dropped()
    return [(m, _name(cap), b, f) for m, cap, b, f in caps]


def swap_ports(kind: str, target: int, mask: int, new_port: int, behavior: int, flavor: int,
               room: int) -> list[Entry]:
    """task_swap_exception_ports, thread_swap_exception_ports,
    host_swap_exception_ports: set_ports, giving the actions it replaces
    as get_ports does. As XNU's, it walks the types in order and stops
    when ``room`` entries are taken: the types after that keep their
    actions. The codes of set_ports.

    Conditions: as set_ports; names the old ports after the table lock."""
    _sweep()
    obj = _target(kind, target)
    cap = _new_cap(new_port)
    old: list[object] = []
    got: list[tuple[int, object | None, int, int]] = []
    try:
        _validate(mask & 0xFFFFFFFF, cap, behavior, flavor)
        behavior = _i32(behavior)
        with _lock:
            old = _prune()
            actions = _actions(obj, create=True)
            assert actions is not None
            found = _coalesce(actions, mask, room, stop_when_full=True)
            got = [(m, c.dup() if c is not None else None, b, f) for m, c, b, f in found]  # type: ignore
            done = 0
            for m, _c, _b, _f in found:
                done |= m
            before = list(actions)
            for i in range(FIRST_EXCEPTION, EXC_TYPES_COUNT):
                if done & (1 << i):
                    actions[i] = (cap.dup() if cap is not None else None, behavior, flavor)
            now = list(actions)
        try:
            _changed(obj, now, done)
        except K.MachError:
            _undo(actions, before, now, old)
            got = []
            raise
        old.extend(c for (c, _b, _f), (n, _b2, _f2) in zip(before, now) if c is not None and c is not n)
    finally:
        if cap is not None:
            old.append(cap)
        _close(old)
        _tell_dropped()
    return [(m, _name(c), b, f) for m, c, b, f in got]


def _coalesce(actions: list[ExcAction], mask: int, room: int,
              stop_when_full: bool) -> list[tuple[int, object | None, int, int]]:
    """The entries of a get (or, ``stop_when_full``, of a swap, whose walk
    ends when ``room`` entries are taken), with the capabilities the table
    holds.

    Conditions: the table lock is held."""
    out: list[list[object]] = []
    keys: list[tuple[object, int, int]] = []
    if not actions:
        return []
    for i in range(FIRST_EXCEPTION, EXC_TYPES_COUNT):
        if stop_when_full and len(out) >= room:
            break
        if not mask & (1 << i):
            continue
        cap, b, f = actions[i]
        key = (_same(cap), b, f)
        for j, k in enumerate(keys):
            if k == key:
                out[j][0] = int(out[j][0]) | (1 << i)  # type: ignore[call-overload]
                break
        else:
            if len(out) < room:
                keys.append(key)
                out.append([1 << i, cap, b, f])
    return [(int(m), c, int(b), int(f)) for m, c, b, f in out]  # type: ignore[call-overload]


def _name(cap: object | None) -> int:
    """A name in our space for a send right the caller owns (consumed).

    Conditions: nothing locked; takes the space's lock."""
    if cap is None:
        return 0
    return R.copyout_send(SELF.space, cap.detach_fds(), False)  # type: ignore[attr-defined]


# -- a fork child ---------------------------------------------------------------------

def _fork_child() -> None:
    """A fork child: our own task's actions are its own now (kern.task
    keeps them); the tables of threads (ours were the parent's) and of
    other processes go, their fds closed here only. The host's stays.

    Conditions: a fork child; the table lock was taken before the fork."""
    tables = list(_tables.values())
    _tables.clear()
    _lock.release()
    for table in tables:
        for cap, _b, _f in table.actions:
            if cap is not None:
                cap.forget()  # type: ignore[attr-defined]


os.register_at_fork(before=_lock.acquire, after_in_parent=_lock.release, after_in_child=_fork_child)


__all__ = [
    "EXC_BAD_ACCESS", "EXC_BAD_INSTRUCTION", "EXC_ARITHMETIC", "EXC_EMULATION", "EXC_SOFTWARE", "EXC_BREAKPOINT",
    "EXC_SYSCALL", "EXC_MACH_SYSCALL", "EXC_RPC_ALERT", "EXC_CRASH", "EXC_RESOURCE", "EXC_GUARD",
    "EXC_CORPSE_NOTIFY", "EXCEPTION_DEFAULT", "EXCEPTION_STATE", "EXCEPTION_STATE_IDENTITY",
    "EXCEPTION_IDENTITY_PROTECTED", "EXCEPTION_STATE_IDENTITY_PROTECTED", "MACH_EXCEPTION_BACKTRACE_PREFERRED",
    "MACH_EXCEPTION_ERRORS", "MACH_EXCEPTION_CODES", "MACH_EXCEPTION_MASK", "EXC_MASK_MACHINE",
    "EXC_MASK_BAD_ACCESS", "EXC_MASK_BAD_INSTRUCTION", "EXC_MASK_ARITHMETIC", "EXC_MASK_EMULATION",
    "EXC_MASK_SOFTWARE", "EXC_MASK_BREAKPOINT", "EXC_MASK_SYSCALL", "EXC_MASK_MACH_SYSCALL", "EXC_MASK_RPC_ALERT",
    "EXC_MASK_CRASH", "EXC_MASK_RESOURCE", "EXC_MASK_GUARD", "EXC_MASK_CORPSE_NOTIFY", "EXC_MASK_ALL",
    "EXC_MASK_VALID", "FIRST_EXCEPTION", "EXC_SOFT_SIGNAL", "EXC_MACF_MIN", "EXC_MACF_MAX", "EXCEPTION_CODE_MAX",
    "EXC_I386_INVOP", "EXC_I386_DIV", "EXC_I386_INTO", "EXC_I386_NOEXT", "EXC_I386_EXTOVR", "EXC_I386_EXTERR",
    "EXC_I386_EMERR", "EXC_I386_BOUND", "EXC_I386_SSEEXTERR", "EXC_I386_SGL", "EXC_I386_BPT", "EXC_I386_DIVERR",
    "EXC_I386_SGLSTP", "EXC_I386_NMIFLT", "EXC_I386_BPTFLT", "EXC_I386_INTOFLT", "EXC_I386_BOUNDFLT",
    "EXC_I386_INVOPFLT", "EXC_I386_NOEXTFLT", "EXC_I386_DBLFLT", "EXC_I386_EXTOVRFLT", "EXC_I386_INVTSSFLT",
    "EXC_I386_SEGNPFLT", "EXC_I386_STKFLT", "EXC_I386_GPFLT", "EXC_I386_PGFLT", "EXC_I386_EXTERRFLT",
    "EXC_I386_ALIGNFLT", "EXC_I386_ENDPERR", "EXC_I386_ENOEXTFLT", "x86_THREAD_STATE32", "x86_FLOAT_STATE32",
    "x86_EXCEPTION_STATE32", "x86_THREAD_STATE64", "x86_FLOAT_STATE64", "x86_EXCEPTION_STATE64", "x86_THREAD_STATE",
    "x86_FLOAT_STATE", "x86_EXCEPTION_STATE", "x86_DEBUG_STATE32", "x86_DEBUG_STATE64", "x86_DEBUG_STATE",
    "THREAD_STATE_NONE", "x86_AVX_STATE32", "x86_AVX_STATE64", "x86_AVX_STATE", "x86_AVX512_STATE32",
    "x86_AVX512_STATE64", "x86_AVX512_STATE", "x86_PAGEIN_STATE", "x86_THREAD_FULL_STATE64",
    "x86_INSTRUCTION_STATE", "x86_LAST_BRANCH_STATE", "THREAD_STATE_FLAVORS", "VALID_THREAD_STATE_FLAVORS",
    "EXC_TYPES_COUNT",
]
