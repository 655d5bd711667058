"""Ports: the receive side (Port), and the capabilities that reach one
(SendCap for send rights, SendOnceCap for send-once rights).

A port is a set of AF_UNIX SOCK_SEQPACKET connections. The task holding the
receive right keeps the receiving end of each connection in one epoll set;
every send right is the sending end of one of them, and a send-once right
is a connection of its own. Rights move between tasks as the fds of those
ends (SCM_RIGHTS), so they cannot be forged, and a task that dies drops
its ends at once: that is where no-senders and dead names come from.
"""

from __future__ import annotations

import functools
import os
import select
import socket
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, TypeVar

from .._linux import unix
from . import kern_return as K
from .ipc_notify import WATCHER, no_senders, send_once_record

if TYPE_CHECKING:
    from .ipc_kmsg import Incoming

from .ipc_space import MACH_PORT_QLIMIT_DEFAULT, MACH_PORT_QLIMIT_MAX

# sending-end inode -> the Port (whose receive right this task holds) that
# it reaches: how a send right coming back to us is known to be ours
LOCAL_SENDS: "weakref.WeakValueDictionary[int, Port]" = weakref.WeakValueDictionary()

# The largest record a port accepts: the header, the body, and the
# descriptors' tables. Larger inline bodies travel in a sealed memfd.
MAX_RECORD = 64 * 1024


_C = TypeVar("_C", bound="SendCap")


class SendCap:
    """A send right's capability: the sending end of one connection, and
    the port's queue-slot semaphore (an eventfd shared by every sender and
    the receiver: it holds the number of free places in the queue)."""

    __slots__ = ("sock", "efd", "ino", "__weakref__")

    def __init__(self, sock: socket.socket, efd: int = -1) -> None:
        self.sock = sock
        self.efd = efd
        self.ino = os.fstat(sock.fileno()).st_ino

    @classmethod
    def adopt(cls: "type[_C]", fds: list[int]) -> "_C":
        """Wrap the fds of a right received from another task (checked by
        the caller: a SEQPACKET socket, then an eventfd for a send right)."""
        return cls(socket.socket(fileno=fds[0]), fds[1] if len(fds) > 1 else -1)

    def dup(self: "_C") -> "_C":
        """Another capability for the same right (new fds, same files)."""
        return type(self)(self.sock.dup(), os.dup(self.efd) if self.efd >= 0 else -1)

    def detach_fds(self) -> list[int]:
        """Give up the fds (to be adopted elsewhere) and return them."""
        fds = [self.sock.detach()] + ([self.efd] if self.efd >= 0 else [])
        self.efd = -1
        return fds

    def wire_fds(self) -> list[int]:
        """The fds that carry this right in a message."""
        return [self.sock.fileno()] + ([self.efd] if self.efd >= 0 else [])

    def fileno(self) -> int:
        return self.sock.fileno()

    def dead(self) -> bool:
        """True once the receiving end is gone (the port died)."""
        if self.sock.fileno() < 0:
            return True
        p = select.poll()
        p.register(self.sock.fileno(), select.POLLOUT)
        for _fd, ev in p.poll(0):
            if ev & (select.POLLHUP | select.POLLERR):
                return True
        return False

    def take_slot(self, timeout_ms: int | None) -> bool:
        """Take a place in the port's queue, waiting up to ``timeout_ms``
        (None: for ever). False on timeout. Raises MachError with
        MACH_SEND_INVALID_DEST if the port dies while we wait."""
        if self.efd < 0:
            return True
        p = None
        while True:
            try:
                os.eventfd_read(self.efd)
                return True
            except BlockingIOError:
                pass
            if timeout_ms == 0:
                return False
            if p is None:
                p = select.poll()
                p.register(self.efd, select.POLLIN)
                p.register(self.sock.fileno(), select.POLLHUP)
            start = time.monotonic()
            ready = p.poll(-1 if timeout_ms is None else timeout_ms)
            for fd, ev in ready:
                if fd == self.sock.fileno() and ev & (select.POLLHUP | select.POLLERR):
                    raise K.MachError(K.MACH_SEND_INVALID_DEST, "the port died while we waited")
            if timeout_ms is not None:
                timeout_ms = max(0, timeout_ms - int((time.monotonic() - start) * 1000))
                if not ready and timeout_ms == 0:
                    return False

    def give_slot(self) -> None:
        """Return a place taken by take_slot (the send failed)."""
        if self.efd >= 0:
            os.eventfd_write(self.efd, 1)

    def close(self) -> None:
        self.sock.close()
        if self.efd >= 0:
            efd, self.efd = self.efd, -1
            os.close(efd)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self.sock.fileno()} ino={self.ino}>"


class SendOnceCap(SendCap):
    """A send-once right: a connection of its own, used for one message."""

    __slots__ = ()


class Port:
    """The receive side of a port, held by the task with the receive right.

    ``seqno`` counts messages dequeued, ``mscount`` send rights made;
    ``srights`` is the number of connections whose sending ends are still
    open somewhere (kernel fact: their receiving ends have not read EOF)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.rcv_lock = threading.Lock()  # receivers take turns; senders never wait on it
        self.ep = select.epoll()
        self.sets: set[object] = set()  # the PortSets we are a member of
        self.ends: dict[int, tuple[socket.socket, bool]] = {}  # fd -> (receive end, send-once?)
        self.seqno = 0
        self.mscount = 0
        self.qlimit = MACH_PORT_QLIMIT_DEFAULT
        self.held: deque[object] = deque()
        self._buf = bytearray(MAX_RECORD)  # messages read off a socket, not yet delivered
        self._cached: SendCap | None = None  # our own sending end, shared by MAKE_SEND
        self.destroyed = False
        self.context = 0  # mach_port_construct's context (or guard)
        self.guarded = False
        # free places in the queue, shared with every sender (qlimit)
        self.efd = os.eventfd(self.qlimit, os.EFD_SEMAPHORE | os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.debt = 0  # places to withhold after qlimit was lowered
        self.nsrequest: tuple[SendOnceCap, int] | None = None  # (notify right, sync)
        self.pdrequest: SendOnceCap | None = None

    # -- making rights -------------------------------------------------------

    def _connect(self, send_once: bool) -> socket.socket:
        tx, rx = unix.pair()
        rx.setblocking(False)
        self._last_rx = rx.fileno()
        self.ends[rx.fileno()] = (rx, send_once)
        self.ep.register(rx.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        return tx

    def make_send(self) -> SendCap:
        """MAKE_SEND: a send right, owned by the caller. One connection is
        cached and shared (a dup of the same socket), so making rights does
        not open a connection each time."""
        with self.lock:
            self._check()
            self.mscount += 1
            if self.nsrequest is not None:
                # while no-senders is asked for, every send right gets its own
                # connection, so that the last close is seen
                tx = SendCap(self._connect(False), os.dup(self.efd))
                self._watch_end(self._last_rx)
                return tx
            if self._cached is None:
                self._cached = SendCap(self._connect(False), os.dup(self.efd))
                LOCAL_SENDS[self._cached.ino] = self
            return self._cached.dup()

    def count_make_send(self) -> None:
        """A MAKE_SEND that only added a user reference to a right we hold."""
        with self.lock:
            self.mscount += 1

    def make_send_once(self) -> SendOnceCap:
        """MAKE_SEND_ONCE: a fresh connection for one message."""
        with self.lock:
            self._check()
            return SendOnceCap(self._connect(True))

    def forget_cache(self) -> None:
        """Drop our own sending end, so that EOF on its connection means no
        sender is left anywhere (needed before no-senders can be known)."""
        with self.lock:
            if self._cached is not None:
                self._cached.close()
                self._cached = None

    def _check(self) -> None:
        if self.destroyed:
            raise K.MachError(K.KERN_INVALID_RIGHT, "the port was destroyed")

    # -- state ---------------------------------------------------------------

    @property
    def srights(self) -> int:
        """Connections whose sending end may still be open."""
        return sum(1 for _s, once in self.ends.values() if not once)

    @property
    def sorights(self) -> int:
        return sum(1 for _s, once in self.ends.values() if once)

    def set_qlimit(self, qlimit: int) -> None:
        """Change the queue limit: raising it wakes blocked senders."""
        with self.lock:
            diff, self.qlimit = qlimit - self.qlimit, qlimit
            if diff > 0:
                pay = min(diff, self.debt)
                self.debt -= pay
                if diff - pay:
                    os.eventfd_write(self.efd, diff - pay)
            while diff < 0:
                try:
                    os.eventfd_read(self.efd)
                except BlockingIOError:
                    self.debt += -diff
                    break
                diff += 1

    def _freed(self) -> None:
        """A message from a send connection left the queue: one more place."""
        if self.debt:
            self.debt -= 1
        else:
            os.eventfd_write(self.efd, 1)

    def live_rights(self) -> tuple[int, int]:
        """(send connections, send-once connections) whose sending end is
        still open somewhere: kernel fact, read with poll (EPOLLRDHUP is set
        on a receiving end once every copy of its sending end is closed).
        Our own cached sending end is dropped first, so that it does not
        count as a sender."""
        self.forget_cache()
        with self.lock:
            p = select.poll()
            for fd in self.ends:
                p.register(fd, select.POLLRDHUP)
            hung = {fd for fd, ev in p.poll(0) if ev & (select.POLLRDHUP | select.POLLHUP)}
            normal = sum(1 for fd, (_s, once) in self.ends.items() if not once and fd not in hung)
            once = sum(1 for fd, (_s, o) in self.ends.items() if o and fd not in hung)
            return normal, once

    def msgcount(self) -> int:
        """Messages queued: the places taken in the queue semaphore (from
        /proc/self/fdinfo, which shows an eventfd's count without reading
        it), plus messages held here, plus send-once messages waiting."""
        with self.lock:
            free = 0
            try:
                with open(f"/proc/self/fdinfo/{self.efd}") as f:
                    for line in f:
                        if line.startswith("eventfd-count:"):
                            free = int(line.split()[1], 16)
            except (OSError, ValueError):
                pass
            queued = max(0, self.qlimit + self.debt - free)
            p = select.poll()
            for fd, (_s, once) in self.ends.items():
                if once:
                    p.register(fd, select.POLLIN)
            waiting_once = sum(1 for _fd, ev in p.poll(0) if ev & select.POLLIN and not ev & select.POLLRDHUP)
            return queued + len(self.held) + waiting_once

    def fileno(self) -> int:
        """An fd that polls readable when a message may be waiting."""
        return self.ep.fileno()

    def drop_end(self, fd: int) -> bool:
        """Forget a connection that read EOF; returns whether it was a
        send-once connection. Idempotent."""
        ent = self.ends.pop(fd, None)
        if ent is None:
            return False
        s, once = ent
        WATCHER.unwatch(fd)
        try:
            self.ep.unregister(fd)
        except (OSError, ValueError):
            pass
        s.close()
        return once

    def _closed(self, fd: int, used: bool) -> None:
        """A connection read EOF. An unused send-once connection is a
        send-once notification; the last send connection may be no-senders."""
        if fd not in self.ends:
            return
        once = self.drop_end(fd)
        if once:
            if not used:
                from .ipc_kmsg import Incoming
                self.held.append(Incoming(send_once_record(), [], (os.getpid(), os.getuid(), os.getgid())))
        else:
            self.check_no_senders()

    # -- notifications ---------------------------------------------------------

    def check_no_senders(self) -> None:
        """Fire the no-senders request if no send right is left (and the
        make-send count has reached the request's sync value)."""
        req = self.nsrequest
        if req is None or self.srights or self._cached is not None:
            return
        cap, sync = req
        if sync <= self.mscount:
            self.nsrequest = None
            no_senders(cap, self.mscount)

    def request_no_senders(self, cap: "SendOnceCap | None", sync: int) -> "SendOnceCap | None":
        """Arm (or with None, cancel) the no-senders request; returns the
        previous notify right. Fires at once when there are no senders."""
        with self.lock:
            prev = self.nsrequest[0] if self.nsrequest else None
            self.nsrequest = None
            if cap is None:
                return prev
            self.forget_cache()
            self.nsrequest = (cap, sync)
            for fd, (_s, once) in list(self.ends.items()):
                if not once:
                    self._watch_end(fd)
            self.check_no_senders()
            return prev

    def _watch_end(self, fd: int) -> None:
        WATCHER.watch(fd, select.EPOLLRDHUP, functools.partial(self._peer_closed, fd))

    def _peer_closed(self, fd: int) -> None:
        """Watcher thread: every sending end of a connection closed. If no
        receiver is busy with the port, drain what is queued on it into
        ``held`` (the port's queue) and account for the close."""
        if not self.rcv_lock.acquire(blocking=False):
            return  # a receiver is polling this port and will see the EOF
        try:
            with self.lock:
                ent = self.ends.get(fd)
                if ent is None:
                    return
                sock, _once = ent
                drained = 0
                while True:
                    from .ipc_kmsg import Incoming
                    try:
                        n, fds, cred = unix.recv(sock, self._buf)
                    except BlockingIOError:
                        return  # not closed after all
                    except (OSError, unix.Truncated):
                        n, fds, cred = 0, [], None
                    if n == 0 and not fds:
                        if not unix.hung_up(sock):
                            continue  # an empty record, not EOF: junk, dropped
                        self._closed(fd, drained > 0)
                        return
                    drained += 1
                    if not _once:
                        self._freed()
                    self.held.append(Incoming(bytes(self._buf[:n]), fds, cred))
        finally:
            self.rcv_lock.release()

    def dequeue(self, timeout: float | None) -> "Incoming | None":
        """The next message, waiting up to ``timeout`` seconds (None: for
        ever). Connections that read EOF are dropped on the way; a
        send-once connection is dropped after its one message."""
        from .ipc_kmsg import Incoming
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.rcv_lock:
            while True:
                if self.held:
                    self.seqno += 1
                    return self.held.popleft()  # type: ignore[return-value]
                if self.destroyed:
                    raise K.MachError(K.MACH_RCV_PORT_DIED, "the port was destroyed")
                left = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
                events = self.ep.poll(left)
                if not events:
                    if deadline is not None and time.monotonic() >= deadline:
                        return None
                    continue
                for fd, _ev in events:
                    ent = self.ends.get(fd)
                    if ent is None:
                        continue
                    sock, once = ent
                    try:
                        n, fds, cred = unix.recv(sock, self._buf)
                    except BlockingIOError:
                        continue
                    except unix.Truncated as err:
                        raise K.MachError(K.MACH_RCV_BODY_ERROR, str(err)) from None
                    except OSError:
                        n, fds, cred = 0, [], None
                    if n == 0 and not fds:
                        if not unix.hung_up(sock):
                            # a zero-length record reads like EOF: only the
                            # peer's hang-up tells them apart
                            raise K.MachError(K.MACH_RCV_HEADER_ERROR, "an empty record")
                        with self.lock:
                            self._closed(fd, False)
                        continue
                    if once:
                        with self.lock:
                            self.drop_end(fd)
                    else:
                        self._freed()
                    self.seqno += 1
                    return Incoming(bytes(self._buf[:n]), fds, cred)

    # -- moving the receive right ----------------------------------------------

    def pack_for_move(self) -> tuple[list[int], int, int]:
        """The fds and packing that carry this receive right in a message:
        the receiving ends (send connections first, then send-once ones),
        then the no-senders and port-destroyed notify rights if armed.
        Messages already taken off a connection (``held``) are written into
        a fresh connection of the port first, so they travel too. Our state
        is left unchanged, so a send that fails loses nothing."""
        with self.lock:
            self._check()
            if self.held:
                tx, rx = unix.pair()
                rx.setblocking(False)
                try:
                    while self.held:
                        rec = self.held[0]
                        unix.send(tx, [rec.data], rec.fds)  # type: ignore[attr-defined]
                        self.held.popleft().release()  # type: ignore[attr-defined]
                finally:
                    tx.close()
                self.ends[rx.fileno()] = (rx, False)
                self.ep.register(rx.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
            normal = [fd for fd, (_s, once) in self.ends.items() if not once]
            once = [fd for fd, (_s, o) in self.ends.items() if o]
            fds = [self.efd] + normal + once
            ns = self.nsrequest
            if ns is not None:
                fds.append(ns[0].fileno())
            if self.pdrequest is not None:
                fds.append(self.pdrequest.fileno())
            packing = (len(normal) | (len(once) << 16) | (int(ns is not None) << 32)
                       | (int(self.pdrequest is not None) << 33) | (min(self.qlimit, 0xFFFF) << 40))
            return fds, packing, (ns[1] if ns is not None else 0)

    @staticmethod
    def check_packing(nfds: int, packing: int) -> bool:
        """Does a receive right's packing account for exactly ``nfds`` fds?"""
        n = 1 + (packing & 0xFFFF) + ((packing >> 16) & 0xFFFF) + ((packing >> 32) & 1) + ((packing >> 33) & 1)
        return n == nfds and (packing >> 40) & 0xFFFF <= MACH_PORT_QLIMIT_MAX and not packing >> 56

    @classmethod
    def from_move(cls, fds: list[int], packing: int, sync: int) -> "Port":
        """The receive right that arrived as ``fds``. As in XNU, the make-send
        count and sequence number start again at zero."""
        port = cls()
        os.close(port.efd)
        port.efd = fds[0]  # the senders' semaphore travels with the port
        n_normal, n_once = packing & 0xFFFF, (packing >> 16) & 0xFFFF
        i = 1
        for k in range(n_normal + n_once):
            rx = socket.socket(fileno=fds[i])
            i += 1
            rx.setblocking(False)
            port.ends[rx.fileno()] = (rx, k >= n_normal)
            port.ep.register(rx.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        port.qlimit = (packing >> 40) & 0xFFFF
        if packing >> 32 & 1:
            port.nsrequest = (SendOnceCap.adopt([fds[i]]), sync)
            i += 1
            for fd, (_s, once) in list(port.ends.items()):
                if not once:
                    port._watch_end(fd)
        if packing >> 33 & 1:
            port.pdrequest = SendOnceCap.adopt([fds[i]])
        return port

    def moved_away(self) -> None:
        """The receive right left in a message: close our copies of its fds
        without the effects of destroying it."""
        with self.lock:
            for fd, (sock, _once) in self.ends.items():
                WATCHER.unwatch(fd)
                sock.close()
            self.ends.clear()
            for req in (self.nsrequest[0] if self.nsrequest else None, self.pdrequest):
                if req is not None:
                    req.sock.close()
            self.nsrequest = self.pdrequest = None
            if self.efd >= 0:
                os.close(self.efd)
                self.efd = -1
            if self._cached is not None:
                self._cached.close()
                self._cached = None
            self.destroyed = True
            self.ep.close()

    def destroy(self) -> None:
        """Close every receiving end: senders see a dead name. An armed
        no-senders or port-destroyed request's right is released unused,
        which its port sees as a send-once notification."""
        with self.lock:
            self.destroyed = True
            for fd, (s, _once) in self.ends.items():
                WATCHER.unwatch(fd)
                s.close()
            for req in (self.nsrequest[0] if self.nsrequest else None, self.pdrequest):
                if req is not None:
                    req.close()
            self.nsrequest = self.pdrequest = None
            self.ends.clear()
            if self.efd >= 0:
                os.close(self.efd)
                self.efd = -1
            if self._cached is not None:
                self._cached.close()
                self._cached = None
            self.ep.close()
            while self.held:
                self.held.popleft().release()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"<Port ends={len(self.ends)} seqno={self.seqno} mscount={self.mscount}>"
