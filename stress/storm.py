"""pymach storm: a ten-process Mach system under random SIGKILLs.

The system: a bootstrap server, two services that check in a name each, and
seven clients. Clients look the services up and exchange with them and with
each other:

- requests with send-once reply rights (answered, or destroyed unanswered on
  purpose), port rights in port descriptors, out-of-line memory, memory
  entries (mach_make_memory_entry_64) mapped with mach_vm_map, and receive
  rights moved in messages with their queues;
- dead-name requests on the services' ports, no-senders requests on ports a
  client hands out (the notification goes to the port itself), and the
  send-once notifications of replies that never come.

A driver (this process, never killed) sends ``--kills`` SIGKILLs to random
members, any of the ten, and restarts each one once it has died: a service
checks in again, a client looks the services up again, and after the
bootstrap server's restart everyone goes on through the runtime's reconnect.
Then the system quiesces (every member stops starting exchanges and drains
its queues) and every surviving member reports its own view, in JSON over a
socket to the driver, which checks:

- notifications: one dead-name notification for each request on a port
  whose service was killed, none for a port that lives; each request answered
  exactly once (reply or send-once notification; a reply destroyed on purpose
  gives the notification); one no-senders notification for each handed-out
  port that no survivor holds, none while a survivor holds it;
- fds: the member's open fds (``/proc/PID/fd``, read by the driver) are
  exactly the fds the runtime accounts for (introspection, ``fds``) plus the
  member's own control socket and stdio; its names (``mach_port_names``) are
  exactly the ones it expects, and a right to a killed member is a dead name;
- messages: per sender and stream (one send right), the sequence numbers
  that arrived increase, none twice, none that failed to send; when sender
  and receiver both survived, every message whose send succeeded arrived;
- memory: every pymach memfd open or mapped in any process on the machine
  is held by a live member that accounts for it (an fd of its runtime, a
  mapping inside an entry of its map); once the survivors drop their memory,
  no pymach memfd is left anywhere.

    python -m stress.storm --kills 100 --seed 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections import Counter, deque
from typing import Any, TextIO

from pymach import bootstrap as B
from pymach import ipc
from pymach.ipc import MemoryEntry, Message, Port, PortSet, SendRight
from pymach._kern import bootstrap_port as BP
from pymach._kern import ipc_notify as N
from pymach._kern import ipc_right as R
from pymach._kern import kern_return as K
from pymach._kern import mach_msg as KM
from pymach._kern import message_defs as MD
from pymach._kern.ipc_kmsg import HDR, PORT_DESC
from pymach._kern.ipc_space import (MACH_PORT_QLIMIT_LARGE, MACH_PORT_RIGHT_DEAD_NAME, MACH_PORT_RIGHT_SEND,
                              MACH_PORT_TYPE_DEAD_NAME, MACH_PORT_TYPE_PORT_SET, MACH_PORT_TYPE_RECEIVE,
                              MACH_PORT_TYPE_SEND)
from pymach._kern.task import SELF
from pymach._kern.vm_user import vm_deallocate
from pymach.mach import bootstrap as MB
from pymach.servers import introspect

SERVICES = ("svc0", "svc1")
CLIENTS = tuple(f"cli{i}" for i in range(7))
ROLES = ("boot",) + SERVICES + CLIENTS
PREFIX = "org.pymach.storm."

# message ids
ECHO, DROP, REGISTER, PEERS, OOL, ENTRY = 1000, 1001, 1002, 1003, 1004, 1005
DATA, HANDOUT, PARCEL, ITEM = 1100, 1101, 1102, 1103
REPLY_OFFSET = 100

SEND_TIMEOUT = 0.5
_RCV = MD.MACH_RCV_MSG | MD.MACH_RCV_LARGE | MD.MACH_RCV_TIMEOUT | MD.MACH_RCV_TRAILER_ELEMENTS(
    MD.MACH_RCV_TRAILER_AUDIT)


def pattern(key: str, n: int) -> bytes:
    """``n`` bytes that only ``key`` gives."""
    block = hashlib.sha256(key.encode()).digest()
    return (block * (n // len(block) + 1))[:n]


def _type(name: int) -> int:
    try:
        return R.type_of(SELF.space, name)
    except K.MachError:
        return 0


def _release_all(name: int) -> None:
    """Drop every user reference of a send right or dead name."""
    for right in (MACH_PORT_RIGHT_SEND, MACH_PORT_RIGHT_DEAD_NAME):
        try:
            n = R.get_refs(SELF.space, name, right)
            if n:
                R.mod_refs(SELF.space, name, right, -n)
        except K.MachError:
            pass


# -- a member ------------------------------------------------------------------------------

class Member:
    """One service or client: a single-threaded loop over its port set and
    its control socket to the driver."""

    def __init__(self, role: str, ctl: socket.socket, seed: int) -> None:
        self.role = role
        self.inc = os.getpid()
        self.ctl = ctl
        self.rng = random.Random(seed ^ self.inc)
        self.base_names = {n for n, _e in SELF.space.names()}
        self.pset = PortSet()
        self.notify = self._port()  # the inbox: peers' messages and our dead-name notifications
        self.ready = False
        self.stopped = False
        self.errors: list[str] = []
        self.streams: dict[str, dict[str, Any]] = {}  # ours: to, inc, ok, fail
        self.nstreams = 0
        self.recv: dict[str, list[int]] = {}  # stream -> sequence numbers, as they arrived
        self.reqs: dict[int, dict[str, Any]] = {}  # reply port name -> request
        self.finished: deque[Port] = deque()
        self.mem: deque[tuple[MemoryEntry, Any, str]] = deque()  # entries we mapped, and where
        self.ool_held: deque[list[tuple[int, int]]] = deque()
        self.held: list[dict[str, Any]] = []  # handed-out send rights we hold
        self.delivered = 0
        # client
        self.svc: dict[str, dict[str, Any]] = {}  # service -> right, stream, dn record
        self.dn: list[dict[str, Any]] = []
        self.peers: dict[str, dict[str, Any]] = {}  # client -> inc, right, stream
        self.handouts: dict[int, dict[str, Any]] = {}
        self.nhandouts = 0
        self.next_lookup = 0.0
        # service
        self.ports: list[Port] = []
        self.directory: dict[str, tuple[int, SendRight]] = {}
        self.entry: MemoryEntry | None = None
        self.entry_region: Any = None
        self.next_status = 0.0

    def _port(self, qlimit: int = MACH_PORT_QLIMIT_LARGE) -> Port:
        p = Port()
        R.receive_port(SELF.space, p.name).set_qlimit(qlimit)
        self.pset.add(p)
        return p

    def error(self, what: str) -> None:
        if len(self.errors) < 50:
            self.errors.append(what)

    # -- the loop

    def run(self) -> None:
        if self.role in SERVICES:
            self.entry = MemoryEntry.create(8192)
            self.entry_region = self.entry.map()
            self.entry_region.write(f"{self.role}@{self.inc}".encode())
        pfd = self.pset.fileno()
        buf = b""
        while True:
            if not self.stopped:
                self.act()
            cfd = self.ctl.fileno()
            r, _w, _x = select.select([pfd, cfd], [], [], 0 if not self.stopped and self.rng.random() < 0.5
                                      else 0.02)
            if pfd in r:
                self.pump(0)
            if cfd in r:
                chunk = self.ctl.recv(1 << 16)
                if not chunk:
                    os._exit(0)  # the driver is gone
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    out = self.command(line.decode().strip())
                    self.ctl.sendall(json.dumps(out).encode() + b"\n")

    def command(self, cmd: str) -> dict[str, Any]:
        if cmd == "ping":
            return {"ready": self.ready, "role": self.role, "pid": self.inc}
        if cmd == "stop":
            self.stopped = True
            return {"ok": True}
        if cmd == "drain":
            n = 0
            while True:
                got = self.pump(0.3)
                n += got
                if not got:
                    break
            return {"n": n}
        if cmd == "report":
            return self.report()
        if cmd == "drop":
            self.drop()
            return {"ok": True}
        return {"error": f"unknown command {cmd!r}"}

    def pump(self, timeout: float) -> int:
        n = 0
        while True:
            try:
                raw = KM.receive(SELF.space, self.pset.name, 1 << 20, _RCV, int(timeout * 1000))
            except K.MachError as e:
                if e.kr != K.MACH_RCV_TIMED_OUT:
                    self.error(f"receive: {e}")
                return n
            timeout = 0
            n += 1
            try:
                self.dispatch(raw)
            except K.MachError as e:
                self.error(f"handling a message: {e}")

    # -- receiving

    def dispatch(self, raw: bytes) -> None:
        _bits, _size, _remote, local, _v, mid = HDR.unpack_from(raw)
        if mid == N.MACH_NOTIFY_DEAD_NAME:
            (name,) = struct.unpack_from("<I", raw, HDR.size + 8)
            self.on_dead_name(name)
            return
        if mid == N.MACH_NOTIFY_NO_SENDERS:
            h = self.handouts.get(local)
            if h is None:
                self.error(f"no-senders on {local:#x}, not a handed-out port")
            else:
                h["ns"] += 1
            return
        if mid == N.MACH_NOTIFY_SEND_ONCE:
            self.on_outcome(local, "so", None)
            return
        msg = ipc._decode(raw)  # pylint: disable=protected-access
        if local in self.reqs:
            self.on_outcome(local, "reply", msg)
            return
        body = json.loads(msg.data or b"{}")
        st, q = body.get("st"), body.get("q")
        if st is not None:
            self.recv.setdefault(st, []).append(q)
            self.delivered += 1
        if self.role in SERVICES:
            self.serve(mid, body, msg)
        else:
            self.on_peer(mid, body, msg)

    def unmap(self, msg: Message) -> None:
        for addr, size in msg._regions:  # pylint: disable=protected-access
            vm_deallocate(SELF.task_name, addr, size)
        msg._regions.clear()  # pylint: disable=protected-access

    def keep_ool(self, msg: Message) -> None:
        regions = list(msg._regions)  # pylint: disable=protected-access
        msg._regions.clear()  # pylint: disable=protected-access
        if regions:
            self.ool_held.append(regions)
        while len(self.ool_held) > 3:
            for addr, size in self.ool_held.popleft():
                vm_deallocate(SELF.task_name, addr, size)

    def map_entry(self, ent: MemoryEntry, expect: bytes, label: str) -> None:
        region = ent.map()
        got = region.read(0, len(expect))
        if got != expect:
            self.error(f"memory entry {label}: {got[:24]!r}, expected {expect[:24]!r}")
        self.mem.append((ent, region, label))
        while len(self.mem) > 4:
            self.release_mem()

    def release_mem(self) -> None:
        ent, region, _label = self.mem.popleft()
        region.deallocate()
        ent.close()

    # -- a service

    def serve(self, mid: int, body: dict[str, Any], msg: Message) -> None:
        reply = msg.reply
        rights: list[Any] = []
        out: dict[str, Any] = {"inc": self.inc, "q": body.get("q")}
        ool: list[bytes] = []
        if mid == DROP:
            if reply is not None:
                reply.close()  # destroyed unanswered: the client gets a send-once notification
            reply = None
        elif mid == REGISTER and msg.rights:
            old = self.directory.get(body["src"])
            if old is not None:
                _release_all(old[1].name)
            self.directory[body["src"]] = (body["inc"], msg.rights.pop(0))
        elif mid == PEERS:
            for role, (inc, right) in sorted(self.directory.items()):
                if role != body["src"] and not right.dead:
                    rights.append(right)
                    out.setdefault("peers", []).append([role, inc])
        elif mid == OOL:
            want = pattern(f"{body['st']}:{body['q']}", body["n"])
            if not msg.ool or bytes(msg.ool[0]) != want:
                self.error(f"out-of-line data of {body['st']}:{body['q']} differs")
            self.unmap(msg)
            ool = [pattern(f"back:{body['st']}:{body['q']}", body["n"])]
        elif mid == ENTRY:
            assert self.entry is not None
            rights = [self.entry]
        for r in msg.rights:
            r.close()
        self.unmap(msg)
        if reply is not None:
            try:
                reply.send(Message(json.dumps(out).encode(), mid + REPLY_OFFSET, rights, list(ool)),
                           timeout=SEND_TIMEOUT)
            except K.MachError:
                reply.close()

    def check_in(self) -> None:
        """Check our name in, or again after the bootstrap server's restart."""
        now = time.monotonic()
        if now < self.next_status:
            return
        self.next_status = now + 0.2
        name = PREFIX + self.role
        try:
            B.status(name)
            return
        except B.BootstrapError as e:
            if e.kr != MB.BOOTSTRAP_UNKNOWN_SERVICE:
                return
        except K.MachError:
            return  # no server now: the driver restarts it
        try:
            p = B.check_in(name)
        except K.MachError:
            return
        R.receive_port(SELF.space, p.name).set_qlimit(MACH_PORT_QLIMIT_LARGE)
        self.pset.add(p)
        self.ports.append(p)
        self.ready = True

    # -- a client

    def act(self) -> None:
        if self.role in SERVICES:
            self.check_in()
            return
        self.connect()
        if not self.ready:
            return
        live = [s for s in SERVICES if self.svc.get(s)]
        x = self.rng.random()
        try:
            if x < 0.2 and live:
                self.request(self.rng.choice(live), ECHO, {})
            elif x < 0.27 and live:
                self.request(self.rng.choice(live), DROP, {})
            elif x < 0.32 and live:
                self.request(self.rng.choice(live), PEERS, {})
            elif x < 0.40 and live:
                s = self.rng.choice(live)
                n = self.rng.choice((100, 5000, 20000, 70000))
                st = self.svc[s]["st"]
                self.request(s, OOL, {"n": n}, ool=[pattern(f"{st}:{self.streams[st]['n'] + 1}", n)])
            elif x < 0.46 and live:
                self.request(self.rng.choice(live), ENTRY, {})
            elif x < 0.50:
                self.look_up_again()
            elif x < 0.72:
                self.send_data()
            elif x < 0.80:
                self.hand_out()
            elif x < 0.85:
                self.send_parcel()
            elif x < 0.90 and self.held:
                h = self.held.pop(self.rng.randrange(len(self.held)))
                h["right"].close()
            elif x < 0.93 and self.mem:
                self.release_mem()
            self.retire()
        except K.MachError as e:
            self.error(f"action: {e}")

    def connect(self) -> None:
        """Look up the services we have no live right for."""
        now = time.monotonic()
        if now < self.next_lookup:
            return
        self.next_lookup = now + 0.1
        for s in SERVICES:
            if self.svc.get(s):
                continue
            try:
                right = B.look_up(PREFIX + s)
            except K.MachError:
                continue
            rec = {"name": right.name, "svc": s, "st": self.new_stream(s, None), "count": 0, "kr": 0}
            try:
                prev = R.request_notification(SELF.space, right.name, N.MACH_NOTIFY_DEAD_NAME, 0,
                                              self.notify.name, MD.MACH_MSG_TYPE_MAKE_SEND_ONCE)
                if prev:
                    self.error(f"a dead-name request was already armed on {right.name:#x}")
            except K.MachError as e:
                rec["kr"] = e.kr
                if e.kr != K.KERN_INVALID_ARGUMENT:  # already dead
                    self.error(f"dead-name request: {e}")
                _release_all(right.name)
                continue
            self.dn.append(rec)
            self.svc[s] = {"right": right, "st": rec["st"], "dn": rec}
            self.request(s, ECHO, {})
            inbox = self.notify.make_send()
            self.request(s, REGISTER, {}, rights=[inbox])
            inbox.close()
        self.ready = all(self.svc.get(s) for s in SERVICES)

    def on_dead_name(self, name: int) -> None:
        recs = [r for r in self.dn if r["name"] == name]
        if not recs:
            self.error(f"dead-name notification for {name:#x}, never requested")
            return
        rec = recs[-1]
        rec["count"] += 1
        cur = self.svc.get(rec["svc"])
        if cur and cur["right"].name == name:
            self.svc[rec["svc"]] = {}
            self.ready = False
        _release_all(name)

    def new_stream(self, to: str, inc: int | None) -> str:
        self.nstreams += 1
        st = f"{self.role}@{self.inc}/{self.nstreams}"
        self.streams[st] = {"to": to, "inc": inc, "ok": [], "fail": [], "n": 0}
        return st

    def send_on(self, right: SendRight, st: str, mid: int, body: dict[str, Any], *, reply: Port | None = None,
                rights: list[Any] | None = None, ool: list[bytes] | None = None) -> int:
        """Send the next message of stream ``st``: its sequence number, or 0
        when the send failed."""
        s = self.streams[st]
        s["n"] += 1
        q: int = s["n"]
        body = dict(body, st=st, q=q, src=self.role, inc=self.inc)
        try:
            right.send(Message(json.dumps(body).encode(), mid, list(rights or ()), list(ool or ())), reply=reply,
                       timeout=SEND_TIMEOUT)
        except K.MachError as e:
            s["fail"].append([q, e.kr])
            return 0
        s["ok"].append(q)
        return q

    def request(self, svc: str, mid: int, body: dict[str, Any], rights: list[Any] | None = None,
                ool: list[bytes] | None = None) -> None:
        cur = self.svc[svc]
        rp = self._port(1)
        q = self.send_on(cur["right"], cur["st"], mid, body, reply=rp, rights=rights, ool=ool)
        if not q:
            rp.close()
            return
        self.reqs[rp.name] = {"kind": mid, "st": cur["st"], "q": q, "out": None, "dup": 0, "port": rp,
                              "n": body.get("n", 0)}

    def on_outcome(self, name: int, how: str, msg: Message | None) -> None:
        req = self.reqs.get(name)
        if req is None:
            self.error(f"{how} on {name:#x}, not a reply port")
            if msg is not None:
                msg.release()
            return
        if req["out"] is not None:
            req["dup"] += 1
            if msg is not None:
                msg.release()
            return
        req["out"] = how
        self.finished.append(req["port"])
        if msg is None:
            return
        body = json.loads(msg.data or b"{}")
        st = self.streams[req["st"]]
        if st["inc"] is None:
            st["inc"] = body.get("inc")
            for rec in self.dn:
                if rec["st"] == req["st"]:
                    rec["inc"] = st["inc"]
        elif st["inc"] != body.get("inc"):
            self.error(f"stream {req['st']}: answered by {body.get('inc')}, not {st['inc']}")
        if body.get("q") != req["q"]:
            self.error(f"reply for {body.get('q')} to request {req['q']}")
        kind = req["kind"]
        if kind == PEERS:
            self.on_peers(body.get("peers", []), msg.rights)
        elif kind == OOL:
            want = pattern(f"back:{req['st']}:{req['q']}", req["n"])
            if not msg.ool or bytes(msg.ool[0]) != want:
                self.error(f"out-of-line reply to {req['st']}:{req['q']} differs")
            self.keep_ool(msg)
        elif kind == ENTRY and msg.rights and isinstance(msg.rights[0], MemoryEntry):
            self.map_entry(msg.rights[0], f"{st['to']}@{body['inc']}".encode(), f"svc:{body['inc']}")
            msg.rights = []
        msg.release()

    def retire(self, keep: int = 16) -> None:
        """Destroy answered reply ports, the oldest first (a few stay, to
        catch a second answer)."""
        while len(self.finished) > keep:
            self.finished.popleft().close()

    def look_up_again(self) -> None:
        s = self.rng.choice(SERVICES)
        try:
            right = B.look_up(PREFIX + s)
        except K.MachError:
            return
        cur = self.svc.get(s)
        if cur and cur["right"].name == right.name:
            right.close()  # the same port: one reference less
        else:
            _release_all(right.name)

    def on_peers(self, peers: list[list[Any]], rights: list[Any]) -> None:
        for (role, inc), right in zip(peers, rights):
            cur = self.peers.get(role)
            if cur and cur["inc"] == inc:
                if right.name == cur["right"].name:
                    right.close()
                else:
                    _release_all(right.name)
                continue
            if cur:
                _release_all(cur["right"].name)
            self.peers[role] = {"inc": inc, "right": right, "st": self.new_stream(role, inc)}
        rights.clear()

    def _peer(self) -> dict[str, Any] | None:
        if not self.peers:
            return None
        return self.peers[self.rng.choice(sorted(self.peers))]

    def _to_peer(self, p: dict[str, Any], mid: int, body: dict[str, Any], **kw: Any) -> int:
        q = self.send_on(p["right"], p["st"], mid, body, **kw)
        if not q and p["right"].dead:
            role = self.streams[p["st"]]["to"]
            _release_all(p["right"].name)
            del self.peers[role]
        return q

    def send_data(self) -> None:
        p = self._peer()
        if p is None:
            return
        q = self.streams[p["st"]]["n"] + 1
        key = f"{p['st']}:{q}"
        body: dict[str, Any] = {}
        ool: list[bytes] = []
        rights: list[Any] = []
        x = self.rng.random()
        if x < 0.35:
            body["n"] = self.rng.choice((64, 4096, 9000, 50000))
            ool = [pattern(key, body["n"])]
        elif x < 0.6:
            size = self.rng.choice((4096, 12288))
            ent = MemoryEntry.create(size)
            with ent.map() as region:
                region.write(pattern(key, size))
            body["entry"] = size
            rights = [ent]
            try:
                self._to_peer(p, DATA, body, rights=rights)
            finally:
                ent.close()
            return
        self._to_peer(p, DATA, body, ool=ool)

    def hand_out(self) -> None:
        p = self._peer()
        if p is None:
            return
        port = self._port(1)
        self.nhandouts += 1
        h = {"h": self.nhandouts, "to": self.streams[p["st"]]["to"], "to_inc": p["inc"], "ns": 0, "port": port,
             "sent": False}
        self.handouts[port.name] = h
        right = port.make_send()
        # armed with a sender alive: with none, and sync 0 <= the make-send
        # count, it would fire at once (ipc_port_nsrequest)
        R.request_notification(SELF.space, port.name, N.MACH_NOTIFY_NO_SENDERS, 0, port.name,
                               MD.MACH_MSG_TYPE_MAKE_SEND_ONCE)
        try:
            h["sent"] = bool(self._to_peer(p, HANDOUT, {"h": h["h"]}, rights=[right]))
        finally:
            right.close()  # the peer's is the only send right now

    def send_parcel(self) -> None:
        """Queue a few messages on a new port and move its receive right
        to a peer: the messages travel with it."""
        p = self._peer()
        if p is None:
            return
        parcel = Port()
        st = self.new_stream("parcel", None)
        with parcel.make_send() as to:
            for _ in range(self.rng.randint(1, 4)):
                self.send_on(to, st, ITEM, {})
        q = self.streams[p["st"]]["n"] + 1
        self.streams[p["st"]]["n"] = q
        body = json.dumps({"st": p["st"], "q": q, "src": self.role, "inc": self.inc, "parcel": st}).encode()
        body = struct.pack("<I", len(body)) + body + b"\0" * (-len(body) % 4)
        desc = PORT_DESC.pack(parcel.name, 0, 0, 0, MD.MACH_MSG_TYPE_MOVE_RECEIVE, MD.MACH_MSG_PORT_DESCRIPTOR)
        raw = HDR.pack(MD.MACH_MSGH_BITS(MD.MACH_MSG_TYPE_COPY_SEND, 0) | MD.MACH_MSGH_BITS_COMPLEX,
                       HDR.size + 4 + len(desc) + len(body), p["right"].name, 0, 0, PARCEL)
        try:
            KM.send(SELF.space, raw + struct.pack("<I", 1) + desc + body,
                    MD.MACH_SEND_MSG | MD.MACH_SEND_TIMEOUT, int(SEND_TIMEOUT * 1000))
        except K.MachError as e:
            self.streams[p["st"]]["fail"].append([q, e.kr])
            parcel.close()
            return
        parcel._live = False  # pylint: disable=protected-access
        self.streams[p["st"]]["ok"].append(q)
        self.streams[st]["inc"] = p["inc"]
        self.streams[st]["to"] = self.streams[p["st"]]["to"]

    def on_peer(self, mid: int, body: dict[str, Any], msg: Message) -> None:
        key = f"{body.get('st')}:{body.get('q')}"
        if mid == DATA:
            if "n" in body:
                if not msg.ool or bytes(msg.ool[0]) != pattern(key, body["n"]):
                    self.error(f"out-of-line data of {key} differs")
                if self.rng.random() < 0.5:
                    self.keep_ool(msg)
            if "entry" in body:
                ent = msg.rights.pop(0) if msg.rights else None
                if isinstance(ent, MemoryEntry):
                    self.map_entry(ent, pattern(key, body["entry"]), key)
                else:
                    self.error(f"{key}: no memory entry")
                    if ent is not None:
                        ent.close()
        elif mid == HANDOUT and msg.rights:
            self.held.append({"owner": body["inc"], "h": body["h"], "right": msg.rights.pop(0)})
        elif mid == PARCEL and msg.rights:
            parcel = Port(msg.rights.pop(0).name)
            while True:
                try:
                    item = parcel.receive(timeout=0)
                except K.MachError as e:
                    if e.kr != K.MACH_RCV_TIMED_OUT:
                        self.error(f"parcel {body.get('parcel')}: {e}")
                    break
                ib = json.loads(item.data)
                self.recv.setdefault(ib["st"], []).append(ib["q"])
                self.delivered += 1
                if ib["st"] != body.get("parcel"):
                    self.error(f"parcel {body.get('parcel')} held {ib['st']}")
                item.release()
            parcel.close()
        for r in msg.rights:
            r.close()
        self.unmap(msg)

    # -- the end

    def drop(self) -> None:
        """Release every right and mapping we were given or hold for others."""
        while self.mem:
            self.release_mem()
        while self.ool_held:
            for addr, size in self.ool_held.popleft():
                vm_deallocate(SELF.task_name, addr, size)
        for h in self.held:
            h["right"].close()
        self.held = []
        if self.entry is not None:
            self.entry_region.deallocate()
            self.entry.close()
            self.entry = None

    def expected_names(self) -> dict[int, str]:
        exp: dict[int, str] = {n: "runtime" for n in self.base_names}
        exp[self.pset.name] = "pset"
        exp[self.notify.name] = "inbox"
        conn = BP.CONNECTION
        for n in [conn.name, *conn.stale]:
            if n:
                exp[n] = "bootstrap"
        reply = BP.reply_port_name()
        if reply:
            exp[reply] = "mig-reply"
        for p in self.ports:
            exp[p.name] = "service"
        for role, (inc, right) in self.directory.items():
            exp[right.name] = f"peer:{role}:{inc}"
        if self.entry is not None:
            exp[self.entry.name] = "entry"
        for name, req in self.reqs.items():
            if req["port"]._live:  # pylint: disable=protected-access
                exp[name] = "reply-port"
        for ent, _region, label in self.mem:
            exp[ent.name] = "mapped-entry"
        for h in self.held:
            exp[h["right"].name] = f"held:{h['owner']}"
        for name in self.handouts:
            exp[name] = "handout"
        for s, cur in self.svc.items():
            if cur:
                inc = self.streams[cur["st"]]["inc"]
                exp[cur["right"].name] = f"svc:{s}:{inc if inc is not None else '?'}"
        for role, peer in self.peers.items():
            exp[peer["right"].name] = f"peer:{role}:{peer['inc']}"
        return exp

    def report(self) -> dict[str, Any]:
        self.retire(keep=0)
        names = {str(n): _type(n) for n, _e in SELF.space.names()}
        return {
            "role": self.role, "pid": self.inc, "errors": self.errors, "delivered": self.delivered,
            "own_fds": [0, 1, 2, self.ctl.fileno()],
            "names": names, "expected": {str(k): v for k, v in self.expected_names().items()},
            "streams": {k: {x: v[x] for x in ("to", "inc", "ok", "fail")} for k, v in self.streams.items()},
            "recv": self.recv,
            "dn": [{k: v for k, v in r.items()} for r in self.dn],
            "reqs": [{"kind": r["kind"], "st": r["st"], "q": r["q"], "out": r["out"], "dup": r["dup"]}
                     for r in self.reqs.values()],
            "handouts": [{k: h[k] for k in ("h", "to", "to_inc", "ns", "sent")} for h in self.handouts.values()],
            "held": [[h["owner"], h["h"]] for h in self.held],
        }


def member_main(role: str, ctl: socket.socket, seed: int) -> None:
    """The body of a forked member; never returns."""
    code = 0
    try:
        if role == "boot":
            from pymach.servers.bootstrap import serve
            with open(os.devnull, "w", encoding="utf-8") as null:
                code = serve(None, out=null)
        else:
            Member(role, ctl, seed).run()
    except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        code = 3
    finally:
        sys.stderr.flush()
        os._exit(code)


# -- the driver ----------------------------------------------------------------------------

class Driver:
    def __init__(self, seed: int, out: TextIO) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.out = out
        self.procs: dict[str, tuple[int, socket.socket]] = {}
        self.killed: set[int] = set()
        self.crashed: list[str] = []
        self.started = 0
        self.sigkilled: dict[str, int] = {}  # per role: members that waitpid saw end by our SIGKILL

    def start(self, role: str) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.started += 1
        seed = self.rng.randrange(1 << 30)
        pid = os.fork()
        if pid == 0:
            mine.close()
            for _r, (_p, s) in self.procs.items():
                s.close()
            # what the driver's own caller left open is not the member's
            keep = {0, 1, 2, theirs.fileno(), *introspect.held_fds(SELF.space, SELF.map)["runtime"]}
            for fd in [int(f) for f in os.listdir("/proc/self/fd")]:
                if fd not in keep:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            if role == "boot":
                theirs.close()
            member_main(role, theirs, seed)
        theirs.close()
        self.procs[role] = (pid, mine)

    def kill(self, role: str) -> bool:
        """SIGKILL the member and reap it. True (and counted in
        ``sigkilled``) when waitpid says SIGKILL ended it; a member that had
        ended otherwise is a crash."""
        pid, s = self.procs.pop(role)
        os.kill(pid, signal.SIGKILL)
        _p, status = os.waitpid(pid, 0)
        s.close()
        self.killed.add(pid)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            self.crashed.append(f"{role} (pid {pid}) ended with status {status} before its kill")
            return False
        self.sigkilled[role] = self.sigkilled.get(role, 0) + 1
        return True

    def check_crashes(self) -> None:
        for role, (pid, _s) in list(self.procs.items()):
            p, status = os.waitpid(pid, os.WNOHANG)
            if p:
                self.crashed.append(f"{role} (pid {pid}) ended by itself with status {status}")
                self.procs.pop(role)[1].close()
                self.killed.add(pid)
                self.start(role)

    def ask(self, role: str, cmd: str, timeout: float = 60.0) -> dict[str, Any]:
        self.tell(role, cmd)
        return self.answer(role, timeout)

    def tell(self, role: str, cmd: str) -> None:
        self.procs[role][1].sendall(cmd.encode() + b"\n")

    def answer(self, role: str, timeout: float = 60.0) -> dict[str, Any]:
        _pid, s = self.procs[role]
        s.settimeout(timeout)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                raise RuntimeError(f"{role} closed its control socket")
            buf += chunk
        return json.loads(buf)  # type: ignore[no-any-return]

    def members(self) -> list[str]:
        return [r for r in ROLES if r != "boot"]

    def ask_all(self, cmd: str) -> dict[str, dict[str, Any]]:
        """``cmd`` to every member at once, then their answers."""
        for r in self.members():
            self.tell(r, cmd)
        return {r: self.answer(r) for r in self.members()}

    def quiesce(self) -> int:
        """Drain every member's queues until two rounds in a row find
        nothing (a notification the watcher makes late still lands in the
        second). Returns the messages drained."""
        total, quiet = 0, 0
        for _round in range(40):
            n = sum(a["n"] for a in self.ask_all("drain").values())
            total += n
            quiet = quiet + 1 if n == 0 else 0
            if quiet == 2:
                break
        return total

    def stop_all(self) -> None:
        for role, (pid, s) in list(self.procs.items()):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            s.close()
        self.procs.clear()


def storm_pids() -> set[int]:
    """This process and every live descendant of it: the only processes a
    memfd of the storm can reach (members pass memory to members only).
    Other pymach programs running on the machine are left alone."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", encoding="utf-8", errors="replace") as f:
                    parent[int(d)] = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out = {os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, pp in parent.items() if pp in out} - out
        out |= more
        grew = bool(more)
    return out


def scan_memfds(ignore: frozenset[int] = frozenset()) -> list[tuple[int, str, int, str]]:
    """Every pymach memfd open or mapped in this process and its
    descendants, but the inodes in ``ignore``: (pid, "fd" or "map", inode,
    what)."""
    out = []
    for pid in sorted(storm_pids()):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("/memfd:mach."):
                    ino = os.stat(f"/proc/{pid}/fd/{fd}").st_ino
                    if ino not in ignore:
                        out.append((pid, "fd", ino, fd))
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if "/memfd:mach." in line:
                        parts = line.split()
                        if int(parts[4]) not in ignore:
                            out.append((pid, "map", int(parts[4]), parts[0]))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return out


def _fd_target(pid: int, fd: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return "?"  # closed since it was listed


class Checker:
    def __init__(self, driver: Driver) -> None:
        self.d = driver
        # what the driver's own program held before the storm is not the storm's
        self.before = frozenset(ino for _pid, _k, ino, _w in scan_memfds())
        self.failures: list[str] = []
        self.notifications = 0
        self.messages = 0
        self.verified = 0  # sends between survivors, each seen to arrive once
        self.received: Counter[str] = Counter()

    def fail(self, what: str) -> None:
        self.failures.append(what)

    def alive(self, inc: int | None) -> bool:
        return inc is not None and inc not in self.d.killed

    def check_fds(self, role: str, rep: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        pid = rep["pid"]
        acc = introspect.query(pid, "fds")
        assert acc is not None
        accounted: set[int] = set(acc["map"]) | set(acc["task"]) | set(acc["runtime"]) | set(rep["own_fds"])
        for fds in acc["names"].values():
            accounted |= set(fds)
        open_ = {int(n) for n in os.listdir(f"/proc/{pid}/fd")}
        leaked = open_ - accounted
        stale = accounted - open_
        if leaked:
            self.fail(f"{role}: fds nobody accounts for: {sorted(leaked)} "
                      f"({[_fd_target(pid, fd) for fd in sorted(leaked)][:8]})")
        if stale:
            self.fail(f"{role}: the runtime accounts for fds that are closed: {sorted(stale)}")
        return len(leaked), acc

    def check_names(self, role: str, rep: dict[str, Any]) -> None:
        names = {int(k): v for k, v in rep["names"].items()}
        exp = {int(k): v for k, v in rep["expected"].items()}
        if set(names) != set(exp):
            self.fail(f"{role}: names {sorted(hex(n) for n in set(names) - set(exp))} not expected, "
                      f"{sorted(hex(n) for n in set(exp) - set(names))} missing "
                      f"({[exp[n] for n in set(exp) - set(names)]})")
        for n, label in exp.items():
            t = names.get(n, 0)
            kind, _, rest = label.partition(":")
            if kind in ("svc", "peer", "held"):
                inc_s = rest.rpartition(":")[2]
                inc = int(inc_s) if inc_s.isdigit() else None
                if inc is None:
                    continue
                want = MACH_PORT_TYPE_SEND if self.alive(inc) else MACH_PORT_TYPE_DEAD_NAME
                if not t & want:
                    self.fail(f"{role}: {label} {n:#x} has type {t:#x}, not {want:#x}")
            elif kind == "bootstrap":
                if not t & (MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_DEAD_NAME):
                    self.fail(f"{role}: bootstrap name {n:#x} has type {t:#x}")
            elif kind in ("pset",) and not t & MACH_PORT_TYPE_PORT_SET:
                self.fail(f"{role}: {label} {n:#x} type {t:#x}")
            elif kind in ("inbox", "service", "handout", "reply-port") and not t & MACH_PORT_TYPE_RECEIVE:
                self.fail(f"{role}: {label} {n:#x} type {t:#x}")

    def check_notifications(self, reports: dict[str, dict[str, Any]], final: bool) -> None:
        held = {(o, h) for rep in reports.values() for o, h in rep["held"]}
        for role, rep in reports.items():
            if final:
                self.received["dead-name"] += sum(rec["count"] for rec in rep["dn"])
                self.received["send-once"] += sum(req["out"] == "so" for req in rep["reqs"])
                self.received["no-senders"] += sum(h["ns"] for h in rep["handouts"])
                self.received["replies"] += sum(req["out"] == "reply" for req in rep["reqs"])
            for rec in rep["dn"]:
                self.notifications += 1
                inc = rec.get("inc")
                if inc is None:
                    if rec["count"] > 1:
                        self.fail(f"{role}: {rec['count']} dead-name notifications for {rec['name']:#x}")
                    continue
                want = 0 if self.alive(inc) else 1
                if rec["count"] != want:
                    self.fail(f"{role}: {rec['count']} dead-name notifications for {rec['svc']}@{inc} "
                              f"({'alive' if want == 0 else 'killed'}), expected {want}")
            streams = rep["streams"]
            for req in rep["reqs"]:
                self.notifications += 1
                if req["out"] is None or req["dup"]:
                    self.fail(f"{role}: request {req['st']}:{req['q']} (id {req['kind']}) answered "
                              f"{req['out']}, {req['dup']} more times")
                    continue
                inc = streams[req["st"]]["inc"]
                if req["kind"] == DROP and req["out"] != "so":
                    self.fail(f"{role}: request {req['st']}:{req['q']} destroyed unanswered got a {req['out']}")
                if req["kind"] == ECHO and req["out"] == "so" and self.alive(inc):
                    self.fail(f"{role}: echo {req['st']}:{req['q']} to the living {inc} got no reply")
            for h in rep["handouts"]:
                self.notifications += 1
                want = 0 if (rep["pid"], h["h"]) in held else 1
                if h["ns"] != want:
                    self.fail(f"{role}: handout {h['h']} (to {h['to']}@{h['to_inc']}, sent {h['sent']}) got "
                              f"{h['ns']} no-senders notifications, expected {want}"
                              f"{' (final)' if final else ''}")

    def check_messages(self, reports: dict[str, dict[str, Any]]) -> None:
        got: dict[str, tuple[str, int, list[int]]] = {}
        for role, rep in reports.items():
            for st, seqs in rep["recv"].items():
                self.messages += len(seqs)
                if any(b <= a for a, b in zip(seqs, seqs[1:])):
                    self.fail(f"{role}: stream {st} arrived out of order or twice: {seqs[:20]}")
                if st in got:
                    self.fail(f"stream {st} arrived at {got[st][0]} and at {role}")
                got[st] = (role, rep["pid"], seqs)
        for role, rep in reports.items():
            for st, s in rep["streams"].items():
                ok = set(s["ok"])
                failed = {q for q, _kr in s["fail"]}
                recv = got.get(st)
                if recv is not None:
                    extra = set(recv[2]) - ok
                    if extra:
                        self.fail(f"stream {st}: {sorted(extra)[:10]} arrived at {recv[0]} but were not "
                                  f"sent ({sorted(extra & failed)[:10]} failed)")
                inc = s["inc"]
                if self.alive(inc):
                    if recv is None:
                        if ok:
                            self.fail(f"stream {st} to the living {s['to']}@{inc}: none of {len(ok)} arrived")
                    elif recv[1] != inc:
                        self.fail(f"stream {st} to {inc} arrived at {recv[1]}")
                    elif set(recv[2]) != ok:
                        self.fail(f"stream {st} to {s['to']}@{inc}: lost {sorted(ok - set(recv[2]))[:10]}")
                    else:
                        self.verified += len(ok)
                elif inc is not None and recv is not None:
                    self.fail(f"stream {st} to the killed {inc} arrived at {recv[0]}")

    def check_memfds(self, reports: dict[str, dict[str, Any]], accts: dict[int, dict[str, Any]],
                     final: bool) -> int:
        pids = {rep["pid"]: role for role, rep in reports.items()}
        bad = 0
        regions: dict[int, list[tuple[int, int]]] = {}
        for pid, kind, ino, what in scan_memfds(self.before):
            if final:
                self.fail(f"pid {pid} still holds a pymach memfd (inode {ino}, {kind} {what}) after the drop")
                bad += 1
                continue
            if pid not in pids:
                self.fail(f"pid {pid}, not a live member, holds a pymach memfd ({kind} {what}, inode {ino})")
                bad += 1
                continue
            if kind == "fd":
                acc = accts[pid]
                fds = set(acc["map"]) | {fd for v in acc["names"].values() for fd in v}
                if int(what) not in fds:
                    self.fail(f"{pids[pid]}: memfd fd {what} (inode {ino}) is not its runtime's")
                    bad += 1
            else:
                if pid not in regions:
                    r = introspect.query(pid, "regions")
                    assert r is not None
                    regions[pid] = [(e["start"], e["end"]) for e in r["regions"]]
                lo, hi = (int(x, 16) for x in what.split("-"))
                if not any(s <= lo and hi <= e for s, e in regions[pid]):
                    self.fail(f"{pids[pid]}: memfd mapping {what} (inode {ino}) is in no entry of its map")
                    bad += 1
        return bad


def run(kills: int, seed: int, out: TextIO, interval: tuple[float, float] = (0.05, 0.2)) -> int:
    """Run the storm; print the figures; 0 when every check passed, 1 when not."""
    t0 = time.monotonic()
    # the bootstrap server is a member ("boot"), killed and restarted like the others
    with B.private_server(serve=False) as boot:
        d = Driver(seed, out)
        chk = Checker(d)
        try:
            d.start("boot")
            for _ in range(100):
                if os.path.exists(boot.path):
                    break
                time.sleep(0.02)
            for role in ROLES[1:]:
                d.start(role)
            time.sleep(0.5)
            for _ in range(kills):
                time.sleep(d.rng.uniform(*interval))
                d.check_crashes()
                role = d.rng.choice(ROLES)
                d.kill(role)
                d.start(role)
            storm_end = time.monotonic()
            # recovery: everyone ready, then quiet
            deadline = time.monotonic() + 60
            waiting = set(d.members())
            while waiting and time.monotonic() < deadline:
                d.check_crashes()
                waiting = {r for r in waiting if not d.ask(r, "ping")["ready"]}
                time.sleep(0.05)
            if waiting:
                chk.fail(f"not recovered within 60 s: {sorted(waiting)}")
            recovered = time.monotonic()
            d.ask_all("stop")
            d.quiesce()
            reports = d.ask_all("report")
            accts: dict[int, dict[str, Any]] = {}
            leaked = 0
            for r, rep in reports.items():
                for e in rep["errors"]:
                    chk.fail(f"{r}: {e}")
                n, accts[rep["pid"]] = chk.check_fds(r, rep)
                leaked += n
                chk.check_names(r, rep)
            chk.check_notifications(reports, final=False)
            chk.check_messages(reports)
            memfds_seen = len(scan_memfds(chk.before))
            bad_memfds = chk.check_memfds(reports, accts, final=False)
            # the survivors drop their memory and the rights they hold for others
            d.ask_all("drop")
            d.quiesce()
            final = d.ask_all("report")
            for r, rep in final.items():
                for e in rep["errors"][len(reports[r]["errors"]):]:
                    chk.fail(f"{r}: {e}")
                n, _acc = chk.check_fds(r, rep)
                leaked += n
                chk.check_names(r, rep)
                if rep["held"]:
                    chk.fail(f"{r}: still holds handouts after the drop")
            chk.check_notifications(final, final=True)
            bad_memfds += chk.check_memfds(final, {}, final=True)
            for c in d.crashed:
                chk.fail(c)
            wall = time.monotonic() - t0
            print(f"pymach storm: {kills} SIGKILLs, seed {seed}", file=out)
            landed = sum(d.sigkilled.values())
            roles = ", ".join(f"{r} {d.sigkilled[r]}" for r in ROLES if d.sigkilled.get(r))
            if chk.failures:
                print(f"  kills                {landed} ({roles}); not survived: {len(chk.failures)} "
                      f"failed check{'s' if len(chk.failures) > 1 else ''}",
                      file=out)
            else:
                print(f"  kills survived       {landed} ({roles})", file=out)
            print(f"  members started      {d.started}", file=out)
            print(f"  recovery             {recovered - storm_end:.2f} s", file=out)
            print(f"  messages checked     {chk.messages} (at the survivors; {chk.verified} sent between survivors, "
                  f"each arrived exactly once)", file=out)
            rcv = chk.received
            print(f"  notifications checked {chk.notifications} (received: dead-name {rcv['dead-name']}, "
                  f"send-once {rcv['send-once']}, no-senders {rcv['no-senders']}; replies {rcv['replies']})", file=out)
            print(f"  memfds seen          {memfds_seen}", file=out)
            print(f"  fds leaked           {leaked}", file=out)
            print(f"  memfds leaked        {bad_memfds}", file=out)
            print(f"  wall time            {wall:.1f} s", file=out)
            for f in chk.failures[:40]:
                print(f"FAIL {f}", file=out)
            if chk.failures:
                print(f"{len(chk.failures)} failures", file=out)
            return 1 if chk.failures else 0
        finally:
            d.stop_all()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stress.storm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=100, help="how many SIGKILLs (default 100)")
    ap.add_argument("--seed", type=int, default=None, help="the random seed (default: a random one)")
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else random.randrange(1 << 31)
    return run(a.kills, seed, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
