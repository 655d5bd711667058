"""pymach fuzz ipc: write malformed records on a real port's connections and
check that the receiver survives each one.

Every case is one record written straight onto a send right's connection
(SOCK_SEQPACKET, fds by SCM_RIGHTS), then a good message (the sentinel). The
receiver must give each case a clear outcome (a MACH_RCV_* code, the record
dropped when it is control junk, or the record delivered when a mutation
happens to be well formed), then deliver the sentinel. Every
``--check-every`` records the process's open fds must be back at their
baseline. Out-of-line memory that is delivered is read to its end, so a
memfd a peer could shrink would be a SIGBUS here. The command exits 1,
naming them, when any record got no clear outcome (a code not among the
MACH_RCV_* ones above, a record the kernel would not send, a reply right
without the channel to fuzz), or when the fds did not come back.

Records are mutations of real records (captured from pymach's own sends:
simple, inline, port rights, send-once rights, a receive right, out-of-line
memory, a body in a memfd) and of control records (JOIN, REPLYCONN,
UPGRADE, SO_DEAD, REPLY): random bytes, truncations, boundary values in
every field (counts, sizes, wrapped 32- and 64-bit arithmetic), fd arrays
that do not match, fds of the wrong kind (pipes, files, datagram and stream
sockets, eventfds, epoll, unsealed, write-sealed-only and shrunk memfds).
Some records go on a channel's reply connection instead, where junk must
be dropped and the real reply still arrive.

    python -m stress.fuzz_ipc --records 1000000
"""

from __future__ import annotations

import argparse
import array
import fcntl
import gc
import os
import random
import select
import socket
import struct
import sys
import time
import types
from collections import Counter
from typing import Any, Callable, TextIO, cast

from pymach import ipc
from pymach._kern import ipc_port as IP
from pymach._kern import ipc_wire as W
from pymach._kern import ipc_right as R
from pymach._kern import kern_return as K
from pymach._kern.task import SELF

SENTINEL = 0x5E7
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
FD_KINDS = ("seqpacket", "eventfd", "pipe", "file", "dgram", "stream", "memfd", "unsealed",
            "write_sealed", "shrunk", "epoll")
_BOUNDARY32 = (0, 1, 2, 3, 4, 7, 8, 16, 17, 18, 19, 20, 21, 252, 253, 254, 255, 256, 0x3F, 0x40,
               0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFC, 0xFFFFFFFF)
_BOUNDARY64 = (0, 1, 4096, 1 << 20, 1 << 31, 1 << 32, (1 << 32) - 1, 1 << 56, (1 << 63) - 1,
               1 << 63, (1 << 64) - 4096, (1 << 64) - 1)
_CONTROL_FLAGS = (W.FLAG_JOIN, W.FLAG_REPLYCONN, W.FLAG_UPGRADE, W.FLAG_SO_DEAD, W.FLAG_REPLY,
                  W.FLAG_REPLY | 1, W.CONTROL, 0xFF)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) - 1  # without listdir's own


def _targets() -> list[str]:
    out = []
    for n in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            out.append(f"{n}:{os.readlink('/proc/self/fd/' + n)}")
        except OSError:
            pass
    return out


def make_fds(kind: str) -> tuple[list[int], int]:
    """Fds of one kind; returns (fds, an fd to shrink after sending or -1)."""
    if kind == "seqpacket":
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        b.close()
        return [a.detach()], -1
    if kind == "eventfd":
        return [os.eventfd(5, os.EFD_CLOEXEC)], -1
    if kind == "pipe":
        r, w = os.pipe()
        return [r, w], -1
    if kind == "file":
        return [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)], -1
    if kind in ("dgram", "stream"):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM if kind == "dgram" else socket.SOCK_STREAM)
        return [a.detach(), b.detach()], -1
    if kind == "epoll":
        ep = select.epoll()
        fd = os.dup(ep.fileno())
        ep.close()
        return [fd], -1
    fd = os.memfd_create("fuzz", os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
    os.ftruncate(fd, 1 << 16)
    if kind == "memfd":
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    elif kind == "write_sealed":
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
    return [fd], (fd if kind in ("shrunk", "write_sealed") else -1)


class Templates:
    """Real records captured from pymach's own sends, with their fds."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes, list[int]]] = []
        with ipc.Port() as box, box.make_send() as to_box, ipc.Port() as other, other.make_send() as so_src:
            kp = cast(IP.Port, SELF.space.lookup(box.name).object)  # type: ignore[union-attr]
            sends: list[Callable[[], None]] = [
                lambda: to_box.send(b"", id=1),
                lambda: to_box.send(b"hello world" * 3, id=2),
                lambda: to_box.send(ipc.Message(b"r", id=3, rights=[so_src])),
                lambda: to_box.send(ipc.Message(b"o", id=4, ool=[b"x" * 9000])),
                lambda: to_box.send(b"B" * (W.MAX_RECORD + 100), id=5),
                lambda: to_box.send(b"q", id=6, reply=other),
            ]
            for send in sends:
                send()
                rec = kp.dequeue(2.0)
                assert rec is not None
                self.items.append((bytes(rec.data), list(rec.fds)))
            # a receive right, moved
            q = ipc.Port()
            self.items.append(self._moved_receive(to_box, kp, q.name))
            q._live = False  # it left in the message

    @staticmethod
    def _moved_receive(to_box: ipc.SendRight, kp: IP.Port, name: int) -> tuple[bytes, list[int]]:
        """The record of a receive right moved (MOVE_RECEIVE, through the C interface)."""
        import ctypes
        import pymach.mach as M

        class Msg(ctypes.Structure):
            _pack_ = 4
            _fields_ = [("header", M.mach_msg_header_t), ("body", M.mach_msg_body_t),
                        ("port", M.mach_msg_port_descriptor_t)]
        m = Msg()
        m.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0) | M.MACH_MSGH_BITS_COMPLEX
        m.header.msgh_size = ctypes.sizeof(Msg)
        m.header.msgh_remote_port = to_box.name
        m.header.msgh_id = 7
        m.body.msgh_descriptor_count = 1
        m.port.name = name
        m.port.disposition = M.MACH_MSG_TYPE_MOVE_RECEIVE
        m.port.type = M.MACH_MSG_PORT_DESCRIPTOR
        assert M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0) == 0
        rec = kp.dequeue(2.0)
        assert rec is not None
        return bytes(rec.data), list(rec.fds)

    def close(self) -> None:
        for _d, fds in self.items:
            for fd in fds:
                os.close(fd)
        self.items.clear()


def control(flags: int, nfds: int) -> bytes:
    return IP.control_record(flags, nfds)


class Case:
    """One fuzzed record: its bytes, its fds, and fds to shrink after the send."""

    __slots__ = ("data", "fds", "shrink", "what")

    def __init__(self, data: bytes, fds: list[int], shrink: list[int], what: str) -> None:
        self.data, self.fds, self.shrink, self.what = data, fds, shrink, what


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.random()
        if not b:
            b += rng.randbytes(rng.randrange(1, 64))
        elif op < 0.30 and len(b) >= 4:  # a 32-bit field gets a boundary value
            off = rng.randrange(0, len(b) - 3) & ~3 if rng.random() < 0.8 else rng.randrange(0, len(b) - 3)
            v = rng.choice(_BOUNDARY32 + (len(b), len(b) + 4, len(b) - 4, (len(b) - 32) & 0xFFFFFFFF))
            struct.pack_into("<I", b, off, v & 0xFFFFFFFF)
        elif op < 0.45 and len(b) >= 8:  # a 64-bit size
            off = rng.randrange(0, len(b) - 7) & ~3
            struct.pack_into("<Q", b, off, rng.choice(_BOUNDARY64))
        elif op < 0.55:  # cut short
            del b[rng.randrange(0, len(b)):]
        elif op < 0.65:  # grow
            b += rng.randbytes(rng.choice((1, 3, 4, 8, 16, 24, 100)))
        elif op < 0.85:  # flip bits
            for _ in range(rng.randrange(1, 4)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        else:  # a random byte
            b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def junk_fds(rng: random.Random, n: int) -> tuple[list[int], list[int]]:
    fds: list[int] = []
    shrink: list[int] = []
    for _ in range(n):
        got, s = make_fds(rng.choice(FD_KINDS))
        fds += got
        if s >= 0:
            shrink.append(s)
    return fds, shrink


def gen_case(rng: random.Random, templates: Templates) -> Case:
    r = rng.random()
    if r < 0.08:  # random bytes
        data = rng.randbytes(rng.choice((0, 1, 4, 16, 31, 32, 33, 48, 64, 200)))
        fds, shrink = junk_fds(rng, rng.choice((0, 0, 0, 1, 2)))
        return Case(data, fds, shrink, "random")
    if r < 0.25:  # a control record, perhaps mutated
        flags = rng.choice(_CONTROL_FLAGS) | (rng.randrange(1 << 24) << 8 if rng.random() < 0.3 else 0)
        fds, shrink = junk_fds(rng, rng.choice((0, 1, 1, 2, 2, 3)))
        if rng.random() < 0.5:
            fds2, _ = make_fds("seqpacket")
            fds = fds2 + fds if rng.random() < 0.5 else fds + fds2
        nfds = len(fds) if rng.random() < 0.7 else rng.choice(_BOUNDARY32)
        data = control(flags & 0xFFFFFFFF, nfds & 0xFFFFFFFF)
        if rng.random() < 0.3:
            data = mutate(rng, data)
        return Case(data, fds, shrink, "control")
    data, tfds = rng.choice(templates.items)
    fds = [os.dup(fd) for fd in tfds]
    shrink = []
    what = "template"
    if rng.random() < 0.7:
        data = mutate(rng, data)
        what = "mutated"
    s = rng.random()
    if s < 0.15 and fds:  # one fd replaced by one of the wrong kind
        i = rng.randrange(len(fds))
        os.close(fds[i])
        bad, s_fd = make_fds(rng.choice(FD_KINDS))
        shrink = [s_fd] if s_fd >= 0 else []
        fds[i:i + 1] = bad
        what += "+wrongfd"
    elif s < 0.25 and fds:  # one fd too few
        os.close(fds.pop(rng.randrange(len(fds))))
        what += "+fewerfds"
    elif s < 0.35:  # more fds
        extra, shrink = junk_fds(rng, rng.choice((1, 2)))
        fds += extra
        what += "+morefds"
    elif s < 0.37:  # a great many fds (up to SCM_MAX_FD)
        for _ in range(rng.choice((60, 120, 250 - len(fds)))):
            fds.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        what += "+manyfds"
    return Case(data, fds, shrink, what)


class Target:
    """A port and a send right on which records are written, and a reply
    port whose channel's reply connection is fuzzed too."""

    def __init__(self) -> None:
        self.port = ipc.Port()
        self.send = self.port.make_send()
        self.sock = cast(IP.SendCap, SELF.space.lookup(self.send.name).cap).sock  # type: ignore[union-attr]

    def close(self) -> None:
        self.send.close()
        self.port.close()

    def run(self, case: Case, timeout: float = 5.0) -> str:
        """Write the case and the sentinel; return the outcome."""
        try:
            if case.fds:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", case.fds))]
                self.sock.sendmsg([case.data], anc)
            else:
                self.sock.sendmsg([case.data])
            sent = True
        except OSError as e:
            sent = False
            err = e.errno
        finally:
            for fd in case.shrink:
                try:
                    os.ftruncate(fd, 0)  # a peer shrinks a memfd it sent
                except OSError:
                    pass
            for fd in case.fds:
                os.close(fd)
        if not sent:
            return f"not-sent:{err}"
        self.send.send(b"", id=SENTINEL)
        outcomes: list[str] = []
        while True:
            try:
                msg = self.port.receive(timeout=timeout)
            except K.MachError as e:
                if e.kr == K.MACH_RCV_TIMED_OUT:
                    raise AssertionError(f"the good message after a {case.what} record was lost") from None
                outcomes.append(_code_name(e.kr))
                continue
            if msg.id == SENTINEL and not msg.data and not msg.rights and not msg.ool:
                msg.release()
                break
            for buf in msg.ool:
                bytes(buf)  # read it all: a SIGBUS here would be a shrinkable memfd
            discard(msg)
            outcomes.append("delivered")
        self.settle()
        return "+".join(outcomes) or "dropped"

    def settle(self) -> None:
        """Read the connections' closes already visible (joined junk)."""
        while True:
            try:
                msg = self.port.receive(timeout=0)
            except K.MachError as e:
                if e.kr == K.MACH_RCV_TIMED_OUT:
                    return
                continue
            discard(msg)


def discard(msg: ipc.Message) -> None:
    """Release a delivered message: its regions, and whatever rights it
    carried (a mutated record may carry a receive right)."""
    rights, msg.rights = msg.rights, []
    reply, msg.reply = msg.reply, None
    msg.release()
    for r in rights + ([reply] if reply is not None else []):
        if r._live:  # pylint: disable=protected-access
            r._live = False  # pylint: disable=protected-access
            try:
                R.destroy(SELF.space, r.name)
            except K.MachError:
                pass


RCV_CODES = ("MACH_RCV_HEADER_ERROR", "MACH_RCV_BODY_ERROR", "MACH_RCV_INVALID_DATA",
             "MACH_RCV_TOO_LARGE", "MACH_RCV_PORT_DIED", "MACH_RCV_INVALID_NAME")
# every outcome is made of these; anything else (a code not named here, a
# record the kernel would not send, a reply right with no channel to fuzz)
# is no clear outcome, and the command fails
CLEAR = frozenset(RCV_CODES + ("delivered", "dropped", "reply-junk-dropped"))


def _code_name(kr: int) -> str:
    for name in RCV_CODES:
        if getattr(K, name, None) == kr:
            return name
    return f"{kr:#x}"


def unclear(outcomes: dict[str, int]) -> dict[str, int]:
    """The outcomes (with their counts) that are not made of clear ones."""
    return {k: v for k, v in outcomes.items() if not set(k.split("+")) <= CLEAR}


class ReplyTarget:
    """A channel's reply connection: a request to ``server`` with reply port
    ``client`` leaves the server a back-channel send-once right; records
    written on its connection by a peer other than the rightful answer must
    be dropped, and the real answer delivered."""

    def __init__(self) -> None:
        self.server = ipc.Port()
        self.client = ipc.Port()
        self.to_server = self.server.make_send()

    def close(self) -> None:
        self.to_server.close()
        self.server.close()
        self.client.close()

    def run(self, rng: random.Random, timeout: float = 5.0) -> str:
        self.to_server.send(b"req", id=11, reply=self.client)
        req = self.server.receive(timeout=timeout)
        cap = cast(Any, SELF.space.lookup(req.reply.name).cap)  # type: ignore[union-attr]
        token = getattr(cap, "token", None)
        if token is None:  # not a back-channel right (no channel): nothing to fuzz
            req.release()
            return "no-channel"
        flags_kind = rng.choice((W.FLAG_REPLY, W.FLAG_REPLY | 1, W.FLAG_SO_DEAD, W.FLAG_UPGRADE,
                                 W.FLAG_JOIN, 0, 0xFF))
        bad = rng.choice((0, token + 1, 0xFFFFFF, rng.randrange(1 << 24)))
        if bad == token:
            bad = (token + 2) & 0xFFFFFF
        data = control(flags_kind | bad << 8, 0)
        if rng.random() < 0.5:
            data = mutate(rng, data)
            if len(data) >= 28 and (struct.unpack_from("<I", data, 24)[0] >> 8) == token:
                data = data[:24] + struct.pack("<I", flags_kind | bad << 8) + data[28:]
        fds, shrink = junk_fds(rng, rng.choice((0, 0, 1, 2)))
        try:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            cap.sock.sendmsg([data], anc, socket.MSG_NOSIGNAL)
        except OSError:
            pass
        finally:
            for fd in shrink:
                os.ftruncate(fd, 0)
            for fd in fds:
                os.close(fd)
        req.reply.send(b"ans", id=12)  # type: ignore[union-attr]
        req.release()
        got = self.client.receive(timeout=timeout)
        ok = got.id == 12 and got.data == b"ans"
        got.release()
        if not ok:
            raise AssertionError(f"reply junk was not dropped: got id {got.id}")
        return "reply-junk-dropped"


def run(records: int, seed: int, check_every: int, reply_share: float, out: TextIO = sys.stdout) -> dict[str, Any]:
    rng = random.Random(seed)
    # what the runtime opens once per process, on its first use (the
    # introspection socket), is not the ports'
    ipc.Port().close()
    fds_before, rss_before = open_fds(), rss_kib()
    templates = Templates()
    target = Target()
    replies = ReplyTarget()
    replies.run(random.Random(seed))  # the channel and its reply connection live from here on
    target.settle()
    fds0, rss0 = open_fds(), rss_kib()
    counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    t0 = time.monotonic()
    last = t0
    desc: object = None
    try:
        for i in range(1, records + 1):
            if rng.random() < reply_share:
                counts[replies.run(rng)] += 1
                kinds["reply-connection"] += 1
            else:
                case = gen_case(rng, templates)
                kinds[case.what] += 1
                desc = (case.what, case.data[:64].hex(), len(case.fds))
                counts[target.run(case)] += 1
            if i % check_every == 0:
                now = open_fds()
                if now != fds0:
                    raise AssertionError(f"after {i} records: {now} fds open, {fds0} at the start"
                                         f" (the last case: {desc if check_every == 1 else '?'}) "
                                         + str(_targets()))
                if time.monotonic() - last > 10:
                    last = time.monotonic()
                    print(f"  {i} records, {i / (last - t0):.0f}/s, RSS {rss_kib()} KiB", file=out, flush=True)
        target.settle()
        fds_end, rss_end = open_fds(), rss_kib()
    finally:
        elapsed = time.monotonic() - t0
        replies.close()
        target.close()
        templates.close()
    fds_after = open_fds()
    result: dict[str, Any] = {"records": records, "seconds": elapsed, "per_second": records / elapsed if elapsed else 0,
              "outcomes": dict(counts), "kinds": dict(kinds), "fds_start": fds0, "fds_end": fds_end,
              "fds_before": fds_before, "fds_after": fds_after,
              "rss_start_kib": rss0, "rss_end_kib": rss_end, "rss_before_kib": rss_before}
    return result


def atheris_case(data: bytes, templates: Templates) -> Case:
    """A case from a libFuzzer input: the first byte picks a real record to
    overlay (or none: the bytes are the record) and the fds to send; the
    rest is the record, or bytes written over the record from an offset."""
    if not data:
        return Case(b"", [], [], "atheris")
    b0, rest = data[0], data[1:]
    which = b0 % 8
    kinds = [FD_KINDS[(b0 >> 3) % len(FD_KINDS)]] if b0 & 0x80 else []
    if which >= len(templates.items):
        junk, junk_shrink = junk_fds(random.Random(b0), len(kinds))
        return Case(rest, junk, junk_shrink, "atheris")
    rec, tfds = templates.items[which]
    off = rest[0] * 4 if rest else 0
    b = bytearray(rec)
    patch = rest[1:]
    b[off:off + len(patch)] = patch
    fds = [os.dup(fd) for fd in tfds]
    shrink: list[int] = []
    if kinds:
        extra, s = make_fds(kinds[0])
        if fds and b0 & 0x40:
            os.close(fds.pop(0))
        fds += extra
        shrink = [s] if s >= 0 else []
    return Case(bytes(b), fds, shrink, "atheris")


def _instrument_runtime(atheris: Any) -> None:
    """Coverage for the runtime's own code only (pymach, less its tools):
    the receive path is what libFuzzer should learn to reach, and
    instrumenting every function loaded (atheris.instrument_all) takes
    seconds for coverage of the standard library."""
    funcs = [o for o in gc.get_objects() if isinstance(o, types.FunctionType)
             and isinstance(o.__module__, str) and o.__module__.startswith("pymach.")
             and not o.__module__.startswith("pymach.tools.")]
    for f in funcs:
        atheris.instrument_func(f)
    print(f"INFO: instrumented {len(funcs)} functions of the runtime", file=sys.stderr)


def run_atheris(records: int, seed: int, check_every: int) -> None:
    """Coverage-guided: libFuzzer (atheris) picks the inputs, each one a case
    (atheris_case). Prints the summary and exits after ``records`` cases."""
    import atheris  # type: ignore  # pylint: disable=import-outside-toplevel

    templates = Templates()
    target = Target()
    target.settle()
    fds0, rss0 = open_fds(), rss_kib()
    counts: Counter[str] = Counter()
    state = {"n": 0, "t0": 0.0}

    def one(data: bytes) -> None:
        if not state["n"]:
            state["t0"] = time.monotonic()  # (after instrumenting)
        case = atheris_case(data, templates)
        counts[target.run(case)] += 1
        state["n"] += 1
        n = state["n"]
        if n % check_every == 0 and open_fds() != fds0:
            raise AssertionError(f"after {n} records: {open_fds()} fds open, {fds0} at the start")
        if n >= records:
            target.settle()
            elapsed = time.monotonic() - state["t0"]
            fds1, rss1 = open_fds(), rss_kib()
            print(f"pymach fuzz ipc (atheris): {n} records in {elapsed:.1f} s ({n / elapsed:.0f} records/s)")
            print("outcomes:")
            for k, v in sorted(counts.items(), key=lambda kv: -kv[1]):
                print(f"  {v:>9}  {k}")
            print(f"fds: {fds0} at the start, {fds1} at the end")
            print(f"RSS: {rss0} KiB at the start, {rss1} KiB at the end (libFuzzer's corpus and counters"
                  " included)", flush=True)
            bad = _report_unclear(dict(counts))
            os._exit(0 if fds1 == fds0 and not bad else 1)  # libFuzzer would exit without our summary

    _instrument_runtime(atheris)
    atheris.Setup([sys.argv[0], f"-seed={seed or 1}", "-max_len=512", f"-runs={records + 1}"], one)
    atheris.Fuzz()


def _report_unclear(outcomes: dict[str, int]) -> dict[str, int]:
    """Print the outcomes that are not clear, if any; return them."""
    bad = unclear(outcomes)
    if bad:
        print(f"FAIL {sum(bad.values())} records got no clear outcome: "
              + ", ".join(f"{k} ({v})" for k, v in sorted(bad.items(), key=lambda kv: -kv[1])), flush=True)
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stress.fuzz_ipc", description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check-every", type=int, default=1000, help="compare open fds with the start every N records")
    ap.add_argument("--reply-share", type=float, default=0.02,
                    help="the share of records written on a channel's reply connection")
    ap.add_argument("--atheris", action="store_true",
                    help="let libFuzzer (the optional atheris package) pick the inputs")
    args = ap.parse_args(argv)
    if args.atheris:
        run_atheris(args.records, args.seed, args.check_every)
        return 1
    r = run(args.records, args.seed, args.check_every, args.reply_share)
    print(f"pymach fuzz ipc: {r['records']} records in {r['seconds']:.1f} s ({r['per_second']:.0f} records/s),"
          f" seed {args.seed}")
    print("outcomes:")
    for k, v in sorted(r["outcomes"].items(), key=lambda kv: -kv[1]):
        print(f"  {v:>9}  {k}")
    print("cases:")
    for k, v in sorted(r["kinds"].items(), key=lambda kv: -kv[1]):
        print(f"  {v:>9}  {k}")
    print(f"fds: {r['fds_start']} at the start, {r['fds_end']} at the end"
          f" ({r['fds_before']} before the ports were made, {r['fds_after']} after they were closed)")
    print(f"RSS: {r['rss_start_kib']} KiB at the start, {r['rss_end_kib']} KiB at the end")
    fds_ok = r["fds_start"] == r["fds_end"] and r["fds_before"] == r["fds_after"]
    if not fds_ok:
        print("FAIL the fds did not come back", flush=True)
    bad = _report_unclear(r["outcomes"])
    return 0 if fds_ok and not bad else 1


if __name__ == "__main__":
    raise SystemExit(main())
