"""pymach bench: each benchmark runs its peers in the same process and run,
and prints every figure with its ratio to the bare-syscall baseline.

Timing: each case runs ``n`` operations per sample, ``repeat`` samples; the
best sample is reported (the least disturbed by the rest of the machine).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import mmap
import os
import platform
import sys
import time
from typing import Any, Callable

Case = tuple[str, Callable[[int], None]]


def _best_ns(fn: Callable[[int], None], n: int, repeat: int) -> float:
    fn(max(1, n // 10))  # warm up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mprotect.restype = ctypes.c_int
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def vm_cases() -> list[tuple[str, list[Case]]]:
    """Own-task VM: allocate+deallocate of one page, and protect."""
    from pymach import Task
    from pymach.mach import (FALSE, VM_FLAGS_ANYWHERE, VM_PROT_DEFAULT, VM_PROT_READ, byref, mach_task_self,
                             mach_vm_address_t, mach_vm_allocate, mach_vm_deallocate, mach_vm_protect,
                             vm_page_size)

    libc = _libc()
    page = vm_page_size
    task = mach_task_self()

    def bare_mmap(n: int) -> None:
        mm_, mu = libc.mmap, libc.munmap
        for _ in range(n):
            p = mm_(None, page, 3, 0x22, -1, 0)
            mu(p, page)

    def py_mmap(n: int) -> None:
        for _ in range(n):
            mmap.mmap(-1, page).close()

    def mach_alloc(n: int) -> None:
        a = mach_vm_address_t(0)
        ref = byref(a)
        for _ in range(n):
            mach_vm_allocate(task, ref, page, VM_FLAGS_ANYWHERE)
            mach_vm_deallocate(task, a, page)

    def task_alloc(n: int) -> None:
        t = Task.self()
        for _ in range(n):
            t.allocate(page).deallocate()

    p = libc.mmap(None, page, 3, 0x22, -1, 0)

    def bare_mprotect(n: int) -> None:
        mp = libc.mprotect
        for _ in range(n // 2):
            mp(p, page, 1)
            mp(p, page, 3)

    a = mach_vm_address_t(0)
    mach_vm_allocate(task, byref(a), page, VM_FLAGS_ANYWHERE)
    addr = a.value

    def mach_protect(n: int) -> None:
        for _ in range(n // 2):
            mach_vm_protect(task, addr, page, FALSE, VM_PROT_READ)
            mach_vm_protect(task, addr, page, FALSE, VM_PROT_DEFAULT)

    return [
        ("allocate + deallocate one page", [
            ("ctypes mmap + munmap (baseline)", bare_mmap),
            ("mmap.mmap(-1) + close", py_mmap),
            ("mach_vm_allocate + mach_vm_deallocate", mach_alloc),
            ("Task.allocate + Region.deallocate", task_alloc),
        ]),
        ("protect one page", [
            ("ctypes mprotect (baseline)", bare_mprotect),
            ("mach_vm_protect", mach_protect),
        ]),
    ]


SUITES = ("vm", "ipc", "shm")

BIG = 256 << 20  # the large remote read


def _remote_target(big: int = BIG) -> tuple[int, int, int]:
    """Fork a process holding ``big`` bytes of written memory; (pid,
    address, write end of its hold pipe: closing it ends the child)."""
    r, w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the target
        try:
            os.close(r)
            os.close(hold_w)
            m = mmap.mmap(-1, big)
            m.write(b"\x5a" * big)
            addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
            os.write(w, addr.to_bytes(8, "little"))
            os.read(hold_r, 1)
        finally:
            os._exit(0)
    os.close(w)
    os.close(hold_r)
    addr = int.from_bytes(os.read(r, 8), "little")
    os.close(r)
    return pid, addr, hold_w


def remote_read_cases(n: int, repeat: int, big: int = BIG) -> list[dict[str, Any]]:
    """mach_vm_read_overwrite from another task against process_vm_readv
    (ctypes) and pread of /proc/PID/mem, for 4 KiB and for 256 MiB."""
    from pymach.mach import byref, mach_port_deallocate, mach_port_t, mach_task_self, mach_vm_read_overwrite, \
        mach_vm_size_t, task_for_pid

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    class iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
    pvr = libc.process_vm_readv
    pvr.restype = ctypes.c_ssize_t
    pid, addr, hold = _remote_target(big)
    task = mach_port_t()
    mem = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        if task_for_pid(mach_task_self(), pid, byref(task)):
            raise RuntimeError("task_for_pid refused")
        out: list[dict[str, Any]] = []
        for size, count in ((4096, n), (big, max(3, repeat))):
            buf = mmap.mmap(-1, size)
            buf.write(b"\0" * size)  # faulted in: we measure the copy, not our page faults
            dst = ctypes.addressof(ctypes.c_char.from_buffer(buf))
            local, remote = iovec(dst, size), iovec(addr, size)
            got = mach_vm_size_t()
            view = memoryview(buf)

            def bare(k: int) -> None:
                for _ in range(k):
                    pvr(pid, byref(local), 1, byref(remote), 1, 0)

            def procmem(k: int) -> None:
                for _ in range(k):
                    os.preadv(mem, [view], addr)

            def mach(k: int) -> None:
                t = task.value
                for _ in range(k):
                    mach_vm_read_overwrite(t, addr, size, dst, byref(got))

            rows = []
            base = None
            for label, fn in (("process_vm_readv, ctypes (baseline)", bare), ("pread of /proc/PID/mem", procmem),
                              ("mach_vm_read_overwrite", mach)):
                ns = _best_ns(fn, count, repeat)
                base = base or ns
                row: dict[str, Any] = {"case": label, "ns_per_op": round(ns, 1), "ratio": round(ns / base, 2)}
                if size == big:
                    row["gbps"] = round(size / ns, 3)
                    row["ratio"] = round(base / ns, 2)  # bandwidth: higher is better
                rows.append(row)
            del view
            buf.close()
            what = "4 KiB" if size == 4096 else f"{size >> 20} MiB (GB/s; ratio of bandwidth)"
            out.append({"benchmark": f"remote read of {what}", "rows": rows})
        return out
    finally:
        os.close(mem)
        if task.value:
            mach_port_deallocate(mach_task_self(), task)
        os.close(hold)
        os.waitpid(pid, 0)


def _shm_results(n: int, repeat: int, size: int) -> list[dict[str, Any]]:
    from . import bench_shm
    raw = bench_shm.raw_round(n, repeat)
    look = bench_shm.look_up(n, repeat)
    bare = bench_shm.best(bench_shm.map_touch_memfd, size)
    ours = bench_shm.best(bench_shm.map_touch_entry, size)
    return [
        {"benchmark": "bootstrap_look_up of a registered name", "rows": [
            {"case": "raw SEQPACKET round trip, 128 B (baseline)", "ns_per_op": round(raw, 1), "ratio": 1.0},
            {"case": "bootstrap_look_up + mach_port_deallocate", "ns_per_op": round(look, 1),
             "ratio": round(look / raw, 2)},
        ]},
        {"benchmark": f"map and first touch of {size >> 20} MiB (one write per page)", "rows": [
            {"case": "memfd + mmap (baseline, ms)", "ns_per_op": round(bare * 1e9, 1), "ratio": 1.0,
             "ms": round(bare * 1e3, 3)},
            {"case": "MemoryEntry.create + map (ms)", "ns_per_op": round(ours * 1e9, 1),
             "ratio": round(ours / bare, 2), "ms": round(ours * 1e3, 3)},
        ]},
    ]


def _vm_results(n: int, repeat: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for title, cases in vm_cases():
        base = None
        rows = []
        for label, fn in cases:
            ns = _best_ns(fn, n, repeat)
            base = base or ns
            rows.append({"case": label, "ns_per_op": round(ns, 1), "ratio": round(ns / base, 2)})
        results.append({"benchmark": title, "rows": rows})
    return results


def _ipc_results(n: int, repeat: int, ool_sizes: list[int]) -> list[dict[str, Any]]:
    from . import bench_ipc
    results: list[dict[str, Any]] = []
    for block in bench_ipc.cases(n, repeat):
        rows = []
        base = None
        for label, ns in block["rows"]:  # type: ignore[attr-defined]
            if ns is None:
                rows.append({"case": label + " (not installed)", "ns_per_op": None, "ratio": None})
                continue
            base = base or ns
            rows.append({"case": label, "ns_per_op": round(ns, 1), "ratio": round(ns / base, 2)})
        results.append({"benchmark": block["benchmark"], "rows": rows})
    for ool_size in ool_sizes:
        handoff, ours, bare = bench_ipc.ool_handoff(ool_size)
        results.append({"benchmark": f"out-of-line handoff of {ool_size >> 20} MiB (deallocate)", "rows": [
            {"case": "send + receive (ms)", "ns_per_op": round(handoff * 1e9, 1), "ratio": None},
            {"case": "bare memfd mapping read (GB/s, baseline)", "ns_per_op": None, "gbps": round(bare, 3),
             "ratio": 1.0},
            {"case": "received mapping read (GB/s)", "ns_per_op": None, "gbps": round(ours, 3),
             "ratio": round(ours / bare, 2)},
        ]})
    return results


def run(suite: str, n: int, repeat: int, as_json: bool, ool_sizes: list[int] | None = None) -> int:
    if suite == "vm":
        results = _vm_results(n, repeat) + remote_read_cases(n, repeat, (ool_sizes or [BIG])[0])
    elif suite == "shm":
        results = _shm_results(n, repeat, (ool_sizes or [1 << 30])[0])
    else:
        results = _ipc_results(n, repeat, ool_sizes or [1 << 30])
    if as_json:
        json.dump({"suite": suite, "n": n, "repeat": repeat, "python": platform.python_version(),
                   "results": results}, sys.stdout, indent=2)
        print()
        return 0
    print(f"pymach bench {suite}: best of {repeat} x {n} ops, Python {platform.python_version()}, "
          f"{platform.machine()}")
    for r in results:
        print(f"\n{r['benchmark']}")
        print(f"  {'case':<42} {'ns/op':>10} {'ratio':>7}")
        for row in r["rows"]:
            if "ms" in row:
                print(f"  {row['case']:<42} {row['ms']:>10.3f} {row['ratio']:>6.2f}x")
            elif "gbps" in row:
                print(f"  {row['case']:<42} {row['gbps']:>10.3f} {row['ratio']:>6.2f}x")
            elif row["ns_per_op"] is None:
                print(f"  {row['case']:<42} {'-':>10}")
            elif row["ratio"] is None:
                print(f"  {row['case']:<42} {row['ns_per_op'] / 1e6:>10.3f}")
            else:
                print(f"  {row['case']:<42} {row['ns_per_op']:>10.1f} {row['ratio']:>6.2f}x")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pymach bench", description=__doc__)
    ap.add_argument("suite", choices=SUITES, help="what to measure")
    ap.add_argument("-n", type=int, default=20000, help="operations per sample")
    ap.add_argument("--repeat", type=int, default=7, help="samples; the best is reported")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--ool-mib", type=int, action="append",
                    help="size of the out-of-line handoff (ipc; repeat it for several sizes), of the "
                         "mapped memory entry (shm; default 1024) or of the large remote read (vm; default 256)")
    a = ap.parse_args(argv)
    default = [256] if a.suite == "vm" else [1024]
    return run(a.suite, a.n, a.repeat, a.json, [m << 20 for m in a.ool_mib or default])
