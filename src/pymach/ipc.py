"""The Pythonic IPC layer: Port (a receive right), SendRight,
SendOnceRight, PortSet and Message.

Rights are context managers; ``close()`` releases our reference and is
idempotent. ``fileno()`` polls readable when a message may be waiting, for
selectors and asyncio. A message carries bytes, rights (in port
descriptors: send and send-once rights, memory entries, and tasks) and
out-of-line memory (copy-on-write on receipt).
"""

from __future__ import annotations

import struct
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Self, Union

from . import _check as C
from . import _format as F
from ._linux.mm import view
from ._kern import ipc_right as R
from ._kern import ipc_tt
from ._kern import kern_return as K
from ._kern import mach_msg as KM
from ._kern import message_defs as MD
from ._kern.ipc_space import (MACH_PORT_RIGHT_PORT_SET, MACH_PORT_RIGHT_RECEIVE, MACH_PORT_TYPE_DEAD_NAME,
                             MACH_PORT_TYPE_PORT_SET, MACH_PORT_TYPE_RECEIVE, MACH_PORT_TYPE_SEND,
                             MACH_PORT_TYPE_SEND_ONCE, MPO_CONTEXT_AS_GUARD)
from ._kern.task import SELF, Task as KTask, Thread as KThread
from ._kern import vm_defs as V
from ._kern.vm_memory_entry import MemoryEntry as KMemoryEntry
from ._kern.sync_sema import Semaphore as KSemaphore
from ._kern.vm_user import PAGE_MASK, vm_deallocate, vm_make_memory_entry, vm_map_enter_mem_object
from .mach._args import address_of

if TYPE_CHECKING:
    from .semaphore import Semaphore
    from .task import Region, Task

__all__ = ["Port", "SendRight", "SendOnceRight", "PortSet", "Message", "MemoryEntry", "request",
           "request_async", "register_ports", "registered_ports"]

HDR, OOL_DESC, PORT_DESC = MD.HDR, MD.OOL_DESC, MD.PORT_DESC  # bound by assignment: see _kern/ipc_kmsg.py
_AUDIT = MD.MACH_RCV_TRAILER_ELEMENTS(MD.MACH_RCV_TRAILER_AUDIT)
_RCV_OPTION = MD.MACH_RCV_MSG | _AUDIT | MD.MACH_RCV_LARGE
# the audit trailer's seqno, security token (uid, gid) and audit token pid
_CRED = struct.Struct("<8xIII20xI")
# a simple message as this layer lays it out: the header, then the data's
# exact length, then the data padded to 4 bytes
_DATA_AT = HDR.size + 4
_LAYOUTS: dict[int, struct.Struct] = {}  # by the data's length (_layout)
_TRAILER_SIZE = 52  # what _RCV_OPTION asks for: the audit trailer
_RCV_LAYOUTS: dict[int, struct.Struct] = {}  # by the length of what a receive gave (_rcv_layout)
_COMPLEX = MD.MACH_MSGH_BITS_COMPLEX
_SEND_OPTION = MD.MACH_SEND_MSG
_SEND_TIMEOUT = MD.MACH_SEND_MSG | MD.MACH_SEND_TIMEOUT
_RCV_TIMEOUT = _RCV_OPTION | MD.MACH_RCV_TIMEOUT
_RCV_MAX = 1 << 20
_MAKE_SEND_ONCE = MD.MACH_MSG_TYPE_MAKE_SEND_ONCE
_REQUEST_BITS = MD.MACH_MSGH_BITS(MD.MACH_MSG_TYPE_COPY_SEND, _MAKE_SEND_ONCE)
_REPLY_BITS = MD.MACH_MSG_TYPE_MOVE_SEND_ONCE
_PORT_SEND_ONCE = MD.MACH_MSG_TYPE_PORT_SEND_ONCE
_NUMBER = (int, float)
_TIMEOUT_MAX = C.TIMEOUT_MAX
_new = object.__new__
_ID_MIN, _ID_MAX = C.MSG_ID.lo, C.MSG_ID.hi
_ENDED = (K.MACH_RCV_INVALID_NAME, K.MACH_RCV_PORT_DIED, K.MACH_RCV_PORT_CHANGED)  # what ends ``async for``
_NONE: list[Any] = []  # no rights, no out-of-line buffers (never changed)
_RIGHT_WORDS = ((MACH_PORT_TYPE_RECEIVE, "receive"), (MACH_PORT_TYPE_SEND, "send"),
                (MACH_PORT_TYPE_SEND_ONCE, "send-once"), (MACH_PORT_TYPE_PORT_SET, "port-set"),
                (MACH_PORT_TYPE_DEAD_NAME, "dead-name"))


def _layout(n: int) -> struct.Struct:
    """The layout of a simple message with ``n`` bytes of data (the "s"
    field pads it with NULs to 4 bytes). The first 256 lengths seen are
    kept."""
    lay = struct.Struct(f"<IIIIIiI{n + (-n & 3)}s")
    if len(_LAYOUTS) < 256:
        _LAYOUTS[n] = lay
    return lay


def _rcv_layout(total: int) -> struct.Struct | None:
    """The layout of a simple message received with its audit trailer,
    ``total`` bytes in all: the header (without its local port and
    voucher), the data's length, the data padded, then from the trailer the
    seqno, the security token's uid and gid and the audit token's pid. None
    when there is no room for data (a bare header). The first 256 totals
    seen are kept."""
    if total < _DATA_AT + _TRAILER_SIZE:
        return None
    lay = struct.Struct(f"<III8xiI{total - _DATA_AT - _TRAILER_SIZE}s8xIII20xI8x")
    if len(_RCV_LAYOUTS) < 256:
        _RCV_LAYOUTS[total] = lay
    return lay


def _rights_text(t: int) -> str:
    """The rights a name holds, as words: 'receive,send'."""
    return ",".join(w for bit, w in _RIGHT_WORDS if t & bit) or "none"


class _Right:
    """A name in our IPC space."""

    __slots__ = ("name", "_live")
    _gone = "is closed"  # what a method on a closed right says

    def __init__(self, name: int) -> None:
        if type(name) is not int or not 0 <= name <= 0xFFFFFFFF:
            name = C.integer(name, f"{type(self).__name__}()", "name", C.NAME)
        self.name = name
        self._live = True

    def _call(self, verb: str) -> str:
        return f"{type(self).__name__}.{verb}()"

    def _closed(self, verb: str, kr: int = K.KERN_INVALID_NAME) -> K.MachError:
        """The error of a method called after close(): InvalidNameError,
        with the code the Mach call would give for a name we no longer
        hold."""
        return K.MachError(kr, f"{self._call(verb)}: {self.name:#x} {self._gone}")

    def _release(self) -> None:
        R.deallocate(SELF.space, self.name)

    def close(self) -> None:
        """Release our reference. Calling it again does nothing."""
        if self._live:
            self._live = False
            try:
                self._release()
            except K.MachError as e:
                if e.kr != K.KERN_INVALID_NAME:
                    raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name:#x} {self._state() if self._live else 'closed'}>"

    def _state(self) -> str:
        try:
            return _rights_text(R.type_of(SELF.space, self.name))
        except K.MachError:
            return "gone"


Sendable = Union["SendRight", "SendOnceRight"]
Carried = Union["SendRight", "SendOnceRight", "Task"]  # what a Message's rights hold


@dataclass
class Message:
    """A message: ``id`` (msgh_id, an int32), ``data`` (bytes-like, kept
    as bytes), ``rights`` (SendRight, SendOnceRight, MemoryEntry or Task,
    one port descriptor each: a Task travels as a copy of its task port's
    send right and arrives as a Task of the same process and flavor),
    ``ool`` (bytes-like out-of-line buffers; on receipt, memoryviews of
    copy-on-write mappings). On receipt also ``reply`` (the right to
    answer with), ``seqno`` and the sender's kernel-verified ``pid``,
    ``uid`` and ``gid``.

    Fields are checked when the Message is made and again when it is sent:
    TypeError for a wrong type (a str as data), ValueError for an id
    outside int32."""

    data: bytes = b""
    id: int = 0
    rights: list[Carried] = field(default_factory=list)
    ool: list[bytes | bytearray | memoryview] = field(default_factory=list)
    reply: Sendable | None = None
    seqno: int = 0
    pid: int = 0
    uid: int = 0
    gid: int = 0
    _regions: list[tuple[int, int]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        # one test for the common message (bytes, an int32 id, nothing else)
        if (type(self.data) is not bytes or type(self.id) is not int or not _ID_MIN <= self.id <= _ID_MAX
                or type(self.rights) is not list or type(self.ool) is not list or self.rights or self.ool
                or self.reply is not None):
            self.data, self.id, self.rights, self.ool = _fields(self, "Message()", "")
            if self.reply is not None:
                C.instance(self.reply, SendRight, "Message()", "reply", "SendRight, SendOnceRight or None")

    def __repr__(self) -> str:
        data = repr(self.data[:32]) + ("..." if len(self.data) > 32 else "")
        parts = [f"id={self.id}", f"data={data} ({len(self.data)} bytes)"]
        if self.rights:
            parts.append(f"rights={self.rights!r}")
        if self.ool:
            parts.append("ool=[" + ", ".join(F.size(memoryview(b).nbytes) for b in self.ool) + "]")
        if self.reply is not None:
            parts.append(f"reply={self.reply!r}")
        if self.pid:
            parts.append(f"seqno={self.seqno} from pid={self.pid} uid={self.uid} gid={self.gid}")
        return f"<Message {' '.join(parts)}>"

    def release(self) -> None:
        """Unmap received out-of-line memory and close received rights."""
        for addr, size in self._regions:
            vm_deallocate(SELF.task_name, addr, size)
        self._regions.clear()
        for r in self.rights:
            r.close()
        if self.reply is not None:
            self.reply.close()


def _rights_list(rights: object, call: str, param: str) -> list[Carried]:
    if not isinstance(rights, (list, tuple)):
        raise C.type_error(call, param, "a list of SendRight, SendOnceRight or Task", rights)
    for i, r in enumerate(rights):
        if not isinstance(r, SendRight) and not isinstance(r, _task_class()):
            hint = " (a Port sends its make_send())" if isinstance(r, Port) else ""
            raise C.type_error(call, f"{param}[{i}]", "SendRight, SendOnceRight or Task" + hint, r)
    return list(rights)


def _task_class() -> "type[Task]":
    """pymach.Task. pymach.task is above this module (its Task and Region
    use the rights and memory entries defined here): a message that
    carries a task reaches up to it, to check what is sent and to wrap
    what arrives."""
    from .task import Task
    return Task


def _semaphore_class() -> "type[Semaphore]":
    """pymach.Semaphore, which is a SendRight of this module: a received
    semaphore comes out as one, as a task port comes out as a Task."""
    from .semaphore import Semaphore
    return Semaphore


def _ool_list(ool: object, call: str, param: str) -> list[bytes | bytearray | memoryview]:
    if not isinstance(ool, (list, tuple)):
        raise C.type_error(call, param, "a list of bytes-like buffers", ool)
    for i, buf in enumerate(ool):
        if not isinstance(buf, (bytes, bytearray, memoryview)):
            C.data(buf, call, f"{param}[{i}]")
    return list(ool)


def _fields(msg: Message, call: str, prefix: str) -> tuple[bytes, int, list[Carried],
                                                         list[bytes | bytearray | memoryview]]:
    """A Message's fields, checked, for ``call`` (where the parameters are
    called ``prefix`` + the field's name)."""
    data, msg_id, rights, ool = msg.data, msg.id, msg.rights, msg.ool
    if type(data) is not bytes:
        data = C.data(data, call, prefix + "data")
    if type(msg_id) is not int or not _ID_MIN <= msg_id <= _ID_MAX:
        msg_id = C.integer(msg_id, call, prefix + "id", C.MSG_ID)
    if type(rights) is not list or rights:
        rights = _rights_list(rights, call, prefix + "rights")
    if type(ool) is not list or ool:
        ool = _ool_list(ool, call, prefix + "ool")
    return data, msg_id, rights, ool


def _encode(right: "SendRight", data: bytes, msg_id: int, rights: list[Carried],
            ool: list[bytes | bytearray | memoryview], reply: int, reply_disp: int) -> tuple[bytes, list[object]]:
    keep: list[object] = []
    body = bytearray()
    complex_ = bool(rights or ool)
    if complex_:
        body += struct.pack("<I", len(rights) + len(ool))
        for r in rights:
            disp = MD.MACH_MSG_TYPE_MOVE_SEND_ONCE if isinstance(r, SendOnceRight) else MD.MACH_MSG_TYPE_COPY_SEND
            name = r.name if isinstance(r, SendRight) else r.port  # a Task: a copy of its task port
            body += PORT_DESC.pack(name, 0, 0, 0, disp, MD.MACH_MSG_PORT_DESCRIPTOR)
        for buf in ool:
            raw = C.data(buf, right._call("send"), "msg.ool")
            keep.append(raw)
            addr = address_of(raw)[0]
            body += OOL_DESC.pack(addr, 0, MD.MACH_MSG_VIRTUAL_COPY, 0, MD.MACH_MSG_OOL_DESCRIPTOR, len(raw))
    if data:
        # the exact length first (a Mach body is padded to 4 bytes); a
        # message without data is the bare header and descriptors, as C
        # programs lay it out
        body += struct.pack("<I", len(data)) + data + b"\0" * (-len(data) % 4)
    bits = MD.MACH_MSGH_BITS(right._disposition(), reply_disp) | (MD.MACH_MSGH_BITS_COMPLEX if complex_ else 0)
    return HDR.pack(bits, HDR.size + len(body), right.name, reply, 0, msg_id) + bytes(body), keep


def _received(msg_id: int) -> Message:
    """An empty Message for what the kernel gave: nothing to check."""
    m = _new(Message)
    m.data = b""
    m.id = msg_id
    m.rights = []
    m.ool = []
    m.reply = None
    m.seqno = m.pid = m.uid = m.gid = 0
    m._regions = []
    return m


def _decode(raw: bytes) -> Message:
    """The Message a receive gave (the message and its audit trailer)."""
    total = len(raw)
    lay = _RCV_LAYOUTS.get(total) or _rcv_layout(total)
    if lay is None:
        return _decode_general(raw)
    bits, size, remote, msg_id, n, data, seqno, uid, gid, pid = lay.unpack(raw)
    pad = len(data) - n
    if bits & _COMPLEX or size + _TRAILER_SIZE != total or not 0 <= pad < 4:
        return _decode_general(raw)  # not laid out as this layer lays out a simple message
    m = _new(Message)
    m.data = data[:n] if pad else data
    m.id = msg_id
    m.rights = []
    m.ool = []
    m._regions = []
    if remote:
        r = _new(SendOnceRight if bits & 0x1F == _PORT_SEND_ONCE else SendRight)
        r.name = remote
        r._live = True
        m.reply = r
    else:
        m.reply = None
    m.seqno = seqno
    m.uid = uid
    m.gid = gid
    m.pid = pid
    return m


def _decode_general(raw: bytes) -> Message:
    bits, size, remote, _local, _v, msg_id = HDR.unpack_from(raw)
    off = HDR.size
    msg = _received(msg_id)
    if bits & MD.MACH_MSGH_BITS_COMPLEX:
        (count,) = struct.unpack_from("<I", raw, off)
        off += 4
        for _ in range(count):
            dtype = raw[off + 11]
            if dtype == MD.MACH_MSG_PORT_DESCRIPTOR:
                name, _p, _a, _b, kind, _t = PORT_DESC.unpack_from(raw, off)
                if name:
                    msg.rights.append(_wrap(name, kind))
                off += 12
            else:
                addr, _d, _c, _p, _t, n = OOL_DESC.unpack_from(raw, off)
                if addr:
                    msg._regions.append((addr, n))
                    msg.ool.append(view(addr, n))
                off += 16
    if off + 4 <= size:
        (n,) = struct.unpack_from("<I", raw, off)
        msg.data = raw[off + 4:off + 4 + n]
    if remote:
        kind = MD.MACH_MSGH_BITS_REMOTE(bits)
        msg.reply = SendOnceRight(remote) if kind == MD.MACH_MSG_TYPE_PORT_SEND_ONCE else SendRight(remote)
    msg.seqno, msg.uid, msg.gid, msg.pid = _CRED.unpack_from(raw, size)
    return msg


def _wrap(name: int, kind: int) -> Carried:
    if kind == MD.MACH_MSG_TYPE_PORT_SEND_ONCE:
        return SendOnceRight(name)
    e = SELF.space.lookup(name)
    if e is not None and isinstance(e.cap, KMemoryEntry):
        return MemoryEntry(name)
    if e is not None and isinstance(e.cap, KSemaphore):
        return _semaphore_class()._of_name(name)
    if e is not None and isinstance(e.object, KTask) and not isinstance(e.object, KThread):
        # a task port, of any flavor (our own task's included): the
        # reference the message brought is the Task's to release
        return _task_class()(name, owned=True)
    return SendRight(name)


class SendRight(_Right):
    """A send right: send messages to the port, any number of times."""

    __slots__ = ()
    _type = MACH_PORT_TYPE_SEND
    _disp = MD.MACH_MSG_TYPE_COPY_SEND  # how a message names it as its destination

    def send(self, msg: Message | bytes, *, id: int = 0, reply: "Port | None" = None,
             timeout: float | None = None, reply_once: bool = True) -> None:
        """Send ``msg``: a Message, or bytes-like data with ``id`` as its
        msgh_id (a Message carries its own id). With ``reply``, the message
        carries a send-once right to that port (with ``reply_once`` False,
        a send right, as the book's programs ask for). ``timeout`` is in
        seconds, None to wait for room for as long as it takes; Mach counts
        it in 32-bit milliseconds, so more than 4294967.295 s is a
        ValueError.

        Raises TypeError (``msg`` not a Message or bytes-like: an int or a
        str is refused; ``reply`` not a Port), ValueError (``id`` outside
        int32, ``timeout`` outside its range), MachError
        (MACH_SEND_INVALID_DEST when the port is gone or this right was
        closed, MACH_SEND_TIMED_OUT, MACH_SEND_INVALID_RIGHT for a right in
        the message we do not hold)."""
        if (type(msg) is bytes and msg and reply is None and timeout is None and self._live and type(id) is int
                and _ID_MIN <= id <= _ID_MAX):
            # the common message: bytes, waiting for room as long as it takes
            n = len(msg)
            lay = _LAYOUTS.get(n) or _layout(n)
            try:
                KM.send(SELF.space, lay.pack(self._disp, lay.size, self.name, 0, 0, id, n, msg), _SEND_OPTION, 0)
            except K.MachError as e:
                raise C.named(e, self._call("send"))
            return
        _send(self, msg, id, reply, timeout, reply_once)

    async def send_async(self, msg: Message | bytes, *, id: int = 0, reply: "Port | None" = None,
                         timeout: float | None = None, reply_once: bool = True) -> None:
        """As send, on the running asyncio loop: a full queue waits without
        blocking the loop (pymach.aio: the loop watches the port's queue
        semaphore, and the send is tried again, with a timeout of 0, when a
        place frees). Cancelled while it waits, nothing was sent.

        Raises as send: MACH_SEND_TIMED_OUT after ``timeout`` seconds,
        MACH_SEND_INVALID_DEST when the port dies meanwhile (seen within
        a second)."""
        C.timeout_ms(timeout, self._call("send_async"))
        try:
            self.send(msg, id=id, reply=reply, timeout=0, reply_once=reply_once)
            return
        except K.MachError as e:
            if e.kr != K.MACH_SEND_TIMED_OUT or timeout == 0:
                raise
        await _aio().send(_cap(self), lambda: self.send(msg, id=id, reply=reply, timeout=0, reply_once=reply_once),
                          timeout)

    def _disposition(self) -> int:
        return self._disp

    def copy(self) -> "Self":
        """Another reference to the same right (mach_port_mod_refs +1).
        Raises InvalidNameError (KERN_INVALID_NAME) once closed."""
        if not self._live:
            raise self._closed("copy")
        try:
            R.mod_refs(SELF.space, self.name, 0, 1)
        except K.MachError as e:
            raise C.named(e, self._call("copy"))
        return type(self)(self.name)

    @property
    def dead(self) -> bool:
        """True once the port is gone: the name became a dead name (its
        receive right was destroyed in another task, or its task died), or
        this task destroyed the receive right itself (closing a Port takes
        the send rights under its name with it, as mach_port_destroy does).
        Raises InvalidNameError once this right was closed."""
        if not self._live:
            raise K.MachError(K.KERN_INVALID_NAME, f"{type(self).__name__}.dead: {self.name:#x} {self._gone}")
        try:
            t = R.type_of(SELF.space, self.name)
        except K.MachError as e:
            if e.kr == K.KERN_INVALID_NAME:
                return True
            raise
        return t & self._type == 0

    def _state(self) -> str:
        try:
            t = R.type_of(SELF.space, self.name)
        except K.MachError:
            return "dead"  # the name went with the port, destroyed here
        return "dead" if t & self._type == 0 else _rights_text(t)


class SendOnceRight(SendRight):
    """A send-once right: one message, then it is gone."""

    __slots__ = ()
    _type = MACH_PORT_TYPE_SEND_ONCE
    _gone = "was used or closed (a send-once right sends one message)"
    _disp = MD.MACH_MSG_TYPE_MOVE_SEND_ONCE

    def send(self, msg: Message | bytes, *, id: int = 0, reply: "Port | None" = None,
             timeout: float | None = None, reply_once: bool = True) -> None:
        """As SendRight.send; the right is used up by the message."""
        if (type(msg) is bytes and msg and reply is None and timeout is None and self._live and type(id) is int
                and _ID_MIN <= id <= _ID_MAX):
            # the common reply (as SendRight.send's common message)
            n = len(msg)
            lay = _LAYOUTS.get(n) or _layout(n)
            try:
                KM.send(SELF.space, lay.pack(_REPLY_BITS, lay.size, self.name, 0, 0, id, n, msg), _SEND_OPTION, 0)
            except K.MachError as e:
                raise C.named(e, self._call("send"))
        else:
            _send(self, msg, id, reply, timeout, reply_once)
        self._live = False

    def copy(self) -> "Self":
        """Refused: KERN_INVALID_RIGHT (a send-once right cannot be copied)."""
        raise K.MachError(K.KERN_INVALID_RIGHT, f"{self._call('copy')}: a send-once right cannot be copied")


class MemoryEntry(SendRight):
    """A memory entry (mach_make_memory_entry_64): a name for memory that
    any task holding it maps with ``map()``. It travels in a Message's
    ``rights`` like a send right. Get one from ``Region.memory_entry()`` or
    ``MemoryEntry.create(size)``."""

    __slots__ = ()

    @classmethod
    def create(cls, size: int, protection: int = V.VM_PROT_READ | V.VM_PROT_WRITE) -> "MemoryEntry":
        """A fresh zero-filled object of ``size`` bytes (MAP_MEM_NAMED_CREATE).
        Raises TypeError, ValueError (a size or protection outside its C
        type: a negative size), MachError (KERN_INVALID_ARGUMENT: size 0;
        KERN_FAILURE: larger than ANON_MAX_SIZE)."""
        call = "MemoryEntry.create()"
        size = C.integer(size, call, "size", C.SIZE)
        protection = C.integer(protection, call, "protection", C.PROT)
        if size == 0:
            C.fail(K.KERN_INVALID_ARGUMENT, call, "size 0")
        try:
            name, _size = vm_make_memory_entry(SELF.task_name, size, 0, protection | V.MAP_MEM_NAMED_CREATE, 0)
        except K.MachError as e:
            raise C.named(e, call)
        return cls(name)

    def _entry(self, call: str) -> KMemoryEntry:
        if not self._live:
            raise K.MachError(K.KERN_INVALID_NAME, f"{call}: {self.name:#x} {self._gone}")
        e = SELF.space.lookup(self.name)
        if e is None or not isinstance(e.cap, KMemoryEntry):
            C.fail(K.KERN_INVALID_NAME, call, f"{self.name:#x} is not a memory entry")
        return e.cap

    @property
    def size(self) -> int:
        """The size of the memory it names, in bytes (whole pages)."""
        return self._entry("MemoryEntry.size").size

    @property
    def protection(self) -> int:
        """The most a mapping of it may allow (VM_PROT_* bits)."""
        return self._entry("MemoryEntry.protection").protection

    @C.names_call("MemoryEntry.map()")
    def map(self, *, offset: int = 0, size: int | None = None, copy: bool = False,
            protection: int | None = None, max_protection: int | None = None,
            inheritance: int = V.VM_INHERIT_DEFAULT, address: int | None = None) -> "Region":
        """Map the entry (mach_vm_map): shared, or with ``copy`` a private
        snapshot taken now; ``size`` None maps from ``offset`` to the end.
        Protections default to the entry's. Raises TypeError, ValueError (a
        number outside its C type), MachError (KERN_INVALID_RIGHT: more
        than the entry allows; KERN_INVALID_ARGUMENT: a range past the
        entry, an offset at or past its end, as XNU's
        vm_map_enter_mem_object gives for ``named_entry->size < offset +
        size``; KERN_NO_SPACE: no room)."""
        # pymach.task is above this module (it imports MemoryEntry): the one
        # reference up, to build the Region this returns
        from .task import Region, Task
        call = "MemoryEntry.map()"
        offset = C.integer(offset, call, "offset", C.OFFSET)
        n = C.optional_integer(size, call, "size", C.SIZE)
        cur = C.optional_integer(protection, call, "protection", C.PROT)
        mx = C.optional_integer(max_protection, call, "max_protection", C.PROT)
        inheritance = C.integer(inheritance, call, "inheritance", C.INHERIT)
        where = C.optional_integer(address, call, "address", C.ADDRESS)
        ent = self._entry(call)
        if n is None:
            if offset >= ent.size:
                C.fail(K.KERN_INVALID_ARGUMENT, call, f"offset {offset:#x} is at or past the end of the entry "
                       f"({ent.size:#x} bytes)")
            n = ent.size - offset
        cur = ent.protection if cur is None else cur
        mx = cur if mx is None else mx
        flags = V.VM_FLAGS_ANYWHERE if where is None else V.VM_FLAGS_FIXED
        a = vm_map_enter_mem_object(SELF.task_name, where or 0, n, 0, flags, self.name, offset, int(copy), cur, mx,
                         inheritance)
        length = ent.size if ent.is_copy else (n + PAGE_MASK) & ~PAGE_MASK  # a copy entry maps whole
        return Region(Task.self(), a, length)

    @C.names_call("MemoryEntry.sub()")
    def sub(self, offset: int, size: int, protection: int | None = None) -> "MemoryEntry":
        """An entry for part of this one, with at most its protection.
        Raises TypeError, ValueError (a number outside its C type),
        MachError (KERN_PROTECTION_FAILURE, KERN_INVALID_ARGUMENT)."""
        call = "MemoryEntry.sub()"
        offset = C.integer(offset, call, "offset", C.OFFSET)
        size = C.integer(size, call, "size", C.SIZE)
        prot = C.optional_integer(protection, call, "protection", C.PROT)
        prot = self._entry(call).protection if prot is None else prot
        name, _size = vm_make_memory_entry(SELF.task_name, size, offset, prot, self.name)
        return MemoryEntry(name)

    def send(self, msg: Message | bytes, *, id: int = 0, reply: "Port | None" = None,
             timeout: float | None = None, reply_once: bool = True) -> None:
        """Refused (MACH_SEND_INVALID_DEST): a memory entry serves no
        messages. (mach_msg to it gets a MIG_BAD_ID reply, as in XNU.)"""
        raise K.MachError(K.MACH_SEND_INVALID_DEST, f"{self._call('send')}: a memory entry is not a port to send to")

    def _state(self) -> str:
        e = SELF.space.lookup(self.name)
        if e is None or not isinstance(e.cap, KMemoryEntry):
            return "gone"
        ent = e.cap
        return f"size={F.size(ent.size)} {F.prot(ent.protection)}{' copy' if ent.is_copy else ''}"


def _send(right: SendRight, msg: Message | bytes, msg_id: int, reply: "Port | None", timeout: float | None,
          reply_once: bool) -> None:
    """SendRight.send's work: ``msg`` checked, laid out and sent."""
    if not right._live:
        raise right._closed("send", K.MACH_SEND_INVALID_DEST)
    if type(msg) is bytes:
        data, rights, ool = msg, _NONE, _NONE
        if type(msg_id) is not int or not _ID_MIN <= msg_id <= _ID_MAX:
            msg_id = C.integer(msg_id, right._call("send"), "id", C.MSG_ID)
    elif isinstance(msg, Message):
        if msg_id != 0:
            raise TypeError(f"{right._call('send')} takes 'id' only with bytes: a Message carries its own id")
        # checked again: the fields may have changed since the Message was made
        data, msg_id, rights, ool = msg.data, msg.id, msg.rights, msg.ool
        if (type(data) is not bytes or type(msg_id) is not int or not _ID_MIN <= msg_id <= _ID_MAX
                or type(rights) is not list or type(ool) is not list or rights or ool):
            data, msg_id, rights, ool = _fields(msg, right._call("send"), "msg.")
    else:
        data = C.data(msg, right._call("send"), "msg", "a Message or bytes-like")
        if type(msg_id) is not int or not _ID_MIN <= msg_id <= _ID_MAX:
            msg_id = C.integer(msg_id, right._call("send"), "id", C.MSG_ID)
        rights, ool = _NONE, _NONE
    if reply is None:
        rname, rdisp = 0, 0
    elif isinstance(reply, Port):
        rname, rdisp = reply.name, _MAKE_SEND_ONCE if reply_once else MD.MACH_MSG_TYPE_MAKE_SEND
    else:
        raise C.type_error(right._call("send"), "reply", "Port or None", reply)
    if timeout is None:
        option, ms = _SEND_OPTION, 0
    elif type(timeout) in _NUMBER and 0 <= timeout <= _TIMEOUT_MAX:
        option, ms = _SEND_TIMEOUT, int(timeout * 1000)
    else:
        option, ms = _SEND_TIMEOUT, C.timeout_ms(timeout, right._call("send")) or 0
    if rights or ool:
        raw, _keep = _encode(right, data, msg_id, rights, ool, rname, rdisp)
    elif data:
        n = len(data)
        lay = _LAYOUTS.get(n) or _layout(n)
        raw = lay.pack(right._disp | rdisp << 8, lay.size, right.name, rname, 0, msg_id, n, data)
    else:
        raw = HDR.pack(right._disp | rdisp << 8, HDR.size, right.name, rname, 0, msg_id)
    try:
        KM.send(SELF.space, raw, option, ms)
    except K.MachError as e:
        raise C.named(e, right._call("send"))
    for r in rights:
        if isinstance(r, SendOnceRight):
            r._live = False


class _Receiver(_Right):
    __slots__ = ()

    def receive(self, timeout: float | None = None, max_size: int = 1 << 20) -> Message:
        """The next message, waiting up to ``timeout`` seconds (None: for as
        long as it takes). Mach counts the timeout in 32-bit milliseconds,
        so more than 4294967.295 s is a ValueError; 0 only takes a message
        already queued. ``max_size`` (a mach_msg_size_t) bounds the message
        and its trailer.

        Raises TypeError, ValueError (``timeout`` or ``max_size`` outside
        its range), MachError: MACH_RCV_TIMED_OUT, TooLarge
        (MACH_RCV_TOO_LARGE: the message stays queued), InvalidNameError
        (MACH_RCV_INVALID_NAME once closed; MACH_RCV_PORT_DIED when the
        right is destroyed during the wait)."""
        if not self._live:
            raise self._closed("receive", K.MACH_RCV_INVALID_NAME)
        if timeout is None:
            option, ms = _RCV_OPTION, 0
        elif type(timeout) in _NUMBER and 0 <= timeout <= _TIMEOUT_MAX:
            option, ms = _RCV_TIMEOUT, int(timeout * 1000)
        else:
            option, ms = _RCV_TIMEOUT, C.timeout_ms(timeout, self._call("receive")) or 0
        if type(max_size) is not int or not 0 <= max_size <= 0xFFFFFFFF:
            max_size = C.integer(max_size, self._call("receive"), "max_size", C.MSG_SIZE)
        try:
            raw = KM.receive(SELF.space, self.name, max_size, option, ms)
        except K.MachError as e:
            raise C.named(e, self._call("receive"))
        return _decode(raw)

    async def receive_async(self, timeout: float | None = None, max_size: int = 1 << 20) -> Message:
        """As receive, on the running asyncio loop, with no thread: the
        loop watches the port's fd (pymach.aio) and the receive is tried
        again, with a timeout of 0, when it polls readable. Waiters on one
        port and loop are served in turn (first come, first served).
        Cancelled while it waits, it took nothing: the message stays
        queued for the next receive.

        Raises as receive: MACH_RCV_TIMED_OUT after ``timeout`` seconds,
        MACH_RCV_INVALID_NAME once closed, MACH_RCV_PORT_CHANGED when the
        right is destroyed or sent away while it waits."""
        C.timeout_ms(timeout, self._call("receive_async"))
        try:
            return self.receive(0, max_size)
        except K.MachError as e:
            if e.kr != K.MACH_RCV_TIMED_OUT or timeout == 0:
                raise
        ent = SELF.space.lookup(self.name)
        if ent is None:
            C.fail(K.MACH_RCV_INVALID_NAME, self._call("receive_async"), f"{self.name:#x}")
        aio = _aio()
        wait = aio.receive_set if isinstance(self, PortSet) else aio.receive_port
        obj: Any = ent.object  # the kernel's Port or PortSet
        try:
            msg: Message = await wait(obj, lambda: self.receive(0, max_size), timeout)
        except K.MachError as err:
            if err.kr == K.MACH_RCV_INVALID_NAME and obj.destroyed:
                # as a sync receive that waits when the right goes (XNU's
                # ipc_mqueue_changed: THREAD_RESTART)
                raise C.named(K.MachError(K.MACH_RCV_PORT_CHANGED, "destroyed while we waited"),
                              self._call("receive_async")) from None
            raise
        return msg

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        """``async for message in port``: the next message, until the
        right is destroyed or closed (MACH_RCV_INVALID_NAME,
        MACH_RCV_PORT_DIED, MACH_RCV_PORT_CHANGED end the loop)."""
        try:
            return await self.receive_async()
        except K.MachError as e:
            if e.kr in _ENDED:
                raise StopAsyncIteration from None
            raise

    def fileno(self) -> int:
        """An fd that polls readable when a message may be waiting.
        Raises InvalidNameError (KERN_INVALID_NAME) once closed."""
        if not self._live:
            raise self._closed("fileno")
        e = SELF.space.lookup(self.name)
        if e is None:
            C.fail(K.KERN_INVALID_NAME, self._call("fileno"), f"{self.name:#x}")
        obj: Any = e.object
        return int(obj.fileno())

    def _release(self) -> None:
        R.destroy(SELF.space, self.name)


class Port(_Receiver):
    """A receive right. ``Port()`` makes a new port; ``Port(name)`` takes
    on a receive right we already hold under ``name``."""

    __slots__ = ()

    def __init__(self, name: int | None = None) -> None:
        """Raises TypeError, ValueError (a name outside mach_port_name_t),
        InvalidNameError (KERN_INVALID_NAME: no such name;
        KERN_INVALID_RIGHT: the name holds no receive right), MachError
        (KERN_NO_SPACE, KERN_RESOURCE_SHORTAGE for a new port)."""
        if name is None:
            super().__init__(R.allocate(SELF.space, MACH_PORT_RIGHT_RECEIVE))
            return
        name = C.integer(name, "Port()", "name", C.NAME)
        try:
            t = R.type_of(SELF.space, name)
        except K.MachError as e:
            raise C.named(e, "Port()")
        if not t & MACH_PORT_TYPE_RECEIVE:
            C.fail(K.KERN_INVALID_RIGHT, "Port()", f"{name:#x} holds no receive right ({_rights_text(t)})")
        super().__init__(name)

    def make_send(self) -> SendRight:
        """A send right to this port (coalesced under the port's name).
        Raises InvalidNameError (KERN_INVALID_NAME) once closed.

        Conditions: nothing locked; takes the space's lock and, under it,
        the port's lock."""
        if not self._live:
            raise self._closed("make_send")
        space = SELF.space
        with space.lock:
            e = space.lookup(self.name)
            if e is None:
                C.fail(K.KERN_INVALID_NAME, self._call("make_send"), f"{self.name:#x}")
            try:
                R.insert_send_of_own_port(space, self.name, e)
            except K.MachError as err:
                raise C.named(err, self._call("make_send"))
        return SendRight(self.name)

    def make_send_once(self) -> SendOnceRight:
        """A send-once right to this port, under a fresh name.
        Raises InvalidNameError (KERN_INVALID_NAME) once closed."""
        if not self._live:
            raise self._closed("make_send_once")
        try:
            name, _t = R.extract_right(SELF.space, self.name, MD.MACH_MSG_TYPE_MAKE_SEND_ONCE)
        except K.MachError as e:
            raise C.named(e, self._call("make_send_once"))
        return SendOnceRight(name)

    def close(self) -> None:
        """Destroy the receive right (and our send rights under its name);
        senders see a dead name."""
        super().close()

    def _state(self) -> str:
        try:
            return _rights_text(R.type_of(SELF.space, self.name))
        except K.MachError:
            return "destroyed"


class PortSet(_Receiver):
    """A port set: receive from whichever member has a message."""

    __slots__ = ()

    def __init__(self, ports: Iterable[Port] = ()) -> None:
        """Raises TypeError (a member that is not a Port), MachError
        (KERN_ALREADY_IN_SET; KERN_NO_SPACE); on error no set is left."""
        if not isinstance(ports, Iterable) or isinstance(ports, (str, bytes)):
            raise C.type_error("PortSet()", "ports", "an iterable of Port", ports)
        members = list(ports)
        for i, p in enumerate(members):
            C.instance(p, Port, "PortSet()", f"ports[{i}]")
        super().__init__(R.allocate(SELF.space, MACH_PORT_RIGHT_PORT_SET))
        try:
            for p in members:
                self.add(p)
        except BaseException:
            self.close()
            raise

    def add(self, port: Port) -> None:
        """Insert a member. Raises TypeError, MachError (KERN_ALREADY_IN_SET,
        KERN_INVALID_NAME once either is closed)."""
        self._member("add", port)
        try:
            R.insert_member(SELF.space, port.name, self.name)
        except K.MachError as e:
            raise C.named(e, self._call("add"))

    def remove(self, port: Port) -> None:
        """Extract a member. Raises TypeError, MachError (KERN_NOT_IN_SET,
        KERN_INVALID_NAME once either is closed)."""
        self._member("remove", port)
        try:
            R.extract_member(SELF.space, port.name, self.name)
        except K.MachError as e:
            raise C.named(e, self._call("remove"))

    def _member(self, verb: str, port: object) -> None:
        C.instance(port, Port, self._call(verb), "port")
        if not self._live:
            raise self._closed(verb)
        assert isinstance(port, Port)
        if not port._live:
            C.fail(K.KERN_INVALID_NAME, self._call(verb), f"the port {port.name:#x} is closed")

    def _state(self) -> str:
        e = SELF.space.lookup(self.name)
        if e is None or not e.type & MACH_PORT_TYPE_PORT_SET:
            return "destroyed"
        ports = {id(p): p for p in list(e.object.members.values())}  # type: ignore[attr-defined]
        members = sorted(SELF.space.name_of(p) for p in ports.values())
        return "port-set members=[" + ", ".join(f"{n:#x}" for n in members) + "]"


class _ReplyPort:
    """A thread's reply port, kept as libsyscall keeps MIG's
    (mig_get_reply_port, libsyscall/mach/mig_reply_port.c): made on the
    thread's first request, reused by each later one, destroyed when the
    thread exits. Guarded (MPO_CONTEXT_AS_GUARD): a mach_port_destroy of its
    name elsewhere in the task is refused, so the name cannot be freed and
    reused under a request."""

    __slots__ = ("port", "space", "thread", "busy")

    def __init__(self) -> None:
        """Raises MachError (KERN_NO_SPACE, KERN_RESOURCE_SHORTAGE)."""
        self.thread = 0  # (no port to drop yet, should this fail)
        space = SELF.space
        name = R.construct(space, MPO_CONTEXT_AS_GUARD, 0, id(self))
        port = self.port = _new(Port)
        port.name, port._live = name, True
        self.space = space
        self.busy = False  # a request of the thread's waits on it
        self.thread = threading.get_ident()

    def drop(self) -> None:
        """Destroy the port (mig_dealloc_reply_port), if this task's space
        still holds it: in a fork child the space was renewed and the name
        is not ours. Raises nothing.

        Conditions: nothing locked (__del__ runs in the thread that owns it,
        as it exits); takes the space's lock (destruct)."""
        port = self.port
        if port._live:
            port._live = False
            if self.space is SELF.space:
                try:
                    R.destruct(self.space, port.name, 0, id(self))
                except K.MachError:
                    pass  # no longer ours (its receive right was moved away by name)

    def __del__(self) -> None:
        # A thread's locals go when it exits, in that thread. A fork child
        # drops the other threads' locals in the forking thread before its
        # space is renewed: their ports are not the child's to destroy.
        if self.thread == threading.get_ident() and not sys.is_finalizing():
            self.drop()


class _Local(threading.local):
    """Per thread: its reply port, once it made a request."""

    reply: _ReplyPort | None = None


_LOCAL = _Local()


def release_reply_port() -> None:
    """Destroy this thread's reply port, as mig_dealloc_reply_port does;
    the next request() makes a new one. The free reply ports of
    request_async's pool are destroyed too. Raises nothing."""
    h = _LOCAL.reply
    if h is not None and not h.busy:
        _LOCAL.reply = None
        h.drop()
    if _POOL_SPACE[0] is SELF.space:
        while _POOL:
            _POOL.pop().close()


def request(dest: SendRight, msg: Message | bytes, *, id: int = 0, timeout: float | None = None) -> Message:
    """Send ``msg`` with a send-once reply right and wait for the reply,
    ``timeout`` seconds for each. The reply right is to this thread's
    reply port, made on its first request and reused, as MIG stubs use
    mig_get_reply_port(). A request that fails in any way (a send or
    receive error, a timeout, an exception while it waits) destroys that
    port, as MIG's stubs call mig_dealloc_reply_port(), so a late reply to
    it is refused (MACH_SEND_INVALID_DEST to its sender) and is never
    taken as the reply to a later request.

    Raises TypeError, ValueError (as SendRight.send), MachError:
    MACH_SEND_INVALID_DEST (the destination is gone, or ``dest`` was
    closed), MACH_SEND_TIMED_OUT, MACH_RCV_TIMED_OUT (no reply within
    ``timeout``), MACH_RCV_TOO_LARGE (a reply over 1 MiB: destroyed with
    the port), KERN_NO_SPACE or KERN_RESOURCE_SHORTAGE (the thread's reply
    port could not be made)."""
    if not isinstance(dest, SendRight):
        raise C.type_error("request()", "dest", "SendRight or SendOnceRight", dest)
    if timeout is None:
        ms = 0
    elif type(timeout) in _NUMBER and 0 <= timeout <= _TIMEOUT_MAX:
        ms = int(timeout * 1000)
    else:
        ms = C.timeout_ms(timeout, "request()") or 0
    h = _LOCAL.reply
    if h is None or h.space is not SELF.space:
        h = _LOCAL.reply = _ReplyPort()  # first use, or a fork child (its parent's stays the parent's)
    elif h.busy:
        # a request made while this thread's own waits (from a signal
        # handler): a port of its own, so neither takes the other's reply
        with Port() as port:
            dest.send(msg, id=id, reply=port, timeout=timeout)
            return port.receive(timeout)
    port = h.port
    h.busy = True
    try:
        if type(dest) is SendRight and type(msg) is bytes and type(id) is int and _ID_MIN <= id <= _ID_MAX:
            # the common request, laid out and sent here (as SendRight.send
            # and Port.receive would, with the same checks and errors)
            if not dest._live:
                raise dest._closed("send", K.MACH_SEND_INVALID_DEST)
            option, rcv_option = (_SEND_OPTION, _RCV_OPTION) if timeout is None else (_SEND_TIMEOUT, _RCV_TIMEOUT)
            n = len(msg)
            if n:
                lay = _LAYOUTS.get(n) or _layout(n)
                raw = lay.pack(_REQUEST_BITS, lay.size, dest.name, port.name, 0, id, n, msg)
            else:
                raw = HDR.pack(_REQUEST_BITS, HDR.size, dest.name, port.name, 0, id)
            space = SELF.space
            try:
                KM.send(space, raw, option, ms)
            except K.MachError as e:
                raise C.named(e, "SendRight.send()")
            try:
                raw = KM.receive(space, port.name, _RCV_MAX, rcv_option, ms)
            except K.MachError as e:
                raise C.named(e, "Port.receive()")
            reply = _decode(raw)
        else:
            dest.send(msg, id=id, reply=port, timeout=timeout)
            reply = port.receive(timeout)
    except BaseException:
        # MIG's choice (mig_dealloc_reply_port): the port goes, and with it
        # whatever may still come for this request. After any failure, a
        # failed send included: one that fails once its reply right is
        # made (a send-once connection of its own) leaves a send-once
        # notification on the port, as XNU's destroyed message does
        _LOCAL.reply = None
        h.drop()
        raise
    h.busy = False
    return reply


async def request_async(dest: SendRight, msg: Message | bytes, *, id: int = 0,
                        timeout: float | None = None) -> Message:
    """As request, on the running asyncio loop (send_async, then
    receive_async, ``timeout`` seconds for each). Reply ports come from a
    pool of the task's (at most _POOL_MAX, shared by every loop and
    thread): a request takes one, or makes one when none is free, and
    gives it back only after it got its reply. A request that fails in
    any way (an error, a timeout, a cancellation) destroys its port, as
    MIG's stubs do (mig_dealloc_reply_port): it leaves no port and no fd,
    and a reply that comes later is destroyed with the port (its rights
    released). A send that must wait for room is tried again with the
    same reply port, emptied after each failed try of what the reply right
    made for it left (_drain).

    Raises as request: TypeError, ValueError, MachError
    (MACH_SEND_INVALID_DEST, MACH_SEND_TIMED_OUT, MACH_RCV_TIMED_OUT,
    MACH_RCV_TOO_LARGE, KERN_NO_SPACE, KERN_RESOURCE_SHORTAGE)."""
    if not isinstance(dest, SendRight):
        raise C.type_error("request_async()", "dest", "SendRight or SendOnceRight", dest)
    C.timeout_ms(timeout, "request_async()")
    port = _pooled_port()
    try:
        try:
            dest.send(msg, id=id, reply=port, timeout=0)
        except K.MachError as e:
            if e.kr != K.MACH_SEND_TIMED_OUT or timeout == 0:
                raise
            _drain(port)

            def attempt() -> None:
                try:
                    dest.send(msg, id=id, reply=port, timeout=0)
                except K.MachError:
                    _drain(port)
                    raise

            await _aio().send(_cap(dest), attempt, timeout)
        reply = await port.receive_async(timeout)
    except BaseException:
        port.close()
        raise
    _give_back(port)
    return reply


def _drain(port: Port) -> None:
    """Destroy what a send that failed left on its reply port: a reply
    right with a connection of its own that was made and not sent closes
    unused, which is a send-once notification on the port (as XNU's
    destroyed message gives one). Nobody else holds a right to the port,
    so whatever it holds is that."""
    while True:
        try:
            port.receive(0).release()
        except K.MachError as e:
            if e.kr == K.MACH_RCV_TIMED_OUT:
                return
            raise


# request_async's reply ports: free ones, and the space they belong to (a
# fork child starts with none: its parent's names are not its own)
_POOL: list[Port] = []
_POOL_MAX = 32
_POOL_SPACE: list[object] = [None]


def _pooled_port() -> Port:
    """A free reply port of the pool, or a new one. Raises MachError
    (KERN_NO_SPACE, KERN_RESOURCE_SHORTAGE)."""
    if _POOL_SPACE[0] is not SELF.space:
        _POOL.clear()
        _POOL_SPACE[0] = SELF.space
    try:
        return _POOL.pop()
    except IndexError:
        return Port()


def _give_back(port: Port) -> None:
    """A reply port whose request got its reply: free again (destroyed
    when the pool is full)."""
    if len(_POOL) < _POOL_MAX and _POOL_SPACE[0] is SELF.space:
        _POOL.append(port)
    else:
        port.close()


def _aio() -> Any:
    """pymach.aio, loaded by the first asynchronous call (it imports asyncio)."""
    from . import aio
    return aio


def _cap(right: SendRight) -> object:
    """The send capability behind ``right``'s name, or None."""
    e = SELF.space.lookup(right.name)
    return None if e is None else e.cap


def register_ports(*rights: SendRight | None) -> None:
    """mach_ports_register: up to three send rights that fork children and
    programs started with pymach.spawn inherit. Raises TypeError (not a
    SendRight or None), MachError (KERN_INVALID_ARGUMENT for more than
    three, KERN_INVALID_RIGHT)."""
    for i, r in enumerate(rights):
        C.optional(r, SendRight, "register_ports()", f"rights[{i}]")
    try:
        ipc_tt.ports_register(SELF.space, [r.name if r is not None else 0 for r in rights])
        return
    except OSError as e:  # a MachError keeps its code
        kr = K.kr_from_oserror(e, K.ERRNO_SPACE)
    K.check(kr, "register_ports(): mach_ports_register")


def registered_ports() -> list[SendRight | None]:
    """mach_ports_lookup: the registered send rights, as names of ours."""
    return [SendRight(name) if name else None for name in ipc_tt.ports_lookup(SELF.space)]
