"""ptrace(2): running system calls inside another process (x86_64 only).

This is how pymach changes another task's address space: Linux has no
"mmap in that process" call, so the engine stops one thread of the target,
points it at a ``syscall`` instruction with the call's number and arguments
in its registers, lets it run exactly that one instruction, reads the
result, and puts every register back before letting go.

Kernel facts this module relies on:

- PTRACE_SEIZE attaches without stopping and without sending any signal;
  PTRACE_INTERRUPT then traps the thread into a PTRACE_EVENT_STOP
  (``status >> 16 == PTRACE_EVENT_STOP``). PTRACE_ATTACH would send a
  SIGSTOP, which stays pending and can be seen by the target. Seizing a
  thread that is already in a group stop (SIGSTOP) makes it report a
  PTRACE_EVENT_STOP on its own; on PTRACE_DETACH the kernel puts it back
  into the group stop (``__ptrace_unlink`` re-arms JOBCTL_STOP_PENDING while
  SIGNAL_STOP_STOPPED holds), so a suspended target stays suspended.
- ptrace is per thread, and the tracer is the calling *thread*: every
  request of one session must come from the same Python thread. A tracer
  that is not the target's parent still gets its stops and its death from
  waitpid, but only with __WALL for threads that are not the leader.
- The stop happens on the way back to user mode, inside get_signal(). A
  thread blocked in a system call is woken, and the call returns one of
  the kernel-internal codes -ERESTARTSYS (512), -ERESTARTNOINTR (513),
  -ERESTARTNOHAND (514) or -ERESTART_RESTARTBLOCK (516) in rax, with the
  call's number still in orig_rax and rip just after the ``syscall``
  instruction. When get_signal() returns with no signal to deliver, the
  x86 code (arch_do_signal_or_restart) looks at the registers *as they are
  then*: if orig_rax >= 0 and rax is one of those codes, it sets rax back
  to orig_rax (or to __NR_restart_syscall for ERESTART_RESTARTBLOCK) and
  moves rip back 2 bytes, so the call runs again. Hence:
  * the injected registers carry orig_rax = -1, so that the kernel does not
    apply that restart logic to them;
  * restoring the saved registers exactly, orig_rax included, before the
    detach makes the kernel restart the interrupted call. nanosleep and
    clock_nanosleep restart through restart_syscall, which resumes from
    current->restart_block: the absolute expiry time, not the time left,
    so the sleep ends when it would have. None of the calls injected here
    (mmap, munmap, mprotect, madvise, open, close) touches restart_block.
- PTRACE_SINGLESTEP over a ``syscall`` instruction runs the whole call: the
  single-step trap is reported on the way out (a SIGTRAP
  signal-delivery-stop with rip just past the instruction). The call
  clobbers rcx and r11; PTRACE_SETREGS restores them with the rest.
- Signals that arrive while the thread is traced stop it in a
  signal-delivery-stop instead of being delivered. The engine keeps them
  and hands them back: the first one as the signal of PTRACE_DETACH (the
  kernel then delivers it as if nothing happened, or requeues it if the
  thread blocks it), any further ones with tgkill after the detach (their
  siginfo then names our process as the sender).
- A ``syscall`` instruction to borrow: every process has the vDSO, whose
  fallback paths issue real syscalls (bytes 0f 05). Any executable mapping
  will do when the vDSO is absent. The CPU decodes from wherever rip points,
  so the two bytes need not start an instruction of the original code.
- A tracer that is not the parent gets the tracee's death from waitpid
  first, and must take it: only then does the kernel pass it on to the
  real parent. A tracer that is also the parent would reap the child for
  good, so for our own children the engine only looks (waitid WNOWAIT).
- When the tracer dies, the kernel detaches its tracees, leaving whatever
  registers were last set: a tracer killed mid-injection can leave the
  target with the injected registers. Nothing short of running the engine
  in a separate process can prevent that.

Errors are OSError: ProcessLookupError (ESRCH) when the target is gone or
dies during the session, PermissionError (EPERM) when the kernel refuses to
trace, TimeoutError when a stop never comes, OSError(ENOSYS) on an
architecture other than x86_64.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import struct
import threading
import time
from collections.abc import Iterable, Sequence

from .libc import c_int, c_long, c_void_p, fn

_MACHINE = os.uname().machine  # what platform.machine() reports, without importing platform
ARCH_SUPPORTED: bool = _MACHINE in ("x86_64", "AMD64")

PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_CONT = 7
PTRACE_SINGLESTEP = 9
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128

WALL = 0x40000000
USER64_CS = 0x33  # the code segment of 64-bit user mode (0x23: 32-bit)  # __WALL: wait for threads and non-children too

# x86_64 system call numbers
SYS_read = 0
SYS_write = 1
SYS_open = 2
SYS_close = 3
SYS_mmap = 9
SYS_mprotect = 10
SYS_munmap = 11
SYS_madvise = 28
SYS_getpid = 39
SYS_restart_syscall = 219
SYS_openat = 257

# kernel-internal restart codes (include/linux/errno.h), seen as -rax
ERESTARTSYS = 512
ERESTARTNOINTR = 513
ERESTARTNOHAND = 514
ERESTART_RESTARTBLOCK = 516
RESTART_CODES = frozenset({ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK})

_ptrace = fn("ptrace", c_long, c_long, c_int, c_void_p, c_void_p)


class user_regs_struct(ctypes.Structure):
    """struct user_regs_struct of <sys/user.h> (x86_64), PTRACE_GETREGS's layout."""

    NAMES = (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
        "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds",
        "es", "fs", "gs")
    _fields_ = [(n, ctypes.c_ulonglong) for n in NAMES]

    def copy(self) -> "user_regs_struct":
        new = user_regs_struct()
        ctypes.pointer(new)[0] = self
        return new

    def as_dict(self) -> dict[str, int]:
        return {n: getattr(self, n) for n in self.NAMES}


def _call(req: int, tid: int, addr: int | None = None, data: object = None) -> int:
    r: int = _ptrace(req, tid, addr, data)
    if r == -1:
        e = ctypes.get_errno()
        if e:
            raise OSError(e, f"ptrace({req:#x}, {tid}): {os.strerror(e)}")
    return r


def _require_arch() -> None:
    if not ARCH_SUPPORTED:
        raise OSError(errno.ENOSYS, f"syscall injection is implemented for x86_64 only, "
                                    f"not {_MACHINE}")


def pidfd_exited(pidfd: int) -> bool:
    """True when the process behind ``pidfd`` has exited (the pidfd polls
    readable once the whole thread group is gone)."""
    return bool(select.select([pidfd], [], [], 0)[0])


PF_EXITING = 0x4  # include/linux/sched.h: set by do_exit before anything is torn down


def _dying(pid: int, tid: int) -> bool:
    """True when thread ``tid`` of ``pid`` is gone, a zombie, exiting, or
    has a SIGKILL pending for it or its group."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/task/{tid}/status", "rb") as f:
            status = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    except PermissionError:  # /proc mounted with hidepid: nothing to tell
        return False
    # the fields after the command name (which may itself hold ") "):
    # state ppid pgrp session tty_nr tpgid flags
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X", b"x") or int(fields[6]) & PF_EXITING:
        return True
    fields_of = dict(line.split(b":", 1) for line in status.splitlines() if b":" in line)
    pending = int(fields_of[b"SigPnd"], 16) | int(fields_of[b"ShdPnd"], 16)
    if pending >> (signal.SIGKILL - 1) & 1:
        return True
    # Still traced by this thread though no straggler of its own: the last
    # detach found it woken by a SIGKILL already taken on its way to exit.
    return (int(fields_of[b"TracerPid"]) == threading.get_native_id()
            and not any(s.tid == tid for s in _holding()))


def _dead(pid: int, why: str) -> ProcessLookupError:
    return ProcessLookupError(errno.ESRCH, f"process {pid} {why}")


def _proc(pid: int, tid: int | None) -> str:
    # A thread's own /proc directory: the leader's stays empty (no mm) once
    # the leader has exited, while other threads still run.
    return f"/proc/{pid}/task/{pid if tid is None else tid}"


def _scan_syscall_insn(pid: int, tid: int | None = None) -> int:
    """Scan ``pid``'s vDSO, then its executable mappings, for 0f 05."""
    ranges: list[tuple[int, int, str]] = []
    with open(f"{_proc(pid, tid)}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if "x" not in parts[1] or "r" not in parts[1]:
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            ranges.append((lo, hi, parts[5].strip() if len(parts) > 5 else ""))
    ranges.sort(key=lambda r: (r[2] != "[vdso]", "libc" not in r[2]))
    fd = os.open(f"{_proc(pid, tid)}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for lo, hi, _path in ranges:
            pos = lo
            while pos < hi:
                try:
                    chunk = os.pread(fd, min(hi - pos, 1 << 20) + 1, pos)
                except OSError:
                    break
                i = chunk.find(b"\x0f\x05")
                if i >= 0:
                    return pos + i
                if len(chunk) <= 1:
                    break
                pos += len(chunk) - 1
    finally:
        os.close(fd)
    raise OSError(errno.ENOEXEC, f"no syscall instruction found in process {pid}")


AT_SYSINFO_EHDR = 33
_vdso_offset: int | None = None


def _our_vdso_offset() -> int | None:
    """Where 0f 05 sits in the vDSO, which is the same image in every
    64-bit process on this kernel (found once, in our own)."""
    global _vdso_offset
    if _vdso_offset is None:
        with open("/proc/self/maps") as f:
            for line in f:
                if line.rstrip().endswith("[vdso]"):
                    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                    i = ctypes.string_at(lo, hi - lo).find(b"\x0f\x05")
                    _vdso_offset = i if i >= 0 else -1
                    break
            else:
                _vdso_offset = -1
    return _vdso_offset if _vdso_offset >= 0 else None


def _vdso_base(pid: int, tid: int | None = None) -> int | None:
    with open(f"{_proc(pid, tid)}/auxv", "rb") as f:
        data = f.read()
    for i in range(0, len(data) - 15, 16):
        key, val = struct.unpack_from("<QQ", data, i)
        if key == AT_SYSINFO_EHDR:
            return val  # type: ignore[no-any-return]
        if key == 0:
            break
    return None


def find_syscall_insn(pid: int, tid: int | None = None) -> int:
    """The address of a ``syscall`` instruction (0f 05) in ``pid``: at the
    vDSO's known offset from its base (auxv), checked in its memory, else
    by scanning its executable mappings, all read through thread ``tid``'s
    /proc directory. Needs ptrace access (held during a session)."""
    off = _our_vdso_offset()
    base = _vdso_base(pid, tid) if off is not None else None
    if off is not None and base:
        fd = os.open(f"{_proc(pid, tid)}/mem", os.O_RDONLY | os.O_CLOEXEC)
        try:
            ok = os.pread(fd, 2, base + off) == b"\x0f\x05"
        except OSError:
            ok = False
        finally:
            os.close(fd)
        if ok:
            return base + off
    return _scan_syscall_insn(pid, tid)


# One injection at a time per process of ours: ptrace allows one tracer per
# thread, and two of our threads racing for the same target would fail.
# Reentrant: a session inside a session of the same thread is allowed (on
# the same thread of the same target it fails with EPERM, as any second
# tracer does).
_lock = threading.RLock()


def _renew_lock() -> None:
    # a fork child: a session that another thread held does not go on
    # there (a session of the forking thread itself does, and keeps it)
    """Conditions: a fork child, in the forking thread."""
    global _lock  # pylint: disable=global-statement
    if not _lock._is_owned():  # type: ignore[attr-defined]  # pylint: disable=protected-access
        _lock = threading.RLock()


os.register_at_fork(after_in_child=_renew_lock)


class Session:
    """One thread of another process, stopped under ptrace.

    ``with Session(pid, pidfd) as s: s.syscall(SYS_getpid)`` seizes the
    thread ``tid`` (the leader by default), interrupts it, and on leaving
    restores its registers exactly and detaches, whatever happened in
    between. ``pidfd`` pins the process: if it says the process exited, the
    session refuses to start (a reused pid is never touched)."""

    def __init__(self, pid: int, pidfd: int, tid: int | None = None, timeout: float = 5.0) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.tid = tid if tid is not None else _live_thread(pid)
        self.timeout = timeout
        self.saved: user_regs_struct | None = None
        self.signals: list[int] = []  # to hand back, in order
        self.attached = False
        self.alive = True
        self.modified = False
        self.stopped = False
        self.our_child = False
        self._insn: int | None = None
        self._held = False

    # -- waiting -----------------------------------------------------------

    def _poll(self) -> int | None:
        """The thread's next wait status if there is one now, else None.
        Raises ProcessLookupError when the thread has exited."""
        try:
            if self.our_child:
                # Look before taking: the death of our own child is left
                # for its owner's wait (subprocess's, say). Only stops are
                # ever taken (waitid without WEXITED), so a death that comes
                # between the look and the take is not taken either.
                info = os.waitid(os.P_PID, self.tid, os.WEXITED | os.WNOHANG | os.WNOWAIT | WALL)
                if info is not None and info.si_code in _EXITS:
                    self.alive = False
                    raise _dead(self.pid, "died during the injection")
                info = os.waitid(os.P_PID, self.tid, os.WSTOPPED | os.WNOHANG | WALL)
                if info is None:
                    if pidfd_exited(self.pidfd):
                        self.alive = False
                        raise _dead(self.pid, "exited during the injection")
                    return None
                # waitid gives the stop code itself; waitpid's status is it << 8 | 0x7f
                self.stopped = True
                return (info.si_status << 8) | 0x7F
            wpid, status = os.waitpid(self.tid, os.WNOHANG | WALL)
        except ChildProcessError:
            self.alive = False
            raise _dead(self.pid, "is gone") from None
        if wpid:
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self.alive = False
                raise _dead(self.pid, "died during the injection")
            self.stopped = os.WIFSTOPPED(status)
            return status
        if pidfd_exited(self.pidfd):
            self.alive = False
            raise _dead(self.pid, "exited during the injection")
        return None

    def _wait(self) -> int:
        """The next wait status of the thread, bounded by the timeout and by
        the pidfd. Raises ProcessLookupError when the thread exits."""
        deadline = time.monotonic() + self.timeout
        spins = 0
        delay = 0.00002
        while True:
            status = self._poll()
            if status is not None:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(errno.ETIMEDOUT, f"thread {self.tid} of {self.pid} did not stop "
                                                    f"within {self.timeout} s")
            spins += 1
            if spins < 50:
                os.sched_yield()
            else:
                time.sleep(delay)
                delay = min(delay * 2, 0.002)

    def _stop(self) -> None:
        """Wait for the interrupt's stop. A signal-delivery-stop that comes
        first is kept for later and is as good a place to work from."""
        status = self._wait()
        if not os.WIFSTOPPED(status):
            raise OSError(errno.EIO, f"unexpected wait status {status:#x}")
        sig = os.WSTOPSIG(status)
        if status >> 16 == 0 and sig:  # a signal-delivery-stop: suppressed now, handed back later
            self.signals.append(sig)

    # -- the session ---------------------------------------------------------

    def __enter__(self) -> "Session":
        """Conditions: nothing locked, or the ptrace lock held by this thread
        (a session inside a session); takes it and leaves it held until
        __exit__; waits for the thread to stop, up to the session's timeout."""
        _require_arch()
        if self.pid == os.getpid():
            raise PermissionError(errno.EPERM, "a process cannot trace itself: use the local calls")
        if pidfd_exited(self.pidfd):
            raise _dead(self.pid, "has exited")
        _lock.acquire()
        self._held = True
        try:
            _collect_stragglers()
            self.our_child = self.tid == self.pid and _ppid(self.pid) == os.getpid()
            try:
                _call(PTRACE_SEIZE, self.tid)
            except PermissionError:
                # ptrace_attach answers EPERM for a thread that has begun
                # to exit (exit_state set), or is still traced by us because
                # a SIGKILL woke it from the last session's stop (task->ptrace
                # is cleared only at exit), as for one it may not trace.
                if pidfd_exited(self.pidfd) or _dying(self.pid, self.tid):
                    self.alive = False
                    raise _dead(self.pid, "has exited") from None
                raise
            self.attached = True
            _holding().append(self)
            _call(PTRACE_INTERRUPT, self.tid)
            self._stop()
            self.saved = self.getregs()
            if self.saved.cs != USER64_CS:
                raise OSError(errno.ENOSYS, f"process {self.pid} runs 32-bit code")
        except BaseException:
            self._leave()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        """Conditions: the ptrace lock is held by this thread (__enter__);
        releases it (_leave)."""
        self._leave()

    def _recover(self) -> None:
        # A wait timed out while the thread ran (a stop that never came, or
        # an injected call that blocks): stop it again before restoring.
        _call(PTRACE_INTERRUPT, self.tid)
        self._settle(self._wait())

    def _settle(self, status: int) -> None:
        # An injected call cut short by an interrupt still reports its
        # single step on the way out: a SIGTRAP queued behind the
        # interrupt's stop, which would kill the target once detached. Let
        # the thread reach it, still traced, and drop it.
        for _ in range(64):
            sig = os.WSTOPSIG(status)
            if status >> 16 == 0 and sig and sig != signal.SIGTRAP:
                self.signals.append(sig)
            if not _pending(self.pid, self.tid, signal.SIGTRAP):
                break
            self.stopped = False
            _call(PTRACE_CONT, self.tid, 0, None)
            status = self._wait()

    def _leave(self) -> None:
        """Conditions: the ptrace lock is held by this thread, when the session
        took it; releases it."""
        try:
            if self.attached and self.alive:
                if not self.stopped:
                    try:
                        self._recover()
                    except TimeoutError:
                        # It never stopped (uninterruptible sleep: a vfork
                        # parent waiting for its child's exec, say). It
                        # stays traced by this thread; once it stops, the
                        # next session of this thread (or release_stragglers)
                        # restores and detaches it.
                        _stragglers().append(self)
                        raise
                self._release()
        finally:
            if not self.attached or not self.alive:
                self._forget()
            if self._held:
                self._held = False
                _lock.release()

    def _forget(self) -> None:
        held = _holding()
        if self in held:
            held.remove(self)

    def _release(self) -> None:
        """Restore the registers and detach (the thread is stopped)."""
        try:
            if self.modified and self.saved is not None:
                self.setregs(self.saved)
        finally:
            first = self.signals[0] if self.signals else 0
            try:
                _call(PTRACE_DETACH, self.tid, 0, c_void_p(first))
            except OSError as err:
                if err.errno != errno.ESRCH:
                    raise
                # ESRCH: not in a ptrace stop (a SIGKILL woke it) or gone;
                # either way the kernel detaches it as it dies.
            self.attached = False
            self._forget()
            for sig in self.signals[1:]:
                try:
                    _tgkill(self.pid, self.tid, sig)
                except OSError:
                    pass

    def _collect(self) -> bool:
        """For a straggler: release it if it has stopped by now. True when
        it is done with (released or gone)."""
        try:
            status = self._poll()
            if status is None:
                return False
            self._settle(status)
            self._release()
        except OSError:
            if self.alive and self.attached:
                return False
            self._forget()
        return True

    # -- registers -----------------------------------------------------------

    def getregs(self) -> user_regs_struct:
        regs = user_regs_struct()
        _call(PTRACE_GETREGS, self.tid, 0, ctypes.byref(regs))
        return regs

    def setregs(self, regs: user_regs_struct) -> None:
        _call(PTRACE_SETREGS, self.tid, 0, ctypes.byref(regs))

    def set_state(self, regs: user_regs_struct) -> None:
        """Make ``regs`` the registers the thread resumes with: they are
        kept instead of the saved ones on leaving."""
        self.setregs(regs)
        self.saved = regs.copy()
        self.modified = False

    # -- injection -------------------------------------------------------------

    def syscall_insn(self) -> int:
        if self._insn is None:
            self._insn = find_syscall_insn(self.pid, self.tid)
        return self._insn

    def syscall(self, nr: int, *args: int) -> int:
        """Run system call ``nr`` with up to six arguments in the thread;
        returns the raw rax: a value, or -errno (-4095..-1)."""
        if len(args) > 6:
            raise ValueError("a system call takes at most six arguments")
        assert self.saved is not None
        insn = self.syscall_insn()
        regs = self.saved.copy()
        a = [x & 0xFFFFFFFFFFFFFFFF for x in args] + [0] * (6 - len(args))
        regs.rax = nr
        regs.orig_rax = 0xFFFFFFFFFFFFFFFF  # -1: no syscall to restart in these registers
        regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9 = a
        regs.rip = insn
        self.modified = True
        self.setregs(regs)
        while True:
            self.stopped = False
            _call(PTRACE_SINGLESTEP, self.tid, 0, None)
            status = self._wait()
            if not os.WIFSTOPPED(status):
                raise OSError(errno.EIO, f"unexpected wait status {status:#x}")
            sig = os.WSTOPSIG(status)
            if status >> 16 == PTRACE_EVENT_STOP:
                continue  # the interrupt's own trap, reported late
            if sig == signal.SIGTRAP:
                out = self.getregs()
                if out.rip == insn + 2:
                    break
                # a SIGTRAP from elsewhere before the step: hand it back
                self.signals.append(sig)
                continue
            self.signals.append(sig)  # suppressed now, handed back on detach
        r = int(out.rax)
        return r - (1 << 64) if r >= 1 << 63 else r

    def read(self, addr: int, n: int) -> bytes:
        """Bytes of the target's memory (through /proc/PID/mem)."""
        fd = os.open(f"{_proc(self.pid, self.tid)}/mem", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, n, addr)
        finally:
            os.close(fd)

    def write(self, addr: int, data: bytes) -> None:
        """Write into the target's memory (through /proc/PID/mem, which
        writes even read-only pages, as a debugger does)."""
        fd = os.open(f"{_proc(self.pid, self.tid)}/mem", os.O_RDWR | os.O_CLOEXEC)
        try:
            done = 0
            while done < len(data):
                done += os.pwrite(fd, data[done:], addr + done)
        finally:
            os.close(fd)


_libc_tgkill = fn("tgkill", c_int, c_int, c_int, c_int)


def _tgkill(pid: int, tid: int, sig: int) -> None:
    if _libc_tgkill(pid, tid, sig):
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


_EXITS = frozenset({os.CLD_EXITED, os.CLD_KILLED, os.CLD_DUMPED})


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError):
        return 0


_local = threading.local()


def _holding() -> list["Session"]:
    """This thread's sessions that hold their thread traced: in progress,
    or stragglers."""
    if not hasattr(_local, "holding"):
        _local.holding = []
    return _local.holding  # type: ignore[no-any-return]


def _stragglers() -> list["Session"]:
    """This thread's sessions whose thread never stopped: still traced."""
    if not hasattr(_local, "stragglers"):
        _local.stragglers = []
    return _local.stragglers  # type: ignore[no-any-return]


def _collect_stragglers() -> None:
    lst = _stragglers()
    if lst:
        lst[:] = [s for s in lst if not s._collect()]


def release_stragglers() -> int:
    """Detach the threads that this thread's timed-out sessions left
    traced, those that have stopped since; returns how many are left.

    Conditions: nothing locked, or the ptrace lock held by this thread;
    takes it."""
    with _lock:
        _collect_stragglers()
        return len(_stragglers())


def _pending(pid: int, tid: int, sig: int) -> bool:
    """Whether ``sig`` is pending for the thread itself (SigPnd)."""
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        for line in f:
            if line.startswith("SigPnd:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def _live_thread(pid: int) -> int:
    """The leader, unless it has exited while other threads run on (it is
    then a zombie that never stops): the first live thread."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rpartition(")")[2].split()[0] not in "ZX":
                return pid
        for tid in thread_ids(pid)[1:]:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] not in "ZX":
                    return tid
    except OSError:
        pass
    return pid


def inject(pid: int, pidfd: int, calls: Iterable[Sequence[int]], timeout: float = 5.0) -> list[int]:
    """Run each ``(nr, *args)`` of ``calls`` inside ``pid`` in one session;
    returns their raw results (a value, or -errno)."""
    with Session(pid, pidfd, timeout=timeout) as s:
        return [s.syscall(c[0], *c[1:]) for c in calls]


def get_thread_regs(pid: int, pidfd: int, tid: int) -> user_regs_struct:
    """The registers of one thread, as it will resume."""
    with Session(pid, pidfd, tid) as s:
        assert s.saved is not None
        return s.saved.copy()


def set_thread_regs(pid: int, pidfd: int, tid: int, regs: user_regs_struct) -> None:
    """Give one thread new registers."""
    with Session(pid, pidfd, tid) as s:
        s.set_state(regs)


def thread_ids(pid: int) -> list[int]:
    """The thread ids of ``pid`` (/proc/PID/task), leader first."""
    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        raise _dead(pid, "is gone") from None
    if pid in tids:
        tids.remove(pid)
        tids.insert(0, pid)
    return tids


def proc_state(pid: int) -> tuple[str, int]:
    """(State letter, TracerPid) from /proc/PID/status."""
    state, tracer = "?", 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("State:"):
                state = line.split()[1]
            elif line.startswith("TracerPid:"):
                tracer = int(line.split()[1])
    return state, tracer
