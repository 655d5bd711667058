"""mach_msg: send and receive, with options, timeouts and trailers.

Send copies the message in (ipc_kmsg) and writes one record on the
destination's connection; receive takes the next record from the port (or
port set), checks its size against the caller's buffer, copies it out and
appends the trailer the options ask for.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct

from . import kern_return as K
from . import message_defs as MD
from . import ipc_kmsg
from . import ipc_right as R
from .ipc_notify import FLAG_NOTIFY
from .ipc_port import Port, SendOnceCap
from .ipc_pset import PortSet
from .ipc_space import MACH_PORT_TYPE_PORT_SET, MACH_PORT_TYPE_RECEIVE, IpcSpace

# trailer size by MACH_RCV_TRAILER_ELEMENTS
_TRAILER_SIZE = {0: 8, 1: 12, 2: 20, 3: 52, 4: 60, 5: 60, 6: 60, 7: 68, 8: 68}
_SEND_ERRNO = {
    errno.EPIPE: K.MACH_SEND_INVALID_DEST,
    errno.ECONNRESET: K.MACH_SEND_INVALID_DEST,
    errno.ENOTCONN: K.MACH_SEND_INVALID_DEST,
    errno.EBADF: K.MACH_SEND_INVALID_DEST,
    errno.EAGAIN: K.MACH_SEND_TIMED_OUT,
    errno.EMSGSIZE: K.MACH_SEND_TOO_LARGE,
    errno.ENOBUFS: K.MACH_SEND_NO_BUFFER,
    errno.ENOMEM: K.MACH_SEND_NO_BUFFER,
    errno.EINTR: K.MACH_SEND_INTERRUPTED,
}


class TooLarge(K.MachError):
    """MACH_RCV_TOO_LARGE, carrying the size the message needs."""

    codes = ()
    needed = 0


def send(space: IpcSpace, msg: bytes, option: int, timeout_ms: int) -> None:
    """Send one message. MACH_SEND_* codes as XNU gives them."""
    out = ipc_kmsg.copyin(space, msg)
    try:
        dest = out.dest
        assert dest is not None
        sock = dest.sock
        flags = socket.MSG_NOSIGNAL
        wait = timeout_ms if option & MD.MACH_SEND_TIMEOUT else None
        # a place in the queue (send-once rights never wait, as in XNU)
        if not isinstance(dest, SendOnceCap) and not dest.take_slot(wait):
            raise K.MachError(K.MACH_SEND_TIMED_OUT, "the queue is full")
        if option & MD.MACH_SEND_TIMEOUT:
            flags |= socket.MSG_DONTWAIT
            if timeout_ms:
                p = select.poll()
                p.register(sock.fileno(), select.POLLOUT)
                p.poll(timeout_ms)
        try:
            sock.sendmsg(out.buffers, [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(
                f"{len(out.fds)}i", *out.fds))] if out.fds else [], flags)
        except OSError as err:
            if not isinstance(dest, SendOnceCap):
                dest.give_slot()
            kr = _SEND_ERRNO.get(err.errno or 0, K.MACH_SEND_INVALID_DEST)
            if kr == K.MACH_SEND_INVALID_DEST:
                e = space.lookup(out.dest_name)
                if e is not None:
                    R.check_dead(space, out.dest_name, e)
            raise K.MachError(kr, "sendmsg") from err
    finally:
        out.release()
    for name, disp in out.moves:
        R.consume_sent(space, name, disp)
    for name, port in out.receives:
        R.consume_receive(space, name, port)  # type: ignore[arg-type]
    if out.dealloc:
        from .task import SELF
        for addr, size in out.dealloc:
            SELF.map.deallocate(addr & ~0xFFF, (addr + size + 0xFFF) & ~0xFFF)


def receive(space: IpcSpace, rcv_name: int, rcv_size: int, option: int, timeout_ms: int) -> bytes:
    """Receive one message into at most ``rcv_size`` bytes, trailer
    included. MACH_RCV_* codes as XNU gives them; TooLarge carries the size
    needed (with MACH_RCV_LARGE the message stays queued)."""
    e = space.lookup(rcv_name)
    if e is None or not e.type & (MACH_PORT_TYPE_RECEIVE | MACH_PORT_TYPE_PORT_SET):
        raise K.MachError(K.MACH_RCV_INVALID_NAME, f"{rcv_name:#x}")
    if MD.MACH_RCV_TRAILER_TYPE(0) != option & (0xF << 28):
        raise K.MachError(K.MACH_RCV_INVALID_TRAILER, "unknown trailer format")
    elements = (option >> 24) & 0xF
    tsize = _TRAILER_SIZE.get(elements)
    if tsize is None:
        raise K.MachError(K.MACH_RCV_INVALID_TRAILER, f"trailer elements {elements}")
    timeout = timeout_ms / 1000.0 if option & MD.MACH_RCV_TIMEOUT else None
    obj = e.object
    if isinstance(obj, PortSet):
        rec, port, name = _dequeue_set(space, obj, timeout)
    else:
        assert isinstance(obj, Port)
        port, name = obj, rcv_name
        rec = port.dequeue(timeout)
    if rec is None:
        raise K.MachError(K.MACH_RCV_TIMED_OUT, "no message")
    try:
        _bits, _id, _rights, _arrays, body = ipc_kmsg.validate(rec)
    except K.MachError:
        rec.release()
        raise
    needed = ipc_kmsg.HEADER_SIZE + len(body) + tsize
    if needed > rcv_size:
        if option & MD.MACH_RCV_LARGE:
            port.held.appendleft(rec)
            port.seqno -= 1  # still queued: no sequence number consumed
        else:
            rec.release()
        err = TooLarge(K.MACH_RCV_TOO_LARGE, f"the message needs {needed} bytes")
        err.needed = needed - tsize
        raise err
    notify = bool(ipc_kmsg.WIRE.unpack_from(rec.data)[6] & FLAG_NOTIFY)
    cred = rec.cred
    msg, _bits = ipc_kmsg.copyout(space, rec, name, port.seqno)
    if notify and cred is not None and cred[0] == os.getpid():
        cred = None  # made by our own runtime, as the kernel: KERNEL_SECURITY_TOKEN
    return bytes(msg) + _trailer(elements, tsize, port.seqno - 1, cred, port.context)


def _dequeue_set(space: IpcSpace, pset: PortSet, timeout: float | None):  # type: ignore[no-untyped-def]
    pset.enter()
    try:
        return _dequeue_set_locked(space, pset, timeout)
    finally:
        pset.leave()


def _dequeue_set_locked(space: IpcSpace, pset: PortSet, timeout: float | None):  # type: ignore[no-untyped-def]
    import time
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        events = pset.ep.poll(left)
        if pset.destroyed:
            raise K.MachError(K.MACH_RCV_PORT_CHANGED, "the port set was destroyed")
        for fd, _ev in events:
            port = pset.members.get(fd)
            if port is None:
                continue
            rec = port.dequeue(0)
            if rec is not None:
                return rec, port, space.name_of(port)
        if deadline is not None and time.monotonic() >= deadline:
            return None, None, 0


def _trailer(elements: int, size: int, seqno: int, cred: tuple[int, int, int] | None,
             context: int = 0) -> bytes:
    # format 0: type, size, seqno, security token {euid, egid}, audit token
    # {auid, euid, egid, ruid, rgid, pid, asid, pidversion}, context, ad, labels.
    # cred None is the kernel: KERNEL_SECURITY_TOKEN {0, 1}, audit all zero.
    if cred is None:
        full = struct.pack("<III2I8IQii", MD.MACH_MSG_TRAILER_FORMAT_0, size, seqno, 0, 1,
                           0, 0, 0, 0, 0, 0, 0, 0, context, 0, 0)
    else:
        pid, uid, gid = cred
        full = struct.pack("<III2I8IQii", MD.MACH_MSG_TRAILER_FORMAT_0, size, seqno, uid, gid,
                           uid, uid, gid, uid, gid, pid, 0, 0, context, 0, 0)
    return struct.pack("<II", MD.MACH_MSG_TRAILER_FORMAT_0, size) + full[8:size]
