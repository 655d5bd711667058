"""The book's vm_rw_target and vm_rw_master (Figure 8-16), run as real
processes: the exact output lines, a target that is not Python, and a
master without the privilege."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from procutil import start_sleep
from pymach.task import Task

TARGET_LINE = re.compile(r"pid=(\d+), address=(0x[0-9a-f]+)$")
PAGE = 4096


def master(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pymach.examples.vm_rw_master", *args], capture_output=True,
                          text=True, timeout=60)


def start_target() -> tuple[subprocess.Popen[str], int, str]:
    t = subprocess.Popen([sys.executable, "-m", "pymach.examples.vm_rw_target"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert t.stdout is not None
    line = t.stdout.readline().rstrip("\n")
    m = TARGET_LINE.match(line)
    assert m, line
    assert int(m.group(1)) == t.pid
    return t, t.pid, m.group(2)


def finish(t: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = t.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        t.kill()
        out, err = t.communicate()
        return -999, out, err
    return t.returncode, out, err


def test_master_reads_A_and_writes_B_and_the_target_exits():
    t, pid, addr = start_target()
    try:
        assert t.poll() is None  # spinning
        p = master(str(pid), addr)
        assert p.returncode == 0, p.stderr
        assert p.stdout.splitlines() == [
            f"reading address {addr} in target task",
            f"read 4096 bytes from address {addr} in target task, first byte=A",
        ]
        assert p.stderr == ""
    finally:
        rc, out, err = finish(t)
    assert (rc, out, err) == (0, "", "")


def test_master_against_a_program_that_is_not_python():
    s = start_sleep()
    try:
        with Task.for_pid(s.pid) as task:
            (stack,) = [r for r in task.regions() if r.path == "[stack]"]
            addr = stack.start  # the deepest page: sleep never reaches it
            before = task.read(addr, PAGE)
            p = subprocess.run([sys.executable, "-m", "pymach.examples.vm_rw_master", str(s.pid), hex(addr)],
                               capture_output=True, timeout=60)
            assert p.returncode == 0, p.stderr
            assert p.stdout == (f"reading address {addr:#x} in target task\n"
                                f"read 4096 bytes from address {addr:#x} in target task, first byte="
                                + chr(before[0]) + "\n").encode()
            assert task.read(addr, PAGE) == b"B" + before[1:]
        assert s.poll() is None  # sleep never noticed
    finally:
        s.kill()
        s.wait()


def _master_as_nobody(pid: int, addr: str) -> tuple[int, str, str]:
    """The master's main, run in a fork child that dropped root for nobody
    (nobody cannot exec this venv's interpreter)."""
    import io
    import os

    from pymach.examples import vm_rw_master
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
    try:
        vm_rw_master.main(3, ["vm_rw_master", str(pid), addr])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, sys.stdout.getvalue(), sys.stderr.getvalue()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_master_without_privilege_gets_kern_failure():
    from procutil import run_in_child
    t, pid, addr = start_target()
    try:
        assert run_in_child(lambda: _master_as_nobody(pid, addr)) == (5, "", "task_for_pid: (os/kern) failure\n")
        assert t.poll() is None  # still spinning
    finally:
        t.kill()
        finish(t)


def test_master_usage_and_bad_address():
    p = master()
    assert p.returncode == 1 and p.stderr.startswith("usage: vm_rw_master")
    s = subprocess.Popen(["sleep", "100"])
    try:
        p = master(str(s.pid), "0x1000")
        assert p.returncode == 1
        assert p.stdout == "reading address 0x1000 in target task\n"
        assert p.stderr == "vm_read: (os/kern) invalid address\n"
    finally:
        s.kill()
        s.wait()
