"""pymach bench exc: a fault caught, answered and retried, against the same
round trip done by a bare ptrace loop in Python, in the same run.

Each case runs a target process that calls a 4-byte function (``mov
[rdi], rsi; ret``) on a page it cannot write, ``n`` times, and times the
loop itself (the time from each fault to the resumed thread, plus the
call):

- **bare ptrace loop**: a Python tracer process that waits for the stop,
  reads the registers, moves rip past the store, and continues: the least
  any tracer does;
- **exception port, new state**: pymach's exception tracer sends
  mach_exception_raise_state_identity to a handler in another process
  (pymach.catch_exceptions), which answers with rip moved past the store:
  the same work, through Mach;
- **exception port, lifting the protection**: the issue's round trip as
  vm_protect_caught does it: a handler thread of the target itself lifts
  the protection (mach_vm_protect) and answers KERN_SUCCESS; the store
  runs again and succeeds, and the loop protects the page again each time.

Each round runs every case once, in an order rotated from round to round;
each figure is the median of the rounds, with its ratio to the bare loop
and the faults handled per second."""

from __future__ import annotations

import statistics
import struct
import sys
import time
from typing import Any

from .._linux import files, process
from .._linux.tracer import store_function

PAGE = 4096


def _code_and_page() -> tuple[Any, int]:
    """The store function and a page it faults on (read-only)."""
    import pymach
    task = pymach.Task.self()
    page = task.allocate(PAGE).address
    task.protect(page, PAGE, pymach.VM_PROT_READ)
    return store_function(), page


def _target(ready_w: int, go_r: int, out_w: int, n: int, lift: bool) -> None:  # pragma: no cover - a child
    """The target's loop: n faulting stores, timed."""
    import pymach
    fn, page = _code_and_page()
    task = pymach.Task.self()
    stop = None
    if lift:
        def handler(exc: Any) -> bool:
            task.protect(page, PAGE, pymach.VM_PROT_DEFAULT)
            return True
        stop = pymach.catch_exceptions(task, pymach.EXC_MASK_BAD_ACCESS, handler)
    files.write(ready_w, struct.pack("<Q", page))
    files.read(go_r, 1)
    t0 = time.perf_counter()
    for _ in range(n):
        fn(page, 1)
        if lift:
            task.protect(page, PAGE, pymach.VM_PROT_READ)
    took = time.perf_counter() - t0
    files.write(out_w, struct.pack("<d", took))
    if stop is not None:
        stop.close()


def _bare_tracer(pid: int, ready_w: int) -> None:  # pragma: no cover - a child
    """A bare ptrace loop: skip every faulting store."""
    from .._linux.tracer import Tracer
    tr = Tracer(pid)
    tr.attach()
    files.write(ready_w, b"t")
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


def _skip_store(exc: Any) -> dict[str, int]:
    """The handler of the EXCEPTION_STATE-like case: the new rip is past the store."""
    return {"rip": exc.state["rip"] + 3}


def _run_case(case: str, n: int) -> float:
    """Seconds per fault of one case."""
    import pymach
    ready_r, ready_w = files.pipe()
    go_r, go_w = files.pipe()
    out_r, out_w = files.pipe()
    pid = process.fork()
    if pid == 0:  # pragma: no cover - the target
        try:
            _target(ready_w, go_r, out_w, n, case == "lift")
        finally:
            process.exit_now(0)
    tracer = 0
    catcher = None
    target = None
    try:
        files.read(ready_r, 8)
        if case == "bare":
            tracer = process.fork()
            if tracer == 0:  # pragma: no cover
                try:
                    _bare_tracer(pid, ready_w)
                finally:
                    process.exit_now(0)
            files.read(ready_r, 1)
        elif case == "state":
            target = pymach.Task.for_pid(pid)
            catcher = pymach.catch_exceptions(target, pymach.EXC_MASK_BAD_ACCESS, _skip_store)
        files.write(go_w, b"g")
        took = struct.unpack("<d", files.read(out_r, 8))[0]
    finally:
        if catcher is not None:
            catcher.close()
        if target is not None:
            target.close()
        process.reap(pid)
        if tracer:
            process.reap(tracer)
        files.close_all([ready_r, ready_w, go_r, go_w, out_r, out_w])
    return float(took) / n


CASES = (("bare ptrace loop (Python): skip the store", "bare"),
         ("exception port, new state: skip the store", "state"),
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
