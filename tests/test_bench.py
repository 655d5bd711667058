"""pymach bench checks what it times: a benchmark whose timed call fails
stops with an error that names the call, exits 1 and prints no figure (a
failing call would otherwise be timed as a fast one). Each suite, and the
``--breakdown`` and ``--ptrace`` modes, also runs to the end with a tiny
operation count, each block saying what it took.

Faults are injected in a separate interpreter (``python -c``) that replaces
one call with a version failing once, then runs ``pymach bench``; the
servers the benchmark forks inherit the replacement, so a failure on
either side of a round trip is covered.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymach.servers import rendezvous

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 240  # seconds: a bound only, against a benchmark that hangs


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A private bootstrap server (bench shm registers and looks up a
    name); the environment that reaches it."""
    d = tmp_path_factory.mktemp("boot")
    d.chmod(0o700)
    e = dict(os.environ, PYMACH_BOOTSTRAP_SOCKET=str(d / "bootstrap"), PYMACH_NO_AUTOSTART="1",
             PYTHONPATH=str(ROOT / "src"))
    boot = rendezvous.spawn(e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield e
    finally:
        boot.terminate()
        try:
            boot.wait(10)
        except subprocess.TimeoutExpired:
            boot.kill()
            boot.wait()


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


FIGURE = re.compile(r"^  \S.*\s-?\d+\.\d+(\s+-?\d+\.\d+x)?$", re.M)


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
    (["ipc", "-n", "20", "--repeat", "1", "--ool-mib", "4"],
     ["request/reply round trip, 64 B (best of 1 x 20)", "one-way messages, 64 B (best of 1 x 20)",
      "send rights in one message, sent and received (best of 1 x 10)",
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
    (("pymach.kern.vm_remote", "protect", 3, "OSError(5, 'injected')"), r"OSError: .*injected"),
    (("pymach.mach", "mach_msg", 30, KR_FAIL), r"message pieces: mach_msg (send|receive)"),
], ids=["ipc-mach_msg", "vm-allocate", "vm-protect", "vm-remote-read", "shm-look-up", "shm-deallocate",
        "ipc-many-rights", "ptrace-session", "ptrace-protect", "ipc-breakdown"])
def test_a_failing_call_is_reported_not_timed(env: dict[str, str], inject: tuple[str, str, int, str],
                                              names: str) -> None:
    suite = {"vm-": ["vm", "-n", "100", "--repeat", "1", "--ool-mib", "4"],
             "shm": ["shm", "-n", "20", "--repeat", "1", "--ool-mib", "4"],
             "ipc": ["ipc", "-n", "20", "--repeat", "1", "--ool-mib", "4"]}
    name = inject[1]
    if name in ("mach_msg", "mach_port_mod_refs"):
        args = suite["ipc"]
    elif name in ("bootstrap_look_up", "mach_port_deallocate"):
        args = suite["shm"]
    else:
        args = suite["vm-"]
    if names.startswith("message pieces"):
        args = ["ipc", "--breakdown", "-n", "20", "--repeat", "1", "--ool-mib", "4"]
    if inject[0] != "pymach.mach":
        args = ["vm", "--ptrace", "-n", "5", "--repeat", "1"]
    expect_failure(bench(env, *args, inject=inject), names)


BASELINE = """
import sys
from pymach.tools import bench
libc = bench._libc()
class Libc:
    mmap, munmap = libc.mmap, libc.munmap
    calls = 0
    def mprotect(self, *args):
        Libc.calls += 1
        return -1 if Libc.calls == 25 else libc.mprotect(*args)
bench._libc = Libc
sys.exit(bench.main(sys.argv[1:]))
"""


def test_the_baselines_are_checked_too(env: dict[str, str]) -> None:
    """The bare libc calls are checked as pymach's are: a comparison is fair
    only if both sides pay for the same checks."""
    p = subprocess.run([sys.executable, "-c", BASELINE, "vm", "-n", "100", "--repeat", "1", "--ool-mib", "4"],
                       env=env, capture_output=True, text=True, timeout=TIMEOUT)
    expect_failure(p, r"ctypes mprotect: errno")
