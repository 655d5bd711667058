"""Mach VM and thread operations on another process, by ptrace syscall
injection.

Linux has no call that maps, unmaps or protects memory in another process,
so each operation here runs the system call inside the target (see
pymach/_linux/ptrace.py): one short ptrace session per operation, in which
the target's leader thread runs mmap, munmap, mprotect or madvise and is
then put back exactly as it was. The other threads of the target keep
running meanwhile.

Every function takes the target's ``pid`` and its ``pidfd``. The pidfd is
the task's identity: a pid whose pidfd says it exited is never touched.

Codes common to every function:

- MACH_SEND_INVALID_DEST: the process has exited, or died during the
  operation (what the operation did before it died is then lost with it);
- KERN_FAILURE: the kernel refused to trace the process (EPERM: another
  user's process without CAP_SYS_PTRACE, a process already traced by a
  debugger, Yama), or the injection failed in a way no other code names;
- KERN_OPERATION_TIMED_OUT: the target did not stop within the timeout
  (a thread in uninterruptible sleep);
- KERN_NOT_SUPPORTED: not x86_64.

What Linux cannot record for another process (maximum protections, user
tags) is described in docs/deviations.md, "Remote control by ptrace".
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as _errno
import os
import threading
import time
from collections.abc import Iterator, Mapping

from .._linux import files, mm
from .._linux.pidfd import SIGCONT, SIGSTOP, send_signal as pidfd_send_signal
from .._linux import ptrace
from . import kern_return as K
from . import vm_defs as V

PAGE_SIZE = mm.PAGE_SIZE
PAGE_MASK = mm.PAGE_MASK
_U64 = (1 << 64) - 1

MAP_MIN = mm.MMAP_MIN_ADDR
MAP_MAX = V.MACH_VM_MAX_ADDRESS

TIMEOUT = 5.0

# map_fd: the kernel refuses a shared writable mapping of a write-sealed
# memfd or of a read-only open with EPERM or EACCES.
ERRNO_MAP_FD: Mapping[int, int] = {
    **K.ERRNO_MAP, _errno.EPERM: K.KERN_PROTECTION_FAILURE, _errno.EACCES: K.KERN_PROTECTION_FAILURE}


def _fail(kr: int, what: str) -> K.MachError:
    return K.MachError(kr, what)


def _kr_of(err: OSError) -> int:
    if isinstance(err, K.MachError):
        return err.kr
    e = err.errno
    if e == _errno.ESRCH:
        return K.MACH_SEND_INVALID_DEST
    if e == _errno.ENOSYS:
        return K.KERN_NOT_SUPPORTED
    if e == _errno.ETIMEDOUT:
        return K.KERN_OPERATION_TIMED_OUT
    return K.KERN_FAILURE


@contextlib.contextmanager
def session(pid: int, pidfd: int, tid: int | None = None, timeout: float = TIMEOUT) -> Iterator[ptrace.Session]:
    """A ptrace session on ``pid`` (thread ``tid``), with the engine's
    OSErrors turned into MachError: MACH_SEND_INVALID_DEST (gone),
    KERN_FAILURE (refused), KERN_OPERATION_TIMED_OUT, KERN_NOT_SUPPORTED.

    Conditions: nothing locked; takes the ptrace lock for the whole session
    (ptrace.Session)."""
    try:
        with ptrace.Session(pid, pidfd, tid, timeout) as s:
            yield s
    except K.MachError:
        raise
    except OSError as err:
        raise _fail(_kr_of(err), f"process {pid}: {err.strerror or err}") from err


def _result(r: int, table: Mapping[int, int], what: str) -> int:
    """A raw syscall result: the value, or MachError for -errno."""
    if -4096 < r < 0:
        raise _fail(K.kr_from_errno(-r, table), f"{what} in the target: {os.strerror(-r)}")
    return r


def _range(addr: int, size: int) -> tuple[int, int]:
    start = addr & ~PAGE_MASK
    end = (addr + size + PAGE_MASK) & ~PAGE_MASK
    if addr < 0 or size < 0 or end > _U64 or end <= start:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"[{addr:#x}, +{size:#x}) wraps around the address space")
    return start, end


def _place(s: ptrace.Session, addr: int, size: int, anywhere: bool, overwrite: bool, prot: int, flags: int,
           fd: int = -1, offset: int = 0, table: Mapping[int, int] = K.ERRNO_MAP) -> int:
    """mmap in the target the way VmMap._place does in our own map."""
    if anywhere:
        a = _result(s.syscall(ptrace.SYS_mmap, 0, size, prot, flags, fd, offset), table, "mmap")
    else:
        if addr < MAP_MIN or addr + size > MAP_MAX:
            raise _fail(K.KERN_INVALID_ADDRESS, f"{addr:#x}-{addr + size:#x} is outside the map")
        fixed = mm.MAP_FIXED if overwrite else mm.MAP_FIXED_NOREPLACE
        a = _result(s.syscall(ptrace.SYS_mmap, addr, size, prot, flags | fixed, fd, offset), table, "mmap")
        if a != addr:  # a kernel without MAP_FIXED_NOREPLACE took it as a hint
            s.syscall(ptrace.SYS_munmap, a, size)
            raise _fail(K.KERN_NO_SPACE, f"{addr:#x} is in use")
    return a


# -- VM -------------------------------------------------------------------------

def allocate(pid: int, pidfd: int, addr: int, size: int, anywhere: bool, overwrite: bool = False) -> int:
    """mach_vm_allocate in another process: zero-filled private memory,
    read/write; returns its address (0 for size 0).

    KERN_INVALID_ARGUMENT (a wrapping size), KERN_INVALID_ADDRESS (a FIXED
    range outside the map), KERN_NO_SPACE (a FIXED range in use without
    overwrite, or no room), KERN_RESOURCE_SHORTAGE, and the common codes."""
    if size == 0:
        return 0
    start, end = _range(addr if not anywhere else 0, size)
    flags = mm.MAP_PRIVATE | mm.MAP_ANONYMOUS | mm.MAP_NORESERVE
    with session(pid, pidfd) as s:
        return _place(s, start, end - start, anywhere, overwrite, mm.PROT_READ | mm.PROT_WRITE, flags)


def deallocate(pid: int, pidfd: int, addr: int, size: int) -> None:
    """mach_vm_deallocate in another process: unmap [addr, addr + size).
    Holes are not an error; a range reaching outside the map removes
    nothing, as XNU does.

    KERN_INVALID_ARGUMENT (a wrapping range), and the common codes."""
    if size == 0:
        return
    start, end = _range(addr, size)
    if start < MAP_MIN or end > MAP_MAX:
        return
    with session(pid, pidfd) as s:
        _result(s.syscall(ptrace.SYS_munmap, start, end - start), K.ERRNO_RANGE, "munmap")


def protect(pid: int, pidfd: int, addr: int, size: int, set_maximum: bool, prot: int) -> None:
    """mach_vm_protect in another process: set the current protection.

    Linux keeps no maximum protection that a caller can lower, and pymach's
    record of maximums lives in the target's own runtime, out of reach: a
    set_maximum request is KERN_NOT_SUPPORTED. The kernel's own ceiling
    (a read-only file mapped shared) still answers KERN_PROTECTION_FAILURE.

    KERN_INVALID_ADDRESS (part of the range is not mapped),
    KERN_PROTECTION_FAILURE, KERN_INVALID_ARGUMENT (bad bits, a wrapping
    range), KERN_NOT_SUPPORTED (set_maximum, VM_PROT_COPY), and the common
    codes."""
    if size == 0:
        return
    if prot & ~(V.VM_PROT_ALL | V.VM_PROT_COPY):
        raise _fail(K.KERN_INVALID_ARGUMENT, f"protection {prot:#x}")
    if set_maximum:
        raise _fail(K.KERN_NOT_SUPPORTED, "the maximum protection of another process is not recorded")
    if prot & V.VM_PROT_COPY:
        raise _fail(K.KERN_NOT_SUPPORTED, "VM_PROT_COPY in another process")
    start, end = _range(addr, size)
    if start >= MAP_MAX:
        raise _fail(K.KERN_INVALID_ADDRESS, f"{start:#x} is outside the map")
    with session(pid, pidfd) as s:
        _result(s.syscall(ptrace.SYS_mprotect, start, end - start, prot & V.VM_PROT_ALL), K.ERRNO_RANGE,
                "mprotect")


def _maps(pid: int) -> list[tuple[int, int, bool]]:
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 2)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi, parts[1][3] == "s"))
    return out


def inherit(pid: int, pidfd: int, addr: int, size: int, inheritance: int) -> None:
    """mach_vm_inherit in another process. Holes are skipped.

    NONE is MADV_DONTFORK. COPY and SHARE are MADV_DOFORK where the mapping
    already behaves that way across fork (a private mapping is copied, a
    shared one shared); turning a private mapping into a shared one would
    need the target's own runtime (VmMap.inherit moves the pages into a
    memfd), so that is KERN_NOT_SUPPORTED, and so is COPY of a shared
    mapping.

    KERN_INVALID_ARGUMENT (a value above VM_INHERIT_NONE, a wrapping
    range), KERN_NOT_SUPPORTED, and the common codes."""
    if size == 0:
        return
    if not 0 <= inheritance <= V.VM_INHERIT_LAST_VALID:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"inheritance {inheritance}")
    start, end = _range(addr, size)
    start, end = max(start, MAP_MIN), min(end, MAP_MAX)
    if start >= end:
        return
    with session(pid, pidfd) as s:
        pieces = [(max(lo, start), min(hi, end), shared) for lo, hi, shared in _maps(pid)
                  if lo < end and hi > start]
        if inheritance != V.VM_INHERIT_NONE:
            for lo, _hi, shared in pieces:
                if shared != (inheritance == V.VM_INHERIT_SHARE):
                    raise _fail(K.KERN_NOT_SUPPORTED, f"{lo:#x}: the inheritance of another process's "
                                "mapping can change only to NONE unless the mapping already matches")
        advice = mm.MADV_DONTFORK if inheritance == V.VM_INHERIT_NONE else mm.MADV_DOFORK
        for lo, hi, _shared in pieces:
            _result(s.syscall(ptrace.SYS_madvise, lo, hi - lo, advice), K.ERRNO_RANGE, "madvise")


O_RDONLY = os.O_RDONLY
O_RDWR = os.O_RDWR
O_CLOEXEC = os.O_CLOEXEC


def map_fd(pid: int, pidfd: int, fd: int, offset: int, size: int, prot: int, flags: int, addr: int = 0,
           shared: bool = True) -> int:
    """Map ``size`` bytes of our file ``fd`` (a memfd) from ``offset`` into
    another process; returns the address there. ``flags`` are Mach's
    VM_FLAGS_ANYWHERE / VM_FLAGS_FIXED / VM_FLAGS_OVERWRITE; ``shared``
    picks MAP_SHARED (the target sees our writes and we see its) or
    MAP_PRIVATE (a copy-on-write view).

    The target opens the file itself, through /proc/<our pid>/fd/<fd>: the
    path goes into a scratch page mapped in the target for the purpose, the
    fd it gets is closed right after the mmap, and the scratch page is
    unmapped, all in one ptrace session. The open follows the access mode
    of our fd: a read-only fd cannot become a writable shared mapping.

    KERN_PROTECTION_FAILURE (write access our fd does not have, or a
    write-sealed memfd), KERN_INVALID_ARGUMENT (an unaligned offset, bad
    bits, an fd that is not a regular file), KERN_INVALID_ADDRESS (a FIXED
    range outside the map),
    KERN_NO_SPACE (a FIXED range in use, or no room), KERN_INVALID_NAME
    (``fd`` is not open), and the common codes."""
    if prot & ~V.VM_PROT_ALL:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"protection {prot:#x}")
    if offset & PAGE_MASK or offset < 0:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"offset {offset:#x} is not page aligned")
    if flags & ~(V.VM_FLAGS_ANYWHERE | V.VM_FLAGS_OVERWRITE):
        raise _fail(K.KERN_INVALID_ARGUMENT, f"flags {flags:#x}")
    if size == 0:
        raise _fail(K.KERN_INVALID_ARGUMENT, "size 0")
    anywhere = bool(flags & V.VM_FLAGS_ANYWHERE)
    start, end = _range(addr if not anywhere else 0, size)
    try:
        mode = files.access_mode(fd)
        regular = files.is_regular(fd)
    except OSError as err:
        raise _fail(K.KERN_INVALID_NAME, f"fd {fd}") from err
    if not regular:  # opening a pipe or socket through /proc could block the target
        raise _fail(K.KERN_INVALID_ARGUMENT, f"fd {fd} is not a regular file")
    want_write = shared and bool(prot & V.VM_PROT_WRITE)
    if want_write and mode == os.O_RDONLY:
        raise _fail(K.KERN_PROTECTION_FAILURE, "our fd is read-only")
    path = f"/proc/{os.getpid()}/fd/{fd}".encode() + b"\0"
    mflags = mm.MAP_SHARED if shared else mm.MAP_PRIVATE
    with session(pid, pidfd) as s:
        scratch = _result(s.syscall(ptrace.SYS_mmap, 0, PAGE_SIZE, mm.PROT_READ | mm.PROT_WRITE,
                                    mm.MAP_PRIVATE | mm.MAP_ANONYMOUS, -1, 0), K.ERRNO_MAP, "mmap")
        rfd = -1
        try:
            s.write(scratch, path)
            rfd = _result(s.syscall(ptrace.SYS_open, scratch, (O_RDWR if want_write else O_RDONLY) | O_CLOEXEC),
                          ERRNO_MAP_FD, "open")
        finally:
            s.syscall(ptrace.SYS_munmap, scratch, PAGE_SIZE)
        try:
            return _place(s, start, end - start, anywhere, bool(flags & V.VM_FLAGS_OVERWRITE), prot,
                          mflags, rfd, offset, ERRNO_MAP_FD)
        finally:
            s.syscall(ptrace.SYS_close, rfd)


# -- tasks ------------------------------------------------------------------------

_suspend_lock = threading.Lock()
_suspended: dict[tuple[int, int], int] = {}  # (pid, start time) -> suspend count


def _renew_suspend_lock() -> None:
    # a fork child: a thread that held the lock (for up to TIMEOUT) did not follow
    """Conditions: a fork child, in the forking thread."""
    global _suspend_lock  # pylint: disable=global-statement
    _suspend_lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_suspend_lock)


def _identity(pid: int, pidfd: int) -> tuple[int, int]:
    if ptrace.pidfd_exited(pidfd):
        raise _fail(K.MACH_SEND_INVALID_DEST, f"process {pid} has exited")
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError as err:
        raise _fail(K.MACH_SEND_INVALID_DEST, f"process {pid} is gone") from err
    return pid, int(stat.rpartition(")")[2].split()[19])  # field 22: starttime


def _send(pidfd: int, sig: int) -> None:
    try:
        pidfd_send_signal(pidfd, sig)
    except ProcessLookupError as err:
        raise _fail(K.MACH_SEND_INVALID_DEST, "the process has exited") from err
    except OSError as err:
        raise _fail(K.KERN_FAILURE, f"kill: {err.strerror}") from err


def _wait_state(pid: int, pidfd: int, stopped: bool, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if ptrace.pidfd_exited(pidfd):
            raise _fail(K.MACH_SEND_INVALID_DEST, f"process {pid} has exited")
        try:
            state, _tracer = ptrace.proc_state(pid)
        except OSError as err:
            raise _fail(K.MACH_SEND_INVALID_DEST, f"process {pid} is gone") from err
        if (state in "Tt") == stopped:
            return
        if time.monotonic() > deadline:
            raise _fail(K.KERN_OPERATION_TIMED_OUT, f"process {pid} did not {'stop' if stopped else 'resume'}")
        time.sleep(0.0005)


def task_suspend(pid: int, pidfd: int) -> None:
    """task_suspend on another process: the first suspension sends SIGSTOP
    and waits until the process is stopped; further ones only count. The
    count lives in our process (see docs/deviations.md).

    KERN_FAILURE (the signal was refused), MACH_SEND_INVALID_DEST,
    KERN_OPERATION_TIMED_OUT.

    Conditions: nothing locked; takes the suspend lock, and waits under
    it up to TIMEOUT for the process to stop."""
    key = _identity(pid, pidfd)
    with _suspend_lock:
        n = _suspended.get(key, 0)
        if n == 0:
            _send(pidfd, SIGSTOP)
            _wait_state(pid, pidfd, True)
        _suspended[key] = n + 1


def task_resume(pid: int, pidfd: int) -> None:
    """task_resume on another process: the last resume sends SIGCONT.

    KERN_FAILURE (the suspend count is already zero, as in XNU, or the
    signal was refused), MACH_SEND_INVALID_DEST.

    Conditions: nothing locked; takes the suspend lock."""
    key = _identity(pid, pidfd)
    with _suspend_lock:
        n = _suspended.get(key, 0)
        if n == 0:
            raise _fail(K.KERN_FAILURE, f"process {pid} is not suspended")
        if n == 1:
            _send(pidfd, SIGCONT)
            del _suspended[key]
        else:
            _suspended[key] = n - 1


def suspend_count(pid: int, pidfd: int) -> int:
    """The suspend count our process holds on ``pid``.
    MACH_SEND_INVALID_DEST.

    Conditions: nothing locked; reads the count without the suspend lock."""
    return _suspended.get(_identity(pid, pidfd), 0)


def task_threads(pid: int, pidfd: int) -> list[int]:
    """The thread ids of another process (/proc/PID/task), leader first.

    MACH_SEND_INVALID_DEST."""
    _identity(pid, pidfd)
    try:
        return ptrace.thread_ids(pid)
    except OSError as err:
        raise _fail(K.MACH_SEND_INVALID_DEST, f"process {pid} is gone") from err


# -- thread state -------------------------------------------------------------------

x86_THREAD_STATE64 = 4
x86_THREAD_STATE64_COUNT = 42  # in natural_t (uint32) units: 21 uint64

STATE_FIELDS = ("rax", "rbx", "rcx", "rdx", "rdi", "rsi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
                 "r13", "r14", "r15", "rip", "rflags", "cs", "fs", "gs")


class x86_thread_state64_t(ctypes.Structure):
    """XNU's _STRUCT_X86_THREAD_STATE64 (<mach/i386/_structs.h>), with the
    __DARWIN_UNIX03 field names: ``state.__rip`` as in C."""

    _fields_ = [("__" + n, ctypes.c_uint64) for n in STATE_FIELDS]

    def as_dict(self) -> dict[str, int]:
        return {n: getattr(self, "__" + n) for n in STATE_FIELDS}


assert ctypes.sizeof(x86_thread_state64_t) == x86_THREAD_STATE64_COUNT * 4


def linux_name(n: str) -> str:
    """The user_regs_struct name of an x86_THREAD_STATE64 field."""
    return "eflags" if n == "rflags" else n


def _tid_of(pid: int, tid: int) -> None:
    if not os.path.exists(f"/proc/{pid}/task/{tid}"):
        raise _fail(K.MACH_SEND_INVALID_DEST, f"{tid} is not a thread of process {pid}")


def thread_get_state(pid: int, pidfd: int, tid: int, flavor: int = x86_THREAD_STATE64) -> x86_thread_state64_t:
    """thread_get_state(x86_THREAD_STATE64) of thread ``tid`` of another
    process, read with PTRACE_GETREGS while that thread alone is stopped.
    cs, fs and gs are the segment selectors (the TLS base is not part of
    this flavor). A thread stopped inside a system call shows the registers
    the kernel holds for it: rip past the ``syscall`` instruction and rax
    holding the call's restart code.

    KERN_INVALID_ARGUMENT (another flavor), MACH_SEND_INVALID_DEST (the
    thread or process is gone), and the common codes."""
    if flavor != x86_THREAD_STATE64:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"flavor {flavor}")
    _tid_of(pid, tid)
    with session(pid, pidfd, tid) as s:
        assert s.saved is not None
        regs = s.saved
    st = x86_thread_state64_t()
    for n in STATE_FIELDS:
        setattr(st, "__" + n, getattr(regs, linux_name(n)))
    return st


def _canonical(a: int) -> bool:
    return a < (1 << 47) or a >= _U64 + 1 - (1 << 47)


def thread_set_state(pid: int, pidfd: int, tid: int, flavor: int, state: x86_thread_state64_t) -> None:
    """thread_set_state(x86_THREAD_STATE64) of thread ``tid`` of another
    process, with PTRACE_SETREGS. cs, fs and gs are kept as they are (XNU
    also forces the user code segment). When the state differs from the
    thread's and the thread was stopped inside a system call, the call is
    abandoned (orig_rax = -1), so the thread resumes with exactly the given
    registers instead of the kernel's restart adjusting rip and rax.

    KERN_INVALID_ARGUMENT (another flavor, a non-canonical rip or rsp),
    MACH_SEND_INVALID_DEST, and the common codes."""
    if flavor != x86_THREAD_STATE64:
        raise _fail(K.KERN_INVALID_ARGUMENT, f"flavor {flavor}")
    new = state.as_dict()
    if not (_canonical(new["rip"]) and _canonical(new["rsp"])):
        raise _fail(K.KERN_INVALID_ARGUMENT, "rip and rsp must be canonical addresses")
    _tid_of(pid, tid)
    with session(pid, pidfd, tid) as s:
        assert s.saved is not None
        regs = s.saved.copy()
        changed = False
        for n in STATE_FIELDS:
            if n in ("cs", "fs", "gs"):
                continue
            ln = linux_name(n)
            if getattr(regs, ln) != new[n]:
                changed = True
                setattr(regs, ln, new[n])
        if changed:
            regs.orig_rax = _U64
            try:
                s.set_state(regs)
            except OSError as err:
                if err.errno in (_errno.EIO, _errno.EINVAL):
                    raise _fail(K.KERN_INVALID_ARGUMENT, f"the kernel refused the state: {err.strerror}") from err
                raise
