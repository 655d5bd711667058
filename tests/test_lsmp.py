"""pymach lsmp: the ports of a pymach process, asked of the process itself
over its introspection socket, from other processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
