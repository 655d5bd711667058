"""The Pythonic IPC layer: Port (a receive right), SendRight,
SendOnceRight, PortSet and Message.

Rights are context managers; ``close()`` releases our reference and is
idempotent. ``fileno()`` polls readable when a message may be waiting, for
selectors and asyncio. A message carries bytes, rights (in port
descriptors) and out-of-line memory (copy-on-write on receipt).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Union

from ._linux.mm import view
from .kern import ipc_right as R
from .kern import kern_return as K
from .kern import mach_msg as KM
from .kern import message_defs as MD
from .kern.ipc_kmsg import HDR, OOL_DESC, PORT_DESC
from .kern.ipc_space import (MACH_PORT_RIGHT_PORT_SET, MACH_PORT_RIGHT_RECEIVE, MACH_PORT_TYPE_SEND,
                             MACH_PORT_TYPE_SEND_ONCE)
from .kern.task import SELF
from .kern import vm_defs as V
from .kern.vm_memory_entry import MemoryEntry as KMemoryEntry
from .kern.vm_user import PAGE_MASK, vm_deallocate, vm_make_memory_entry, vm_map_entry
from .mach._args import address_of

if TYPE_CHECKING:
    from .task import Region

__all__ = ["Port", "SendRight", "SendOnceRight", "PortSet", "Message", "MemoryEntry", "request",
           "register_ports", "registered_ports"]

_AUDIT = MD.MACH_RCV_TRAILER_ELEMENTS(MD.MACH_RCV_TRAILER_AUDIT)
_TRAILER = struct.Struct("<III2I8I")


class _Right:
    """A name in our IPC space."""

    __slots__ = ("name", "_live")

    def __init__(self, name: int) -> None:
        self.name = name
        self._live = True

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

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name:#x}{'' if self._live else ' closed'}>"


Sendable = Union["SendRight", "SendOnceRight"]


@dataclass
class Message:
    """A message: ``id`` (msgh_id), ``data``, ``rights`` (SendRight or
    SendOnceRight, one port descriptor each), ``ool`` (out-of-line buffers;
    on receipt, memoryviews of copy-on-write mappings). On receipt also
    ``reply`` (the right to answer with), ``seqno`` and the sender's
    kernel-verified ``pid``, ``uid`` and ``gid``."""

    data: bytes = b""
    id: int = 0
    rights: list[Sendable] = field(default_factory=list)
    ool: list[bytes | bytearray | memoryview] = field(default_factory=list)
    reply: Sendable | None = None
    seqno: int = 0
    pid: int = 0
    uid: int = 0
    gid: int = 0
    _regions: list[tuple[int, int]] = field(default_factory=list, repr=False)

    def release(self) -> None:
        """Unmap received out-of-line memory and close received rights."""
        for addr, size in self._regions:
            vm_deallocate(SELF.task_name, addr, size)
        self._regions.clear()
        for r in self.rights:
            r.close()
        if self.reply is not None:
            self.reply.close()


def _encode(dest: int, dest_disp: int, msg: Message, reply: int, reply_disp: int) -> tuple[bytes, list[object]]:
    keep: list[object] = []
    body = bytearray()
    complex_ = bool(msg.rights or msg.ool)
    if complex_:
        body += struct.pack("<I", len(msg.rights) + len(msg.ool))
        for r in msg.rights:
            disp = MD.MACH_MSG_TYPE_COPY_SEND if isinstance(r, SendRight) else MD.MACH_MSG_TYPE_MOVE_SEND_ONCE
            body += PORT_DESC.pack(r.name, 0, 0, 0, disp, MD.MACH_MSG_PORT_DESCRIPTOR)
        for buf in msg.ool:
            data = bytes(buf)
            keep.append(data)
            addr = address_of(data)[0]
            body += OOL_DESC.pack(addr, 0, MD.MACH_MSG_VIRTUAL_COPY, 0, MD.MACH_MSG_OOL_DESCRIPTOR, len(data))
    if msg.data:
        # the exact length first (a Mach body is padded to 4 bytes); a
        # message without data is the bare header and descriptors, as C
        # programs lay it out
        body += struct.pack("<I", len(msg.data)) + msg.data + b"\0" * (-len(msg.data) % 4)
    bits = MD.MACH_MSGH_BITS(dest_disp, reply_disp) | (MD.MACH_MSGH_BITS_COMPLEX if complex_ else 0)
    return HDR.pack(bits, HDR.size + len(body), dest, reply, 0, msg.id) + bytes(body), keep


def _decode(raw: bytes) -> Message:
    bits, size, remote, _local, _v, msg_id = HDR.unpack_from(raw)
    off = HDR.size
    msg = Message(id=msg_id)
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
    t = _TRAILER.unpack_from(raw, size)
    msg.seqno, msg.uid, msg.gid, msg.pid = t[2], t[3], t[4], t[10]
    return msg


def _wrap(name: int, kind: int) -> "Sendable":
    if kind == MD.MACH_MSG_TYPE_PORT_SEND_ONCE:
        return SendOnceRight(name)
    e = SELF.space.lookup(name)
    if e is not None and isinstance(e.cap, KMemoryEntry):
        return MemoryEntry(name)
    return SendRight(name)


class SendRight(_Right):
    """A send right: send messages to the port, any number of times."""

    __slots__ = ()

    def send(self, msg: Message | bytes, *, id: int = 0, reply: "Port | None" = None,
             timeout: float | None = None, reply_once: bool = True) -> None:
        """Send ``msg`` (a Message, or bytes). With ``reply``, the message
        carries a send-once right to that port (with ``reply_once`` False,
        a send right, as the book's programs ask for). Raises MachError
        (MACH_SEND_INVALID_DEST when the port is gone, MACH_SEND_TIMED_OUT)."""
        m = msg if isinstance(msg, Message) else Message(bytes(msg), id)
        _send(self.name, self._disposition(), m, reply, timeout, reply_once)

    def _disposition(self) -> int:
        return MD.MACH_MSG_TYPE_COPY_SEND

    def copy(self) -> "SendRight":
        """Another reference to the same right (mach_port_mod_refs +1)."""
        R.mod_refs(SELF.space, self.name, 0, 1)
        return SendRight(self.name)

    @property
    def dead(self) -> bool:
        """True once the port is gone (the name is a dead name)."""
        return R.type_of(SELF.space, self.name) & MACH_PORT_TYPE_SEND == 0


class SendOnceRight(SendRight):
    """A send-once right: one message, then it is gone."""

    __slots__ = ()

    def _disposition(self) -> int:
        return MD.MACH_MSG_TYPE_MOVE_SEND_ONCE

    def send(self, msg: Message | bytes, *, id: int = 0, reply: "Port | None" = None,
             timeout: float | None = None, reply_once: bool = True) -> None:
        super().send(msg, id=id, reply=reply, timeout=timeout, reply_once=reply_once)
        self._live = False

    def copy(self) -> "SendRight":
        raise K.MachError(K.KERN_INVALID_RIGHT, "a send-once right cannot be copied")

    @property
    def dead(self) -> bool:
        return R.type_of(SELF.space, self.name) & MACH_PORT_TYPE_SEND_ONCE == 0


class MemoryEntry(SendRight):
    """A memory entry (mach_make_memory_entry_64): a name for memory that
    any task holding it maps with ``map()``. It travels in a Message's
    ``rights`` like a send right. Get one from ``Region.memory_entry()`` or
    ``MemoryEntry.create(size)``."""

    __slots__ = ()

    @classmethod
    def create(cls, size: int, protection: int = V.VM_PROT_READ | V.VM_PROT_WRITE) -> "MemoryEntry":
        """A fresh zero-filled object of ``size`` bytes (MAP_MEM_NAMED_CREATE).
        Raises MachError (KERN_INVALID_ARGUMENT: size 0; KERN_FAILURE: larger
        than ANON_MAX_SIZE)."""
        if size <= 0:
            raise K.MachError(K.KERN_INVALID_ARGUMENT, f"size {size}")
        name, _size = vm_make_memory_entry(SELF.task_name, size, 0, protection | V.MAP_MEM_NAMED_CREATE, 0)
        return cls(name)

    def _entry(self) -> KMemoryEntry:
        e = SELF.space.lookup(self.name)
        if e is None or not isinstance(e.cap, KMemoryEntry):
            raise K.MachError(K.KERN_INVALID_NAME, f"{self.name:#x} is not a memory entry")
        return e.cap

    @property
    def size(self) -> int:
        """The size of the memory it names, in bytes (whole pages)."""
        return self._entry().size

    @property
    def protection(self) -> int:
        """The most a mapping of it may allow (VM_PROT_* bits)."""
        return self._entry().protection

    def map(self, *, offset: int = 0, size: int | None = None, copy: bool = False,
            protection: int | None = None, max_protection: int | None = None,
            inheritance: int = V.VM_INHERIT_DEFAULT, address: int | None = None) -> "Region":
        """Map the entry (mach_vm_map): shared, or with ``copy`` a private
        snapshot taken now. Protections default to the entry's. Raises
        MachError (KERN_INVALID_RIGHT: more than the entry allows;
        KERN_INVALID_ARGUMENT: a range past the entry; KERN_NO_SPACE)."""
        from .task import Region, Task
        ent = self._entry()
        n = ent.size - offset if size is None else size
        cur = ent.protection if protection is None else protection
        mx = cur if max_protection is None else max_protection
        flags = V.VM_FLAGS_ANYWHERE if address is None else V.VM_FLAGS_FIXED
        a = vm_map_entry(SELF.task_name, address or 0, n, 0, flags, self.name, offset, int(copy), cur, mx,
                         inheritance)
        length = ent.size if ent.is_copy else (n + PAGE_MASK) & ~PAGE_MASK  # a copy entry maps whole
        return Region(Task.self(), a, length)

    def sub(self, offset: int, size: int, protection: int | None = None) -> "MemoryEntry":
        """An entry for part of this one, with at most its protection.
        Raises MachError (KERN_PROTECTION_FAILURE, KERN_INVALID_ARGUMENT)."""
        prot = self.protection if protection is None else protection
        name, _size = vm_make_memory_entry(SELF.task_name, size, offset, prot, self.name)
        return MemoryEntry(name)

    def send(self, msg: Message | bytes, *, id: int = 0, reply: "Port | None" = None,
             timeout: float | None = None, reply_once: bool = True) -> None:
        """Refused (MACH_SEND_INVALID_DEST): a memory entry serves no
        messages. (mach_msg to it gets a MIG_BAD_ID reply, as in XNU.)"""
        raise K.MachError(K.MACH_SEND_INVALID_DEST, "a memory entry is not a port to send to")

    def copy(self) -> "MemoryEntry":
        """Another reference to the same entry (one more user reference)."""
        R.mod_refs(SELF.space, self.name, 0, 1)
        return MemoryEntry(self.name)


def _send(dest: int, disp: int, m: Message, reply: "Port | None", timeout: float | None,
          reply_once: bool = True) -> None:
    make = MD.MACH_MSG_TYPE_MAKE_SEND_ONCE if reply_once else MD.MACH_MSG_TYPE_MAKE_SEND
    rname, rdisp = (reply.name, make) if reply is not None else (0, 0)
    raw, _keep = _encode(dest, disp, m, rname, rdisp)
    option = MD.MACH_SEND_MSG | (MD.MACH_SEND_TIMEOUT if timeout is not None else 0)
    KM.send(SELF.space, raw, option, int((timeout or 0) * 1000))
    for r in m.rights:
        if isinstance(r, SendOnceRight):
            r._live = False


class _Receiver(_Right):
    __slots__ = ()

    def receive(self, timeout: float | None = None, max_size: int = 1 << 20) -> Message:
        """The next message, waiting up to ``timeout`` seconds. Raises
        MachError (MACH_RCV_TIMED_OUT, MACH_RCV_TOO_LARGE: the message stays
        queued)."""
        option = MD.MACH_RCV_MSG | _AUDIT | MD.MACH_RCV_LARGE
        if timeout is not None:
            option |= MD.MACH_RCV_TIMEOUT
        raw = KM.receive(SELF.space, self.name, max_size, option, int((timeout or 0) * 1000))
        return _decode(raw)

    def fileno(self) -> int:
        """An fd that polls readable when a message may be waiting."""
        e = SELF.space.lookup(self.name)
        if e is None:
            raise K.MachError(K.KERN_INVALID_NAME, f"{self.name:#x}")
        return e.object.fileno()  # type: ignore[attr-defined]

    def _release(self) -> None:
        R.destroy(SELF.space, self.name)


class Port(_Receiver):
    """A receive right. ``Port()`` makes a new port."""

    __slots__ = ()

    def __init__(self, name: int | None = None) -> None:
        super().__init__(R.allocate(SELF.space, MACH_PORT_RIGHT_RECEIVE) if name is None else name)

    def make_send(self) -> SendRight:
        """A send right to this port (coalesced under the port's name)."""
        e = SELF.space.lookup(self.name)
        if e is None:
            raise K.MachError(K.KERN_INVALID_NAME, f"{self.name:#x}")
        R.insert_send_of_own_port(SELF.space, self.name, e)
        return SendRight(self.name)

    def make_send_once(self) -> SendOnceRight:
        """A send-once right to this port, under a fresh name."""
        name, _t = R.extract_right(SELF.space, self.name, MD.MACH_MSG_TYPE_MAKE_SEND_ONCE)
        return SendOnceRight(name)

    def close(self) -> None:
        """Destroy the receive right (and our send rights under its name);
        senders see a dead name."""
        super().close()


class PortSet(_Receiver):
    """A port set: receive from whichever member has a message."""

    __slots__ = ()

    def __init__(self, ports: Iterable[Port] = ()) -> None:
        super().__init__(R.allocate(SELF.space, MACH_PORT_RIGHT_PORT_SET))
        for p in ports:
            self.add(p)

    def add(self, port: Port) -> None:
        """Insert a member. Raises MachError (KERN_ALREADY_IN_SET)."""
        R.insert_member(SELF.space, port.name, self.name)

    def remove(self, port: Port) -> None:
        """Extract a member. Raises MachError (KERN_NOT_IN_SET)."""
        R.extract_member(SELF.space, port.name, self.name)


def request(dest: SendRight, msg: Message | bytes, *, id: int = 0, timeout: float | None = None) -> Message:
    """Send ``msg`` with a send-once reply right and wait for the reply."""
    with Port() as reply:
        dest.send(msg, id=id, reply=reply, timeout=timeout)
        return reply.receive(timeout)




def register_ports(*rights: SendRight | None) -> None:
    """mach_ports_register: up to three send rights that fork children and
    programs started with pymach.spawn inherit. Raises MachError
    (KERN_INVALID_ARGUMENT for more than three, KERN_INVALID_RIGHT)."""
    from .mach import mach_port_t, mach_ports_register
    arr = (mach_port_t * max(1, len(rights)))(*[r.name if r is not None else 0 for r in rights])
    K.check(mach_ports_register(SELF.task_name, arr, len(rights)), "mach_ports_register")


def registered_ports() -> list[SendRight | None]:
    """mach_ports_lookup: the registered send rights, as names of ours."""
    out: list[SendRight | None] = []
    for cap in SELF.registered:
        if cap is None:
            out.append(None)
        else:
            out.append(SendRight(R.copyout_send(SELF.space, cap.dup().detach_fds(), False)))  # type: ignore[attr-defined]
    return out
