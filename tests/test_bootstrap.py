"""The bootstrap server and its clients, as real processes.

Every test starts its own server (``python -m pymach bootstrap serve``) on
a socket in a private directory of its own (PYMACH_BOOTSTRAP_SOCKET), with
autostart off unless the test is about autostart, and stops it at the end:
no test touches the user's own server. The test process's bootstrap port
is released at the end of each test, so its fds are back at the baseline.

No test sleeps to let things settle; where a test waits for the server to
act on its own (a dead-name notification), it asks again within a bounded
time.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from ctypes import byref
from typing import Any

import pytest

import pymach
import pymach.bootstrap as bootstrap
import pymach.mach as M
from machutil import Server, bp, check_in, create, destroy, found, look_up, server, sockdir
from procutil import Doomed, forked

__all__ = ["server", "sockdir"]  # fixtures, used by name

T = M.mach_task_self
OK = M.KERN_SUCCESS


def port_type(name: int) -> int:
    t = M.mach_port_type_t()
    assert M.mach_port_type(T(), name, byref(t)) == OK
    return t.value


def new_port(send: bool = True) -> int:
    p = M.mach_port_t()
    assert M.mach_port_allocate(T(), M.MACH_PORT_RIGHT_RECEIVE, byref(p)) == OK
    if send:
        assert M.mach_port_insert_right(T(), p, p, M.MACH_MSG_TYPE_MAKE_SEND) == OK
    return p.value


def status(name: Any) -> tuple[int, int]:
    s = M.bootstrap_status_t(-1)
    kr = M.bootstrap_status(bp(), name, byref(s))
    return kr, s.value


class Text(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t), ("text", ctypes.c_char * 16)]


class TextRcv(ctypes.Structure):
    _pack_ = 4
    _fields_ = Text._fields_ + [("trailer", M.mach_msg_trailer_t)]


def send_text(dest: int, text: bytes) -> int:
    m = Text()
    m.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0)
    m.header.msgh_size = ctypes.sizeof(Text)
    m.header.msgh_remote_port = dest
    m.header.msgh_id = 77
    m.text = text
    return M.mach_msg(m.header, M.MACH_SEND_MSG | M.MACH_SEND_TIMEOUT, m.header.msgh_size, 0, 0, 1000, 0)


def receive_text(port: int, timeout_ms: int = 5000) -> bytes:
    r = TextRcv()
    kr = M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), port, timeout_ms, 0)
    assert kr == OK, M.mach_error_string(kr)
    return r.text


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- 1. the routines and their codes -----------------------------------------------------------------

def test_check_in_look_up_status(server: Server) -> None:
    assert found("com.example.a") == M.BOOTSTRAP_UNKNOWN_SERVICE
    assert status("com.example.a")[0] == M.BOOTSTRAP_UNKNOWN_SERVICE
    kr, svc = check_in("com.example.a")
    try:
        assert kr == OK and port_type(svc) == M.MACH_PORT_TYPE_RECEIVE
        assert check_in("com.example.a")[0] == M.BOOTSTRAP_SERVICE_ACTIVE
        assert status("com.example.a") == (OK, M.BOOTSTRAP_STATUS_ACTIVE)
        kr, right = look_up("com.example.a")
        # the port whose receive right we hold: its name, as in XNU
        assert kr == OK and right == svc and port_type(right) == M.MACH_PORT_TYPE_SEND_RECEIVE
        assert send_text(right, b"through a name") == OK
        assert receive_text(svc) == b"through a name"
        assert create("com.example.a")[0] == M.BOOTSTRAP_NAME_IN_USE
        assert M.mach_port_deallocate(M.mach_task_self(), right) == OK
    finally:
        destroy(svc)
    server.wait_log("'com.example.a' is free")


def test_create_service_then_check_in_gets_the_queued_messages(server: Server) -> None:
    kr, made = create("com.example.made")
    assert kr == OK and port_type(made) == M.MACH_PORT_TYPE_SEND
    assert create("com.example.made")[0] == M.BOOTSTRAP_NAME_IN_USE
    assert status("com.example.made") == (OK, M.BOOTSTRAP_STATUS_INACTIVE)
    kr, right = look_up("com.example.made")  # as launchd: a send right before anyone checks in
    assert kr == OK
    assert send_text(right, b"early") == OK  # queued in the server's receive right
    kr, svc = check_in("com.example.made")
    try:
        # the receive right joins the send right create_service gave, as in XNU
        assert kr == OK and svc == made and port_type(svc) == M.MACH_PORT_TYPE_SEND_RECEIVE
        assert receive_text(svc) == b"early"  # the queue came with the right
        assert status("com.example.made") == (OK, M.BOOTSTRAP_STATUS_ACTIVE)
        assert check_in("com.example.made")[0] == M.BOOTSTRAP_SERVICE_ACTIVE
        assert create("com.example.made")[0] == M.BOOTSTRAP_NAME_IN_USE
    finally:
        destroy(svc, right, made)


def test_register(server: Server) -> None:
    mine = new_port()
    try:
        assert M.bootstrap_register(bp(), "com.example.reg", mine) == OK
        assert status("com.example.reg") == (OK, M.BOOTSTRAP_STATUS_ACTIVE)
        kr, right = look_up("com.example.reg")
        assert kr == OK
        assert send_text(right, b"registered") == OK
        assert receive_text(mine) == b"registered"
        other = new_port()
        # what launchd's and mach_init's code return over an active name
        assert M.bootstrap_register(bp(), "com.example.reg", other) == M.BOOTSTRAP_SERVICE_ACTIVE
        assert check_in("com.example.reg")[0] == M.BOOTSTRAP_SERVICE_ACTIVE
        assert create("com.example.reg")[0] == M.BOOTSTRAP_NAME_IN_USE
        # a name reserved by create_service and not checked in: register replaces it
        kr, made = create("com.example.declared")
        assert kr == OK
        assert M.bootstrap_register(bp(), "com.example.declared", other) == OK
        wait_until(lambda: port_type(made) == M.MACH_PORT_TYPE_DEAD_NAME)  # its port was destroyed
        kr, r2 = look_up("com.example.declared")
        assert kr == OK and send_text(r2, b"replaced") == OK and receive_text(other) == b"replaced"
        # MACH_PORT_NULL removes a declared name, and is refused over an active one
        kr, made2 = create("com.example.undeclared")
        assert M.bootstrap_register(bp(), "com.example.undeclared", M.MACH_PORT_NULL) == OK
        assert found("com.example.undeclared") == M.BOOTSTRAP_UNKNOWN_SERVICE
        assert M.bootstrap_register(bp(), "com.example.reg", M.MACH_PORT_NULL) == M.BOOTSTRAP_SERVICE_ACTIVE
        assert M.bootstrap_register(bp(), "com.example.x", 0x12345) == M.MACH_SEND_INVALID_RIGHT
        destroy(right, r2, made, made2, other)
        server.wait_log("'com.example.declared' is free")
    finally:
        destroy(mine)
    server.wait_log("'com.example.reg' is free")


def test_bootstrap_strerror_is_launchds() -> None:
    assert [M.bootstrap_strerror(c) for c in (
        M.BOOTSTRAP_SUCCESS, M.BOOTSTRAP_NOT_PRIVILEGED, M.BOOTSTRAP_NAME_IN_USE, M.BOOTSTRAP_UNKNOWN_SERVICE,
        M.BOOTSTRAP_SERVICE_ACTIVE, M.BOOTSTRAP_BAD_COUNT, M.BOOTSTRAP_NO_MEMORY)] == [
        "Success", "Permission denied", "Service name already exists", "Unknown service name",
        "Service name already exists", "Too many lookups were requested in one request", "Out of memory"]
    # the rest read as mach_error_string: NO_CHILDREN has no string of its own
    assert M.bootstrap_strerror(M.BOOTSTRAP_NO_CHILDREN) == M.mach_error_string(1106) == "unknown error code"
    assert M.bootstrap_strerror(M.MACH_SEND_INVALID_DEST) == "(ipc/send) invalid destination port"
    assert (M.BOOTSTRAP_NOT_PRIVILEGED, M.BOOTSTRAP_NAME_IN_USE, M.BOOTSTRAP_UNKNOWN_SERVICE,
            M.BOOTSTRAP_SERVICE_ACTIVE, M.BOOTSTRAP_BAD_COUNT, M.BOOTSTRAP_NO_MEMORY,
            M.BOOTSTRAP_NO_CHILDREN) == tuple(range(1100, 1107))
    assert (M.BOOTSTRAP_STATUS_INACTIVE, M.BOOTSTRAP_STATUS_ACTIVE, M.BOOTSTRAP_STATUS_ON_DEMAND) == (0, 1, 2)
    assert ctypes.sizeof(M.name_t) == M.BOOTSTRAP_MAX_NAME_LEN == 128


# -- 2. names -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["", b"", "n" * 128, b"n" * 200, "a\0b", b"\0"])
def test_bad_names_are_refused_by_every_routine(server: Server, bad: str | bytes) -> None:
    p = M.mach_port_t()
    st = M.bootstrap_status_t()
    mine = new_port()
    try:
        for kr in (M.bootstrap_check_in(bp(), bad, byref(p)), M.bootstrap_look_up(bp(), bad, byref(p)),
                   M.bootstrap_create_service(bp(), bad, byref(p)), M.bootstrap_register(bp(), bad, mine),
                   M.bootstrap_status(bp(), bad, byref(st))):
            assert kr == M.KERN_INVALID_ARGUMENT
        with pytest.raises(bootstrap.BootstrapError) as ei:
            bootstrap.look_up(bad)
        assert ei.value.kr == M.KERN_INVALID_ARGUMENT
    finally:
        destroy(mine)


def test_name_lengths_and_c_strings(server: Server) -> None:
    longest = "n" * 127
    kr, svc = check_in(longest)
    try:
        assert kr == OK
        assert found(longest.encode()) == OK
        field = M.name_t()
        field.value = longest.encode()
        assert found(field) == OK  # a name_t, as C passes it
        assert found(ctypes.c_char_p(longest.encode())) == OK
        assert [s.name for s in bootstrap.services()] == [longest]
        assert found("n" * 126) == M.BOOTSTRAP_UNKNOWN_SERVICE
        assert found("π-ü") == M.BOOTSTRAP_UNKNOWN_SERVICE  # UTF-8 bytes
    finally:
        destroy(svc)


def test_the_server_checks_the_name_field_itself(server: Server) -> None:
    """A hand-made request (not through the client's checks): a field with
    no NUL is MIG's type error, an empty name an invalid argument."""
    reply = new_port(send=False)
    try:
        for field, want in ((b"x" * 128, M.MIG_BAD_ARGUMENTS), (b"", M.KERN_INVALID_ARGUMENT)):
            req = M.bootstrap_defs.bootstrap_name_request_t()
            ctypes.memmove(ctypes.addressof(req) + M.bootstrap_defs.bootstrap_name_request_t.service_name.offset,
                           field, len(field))
            req.Head.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE)
            req.Head.msgh_size = ctypes.sizeof(req)
            req.Head.msgh_remote_port = bp()
            req.Head.msgh_local_port = reply
            req.Head.msgh_id = 404
            assert M.mach_msg(req.Head, M.MACH_SEND_MSG, ctypes.sizeof(req), 0, 0, 0, 0) == OK
            rcv = M.bootstrap_defs.bootstrap_reply_buffer_t()
            assert M.mach_msg(rcv.Head, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(rcv), reply, 5000,
                              0) == OK
            r = M.mig_reply_error_t.from_buffer(rcv)
            assert (r.Head.msgh_id, r.RetCode) == (504, want)
        # an unknown routine: MIG_BAD_ID
        req.Head.msgh_id = 499
        assert M.mach_msg(req.Head, M.MACH_SEND_MSG, ctypes.sizeof(req), 0, 0, 0, 0) == OK
        assert M.mach_msg(rcv.Head, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(rcv), reply, 5000, 0) == OK
        assert M.mig_reply_error_t.from_buffer(rcv).RetCode == M.MIG_BAD_ID
    finally:
        destroy(reply)


# -- 3. the Pythonic layer ------------------------------------------------------------------------------

def test_pythonic_layer(server: Server) -> None:
    with pytest.raises(bootstrap.BootstrapError) as ei:
        bootstrap.look_up("com.example.py")
    assert ei.value.kr == M.BOOTSTRAP_UNKNOWN_SERVICE
    assert isinstance(ei.value, pymach.MachError) and "Unknown service name" in str(ei.value)
    assert type(pymach.MachError(M.BOOTSTRAP_UNKNOWN_SERVICE)) is pymach.BootstrapError
    with bootstrap.check_in("com.example.py") as port:
        assert isinstance(port, pymach.Port)
        with pytest.raises(bootstrap.BootstrapError) as ei:
            bootstrap.check_in("com.example.py")
        assert ei.value.kr == M.BOOTSTRAP_SERVICE_ACTIVE
        with bootstrap.look_up("com.example.py") as right:
            assert isinstance(right, pymach.SendRight)
            right.send(b"hi", id=5)
            assert port.receive(timeout=5).data == b"hi"
        with bootstrap.create_service("com.example.later") as later:
            assert bootstrap.status("com.example.later") == M.BOOTSTRAP_STATUS_INACTIVE
            with pytest.raises(bootstrap.BootstrapError) as ei:
                bootstrap.create_service("com.example.later")
            assert ei.value.kr == M.BOOTSTRAP_NAME_IN_USE
            with port.make_send() as mine:
                bootstrap.register("com.example.alias", mine)
                with pytest.raises(bootstrap.BootstrapError) as ei:
                    bootstrap.register("com.example.alias", mine)
                assert ei.value.kr == M.BOOTSTRAP_SERVICE_ACTIVE
            rows = {s.name: s for s in bootstrap.services()}
            assert rows["com.example.py"].pid == os.getpid() and rows["com.example.py"].status_name == "active"
            assert rows["com.example.alias"].pid == os.getpid()
            assert rows["com.example.later"].pid is None and rows["com.example.later"].status_name == "inactive"
            bootstrap.register("com.example.later", None)
            assert later.dead
        assert bootstrap.status("com.example.py") == M.BOOTSTRAP_STATUS_ACTIVE
    server.wait_log("'com.example.py' is free")


# -- 4. dead services: kernel facts free their names ---------------------------------------------------------

def _check_in_and_report(name: str) -> int:
    kr, _svc = check_in(name)
    return kr


def test_sigkilled_service_frees_its_name_by_dead_name_notification(server: Server) -> None:
    bp()  # children inherit TASK_BOOTSTRAP_PORT
    with Doomed(lambda: _check_in_and_report("com.example.mortal")) as child:
        assert child.ready() == OK
        assert check_in("com.example.mortal")[0] == M.BOOTSTRAP_SERVICE_ACTIVE
        assert status("com.example.mortal") == (OK, M.BOOTSTRAP_STATUS_ACTIVE)
        rows = {s.name: s for s in bootstrap.services()}
        assert rows["com.example.mortal"].pid == child.pid
        child.kill()
    # status reads the table as the notifications leave it: the server is
    # told of the death, nobody asks it to look
    wait_until(lambda: status("com.example.mortal")[0] == M.BOOTSTRAP_UNKNOWN_SERVICE)
    server.wait_log("'com.example.mortal' is free: its port died (dead-name notification)")
    with Doomed(lambda: _check_in_and_report("com.example.mortal")) as second:
        assert second.ready() == OK


def test_check_in_right_after_the_holder_is_killed(server: Server) -> None:
    bp()
    for _ in range(3):
        with Doomed(lambda: _check_in_and_report("com.example.phoenix")) as child:
            assert child.ready() == OK
        # no wait at all: the server looks at the port before it refuses
        with Doomed(lambda: _check_in_and_report("com.example.phoenix")) as again:
            assert again.ready() == OK


def test_registered_service_dies_with_its_process(server: Server) -> None:
    bp()

    def register_own() -> int:
        return M.bootstrap_register(bp(), "com.example.reg.mortal", new_port())

    with Doomed(register_own) as child:
        assert child.ready() == OK
        assert found("com.example.reg.mortal") == OK
    mine = new_port()
    try:
        assert M.bootstrap_register(bp(), "com.example.reg.mortal", mine) == OK
    finally:
        destroy(mine)


# -- 5. the server dies and comes back --------------------------------------------------------------------------

def test_server_killed_and_restarted_clients_recover(server: Server) -> None:
    old = bp()
    kr, svc = check_in("com.example.survivor")
    assert kr == OK
    try:
        server.kill()
        assert port_type(old) == M.MACH_PORT_TYPE_DEAD_NAME  # clients see a dead name
        assert found("com.example.survivor", old) == M.MACH_SEND_INVALID_DEST  # reconnect finds no server
        server.start()
        # the same (dead) name: the C layer reconnects once and sends again
        assert found("com.example.survivor", old) == M.BOOTSTRAP_UNKNOWN_SERVICE  # a new server, empty
        assert port_type(old) == M.MACH_PORT_TYPE_DEAD_NAME
        new = bp()  # the new connection's name; bootstrap_port stays the old one
        assert new != old == M.bootstrap_port and port_type(new) == M.MACH_PORT_TYPE_SEND
        # the service (alive all along) registers again, and lookups succeed
        with pymach.Port(svc) as p, p.make_send() as s:
            assert M.bootstrap_register(old, "com.example.survivor", s.name) == OK
            kr, right = look_up("com.example.survivor", old)
            assert kr == OK
            assert send_text(right, b"again") == OK and receive_text(svc) == b"again"
            destroy(right)
        svc = 0
    finally:
        destroy(svc)


def test_server_killed_while_a_child_holds_the_inherited_port(server: Server) -> None:
    bp()

    def child(sync: Callable[[], None]) -> tuple[int, int]:
        first = found("com.example.none")
        sync()  # the parent kills and restarts the server
        sync()
        return first, found("com.example.none")

    f = forked(child)
    with f as sync:
        sync()
        server.kill()
        server.start()
        sync()
    # the child's inherited TASK_BOOTSTRAP_PORT died; it reconnected through the socket
    assert f.result == (M.BOOTSTRAP_UNKNOWN_SERVICE, M.BOOTSTRAP_UNKNOWN_SERVICE)


# -- 6. concurrency ----------------------------------------------------------------------------------------------

def test_one_hundred_concurrent_registrations_one_wins(server: Server) -> None:
    bp()  # the children inherit it
    n = 100
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    end_r, end_w = os.pipe()
    pids = []
    try:
        for _ in range(n):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - a child
                code = 1
                try:
                    for fd in (go_w, res_r, end_w):
                        os.close(fd)
                    port = new_port()
                    os.read(go_r, 1)  # all start together
                    kr = M.bootstrap_register(M.bootstrap_port, "com.example.contended", port)
                    os.write(res_w, int(kr).to_bytes(4, "little") + os.getpid().to_bytes(4, "little"))
                    os.read(end_r, 1)  # the winner keeps its port until every child has tried
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        os.close(go_w)
        go_w = -1
        results = []
        with os.fdopen(res_r, "rb", closefd=False) as f:
            for _ in range(n):
                rec = f.read(8)
                results.append((int.from_bytes(rec[:4], "little"), int.from_bytes(rec[4:], "little")))
        codes = [kr for kr, _ in results]
        assert codes.count(OK) == 1 and codes.count(M.BOOTSTRAP_SERVICE_ACTIVE) == n - 1, codes
        winner = next(pid for kr, pid in results if kr == OK)
        (row,) = [s for s in bootstrap.services() if s.name == "com.example.contended"]
        assert row.pid == winner and row.status == M.BOOTSTRAP_STATUS_ACTIVE
    finally:
        for fd in (go_w, go_r, res_r, res_w, end_w, end_r):
            if fd >= 0:
                os.close(fd)
        for pid in pids:
            os.waitpid(pid, 0)
    server.wait_log("'com.example.contended' is free")


# -- 8. the rendezvous: autostart (squatters and stale sockets: test_security.py) ---------------------------------------

def _peer_pid(path: str) -> int:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with s:
        s.connect(path)
        import struct
        return struct.unpack("iII", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]


def test_autostart_and_no_autostart(sockdir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = os.path.join(sockdir, "bootstrap")
    # off: a clear error, and nothing is started
    assert M.bootstrap_port_connect(byref(M.mach_port_t())) == M.MACH_SEND_INVALID_DEST
    assert "PYMACH_NO_AUTOSTART" in M.bootstrap_port_error() and path in M.bootstrap_port_error()
    assert found("com.example.auto", M.bootstrap_port) == M.MACH_SEND_INVALID_DEST  # the name holds nothing
    with pytest.raises(bootstrap.BootstrapError) as ei:
        bootstrap.look_up("com.example.auto")
    assert ei.value.kr == M.MACH_SEND_INVALID_DEST
    assert not os.path.exists(path)
    # on: the first client starts a server, detached, and waits until it accepts
    monkeypatch.delenv("PYMACH_NO_AUTOSTART")
    try:
        assert found("com.example.auto") == M.BOOTSTRAP_UNKNOWN_SERVICE
        pid = _peer_pid(path)
        assert _servers_for(path) == [pid]
        assert os.getsid(pid) != os.getsid(0)  # a session of its own (setsid)
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # and not our child: it forked into the background
        kr, svc = check_in("com.example.auto")
        assert kr == OK
        destroy(svc)
    finally:
        M.bootstrap_port_disconnect()
        _stop_servers_for(path)
    assert not os.path.exists(path)


def test_concurrent_autostarts_start_one_server(sockdir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = os.path.join(sockdir, "bootstrap")
    monkeypatch.delenv("PYMACH_NO_AUTOSTART")
    code = ("import pymach.mach as M, ctypes; p = M.mach_port_t(); "
            "raise SystemExit(M.bootstrap_look_up(M.bootstrap_port, 'x', ctypes.byref(p)) != 1102)")
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
    try:
        assert [p.wait(30) for p in procs] == [0] * 4
        assert _servers_for(path) == [_peer_pid(path)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        _stop_servers_for(path)


def _servers_for(path: str) -> list[int]:
    """The pids of the bootstrap servers started for ``path``."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _is_server_for(int(p), path)]


def _stop_servers_for(path: str) -> None:
    for pid in _servers_for(path):
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not _servers_for(path), timeout=10)


def _is_server_for(pid: int, path: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return False
    return b"serve" in cmd and b"bootstrap" in cmd and f"PYMACH_BOOTSTRAP_SOCKET={path}".encode() in env


# -- 9. inheritance, the CLI (resource limits: test_security.py) -----------------------------------------------------

def test_spawned_program_inherits_the_bootstrap_port(server: Server, sockdir: str) -> None:
    kr, svc = check_in("com.example.parent")
    assert kr == OK
    try:
        code = ("import pymach.mach as M, ctypes; p = M.mach_port_t(); "
                "print(M.bootstrap_look_up(M.bootstrap_port, 'com.example.parent', ctypes.byref(p)))")
        # the socket is somewhere else and autostart is off: only the
        # inherited TASK_BOOTSTRAP_PORT can reach the server
        env = dict(os.environ, PYMACH_BOOTSTRAP_SOCKET=os.path.join(sockdir, "nowhere"), PYMACH_NO_AUTOSTART="1")
        p = pymach.spawn([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE)
        out, _ = p.communicate(timeout=30)
        assert out.strip() == b"0"
    finally:
        destroy(svc)


def test_list_cli(server: Server) -> None:
    kr, svc = check_in("com.example.listed")
    assert kr == OK
    kr, made = create("com.example.declared")
    assert kr == OK
    try:
        run = [sys.executable, "-m", "pymach", "bootstrap", "list"]
        out = subprocess.run(run, capture_output=True, text=True, timeout=30, check=True).stdout
        assert out.splitlines() == ["PID\tSTATUS\tNAME", "-\tinactive\tcom.example.declared",
                                    f"{os.getpid()}\tactive\tcom.example.listed"]
        out = subprocess.run(run + ["--json"], capture_output=True, text=True, timeout=30, check=True).stdout
        assert json.loads(out) == [{"name": "com.example.declared", "status": "inactive", "pid": None},
                                   {"name": "com.example.listed", "status": "active", "pid": os.getpid()}]
        st = subprocess.run([sys.executable, "-m", "pymach", "bootstrap", "status", "com.example.listed"],
                            capture_output=True, text=True, timeout=30)
        assert (st.returncode, st.stdout) == (0, "com.example.listed: active\n")
        st = subprocess.run([sys.executable, "-m", "pymach", "bootstrap", "status", "com.example.none"],
                            capture_output=True, text=True, timeout=30)
        assert st.returncode == 1 and "Unknown service name (kr=1102)" in st.stderr
    finally:
        destroy(svc, made)


