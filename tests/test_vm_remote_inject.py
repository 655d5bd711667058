"""Mach VM, task and thread operations on another process by ptrace
injection (pymach._kern.vm_remote), checked from outside: the target's
/proc/PID/maps and smaps, what the target itself reads, how it exits."""

from __future__ import annotations

import ctypes
import os
import time

import pytest

from pymach._linux import ptrace as P
from pymach._kern import kern_return as K
from pymach._kern import vm_defs as V
from pymach._kern import vm_remote as R
from ptraceutil import PY_READY, Target, assert_released, python, sleeping, targets, wait_state

__all__ = ["targets"]  # the fixture, imported for its name

pytestmark = pytest.mark.skipif(not P.ARCH_SUPPORTED, reason="x86_64 only")
PAGE = R.PAGE_SIZE


def vmas(pid: int) -> list[tuple[int, int, str, str, set[str]]]:
    """(start, end, perms, path, VmFlags) per VMA of /proc/PID/smaps."""
    out: list[tuple[int, int, str, str, set[str]]] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if head == "VmFlags:":
                out[-1][4].update(line.split()[1:])
            elif not head.endswith(":"):
                parts = line.split(None, 5)
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi, parts[1], parts[5].strip() if len(parts) > 5 else "", set()))
    return out


def at(pid: int, addr: int) -> tuple[int, int, str, str, set[str]] | None:
    for v in vmas(pid):
        if v[0] <= addr < v[1]:
            return v
    return None


def kr_of(fn: object, *args: object) -> int:
    try:
        fn(*args)  # type: ignore[operator]
    except K.MachError as e:
        return e.kr
    return K.KERN_SUCCESS


# -- allocate, protect, deallocate, inherit -----------------------------------------

def test_allocate_protect_deallocate(targets: list[Target]) -> None:
    t = sleeping(targets)
    a = R.allocate(t.pid, t.pidfd, 0, 3 * PAGE, True)
    v = at(t.pid, a)
    assert v is not None and v[0] <= a and v[1] >= a + 3 * PAGE and v[2] == "rw-p"
    assert_released(t.pid)
    R.protect(t.pid, t.pidfd, a + PAGE, PAGE, False, V.VM_PROT_READ)
    assert [at(t.pid, a + i * PAGE)[2] for i in range(3)] == ["rw-p", "r--p", "rw-p"]  # type: ignore[index]
    R.deallocate(t.pid, t.pidfd, a, 3 * PAGE)
    assert at(t.pid, a) is None and at(t.pid, a + 2 * PAGE) is None
    assert_released(t.pid)


def test_allocate_fixed(targets: list[Target]) -> None:
    t = sleeping(targets)
    a = R.allocate(t.pid, t.pidfd, 0, 2 * PAGE, True)
    R.deallocate(t.pid, t.pidfd, a, 2 * PAGE)
    assert R.allocate(t.pid, t.pidfd, a, PAGE, False) == a
    assert at(t.pid, a) is not None
    assert kr_of(R.allocate, t.pid, t.pidfd, a, 2 * PAGE, False) == K.KERN_NO_SPACE
    R.protect(t.pid, t.pidfd, a, PAGE, False, V.VM_PROT_NONE)
    assert R.allocate(t.pid, t.pidfd, a, 2 * PAGE, False, True) == a  # overwrite
    assert at(t.pid, a)[2] == "rw-p"  # type: ignore[index]
    assert kr_of(R.allocate, t.pid, t.pidfd, R.MAP_MAX, PAGE, False) == K.KERN_INVALID_ADDRESS
    R.deallocate(t.pid, t.pidfd, a, 2 * PAGE)


def test_protect_codes(targets: list[Target]) -> None:
    t = sleeping(targets)
    a = R.allocate(t.pid, t.pidfd, 0, 2 * PAGE, True)
    R.deallocate(t.pid, t.pidfd, a + PAGE, PAGE)
    assert kr_of(R.protect, t.pid, t.pidfd, a, 2 * PAGE, False, 1) == K.KERN_INVALID_ADDRESS
    assert kr_of(R.protect, t.pid, t.pidfd, a, PAGE, True, 1) == K.KERN_NOT_SUPPORTED
    assert kr_of(R.protect, t.pid, t.pidfd, a, PAGE, False, 0x800) == K.KERN_INVALID_ARGUMENT
    assert kr_of(R.deallocate, t.pid, t.pidfd, 2**64 - PAGE, 2 * PAGE) == K.KERN_INVALID_ARGUMENT
    assert_released(t.pid)


def test_inherit(targets: list[Target]) -> None:
    t = sleeping(targets)
    a = R.allocate(t.pid, t.pidfd, 0, PAGE, True)
    R.inherit(t.pid, t.pidfd, a, PAGE, V.VM_INHERIT_NONE)
    assert "dc" in at(t.pid, a)[4]  # type: ignore[index]
    R.inherit(t.pid, t.pidfd, a, PAGE, V.VM_INHERIT_COPY)
    assert "dc" not in at(t.pid, a)[4]  # type: ignore[index]
    assert kr_of(R.inherit, t.pid, t.pidfd, a, PAGE, V.VM_INHERIT_SHARE) == K.KERN_NOT_SUPPORTED
    assert kr_of(R.inherit, t.pid, t.pidfd, a, PAGE, 7) == K.KERN_INVALID_ARGUMENT


# -- map_fd ------------------------------------------------------------------------

READER = PY_READY.join(["""
import ctypes, sys
""", """
for line in sys.stdin:
    cmd, addr, n = line.split()
    addr, n = int(addr), int(n)
    if cmd == 'r':
        sys.stdout.write(ctypes.string_at(addr, n).hex() + '\\n')
    else:
        ctypes.memmove(addr, b'w' * n, n)
        sys.stdout.write('ok\\n')
    sys.stdout.flush()
"""])


def ask(t: Target, line: str) -> str:
    assert t.p.stdin is not None and t.p.stdout is not None
    t.p.stdin.write(line.encode() + b"\n")
    t.p.stdin.flush()
    return t.p.stdout.readline().decode().strip()


def test_map_memfd_into_a_python_target(targets: list[Target]) -> None:
    t = python(targets, READER)
    fds_before = sorted(os.listdir(f"/proc/{t.pid}/fd"))
    maps_before = [x[:4] for x in vmas(t.pid)]
    m = os.memfd_create("shared", os.MFD_CLOEXEC)
    try:
        os.ftruncate(m, 2 * PAGE)
        os.pwrite(m, b"our bytes", PAGE)
        a = R.map_fd(t.pid, t.pidfd, m, PAGE, PAGE, V.VM_PROT_READ | V.VM_PROT_WRITE, V.VM_FLAGS_ANYWHERE)
        v = at(t.pid, a)
        assert v is not None and v[2] == "rw-s" and "memfd:shared" in v[3]
        assert sorted(os.listdir(f"/proc/{t.pid}/fd")) == fds_before  # its fd was closed
        assert bytes.fromhex(ask(t, f"r {a} 9")) == b"our bytes"
        assert ask(t, f"w {a + 100} 3") == "ok"  # and we see its writes
        assert os.pread(m, 3, PAGE + 100) == b"www"
        # the scratch page for the path is gone again: only the mapping is new
        assert [x[:4] for x in vmas(t.pid) if x[0] != a] == maps_before
        R.deallocate(t.pid, t.pidfd, a, PAGE)
        assert at(t.pid, a) is None
        assert_released(t.pid)
    finally:
        os.close(m)


def test_map_fd_private_and_fixed(targets: list[Target]) -> None:
    t = python(targets, READER)
    m = os.memfd_create("private", os.MFD_CLOEXEC)
    try:
        os.ftruncate(m, PAGE)
        os.pwrite(m, b"abc", 0)
        spot = R.allocate(t.pid, t.pidfd, 0, PAGE, True)
        assert kr_of(R.map_fd, t.pid, t.pidfd, m, 0, PAGE, 3, V.VM_FLAGS_FIXED, spot) == K.KERN_NO_SPACE
        a = R.map_fd(t.pid, t.pidfd, m, 0, PAGE, 3, V.VM_FLAGS_FIXED | V.VM_FLAGS_OVERWRITE, spot,
                     shared=False)
        assert a == spot and at(t.pid, a)[2] == "rw-p"  # type: ignore[index]
        assert ask(t, f"w {a} 3") == "ok"
        assert bytes.fromhex(ask(t, f"r {a} 3")) == b"www"
        assert os.pread(m, 3, 0) == b"abc"  # a private copy
    finally:
        os.close(m)


def test_map_fd_codes(targets: list[Target]) -> None:
    t = sleeping(targets)
    m = os.memfd_create("ro", os.MFD_CLOEXEC)
    os.ftruncate(m, PAGE)
    ro = os.open(f"/proc/self/fd/{m}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert kr_of(R.map_fd, t.pid, t.pidfd, ro, 0, PAGE, 3, 1) == K.KERN_PROTECTION_FAILURE
        a = R.map_fd(t.pid, t.pidfd, ro, 0, PAGE, V.VM_PROT_READ, 1)
        assert at(t.pid, a)[2] == "r--s"  # type: ignore[index]
        assert kr_of(R.map_fd, t.pid, t.pidfd, m, 1, PAGE, 1, 1) == K.KERN_INVALID_ARGUMENT
        assert kr_of(R.map_fd, t.pid, t.pidfd, 9999, 0, PAGE, 1, 1) == K.KERN_INVALID_NAME
        r, w = os.pipe()
        try:
            assert kr_of(R.map_fd, t.pid, t.pidfd, r, 0, PAGE, 1, 1) == K.KERN_INVALID_ARGUMENT
        finally:
            os.close(r)
            os.close(w)
        assert sorted(os.listdir(f"/proc/{t.pid}/fd")) == ["0", "1", "2"]
    finally:
        os.close(ro)
        os.close(m)


# -- tasks -------------------------------------------------------------------------

def test_suspend_resume_count(targets: list[Target]) -> None:
    t = sleeping(targets)
    R.task_suspend(t.pid, t.pidfd)
    R.task_suspend(t.pid, t.pidfd)
    assert P.proc_state(t.pid)[0] == "T"
    assert R.suspend_count(t.pid, t.pidfd) == 2
    a = R.allocate(t.pid, t.pidfd, 0, PAGE, True)  # works on a stopped target
    assert at(t.pid, a) is not None
    # the detach puts it back into its group stop: T (not the tracing stop
    # t), untraced, and it stays there until a SIGCONT
    wait_state(t.pid, "T")
    assert P.proc_state(t.pid) == ("T", 0)
    R.task_resume(t.pid, t.pidfd)
    # one resume of two sends nothing: a SIGCONT would have woken the
    # stopped thread before kill() returned (the kernel's prepare_signal
    # wakes it at generation), so T now means no SIGCONT was sent
    assert R.suspend_count(t.pid, t.pidfd) == 1
    assert P.proc_state(t.pid) == ("T", 0)
    R.task_resume(t.pid, t.pidfd)
    wait_state(t.pid, "S")
    assert kr_of(R.task_resume, t.pid, t.pidfd) == K.KERN_FAILURE


def test_task_threads(targets: list[Target]) -> None:
    t = python(targets, "import threading, time\n"
                        "for _ in range(3): threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n"
                        + PY_READY + "import sys; sys.stdin.readline()\n")
    tids = R.task_threads(t.pid, t.pidfd)
    assert len(tids) == 4 and tids[0] == t.pid
    for tid in tids:
        st = R.thread_get_state(t.pid, t.pidfd, tid)
        assert st.as_dict()["cs"] == 0x33
        assert 0 < st.as_dict()["rsp"] < 1 << 47
    assert_released(t.pid)


# -- thread state ------------------------------------------------------------------

def test_thread_state_layout() -> None:
    assert ctypes.sizeof(R.x86_thread_state64_t) == 4 * R.x86_THREAD_STATE64_COUNT == 168
    assert [n for n, _ in R.x86_thread_state64_t._fields_][:4] == ["__rax", "__rbx", "__rcx", "__rdx"]
    assert R.x86_thread_state64_t.__rip.offset == 16 * 8  # type: ignore[attr-defined]


def test_thread_set_state_same_state_keeps_the_sleep(targets: list[Target]) -> None:
    t0 = time.monotonic()
    t = sleeping(targets, "1")
    st = R.thread_get_state(t.pid, t.pidfd, t.pid)
    R.thread_set_state(t.pid, t.pidfd, t.pid, R.x86_THREAD_STATE64, st)
    assert t.p.wait(timeout=5) == 0
    assert time.monotonic() - t0 >= 0.95


def test_thread_set_state_redirects_the_thread(targets: list[Target]) -> None:
    t = sleeping(targets)
    st = R.thread_get_state(t.pid, t.pidfd, t.pid)
    with R.session(t.pid, t.pidfd) as s:
        insn = s.syscall_insn()
    st.__rip = insn  # type: ignore[attr-defined]
    st.__rax = 231  # type: ignore[attr-defined]  # exit_group
    st.__rdi = 42  # type: ignore[attr-defined]
    R.thread_set_state(t.pid, t.pidfd, t.pid, R.x86_THREAD_STATE64, st)
    assert t.p.wait(timeout=5) == 42


def test_thread_state_codes(targets: list[Target]) -> None:
    t = sleeping(targets)
    st = R.thread_get_state(t.pid, t.pidfd, t.pid)
    assert kr_of(R.thread_get_state, t.pid, t.pidfd, t.pid, 7) == K.KERN_INVALID_ARGUMENT
    st.__rip = 1 << 60  # type: ignore[attr-defined]
    assert kr_of(R.thread_set_state, t.pid, t.pidfd, t.pid, 4, st) == K.KERN_INVALID_ARGUMENT
    assert kr_of(R.thread_get_state, t.pid, t.pidfd, os.getpid()) == K.MACH_SEND_INVALID_DEST
    t.p.kill()
    t.p.wait()
    assert kr_of(R.thread_get_state, t.pid, t.pidfd, t.pid) == K.MACH_SEND_INVALID_DEST
    assert kr_of(R.task_suspend, t.pid, t.pidfd) == K.MACH_SEND_INVALID_DEST
    assert kr_of(R.task_threads, t.pid, t.pidfd) == K.MACH_SEND_INVALID_DEST
