"""Mach semaphores (<mach/semaphore.h>, semaphore_create/_destroy of
<mach/task.h>) in both layers, with XNU's codes (osfmk/kern/sync_sema.c):
across threads, and across processes that got the semaphore in a message.

Children are os.fork children that ask a registered port of ours for the
semaphores (a fork child's space starts empty: rights reach it by
message). A waiter is known to be blocked when /proc says its thread
sleeps in epoll_wait."""

from __future__ import annotations

import asyncio
import ctypes
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import pymach
import pymach.mach as M
from pymach.mach import byref
from machutil import start_watcher
from procutil import InThread, forked

T = M.mach_task_self
_EPOLL_WAIT = 232


def _sem(value: int = 0) -> int:
    s = M.semaphore_t()
    assert M.semaphore_create(T(), byref(s), M.SYNC_POLICY_FIFO, value) == 0
    return s.value


def _no_wait() -> M.mach_timespec_t:
    return M.mach_timespec_t(0, 0)


def _count(name: int) -> int:
    """Take every count there is: how many."""
    n = 0
    while M.semaphore_timedwait(name, _no_wait()) == 0:
        n += 1
    return n


def _blocked(tid: int, pid: int | None = None, timeout: float = 10.0) -> None:
    """Return once thread ``tid`` (of ``pid``) sleeps in epoll_wait."""
    path = f"/proc/{pid or os.getpid()}/task/{tid}/syscall"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as f:
                nr = f.read().split()[0]
        except (OSError, IndexError):
            nr = ""
        if nr == str(_EPOLL_WAIT):
            return
        assert time.monotonic() < deadline, f"{path}: never blocked ({nr!r})"
        time.sleep(0.002)


class _Waiter(InThread):
    """A thread in a wait on a semaphore, blocked once constructed."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(fn)
        while self.th.native_id is None:
            time.sleep(0.001)
        _blocked(self.th.native_id)


@pytest.fixture(autouse=True, scope="module")
def _runtime_made() -> None:
    """What lives as long as the process is made before a test's fd
    baseline: the notification watcher, this thread's MIG reply port,
    uvloop's pipe."""
    start_watcher()
    M.mig_get_reply_port()
    try:  # libuv's process-wide pipe, made by its first loop
        import uvloop
    except ImportError:
        return
    uvloop.new_event_loop().close()


# -- the C layer, in one task


def test_create_checks_policy_value_and_task() -> None:
    s = M.semaphore_t(0x1234)
    assert M.semaphore_create(T(), byref(s), 0x8, 0) == M.KERN_INVALID_ARGUMENT  # SYNC_POLICY_INIT_LOCKED
    assert s.value == 0
    assert M.semaphore_create(T(), byref(s), M.SYNC_POLICY_FIFO, -1) == M.KERN_INVALID_ARGUMENT
    assert M.semaphore_create(0x7777, byref(s), M.SYNC_POLICY_FIFO, 0) == M.MACH_SEND_INVALID_DEST
    # SYNC_POLICY_USER_MASK: FIFO, LIFO, PREPOST; not FIXED_PRIORITY
    assert M.semaphore_create(T(), byref(s), M.SYNC_POLICY_FIXED_PRIORITY, 0) == M.KERN_INVALID_ARGUMENT
    for policy in (M.SYNC_POLICY_FIFO, M.SYNC_POLICY_LIFO, M.SYNC_POLICY_PREPOST):
        assert M.semaphore_create(T(), byref(s), policy, 3) == 0
        assert s.value and _count(s.value) == 3
        # a semaphore is not a task
        assert M.semaphore_create(s.value, byref(M.semaphore_t()), 0, 0) == M.KERN_INVALID_ARGUMENT
        assert M.semaphore_destroy(T(), s) == 0
    assert M.semaphore_destroy(T(), 0) == M.KERN_INVALID_ARGUMENT


def test_signal_counts_and_timedwait_times_out() -> None:
    s = _sem(1)
    assert M.semaphore_wait(s) == 0
    assert M.semaphore_timedwait(s, _no_wait()) == M.KERN_OPERATION_TIMED_OUT
    assert M.semaphore_timedwait(s, M.mach_timespec_t(0, 20_000_000)) == M.KERN_OPERATION_TIMED_OUT
    assert M.semaphore_timedwait_signal(s, s, M.mach_timespec_t(0, 1)) == 0  # it signals before it waits
    for _ in range(3):
        assert M.semaphore_signal(s) == 0
    assert _count(s) == 3
    assert M.semaphore_timedwait(s, M.mach_timespec_t(0, 1_000_000_000)) == M.KERN_INVALID_VALUE
    assert M.semaphore_timedwait(s, M.mach_timespec_t(0, -1)) == M.KERN_INVALID_VALUE
    assert M.semaphore_timedwait_signal(s, s, M.mach_timespec_t(0, -1)) == M.KERN_INVALID_VALUE
    assert M.semaphore_destroy(T(), s) == 0


def test_bad_names_get_xnus_codes() -> None:
    s = _sem()
    port = M.mach_port_t()
    assert M.mach_port_allocate(T(), M.MACH_PORT_RIGHT_RECEIVE, byref(port)) == 0
    try:
        cases = {0: M.KERN_INVALID_NAME, 0xFFFFFFFF: M.KERN_INVALID_NAME, 0x7703: M.KERN_INVALID_NAME,
                 port.value: M.KERN_INVALID_RIGHT, T(): M.KERN_INVALID_CAPABILITY}
        for name, kr in cases.items():
            assert M.semaphore_signal(name) == kr, hex(name)
            assert M.semaphore_signal_all(name) == kr
            assert M.semaphore_signal_thread(name, 0) == kr
            assert M.semaphore_wait(name) == kr
            assert M.semaphore_timedwait(name, _no_wait()) == kr
            assert M.semaphore_wait_signal(name, s) == kr
            assert M.semaphore_wait_signal(s, name) == kr  # the signal semaphore is checked first
            assert M.semaphore_destroy(T(), name) == M.KERN_INVALID_ARGUMENT
        assert _count(s) == 0  # no failed call signalled s
        assert M.semaphore_signal_thread(s, T()) == M.KERN_INVALID_ARGUMENT  # not a thread
    finally:
        M.mach_port_mod_refs(T(), port, M.MACH_PORT_RIGHT_RECEIVE, -1)
        M.semaphore_destroy(T(), s)


def test_signal_wakes_a_waiting_thread_and_wait_signal_hands_over() -> None:
    a, b = _sem(), _sem()
    w = _Waiter(lambda: M.semaphore_wait(a))
    assert M.semaphore_signal(a) == 0
    assert w.result() == 0
    # wait_signal: signal b, wait on a, in one call
    w = InThread(lambda: M.semaphore_wait_signal(a, b))
    assert M.semaphore_timedwait(b, M.mach_timespec_t(10, 0)) == 0
    assert M.semaphore_signal(a) == 0
    assert w.result() == 0
    assert M.semaphore_timedwait_signal(a, b, M.mach_timespec_t(0, 10_000_000)) == M.KERN_OPERATION_TIMED_OUT
    assert _count(b) == 1  # signalled all the same
    M.semaphore_destroy(T(), a)
    assert M.semaphore_wait_signal(b, a) == M.KERN_INVALID_NAME  # the right went with destroy
    M.semaphore_destroy(T(), b)


def test_signal_all_wakes_every_waiter_and_leaves_the_count() -> None:
    s = _sem()
    assert M.semaphore_signal_all(s) == 0  # nobody waits: no count
    assert _count(s) == 0
    waiters = [_Waiter(lambda: M.semaphore_wait(s)) for _ in range(3)]
    assert M.semaphore_signal_all(s) == 0
    assert [w.result() for w in waiters] == [0, 0, 0]
    assert _count(s) == 0
    M.semaphore_destroy(T(), s)


def test_signal_thread_wakes_that_thread_or_none() -> None:
    s = _sem()
    assert M.semaphore_signal_thread(s, 0) == M.KERN_NOT_WAITING
    assert _count(s) == 0  # THREAD_NULL does not pre-post
    ports: list[int] = []

    def wait_as_self() -> int:
        ports.append(M.mach_thread_self())
        return M.semaphore_wait(s)

    w1, w2 = _Waiter(wait_as_self), _Waiter(wait_as_self)
    me = M.mach_thread_self()
    assert M.semaphore_signal_thread(s, me) == M.KERN_NOT_WAITING  # this thread does not wait
    assert M.semaphore_signal_thread(s, ports[1]) == 0
    assert w2.result() == 0
    assert w1.th.is_alive()
    assert M.semaphore_signal_thread(s, 0) == 0  # any one: the one left
    assert w1.result() == 0
    assert M.semaphore_signal_thread(s, 0) == M.KERN_NOT_WAITING
    assert _count(s) == 0
    for p in ports + [me]:
        M.mach_port_deallocate(T(), p)
    M.semaphore_destroy(T(), s)


def test_destroy_terminates_waiters_and_later_calls() -> None:
    s = _sem(0)
    assert M.mach_port_mod_refs(T(), s, M.MACH_PORT_RIGHT_SEND, 1) == 0
    waiters = [_Waiter(lambda: M.semaphore_wait(s)) for _ in range(2)]
    timed = _Waiter(lambda: M.semaphore_timedwait(s, M.mach_timespec_t(30, 0)))
    assert M.semaphore_destroy(T(), s) == 0
    assert [w.result() for w in waiters + [timed]] == [M.KERN_TERMINATED] * 3
    for call in (M.semaphore_signal, M.semaphore_signal_all, M.semaphore_wait):
        assert call(s) == M.KERN_TERMINATED
    assert M.semaphore_signal_thread(s, 0) == M.KERN_TERMINATED
    assert M.semaphore_destroy(T(), s) == 0  # the last reference
    assert M.semaphore_signal(s) == M.KERN_INVALID_NAME


def test_a_signal_handler_aborts_a_wait() -> None:
    s = _sem()
    seen: list[int] = []
    old = signal.signal(signal.SIGALRM, lambda signum, _f: seen.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        assert M.semaphore_timedwait(s, M.mach_timespec_t(30, 0)) == M.KERN_ABORTED
        assert seen == [signal.SIGALRM]
        # the Pythonic wait goes on, as PEP 475's calls do
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        assert pymach.Semaphore._of_name(s).wait(0.3) is False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    M.semaphore_destroy(T(), s)


def test_create_and_destroy_by_message_on_the_task_port() -> None:
    pytest.importorskip("pcpp")
    from pymach.mig import compile_defs
    from pymach.mig.rpc import Interface
    from pathlib import Path
    task = Interface(compile_defs(str(Path(pymach.__file__).parent / "defs" / "task.defs")))
    s = M.semaphore_t()
    assert task.c.semaphore_create(T(), byref(s), M.SYNC_POLICY_FIFO, 2) == 0
    assert _count(s.value) == 2
    assert task.c.semaphore_create(T(), byref(M.semaphore_t()), 0x10, 0) == M.KERN_INVALID_ARGUMENT
    w = _Waiter(lambda: M.semaphore_wait(s))
    assert task.c.semaphore_destroy(T(), s) == 0
    assert w.result() == M.KERN_TERMINATED
    assert M.semaphore_signal(s) == M.KERN_INVALID_NAME  # the request moved our right


def test_lsmp_shows_it() -> None:
    import json
    sem = pymach.Semaphore(1)
    assert sem.wait(0) is True
    w = _Waiter(lambda: sem.wait(10))  # a blocked wait: our lock description, an epoll instance
    sem.signal()
    assert w.result() is True
    sem.signal()
    out = subprocess.run([sys.executable, "-m", "pymach", "lsmp", "--json", str(os.getpid())], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    (row,) = [r for r in json.loads(out.stdout)["ports"] if r["name"] == sem.name]
    assert (row["object"], row["count"], row["destroyed"]) == ("semaphore", 1, False)
    sem.destroy()


# -- semaphores in records are untrusted


def _semaphore_record() -> bytes:
    from pymach._kern import ipc_kmsg as KM
    body = struct.pack("<I", 1) + KM.PORT_DESC.pack(1, 0, 0, 0, M.MACH_MSG_TYPE_PORT_SEND,
                                                    M.MACH_MSG_PORT_DESCRIPTOR) + struct.pack("<I", 0)
    rights = KM.RIGHT.pack(KM.KIND_NONE, 0, 0, 0) + KM.RIGHT.pack(KM.KIND_SEMAPHORE, 3, 0, 0)
    bits = M.MACH_MSGH_BITS_SET(0, M.MACH_MSG_TYPE_PORT_SEND, 0, M.MACH_MSGH_BITS_COMPLEX)
    return KM.WIRE.pack(KM.MAGIC, bits, 7, len(body), 2, 3, 0, 0) + rights + body


def _state(sealed: bool = True, size: int = 4096) -> int:
    import fcntl
    fd = os.memfd_create("forged", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if sealed:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    return fd


@pytest.mark.parametrize("case", ["counter_as_count", "semaphore_as_wake", "unsealed_state", "short_state",
                                  "pipe", "good"])
def test_forged_semaphores_are_refused(case: str) -> None:
    import socket
    from pymach._kern.ipc_port import SendCap
    from pymach._kern.task import SELF
    sem_fd = lambda: os.eventfd(0, os.EFD_SEMAPHORE)  # noqa: E731
    fds = {"counter_as_count": lambda: [os.eventfd(0), os.eventfd(0), _state()],
           "semaphore_as_wake": lambda: [sem_fd(), sem_fd(), _state()],
           "unsealed_state": lambda: [sem_fd(), os.eventfd(0), _state(sealed=False)],
           "short_state": lambda: [sem_fd(), os.eventfd(0), _state(size=100)],
           "pipe": lambda: [sem_fd(), *os.pipe()],
           "good": lambda: [sem_fd(), os.eventfd(0), _state()]}[case]()
    with pymach.Port() as port, port.make_send() as send:
        try:
            ie = SELF.space.lookup(port.name)
            assert ie is not None and isinstance(ie.cap, SendCap)
            ie.cap.sock.sendmsg([_semaphore_record()],
                               [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("3i", *fds))])
        finally:
            for fd in fds:
                os.close(fd)
        if case == "good":
            m = port.receive(timeout=2)
            (sem,) = m.rights
            assert isinstance(sem, pymach.Semaphore)
            sem.signal()
            assert sem.wait(0) is True
            m.release()
        else:
            with pytest.raises(pymach.MachError) as e:
                port.receive(timeout=2)
            assert e.value.kr == M.MACH_RCV_BODY_ERROR
        send.send(b"next")
        assert port.receive(timeout=2).data == b"next"


# -- across tasks


@pytest.fixture
def server() -> Iterator[pymach.Port]:
    """A port whose send right fork children inherit (registered)."""
    port = pymach.Port()
    snd = port.make_send()
    pymach.register_ports(snd)
    try:
        yield port
    finally:
        pymach.register_ports()
        snd.close()
        port.close()


def _hand_out(server: pymach.Port, *sems: pymach.Semaphore) -> None:
    """Answer one request on ``server`` with the semaphores."""
    m = server.receive(timeout=10)
    assert m.reply is not None
    m.reply.send(pymach.Message(data=b"", rights=list(sems)))


def _fetch() -> list[pymach.Semaphore]:
    """In a fork child: the semaphores the parent hands out."""
    (server,) = [r for r in pymach.registered_ports() if r is not None]
    m = pymach.request(server, b"semaphores please", timeout=10)
    assert all(isinstance(r, pymach.Semaphore) for r in m.rights)
    return m.rights  # type: ignore[return-value]


def test_a_semaphore_sent_to_another_task_is_signalled_both_ways(server: pymach.Port) -> None:
    ping, pong = pymach.Semaphore(), pymach.Semaphore()

    def child(sync: Callable[[], None]) -> object:
        a, b = _fetch()
        got = []
        for _ in range(3):
            got.append(M.semaphore_wait(a.name))  # the C layer, on the name the message gave
            b.signal()
        return got

    with forked(child) as _sync:
        _hand_out(server, ping, pong)
        for _ in range(3):
            ping.signal()
            assert pong.wait(10) is True
    assert ping.wait(0) is False and pong.wait(0) is False
    ping.destroy()
    pong.destroy()


def test_destroy_wakes_waiters_in_two_tasks(server: pymach.Port) -> None:
    sem = pymach.Semaphore()

    def child(sync: Callable[[], None]) -> object:
        (s,) = _fetch()
        sync()
        with pytest.raises(pymach.MachError) as e:
            s.wait(30)
        # a later call fails the same way; the owner destroyed it, our right stays
        assert M.semaphore_signal(s.name) == M.KERN_TERMINATED
        s.close()
        return e.value.kr

    run = forked(child)
    with run as sync:
        _hand_out(server, sem)
        sync()
        assert run.pid is not None
        _blocked(run.pid, run.pid)
        here = _Waiter(lambda: M.semaphore_wait(sem.name))
        sem.destroy()
        assert here.result() == M.KERN_TERMINATED
    assert run.result == M.KERN_TERMINATED


def test_a_non_owner_destroy_only_releases_its_right(server: pymach.Port) -> None:
    sem = pymach.Semaphore()

    def child(sync: Callable[[], None]) -> object:
        (s,) = _fetch()
        kr = M.semaphore_destroy(T(), s.name)
        s._live = False  # the call released it
        return kr

    with forked(child):
        _hand_out(server, sem)
    sem.signal()
    assert sem.wait(0) is True
    sem.destroy()


def test_a_killed_waiter_takes_no_signal(server: pymach.Port) -> None:
    sem = pymach.Semaphore()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: wait until killed
        try:
            os.close(r)
            (s,) = _fetch()
            os.write(w, b".")
            s.wait(60)
        finally:
            os._exit(3)
    try:
        os.close(w)
        _hand_out(server, sem)
        assert os.read(r, 1) == b"."
        _blocked(pid, pid)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        # its waiter slot died with it: nobody waits
        assert M.semaphore_signal_thread(sem.name, 0) == M.KERN_NOT_WAITING
        sem.signal()
        live = InThread(lambda: sem.wait(10))
        assert live.result() is True
        assert sem.wait(0) is False  # one signal, taken once
    finally:
        os.close(r)
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        sem.destroy()


# -- the Pythonic layer


def test_pythonic_semaphore() -> None:
    with pytest.raises(ValueError):
        pymach.Semaphore(-1)
    sem = pymach.Semaphore(1)
    with sem:
        assert sem.acquire(blocking=False) is False
    assert sem.acquire(timeout=0.01) is True
    sem.release()
    assert sem.wait(0) is True and sem.wait(0.01) is False
    w = _Waiter(lambda: sem.wait(10))
    sem.signal_all()
    assert w.result() is True
    assert pickle.loads(pickle.dumps(sem)).name == sem.name  # in this task: the same right
    M.mach_port_deallocate(T(), sem.name)
    sem.destroy()
    sem.destroy()
    with pytest.raises(pymach.MachError):
        sem.signal()


def _uvloop() -> Callable[[], asyncio.AbstractEventLoop]:
    uvloop = pytest.importorskip("uvloop")
    return uvloop.new_event_loop  # type: ignore[no-any-return]


@pytest.mark.parametrize("loop_factory", [pytest.param(lambda: asyncio.new_event_loop, id="asyncio"),
                                          pytest.param(_uvloop, id="uvloop")])
def test_wait_async_on_the_loop(loop_factory: Callable[[], Callable[[], asyncio.AbstractEventLoop]]) -> None:
    factory = loop_factory()
    sem = pymach.Semaphore()

    async def main() -> list[object]:
        out: list[object] = []
        t = asyncio.ensure_future(sem.wait_async(10))
        await asyncio.sleep(0)
        sem.signal()
        out.append(await t)
        out.append(await sem.wait_async(0.01))  # times out
        t = asyncio.ensure_future(sem.wait_async())
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        sem.signal()
        out.append(sem.wait(0))  # the cancelled wait took nothing
        t = asyncio.ensure_future(sem.wait_async())
        await asyncio.sleep(0.01)
        M.semaphore_destroy(T(), sem.name)
        with pytest.raises(pymach.MachError) as e:
            await t
        out.append(e.value.kr)
        return out

    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(main()) == [True, False, True, M.KERN_TERMINATED]
    sem._live = False


def test_pickled_for_spawn() -> None:
    a, b = pymach.Semaphore(), pymach.Semaphore()
    code = ("import pickle, sys, pymach\n"
            "a, b = pickle.loads(bytes.fromhex(sys.argv[1]))\n"
            "assert a.wait(10)\n"
            "b.signal()\n")
    proc = pymach.spawn([sys.executable, "-c", code, pickle.dumps((a, b)).hex()])
    try:
        a.signal()
        assert b.wait(20) is True
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        a.destroy()
        b.destroy()


def test_bench_sem_prints_ratios() -> None:
    out = subprocess.run([sys.executable, "-m", "pymach", "bench", "sem", "-n", "20", "--repeat", "1"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    lines = [line.strip() for line in out.stdout.splitlines()]
    assert any(line.startswith("pymach.Semaphore") for line in lines), out.stdout
    assert any(line.startswith("multiprocessing.Semaphore") and "x" in line for line in lines), out.stdout
