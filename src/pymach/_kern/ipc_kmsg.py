"""Messages: copyin of a user message into a wire record (bytes and fds),
and copyout of a received record into a user message, as XNU's ipc_kmsg.c.

The wire record, little-endian::

    WireHeader  magic, bits (as the receiver will see them), id, body
                length, number of rights, number of fds, flags
    RightRec[]  kind (MACH_MSG_TYPE_PORT_SEND / _SEND_ONCE / OOL memory),
                fd count, size: one per right or region; entry 0 is the
                reply right (kind 0 when there is none)
    body        the user's bytes after the header, with every port name
                replaced by its right's index and every out-of-line address
                by its region's index

Every record is untrusted: copyout checks each count, index and size
against the bytes and fds that actually arrived, and on any failure closes
every fd of the record before it reports the error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterator

from .._linux import eventfd, files, memfd, mm, pidfd, unix
from . import kern_return as K
from . import message_defs as MD
from . import vm_defs as V
from . import ipc_right as R
from . import ipc_wire
from .ipc_port import Incoming, Port, ReplyCap, SendCap, SendOnceCap, done, use
from .ipc_wire import (FLAG_BLOB, FLAG_CARRIER, FLAG_REPLY, FLAGS_AT as _FLAGS_AT, KIND_BACK, KIND_BLOB,  # noqa: F401
                       KIND_ENTRY, KIND_HOST, KIND_NONE, KIND_OOL, KIND_SEMAPHORE, KIND_TASK, KIND_THREAD, MAGIC,
                       MAX_RECORD)
from .vm_memory_entry import MemoryEntry, check_entry
from .sync_sema import Semaphore, check_wire as check_semaphore
from .ipc_space import (MACH_PORT_RIGHT_RECEIVE, MACH_PORT_TYPE_DEAD_NAME, MACH_PORT_TYPE_RECEIVE,
                         MACH_PORT_TYPE_SEND, MACH_PORT_TYPE_SEND_ONCE, IpcEntry, IpcSpace)
from .task import SELF, TASK_FLAVOR_MAX, Host, Task, Thread
from .clock import CLOCKS, Clock

# Bound by assignment, not by import: CPython compiles NAME.method() of an
# imported NAME as an attribute load (it takes NAME for a module), which
# 3.11 cannot specialize for a method, so each call would make a bound
# method and free it (tests/test_hot_path.py).
HDR, OOL_DESC, PORT_DESC, GUARDED_DESC = MD.HDR, MD.OOL_DESC, MD.PORT_DESC, MD.GUARDED_DESC
RIGHT, WIRE = ipc_wire.RIGHT, ipc_wire.WIRE

# the most fds and rights one message may carry: what a record's right
# table can describe, and a bound the receiver's fd limit checks anyway
MAX_RIGHTS = (MAX_RECORD - 8 * 4) // 24
MAX_MSG_FDS = 1 << 16
# XNU's IPC_KMSG_MAX_BODY_SPACE: the largest message mach_msg accepts
MAX_SEND_SIZE = 3 * (64 << 20) // 4 - 68
HEADER_SIZE = HDR.size
HDR3 = struct.Struct("<III")  # bits, size and destination
# fds a right may carry: a send right is its connection and the port's
# queue semaphore; a receive right is every connection of the port
_MAX_FDS = {MD.MACH_MSG_TYPE_PORT_SEND: 2, MD.MACH_MSG_TYPE_PORT_SEND_ONCE: 1, KIND_OOL: 1,
            MD.MACH_MSG_TYPE_PORT_RECEIVE: 1 << 16, KIND_NONE: 0, KIND_BLOB: 1, KIND_BACK: 0, KIND_ENTRY: 2,
            KIND_TASK: 1, KIND_THREAD: 1, KIND_HOST: 0, KIND_SEMAPHORE: 3}
_SEND_DISP_MIN = MD.MACH_MSG_TYPE_MOVE_SEND
_SEND_DISP_MAX = MD.MACH_MSG_TYPE_MAKE_SEND_ONCE

# a checked record: bits, id, right table, port arrays, body
Parsed = tuple[int, int, list[tuple[int, int, int, int]], "bytes | bytearray", "bytes | bytearray"]

# out-of-line memory is sealed against writes and resizing, for good
_SEALS = memfd.F_SEAL_SEAL | memfd.F_SEAL_SHRINK | memfd.F_SEAL_GROW | memfd.F_SEAL_WRITE


def _err(kr: int, what: str) -> K.MachError:
    return K.MachError(kr, what)


@dataclass
class Outgoing:
    """A message copied in: the record to send, and what to do after."""

    buffers: list[bytes]
    fds: list[int]
    owned: list[SendCap | int] = field(default_factory=list)  # closed after the send
    moves: list[tuple[int, int]] = field(default_factory=list)  # (name, disposition) consumed on success
    dealloc: list[tuple[int, int]] = field(default_factory=list)  # OOL regions to deallocate
    dest: SendCap | None = None  # None with ``kobject``
    token: int = 0  # a back-channel reply right's token, withdrawn if the send fails
    dest_name: int = 0
    dest_disposition: int = 0
    receives: list[tuple[int, object]] = field(default_factory=list)  # (name, Port) moved out
    arrays: list[bytes] = field(default_factory=list)  # out-of-line port arrays, in body order
    kobject: object = None  # a kernel object's port as the destination (no ``dest``)
    reply: SendCap | None = None  # with ``kobject``: the reply right, to answer on
    reply_kind: int = 0
    used: list[SendCap] = field(default_factory=list)  # kept open until the send is over (use/done)
    ool: list[int] = field(default_factory=list)  # the memfd of each out-of-line region, in body order

    def release(self) -> None:
        """Close what the message owned; let the rights it used go.

        Conditions: nothing locked; takes the use lock."""
        used, self.used = self.used, []
        for cap in used:
            done(cap)
        for o in self.owned:
            if isinstance(o, SendCap):
                o.close()
            else:
                files.close(o)
        self.owned.clear()

    def unmove(self) -> None:
        """The message is not sent: the receive rights it was to carry keep
        their queues (Port.move_failed).

        Conditions: nothing locked; as Port.move_failed."""
        for _name, port in self.receives:
            port.move_failed()  # type: ignore[attr-defined]


def _descriptor_size(dtype: int) -> int:
    return 12 if dtype == MD.MACH_MSG_PORT_DESCRIPTOR else 16


def copyin(space: IpcSpace, msg: bytes) -> Outgoing:
    """Turn a user message into a wire record. Raises MachError with the
    MACH_SEND_* code XNU gives for the same input; on failure nothing is
    consumed and every fd made for the record is closed.

    Conditions: nothing locked. Takes, one at a time: the use lock, the
    channel lock (and under it the reply port's lock), a port's lock
    (MAKE_SEND, MAKE_SEND_ONCE, MOVE_RECEIVE; the watcher's lock under it),
    the map's lock (out-of-line memory); the space's lock only to connect
    the bootstrap port (waiting up to about 50 s). Reads entries, and turns
    a dead right into a dead name, without the space's lock. The rights it
    uses stay held (use) until Outgoing.release."""
    size = len(msg)
    if size < HEADER_SIZE or size % 4:
        raise _err(K.MACH_SEND_MSG_TOO_SMALL, f"{size} bytes")
    bits, msize, remote, local, voucher, msg_id = HDR.unpack_from(msg)
    bits &= MD.MACH_MSGH_BITS_USER  # XNU masks the other bits off silently
    rdisp = MD.MACH_MSGH_BITS_REMOTE(bits)
    ldisp = MD.MACH_MSGH_BITS_LOCAL(bits)
    if bits & MD.MACH_MSGH_BITS_COMPLEX:
        count = struct.unpack_from("<I", msg, HEADER_SIZE)[0] if size >= HEADER_SIZE + 4 else None
        if count is None or count > (size - HEADER_SIZE - 4) // 12:
            raise _err(K.MACH_SEND_MSG_TOO_SMALL, "descriptor count exceeds the message")
    if (ldisp == 0 and local) or (ldisp and not _SEND_DISP_MIN <= ldisp <= _SEND_DISP_MAX):
        raise _err(K.MACH_SEND_INVALID_HEADER, f"reply disposition {ldisp}")
    if not _SEND_DISP_MIN <= rdisp <= _SEND_DISP_MAX:
        raise _err(K.MACH_SEND_INVALID_HEADER, f"destination disposition {rdisp}")
    if remote in (0, 0xFFFFFFFF):
        raise _err(K.MACH_SEND_INVALID_DEST, "null destination")
    if remote == local and MD.MACH_MSG_TYPE_MOVE_SEND_ONCE in (rdisp, ldisp):
        raise _err(K.MACH_SEND_INVALID_DEST, "destination and reply share a send-once right")
    out = Outgoing([], [])
    try:
        kobject = _kobject(space, remote, rdisp)
        if kobject is not None:
            # a memory entry's port: the kernel serves the message
            cap, dest_kind, owned = None, MD.MACH_MSG_TYPE_PORT_SEND, False
            out.kobject = kobject
        else:
            try:
                cap, dest_kind, owned = R.copyin_send(space, remote, rdisp, check=False)
            except K.MachError as e:
                raise _err(K.MACH_SEND_INVALID_DEST, e.context or "") from None
            if not use(cap):
                # closed under us by the watcher: the port died
                raise _err(K.MACH_SEND_INVALID_DEST, f"{remote:#x}: the port died")
            out.used.append(cap)
        if owned:
            out.owned.append(cap)  # type: ignore[arg-type]
        out.dest, out.dest_name, out.dest_disposition = cap, remote, rdisp
        if rdisp in (MD.MACH_MSG_TYPE_MOVE_SEND, MD.MACH_MSG_TYPE_MOVE_SEND_ONCE):
            out.moves.append((remote, rdisp))
        rights: list[tuple[int, int, int, int]] = [(KIND_NONE, 0, 0, 0)]
        reply_kind = 0
        flags = FLAG_REPLY | cap.token << 8 if isinstance(cap, ReplyCap) else 0
        if local:
            port = _reply_port(space, local) if ldisp == MD.MACH_MSG_TYPE_MAKE_SEND_ONCE and not owned \
                and type(cap) is SendCap else None
            token = cap.back_reply(port) if port is not None and cap is not None else None
            if token is not None:
                out.token = token
                reply_kind = MD.MACH_MSG_TYPE_PORT_SEND_ONCE
                rights[0] = (KIND_BACK, 0, 0, token)
            else:
                reply_kind, nfds = _take_send(space, local, ldisp, out, K.MACH_SEND_INVALID_REPLY,
                                              keep=kobject is not None)
                rights[0] = (reply_kind, nfds, 0, 0)
                out.reply_kind = reply_kind
        body = bytearray(msg[HEADER_SIZE:])
        if bits & MD.MACH_MSGH_BITS_COMPLEX:
            _copyin_body(space, body, rights, out)
        wbits = MD.MACH_MSGH_BITS_SET(reply_kind, dest_kind, 0, bits & MD.MACH_MSGH_BITS_COMPLEX)
        if WIRE.size + RIGHT.size * len(rights) + sum(len(a) for a in out.arrays) + len(body) > MAX_RECORD:
            # larger than a record: the body travels in a sealed memfd
            if size > MAX_SEND_SIZE:
                raise _err(K.MACH_SEND_TOO_LARGE, f"{size} bytes")
            fd = _sealed_memfd(bytes(body))
            out.owned.append(fd)
            out.fds.append(fd)
            rights.append((KIND_BLOB, 1, len(body), 0))
            body, flags = bytearray(), flags | FLAG_BLOB
        nfds = len(out.fds)
        if nfds > MAX_MSG_FDS or len(rights) > MAX_RIGHTS:
            raise _err(K.MACH_SEND_TOO_LARGE, f"{len(rights)} rights in {nfds} fds")
        if nfds > unix.SCM_MAX_FD:
            # more than one record's worth: the rest goes in a carrier
            carrier = unix.carry(out.fds[unix.SCM_MAX_FD - 1:])
            out.owned.append(carrier)
            out.fds = out.fds[:unix.SCM_MAX_FD - 1] + [carrier]
            flags |= FLAG_CARRIER
        arrays = b"".join(out.arrays)
        head = WIRE.pack(MAGIC, wbits, msg_id, len(body), len(rights), nfds, flags, len(arrays))
        table = b"".join(RIGHT.pack(*r) for r in rights)
        out.buffers = [head, table, arrays, bytes(body)]
        return out
    except BaseException:
        out.unmove()
        out.release()
        raise


_SIMPLE_MAX = MAX_RECORD - WIRE.size - RIGHT.size
_NO_RIGHT = RIGHT.pack(KIND_NONE, 0, 0, 0)


def copyin_simple(space: IpcSpace, msg: bytes) -> tuple[SendCap, bytes, int] | None:
    """The common message, copied in without the general walk: no
    descriptors, a COPY_SEND or MOVE_SEND_ONCE destination, and either no
    reply right or a MAKE_SEND_ONCE of a port of ours that the
    destination's channel answers. Returns (destination, record, token of
    the back-channel reply right or 0), or None: then copyin() decides,
    errors included.

    Conditions: nothing locked; takes the use lock, and the channel lock
    with the reply port's lock under it; reads the entries without the
    space's lock. The destination stays held (use) until done()."""
    if len(msg) > _SIMPLE_MAX + HEADER_SIZE:
        return None
    bits, _size, remote, local, _voucher, msg_id = HDR.unpack_from(msg)
    if bits & MD.MACH_MSGH_BITS_COMPLEX:
        return None
    e = space.lookup(remote)
    if e is None:
        return None
    cap, rdisp, ldisp = e.cap, bits & 0x1F, (bits >> 8) & 0x1F
    if rdisp == MD.MACH_MSG_TYPE_COPY_SEND and type(cap) is SendCap and e.type & MACH_PORT_TYPE_SEND:
        kind = MD.MACH_MSG_TYPE_PORT_SEND
    elif (rdisp == MD.MACH_MSG_TYPE_MOVE_SEND_ONCE and isinstance(cap, SendOnceCap)
          and e.type & MACH_PORT_TYPE_SEND_ONCE):
        kind = MD.MACH_MSG_TYPE_PORT_SEND_ONCE
    else:
        return None
    if not use(cap):  # closed under us: the port died (copyin() says so)
        return None
    if not local and not ldisp:
        token, right, reply = 0, _NO_RIGHT, 0
    elif ldisp == MD.MACH_MSG_TYPE_MAKE_SEND_ONCE and kind == MD.MACH_MSG_TYPE_PORT_SEND:
        port = _reply_port(space, local)
        back = cap.back_reply(port) if port is not None else None
        if back is None:
            done(cap)
            return None
        token = back
        right, reply = RIGHT.pack(KIND_BACK, 0, 0, token), MD.MACH_MSG_TYPE_PORT_SEND_ONCE
    else:
        done(cap)
        return None
    flags = FLAG_REPLY | cap.token << 8 if type(cap) is ReplyCap else 0
    body = msg[HEADER_SIZE:]
    return cap, WIRE.pack(MAGIC, reply | kind << 8, msg_id, len(body), 1, 0, flags, 0) + right + body, token


def _descriptors(body: bytearray, kr: int, what: str) -> Iterator[tuple[int, int]]:
    """(offset, type) of each descriptor of a complex body, with the count
    and every descriptor's extent checked against the body (``kr`` if not):
    a port descriptor is 12 bytes, the others 16."""
    if len(body) < 4:
        raise _err(kr, f"a complex {what} without a body")
    (count,) = struct.unpack_from("<I", body)
    off = 4
    for _ in range(count):
        if off + 12 > len(body):
            raise _err(kr, f"descriptors run past the {what}")
        dtype = body[off + 11]
        size = 12 if dtype == MD.MACH_MSG_PORT_DESCRIPTOR else 16
        if off + size > len(body):
            raise _err(kr, f"descriptors run past the {what}")
        yield off, dtype
        off += size


def _copyin_body(space: IpcSpace, body: bytearray, rights: list[tuple[int, int, int, int]], out: Outgoing) -> None:
    """Conditions: nothing locked (as copyin)."""
    for off, dtype in _descriptors(body, K.MACH_SEND_MSG_TOO_SMALL, "message"):
        if dtype == MD.MACH_MSG_PORT_DESCRIPTOR:
            name, _pad, _p0, _p1, disp, _t = PORT_DESC.unpack_from(body, off)
            idx, kind = _copyin_port(space, name, disp, rights, out)
            PORT_DESC.pack_into(body, off, idx, 0, 0, 0, kind, dtype)
        elif dtype == MD.MACH_MSG_OOL_PORTS_DESCRIPTOR:
            addr, dealloc, copy, disp, _t, count = OOL_DESC.unpack_from(body, off)
            if copy not in (MD.MACH_MSG_PHYSICAL_COPY, MD.MACH_MSG_VIRTUAL_COPY):
                raise _err(K.MACH_SEND_INVALID_TYPE, f"out-of-line copy option {copy}")
            names: tuple[int, ...] = ()
            if count:
                try:
                    raw = SELF.map.copy_out(addr, 4 * count)
                except K.MachError:
                    raise _err(K.MACH_SEND_INVALID_MEMORY, "the name array is unreadable") from None
                names = struct.unpack(f"<{count}I", raw)
                if dealloc:
                    out.dealloc.append((addr, 4 * count))
            first = len(rights)
            slots = [_copyin_port(space, n, disp, rights, out) for n in names]
            # the array travels as (right index, kind) pairs after the body
            out.arrays.append(b"".join(struct.pack("<II", i, k) for i, k in slots))
            OOL_DESC.pack_into(body, off, first, 0, copy, copyin_type(disp), dtype, count)
        elif dtype == MD.MACH_MSG_GUARDED_PORT_DESCRIPTOR:
            context, gflags, disp, _t, name = GUARDED_DESC.unpack_from(body, off)
            # ipc_kmsg_inflate_guarded_port_descriptor: only MOVE_RECEIVE,
            # and flags that make sense together
            if disp != MD.MACH_MSG_TYPE_MOVE_RECEIVE:
                raise _err(K.MACH_SEND_INVALID_TYPE, f"guarded port disposition {disp}")
            if (not gflags or gflags & ~MD.MACH_MSG_GUARD_FLAGS_MASK
                    or (gflags & MD.MACH_MSG_GUARD_FLAGS_UNGUARDED_ON_SEND and context)):
                raise _err(K.MACH_SEND_INVALID_TYPE, f"guard flags {gflags:#x} with context {context:#x}")
            idx = name
            if name not in (0, 0xFFFFFFFF):
                idx, _kind = _copyin_port(space, name, disp, rights, out, (context, gflags))
                gflags |= MD.MACH_MSG_GUARD_FLAGS_UNGUARDED_ON_SEND  # cleared at copyout, as in XNU
            # the sender's guard stays here: the receiver sees its own
            GUARDED_DESC.pack_into(body, off, 0, gflags, MD.MACH_MSG_TYPE_PORT_RECEIVE, dtype, idx)
        elif dtype in (MD.MACH_MSG_OOL_DESCRIPTOR, MD.MACH_MSG_OOL_VOLATILE_DESCRIPTOR):
            addr, dealloc, copy, _pad, _t, size = OOL_DESC.unpack_from(body, off)
            if copy not in (MD.MACH_MSG_PHYSICAL_COPY, MD.MACH_MSG_VIRTUAL_COPY):
                raise _err(K.MACH_SEND_INVALID_TYPE, f"out-of-line copy option {copy}")
            idx = 0
            if size:
                fd = _handoff_memfd(addr, size) if dealloc else None
                if fd is None:
                    try:
                        fd = _ool_memfd(addr, size)
                    except K.MachError as e:
                        raise _err(K.MACH_SEND_INVALID_MEMORY, e.context or "") from None
                    if dealloc:
                        out.dealloc.append((addr, size))
                out.owned.append(fd)
                out.fds.append(fd)
                out.ool.append(fd)
                rights.append((KIND_OOL, 1, size, 0))
                idx = len(rights) - 1
            OOL_DESC.pack_into(body, off, idx, dealloc, copy, 0, dtype, size)
        else:
            raise _err(K.MACH_SEND_INVALID_TYPE, f"descriptor type {dtype}")


def _reply_port(space: IpcSpace, name: int) -> Port | None:
    """The Port behind a reply name that holds our receive right.

    Conditions: nothing locked; reads the entry without the space's lock."""
    e = space.lookup(name)
    if e is None or not e.type & MACH_PORT_TYPE_RECEIVE or not isinstance(e.object, Port) or e.object.destroyed:
        return None
    return e.object


def copyin_type(disp: int) -> int:
    """ipc_object_copyin_type: the kind a disposition becomes in the message."""
    if disp == MD.MACH_MSG_TYPE_MOVE_RECEIVE:
        return MD.MACH_MSG_TYPE_PORT_RECEIVE
    if disp in (MD.MACH_MSG_TYPE_MOVE_SEND_ONCE, MD.MACH_MSG_TYPE_MAKE_SEND_ONCE):
        return MD.MACH_MSG_TYPE_PORT_SEND_ONCE
    if disp in (MD.MACH_MSG_TYPE_MOVE_SEND, MD.MACH_MSG_TYPE_MAKE_SEND, MD.MACH_MSG_TYPE_COPY_SEND):
        return MD.MACH_MSG_TYPE_PORT_SEND
    return disp


def _check_guard(port: Port, name: int, context: int, gflags: int) -> None:
    """ipc_right_copyin_check_guard_locked: a guarded descriptor names an
    unguarded port with UNGUARDED_ON_SEND and no context, or a guarded one
    with its guard. MACH_SEND_INVALID_RIGHT otherwise (XNU also raises
    EXC_GUARD kGUARD_EXC_INCORRECT_GUARD).

    Conditions: nothing locked (the port's guard is read as it stands)."""
    if gflags & MD.MACH_MSG_GUARD_FLAGS_UNGUARDED_ON_SEND and not port.guarded and not context:
        return
    if port.guarded and port.context == context:
        return
    raise _err(K.MACH_SEND_INVALID_RIGHT, f"{name:#x}: the guard does not match")


def _copyin_port(space: IpcSpace, name: int, disp: int, rights: list[tuple[int, int, int, int]],
                 out: Outgoing, guard: tuple[int, int] | None = None) -> tuple[int, int]:
    """Copy in one right named in the body: (right index or a dead/null
    marker, received kind). ``guard``: (context, flags) of a guarded port
    descriptor. MACH_SEND_INVALID_RIGHT on any failure.

    Conditions: nothing locked (as copyin)."""
    if not MD.MACH_MSG_TYPE_MOVE_RECEIVE <= disp <= _SEND_DISP_MAX:
        raise _err(K.MACH_SEND_INVALID_RIGHT, f"port disposition {disp}")
    if name in (0, 0xFFFFFFFF):
        # no right travels, but the receiver sees the kind, as XNU writes it
        return name, copyin_type(disp)
    R.upgrade_reply(space, name, disp)
    if disp == MD.MACH_MSG_TYPE_MOVE_RECEIVE:
        port = R.copyin_receive(space, name, out.dest)
        if guard is not None:
            _check_guard(port, name, *guard)
        fds, packing, aux = port.pack_for_move()
        out.receives.append((name, port))
        rights.append((MD.MACH_MSG_TYPE_PORT_RECEIVE, len(fds), packing, aux))
        out.fds.extend(fds)
        return len(rights) - 1, MD.MACH_MSG_TYPE_PORT_RECEIVE
    e = space.lookup(name)
    if (e is not None and e.type & MACH_PORT_TYPE_SEND and not isinstance(e.cap, SendCap)
            and disp in (MD.MACH_MSG_TYPE_COPY_SEND, MD.MACH_MSG_TYPE_MOVE_SEND)):
        # a kernel object's port. A task whose process exited is dead by
        # now (kern.task), and travels as a dead name does, below
        R.check_dead(space, name, e)
        if e.type & MACH_PORT_TYPE_SEND:
            return _copyin_kobject(name, e, disp, rights, out)
    if e is not None and e.type & MACH_PORT_TYPE_DEAD_NAME and disp in (
            MD.MACH_MSG_TYPE_COPY_SEND, MD.MACH_MSG_TYPE_MOVE_SEND, MD.MACH_MSG_TYPE_MOVE_SEND_ONCE):
        # a dead name travels as MACH_PORT_DEAD
        if disp != MD.MACH_MSG_TYPE_COPY_SEND:
            out.moves.append((name, MD.MACH_MSG_TYPE_MOVE_SEND))
        return 0xFFFFFFFF, MD.MACH_MSG_TYPE_PORT_SEND
    kind, nfds = _take_send(space, name, disp, out, K.MACH_SEND_INVALID_RIGHT)
    rights.append((kind, nfds, 0, 0))
    return len(rights) - 1, kind


def _copyin_kobject(name: int, e: IpcEntry, disp: int, rights: list[tuple[int, int, int, int]],
                    out: Outgoing) -> tuple[int, int]:
    """Copy in a send right (COPY_SEND or MOVE_SEND) to a kernel object:
    a memory entry travels as its memfd (KIND_ENTRY), a task as a pidfd
    of its process and the port's flavor (KIND_TASK), a thread as that
    pidfd and its tid (KIND_THREAD), the host or one of its clocks as
    itself (KIND_HOST, its size saying which), a semaphore as its three
    fds (KIND_SEMAPHORE). The
    pidfd is ours to close after the send: a duplicate, or for our own
    task a pidfd of our own process made now. MACH_SEND_INVALID_RIGHT for
    any other object.

    Conditions: nothing locked (as copyin); reads the entry without the
    space's lock."""
    obj = e.object
    if isinstance(e.cap, MemoryEntry):
        fds = e.cap.wire_fds()  # the memfd, and a copy entry's parts if it has several
        out.fds.extend(fds)
        rights.append((KIND_ENTRY, len(fds), *e.cap.wire()))
    elif isinstance(obj, Task):
        fd = pidfd.open_pid(obj.pid) if obj.map is not None else files.dup(obj.pidfd)
        out.owned.append(fd)
        out.fds.append(fd)
        if isinstance(obj, Thread):
            rights.append((KIND_THREAD, 1, obj.tid, obj.flavor))
        else:
            rights.append((KIND_TASK, 1, 0, obj.flavor))
    elif isinstance(obj, Host):
        rights.append((KIND_HOST, 0, 0, 0))
    elif isinstance(obj, Clock):
        rights.append((KIND_HOST, 0, 1 + obj.id, 0))  # a service of the host: size says which clock
    elif isinstance(e.cap, Semaphore):
        fds = e.cap.wire_fds()  # shared by every holder: the same count, waiters and state
        out.fds.extend(fds)
        rights.append((KIND_SEMAPHORE, len(fds), 0, 0))
    else:
        raise _err(K.MACH_SEND_INVALID_RIGHT, f"{name:#x} names a kernel object that cannot travel")
    if disp == MD.MACH_MSG_TYPE_MOVE_SEND:
        out.moves.append((name, disp))
    return len(rights) - 1, MD.MACH_MSG_TYPE_PORT_SEND


def names_kobject(space: IpcSpace, msg: bytes) -> bool:
    """Whether the message's destination is a send right (COPY_SEND or
    MOVE_SEND) to a kernel object: a task or thread port, the host port, a clock,
    a memory entry. Such a message goes to the kernel's MIG servers
    (mach_msg.set_kobject_server).

    Conditions: nothing locked; reads the entry without the space's lock."""
    if len(msg) < HEADER_SIZE:
        return False
    bits, _size, remote = HDR3.unpack_from(msg)
    return _kobject(space, remote, bits & 0x1F) is not None


def _kobject(space: IpcSpace, name: int, disp: int) -> object:
    """The kernel object a destination names with COPY_SEND or MOVE_SEND,
    if it is one (a memory entry, a task, thread, host or clock port: a port
    whose receive right the kernel holds), else None.

    Conditions: nothing locked; reads the entry without the space's lock."""
    if disp not in (MD.MACH_MSG_TYPE_COPY_SEND, MD.MACH_MSG_TYPE_MOVE_SEND):
        return None
    e = space.lookup(name)
    if e is None or not e.type & MACH_PORT_TYPE_SEND:
        return None
    obj = e.cap if e.cap is not None else e.object
    return obj if isinstance(obj, (MemoryEntry, Task, Host, Clock, Semaphore)) else None


def _take_send(space: IpcSpace, name: int, disp: int, out: Outgoing, kr: int,
               keep: bool = False) -> tuple[int, int]:
    """Copy in a send or send-once right that the message carries: its fds
    join the record, a right made for it is closed after the send, and a
    moved right is consumed once the send succeeds. Returns (received kind,
    fd count); ``kr`` when the name lacks the right. With ``keep`` the
    capability is also kept as ``out.reply``.

    Conditions: nothing locked (as copyin)."""
    R.upgrade_reply(space, name, disp)
    try:
        cap, kind, owned = R.copyin_send(space, name, disp)
    except K.MachError as err:
        raise _err(kr, err.context or "") from None
    # its fds travel by number at the send: keep them open until then
    if not use(cap):
        raise _err(kr, f"{name:#x}: the port died")
    out.used.append(cap)
    if keep:
        out.reply = cap
    if owned:
        out.owned.append(cap)
    if disp in (MD.MACH_MSG_TYPE_MOVE_SEND, MD.MACH_MSG_TYPE_MOVE_SEND_ONCE):
        out.moves.append((name, disp))
    fds = cap.wire_fds()
    out.fds.extend(fds)
    return kind, len(fds)


def _handoff_memfd(addr: int, size: int) -> int | None:
    """Zero-copy out-of-line data: memory backed by a whole memfd and sent
    with deallocate leaves our map, and the memfd itself travels, sealed.
    Sealing fails (EBUSY) while another task maps it writable; then its
    bytes are copied into a fresh memfd instead. None if not applicable.

    Conditions: nothing locked; takes the map's lock (hand_off)."""
    fd = SELF.map.hand_off(addr, size)
    if fd is None:
        return None
    try:
        memfd.add_seals(fd, _SEALS)
        return fd
    except OSError:
        pass
    try:
        copy = mm.memfd("mach.ool", 0)
        try:
            mm.copy_range(fd, copy, size)
            memfd.add_seals(copy, _SEALS)
        except BaseException:
            files.close(copy)
            raise
        return copy
    finally:
        files.close(fd)


def _ool_memfd(addr: int, size: int) -> int:
    """Out-of-line data as a memfd sealed against writes and resizing: the
    receiver maps it MAP_PRIVATE, a copy-on-write virtual copy.

    Conditions: nothing locked; checks the range under the map's lock, then
    copies with nothing locked (the kernel checks the copy again)."""
    with SELF.map.lock:
        SELF.map.check_range(addr & ~mm.PAGE_MASK, (addr + size + mm.PAGE_MASK) & ~mm.PAGE_MASK,
                             V.VM_PROT_READ)
    # the kernel copies straight from our pages into the memfd
    return _sealed_memfd(mm.view(addr, size))


def _sealed_memfd(data: bytes | memoryview) -> int:
    return memfd.filled("mach.ool", data, _SEALS)


# -- copyout -------------------------------------------------------------------

def validate(rec: Incoming) -> Parsed:
    """Check a record against what arrived: (bits, id, rights, port
    arrays, body).
    MACH_RCV_HEADER_ERROR / MACH_RCV_BODY_ERROR for a malformed record."""
    if rec.parsed is None:
        rec.parsed = _validate(rec)
    return rec.parsed


def _validate(rec: Incoming) -> Parsed:
    if rec.error:
        raise _err(rec.error, "the record was cut short")
    data = rec.data
    if len(data) < WIRE.size:
        raise _err(K.MACH_RCV_HEADER_ERROR, "record shorter than its header")
    magic, bits, msg_id, blen, nrights, nfds, flags, alen = WIRE.unpack_from(data)
    if magic != MAGIC or bits & ~(MD.MACH_MSGH_BITS_PORTS_MASK | MD.MACH_MSGH_BITS_COMPLEX):
        raise _err(K.MACH_RCV_HEADER_ERROR, "not a message record")
    if flags & FLAG_CARRIER:
        uncarry(rec, nfds)
    if nfds != len(rec.fds) or nrights < 1 or nrights > MAX_RIGHTS:
        raise _err(K.MACH_RCV_BODY_ERROR, "rights do not match the fds that arrived")
    tend = WIRE.size + nrights * RIGHT.size
    if tend + alen + blen != len(data) or blen % 4 or alen % 8:
        raise _err(K.MACH_RCV_BODY_ERROR, "lengths do not match the bytes that arrived")
    rights = [RIGHT.unpack_from(data, WIRE.size + i * RIGHT.size) for i in range(nrights)]
    total, extra = 0, False  # extra: a body memfd, or a back-channel right past the header
    for i, (kind, n, _size, _aux) in enumerate(rights):
        if n > _MAX_FDS.get(kind, 0) or (kind == MD.MACH_MSG_TYPE_PORT_RECEIVE and not n):
            # (a receive right carries at least its queue semaphore)
            raise _err(K.MACH_RCV_BODY_ERROR, "fd counts do not add up")
        total += n
        extra = extra or kind == KIND_BLOB or (kind == KIND_BACK and i > 0)
    if total != nfds:
        raise _err(K.MACH_RCV_BODY_ERROR, "fd counts do not add up")
    if not extra and not flags & FLAG_BLOB:
        return bits, msg_id, rights, data[tend:tend + alen], data[tend + alen:]
    if flags & FLAG_BLOB:
        last = rights[-1]
        if blen or last[0] != KIND_BLOB or last[1] != 1 or last[2] % 4 or last[2] > MAX_SEND_SIZE:
            raise _err(K.MACH_RCV_BODY_ERROR, "a body memfd that does not match its record")
        _check_ool(rec.fds[-1], last[2])
        body = memfd.read(rec.fds[-1], last[2])
        if len(body) != last[2]:
            raise _err(K.MACH_RCV_BODY_ERROR, "the body memfd is short")
        return bits, msg_id, rights[:-1], data[tend:tend + alen], body
    if any(r[0] == KIND_BLOB for r in rights):
        raise _err(K.MACH_RCV_BODY_ERROR, "a body memfd in a record that has its body")
    if any(r[0] == KIND_BACK for r in rights[1:]):
        raise _err(K.MACH_RCV_BODY_ERROR, "a back-channel right outside the header")
    return bits, msg_id, rights, data[tend:tend + alen], data[tend + alen:]


def uncarry(rec: Incoming, nfds: int) -> None:
    """Take the fds of a record's carrier (its last fd) into the record,
    once, and mark the record as carrying them itself.
    MACH_RCV_BODY_ERROR for a carrier that does not hold what the record
    says; MACH_RCV_BODY_ERROR | MACH_MSG_IPC_SPACE when they do not fit
    (RLIMIT_NOFILE)."""
    if not rec.fds or nfds <= len(rec.fds) - 1 or nfds > MAX_MSG_FDS:
        raise _err(K.MACH_RCV_BODY_ERROR, "a carrier that does not match its record")
    carrier = rec.fds.pop()
    try:
        rec.fds.extend(unix.uncarry(carrier, nfds - len(rec.fds)))
    except unix.Truncated as err:
        raise _err(K.MACH_RCV_BODY_ERROR | (K.MACH_MSG_IPC_SPACE if err.fds_lost else 0), str(err)) from None
    except ValueError as err:
        raise _err(K.MACH_RCV_BODY_ERROR, str(err)) from None
    finally:
        files.close(carrier)
    data = bytearray(rec.data)
    struct.pack_into("<I", data, _FLAGS_AT, struct.unpack_from("<I", data, _FLAGS_AT)[0] & ~FLAG_CARRIER)
    rec.data = bytes(data)


def copyout(space: IpcSpace, rec: Incoming, rcv_name: int, seqno: int, option: int = 0,
            rcv_addr: int = 0) -> tuple[bytes, int]:
    """Install the record's rights in ``space`` and build the user message
    (header, body). Returns (message, bits). Closes everything on error.
    ``option`` and ``rcv_addr`` (the receive buffer's address) serve
    guarded port descriptors: without MACH_RCV_GUARDED_DESC their receive
    rights are destroyed, and with MACH_MSG_GUARD_FLAGS_IMMOVABLE_RECEIVE
    the right arrives guarded by the buffer's address and immovable
    (ipc_kmsg_copyout_guarded_port_descriptor, ipc_right_copyout).

    Conditions: nothing locked; takes the space's lock for each right it
    installs, the map's lock (out-of-line memory, port arrays), and for a
    receive right the watcher's lock and the new port's lock
    (Port.from_move)."""
    try:
        bits, msg_id, rights, arrays, body_in = validate(rec)
        if len(rights) == 1 and not rec.fds and not arrays and not bits & MD.MACH_MSGH_BITS_COMPLEX:
            # a simple message: no right but perhaps a back-channel reply right
            kind, _n, _size, aux = rights[0]
            if kind == KIND_NONE:
                return HDR.pack(bits, HEADER_SIZE + len(body_in), 0, rcv_name, 0, msg_id) + body_in, bits
            if kind == KIND_BACK and rec.rconn is not None:
                reply = R.copyout_reply(space, rec.rconn, aux)
                return HDR.pack(bits, HEADER_SIZE + len(body_in), reply, rcv_name, 0, msg_id) + body_in, bits
        fd_of: dict[int, list[int]] = {}
        k = 0
        for i, (kind, n, _size, _aux) in enumerate(rights):
            if n:
                fd_of[i] = rec.fds[k:k + n]
                k += n
        files.close_all(rec.fds[k:])  # a body memfd, already read
        del rec.fds[k:]
        if rights[0][0] == KIND_BACK and rec.rconn is None:
            raise _err(K.MACH_RCV_BODY_ERROR, "a back-channel reply right with no reply connection")
        if rights[0][0] in _KOBJECT_FDS:
            raise _err(K.MACH_RCV_BODY_ERROR, "a kernel object's port as the reply right")
        body = bytearray(body_in)
        if bits & MD.MACH_MSGH_BITS_COMPLEX:
            _check_body(body, rights, arrays)
        elif arrays or len(rights) > 1:
            raise _err(K.MACH_RCV_BODY_ERROR, "rights or port arrays in a simple message")
        pids: dict[int, int] = {}  # the process of each task or thread port's pidfd
        for i, fds in fd_of.items():  # every fd is what its right says, before any is used
            kind, _n, size, _aux = rights[i]
            if kind == MD.MACH_MSG_TYPE_PORT_SEND:
                if len(fds) != 2 or not unix.is_seqpacket(fds[0]) or not eventfd.is_eventfd(fds[1]):
                    raise _err(K.MACH_RCV_BODY_ERROR, "a send right that is not a port connection")
            elif kind == MD.MACH_MSG_TYPE_PORT_RECEIVE:
                if not fds or not eventfd.is_eventfd(fds[0]) or not all(unix.is_seqpacket(fd) for fd in fds[1:]):
                    raise _err(K.MACH_RCV_BODY_ERROR, "a receive right that is not a port's")
                if not Port.check_packing(len(fds), size):
                    raise _err(K.MACH_RCV_BODY_ERROR, "a receive right whose parts do not add up")
            elif kind == MD.MACH_MSG_TYPE_PORT_SEND_ONCE:
                if not unix.is_seqpacket(fds[0]):
                    raise _err(K.MACH_RCV_BODY_ERROR, "a right that is not a port connection")
            elif kind == KIND_OOL:
                _check_ool(fds[0], size)
            elif kind == KIND_ENTRY:
                check_entry(fds, size, _aux)
            elif kind in (KIND_TASK, KIND_THREAD):
                pids[i] = _check_task(fds[0], kind, size, _aux)
            elif kind == KIND_SEMAPHORE:
                check_semaphore(fds)
            else:
                raise _err(K.MACH_RCV_BODY_ERROR, f"unknown right kind {kind}")
    except BaseException:
        rec.release()
        raise
    # from here on every fd is given to the space or closed
    names: dict[int, int] = {}
    regions: dict[int, int] = {}
    ports: dict[int, Port] = {}
    try:
        for i, (kind, n, size, aux) in enumerate(rights):
            if kind == KIND_BACK:
                assert rec.rconn is not None
                names[i] = R.copyout_reply(space, rec.rconn, aux)
                continue
            if kind == KIND_HOST:
                # our own host, as mach_host_self(), or one of its clocks
                names[i] = space.insert(CLOCKS[size - 1] if size else SELF.host, MACH_PORT_TYPE_SEND)
                continue
            if not n and kind != MD.MACH_MSG_TYPE_PORT_RECEIVE:
                continue  # (a receive right with no connection carries no fd)
            fds = fd_of.pop(i, [])
            if kind in (MD.MACH_MSG_TYPE_PORT_SEND, MD.MACH_MSG_TYPE_PORT_SEND_ONCE):
                names[i] = R.copyout_send(space, fds, kind == MD.MACH_MSG_TYPE_PORT_SEND_ONCE)
            elif kind == MD.MACH_MSG_TYPE_PORT_RECEIVE:
                ports[i] = Port.from_move(fds, size, aux)
                names[i] = R.copyout_receive(space, ports[i])
            elif kind == KIND_ENTRY:
                names[i] = R.copyout_entry(space, MemoryEntry.from_wire(fds, size, aux), coalesce=True)
            elif kind in (KIND_TASK, KIND_THREAD):
                names[i] = R.copyout_task(space, fds[0], pids[i], aux, size)
            elif kind == KIND_SEMAPHORE:
                names[i] = R.copyout_entry(space, Semaphore.from_wire(fds), coalesce=True)
            elif kind == KIND_OOL:
                try:
                    regions[i] = _map_ool(fds[0], size)
                finally:
                    files.close(fds[0])
    finally:
        files.close_all([fd for fds in fd_of.values() for fd in fds])
        rec.fds = []
    reply = names.get(0, 0)
    if bits & MD.MACH_MSGH_BITS_COMPLEX:
        _copyout_body(body, names, regions, arrays)
        if ports:
            _copyout_guarded(space, body, names, ports, option, rcv_addr)
    out_bits = bits
    head = HDR.pack(out_bits, HEADER_SIZE + len(body), reply, rcv_name, 0, msg_id)
    return head + body, out_bits


_SIMPLE_BITS = ~MD.MACH_MSGH_BITS_PORTS_MASK & 0xFFFFFFFF


def copyout_simple(space: IpcSpace, rec: Incoming, rcv_name: int, room: int) -> bytes | None:
    """The common record, checked and copied out without the general walk:
    a simple message with no fds and no right but perhaps a back-channel
    reply right, that fits in ``room`` bytes. None: copyout() decides
    (errors and MACH_RCV_TOO_LARGE included).

    Conditions: nothing locked; takes the space's lock for a back-channel
    reply right."""
    data = rec.data
    if rec.fds or len(data) < _SIMPLE_HEAD:
        return None
    magic, bits, msg_id, blen, nrights, nfds, flags, alen = WIRE.unpack_from(data)
    if (magic != MAGIC or nrights != 1 or nfds or alen or bits & _SIMPLE_BITS or flags & FLAG_BLOB
            or blen != len(data) - _SIMPLE_HEAD or blen % 4 or HEADER_SIZE + blen > room):
        return None
    kind, n, _size, aux = RIGHT.unpack_from(data, _WIRE_SIZE)
    if n:
        return None
    if kind == KIND_NONE:
        reply = 0
    elif kind == KIND_BACK and rec.rconn is not None:
        reply = R.copyout_reply(space, rec.rconn, aux)
    else:
        return None
    return HDR.pack(bits, HEADER_SIZE + blen, reply, rcv_name, 0, msg_id) + data[_SIMPLE_HEAD:]


_WIRE_SIZE = WIRE.size
_SIMPLE_HEAD = _WIRE_SIZE + RIGHT.size


def _check_body(body: bytearray, rights: list[tuple[int, int, int, int]], arrays: "bytes | bytearray") -> None:
    """Every descriptor names a right of its kind, and every right past the
    header's is named exactly once: a right that no descriptor names would
    be installed under a name the receiver is never told (a leak), and one
    named twice would be released twice."""
    used = 0
    named = [0] * len(rights)
    for off, dtype in _descriptors(body, K.MACH_RCV_BODY_ERROR, "record"):
        if dtype == MD.MACH_MSG_PORT_DESCRIPTOR:
            idx, _p, _a, _b, kind, _t = PORT_DESC.unpack_from(body, off)
            _check_slot(idx, kind, rights)
            _name(named, idx)
        elif dtype == MD.MACH_MSG_OOL_PORTS_DESCRIPTOR:
            _first, _d, _c, disp, _t, count = OOL_DESC.unpack_from(body, off)
            if disp not in _PORT_KINDS:
                raise _err(K.MACH_RCV_BODY_ERROR, "a port array of no port kind")
            if used + 8 * count > len(arrays):
                raise _err(K.MACH_RCV_BODY_ERROR, "a port array runs past the record")
            for k in range(count):
                sidx, skind = struct.unpack_from("<II", arrays, used + 8 * k)
                _check_slot(sidx, skind, rights)
                _name(named, sidx)
            used += 8 * count
        elif dtype == MD.MACH_MSG_GUARDED_PORT_DESCRIPTOR:
            _ctx, _f, kind, _t, idx = GUARDED_DESC.unpack_from(body, off)
            if kind != MD.MACH_MSG_TYPE_PORT_RECEIVE:
                raise _err(K.MACH_RCV_BODY_ERROR, "a guarded port descriptor that is not a receive right")
            _check_slot(idx, kind, rights)
            _name(named, idx)
        elif dtype in (MD.MACH_MSG_OOL_DESCRIPTOR, MD.MACH_MSG_OOL_VOLATILE_DESCRIPTOR):
            idx, _d, _c, _p, _t, size = OOL_DESC.unpack_from(body, off)
            if idx and (idx >= len(rights) or rights[idx][0] != KIND_OOL or rights[idx][2] != size):
                raise _err(K.MACH_RCV_BODY_ERROR, "out-of-line descriptor does not match its region")
            if not idx and size:
                raise _err(K.MACH_RCV_BODY_ERROR, "out-of-line data without a region")
            _name(named, idx)
        else:
            raise _err(K.MACH_RCV_BODY_ERROR, f"descriptor type {dtype}")
    if used != len(arrays):
        raise _err(K.MACH_RCV_BODY_ERROR, "port arrays do not match the descriptors")
    if any(n != 1 for n in named[1:]):
        raise _err(K.MACH_RCV_BODY_ERROR, "a right that no descriptor names, or that two name")


def _name(named: list[int], idx: int) -> None:
    if 0 < idx < len(named):
        named[idx] += 1


_PORT_KINDS = (MD.MACH_MSG_TYPE_PORT_SEND, MD.MACH_MSG_TYPE_PORT_SEND_ONCE, MD.MACH_MSG_TYPE_PORT_RECEIVE)


def _check_slot(idx: int, kind: int, rights: list[tuple[int, int, int, int]]) -> None:
    """A port slot is null, dead, or the index of a port right of its kind."""
    if idx in (0, 0xFFFFFFFF):
        return
    if idx >= len(rights):
        raise _err(K.MACH_RCV_BODY_ERROR, "a port slot names no right of its kind")
    have = rights[idx][0]
    if have in _KOBJECT_FDS and kind == MD.MACH_MSG_TYPE_PORT_SEND:
        # a kernel object's port is received as a send right
        fds = _KOBJECT_FDS[have]
        if fds is not None and rights[idx][1] != fds:
            raise _err(K.MACH_RCV_BODY_ERROR, "a kernel object's port without its fd")
        if have == KIND_HOST and not 0 <= rights[idx][2] <= len(CLOCKS):
            raise _err(K.MACH_RCV_BODY_ERROR, "a host service that is neither the host nor a clock")
        return
    if have not in _PORT_KINDS or have != kind:
        raise _err(K.MACH_RCV_BODY_ERROR, "a port slot names no right of its kind")


# the kinds of kernel objects' ports, and the fds each carries (None: 1 or 2)
_KOBJECT_FDS = {KIND_ENTRY: None, KIND_TASK: 1, KIND_THREAD: 1, KIND_HOST: 0, KIND_SEMAPHORE: 3}


def _check_task(fd: int, kind: int, size: int, aux: int) -> int:
    """A task or thread port that arrived in a message: a pidfd of a
    process (not of one thread), a flavor, and for a thread a tid (the
    receiver checks at copyout that it is a thread of that process).
    Returns the pid the pidfd is bound to (_linux/pidfd.py pid_of: -1
    once reaped). MACH_RCV_BODY_ERROR otherwise."""
    tid_ok = size == 0 if kind == KIND_TASK else 0 < size <= 0x7FFFFFFF
    if aux > TASK_FLAVOR_MAX or not tid_ok:
        raise _err(K.MACH_RCV_BODY_ERROR, "a task or thread port of no flavor or thread")
    try:
        return pidfd.pid_of(fd)
    except (OSError, ValueError):
        raise _err(K.MACH_RCV_BODY_ERROR, "a task or thread port that is not a process's pidfd") from None


def _check_ool(fd: int, size: int) -> None:
    """Received out-of-line memory must be a memfd sealed against writes
    and shrinking (so no peer can change it or make us take SIGBUS), and
    at least ``size`` bytes long."""
    try:
        seals = memfd.seals(fd)
    except OSError:
        raise _err(K.MACH_RCV_BODY_ERROR, "out-of-line memory is not a memfd") from None
    if seals & (memfd.F_SEAL_WRITE | memfd.F_SEAL_SHRINK) != (memfd.F_SEAL_WRITE | memfd.F_SEAL_SHRINK):
        raise _err(K.MACH_RCV_BODY_ERROR, "out-of-line memory is not sealed")
    if files.size(fd) < size:
        raise _err(K.MACH_RCV_BODY_ERROR, "out-of-line memory is shorter than declared")


def _map_ool(fd: int, size: int) -> int:
    """Map received out-of-line data MAP_PRIVATE: a copy-on-write copy.

    Conditions: nothing locked; takes the map's lock."""
    return SELF.map.map_object_private(fd, size)


def _copyout_body(body: bytearray, names: dict[int, int], regions: dict[int, int], arrays: "bytes | bytearray") -> None:
    """Write our names and addresses into a checked body (_check_body)."""
    used = 0
    for off, dtype in _descriptors(body, K.MACH_RCV_BODY_ERROR, "record"):
        if dtype == MD.MACH_MSG_PORT_DESCRIPTOR:
            idx, _pad, _p0, _p1, kind, _t = PORT_DESC.unpack_from(body, off)
            PORT_DESC.pack_into(body, off, _slot_name(idx, names), 0, 0, 0, kind, dtype)
        elif dtype == MD.MACH_MSG_OOL_PORTS_DESCRIPTOR:
            # ipc_kmsg_deflate_port_array_descriptor: the array is new memory
            # of ours, always deallocate TRUE and MACH_MSG_VIRTUAL_COPY
            _first, _d, _copy, disp, _t, n = OOL_DESC.unpack_from(body, off)
            slots = [struct.unpack_from("<II", arrays, used + 8 * k) for k in range(n)]
            used += 8 * n
            addr = _name_array([_slot_name(i, names) for i, _k in slots])
            OOL_DESC.pack_into(body, off, addr, 1, MD.MACH_MSG_VIRTUAL_COPY, disp, dtype, n)
        elif dtype == MD.MACH_MSG_GUARDED_PORT_DESCRIPTOR:
            _ctx, gflags, kind, _t, idx = GUARDED_DESC.unpack_from(body, off)
            GUARDED_DESC.pack_into(body, off, 0, gflags, kind, dtype, _slot_name(idx, names))
        else:
            # ipc_kmsg_deflate_memory_descriptor: deallocate is TRUE for a
            # virtual copy; the copy option is the sender's
            idx, _d, copy, _p, _t, size = OOL_DESC.unpack_from(body, off)
            OOL_DESC.pack_into(body, off, regions.get(idx, 0), copy == MD.MACH_MSG_VIRTUAL_COPY, copy, 0,
                               dtype, size)


def _slot_name(idx: int, names: dict[int, int]) -> int:
    return idx if idx in (0, 0xFFFFFFFF) else names.get(idx, 0)


def _name_array(values: list[int]) -> int:
    """An array of names in fresh memory of ours (released with
    vm_deallocate, as MIG's out-of-line arrays are).

    Conditions: nothing locked; takes the map's lock."""
    if not values:
        return 0
    data = struct.pack(f"<{len(values)}I", *values)
    addr = SELF.map.allocate(0, (len(data) + mm.PAGE_MASK) & ~mm.PAGE_MASK, True, False, 20)
    SELF.map.copy_in(addr, data)
    return addr


def _copyout_guarded(space: IpcSpace, body: bytearray, names: dict[int, int], ports: dict[int, Port],
                     option: int, rcv_addr: int) -> None:
    """The receive rights of guarded port descriptors, after _copyout_body
    wrote their names: destroyed unless the receiver asked for them
    (MACH_RCV_GUARDED_DESC; XNU also raises a simulated crash on DEBUG
    kernels), guarded by the receive buffer's address and made immovable
    with MACH_MSG_GUARD_FLAGS_IMMOVABLE_RECEIVE.

    Conditions: nothing locked; takes the space's lock (and, to destroy a
    right, as ipc_right.mod_refs)."""
    by_name = {names[i]: p for i, p in ports.items() if i in names}
    for off, dtype in _descriptors(body, K.MACH_RCV_BODY_ERROR, "record"):
        if dtype != MD.MACH_MSG_GUARDED_PORT_DESCRIPTOR:
            continue
        _ctx, gflags, kind, _t, name = GUARDED_DESC.unpack_from(body, off)
        port = by_name.get(name)
        if port is None:
            continue  # null or dead
        if not option & MD.MACH_RCV_GUARDED_DESC:
            R.mod_refs(space, name, MACH_PORT_RIGHT_RECEIVE, -1)
            GUARDED_DESC.pack_into(body, off, 0, gflags, kind, dtype, 0)
            continue
        if gflags & MD.MACH_MSG_GUARD_FLAGS_IMMOVABLE_RECEIVE:
            with space.lock:
                R.set_guard(port, rcv_addr, False, True)
            gflags &= ~MD.MACH_MSG_GUARD_FLAGS_UNGUARDED_ON_SEND
            GUARDED_DESC.pack_into(body, off, rcv_addr, gflags, kind, dtype, name)


# -- pseudo-receive ------------------------------------------------------------------

def _pseudo_right(space: IpcSpace, name: int, disp: int) -> tuple[int, int, int]:
    """A right of a message that was not sent, given back to its sender as
    if received: (name, kind, error bits). The right was never taken out of
    the space here, so this is mach_port_extract_right within the space:
    a moved right comes back under its name, a copied or made one adds a
    reference or a right (ipc_object_copyin then ipc_object_copyout).

    Conditions: nothing locked; as ipc_right.extract_right."""
    kind = copyin_type(disp)
    if name in (0, 0xFFFFFFFF):
        return name, kind, 0
    try:
        new, kind = R.extract_right(space, name, disp)
    except K.MachError as err:
        if err.kr == K.KERN_INVALID_CAPABILITY:
            return 0xFFFFFFFF, kind, 0
        return 0, kind, K.MACH_MSG_IPC_SPACE
    return new, kind, 0


def copyout_pseudo(space: IpcSpace, msg: bytes, out: Outgoing | None, addr: int) -> tuple[bytes, int]:
    """XNU's pseudo-receive (ipc_kmsg_copyout_pseudo, after a send that
    failed with MACH_SEND_TIMED_OUT, _INTERRUPTED or _NO_BUFFER): the
    message as its sender would receive it, to be written over the
    sender's buffer. The header's rights are not reversed; every right
    comes back as a name in our space (moved ones under their names,
    copied and made ones as new references or rights), out-of-line memory
    is mapped again at a new address (memory sent with deallocate is
    gone from where it was), port arrays are new memory, and a guarded
    receive right sent with MACH_MSG_GUARD_FLAGS_IMMOVABLE_RECEIVE comes
    back guarded by the buffer's address ``addr`` but movable. No trailer
    is written. Returns (message, error bits: MACH_MSG_IPC_SPACE,
    MACH_MSG_VM_SPACE, with MACH_RCV_BODY_ERROR for a descriptor's).
    ``out`` is None for a message sent by copyin_simple.

    Conditions: nothing locked; the send is over (Outgoing.unmove and the
    reply token withdrawn) but ``out`` not yet released (its memfds are
    mapped). Takes the space's lock (ipc_right.extract_right) and the
    map's lock."""
    data = bytearray(msg)
    bits, _size, remote, local, _voucher, _msg_id = HDR.unpack_from(data)
    bits &= MD.MACH_MSGH_BITS_USER
    dest, dkind, mr = _pseudo_right(space, remote, MD.MACH_MSGH_BITS_REMOTE(bits))
    reply, rkind = 0, 0
    if local or MD.MACH_MSGH_BITS_LOCAL(bits):
        reply, rkind, err = _pseudo_right(space, local, MD.MACH_MSGH_BITS_LOCAL(bits))
        mr |= err
    nbits = MD.MACH_MSGH_BITS_SET(dkind, rkind, MD.MACH_MSGH_BITS_VOUCHER(bits), MD.MACH_MSGH_BITS_OTHER(bits))
    struct.pack_into("<III", data, 0, nbits & MD.MACH_MSGH_BITS_USER, _size, dest)
    struct.pack_into("<I", data, 12, reply)
    if not bits & MD.MACH_MSGH_BITS_COMPLEX or out is None:
        return bytes(data), mr
    body = memoryview(data)[HEADER_SIZE:]
    descs = list(_descriptors(data[HEADER_SIZE:], K.MACH_SEND_MSG_TOO_SMALL, "message"))
    # the names of port arrays, read before their memory is deallocated
    arrays: dict[int, tuple[int, ...]] = {}
    for off, dtype in descs:
        if dtype == MD.MACH_MSG_OOL_PORTS_DESCRIPTOR:
            a, _d, _c, _disp, _t, count = OOL_DESC.unpack_from(body, off)
            arrays[off] = struct.unpack(f"<{count}I", SELF.map.copy_out(a, 4 * count)) if count else ()
    # memory sent with deallocate left the map at copyin, in XNU
    for a, size in out.dealloc:
        SELF.map.deallocate(a & ~mm.PAGE_MASK, (a + size + mm.PAGE_MASK) & ~mm.PAGE_MASK)
    out.dealloc = []
    dmr = 0
    ool = iter(out.ool)
    for off, dtype in descs:
        if dtype == MD.MACH_MSG_PORT_DESCRIPTOR:
            name, _pad, _p0, _p1, disp, _t = PORT_DESC.unpack_from(body, off)
            new, kind, err = _pseudo_right(space, name, disp)
            dmr |= err
            PORT_DESC.pack_into(body, off, new, 0, 0, 0, kind, dtype)
        elif dtype == MD.MACH_MSG_GUARDED_PORT_DESCRIPTOR:
            context, gflags, disp, _t, name = GUARDED_DESC.unpack_from(body, off)
            new, kind, err = _pseudo_right(space, name, disp)
            dmr |= err
            context = 0
            if new not in (0, 0xFFFFFFFF):
                gflags |= MD.MACH_MSG_GUARD_FLAGS_UNGUARDED_ON_SEND
                if gflags & MD.MACH_MSG_GUARD_FLAGS_IMMOVABLE_RECEIVE:
                    # guarded by the buffer, but movable: a pseudo-receive
                    # does not pin the right in the sender's space
                    with space.lock:
                        R.set_guard(R.receive_port(space, new), addr, False, False)
                    context = addr
                    gflags &= ~MD.MACH_MSG_GUARD_FLAGS_UNGUARDED_ON_SEND
            GUARDED_DESC.pack_into(body, off, context, gflags, kind, dtype, new)
        elif dtype == MD.MACH_MSG_OOL_PORTS_DESCRIPTOR:
            _a, _d, _c, disp, _t, count = OOL_DESC.unpack_from(body, off)
            got = [_pseudo_right(space, n, disp) for n in arrays[off]]
            for _n, _k, err in got:
                dmr |= err
            try:
                new_addr = _name_array([n for n, _k, _e in got])
            except K.MachError:
                new_addr, dmr = 0, dmr | K.MACH_MSG_VM_SPACE
            OOL_DESC.pack_into(body, off, new_addr, 1, MD.MACH_MSG_VIRTUAL_COPY, copyin_type(disp), dtype, count)
        else:
            _a, _d, copy, _p, _t, size = OOL_DESC.unpack_from(body, off)
            region = 0
            if size:
                try:
                    region = _map_ool(next(ool), size)
                except (K.MachError, OSError):
                    region, size, dmr = 0, 0, dmr | K.MACH_MSG_VM_SPACE
            OOL_DESC.pack_into(body, off, region, copy == MD.MACH_MSG_VIRTUAL_COPY, copy, 0, dtype, size)
    body.release()
    if dmr:
        mr |= dmr | K.MACH_RCV_BODY_ERROR
    return bytes(data), mr
