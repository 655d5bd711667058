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

import errno
import os
import threading
from collections.abc import Callable

from .._linux import files
from .._linux import pidfd
from .._linux import procfs
from . import kern_return as K
from . import ipc_right as R
from .ipc_space import MACH_PORT_TYPE_SEND, MACH_PORT_UREFS_MAX
from .task import (SELF, TASK_FLAVOR_CONTROL, TASK_FLAVOR_INSPECT, TASK_FLAVOR_NAME, TASK_FLAVOR_READ, OwnThread,
                   Task, Thread)
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


def task_of(name: int, check: bool = True, flavor: int = TASK_FLAVOR_CONTROL) -> Task:
    """The task behind a name, our own or another process's, converted as
    XNU's convert_port_to_task_with_flavor does: the port must carry
    ``flavor`` or a stronger one (the default, TASK_FLAVOR_CONTROL, takes
    a control port only). MACH_SEND_INVALID_DEST when the name denotes
    nothing or its process has exited (its right is then a dead name);
    KERN_INVALID_ARGUMENT when it is not a task, or a port of a weaker
    flavor (XNU's conversion gives TASK_NULL, which the routines refuse
    with KERN_INVALID_ARGUMENT). With ``check`` False the process is not
    asked whether it lives (a caller that asks after its work, as a read
    does).

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
    t = e.object
    if not isinstance(t, Task) or isinstance(t, Thread):
        raise _fail(K.KERN_INVALID_ARGUMENT, f"{name:#x} is not a task port")
    if t.flavor > flavor:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"{name:#x} is a task {_FLAVORS[t.flavor]} port: "
                                             f"this needs a {_FLAVORS[flavor]} port")
    return t


_FLAVORS = ("control", "read", "inspect", "name")


def task_target(name: int, check: bool = True, flavor: int = TASK_FLAVOR_CONTROL) -> VmMap | ForeignMap:
    """The map a VM routine reads or writes: ours, or another process's
    (convert_port_to_map: a control port; with ``flavor``
    TASK_FLAVOR_READ, convert_port_to_map_read: a read port will do). A
    port of a weaker flavor (inspect, name) is KERN_INVALID_ARGUMENT.

    Conditions: nothing locked; as task_of. ``Task.view`` is made without a
    lock (two threads may each make one)."""
    t = task_of(name, check, flavor)
    if t.map is not None:
        return t.map
    view = t.view
    if view is None:
        view = t.view = ForeignMap(t)
    return view  # type: ignore[return-value]


def _open_target(pid: int) -> int:
    try:
        return pidfd.open_pid(pid)
    except OSError as err:
        raise _fail(K.KERN_FAILURE, f"no process {pid}: {err.strerror}") from None


def _install(pid: int, fd: int, flavor: int) -> int:
    """A send right to the task port of ``flavor`` behind ``fd``, coalesced
    with one we hold for the same process and flavor (which is the same
    port while the process lives). ``fd`` is taken once it returns; on an
    error the caller still owns it.

    Conditions: nothing locked; takes the space's lock."""
    s = SELF
    key = ("task", pid, flavor)
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
        task = Task(pid, None, fd, flavor)
        name, e = s.space.alloc(task, MACH_PORT_TYPE_SEND, 1, key=key)
        e.cap = task
        return name


def task_port(t: Task, flavor: int) -> int:
    """A send right (a name, one more user reference) to the port of
    ``flavor`` of the task ``t`` denotes: for our own task its port of that
    flavor (the same name every time), for another process's a port over a
    duplicate of its pidfd. ``t`` must allow ``flavor``.

    MACH_SEND_INVALID_DEST (its process exited); KERN_RESOURCE_SHORTAGE or
    KERN_NO_SPACE as an OSError (no fd for the duplicate).

    Conditions: nothing locked; takes the space's lock."""
    assert t.allows(flavor)
    if t.map is not None:
        return SELF.space.insert(SELF.task.flavored(flavor), MACH_PORT_TYPE_SEND)
    if not t.alive() or t.pidfd < 0:
        raise _fail(K.MACH_SEND_INVALID_DEST, f"task of pid {t.pid} has exited")
    fd = files.dup(t.pidfd)
    try:
        return _install(t.pid, fd, flavor)
    except BaseException:
        files.close(fd)
        raise


def task_for_pid(target_tport: int, pid: int) -> int:
    """The name of a send right to the task of ``pid``; our own pid gives
    mach_task_self().

    KERN_FAILURE: pid 0, ``target_tport`` not a live task control port
    (port_name_to_task), no such process, a zombie, or access refused
    (see PTRACE_RULE)."""
    if pid == 0:
        raise _fail(K.KERN_FAILURE, "pid 0 is the kernel task")
    try:
        task_of(target_tport)
    except K.MachError:
        raise _fail(K.KERN_FAILURE, f"{target_tport:#x} is not a task control port") from None
    if pid == os.getpid():
        return SELF.space.insert(SELF.task, MACH_PORT_TYPE_SEND)
    if pid < 0:
        raise _fail(K.KERN_FAILURE, f"no process {pid}")
    return _grant(pid, TASK_FLAVOR_CONTROL, lambda _errno, why: _fail(K.KERN_FAILURE, why))


def task_flavor_for_pid(target_tport: int, pid: int, flavor: int) -> int:
    """task_read_for_pid (TASK_FLAVOR_READ) and task_inspect_for_pid
    (TASK_FLAVOR_INSPECT), XNU's BSD system calls (bsd/kern/kern_proc.c):
    the name of a send right to the task port of ``flavor`` for ``pid``;
    our own pid gives our own port of that flavor (the name
    task_get_special_port gives). Granted by task_for_pid's rule (see
    PTRACE_RULE), as XNU's task_for_pid_posix_check grants both.

    They fail with an errno, as system calls do (an OSError that is not a
    MachError): EPERM (pid 0, access refused, a zombie), EINVAL
    (``target_tport`` not a task control port), ESRCH (no such
    process).

    Conditions: nothing locked; takes the space's lock."""
    assert flavor in (TASK_FLAVOR_READ, TASK_FLAVOR_INSPECT)
    what = "task_read_for_pid" if flavor == TASK_FLAVOR_READ else "task_inspect_for_pid"
    if pid == 0:
        raise OSError(errno.EPERM, f"{what}: pid 0 is the kernel task")
    try:
        task_of(target_tport)
    except K.MachError:
        raise OSError(errno.EINVAL, f"{what}: {target_tport:#x} is not a task control port") from None
    if pid == os.getpid():
        return task_port(SELF.task, flavor)
    if pid < 0:
        raise OSError(errno.ESRCH, f"{what}: no process {pid}")
    return _grant(pid, flavor, lambda err, why: OSError(err, f"{what}: {why}"))


def _grant(pid: int, flavor: int, fail: Callable[[int, str], Exception]) -> int:
    """The name of a send right to the task port of ``flavor`` for another
    process ``pid``, granted by PTRACE_RULE. A refusal raises ``fail(errno,
    why)``: ESRCH (no such process), EPERM (a zombie, or access refused).

    Conditions: nothing locked; takes the space's lock (_install)."""
    try:
        fd = pidfd.open_pid(pid)
    except OSError as err:
        raise fail(errno.ESRCH, f"no process {pid}: {err.strerror}") from None
    installed = False
    try:
        if pidfd.exited(fd):
            raise fail(errno.EPERM, f"process {pid} has exited")
        try:
            allowed = pidfd.may_ptrace(fd)
        except OSError as err:
            raise fail(errno.ESRCH, f"process {pid}: {err.strerror}") from None
        if not allowed:
            raise fail(errno.EPERM, f"access to process {pid} refused: {PTRACE_RULE}; {yama_note()}")
        name = _install(pid, fd, flavor)
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
    and task_info; our own pid gives our own name port (TASK_NAME_PORT).
    Granted as XNU grants it: our own process, root, or a process whose
    effective and real uids are ours.

    KERN_FAILURE: ``target_tport`` not a task port, no such process, a
    zombie, or another user's process."""
    try:
        task_of(target_tport)
    except K.MachError:
        raise _fail(K.KERN_FAILURE, f"{target_tport:#x} is not a task port") from None
    if pid == os.getpid():
        return task_port(SELF.task, TASK_FLAVOR_NAME)  # the name TASK_NAME_PORT gives
    if pid <= 0:
        raise _fail(K.KERN_FAILURE, f"no task name for pid {pid}")
    fd = _open_target(pid)
    installed = False
    try:
        t = Task(pid, None, fd, TASK_FLAVOR_NAME)
        try:
            (status,) = ForeignMap(t).proc_text("status")
        except K.MachError:
            raise _fail(K.KERN_FAILURE, f"process {pid} has exited") from None
        uids = _uids(status)
        mine = os.geteuid()
        if not (pid == os.getpid() or mine == 0 or (len(uids) >= 2 and uids[1] == mine and uids[0] == os.getuid())):
            raise _fail(K.KERN_FAILURE, f"process {pid} belongs to another user")
        name = _install(pid, fd, TASK_FLAVOR_NAME)
        installed = True
        return name
    finally:
        if not installed:
            files.close(fd)


def pid_for_task(name: int) -> int:
    """The pid of a task port of any flavor.

    KERN_FAILURE: not a task port, or its process has exited."""
    try:
        t = task_of(name, flavor=TASK_FLAVOR_NAME)
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
    KERN_INVALID_ARGUMENT (not a task). A port of any flavor will do."""
    t = task_of(name, flavor=TASK_FLAVOR_NAME)
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


# <mach/task_info.h>
TASK_DYLD_ALL_IMAGE_INFO_32 = 0
TASK_DYLD_ALL_IMAGE_INFO_64 = 1


def _ids(text: str, field: str) -> tuple[int, ...]:
    for line in text.splitlines():
        if line.startswith(field):
            return tuple(int(x) for x in line.split()[1:])
    raise _fail(K.KERN_FAILURE, f"/proc status has no {field} line")


def _credentials(name: int) -> tuple[int, ...]:
    """The audit token of the task ``name`` denotes (a port of any
    flavor), in XNU's layout (proc_calc_audit_token): auid, euid, egid,
    ruid, rgid, pid, asid, pidversion, with the ids as /proc/PID/status
    shows them now. A message's audit trailer is the same token, and a
    receiver can know of its sender only what SCM_CREDENTIALS verifies
    (pid, uid, gid: kern.mach_msg): so that the two agree, as they do in
    XNU, the audit user id is the real uid and the audit session and pid
    version are 0, here as in the trailer.

    MACH_SEND_INVALID_DEST (no such name, or the process exited),
    KERN_INVALID_ARGUMENT (not a task), KERN_FAILURE (/proc refused).

    Conditions: nothing locked; takes the space's lock (task_of)."""
    t = task_of(name, flavor=TASK_FLAVOR_NAME)
    if t.map is not None:
        with open("/proc/self/status") as f:
            status = f.read()
    else:
        (status,) = ForeignMap(t).proc_text("status")
    uids, gids = _ids(status, "Uid:"), _ids(status, "Gid:")
    return (uids[0], uids[1], gids[1], uids[0], gids[0], t.pid, 0, 0)


def task_security_token(name: int) -> tuple[int, int]:
    """task_info(TASK_SECURITY_TOKEN): the task's effective uid and gid
    (XNU's set_security_token), through a port of any flavor. The codes of
    _credentials."""
    c = _credentials(name)
    return c[1], c[2]


def task_audit_token(name: int) -> tuple[int, ...]:
    """task_info(TASK_AUDIT_TOKEN): the eight values of _credentials,
    through a port of any flavor; its codes."""
    return _credentials(name)


def task_dyld_info(name: int) -> tuple[int, int, int]:
    """task_info(TASK_DYLD_INFO): (all_image_info_addr,
    all_image_info_size, all_image_info_format). It needs a read port
    (XNU's task_info_from_user converts with convert_port_to_task_read):
    an inspect or name port is KERN_INVALID_ARGUMENT. A Linux process has
    no dyld and no dyld_all_image_infos, so the address and size are 0, as
    XNU reports for a task whose image info was never registered; the
    format says the task has 64-bit addresses.

    MACH_SEND_INVALID_DEST (no such name, or the process exited).

    Conditions: nothing locked; takes the space's lock (task_of)."""
    t = task_of(name, flavor=TASK_FLAVOR_READ)
    if t.map is None and not t.alive():
        raise _fail(K.MACH_SEND_INVALID_DEST, f"task of pid {t.pid} has exited")
    return 0, 0, TASK_DYLD_ALL_IMAGE_INFO_64


def task_is_self(name: int) -> bool:
    """mach_task_is_self: whether ``name`` is a port of our own task, of
    any flavor (XNU's mach_task_is_self compares the task a port of any
    flavor names). A name that is no live task port is False.

    Conditions: nothing locked; takes the space's lock."""
    try:
        t = task_of(name, flavor=TASK_FLAVOR_NAME)
    except K.MachError:
        return False
    return t.map is not None


# -- suspension, threads and thread state (by ptrace: _kern/vm_remote.py) ---------------

def _other(name: int, flavor: int) -> Task:
    """Another process's task, through a port of ``flavor`` or stronger
    (KERN_INVALID_ARGUMENT otherwise). Our own task is KERN_NOT_SUPPORTED:
    stopping or tracing ourselves would deadlock."""
    t = task_of(name, flavor=flavor)
    if t.map is not None:
        raise _fail(K.KERN_NOT_SUPPORTED, "suspending or tracing our own task")
    return t


def task_suspend(name: int) -> None:
    """Stop every thread of the task; counted (task_resume undoes one).
    KERN_INVALID_ARGUMENT, KERN_NOT_SUPPORTED (our own task),
    MACH_SEND_INVALID_DEST (exited), KERN_FAILURE.

    Conditions: nothing locked; takes the space's lock (task_of), then the
    suspend lock (_kern/vm_remote.py), under which it waits up to 5 s for the
    stop."""
    from . import vm_remote
    t = _other(name, TASK_FLAVOR_READ)  # task.defs: task_suspend takes a task_read_t
    vm_remote.task_suspend(t.pid, t.pidfd)


def task_resume(name: int) -> None:
    """Undo one task_suspend. KERN_FAILURE when the task is not suspended;
    the codes of task_suspend.

    Conditions: nothing locked; takes the space's lock (task_of), then the
    suspend lock."""
    from . import vm_remote
    t = _other(name, TASK_FLAVOR_READ)  # task_resume too
    vm_remote.task_resume(t.pid, t.pidfd)


def task_threads(name: int) -> list[int]:
    """A send right (a name) for each thread of a task, through a task
    port of at least the inspect flavor (task.defs: task_inspect_t); each
    thread port has the task port's flavor, as XNU's
    task_threads_from_user gives (THREAD_FLAVOR_* has the numbers of
    TASK_FLAVOR_*). Our own task's threads are ports too (the name
    mach_thread_self gives in each of them): they take exception ports,
    but their state is not read or set (KERN_NOT_SUPPORTED: tracing our
    own process would deadlock). KERN_INVALID_ARGUMENT,
    MACH_SEND_INVALID_DEST.

    Conditions: nothing locked; takes the space's lock for each thread."""
    from . import vm_remote
    t = task_of(name, flavor=TASK_FLAVOR_INSPECT)
    if t.map is not None:
        names = []
        for tid in procfs.thread_ids("self"):
            try:
                names.append(_own_thread_port(tid, t.flavor))
            except K.MachError:
                continue  # it exited meanwhile
        return names
    t = _other(name, TASK_FLAVOR_INSPECT)
    names = []
    for tid in vm_remote.task_threads(t.pid, t.pidfd):
        key = ("thread", t.pid, tid, t.flavor)
        s = SELF
        with s.space.lock:
            found = s.space.name_for(key)
            e = s.space.lookup(found) if found else None
            if e is not None and isinstance(e.cap, Thread) and e.cap.alive():
                e.urefs = min(e.urefs + 1, MACH_PORT_UREFS_MAX)
                names.append(found)
                continue
            th = Thread(t.pid, tid, files.dup(t.pidfd), t.flavor)
            n, e = s.space.alloc(th, MACH_PORT_TYPE_SEND, 1, key=key)
            e.cap = th
            names.append(n)
    return names


def _own_thread_port(tid: int, flavor: int) -> int:
    """A send right (a name, one more user reference) to the port of our
    own thread ``tid`` of ``flavor``, coalesced with the one we hold: one
    port per thread and flavor, as XNU's. KERN_FAILURE when there is no
    such thread.

    Conditions: nothing locked; takes the space's lock."""
    s = SELF
    pid = s.task.pid
    start = procfs.start_time(pid, tid)
    if start is None:
        raise _fail(K.KERN_FAILURE, f"no thread {tid}")
    key = ("thread", pid, tid, flavor)
    with s.space.lock:
        found = s.space.name_for(key)
        e = s.space.lookup(found) if found else None
        if e is not None and isinstance(e.cap, OwnThread) and e.cap.start == start:
            e.urefs = min(e.urefs + 1, MACH_PORT_UREFS_MAX)
            return found
        if e is not None:
            R.check_dead(s.space, found, e)  # the thread that had the tid is gone: a dead name
            if key in e.keys:
                e.keys.remove(key)  # the key goes to the new thread's port
        th = OwnThread(pid, tid, start, flavor)
        n, e = s.space.alloc(th, MACH_PORT_TYPE_SEND, 1, key=key)
        e.cap = th
        return n


def thread_self() -> int:
    """mach_thread_self: a send right (a name, one more user reference
    each call, as XNU's) to the calling thread's port.

    Conditions: nothing locked; takes the space's lock."""
    return _own_thread_port(threading.get_native_id(), TASK_FLAVOR_CONTROL)


def thread_of(name: int, flavor: int = TASK_FLAVOR_CONTROL) -> Thread:
    """The thread behind a name, through a thread port of ``flavor`` or
    stronger (thread_get_state takes a thread_read_t, thread_set_state a
    thread_act_t). MACH_SEND_INVALID_DEST (nothing, or its process
    exited), KERN_INVALID_ARGUMENT (not a thread, or a weaker flavor).

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
    if e.object.flavor > flavor:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"{name:#x} is a thread {_FLAVORS[e.object.flavor]} port")
    return e.object


def traced_thread_of(name: int, flavor: int = TASK_FLAVOR_CONTROL) -> Thread:
    """thread_of, for a routine that traces the thread (its state): a
    thread of our own process is KERN_NOT_SUPPORTED, as our own task is
    for task_suspend.

    Conditions: as thread_of."""
    th = thread_of(name, flavor)
    if isinstance(th, OwnThread):
        raise _fail(K.KERN_NOT_SUPPORTED, "reading or setting the state of a thread of our own process")
    return th

