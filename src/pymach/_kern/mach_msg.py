"""mach_msg: send and receive, with options, timeouts and trailers.

Send copies the message in (ipc_kmsg) and writes one record on the
destination's connection; receive takes the next record from the port (or
port set), checks its size against the caller's buffer, copies it out and
appends the trailer the options ask for.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import Callable

from .._linux import epoll, files, unix
from . import kern_return as K
from . import message_defs as MD
from . import ipc_kmsg
from . import ipc_right as R
from .ipc_notify import NDR_RECORD
from . import ipc_wire
from .ipc_wire import FLAG_NOTIFY, FLAGS_AT as _FLAGS_AT, MAGIC
from .ipc_port import Incoming, Port, ReplyCap, SendCap, SendOnceCap, done
from .ipc_pset import PortSet
from .ipc_space import MACH_PORT_TYPE_PORT_SET, MACH_PORT_TYPE_RECEIVE, IpcSpace
from .task import SELF

RIGHT, WIRE = ipc_wire.RIGHT, ipc_wire.WIRE  # bound by assignment, not by import: see ipc_kmsg.py

# trailer size by MACH_RCV_TRAILER_ELEMENTS
HDR_REMOTE = struct.Struct("<I")
HDR_ID = struct.Struct("<i")
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
    """MACH_RCV_TOO_LARGE, carrying the size the message needs. Without
    MACH_RCV_LARGE the message is dequeued and destroyed, as XNU's
    mach_msg_receive_results does (ipc_kmsg_destroy): ``msg`` is then the
    message copied out, whose rights and regions the caller destroys
    (mach_msg_destroy), so that a reply right sends its send-once
    notification and no right is left under a name nobody knows."""

    codes = ()
    needed = 0
    msg = b""


class PseudoReceived(K.MachError):
    """A send that failed after copyin with one of the codes XNU answers
    with a pseudo-receive: ``msg`` is the message in received form, to be
    written over the sender's buffer (ipc_kmsg.copyout_pseudo)."""

    codes = ()
    msg = b""


# the send errors after which XNU gives the message back to its sender
# (ipc_kmsg_send's failures; mach_msg_trap_send calls mach_msg_receive_pseudo)
_PSEUDO = frozenset((K.MACH_SEND_TIMED_OUT, K.MACH_SEND_INTERRUPTED, K.MACH_SEND_NO_BUFFER))


def _pseudo_receive(space: IpcSpace, msg: bytes, out: "ipc_kmsg.Outgoing | None", addr: int,
                    kr: int) -> PseudoReceived:
    """The error to raise for a send that failed with ``kr`` in _PSEUDO.

    Conditions: nothing locked; as ipc_kmsg.copyout_pseudo."""
    data, mr = ipc_kmsg.copyout_pseudo(space, msg, out, addr)
    err = PseudoReceived(kr | mr, "the message was given back to its sender")
    err.msg = data
    return err


_NOSIGNAL = unix.MSG_NOSIGNAL
_DONTWAIT = unix.MSG_DONTWAIT
_SOL_SOCKET = unix.SOL_SOCKET
_SCM_RIGHTS = unix.SCM_RIGHTS


def send(space: IpcSpace, msg: bytes, option: int, timeout_ms: int, addr: int | None = None) -> None:
    """Send one message. MACH_SEND_* codes as XNU gives them. With ``addr``
    (the C interface: the sender's buffer), after MACH_SEND_TIMED_OUT,
    _INTERRUPTED and _NO_BUFFER, PseudoReceived with the message as XNU
    writes it back over that buffer; without it (the Pythonic layer) a
    failed send consumes nothing.

    Conditions: nothing locked. As ipc_kmsg.copyin; then writes with nothing
    locked (the rights held by use()), waiting for a place in the queue and
    for room on the connection up to the timeout (for ever without
    MACH_SEND_TIMEOUT); then consumes the moved rights (the space's lock:
    see ipc_right) and takes the map's lock for deallocated memory."""
    fast = ipc_kmsg.copyin_simple(space, msg)
    if fast is not None:
        dest, record, token = fast
        remote = HDR_REMOTE.unpack_from(msg, 8)[0]
        try:
            _transmit(space, dest, remote, [record], (), option, timeout_ms)
        except BaseException as err:
            if token:
                dest.undo_reply(token)
            done(dest)  # held by copyin_simple
            if addr is not None and isinstance(err, K.MachError) and err.kr in _PSEUDO:
                raise _pseudo_receive(space, msg, None, addr, err.kr) from err
            raise
        done(dest)  # held by copyin_simple
        if isinstance(dest, SendOnceCap):
            R.consume_sent(space, remote, MD.MACH_MSG_TYPE_MOVE_SEND_ONCE)
        return
    if _kobject_server is not None and ipc_kmsg.names_kobject(space, msg):
        _kobject_server(msg, option, timeout_ms)
        return
    out = _copyin(space, msg)
    try:
        if out.kobject is not None:
            _kobject_reply(space, out, HDR_REMOTE.unpack_from(msg, 12)[0], HDR_ID.unpack_from(msg, 20)[0],
                           option, timeout_ms)
        else:
            assert out.dest is not None
            _transmit(space, out.dest, out.dest_name, out.buffers, out.fds, option, timeout_ms)
        out.token = 0
    except BaseException as err:
        out.unmove()  # the receive rights it carried stay, with their queues
        if addr is not None and isinstance(err, K.MachError) and err.kr in _PSEUDO and out.kobject is None:
            if out.token:
                out.dest.undo_reply(out.token)  # type: ignore[union-attr]
                out.token = 0
            raise _pseudo_receive(space, msg, out, addr, err.kr) from err
        raise
    finally:
        if out.token:
            out.dest.undo_reply(out.token)  # type: ignore[union-attr]
        out.release()
    _sent(space, out, out.kobject is not None)


def _sent(space: IpcSpace, out: ipc_kmsg.Outgoing, destroy_receives: bool) -> None:
    """What a message took leaves the sender: moved rights are consumed,
    carried receive rights leave the space (or are destroyed with a message
    the kernel drops), deallocated memory is unmapped.

    Conditions: nothing locked; the space's lock (ipc_right), then the
    map's lock."""
    for name, disp in out.moves:
        R.consume_sent(space, name, disp)
    for name, port in out.receives:
        if destroy_receives:
            R.destroy_carried_receive(space, name, port)  # type: ignore[arg-type]
        else:
            R.consume_receive(space, name, port)  # type: ignore[arg-type]
    if out.dealloc:
        for addr, size in out.dealloc:
            SELF.map.deallocate(addr & ~0xFFF, (addr + size + 0xFFF) & ~0xFFF)


def _copyin(space: IpcSpace, msg: bytes) -> ipc_kmsg.Outgoing:
    """ipc_kmsg.copyin, with running out of fds or memory while making a
    right or a memfd for the message as MACH_SEND_NO_BUFFER.

    Conditions: as ipc_kmsg.copyin."""
    try:
        return ipc_kmsg.copyin(space, msg)
    except K.MachError:
        raise
    except OSError as err:
        raise K.MachError(K.MACH_SEND_NO_BUFFER, f"copyin: {err.strerror}") from err


def deliver_to_kernel(space: IpcSpace, msg: bytes) -> bytes:
    """A message to a kernel object (a task, thread or host port, a memory
    entry), taken by the kernel: copied in as for any port (the same
    MACH_SEND_* codes; moved rights consumed, carried memory copied) and
    copied out at once into our own space, which is what the kernel holds
    while the object's server runs. Returns the message as received: its
    header's remote port is the reply right (a name of ours), its local
    port the destination's name, its rights have names of ours and its
    out-of-line memory is mapped here. A moved destination right is not
    consumed: the server still needs its name (the caller consumes it).

    Conditions: nothing locked; as copyin, then as copyout."""
    out = _copyin(space, msg)
    dest = HDR_REMOTE.unpack_from(msg, 8)[0]
    try:
        rec = Incoming(b"".join(out.buffers), [], None)
        for fd in out.fds:  # the kernel's own references, as SCM_RIGHTS would make them
            rec.fds.append(files.dup(fd))
        received, _bits = ipc_kmsg.copyout(space, rec, dest, 0)
    except BaseException:
        out.unmove()
        raise
    finally:
        out.release()
    out.moves = [(name, disp) for name, disp in out.moves if name != dest or disp != MD.MACH_MSG_TYPE_MOVE_SEND]
    _sent(space, out, False)
    return received


KobjectServer = Callable[[bytes, int, int], None]
_kobject_server: KobjectServer | None = None


def set_kobject_server(server: KobjectServer) -> None:
    """Install what answers a message sent to a kernel object (a task,
    thread or host port, a memory entry), as XNU's ipc_kobject_server
    does: it is called with the message, the send options and the
    timeout, in the sending thread; the MachError it raises is the send's
    code. Until one is installed such a message to a memory entry is
    answered MIG_BAD_ID, and one to another kernel object is refused
    (MACH_SEND_INVALID_DEST).

    Conditions: nothing locked (set once, at import of the package)."""
    global _kobject_server
    _kobject_server = server


def _kobject_reply(space: IpcSpace, out: ipc_kmsg.Outgoing, reply_name: int, msg_id: int, option: int,
                   timeout_ms: int) -> None:
    """A message to a memory entry's port, served as XNU's
    ipc_kobject_server does: no routine has its id, so the reply (if the
    message has a reply right) is a mig_reply_error_t with MIG_BAD_ID and
    the id plus 100. The message itself is destroyed: the caller consumes
    its moved rights, destroys its receive rights and frees its memory. A
    reply that cannot be delivered is dropped, as the kernel drops it.

    Conditions: nothing locked; the reply right is held by use(); waits as
    send does."""
    if out.reply is None:
        return
    body = NDR_RECORD + struct.pack("<i", K.MIG_BAD_ID)
    bits = MD.MACH_MSGH_BITS_SET(0, out.reply_kind, 0, 0)
    record = WIRE.pack(MAGIC, bits, (msg_id + 100) & 0xFFFFFFFF, len(body), 1, 0,
                       FLAG_NOTIFY, 0) + RIGHT.pack(0, 0, 0, 0) + body
    try:
        _transmit(space, out.reply, reply_name, [record], (), option, timeout_ms)
    except K.MachError:
        pass


def _transmit(space: IpcSpace, dest: SendCap, dest_name: int, buffers: list[bytes], fds: "list[int] | tuple[()]",
              option: int, timeout_ms: int) -> None:
    """Write one record on the destination's connection, after taking a
    place in its queue (send-once rights never wait, as in XNU).

    Conditions: nothing locked; the destination is held by use(); waits as
    send does. A send that finds the port dead turns the name into a dead
    name (check_dead) without the space's lock."""
    sock = dest.checked_tx()
    flags = _NOSIGNAL
    once = isinstance(dest, SendOnceCap)
    if not once and not dest.take_slot(timeout_ms if option & MD.MACH_SEND_TIMEOUT else None):
        raise K.MachError(K.MACH_SEND_TIMED_OUT, "the queue is full")
    if option & MD.MACH_SEND_TIMEOUT:
        flags |= _DONTWAIT
        if timeout_ms:
            unix.wait_writable(sock.fileno(), timeout_ms)  # (mach_msg's timeout reaches 2**32 - 1 ms)
    try:
        sock.sendmsg(buffers, [(_SOL_SOCKET, _SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else (),
                     flags)
    except OSError as err:
        if not once:
            dest.give_slot()
        kr = _SEND_ERRNO.get(err.errno or 0, K.MACH_SEND_INVALID_DEST)
        if kr == K.MACH_SEND_INVALID_DEST:
            e = space.lookup(dest_name)
            if e is not None:
                R.check_dead(space, dest_name, e)
        raise K.MachError(kr, "sendmsg") from err
    if isinstance(dest, ReplyCap):
        dest.spent = True


def receive(space: IpcSpace, rcv_name: int, rcv_size: int, option: int, timeout_ms: int, addr: int = 0) -> bytes:
    """Receive one message into at most ``rcv_size`` bytes, trailer
    included. MACH_RCV_* codes as XNU gives them; TooLarge carries the size
    needed (with MACH_RCV_LARGE the message stays queued). ``addr`` is the
    receive buffer's address: the guard of a guarded port descriptor
    received with MACH_MSG_GUARD_FLAGS_IMMOVABLE_RECEIVE.

    Conditions: nothing locked. Takes the port's receive lock (Port.dequeue)
    or, for a set, the set's lock for moments and each member's receive lock
    _TURN seconds at a time; then as ipc_kmsg.copyout."""
    e = space.lookup(rcv_name)
    if e is None or not e.type & (MACH_PORT_TYPE_RECEIVE | MACH_PORT_TYPE_PORT_SET):
        raise K.MachError(K.MACH_RCV_INVALID_NAME, f"{rcv_name:#x}")
    elements, tsize = 0, 8
    if option >> 24:
        if option >> 28:  # MACH_RCV_TRAILER_TYPE: only format 0 exists
            raise K.MachError(K.MACH_RCV_INVALID_TRAILER, "unknown trailer format")
        elements = (option >> 24) & 0xF
        tsize = _TRAILER_SIZE.get(elements, 0)
        if not tsize:
            raise K.MachError(K.MACH_RCV_INVALID_TRAILER, f"trailer elements {elements}")
    timeout = timeout_ms / 1000.0 if option & MD.MACH_RCV_TIMEOUT else None
    obj = e.object
    if type(obj) is Port:
        port, name = obj, rcv_name
        rec = port.dequeue(timeout)
    else:
        assert isinstance(obj, PortSet)
        rec, port, name = _dequeue_set(space, obj, timeout)
    if rec is None:
        raise K.MachError(K.MACH_RCV_TIMED_OUT, "no message")
    if rec.error:
        # taken off its connection cut short: its fds are already closed
        raise K.MachError(rec.error, "the message's rights did not fit in the space" if
                          rec.error & K.MACH_MSG_IPC_SPACE else "the record was cut short")
    cred = rec.cred
    if cred is None:
        # the kernel attaches SCM_CREDENTIALS to every record on a receiving
        # end with SO_PASSCRED. A record without them came on a connection
        # whose maker turned that off (a JOIN or UPGRADE end it made): its
        # sender is unknown, and must never read as the kernel's
        rec.release()
        raise K.MachError(K.MACH_RCV_HEADER_ERROR, "a record without the sender's credentials")
    if len(rec.data) > _FLAGS_AT and rec.data[_FLAGS_AT] & FLAG_NOTIFY and cred[0] == os.getpid():
        cred = None  # made by our own runtime, as the kernel: KERNEL_SECURITY_TOKEN
    simple = ipc_kmsg.copyout_simple(space, rec, name, rcv_size - tsize)
    if simple is not None:
        return simple + _trailer(elements, tsize, port.seqno - 1, cred, port.context)
    try:
        _bits, _id, _rights, _arrays, body = ipc_kmsg.validate(rec)
    except K.MachError:
        rec.release()
        raise
    needed = ipc_kmsg.HEADER_SIZE + len(body) + tsize
    if needed > rcv_size:
        err = TooLarge(K.MACH_RCV_TOO_LARGE, f"the message needs {needed} bytes")
        err.needed = needed - tsize
        if option & MD.MACH_RCV_LARGE:
            port.put_back(rec)  # still queued: no sequence number consumed
        else:
            try:
                err.msg, _bits = ipc_kmsg.copyout(space, rec, name, port.seqno, option, addr)
            except K.MachError:
                pass  # copyout closed everything: nothing is left to destroy
        raise err
    msg, _bits = ipc_kmsg.copyout(space, rec, name, port.seqno, option, addr)
    return msg + _trailer(elements, tsize, port.seqno - 1, cred, port.context)


# A receive on a port set does not wait for the turn of a member port that
# another thread sleeps on directly: that thread takes the message that
# woke us, and may sleep on the member again, keeping its turn. How often
# it looks whether the holder sleeps (s).
_TURN = 0.05


def _dequeue_set(space: IpcSpace, pset: PortSet, timeout: float | None):  # type: ignore[no-untyped-def]
    """Conditions: nothing locked; brackets the receive with the set's enter()
    and leave() (the set's lock for a moment each)."""
    pset.enter()
    try:
        return _dequeue_set_locked(space, pset, timeout)
    finally:
        pset.leave()


def _dequeue_set_locked(space: IpcSpace, pset: PortSet, timeout: float | None):  # type: ignore[no-untyped-def]
    """Conditions: nothing locked: it runs between the set's enter() and
    leave(), a count of waiters, not a lock; takes the set's lock for moments
    and each member's receive lock (_dequeue_member)."""
    import time
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if pset.destroyed:
            raise K.MachError(K.MACH_RCV_PORT_CHANGED, "the port set was destroyed")
        # members whose queue holds messages that their epoll set does not
        # show (put back after MACH_RCV_TOO_LARGE, drained by the watcher)
        kicked = pset.take_kicked() if pset.kicked else None
        if kicked is not None:
            rec = _dequeue_member(kicked)
            if rec is not None:
                return rec, kicked, space.name_of(kicked)
            continue
        left = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        events = pset.ep.poll(min(left, epoll.MAX_WAIT))  # an int of ms: a longer wait is taken in parts
        if pset.destroyed:
            raise K.MachError(K.MACH_RCV_PORT_CHANGED, "the port set was destroyed")
        for fd, _ev in events:
            if fd == pset.wake:
                pset.clear_wake()  # a kick: looked at above
                continue
            port = pset.members.get(fd)
            if port is None:
                continue  # left the set meanwhile: its messages are not the set's
            rec = _dequeue_member(port)
            if rec is not None:
                return rec, port, space.name_of(port)
        if deadline is not None and time.monotonic() >= deadline:
            return None, None, 0


def _dequeue_member(port: Port) -> Incoming | None:
    """A message of a member port, without waiting; None when it has none
    (or was destroyed or moved away meanwhile: the set lives on).

    Conditions: nothing locked; takes the member's receive lock, waiting for
    it _TURN seconds at a time (Port.dequeue)."""
    try:
        return port.dequeue(0, _TURN)
    except K.MachError as err:
        if err.kr != K.MACH_RCV_PORT_CHANGED:
            raise
        return None


_TRAILER_0 = struct.pack("<II", MD.MACH_MSG_TRAILER_FORMAT_0, 8)


def _trailer(elements: int, size: int, seqno: int, cred: tuple[int, int, int] | None,
             context: int = 0) -> bytes:
    # format 0: type, size, seqno, security token {euid, egid}, audit token
    # {auid, euid, egid, ruid, rgid, pid, asid, pidversion}, context, ad, labels.
    # cred None is the kernel: KERNEL_SECURITY_TOKEN {0, 1}, audit all zero.
    if size == 8:
        return _TRAILER_0
    if cred is None:
        full = struct.pack("<III2I8IQii", MD.MACH_MSG_TRAILER_FORMAT_0, size, seqno, 0, 1,
                           0, 0, 0, 0, 0, 0, 0, 0, context, 0, 0)
    else:
        pid, uid, gid = cred
        full = struct.pack("<III2I8IQii", MD.MACH_MSG_TRAILER_FORMAT_0, size, seqno, uid, gid,
                           uid, uid, gid, uid, gid, pid, 0, 0, context, 0, 0)
    return struct.pack("<II", MD.MACH_MSG_TRAILER_FORMAT_0, size) + full[8:size]
