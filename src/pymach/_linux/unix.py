"""AF_UNIX SOCK_SEQPACKET connections: the transport under Mach ports.

Kernel facts this module relies on:

- A SOCK_SEQPACKET socketpair is a reliable, ordered, connection-oriented
  pair whose writes arrive as whole records: one sendmsg is one recvmsg.
  A record larger than the receive buffer is cut (MSG_TRUNC) and its rest
  is lost, so receivers use a buffer as large as the largest record that
  the protocol allows.
- SCM_RIGHTS passes open file descriptions: the receiver gets new fds that
  refer to the same sockets, memfds or eventfds. At most SCM_MAX_FD (253)
  fds travel in one message. Received fds are installed at once; if the
  control buffer is too small or the receiver is at RLIMIT_NOFILE, the
  kernel drops the rest and sets MSG_CTRUNC. MSG_CMSG_CLOEXEC marks the
  new fds close-on-exec atomically.
- With SO_PASSCRED on the receiving end, the kernel attaches the sender's
  pid, uid and gid (SCM_CREDENTIALS) to every record. An unprivileged
  sender cannot claim ids other than its own (CAP_SYS_ADMIN/CAP_SETUID are
  needed to send other values), so these are kernel-verified.
- When every fd of one end is closed (the process exited, even by
  SIGKILL), the peer reads EOF (a zero-length record with no ancillary
  data) once its queue is drained, and epoll reports EPOLLHUP on it; a send
  to it fails with EPIPE.
- MSG_PEEK on a record that carries fds would install duplicates of them;
  this module never peeks.
- poll reports POLLRDHUP on a receiving end once the peer has shut down
  writing (every copy of the sending end closed), and POLLHUP once both
  directions are shut; a sending end whose receiving end is gone polls
  POLLHUP (or POLLERR). Records still queued stay readable after either.
- MSG_NOSIGNAL makes a send to a closed peer fail with EPIPE instead of
  raising SIGPIPE; MSG_DONTWAIT makes one send nonblocking (EAGAIN when
  the peer's queue is full) whatever the socket's own mode.

The socket objects are Python's socket.socket: callers use their methods
(sendmsg, recv_into, close, detach...) directly, with the constants below.
"""

from __future__ import annotations

import array
import fcntl
import os
import resource
import select
import socket
import struct
import termios
from collections.abc import Iterable

from .eventfd import is_eventfd as is_eventfd
from .files import close_all as close_all, inode as inode

SCM_MAX_FD = 253
_CRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
_CRED_SIZE = _CRED.size
_ANC_SPACE = socket.CMSG_SPACE(SCM_MAX_FD * 4) + socket.CMSG_SPACE(_CRED.size)
# plain ints: flag enums cost more to combine than the syscall takes
_MSG_CMSG_CLOEXEC = int(getattr(socket, "MSG_CMSG_CLOEXEC", 0x40000000))
_TRUNCATED = int(socket.MSG_CTRUNC | socket.MSG_TRUNC)
_SCM_RIGHTS = int(socket.SCM_RIGHTS)
_SCM_CREDENTIALS = int(socket.SCM_CREDENTIALS)
_SOL_SOCKET = int(socket.SOL_SOCKET)

Socket = socket.socket
SOL_SOCKET = _SOL_SOCKET
SCM_RIGHTS = _SCM_RIGHTS
SCM_CREDENTIALS = _SCM_CREDENTIALS
MSG_NOSIGNAL = int(socket.MSG_NOSIGNAL)
MSG_DONTWAIT = int(socket.MSG_DONTWAIT)
MSG_CMSG_CLOEXEC = _MSG_CMSG_CLOEXEC
# room for the control data of a record: SCM_MAX_FD fds and the credentials
ANC_SPACE = _ANC_SPACE
# room for the credentials alone
CRED_SPACE = socket.CMSG_SPACE(_CRED.size)


class Truncated(Exception):
    """A record or its control data did not fit; every fd that arrived
    has already been closed. ``fds_lost`` is True when fds were dropped
    (MSG_CTRUNC: the receiver is at RLIMIT_NOFILE, since the control
    buffer always has room for SCM_MAX_FD)."""

    def __init__(self, what: str, fds_lost: bool = False) -> None:
        super().__init__(what)
        self.fds_lost = fds_lost


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected SEQPACKET pair (send end, receive end), close-on-exec,
    with SO_PASSCRED on the receive end."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    return a, b


def plain_pair() -> tuple[socket.socket, socket.socket]:
    """A connected SEQPACKET pair with nothing set on it (close-on-exec,
    blocking, no SO_PASSCRED): the bare transport, as a baseline."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def adopt(fd: int) -> socket.socket:
    """A socket object that owns ``fd`` (a received connection end)."""
    return socket.socket(fileno=fd)


def set_passcred(sock: socket.socket, on: bool) -> None:
    """SO_PASSCRED: with it, every record read on ``sock`` carries its
    sender's kernel-verified (pid, uid, gid)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, int(on))


def receive_only(sock: socket.socket) -> None:
    """Shut down the writing side of ``sock`` (SHUT_WR): its peer reads EOF
    in that direction, and polls POLLRDHUP."""
    sock.shutdown(socket.SHUT_WR)


def send(sock: socket.socket, buffers: Iterable[bytes | bytearray | memoryview], fds: list[int],
         flags: int = 0) -> int:
    """sendmsg one record with ``fds`` attached (at most SCM_MAX_FD)."""
    if fds:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        return sock.sendmsg(buffers, anc, flags)
    return sock.sendmsg(buffers, (), flags)


def recv(sock: socket.socket, buf: bytearray, flags: int = 0) -> tuple[int, list[int], tuple[int, int, int] | None]:
    """Receive one record into ``buf``: (length, fds, (pid, uid, gid)).

    Length 0 with no fds is EOF. Raises Truncated (after closing what
    arrived) when the record or its fds did not fit."""
    n, anc, mflags, _addr = sock.recvmsg_into([buf], _ANC_SPACE, flags | _MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    cred = None
    for level, kind, data in anc:
        if level != _SOL_SOCKET:
            continue
        if kind == _SCM_CREDENTIALS and len(data) >= _CRED_SIZE:
            cred = _CRED.unpack_from(data)
        elif kind == _SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(data[:len(data) - len(data) % a.itemsize])
            fds.extend(a)
    if mflags & _TRUNCATED:
        close_all(fds)
        lost = bool(mflags & socket.MSG_CTRUNC)
        raise Truncated("control data truncated: out of file descriptors" if lost else "record truncated", lost)
    return n, fds, cred


def carry(fds: list[int]) -> int:
    """Put ``fds`` into a fresh connection (a *carrier*), in records of at
    most SCM_MAX_FD, and return the carrier's receiving end (the caller
    owns it). Sent in one record, that end gives the receiver every fd in
    the order given, however many: this is how one message carries more
    than SCM_MAX_FD fds and stays one record on its own connection.

    Kernel facts: the records wait in the carrier's queue until read; the
    sending end is closed before this returns, so nobody can add to them;
    if the receiving end is closed unread (the message is destroyed, or the
    receiver fails), the kernel releases every fd still queued in it."""
    tx, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        for i in range(0, len(fds), SCM_MAX_FD):
            send(tx, [b"c"], fds[i:i + SCM_MAX_FD], socket.MSG_NOSIGNAL | socket.MSG_DONTWAIT)
        return rx.detach()
    except BaseException:
        rx.close()
        raise
    finally:
        tx.close()


def uncarry(fd: int, count: int) -> list[int]:
    """Read ``count`` fds out of a carrier's receiving end ``fd`` (which is
    left open for the caller to close). Never blocks: a carrier that holds
    fewer (its sender lied, or kept its end open) raises ValueError, and
    Truncated when the fds do not fit (RLIMIT_NOFILE); either way every fd
    read from it has been closed."""
    if not is_seqpacket(fd):
        raise ValueError("the carrier is not a SEQPACKET socket")
    sock = socket.socket(fileno=fd)
    got: list[int] = []
    buf = bytearray(16)
    try:
        sock.setblocking(False)
        while len(got) < count:
            try:
                _n, fds, _cred = recv(sock, buf)
            except BlockingIOError:
                fds = []
            got.extend(fds)
            if not fds:
                raise ValueError(f"the carrier holds {len(got)} of {count} fds")
        if len(got) != count:
            raise ValueError(f"the carrier holds more than {count} fds")
        return got
    except BaseException:
        close_all(got)
        raise
    finally:
        sock.detach()


def peer_cred(sock: socket.socket) -> tuple[int, int, int]:
    """SO_PEERCRED: the (pid, uid, gid) of the process at the other end of
    a connected AF_UNIX socket, as the kernel recorded them when that end
    called connect() (for a client) or listen() (for a server). The peer
    cannot choose them: they are what the kernel knew of it then, whatever
    it does later."""
    return _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))


def is_seqpacket(fd: int) -> bool:
    """True if ``fd`` is an AF_UNIX SOCK_SEQPACKET socket (what a port
    connection is); pipes, files and other sockets are not."""
    import stat
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return False
        s = socket.socket(fileno=fd)
        try:
            return s.family == socket.AF_UNIX and s.type == socket.SOCK_SEQPACKET
        finally:
            s.detach()
    except OSError:
        return False


def hung_up(sock: socket.socket) -> bool:
    """True when every copy of the peer end has closed (POLLRDHUP/POLLHUP).
    A socket closed already (by another thread) counts as hung up."""
    fd = sock.fileno()
    if fd < 0:
        return True
    p = select.poll()
    p.register(fd, select.POLLRDHUP)
    return any(ev & (select.POLLRDHUP | select.POLLHUP) for _fd, ev in p.poll(0))


def fd_limit() -> int:
    """The soft RLIMIT_NOFILE: how many fds this process may have open (a
    new fd past it fails with EMFILE; a received one is dropped, with
    MSG_CTRUNC)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def pending(fd: int) -> int:
    """The length of the next record queued on a receiving end (SIOCINQ on
    a SEQPACKET socket), 0 when none is: this tells a waiting record from
    EOF, which poll reports alike."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf)
    except OSError:
        return 0
    return buf[0]


def hung_up_fds(fds: Iterable[int]) -> set[int]:
    """The receiving ends among ``fds`` whose every peer copy has closed
    (POLLRDHUP/POLLHUP), in one poll."""
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLRDHUP)
    return {fd for fd, ev in p.poll(0) if ev & (select.POLLRDHUP | select.POLLHUP)}


def peer_gone(fd: int) -> bool:
    """Has every copy of the far end of this connection closed? (POLLHUP:
    both directions are shut. A far end that shut only its writing side
    is POLLRDHUP, which does not count here.)"""
    p = select.poll()
    p.register(fd, 0)
    return any(ev & select.POLLHUP for _fd, ev in p.poll(0))


def send_end_dead(fd: int) -> bool:
    """True once the receiving end of the sending end ``fd`` is gone
    (POLLHUP or POLLERR)."""
    p = select.poll()
    p.register(fd, select.POLLOUT)
    return any(ev & (select.POLLHUP | select.POLLERR) for _fd, ev in p.poll(0))


def wait_writable(fd: int, timeout_ms: int) -> None:
    """Wait until a record can be written on ``fd`` (POLLOUT), its peer
    hangs up, or ``timeout_ms`` pass (at most 2**31 - 1: poll takes an
    int of ms)."""
    p = select.poll()
    p.register(fd, select.POLLOUT)
    p.poll(min(timeout_ms, 0x7FFFFFFF))
