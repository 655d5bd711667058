"""pymach bench: each benchmark runs its peers in the same process and run,
and prints every figure with its ratio to the bare-syscall baseline.

Timing: each case runs ``n`` operations per sample, ``repeat`` samples; the
best sample is reported (the least disturbed by the rest of the machine).
The round trips and one-way messages of ``ipc`` are the exception: there
``repeat`` is a number of rounds, each round runs every case once in an
order rotated from round to round, and the median is reported, beside the
ratio to the raw socket and to multiprocessing.Pipe. ``ipc
--instructions`` and ``--syscalls`` count instead of timing (_callgrind).
Each block says what it took (``best of R x N``): some cases use fewer
operations per sample than ``-n`` (large reads, many rights, mappings of a
GiB), and say so.

Every timed call's result is checked, the baselines' as much as pymach's
(a kern_return_t, a byte count, a libc return value): a call that fails
stops the benchmark with an error, and no figure is printed for it.

``--busy N`` runs N processes that spin at the lowest priority (nice 19)
for the whole run, so that no core is idle: what a busy machine gives.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from typing import Any, Callable, Iterator

from .bench_ipc import BenchError, fail, kr_text

Case = tuple[str, Callable[[int], None]]


def _best_ns(fn: Callable[[int], None], n: int, repeat: int) -> float:
    fn(max(1, n // 10))  # warm up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def vm_cases() -> list[tuple[str, list[Case]]]:
    """Own-task VM: allocate+deallocate of one page, and protect."""
    from pymach import Task
    from pymach._linux import mm
    from pymach.mach import (FALSE, VM_FLAGS_ANYWHERE, VM_PROT_DEFAULT, VM_PROT_READ, byref, mach_task_self,
                             mach_vm_address_t, mach_vm_allocate, mach_vm_deallocate, mach_vm_protect,
                             vm_page_size)

    page = vm_page_size
    task = mach_task_self()
    map_failed = mm.MAP_FAILED

    def bare_mmap(n: int) -> None:
        mm_, mu = mm.raw_mmap, mm.raw_munmap
        for _ in range(n):
            p = mm_(None, page, 3, 0x22, -1, 0)
            if p == map_failed or mu(p, page):
                fail("ctypes mmap + munmap", f"errno {mm.get_errno()}")

    def py_mmap(n: int) -> None:
        python_mmap = mm.python_mmap()
        for _ in range(n):
            python_mmap(-1, page).close()  # raises when it fails

    def mach_alloc(n: int) -> None:
        a = mach_vm_address_t(0)
        ref = byref(a)
        for _ in range(n):
            kr = mach_vm_allocate(task, ref, page, VM_FLAGS_ANYWHERE) or mach_vm_deallocate(task, a, page)
            if kr:
                fail("mach_vm_allocate + mach_vm_deallocate", kr_text(kr))

    def task_alloc(n: int) -> None:
        t = Task.self()
        for _ in range(n):
            t.allocate(page).deallocate()  # raises MachError when it fails

    p = mm.raw_mmap(None, page, 3, 0x22, -1, 0)
    if p == map_failed:
        fail("protect one page", f"mmap: errno {mm.get_errno()}")

    def bare_mprotect(n: int) -> None:
        mp = mm.raw_mprotect
        for _ in range(n // 2):
            if mp(p, page, 1) or mp(p, page, 3):
                fail("ctypes mprotect", f"errno {mm.get_errno()}")

    a = mach_vm_address_t(0)
    kr = mach_vm_allocate(task, byref(a), page, VM_FLAGS_ANYWHERE)
    if kr:
        fail("protect one page", f"mach_vm_allocate: {kr_text(kr)}")
    addr = a.value

    def mach_protect(n: int) -> None:
        for _ in range(n // 2):
            kr = (mach_vm_protect(task, addr, page, FALSE, VM_PROT_READ)
                  or mach_vm_protect(task, addr, page, FALSE, VM_PROT_DEFAULT))
            if kr:
                fail("mach_vm_protect", kr_text(kr))

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


SUITES = ("vm", "ipc", "shm", "mig", "exc", "aio", "sem", "net")
PTRACE_OPS = 500  # ptrace sessions per sample (each stops the target for about 0.1 ms)

BIG = 256 << 20  # the large remote read


def _remote_target(big: int = BIG) -> tuple[int, int, int]:
    """Fork a process holding ``big`` bytes of written memory; (pid,
    address, write end of its hold pipe: closing it ends the child)."""
    from pymach._linux import files, mm, process
    r, w = files.pipe()
    hold_r, hold_w = files.pipe()
    pid = process.fork()
    if pid == 0:  # pragma: no cover - the target
        try:
            files.close(r)
            files.close(hold_w)
            addr = mm.mmap(0, big, mm.PROT_READ | mm.PROT_WRITE, mm.MAP_SHARED | mm.MAP_ANONYMOUS)
            mm.memset(addr, 0x5A, big)
            files.write(w, addr.to_bytes(8, "little"))
            files.read(hold_r, 1)
        finally:
            process.exit_now(0)
    files.close(w)
    files.close(hold_r)
    addr = int.from_bytes(files.read(r, 8), "little")
    files.close(r)
    return pid, addr, hold_w


def remote_read_cases(n: int, repeat: int, big: int = BIG) -> list[dict[str, Any]]:
    """mach_vm_read_overwrite from another task against process_vm_readv
    (ctypes) and pread of /proc/PID/mem, for 4 KiB and for 256 MiB."""
    from pymach._linux import files, mm, process
    from pymach.mach import byref, mach_port_deallocate, mach_port_t, mach_task_self, mach_vm_read_overwrite, \
        mach_vm_size_t, task_for_pid

    pvr, preadv = mm.raw_process_vm_readv, files.preadv
    pid, addr, hold = _remote_target(big)
    task = mach_port_t()
    mem = files.open(f"/proc/{pid}/mem", files.O_RDONLY)
    try:
        kr = task_for_pid(mach_task_self(), pid, byref(task))
        if kr:
            fail("remote read", f"task_for_pid: {kr_text(kr)}")
        out: list[dict[str, Any]] = []
        for size, count in ((4096, n), (big, max(3, repeat))):
            dst = mm.mmap(0, size, mm.PROT_READ | mm.PROT_WRITE, mm.MAP_SHARED | mm.MAP_ANONYMOUS)
            mm.memset(dst, 0, size)  # faulted in: we measure the copy, not our page faults
            local, remote = mm.iovec(dst, size), mm.iovec(addr, size)
            got = mach_vm_size_t()
            view = mm.view(dst, size)

            def bare(k: int) -> None:
                for _ in range(k):
                    if pvr(pid, byref(local), 1, byref(remote), 1, 0) != size:
                        fail("process_vm_readv", f"a short read (errno {mm.get_errno()})")

            def procmem(k: int) -> None:
                for _ in range(k):
                    if preadv(mem, [view], addr) != size:
                        fail("pread of /proc/PID/mem", "a short read")

            def mach(k: int) -> None:
                t = task.value
                for _ in range(k):
                    kr = mach_vm_read_overwrite(t, addr, size, dst, byref(got))
                    if kr:
                        fail("mach_vm_read_overwrite", kr_text(kr))

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
            view.release()
            mm.munmap(dst, size)
            what = "4 KiB" if size == 4096 else f"{size >> 20} MiB (GB/s; ratio of bandwidth)"
            out.append({"benchmark": f"remote read of {what}", "repeat": repeat, "ops": count, "rows": rows})
        return out
    finally:
        files.close(mem)
        if task.value:
            mach_port_deallocate(mach_task_self(), task)
        files.close(hold)
        process.reap(pid)


def ptrace_cases(n: int, repeat: int) -> list[dict[str, Any]]:
    """Remote control by ptrace (pymach._linux.ptrace, kern.vm_remote) on a
    ``sleep`` process: a session that only attaches, stops the thread,
    restores it and detaches; one that runs one system call (getpid) in
    it; each further call in the same session (a session of eleven calls,
    less one of one, over ten); vm_remote.protect of one page; and
    vm_remote.map_fd of one page of a memfd (its unmapping, another
    session, outside the clock). Every result is checked."""
    import subprocess

    from pymach._linux import files, mm
    from pymach._linux import ptrace
    from pymach._linux.pidfd import open_pid
    from pymach._kern import vm_remote

    page = mm.PAGE_SIZE
    target = subprocess.Popen(["sleep", "100000"])
    pidfd = open_pid(target.pid)
    memfd = mm.memfd("bench.ptrace", page)
    try:
        pid = target.pid
        deadline = time.monotonic() + 10
        while ptrace.proc_state(pid)[0] != "S":  # asleep in nanosleep, done starting
            if time.monotonic() > deadline:
                fail("ptrace", f"sleep (pid {pid}) never went to sleep")
            time.sleep(0.005)

        def sessions(calls: int) -> Callable[[int], None]:
            def run(k: int) -> None:
                for _ in range(k):
                    with ptrace.Session(pid, pidfd) as s:
                        for _c in range(calls):
                            if s.syscall(ptrace.SYS_getpid) != pid:
                                fail("ptrace session", "getpid in the target did not give its pid")
            return run

        addr = vm_remote.allocate(pid, pidfd, 0, page, True)

        def protect(k: int) -> None:
            for i in range(k):
                vm_remote.protect(pid, pidfd, addr, page, False, 1 if i % 2 else 3)  # raises MachError when it fails

        def map_fd(k: int) -> float:
            took = 0.0
            for _ in range(k):
                t0 = time.perf_counter_ns()
                a = vm_remote.map_fd(pid, pidfd, memfd, 0, page, 3, 1)  # VM_FLAGS_ANYWHERE; raises when it fails
                took += time.perf_counter_ns() - t0
                vm_remote.deallocate(pid, pidfd, a, page)
            return took / k

        bare = _best_ns(sessions(0), n, repeat)
        one = _best_ns(sessions(1), n, repeat)
        eleven = _best_ns(sessions(11), n, repeat)
        prot = _best_ns(protect, n, repeat)
        map_fd(max(1, n // 10))
        mapped = min(map_fd(n) for _ in range(repeat))
        # left asleep and untraced; a target just detached runs for a moment
        # before its nanosleep resumes (R), so the state gets a second to settle
        settle = time.monotonic() + 1.0
        while (state := ptrace.proc_state(pid)) != ("S", 0) and time.monotonic() < settle:
            time.sleep(0.005)
        if state != ("S", 0):
            fail("ptrace", f"the target was left {state}")
    finally:
        files.close(memfd)
        files.close(pidfd)
        target.kill()
        target.wait()
    rows = [("session: attach, stop, restore, detach", bare),
            ("session with one system call (getpid)", one),
            ("each further system call in a session", (eleven - one) / 10),
            ("vm_remote.protect of one page", prot),
            ("vm_remote.map_fd of one page", mapped)]
    return [{"benchmark": "remote control by ptrace, a sleep process", "repeat": repeat, "ops": n,
             "rows": [{"case": c, "ns_per_op": round(ns, 1), "ratio": None} for c, ns in rows]}]


def _shm_results(n: int, repeat: int, size: int) -> list[dict[str, Any]]:
    from . import bench_shm
    raw = bench_shm.raw_round(n, repeat)
    look = bench_shm.look_up(n, repeat)
    bare = bench_shm.best(bench_shm.map_touch_memfd, size)
    ours = bench_shm.best(bench_shm.map_touch_entry, size)
    return [
        {"benchmark": "bootstrap_look_up of a registered name", "repeat": repeat, "ops": n, "rows": [
            {"case": "raw SEQPACKET round trip, 128 B (baseline)", "ns_per_op": round(raw, 1), "ratio": 1.0},
            {"case": "bootstrap_look_up + mach_port_deallocate", "ns_per_op": round(look, 1),
             "ratio": round(look / raw, 2)},
        ]},
        {"benchmark": f"map and first touch of {size >> 20} MiB (one write per page)",
         "repeat": bench_shm.ROUNDS, "ops": 1, "rows": [
             {"case": "memfd_create + mmap (baseline, ms)", "ns_per_op": round(bare * 1e9, 1), "ratio": 1.0,
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
        results.append({"benchmark": title, "repeat": repeat, "ops": n, "rows": rows})
    return results


def _ipc_results(n: int, repeat: int, ool_sizes: list[int]) -> list[dict[str, Any]]:
    from . import bench_ipc
    results: list[dict[str, Any]] = []
    for block in bench_ipc.peer_blocks(n, repeat):
        cases: list[tuple[str, float | None]] = block["rows"]  # type: ignore[assignment]
        base, pipe = cases[0][1], cases[1][1]  # the raw socket, multiprocessing.Pipe
        assert base is not None and pipe is not None
        rows: list[dict[str, Any]] = []
        for label, ns in cases:
            if ns is None:
                rows.append({"case": label + " (not installed)", "ns_per_op": None, "ratio": None,
                             "ratio_pipe": None})
                continue
            row = {"case": label, "ns_per_op": round(ns, 1), "ratio": round(ns / base, 2),
                   "ratio_pipe": round(ns / pipe, 2)}
            if block["one_way"]:
                row["per_s"] = round(1e9 / ns)
            rows.append(row)
        results.append({"benchmark": block["benchmark"], "stat": "median", "repeat": block["repeat"],
                        "ops": block["ops"], "rows": rows})
    block = bench_ipc.rights_block(repeat)
    rights: list[tuple[str, float]] = block["rows"]  # type: ignore[assignment]
    results.append({"benchmark": block["benchmark"], "repeat": block["repeat"], "ops": block["ops"],
                    "rows": [{"case": label, "ns_per_op": round(ns, 1), "ratio": round(ns / rights[0][1], 2)}
                             for label, ns in rights]})
    for ool_size in ool_sizes:
        handoff, ours, bare = bench_ipc.ool_handoff(ool_size)
        results.append({"benchmark": f"out-of-line handoff of {ool_size >> 20} MiB (deallocate)",
                        "repeat": bench_ipc.OOL_ROUNDS, "ops": 1, "rows": [
            {"case": "send + receive (ms)", "ns_per_op": round(handoff * 1e9, 1), "ratio": None},
            {"case": "bare memfd mapping read (GB/s, baseline)", "ns_per_op": None, "gbps": round(bare, 3),
             "ratio": 1.0},
            {"case": "received mapping read (GB/s)", "ns_per_op": None, "gbps": round(ours, 3),
             "ratio": round(ours / bare, 2)},
        ]})
    return results


def _breakdown_results(n: int, repeat: int, ool_sizes: list[int], huge_dir: str | None) -> list[dict[str, Any]]:
    from . import bench_ipc
    rows = bench_ipc.message_pieces(n, repeat)
    base = rows[0][1]
    results: list[dict[str, Any]] = [{
        "benchmark": f"one {bench_ipc.ROUND} B message sent and received in one process, piece by piece",
        "repeat": repeat, "ops": n,
        "rows": [{"case": c, "ns_per_op": round(ns, 1), "ratio": round(ns / base, 2)} for c, ns in rows]}]
    for size in ool_sizes:
        results.append({"benchmark": f"out-of-line handoff of {size >> 20} MiB, step by step",
                        "repeat": bench_ipc.OOL_ROUNDS, "ops": 1,
                        "rows": [{"case": c, "ns_per_op": round(sec * 1e9, 1), "ratio": None}
                                 for c, sec in bench_ipc.handoff_pieces(size, huge_dir)]})
    return results


@contextlib.contextmanager
def _busy(count: int) -> Iterator[None]:
    """``count`` processes spinning at nice 19 for the duration."""
    from pymach._linux import process
    pids = []
    try:
        for _ in range(count):
            pid = process.fork()
            if pid == 0:  # pragma: no cover - the spinner
                try:
                    process.lowest_priority()
                    while True:
                        pass
                finally:
                    process.exit_now(0)
            pids.append(pid)
        yield
    finally:
        for pid in pids:
            process.kill(pid, process.SIGKILL)
            process.reap(pid)


def run(suite: str, n: int, repeat: int, as_json: bool, ool_sizes: list[int] | None = None,
        breakdown: bool = False, ptrace: bool = False, busy: int = 0, huge_dir: str | None = None) -> int:
    """Run one suite and print it. ``breakdown`` (ipc): the pieces of a
    message and the steps of an out-of-line handoff instead of the peers;
    ``ptrace`` (vm): remote control by ptrace instead of the VM calls."""
    with _busy(busy):
        if suite == "vm" and ptrace:
            results = ptrace_cases(min(n, PTRACE_OPS), repeat)
        elif suite == "vm":
            results = _vm_results(n, repeat) + remote_read_cases(n, repeat, (ool_sizes or [BIG])[0])
        elif suite == "shm":
            results = _shm_results(n, repeat, (ool_sizes or [1 << 30])[0])
        elif suite == "mig":
            from . import bench_mig
            results = bench_mig.results(n, repeat)
        elif suite == "exc":
            from . import bench_exc
            results = bench_exc.results(n, repeat)
        elif suite == "aio":
            from . import bench_aio
            results = bench_aio.results(n, repeat)
        elif suite == "sem":
            from . import bench_sem
            results = bench_sem.results(n, repeat)
        elif suite == "net":
            from . import bench_net
            results = bench_net.results(n, repeat, (ool_sizes or [bench_net.OOL])[0])
        elif breakdown:
            results = _breakdown_results(n, repeat, ool_sizes or [1 << 30], huge_dir)
        else:
            results = _ipc_results(n, repeat, ool_sizes or [1 << 30])
    if as_json:
        json.dump({"suite": suite, "n": n, "repeat": repeat, "busy": busy, "python": platform.python_version(),
                   "results": results}, sys.stdout, indent=2)
        print()
        return 0
    load = f", {busy} busy process{'es' if busy != 1 else ''} at nice 19" if busy else ""
    rounds = ""
    if any(r.get("stat") == "median" for r in results):
        from pymach._linux import process
        rounds = (f", {len(process.cpus())} CPUs; round trips and one-way: the median of {repeat} "
                  f"round{'s' if repeat != 1 else ''}, each round running every case once, in an order rotated "
                  "from round to round")
    print(f"pymach bench {suite}: Python {platform.python_version()}, {platform.machine()}{load}{rounds}")
    for r in results:
        if r.get("stat") == "median":
            took = f"median of {r['repeat']} round{'s' if r['repeat'] != 1 else ''} x {r['ops']}"
        elif r.get("stat") == "once" and r.get("net"):
            took = "one run"
        elif r.get("stat") == "once":
            took = f"one run, {r['ops']:,} requests"
        else:
            took = f"best of {r['repeat']}" + (f" x {r['ops']}" if r["ops"] > 1 else "")
        print(f"\n{r['benchmark']} ({took})")
        if r.get("note"):
            print(f"  {r['note']}")
        if r.get("net"):
            _print_net(r["rows"])
            continue
        if r["rows"] and "ratio_pipe" in r["rows"][0]:
            _print_peers(r["rows"])
            continue
        if r["rows"] and "server_fds_peak" in r["rows"][0]:
            for row in r["rows"]:
                print(f"  {row['case']}: {row['per_s']:,} requests/s ({row['requests']:,} in "
                      f"{row['seconds']:.2f} s); the server: {row['server_fds_peak']} fds at the peak "
                      f"({row['server_fds_before']} before), peak RSS {row['server_rss_peak_kib'] / 1024:.1f} MiB")
            continue
        print(f"  {'case':<46} {'ns/op':>10} {'ratio':>7}")
        for row in r["rows"]:
            if "ms" in row:
                print(f"  {row['case']:<46} {row['ms']:>10.3f} {row['ratio']:>6.2f}x")
            elif "gbps" in row:
                print(f"  {row['case']:<46} {row['gbps']:>10.3f} {row['ratio']:>6.2f}x")
            elif row["ns_per_op"] is None:
                print(f"  {row['case']:<46} {'-':>10}")
            elif row["case"].endswith("(ms)"):
                print(f"  {row['case']:<46} {row['ns_per_op'] / 1e6:>10.3f}")
            elif row["ratio"] is None:
                print(f"  {row['case']:<46} {row['ns_per_op']:>10.1f}")
            elif "per_s" in row:
                print(f"  {row['case']:<54} {row['ns_per_op']:>10.1f} {row['ratio']:>6.2f}x {row['per_s']:>8,}/s")
            else:
                print(f"  {row['case']:<46} {row['ns_per_op']:>10.1f} {row['ratio']:>6.2f}x")
    return 0


def _print_net(rows: list[dict[str, Any]]) -> None:
    """A block of bench net: round trips (ratios to raw TCP and to NATS),
    one-way messages (and per second), bandwidth (GB/s), the time to a
    dead name, or NATS messages per operation."""
    if "ms" in rows[0]:
        for row in rows:
            print(f"  {row['case']:<46} {row['ms']:>10.1f} ms")
    elif "msgs" in rows[0]:
        print(f"  {'case':<46} {'msgs/op':>10} {'bytes/op':>12}")
        for row in rows:
            print(f"  {row['case']:<46} {row['msgs']:>10.2f} {row['bytes']:>12,}")
    elif "ratio_nats" in rows[0]:
        print(f"  {'case':<46} {'ns/op':>10} {'vs TCP':>7} {'vs NATS':>8}")
        for row in rows:
            print(f"  {row['case']:<46} {row['ns_per_op']:>10.1f} {row['ratio']:>6.2f}x {row['ratio_nats']:>7.2f}x")
    elif "per_s" in rows[0]:
        print(f"  {'case':<46} {'ns/op':>10} {'ratio':>7} {'msg/s':>10}")
        for row in rows:
            print(f"  {row['case']:<46} {row['ns_per_op']:>10.1f} {row['ratio']:>6.2f}x {row['per_s']:>10,}")
    else:
        print(f"  {'case':<46} {'GB/s':>10} {'ratio':>7}")
        for row in rows:
            print(f"  {row['case']:<46} {row['gbps']:>10.3f} {row['ratio']:>6.2f}x")


def _print_peers(rows: list[dict[str, Any]]) -> None:
    """A block of peers: ns/op, the ratio to the raw socket and to
    multiprocessing.Pipe, and messages per second for one-way blocks."""
    one_way = any("per_s" in row for row in rows)
    print(f"  {'case':<50} {'ns/op':>10} {'vs raw':>7} {'vs Pipe':>8}" + (f" {'msg/s':>10}" if one_way else ""))
    for row in rows:
        if row["ns_per_op"] is None:
            print(f"  {row['case']:<50} {'-':>10}")
            continue
        line = f"  {row['case']:<50} {row['ns_per_op']:>10.1f} {row['ratio']:>6.2f}x {row['ratio_pipe']:>7.2f}x"
        if "per_s" in row:
            line += f" {row['per_s']:>10,}"
        print(line)


def count_run(mode: str, lengths: tuple[int, int] | None, cases: list[str] | None, as_json: bool) -> int:
    """``pymach bench ipc --instructions`` or ``--syscalls``: each in-process
    case (or those named in ``cases``) counted at two loop lengths (see
    _callgrind). Exit 2, with a message, when valgrind or strace is not
    installed."""
    from . import _callgrind
    missing = _callgrind.tool_missing(mode)
    if missing:
        print(f"pymach bench ipc --{mode}: {missing}; nothing was counted", file=sys.stderr)
        return 2
    n1, n2 = lengths or _callgrind.LENGTHS[mode]
    tool = _callgrind.tool_version(mode)
    rows = _callgrind.count(mode, (n1, n2), cases)
    per = {row["name"]: row["per_op"] for row in rows}
    base, pipe = per.get(_callgrind.CASES[0][0]), per.get(_callgrind.PIPE)
    for row in rows:
        row["ratio"] = round(row["per_op"] / base, 2) if base else None
        row["ratio_pipe"] = round(row["per_op"] / pipe, 2) if pipe else None
    if as_json:
        json.dump({"suite": "ipc", "mode": mode, "lengths": [n1, n2], "tool": tool,
                   "python": platform.python_version(), "rows": rows}, sys.stdout, indent=2)
        print()
        return 0
    what, unit = ("user-space instructions (callgrind Ir, every thread)", "Ir") if mode == "instructions" \
        else ("system calls (strace -f -c, every thread)", "calls")
    print(f"pymach bench ipc --{mode}: Python {platform.python_version()}, {platform.machine()}, {tool}")
    print(f"\n{what} per {_callgrind.ROUND} B send + receive in one process: "
          f"({unit}(N={n2}) - {unit}(N={n1})) / {n2 - n1}, each case in an interpreter of its own")

    def ratios(row: dict[str, Any]) -> str:
        return "".join(f" {x:>{w - 1}.2f}x" if x is not None else f" {'-':>{w}}"
                       for x, w in ((row["ratio"], 7), (row["ratio_pipe"], 8)))

    if mode == "instructions":
        print(f"  {'case':<50} {'instr/op':>10} {'vs raw':>7} {'vs Pipe':>8} {f'Ir(N={n1})':>15} "
              f"{f'Ir(N={n2})':>15}")
        for row in rows:
            a, b = row["counts"]
            print(f"  {row['case']:<50} {row['per_op']:>10,.0f}{ratios(row)} {a:>15,} {b:>15,}")
    else:
        print(f"  {'case':<50} {'calls/op':>10} {'vs raw':>7} {'vs Pipe':>8}  which")
        for row in rows:
            which = ", ".join(f"{k} {_num(v)}" for k, v in row["calls"].items())
            print(f"  {row['case']:<50} {row['per_op']:>10.2f}{ratios(row)}  {which}")
    return 0


def _num(x: float) -> str:
    """A per-operation count: whole when it is whole."""
    return str(round(x)) if abs(x - round(x)) < 0.005 else f"{x:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pymach bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("suite", choices=SUITES, help="what to measure")
    ap.add_argument("-n", type=int, help="operations per sample (default 20000; the round trips and one-way "
                                         "messages of ipc: 5000; aio: 2000 round trips, and n / 100 requests "
                                         "per echo client)")
    ap.add_argument("--repeat", type=int, default=7,
                    help="samples; the best is reported (ipc round trips and one-way: rounds; the median)")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--ool-mib", type=int, action="append",
                    help="size of the out-of-line handoff (ipc; repeat it for several sizes), of the "
                         "mapped memory entry (shm; default 1024), of the large remote read (vm; default 256) or of "
                         "the out-of-line messages across hosts (net; default 16)")
    ap.add_argument("--breakdown", action="store_true",
                    help="ipc: what one message costs, piece by piece, and the steps of the out-of-line handoff")
    ap.add_argument("--huge-dir", metavar="DIR",
                    help="ipc --breakdown: also time the handoff's munmap on a tmpfs mounted huge=always at DIR")
    ap.add_argument("--ptrace", action="store_true",
                    help=f"vm: remote control by ptrace (at most {PTRACE_OPS} sessions per sample)")
    ap.add_argument("--busy", type=int, default=0, metavar="N",
                    help="run N processes spinning at nice 19 meanwhile, so that no core is idle")
    ap.add_argument("--instructions", action="store_true",
                    help="ipc: user-space instructions per in-process send + receive, each case under valgrind's "
                         "callgrind at two loop lengths (see --lengths)")
    ap.add_argument("--syscalls", action="store_true",
                    help="ipc: system calls per in-process send + receive, each case under strace -f -c at two "
                         "loop lengths (see --lengths)")
    ap.add_argument("--lengths", metavar="N1,N2",
                    help="ipc --instructions, --syscalls: the two loop lengths (default 200,1200 for "
                         "--instructions, 2000,12000 for --syscalls)")
    ap.add_argument("--cases", metavar="NAME,...",
                    help="ipc --instructions, --syscalls: only these cases (raw, passcred, pipe, bare, mach, pythonic, "
                         "request)")
    a = ap.parse_args(argv)
    if a.n is None:
        a.n = (500 if a.suite == "exc" else 1000 if a.suite == "net" else 2000 if a.suite in ("aio", "sem")
               else 5000 if a.suite in ("ipc", "mig") and not a.breakdown else 20000)
    if a.n < 1 or a.repeat < 1 or a.busy < 0:
        ap.error("-n and --repeat must be at least 1, --busy at least 0")
    if a.breakdown and a.suite != "ipc" or a.ptrace and a.suite != "vm" or a.huge_dir and not a.breakdown:
        ap.error("--breakdown is for ipc, --ptrace for vm, --huge-dir for ipc --breakdown")
    count = "instructions" if a.instructions else "syscalls" if a.syscalls else None
    if count and (a.suite != "ipc" or a.breakdown or a.instructions and a.syscalls):
        ap.error("--instructions and --syscalls are for ipc, one at a time, without --breakdown")
    if (a.lengths or a.cases) and not count:
        ap.error("--lengths and --cases are for --instructions and --syscalls")
    lengths: tuple[int, int] | None = None
    if a.lengths:
        try:
            n1, n2 = (int(x) for x in a.lengths.split(","))
        except ValueError:
            ap.error(f"--lengths {a.lengths}: two numbers, N1,N2")
        if not 0 < n1 < n2:
            ap.error(f"--lengths {a.lengths}: need 0 < N1 < N2")
        lengths = (n1, n2)
    cases: list[str] | None = None
    if a.cases:
        from ._callgrind import CASES
        cases = a.cases.split(",")
        unknown = set(cases) - {c for c, _ in CASES}
        if unknown:
            ap.error(f"--cases: no case {', '.join(sorted(unknown))} (the cases: {', '.join(c for c, _ in CASES)})")
    if a.huge_dir is not None:
        from .bench_ipc import huge_pages_in
        if not huge_pages_in(a.huge_dir):
            ap.error(f"--huge-dir {a.huge_dir}: not on a tmpfs mounted with huge=always")
    default = [256] if a.suite == "vm" else [16] if a.suite == "net" else [1024]
    try:
        if count:
            return count_run(count, lengths, cases, a.json)
        return run(a.suite, a.n, a.repeat, a.json, [m << 20 for m in a.ool_mib or default],
                   a.breakdown, a.ptrace, a.busy, a.huge_dir)
    except KeyboardInterrupt:
        print(f"pymach bench {a.suite}: interrupted, no figure is reported", file=sys.stderr)
        return 130
    except (BenchError, OSError, EOFError) as e:  # (MachError is an OSError)
        what = str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"
        mode = f" --{count}" if count else ""
        print(f"pymach bench {a.suite}{mode}: FAILED, no figure is reported: {what}", file=sys.stderr)
        return 1
