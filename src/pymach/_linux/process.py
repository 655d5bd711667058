"""Processes: fork, wait, kill, and what a process sets on itself (its
priority, the CPUs it may run on, its fd limit, its signal mask).

Kernel facts this module relies on:

- fork() copies the address space (copy-on-write) and the fd table: the
  child holds the same open files, sockets and memfds as the parent. Only
  the calling thread goes on in the child; a lock another thread held at
  the fork stays held there for good.
- A forked child must leave with _exit(): it runs no atexit handler and
  flushes no stdio buffer that the parent will flush too, and no finally
  clause of the parent's stack runs twice.
- A child that has exited stays a zombie, its pid kept from reuse, until
  its parent waits for it (waitpid).
- SIGKILL can be neither caught nor ignored: the process ends at once, and
  the kernel closes every fd it held (the peers of its sockets see EOF).
- nice 19 is the lowest priority an unprivileged process can take (nice
  only goes up without CAP_SYS_NICE).
- sched_setaffinity(0, cpus) binds the calling thread to ``cpus``; a
  child forked afterwards inherits the mask.
- A signal blocked (pthread_sigmask) in every thread is not delivered: it
  stays pending until a thread takes it with sigwait, which returns it
  like any call, so no handler interrupts whatever code runs. The mask is
  per thread, and a new thread starts with its creator's.
- RLIMIT_NOFILE's soft limit caps the fd numbers a process may hold (a new
  fd past it fails with EMFILE; a received one is dropped, MSG_CTRUNC). A
  process may raise it up to the hard limit without privilege.
"""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Iterable

SIGKILL = signal.SIGKILL
SIGTERM = signal.SIGTERM
SIGINT = signal.SIGINT

fork = os.fork
exit_now = os._exit  # pylint: disable=protected-access


def kill(pid: int, sig: int = SIGKILL) -> None:
    """Send ``sig`` to ``pid`` (OSError ESRCH if it is gone)."""
    os.kill(pid, sig)


def reap(pid: int) -> int:
    """Wait for the child ``pid`` to end; its exit code (the negative
    signal number when a signal ended it)."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def block_signals(sigs: Iterable[int]) -> None:
    """Block ``sigs`` in the calling thread (and the threads it starts
    afterwards): they wait, pending, for take_signal."""
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)


def take_signal(sigs: Iterable[int]) -> int:
    """Wait until one of the blocked ``sigs`` is pending, and take it
    (sigwait): its number."""
    return signal.sigwait(sigs)


def lowest_priority() -> None:
    """nice 19: the calling process runs only when nothing else would."""
    os.nice(19)


def cpus() -> set[int]:
    """The CPUs the calling thread may run on."""
    return os.sched_getaffinity(0)


def run_on(cpus_: set[int]) -> None:
    """Bind the calling thread (and the children it forks) to ``cpus_``."""
    os.sched_setaffinity(0, cpus_)


def fd_limits() -> tuple[int, int]:
    """RLIMIT_NOFILE: (soft, hard); RLIM_INFINITY reads as 1 << 20."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    return (soft if soft != unlimited else 1 << 20), (hard if hard != unlimited else 1 << 20)


def raise_fd_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def signal_name(sig: int) -> str:
    """SIGSEGV for 11, and so on."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def die_of(sig: int) -> None:
    """End this process by ``sig``, as another process that died of it
    ended: the default action (no handler of ours, no core file of ours:
    RLIMIT_CORE 0). Returns only for a signal whose default is not to end
    the process."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
    os.kill(os.getpid(), sig)
