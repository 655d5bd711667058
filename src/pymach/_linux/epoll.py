"""epoll: how a receiver waits on every connection of a port at once, and
on every port of a port set.

Kernel facts this module relies on:

- An epoll instance is an fd that holds a set of interests (fd, events);
  epoll_wait returns the ones that are ready. Interests are
  level-triggered (the default): an fd is reported on every wait for as
  long as it stays ready, so a message left unread is never missed.
- With maxevents 1, ready fds are handed out in turn: the kernel moves a
  reported fd to the back of its ready list, so one busy connection does
  not starve the others.
- An epoll fd is itself pollable, readable while any of its interests is
  ready: epoll sets nest. A port set is an epoll instance over its ports'
  epoll instances; a port's epoll fd is what its fileno() gives selectors
  and asyncio.
- EPOLLRDHUP is reported on a receiving end once the peer has shut down
  writing (every copy of the sending end closed), even while records are
  still queued on it. EPOLLHUP and EPOLLERR are reported whatever the mask.
- An interest belongs to the open file description, not the fd number: it
  leaves the set when the description's last fd closes, or at
  unregister(). A dup kept elsewhere keeps it in the set.
- Closing an epoll fd does not wake a thread already in epoll_wait on it
  (and its number may be reused under that thread), while adding a ready
  fd to the set wakes its waiters.
- An interest registered EPOLLONESHOT is reported once, then disabled
  until modify() arms it again (it stays in the set).
- An interest registered EPOLLET (edge-triggered) is reported when its
  state changes, not for as long as it lasts: a hang-up, which stays, is
  reported once.
- epoll_wait's timeout is an int of milliseconds: a longer wait is taken
  in parts. Python's select.epoll is close-on-exec (EPOLL_CLOEXEC).

The epoll object is Python's select.epoll; callers use its methods
(register, modify, unregister, poll, close, fileno).
"""

from __future__ import annotations

import select

Epoll = select.epoll

EPOLLIN = int(select.EPOLLIN)
EPOLLRDHUP = int(select.EPOLLRDHUP)
EPOLLHUP = int(select.EPOLLHUP)
EPOLLERR = int(select.EPOLLERR)
EPOLLONESHOT = int(select.EPOLLONESHOT)
EPOLLET = int(select.EPOLLET)

# the longest wait one epoll_wait takes, in seconds (an int of ms)
MAX_WAIT = 2147483.0


def new() -> select.epoll:
    """A new, empty epoll instance (close-on-exec)."""
    return select.epoll()
