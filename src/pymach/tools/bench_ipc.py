"""pymach bench ipc: request/reply round trips and one-way messages beside
their peers, over the same kind of process pair, in one run; many rights
in one message and a large out-of-line handoff; with ``--breakdown``, what
one message costs, piece by piece, and what the out-of-line handoff's
steps cost. (``--instructions`` and ``--syscalls``: see _callgrind.)

Every round-trip and one-way case forks a server process; the client (this
process) measures. Peers: a raw Python AF_UNIX SOCK_SEQPACKET socketpair
(the baseline), multiprocessing.Pipe, and, when they are installed, pyzmq
(PAIR and REQ/REP for round trips, PUSH/PULL one way, over ipc:// in a
private directory), faster-fifo and iceoryx2 (request-response and
publish-subscribe, woken by its events, in a private directory and shared
memory prefix). Both pymach layers: pymach.mach's mach_msg and the
Pythonic classes.

The round trips run with both processes pinned to one CPU and unpinned,
and so do the one-way cases. The cases alternate: each round runs every
case once, in an order rotated from round to round, and each figure is the
median of the rounds. A one-way sample ends when the server says it has
received every message of the sample.

Every call's result is checked, in every case alike (a kern_return_t, a
byte count, a reply's length and content, its id): a call that fails
raises BenchError, and no figure is reported for it. A server that fails
prints its traceback on stderr and exits 1, which the client sees (a dead
port, EOF, a send-once notification instead of the reply, a timeout of
DEADLINE seconds where the transport gives no other sign).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import multiprocessing
import os
import queue
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Iterator, NoReturn

from .._linux import files, process, unix

ROUND = 64  # bytes per request/reply
REQUEST_ID = 0x1C0  # the round trips' msgh_id, which the server's answer keeps
MSG = b"x" * ROUND  # every request and one-way message; every reply echoes it
DEADLINE = 60  # seconds a side waits for its peer where the transport gives no sign of its death

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
    pid = process.fork()
    if pid == 0:
        code = 0
        try:
            server()
        except BaseException:  # pylint: disable=broad-exception-caught
            traceback.print_exc()
            sys.stderr.flush()
            code = 1
        finally:
            process.exit_now(code)
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
        process.kill(pid, process.SIGKILL)
        process.reap(pid)
        raise
    code = process.reap(pid)
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


# -- a raw round trip (bench shm's baseline too) ------------------------------------

def raw_socket_round(n: int, repeat: int, size: int = ROUND) -> float:
    """A ``size``-byte request and its answer over a socketpair, with a
    forked server (ns per round trip, the best of ``repeat`` samples)."""
    case = "raw SEQPACKET round trip"
    a, b = unix.plain_pair()
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


# -- the peers, one sample each ----------------------------------------------------------
#
# Each case function takes ``n`` and returns the ns per operation of one
# sample of ``n`` operations, after an untimed warm-up of _warm(n); its
# server is forked for the sample and reaped after it.

def _warm(n: int) -> int:
    """The untimed operations before a sample: a tenth, at least one."""
    return max(1, n // 10)


def _sample(run: Callable[[int], None], n: int) -> float:
    run(_warm(n))
    t0 = time.perf_counter_ns()
    run(n)
    return (time.perf_counter_ns() - t0) / n


def _optional(module: str) -> Any:
    """The module, or None when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


class _Signal:
    """A pipe from a forked server to the client, one byte each time the
    server is ready or has received a batch of one-way messages. Once the
    client has closed its write end (``forked``), EOF means the server is
    gone."""

    def __init__(self) -> None:
        self.r, self.w = files.pipe()

    def post(self) -> None:
        """In the server."""
        files.write(self.w, b"+")

    def forked(self) -> None:
        """In the client, once the server is forked."""
        files.close(self.w)
        self.w = -1

    def wait(self, case: str) -> None:
        """In the client: the server's next byte, or BenchError."""
        if not files.wait_readable(self.r, DEADLINE):
            fail(case, f"the server said nothing for {DEADLINE} s")
        if files.read(self.r, 1) != b"+":
            fail(case, "the server is gone")

    def close(self) -> None:
        for fd in (self.r, self.w):
            if fd >= 0:
                files.close(fd)
        self.r = self.w = -1


def _oneway_sample(send: Callable[[int], None], n: int, done: _Signal, case: str) -> float:
    """ns per message: ``n`` messages sent, until the server says it has
    received them all (after an untimed warm-up, received likewise)."""
    send(_warm(n))
    done.wait(case)
    t0 = time.perf_counter_ns()
    send(n)
    done.wait(case)
    return (time.perf_counter_ns() - t0) / n


def _batches(n: int) -> tuple[int, int]:
    """What a one-way server receives, posting after each: the warm-up, the sample."""
    return _warm(n), n


# raw socket

def raw_rt(n: int) -> float:
    case = "raw SEQPACKET round trip"
    a, b = unix.plain_pair()
    total = _warm(n) + n

    def server() -> None:
        a.close()
        for _ in range(total):
            d = b.recv(256)
            if d != MSG or b.send(d) != ROUND:
                raise RuntimeError(f"a request of {len(d)} bytes, or a short send")

    def run(k: int) -> None:
        send, recv = a.send, a.recv
        for _ in range(k):
            if send(MSG) != ROUND or recv(256) != MSG:
                fail(case, "a short send, or not the reply (the server is gone)")

    with contextlib.closing(a), _server(server, case):
        b.close()
        return _sample(run, n)


def raw_ow(n: int) -> float:
    case = "raw SEQPACKET one-way"
    a, b = unix.plain_pair()
    done = _Signal()

    def server() -> None:
        a.close()
        for batch in _batches(n):
            for _ in range(batch):
                if b.recv(256) != MSG:
                    raise RuntimeError("a wrong message")
            done.post()

    def send(k: int) -> None:
        s = a.send
        for _ in range(k):
            if s(MSG) != ROUND:
                fail(case, "a short send")

    try:
        with _server(server, case):
            b.close()
            done.forked()
            return _oneway_sample(send, n, done, case)
    finally:
        a.close()
        b.close()
        done.close()


# multiprocessing.Pipe

def pipe_rt(n: int) -> float:
    case = "multiprocessing.Pipe round trip"
    a, b = multiprocessing.Pipe()
    total = _warm(n) + n

    def server() -> None:
        a.close()
        for _ in range(total):
            d = b.recv_bytes()
            if d != MSG:
                raise RuntimeError(f"a request of {len(d)} bytes")
            b.send_bytes(d)

    def run(k: int) -> None:
        send, recv = a.send_bytes, a.recv_bytes
        for _ in range(k):
            send(MSG)
            if recv() != MSG:  # EOFError when the server is gone
                fail(case, "not the reply")

    try:
        with _server(server, case):
            b.close()
            return _sample(run, n)
    finally:
        a.close()
        b.close()


def pipe_ow(n: int) -> float:
    case = "multiprocessing.Pipe one-way"
    a, b = multiprocessing.Pipe(duplex=False)  # (reading end, writing end)
    done = _Signal()

    def server() -> None:
        b.close()
        for batch in _batches(n):
            for _ in range(batch):
                if a.recv_bytes() != MSG:
                    raise RuntimeError("a wrong message")
            done.post()

    def send(k: int) -> None:
        s = b.send_bytes
        for _ in range(k):
            s(MSG)

    try:
        with _server(server, case):
            a.close()
            done.forked()
            return _oneway_sample(send, n, done, case)
    finally:
        a.close()
        b.close()
        done.close()


# pyzmq

@contextlib.contextmanager
def _zmq_pair(zmq: Any, kinds: tuple[int, int], server: Callable[[Any], None], case: str) -> Iterator[Any]:
    """Fork a server whose socket of kind ``kinds[0]`` binds an ipc://
    endpoint in a private directory and runs ``server(socket)``; yield our
    socket of kind ``kinds[1]``, connected to it. Each side's socket times
    out after DEADLINE."""
    d = tempfile.mkdtemp(prefix="pymach-bench-zmq-")
    path = f"ipc://{d}/endpoint"

    def srv() -> None:
        ctx = zmq.Context()
        s = ctx.socket(kinds[0])
        s.setsockopt(zmq.RCVTIMEO, DEADLINE * 1000)
        s.setsockopt(zmq.SNDTIMEO, DEADLINE * 1000)
        try:
            s.bind(path)
            server(s)
        finally:
            s.close(linger=DEADLINE * 1000)  # what it sent last reaches the client
            ctx.term()

    try:
        with _server(srv, case):
            ctx = zmq.Context()
            c = ctx.socket(kinds[1])
            c.setsockopt(zmq.RCVTIMEO, DEADLINE * 1000)
            c.setsockopt(zmq.SNDTIMEO, DEADLINE * 1000)
            try:
                c.connect(path)
                yield c
            except zmq.ZMQError as e:
                fail(case, f"{type(e).__name__}: {e}")
            finally:
                c.close(linger=0)
                ctx.term()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def zmq_rt(n: int, pattern: str) -> float:
    """pyzmq PAIR (``pattern`` "PAIR") or REQ/REP ("REQ")."""
    zmq = _optional("zmq")
    case = f"pyzmq {pattern} round trip"
    total = _warm(n) + n

    def server(s: Any) -> None:
        for _ in range(total):
            m = s.recv()
            if m != MSG:
                raise RuntimeError(f"a request of {len(m)} bytes")
            s.send(m)

    kinds = (zmq.PAIR, zmq.PAIR) if pattern == "PAIR" else (zmq.REP, zmq.REQ)
    with _zmq_pair(zmq, kinds, server, case) as c:
        def run(k: int) -> None:
            send, recv = c.send, c.recv
            for _ in range(k):
                send(MSG)
                if recv() != MSG:  # zmq.Again after DEADLINE
                    fail(case, "not the reply")

        return _sample(run, n)


def zmq_ow(n: int) -> float:
    zmq = _optional("zmq")
    case = "pyzmq PUSH/PULL one-way"
    done = _Signal()

    def server(s: Any) -> None:
        for batch in _batches(n):
            for _ in range(batch):
                if s.recv() != MSG:
                    raise RuntimeError("a wrong message")
            done.post()

    try:
        with _zmq_pair(zmq, (zmq.PULL, zmq.PUSH), server, case) as c:
            done.forked()

            def send(k: int) -> None:
                s = c.send
                for _ in range(k):
                    s(MSG)

            return _oneway_sample(send, n, done, case)
    finally:
        done.close()


# faster-fifo

def fifo_rt(n: int) -> float:
    ff = _optional("faster_fifo")
    case = "faster-fifo round trip"
    total = _warm(n) + n
    ask, answer = ff.Queue(), ff.Queue()  # in shared memory, before the fork

    def server() -> None:
        for _ in range(total):
            m = ask.get(timeout=DEADLINE)
            if m != MSG:
                raise RuntimeError("a wrong request")
            answer.put(m, timeout=DEADLINE)

    def run(k: int) -> None:
        put, get = ask.put, answer.get
        for _ in range(k):
            put(MSG, timeout=DEADLINE)
            if get(timeout=DEADLINE) != MSG:
                fail(case, "not the reply")

    with _server(server, case):
        try:
            return _sample(run, n)
        except (queue.Empty, queue.Full):
            fail(case, f"no reply, or no room, for {DEADLINE} s (the server is gone)")


def fifo_ow(n: int) -> float:
    ff = _optional("faster_fifo")
    case = "faster-fifo one-way"
    q = ff.Queue()
    done = _Signal()

    def server() -> None:
        for batch in _batches(n):
            for _ in range(batch):
                if q.get(timeout=DEADLINE) != MSG:
                    raise RuntimeError("a wrong message")
            done.post()

    def send(k: int) -> None:
        put = q.put
        for _ in range(k):
            put(MSG, timeout=DEADLINE)

    try:
        with _server(server, case):
            done.forked()
            try:
                return _oneway_sample(send, n, done, case)
            except queue.Full:
                fail(case, f"no room for {DEADLINE} s (the server is gone)")
    finally:
        done.close()


# iceoryx2

class _IoxPayload(ctypes.Structure):
    """The 64 bytes of an iceoryx2 request, response or sample."""
    _fields_ = [("data", ctypes.c_uint8 * ROUND)]

    @staticmethod
    def type_name() -> str:
        return "pymach_bench_64"


class _Iox:
    """iceoryx2 nodes in a private directory, under a shared-memory prefix
    of their own; ``remove`` deletes both."""

    count = 0

    def __init__(self) -> None:
        _Iox.count += 1
        self.root = tempfile.mkdtemp(prefix="pymach-bench-iox-")
        self.prefix = f"pymachbench{os.getpid()}x{_Iox.count}_"

    def node(self, iox2: Any) -> Any:
        iox2.set_log_level(iox2.LogLevel.Error)
        cfg = iox2.config.default()
        g = cfg.global_cfg
        g.root_path = iox2.Path.new(self.root + "/")
        g.prefix = iox2.FileName.new(self.prefix)
        return (iox2.NodeBuilder.new().config(cfg).signal_handling_mode(iox2.SignalHandlingMode.Disabled)
                .create(iox2.ServiceType.Ipc))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(OSError):
            for f in os.listdir("/dev/shm"):
                if f.startswith(self.prefix):
                    os.unlink(os.path.join("/dev/shm", f))


def _iox_event(iox2: Any, node: Any, name: str) -> Any:
    return node.service_builder(iox2.ServiceName.new(name)).event().open_or_create()


IOX_TICK_MS = 1  # an iceoryx2 listener's wait, before the waiter looks again (see _iox_next)
IOX_DEPTH = 256  # the subscriber's buffer, in samples


def _iox_next(take: Callable[[], Any], listener: Any, tick: Any) -> Any:
    """What ``take()`` gives, waiting in ``listener`` while it gives None.
    Each wait ends after ``tick`` (IOX_TICK_MS), and ``take`` is tried
    again: a waiter can miss a notification (seen with iceoryx2 0.10: a
    subscriber's listener slept through notify() calls that each reported
    one listener notified, its samples already there), so an event alone
    would sometimes stall a case for good. TimeoutError after DEADLINE
    seconds of nothing."""
    got = take()
    end = 0.0
    while got is None:
        if not listener.timed_wait(tick):
            now = time.monotonic()
            if not end:
                end = now + DEADLINE
            elif now > end:
                raise TimeoutError(f"nothing for {DEADLINE} s")
        got = take()
    return got


def iox_rt(n: int) -> float:
    """iceoryx2 request-response: the client sends a copy of the request
    and notifies the server's listener; the server answers with a copy and
    notifies the client's listener. Each side sleeps in its listener while
    nothing is there (see _iox_next)."""
    iox2 = _optional("iceoryx2")
    case = "iceoryx2 request-response round trip"
    total = _warm(n) + n
    box, ready = _Iox(), _Signal()

    def services(node: Any) -> tuple[Any, Any, Any]:
        rr = (node.service_builder(iox2.ServiceName.new("rr"))
              .request_response(_IoxPayload, _IoxPayload).open_or_create())
        return rr, _iox_event(iox2, node, "to-server"), _iox_event(iox2, node, "to-client")

    def server() -> None:
        node = box.node(iox2)
        rr, to_server, to_client = services(node)
        srv = rr.server_builder().create()
        listener, notifier = to_server.listener_builder().create(), to_client.notifier_builder().create()
        ready.post()
        tick = iox2.Duration.from_millis(IOX_TICK_MS)
        for _ in range(total):
            req = _iox_next(srv.receive, listener, tick)
            body = req.payload().contents
            if bytes(body.data) != MSG:
                raise RuntimeError("a wrong request")
            req.send_copy(body)
            req.delete()
            if notifier.notify() != 1:
                raise RuntimeError("the client's listener is gone")
        for port in (srv, listener, notifier):
            port.delete()

    try:
        with _server(server, case):
            ready.forked()
            ready.wait(case)
            node = box.node(iox2)
            rr, to_server, to_client = services(node)
            client = rr.client_builder().create()
            listener, notifier = to_client.listener_builder().create(), to_server.notifier_builder().create()
            tick = iox2.Duration.from_millis(IOX_TICK_MS)
            request = _IoxPayload()
            ctypes.memmove(request.data, MSG, ROUND)

            def run(k: int) -> None:
                for _ in range(k):
                    pending = client.send_copy(request)
                    if notifier.notify() != 1:
                        fail(case, "the server's listener is gone")
                    resp = _iox_next(pending.receive, listener, tick)
                    ok = bytes(resp.payload().contents.data) == MSG
                    resp.delete()
                    pending.delete()
                    if not ok:
                        fail(case, "not the reply")

            try:
                return _sample(run, n)
            except TimeoutError as e:
                fail(case, f"no response: {e} (the server is gone)")
            finally:
                for port in (client, listener, notifier):
                    port.delete()
                del rr, to_server, to_client, node
    finally:
        ready.close()
        box.remove()


def iox_ow(n: int) -> float:
    """iceoryx2 publish-subscribe, woken by events: the publisher sends a
    copy of each sample and notifies the subscriber's listener. No sample
    is lost: the service does not overwrite (safe overflow off), and a
    send that does not deliver (the subscriber's buffer of IOX_DEPTH is
    full) returns 0; the publisher then waits for the subscriber's
    "drained" event, which it sends each time it finds its buffer empty,
    and sends again (see _iox_next)."""
    iox2 = _optional("iceoryx2")
    case = "iceoryx2 publish-subscribe one-way"
    box, ready, done = _Iox(), _Signal(), _Signal()

    def services(node: Any) -> tuple[Any, Any, Any]:
        ps = (node.service_builder(iox2.ServiceName.new("ps")).publish_subscribe(_IoxPayload)
              .enable_safe_overflow(False).subscriber_max_buffer_size(IOX_DEPTH).open_or_create())
        return ps, _iox_event(iox2, node, "sent"), _iox_event(iox2, node, "drained")

    def server() -> None:
        node = box.node(iox2)
        ps, sent, drained = services(node)
        sub = ps.subscriber_builder().buffer_size(IOX_DEPTH).create()
        listener, notifier = sent.listener_builder().create(), drained.notifier_builder().create()
        ready.post()
        tick = iox2.Duration.from_millis(IOX_TICK_MS)
        for batch in _batches(n):
            for _ in range(batch):
                sample = sub.receive()
                if sample is None:
                    notifier.notify()  # the publisher may wait for room (none listens before it starts)
                    sample = _iox_next(sub.receive, listener, tick)
                ok = bytes(sample.payload().contents.data) == MSG
                sample.delete()
                if not ok:
                    raise RuntimeError("a wrong message")
            done.post()
        for port in (sub, listener, notifier):
            port.delete()

    try:
        with _server(server, case):
            ready.forked()
            done.forked()
            ready.wait(case)
            node = box.node(iox2)
            ps, sent, drained = services(node)
            pub = ps.publisher_builder().backpressure_strategy(iox2.BackpressureStrategy.DiscardData).create()
            listener, notifier = drained.listener_builder().create(), sent.notifier_builder().create()
            tick = iox2.Duration.from_millis(IOX_TICK_MS)
            sample = _IoxPayload()
            ctypes.memmove(sample.data, MSG, ROUND)

            def delivered() -> bool | None:
                return True if pub.send_copy(sample) == 1 else None

            def send(k: int) -> None:
                for _ in range(k):
                    if pub.send_copy(sample) != 1:  # the subscriber's buffer is full
                        _iox_next(delivered, listener, tick)
                    if notifier.notify() != 1:
                        fail(case, "the server's listener is gone")

            try:
                return _oneway_sample(send, n, done, case)
            except TimeoutError as e:
                fail(case, f"no room: {e} (the server is gone)")
            finally:
                for port in (pub, listener, notifier):
                    port.delete()
                del ps, sent, drained, node
    finally:
        ready.close()
        done.close()
        box.remove()


# pymach

def _msg_type() -> type[ctypes.Structure]:
    from pymach import mach as M

    class Msg(ctypes.Structure):
        _pack_ = 4
        _fields_ = [("h", M.mach_msg_header_t), ("data", ctypes.c_char * (ROUND + 64)), ("t", M.mach_msg_trailer_t)]
    return Msg


@contextlib.contextmanager
def _mach_server(serve: Callable[[Any], None], case: str, qlimit: int | None = None) -> Iterator[Any]:
    """Fork a server with a port of its own, which it sends back through
    ours (a fork child inherits only registered ports); it runs
    ``serve(port)`` (a pymach.Port). Yields our send right to it; reaps it
    at the end (see _server)."""
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
                serve(mine)

        with _server(srv, case):
            pymach.register_ports()
            (server_right,) = parent.receive(timeout=DEADLINE).rights
            with server_right:
                yield server_right


def _mach_c_server(total: int, reply: bool, framed: bool = False) -> Callable[[Any], None]:
    """A pymach.mach server: ``total`` receives of a 64-byte request, each
    answered on its send-once reply right with the same body when
    ``reply``. ``framed``: the body is the Pythonic layer's, the data's
    length (a uint32) before the data."""
    import struct
    from pymach import mach as M

    hdr = ctypes.sizeof(M.mach_msg_header_t)
    at = hdr + (4 if framed else 0)
    Msg = _msg_type()

    def serve(port: Any) -> None:
        name = port.name
        m = Msg()
        h, size = m.h, ctypes.sizeof(m)
        body = (ctypes.c_char * (at - hdr + ROUND)).from_buffer(m, hdr)
        want = (struct.pack("<I", ROUND) if framed else b"") + MSG
        mach_msg, bits_of, remote_of = M.mach_msg, M.MACH_MSGH_BITS, M.MACH_MSGH_BITS_REMOTE
        rcv, snd = M.MACH_RCV_MSG, M.MACH_SEND_MSG
        for _ in range(total):
            kr = mach_msg(h, rcv, 0, size, name, 0, 0)
            if kr:
                raise RuntimeError(f"receive: {kr_text(kr)}")
            if h.msgh_size != at + ROUND or body.raw != want:
                raise RuntimeError(f"a wrong request (msgh_size {h.msgh_size})")
            if not reply:
                continue
            # answer on the reply right: MOVE_SEND_ONCE, no reply of our own
            h.msgh_bits = bits_of(remote_of(h.msgh_bits), 0)
            h.msgh_local_port = 0
            kr = mach_msg(h, snd, at + ROUND, 0, 0, 0, 0)
            if kr:
                raise RuntimeError(f"send: {kr_text(kr)}")
    return serve


def mach_rt(n: int) -> float:
    """pymach.mach: mach_msg send with a MAKE_SEND_ONCE reply, then
    receive; the server answers with mach_msg on the send-once right."""
    import pymach
    from pymach import mach as M

    case = "pymach round trip"
    hdr = ctypes.sizeof(M.mach_msg_header_t)
    Msg = _msg_type()
    with pymach.Port() as reply, _mach_server(_mach_c_server(_warm(n) + n, True), case) as server_right:
        req, rep = Msg(), Msg()
        req.data = MSG
        rbody = (ctypes.c_char * ROUND).from_buffer(rep, hdr)
        bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE)
        dest, rname = server_right.name, reply.name
        mach_msg, rsize = M.mach_msg, ctypes.sizeof(rep)
        h, rh = req.h, rep.h
        snd, rcv = M.MACH_SEND_MSG, M.MACH_RCV_MSG
        size = hdr + ROUND

        def run(k: int) -> None:
            for _ in range(k):
                h.msgh_bits = bits
                h.msgh_size = size
                h.msgh_remote_port = dest
                h.msgh_local_port = rname
                h.msgh_id = REQUEST_ID
                kr = mach_msg(h, snd, size, 0, 0, 0, 0)
                if kr:
                    fail(case, f"mach_msg send: {kr_text(kr)}")
                kr = mach_msg(rh, rcv, 0, rsize, rname, 0, 0)
                if kr or rh.msgh_id != REQUEST_ID or rh.msgh_size != size or rbody.raw != MSG:
                    fail(case, f"mach_msg receive: {kr_text(kr)}, msgh_id {rh.msgh_id:#x}, "
                               f"msgh_size {rh.msgh_size} (not the reply)")

        return _sample(run, n)


def send_reply_rt(n: int) -> float:
    """The Pythonic client: SendRight.send(reply=port) and
    port.receive(); the server is pymach.mach's, as in mach_rt, and sends
    back the body it received."""
    import pymach

    case = "pymach round trip (Pythonic send)"
    with pymach.Port() as reply, _mach_server(_mach_c_server(_warm(n) + n, True, True), case) as right:
        def run(k: int) -> None:
            send, receive = right.send, reply.receive
            for _ in range(k):
                send(MSG, id=REQUEST_ID, reply=reply)  # raises MachError when it fails
                r = receive()
                if r.id != REQUEST_ID or r.data != MSG:
                    fail(case, "a message that is not the reply (the server is gone)")

        return _sample(run, n)


def request_rt(n: int) -> float:
    """The Pythonic layer on both sides: pymach.request(dest, data), answered
    by a server that does Port.receive() and msg.reply.send()."""
    import pymach

    case = "pymach round trip (request)"
    total = _warm(n) + n

    def serve(port: Any) -> None:
        receive = port.receive
        for _ in range(total):
            m = receive()
            if m.data != MSG or m.reply is None:
                raise RuntimeError("a wrong request")
            m.reply.send(m.data, id=m.id)

    with _mach_server(serve, case) as right:
        request = pymach.request

        def run(k: int) -> None:
            for _ in range(k):
                r = request(right, MSG, id=REQUEST_ID)  # raises MachError when it fails
                if r.id != REQUEST_ID or r.data != MSG:
                    fail(case, "a message that is not the reply (the server is gone)")

        return _sample(run, n)


def mach_ow(n: int) -> float:
    from pymach import mach as M

    case = "pymach one-way"
    hdr = ctypes.sizeof(M.mach_msg_header_t)
    Msg = _msg_type()
    done = _Signal()

    def serve(port: Any) -> None:
        for batch in _batches(n):
            _mach_c_server(batch, False)(port)
            done.post()

    try:
        with _mach_server(serve, case, qlimit=M.MACH_PORT_QLIMIT_LARGE) as server_right:
            done.forked()
            req = Msg()
            req.data = MSG
            bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0)
            dest = server_right.name
            mach_msg, snd = M.mach_msg, M.MACH_SEND_MSG
            h = req.h
            size = hdr + ROUND

            def send(k: int) -> None:
                for _ in range(k):
                    h.msgh_bits = bits
                    h.msgh_size = size
                    h.msgh_remote_port = dest
                    h.msgh_local_port = 0
                    kr = mach_msg(h, snd, size, 0, 0, 0, 0)
                    if kr:
                        fail(case, f"mach_msg send: {kr_text(kr)}")

            return _oneway_sample(send, n, done, case)
    finally:
        done.close()


def pythonic_ow(n: int) -> float:
    from pymach import mach as M

    case = "pymach one-way (Pythonic)"
    done = _Signal()

    def serve(port: Any) -> None:
        receive = port.receive
        for batch in _batches(n):
            for _ in range(batch):
                m = receive()
                if m.data != MSG or m.id != REQUEST_ID:
                    raise RuntimeError("a wrong message")
            done.post()

    try:
        with _mach_server(serve, case, qlimit=M.MACH_PORT_QLIMIT_LARGE) as right:
            done.forked()

            def send(k: int) -> None:
                s = right.send
                for _ in range(k):
                    s(MSG, id=REQUEST_ID)  # raises MachError when it fails

            return _oneway_sample(send, n, done, case)
    finally:
        done.close()


# -- every case, round by round ---------------------------------------------------------

PeerCase = tuple[str, "Callable[[int], float] | None"]  # (label, case function; None: not installed)


def round_trip_cases() -> list[PeerCase]:
    zmq, ff, iox = (_optional(m) is not None for m in ("zmq", "faster_fifo", "iceoryx2"))
    return [
        ("raw SEQPACKET socketpair (baseline)", raw_rt),
        ("multiprocessing.Pipe", pipe_rt),
        ("pyzmq PAIR, ipc://", (lambda n: zmq_rt(n, "PAIR")) if zmq else None),
        ("pyzmq REQ/REP, ipc://", (lambda n: zmq_rt(n, "REQ")) if zmq else None),
        ("faster-fifo, two queues", fifo_rt if ff else None),
        ("iceoryx2 request-response, an event each way", iox_rt if iox else None),
        ("pymach.mach mach_msg, send-once reply", mach_rt),
        ("pymach request() / receive() + reply.send()", request_rt),
        ("pymach send(reply=) + receive(), mach_msg server", send_reply_rt),
    ]


def one_way_cases() -> list[PeerCase]:
    zmq, ff, iox = (_optional(m) is not None for m in ("zmq", "faster_fifo", "iceoryx2"))
    return [
        ("raw SEQPACKET socketpair (baseline)", raw_ow),
        ("multiprocessing.Pipe", pipe_ow),
        ("pyzmq PUSH/PULL, ipc://", zmq_ow if zmq else None),
        ("faster-fifo, one queue", fifo_ow if ff else None),
        ("iceoryx2 publish-subscribe + events", iox_ow if iox else None),
        ("pymach.mach mach_msg", mach_ow),
        ("pymach SendRight.send() / Port.receive()", pythonic_ow),
    ]


def pinned_cpu() -> int:
    """The CPU that pinned cases run on: the last one we may run on."""
    return max(process.cpus())


def peer_blocks(n: int, rounds: int, cpu: int | None = None) -> list[dict[str, object]]:
    """The round-trip and one-way blocks of ``pymach bench ipc``, each
    once with both processes pinned to ``cpu`` (os.sched_setaffinity
    before the fork, which the server inherits) and once unpinned. Each
    round runs every case of every block once, in an order rotated from
    round to round; each figure is the median of the ``rounds`` samples
    of ``n`` operations. Blocks: a title, "stat" "median", "repeat"
    (rounds), "ops" (n), "one_way", and rows of (label, ns per operation,
    or None when the peer is not installed)."""
    if cpu is None:
        cpu = pinned_cpu()
    rt, ow = round_trip_cases(), one_way_cases()
    blocks: list[tuple[str, bool, bool, list[PeerCase]]] = [
        (f"request/reply round trip, {ROUND} B, both processes on CPU {cpu}", True, False, rt),
        (f"request/reply round trip, {ROUND} B, unpinned", False, False, rt),
        (f"one-way messages, {ROUND} B, both processes on CPU {cpu}", True, True, ow),
        (f"one-way messages, {ROUND} B, unpinned", False, True, ow),
    ]
    jobs = [(b, c) for b, block in enumerate(blocks) for c, (_, fn) in enumerate(block[3]) if fn is not None]
    samples: dict[tuple[int, int], list[float]] = {job: [] for job in jobs}
    allowed = process.cpus()
    for r in range(rounds):
        start = r * len(jobs) // rounds
        for b, c in jobs[start:] + jobs[:start]:
            fn = blocks[b][3][c][1]
            assert fn is not None
            if blocks[b][1]:
                process.run_on({cpu})
            try:
                samples[(b, c)].append(fn(n))
            finally:
                process.run_on(allowed)
    return [{"benchmark": title, "stat": "median", "repeat": rounds, "ops": n, "one_way": one_way,
             "rows": [(label, statistics.median(samples[(b, c)]) if fn is not None else None)
                      for c, (label, fn) in enumerate(cases)]}
            for b, (title, _, one_way, cases) in enumerate(blocks)]


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
    # the message's rights are fds twice over (the sender's and the
    # receiver's copies) while it is in flight: room for them, as far as
    # the hard limit goes (an ordinary user's soft limit is often 1024)
    need = 4 * count + 256
    soft, hard = process.fd_limits()
    if soft < need:
        process.raise_fd_limit()
        if hard < need:
            fail(case, f"RLIMIT_NOFILE hard limit {hard} is below the {need} fds this case needs")
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
        stack.callback(files.close, bare_fd)
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


def rights_block(repeat: int) -> dict[str, object]:
    """The many-rights block of ``pymach bench ipc``: the best of
    ``repeat`` samples of RIGHTS_OPS messages for each count."""
    return {"benchmark": "send rights in one message, sent and received", "repeat": repeat, "ops": RIGHTS_OPS,
            "rows": [(f"{count} send rights ({2 * count} fds)", many_rights(count, repeat))
                     for count in RIGHTS_COUNTS]}


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
    from pymach import Port
    from pymach import mach as M
    from pymach._linux import epoll, eventfd

    case = "message pieces"
    msg = b"x" * ROUND
    buf = bytearray(1 << 16)
    anc = unix.ANC_SPACE
    cloexec = unix.MSG_CMSG_CLOEXEC
    a, b = unix.plain_pair()
    ep = epoll.new()
    efd = eventfd.semaphore(1 << 20)
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
            efd_read, efd_write = eventfd.read, eventfd.write
            for _ in range(k):
                if efd_read(efd) != 1:
                    fail(case, "eventfd read")
                efd_write(efd, 1)

        fd = a.fileno()
        ino = files.inode(fd)

        def fstat(k: int) -> None:
            fstat_ = files.fstat
            for _ in range(k):
                if fstat_(fd).st_ino != ino:
                    fail(case, "fstat: another file")

        base = _per_op(raw, n, repeat)
        msgcalls = _per_op(lambda k: with_anc(k, False), n, repeat) - base
        unix.set_passcred(b, True)
        cred = _per_op(lambda k: with_anc(k, True), n, repeat) - base - msgcalls
        a.send(msg)  # one record stays queued: the epoll set always reports it ready
        ep.register(b.fileno(), epoll.EPOLLIN)
        wait = _per_op(epoll_wait, n, repeat)
        sem = _per_op(semaphore, n, repeat)
        check = _per_op(fstat, n, repeat)
    finally:
        ep.close()
        files.close(efd)
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
    from pymach._linux import memfd, mm

    case = "handoff pieces"
    rw = mm.PROT_READ | mm.PROT_WRITE
    seals = memfd.F_SEAL_SEAL | memfd.F_SEAL_SHRINK | memfd.F_SEAL_GROW | memfd.F_SEAL_WRITE

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
            memfd.add_seals(fd, seals)
            t2 = time.perf_counter()
            if memfd.seals(fd) & seals != seals:
                fail(case, "the memfd is not sealed")
            r = mm.mmap(0, size, rw, mm.MAP_PRIVATE, fd)
            t3 = time.perf_counter()
            mm.munmap(r, size)
            unmap, seal, recv_map = min(unmap, t1 - t0), min(seal, t2 - t1), min(recv_map, t3 - t2)
        finally:
            files.close(fd)
        if huge_dir is not None:
            path = os.path.join(huge_dir, f"pymach-bench-{os.getpid()}")
            fd = files.open(path, files.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.unlink(path)
                files.ftruncate(fd, size)
                a = written(fd)
                t0 = time.perf_counter()
                mm.munmap(a, size)
                huge = min(huge, time.perf_counter() - t0)
            finally:
                files.close(fd)
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
