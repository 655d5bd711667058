"""The frames that netmsg proxies send each other over NATS: pure struct
code, no I/O, every length checked against the bytes received.

A frame is a header and a body by kind::

    magic "PMN1" | version u8 | kind u8 | reserved u16 | src incarnation u64 | src host (u8 length + utf-8)

- MSG: one chunk of an encoded Mach message to a port of the receiving
  host: dest (incarnation u64, port id u64, generation u32), seq u64,
  total u32 (the encoded message's length), offset u32, then the chunk.
- ACK: home → sender: the port (incarnation, id, generation), the highest
  seq received in order, how many of the sender's messages the home has
  delivered to the port (u32, cumulative: a lost ACK is made good by the
  next one), and the sender's incarnation it answers (u64: an ACK meant
  for an older incarnation of the sender is not taken).
- MORE: home → sender, while a message of several chunks comes in: the
  port, its seq, how many of its bytes the home holds (u32, from the
  start, without a gap), ``gap`` (u8: 1 when a chunk came past a gap, so
  the sender goes back to ``have``), the sender's incarnation (u64). The
  sender keeps a few chunks in flight ahead of ``have`` and no more.
- FENCED: to a host whose incarnation (u64) the sender has declared dead:
  that incarnation is not heard here any more; it takes a new one.
- DEAD: home → holder: the port died (its name).
- DROP: holder → home: the holder released ``count`` references (u32) it
  was given to the port; ``kind`` PORT_SEND or PORT_SEND_ONCE.
- BEAT: a lease beat (the header alone): the sender's incarnation is alive.
- LEND: holder → home, before the holder sends a right to the port on to
  a third host: the port, the right (PORT_SEND: ``count`` u32 references
  that are the third host's now, besides the holder's own; PORT_SEND_ONCE:
  the third host holds the right instead of the holder),
  the third host's incarnation u64 (0: not known) and name (u8 length +
  utf-8).

An encoded Mach message (the payload of MSG frames)::

    bits u32 (remote and local dispositions only) | msgh_id i32 | ndesc u32 | reply ref | descriptors | inline

A port reference (``Ref``) names a port by its home: host, incarnation,
port id, generation, and the right it stands for (PORT_SEND 17,
PORT_SEND_ONCE 18; 0 for no port). Descriptors: PORT (a Ref), OOL (copy
flag u8, length u32, the bytes), ENTRY (a memory entry's protection u32,
length u32, the bytes: it arrives as a new entry holding a copy).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Final

MAGIC: Final = b"PMN1"
VERSION: Final = 1

MSG: Final = 1
ACK: Final = 2
DEAD: Final = 3
DROP: Final = 4
BEAT: Final = 5
LEND: Final = 6
MORE: Final = 7
FENCED: Final = 8
KINDS: Final = frozenset((MSG, ACK, DEAD, DROP, BEAT, LEND, MORE, FENCED))

PORT_SEND: Final = 17
PORT_SEND_ONCE: Final = 18

D_PORT: Final = 1
D_OOL: Final = 2
D_ENTRY: Final = 3

_HEAD: Final = struct.Struct("<4sBBHQB")
_PORTID: Final = struct.Struct("<QQI")
_MSG: Final = struct.Struct("<QQIQII")
_ACK: Final = struct.Struct("<QQIQIQ")
_MORE: Final = struct.Struct("<QQIQIBQ")
_FENCED: Final = struct.Struct("<Q")
_DROP: Final = struct.Struct("<QQIBI")
_LEND: Final = struct.Struct("<QQIBIQB")
_REF: Final = struct.Struct("<QQIB")
_MHEAD: Final = struct.Struct("<IiI")
_OOL: Final = struct.Struct("<BI")
_ENTRY: Final = struct.Struct("<II")

HOST_MAX: Final = 255
MAX_PORT_ID: Final = (1 << 64) - 1


class WireError(ValueError):
    """A frame or an encoded message that is not well formed."""


@dataclass(frozen=True)
class Ref:
    """A port's network name and the right a reference stands for."""

    host: str
    incarnation: int
    port_id: int
    generation: int = 0
    kind: int = PORT_SEND

    @property
    def port(self) -> tuple[str, int, int, int]:
        return (self.host, self.incarnation, self.port_id, self.generation)


@dataclass
class Frame:
    kind: int
    src_host: str
    src_incarnation: int
    # MSG, ACK, DEAD, DROP: the port (at its home)
    incarnation: int = 0
    port_id: int = 0
    generation: int = 0
    seq: int = 0
    total: int = 0
    offset: int = 0
    chunk: bytes | memoryview = b""
    delivered: int = 0
    have: int = 0             # MORE: bytes of message ``seq`` the home holds
    gap: int = 0              # MORE: 1 after a chunk past a gap
    count: int = 0
    right: int = 0
    # LEND: the host the right goes on to (and its incarnation); ACK, MORE:
    # the incarnation of the sender answered; FENCED: ``incarnation``
    to_host: str = ""
    to_incarnation: int = 0


@dataclass
class Encoded:
    """A Mach message as it travels: ``remote_kind`` is the disposition of
    the destination right the sender used (PORT_SEND or PORT_SEND_ONCE),
    ``reply`` the right in msgh_local_port, ``descriptors`` a list of
    (D_PORT, Ref | None) / (D_OOL, (copy, bytes)) / (D_ENTRY, (prot, bytes))."""

    msg_id: int
    remote_kind: int
    reply: Ref | None = None
    descriptors: list[tuple[int, object]] = field(default_factory=list)
    inline: bytes = b""


def valid_host(name: str) -> bool:
    """A host name as netmsg takes it: 1 to 64 of letters, digits, '-' and
    '_' (it is a token of NATS subjects)."""
    return 0 < len(name) <= 64 and all(c.isascii() and (c.isalnum() or c in "-_") for c in name)


def _host(name: str) -> bytes:
    raw = name.encode()
    if not raw or len(raw) > HOST_MAX:
        raise WireError(f"a host name is 1 to {HOST_MAX} bytes: {name!r}")
    return raw


def _take(buf: bytes | bytearray | memoryview, off: int, n: int) -> tuple[bytes, int]:
    if n < 0 or off + n > len(buf):
        raise WireError(f"truncated: {n} bytes wanted at {off} of {len(buf)}")
    return bytes(buf[off:off + n]), off + n


def _unpack(s: struct.Struct, buf: bytes | bytearray | memoryview, off: int) -> tuple[tuple[Any, ...], int]:
    if off + s.size > len(buf):
        raise WireError(f"truncated: {s.size} bytes wanted at {off} of {len(buf)}")
    return s.unpack_from(buf, off), off + s.size


def pack(f: Frame) -> bytes:
    """The bytes of a frame. Raises WireError for a field out of range."""
    host = _host(f.src_host)
    try:
        head = _HEAD.pack(MAGIC, VERSION, f.kind, 0, f.src_incarnation, len(host)) + host
        if f.kind == MSG:
            return head + _MSG.pack(f.incarnation, f.port_id, f.generation, f.seq, f.total, f.offset) + f.chunk
        if f.kind == ACK:
            return head + _ACK.pack(f.incarnation, f.port_id, f.generation, f.seq, f.delivered, f.to_incarnation)
        if f.kind == MORE:
            return head + _MORE.pack(f.incarnation, f.port_id, f.generation, f.seq, f.have, f.gap,
                                     f.to_incarnation)
        if f.kind == FENCED:
            return head + _FENCED.pack(f.incarnation)
        if f.kind == DEAD:
            return head + _PORTID.pack(f.incarnation, f.port_id, f.generation)
        if f.kind == DROP:
            return head + _DROP.pack(f.incarnation, f.port_id, f.generation, f.right, f.count)
        if f.kind == BEAT:
            return head
        if f.kind == LEND:
            to = _host(f.to_host)
            return head + _LEND.pack(f.incarnation, f.port_id, f.generation, f.right, f.count, f.to_incarnation,
                                     len(to)) + to
    except struct.error as e:
        raise WireError(str(e)) from None
    raise WireError(f"no such frame kind: {f.kind}")


def unpack(buf: bytes | memoryview) -> Frame:
    """The frame in ``buf``. Raises WireError for anything malformed: a bad
    magic or version, an unknown kind, a truncated or oversized body, a
    chunk that does not fit its message."""
    (magic, version, kind, _r, inc, hlen), off = _unpack(_HEAD, buf, 0)
    if magic != MAGIC or version != VERSION:
        raise WireError("not a netmsg frame of this version")
    raw, off = _take(buf, off, hlen)
    try:
        host = raw.decode()
    except UnicodeDecodeError:
        raise WireError("a host name that is not utf-8") from None
    if not host:
        raise WireError("an empty host name")
    f = Frame(kind, host, inc)
    if kind == MSG:
        (f.incarnation, f.port_id, f.generation, f.seq, f.total, f.offset), off = _unpack(_MSG, buf, off)
        f.chunk = memoryview(buf)[off:]  # (not a copy: Reassembly copies it into the message)
        if f.offset + len(f.chunk) > f.total or (not f.chunk and f.total):
            raise WireError("a chunk outside its message")
        return f
    if kind == ACK:
        (f.incarnation, f.port_id, f.generation, f.seq, f.delivered, f.to_incarnation), off = _unpack(
            _ACK, buf, off)
    elif kind == MORE:
        (f.incarnation, f.port_id, f.generation, f.seq, f.have, f.gap, f.to_incarnation), off = _unpack(
            _MORE, buf, off)
    elif kind == FENCED:
        (f.incarnation,), off = _unpack(_FENCED, buf, off)
    elif kind == DEAD:
        (f.incarnation, f.port_id, f.generation), off = _unpack(_PORTID, buf, off)
    elif kind == DROP:
        (f.incarnation, f.port_id, f.generation, f.right, f.count), off = _unpack(_DROP, buf, off)
        if f.right not in (PORT_SEND, PORT_SEND_ONCE):
            raise WireError(f"a DROP of right {f.right}")
    elif kind == LEND:
        (f.incarnation, f.port_id, f.generation, f.right, f.count, f.to_incarnation, tlen), off = _unpack(
            _LEND, buf, off)
        if f.right not in (PORT_SEND, PORT_SEND_ONCE):
            raise WireError(f"a LEND of right {f.right}")
        raw, off = _take(buf, off, tlen)
        try:
            f.to_host = raw.decode()
        except UnicodeDecodeError:
            raise WireError("a host name that is not utf-8") from None
        if not f.to_host:
            raise WireError("an empty host name")
    elif kind != BEAT:
        raise WireError(f"no such frame kind: {kind}")
    if off != len(buf):
        raise WireError("trailing bytes after the frame")
    return f


def chunk_room(src_host: str, limit: int) -> int:
    """How many payload bytes a MSG frame from ``src_host`` carries when
    frames are at most ``limit`` bytes long."""
    room = limit - (_HEAD.size + len(_host(src_host)) + _MSG.size)
    if room < 1:
        raise WireError(f"a payload limit of {limit} bytes leaves no room for a chunk")
    return room


def chunk_count(payload_len: int, room: int) -> int:
    """How many MSG frames carry a payload of ``payload_len`` bytes."""
    if payload_len > 0xFFFFFFFF:
        raise WireError("a message over 4 GiB")
    return max(1, -(-payload_len // room))


def chunk(src_host: str, src_incarnation: int, dest: Ref, seq: int, payload: bytes, room: int, index: int) -> bytes:
    """MSG frame number ``index`` of ``payload`` (``room`` bytes a frame;
    the slice is not a copy: the chunk is copied once, into its frame)."""
    off = index * room
    return pack(Frame(MSG, src_host, src_incarnation, dest.incarnation, dest.port_id, dest.generation, seq,
                      len(payload), off, memoryview(payload)[off:off + room]))


def chunks(src_host: str, src_incarnation: int, dest: Ref, seq: int, payload: bytes, limit: int) -> list[bytes]:
    """The MSG frames that carry ``payload`` to ``dest``, each at most
    ``limit`` bytes long."""
    room = chunk_room(src_host, limit)
    return [chunk(src_host, src_incarnation, dest, seq, payload, room, i)
            for i in range(chunk_count(len(payload), room))]


def _pack_ref(r: Ref | None) -> bytes:
    if r is None:
        return b"\0"
    host = _host(r.host)
    return bytes([len(host)]) + host + _REF.pack(r.incarnation, r.port_id, r.generation, r.kind)


def _unpack_ref(buf: bytes | bytearray | memoryview, off: int) -> tuple[Ref | None, int]:
    raw, off = _take(buf, off, 1)
    if not raw[0]:
        return None, off
    host, off = _take(buf, off, raw[0])
    (inc, pid, gen, kind), off = _unpack(_REF, buf, off)
    if kind not in (PORT_SEND, PORT_SEND_ONCE):
        raise WireError(f"a port reference of right {kind}")
    try:
        return Ref(host.decode(), inc, pid, gen, kind), off
    except UnicodeDecodeError:
        raise WireError("a host name that is not utf-8") from None


def encode(m: Encoded) -> bytes:
    """The bytes of an encoded message."""
    out = [_MHEAD.pack(m.remote_kind, m.msg_id, len(m.descriptors)), _pack_ref(m.reply)]
    for kind, value in m.descriptors:
        out.append(bytes([kind]))
        if kind == D_PORT:
            assert value is None or isinstance(value, Ref)
            out.append(_pack_ref(value))
        elif kind in (D_OOL, D_ENTRY):
            assert isinstance(value, tuple)
            flag, data = value
            out.append((_OOL.pack(flag, len(data)) if kind == D_OOL else _ENTRY.pack(flag, len(data))))
            out.append(data)  # (any buffer: copied once, by the join)
        else:
            raise WireError(f"no such descriptor kind: {kind}")
    out.append(m.inline)
    return b"".join(out)


def decode(buf: bytes | bytearray | memoryview) -> Encoded:
    """The message in ``buf``. Raises WireError for anything malformed.
    Out-of-line bytes of a writable ``buf`` (a reassembled message) are
    views into it, not copies."""
    (remote_kind, msg_id, n), off = _unpack(_MHEAD, buf, 0)
    mv = memoryview(buf)
    whole = None if mv.readonly else mv
    if remote_kind not in (PORT_SEND, PORT_SEND_ONCE):
        raise WireError(f"a destination right of kind {remote_kind}")
    if n > len(buf):
        raise WireError(f"{n} descriptors in {len(buf)} bytes")
    reply, off = _unpack_ref(buf, off)
    m = Encoded(msg_id, remote_kind, reply)
    for _ in range(n):
        raw, off = _take(buf, off, 1)
        kind = raw[0]
        if kind == D_PORT:
            ref, off = _unpack_ref(buf, off)
            m.descriptors.append((D_PORT, ref))
        elif kind in (D_OOL, D_ENTRY):
            (flag, size), off = _unpack(_OOL if kind == D_OOL else _ENTRY, buf, off)
            if off + size > len(buf):
                raise WireError(f"truncated: {size} bytes wanted at {off} of {len(buf)}")
            data = bytes(buf[off:off + size]) if whole is None else whole[off:off + size]
            off += size
            m.descriptors.append((kind, (flag, data)))
        else:
            raise WireError(f"no such descriptor kind: {kind}")
    m.inline = bytes(buf[off:])
    return m


class Reassembly:
    """The chunks of one message as they come (in order: NATS keeps one
    publisher's order on one subscription), copied into one buffer of the
    message's length. A chunk it already has (the message sent again by a
    sender that had no acknowledgement yet, while its first sending is
    still arriving) is skipped: the second sending carries the assembly on
    where the first one is. A chunk past a gap (one before it lost) is
    not taken: ``have`` stays where the gap is, for the sender to go back
    to."""

    __slots__ = ("total", "buf", "have")

    def __init__(self, total: int) -> None:
        self.total = total
        self.buf = bytearray(total)
        self.have = 0

    def add(self, f: Frame) -> bytearray | None:
        """Add a chunk; the whole payload once complete, None until then
        (and for a chunk past a gap: ``have`` does not move). Raises
        WireError for a chunk of a message of another length."""
        n = len(f.chunk)
        if f.total != self.total:
            raise WireError(f"chunk of a message of {f.total} bytes, expected {self.total}")
        if f.offset > self.have or f.offset + n <= self.have:
            return None  # past a gap, or had
        skip = self.have - f.offset
        self.buf[self.have:f.offset + n] = memoryview(f.chunk)[skip:]
        self.have = f.offset + n
        if self.have == self.total:
            return self.buf
        return None


def pack_ref(r: Ref | None) -> bytes:
    """A port reference alone (netname look-up answers)."""
    return _pack_ref(r)


def unpack_ref(buf: bytes | memoryview) -> Ref | None:
    """The port reference that is all of ``buf``. Raises WireError."""
    r, off = _unpack_ref(buf, 0)
    if off != len(buf):
        raise WireError("trailing bytes after a port reference")
    return r
