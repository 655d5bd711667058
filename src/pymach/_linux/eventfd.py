"""eventfds: a port's queue semaphore, and the wake-ups of receivers.

Kernel facts this module relies on:

- An eventfd holds a 64-bit counter. write(n) adds n to it (a nonblocking
  write that would take it past 2**64 - 2 fails with EAGAIN). With
  EFD_SEMAPHORE, a read takes 1 and returns 1 while the counter is not
  zero; without it, a read takes the whole count. A nonblocking read of a
  zero counter fails with EAGAIN (BlockingIOError).
- The counter belongs to the file, not the fd: every process holding an
  fd of it (passed with SCM_RIGHTS) takes from and adds to the same count.
  That is how one semaphore counts the free places of a port's queue for
  all its senders (each read takes a place) and its receiver (each message
  taken off a connection gives one back).
- poll and epoll report an eventfd readable while its counter is not zero
  (level-triggered). An eventfd left at 1 and never read wakes every later
  epoll_wait on a set that holds it: a wake-up nobody can miss.
- /proc/self/fdinfo/FD shows the counter (``eventfd-count:``, in hex)
  without reading it.
- EPOLLEXCLUSIVE (Linux 4.5) on an fd that many epoll instances watch
  makes one write wake one of the instances waiting on it (or a few), not
  all of them. The hang-up of another fd in the same instance is reported
  whatever its mask.

``read`` and ``write`` are os.eventfd_read and os.eventfd_write as they
are: the message path binds them once, with no wrapper between it and the
system call.
"""

from __future__ import annotations

import os
import select

read = os.eventfd_read
write = os.eventfd_write


def semaphore(count: int) -> int:
    """A close-on-exec, nonblocking EFD_SEMAPHORE eventfd holding ``count``."""
    return os.eventfd(count, os.EFD_SEMAPHORE | os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def counter(count: int = 0) -> int:
    """A close-on-exec, nonblocking eventfd holding ``count`` (a read takes
    all of it). Made with 1 and never read, it is a wake-up that stays."""
    return os.eventfd(count, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def count(fd: int) -> int | None:
    """The counter of the eventfd ``fd``, read from /proc/self/fdinfo (the
    counter is left as it is); None when it cannot be read."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("eventfd-count:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return None


def is_eventfd(fd: int) -> bool:
    """True if ``fd`` is an eventfd."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
    except OSError:
        return False


class Waiter:
    """Waits until the eventfd ``efd`` is readable or the socket ``hup_fd``
    hangs up, beside other waiters on the same eventfd: through an epoll
    instance of its own with EPOLLEXCLUSIVE, so that one write wakes one
    waiter (as XNU wakes one full-queue sender per place freed,
    ipc_mqueue_release_msgcount). When no fd is left for the epoll
    instance, with poll, which needs none (then every waiter wakes)."""

    __slots__ = ("_ep", "_poll", "_hup_fd")

    def __init__(self, efd: int, hup_fd: int) -> None:
        self._hup_fd = hup_fd
        self._ep: select.epoll | None = None
        self._poll: select.poll | None = None
        try:
            self._ep = select.epoll(2)
            self._ep.register(efd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            self._ep.register(hup_fd, 0)
        except OSError:  # no fd for it: poll
            if self._ep is not None:
                self._ep.close()
                self._ep = None
            self._poll = select.poll()
            self._poll.register(efd, select.POLLIN)
            self._poll.register(hup_fd, select.POLLHUP)

    def wait(self, seconds: float) -> tuple[bool, bool]:
        """Wait at most ``seconds``: (anything ready, the socket hung up)."""
        if self._ep is not None:
            ready = self._ep.poll(seconds)
        else:
            assert self._poll is not None
            ready = self._poll.poll(int(seconds * 1000))
        hup = self._hup_fd
        # EPOLLHUP and EPOLLERR equal POLLHUP and POLLERR
        return bool(ready), any(fd == hup and ev & (select.EPOLLHUP | select.EPOLLERR) for fd, ev in ready)

    def close(self) -> None:
        if self._ep is not None:
            self._ep.close()
            self._ep = None
