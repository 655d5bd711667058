"""pidfds: a process's identity that pid reuse cannot redirect.

Kernel facts this module relies on:

- ``pidfd_open(pid)`` returns an fd bound to the ``struct pid`` of the
  process that has that pid *now*. If that process exits and its pid is
  later given to another process, the pidfd still refers to the first one:
  it never starts denoting the newcomer.
- A pidfd polls readable (POLLIN) once the process has exited, zombie or
  reaped. That is how pymach asks "is it still alive?" without a race on
  the number.
- Many interfaces still take a bare pid (process_vm_readv, /proc/PID).
  The safe pattern is: act on the pid, then ask the pidfd whether the
  process is still alive. If it is, the pid still named it during the
  call, because a pid cannot be reused while its process lives (or is a
  zombie). An fd opened on ``/proc/PID`` while the pidfd says "alive" is
  bound to that process for good: once it exits, reads through it fail
  with ESRCH or return nothing; they never reach a new process.
- ``pidfd_getfd(pidfd, fd, 0)`` makes the kernel run the full
  PTRACE_MODE_ATTACH_REALCREDS check (uid and capability rules, Yama's
  ptrace_scope when Yama is built in, LSMs) *before* it looks the fd up;
  process_vm_readv/writev make the very same check. Asking for an fd
  number that cannot exist (-1) therefore answers "may I ptrace this
  process?" without taking anything: EPERM means no, EBADF means yes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal

from .libc import c_int, c_long, fn

_syscall = fn("syscall", c_long, c_long, c_int, c_int, c_int)
SYS_pidfd_getfd = 438  # x86_64 and the generic table (arm64) agree


def open_pid(pid: int) -> int:
    """A close-on-exec pidfd for ``pid``; OSError ESRCH if there is no
    such process (EINVAL for a pid below 1)."""
    return os.pidfd_open(pid)


def exited(pidfd: int) -> bool:
    """True once the process behind ``pidfd`` has exited (zombie or gone)."""
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    return bool(p.poll(0))


ExitPoll = select.poll  # the type of exit_poll's poll set


# PIDFD_THREAD (Linux 6.9): a pidfd of one thread, not of a process. It is
# O_EXCL in the fd's flags, as /proc/self/fdinfo shows them (in octal).
PIDFD_THREAD = os.O_EXCL


def pid_of(pidfd: int) -> int:
    """The pid, in our pid namespace, of the process a received pidfd is
    bound to, from ``/proc/self/fdinfo/N`` (its ``Pid:`` line, Linux 5.3):
    -1 once the process has been reaped, 0 when it lives in a pid
    namespace we cannot see. A zombie still shows its pid.

    ValueError when ``pidfd`` is not a pidfd (only a pidfd's fdinfo has a
    ``Pid:`` line), or is a pidfd of one thread (PIDFD_THREAD); OSError
    when the fd is not open.

    With pidfs (Linux 6.9) every pidfd of a process also has the same
    inode number, never reused (its 64-bit identity); older kernels give
    all pidfds one anonymous inode, so the inode proves nothing there."""
    with open(f"/proc/self/fdinfo/{pidfd}", "rb") as f:
        text = f.read().decode("ascii", "replace")
    pid = flags = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "Pid":
            pid = int(value)
        elif key == "flags":
            flags = int(value, 8)
    if pid is None or flags is None:
        raise ValueError(f"fd {pidfd} is not a pidfd")
    if flags & PIDFD_THREAD:
        raise ValueError(f"fd {pidfd} is a pidfd of one thread")
    return pid


def has_thread(pid: int, pidfd: int, tid: int) -> bool:
    """Whether ``tid`` is a thread of the process behind ``pidfd`` now:
    /proc/PID/task/TID, looked up through a directory fd confirmed with
    the pidfd (open_proc_dir), so a reused pid is never asked. False when
    the process or the thread has exited."""
    try:
        d = open_proc_dir(pid, pidfd)
    except OSError:
        return False
    try:
        os.stat(f"task/{tid}", dir_fd=d)
        return True
    except OSError:
        return False
    finally:
        os.close(d)


def exit_poll(pidfd: int) -> ExitPoll:
    """A poll set over ``pidfd`` alone, kept to ask exited() again and
    again: ``bool(p.poll(0))`` is True once the process has exited. It
    holds no fd (poll sets are not kernel objects), and refers to
    ``pidfd`` by number: drop it when that fd closes."""
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    return p


def may_ptrace(pidfd: int) -> bool:
    """Whether the kernel would let us ptrace the process (the
    PTRACE_MODE_ATTACH_REALCREDS check of process_vm_readv): asked through
    pidfd_getfd of an fd number that cannot exist. OSError ESRCH when the
    process is gone."""
    r = _syscall(SYS_pidfd_getfd, pidfd, -1, 0)
    if r >= 0:  # cannot happen for fd -1; never keep what we did not ask for
        os.close(r)
        return True
    e = ctypes.get_errno()
    if e == errno.EBADF:
        return True
    if e in (errno.EPERM, errno.EACCES):
        return False
    raise OSError(e, f"pidfd_getfd: {os.strerror(e)}")


def open_proc_dir(pid: int, pidfd: int) -> int:
    """An O_PATH-free directory fd of /proc/PID bound to the process behind
    ``pidfd``: opened, then confirmed with the pidfd. OSError ESRCH if the
    process has exited."""
    fd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if exited(pidfd):
        os.close(fd)
        raise OSError(errno.ESRCH, f"process {pid} has exited")
    return fd


def read_proc_file(dir_fd: int, name: str) -> str:
    """The text of /proc/PID/``name`` through a directory fd from
    open_proc_dir. OSError (ESRCH, EACCES, ...) on failure."""
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


# pidfd_send_signal (Linux 5.1) signals the process the pidfd is bound to,
# never a newcomer that reused its pid: ESRCH (ProcessLookupError) once it
# has exited. SIGSTOP and SIGCONT can be neither caught nor ignored (a
# traced process reports the stop to its tracer first).
SIGSTOP = signal.SIGSTOP
SIGCONT = signal.SIGCONT


def send_signal(pidfd: int, sig: int) -> None:
    """Send ``sig`` to the process behind ``pidfd``. ProcessLookupError
    when it has exited; other OSError (EPERM) when the kernel refuses."""
    signal.pidfd_send_signal(pidfd, sig)


def wait_exit(pid: int, poll: float = 1.0) -> None:
    """Wait until process ``pid`` (not necessarily our child) has exited:
    its pidfd polls readable then. Returns at once if it is gone already;
    KeyboardInterrupt ends the wait."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        while not select.select([fd], [], [], poll)[0]:
            pass
    except KeyboardInterrupt:
        pass
    finally:
        os.close(fd)
