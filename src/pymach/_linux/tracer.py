"""ptrace(2) over a whole process, for its faults: the engine under
exception ports (x86_64 only).

A tracer seizes every thread of the target and waits. A fault stops the
faulting thread before any signal handler of the target runs; the tracer
reads what happened (the signal, its code, the fault address, the
registers), and then either resumes the thread without the signal (it
retries the faulting instruction, perhaps with new registers) or lets the
signal go on, as if nothing had traced the thread.

Kernel facts this module relies on:

- A signal meant for a traced thread stops it in a signal-delivery-stop
  (waitid: CLD_TRAPPED with the signal; status >> 16 == 0) before the
  kernel looks at the thread's signal handlers. PTRACE_GETSIGINFO gives
  its siginfo: si_code > 0 means the kernel raised it for what the thread
  did (SEGV_MAPERR 1, SEGV_ACCERR 2, BUS_ADRERR 2, ILL_ILLOPN 2, FPE_INTDIV
  1, TRAP_BRKPT 1, SI_KERNEL 0x80 for int3 on x86), si_code <= 0 that a
  process sent it (SI_USER 0, SI_QUEUE -1, SI_TKILL -6). si_addr is at
  offset 16 of the siginfo.
- PTRACE_CONT with signal 0 discards the signal: a thread stopped on a
  fault re-executes the faulting instruction (after int3, rip already
  points past it). PTRACE_CONT with the signal delivers it as if the
  thread were not traced: its handler runs, or the default action kills
  the process.
- PTRACE_SEIZE with PTRACE_O_TRACECLONE traces each new thread from its
  first instruction: it starts in a PTRACE_EVENT_STOP, and its creator
  reports PTRACE_EVENT_CLONE (status >> 16 == 3) with the new tid as the
  event message.
- A stop signal (SIGSTOP, SIGTSTP...) makes a signal-delivery-stop first;
  when the tracer lets it through, each thread reports a group-stop as
  PTRACE_EVENT_STOP with the stop signal. PTRACE_LISTEN leaves the thread
  stopped as the user meant, and reports again when it is continued
  (SIGCONT) or killed.
- When the tracer exits or dies, the kernel detaches every tracee; a
  tracee in a signal-delivery-stop gets its signal delivered. A target
  never stays stopped because its tracer went away, and a fault the
  tracer had not answered ends as it would have untraced.
- waitpid(-1, __WALL) sees the stops of every traced thread, leader or
  not, and only its status tells an event stop (status >> 16) from a
  signal (waitid's siginfo has the signal alone). A tracer process of its
  own has no other children, so it can wait for any.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import struct
from dataclasses import dataclass
from typing import Any

from .libc import c_int, c_ulong, fn
from .ptrace import (PTRACE_CONT, PTRACE_DETACH, PTRACE_EVENT_STOP, PTRACE_GETREGS, PTRACE_INTERRUPT,
                     PTRACE_SEIZE, PTRACE_SETREGS, WALL, _call, thread_ids, user_regs_struct)

PTRACE_GETSIGINFO = 0x4202
PTRACE_GETEVENTMSG = 0x4201
PTRACE_LISTEN = 0x4208
PTRACE_O_TRACECLONE = 0x8
PTRACE_EVENT_CLONE = 3
SI_KERNEL = 0x80
SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP = (int(signal.SIGSEGV), int(signal.SIGBUS), int(signal.SIGILL),
                                            int(signal.SIGFPE), int(signal.SIGTRAP))
FAULTS = frozenset({SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP})
_STOPS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
STOP_SIGNALS = frozenset(int(s) for s in _STOPS)  # job control: never an exception


PR_SET_PTRACER = 0x59616D61  # "Yama"
_prctl = fn("prctl", c_int, c_int, c_ulong, c_ulong, c_ulong, c_ulong)


def allow_tracer(pid: int) -> None:
    """Let process ``pid`` trace us (prctl PR_SET_PTRACER). Under Yama's
    ptrace_scope 1 only an ancestor may trace a process, unless the process
    names its tracer so; without Yama the call fails with EINVAL and
    nothing is needed."""
    if _prctl(PR_SET_PTRACER, pid, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        if err != errno.EINVAL:
            raise OSError(err, os.strerror(err))


@dataclass
class Stop:
    """One stop of a traced thread.

    ``kind``: "signal" (a signal-delivery-stop: ``signo``, ``code``,
    ``addr``), "clone" (a new thread, ``new_tid``, now traced), "group"
    (a group-stop or the first stop of a new thread), "exit" (the thread
    is gone; ``status`` is the process's wait status when it was the
    leader)."""

    tid: int
    kind: str
    signo: int = 0
    code: int = 0
    addr: int = 0
    new_tid: int = 0
    status: int = 0

    @property
    def fault(self) -> bool:
        """A fault the thread made itself: the kernel sent the signal."""
        return self.kind == "signal" and self.signo in FAULTS and self.code > 0


class Tracer:
    """Every thread of process ``pid``, traced from the calling thread.

    Every request must come from that thread (ptrace's tracer is a
    thread). ``attach()`` seizes the threads; ``wait()`` gives the next
    stop; ``resume(stop, signo)`` continues a stopped thread, with the
    signal or without; ``detach()`` lets them all go."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tids: set[int] = set()

    def attach(self) -> None:
        """Seize every thread, and each new one from then on. Threads made
        while seizing are seized by the clone option or by the next pass.
        PermissionError when the kernel refuses (ptrace's access check),
        ProcessLookupError when the process is gone."""
        while True:
            new = [t for t in thread_ids(self.pid) if t not in self.tids]
            if not new:
                return
            for tid in new:
                try:
                    _call(PTRACE_SEIZE, tid, 0, PTRACE_O_TRACECLONE)
                except ProcessLookupError:
                    continue  # a thread that exited meanwhile
                self.tids.add(tid)

    def wait(self, block: bool = True) -> Stop | None:
        """The next stop of a traced thread (None without ``block`` when
        there is none now). ChildProcessError when no traced thread is
        left."""
        # waitpid, not waitid: only its status carries the event (status >> 16)
        tid, status = os.waitpid(-1, WALL | (0 if block else os.WNOHANG))
        if not tid:
            return None
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self.tids.discard(tid)
            return Stop(tid, "exit", status=status)
        self.tids.add(tid)  # (a new thread may stop before its creator's clone event)
        sig, event = os.WSTOPSIG(status), status >> 16
        if event == PTRACE_EVENT_CLONE:
            msg = ctypes.c_ulong()
            _call(PTRACE_GETEVENTMSG, tid, 0, ctypes.byref(msg))
            self.tids.add(int(msg.value))
            return Stop(tid, "clone", signo=sig, new_tid=int(msg.value))
        if event:
            return Stop(tid, "group", signo=sig)
        info = (ctypes.c_char * 128)()
        _call(PTRACE_GETSIGINFO, tid, 0, info)
        signo, _errno, code = struct.unpack_from("iii", info)
        return Stop(tid, "signal", signo=signo, code=code, addr=struct.unpack_from("Q", info, 16)[0])

    def resume(self, stop: Stop, signo: int = 0) -> None:
        """Continue a stopped thread: with ``signo`` delivered (0: none).
        A group-stop stays a stop (PTRACE_LISTEN). A thread that is gone
        is forgotten."""
        try:
            if stop.kind == "group" and stop.signo in _STOPS:
                _call(PTRACE_LISTEN, stop.tid)
            else:
                _call(PTRACE_CONT, stop.tid, 0, signo)
        except ProcessLookupError:
            self.tids.discard(stop.tid)

    def get_regs(self, tid: int) -> user_regs_struct:
        """The registers of a stopped thread."""
        regs = user_regs_struct()
        _call(PTRACE_GETREGS, tid, 0, ctypes.byref(regs))
        return regs

    def set_regs(self, tid: int, regs: user_regs_struct) -> None:
        """New registers for a stopped thread, taken when it resumes."""
        _call(PTRACE_SETREGS, tid, 0, ctypes.byref(regs))

    def detach(self) -> None:
        """Let every thread go. Only a stopped tracee can be detached: each
        is stopped first (PTRACE_INTERRUPT), and a signal a thread stopped
        for is delivered as it goes. Threads that are gone are skipped."""
        for tid in list(self.tids):
            try:
                _call(PTRACE_INTERRUPT, tid)
            except ProcessLookupError:
                self.tids.discard(tid)
        pending: dict[int, int] = {}
        while self.tids - set(pending):
            try:
                st = self.wait()
            except ChildProcessError:
                break
            if st is None or st.kind == "exit":
                continue
            if st.kind == "signal":
                pending[st.tid] = st.signo
            else:
                pending.setdefault(st.tid, 0)
        for tid, signo in pending.items():
            try:
                _call(PTRACE_DETACH, tid, 0, signo)
            except ProcessLookupError:
                pass
        self.tids.clear()


# -- a function that faults on purpose ------------------------------------------------

STORE = b"\x48\x89\x37\xc3"  # mov [rdi], rsi ; ret: 3 bytes of store, then return


def store_function() -> Any:
    """A C function ``store(address, value)`` of 4 bytes (``mov [rdi], rsi;
    ret``), in an executable page of its own: a write whose fault and whose
    instruction length (3 bytes) are known, for the exception benchmark.
    Called through ctypes, it runs without Python's lock."""
    import mmap
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(STORE)
    fn = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p, ctypes.c_long)(
        ctypes.addressof(ctypes.c_char.from_buffer(page)))
    fn._page = page  # type: ignore[attr-defined]  # (the page lives as long as the function)
    return fn


# -- the channel between a task and its tracer -----------------------------------------

# one update: level, tid, exception type, behavior, flavor, and whether a
# send right's fds come with it (SCM_RIGHTS)
UPDATE = struct.Struct("<iiiiii")


class Channel:
    """A SOCK_SEQPACKET connection between a task and its tracer process:
    one record per update, a send right's fds beside it, a one-byte answer
    per record."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> "tuple[Channel, socket.socket]":
        """Our end, and the tracer's (to pass to it, then close here)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return cls(ours), theirs

    @classmethod
    def adopt(cls, fd: int) -> "Channel":
        return cls(socket.socket(fileno=fd))

    def send(self, data: bytes, fds: list[int] | None = None) -> None:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
        self.sock.sendmsg([data], anc)

    def recv(self, timeout: float | None = None) -> tuple[bytes, list[int]]:
        """A record and the fds that came with it; b"" when the peer is gone."""
        self.sock.settimeout(timeout)
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(256, socket.CMSG_SPACE(16 * 4))
        except OSError:
            return b"", []
        fds: list[int] = []
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(struct.unpack(f"{len(payload) // 4}i", payload[:len(payload) // 4 * 4]))
        return data, fds

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def exit_now(code: int) -> None:
    """End the tracer at once (os._exit): the kernel detaches every tracee,
    and a thread stopped on a fault nobody answered gets its signal."""
    os._exit(code)
