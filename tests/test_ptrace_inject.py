"""The ptrace injection engine (pymach._linux.ptrace): system calls run
inside another process, which is left exactly as it was: registers,
interrupted system calls, signals, and never stopped or traced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from pymach._linux import ptrace as P
from pymach._kern import kern_return as K
from pymach._kern import vm_remote as R
from procutil import forked, run_in_child
from ptraceutil import PY_READY, Target, assert_released, python, sleeping, spawn, targets, wait_in_syscall, wait_state

__all__ = ["targets"]  # the fixture, imported for its name

pytestmark = pytest.mark.skipif(not P.ARCH_SUPPORTED, reason="x86_64 only")


# -- the basics ---------------------------------------------------------------------

def test_getpid_runs_in_the_target(targets: list[Target]) -> None:
    t = sleeping(targets)
    assert P.inject(t.pid, t.pidfd, [(P.SYS_getpid,), (P.SYS_getpid,)]) == [t.pid, t.pid]
    assert_released(t.pid)


def test_errors_come_back_as_negative_errno(targets: list[Target]) -> None:
    t = sleeping(targets)
    # munmap of an unaligned address: EINVAL; close of a bad fd: EBADF
    assert P.inject(t.pid, t.pidfd, [(P.SYS_munmap, 1, 4096), (P.SYS_close, 9999)]) == [
        -22, -9]
    assert_released(t.pid)


def test_registers_restored_exactly(targets: list[Target]) -> None:
    t = sleeping(targets)
    # the first interruption turns clock_nanosleep into restart_syscall
    P.get_thread_regs(t.pid, t.pidfd, t.pid)
    wait_state(t.pid, "S")
    before = P.get_thread_regs(t.pid, t.pidfd, t.pid).as_dict()
    for _ in range(5):
        P.inject(t.pid, t.pidfd, [(P.SYS_mmap, 0, 4096, 3, 0x22, -1, 0), (P.SYS_getpid,)])
        wait_state(t.pid, "S")
    after = P.get_thread_regs(t.pid, t.pidfd, t.pid).as_dict()
    assert before == after
    assert before["orig_rax"] == P.SYS_restart_syscall
    assert_released(t.pid)


def test_a_suspended_target_stays_stopped(targets: list[Target]) -> None:
    t = sleeping(targets)
    os.kill(t.pid, signal.SIGSTOP)
    wait_state(t.pid, "T")
    assert P.inject(t.pid, t.pidfd, [(P.SYS_getpid,)]) == [t.pid]
    wait_state(t.pid, "T")
    assert P.proc_state(t.pid) == ("T", 0)
    os.kill(t.pid, signal.SIGCONT)
    wait_state(t.pid, "S")


# -- interrupted system calls ------------------------------------------------------

def test_blocked_read_still_gets_its_data(targets: list[Target]) -> None:
    # head is C: an EINTR from read() would be an error, not a retry
    t = spawn(targets, ["head", "-c", "5"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    wait_in_syscall(t.pid, P.SYS_read)  # blocked in its read of stdin, not still starting up
    with P.Session(t.pid, t.pidfd) as s:
        assert s.saved is not None
        assert s.saved.orig_rax == P.SYS_read
        assert -(s.saved.rax - (1 << 64)) == P.ERESTARTSYS
        assert s.syscall(P.SYS_getpid) == t.pid
    for _ in range(10):
        P.inject(t.pid, t.pidfd, [(P.SYS_getpid,)])
    assert_released(t.pid)
    out, _ = t.p.communicate(b"hello", timeout=5)
    assert out == b"hello"
    assert t.p.returncode == 0


def test_nanosleep_still_lasts_as_long(targets: list[Target]) -> None:
    t0 = time.monotonic()
    t = spawn(targets, ["sleep", "1"])
    wait_state(t.pid, "S")
    codes = set()
    while time.monotonic() - t0 < 0.6:
        with P.Session(t.pid, t.pidfd) as s:
            assert s.saved is not None
            codes.add(-(s.saved.rax - (1 << 64)))
            s.syscall(P.SYS_getpid)
        last = time.monotonic()
        time.sleep(0.02)
    assert P.ERESTART_RESTARTBLOCK in codes
    assert t.p.wait(timeout=5) == 0
    end = time.monotonic()
    # Kept deadline: done 1 s after the start. A sleep restarted in full
    # after each stop would end no sooner than 1 s after the last session.
    assert end - t0 >= 0.95, end - t0
    assert end - last < 0.95, (end - t0, last - t0)


def test_an_injected_call_that_blocks_times_out_and_restores(targets: list[Target]) -> None:
    t = spawn(targets, ["head", "-c", "5"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    wait_state(t.pid, "S")
    with pytest.raises(TimeoutError):
        with P.Session(t.pid, t.pidfd, timeout=0.3) as s:
            s.syscall(P.SYS_read, 0, s.saved.rsp - 4096, 1)  # type: ignore[union-attr]  # no data: blocks
    assert_released(t.pid)
    wait_state(t.pid, "S")
    out, _ = t.p.communicate(b"hello", timeout=5)
    assert out == b"hello" and t.p.returncode == 0


def test_a_thread_that_never_stops_is_released_later(targets: list[Target], tmp_path: object) -> None:
    # posix_spawn is a vfork: the parent waits, in uninterruptible sleep,
    # until the child execs; the child first opens a FIFO nobody writes.
    fifo = os.path.join(str(tmp_path), "fifo")
    os.mkfifo(fifo)
    t = python(targets, PY_READY + f'''
import os, sys
pid = os.posix_spawn("/bin/true", ["true"], {{}},
                     file_actions=[(os.POSIX_SPAWN_OPEN, 3, {fifo!r}, os.O_RDONLY, 0)])
os.waitpid(pid, 0)
sys.stdout.write("spawned\\n")
sys.stdout.flush()
''')
    wait_state(t.pid, "D")
    with pytest.raises(TimeoutError):
        with P.Session(t.pid, t.pidfd, timeout=0.2) as s:
            s.syscall(P.SYS_getpid)
    assert P.proc_state(t.pid)[1] == os.getpid()  # still ours, not stopped yet
    os.close(os.open(fifo, os.O_WRONLY))  # the child goes on to exec
    wait_state(t.pid, "t")  # the pending interrupt stops it now
    assert P.release_stragglers() == 0
    assert_released(t.pid)
    assert t.p.stdout is not None and t.p.stdout.readline() == b"spawned\n"


def test_threads_of_ours_take_turns(targets: list[Target]) -> None:
    t = sleeping(targets)
    results: list[int] = []

    def work() -> None:
        for _ in range(30):
            results.extend(P.inject(t.pid, t.pidfd, [(P.SYS_getpid,)]))

    ths = [threading.Thread(target=work) for _ in range(4)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert results == [t.pid] * 120
    assert_released(t.pid)


# -- signals -----------------------------------------------------------------------

# CPython's C-level handler writes one byte to the wakeup fd per delivery,
# even when several deliveries make only one call of the Python handler.
COUNTER = PY_READY.join(["""
import os, signal, sys
r, w = os.pipe()
os.set_blocking(w, False)
signal.signal(signal.SIGRTMIN, lambda s, f: None)
signal.set_wakeup_fd(w)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
""", """
sys.stdin.readline()
os.set_blocking(r, False)
data = b''
try:
    while True:
        data += os.read(r, 65536)
except BlockingIOError:
    pass
sys.stdout.write('%d %s\\n' % (data.count(bytes([signal.SIGRTMIN])), signal.sigpending() == {signal.SIGUSR2}))
sys.stdout.flush()
"""])


def test_no_signal_lost_or_added(targets: list[Target]) -> None:
    t = python(targets, COUNTER)
    os.kill(t.pid, signal.SIGUSR2)  # blocked: stays pending throughout
    wait_state(t.pid, "S")
    sent = 300
    done = threading.Event()

    def sender() -> None:
        for _ in range(sent):
            os.kill(t.pid, signal.SIGRTMIN)  # real-time: every one is queued
        done.set()

    th = threading.Thread(target=sender)
    th.start()
    n = 0
    while not done.is_set() or n < 20:
        assert P.inject(t.pid, t.pidfd, [(P.SYS_getpid,)]) == [t.pid]
        n += 1
    th.join()
    assert_released(t.pid)
    out, _ = t.p.communicate(b"\n", timeout=10)
    assert out.split() == [str(sent).encode(), b"True"]


# -- death and refusal ---------------------------------------------------------------

def test_an_exited_process_is_refused(targets: list[Target]) -> None:
    t = sleeping(targets)
    t.p.kill()
    t.p.wait()
    with pytest.raises(ProcessLookupError):
        P.inject(t.pid, t.pidfd, [(P.SYS_getpid,)])
    with pytest.raises(K.MachError) as ei:
        R.allocate(t.pid, t.pidfd, 0, 4096, True)
    assert ei.value.kr == K.MACH_SEND_INVALID_DEST


def test_killed_during_injection_is_an_error_not_a_hang(targets: list[Target]) -> None:
    t = sleeping(targets)
    started = threading.Event()

    def killer() -> None:
        started.wait()
        time.sleep(0.05)
        os.kill(t.pid, signal.SIGKILL)

    th = threading.Thread(target=killer)
    th.start()
    t0 = time.monotonic()
    with pytest.raises(K.MachError) as ei:
        while True:
            with R.session(t.pid, t.pidfd) as s:
                started.set()
                for _ in range(50):
                    s.syscall(P.SYS_getpid)
    th.join()
    assert ei.value.kr == K.MACH_SEND_INVALID_DEST
    assert time.monotonic() - t0 < 5
    assert t.p.wait(timeout=5) == -signal.SIGKILL  # the status is left for its parent


def test_an_exited_thread_is_gone_not_refused(targets: list[Target]) -> None:
    # The leader leaves by exit(2), the thread only: a zombie thread in a
    # live process, which ptrace refuses with EPERM as it refuses a denied one.
    t = python(targets, PY_READY + """
import ctypes, threading, time
threading.Thread(target=time.sleep, args=(100,), daemon=True).start()
ctypes.CDLL(None, use_errno=True).syscall(60, 0)
""")
    wait_state(t.pid, "Z")
    assert not P.pidfd_exited(t.pidfd)
    with pytest.raises(K.MachError) as ei:
        with R.session(t.pid, t.pidfd, tid=t.pid):
            pass
    assert ei.value.kr == K.MACH_SEND_INVALID_DEST
    # the live thread is still reachable
    with R.session(t.pid, t.pidfd) as s:
        assert s.syscall(P.SYS_getpid) == t.pid


def test_ptrace_refused_is_kern_failure(targets: list[Target]) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to drop to nobody")
    t = sleeping(targets)

    def as_nobody() -> tuple[int, int]:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        try:
            R.allocate(t.pid, t.pidfd, 0, 4096, True)
        except K.MachError as e:
            kr1 = e.kr
        try:
            P.inject(t.pid, t.pidfd, [(P.SYS_getpid,)])
        except PermissionError:
            return kr1, 1
        return kr1, 0

    assert run_in_child(as_nobody) == (K.KERN_FAILURE, 1)
    assert_released(t.pid)


def test_already_traced_is_kern_failure(targets: list[Target]) -> None:
    t = sleeping(targets)

    def tracer(sync: object) -> None:
        with P.Session(t.pid, t.pidfd):
            sync()  # type: ignore[operator]
            sync()  # type: ignore[operator]

    with forked(tracer) as sync:
        sync()
        assert P.proc_state(t.pid)[1] != 0
        with pytest.raises(K.MachError) as ei:
            R.allocate(t.pid, t.pidfd, 0, 4096, True)
        assert ei.value.kr == K.KERN_FAILURE
        sync()
    assert_released(t.pid)


def test_an_exception_inside_the_session_restores_and_releases(targets: list[Target]) -> None:
    t = sleeping(targets)
    P.get_thread_regs(t.pid, t.pidfd, t.pid)
    wait_state(t.pid, "S")
    before = P.get_thread_regs(t.pid, t.pidfd, t.pid).as_dict()
    with pytest.raises(RuntimeError):
        with P.Session(t.pid, t.pidfd) as s:
            s.syscall(P.SYS_getpid)
            raise RuntimeError("boom")
    assert_released(t.pid)
    wait_state(t.pid, "S")
    assert P.get_thread_regs(t.pid, t.pidfd, t.pid).as_dict() == before


def test_nested_sessions(targets: list[Target]) -> None:
    a = sleeping(targets)
    b = sleeping(targets)
    with P.Session(a.pid, a.pidfd) as s:
        assert P.inject(b.pid, b.pidfd, [(P.SYS_getpid,)]) == [b.pid]
        with pytest.raises(PermissionError):
            P.inject(a.pid, a.pidfd, [(P.SYS_getpid,)])  # already ours: a second tracer
        assert s.syscall(P.SYS_getpid) == a.pid
    assert_released(a.pid)
    assert_released(b.pid)


def test_ourselves_is_refused() -> None:
    fd = os.pidfd_open(os.getpid())
    try:
        with pytest.raises(K.MachError) as ei:
            R.allocate(os.getpid(), fd, 0, 4096, True)
        assert ei.value.kr == K.KERN_FAILURE
    finally:
        os.close(fd)


def test_not_x86_64_is_not_supported(targets: list[Target], monkeypatch: pytest.MonkeyPatch) -> None:
    t = sleeping(targets)
    monkeypatch.setattr(P, "ARCH_SUPPORTED", False)
    with pytest.raises(K.MachError) as ei:
        R.allocate(t.pid, t.pidfd, 0, 4096, True)
    assert ei.value.kr == K.KERN_NOT_SUPPORTED
    assert "x86_64" in str(ei.value)
