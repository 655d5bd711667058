"""The per-host netmsg proxy: ports across hosts on NATS.

One asyncio loop, one NATS connection, no thread per port. Local ports
are received with pymach.aio (one port set holds the name service port,
the notification port and every local proxy port).

Exports (ports whose receive right lives here, sent to other hosts): the
proxy keeps one send right per port (coalesced under its name) and names
it (host, incarnation, port id, generation). It asks for a dead-name
notification on it, and counts the references it sent to each host; when
every host has given its references back (DROP frames, from their
no-senders), it releases the right, so the port sees no-senders once.
Send-once rights are exported one by one and given back once used or
dropped.

Imports (ports of another host that tasks here hold): one local proxy
port per remote port (coalesced), with a no-senders request; its messages
are received here and forwarded to the home host on ``pm.<home>.in.<id>``.
A send-once right becomes a proxy port of its own, destroyed after its one
message (or its send-once notification, forwarded as a DROP).

Guarantees kept here:

- FIFO and exactly once per (sender incarnation, port): each forwarded
  message carries the next sequence number of its import; the home
  delivers in order, holds back what comes early and drops what it has
  seen, and acknowledges what it received; what is not acknowledged is sent
  again, and after RETRIES tries its port is taken for dead;
- qlimit: an import holds credits (WINDOW at first); each forwarded
  message takes one, each delivery into the real port gives one back;
  without credit (or with BYTE_WINDOW bytes undelivered) the proxy port
  leaves the port set, so its queue fills and local senders block or time
  out (MACH_SEND_TIMED_OUT) at it, as at a local port;
- dead names: the home's dead-name notification becomes DEAD frames to
  every host holding a reference; they destroy their proxy ports, so
  holders see dead names;
- incarnations: a proxy that restarts has a new random incarnation; a
  frame for a port of an old incarnation of this host is answered with
  DEAD, and frames from an incarnation of a host older than the last one
  seen are dropped (and its proxy ports destroyed);
- leases: BEAT frames every lease / 3 to each host we deal with; a host
  not heard from for the lease is dead here (its incarnation fenced, its
  ports dead names, its references on our ports dropped); a proxy that
  hears none of them is the one cut off and takes a new incarnation;
- partitions: a host declared dead gets a BEAT every lease for
  DEAD_BEAT_FOR, and whatever a fenced incarnation sends is answered with
  FENCED; a proxy told so takes a new incarnation (both sides of a
  partial partition do, once it heals);
- chunks: a message of several chunks has at most CHUNK_WINDOW bytes in
  flight beyond what its home reports holding (MORE), so NATS's buffers
  (and its slow-consumer limit) never see more;
- references are counted per (host, incarnation): a restarted host's old
  references go with its old incarnation;
- a send right passed on to a third host names the port at its home;
  its holder sends the home a LEND (count the third host) before the
  right leaves, ahead of its own DROP; a home's count for a host may go
  below zero while a LEND is on its way, and the home releases its right
  only when every host's count is zero;
- a send-once right passed on to a third host is named at its home too
  (the kernel tells which proxy port it goes to), which is told of the
  new holder (LEND) and takes it as the right's only holder.

Not done yet: moving receive rights (refused); see docs/netmsg.md.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import nats
import nats.errors
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout

from .. import aio
from .._kern import ipc_right as R
from .._kern import kern_return as K
from .._kern import mach_msg as KM
from .._kern import message_defs as MD
from .._kern.ipc_notify import MACH_NOTIFY_DEAD_NAME, MACH_NOTIFY_NO_SENDERS, MACH_NOTIFY_SEND_ONCE
from .._kern.ipc_space import MACH_PORT_RIGHT_PORT_SET, MACH_PORT_RIGHT_RECEIVE, MACH_PORT_RIGHT_SEND
from .._kern.task import SELF
from .._kern.vm_defs import VM_PROT_READ, VM_PROT_WRITE
from .._kern.vm_memory_entry import MemoryEntry as KMemoryEntry
from .._kern.vm_user import vm_deallocate
from .._linux import mm
from .._linux.mm import view
from ..mach import netname_mig as NMIG
from ..mach._args import address_of
from . import netname as NN
from . import wire as NW

log = logging.getLogger("pymach.netmsg")

WINDOW: Final = 8          # credits an import starts with: messages in flight per (host, port)
# bytes of messages in flight per (host, port), not delivered yet: a home
# holds no more than this (and one message) for a sender's port
BYTE_WINDOW: Final = 64 << 20
AHEAD: Final = 4 * WINDOW  # a home keeps no message further ahead of the next expected than this
RCV_MAX: Final = 64 << 20  # the largest inline message forwarded
REQUEST_TIMEOUT: Final = 2.0
# a message its home has not acknowledged (received, not yet delivered) for
# RETRY_AFTER seconds is sent again, RETRIES times; then its port is taken
# for dead here ($PYMACH_NETMSG_RETRY: "SECONDS,TRIES")
RETRY_AFTER: Final = 1.0
RETRIES: Final = 10
DROP_DELAY: Final = 0.05     # s: between a proxy port's no-senders and the DROP to its home
# a host not heard from for LEASE seconds is dead here; every host we deal
# with gets a BEAT every LEASE / 3 seconds (pymach netmsg serve --lease)
LEASE: Final = 3.0
# a host declared dead still gets a BEAT every LEASE for DEAD_BEAT_FOR
# seconds: if it was only cut off, it hears that it is fenced (FENCED) once
# the network heals, and takes a new incarnation
DEAD_BEAT_FOR: Final = 600.0
# bytes of a message of several chunks in flight ahead of what its home
# holds (MORE frames say how much): NATS's buffers never hold more
CHUNK_WINDOW: Final = 8 << 20
FORWARDS_MAX: Final = 16     # LENDs of a send-once right kept ahead of their turn

HDR: Final = MD.HDR
PORT_DESC: Final = MD.PORT_DESC
OOL_DESC: Final = MD.OOL_DESC
_U32: Final = struct.Struct("<I")
_NOTIFY_NAME: Final = struct.Struct("<I")


@dataclass
class Export:
    port_id: int
    name: int                 # our right to the local port
    kind: int                 # NW.PORT_SEND or NW.PORT_SEND_ONCE
    # references given to each host incarnation
    sent: dict[tuple[str, int], int] = field(default_factory=dict)
    queue: asyncio.Queue[tuple[tuple[str, int, int, int], int, bytes | None, list[Any]]] = field(
        default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    busy: bool = False
    closing: bool = False
    # a send-once right: who passed it on to whom, heard before the LEND
    # that made the passer its holder
    forwards: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)


@dataclass
class Import:
    ref: NW.Ref
    name: int                 # the local proxy port (receive right)
    kind: int
    credits: int = WINDOW     # WINDOW - (sent - delivered)
    seq: int = 0              # the next sequence number to send
    delivered: int = 0        # how many the home has delivered
    sizes: collections.deque[int] = field(default_factory=collections.deque)  # of those not delivered
    inflight: int = 0         # their bytes
    last: list[bytes] = field(default_factory=list)  # the first frame of the last message sent
    probed: float = 0.0
    made: int = 0             # make-sends given out
    received: int = 0         # references the home gave us
    in_set: bool = True


@dataclass
class Outstanding:
    """A forwarded message its home has not acknowledged yet: its payload
    goes out a chunk at a time (_pump), never more than the chunk window
    ahead of what the home said it holds (``acked`` chunks)."""

    ref: NW.Ref
    seq: int
    payload: bytes
    room: int                 # payload bytes a chunk
    count: int                # chunks
    next: int = 0             # the next chunk to publish
    acked: int = 0            # chunks the home holds
    sent: float = 0.0         # when a chunk of it last went out or was acknowledged (0: none yet)
    tries: int = 0


@dataclass
class Inbound:
    """What a home keeps per (sender host, incarnation, port)."""

    expected: int = 0
    delivered: int = 0
    early: dict[int, NW.Encoded | None] = field(default_factory=dict)  # None: a bad message (not delivered)
    chunks: dict[int, NW.Reassembly] = field(default_factory=dict)
    gone: float = 0.0         # when its port was first found gone (0: not gone)


class Proxy:
    """The proxy of ``host``: ``await run()`` serves until ``stop()``."""

    def __init__(self, host: str, url: str, token: str | None = None, *,
                 ready: Callable[[], None] | None = None, nkey_seed: str | None = None,
                 lease: float | None = None) -> None:
        self.host = host
        self.url = url
        self.token = token
        self.nkey_seed = nkey_seed
        self.incarnation = secrets.randbits(63) | 1
        self.ready = ready
        self.space = SELF.space
        self.nc: Any = None
        self.limit = 1 << 20
        self.exports: dict[int, Export] = {}          # port id → export
        self.export_by_name: dict[int, int] = {}      # local name → port id (send rights)
        self.imports: dict[tuple[str, int, int, int], Import] = {}
        self.import_by_name: dict[int, Import] = {}
        self.inbound: dict[tuple[str, int, int, int], Inbound] = {}  # (sender, its incarnation, port's)
        self.peers: dict[str, int] = {}               # host → its incarnation
        self.fenced: set[tuple[str, int]] = set()
        self.names: dict[str, NN.Entry] = {}
        self.name_subs: dict[str, Any] = {}
        self.next_id = 1
        self.stopping = asyncio.Event()
        self.pset = 0
        self.service = 0
        self.notify = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        # forwarded, not yet acknowledged: port (home host, incarnation, id, generation) → seq → frames
        self.outstanding: dict[tuple[str, int, int, int], dict[int, Outstanding]] = {}
        self.retry_after, self.retries = _retry_setting()
        self.lease = lease if lease is not None and lease > 0 else LEASE
        self.heard: dict[str, float] = {}             # host → when we last had a frame from it
        self.outbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self.draining = False
        self.dead: dict[str, float] = {}              # host declared dead → when
        self.told: dict[tuple[str, int], float] = {}  # fenced incarnation → when we last told it so

    # -- life ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect to NATS, check in at the bootstrap server, serve until
        stop(); everything released on the way out."""
        from .. import bootstrap
        # replies to our requests come to _INBOX.<host>.*: a server's
        # permissions can keep every host to its own inbox
        # (what is published while the connection is down waits in the
        # client's buffer: room for the chunk windows of a few ports)
        opts: dict[str, Any] = {"name": f"pymach-netmsg-{self.host}", "max_reconnect_attempts": -1,
                                "reconnect_time_wait": 0.2, "inbox_prefix": f"_INBOX.{self.host}",
                                "pending_size": 4 * CHUNK_WINDOW}
        if self.token:
            opts["token"] = self.token
        if self.nkey_seed:
            opts["nkeys_seed_str"] = self.nkey_seed
        errors: list[Exception] = []

        async def error_cb(e: Exception) -> None:
            errors.append(e)
            log.warning("netmsg: nats: %s", e)

        # a server that refuses us at first (no such identity, a wrong seed)
        # is an error at once; once in, we reconnect for ever
        opts["max_reconnect_attempts"] = 2
        try:
            self.nc = await nats.connect(self.url, error_cb=error_cb, **opts)
        except nats.errors.NoServersError:
            raise ConnectionRefusedError(f"{self.url}: {errors[-1] if errors else 'no server'}") from None
        self.nc.options["max_reconnect_attempts"] = -1
        self.limit = int(self.nc.max_payload)
        try:
            self.pset = R.allocate(self.space, MACH_PORT_RIGHT_PORT_SET)
            self.notify = R.allocate(self.space, MACH_PORT_RIGHT_RECEIVE)
            R.insert_member(self.space, self.notify, self.pset)
            port = bootstrap.check_in(NN.NETNAME_SERVICE)
            self.service = port.name
            R.insert_member(self.space, self.service, self.pset)
            await self.nc.subscribe(_frames(self.host), cb=self._on_frame)
            await self.nc.subscribe(NN.lookup_subject(self.host), cb=self._on_lookup)
            await self.nc.flush()
            if self.ready is not None:
                self.ready()
            receiver = asyncio.ensure_future(self._receive_loop())
            retrier = asyncio.ensure_future(self._retry_loop())
            leaser = asyncio.ensure_future(self._lease_loop())
            await self.stopping.wait()
            receiver.cancel()
            retrier.cancel()
            leaser.cancel()
            try:
                await receiver
            except (asyncio.CancelledError, K.MachError):
                pass
        finally:
            for t in list(self.tasks):
                t.cancel()
            for e in self.exports.values():
                if e.task is not None:
                    e.task.cancel()
            try:
                await self.nc.drain()
            except Exception:  # noqa: BLE001 - the connection may be gone already
                pass
            for name in [self.service, self.notify, self.pset, *self.import_by_name]:
                self._destroy(name)

    def stop(self) -> None:
        self.stopping.set()

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self._done)

    def _done(self, t: asyncio.Task[Any]) -> None:
        self.tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("netmsg: %s", t.exception(), exc_info=t.exception())

    def _destroy(self, name: int) -> None:
        if name:
            try:
                R.destroy(self.space, name)
            except OSError:
                pass

    def _deallocate(self, name: int) -> None:
        try:
            R.deallocate(self.space, name)
        except OSError:
            pass

    def _publish(self, subject: str, data: bytes) -> None:
        """Publish ``data`` on ``subject`` after what was published before
        (one task drains the outbox: not a task per frame)."""
        self.outbox.append((subject, data))
        if not self.draining:
            self.draining = True
            self._spawn(self._drain())

    async def _drain(self) -> None:
        try:
            while self.outbox:
                subject, data = self.outbox.popleft()
                try:
                    await self.nc.publish(subject, data)
                except nats.errors.Error as e:
                    # (the client's buffer is full while it reconnects:
                    # the frame is lost, as one the network lost)
                    log.info("netmsg: publish on %s: %s", subject, e)
                del data
        finally:
            self.draining = False

    def _frame(self, kind: int, **kw: Any) -> bytes:
        return NW.pack(NW.Frame(kind, self.host, self.incarnation, **kw))

    # -- local messages ------------------------------------------------------------------

    def _try_receive(self) -> bytes:
        return KM.receive(self.space, self.pset, RCV_MAX, MD.MACH_RCV_MSG | MD.MACH_RCV_TIMEOUT, 0)

    async def _receive_loop(self) -> None:
        kset: Any = self.space.lookup(self.pset).object  # type: ignore[union-attr]
        while True:
            try:
                raw = self._try_receive()
            except K.MachError as e:
                if e.kr != K.MACH_RCV_TIMED_OUT:
                    raise
                raw = await aio.receive_set(kset, self._try_receive, None)
            try:
                await self._local(raw)
            except Exception as e:  # noqa: BLE001 - one bad message does not stop the proxy
                log.exception("netmsg: a local message: %s", e)

    async def _local(self, raw: bytes) -> None:
        bits, size, remote, local, _v, msg_id = HDR.unpack_from(raw)
        if local == self.service:
            self._spawn(self._netname(raw))
        elif local == self.notify:
            self._notification(raw, msg_id)
        else:
            imp = self.import_by_name.get(local)
            if imp is None:
                self._destroy_carried(raw)
            elif msg_id == MACH_NOTIFY_NO_SENDERS and not remote and size == 36:
                self._no_senders(imp, _U32.unpack_from(raw, 32)[0])
            elif msg_id == MACH_NOTIFY_SEND_ONCE and not remote and size == 24 and imp.kind == NW.PORT_SEND_ONCE:
                self._drop_import(imp)  # (its home's send-once right goes: its port is notified there)
            else:
                self._forward(imp, raw)

    def _notification(self, raw: bytes, msg_id: int) -> None:
        if msg_id != MACH_NOTIFY_DEAD_NAME:
            return
        name = _NOTIFY_NAME.unpack_from(raw, 32)[0]
        pid = self.export_by_name.pop(name, None)
        if pid is None:
            return
        e = self.exports.pop(pid)
        for host in {h for h, _inc in e.sent}:
            self._publish(_frames(host), self._frame(NW.DEAD, incarnation=self.incarnation, port_id=pid))
        # what is queued for it fails to be delivered, and its rights are
        # released (_deliver); then its delivery task ends
        if e.task is not None and not e.busy and e.queue.empty():
            e.task.cancel()
        self._destroy(name)

    # -- forwarding out ------------------------------------------------------------------

    def _export(self, name: int, kind: int, to: str, to_inc: int) -> NW.Ref:
        """The network name of the right ``name`` (just received, ours now)
        sent to host ``to`` of incarnation ``to_inc`` (the references are
        counted per incarnation: a DROP comes from the one they went to).

        A right to a port of a third host is named at its home, which is
        told first (_lend)."""
        self.heard.setdefault(to, time.monotonic())  # its lease starts now
        if kind == NW.PORT_SEND_ONCE:
            imp = self._send_once_import(name)
            if imp is not None:
                # a send-once right to one of our proxy ports: the remote
                # right itself, passed on (its home learns the new holder
                # first); our proxy port goes without a word (its home's
                # right is the new holder's now)
                if to != imp.ref.host:
                    self._lend(imp.ref, NW.PORT_SEND_ONCE, to, to_inc)
                self._drop_import(imp, publish=False)
                self._deallocate(name)  # (a dead name now: no notification)
                return imp.ref
            pid = self.next_id
            self.next_id += 1
            self.exports[pid] = Export(pid, name, kind, {(to, to_inc): 1})
            return NW.Ref(self.host, self.incarnation, pid, 0, kind)
        imp = self.import_by_name.get(name)
        if imp is not None and imp.kind == NW.PORT_SEND:
            # a send right to one of our proxy ports: the remote port itself
            R.mod_refs(self.space, name, MACH_PORT_RIGHT_SEND, -1)
            if to != imp.ref.host:
                self._lend(imp.ref, NW.PORT_SEND, to, to_inc)
            return NW.Ref(*imp.ref.port, kind=NW.PORT_SEND)
        known = self.export_by_name.get(name)
        if known is not None:
            R.mod_refs(self.space, name, MACH_PORT_RIGHT_SEND, -1)  # one user reference is enough
            pid = known
            e = self.exports[pid]
        else:
            pid = self.next_id
            self.next_id += 1
            e = self.exports[pid] = Export(pid, name, kind)
            self.export_by_name[name] = pid
            R.request_notification(self.space, name, MACH_NOTIFY_DEAD_NAME, 0, self.notify,
                                   MD.MACH_MSG_TYPE_MAKE_SEND_ONCE)
        e.sent[(to, to_inc)] = e.sent.get((to, to_inc), 0) + 1
        return NW.Ref(self.host, self.incarnation, pid, 0, NW.PORT_SEND)

    def _send_once_import(self, name: int) -> Import | None:
        """The send-once import whose proxy port the send-once right
        ``name`` sends to, if any."""
        once = {i.name: i for i in self.import_by_name.values() if i.kind == NW.PORT_SEND_ONCE}
        if not once:
            return None
        return once.get(R.send_once_target(self.space, name, list(once)))

    def _lend(self, ref: NW.Ref, kind: int, to: str, to_inc: int) -> None:
        """Tell the home of ``ref`` that host ``to`` gets a reference to it
        (a send right: one more, ours stays counted until our own DROP; a
        send-once right: ``to`` holds it instead of us). Published before
        the message that carries the right, and before any DROP of ours
        (frames from one proxy to one host keep their order), so the home
        counts ``to`` before it can release the port for our DROP."""
        self._publish(_frames(ref.host), self._frame(
            NW.LEND, incarnation=ref.incarnation, port_id=ref.port_id, generation=ref.generation, right=kind,
            count=1, to_host=to, to_incarnation=to_inc))

    def _destroy_carried(self, raw: bytes) -> None:
        """Release every right and region a received message brought."""
        bits, size, remote, _l, _v, _id = HDR.unpack_from(raw)
        if remote:
            self._deallocate(remote)
        if bits & MD.MACH_MSGH_BITS_COMPLEX:
            for kind, a, b in _descriptors(raw, size):
                if kind == MD.MACH_MSG_PORT_DESCRIPTOR and a:
                    if b == MD.MACH_MSG_TYPE_PORT_RECEIVE:
                        self._destroy(a)
                    else:
                        self._deallocate(a)
                elif kind == MD.MACH_MSG_OOL_DESCRIPTOR and a:
                    vm_deallocate(SELF.task_name, a, b)

    def _forward(self, imp: Import, raw: bytes) -> None:
        bits, size, remote, _l, _v, msg_id = HDR.unpack_from(raw)
        to = imp.ref.host
        refused = 0
        if bits & MD.MACH_MSGH_BITS_COMPLEX:
            for kind, a, b in _descriptors(raw, size):
                if kind == MD.MACH_MSG_PORT_DESCRIPTOR and b == MD.MACH_MSG_TYPE_PORT_RECEIVE:
                    refused = K.MACH_SEND_INVALID_RIGHT
                elif kind not in (MD.MACH_MSG_PORT_DESCRIPTOR, MD.MACH_MSG_OOL_DESCRIPTOR):
                    refused = K.MACH_SEND_INVALID_TYPE
        if refused:
            # a receive right (or an array of ports) does not cross hosts:
            # the message is destroyed, its reply right told why
            rbits = MD.MACH_MSGH_BITS_REMOTE(bits)
            if remote and rbits in (MD.MACH_MSG_TYPE_PORT_SEND_ONCE, MD.MACH_MSG_TYPE_PORT_SEND):
                try:
                    KM.send(self.space, NN.error_reply(remote, rbits, msg_id, refused),
                            MD.MACH_SEND_MSG | MD.MACH_SEND_TIMEOUT, 0)
                    remote = 0 if rbits == MD.MACH_MSG_TYPE_PORT_SEND_ONCE else remote
                except K.MachError:
                    pass
            self._destroy_carried(HDR.pack(bits, size, remote, 0, 0, msg_id) + raw[HDR.size:])
            if imp.kind == NW.PORT_SEND_ONCE:
                self._drop_import(imp)  # used up here: the home's send-once right goes (notified there)
            return
        enc = NW.Encoded(msg_id, MD.MACH_MSGH_BITS_LOCAL(bits))
        regions: list[tuple[int, int]] = []
        to_inc = imp.ref.incarnation
        try:
            if remote:
                enc.reply = self._export(remote, MD.MACH_MSGH_BITS_REMOTE(bits), to, to_inc)
            off = HDR.size
            if bits & MD.MACH_MSGH_BITS_COMPLEX:
                (n,) = _U32.unpack_from(raw, off)
                off += 4
                for kind, a, b in _descriptors(raw, size):
                    off += 12 if kind == MD.MACH_MSG_PORT_DESCRIPTOR else 16
                    if kind == MD.MACH_MSG_PORT_DESCRIPTOR:
                        if not a:
                            enc.descriptors.append((NW.D_PORT, None))
                            continue
                        ent = self.space.lookup(a)
                        if ent is not None and isinstance(ent.cap, KMemoryEntry) and b == MD.MACH_MSG_TYPE_PORT_SEND:
                            enc.descriptors.append((NW.D_ENTRY, _entry_copy(a)))
                            continue
                        enc.descriptors.append((NW.D_PORT, self._export(a, b, to, to_inc)))
                    else:
                        enc.descriptors.append((NW.D_OOL, (1, view(a, b) if a else b"")))
                        if a:
                            regions.append((a, b))
            enc.inline = raw[off:size]
            payload = NW.encode(enc)
        finally:
            # (the regions were copied once, into the payload)
            del enc
            for a, b in regions:
                vm_deallocate(SELF.task_name, a, b)
        del raw
        seq = imp.seq
        imp.seq += 1
        room = NW.chunk_room(self.host, self.limit)
        o = Outstanding(imp.ref, seq, payload, room, NW.chunk_count(len(payload), room))
        self.outstanding.setdefault(imp.ref.port, {})[seq] = o
        self._pump(imp.ref.port)
        # a probe: its first frame, which the home answers as a duplicate with an ACK
        imp.last = [NW.chunk(self.host, self.incarnation, imp.ref, seq, payload, room, 0)]
        imp.probed = asyncio.get_running_loop().time()
        self._after_send(imp, len(payload))

    def _pump(self, port: tuple[str, int, int, int]) -> None:
        """Publish the chunks of the messages outstanding for ``port``, in
        order, while they stay within CHUNK_WINDOW bytes in flight (two
        chunks at least)."""
        pending = self.outstanding.get(port)
        if not pending:
            return
        frames = nbytes = 0
        for o in pending.values():
            frames += o.next - o.acked
            nbytes += min(o.next * o.room, len(o.payload)) - min(o.acked * o.room, len(o.payload))
        now = asyncio.get_running_loop().time()
        subject = _frames(port[0])
        for o in pending.values():  # (in seq order: inserted so)
            while o.next < o.count:
                size = min(o.room, len(o.payload) - o.next * o.room)
                if frames >= 2 and nbytes + size > CHUNK_WINDOW:
                    return
                self._publish(subject, NW.chunk(self.host, self.incarnation, o.ref, o.seq, o.payload, o.room, o.next))
                o.next += 1
                o.sent = now
                frames += 1
                nbytes += size

    async def _retry_loop(self) -> None:
        """Send again what its home has not acknowledged in RETRY_AFTER
        seconds, from the chunk the home holds up to (the home drops what
        it has seen); after RETRIES tries without progress the port is
        taken for dead: its proxy port is destroyed."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.retry_after / 2)
            now = loop.time()
            if not self.nc.is_connected:
                # our own outage: nothing is counted against the homes
                for pending in self.outstanding.values():
                    for o in pending.values():
                        o.sent = now
                continue
            for port, pending in list(self.outstanding.items()):
                late = [o for o in pending.values() if o.sent and now - o.sent >= self.retry_after]
                if not late:
                    continue
                if any(o.tries >= self.retries for o in late):
                    log.warning("netmsg: %s does not acknowledge: its port is dead here", port[0])
                    del self.outstanding[port]
                    imp = self.imports.get(port)
                    if imp is not None:
                        self._drop_import(imp, publish=False)
                    continue
                for o in late:
                    o.tries += 1
                for o in pending.values():
                    o.next = o.acked
                self._pump(port)
            self._sweep_inbound(now)
            # a port out of credit whose credits may have been lost with an
            # ACK: its last message again, which the home answers (as a
            # duplicate) with an ACK of what it has delivered
            for imp in list(self.imports.values()):
                if not imp.in_set and imp.last and now - imp.probed >= self.retry_after:
                    imp.probed = now
                    for frame in imp.last:
                        self._publish(_frames(imp.ref.host), frame)
            # these names would keep the last message looked at (its frames)
            # until the next round finds another
            pending, late, o, imp, frame = {}, [], None, None, b""  # type: ignore[assignment]

    def _sweep_inbound(self, now: float) -> None:
        """Forget the sequence state of ports that are gone (a reply
        port's export goes after its one message: one per request) once no
        sender can still be sending them a message again: after its
        retransmissions would have ended (RETRIES x RETRY_AFTER) and a
        lease more. Until then a late copy is still known for one (not
        delivered, its references not given back twice)."""
        horizon = self.retry_after * (self.retries + 1) + self.lease
        forgot = 0
        for key, ib in list(self.inbound.items()):
            if key[2] == self.incarnation and key[3] in self.exports:
                ib.gone = 0.0
            elif not ib.gone:
                ib.gone = now
            elif now - ib.gone > horizon:
                del self.inbound[key]
                forgot += 1
        if forgot:
            log.info("netmsg: forgot the sequences of %d ports gone (%d kept)", forgot, len(self.inbound))

    def _after_send(self, imp: Import, size: int) -> None:
        """A message of ``size`` bytes went to ``imp``'s home: one credit
        and its bytes are taken; without credit (or over BYTE_WINDOW) the
        proxy port leaves the port set until ACKs give them back."""
        if imp.kind == NW.PORT_SEND_ONCE:
            self._drop_import(imp, publish=False)  # used: the home gives its right back itself
            return
        imp.credits -= 1
        imp.sizes.append(size)
        imp.inflight += size
        if (imp.credits <= 0 or imp.inflight >= BYTE_WINDOW) and imp.in_set:
            R.extract_member(self.space, imp.name, self.pset)
            imp.in_set = False

    def _no_senders(self, imp: Import, mscount: int) -> None:
        if mscount < imp.made:
            # a right was given out after the notification was armed: arm again
            R.request_notification(self.space, imp.name, MACH_NOTIFY_NO_SENDERS, imp.made, imp.name,
                                   MD.MACH_MSG_TYPE_MAKE_SEND_ONCE)
            return
        # a message on another of our ports may still carry this port's
        # right home (the port set gives no order between ports): let it
        # go first
        asyncio.get_running_loop().call_later(DROP_DELAY, self._drop_if_unused, imp, imp.made)

    def _drop_if_unused(self, imp: Import, made: int) -> None:
        if self.import_by_name.get(imp.name) is not imp:
            return
        if imp.made != made:
            R.request_notification(self.space, imp.name, MACH_NOTIFY_NO_SENDERS, imp.made, imp.name,
                                   MD.MACH_MSG_TYPE_MAKE_SEND_ONCE)
            return
        self._drop_import(imp)

    def _drop_import(self, imp: Import, publish: bool = True) -> None:
        """Destroy the proxy port of ``imp``; with ``publish``, give its
        home back the references we had (a DROP)."""
        self.imports.pop(imp.ref.port, None)
        self.import_by_name.pop(imp.name, None)
        count = imp.received if imp.kind == NW.PORT_SEND else 1
        if publish and count:
            self._publish(_frames(imp.ref.host), self._frame(
                NW.DROP, incarnation=imp.ref.incarnation, port_id=imp.ref.port_id, generation=imp.ref.generation,
                right=imp.kind, count=count))
        self._destroy(imp.name)

    # -- forwarding in -------------------------------------------------------------------

    def _fence(self, f: NW.Frame) -> bool:
        """False for a frame of an incarnation that is no longer its host's
        (which is told so: FENCED)."""
        if (f.src_host, f.src_incarnation) in self.fenced:
            self._tell_fenced(f.src_host, f.src_incarnation)
            return False
        known = self.peers.get(f.src_host)
        if known is None:
            self.peers[f.src_host] = f.src_incarnation
        elif known != f.src_incarnation:
            # the host restarted: its old incarnation's ports are dead here
            self.fenced.add((f.src_host, known))
            self.peers[f.src_host] = f.src_incarnation
            for imp in [i for i in self.imports.values() if i.ref.host == f.src_host and i.ref.incarnation == known]:
                self._drop_import(imp, publish=False)
            self._forget_holder(f.src_host, known)
            for key in [k for k in self.inbound if k[0] == f.src_host and k[1] == known]:
                del self.inbound[key]
            for port in [p for p in self.outstanding if p[0] == f.src_host and p[1] == known]:
                del self.outstanding[port]
        self.dead.pop(f.src_host, None)
        return True

    def _tell_fenced(self, host: str, inc: int) -> None:
        """Tell the incarnation ``inc`` of ``host``, which we declared dead,
        that it is (once a lease at most, whatever it sends)."""
        now = time.monotonic()
        if now - self.told.get((host, inc), -self.lease) >= self.lease:
            self.told[(host, inc)] = now
            self._publish(_frames(host), self._frame(NW.FENCED, incarnation=inc))

    async def _on_frame(self, m: Any) -> None:
        try:
            f = NW.unpack(m.data)
        except NW.WireError as bad:
            log.warning("netmsg: a bad frame on %s: %s", m.subject, bad)
            return
        if f.kind == NW.FENCED:
            # (taken even from a host we fenced: both sides of a partition
            # may have declared the other dead)
            if f.incarnation == self.incarnation and f.src_host != self.host:
                log.warning("netmsg: %s declared us dead: a new incarnation", f.src_host)
                self._renew(self._partners())
            return
        if not self._fence(f):
            return
        self.heard[f.src_host] = time.monotonic()
        if f.kind == NW.BEAT:
            return
        if f.kind == NW.MSG:
            self._on_msg(f)
        else:
            self._on_ctl(f)

    def _on_msg(self, f: NW.Frame) -> None:
        e = self.exports.get(f.port_id) if f.incarnation == self.incarnation else None
        if e is None:
            self._refused(f)
            return
        key = (f.src_host, f.src_incarnation, f.incarnation, f.port_id)
        ib = self.inbound.setdefault(key, Inbound())
        if f.seq < ib.expected or f.seq in ib.early:
            # a duplicate (our acknowledgement was lost, or is on its way):
            # acknowledge what is delivered again, take nothing
            if ib.expected and f.offset == 0:
                self._ack(f, ib)
            return
        if f.seq >= ib.expected + AHEAD:
            # further ahead than credits let an honest sender be: not kept
            log.warning("netmsg: %s sent seq %d, expected %d: dropped", f.src_host, f.seq, ib.expected)
            return
        ra = ib.chunks.get(f.seq)
        if ra is None:
            ra = ib.chunks[f.seq] = NW.Reassembly(f.total)
        have = ra.have
        try:
            payload = ra.add(f)
        except NW.WireError as err:
            log.warning("netmsg: %s", err)
            del ib.chunks[f.seq]
            return
        if payload is None:
            if ra.have != have or f.offset > have:
                # how far we are (or where the gap is): the sender's window
                # moves on (or goes back there)
                self._publish(_frames(f.src_host), self._frame(
                    NW.MORE, incarnation=self.incarnation, port_id=f.port_id, generation=f.generation, seq=f.seq,
                    have=ra.have, gap=int(ra.have == have), to_incarnation=f.src_incarnation))
            return
        del ib.chunks[f.seq]
        try:
            enc = NW.decode(payload)
            if len(enc.inline) % 4:
                raise NW.WireError(f"an inline body of {len(enc.inline)} bytes (Mach bodies are whole words)")
        except NW.WireError as err:
            log.warning("netmsg: a bad message from %s: %s", f.src_host, err)
            enc = None
        ib.early[f.seq] = enc  # (None keeps the order going: nothing is delivered in its place)
        accepted = False
        # nothing waits for the port: deliver here, while it has room (not
        # a task switch away)
        idle = not e.busy and e.queue.empty()
        while ib.expected in ib.early:
            enc = ib.early.pop(ib.expected)
            # the rights it carries are resolved now, in the order frames
            # came (a DROP after it cannot take a right it brings home)
            keep: list[Any] = []
            built = self._build(e, enc, keep) if enc is not None else None
            del enc
            if idle and (built is None or self._deliver_now(e, built, keep)):
                ib.delivered = ib.expected + 1
                if e.kind == NW.PORT_SEND_ONCE:
                    self.exports.pop(e.port_id, None)
            else:
                idle = False
                e.queue.put_nowait((key, ib.expected, built, keep))
            ib.expected += 1
            accepted = True
        if accepted:
            # received (in order, up to expected - 1): the sender may forget
            # them; its credits come back as they are delivered (this ACK
            # counts those delivered already)
            self._ack(f, ib)
        if e.task is None and not e.queue.empty():
            e.task = asyncio.ensure_future(self._deliver_loop(e))
            self.tasks.add(e.task)  # (the loop holds tasks weakly)
            e.task.add_done_callback(self._done)

    def _ack(self, f: NW.Frame, ib: Inbound) -> None:
        self._publish(_frames(f.src_host), self._frame(
            NW.ACK, incarnation=self.incarnation, port_id=f.port_id, generation=f.generation,
            seq=ib.expected - 1, delivered=ib.delivered, to_incarnation=f.src_incarnation))

    def _refused(self, f: NW.Frame) -> None:
        """A message for a port that is gone (or of an older incarnation of
        this host): DEAD to its sender, and the references it carried given
        back to their homes, as if it had been destroyed here. (References
        sent to an older incarnation of this host are not ours to give
        back: their homes forget them when they hear this one.)"""
        self._publish(_frames(f.src_host), self._frame(
            NW.DEAD, incarnation=f.incarnation, port_id=f.port_id, generation=f.generation))
        if f.incarnation != self.incarnation:
            return
        key = (f.src_host, f.src_incarnation, f.incarnation, f.port_id)
        ib = self.inbound.setdefault(key, Inbound())
        if f.seq < ib.expected or f.seq >= ib.expected + AHEAD:
            return  # seen (its references given back then), or not believable
        ra = ib.chunks.get(f.seq)
        if ra is None:
            ra = ib.chunks[f.seq] = NW.Reassembly(f.total)
        try:
            payload = ra.add(f)
        except NW.WireError:
            del ib.chunks[f.seq]
            return
        if payload is None:
            return
        del ib.chunks[f.seq]
        ib.expected = max(ib.expected, f.seq + 1)
        try:
            enc = NW.decode(payload)
        except NW.WireError:
            return
        refs = [enc.reply] + [v for k, v in enc.descriptors if k == NW.D_PORT]
        for ref in refs:
            if not isinstance(ref, NW.Ref):
                continue
            if ref.host != self.host:
                self._publish(_frames(ref.host), self._frame(
                    NW.DROP, incarnation=ref.incarnation, port_id=ref.port_id, generation=ref.generation,
                    right=ref.kind, count=1))
            elif ref.incarnation == self.incarnation:
                mine = self.exports.get(ref.port_id)
                if mine is not None and mine.kind == NW.PORT_SEND_ONCE:
                    self._release_send_once(mine)

    def _deliver_now(self, e: Export, raw: bytes, keep: list[Any]) -> bool:
        """Deliver ``raw`` if the port has room now: False if it has none
        (the message waits in the port's queue); True if it is delivered,
        or failed for good (the port is gone: what it carried is released)."""
        try:
            KM.send(self.space, raw, MD.MACH_SEND_MSG | MD.MACH_SEND_TIMEOUT, 0)
        except K.MachError as err:
            if err.kr == K.MACH_SEND_TIMED_OUT:
                return False
            log.info("netmsg: delivery to port %d failed: %s", e.port_id, err)
            self._release(keep)
        if _large(raw, keep):
            mm.release_free_heap()
        return True

    async def _deliver_loop(self, e: Export) -> None:
        while True:
            key, seq, raw, keep = await e.queue.get()
            e.busy = True
            large = False
            if raw is not None:
                large = _large(raw, keep)
                await self._deliver(e, raw, keep)
            del raw, keep  # (delivered: its buffers go now, not when the next message comes)
            if large:
                mm.release_free_heap()
            e.busy = False
            ib = self.inbound.get(key)
            if ib is not None:
                ib.delivered = seq + 1
            self._publish(_frames(key[0]), self._frame(NW.ACK, incarnation=self.incarnation, port_id=e.port_id,
                                                       seq=seq, delivered=seq + 1, to_incarnation=key[1]))
            if e.kind == NW.PORT_SEND_ONCE:
                self.exports.pop(e.port_id, None)
                return
            if e.closing and e.queue.empty():
                self._deallocate(e.name)
                return
            if self.exports.get(e.port_id) is not e and e.queue.empty():
                return  # the port died: nothing more comes for it

    def _import(self, ref: NW.Ref, keep: list[Any]) -> tuple[int, int]:
        """(name, disposition) to put in a message for the reference ``ref``."""
        if ref.host == self.host:
            e = self.exports.get(ref.port_id) if ref.incarnation == self.incarnation else None
            if e is None:
                return 0, 0
            if e.kind == NW.PORT_SEND_ONCE:
                del self.exports[ref.port_id]
                keep.append(("so", e.name))
                return e.name, MD.MACH_MSG_TYPE_MOVE_SEND_ONCE
            R.mod_refs(self.space, e.name, MACH_PORT_RIGHT_SEND, 1)  # the message's own
            keep.append(("send", e.name))
            return e.name, MD.MACH_MSG_TYPE_MOVE_SEND
        if (ref.host, ref.incarnation) in self.fenced:
            self._tell_fenced(ref.host, ref.incarnation)
            return 0, 0  # a port of an incarnation declared dead: a null port
        self.heard.setdefault(ref.host, time.monotonic())  # its lease starts now
        if ref.kind == NW.PORT_SEND:
            imp = self.imports.get(ref.port)
            if imp is None:
                name = R.allocate(self.space, MACH_PORT_RIGHT_RECEIVE)
                imp = Import(ref, name, NW.PORT_SEND)
                self.imports[ref.port] = imp
                self.import_by_name[name] = imp
                R.insert_member(self.space, name, self.pset)
                R.request_notification(self.space, name, MACH_NOTIFY_NO_SENDERS, 1, name,
                                       MD.MACH_MSG_TYPE_MAKE_SEND_ONCE)
            imp.made += 1
            imp.received += 1
            keep.append(("import", imp))
            return imp.name, MD.MACH_MSG_TYPE_MAKE_SEND
        name = R.allocate(self.space, MACH_PORT_RIGHT_RECEIVE)
        imp = Import(ref, name, NW.PORT_SEND_ONCE)
        self.import_by_name[name] = imp
        R.insert_member(self.space, name, self.pset)
        keep.append(("so-import", imp))
        return name, MD.MACH_MSG_TYPE_MAKE_SEND_ONCE

    def _build(self, e: Export, enc: NW.Encoded, keep: list[Any]) -> bytes:
        dest = e.name
        dest_disp = MD.MACH_MSG_TYPE_MOVE_SEND_ONCE if e.kind == NW.PORT_SEND_ONCE else MD.MACH_MSG_TYPE_COPY_SEND
        reply, reply_disp = self._import(enc.reply, keep) if enc.reply is not None else (0, 0)
        body = bytearray()
        if enc.descriptors:
            body += _U32.pack(len(enc.descriptors))
            for kind, value in enc.descriptors:
                if kind == NW.D_PORT:
                    name, disp = self._import(value, keep) if isinstance(value, NW.Ref) else (0, 0)
                    body += PORT_DESC.pack(name, 0, 0, 0, disp, MD.MACH_MSG_PORT_DESCRIPTOR)
                elif kind == NW.D_OOL:
                    assert isinstance(value, tuple)
                    data = value[1]
                    keep.append(data)
                    addr = address_of(data)[0] if data else 0
                    body += OOL_DESC.pack(addr, 0, MD.MACH_MSG_VIRTUAL_COPY, 0, MD.MACH_MSG_OOL_DESCRIPTOR, len(data))
                else:
                    assert isinstance(value, tuple)
                    name = _new_entry(value[0], value[1])
                    keep.append(("entry", name))
                    body += PORT_DESC.pack(name, 0, 0, 0, MD.MACH_MSG_TYPE_MOVE_SEND, MD.MACH_MSG_PORT_DESCRIPTOR)
        body += enc.inline
        bits = MD.MACH_MSGH_BITS(dest_disp, reply_disp) | (MD.MACH_MSGH_BITS_COMPLEX if enc.descriptors else 0)
        return HDR.pack(bits, HDR.size + len(body), dest, reply, 0, enc.msg_id) + bytes(body)

    async def _deliver(self, e: Export, raw: bytes, keep: list[Any]) -> None:
        def attempt() -> None:
            KM.send(self.space, raw, MD.MACH_SEND_MSG | MD.MACH_SEND_TIMEOUT, 0)

        try:
            try:
                attempt()
            except K.MachError as err:
                if err.kr != K.MACH_SEND_TIMED_OUT:
                    raise
                ent = self.space.lookup(e.name)
                await aio.send(ent.cap if ent is not None else None, attempt, None)
        except K.MachError as err:
            # the port is gone (its dead-name notification follows): what
            # the message carried is released
            # (a send that fails consumes nothing: new entries are ours to drop)
            log.info("netmsg: delivery to port %d failed: %s", e.port_id, err)
            self._release(keep)

    def _release(self, keep: list[Any]) -> None:
        """Release what a message that was not delivered carried, as
        mach_msg_destroy would: our own rights, new entries, and the
        references of proxy ports it would have given out (their homes
        get them back: DROP)."""
        for k in keep:
            if not isinstance(k, tuple):
                continue  # an out-of-line buffer
            what, obj = k
            if what == "entry":
                self._destroy(obj)
            elif what in ("send", "so"):
                self._deallocate(obj)  # a send-once right: its port gets the send-once notification
            elif not isinstance(obj, Import) or self.import_by_name.get(obj.name) is not obj:
                continue  # a proxy port already gone
            elif what == "import":
                obj.made -= 1
                if obj.made <= 0:
                    self._drop_import(obj)
            else:
                self._drop_import(obj)

    def _on_ctl(self, f: NW.Frame) -> None:
        if f.kind in (NW.ACK, NW.MORE) and f.to_incarnation != self.incarnation:
            return  # an answer to an older incarnation of ours
        if f.kind == NW.MORE:
            o = self.outstanding.get((f.src_host, f.incarnation, f.port_id, f.generation), {}).get(f.seq)
            if o is None:
                return
            held = o.count if f.have >= len(o.payload) else f.have // o.room
            if held > o.acked:
                o.acked = held
                o.tries = 0
                o.sent = asyncio.get_running_loop().time()
            if f.gap:
                o.next = min(o.next, o.acked)  # a chunk was lost: from where the home is
            self._pump(o.ref.port)
        elif f.kind == NW.ACK:
            port = (f.src_host, f.incarnation, f.port_id, f.generation)
            pending = self.outstanding.get(port)
            if pending is not None:
                large = False
                for seq in [s for s in pending if s <= f.seq]:
                    large |= pending.pop(seq).count > 1
                if not pending:
                    del self.outstanding[port]
                else:
                    self._pump(port)
                if large:
                    mm.release_free_heap()  # (its chunks came and went: the heap keeps them otherwise)
            imp = self.imports.get(port)
            if imp is not None:
                for _ in range(min(f.delivered - imp.delivered, len(imp.sizes))):
                    imp.inflight -= imp.sizes.popleft()
                imp.delivered = max(imp.delivered, f.delivered)
                imp.credits = WINDOW - (imp.seq - imp.delivered)
                if imp.credits > 0 and imp.inflight < BYTE_WINDOW and not imp.in_set:
                    R.insert_member(self.space, imp.name, self.pset)
                    imp.in_set = True
        elif f.kind == NW.DEAD:
            self.outstanding.pop((f.src_host, f.incarnation, f.port_id, f.generation), None)
            imp = self.imports.get((f.src_host, f.incarnation, f.port_id, f.generation))
            if imp is not None:
                self._drop_import(imp, publish=False)
            for name, i in list(self.import_by_name.items()):
                if i.kind == NW.PORT_SEND_ONCE and i.ref.port == (f.src_host, f.incarnation, f.port_id, f.generation):
                    self._drop_import(i, publish=False)
        elif f.kind == NW.DROP:
            if f.incarnation != self.incarnation:
                return
            e = self.exports.get(f.port_id)
            if e is None:
                return
            if f.right == NW.PORT_SEND_ONCE or e.kind == NW.PORT_SEND_ONCE:
                self._release_send_once(e)
                return
            self._count(e, (f.src_host, f.src_incarnation), -f.count)
        elif f.kind == NW.LEND:
            self._on_lend(f)

    def _on_lend(self, f: NW.Frame) -> None:
        """A holder of our port passes its right on to host ``f.to_host``:
        count that host (see _lend)."""
        e = self.exports.get(f.port_id) if f.incarnation == self.incarnation else None
        to = f.to_host
        if e is None or not NW.valid_host(to) or to == self.host:
            if e is None and NW.valid_host(to) and to != self.host:
                # the port is gone (or never was ours): the new holder's
                # proxy port is a dead name at once, not at its first message
                self._publish(_frames(to), self._frame(
                    NW.DEAD, incarnation=f.incarnation, port_id=f.port_id, generation=f.generation))
            return
        holder = (to, f.to_incarnation)
        if e.kind == NW.PORT_SEND_ONCE:
            if f.right != NW.PORT_SEND_ONCE:
                return
            src = (f.src_host, f.src_incarnation)
            if src not in e.sent:
                # passed on again by a host we have not yet heard it was
                # passed to (LENDs from two hosts keep no order): kept
                # until that host's turn comes
                if len(e.forwards) < FORWARDS_MAX:
                    e.forwards[src] = holder
                return
            while holder not in self.fenced:
                after = e.forwards.pop(holder, None)
                if after is None:
                    self.heard.setdefault(holder[0], time.monotonic())  # its lease starts now
                    e.sent = {holder: 1}
                    return
                holder = after
            self._release_send_once(e)  # passed on to a host that is dead here
            return
        if f.right != NW.PORT_SEND:
            return
        if holder in self.fenced:
            return  # that host is dead here: its references were dropped with it
        self.heard.setdefault(to, time.monotonic())  # its lease starts now
        self._count(e, holder, f.count)

    def _count(self, e: Export, holder: tuple[str, int], delta: int) -> None:
        """``holder``'s count of references to ``e`` moves by ``delta``
        (a count may go below zero: a host lent references gave them back
        before its lender's LEND came; the port is kept until it does); the
        right goes when no host holds any."""
        left = e.sent.get(holder, 0) + delta
        if left:
            e.sent[holder] = left
        else:
            e.sent.pop(holder, None)
        if not e.sent:
            self._release_export(e)

    def _release_send_once(self, e: Export) -> None:
        """Our send-once right of ``e`` goes unused: its port gets the
        send-once notification."""
        del self.exports[e.port_id]
        self._deallocate(e.name)

    def _release_export(self, e: Export) -> None:
        """No host holds a reference to ``e`` any more: our right goes (the
        port sees no-senders if it was the last), once what is queued for
        it is delivered."""
        del self.exports[e.port_id]
        self.export_by_name.pop(e.name, None)
        if e.busy or not e.queue.empty():
            e.closing = True  # released once what is queued for it is delivered
        else:
            if e.task is not None:
                e.task.cancel()
            self._deallocate(e.name)

    # -- leases --------------------------------------------------------------------------

    def _partners(self) -> set[str]:
        """Every host we deal with: those we hold references of, gave
        references to, or owe messages."""
        out: set[str] = set()
        for e in self.exports.values():
            out.update(h for h, _inc in e.sent)
        out.update(i.ref.host for i in self.import_by_name.values())
        out.update(p[0] for p in self.outstanding)
        out.discard(self.host)
        return out

    async def _lease_loop(self) -> None:
        """Beat every lease / 3 to each partner; a partner not heard from
        for the lease is dead here (_host_dead). If none is heard any more,
        it is we who are cut off: the others take us for dead, so we come
        back as a new incarnation (_renew)."""
        rounds = 0
        while True:
            await asyncio.sleep(self.lease / 3)
            rounds += 1
            partners = self._partners()
            beat = self._frame(NW.BEAT)
            for host in partners:
                self._publish(_frames(host), beat)
            now = time.monotonic()
            if rounds % 3 == 0:
                # the hosts declared dead, in case they were only cut off
                for host, when in list(self.dead.items()):
                    if now - when > DEAD_BEAT_FOR or host in partners:
                        del self.dead[host]
                    else:
                        self._publish(_frames(host), beat)
            expired = {h for h in partners if now - self.heard.setdefault(h, now) > self.lease}
            if not expired:
                continue
            if expired == partners:
                self._renew(expired)
            else:
                for host in expired:
                    self._host_dead(host)

    def _host_dead(self, host: str) -> None:
        """``host`` is lost: its incarnation is fenced (nothing more of it is
        taken), its ports are dead names here, the references it held on
        our ports are dropped (no-senders if it held the last), the
        send-once rights it held give their send-once notifications."""
        log.warning("netmsg: %s not heard from for %.1f s: dead here", host, self.lease)
        inc = self.peers.get(host)
        if inc is not None:
            self.fenced.add((host, inc))
        self.heard.pop(host, None)
        self.dead[host] = time.monotonic()
        for imp in [i for i in self.import_by_name.values() if i.ref.host == host]:
            self._drop_import(imp, publish=False)
        self._forget_holder(host)
        for key in [k for k in self.inbound if k[0] == host]:
            del self.inbound[key]
        for port in [p for p in self.outstanding if p[0] == host]:
            del self.outstanding[port]

    def _forget_holder(self, host: str, inc: int | None = None) -> None:
        """The references ``host`` (its incarnation ``inc``; None: any) held
        on our ports are dropped: a port it held the last of sees
        no-senders, a send-once right it held gives its send-once
        notification."""
        for e in list(self.exports.values()):
            gone = [k for k in e.sent if k[0] == host and (inc is None or k[1] == inc)]
            if not gone:
                continue
            for k in gone:
                del e.sent[k]
            if e.kind == NW.PORT_SEND_ONCE:
                self._release_send_once(e)
            elif not e.sent:
                self._release_export(e)

    def _renew(self, hosts: set[str]) -> None:
        """We heard nobody for the lease (or a host told us that it declared
        us dead): every partner is dead here, and we take a new incarnation
        (the others have fenced the old one; our ports of it are dead
        names there), so that we can deal with them afresh once the
        network heals. Names checked in here stay."""
        for host in hosts:
            self._host_dead(host)
        self.inbound.clear()
        self.outstanding.clear()
        for e in list(self.exports.values()):
            if e.kind == NW.PORT_SEND_ONCE:
                self._release_send_once(e)
            else:
                self._release_export(e)
        old = self.incarnation
        self.incarnation = secrets.randbits(63) | 1
        # their incarnations are not fenced from the new one: what they
        # send that names our old incarnation is refused as it is after a
        # restart
        self.fenced -= {(h, self.peers[h]) for h in hosts if h in self.peers}
        for h in hosts:
            self.peers.pop(h, None)
            self.dead.pop(h, None)
        log.warning("netmsg: incarnation %016x is now %016x", old, self.incarnation)

    # -- the name service ----------------------------------------------------------------

    async def _netname(self, raw: bytes) -> None:
        bits, size, reply, _l, _v, msg_id = HDR.unpack_from(raw)
        rbits = MD.MACH_MSGH_BITS_REMOTE(bits)
        out: bytes | None = None
        try:
            out = await self._netname_routine(raw, bits, size, reply, rbits, msg_id)
        except Exception as e:  # noqa: BLE001
            log.exception("netmsg: netname: %s", e)
            out = NN.error_reply(reply, rbits, msg_id, K.KERN_FAILURE) if reply else None
        if out is not None and reply:
            try:
                KM.send(self.space, out, MD.MACH_SEND_MSG | MD.MACH_SEND_TIMEOUT, 1000)
            except K.MachError as e:
                log.info("netmsg: netname reply: %s", e)

    async def _netname_routine(self, raw: bytes, bits: int, size: int, reply: int, rbits: int,
                               msg_id: int) -> bytes | None:
        complex_ = bool(bits & MD.MACH_MSGH_BITS_COMPLEX)
        if msg_id == NMIG.netname_check_in_id and complex_ and size == NMIG.netname_check_in_request.size:
            v = NMIG.netname_check_in_request.unpack(raw)
            return NN.error_reply(reply, rbits, msg_id, self._check_in(NN.text(v["port_name"]), v["signature"],
                                                                       v["port_id"]))
        if msg_id == NMIG.netname_check_out_id and complex_ and size == NMIG.netname_check_out_request.size:
            v = NMIG.netname_check_out_request.unpack(raw)
            return NN.error_reply(reply, rbits, msg_id, self._check_out(NN.text(v["port_name"]), v["signature"]))
        if msg_id == NMIG.netname_look_up_id and not complex_ and size == NMIG.netname_look_up_request.size:
            v = NMIG.netname_look_up_request.unpack(raw)
            return await self._look_up(NN.text(v["host_name"]), NN.text(v["port_name"]), reply, rbits, msg_id)
        if msg_id == NMIG.netname_version_id and not complex_ and size == NMIG.netname_version_request.size:
            return NN.version_reply(reply, rbits, f"{NN.VERSION} {self.host} {self.incarnation:016x}")
        self._destroy_carried(HDR.pack(bits, size, 0, 0, 0, msg_id) + raw[HDR.size:])
        return NN.error_reply(reply, rbits, msg_id, K.MIG_BAD_ID if msg_id not in (1040, 1041, 1042, 1043)
                              else K.MIG_BAD_ARGUMENTS)

    def _check_in(self, name: str, signature: int, port: int) -> int:
        old = self.names.get(name)
        if not name or not port:
            self._deallocate(signature)
            self._deallocate(port)
            return NN.NETNAME_INVALID_PORT
        if old is not None:
            if old.signature != signature:
                self._deallocate(signature)
                self._deallocate(port)
                return NN.NETNAME_NOT_YOURS
            self._deallocate(old.port)
            self._deallocate(signature)  # the same name: one reference is enough
        self.names[name] = NN.Entry(port, signature)
        if name not in self.name_subs:
            self._spawn(self._subscribe_name(name))
        return NN.NETNAME_SUCCESS

    async def _subscribe_name(self, name: str) -> None:
        self.name_subs[name] = await self.nc.subscribe(NN.names_subject(name), cb=self._on_lookup_any)

    def _check_out(self, name: str, signature: int) -> int:
        ent = self.names.get(name)
        if ent is None:
            self._deallocate(signature)
            return NN.NETNAME_NOT_CHECKED_IN
        if ent.signature != signature:
            self._deallocate(signature)
            return NN.NETNAME_NOT_YOURS
        del self.names[name]
        self._deallocate(ent.port)
        self._deallocate(signature)
        if signature:
            self._deallocate(signature)
        sub = self.name_subs.pop(name, None)
        if sub is not None:
            self._spawn(sub.unsubscribe())
        return NN.NETNAME_SUCCESS

    def _live_entry(self, name: str) -> NN.Entry | None:
        ent = self.names.get(name)
        if ent is None:
            return None
        try:
            if R.type_of(self.space, ent.port) & MACH_PORT_RIGHT_SEND_TYPE:
                return ent
        except OSError:
            pass
        # the port died: the name goes with it
        del self.names[name]
        self._deallocate(ent.port)
        return None

    async def _look_up(self, host: str, name: str, reply: int, rbits: int, msg_id: int) -> bytes:
        if host in ("", self.host, "*"):
            ent = self._live_entry(name)
            if ent is not None:
                return NN.port_reply(reply, rbits, ent.port, MD.MACH_MSG_TYPE_COPY_SEND)
            if host != "*":
                return NN.error_reply(reply, rbits, msg_id, NN.NETNAME_NOT_CHECKED_IN)
        if host == "*":
            # which host has it (the first to answer; nothing is exported
            # yet, so the others' answers cost nothing), then ask that one
            try:
                m = await self.nc.request(NN.names_subject(name), self.host.encode() + b"\0" + name.encode(),
                                          timeout=REQUEST_TIMEOUT)
            except (NoRespondersError, NatsTimeout):
                return NN.error_reply(reply, rbits, msg_id, NN.NETNAME_NOT_CHECKED_IN)
            host = m.data.decode("utf-8", "replace")
            if not NW.valid_host(host) or host == self.host:
                return NN.error_reply(reply, rbits, msg_id, NN.NETNAME_NOT_CHECKED_IN)
        if not NW.valid_host(host):
            return NN.error_reply(reply, rbits, msg_id, NN.NETNAME_NO_SUCH_HOST)
        try:
            m = await self.nc.request(NN.lookup_subject(host), NN.pack_lookup_request(self.host, self.incarnation,
                                                                                      name),
                                      timeout=REQUEST_TIMEOUT)
        except NoRespondersError:
            return NN.error_reply(reply, rbits, msg_id, NN.NETNAME_NO_SUCH_HOST)
        except NatsTimeout:
            return NN.error_reply(reply, rbits, msg_id, NN.NETNAME_HOST_NOT_FOUND)
        code, refb = NN.unpack_lookup_reply(m.data)
        try:
            ref = NW.unpack_ref(refb) if code == 0 else None
        except NW.WireError:
            ref = None
        if ref is None:
            return NN.error_reply(reply, rbits, msg_id, code or NN.NETNAME_HOST_NOT_FOUND)
        if not self._fence(NW.Frame(NW.ACK, ref.host, ref.incarnation)):
            # an incarnation we declared dead (told so now): it comes back
            # as a new one, which a look-up then finds
            return NN.error_reply(reply, rbits, msg_id, NN.NETNAME_HOST_NOT_FOUND)
        keep: list[Any] = []
        port, disp = self._import(ref, keep)
        if not port:
            return NN.error_reply(reply, rbits, msg_id, NN.NETNAME_NOT_CHECKED_IN)
        return NN.port_reply(reply, rbits, port, disp)

    def _answer_lookup(self, data: bytes) -> bytes | None:
        req = NN.unpack_lookup_request(data)
        if req is None or not NW.valid_host(req[0]) or req[0] == self.host:
            return None
        host, inc, name = req
        if (host, inc) in self.fenced:
            self._tell_fenced(host, inc)
            return NN.pack_lookup_reply(NN.NETNAME_HOST_NOT_FOUND)
        ent = self._live_entry(name)
        if ent is None:
            return NN.pack_lookup_reply(NN.NETNAME_NOT_CHECKED_IN)
        R.mod_refs(self.space, ent.port, MACH_PORT_RIGHT_SEND, 1)  # the export's own reference
        ref = self._export(ent.port, NW.PORT_SEND, host, inc)
        return NN.pack_lookup_reply(NN.NETNAME_SUCCESS, NW.pack_ref(ref))

    async def _on_lookup(self, m: Any) -> None:
        out = self._answer_lookup(m.data)
        if out is not None and m.reply:
            await self.nc.publish(m.reply, out)

    async def _on_lookup_any(self, m: Any) -> None:
        """A "*" look-up: our host name if we have the name (the asker then
        asks us by name, and only then is the port exported)."""
        requester, _, raw = m.data.partition(b"\0")
        if requester.decode("utf-8", "replace") == self.host or not m.reply:
            return  # our own "*" look-up: answered locally already
        if self._live_entry(raw.decode("utf-8", "surrogateescape")) is not None:
            await self.nc.publish(m.reply, self.host.encode())


MACH_PORT_RIGHT_SEND_TYPE: Final = 1 << (16 + MACH_PORT_RIGHT_SEND)  # MACH_PORT_TYPE_SEND


def _retry_setting() -> tuple[float, int]:
    import os
    raw = os.environ.get("PYMACH_NETMSG_RETRY", "")
    try:
        after, tries = raw.split(",")
        if float(after) > 0 and int(tries) > 0:
            return float(after), int(tries)
    except ValueError:
        pass
    return RETRY_AFTER, RETRIES


def _large(raw: bytes, keep: list[Any]) -> bool:
    """Whether a message and its out-of-line buffers come to over a MiB."""
    return len(raw) + sum(len(k) for k in keep if isinstance(k, (bytes, bytearray))) > 1 << 20


def _frames(host: str) -> str:
    """The subject of every frame to ``host``'s proxy: one subscription, so
    that frames are handled in the order they were sent."""
    return f"pm.{host}.in"


def _descriptors(raw: bytes, size: int) -> list[tuple[int, int, int]]:
    """(type, name or address, disposition or size) of each descriptor of a
    received complex message."""
    off = HDR.size
    (n,) = _U32.unpack_from(raw, off)
    off += 4
    out = []
    for _ in range(n):
        if off + 12 > size:
            break
        dtype = raw[off + 11]
        if dtype == MD.MACH_MSG_PORT_DESCRIPTOR:
            name, _p, _a, _b, disp, _t = PORT_DESC.unpack_from(raw, off)
            out.append((dtype, name, disp))
            off += 12
        else:
            addr, _d, _c, _p, _t, n2 = OOL_DESC.unpack_from(raw, off)
            out.append((dtype, addr, n2))
            off += 16
    return out


def _entry_copy(name: int) -> tuple[int, bytes]:
    """(protection, bytes) of the memory entry ``name``: what travels in
    its place (a copy, taken now)."""
    from ..ipc import MemoryEntry
    entry = MemoryEntry(name)
    with entry.map(copy=True, protection=VM_PROT_READ, max_protection=VM_PROT_READ) as region:
        return entry.protection, region.read()


def _new_entry(protection: int, data: bytes) -> int:
    """A new memory entry holding a copy of ``data``: its send right's
    name (ours, to move)."""
    from ..ipc import MemoryEntry
    entry = MemoryEntry.create(max(len(data), 1), VM_PROT_READ | VM_PROT_WRITE)
    with entry.map() as region:
        region.write(data)
    if protection != VM_PROT_READ | VM_PROT_WRITE:
        narrowed = entry.sub(0, entry.size, protection & (VM_PROT_READ | VM_PROT_WRITE))
        entry.close()
        entry = narrowed
    name = entry.name
    entry._live = False  # the name is the message's now
    return name


def default_host() -> str:
    """The machine's host name, cut to a valid netmsg host name."""
    import platform
    name = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in platform.node().split(".")[0])
    return name[:64] or "localhost"


def read_seed(path: str) -> str:
    """The nkey seed in the file ``path``, which must be ours and readable
    by nobody else (mode 0600 or narrower): it is this host's identity.
    Raises ValueError saying what is wrong."""
    import os
    from pathlib import Path
    try:
        st = os.stat(path)
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"the nkey seed {path}: {e}") from None
    if st.st_uid != os.getuid():
        raise ValueError(f"the nkey seed {path} belongs to uid {st.st_uid}, not to us")
    if st.st_mode & 0o077:
        raise ValueError(f"the nkey seed {path} has mode {st.st_mode & 0o777:04o}: others may read it "
                         f"(chmod 600 {path})")
    if not (text.startswith("SU") and text.isalnum()):
        raise ValueError(f"{path} does not hold a user nkey seed (SU...)")
    return text


def serve(host: str | None = None, url: str | None = None, *, token: str | None = None,
          ready_fd: int | None = None, verbose: bool = False, nkey_seed: str | None = None,
          lease: float | None = None) -> int:
    """``pymach netmsg serve``: run the proxy of ``host`` until SIGTERM or
    SIGINT. Without ``url``, join this machine's embedded NATS server or
    start it (server.join_or_start; stopped again on the way out if we
    started it). ``token``: the NATS token for ``url`` (default
    $PYMACH_NETMSG_TOKEN). ``nkey_seed``: the path of a file (mode 0600)
    holding this host's nkey seed, our identity at ``url`` instead of a
    token. ``lease``: seconds without a beat before another host is taken
    for dead (default LEASE). ``ready_fd``: "ready" is written there once
    the proxy is checked in and subscribed. Returns the exit status."""
    import os
    import sys
    from .._linux import files, process
    from . import server
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(message)s")
    host = host or default_host()
    if not NW.valid_host(host):
        print(f"pymach netmsg: {host!r} is not a host name (1 to 64 of letters, digits, '-', '_')", file=sys.stderr)
        return 2
    if lease is not None and not 0.1 <= lease <= 3600:
        print(f"pymach netmsg: a lease of {lease} s: give 0.1 to 3600 seconds", file=sys.stderr)
        return 2
    seed = None
    if nkey_seed is not None:
        if url is None:
            print("pymach netmsg: --nkey-seed needs --nats URL (the embedded server uses its token)",
                  file=sys.stderr)
            return 2
        try:
            seed = read_seed(nkey_seed)
        except ValueError as e:
            print(f"pymach netmsg: {e}", file=sys.stderr)
            return 2
    embedded = None
    if url is None:
        try:
            url, token, embedded = server.join_or_start()
        except server.ServerError as e:
            print(f"pymach netmsg: {e}", file=sys.stderr)
            return 1
    elif token is None and seed is None:
        token = os.environ.get("PYMACH_NETMSG_TOKEN") or None

    def ready() -> None:
        log.info("netmsg: %s (incarnation %016x) serving on %s", host, proxy.incarnation, url)
        if ready_fd is not None:
            files.write(ready_fd, b"ready\n")
            files.close(ready_fd)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (process.SIGTERM, process.SIGINT):
            loop.add_signal_handler(sig, proxy.stop)
        await proxy.run()

    proxy = Proxy(host, url, token, ready=ready, nkey_seed=seed, lease=lease)
    try:
        asyncio.run(main())
    except (OSError, K.MachError) as e:
        print(f"pymach netmsg: {e}", file=sys.stderr)
        return 1
    except nats.errors.Error as e:
        print(f"pymach netmsg: {url}: {e}", file=sys.stderr)
        return 1
    finally:
        if embedded is not None:
            embedded.stop()
    return 0
