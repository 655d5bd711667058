"""pymach bench checks what it times: a benchmark whose timed call fails
stops with an error that names the call, exits 1 and prints no figure (a
failing call would otherwise be timed as a fast one). Each suite, and the
``--breakdown`` and ``--ptrace`` modes, also runs to the end with a tiny
operation count, each block saying what it took. ``bench ipc`` prints each
peer's median with its ratio to the raw socket and to multiprocessing.Pipe,
and says which peers are not installed; ``--instructions`` and
``--syscalls`` give a count per case, or no figure when a counted case
fails.

Faults are injected in a separate interpreter (``python -c``) that replaces
one call with a version failing once, then runs ``pymach bench``; the
servers the benchmark forks inherit the replacement, so a failure on
either side of a round trip is covered. The counted cases of
``--instructions`` and ``--syscalls`` run in interpreters of their own:
there a ``sitecustomize`` module on PYTHONPATH makes the replacement, only
in the interpreter that valgrind or strace runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from machutil import private_bootstrap

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 240  # seconds: a bound only, against a benchmark that hangs


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, str]]:
    """A private bootstrap server (bench shm registers and looks up a
    name), run from this checkout as the benchmarks are; the environment
    that reaches it."""
    with private_bootstrap(PYTHONPATH=str(ROOT / "src")):
        yield dict(os.environ)


# A function of the benchmark's, wrapped so that its Nth call fails: NAME
# (an attribute of MODULE) returns FAILED (or raises it, if it is an
# exception) instead of doing its work. The counter is per process: a
# forked server counts on from the value it had at the fork.
INJECT = """
import importlib, sys
mod = importlib.import_module(sys.argv[1])
name, nth, failed = sys.argv[2], int(sys.argv[3]), eval(sys.argv[4])
real = getattr(mod, name)
calls = [0]
def once(*args, **kw):
    calls[0] += 1
    if calls[0] == nth:
        if isinstance(failed, BaseException):
            raise failed
        return failed
    return real(*args, **kw)
setattr(mod, name, once)
from pymach.tools.bench import main
sys.exit(main(sys.argv[5:]))
"""


def bench(env: dict[str, str], *args: str, inject: tuple[str, str, int, str] | None = None) -> \
        subprocess.CompletedProcess[str]:
    if inject is None:
        cmd = [sys.executable, "-m", "pymach", "bench", *args]
    else:
        module, name, nth, failed = inject
        cmd = [sys.executable, "-c", INJECT, module, name, str(nth), failed, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


FIGURE = re.compile(r"^  \S.*\s-?\d+\.\d+(\s+-?\d+\.\d+x)*(\s+[\d,]+)?$", re.M)
CPU = max(os.sched_getaffinity(0))  # where bench ipc pins its pinned cases


def figures(out: str) -> list[str]:
    return [m.group(0) for m in FIGURE.finditer(out)]


def expect_failure(p: subprocess.CompletedProcess[str], names: str) -> None:
    """Exit 1, the failed call named on stderr, and no figure for its block."""
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr[-2000:])
    line = p.stderr.strip().splitlines()[-1]
    assert "FAILED, no figure is reported" in line and re.search(names, line), p.stderr[-2000:]
    assert p.stdout == "", p.stdout  # the figures are printed once every case has passed


# -- a tiny run of each completes ---------------------------------------------------------------

@pytest.mark.parametrize("args, blocks", [
    (["vm", "-n", "40", "--repeat", "2", "--ool-mib", "4"],
     ["allocate + deallocate one page (best of 2 x 40)", "protect one page (best of 2 x 40)",
      "remote read of 4 KiB (best of 2 x 40)", "remote read of 4 MiB (GB/s; ratio of bandwidth) (best of 2 x 3)"]),
    (["vm", "--ptrace", "-n", "5", "--repeat", "1"],
     ["remote control by ptrace, a sleep process (best of 1 x 5)"]),
    (["shm", "-n", "20", "--repeat", "1", "--ool-mib", "4"],
     ["bootstrap_look_up of a registered name (best of 1 x 20)",
      "map and first touch of 4 MiB (one write per page) (best of 3)"]),
    (["ipc", "-n", "20", "--repeat", "2", "--ool-mib", "4"],
     [f"request/reply round trip, 64 B, both processes on CPU {CPU} (median of 2 rounds x 20)",
      "request/reply round trip, 64 B, unpinned (median of 2 rounds x 20)",
      f"one-way messages, 64 B, both processes on CPU {CPU} (median of 2 rounds x 20)",
      "one-way messages, 64 B, unpinned (median of 2 rounds x 20)",
      "send rights in one message, sent and received (best of 2 x 10)",
      "out-of-line handoff of 4 MiB (deallocate) (best of 3)"]),
    (["ipc", "--breakdown", "-n", "50", "--repeat", "1", "--ool-mib", "4"],
     ["one 64 B message sent and received in one process, piece by piece (best of 1 x 50)",
      "out-of-line handoff of 4 MiB, step by step (best of 3)"]),
], ids=["vm", "vm-ptrace", "shm", "ipc", "ipc-breakdown"])
def test_a_tiny_run_completes_and_each_block_says_what_it_took(env: dict[str, str], args: list[str],
                                                               blocks: list[str]) -> None:
    p = bench(env, *args)
    assert p.returncode == 0, p.stderr[-3000:]
    titles = [line for line in p.stdout.splitlines() if line and not line.startswith(" ")][1:]
    assert titles == blocks, p.stdout
    assert figures(p.stdout), p.stdout


# -- a failing call is reported, not timed --------------------------------------------------------

KR_FAIL = "0x10000003"  # MACH_SEND_INVALID_DEST: any kern_return_t but KERN_SUCCESS


@pytest.mark.parametrize("inject, names", [
    # a mach_msg of the round trip (client or forked server), after the raw peers ran
    (("pymach.mach", "mach_msg", 40, KR_FAIL), r"pymach round trip: (mach_msg|the server process exited)"),
    (("pymach.mach", "mach_vm_allocate", 30, "3"), r"mach_vm_allocate \+ mach_vm_deallocate: .*\(0x3\)"),
    (("pymach.mach", "mach_vm_protect", 30, "2"), r"mach_vm_protect: .*\(0x2\)"),
    (("pymach.mach", "mach_vm_read_overwrite", 20, "1"), r"mach_vm_read_overwrite: .*\(0x1\)"),
    (("pymach.mach", "bootstrap_look_up", 10, "1102"), r"bootstrap_look_up: .*"),
    (("pymach.mach", "mach_port_deallocate", 12, "15"), r"mach_port_deallocate: .*\(0xf\)"),
    (("pymach.mach", "mach_port_mod_refs", 30, "17"), r"send rights in one message: releasing a received right"),
    (("pymach._linux.ptrace", "Session", 3, "PermissionError(1, 'injected')"), r"PermissionError: .*injected"),
    (("pymach._kern.vm_remote", "protect", 3, "OSError(5, 'injected')"), r"OSError: .*injected"),
    (("pymach.mach", "mach_msg", 30, KR_FAIL), r"message pieces: mach_msg (send|receive)"),
    # pymach.request() gives back 64 bytes and the right id, but not the server's reply
    (("pymach", "request", 10, "mod.Message(b'y' * 64, id=0x1C0)"),
     r"pymach round trip \(request\): a message that is not the reply"),
], ids=["ipc-mach_msg", "vm-allocate", "vm-protect", "vm-remote-read", "shm-look-up", "shm-deallocate",
        "ipc-many-rights", "ptrace-session", "ptrace-protect", "ipc-breakdown", "ipc-request-content"])
def test_a_failing_call_is_reported_not_timed(env: dict[str, str], inject: tuple[str, str, int, str],
                                              names: str) -> None:
    suite = {"vm-": ["vm", "-n", "100", "--repeat", "1", "--ool-mib", "4"],
             "shm": ["shm", "-n", "20", "--repeat", "1", "--ool-mib", "4"],
             "ipc": ["ipc", "-n", "20", "--repeat", "1", "--ool-mib", "4"]}
    name = inject[1]
    if name in ("mach_msg", "mach_port_mod_refs", "request"):
        args = suite["ipc"]
    elif name in ("bootstrap_look_up", "mach_port_deallocate"):
        args = suite["shm"]
    else:
        args = suite["vm-"]
    if names.startswith("message pieces"):
        args = ["ipc", "--breakdown", "-n", "20", "--repeat", "1", "--ool-mib", "4"]
    if inject[0] not in ("pymach.mach", "pymach"):
        args = ["vm", "--ptrace", "-n", "5", "--repeat", "1"]
    expect_failure(bench(env, *args, inject=inject), names)


BASELINE = """
import sys
import pymach._kern.vm_map  # binds the real mprotect for mach_vm_protect first
from pymach._linux import mm
from pymach.tools import bench
real, calls = mm.raw_mprotect, 0
def mprotect(*args):
    global calls
    calls += 1
    return -1 if calls == 25 else real(*args)
mm.raw_mprotect = mprotect  # the baseline's bare binding
sys.exit(bench.main(sys.argv[1:]))
"""


def test_the_baselines_are_checked_too(env: dict[str, str]) -> None:
    """The bare libc calls are checked as pymach's are: a comparison is fair
    only if both sides pay for the same checks."""
    p = subprocess.run([sys.executable, "-c", BASELINE, "vm", "-n", "100", "--repeat", "1", "--ool-mib", "4"],
                       env=env, capture_output=True, text=True, timeout=TIMEOUT)
    expect_failure(p, r"ctypes mprotect: errno")


# -- bench ipc: the peers' table -------------------------------------------------------------------

PYZMQ = ["pyzmq PAIR, ipc://", "pyzmq REQ/REP, ipc://", "pyzmq PUSH/PULL, ipc://"]
PEER_HEAD = re.compile(r"^  case\s+ns/op\s+vs raw\s+vs Pipe(\s+msg/s)?$")
PEER_ROW = re.compile(r"^  (?P<case>\S.*?)\s+(?P<ns>\d+\.\d)\s+(?P<raw>\d+\.\d\d)x\s+(?P<pipe>\d+\.\d\d)x"
                      r"(\s+(?P<per_s>[\d,]+))?$")


def peer_blocks(out: str) -> dict[str, list[str]]:
    """{title: its lines} for the round-trip and one-way blocks."""
    blocks: dict[str, list[str]] = {}
    for chunk in out.split("\n\n")[1:]:
        title, *lines = chunk.strip("\n").splitlines()
        if title.startswith(("request/reply round trip", "one-way messages")):
            blocks[title] = lines
    return blocks


def test_bench_ipc_prints_each_peer_with_its_ratio_to_the_raw_socket_and_to_pipe(env: dict[str, str],
                                                                                 tmp_path: Path) -> None:
    """One run: four blocks (round trip and one-way, pinned and unpinned),
    each row with ns/op and both ratios (one-way rows also messages per
    second), medians said in the header line; a peer that cannot be
    imported (here pyzmq, hidden by a module that raises ImportError) is
    printed as not installed, with no figure."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "zmq.py").write_text("raise ImportError('hidden from this test')\n")
    e = dict(env, PYTHONPATH=os.pathsep.join([str(hide), env["PYTHONPATH"]]))
    p = bench(e, "ipc", "-n", "20", "--repeat", "3", "--ool-mib", "4")
    assert p.returncode == 0, p.stderr[-3000:]
    head = p.stdout.splitlines()[0]
    assert "the median of 3 rounds, each round running every case once, in an order rotated" in head, head
    blocks = peer_blocks(p.stdout)
    assert len(blocks) == 4, p.stdout
    for title, lines in blocks.items():
        assert title.endswith("(median of 3 rounds x 20)"), title
        assert PEER_HEAD.match(lines[0]), lines[0]
        rows, absent = {}, []
        for line in lines[1:]:
            if "(not installed)" in line:
                m = re.match(r"^  (\S.*) \(not installed\)\s+-$", line)
                assert m, line
                absent.append(m.group(1))
                continue
            m = PEER_ROW.match(line)
            assert m, line
            assert (m.group("per_s") is not None) == title.startswith("one-way"), line
            rows[m.group("case")] = m
        # pyzmq is hidden; faster-fifo and iceoryx2 are there when the bench extra is installed
        assert set(PYZMQ[2:] if title.startswith("one-way") else PYZMQ[:2]) <= set(absent), absent
        assert all(c.startswith(("pyzmq", "faster-fifo", "iceoryx2")) for c in absent), absent
        assert rows["raw SEQPACKET socketpair (baseline)"].group("raw") == "1.00"
        assert rows["multiprocessing.Pipe"].group("pipe") == "1.00"
        assert any(c.startswith("pymach.mach mach_msg") for c in rows), rows.keys()
        assert not any(c.startswith("pyzmq") for c in rows), rows.keys()
        for m in rows.values():  # each ratio is this row's figure over the baseline's
            ns = float(m.group("ns"))
            base = float(rows["raw SEQPACKET socketpair (baseline)"].group("ns"))
            assert abs(float(m.group("raw")) - ns / base) <= 0.006, m.group(0)


# -- bench ipc --instructions and --syscalls --------------------------------------------------------

def counted(env: dict[str, str], *args: str) -> dict[str, dict[str, object]]:
    p = bench(env, "ipc", *args, "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(p.stdout)
    return {row["name"]: row for row in doc["rows"]}


INSTR_ROW = re.compile(r"^  (?P<case>\S.*?)\s+(?P<per>[\d,]+)\s+(?P<raw>\d+\.\d\d)x\s+(?P<pipe>\d+\.\d\d)x"
                       r"\s+(?P<a>[\d,]+)\s+(?P<b>[\d,]+)$", re.M)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instructions_gives_a_count_per_case(env: dict[str, str]) -> None:
    """Two cases under callgrind (each run takes seconds there): a count
    per operation for each, (Ir(N2) - Ir(N1)) / (N2 - N1) from two totals
    that grew with the loop, and its ratio to the raw socket and to
    multiprocessing.Pipe."""
    p = bench(env, "ipc", "--instructions", "--lengths", "4,12", "--cases", "raw,pipe")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "(Ir(N=12) - Ir(N=4)) / 8" in p.stdout, p.stdout
    rows = {m.group("case"): m for m in INSTR_ROW.finditer(p.stdout)}
    assert list(rows) == ["raw SEQPACKET socketpair send + recv (baseline)",
                          "multiprocessing.Pipe send_bytes + recv_bytes"], p.stdout
    per = {}
    for case, m in rows.items():
        a, b = (int(m.group(k).replace(",", "")) for k in "ab")
        assert b > a > 0 and m.group("per") == f"{(b - a) / 8:,.0f}", m.group(0)
        per[case] = (b - a) / 8
    raw, pipe = per.values()
    assert rows["multiprocessing.Pipe send_bytes + recv_bytes"].group("raw") == f"{pipe / raw:.2f}"
    assert rows["raw SEQPACKET socketpair send + recv (baseline)"].group("pipe") == f"{raw / pipe:.2f}"


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_syscalls_gives_a_count_per_case(env: dict[str, str]) -> None:
    """Every case under strace -f -c: system calls per operation, and
    which; the raw socket makes one send and one receive."""
    rows = counted(env, "--syscalls", "--lengths", "50,250")
    assert list(rows) == ["raw", "passcred", "pipe", "bare", "mach", "pythonic", "request", "mig_hand", "mig"]
    assert all(isinstance(row["per_op"], float) and row["per_op"] > 0 for row in rows.values())
    assert rows["raw"]["calls"] == {"sendto": 1.0, "recvfrom": 1.0}
    assert rows["passcred"]["calls"] == {"sendto": 1.0, "recvmsg": 1.0}
    assert rows["bare"]["calls"] == {"sendto": 1.0, "recvmsg": 1.0}
    # a port with one connection is read without an epoll_wait
    for case in ("mach", "pythonic"):
        assert "epoll_wait" not in rows[case]["calls"] and rows[case]["calls"]["recvmsg"] == 1.0, rows[case]
    assert rows["raw"]["ratio"] == 1.0 and rows["pipe"]["ratio_pipe"] == 1.0


# Installed as sitecustomize in the counted interpreters: the Nth call of
# MODULE.NAME fails, only in an interpreter that valgrind or strace runs
# (the uncounted check run before them passes).
COUNTED_FAULT = """
import importlib, os
counted = "vgpreload" in os.environ.get("LD_PRELOAD", "") or \\
    open("/proc/self/status").read().split("TracerPid:")[1].split()[0] != "0"
if counted:
    mod = importlib.import_module({module!r})
    owner = {owner}
    real = getattr(owner, {name!r})
    calls = [0]
    def once(*args, **kw):
        calls[0] += 1
        if calls[0] == {nth}:
            return {failed}
        return real(*args, **kw)
    setattr(owner, {name!r}, once)
"""


@pytest.mark.parametrize("mode, case, module, owner, name, failed, names", [
    ("--syscalls", "mach", "pymach.mach", "mod", "mach_msg", KR_FAIL,
     r"pymach\.mach mach_msg send \+ receive, own port: the case exited with 1: .*CaseError: mach_msg send"),
    ("--instructions", "raw", "socket", "mod.socket", "send", "0",
     r"raw SEQPACKET socketpair send \+ recv \(baseline\): the case exited with 1: .*CaseError: send \+ recv"),
], ids=["syscalls-mach_msg", "instructions-raw-send"])
def test_a_failing_counted_case_is_reported_not_counted(env: dict[str, str], tmp_path: Path, mode: str, case: str,
                                                        module: str, owner: str, name: str, failed: str,
                                                        names: str) -> None:
    if shutil.which("valgrind" if mode == "--instructions" else "strace") is None:
        pytest.skip("valgrind or strace is not installed")
    (tmp_path / "sitecustomize.py").write_text(COUNTED_FAULT.format(module=module, owner=owner, name=name, nth=3,
                                                                    failed=failed))
    e = dict(env, PYTHONPATH=os.pathsep.join([env["PYTHONPATH"], str(tmp_path)]))
    p = bench(e, "ipc", mode, "--lengths", "4,12", "--cases", case)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr[-2000:])
    line = p.stderr.strip().splitlines()[-1]
    assert f"pymach bench ipc {mode}: FAILED, no figure is reported" in line and re.search(names, line), line
    assert p.stdout == "", p.stdout


def test_instructions_without_valgrind_says_so_and_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    p = bench(dict(env, PATH=str(tmp_path)), "ipc", "--instructions")
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == ""
    assert p.stderr.strip() == ("pymach bench ipc --instructions: valgrind is not installed (on Debian: apt-get "
                                "install valgrind); nothing was counted")


def test_bench_exc_smoke() -> None:
    # every case of `pymach bench exc` runs its faults and times them (no timing is asserted)
    from pymach.tools import bench_exc
    (block,) = bench_exc.results(20, 1)
    rows = block["rows"]
    assert isinstance(rows, list) and [r["case"] for r in rows] == [c for c, _ in bench_exc.CASES]
    assert all(r["ns_per_op"] > 0 and r["per_s"] > 0 for r in rows)


@pytest.fixture(scope="module")
def uvloop_started() -> None:
    """uvloop's first loop opens a pipe for the life of the process: made
    before the test's fd baseline (bench aio runs a uvloop case when it imports)."""
    try:
        import uvloop
    except ImportError:
        return
    import asyncio
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        r.run(asyncio.sleep(0))


def test_bench_aio_smoke(uvloop_started: None) -> None:
    # `pymach bench aio`'s two blocks, tiny: the echo server with a few
    # clients, and each round-trip case (no timing is asserted)
    from pymach.tools import bench_aio
    echo, trips = bench_aio.results(20, 1, clients=6, processes=2)
    (row,) = echo["rows"]  # type: ignore[misc]
    assert row["requests"] == 6 and row["per_s"] > 0
    assert row["server_fds_peak"] >= row["server_fds_before"] > 0 and row["server_rss_peak_kib"] > 0
    cases = [r["case"] for r in trips["rows"]]  # type: ignore[attr-defined]
    assert cases[:2] == ["pymach.request (sync)", "pymach.request_async, asyncio's loop"]
    assert all(r["ns_per_op"] > 0 and r["per_s"] > 0 for r in trips["rows"])  # type: ignore[attr-defined]
    assert trips["rows"][0]["ratio"] == 1.0  # type: ignore[index]


def test_bench_aio_prints_its_figures(env: dict[str, str]) -> None:
    p = bench(env, "aio", "-n", "100", "--repeat", "1")
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr[-2000:])
    lines = p.stdout.splitlines()
    assert lines[0].startswith("pymach bench aio: Python ")
    assert any(re.fullmatch(r"  1000 clients \(4 processes x 250 tasks\), 1 requests each: [\d,]+ requests/s "
                            r"\(1,000 in [\d.]+ s\); the server: \d+ fds at the peak \(\d+ before\), "
                            r"peak RSS [\d.]+ MiB", line) for line in lines), p.stdout
    assert any(re.fullmatch(r"  pymach.request_async, asyncio's loop +[\d.]+ +[\d.]+x +[\d,]+/s", line)
               for line in lines), p.stdout


def test_bench_aio_reports_a_failing_request_not_a_rate(env: dict[str, str]) -> None:
    # the third request_async of a client process raises: that client
    # dies, and the echo block gives no figure
    p = bench(env, "aio", "-n", "100", "--repeat", "1",
              inject=("pymach.ipc", "request_async", 3, "OSError(5, 'injected')"))
    expect_failure(p, r"clients: a client process failed")


# -- bench net: two hosts in network namespaces (or on 127.0.0.1), a NATS server, two proxies ---------------

def _net_ready() -> None:
    pytest.importorskip("nats")
    from pymach.netmsg import server
    try:
        server.binary()
    except server.ServerError as e:
        pytest.skip(str(e))


def _net_leftovers(tag: str) -> list[str]:
    """Namespaces, processes and directories of a bench net run still there."""
    left = []
    if shutil.which("ip"):
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
        left += [line for line in out.splitlines() if tag and tag in line]
    out = subprocess.run(["pgrep", "-af", "pymach.tools.bench_net peer|--host bench[AB]"], capture_output=True,
                         text=True, timeout=30).stdout
    left += out.splitlines()
    import tempfile
    left += [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("pymach-bench-net-")]
    return left


@pytest.mark.parametrize("netns", [True, False], ids=["netns", "127.0.0.1"])
def test_bench_net_prints_its_figures_and_leaves_nothing(env: dict[str, str], netns: bool) -> None:
    _net_ready()
    e = dict(env) if netns else dict(env, PYMACH_BENCH_NO_NETNS="1")
    p = bench(e, "net", "-n", "20", "--repeat", "2", "--ool-mib", "1")
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr[-2000:])
    lines = p.stdout.splitlines()
    assert lines[0].startswith("pymach bench net: Python "), p.stdout
    note = lines[3]
    m = re.fullmatch(r"  hosts A and B: network namespaces (pmbA\d+) and pmbB\d+, a veth pair \(10\.249\.0\.1, "
                     r"10\.249\.0\.2\); the NATS server in A; this process measures from A", note)
    if netns and m is None:  # ip netns is refused here: the fallback says why
        assert "processes on 127.0.0.1 in this namespace (no network namespaces: ip netns" in note, note
    if not netns:
        assert "(no network namespaces: PYMACH_BENCH_NO_NETNS=1)" in note, note
    for title in ("round trip of 128 B, host A to host B and back (median of 2 rounds x 20)",
                  "one-way messages of 128 B, host A to host B (median of 2 rounds x 20)",
                  "out-of-line bandwidth, 1 MiB messages, host A to host B (GB/s; ratio of bandwidth) "
                  "(median of 2 rounds x 1)"):
        assert title in lines, p.stdout
    num = r" +[\d.]+ +[\d.]+x"
    for case, tail in (("raw TCP echo (baseline)", num + r" +[\d.]+x"),
                       ("NATS request/reply alone (nats-py)", num + r" +1\.00x"),
                       ("pymach.request through the proxies", num + r" +[\d.]+x"),
                       ("NATS publish alone (nats-py, baseline)", r" +[\d.]+ +1\.00x +[\d,]+"),
                       ("SendRight.send through the proxies", num + r" +[\d,]+"),
                       ("raw TCP (baseline)", r" +[\d.]+ +1\.00x"),
                       ("out-of-line through the proxies", num)):
        assert any(re.fullmatch("  " + re.escape(case) + tail, line) for line in lines), (case, p.stdout)
    # the time from a remote task's SIGKILL to our dead name, and what each
    # operation costs in NATS messages (a round trip: the request, the
    # reply, an acknowledgement of each; lease beats may add a little, and
    # the last acknowledgement may reach the server after the count)
    assert any(line.startswith("a dead name across hosts: from a SIGKILL") for line in lines), p.stdout
    for case in ("fastest", "median", "slowest"):
        assert any(re.fullmatch(f"  {case} +[\\d.]+ ms", line) for line in lines), (case, p.stdout)
    rtt = r"  pymach\.request through the proxies +(3\.9\d|4\.\d\d) +[\d,]+"
    assert any(re.fullmatch(rtt, line) for line in lines), p.stdout
    assert _net_leftovers(m.group(1) if m else "") == []


def test_bench_net_reports_a_failing_look_up_and_tears_down(env: dict[str, str]) -> None:
    # the second look-up (the sink's, host B's proxy answering) raises: no
    # figure, and the hosts are gone all the same
    _net_ready()
    p = bench(env, "net", "-n", "20", "--repeat", "1", "--ool-mib", "1",
              inject=("pymach.net", "look_up", 2, "OSError(5, 'injected')"))
    assert p.returncode == 1 and "FAILED, no figure is reported: OSError: [Errno 5] injected" in p.stderr, \
        (p.returncode, p.stdout, p.stderr[-2000:])
    assert p.stdout == ""
    assert _net_leftovers("pmbA") == []
