"""The Pythonic IPC layer across real processes: fork, spawn, SIGKILL."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time

import pytest

import pymach
import pymach.mach as M
from pymach import Message, Port, PortSet

from procutil import open_fds


def wait_ok(pid: int) -> None:
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_request_reply_across_fork() -> None:
    with Port() as p, p.make_send() as s:
        pymach.register_ports(s)
        try:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    (srv,) = [r for r in pymach.registered_ports() if r]
                    reply = pymach.request(srv, b"ping", id=9, timeout=5)
                    code = 0 if (reply.data, reply.id) == (b"PING", 10) else 2
                finally:
                    os._exit(code)
            m = p.receive(timeout=5)
            assert (m.data, m.id, m.pid) == (b"ping", 9, pid)
            assert isinstance(m.reply, pymach.SendOnceRight)
            m.reply.send(m.data.upper(), id=10)
            wait_ok(pid)
        finally:
            pymach.register_ports()


def test_rights_travel_and_coalesce() -> None:
    with Port() as a, Port() as b, a.make_send() as to_a, b.make_send() as to_b:
        to_a.send(Message(b"take this", rights=[to_b]))
        m = a.receive(timeout=1)
        (got,) = m.rights
        assert got.name == b.name  # the same port: one name in our space
        got.send(b"through it")
        assert b.receive(timeout=1).data == b"through it"
        m.release()


def test_out_of_line_memory_is_copy_on_write_both_ways() -> None:
    with Port() as p, p.make_send() as s:
        payload = bytearray(b"A" * 8192)
        s.send(Message(b"", ool=[payload]))
        payload[:4] = b"BBBB"  # the sender changes its copy after sending
        m = p.receive(timeout=1)
        view = m.ool[0]
        assert bytes(view[:4]) == b"AAAA"
        view[:4] = b"CCCC"  # the receiver writes its copy
        assert bytes(payload[:4]) == b"BBBB"
        m.release()


def test_port_set_receives_from_any_member() -> None:
    with Port() as a, Port() as b, PortSet([a, b]) as ps, b.make_send() as to_b:
        to_b.send(b"to b")
        m = ps.receive(timeout=1)
        assert m.data == b"to b"
        with pytest.raises(pymach.MachError) as e:
            ps.add(a)
        assert e.value.kr == pymach.mach.KERN_ALREADY_IN_SET


def test_receive_times_out() -> None:
    with Port() as p:
        t0 = time.monotonic()
        with pytest.raises(pymach.MachTimeoutError):
            p.receive(timeout=0.05)
        assert time.monotonic() - t0 >= 0.04


def test_send_to_a_killed_receiver_is_invalid_dest() -> None:
    with Port() as mine, mine.make_send() as to_me:
        pymach.register_ports(to_me)
        try:
            pid = os.fork()
            if pid == 0:
                (parent,) = [x for x in pymach.registered_ports() if x]
                with Port() as child_port, child_port.make_send() as to_child:
                    parent.send(Message(b"my port", rights=[to_child]))
                    time.sleep(60)
                os._exit(0)
            m = mine.receive(timeout=5)
            (to_child,) = m.rights
            to_child.send(b"alive?")
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            assert to_child.dead
            with pytest.raises(pymach.MachError) as e:
                to_child.send(b"gone")
            assert e.value.kr == pymach.mach.MACH_SEND_INVALID_DEST
            to_child.close()
        finally:
            pymach.register_ports()


def test_spawned_program_inherits_registered_ports() -> None:
    code = (
        "import pymach\n"
        "(s,) = [r for r in pymach.registered_ports() if r]\n"
        "s.send(b'from a new program', id=77)\n"
    )
    with Port() as p, p.make_send() as s:
        pymach.register_ports(s)
        try:
            proc = pymach.spawn([sys.executable, "-c", code])
            assert proc.wait(timeout=60) == 0
        finally:
            pymach.register_ports()
        m = p.receive(timeout=5)
        assert (m.data, m.id, m.pid) == (b"from a new program", 77, proc.pid)


def test_plain_subprocess_inherits_nothing() -> None:
    code = "import pymach\nprint(pymach.registered_ports())\n"
    with Port() as p, p.make_send() as s:
        pymach.register_ports(s)
        try:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        finally:
            pymach.register_ports()
    assert out.stdout.strip() == "[None, None, None]"


def test_threads_send_and_receive_at_once() -> None:
    n = 200
    with Port() as p, p.make_send() as s:
        got: list[bytes] = []

        def reader() -> None:
            for _ in range(n):
                got.append(p.receive(timeout=5).data)

        t = threading.Thread(target=reader)
        t.start()
        senders = [threading.Thread(target=lambda k=k: [s.send(b"%d:%d" % (k, i)) for i in range(n // 4)])
                   for k in range(4)]
        for th in senders:
            th.start()
        for th in senders:
            th.join()
        t.join()
        assert sorted(got) == sorted(b"%d:%d" % (k, i) for k in range(4) for i in range(n // 4))
        for k in range(4):  # per-sender order is kept
            mine = [g for g in got if g.startswith(b"%d:" % k)]
            assert mine == [b"%d:%d" % (k, i) for i in range(n // 4)]


def test_fileno_works_with_selectors() -> None:
    with Port() as p, p.make_send() as s, selectors.DefaultSelector() as sel:
        sel.register(p.fileno(), selectors.EVENT_READ)
        assert sel.select(timeout=0) == []
        s.send(b"wake")
        assert len(sel.select(timeout=1)) == 1
        assert p.receive(timeout=0).data == b"wake"


def _refs(name: int, right: int) -> int:
    refs = M.mach_port_urefs_t()
    assert M.mach_port_get_refs(M.mach_task_self(), name, right, M.byref(refs)) == M.KERN_SUCCESS
    return refs.value


def _fds() -> set[int]:
    return open_fds()


def test_close_is_idempotent() -> None:
    """A second close() releases nothing more: not the reference another
    object holds for the same name, not the fds that took the numbers the
    first close freed."""
    before = _fds()
    p = Port()
    s, t = p.make_send(), p.make_send()  # two user references on one name
    assert s.name == t.name == p.name and _refs(p.name, M.MACH_PORT_RIGHT_SEND) == 2
    s.close()
    s.close()
    assert _refs(p.name, M.MACH_PORT_RIGHT_SEND) == 1  # t's reference is still there
    t.send(b"still mine")
    assert p.receive(timeout=5).data == b"still mine"
    t.close()
    mine = _fds() - before
    assert mine, "a port with a sender holds fds"
    p.close()
    assert _fds() - before == set()
    assert M.mach_port_type(M.mach_task_self(), p.name, M.byref(M.mach_port_type_t())) == M.KERN_INVALID_NAME
    taken = []
    try:
        while not mine <= set(taken):  # new fds take the numbers p's close freed
            taken.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        p.close()
        t.close()
        for fd in taken:
            os.fstat(fd)  # still open
    finally:
        for fd in taken:
            os.close(fd)
