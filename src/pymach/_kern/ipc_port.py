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
import itertools
import os
import struct
import threading
import time
import weakref
from collections import deque
from typing import Callable, TypeVar

from .._linux import epoll, eventfd, files, memfd, unix
from . import ipc_notify
from . import ipc_wire
from . import kern_return as K
from .ipc_notify import no_senders, send_once_record
from .ipc_wire import (CONTROL, FLAG_CARRIER, FLAG_JOIN, FLAG_REPLY, FLAG_REPLYCONN, FLAG_SO_DEAD,  # noqa: F401
                       FLAG_SPOOL, FLAG_UPGRADE, FLAGS_AT as _FLAGS_AT, KIND_BACK as _KIND_BACK, MAGIC as _MAGIC,
                       MAX_RECORD)

from .ipc_space import MACH_PORT_QLIMIT_DEFAULT, MACH_PORT_QLIMIT_MAX, renew_at_fork

# Bound by assignment, not by import: CPython compiles NAME.method() of an
# imported NAME as an attribute load (it takes NAME for a module), which
# 3.11 cannot specialize for a method, so each call would make a bound
# method and free it (tests/test_hot_path.py).
WATCHER = ipc_notify.WATCHER
_RIGHT0, _CONTROL_HEAD = ipc_wire.RIGHT, ipc_wire.WIRE
_CONTROL_SIZE = _CONTROL_HEAD.size

# sending-end inode -> the Port (whose receive right this task holds) that
# it reaches: how a send right coming back to us is known to be ours
LOCAL_SENDS: "weakref.WeakValueDictionary[int, Port]" = weakref.WeakValueDictionary()

# connections a port accepts from senders' channels: each holds two of our
# fds, so a quarter of the fd limit (half our fds), and at least 1024
MIN_JOINED = 1024


def max_joined() -> int:
    """How many senders' channels a port accepts now."""
    return max(MIN_JOINED, unix.fd_limit() // 4)

_BUFFERS = threading.local()

# the bare system calls of the message path, bound once
_fstat = files.fstat
_efd_read = eventfd.read
_efd_write = eventfd.write
_NOSIGNAL_DONTWAIT = unix.MSG_NOSIGNAL | unix.MSG_DONTWAIT
# a receiving end in a port's epoll set: a record, or its peer's hang-up
_READ_EVENTS = epoll.EPOLLIN | epoll.EPOLLRDHUP


def _record_buffer() -> bytearray:
    """This thread's buffer for reading one record. A record is copied out
    (or parsed) before the next is read, so one buffer per thread serves
    every port: a port costs no 64 KiB of its own."""
    buf: bytearray | None = getattr(_BUFFERS, "buf", None)
    if buf is None:
        buf = _BUFFERS.buf = bytearray(MAX_RECORD)
    return buf


_C = TypeVar("_C", bound="SendCap")

# A port with one connection is read directly (one recvmsg, no epoll_wait).
# When that read finds it empty, this many receives wait in epoll first:
# a receiver that waits for each message pays the failed read once in
# every _DIRECT_BACKOFF + 1 receives, not on every one.
_DIRECT_BACKOFF = 8

# How long at a time a receive past its deadline waits for a receive turn
# whose holder is busy, not asleep (s): see Port._wait_turn.
_BUSY_TURN = 0.001

# Event loops that wait on a port's epoll set without a thread in it
# (pymach.aio), by port: each callable tells its loop to look again. They
# are called when the port changes in a way its epoll set does not show: it
# left the task (destroyed or moved: its epoll set no longer wakes anyone),
# or messages wait in ``held`` (drained by the watcher thread, put back,
# given back by a failed move). A callable must not block or raise.
ASYNC_WAKE: "dict[Port, list[Callable[[], None]]]" = {}


def _wake_async(port: "Port") -> None:
    """Conditions: any; takes no lock (the callables only schedule)."""
    for wake in list(ASYNC_WAKE.get(port, ())):
        wake()


def control_record(flags: int, nfds: int) -> bytes:
    """A control record: a wire header with no message in it."""
    return _CONTROL_HEAD.pack(_MAGIC, 0, 0, 0, 0, nfds, flags, 0)


class Incoming:
    """A record read off a connection, not yet copied out."""

    __slots__ = ("data", "fds", "cred", "parsed", "rconn", "error")

    def __init__(self, data: bytes | bytearray, fds: list[int], cred: tuple[int, int, int] | None,
                 parsed: tuple[int, int, list[tuple[int, int, int, int]], bytes | bytearray, bytes | bytearray] | None = None,
                 rconn: "Shared | None" = None, error: int = 0) -> None:
        self.data = data
        self.fds = fds
        self.cred = cred
        self.parsed = parsed
        self.rconn = rconn  # the reply connection of the channel it came on
        self.error = error  # a message that could not be taken off its connection whole

    def release(self) -> None:
        files.close_all(self.fds)
        self.fds = []


def _lost(err: "unix.Truncated") -> Incoming:
    """The message whose record was cut (its fds already closed): the
    receive that takes it fails, as XNU's copyout does when the space is
    full (MACH_MSG_IPC_SPACE) or the message is malformed."""
    kr = K.MACH_RCV_BODY_ERROR | (K.MACH_MSG_IPC_SPACE if err.fds_lost else 0)
    return Incoming(b"", [], None, None, None, kr)


class ReplyConn:
    """The receiving end of a sender's reply connection (the sender's
    side): back-channel send-once rights made for our reply port are
    answered on it. ``tokens`` are the rights outstanding; ``anon`` counts
    outstanding rights whose tokens came with a moved receive right."""

    __slots__ = ("sock", "tokens", "anon", "port", "orphan", "closed")

    def __init__(self, sock: unix.Socket) -> None:
        self.sock = sock
        self.tokens: set[int] = set()
        self.anon = 0
        self.port: Port | None = None  # the reply port whose epoll watches us
        self.orphan = False  # the channel is gone: close once nothing is outstanding
        self.closed = False

    def outstanding(self) -> int:
        return len(self.tokens) + self.anon

    def resolve(self, token: int) -> bool:
        """One outstanding right was answered (or destroyed, or upgraded)."""
        if token in self.tokens:
            self.tokens.discard(token)
            return True
        if self.anon:
            self.anon -= 1
            return True
        return False

    def unbind(self) -> None:
        """Conditions: the lock of the port it is bound to, the channel lock,
        that port's receive lock, or none of them (SendCap.close, from any
        thread) may be held: it changes the port's reply connections and epoll
        set whichever is held. Takes no lock."""
        port, self.port = self.port, None
        if port is not None:
            port.replies.pop(self.sock.fileno(), None)
            try:
                port.ep.unregister(self.sock.fileno())
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        """Conditions: as unbind."""
        if not self.closed:
            self.closed = True
            self.unbind()
            self.sock.close()


class Shared:
    """A socket shared by references (a sender's reply connection, held by
    its port and by every back-channel right made from it); closed when
    the last reference goes."""

    __slots__ = ("sock", "ino")

    def __init__(self, sock: unix.Socket) -> None:
        self.sock = sock
        self.ino = files.inode(sock.fileno())

    def __del__(self) -> None:
        self.sock.close()


class Channel:
    """A sender's own connection to a port (made on its first request with
    a back-channel reply) and the reply connection beside it. Every later
    message on the same send right goes on it, so order is kept."""

    __slots__ = ("tx", "rx", "ino")

    def __init__(self, tx: unix.Socket, rx: ReplyConn) -> None:
        self.tx = tx
        self.ino = files.inode(tx.fileno())
        self.rx: ReplyConn | None = rx


_CHANNEL_LOCK = threading.Lock()


def _renew_channel_lock() -> None:
    """Conditions: a fork child, in the forking thread."""
    global _CHANNEL_LOCK, _USE_LOCK  # pylint: disable=global-statement
    _CHANNEL_LOCK = threading.Lock()
    _USE_LOCK = threading.Lock()


# A send holds its destination's capability open from copyin to the last
# write, as XNU's send holds a reference on the port: the watcher thread
# that turns a dead port's name into a dead name (and closes the right's
# fds) may run at any moment, and an fd closed under a send could be
# reused by the next open() before the write reaches it.
_USE_LOCK = threading.Lock()


def use(cap: "SendCap") -> bool:
    """Hold ``cap`` open for a send: a close() meanwhile waits for done().
    False when it is closed already (the port died).

    Conditions: any lock but the use lock may be held; takes the use lock."""
    with _USE_LOCK:
        if cap._gone:  # pylint: disable=protected-access
            return False
        cap._uses += 1  # pylint: disable=protected-access
        return True


def done(cap: "SendCap") -> None:
    """The send that use() held ``cap`` for is over: a close() that waited
    happens now.

    Conditions: any lock but the use lock may be held; takes the use lock; a
    close that waited for this send happens after it is released."""
    with _USE_LOCK:
        cap._uses -= 1  # pylint: disable=protected-access
        late = cap._late and not cap._uses  # pylint: disable=protected-access
    if late:
        cap.close()


def _close_waits(cap: "SendCap") -> bool:
    """True when a send holds ``cap``: its close happens at done().

    Conditions: any lock but the use lock may be held; takes the use lock."""
    with _USE_LOCK:
        if cap._uses:  # pylint: disable=protected-access
            cap._late = True  # pylint: disable=protected-access
            return True
        cap._gone = True  # pylint: disable=protected-access
        return False


os.register_at_fork(after_in_child=_renew_channel_lock)
_TOKENS = itertools.count(1)


class SendCap:
    """A send right's capability: the sending end of one connection, and
    the port's queue-slot semaphore (an eventfd shared by every sender and
    the receiver: it holds the number of free places in the queue)."""

    __slots__ = ("sock", "efd", "ino", "chan", "_uses", "_gone", "_late", "__weakref__")

    def __init__(self, sock: unix.Socket, efd: int = -1) -> None:
        self.sock = sock
        self.efd = efd
        self.ino = _fstat(sock.fileno()).st_ino
        self.chan: Channel | None = None
        self._uses, self._gone, self._late = 0, False, False  # see use()

    @property
    def tx(self) -> unix.Socket:
        """The socket messages on this right are written to."""
        chan = self.chan
        return self.sock if chan is None else chan.tx

    def checked_tx(self) -> unix.Socket:
        """The socket to write on, once the kernel confirms that its fd
        still names the connection this right was made with (the inode).
        An fd closed behind the runtime's back, its number since reused by
        another file or another port's connection, is MACH_SEND_INVALID_DEST:
        a message never goes to an object the right does not denote.

        Conditions: nothing locked; the right is held by use()."""
        chan = self.chan
        sock, ino = (self.sock, self._ino()) if chan is None else (chan.tx, chan.ino)
        fd = sock.fileno()
        try:
            if _fstat(fd).st_ino == ino:
                return sock
        except OSError:
            pass
        if fd >= 0:
            sock.detach()  # the number is someone else's now: never close it later
        raise K.MachError(K.MACH_SEND_INVALID_DEST, "the right's connection fd no longer names it")

    def _ino(self) -> int:
        return self.ino

    def back_reply(self, port: "Port") -> int | None:
        """A token for a send-once right to our ``port`` that the receiver
        answers on our reply connection, or None when this right cannot
        carry one (then a connection of its own is made, as before).

        Conditions: nothing locked (not ``port``'s lock in particular: the
        channel lock comes first); the right is held by use(); takes the
        channel lock and, under it, ``port``'s lock; sends its control
        records without waiting."""
        with _CHANNEL_LOCK:
            chan = self.chan
            try:
                if chan is None:
                    chan = self._open_channel()
                rc = chan.rx
                if rc is None or rc.closed:
                    rc = chan.rx = self._open_reply(chan.tx, FLAG_REPLYCONN, [])
            except OSError:
                return None
            if rc.port is not port:
                if rc.outstanding():
                    return None
                rc.unbind()
                if not port.bind(rc):
                    return None
            token = next(_TOKENS) & 0xFFFFFF or next(_TOKENS) & 0xFFFFFF
            rc.tokens.add(token)
            return token

    def _open_channel(self) -> Channel:
        """Conditions: the channel lock is held."""
        tx, far = unix.pair()
        try:
            rc = self._open_reply(self.sock, FLAG_JOIN, [far.fileno()])
        finally:
            far.close()
        self.chan = Channel(tx, rc)
        return self.chan

    @staticmethod
    def _open_reply(on: unix.Socket, flag: int, fds: list[int]) -> ReplyConn:
        """Conditions: the channel lock is held; sends without waiting."""
        near, far = unix.pair()
        try:
            unix.set_passcred(far, False)
            unix.set_passcred(near, True)
            unix.receive_only(near)  # replies only come this way
            near.setblocking(False)
            unix.send(on, [control_record(flag, len(fds) + 1)], fds + [far.fileno()], _NOSIGNAL_DONTWAIT)
        except BaseException:
            near.close()
            raise
        finally:
            far.close()
        return ReplyConn(near)

    def undo_reply(self, token: int) -> None:
        """The message that carried ``token`` was not sent.

        Conditions: nothing locked; the right is held by use(); discards the
        token without the channel lock."""
        chan = self.chan
        if chan is not None and chan.rx is not None:
            chan.rx.tokens.discard(token)

    @classmethod
    def adopt(cls: "type[_C]", fds: list[int]) -> "_C":
        """Wrap the fds of a right received from another task (checked by
        the caller: a SEQPACKET socket, then an eventfd for a send right)."""
        return cls(unix.adopt(fds[0]), fds[1] if len(fds) > 1 else -1)

    def dup(self: "_C") -> "_C":
        """Another capability for the same right (new fds, same files)."""
        return type(self)(self.sock.dup(), files.dup(self.efd) if self.efd >= 0 else -1)

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
        return unix.send_end_dead(self.sock.fileno())

    def take_slot(self, timeout_ms: int | None) -> bool:
        """Take a place in the port's queue, waiting up to ``timeout_ms``
        (None: for ever). False on timeout. Raises MachError with
        MACH_SEND_INVALID_DEST if the port dies while we wait.

        Conditions: nothing locked; waits up to ``timeout_ms`` (for ever
        with None)."""
        if self.efd < 0:
            return True
        waiter: eventfd.Waiter | None = None
        try:
            while True:
                try:
                    _efd_read(self.efd)
                    return True
                except BlockingIOError:
                    pass
                if timeout_ms == 0:
                    return False
                if waiter is None:
                    # Every sender of the port waits on the same eventfd: one
                    # place freed wakes one of them (EPOLLEXCLUSIVE), not all
                    # of them to race for it
                    waiter = eventfd.Waiter(self.efd, self.sock.fileno())
                start = time.monotonic()
                # a sender woken and killed before it took the place would
                # leave it to no one: look again at least every second
                wait = 1.0 if timeout_ms is None else min(1.0, timeout_ms / 1000)
                ready, hung = waiter.wait(wait)
                if hung:
                    raise K.MachError(K.MACH_SEND_INVALID_DEST, "the port died while we waited")
                if timeout_ms is not None:
                    timeout_ms = max(0, timeout_ms - int((time.monotonic() - start) * 1000))
                    if not ready and timeout_ms == 0:
                        return False
        finally:
            if waiter is not None:
                waiter.close()

    def give_slot(self) -> None:
        """Return a place taken by take_slot (the send failed)."""
        if self.efd >= 0:
            _efd_write(self.efd, 1)

    def close(self) -> None:
        """Conditions: nothing locked, or the space's or a port's lock; takes
        the use lock; deferred to done() while a send holds the right."""
        if _close_waits(self):
            return
        chan, self.chan = self.chan, None
        if chan is not None:
            chan.tx.close()  # the port sees this sender's connection end
            rc = chan.rx
            if rc is not None and not rc.closed:
                if rc.outstanding():
                    rc.orphan = True  # closed by its port once answered
                else:
                    rc.close()
        self.forget()

    def forget(self) -> None:
        """Close our fds with no other effect (a fork child dropping what it
        inherited: the parent still holds the same connections)."""
        chan, self.chan = self.chan, None
        if chan is not None:
            chan.tx.close()
            if chan.rx is not None:
                chan.rx.sock.close()
        self.sock.close()
        if self.efd >= 0:
            efd, self.efd = self.efd, -1
            files.close(efd)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self.sock.fileno()} ino={self.ino}>"


class SendOnceCap(SendCap):
    """A send-once right: a connection of its own, used for one message."""

    __slots__ = ()


class ReplyCap(SendOnceCap):
    """A back-channel send-once right: our own copy of the reply connection
    a sender gave its channel, and the token of one request. A reply is
    written on it with the token; destroyed unused, it says so (the sender
    turns that into a send-once notification); to travel in a message it
    is first upgraded to a connection of its own."""

    __slots__ = ("token", "spent", "conn")

    def __init__(self, conn: Shared, token: int) -> None:  # pylint: disable=super-init-not-called
        self.sock, self.efd, self.ino, self.chan = conn.sock, -1, 0, None
        self._uses, self._gone, self._late = 0, False, False
        self.conn: Shared | None = conn
        self.token = token
        self.spent = False

    def _ino(self) -> int:
        conn = self.conn
        return -1 if conn is None else conn.ino

    def forget(self) -> None:
        self.conn = None  # the connection closes with its last reference

    def wire_fds(self) -> list[int]:
        raise AssertionError("a back-channel right travels only after upgrade()")

    def upgrade(self) -> SendOnceCap:
        """A send-once right with a connection of its own, made through the
        reply connection. If the reply port is gone the new right is
        already dead (its peer end closed), as the old one was.

        Conditions: as close; sends without waiting."""
        tx, far = unix.pair()
        try:
            unix.send(self.sock, [control_record(FLAG_UPGRADE | self.token << 8, 1)], [far.fileno()],
                      _NOSIGNAL_DONTWAIT)
        except OSError:
            pass
        finally:
            far.close()
        self.spent = True
        self.close()
        return SendOnceCap(tx)

    def close(self) -> None:
        """Conditions: as SendCap.close; sends without waiting."""
        if _close_waits(self):
            return
        if not self.spent and self.conn is not None:
            self.spent = True
            try:
                self.sock.sendmsg([control_record(FLAG_SO_DEAD | self.token << 8, 0)], (), _NOSIGNAL_DONTWAIT)
            except OSError:
                pass
        self.forget()


_SEND_ONCE = 18  # MACH_MSG_TYPE_PORT_SEND_ONCE


def _upgrade_held(rec: Incoming) -> None:
    """A record taken off a channel and about to travel with its port: a
    back-channel reply right in it becomes a send-once connection of its
    own (as ReplyCap.upgrade does), since the channel stays behind."""
    data = rec.data
    if rec.rconn is None or len(data) < _CONTROL_HEAD.size + _RIGHT0.size:
        return
    kind, n, size, token = _RIGHT0.unpack_from(data, _CONTROL_HEAD.size)
    if kind != _KIND_BACK or n:
        return
    tx, far = unix.pair()
    try:
        unix.send(rec.rconn.sock, [control_record(FLAG_UPGRADE | token << 8, 1)], [far.fileno()],
                  _NOSIGNAL_DONTWAIT)
    except OSError:
        pass  # the reply port is gone: the new right is dead, as the old one was
    finally:
        far.close()
    b = bytearray(data)
    _RIGHT0.pack_into(b, _CONTROL_HEAD.size, _SEND_ONCE, 1, size, 0)
    nfds = struct.unpack_from("<I", b, 20)[0]
    struct.pack_into("<I", b, 20, nfds + 1)
    rec.data = bytes(b)
    rec.fds.insert(0, tx.detach())
    rec.rconn = None


# A receive right moves with the messages the runtime already took off
# their connections (``held``): they travel in spool records, on a
# connection of their own that goes first with the right. A spool record
# is a control record (FLAG_SPOOL) whose fds are a sealed memfd holding
# records in order, each as _SPOOLED (length, fd count) then its bytes,
# and, when they carry fds, a carrier of all of them in the same order
# (unix.carry). Kernel facts: a memfd grows as far as memory does, and a
# spool record is a header and two fds in a socket's buffer, so a queue of
# any size moves at once: no write waits for a reader that cannot exist
# before the right has arrived. XNU moves the port itself with its queue
# (ipc_right_copyin, MACH_MSG_TYPE_MOVE_RECEIVE, osfmk/ipc/ipc_right.c:2249
# in xnu-11417.101.15): the queue's size never makes a move wait or fail.
# The bounds keep a lying sender of a right near what a port can hold (at
# most MACH_PORT_QLIMIT_MAX messages of at most MAX_RECORD bytes, and the
# notifications, which take no place): twice those bytes, 64 times as many
# records.
_SPOOLED = struct.Struct("<II")
_SPOOL_RECORDS = MACH_PORT_QLIMIT_MAX  # records in one spool record, at most
_SPOOL_BYTES = _SPOOL_RECORDS * (_SPOOLED.size + MAX_RECORD)  # one spool's memfd, at most
_SPOOL_LIMIT = 2 * _SPOOL_BYTES  # bytes taken from the spools of one right, at most
_SPOOL_COUNT = 64 * _SPOOL_RECORDS  # records taken from them, at most
_SPOOL_SEALS = memfd.F_SEAL_SEAL | memfd.F_SEAL_SHRINK | memfd.F_SEAL_GROW | memfd.F_SEAL_WRITE


def _spool(records: list[Incoming]) -> unix.Socket:
    """The receiving end of a new connection holding ``records`` (taken
    off connections) in spool records, in order; its sending end is
    closed. Never waits. Raises OSError when an fd or memory is short;
    the records are then still whole.

    Conditions: the port's lock is held (pack_for_move); never waits."""
    chunks: list[tuple[bytearray, list[int]]] = []
    data, n = bytearray(), 0
    fds: list[int] = []
    for rec in records:
        _upgrade_held(rec)
        if rec.error:
            continue  # a cut record: nothing of it is left to travel
        if n == _SPOOL_RECORDS or len(data) + _SPOOLED.size + len(rec.data) > _SPOOL_BYTES:
            chunks.append((data, fds))
            data, fds, n = bytearray(), [], 0
        data += _SPOOLED.pack(len(rec.data), len(rec.fds))
        data += rec.data
        fds += rec.fds
        n += 1
    if n:
        chunks.append((data, fds))
    tx, rx = unix.pair()
    try:
        for data, fds in chunks:
            parts = [memfd.filled("mach.spool", memoryview(data), _SPOOL_SEALS)]
            try:
                if fds:
                    parts.append(unix.carry(fds))
                unix.send(tx, [control_record(FLAG_SPOOL, len(parts))], parts, _NOSIGNAL_DONTWAIT)
            finally:
                files.close_all(parts)
    except BaseException:
        rx.close()
        raise
    finally:
        tx.close()
    rx.setblocking(False)
    return rx


def _unspool(sock: unix.Socket) -> list[Incoming]:
    """The records of the spool records on ``sock`` (see _spool), in
    order, each with the credentials of the spool record that carried it
    (its writer's, as the kernel gave them). Reads until ``sock`` is
    empty; never waits. What is not a spool record, or passes the bounds,
    is dropped with its fds; a spool record whose fds did not fit
    (RLIMIT_NOFILE) is one lost record, whose receive fails.

    Conditions: nothing locked; the port the records are for is not yet
    shared (from_move); never waits."""
    out: list[Incoming] = []
    left = _SPOOL_LIMIT
    buf = _record_buffer()
    while True:
        try:
            n, fds, cred = unix.recv(sock, buf)
        except BlockingIOError:
            return out
        except unix.Truncated as err:
            out.append(_lost(err))
            continue
        except OSError:
            return out
        if n == 0 and not fds:
            return out  # EOF
        try:
            head = _CONTROL_HEAD.unpack_from(buf) if n == _CONTROL_HEAD.size else None
            if head != (_MAGIC, 0, 0, 0, 0, len(fds), FLAG_SPOOL, 0) or not 1 <= len(fds) <= 2:
                continue  # not a spool record: dropped
            recs, size = _spooled(fds[0], fds[1] if len(fds) == 2 else -1, cred, left,
                                  _SPOOL_COUNT - len(out))
            out += recs
            left -= size
        finally:
            files.close_all(fds)


def _spooled(mfd: int, carrier: int, cred: tuple[int, int, int] | None,
             limit: int, count: int) -> tuple[list[Incoming], int]:
    """The records of one spool record: its memfd ``mfd`` and ``carrier``
    (-1: none), and the memfd's size. Nothing (and size 0) for a spool
    that is not well formed, or holds more than ``limit`` bytes or
    ``count`` records."""
    try:
        size = files.size(mfd)
        if not files.is_regular(mfd) or size > min(limit, _SPOOL_BYTES):
            return [], 0
        data = memfd.read(mfd, size)
    except OSError:
        return [], 0
    entries: list[tuple[int, int, int]] = []
    off, total = 0, 0
    while off < len(data):
        if off + _SPOOLED.size > len(data) or len(entries) >= min(count, _SPOOL_RECORDS):
            return [], 0
        length, nfds = _SPOOLED.unpack_from(data, off)
        off += _SPOOLED.size
        if off + length > len(data):
            return [], 0
        entries.append((off, length, nfds))
        off += length
        total += nfds
    if len(data) != size or (total and carrier < 0):
        return [], 0
    try:
        got = unix.uncarry(carrier, total) if total else []
    except ValueError:
        return [], 0
    except unix.Truncated as err:
        return [_lost(err)], size
    out: list[Incoming] = []
    i = 0
    for off, length, nfds in entries:
        out.append(Incoming(data[off:off + length], got[i:i + nfds], cred))
        i += nfds
    return out, size


class Port:
    """The receive side of a port, held by the task with the receive right.

    ``seqno`` counts messages dequeued, ``mscount`` send rights made;
    ``srights`` is the number of connections whose sending ends are still
    open somewhere (kernel fact: their receiving ends have not read EOF)."""

    # What few ports set, read from the class until a port sets its own:
    # CPython 3.11 keeps at most 30 attribute names in the keys a class's
    # instances share, and an instance with more gets a dict of its own,
    # whose attribute reads and method loads on the message path are no
    # longer specialized (tests/test_hot_path.py counts them).
    guarded = False
    strict_guard = False  # MPO_STRICT / MPG_STRICT: the context cannot be set or swapped
    immovable = False  # MPO_IMMOVABLE_RECEIVE: the receive right cannot leave the space
    impdonation = False  # MPO_IMPORTANCE_RECEIVER / _DENAP_RECEIVER / _TEMPOWNER (recorded)
    tempowner = False

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.rcv_lock = threading.Lock()  # receivers take turns; senders never wait on it
        self.ep = epoll.new()
        # an eventfd, already signalled, that wakes the receivers still in
        # the epoll set when the port leaves this task (_retire): made only then
        self.wake = -1
        self.sleeping = False  # the receiver whose turn it is (rcv_lock) waits in the epoll set
        self.skip = 0  # receives to go through epoll before a lone connection is read directly again
        self.sets: set[object] = set()  # the PortSets we are a member of
        self.ends: dict[int, tuple[unix.Socket, bool]] = {}  # fd -> (receive end, send-once?)
        self.seqno = 0
        self.mscount = 0
        self.qlimit = MACH_PORT_QLIMIT_DEFAULT
        self.held: deque[object] = deque()
        # while a message carrying the receive right is being sent: the
        # connection its queue travels on (_spool) if it has one, the
        # records in it, and the connections dropped meanwhile, whose fds
        # the message names: closed once the right has gone or stays
        self.moving: tuple[unix.Socket | None, list[Incoming], list[object]] | None = None
        self.nudge = -1  # an eventfd that wakes a receiver once (move_failed): made when first needed
        self._cached: SendCap | None = None  # our own sending end, shared by MAKE_SEND
        self.destroyed = False
        self.context = 0  # mach_port_construct's context (or guard)
        # free places in the queue, shared with every sender (qlimit): made
        # with the first send right (_sem), so a port nobody may send to
        # (a reply port, or one that only gets send-once rights) is one fd
        self.efd = -1
        self.debt = 0  # places to withhold after qlimit was lowered
        self.nsrequest: tuple[SendOnceCap, int] | None = None  # (notify right, sync)
        self.pdrequest: SendOnceCap | None = None
        # senders' reply connections, by the fd of the connection they came
        # with (we write replies on them); and our own channels' reply
        # connections that our epoll watches (we read replies from them)
        self.rconn: dict[int, Shared] = {}
        self.quiet: set[int] = set()  # send ends found closed when no-senders was armed
        self.replies: dict[int, ReplyConn] = {}
        # who answers for a connection (make_send_owned), and the policy
        # asked before a sender's channel joins on one of them
        self.owners: dict[int, object] = {}
        self.admit: "Callable[[object], bool] | None" = None
        # our receiving end -> the inode of the sending end we made for it
        # and entered in LOCAL_SENDS (left there until the end reads EOF)
        self.local_inos: dict[int, int] = {}
        renew_at_fork(self)

    def _sem(self) -> int:
        """The queue semaphore, made now if no send right needed it yet (no
        place can have been taken: it starts with qlimit free).

        Conditions: the port's lock is held."""
        if self.efd < 0:
            self.efd = eventfd.semaphore(self.qlimit)
        return self.efd

    def renew_locks(self) -> None:
        """A fork child: locks held by threads that did not follow are free.

        Conditions: a fork child, in the forking thread."""
        self.lock = threading.RLock()
        self.rcv_lock = threading.Lock()

    # -- making rights -------------------------------------------------------

    def _connect(self, send_once: bool) -> unix.Socket:
        """Conditions: the port's lock is held."""
        tx, rx = unix.pair()
        rx.setblocking(False)
        self._last_rx = rx.fileno()
        self.ends[rx.fileno()] = (rx, send_once)
        self.ep.register(rx.fileno(), _READ_EVENTS)
        return tx

    def make_send(self) -> SendCap:
        """MAKE_SEND: a send right, owned by the caller. One connection is
        cached and shared (a dup of the same socket), so making rights does
        not open a connection each time.

        Conditions: nothing locked, or the space's lock; takes the port's
        lock and, under it, the watcher's lock while a no-senders request is
        armed."""
        with self.lock:
            self._check()
            if self.nsrequest is not None:
                # while no-senders is asked for, every send right gets its own
                # connection, so that the last close is seen
                tx = self._new_send()
                self._watch_end(self._last_rx)
                LOCAL_SENDS[tx.ino] = self  # (a right that comes back joins our name)
                self.local_inos[self._last_rx] = tx.ino
                self.mscount += 1
                return tx
            if self._cached is None:
                self._cached = self._new_send()
                LOCAL_SENDS[self._cached.ino] = self
                self.local_inos[self._last_rx] = self._cached.ino
            cap = self._cached.dup()
            self.mscount += 1
            return cap

    def _new_send(self) -> SendCap:
        """A new connection and the semaphore (OSError, with nothing left
        open, when the fds cannot be had).

        Conditions: the port's lock is held."""
        sem = files.dup(self._sem())
        try:
            return SendCap(self._connect(False), sem)
        except BaseException:
            files.close(sem)
            raise

    def make_send_owned(self, owner: object) -> SendCap:
        """MAKE_SEND on a connection of its own, recorded as ``owner``'s
        (with the channels that later join on it): a server counts what
        each client holds of it with owned().

        Conditions: nothing locked, the space's lock, or the port's lock
        (the bootstrap server holds it); takes the port's lock and, under
        it, the watcher's lock while a no-senders request is armed."""
        with self.lock:
            self._check()
            tx = self._new_send()
            self.mscount += 1
            self.owners[self._last_rx] = owner
            if self.nsrequest is not None:
                self._watch_end(self._last_rx)
            return tx

    def owned(self) -> dict[object, int]:
        """Owner -> connections of ours whose sending end is still open
        somewhere (kernel fact: not hung up), for make_send_owned's owners.

        Conditions: nothing locked, or the port's lock; takes the port's
        lock."""
        with self.lock:
            hung = unix.hung_up_fds(self.owners)
            counts: dict[object, int] = {}
            for fd, owner in self.owners.items():
                if fd not in hung:
                    counts[owner] = counts.get(owner, 0) + 1
            return counts

    def count_make_send(self) -> None:
        """A MAKE_SEND that only added a user reference to a right we hold.

        Conditions: nothing locked, or the space's lock; takes the port's
        lock."""
        with self.lock:
            self.mscount += 1

    def make_send_once(self) -> SendOnceCap:
        """MAKE_SEND_ONCE: a fresh connection for one message.

        Conditions: nothing locked, or the space's lock; takes the port's
        lock."""
        with self.lock:
            self._check()
            return SendOnceCap(self._connect(True))

    def forget_cache(self) -> None:
        """Drop our own sending end, so that EOF on its connection means no
        sender is left anywhere (needed before no-senders can be known).

        Conditions: nothing locked, or the space's or the port's lock; takes
        the port's lock and, under it, the use lock."""
        with self.lock:
            if self._cached is not None:
                self._cached.close()
                self._cached = None

    def _check(self) -> None:
        """Conditions: the port's lock is held."""
        if self.destroyed:
            raise K.MachError(K.KERN_INVALID_RIGHT, "the port was destroyed")

    # -- state ---------------------------------------------------------------

    @property
    def srights(self) -> int:
        """Connections whose sending end may still be open."""
        return sum(1 for _s, once in self.ends.values() if not once)

    @property
    def sorights(self) -> int:
        return sum(1 for _s, once in self.ends.values() if once) + self.back_rights()

    def back_rights(self) -> int:
        """Back-channel send-once rights to us not yet answered."""
        return sum(rc.outstanding() for rc in list(self.replies.values()))

    def bind(self, rc: ReplyConn) -> bool:
        """Watch a reply connection of one of our channels (its replies are
        ours). False if the port is gone.

        Conditions: nothing locked, the channel lock, or (from_move) the
        port is not yet shared; takes the port's lock."""
        with self.lock:
            if self.destroyed:
                return False
            fd = rc.sock.fileno()
            self.ep.register(fd, _READ_EVENTS)
            self.replies[fd] = rc
            rc.port = self
            return True

    def set_qlimit(self, qlimit: int) -> None:
        """Change the queue limit: raising it wakes blocked senders.

        Conditions: nothing locked, or the space's lock; takes the port's
        lock."""
        with self.lock:
            diff, self.qlimit = qlimit - self.qlimit, qlimit
            if self.efd < 0:
                return  # no semaphore yet: it will start with qlimit free
            if diff > 0:
                pay = min(diff, self.debt)
                self.debt -= pay
                if diff - pay:
                    _efd_write(self.efd, diff - pay)
            while diff < 0:
                try:
                    _efd_read(self.efd)
                except BlockingIOError:
                    self.debt += -diff
                    break
                diff += 1

    def _freed(self) -> None:
        """A message from a send connection left the queue: one more place.

        Conditions: the port's receive lock is held."""
        if self.debt:
            self.debt -= 1
        else:
            _efd_write(self.efd, 1)

    def live_rights(self) -> tuple[int, int]:
        """(send connections, send-once connections) whose sending end is
        still open somewhere: kernel fact, read with poll (EPOLLRDHUP is set
        on a receiving end once every copy of its sending end is closed).
        Our own cached sending end is dropped first, so that it does not
        count as a sender.

        Conditions: nothing locked, or the space's lock; takes the port's
        lock; under it tries the port's receive lock without waiting, and
        takes the use and the watcher's lock."""
        with self.lock:
            hung = self._hung()
            normal = sum(1 for fd, (_s, once) in self.ends.items() if not once and fd not in hung)
            # a send-once right counts until its message is received, as in
            # XNU (ip_sorights drops at copyout)
            once = sum(1 for fd, (_s, o) in self.ends.items() if o and (fd not in hung or unix.pending(fd)))
            return normal, once + self.back_rights()

    def _hung(self) -> set[int]:
        """Our ends whose every sending end has closed (not yet read to EOF).
        With no no-senders request armed and no receiver busy, a hung send
        connection with nothing queued is dropped here: on a port that
        nobody receives from, nothing else would ever read its EOF, and each
        MAKE_SEND after forget_cache opens a new one.

        Conditions: the port's lock is held; tries the port's receive lock
        without waiting (and releases it); takes the use lock and the
        watcher's lock."""
        self.forget_cache()
        hung = unix.hung_up_fds(self.ends)
        if hung and self.nsrequest is None and self.rcv_lock.acquire(blocking=False):
            try:
                for fd in list(hung):
                    if not self.ends[fd][1] and not unix.pending(fd):
                        self.drop_end(fd)
                        hung.discard(fd)
            finally:
                self._rcv_release()
        return hung

    def msgcount(self) -> int:
        """Messages queued: the places taken in the queue semaphore (from
        /proc/self/fdinfo, which shows an eventfd's count without reading
        it), plus messages held here, plus send-once messages waiting.

        Conditions: nothing locked, or the space's lock; takes the port's
        lock."""
        with self.lock:
            free = self.qlimit if self.efd < 0 else (eventfd.count(self.efd) or 0)
            queued = max(0, self.qlimit + self.debt - free)
            # send-once messages take no place in the queue: count the
            # connections with a record waiting (ours and our channels')
            waiting_once = sum(1 for fd, (_s, once) in self.ends.items() if once and unix.pending(fd))
            waiting_once += sum(1 for fd in list(self.replies) if unix.pending(fd))
            return queued + len(self.held) + waiting_once

    def fileno(self) -> int:
        """An fd that polls readable when a message may be waiting."""
        return self.ep.fileno()

    def drop_end(self, fd: int) -> bool:
        """Forget a connection that read EOF; returns whether it was a
        send-once connection. Idempotent.

        Conditions: the port's lock is held; takes the watcher's lock when
        the end is watched. While a message carrying the receive right is
        being sent (``moving``), the end is closed when the move ends: the
        message names its fd."""
        ent = self.ends.pop(fd, None)
        if ent is None:
            return False
        s, once = ent
        self.owners.pop(fd, None)
        self.quiet.discard(fd)  # the number may be reused by a new end
        ino = self.local_inos.pop(fd, None)
        if ino is not None and LOCAL_SENDS.get(ino) is self:
            del LOCAL_SENDS[ino]  # every sending end is closed: none can come back
        WATCHER.unwatch(fd)
        try:
            self.ep.unregister(fd)
        except (OSError, ValueError):
            pass
        rc = self.rconn.pop(fd, None)  # rights made from it keep it open
        if self.moving is None:
            s.close()
        else:
            self.moving[2] += (s, rc)  # a message being sent names its fds (pack_for_move)
        return once

    def _closed(self, fd: int, used: bool) -> None:
        """A connection read EOF. An unused send-once connection is a
        send-once notification; the last send connection may be no-senders.

        Conditions: the port's receive lock and the port's lock are held;
        may send a no-senders notification (never waits: the use lock, or
        the watcher's lock if the send fails); takes the watcher's lock
        (drop_end)."""
        if fd not in self.ends:
            return
        once = self.drop_end(fd)
        if once:
            if not used:
                self.held.append(Incoming(send_once_record(), [], (os.getpid(), os.getuid(), os.getgid())))
        elif fd in self.quiet:
            self.quiet.discard(fd)  # closed before no-senders was armed
        else:
            self.check_no_senders()

    # -- notifications ---------------------------------------------------------

    def check_no_senders(self) -> None:
        """Fire the armed no-senders request once no send right is left. As
        in XNU (ipc_notify_no_senders), sync is not looked at again here.

        Conditions: the port's lock is held; may send a no-senders
        notification (never waits: the use lock, or the watcher's lock if
        the send fails)."""
        req = self.nsrequest
        if req is None or self._cached is not None or any(
                not once and fd not in self.quiet for fd, (_s, once) in self.ends.items()):
            return
        self.nsrequest = None
        no_senders(req[0], self.mscount)

    def request_no_senders(self, cap: "SendOnceCap | None", sync: int) -> "SendOnceCap | None":
        """Arm (or with None, cancel) the no-senders request; returns the
        previous notify right. As ipc_port_nsrequest does, it fires before
        returning when there are no senders now and sync <= the make-send
        count; otherwise it waits for the last send right to go.

        Conditions: the space's lock is held; takes the port's lock; under
        it as live_rights, takes the watcher's lock, and may send the
        notification at once (never waits: the use lock, or the watcher's
        lock if the send fails)."""
        with self.lock:
            prev = self.nsrequest[0] if self.nsrequest else None
            self.nsrequest = None
            if cap is None:
                return prev
            # kernel fact, read now: connections already closed do not count
            # (their EOF, read later, is no transition to no senders)
            self.quiet = {fd for fd in self._hung() if not self.ends[fd][1]}
            if sync <= self.mscount and not any(
                    not once and fd not in self.quiet for fd, (_s, once) in self.ends.items()):
                no_senders(cap, self.mscount)
                return prev
            self.nsrequest = (cap, sync)
            for fd, (_s, once) in list(self.ends.items()):
                if not once:
                    self._watch_end(fd)
            return prev

    def _watch_end(self, fd: int) -> None:
        """Conditions: the port's lock is held, or the port is not yet shared
        (from_move); takes the watcher's lock."""
        WATCHER.watch(fd, epoll.EPOLLRDHUP, functools.partial(self._peer_closed, fd))

    def _peer_closed(self, fd: int) -> None:
        """Watcher thread: every sending end of a connection closed. If no
        receiver is busy with the port, drain what is queued on it into
        ``held`` (the port's queue) and account for the close.

        Conditions: the watcher thread, nothing locked; tries the port's
        receive lock (returns at once when a receiver holds it), then takes
        the port's lock; releases both, then takes the lock of each set the
        port is in."""
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
                    try:
                        n, fds, cred = unix.recv(sock, _record_buffer())
                    except BlockingIOError:
                        return  # not closed after all
                    except unix.Truncated as err:
                        drained += 1
                        self.held.append(self._cut(fd, _once, err))
                        continue
                    except OSError:
                        n, fds, cred = 0, [], None
                    if n == 0 and not fds:
                        if not unix.hung_up(sock):
                            continue  # an empty record, not EOF: junk, dropped
                        self._closed(fd, drained > 0)
                        return
                    rec = self._take(fd, _once, n, fds, cred)
                    if rec is not None:
                        drained += 1
                        self.held.append(rec)
        finally:
            self._rcv_release()
            if self.held and self.sets:
                self._kick_sets()
            if self.held and ASYNC_WAKE:
                _wake_async(self)

    def _take(self, fd: int, once: bool, n: int, fds: list[int],
              cred: tuple[int, int, int] | None) -> Incoming | None:
        """A record read off end ``fd``: a message (returned), or a control
        record of a sender's channel (acted on; None).

        Conditions: the port's receive lock is held (the port's lock too,
        from _peer_closed); takes the port's lock for a send-once end and
        for a control record (_control)."""
        buf = _record_buffer()
        if once:
            with self.lock:
                self.drop_end(fd)
            return Incoming(bytes(buf[:n]), fds, cred)
        if n == _CONTROL_SIZE and buf[_FLAGS_AT] & CONTROL and self._control(fd, n, fds):
            return None
        if self.debt:
            self.debt -= 1  # (_freed, inline: this is every message's path)
        else:
            _efd_write(self.efd, 1)
        return Incoming(buf[:n], fds, cred, None, self.rconn.get(fd))

    def _cut(self, fd: int, once: bool, err: "unix.Truncated") -> Incoming:
        """A record taken off end ``fd`` whole but cut (its fds are closed):
        it leaves the queue as a message would, so its place is freed (or
        its send-once connection dropped), and the receive that takes it
        fails.

        Conditions: the port's receive lock is held (the port's lock too,
        from _peer_closed); takes the port's lock for a send-once end."""
        if once:
            with self.lock:
                self.drop_end(fd)
        else:
            # what was lost may have been a channel's new reply
            # connection: stop answering on the old one
            self.rconn.pop(fd, None)
            self._freed()
        return _lost(err)

    def _control(self, fd: int, n: int, fds: list[int]) -> bool:
        """JOIN: a sender's channel (a new connection of ours, and its
        reply connection); REPLYCONN: a new reply connection for the
        channel it came on. False if the record is not one of them (it is
        then received as a message, and refused as malformed).

        Conditions: the port's receive lock is held; takes the port's lock
        and calls ``admit`` under it (the bootstrap server's policy takes
        the port's lock again); takes the watcher's lock while a no-senders
        request is armed."""
        magic, bits, _id, blen, nrights, nfds, flags, alen = _CONTROL_HEAD.unpack_from(_record_buffer())
        ok = (magic == _MAGIC and not (bits or blen or nrights or alen) and nfds == len(fds)
              and all(unix.is_seqpacket(f) for f in fds))
        if ok and flags in (FLAG_JOIN, FLAG_REPLYCONN) and any(unix.peer_gone(f) for f in fds[-1:]):
            # a well-formed record whose reply connection's sender has
            # already gone: nothing could use it, so it is dropped (kept, it
            # would hold an fd for as long as this connection lives)
            files.close_all(fds)
            return True
        with self.lock:
            owner = self.owners.get(fd)
            if (ok and flags == FLAG_JOIN and len(fds) == 2 and len(self.ends) < max_joined()
                    and (owner is None or self.admit is None or self.admit(owner))):
                rx = unix.adopt(fds[0])
                rx.setblocking(False)
                unix.set_passcred(rx, True)
                self.ends[rx.fileno()] = (rx, False)
                if owner is not None:
                    self.owners[rx.fileno()] = owner  # a sender's channel counts as its own
                self.ep.register(rx.fileno(), _READ_EVENTS)
                self.rconn[rx.fileno()] = Shared(unix.adopt(fds[1]))
                if self.nsrequest is not None:
                    self._watch_end(rx.fileno())
                return True
            if ok and flags == FLAG_REPLYCONN and len(fds) == 1:
                self.rconn[fd] = Shared(unix.adopt(fds[0]))
                return True
        return False

    def _reply(self, fd: int, rc: ReplyConn) -> Incoming | None:
        """A record on one of our channels' reply connections: a reply, or
        news of a back-channel right (destroyed: a send-once notification;
        upgraded: a send-once connection of ours). At EOF every right still
        outstanding is a send-once notification (its holder died).

        Conditions: the port's receive lock is held; takes the port's lock
        at EOF and for an upgrade."""
        if rc.closed:
            # its channel's sender closed it meanwhile (the watcher thread,
            # when the destination died): nothing was outstanding on it
            return None
        buf = _record_buffer()
        try:
            n, fds, cred = unix.recv(rc.sock, buf)
        except BlockingIOError:
            return None
        except unix.Truncated:
            return None  # junk (its fds are closed): dropped
        except OSError:
            if rc.closed:
                return None  # closed under the read, as above
            n, fds, cred = 0, [], None
        if n == 0 and not fds and not unix.hung_up(rc.sock):
            # an empty record reads like EOF: only the hang-up tells them
            # apart. Junk from a holder of one right must not end the others
            return None
        if n == 0 and not fds:
            me = (os.getpid(), os.getuid(), os.getgid())
            with self.lock:
                for _ in range(rc.outstanding()):
                    self.held.append(Incoming(send_once_record(), [], me))
                rc.tokens.clear()
                rc.anon = 0
                rc.close()
            return self.held.popleft() if self.held else None  # type: ignore[return-value]
        flags = int.from_bytes(buf[_FLAGS_AT:_FLAGS_AT + 4], "little") if n >= _CONTROL_SIZE else 0
        kind, token = flags & 0xFF, flags >> 8
        rec: Incoming | None = None
        # a reply may also be a notification (1) or carry its body in a
        # sealed memfd (2: a body larger than a record)
        if kind & ~3 == FLAG_REPLY and rc.resolve(token):
            rec = Incoming(bytes(buf[:n]), fds, cred)
        elif kind == FLAG_SO_DEAD and not fds and rc.resolve(token):
            rec = Incoming(send_once_record(), [], (os.getpid(), os.getuid(), os.getgid()))
        elif kind == FLAG_UPGRADE and len(fds) == 1 and unix.is_seqpacket(fds[0]) and rc.resolve(token):
            with self.lock:
                rx = unix.adopt(fds[0])
                rx.setblocking(False)
                self.ends[rx.fileno()] = (rx, True)
                self.ep.register(rx.fileno(), _READ_EVENTS)
        else:
            files.close_all(fds)  # junk, or a second answer to one right
        if rc.orphan and not rc.outstanding():
            rc.close()
        return rec

    def _wait_turn(self, deadline: float | None) -> bool:
        """Wait for the receive turn, which another thread holds, until
        ``deadline`` (None: for ever); False once it has passed. In XNU
        every waiter has its own timeout, and a timeout of 0 never blocks
        (ipc_mqueue_receive_on_thread_and_unlock, osfmk/ipc/ipc_mqueue.c:1065
        in xnu-11417.101.15): a holder asleep in epoll_wait (``sleeping``)
        is waited for only until the deadline. A holder that is not asleep
        is busy for a moment (taking a message, or the watcher thread
        draining a closed connection), as XNU's port lock is held for a
        moment: it is waited for past the deadline, so a message it does
        not take is still found.

        Conditions: this thread does not hold the port's receive lock;
        takes it (it is held when True is returned)."""
        if deadline is None:
            self.rcv_lock.acquire()
            return True
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                if self.sleeping:
                    return False
                left = _BUSY_TURN
            if self.rcv_lock.acquire(True, min(left, threading.TIMEOUT_MAX)):
                return True

    def dequeue(self, timeout: float | None, turn: float = -1) -> Incoming | None:
        """The next message, waiting up to ``timeout`` seconds (None: for
        ever). Connections that read EOF are dropped on the way; a
        send-once connection is dropped after its one message.

        Receivers take turns. A receive waits for its turn within its
        ``timeout`` (None when the receiver whose turn it is sleeps on
        past it: _wait_turn). With ``turn`` >= 0 (a receive on a port set
        holding this port), None when the receiver whose turn it is sleeps
        waiting on the port: it takes what woke us, and may sleep on with
        the turn. Looked at every ``turn`` seconds: any other holder (the
        watcher thread draining a closed connection) is waited for.

        MACH_RCV_PORT_CHANGED when the port is destroyed or moved away
        before or while we wait: XNU wakes the receivers of a port whose
        receive right is cleared (ipc_port_clear_receiver, osfmk/ipc/
        ipc_port.c:731 in xnu-11417.101.15) with THREAD_RESTART
        (ipc_mqueue_changed, osfmk/ipc/ipc_mqueue.c:434), which becomes
        MACH_RCV_PORT_CHANGED (ipc_mqueue_receive_results, ipc_mqueue.c:863),
        as does a receive that finds the port already gone (ipc_mqueue.c:1049).
        MACH_RCV_HEADER_ERROR for an empty record.

        Conditions: nothing locked. Takes the port's receive lock (waiting
        for a holder asleep on the port no longer than ``timeout``, or
        ``turn`` seconds at a time) and holds it while waiting in
        epoll_wait; takes the port's lock under it; after releasing both,
        the lock of each set the port is in."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if turn < 0:
            if deadline is None:
                self.rcv_lock.acquire()  # no limit: wait for our turn (no arguments to parse)
            elif not self.rcv_lock.acquire(False) and not self._wait_turn(deadline):
                return None
        else:
            while not self.rcv_lock.acquire(timeout=turn):
                if self.sleeping:
                    return None  # (what waits in ``held`` is that receiver's at its next wake)
        try:
            while True:
                if self.held:
                    self.seqno += 1
                    return self.held.popleft()  # type: ignore[return-value]
                # set before _retire() looks at rcv_lock: seen here, the
                # epoll set may be closed already, and is not polled
                if self.destroyed:
                    raise K.MachError(K.MACH_RCV_PORT_CHANGED, "the port was destroyed")
                direct = not self.skip and len(self.ends) == 1 and not self.replies
                if direct:
                    # one connection and nothing else to watch: read it
                    # directly, and wait in epoll only when it is empty
                    [(fd, ent)] = self.ends.items()
                else:
                    if self.skip:
                        self.skip -= 1
                    # one event at a time: epoll hands ready connections out in turn
                    self.sleeping = True
                    try:
                        # epoll_wait counts an int of ms: a longer wait (mach_msg's
                        # timeout reaches 2**32 - 1 ms) is taken in parts
                        events = self.ep.poll(-1.0 if deadline is None else
                                              min(epoll.MAX_WAIT, max(0.0, deadline - time.monotonic())), 1)
                    finally:
                        self.sleeping = False
                    if not events:
                        if deadline is not None and time.monotonic() >= deadline:
                            return None
                        continue
                    fd = events[0][0]
                    found = self.ends.get(fd)
                    if found is None:
                        rc = self.replies.get(fd)
                        rec = self._reply(fd, rc) if rc is not None else None
                        if rec is not None:
                            self.seqno += 1
                            return rec
                        continue
                    ent = found
                sock, once = ent
                try:
                    n, fds, cred = unix.recv(sock, _record_buffer())
                except BlockingIOError:
                    if direct:
                        # empty: wait in epoll, and for the next receives
                        # too, since their messages tend to come after them
                        self.skip = _DIRECT_BACKOFF
                    continue
                except unix.Truncated as err:
                    self.seqno += 1
                    return self._cut(fd, once, err)
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
                rec = self._take(fd, once, n, fds, cred)
                if rec is not None:
                    self.seqno += 1
                    return rec
        finally:
            self._rcv_release()
            if self.held and self.sets:
                self._kick_sets()

    def put_back(self, rec: Incoming) -> None:
        """A message dequeued but not taken (too large for the caller's
        buffer, with MACH_RCV_LARGE): first in the queue again, its
        sequence number not consumed. Destroyed if the port went meanwhile.

        Conditions: nothing locked; takes the port's lock, then, released,
        the lock of each set the port is in."""
        with self.lock:
            if self.destroyed:
                rec.release()
                return
            self.held.appendleft(rec)
            self.seqno -= 1
        self._kick_sets()
        if ASYNC_WAKE:
            _wake_async(self)

    def _kick_sets(self) -> None:
        """Messages wait in ``held``, which our epoll set does not show: a
        receive on a port set holding us is told to look here.

        Conditions: nothing locked (the port's locks released); takes the
        lock of each set the port is in."""
        for pset in list(self.sets):
            pset.kick(self)  # type: ignore[attr-defined]

    def _rcv_release(self) -> None:
        """Release rcv_lock. If the port left this task while we held it,
        the last holder out closes what _retire() left open for it.

        Conditions: this thread holds the port's receive lock, released here
        (it may hold the port's lock too: _hung); takes the port's lock when
        the port has left the task."""
        self.rcv_lock.release()
        if self.destroyed:
            with self.lock:
                if self.destroyed and not self.rcv_lock.locked():
                    self._close_ep()

    def _retire(self) -> None:
        """The port left this task (destroyed, moved away); self.lock is
        held and ``destroyed`` set. With no receiver inside dequeue(), the
        epoll set and the queue semaphore close now.

        Otherwise that receiver holds rcv_lock and may sleep in epoll_wait
        on our epoll set. Kernel facts: closing an epoll fd does not wake a
        thread already in epoll_wait on it (and its number could be reused
        under that thread), while adding a ready fd to the set does wake
        its waiters. So an eventfd whose counter is already 1 is added
        (level-triggered, never read: every later poll returns at once),
        and the epoll set, the eventfd and the semaphore (which a receiver
        taking a message writes) are closed by the last holder of rcv_lock
        to leave (_rcv_release). The eventfd is made after the port's
        connections are closed, so a task at its fd limit has room for it.

        Conditions: the port's lock is held and ``destroyed`` is set."""
        if ASYNC_WAKE:
            _wake_async(self)  # loops waiting on the port see it gone
        if not self.rcv_lock.locked():
            self._close_ep()
            return
        _DYING.add(self)  # a fork child, which has none of the receivers, closes it
        if self.wake < 0:
            try:
                self.wake = eventfd.counter(1)
                self.ep.register(self.wake, epoll.EPOLLIN)
            except OSError:
                pass  # no fd to be had at all: the receiver wakes at its timeout, if it has one

    def _close_ep(self) -> None:
        """Close the epoll set, the wake eventfd and the queue semaphore
        (idempotent).

        Conditions: the port's lock is held and no receiver holds the
        receive lock, or a fork child."""
        _DYING.discard(self)
        self.ep.close()
        for fd in (self.wake, self.nudge):
            if fd >= 0:
                files.close(fd)
        self.wake = self.nudge = -1
        if self.efd >= 0:
            files.close(self.efd)
            self.efd = -1

    # -- moving the receive right ----------------------------------------------

    def pack_for_move(self) -> tuple[list[int], int, int]:
        """The fds and packing that carry this receive right in a message:
        the receiving ends (send connections first, then send-once ones),
        then the no-senders and port-destroyed notify rights if armed.
        Messages already taken off a connection (``held``) travel first,
        in spool records on a connection of their own (_spool), flagged in
        the packing; they are kept aside (``moving``) until the right has
        gone (moved_away) or stays (move_failed: queued here again). Never
        waits. Raises OSError (no fd or memory for the spool or the queue
        semaphore), with nothing changed.

        Conditions: nothing locked, or the space's lock; takes the port's
        lock."""
        with self.lock:
            self._check()
            sem = self._sem()
            if self.moving is None:
                # messages already taken off their connections go first, on
                # a connection of their own, so the queue keeps its order
                records: list[Incoming] = list(self.held)  # type: ignore[arg-type]
                self.moving = (_spool(records) if records else None, records, [])
                self.held.clear()
            spool = self.moving[0]  # (the same right twice in one message: the same spool)
            held = [] if spool is None else [spool.fileno()]
            # the spool first (read as the right arrives), the connections
            # with a reply connection last (matched in order)
            with_rc = [fd for fd, (_s, once) in self.ends.items() if not once and fd in self.rconn][-0xFF:]
            normal = held + [fd for fd, (_s, once) in self.ends.items()
                             if not once and fd not in held and fd not in with_rc] + with_rc
            once = [fd for fd, (_s, o) in self.ends.items() if o]
            fds = [sem] + normal + once
            ns = self.nsrequest
            if ns is not None:
                fds.append(ns[0].fileno())
            if self.pdrequest is not None:
                fds.append(self.pdrequest.fileno())
            rconns = [self.rconn[fd].sock.fileno() for fd in with_rc]
            # our channels' reply connections with rights outstanding. The
            # first travels once, its count in the right's aux word (an armed
            # no-senders request does not need its sync any more); any other
            # travels once per outstanding right
            pending = [rc for rc in self.replies.values() if rc.outstanding()]
            replies = [rc.sock.fileno() for rc in pending[:1]]
            replies += [rc.sock.fileno() for rc in pending[1:] for _ in range(rc.outstanding())]
            replies = replies[:0x3F]
            fds += rconns + replies
            packing = (len(normal) | (len(once) << 16) | (int(ns is not None) << 32)
                       | (int(self.pdrequest is not None) << 33) | (len(replies) << 34)
                       | (min(self.qlimit, 0x7FFF) << 40) | (int(bool(held)) << 55) | (len(rconns) << 56))
            return fds, packing, (min(pending[0].outstanding(), 0xFFFFFFFF) if pending else 0)

    @staticmethod
    def check_packing(nfds: int, packing: int) -> bool:
        """Does a receive right's packing account for exactly ``nfds`` fds?
        (Bits: send connections 0-15, send-once ones 16-31, no-senders 32,
        port-destroyed 33, reply connections 34-39, the queue limit 40-54,
        the first send connection carries a spool 55, senders' reply
        connections 56-63.)"""
        normal = packing & 0xFFFF
        n = (1 + normal + ((packing >> 16) & 0xFFFF) + ((packing >> 32) & 1) + ((packing >> 33) & 1)
             + ((packing >> 34) & 0x3F) + (packing >> 56))
        return (n == nfds and (packing >> 40) & 0x7FFF <= MACH_PORT_QLIMIT_MAX
                and packing >> 56 <= normal - (packing >> 55 & 1))

    @classmethod
    def from_move(cls, fds: list[int], packing: int, sync: int) -> "Port":
        """The receive right that arrived as ``fds``. As in XNU, the make-send
        count and sequence number start again at zero; the messages its
        last holder had taken off their connections are queued first again
        (_unspool).

        Conditions: nothing locked; the port is new and not yet shared
        with another thread; takes the watcher's lock (an armed no-senders
        request) and the new port's lock (bind)."""
        port = cls()
        port.efd = fds[0]  # the senders' semaphore travels with the port
        n_normal, n_once = packing & 0xFFFF, (packing >> 16) & 0xFFFF
        i = 1
        if packing >> 55 & 1:
            # the queue its last holder kept goes first; its connection
            # carries nothing else, and is no sender's
            spool = unix.adopt(fds[1])
            try:
                spool.setblocking(False)
                port.held.extend(_unspool(spool))
            finally:
                spool.close()
            i = 2
        for k in range(i - 1, n_normal + n_once):
            rx = unix.adopt(fds[i])
            i += 1
            rx.setblocking(False)
            port.ends[rx.fileno()] = (rx, k >= n_normal)
            port.ep.register(rx.fileno(), _READ_EVENTS)
        port.qlimit = (packing >> 40) & 0x7FFF
        if packing >> 32 & 1:
            port.nsrequest = (SendOnceCap.adopt([fds[i]]), 0)  # armed: sync is not looked at again
            i += 1
            for fd, (_s, once) in list(port.ends.items()):
                if not once:
                    port._watch_end(fd)
        if packing >> 33 & 1:
            port.pdrequest = SendOnceCap.adopt([fds[i]])
            i += 1
        n_rc = packing >> 56
        for fd in fds[1 + n_normal - n_rc:1 + n_normal]:  # the last send connections
            port.rconn[fd] = Shared(unix.adopt(fds[i]))
            i += 1
        last: ReplyConn | None = None
        for k in range((packing >> 34) & 0x3F):
            fd = fds[i + k]
            if last is not None and files.inode(fd) == files.inode(last.sock.fileno()):
                files.close(fd)  # another right outstanding on the same connection
                last.anon += 1
                continue
            last = ReplyConn(unix.adopt(fd))
            last.sock.setblocking(False)
            last.orphan = True  # no channel of ours: closed once answered
            port.bind(last)
            last.anon = max(1, sync) if k == 0 else 1  # the first one's count is in aux
        return port

    def moved_away(self) -> None:
        """The receive right left in a message: close our copies of its fds
        without the effects of destroying it. A thread of ours blocked
        receiving on it wakes with MACH_RCV_PORT_CHANGED (see _retire).

        Conditions: the space's lock is held; takes the port's lock and,
        under it, the watcher's and the use lock."""
        with self.lock:
            self.destroyed = True
            for fd, (sock, _once) in self.ends.items():
                WATCHER.unwatch(fd)
                sock.close()
            self.ends.clear()
            self.owners.clear()
            self._close_rconns()
            for rc in list(self.replies.values()):
                if rc.outstanding():
                    rc.close()  # it went with the right
                else:
                    rc.unbind()  # its channel keeps it for another reply port
            for req in (self.nsrequest[0] if self.nsrequest else None, self.pdrequest):
                if req is not None:
                    req.forget()
            self.nsrequest = self.pdrequest = None
            if self._cached is not None:
                self._cached.close()
                self._cached = None
            self._drop_queue()  # (what it held went in its spool)
            self._retire()

    def move_failed(self) -> None:
        """The message that was to carry this receive right (pack_for_move)
        was not sent: the messages its spool took are queued here again,
        first, and a receiver asleep on the port wakes to take them. (XNU
        gives the rights of a send that failed back to the sender's space,
        a receive right with its queue: mach_msg_receive_pseudo,
        osfmk/ipc/mach_msg.c:619 in xnu-11417.101.15.)

        Conditions: nothing locked; takes the port's lock, then, released,
        the lock of each set the port is in."""
        with self.lock:
            if self.moving is None:
                return
            records = list(self.moving[1])
            self.moving[1].clear()  # (theirs now: not released)
            self._end_move()
            if not records:
                return
            self.held.extendleft(reversed(records))
            if self.rcv_lock.locked():
                self._nudge()
        self._kick_sets()
        if ASYNC_WAKE:
            _wake_async(self)

    def _nudge(self) -> None:
        """Wake the receiver asleep in our epoll set, once: an eventfd whose
        count stays 1, registered EPOLLONESHOT (armed again for the next
        nudge). Its event is no connection's: dequeue() looks again.

        Conditions: the port's lock is held."""
        try:
            if self.nudge < 0:
                self.nudge = eventfd.counter(1)
                self.ep.register(self.nudge, epoll.EPOLLIN | epoll.EPOLLONESHOT)
            else:
                self.ep.modify(self.nudge, epoll.EPOLLIN | epoll.EPOLLONESHOT)
        except OSError:
            pass  # no fd to be had: the receiver finds them at its next wake

    def _end_move(self) -> None:
        """The message that names our fds (pack_for_move) is sent or not:
        close the spool (our copy), the records in it and the connections
        dropped meanwhile.

        Conditions: the port's lock is held."""
        moving, self.moving = self.moving, None
        if moving is None:
            return
        spool, records, dropped = moving
        if spool is not None:
            spool.close()
        for rec in records:
            rec.release()
        for obj in dropped:
            if isinstance(obj, unix.Socket):
                obj.close()

    def _drop_queue(self) -> None:
        """Destroy the messages held here, and end a move (_end_move).

        Conditions: the port's lock is held."""
        self._end_move()
        while self.held:
            self.held.popleft().release()  # type: ignore[attr-defined]

    def destroy(self) -> None:
        """Close every receiving end: senders see a dead name. An armed
        no-senders or port-destroyed request's right is released unused,
        which its port sees as a send-once notification. A thread of ours
        blocked receiving on it wakes with MACH_RCV_PORT_CHANGED (see
        _retire); messages still queued are destroyed.

        Conditions: the space's lock is held; takes the port's lock and,
        under it, the watcher's and the use lock."""
        with self.lock:
            self.destroyed = True
            for fd, (s, _once) in self.ends.items():
                WATCHER.unwatch(fd)
                s.close()
            self._close_rconns()
            for rc in list(self.replies.values()):
                if rc.outstanding():
                    rc.close()  # replies still to come now fail: the port is dead
                else:
                    rc.unbind()  # nothing is owed: its channel keeps it for the next reply port
            for req in (self.nsrequest[0] if self.nsrequest else None, self.pdrequest):
                if req is not None:
                    req.close()
            self.nsrequest = self.pdrequest = None
            self.ends.clear()
            self.owners.clear()
            if self._cached is not None:
                self._cached.close()
                self._cached = None
            self._drop_queue()
            self._retire()

    def _close_rconns(self) -> None:
        """Conditions: the port's lock is held."""
        self.rconn.clear()  # back-channel rights made from them keep them open

    def forget(self) -> None:
        """Close our fds with no other effect (a fork child dropping what it
        inherited; the parent still holds the port).

        Conditions: a fork child, in the forking thread; takes the port's
        lock (renewed)."""
        with self.lock:
            for sock, _once in self.ends.values():
                sock.close()
            self.ends.clear()
            self.owners.clear()
            self._close_rconns()
            for rc in self.replies.values():
                rc.closed = True
                rc.sock.close()
            self.replies.clear()
            for req in (self.nsrequest[0] if self.nsrequest else None, self.pdrequest):
                if req is not None:
                    req.forget()
            self.nsrequest = self.pdrequest = None
            if self._cached is not None:
                self._cached.forget()
                self._cached = None
            self.destroyed = True
            # a fork child has only the thread that forked: no receiver of
            # the parent's is inside dequeue() here, whatever its lock says
            self._close_ep()
            self._drop_queue()

    def __repr__(self) -> str:
        return f"<Port ends={len(self.ends)} seqno={self.seqno} mscount={self.mscount}>"


# Ports that left this task while a receiver was still inside dequeue():
# their epoll set closes when that receiver leaves. A fork child has none
# of those threads, so it closes them at once.
_DYING: "set[Port]" = set()


def _close_dying() -> None:
    """Conditions: a fork child, in the forking thread."""
    for port in list(_DYING):
        port._close_ep()  # pylint: disable=protected-access
    _DYING.clear()


os.register_at_fork(after_in_child=_close_dying)
