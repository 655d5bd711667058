"""File descriptors: the handles through which pymach holds every kernel
object (port connections, queue semaphores, memfds, pidfds, epoll sets).

Kernel facts this module relies on:

- An fd names an open file description, which names the object. The
  object lives while any fd of any process, or any mapping, refers to it:
  closing our fd of a memfd that is mapped, or of a socket that travels in
  a message, does not destroy it.
- close() frees the number at once, and the next call that makes an fd
  (open, socket, accept, dup, a received SCM_RIGHTS) in any thread of the
  process takes the lowest free number. A number closed while another
  thread still uses it may name another object by the time it is used:
  the runtime sets a closed holder to -1, and checks a right's fd by its
  inode before it writes on it.
- dup() makes a new number for the same open file description: the file
  offset and the status flags (O_NONBLOCK, the access mode) are shared,
  the close-on-exec flag is not. Python's os.dup and every fd Python
  opens are close-on-exec (non-inheritable), so nothing pymach holds
  leaks into a program it execs.
- fstat's st_ino names the object behind an fd: every socket has an inode
  of its own in sockfs, every memfd one in tmpfs. (Eventfds and epoll
  instances share the one anonymous inode: their inode says nothing.)
- fcntl(F_GETFL) gives the access mode the description was opened with;
  a description opened O_RDONLY never becomes writable, whoever holds it.
- The close-on-exec flag (FD_CLOEXEC) belongs to the fd number: clearing
  or setting it on one fd leaves the other fds of the same description as
  they were. An fd a parent left inheritable on purpose (pymach.spawn's)
  is made close-on-exec again by its taker, so that it goes no further.
- dup2(old, new) closes ``new`` and makes it a copy of ``old`` in one
  step: no other thread can take the number in between. Python's os.dup2
  leaves ``new`` inheritable, as stdin, stdout and stderr are meant to be.
- A pipe holds 64 KiB (16 pages) by default. On a nonblocking pipe
  (O_NONBLOCK, here from pipe2), a write to a full pipe and a read of an
  empty one fail with EAGAIN (BlockingIOError) instead of waiting: a
  wake-up pipe whose write would block has wake-ups pending already.

The bare calls are exposed as they are (``close = os.close``): a hot path
binds them once, with no wrapper between it and the system call.
"""

from __future__ import annotations

import fcntl
import os
import select
import stat

close = os.close
dup = os.dup
fstat = os.fstat
open = os.open  # pylint: disable=redefined-builtin
read = os.read
write = os.write
pread = os.pread
preadv = os.preadv
ftruncate = os.ftruncate

O_RDONLY = os.O_RDONLY
O_RDWR = os.O_RDWR
O_ACCMODE = os.O_ACCMODE
O_CLOEXEC = os.O_CLOEXEC


def close_all(fds: list[int]) -> None:
    """Close every fd in ``fds``, ignoring ones already closed."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def inode(fd: int) -> int:
    """The inode number that names the socket (or file) behind ``fd``."""
    return os.fstat(fd).st_ino


def size(fd: int) -> int:
    """The length of the file behind ``fd`` (st_size)."""
    return os.fstat(fd).st_size


def is_regular(fd: int) -> bool:
    """True if ``fd`` is a regular file (a memfd is one; a pipe or a
    socket is not). OSError EBADF when it is not open."""
    return stat.S_ISREG(os.fstat(fd).st_mode)


def access_mode(fd: int) -> int:
    """O_RDONLY, O_WRONLY or O_RDWR: how the description behind ``fd`` was
    opened. OSError EBADF when it is not open."""
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE


def pipe() -> tuple[int, int]:
    """A close-on-exec pipe: (read end, write end)."""
    return os.pipe()


def nonblocking_pipe() -> tuple[int, int]:
    """A close-on-exec, nonblocking pipe (pipe2 with O_CLOEXEC and
    O_NONBLOCK): (read end, write end)."""
    return os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)


def close_on_exec(fd: int) -> None:
    """Set FD_CLOEXEC on ``fd`` (this number only: see above). OSError
    EBADF when it is not open."""
    os.set_inheritable(fd, False)


def stdio_to_devnull() -> None:
    """Make fds 0, 1 and 2 copies of /dev/null (dup2: each number is
    replaced in one step), inheritable as stdio is."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def wait_readable(fd: int, seconds: float) -> bool:
    """Wait up to ``seconds`` until ``fd`` is readable or hung up (a pipe
    whose every write end has closed reads EOF). False on timeout."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(int(seconds * 1000)))
