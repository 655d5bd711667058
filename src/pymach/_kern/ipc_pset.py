"""Port sets: an epoll instance over the epoll sets of member ports, so a
receive on the set wakes for a message on any member."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from .._linux import epoll, eventfd, files
from . import kern_return as K
from .ipc_space import renew_at_fork

if TYPE_CHECKING:
    from .ipc_port import Port


class PortSet:
    """A set of receive rights of this task."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ep = epoll.new()
        self.members: dict[int, "Port"] = {}  # the member's epoll fd -> port
        # written when the set is destroyed, to wake its blocked receivers
        try:
            self.wake = eventfd.counter(0)
        except OSError:
            self.ep.close()
            raise
        self.ep.register(self.wake, epoll.EPOLLIN)
        self.destroyed = False
        self.waiters = 0
        # members with messages their epoll set does not show (kick())
        self.kicked: set["Port"] = set()
        renew_at_fork(self)

    def renew_locks(self) -> None:
        """A fork child: a lock held by a thread that did not follow is free.

        Conditions: a fork child, in the forking thread."""
        self.lock = threading.Lock()

    def add(self, port: "Port") -> None:
        """Insert a member. KERN_ALREADY_IN_SET.

        Conditions: the space's lock is held; takes the set's lock; changes
        the port's ``sets`` without the port's lock."""
        with self.lock:
            if port.fileno() in self.members:
                raise K.MachError(K.KERN_ALREADY_IN_SET, "the port is already in the set")
            self.ep.register(port.fileno(), epoll.EPOLLIN)
            self.members[port.fileno()] = port
            port.sets.add(self)

    def remove(self, port: "Port") -> None:
        """Extract a member. KERN_NOT_IN_SET.

        Conditions: the space's lock is held; takes the set's lock; changes
        the port's ``sets`` without the port's lock."""
        with self.lock:
            if self.members.get(port.fileno()) is not port:
                raise K.MachError(K.KERN_NOT_IN_SET, "the port is not in the set")
            del self.members[port.fileno()]
            self.kicked.discard(port)
            try:
                self.ep.unregister(port.fileno())
            except OSError:
                pass
            port.sets.discard(self)

    def fileno(self) -> int:
        return self.ep.fileno()

    def kick(self, port: "Port") -> None:
        """A member holds messages that its epoll set does not show (taken
        off their connections already): wake a receiver on the set to look
        at it, through the set's eventfd.

        Conditions: nothing locked (the member's locks released); takes the
        set's lock."""
        with self.lock:
            if self.destroyed or self.members.get(port.fileno()) is not port:
                return
            self.kicked.add(port)
            eventfd.write(self.wake, 1)

    def take_kicked(self) -> "Port | None":
        """A kicked member to look at (each is handed out once per kick).

        Conditions: nothing locked; takes the set's lock."""
        with self.lock:
            while self.kicked:
                port = self.kicked.pop()
                if self.members.get(port.fileno()) is port:
                    return port
            return None

    def clear_wake(self) -> None:
        """Read the eventfd after a kick. Once the set is destroyed it stays
        signalled: every receiver must see that.

        Conditions: nothing locked; takes the set's lock."""
        with self.lock:
            if not self.destroyed:
                try:
                    eventfd.read(self.wake)
                except BlockingIOError:
                    pass  # another receiver read it

    def destroy(self) -> None:
        """Unlink the members and wake any receiver (MACH_RCV_PORT_CHANGED,
        as XNU's ipc_pset_destroy wakes them through ipc_mqueue_changed:
        osfmk/ipc/ipc_pset.c:231 in xnu-11417.101.15).
        Kernel fact: closing an epoll fd does not wake a thread in
        epoll_wait on it, so the set's own eventfd, always in its epoll set,
        is signalled; the epoll set is closed by the last receiver to
        leave, or now.

        Conditions: the space's lock is held; takes the set's lock."""
        with self.lock:
            for port in self.members.values():
                port.sets.discard(self)
            self.members.clear()
            self.kicked.clear()
            self.destroyed = True
            if self.waiters:
                eventfd.write(self.wake, 1)
                _DYING.add(self)  # a fork child, which has none of the receivers, closes it
            else:
                self._close()

    def forget(self) -> None:
        """Close our fds with no other effect (a fork child).

        Conditions: a fork child, in the forking thread; takes the set's
        lock (renewed)."""
        with self.lock:
            self.members.clear()
            self.kicked.clear()
            self.destroyed = True
            self._close()

    def _close(self) -> None:
        """Conditions: the set's lock is held, or a fork child."""
        _DYING.discard(self)
        if self.wake >= 0:
            self.ep.close()
            files.close(self.wake)
            self.wake = -1

    def enter(self) -> None:
        """Conditions: nothing locked; takes the set's lock."""
        with self.lock:
            if self.destroyed:
                raise K.MachError(K.MACH_RCV_PORT_CHANGED, "the port set was destroyed")
            self.waiters += 1

    def leave(self) -> None:
        """Conditions: nothing locked; takes the set's lock."""
        with self.lock:
            self.waiters -= 1
            if self.destroyed and not self.waiters:
                self._close()


# Sets destroyed while a receiver was still inside: their epoll set closes
# when that receiver leaves. A fork child has none of those threads, so it
# closes them at once.
_DYING: "set[PortSet]" = set()


def _close_dying() -> None:
    """Conditions: a fork child, in the forking thread."""
    for pset in list(_DYING):
        pset._close()  # pylint: disable=protected-access
    _DYING.clear()


os.register_at_fork(after_in_child=_close_dying)
