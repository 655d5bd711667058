"""pymach lsmp: the ports of a pymach process, asked of the process itself
over its introspection socket, from other processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import pymach
from pymach.servers import introspect
from procutil import child_exit_code, forked, open_fds


def lsmp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pymach", "lsmp", *args], capture_output=True, text=True,
                          timeout=60)


def test_lsmp_lists_our_rights_with_real_counts() -> None:
    with pymach.Port() as p, p.make_send() as s:
        s.send(b"one")
        s.send(b"two")
        with pymach.Task.self().allocate(8192) as r:
            entry = r.memory_entry()
            try:
                out = json.loads(lsmp(str(os.getpid()), "--json").stdout)
            finally:
                entry.close()
    assert out["pid"] == os.getpid()
    rows = {r["name"]: r for r in out["ports"]}
    port = rows[p.name]
    assert port["rights"] == ["recv", "send"] and port["object"] == "port"
    assert (port["qlimit"], port["msgcount"], port["seqno"], port["mscount"]) == (5, 2, 0, 1)
    assert rows[entry.name]["object"] == "memory-entry" and rows[entry.name]["size"] == 8192
    assert any(r["object"] == "task" and r["pid"] == os.getpid() for r in rows.values())


def test_lsmp_text_output_of_a_fork_child() -> None:
    r, w = os.pipe()

    def child(sync) -> None:  # type: ignore[no-untyped-def]
        port = pymach.Port()  # kept open: the parent looks at it
        port.make_send().send(b"x")
        os.write(w, b"%d %d\n" % (os.getpid(), port.name))
        sync()

    try:
        with forked(child) as sync:
            pid, name = map(int, os.read(r, 64).split())
            out = lsmp(str(pid))
            sync()
    finally:
        os.close(r)
        os.close(w)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"Process ({pid}) : 3 names"
    row = next(line for line in lines if line.split()[0] == f"{name:#010x}")
    assert row.split()[1:7] == ["recv+send", "1", "5", "1", "0", "1"]


def test_a_process_without_pymach_is_reported() -> None:
    p = subprocess.Popen(["sleep", "30"])
    try:
        out = lsmp(str(p.pid))
    finally:
        p.kill()
        p.wait()
    assert out.returncode == 1 and "does not run pymach" in out.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to drop to another user")
def test_another_uid_is_refused() -> None:
    me = os.getpid()
    before = open_fds()

    def as_nobody() -> None:
        os.setgid(65534)
        os.setuid(65534)
        try:
            introspect.query(me, "ports")
        except PermissionError:
            os._exit(0)
        os._exit(1)
    assert child_exit_code(as_nobody) == 0
    # the introspection thread closes the refused connection after the
    # child has gone: wait for it, not for a fixed time
    deadline = time.monotonic() + 10
    while open_fds() != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert open_fds() == before


def _accept_slots() -> set[int]:
    """fd numbers that open() skips though /proc/self/fd does not list them
    (among the 64 lowest free ones): those a thread blocked in accept()
    holds. The kernel takes the lowest free number when accept() starts and
    fills it when a connection comes."""
    listed = open_fds()
    got: list[int] = []
    try:
        while not got or (got[-1] < max(listed) and len(got) < 64):
            got.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
    finally:
        for fd in got:
            os.close(fd)
    return set(range(got[-1])) - listed - set(got)


def _accept_slot(th: threading.Thread, srv: socket.socket, others: set[int]) -> int:
    """The number ``th`` holds once it is blocked in accept() on ``srv``
    (its /proc/self/task/TID/syscall: the call it is blocked in, then its
    arguments, the first one the listening fd); ``others`` are the numbers
    the runtime's own threads hold, the introspection thread's."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/self/task/{th.native_id}/syscall") as f:
            fields = f.read().split()
        if len(fields) > 1 and int(fields[1], 16) == srv.fileno():
            break
        time.sleep(0.01)
    (slot,) = _accept_slots() - others
    return slot


def test_the_fd_census_does_not_move_with_the_number_accept_holds() -> None:
    """The introspection thread waits in accept(), which holds the lowest
    free number until a connection comes; once it has served one, it holds
    the lowest free number of that moment. So when free numbers below the
    one it held have appeared meanwhile, serving a connection moves it
    down, as test_another_uid_is_refused's refusal does. A census of
    /proc/self/fd that counted the fd it read it with (whose number follows
    the free ones) saw that as a leak; open_fds() must not.

    The same moves, made here on a socket of our own: the thread that
    accepts the first connection goes back to accept() while the
    connection and another fd still hold lower numbers, then both are
    closed."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    clients = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) for _ in range(3)]
    accepted: list[socket.socket] = []
    threads: list[threading.Thread] = []
    pads: list[int] = []
    others = _accept_slots()

    def accept_one() -> int:
        th = threading.Thread(target=lambda: accepted.append(srv.accept()[0]), daemon=True)
        th.start()
        threads.append(th)
        return _accept_slot(th, srv, others)
    try:
        srv.bind("")  # an abstract name of the kernel's choosing
        srv.listen(3)
        accept_one()
        clients[0].connect(srv.getsockname())
        threads[0].join(10)
        pads.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        high = accept_one()  # back in accept() above the connection and the pad
        accepted.pop().close()
        os.close(pads.pop())
        before = open_fds()
        clients[1].connect(srv.getsockname())
        threads[1].join(10)
        accepted.pop().close()
        low = accept_one()
        after = open_fds()
        clients[2].connect(srv.getsockname())
        threads[2].join(10)
    finally:
        for s in [srv, *clients, *accepted]:
            s.close()
        for fd in pads:
            os.close(fd)
    assert not any(th.is_alive() for th in threads)
    assert low < high
    assert after == before


def test_region_of_a_pymach_process_merges_its_mach_attributes() -> None:
    code = ("import pymach, time\n"
            "r = pymach.Task.self().allocate(3 * 4096)\n"
            "r.protect(pymach.VM_PROT_READ, set_maximum=True)\n"
            "r.inherit(pymach.VM_INHERIT_NONE)\n"
            "print(hex(r.address), flush=True)\n"
            "time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        addr = int(p.stdout.readline(), 16)
        with pymach.Task.for_pid(p.pid) as t:
            info = t.region(addr)
        assert (info.start, info.protection, info.max_protection) == (addr, pymach.VM_PROT_READ, pymach.VM_PROT_READ)
        assert info.inheritance == pymach.VM_INHERIT_NONE and info.pymach
    finally:
        p.kill()
        p.wait()
        if p.stdout is not None:
            p.stdout.close()
