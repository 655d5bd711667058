"""pymach bench ipc: request/reply round trips, one-way throughput and a
large out-of-line handoff, each beside its peers over the same kind of
process pair, in one run; with ``--breakdown``, what one message costs,
piece by piece, and what the out-of-line handoff's steps cost.

Every case forks a server process; the client (this process) measures.
Peers: a raw Python AF_UNIX SOCK_SEQPACKET socketpair, multiprocessing.Pipe,
and pyzmq REQ/REP when it is installed.

Every call's result is checked, in every case alike (a kern_return_t, a
byte count, a reply's id): a call that fails raises BenchError, and no
figure is reported for it. A server that fails prints its traceback on
stderr and exits 1, which the client sees (a dead port, EOF, a send-once
notification instead of the reply).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import socket
import sys
import time
import traceback
from typing import Callable, Iterator, NoReturn

ROUND = 64  # bytes per request/reply
REQUEST_ID = 0x1C0  # the round trips' msgh_id, which the server's answer keeps


class BenchError(RuntimeError):
    """A call a benchmark times did not do its work (an error code, a short
    count, the wrong reply): the figure would be false, so none is given."""


def fail(case: str, what: str) -> NoReturn:
    """Raise BenchError for ``case``: ``what`` failed."""
    raise BenchError(f"{case}: {what}")


def kr_text(kr: int) -> str:
    from pymach.mach import mach_error_string
    return f"{mach_error_string(kr)} ({kr:#x})"


def _fork(server: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            server()
        except BaseException:  # pylint: disable=broad-exception-caught
            traceback.print_exc()
            sys.stderr.flush()
            code = 1
        finally:
            os._exit(code)
    return pid


@contextlib.contextmanager
def _server(server: Callable[[], None], case: str) -> Iterator[int]:
    """Fork ``server``; at the end, reap it. If the block raised, the server
    (which may wait for requests that never come) is killed first;
    otherwise it must have exited 0, or BenchError is raised."""
    pid = _fork(server)
    try:
        yield pid
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        fail(case, f"the server process exited with {code} (its traceback is on stderr)")


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
    case = "raw SEQPACKET round trip"
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    total = n * repeat + max(1, n // 10)

    def server() -> None:
        a.close()
        for _ in range(total):
            d = b.recv(256)
            if len(d) != size or b.send(d) != size:
                raise RuntimeError(f"request of {len(d)} bytes")

    msg = b"x" * size

    def run(k: int) -> None:
        for _ in range(k):
            if a.send(msg) != size or len(a.recv(256)) != size:
                fail(case, "a short send or reply (the server is gone)")

    with contextlib.closing(a), _server(server, case):
        b.close()
        return _per_op(run, n, repeat)


def pipe_round(n: int, repeat: int) -> float:
    case = "multiprocessing.Pipe round trip"
    a, b = multiprocessing.Pipe()
    total = n * repeat + max(1, n // 10)

    def server() -> None:
        for _ in range(total):
            d = b.recv_bytes()
            if len(d) != ROUND:
                raise RuntimeError(f"request of {len(d)} bytes")
            b.send_bytes(d)

    msg = b"x" * ROUND

    def run(k: int) -> None:
        for _ in range(k):
            a.send_bytes(msg)
            if len(a.recv_bytes()) != ROUND:
                fail(case, "a short reply")

    try:
        with _server(server, case):
            return _per_op(run, n, repeat)
    finally:
        a.close()
        b.close()


def zmq_round(n: int, repeat: int) -> float | None:
    try:
        import zmq  # type: ignore[import-not-found]
    except ImportError:
        return None
    case = "pyzmq REQ/REP round trip"
    path = f"ipc:///tmp/pymach-bench-{os.getpid()}"
    total = n * repeat + max(1, n // 10)

    def server() -> None:
        ctx = zmq.Context()
        s = ctx.socket(zmq.REP)
        s.bind(path)
        for _ in range(total):
            s.send(s.recv())

    ctx = zmq.Context()
    c = ctx.socket(zmq.REQ)
    msg = b"x" * ROUND

    def run(k: int) -> None:
        for _ in range(k):
            c.send(msg)
            if len(c.recv()) != ROUND:
                fail(case, "a short reply")

    try:
        with _server(server, case):
            c.connect(path)
            return _per_op(run, n, repeat)
    finally:
        c.close(linger=0)
        ctx.term()


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


@contextlib.contextmanager
def _mach_server(serve: Callable[[int], None], case: str, qlimit: int | None = None) -> Iterator[object]:
    """Fork a server with a port of its own, which it sends back through
    ours (a fork child inherits only registered ports); it runs
    ``serve(port name)``. Yields our send right to it; reaps it at the end
    (see _server)."""
    import pymach
    from pymach import mach as M

    with pymach.Port() as parent, parent.make_send() as to_parent:
        pymach.register_ports(to_parent)

        def srv() -> None:
            (back,) = [r for r in pymach.registered_ports() if r]
            with pymach.Port() as mine, mine.make_send() as to_mine:
                if qlimit is not None:
                    lim = M.mach_port_limits_t(qlimit)
                    kr = M.mach_port_set_attributes(M.mach_task_self(), mine.name, M.MACH_PORT_LIMITS_INFO,
                                                    ctypes.byref(lim), 1)
                    if kr:
                        raise RuntimeError(f"mach_port_set_attributes: {kr_text(kr)}")
                back.send(pymach.Message(b"", rights=[to_mine]))
                serve(mine.name)

        with _server(srv, case):
            pymach.register_ports()
            (server_right,) = parent.receive(timeout=30).rights
            with server_right:
                yield server_right


def _mach_pair(n: int, repeat: int, pythonic: bool) -> float:
    import pymach
    from pymach import mach as M

    case = "pymach round trip" + (" (Pythonic)" if pythonic else "")
    total = n * repeat + max(1, n // 10)
    hdr = ctypes.sizeof(M.mach_msg_header_t)
    Msg = _msg_type()

    def serve(name: int) -> None:
        m = Msg()
        h, size = m.h, ctypes.sizeof(m)
        mach_msg, bits_of, remote_of = M.mach_msg, M.MACH_MSGH_BITS, M.MACH_MSGH_BITS_REMOTE
        rcv, snd = M.MACH_RCV_MSG, M.MACH_SEND_MSG
        for _ in range(total):
            kr = mach_msg(h, rcv, 0, size, name, 0, 0)
            if kr:
                raise RuntimeError(f"receive: {kr_text(kr)}")
            # answer on the reply right: MOVE_SEND_ONCE, no reply of our own
            h.msgh_bits = bits_of(remote_of(h.msgh_bits), 0)
            h.msgh_local_port = 0
            h.msgh_size = hdr + ROUND
            kr = mach_msg(h, snd, hdr + ROUND, 0, 0, 0, 0)
            if kr:
                raise RuntimeError(f"send: {kr_text(kr)}")

    with pymach.Port() as reply, _mach_server(serve, case) as server_right:
        if pythonic:
            payload = b"x" * ROUND
            right: pymach.SendRight = server_right  # type: ignore[assignment]

            def run(k: int) -> None:
                for _ in range(k):
                    right.send(payload, id=REQUEST_ID, reply=reply)  # raises MachError when it fails
                    if reply.receive().id != REQUEST_ID:
                        fail(case, "a message that is not the reply (the server is gone)")
        else:
            req, rep = Msg(), Msg()
            req.data = b"x" * ROUND
            bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE)
            dest, rname = server_right.name, reply.name  # type: ignore[attr-defined]
            mach_msg, rsize = M.mach_msg, ctypes.sizeof(rep)
            h, rh = req.h, rep.h

            snd, rcv = M.MACH_SEND_MSG, M.MACH_RCV_MSG

            def run(k: int) -> None:
                for _ in range(k):
                    h.msgh_bits = bits
                    h.msgh_size = hdr + ROUND
                    h.msgh_remote_port = dest
                    h.msgh_local_port = rname
                    h.msgh_id = REQUEST_ID
                    kr = mach_msg(h, snd, hdr + ROUND, 0, 0, 0, 0)
                    if kr:
                        fail(case, f"mach_msg send: {kr_text(kr)}")
                    kr = mach_msg(rh, rcv, 0, rsize, rname, 0, 0)
                    if kr or rh.msgh_id != REQUEST_ID:
                        fail(case, f"mach_msg receive: {kr_text(kr)}, msgh_id {rh.msgh_id:#x}")

        return _per_op(run, n, repeat)


# -- one-way throughput ---------------------------------------------------------------

def raw_socket_oneway(n: int, repeat: int) -> float:
    case = "raw SEQPACKET one-way"
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    total = n * repeat + max(1, n // 10)

    def server() -> None:
        a.close()
        for _ in range(total):
            if len(b.recv(256)) != ROUND:
                raise RuntimeError("a short message")

    msg = b"x" * ROUND

    def run(k: int) -> None:
        for _ in range(k):
            if a.send(msg) != ROUND:
                fail(case, "a short send")

    with contextlib.closing(a), _server(server, case):
        b.close()
        return _per_op(run, n, repeat)


def mach_oneway(n: int, repeat: int) -> float:
    from pymach import mach as M

    case = "pymach one-way"
    total = n * repeat + max(1, n // 10)
    hdr = ctypes.sizeof(M.mach_msg_header_t)
    Msg = _msg_type()

    def serve(name: int) -> None:
        m = Msg()
        for _ in range(total):
            kr = M.mach_msg(m.h, M.MACH_RCV_MSG, 0, ctypes.sizeof(m), name, 0, 0)
            if kr:
                raise RuntimeError(f"receive: {kr_text(kr)}")

    with _mach_server(serve, case, qlimit=M.MACH_PORT_QLIMIT_LARGE) as server_right:
        req = Msg()
        req.data = b"x" * ROUND
        bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0)
        dest = server_right.name  # type: ignore[attr-defined]
        mach_msg = M.mach_msg
        h = req.h

        def run(k: int) -> None:
            for _ in range(k):
                h.msgh_bits = bits
                h.msgh_size = hdr + ROUND
                h.msgh_remote_port = dest
                h.msgh_local_port = 0
                kr = mach_msg(h, M.MACH_SEND_MSG, hdr + ROUND, 0, 0, 0, 0)
                if kr:
                    fail(case, f"mach_msg send: {kr_text(kr)}")

        return _per_op(run, n, repeat)


# -- many rights in one message ------------------------------------------------------------

RIGHTS_COUNTS = (100, 254, 1000)  # one record; a carrier; a carrier of four records
RIGHTS_OPS = 10  # messages per sample: each carries up to 2000 fds


def many_rights(count: int, repeat: int) -> float:
    """ns per message carrying ``count`` send rights (2 fds each) to one
    of four ports, sent to a port of ours and received, the rights then
    released: past 126 rights the fds travel in a carrier. In one process:
    the cost is the copyin, the fds' trip and the copyout, not a wake-up.
    The best of ``repeat`` samples of RIGHTS_OPS messages."""
    import struct
    from pymach import mach as M

    case = f"{count} send rights in one message"
    task = M.mach_task_self()
    made: list[int] = []

    def port() -> int:
        p = M.mach_port_t()
        kr = M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, ctypes.byref(p))
        if kr:
            fail(case, f"mach_port_allocate: {kr_text(kr)}")
        made.append(p.value)
        kr = M.mach_port_insert_right(task, p, p, M.MACH_MSG_TYPE_MAKE_SEND)
        if kr:
            fail(case, f"mach_port_insert_right: {kr_text(kr)}")
        return p.value

    try:
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
                kr = M.mach_msg(h, M.MACH_SEND_MSG, size, 0, 0, 0, 0)
                if kr:
                    fail(case, f"mach_msg send: {kr_text(kr)}")
                kr = M.mach_msg(rh, M.MACH_RCV_MSG, 0, len(rcv), dest, 0, 0)
                if kr:
                    fail(case, f"mach_msg receive: {kr_text(kr)}")
                names = {struct.unpack_from("<I", rcv, hdr + 4 + 12 * i)[0] for i in range(count)}
                for name in names:
                    refs = M.mach_port_urefs_t()
                    kr = M.mach_port_get_refs(task, name, M.MACH_PORT_RIGHT_SEND, ctypes.byref(refs))
                    if not kr:
                        kr = M.mach_port_mod_refs(task, name, M.MACH_PORT_RIGHT_SEND, -refs.value)
                    if kr:
                        fail(case, f"releasing a received right: {kr_text(kr)}")

        return _per_op(run, RIGHTS_OPS, repeat)
    finally:
        for p in made:
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
    """The blocks of ``pymach bench ipc``: each a title, the samples it took
    (``repeat`` and ``ops``: the best of ``repeat`` samples of ``ops``
    operations) and its rows of (case, ns per operation or None)."""
    out: list[dict[str, object]] = []
    base = raw_socket_round(n, repeat)
    rows: list[tuple[str, float | None]] = [("raw SEQPACKET socketpair (baseline)", base),
            ("multiprocessing.Pipe", pipe_round(n, repeat))]
    z = zmq_round(n, repeat)
    rows.append(("pyzmq REQ/REP", z))
    rows.append(("pymach.mach mach_msg, send-once reply", mach_round_c(n, repeat)))
    rows.append(("pymach Pythonic send(reply=) + receive", mach_round_py(n, repeat)))
    out.append({"benchmark": f"request/reply round trip, {ROUND} B", "repeat": repeat, "ops": n, "rows": rows})
    base1 = raw_socket_oneway(n, repeat)
    out.append({"benchmark": f"one-way messages, {ROUND} B", "repeat": repeat, "ops": n, "rows": [
        ("raw SEQPACKET socketpair (baseline)", base1), ("pymach.mach mach_msg", mach_oneway(n, repeat))]})
    out.append({"benchmark": "send rights in one message, sent and received", "repeat": repeat,
                "ops": RIGHTS_OPS, "rows": [
                    (f"{count} send rights ({2 * count} fds)", many_rights(count, repeat))
                    for count in RIGHTS_COUNTS]})
    return out


# -- piece by piece ----------------------------------------------------------------------

def message_pieces(n: int, repeat: int) -> list[tuple[str, float]]:
    """What one 64-byte message sent and received in one process costs,
    beside what a raw socket's send and receive cost and the kernel work
    pymach adds to it, each measured alone the way the runtime does it:
    the credentials the kernel attaches to each record (SO_PASSCRED, read
    with recvmsg), the epoll wait over the port's connections, the
    queue-limit semaphore (an eventfd read by the sender, written by the
    receiver) and the fstat that checks the right's fd before a send. The
    rest is the runtime's Python work. Rows of (case, ns per message)."""
    import select
    from pymach import Port
    from pymach import mach as M
    from pymach._linux import unix

    case = "message pieces"
    msg = b"x" * ROUND
    buf = bytearray(1 << 16)
    anc = unix._ANC_SPACE  # pylint: disable=protected-access
    cloexec = unix._MSG_CMSG_CLOEXEC  # pylint: disable=protected-access
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ep = select.epoll()
    efd = os.eventfd(1 << 20, os.EFD_SEMAPHORE | os.EFD_NONBLOCK)
    try:
        def raw(k: int) -> None:
            for _ in range(k):
                if a.send(msg) != ROUND or b.recv_into(buf) != ROUND:
                    fail(case, "raw send + recv: a short count")

        def with_anc(k: int, want: bool) -> None:
            for _ in range(k):
                if a.sendmsg([msg]) != ROUND:
                    fail(case, "sendmsg: a short count")
                got, cmsg, _flags, _addr = b.recvmsg_into([buf], anc, cloexec)
                if got != ROUND or bool(cmsg) != want:
                    fail(case, "recvmsg: a short count, or credentials missing or unasked for")

        def epoll_wait(k: int) -> None:
            for _ in range(k):
                if len(ep.poll(-1, 1)) != 1:
                    fail(case, "epoll_wait: not ready")

        def semaphore(k: int) -> None:
            for _ in range(k):
                if os.eventfd_read(efd) != 1:
                    fail(case, "eventfd read")
                os.eventfd_write(efd, 1)

        fd = a.fileno()
        ino = os.fstat(fd).st_ino

        def fstat(k: int) -> None:
            for _ in range(k):
                if os.fstat(fd).st_ino != ino:
                    fail(case, "fstat: another file")

        base = _per_op(raw, n, repeat)
        msgcalls = _per_op(lambda k: with_anc(k, False), n, repeat) - base
        b.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        cred = _per_op(lambda k: with_anc(k, True), n, repeat) - base - msgcalls
        a.send(msg)  # one record stays queued: the epoll set always reports it ready
        ep.register(b.fileno(), select.EPOLLIN)
        wait = _per_op(epoll_wait, n, repeat)
        sem = _per_op(semaphore, n, repeat)
        check = _per_op(fstat, n, repeat)
    finally:
        ep.close()
        os.close(efd)
        a.close()
        b.close()

    hdr = ctypes.sizeof(M.mach_msg_header_t)
    Msg = _msg_type()
    with Port() as port, port.make_send() as right:
        m, r = Msg(), Msg()
        m.data = msg
        h, rh = m.h, r.h
        bits, dest, pname, rsize = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0), right.name, port.name, \
            ctypes.sizeof(r)
        mach_msg, snd, rcv = M.mach_msg, M.MACH_SEND_MSG, M.MACH_RCV_MSG

        def mach(k: int) -> None:
            for _ in range(k):
                h.msgh_bits = bits
                h.msgh_size = hdr + ROUND
                h.msgh_remote_port = dest
                h.msgh_local_port = 0
                kr = mach_msg(h, snd, hdr + ROUND, 0, 0, 0, 0)
                if kr:
                    fail(case, f"mach_msg send: {kr_text(kr)}")
                kr = mach_msg(rh, rcv, 0, rsize, pname, 0, 0)
                if kr:
                    fail(case, f"mach_msg receive: {kr_text(kr)}")

        total = _per_op(mach, n, repeat)
    pieces = base + msgcalls + cred + wait + sem + check
    return [("raw SEQPACKET send + recv (baseline)", base),
            ("+ sendmsg + recvmsg_into (room for fds)", msgcalls),
            ("+ kernel-verified credentials (SO_PASSCRED)", cred),
            ("+ epoll_wait over the port's connections", wait),
            ("+ queue-limit semaphore (eventfd read + write)", sem),
            ("+ fstat of the right's fd before the send", check),
            ("= these system calls, in all", pieces),
            ("pymach.mach mach_msg send + receive", total),
            ("  less the system calls: Python work", total - pieces)]


def handoff_pieces(size: int, huge_dir: str | None = None) -> list[tuple[str, float]]:
    """The steps of an out-of-line handoff of ``size`` bytes with
    deallocate (a whole memfd-backed region), each timed alone on a memfd
    written in full through a shared mapping: the munmap of the sender's
    mapping, the F_SEAL_WRITE that follows it, and the receiver's
    MAP_PRIVATE mmap. With ``huge_dir`` (a tmpfs mounted with huge=always),
    also the same munmap of a file there, whose pages are 2 MiB. Rows of
    (case, seconds), the best of OOL_ROUNDS rounds each."""
    import fcntl
    from pymach._linux import mm

    case = "handoff pieces"
    rw = mm.PROT_READ | mm.PROT_WRITE
    seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE

    def written(fd: int) -> int:
        a = mm.mmap(0, size, rw, mm.MAP_SHARED, fd)
        mm.memset(a, 7, size)
        return a

    unmap = seal = recv_map = huge = float("inf")
    for _ in range(OOL_ROUNDS):
        fd = mm.memfd("bench.handoff", size)
        try:
            a = written(fd)
            t0 = time.perf_counter()
            mm.munmap(a, size)
            t1 = time.perf_counter()
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            t2 = time.perf_counter()
            if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & seals != seals:
                fail(case, "the memfd is not sealed")
            r = mm.mmap(0, size, rw, mm.MAP_PRIVATE, fd)
            t3 = time.perf_counter()
            mm.munmap(r, size)
            unmap, seal, recv_map = min(unmap, t1 - t0), min(seal, t2 - t1), min(recv_map, t3 - t2)
        finally:
            os.close(fd)
        if huge_dir is not None:
            path = os.path.join(huge_dir, f"pymach-bench-{os.getpid()}")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.unlink(path)
                os.ftruncate(fd, size)
                a = written(fd)
                t0 = time.perf_counter()
                mm.munmap(a, size)
                huge = min(huge, time.perf_counter() - t0)
            finally:
                os.close(fd)
    rows = [("munmap of the sender's mapping (ms)", unmap), ("F_SEAL_WRITE of the memfd (ms)", seal),
            ("the receiver's MAP_PRIVATE mmap (ms)", recv_map)]
    if huge_dir is not None:
        rows.append((f"munmap on 2 MiB pages, tmpfs huge=always (ms)", huge))
    return rows


def huge_pages_in(path: str) -> bool:
    """Whether ``path`` is on a tmpfs mounted with huge=always."""
    real = os.path.realpath(path)
    best = ("", "", "")
    with open("/proc/self/mounts") as f:
        for line in f:
            _dev, where, kind, opts = line.split()[:4]
            where = where.replace("\\040", " ")
            if (real == where or real.startswith(where.rstrip("/") + "/")) and len(where) > len(best[0]):
                best = (where, kind, opts)
    return best[1] == "tmpfs" and "huge=always" in best[2].split(",")
