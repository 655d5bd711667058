"""pymach bench exc: a fault caught, answered and retried, against the same
round trip done by a bare ptrace loop in Python, in the same run.

Each case runs a target process that calls a 4-byte function (``mov
[rdi], rsi; ret``) on a page it cannot write, ``n`` times, and times the
loop itself (the time from each fault to the resumed thread, plus the
call):

- **bare ptrace loop**: a Python tracer process that waits for the stop,
  reads the registers, moves rip past the store, and continues: the least
  any tracer does;
- **exception port, EXCEPTION_STATE**: pymach's exception tracer sends
  mach_exception_raise_state to a handler in another process, which
  answers with rip moved past the store: the same work, through Mach;
- **exception port, lifting the protection**: the issue's round trip as
  vm_protect_caught does it: a handler thread of the target itself lifts
  the protection (mach_vm_protect) and answers KERN_SUCCESS; the store
  runs again and succeeds, and the loop protects the page again each time.

Each round runs every case once, in an order rotated from round to round;
each figure is the median of the rounds, with its ratio to the bare loop
and the faults handled per second."""

from __future__ import annotations

import mmap
import os
import statistics
import struct
import sys
import time
from typing import Any, Callable

STORE = b"\x48\x89\x37\xc3"  # mov [rdi], rsi ; ret


def _code_and_page() -> tuple[Any, int]:
    """The store function and a page it faults on (PROT_READ)."""
    import ctypes

    import pymach.mach as M
    code = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(STORE)
    fn = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p, ctypes.c_long)(
        ctypes.addressof(ctypes.c_char.from_buffer(code)))
    fn._code = code  # type: ignore[attr-defined]
    a = M.mach_vm_address_t(0)
    assert M.mach_vm_allocate(M.mach_task_self(), ctypes.byref(a), mmap.PAGESIZE, M.VM_FLAGS_ANYWHERE) == 0
    assert M.mach_vm_protect(M.mach_task_self(), a.value, mmap.PAGESIZE, 0, M.VM_PROT_READ) == 0
    return fn, a.value


def _target(ready_w: int, go_r: int, out_w: int, n: int, lift: bool) -> None:  # pragma: no cover - a child
    """The target's loop: n faulting stores, timed."""
    import ctypes
    import faulthandler
    import signal

    import pymach.mach as M
    faulthandler.disable()
    signal.signal(signal.SIGSEGV, signal.SIG_DFL)
    fn, page = _code_and_page()
    stop = None
    if lift:
        import pymach
        me = M.mach_task_self()

        def handler(exc: Any) -> bool:
            M.mach_vm_protect(me, page, mmap.PAGESIZE, 0, M.VM_PROT_READ | M.VM_PROT_WRITE)
            return True
        stop = pymach.catch_exceptions(None, pymach.EXC_MASK_BAD_ACCESS, handler)
    os.write(ready_w, struct.pack("<Q", page))
    os.read(go_r, 1)
    me = M.mach_task_self()
    t0 = time.perf_counter()
    for _ in range(n):
        fn(page, 1)
        if lift:
            M.mach_vm_protect(me, page, mmap.PAGESIZE, 0, M.VM_PROT_READ)
    took = time.perf_counter() - t0
    os.write(out_w, struct.pack("<d", took))
    if stop is not None:
        stop.close()
    del ctypes


def _bare_tracer(pid: int, ready_w: int) -> None:  # pragma: no cover - a child
    """A bare ptrace loop: skip every faulting store."""
    from .._linux.tracer import Tracer
    tr = Tracer(pid)
    tr.attach()
    os.write(ready_w, b"t")
    while True:
        try:
            st = tr.wait()
        except ChildProcessError:
            break
        if st is None:
            continue
        if st.kind == "exit":
            if st.tid == pid:
                break
            continue
        if st.fault:
            regs = tr.get_regs(st.tid)
            regs.rip += 3
            tr.set_regs(st.tid, regs)
            tr.resume(st, 0)
        else:
            tr.resume(st, st.signo if st.kind == "signal" else 0)


class _SkipHandler:
    def catch_mach_exception_raise_state(self, port: int, exception: int, code: list[int], flavor: int,
                                         old_state: list[int]) -> tuple[int, list[int]]:
        new = list(old_state)
        rip = (new[32] | new[33] << 32) + 3
        new[32], new[33] = rip & 0xFFFFFFFF, rip >> 32
        return flavor, new


def _run_case(case: str, n: int) -> float:
    """Seconds per fault of one case."""
    import pymach
    import pymach.mach as M
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the target
        try:
            _target(ready_w, go_r, out_w, n, case == "lift")
        finally:
            os._exit(0)
    tracer = 0
    catcher = None
    try:
        os.read(ready_r, 8)
        if case == "bare":
            tracer = os.fork()
            if tracer == 0:  # pragma: no cover
                try:
                    _bare_tracer(pid, ready_w)
                finally:
                    os._exit(0)
            os.read(ready_r, 1)
        elif case == "state":
            task = pymach.Task.for_pid(pid)
            catcher = _StateCatcher(task)
        os.write(go_w, b"g")
        took = struct.unpack("<d", os.read(out_r, 8))[0]
    finally:
        if catcher is not None:
            catcher.close()
        os.waitpid(pid, 0)
        if tracer:
            os.waitpid(tracer, 0)
        for fd in (ready_r, ready_w, go_r, go_w, out_r, out_w):
            os.close(fd)
    del M
    return float(took) / n


class _StateCatcher:
    """EXCEPTION_STATE to a handler here that skips the store."""

    def __init__(self, task: Any) -> None:
        import ctypes

        import pymach.mach as M
        from ..mig.exc import mach_exc_server
        self.M, self.task = M, task
        p = M.mach_port_t()
        M.mach_port_allocate(M.mach_task_self(), M.MACH_PORT_RIGHT_RECEIVE, ctypes.byref(p))
        M.mach_port_insert_right(M.mach_task_self(), p.value, p.value, M.MACH_MSG_TYPE_MAKE_SEND)
        self.port = p.value
        self.serving = mach_exc_server.serve(_SkipHandler(), self.port, poll_ms=50)
        kr = M.task_set_exception_ports(task.port, M.EXC_MASK_BAD_ACCESS, self.port,
                                        M.EXCEPTION_STATE | M.MACH_EXCEPTION_CODES, M.x86_THREAD_STATE64)
        if kr:
            raise M.MachError(kr, "task_set_exception_ports")

    def close(self) -> None:
        M = self.M
        M.task_set_exception_ports(self.task.port, M.EXC_MASK_BAD_ACCESS, 0, M.EXCEPTION_DEFAULT, 0)
        self.serving.stop()
        M.mach_port_destroy(M.mach_task_self(), self.port)
        self.task.close()


CASES = (("bare ptrace loop (Python): skip the store", "bare"),
         ("exception port, EXCEPTION_STATE: skip the store", "state"),
         ("exception port, in-task handler lifts the protection", "lift"))


def results(n: int, rounds: int) -> list[dict[str, object]]:
    """One block: each case's median ns per fault over ``rounds`` rounds,
    with its ratio to the bare loop and the faults per second."""
    samples: dict[str, list[float]] = {c: [] for c, _ in CASES}
    for r in range(rounds):
        order = CASES[r % len(CASES):] + CASES[:r % len(CASES)]
        for label, case in order:
            samples[label].append(_run_case(case, n))
    med = {c: statistics.median(s) for c, s in samples.items()}
    bare = med[CASES[0][0]]
    return [{"benchmark": "a fault, its handler and the resumed thread: exception ports against a bare ptrace loop",
             "stat": "median", "repeat": rounds, "ops": n,
             "rows": [{"case": c, "ns_per_op": med[c] * 1e9, "ratio": med[c] / bare,
                       "per_s": int(1 / med[c])} for c, _ in CASES]}]


if __name__ == "__main__":  # pragma: no cover
    print(results(int(sys.argv[1]) if len(sys.argv) > 1 else 200, 3))
