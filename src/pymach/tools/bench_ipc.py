"""pymach bench ipc: request/reply round trips, one-way throughput and a
large out-of-line handoff, each beside its peers over the same kind of
process pair, in one run.

Every case forks a server process; the client (this process) measures.
Peers: a raw Python AF_UNIX SOCK_SEQPACKET socketpair, multiprocessing.Pipe,
and pyzmq REQ/REP when it is installed.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import socket
import time
from typing import Callable

ROUND = 64  # bytes per request/reply


def _fork(server: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            server()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return pid


def _reap(pid: int) -> None:
    os.waitpid(pid, 0)


def _per_op(fn: Callable[[int], None], n: int, repeat: int) -> float:
    fn(max(1, n // 10))
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


# -- round trips -----------------------------------------------------------------

def raw_socket_round(n: int, repeat: int, size: int = ROUND) -> float:
    """A ``size``-byte request and its answer over a socketpair, with a
    forked server (ns per round trip)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    total = n * repeat + max(1, n // 10)

    def server() -> None:
        a.close()
        for _ in range(total):
            b.send(b.recv(256))

    pid = _fork(server)
    b.close()
    msg = b"x" * size

    def run(k: int) -> None:
        for _ in range(k):
            a.send(msg)
            a.recv(256)

    try:
        return _per_op(run, n, repeat)
    finally:
        a.close()
        _reap(pid)


def pipe_round(n: int, repeat: int) -> float:
    a, b = multiprocessing.Pipe()
    total = n * repeat + max(1, n // 10)

    def server() -> None:
        for _ in range(total):
            b.send_bytes(b.recv_bytes())

    pid = _fork(server)
    msg = b"x" * ROUND

    def run(k: int) -> None:
        for _ in range(k):
            a.send_bytes(msg)
            a.recv_bytes()

    try:
        return _per_op(run, n, repeat)
    finally:
        a.close()
        b.close()
        _reap(pid)


def zmq_round(n: int, repeat: int) -> float | None:
    try:
        import zmq  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = f"ipc:///tmp/pymach-bench-{os.getpid()}"
    total = n * repeat + max(1, n // 10)

    def server() -> None:
        ctx = zmq.Context()
        s = ctx.socket(zmq.REP)
        s.bind(path)
        for _ in range(total):
            s.send(s.recv())

    pid = _fork(server)
    ctx = zmq.Context()
    c = ctx.socket(zmq.REQ)
    c.connect(path)
    msg = b"x" * ROUND

    def run(k: int) -> None:
        for _ in range(k):
            c.send(msg)
            c.recv()

    try:
        return _per_op(run, n, repeat)
    finally:
        c.close()
        ctx.term()
        _reap(pid)


def mach_round_c(n: int, repeat: int) -> float:
    """pymach.mach: mach_msg send with a MAKE_SEND_ONCE reply, then receive."""
    return _mach_pair(n, repeat, pythonic=False)


def mach_round_py(n: int, repeat: int) -> float:
    """The Pythonic layer: SendRight.send(reply=...) and Port.receive()."""
    return _mach_pair(n, repeat, pythonic=True)


def _msg_type() -> type[ctypes.Structure]:
    from pymach import mach as M

    class Msg(ctypes.Structure):
        _pack_ = 4
        _fields_ = [("h", M.mach_msg_header_t), ("data", ctypes.c_char * (ROUND + 64)), ("t", M.mach_msg_trailer_t)]
    return Msg


def _mach_server(serve: Callable[[int], None], qlimit: int | None = None) -> tuple[int, object, Callable[[], None]]:
    """Fork a server with a port of its own, which it sends back through
    ours (a fork child inherits only registered ports); it runs
    ``serve(port name)``. Returns (pid, our send right to it, cleanup)."""
    import pymach
    from pymach import mach as M

    parent = pymach.Port()
    to_parent = parent.make_send()
    pymach.register_ports(to_parent)

    def srv() -> None:
        (back,) = [r for r in pymach.registered_ports() if r]
        with pymach.Port() as mine, mine.make_send() as to_mine:
            if qlimit is not None:
                lim = M.mach_port_limits_t(qlimit)
                M.mach_port_set_attributes(M.mach_task_self(), mine.name, M.MACH_PORT_LIMITS_INFO,
                                           ctypes.byref(lim), 1)
            back.send(pymach.Message(b"", rights=[to_mine]))
            serve(mine.name)

    pid = _fork(srv)
    pymach.register_ports()
    (server_right,) = parent.receive(timeout=30).rights

    def cleanup() -> None:
        _reap(pid)
        server_right.close()
        to_parent.close()
        parent.close()
    return pid, server_right, cleanup


def _mach_pair(n: int, repeat: int, pythonic: bool) -> float:
    import pymach
    from pymach import mach as M

    total = n * repeat + max(1, n // 10)
    hdr = ctypes.sizeof(M.mach_msg_header_t)
    Msg = _msg_type()

    def serve(name: int) -> None:
        m = Msg()
        h, size = m.h, ctypes.sizeof(m)  # type: ignore[attr-defined]
        mach_msg, bits_of, remote_of = M.mach_msg, M.MACH_MSGH_BITS, M.MACH_MSGH_BITS_REMOTE
        rcv, snd = M.MACH_RCV_MSG, M.MACH_SEND_MSG
        for _ in range(total):
            mach_msg(h, rcv, 0, size, name, 0, 0)
            # answer on the reply right: MOVE_SEND_ONCE, no reply of our own
            h.msgh_bits = bits_of(remote_of(h.msgh_bits), 0)
            h.msgh_local_port = 0
            h.msgh_size = hdr + ROUND
            mach_msg(h, snd, hdr + ROUND, 0, 0, 0, 0)

    _pid, server_right, cleanup = _mach_server(serve)
    reply = pymach.Port()
    try:
        if pythonic:
            payload = b"x" * ROUND
            right: pymach.SendRight = server_right  # type: ignore[assignment]

            def run(k: int) -> None:
                for _ in range(k):
                    right.send(payload, reply=reply)
                    reply.receive()
        else:
            req, rep = Msg(), Msg()
            req.data = b"x" * ROUND  # type: ignore[attr-defined]
            bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE)
            dest, rname = server_right.name, reply.name  # type: ignore[attr-defined]
            mach_msg, rsize = M.mach_msg, ctypes.sizeof(rep)
            h, rh = req.h, rep.h  # type: ignore[attr-defined]

            snd, rcv = M.MACH_SEND_MSG, M.MACH_RCV_MSG

            def run(k: int) -> None:
                for _ in range(k):
                    h.msgh_bits = bits
                    h.msgh_size = hdr + ROUND
                    h.msgh_remote_port = dest
                    h.msgh_local_port = rname
                    mach_msg(h, snd, hdr + ROUND, 0, 0, 0, 0)
                    mach_msg(rh, rcv, 0, rsize, rname, 0, 0)

        return _per_op(run, n, repeat)
    finally:
        reply.close()
        cleanup()


# -- one-way throughput ---------------------------------------------------------------

def raw_socket_oneway(n: int, repeat: int) -> float:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    total = n * repeat + max(1, n // 10)

    def server() -> None:
        a.close()
        for _ in range(total):
            b.recv(256)

    pid = _fork(server)
    b.close()
    msg = b"x" * ROUND

    def run(k: int) -> None:
        for _ in range(k):
            a.send(msg)

    try:
        return _per_op(run, n, repeat)
    finally:
        a.close()
        _reap(pid)


def mach_oneway(n: int, repeat: int) -> float:
    from pymach import mach as M

    total = n * repeat + max(1, n // 10)
    hdr = ctypes.sizeof(M.mach_msg_header_t)
    Msg = _msg_type()

    def serve(name: int) -> None:
        m = Msg()
        for _ in range(total):
            M.mach_msg(m.h, M.MACH_RCV_MSG, 0, ctypes.sizeof(m), name, 0, 0)  # type: ignore[attr-defined]

    _pid, server_right, cleanup = _mach_server(serve, qlimit=M.MACH_PORT_QLIMIT_LARGE)
    req = Msg()
    req.data = b"x" * ROUND  # type: ignore[attr-defined]
    bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0)
    dest = server_right.name  # type: ignore[attr-defined]
    mach_msg = M.mach_msg
    h = req.h  # type: ignore[attr-defined]

    def run(k: int) -> None:
        for _ in range(k):
            h.msgh_bits = bits
            h.msgh_size = hdr + ROUND
            h.msgh_remote_port = dest
            h.msgh_local_port = 0
            mach_msg(h, M.MACH_SEND_MSG, hdr + ROUND, 0, 0, 0, 0)

    try:
        return _per_op(run, n, repeat)
    finally:
        cleanup()


# -- many rights in one message ------------------------------------------------------------

RIGHTS_COUNTS = (100, 254, 1000)  # one record; a carrier; a carrier of four records


def many_rights(count: int, repeat: int) -> float:
    """ns per message carrying ``count`` send rights (2 fds each) to one
    of four ports, sent to a port of ours and received, the rights then
    released: past 126 rights the fds travel in a carrier. In one process:
    the cost is the copyin, the fds' trip and the copyout, not a wake-up."""
    import struct
    from pymach import mach as M

    task = M.mach_task_self()

    def port() -> int:
        p = M.mach_port_t()
        M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, ctypes.byref(p))
        M.mach_port_insert_right(task, p, p, M.MACH_MSG_TYPE_MAKE_SEND)
        return p.value

    dest, targets = port(), [port() for _ in range(4)]
    hdr = ctypes.sizeof(M.mach_msg_header_t)
    body = struct.pack("<I", count) + b"".join(
        struct.pack("<IIHBB", targets[i % 4], 0, 0, M.MACH_MSG_TYPE_MAKE_SEND, M.MACH_MSG_PORT_DESCRIPTOR)
        for i in range(count))
    size = hdr + len(body)
    out = (ctypes.c_char * size)()
    rcv = (ctypes.c_char * (size + 64))()
    rh = M.mach_msg_header_t.from_buffer(rcv)

    def run(k: int) -> None:
        for _ in range(k):
            ctypes.memmove(ctypes.addressof(out) + hdr, body, len(body))
            h = M.mach_msg_header_t.from_buffer(out)
            h.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0) | M.MACH_MSGH_BITS_COMPLEX
            h.msgh_size, h.msgh_remote_port, h.msgh_local_port = size, dest, 0
            if M.mach_msg(h, M.MACH_SEND_MSG, size, 0, 0, 0, 0):
                raise RuntimeError("send failed")
            if M.mach_msg(rh, M.MACH_RCV_MSG, 0, len(rcv), dest, 0, 0):
                raise RuntimeError("receive failed")
            names = {struct.unpack_from("<I", rcv, hdr + 4 + 12 * i)[0] for i in range(count)}
            for name in names:
                refs = M.mach_port_urefs_t()
                M.mach_port_get_refs(task, name, M.MACH_PORT_RIGHT_SEND, ctypes.byref(refs))
                M.mach_port_mod_refs(task, name, M.MACH_PORT_RIGHT_SEND, -refs.value)

    try:
        return _per_op(run, 10, repeat)
    finally:
        for p in [dest, *targets]:
            M.mach_port_destroy(task, p)


# -- large out-of-line memory -----------------------------------------------------------

OOL_ROUNDS = 3  # handoffs (and bare reads) per size; the best of each is reported


def ool_handoff(size: int) -> tuple[float, float, float]:
    """(handoff seconds, pymach read GB/s, bare memfd read GB/s) for ``size``
    bytes sent out-of-line with deallocate to a port of our own, in this
    process; the best of OOL_ROUNDS rounds for each figure.

    The handoff is one mach_msg send and one receive of a memfd-backed
    region (VM_INHERIT_SHARE), filled through its mapping beforehand. The
    two reads are alike: a memfd of ``size`` bytes, fully written through a
    shared mapping that is then gone, mapped afresh and copied whole by one
    memmove into the same pre-faulted buffer. pymach's is the received
    mapping (MAP_PRIVATE); the bare one is a plain MAP_SHARED mapping.
    Neither is populated before its read; the rounds alternate which read
    goes first. Raises RuntimeError naming the kern_return_t when mach_msg
    fails, or when the received bytes are not the ones sent."""
    import pymach
    from pymach import VM_INHERIT_SHARE, Task
    from pymach import mach as M
    from pymach._linux import mm

    class Cx(ctypes.Structure):
        _pack_ = 4
        _fields_ = [("h", M.mach_msg_header_t), ("b", M.mach_msg_body_t), ("d", M.mach_msg_ool_descriptor_t),
                    ("t", M.mach_msg_trailer_t)]

    rw = mm.PROT_READ | mm.PROT_WRITE
    with contextlib.ExitStack() as stack:
        dst = mm.mmap(0, size, rw, mm.MAP_PRIVATE | mm.MAP_ANONYMOUS | mm.MAP_POPULATE)
        stack.callback(mm.munmap, dst, size)
        bare_fd = mm.memfd("bench.bare", size)
        stack.callback(os.close, bare_fd)
        port = stack.enter_context(pymach.Port())
        right = stack.enter_context(port.make_send())

        def read_bare() -> float:
            a = mm.mmap(0, size, mm.PROT_READ, mm.MAP_SHARED, bare_fd)
            try:
                return _timed_copy(dst, a, size)
            finally:
                mm.munmap(a, size)

        def read_ours() -> tuple[float, float]:
            region = Task.self().allocate(size)
            region.inherit(VM_INHERIT_SHARE)  # memfd-backed: its pages can change hands
            mm.memset(region.address, 7, size)
            m = Cx()
            m.h.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0) | M.MACH_MSGH_BITS_COMPLEX
            m.h.msgh_size = ctypes.sizeof(Cx) - ctypes.sizeof(M.mach_msg_trailer_t)
            m.h.msgh_remote_port = right.name
            m.b.msgh_descriptor_count = 1
            m.d.address, m.d.size, m.d.deallocate = region.address, size, 1
            m.d.copy, m.d.type = M.MACH_MSG_VIRTUAL_COPY, M.MACH_MSG_OOL_DESCRIPTOR
            r = Cx()
            t0 = time.perf_counter()
            kr = M.mach_msg(m.h, M.MACH_SEND_MSG, m.h.msgh_size, 0, 0, 0, 0)
            if kr:
                region.close()
                raise RuntimeError(f"mach_msg send: {M.mach_error_string(kr)}")
            kr = M.mach_msg(r.h, M.MACH_RCV_MSG, 0, ctypes.sizeof(r), port.name, 0, 0)
            handoff = time.perf_counter() - t0
            region._live = False  # the pages left with the message
            if kr:
                raise RuntimeError(f"mach_msg receive: {M.mach_error_string(kr)}")
            mm.memset(dst + size - 1, 0, 1)
            try:
                gbps = _timed_copy(dst, r.d.address, size)
            finally:
                M.mach_vm_deallocate(M.mach_task_self(), r.d.address, size)
            if ctypes.string_at(dst + size - 1, 1) != b"\x07":
                raise RuntimeError("the received memory does not hold what was sent")
            return handoff, gbps

        w = mm.mmap(0, size, rw, mm.MAP_SHARED, bare_fd)
        mm.memset(w, 7, size)
        mm.munmap(w, size)
        handoff, ours, bare = float("inf"), 0.0, 0.0
        for k in range(OOL_ROUNDS):
            if k % 2:
                bare = max(bare, read_bare())
            h, o = read_ours()
            if not k % 2:
                bare = max(bare, read_bare())
            handoff, ours = min(handoff, h), max(ours, o)
        return handoff, ours, bare


def _timed_copy(dst: int, src: int, size: int) -> float:
    """GB/s of one memmove of ``size`` bytes from ``src`` to ``dst``."""
    t0 = time.perf_counter()
    ctypes.memmove(dst, src, size)
    return size / (time.perf_counter() - t0) / 1e9


def cases(n: int, repeat: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    base = raw_socket_round(n, repeat)
    rows: list[tuple[str, float | None]] = [("raw SEQPACKET socketpair (baseline)", base),
            ("multiprocessing.Pipe", pipe_round(n, repeat))]
    z = zmq_round(n, repeat)
    rows.append(("pyzmq REQ/REP", z))
    rows.append(("pymach.mach mach_msg, send-once reply", mach_round_c(n, repeat)))
    rows.append(("pymach Pythonic send(reply=) + receive", mach_round_py(n, repeat)))
    out.append({"benchmark": f"request/reply round trip, {ROUND} B", "rows": rows})
    base1 = raw_socket_oneway(n, repeat)
    out.append({"benchmark": f"one-way messages, {ROUND} B", "rows": [
        ("raw SEQPACKET socketpair (baseline)", base1), ("pymach.mach mach_msg", mach_oneway(n, repeat))]})
    out.append({"benchmark": "send rights in one message, sent and received", "rows": [
        (f"{count} send rights ({2 * count} fds)", many_rights(count, repeat)) for count in RIGHTS_COUNTS]})
    return out

