"""Processes for the ptrace injection tests (test_ptrace_inject and
test_vm_remote_inject): children that are killed and reaped when the test
ends, and waits for the states /proc shows them in."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from pymach._linux import ptrace as P

__all__ = ["PY_READY", "Target", "assert_released", "python", "sleeping", "spawn", "targets", "wait_in_syscall",
           "wait_state"]


class Target:
    """A child process with its pidfd; killed and reaped on close."""

    def __init__(self, argv: list[str], **kw: object) -> None:
        self.p = subprocess.Popen(argv, **kw)  # type: ignore[call-overload]
        self.pid = self.p.pid
        self.pidfd = os.pidfd_open(self.pid)

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.communicate() if (self.p.stdin or self.p.stdout) else self.p.wait()
        os.close(self.pidfd)


@pytest.fixture
def targets() -> Iterator[list[Target]]:
    made: list[Target] = []
    yield made
    for t in made:
        t.close()


def spawn(targets: list[Target], argv: list[str], **kw: object) -> Target:
    t = Target(argv, **kw)
    targets.append(t)
    return t


def wait_state(pid: int, states: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while P.proc_state(pid)[0] not in states:
        assert time.monotonic() < deadline, f"{pid} never reached {states}"
        time.sleep(0.005)


def wait_in_syscall(pid: int, nr: int, timeout: float = 5.0) -> None:
    """Return once the process sleeps inside system call ``nr`` (the first
    field of /proc/PID/syscall, read while it is blocked there)."""
    deadline = time.monotonic() + timeout
    while True:
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
        if P.proc_state(pid)[0] == "S" and fields[:1] == [str(nr)]:
            return
        assert time.monotonic() < deadline, f"{pid} never blocked in system call {nr}: {fields[:2]}"
        time.sleep(0.005)


def assert_released(pid: int) -> None:
    """Not stopped, not traced."""
    state, tracer = P.proc_state(pid)
    assert tracer == 0
    assert state not in "tT", state


def sleeping(targets: list[Target], seconds: str = "100") -> Target:
    t = spawn(targets, ["sleep", seconds])
    wait_state(t.pid, "S")
    return t


PY_READY = "import sys; sys.stdout.write('ready\\n'); sys.stdout.flush()\n"


def python(targets: list[Target], code: str) -> Target:
    t = spawn(targets, [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert t.p.stdout is not None
    assert t.p.stdout.readline() == b"ready\n"
    return t
