"""pymach bench mig: a MIG round trip that pymach.mig generates (a routine
with one int in and one out) against the same exchange written by hand
with mach_msg: the same request and reply, byte for byte, on the same
kind of forked server, in the same run.

Cases: the generated Pythonic client (``iface.bench_add(port, a)``) and
C-layer stub (``iface.c.bench_add(port, a, byref(sum))``), each against a
server that the generated demux answers under mach_msg_server_once, and
the hand-written client against a hand-written server. Each round runs
every case once, in an order rotated from round to round; each figure is
the median of the rounds, with its ratio to the hand-written exchange.
Every reply is checked (its id, size, return code and sum)."""

from __future__ import annotations

import ctypes
import statistics
from typing import Any, Callable

from .bench_ipc import _mach_server, _sample, _warm, fail, kr_text

DEFS = """
subsystem bench 7300;
type int = MACH_MSG_TYPE_INTEGER_32;
type mach_port_t = MACH_MSG_TYPE_COPY_SEND;
routine bench_add(
		server	: mach_port_t;
		a	: int;
	out	sum	: int);
"""
REQUEST_ID = 7300


def interface() -> Any:
    """The generated client and server of DEFS."""
    from ..mig import compile_text
    from ..mig.rpc import Interface
    return Interface(compile_text(DEFS, "bench.defs"))


def _structs() -> tuple[type[ctypes.Structure], type[ctypes.Structure]]:
    from .. import mach as M

    class Request(ctypes.Structure):
        _pack_ = 4
        _fields_ = [("Head", M.mach_msg_header_t), ("NDR", ctypes.c_uint8 * 8), ("a", ctypes.c_int32)]

    class Reply(ctypes.Structure):
        _pack_ = 4
        _fields_ = [("Head", M.mach_msg_header_t), ("NDR", ctypes.c_uint8 * 8), ("RetCode", ctypes.c_int32),
                    ("sum", ctypes.c_int32), ("trailer", M.mach_msg_max_trailer_t)]
    return Request, Reply


def _hand_server(total: int) -> Callable[[Any], None]:
    from .. import mach as M
    Request, Reply = _structs()

    def serve(port: Any) -> None:
        name = port.name
        buf = Reply()
        rq = Request.from_buffer(buf)
        rp = buf
        for _ in range(total):
            kr = M.mach_msg(rq.Head, M.MACH_RCV_MSG, 0, ctypes.sizeof(buf), name, 0, 0)
            if kr:
                raise RuntimeError(f"receive: {kr_text(kr)}")
            if rq.Head.msgh_id != REQUEST_ID or rq.Head.msgh_size != 36:
                raise RuntimeError(f"a wrong request (id {rq.Head.msgh_id}, msgh_size {rq.Head.msgh_size})")
            a = rq.a
            h = rp.Head
            h.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSGH_BITS_REMOTE(h.msgh_bits), 0)
            h.msgh_size = 40
            h.msgh_local_port = 0
            h.msgh_id = REQUEST_ID + 100
            rp.RetCode = 0
            rp.sum = a + 1
            kr = M.mach_msg(h, M.MACH_SEND_MSG, 40, 0, 0, 0, 0)
            if kr:
                raise RuntimeError(f"send: {kr_text(kr)}")
    return serve


class _Impl:
    def bench_add(self, server: int, a: int) -> int:
        return a + 1


def _generated_server(total: int) -> Callable[[Any], None]:
    from .. import mach as M

    def serve(port: Any) -> None:
        server = interface().server(_Impl())
        for _ in range(total):
            kr = M.mach_msg_server_once(server.demux, server.max_size, port.name, 0)
            if kr:
                raise RuntimeError(f"mach_msg_server_once: {kr_text(kr)}")
    return serve


def hand_client(dest: int, case: str) -> Callable[[int], None]:
    """``run(k)``: k exchanges by hand: mach_msg send and receive in one
    call on the thread's MIG reply port; the reply's id, size, RetCode and
    sum checked."""
    from .. import mach as M
    Request, Reply = _structs()
    buf = Reply()
    rq = Request.from_buffer(buf)
    reply = M.mig_get_reply_port()
    bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE)
    opt = M.MACH_SEND_MSG | M.MACH_RCV_MSG
    size, rsize = 36, ctypes.sizeof(buf)
    mach_msg, h = M.mach_msg, rq.Head

    def run(k: int) -> None:
        for i in range(k):
            h.msgh_bits = bits
            h.msgh_size = size
            h.msgh_remote_port = dest
            h.msgh_local_port = reply
            h.msgh_voucher_port = 0
            h.msgh_id = REQUEST_ID
            rq.a = i
            kr = mach_msg(h, opt, size, rsize, reply, 0, 0)
            if kr or h.msgh_id != REQUEST_ID + 100 or h.msgh_size != 40 or buf.RetCode or buf.sum != i + 1:
                fail(case, f"mach_msg: {kr_text(kr)}, msgh_id {h.msgh_id}, msgh_size {h.msgh_size}")
    return run


def generated_client(dest: int, case: str) -> Callable[[int], None]:
    """``run(k)``: k calls of the generated C-layer stub."""
    call = interface().c.bench_add
    out = ctypes.c_int()
    ref = ctypes.byref(out)

    def run(k: int) -> None:
        for i in range(k):
            kr = call(dest, i, ref)
            if kr or out.value != i + 1:
                fail(case, f"{kr_text(kr)}, sum {out.value}")
    return run


def hand_rt(n: int) -> float:
    """The exchange by hand (hand_client), to a hand-written server."""
    case = "by hand with mach_msg"
    with _mach_server(_hand_server(_warm(n) + n), case) as right:
        return _sample(hand_client(right.name, case), n)


def generated_rt(n: int) -> float:
    """The generated Pythonic client: ``sum = iface.bench_add(port, a)``."""
    case = "generated, Pythonic"
    iface = interface()
    with _mach_server(_generated_server(_warm(n) + n), case) as right:
        dest = right.name
        call = iface.bench_add

        def run(k: int) -> None:
            for i in range(k):
                if call(dest, i) != i + 1:
                    fail(case, "the wrong sum")
        return _sample(run, n)


def generated_c_rt(n: int) -> float:
    """The generated C-layer stub: ``kr = iface.c.bench_add(port, a, byref(sum))``."""
    case = "generated, C stub"
    with _mach_server(_generated_server(_warm(n) + n), case) as right:
        return _sample(generated_client(right.name, case), n)


CASES: list[tuple[str, Callable[[int], float]]] = [
    ("by hand with mach_msg (client and server)", hand_rt),
    ("generated: Pythonic client, demux server", generated_rt),
    ("generated: C-layer stub, demux server", generated_c_rt),
]


def results(n: int, rounds: int) -> list[dict[str, object]]:
    """One block: each case's median ns per round trip over ``rounds``
    rounds (each running every case once, rotated), with its ratio to the
    hand-written exchange."""
    samples: dict[str, list[float]] = {c: [] for c, _ in CASES}
    for r in range(rounds):
        order = CASES[r % len(CASES):] + CASES[:r % len(CASES)]
        for label, fn in order:
            samples[label].append(fn(n))
    med = {c: statistics.median(s) for c, s in samples.items()}
    hand = med[CASES[0][0]]
    return [{"benchmark": "a MIG round trip (one int in, one out) to another process: generated against by hand",
             "stat": "median", "repeat": rounds, "ops": n,
             "rows": [{"case": c, "ns_per_op": med[c], "ratio": med[c] / hand} for c, _ in CASES]}]
