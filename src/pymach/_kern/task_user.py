"""The task routines: task_for_pid, task_name_for_pid, pid_for_task and
task_info, with XNU's codes (bsd/kern/kern_proc.c, osfmk/kern/task.c).

A task port for another process is a send right in our space whose object
is a kern.task.Task holding a pidfd. It is granted exactly when Linux would
let us ptrace the process: the kernel itself is asked (pidfd_getfd's
PTRACE_MODE_ATTACH_REALCREDS check, the one process_vm_readv makes), so the
uid rules, CAP_SYS_PTRACE and Yama's ptrace_scope (when Yama is built in)
all count, and nothing is re-implemented here.
"""

from __future__ import annotations

import os

from .._linux import files
from .._linux import pidfd
from .._linux import procfs
from . import kern_return as K
from . import ipc_right as R
from .ipc_space import MACH_PORT_TYPE_SEND, MACH_PORT_UREFS_MAX
from .task import SELF, Task, Thread
from .vm_map import VmMap
from .vm_map_foreign import ForeignMap

CLK_TCK = os.sysconf("SC_CLK_TCK")

# <mach/policy.h>
POLICY_TIMESHARE = 1

PTRACE_RULE = ("task_for_pid is granted when Linux lets this process ptrace the target: the same "
               "user (and, with Yama, a ptrace_scope that allows it: 0, or 1 for a descendant), or "
               "CAP_SYS_PTRACE")


def yama_note() -> str:
    """What Yama adds to the rule on this system, for error messages."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = f.read().strip()
    except OSError:
        return "this kernel has no Yama, so only the uid and capability rules apply"
    what = {"0": "classic rules", "1": "descendants only", "2": "CAP_SYS_PTRACE only",
            "3": "no attach at all"}.get(scope, "unknown")
    return f"Yama's ptrace_scope is {scope} ({what})"


def _fail(kr: int, what: str) -> K.MachError:
    return K.MachError(kr, what)


def task_of(name: int, check: bool = True) -> Task:
    """The task behind a name, our own or another process's.
    MACH_SEND_INVALID_DEST when the name denotes nothing or its process has
    exited (its right is then a dead name); KERN_INVALID_ARGUMENT when it
    is not a task. With ``check`` False the process is not asked whether
    it lives (a caller that asks after its work, as a read does).

    Conditions: nothing locked; takes the space's lock (check_dead); the
    task is returned after it is released."""
    s = SELF
    if name == s.task_name:
        return s.task
    with s.space.lock:
        e = s.space.lookup(name)
        if e is not None and check:
            R.check_dead(s.space, name, e)
    if e is None or e.object is None:
        raise _fail(K.MACH_SEND_INVALID_DEST, f"{name:#x} is not a valid name")
    if not isinstance(e.object, Task) or isinstance(e.object, Thread):
        raise _fail(K.KERN_INVALID_ARGUMENT, f"{name:#x} is not a task port")
    return e.object


def task_target(name: int, check: bool = True) -> VmMap | ForeignMap:
    """The map a VM routine reads or writes: ours, or another process's.
    A task name port (task_name_for_pid) is KERN_INVALID_ARGUMENT.

    Conditions: nothing locked; as task_of. ``Task.view`` is made without a
    lock (two threads may each make one)."""
    t = task_of(name, check)
    if t.map is not None:
        return t.map
    if t.name_only:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"{name:#x} is a task name port")
    view = t.view
    if view is None:
        view = t.view = ForeignMap(t)
    return view  # type: ignore[return-value]


def _open_target(pid: int) -> int:
    try:
        return pidfd.open_pid(pid)
    except OSError as err:
        raise _fail(K.KERN_FAILURE, f"no process {pid}: {err.strerror}") from None


def _install(pid: int, fd: int, name_only: bool) -> int:
    """A send right to the task behind ``fd``, coalesced with one we hold
    for the same process (which is the same process while it lives).

    Conditions: nothing locked; takes the space's lock."""
    s = SELF
    key = ("task", pid, name_only)
    with s.space.lock:
        name = s.space.name_for(key)
        if name:
            e = s.space.lookup(name)
            if e is not None:
                R.check_dead(s.space, name, e)
                if isinstance(e.cap, Task) and e.cap.alive() and e.type & MACH_PORT_TYPE_SEND:
                    files.close(fd)  # the caller's fd: it must not close it again
                    e.urefs = min(e.urefs + 1, MACH_PORT_UREFS_MAX)
                    return name
        task = Task(pid, None, fd, name_only)
        name, e = s.space.alloc(task, MACH_PORT_TYPE_SEND, 1, key=key)
        e.cap = task
        return name


def task_for_pid(target_tport: int, pid: int) -> int:
    """The name of a send right to the task of ``pid``; our own pid gives
    mach_task_self().

    KERN_FAILURE: pid 0, ``target_tport`` not a live task port, no such
    process, a zombie, or access refused (see PTRACE_RULE)."""
    if pid == 0:
        raise _fail(K.KERN_FAILURE, "pid 0 is the kernel task")
    try:
        task_of(target_tport)
    except K.MachError:
        raise _fail(K.KERN_FAILURE, f"{target_tport:#x} is not a task port") from None
    if pid == os.getpid():
        return SELF.space.insert(SELF.task, MACH_PORT_TYPE_SEND)
    if pid < 0:
        raise _fail(K.KERN_FAILURE, f"no process {pid}")
    fd = _open_target(pid)
    installed = False
    try:
        if pidfd.exited(fd):
            raise _fail(K.KERN_FAILURE, f"process {pid} has exited")
        try:
            allowed = pidfd.may_ptrace(fd)
        except OSError as err:
            raise _fail(K.KERN_FAILURE, f"process {pid}: {err.strerror}") from None
        if not allowed:
            raise _fail(K.KERN_FAILURE, f"access to process {pid} refused: {PTRACE_RULE}; {yama_note()}")
        name = _install(pid, fd, False)
        installed = True
        return name
    finally:
        if not installed:
            files.close(fd)


def _uids(text: str) -> tuple[int, ...]:
    for line in text.splitlines():
        if line.startswith("Uid:"):
            return tuple(int(x) for x in line.split()[1:])
    return ()


def task_name_for_pid(target_tport: int, pid: int) -> int:
    """The name of a task name port for ``pid``: enough for pid_for_task
    and task_info. Granted as XNU grants it: our own process, root, or a
    process whose effective and real uids are ours.

    KERN_FAILURE: ``target_tport`` not a task port, no such process, a
    zombie, or another user's process."""
    try:
        task_of(target_tport)
    except K.MachError:
        raise _fail(K.KERN_FAILURE, f"{target_tport:#x} is not a task port") from None
    if pid <= 0:
        raise _fail(K.KERN_FAILURE, f"no task name for pid {pid}")
    fd = _open_target(pid)
    installed = False
    try:
        t = Task(pid, None, fd, True)
        try:
            (status,) = ForeignMap(t).proc_text("status")
        except K.MachError:
            raise _fail(K.KERN_FAILURE, f"process {pid} has exited") from None
        uids = _uids(status)
        mine = os.geteuid()
        if not (pid == os.getpid() or mine == 0 or (len(uids) >= 2 and uids[1] == mine and uids[0] == os.getuid())):
            raise _fail(K.KERN_FAILURE, f"process {pid} belongs to another user")
        name = _install(pid, fd, True)
        installed = True
        return name
    finally:
        if not installed:
            files.close(fd)


def pid_for_task(name: int) -> int:
    """The pid of a task (or task name) port.

    KERN_FAILURE: not a task port, or its process has exited."""
    try:
        t = task_of(name)
    except K.MachError:
        raise _fail(K.KERN_FAILURE, f"{name:#x} is not a live task port") from None
    return t.pid


class BasicInfo:
    """What TASK_BASIC_INFO and MACH_TASK_BASIC_INFO report."""

    __slots__ = ("virtual_size", "resident_size", "resident_size_max", "user_time", "system_time",
                 "policy", "suspend_count")

    def __init__(self, vsize: int, rss: int, rss_max: int, utime: float, stime: float) -> None:
        self.virtual_size = vsize
        self.resident_size = rss
        self.resident_size_max = rss_max
        self.user_time = utime
        self.system_time = stime
        self.policy = POLICY_TIMESHARE
        self.suspend_count = 0

    def __repr__(self) -> str:
        from .._format import size
        policy = "TIMESHARE" if self.policy == POLICY_TIMESHARE else str(self.policy)
        return (f"<BasicInfo virtual_size={size(self.virtual_size)} resident_size={size(self.resident_size)} "
                f"resident_size_max={size(self.resident_size_max)} user_time={self.user_time:.2f}s "
                f"system_time={self.system_time:.2f}s policy={policy} suspend_count={self.suspend_count}>")


def task_basic_info(name: int) -> BasicInfo:
    """The basic info of a task from /proc/PID/stat, statm and status
    (through the pidfd-checked path for another process).

    MACH_SEND_INVALID_DEST (a dead task or no such name),
    KERN_INVALID_ARGUMENT (not a task)."""
    t = task_of(name)
    if t.map is not None:
        stat, statm, status = (open(f"/proc/self/{n}").read() for n in ("stat", "statm", "status"))
    else:
        stat, statm, status = ForeignMap(t).proc_text("stat", "statm", "status")
    st = procfs.parse_stat(stat, statm)
    hwm = st.rss_pages * os.sysconf("SC_PAGE_SIZE")
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return BasicInfo(st.vsize, st.rss_pages * os.sysconf("SC_PAGE_SIZE"), hwm,
                     st.utime_ticks / CLK_TCK, st.stime_ticks / CLK_TCK)


# -- suspension, threads and thread state (by ptrace: _kern/vm_remote.py) ---------------

def _other(name: int) -> Task:
    """Another process's task (not a name port). Our own task is
    KERN_NOT_SUPPORTED: stopping or tracing ourselves would deadlock."""
    t = task_of(name)
    if t.map is not None:
        raise _fail(K.KERN_NOT_SUPPORTED, "suspending or tracing our own task")
    if t.name_only:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"{name:#x} is a task name port")
    return t


def task_suspend(name: int) -> None:
    """Stop every thread of the task; counted (task_resume undoes one).
    KERN_INVALID_ARGUMENT, KERN_NOT_SUPPORTED (our own task),
    MACH_SEND_INVALID_DEST (exited), KERN_FAILURE.

    Conditions: nothing locked; takes the space's lock (task_of), then the
    suspend lock (_kern/vm_remote.py), under which it waits up to 5 s for the
    stop."""
    from . import vm_remote
    t = _other(name)
    vm_remote.task_suspend(t.pid, t.pidfd)


def task_resume(name: int) -> None:
    """Undo one task_suspend. KERN_FAILURE when the task is not suspended;
    the codes of task_suspend.

    Conditions: nothing locked; takes the space's lock (task_of), then the
    suspend lock."""
    from . import vm_remote
    t = _other(name)
    vm_remote.task_resume(t.pid, t.pidfd)


def task_threads(name: int) -> list[int]:
    """A send right (a name) for each thread of another task.
    KERN_INVALID_ARGUMENT, KERN_NOT_SUPPORTED, MACH_SEND_INVALID_DEST.

    Conditions: nothing locked; takes the space's lock for each thread."""
    from . import vm_remote
    t = _other(name)
    names = []
    for tid in vm_remote.task_threads(t.pid, t.pidfd):
        key = ("thread", t.pid, tid)
        s = SELF
        with s.space.lock:
            found = s.space.name_for(key)
            e = s.space.lookup(found) if found else None
            if e is not None and isinstance(e.cap, Thread) and e.cap.alive():
                e.urefs = min(e.urefs + 1, MACH_PORT_UREFS_MAX)
                names.append(found)
                continue
            th = Thread(t.pid, tid, files.dup(t.pidfd))
            n, e = s.space.alloc(th, MACH_PORT_TYPE_SEND, 1, key=key)
            e.cap = th
            names.append(n)
    return names


def thread_of(name: int) -> Thread:
    """The thread behind a name. MACH_SEND_INVALID_DEST (nothing, or its
    process exited), KERN_INVALID_ARGUMENT (not a thread).

    Conditions: nothing locked; takes the space's lock (check_dead); the
    thread is returned after it is released."""
    s = SELF
    with s.space.lock:
        e = s.space.lookup(name)
        if e is not None:
            R.check_dead(s.space, name, e)
    if e is None or e.object is None:
        raise _fail(K.MACH_SEND_INVALID_DEST, f"{name:#x} is not a valid name")
    if not isinstance(e.object, Thread):
        raise _fail(K.KERN_INVALID_ARGUMENT, f"{name:#x} is not a thread port")
    return e.object

