"""pymach.request() and its reply port, kept per thread as libsyscall keeps
MIG's (mig_get_reply_port): made on a thread's first request and reused,
so that a request makes no port, no epoll set and no connection. A request
that fails destroys it (mig_dealloc_reply_port), so a reply that comes
late is refused and never taken as a later request's; a fork child makes
its own; a thread's port goes when the thread exits.

Whether a thread holds a reply port is read from the task's space (the
receive rights mach_port_names lists); whether anything leaks, from
/proc/self/fd; what a request costs in system calls, from strace. Servers
are threads of ours or os.fork children; every wait has a bound.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import pymach
import pymach.mach as M
from pymach import Message, Port
from procutil import forked, open_fds, run_in_child

WAIT = 10.0  # the upper bound on any wait for something that is due
STOP = 0x7FFFFFF0  # the id that ends a server thread


def receive_rights() -> int:
    """How many receive rights our space names (mach_port_names)."""
    task = M.mach_task_self()
    names, types = M.mach_port_name_array_t(), M.mach_port_type_array_t()
    nc, tc = M.mach_msg_type_number_t(), M.mach_msg_type_number_t()
    assert M.mach_port_names(task, ctypes.byref(names), ctypes.byref(nc), ctypes.byref(types),
                             ctypes.byref(tc)) == M.KERN_SUCCESS
    try:
        return sum(1 for i in range(tc.value) if types[i] & M.MACH_PORT_TYPE_RECEIVE)
    finally:
        for arr, n in ((names, nc.value), (types, tc.value)):
            M.mach_vm_deallocate(task, ctypes.cast(arr, ctypes.c_void_p).value, 4 * n)


def wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, f"not within {WAIT} s: {what}"
        time.sleep(0.01)


def answer(m: Message) -> None:
    m.reply.send(m.data.upper(), id=m.id + 100)  # type: ignore[union-attr]


@contextlib.contextmanager
def echo_server() -> Iterator[pymach.SendRight]:
    """A port whose requests a thread of ours answers (the data upper-cased,
    the id plus 100), and a send right to it."""
    with Port() as port, port.make_send() as right:
        def serve() -> None:
            while True:
                m = port.receive(timeout=3 * WAIT)
                if m.id == STOP:
                    return
                answer(m)
        t = threading.Thread(target=serve)
        t.start()
        try:
            yield right
        finally:
            right.send(b"", id=STOP)
            t.join(WAIT)
            assert not t.is_alive()


def strace_counts(script: str, n: int, calls: list[str]) -> dict[str, int]:
    """Run ``script`` (with ``n`` as argv[1]) in a new interpreter under
    strace -f, and count the calls named."""
    log = f"/tmp/pymach-strace-{os.getpid()}-{n}"
    src = os.path.dirname(os.path.dirname(os.path.abspath(pymach.__file__)))
    env = dict(os.environ, PYTHONPATH=src)
    try:
        subprocess.run(["strace", "-f", "-qq", "-o", log, "-e", "trace=" + ",".join(calls),
                        sys.executable, "-c", script, str(n)], env=env, check=True, timeout=120)
        with open(log) as f:
            text = f.read()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log)
    return {c: len(re.findall(rf"^(?:\d+ +)?{c}\(", text, re.M)) for c in calls}


REQUESTS = """
import sys, threading, pymach
n = int(sys.argv[1])
with pymach.Port() as port, port.make_send() as right:
    def serve():
        while True:
            m = port.receive(timeout=60)
            m.reply.send(m.data, id=m.id)
            if m.id == 1:
                return
    t = threading.Thread(target=serve)
    t.start()
    for _ in range(3):
        pymach.request(right, b"warm up", id=2, timeout=60)
    for _ in range(n):
        assert pymach.request(right, b"x" * 64, id=2, timeout=60).data == b"x" * 64
    pymach.request(right, b"", id=1, timeout=60)
    t.join(60)
    assert not t.is_alive()
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_request_in_steady_state_makes_no_port_epoll_or_connection() -> None:
    calls = ["epoll_create1", "epoll_create", "socketpair", "socket", "eventfd2", "close"]
    short, long = strace_counts(REQUESTS, 50, calls), strace_counts(REQUESTS, 250, calls)
    # the two runs differ only in 200 requests: start-up and shut-down cancel
    assert {c: long[c] - short[c] for c in calls} == {c: 0 for c in calls}


def test_a_thousand_requests_keep_one_reply_port_and_the_same_fds() -> None:
    with echo_server() as right:
        base = receive_rights()
        assert pymach.request(right, b"first", timeout=WAIT).data == b"FIRST"
        fds, rights = open_fds(), receive_rights()
        assert rights == base + 1  # this thread's reply port, made by its first request
        for i in range(1000):
            data = b"a%d" % i * (i % 37)  # 0 to 180 bytes: every length mod 4, and none
            r = pymach.request(right, data, id=i, timeout=WAIT)
            assert (r.data, r.id) == (data.upper(), i + 100)
        assert open_fds() == fds
        assert receive_rights() == rights


def test_two_threads_requesting_at_once_each_get_their_own_replies() -> None:
    with Port() as port, port.make_send() as right:
        def serve() -> None:
            # answered in pairs, the later request first, so that the
            # replies cross
            while True:
                first = port.receive(timeout=3 * WAIT)
                try:
                    second: Message | None = port.receive(timeout=0.05)
                except pymach.MachError as e:
                    assert e.kr == M.MACH_RCV_TIMED_OUT
                    second = None
                for m in [second, first]:
                    if m is not None and m.id != STOP:
                        answer(m)
                if STOP in (first.id, second and second.id):
                    return
        server = threading.Thread(target=serve)
        server.start()
        finish = threading.Event()
        try:
            assert pymach.request(right, b"warm up", timeout=WAIT).data == b"WARM UP"
            base_rights, base_fds = receive_rights(), open_fds()
            step, done = threading.Barrier(2, timeout=WAIT), threading.Barrier(3, timeout=WAIT)
            got: dict[int, list[tuple[bytes, int]]] = {0: [], 1: []}

            def client(k: int) -> None:
                for i in range(100):
                    step.wait()  # both requests are out together
                    r = pymach.request(right, b"t%d-%d" % (k, i), id=1000 * k + i, timeout=WAIT)
                    got[k].append((r.data, r.id))
                done.wait()
                finish.wait(WAIT)

            threads = [threading.Thread(target=client, args=(k,)) for k in (0, 1)]
            for t in threads:
                t.start()
            done.wait()
            assert receive_rights() == base_rights + 2  # a reply port each
            finish.set()
            for t in threads:
                t.join(WAIT)
                assert not t.is_alive()
            for k in (0, 1):
                assert got[k] == [(b"T%d-%d" % (k, i), 1000 * k + i + 100) for i in range(100)]
            wait_until(lambda: receive_rights() == base_rights and open_fds() == base_fds,
                       "the threads' reply ports are released")
        finally:
            finish.set()
            right.send(b"", id=STOP)
            server.join(WAIT)
            assert not server.is_alive()


def test_a_late_reply_after_a_timeout_is_refused_and_the_next_request_gets_its_own() -> None:
    """The server holds the first request's reply right until the client
    has timed out and sent its second request, then answers the first (too
    late) before the second."""
    with Port() as mailbox, mailbox.make_send() as to_mailbox:
        pymach.register_ports(to_mailbox)
        try:
            def server(_sync: Callable[[], None]) -> int:
                (box,) = [r for r in pymach.registered_ports() if r]
                with Port() as p, p.make_send() as to_p:
                    box.send(Message(b"", rights=[to_p]))
                    first = p.receive(timeout=WAIT)
                    second = p.receive(timeout=WAIT)  # sent after the first timed out
                    assert (first.data, second.data) == (b"one", b"two")
                    try:
                        first.reply.send(b"LATE", id=first.id + 100)  # type: ignore[union-attr]
                        late = 0
                    except pymach.MachError as e:
                        late = e.kr
                    answer(second)
                    answer(p.receive(timeout=WAIT))
                    return late

            child = forked(server)
            with child:
                (srv,) = mailbox.receive(timeout=WAIT).rights
                with srv:
                    base = receive_rights()
                    with pytest.raises(pymach.MachError) as e:
                        pymach.request(srv, b"one", id=1, timeout=0.2)
                    assert e.value.kr == M.MACH_RCV_TIMED_OUT
                    assert receive_rights() == base  # the failed request took its reply port with it
                    r = pymach.request(srv, b"two", id=2, timeout=WAIT)
                    assert (r.data, r.id) == (b"TWO", 102)
                    rights = receive_rights()
                    r = pymach.request(srv, b"three", id=3, timeout=WAIT)
                    assert (r.data, r.id) == (b"THREE", 103)
                    assert receive_rights() == rights == base + 1  # a new reply port, kept
            assert child.result == M.MACH_SEND_INVALID_DEST
        finally:
            pymach.register_ports()


def test_a_request_whose_send_fails_leaves_nothing_for_the_next() -> None:
    """A send that fails once its reply right is made leaves a send-once
    notification on the reply port, as in XNU (the reply right made for the
    message is destroyed with it). Here the destination is a send-once
    right, so the reply right is a connection of its own, and the message
    carries a right we do not hold (MACH_SEND_INVALID_RIGHT). The port goes
    with the failed request, so the next request gets its own reply, not
    that notification."""
    with echo_server() as right, Port() as other:
        with Port() as gone:
            stale = pymach.SendRight(gone.name)  # a name we no longer hold
        with other.make_send_once() as once:
            base = receive_rights()
            with pytest.raises(pymach.MachError) as e:
                pymach.request(once, Message(b"x", rights=[stale]), timeout=WAIT)
            assert e.value.kr == M.MACH_SEND_INVALID_RIGHT
            assert receive_rights() == base
        r = pymach.request(right, b"next", id=7, timeout=WAIT)
        assert (r.data, r.id) == (b"NEXT", 107)
        rights = receive_rights()
        r = pymach.request(right, b"again", id=8, timeout=WAIT)
        assert (r.data, r.id) == (b"AGAIN", 108)
        assert receive_rights() == rights == base + 1


def test_a_fork_child_makes_its_own_reply_port() -> None:
    with echo_server() as right:
        # this thread holds a reply port when it forks
        assert pymach.request(right, b"parent", timeout=WAIT).data == b"PARENT"
        pymach.register_ports(right)
        try:
            def child() -> tuple[object, ...]:
                (srv,) = [r for r in pymach.registered_ports() if r]
                base = receive_rights()
                a = pymach.request(srv, b"a", id=1, timeout=WAIT)
                made = receive_rights() - base
                b = pymach.request(srv, b"b", id=2, timeout=WAIT)
                return a.data, a.id, b.data, b.id, made, receive_rights() - base

            assert run_in_child(child) == (b"A", 101, b"B", 102, 1, 1)
        finally:
            pymach.register_ports()
        rights = receive_rights()
        assert pymach.request(right, b"again", timeout=WAIT).data == b"AGAIN"  # ours still serves us
        assert receive_rights() == rights


def test_the_reply_port_of_a_thread_that_exited_is_released() -> None:
    with echo_server() as right:
        assert pymach.request(right, b"warm up", timeout=WAIT).data == b"WARM UP"
        base_rights, base_fds = receive_rights(), open_fds()
        asked, finish = threading.Event(), threading.Event()
        got: list[bytes] = []

        def client() -> None:
            for i in range(3):
                got.append(pymach.request(right, b"c%d" % i, timeout=WAIT).data)
            asked.set()
            finish.wait(WAIT)

        t = threading.Thread(target=client)
        t.start()
        assert asked.wait(WAIT)
        assert receive_rights() == base_rights + 1
        finish.set()
        t.join(WAIT)
        assert not t.is_alive()
        assert got == [b"C0", b"C1", b"C2"]
        wait_until(lambda: receive_rights() == base_rights and open_fds() == base_fds,
                   "the thread's reply port is released")


NESTED = """
import ctypes, signal, threading, pymach
import pymach.mach as M
main = threading.get_ident()
inner = []


def receive_rights():
    task = M.mach_task_self()
    names, types = M.mach_port_name_array_t(), M.mach_port_type_array_t()
    nc, tc = M.mach_msg_type_number_t(), M.mach_msg_type_number_t()
    assert M.mach_port_names(task, ctypes.byref(names), ctypes.byref(nc), ctypes.byref(types),
                             ctypes.byref(tc)) == 0
    return sum(1 for i in range(tc.value) if types[i] & M.MACH_PORT_TYPE_RECEIVE)


with pymach.Port() as port, port.make_send() as right:
    def serve():
        outer = port.receive(timeout=20)
        signal.pthread_kill(main, signal.SIGUSR1)  # the main thread waits in its request
        nested = port.receive(timeout=20)
        outer.reply.send(b"OUTER", id=outer.id + 100)  # answered first
        nested.reply.send(b"INNER", id=nested.id + 100)

    signal.signal(signal.SIGUSR1, lambda *_: inner.append(pymach.request(right, b"inner", id=2, timeout=20)))
    t = threading.Thread(target=serve)
    t.start()
    r = pymach.request(right, b"outer", id=1, timeout=20)
    t.join(20)
    assert (r.data, r.id, inner[0].data, inner[0].id) == (b"OUTER", 101, b"INNER", 102), (r, inner)
    print("ok")
print("receive rights left:", receive_rights())
"""


def test_a_request_made_while_the_threads_own_waits_gets_its_own_reply() -> None:
    """A signal handler's request, made while the thread's own request
    waits on the thread's reply port, uses a port of its own: neither
    takes the other's reply. (In a new interpreter: a handler that shared
    the port would deadlock it, and is stopped by the timeout.)"""
    src = os.path.dirname(os.path.dirname(os.path.abspath(pymach.__file__)))
    out = subprocess.run([sys.executable, "-c", NESTED], env=dict(os.environ, PYTHONPATH=src),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # the thread's own reply port is kept; the handler's went with its request
    assert out.stdout.splitlines() == ["ok", "receive rights left: 1"]
