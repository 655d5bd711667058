"""The system calls behind a Mach semaphore (_kern/sync_sema.py): its
counter, its shared state page, the locks that count its waiters, and an
epoll_wait that a signal interrupts.

Kernel facts this module relies on:

- An EFD_SEMAPHORE eventfd is the count (see _linux/eventfd.py): a
  nonblocking read takes 1 or fails with EAGAIN, atomically. A process
  that is SIGKILLed while it waits in epoll_wait has read nothing, so it
  takes no signal with it: the count stays for the next waiter.
- A shared mapping (MAP_SHARED) of a memfd is the same pages in every
  process that maps it: a word written through one mapping is read
  through every other at once. Sealed F_SEAL_SHRINK | F_SEAL_GROW, no
  holder can truncate it under another's mapping (no SIGBUS).
- Open file description locks (F_OFD_SETLK, F_OFD_SETLKW, F_OFD_GETLK,
  Linux 3.15) belong to the open file description, not to the process:
  two descriptions of the same file (two opens of /proc/self/fd/N)
  conflict, two fds of one description do not. The kernel drops them
  when the description's last fd closes, which a SIGKILL does: a lock
  held by a dead waiter is gone at once. F_OFD_GETLK reports the first
  lock of another description that would conflict with the one asked
  about, F_UNLCK when there is none. Locks may lie past the end of file.
- epoll_wait is never restarted after a signal handler runs (signal(7)):
  it fails with EINTR. Python's select.epoll.poll retries it (PEP 475);
  called through ctypes it returns the EINTR, and Python runs the
  handler at its next bytecode.
- epoll_wait also fails with EINTR when no signal came at all: it gives
  up whenever signal_pending() is true, and task work queued to the
  thread sets that too (TIF_NOTIFY_SIGNAL: io_uring completions, which
  an event loop such as libuv's makes). Such an EINTR ran no handler.
- An interest registered EPOLLET is reported once per change: each write
  to an eventfd is a change, even when its counter was not zero before.
  An fd that is ready when it is registered is reported on the first
  wait.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import signal
import struct

from . import libc, mm

PAGE = mm.PAGE_SIZE

F_OFD_GETLK = 36
F_OFD_SETLK = 37
F_OFD_SETLKW = 38
_FLOCK = struct.Struct("hhxxxxqqi4x")  # struct flock on LP64: type, whence, start, len, pid
_WRLCK = fcntl.F_WRLCK
_UNLCK = fcntl.F_UNLCK


class Page:
    """A shared mapping of the first page of a memfd, as 32-bit words:
    reads and writes are loads and stores, no system call."""

    __slots__ = ("_addr", "words")

    def __init__(self, fd: int) -> None:
        self._addr = mm.mmap(0, PAGE, mm.PROT_READ | mm.PROT_WRITE, mm.MAP_SHARED, fd, 0)
        self.words = (ctypes.c_uint32 * (PAGE // 4)).from_address(self._addr)

    def close(self) -> None:
        addr, self._addr = self._addr, 0
        if addr:
            self.words = (ctypes.c_uint32 * 0)()
            mm.munmap(addr, PAGE)


def state_memfd(name: str) -> int:
    """A close-on-exec memfd of one zero page, sealed against resizing."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, PAGE)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_state_memfd(fd: int) -> bool:
    """True if ``fd`` is a writable memfd of at least a page that nobody
    can resize."""
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        need = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
        return (seals & need == need and os.fstat(fd).st_size >= PAGE
                and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR)
    except OSError:
        return False


def is_semaphore_eventfd(fd: int, semaphore: bool) -> bool:
    """True if ``fd`` is an eventfd, in EFD_SEMAPHORE mode if ``semaphore``
    (else not), as /proc/self/fdinfo says."""
    try:
        if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[eventfd]":
            return False
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("eventfd-semaphore:"):
                    return int(line.split()[1]) == int(semaphore)
    except (OSError, ValueError):
        return False
    return not semaphore  # a kernel that does not say: only a counter is sure


def reopen(fd: int) -> int:
    """A new open file description (O_RDWR, close-on-exec) of the file of
    ``fd``: the locks it takes are its own."""
    return os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)


_packed: dict[tuple[int, int], bytes] = {}  # (type, offset) -> its struct flock, made once


def _flock(typ: int, off: int) -> bytes:
    f = _packed.get((typ, off))
    if f is None:
        f = _packed[typ, off] = _FLOCK.pack(typ, os.SEEK_SET, off, 1, 0)
    return f


def lock(fd: int, off: int, wait: bool) -> bool:
    """Write-lock the byte at ``off`` for the description of ``fd``;
    with ``wait``, until it is free. False if another description holds it
    (without ``wait``)."""
    try:
        fcntl.fcntl(fd, F_OFD_SETLKW if wait else F_OFD_SETLK, _flock(_WRLCK, off))
    except (BlockingIOError, PermissionError):
        return False
    return True


def unlock(fd: int, off: int) -> None:
    fcntl.fcntl(fd, F_OFD_SETLK, _flock(_UNLCK, off))


def locked_from(fd: int, off: int, length: int) -> int:
    """The first byte in [off, off + length) that another description
    holds a lock on, or -1."""
    got = fcntl.fcntl(fd, F_OFD_GETLK, _FLOCK.pack(_WRLCK, os.SEEK_SET, off, length, 0))
    typ, _whence, start, _len, _pid = _FLOCK.unpack(got)
    return -1 if typ == _UNLCK else max(start, off)


_epoll_wait = libc.fn("epoll_wait", ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int)
_EVENT = struct.Struct("=Ii4x")  # struct epoll_event (packed on x86_64): events, data.fd


class Waiting:
    """One wait's epoll instance: the count (level-triggered) and the
    wake-up eventfd (EPOLLET)."""

    __slots__ = ("_ep", "_buf")

    def __init__(self, count_fd: int, wake_fd: int) -> None:
        self._ep = select.epoll(2)
        try:
            self._ep.register(count_fd, select.EPOLLIN)
            self._ep.register(wake_fd, select.EPOLLIN | select.EPOLLET)
        except BaseException:
            self._ep.close()
            raise
        self._buf = ctypes.create_string_buffer(_EVENT.size * 2)

    def wait(self, ms: int) -> bool:
        """Wait at most ``ms`` (-1: no limit); False when a signal may have
        run a handler of the program's during the wait (EINTR while one is
        installed), True otherwise (an EINTR with no handler to run: task
        work, not a signal, cut the wait short, and the caller waits on)."""
        n = _epoll_wait(self._ep.fileno(), self._buf, 2, ms)
        if n < 0:
            e = ctypes.get_errno()
            if e == 4:  # EINTR
                return not handlers_installed()
            raise OSError(e, os.strerror(e))
        return True

    def fileno(self) -> int:
        return self._ep.fileno()

    def close(self) -> None:
        self._ep.close()


def handlers_installed() -> bool:
    """Whether the program has a Python signal handler of its own (not
    SIG_DFL, SIG_IGN or Python's SIGINT handler, which raises
    KeyboardInterrupt out of any wait)."""
    for sig in signal.valid_signals():
        h = signal.getsignal(sig)
        if callable(h) and h is not signal.default_int_handler:
            return True
    return False
