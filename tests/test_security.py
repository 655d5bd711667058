"""Security cases, each across real process boundaries:

1. credentials: the audit trailer is the kernel's (SCM_CREDENTIALS); no
   sender can claim other ids, write its own trailer, or pass for the
   kernel (a notification);
2. other uids: refused by the bootstrap server (rendezvous and each
   request) and by task_for_pid;
3. the rendezvous: squatted or pre-created paths in the bootstrap
   directory are refused;
4. stale names: a freed name, and an fd closed behind the runtime's back
   whose number was reused, never reach another object;
5. more rights than one SCM_RIGHTS record carries (253 fds) in one message;
6. a receiver at RLIMIT_NOFILE: a clear error, nothing leaked, the queue
   place freed, the next message delivered;
7. the bootstrap server's per-client and total limits, and fairness.

The server tests use the private servers of machutil, as test_bootstrap
does (a socket in a 0700 directory of the test's own,
PYMACH_BOOTSTRAP_SOCKET).
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from ctypes import byref, sizeof
from typing import Any

import pytest

import pymach.mach as M
from machutil import (PORT_SEND, R_RECEIVE, TY_SEND, TY_SEND_ONCE, PortMsgRcv, Server, alloc_name, bp, check_in,
                      create, destroy, found, lookup_registered, register, send_port, serve_exit, server, sockdir, tfp,
                      type_kr)
from procutil import (NOBODY, ROOT_ONLY, Doomed, become_nobody, forked, open_fds, run_in_child, sleep_process,
                      stop_process)
from pymach._kern import ipc_kmsg, ipc_port
from pymach._kern import kern_return as K
from pymach._kern.task import SELF
from pymach.servers import rendezvous
from pymach.task import Task

__all__ = ["server", "sockdir"]  # fixtures, used by name

T = M.mach_task_self
OK = M.KERN_SUCCESS
AUDIT = M.MACH_RCV_TRAILER_ELEMENTS(M.MACH_RCV_TRAILER_AUDIT)
SEC_TRAILER = M.MACH_RCV_TRAILER_ELEMENTS(M.MACH_RCV_TRAILER_SENDER)
SIMPLE_BITS = 0x1100  # a record's bits as the receiver sees them: local PORT_SEND


def cap_of(name: int) -> Any:
    e = SELF.space.lookup(name)
    assert e is not None and e.cap is not None
    return e.cap


def own_port(qlimit: int | None = None) -> int:
    """A port with a send right under its name."""
    p = alloc_name(R_RECEIVE)
    assert M.mach_port_insert_right(T(), p, p, M.MACH_MSG_TYPE_MAKE_SEND) == OK
    if qlimit is not None:
        lim = M.mach_port_limits_t(qlimit)
        assert M.mach_port_set_attributes(T(), p, M.MACH_PORT_LIMITS_INFO, byref(lim), 1) == OK
    return p


def record(body: bytes = b"\0" * 8, msg_id: int = 7, flags: int = 0) -> bytes:
    """A well-formed simple message record, as a pymach sender writes it."""
    return (ipc_kmsg.WIRE.pack(ipc_kmsg.MAGIC, SIMPLE_BITS, msg_id, len(body), 1, 0, flags, 0)
            + ipc_kmsg.RIGHT.pack(0, 0, 0, 0) + body)


def receive(port: int, option: int = AUDIT, timeout_ms: int = 5000, size: int = 8192) -> tuple[int, bytes, Any]:
    """(kr, message bytes, audit trailer)."""
    buf = (ctypes.c_char * size)()
    hdr = M.mach_msg_header_t.from_buffer(buf)
    kr = M.mach_msg(hdr, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT | option, 0, size, port, timeout_ms, 0)
    if kr != OK:
        return kr, b"", None
    trailer = M.mach_msg_audit_trailer_t.from_buffer_copy(buf, hdr.msgh_size)
    return kr, bytes(buf[:hdr.msgh_size]), trailer


def send_simple(dest: int, msg_id: int = 1, option: int = 0, timeout_ms: int = 0,
                disposition: int = M.MACH_MSG_TYPE_COPY_SEND) -> int:
    h = M.mach_msg_header_t()
    h.msgh_bits = M.MACH_MSGH_BITS(disposition, 0)
    h.msgh_size = sizeof(h)
    h.msgh_remote_port = dest
    h.msgh_id = msg_id
    return M.mach_msg(h, M.MACH_SEND_MSG | option, sizeof(h), 0, 0, timeout_ms, 0)


# -- 1. credentials ---------------------------------------------------------------------------------------------------

def _creds(pid: int, uid: int, gid: int) -> list[tuple[int, int, bytes]]:
    return [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, struct.pack("iII", pid, uid, gid))]


@ROOT_ONLY
def test_explicit_credentials_naming_others_fail_in_the_kernel_and_the_body_cannot_write_the_trailer() -> None:
    port = own_port(qlimit=16)
    raw = os.dup(cap_of(port).sock.fileno())  # a sending end the child writes on by hand
    parent = os.getpid()
    # a body that holds what a trailer would: it stays the body
    fake = struct.pack("<II2I8I", 0, 52, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0)

    def child(_sync: Callable[[], None]) -> list[str]:
        become_nobody()
        s = socket.socket(fileno=raw)
        me = os.getpid()
        out = []
        for pid, uid, gid in ((me, 0, 0), (parent, NOBODY, NOBODY), (1, NOBODY, NOBODY), (me, NOBODY, 0)):
            try:
                s.sendmsg([record(fake)], _creds(pid, uid, gid))
                out.append("sent")
            except PermissionError:
                out.append("EPERM")
        s.sendmsg([record(fake, msg_id=8)], _creds(me, NOBODY, NOBODY))  # its own ids: allowed
        s.sendmsg([record(fake, msg_id=9)])
        s.detach()
        return out + [str(me)]

    try:
        f = forked(child)
        with f:
            pass
        *verdicts, cpid = f.result
        assert verdicts == ["EPERM"] * 4, f.result
        for want_id in (8, 9):
            kr, msg, trailer = receive(port)
            assert kr == OK and M.mach_msg_header_t.from_buffer_copy(msg).msgh_id == want_id
            assert msg[sizeof(M.mach_msg_header_t):] == fake  # delivered as the body it is
            audit = list(trailer.msgh_audit.val)
            assert (audit[1], audit[2], audit[5]) == (NOBODY, NOBODY, int(cpid))  # euid, egid, pid
            assert list(trailer.msgh_sender.val) == [NOBODY, NOBODY]
        assert receive(port, timeout_ms=0)[0] == M.MACH_RCV_TIMED_OUT  # nothing forged got through
    finally:
        os.close(raw)
        destroy(port)


def test_a_forged_kernel_notification_is_not_the_kernels() -> None:
    """Notifications are told by their sender: {0, 1} in the security
    trailer only for what our own runtime made (kernel-verified pid). A
    peer that writes a notification record, or that joins a channel whose
    receiving end does not pass credentials, is never the kernel."""
    port = own_port(qlimit=16)
    raw = os.dup(cap_of(port).sock.fileno())
    dead_name = struct.pack("<8sI", bytes([0, 0, 0, 0, 1, 0, 0, 0]), 0x1234)

    def child(sync: Callable[[], None]) -> int:
        if os.geteuid() == 0:
            become_nobody()
        s = socket.socket(fileno=raw)
        # 1. a dead-name notification written by hand, flagged as the runtime's
        s.sendmsg([record(dead_name, msg_id=M.MACH_NOTIFY_DEAD_NAME, flags=1)])
        # 2. a channel whose receiving end the child made without SO_PASSCRED,
        # and whose copy it keeps, to turn it off again after it is adopted
        tx, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        near, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.sendmsg([ipc_port.control_record(ipc_port.FLAG_JOIN, 2)],
                  [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("2i", rx.fileno(), far.fileno()))])
        sync()  # the parent adopts the channel
        sync()
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 0)
        tx.sendmsg([record(dead_name, msg_id=M.MACH_NOTIFY_DEAD_NAME, flags=1)])
        sync()  # the parent has received it
        s.detach()
        return os.getpid()

    try:
        f = forked(child)
        with f as sync:
            kr, msg, trailer = receive(port, option=SEC_TRAILER)
            assert kr == OK and M.mach_msg_header_t.from_buffer_copy(msg).msgh_id == M.MACH_NOTIFY_DEAD_NAME
            who = [NOBODY, NOBODY] if os.geteuid() == 0 else [os.getuid(), os.getgid()]
            assert list(trailer.msgh_sender.val) == who != [0, 1]
            sync()
            assert receive(port, timeout_ms=200)[0] == M.MACH_RCV_TIMED_OUT  # the JOIN, taken in
            sync()
            sync()
            # the record on the channel comes without credentials: refused,
            # never shown as the kernel's
            kr, msg, trailer = receive(port, option=SEC_TRAILER)
            assert kr == M.MACH_RCV_HEADER_ERROR, (hex(kr), trailer and list(trailer.msgh_sender.val))
        # and our own runtime's notification is the kernel's
        so = M.mach_port_t()
        assert M.mach_port_allocate(T(), M.MACH_PORT_RIGHT_RECEIVE, byref(so)) == OK
        prev = M.mach_port_t()
        assert M.mach_port_request_notification(T(), so, M.MACH_NOTIFY_NO_SENDERS, 0, port,
                                                M.MACH_MSG_TYPE_MAKE_SEND_ONCE, byref(prev)) == OK
        kr, msg, trailer = receive(port, option=SEC_TRAILER)
        assert kr == OK and M.mach_msg_header_t.from_buffer_copy(msg).msgh_id == M.MACH_NOTIFY_NO_SENDERS
        assert list(trailer.msgh_sender.val) == [0, 1]
        destroy(so.value)
    finally:
        os.close(raw)
        destroy(port)


@ROOT_ONLY
def test_root_with_gid_1_shows_the_kernels_token_but_not_its_audit_token() -> None:
    """{0, 1} is also what a root process whose gid is 1 shows; the audit
    token (pid 0 only for the kernel) tells them apart, and the bootstrap
    server checks both."""
    port = own_port()
    raw = os.dup(cap_of(port).sock.fileno())

    def child() -> int:
        os.setgroups([])
        os.setgid(1)
        s = socket.socket(fileno=raw)
        s.sendmsg([record(msg_id=M.MACH_NOTIFY_DEAD_NAME, flags=1)])
        s.detach()
        return os.getpid()

    try:
        cpid = run_in_child(child)
        kr, _msg, trailer = receive(port)
        assert kr == OK
        assert list(trailer.msgh_sender.val) == [0, 1]
        assert list(trailer.msgh_audit.val)[5] == cpid != 0
    finally:
        os.close(raw)
        destroy(port)


# -- 2. other uids: the bootstrap server and task_for_pid -------------------------------------------------------

@ROOT_ONLY
def test_a_client_of_another_uid_is_refused(server: Server, sockdir: str) -> None:
    os.chmod(sockdir, 0o711)  # reachable by nobody: SO_PEERCRED is what refuses

    def raw_connect() -> tuple[int, int]:
        become_nobody()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(5)
        s.connect(server.path)
        data, anc, _flags, _addr = s.recvmsg(64, socket.CMSG_SPACE(16))
        s.close()
        return len(data), len(anc)

    assert run_in_child(raw_connect) == (0, 0)  # closed at once: no handshake, no rights
    server.wait_log("refused a connection from pid")

    def client_side() -> tuple[int, str]:
        become_nobody()
        return M.bootstrap_port_connect(byref(M.mach_port_t())), M.bootstrap_port_error()

    kr, why = run_in_child(client_side)
    assert kr == M.BOOTSTRAP_NOT_PRIVILEGED and "uid 0" in why  # nobody does not trust root's socket


@ROOT_ONLY
def test_a_send_right_handed_to_another_uid_is_refused_per_request(server: Server) -> None:
    kr, svc = check_in("com.example.private")
    assert kr == OK
    try:
        def as_nobody() -> tuple[int, int]:
            become_nobody()
            return found("com.example.private"), check_in("com.example.other")[0]

        # the child inherits TASK_BOOTSTRAP_PORT, then drops to nobody: the
        # server reads the uid from each request's audit trailer
        assert run_in_child(as_nobody) == (M.BOOTSTRAP_NOT_PRIVILEGED, M.BOOTSTRAP_NOT_PRIVILEGED)
        server.wait_log("refused bootstrap_look_up from pid")
        assert found("com.example.other") == M.BOOTSTRAP_UNKNOWN_SERVICE
    finally:
        destroy(svc)


@ROOT_ONLY
def test_unprivileged_caller_is_refused_root_and_granted_its_own_user() -> None:
    root = sleep_process()
    mine = sleep_process(user=NOBODY)
    try:
        def child() -> tuple:
            become_nobody()
            denied = tfp(root.pid)
            try:
                Task.for_pid(root.pid)
                message = ""
            except K.MachError as e:
                message = f"{e.kr} {e}"
            kr, t = tfp(mine.pid)
            pid = ctypes.c_int()
            same = M.pid_for_task(t, byref(pid)) == 0 and pid.value == mine.pid
            n = M.mach_port_t()
            name_root = M.task_name_for_pid(M.mach_task_self(), root.pid, byref(n)), n.value
            name_mine = M.task_name_for_pid(M.mach_task_self(), mine.pid, byref(n))
            return denied, message, kr, same, name_root, name_mine
        denied, message, kr, same, name_root, name_mine = run_in_child(child)
        assert denied == (M.KERN_FAILURE, 0)
        assert message.startswith(f"{M.KERN_FAILURE} ") and "ptrace" in message and "Yama" in message
        assert kr == 0 and same
        assert name_root == (M.KERN_FAILURE, 0)
        assert name_mine == 0
    finally:
        stop_process(root)
        stop_process(mine)


# -- 3. the rendezvous: squatted and pre-created paths ------------------------------------------------------------

def test_squatted_socket_paths_are_refused(sockdir: str) -> None:
    path = os.path.join(sockdir, "bootstrap")
    # not a socket
    with open(path, "w") as f:
        f.write("squatter")
    code, err = serve_exit({})
    assert code == 2 and "is not a socket" in err
    assert M.bootstrap_port_connect(byref(M.mach_port_t())) == M.BOOTSTRAP_NOT_PRIVILEGED
    assert "is not a socket" in M.bootstrap_port_error()
    os.unlink(path)
    # a symbolic link to a socket elsewhere
    other = os.path.join(sockdir, "elsewhere")
    os.symlink(other, path)
    assert serve_exit({})[0] == 2
    assert M.bootstrap_port_connect(byref(M.mach_port_t())) == M.BOOTSTRAP_NOT_PRIVILEGED
    os.unlink(path)
    if os.geteuid() == 0:
        # a socket of another user
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.bind(path)
        s.close()
        os.chown(path, NOBODY, NOBODY)
        code, err = serve_exit({})
        assert code == 2 and "belongs to uid 65534" in err
        assert M.bootstrap_port_connect(byref(M.mach_port_t())) == M.BOOTSTRAP_NOT_PRIVILEGED
        os.unlink(path)
    # a directory others may change
    os.chmod(sockdir, 0o733)
    code, err = serve_exit({})
    assert code == 2 and "others may change it" in err
    os.chmod(sockdir, 0o700)


def test_squatted_private_directory_is_refused(sockdir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an override the socket lives in XDG_RUNTIME_DIR/pymach (or
    /tmp/pymach-<uid>), which must be ours and 0700."""
    monkeypatch.delenv("PYMACH_BOOTSTRAP_SOCKET")
    monkeypatch.setenv("XDG_RUNTIME_DIR", sockdir)
    env = {"XDG_RUNTIME_DIR": sockdir, "PYMACH_BOOTSTRAP_SOCKET": ""}
    private = os.path.join(sockdir, "pymach")
    os.mkdir(private, 0o755)
    os.chmod(private, 0o755)
    code, err = serve_exit(env)
    assert code == 2 and "others may enter it" in err
    assert M.bootstrap_port_connect(byref(M.mach_port_t())) == M.BOOTSTRAP_NOT_PRIVILEGED
    if os.geteuid() == 0:
        os.chmod(private, 0o700)
        os.chown(private, NOBODY, NOBODY)
        code, err = serve_exit(env)
        assert code == 2 and "belongs to uid 65534" in err
        assert M.bootstrap_port_connect(byref(M.mach_port_t())) == M.BOOTSTRAP_NOT_PRIVILEGED
    os.rmdir(private)
    # made by the server when missing: 0700, ours, and it serves
    s = Server(os.path.join(private, "bootstrap"), env=env, log=os.path.join(sockdir, "server.log"))
    try:
        st = os.stat(private)
        assert (st.st_mode & 0o777, st.st_uid) == (0o700, os.getuid())
        assert found("com.example.private") == M.BOOTSTRAP_UNKNOWN_SERVICE
    finally:
        M.bootstrap_port_disconnect()
        assert s.stop() == 0


def test_stale_socket_is_replaced_and_a_live_server_is_not(sockdir: str) -> None:
    path = os.path.join(sockdir, "bootstrap")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(path)  # a socket file nobody listens on: what a killed server leaves
    s.close()
    srv = Server(path)
    try:
        assert found("com.example.x") == M.BOOTSTRAP_UNKNOWN_SERVICE
        code, err = serve_exit({})  # a second server for the same path
        assert code == 1 and "already serves" in err
        srv.kill()  # SIGKILL: the socket file stays behind
        assert os.path.exists(path)
        srv.start()  # and is replaced
        assert found("com.example.x") == M.BOOTSTRAP_UNKNOWN_SERVICE
    finally:
        M.bootstrap_port_disconnect()
        assert srv.stop() == 0




@ROOT_ONLY
def test_a_socket_another_user_listens_on_is_refused(sockdir: str) -> None:
    """A socket file of ours at the path, but the process listening on it
    is another user's (SO_PEERCRED): the server will not replace it, and a
    client will not trust it."""
    path = os.path.join(sockdir, "bootstrap")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the squatter
        try:
            os.close(r)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.bind(path)  # as root: the file is root's
            become_nobody()
            s.listen(8)  # SO_PEERCRED: nobody
            os.write(w, b".")
            while True:
                conn, _ = s.accept()
                conn.close()
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"."
        assert os.lstat(path).st_uid == 0
        code, err = serve_exit({})
        assert code == 2 and "listens on" in err
        assert M.bootstrap_port_connect(byref(M.mach_port_t())) == M.BOOTSTRAP_NOT_PRIVILEGED
        assert "runs as uid 65534" in M.bootstrap_port_error()
    finally:
        os.close(r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


@ROOT_ONLY
def test_a_directory_of_another_user_is_refused(sockdir: str) -> None:
    os.chown(sockdir, NOBODY, NOBODY)
    try:
        code, err = serve_exit({})
        assert code == 2 and "belongs to uid 65534" in err
        assert M.bootstrap_port_connect(byref(M.mach_port_t())) == M.BOOTSTRAP_NOT_PRIVILEGED
        assert not os.path.exists(os.path.join(sockdir, "bootstrap"))
    finally:
        os.chown(sockdir, 0, 0)


# -- 4. stale names and reused fd numbers ----------------------------------------------------------------------------

def _received_port(port: int) -> int:
    m = PortMsgRcv()
    assert M.mach_msg(m.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, sizeof(m), port, 5000, 0) == OK
    return int(m.port.name)


def test_a_stale_name_never_reaches_the_right_that_reuses_its_index_or_fds() -> None:
    """A child holds a port; we hold a send right to it, deallocate it, and
    make new rights that take its index (new generation) and its fd
    numbers. The old name is KERN_INVALID_NAME / MACH_SEND_INVALID_DEST,
    and neither the child's port nor the new one gets anything."""
    mine = own_port()
    assert register(mine) == OK

    def child(sync: Callable[[], None]) -> int:
        theirs = lookup_registered()[0]
        p = own_port(qlimit=16)
        assert send_port(theirs, p, M.MACH_MSG_TYPE_MAKE_SEND) == OK
        sync()
        sync()  # the parent has tried the stale name
        got = 0
        while receive(p, timeout_ms=0)[0] == OK:
            got += 1
        destroy(theirs)
        return got

    try:
        f = forked(child)
        with f as sync:
            sync()
            stale = _received_port(mine)
            old_fds = set(cap_of(stale).wire_fds())
            assert send_simple(stale) == OK  # reaches the child: one message
            assert M.mach_port_deallocate(T(), stale) == OK
            before = open_fds()
            fresh = own_port()  # a new name on the same index, and the same fd numbers
            new_fds = open_fds() - before
            assert M.MACH_PORT_INDEX(fresh) == M.MACH_PORT_INDEX(stale) and fresh != stale
            assert old_fds & new_fds, (old_fds, new_fds)
            assert type_kr(stale)[0] == M.KERN_INVALID_NAME
            assert send_simple(stale) == M.MACH_SEND_INVALID_DEST
            assert receive(fresh, timeout_ms=0)[0] == M.MACH_RCV_TIMED_OUT
            sync()
        assert f.result == 1  # the one message sent while the name was good
    finally:
        register()
        destroy(mine)
        if "fresh" in locals():
            destroy(fresh)


def test_an_fd_closed_behind_the_runtime_and_reused_is_not_taken_for_the_port() -> None:
    """os.close on a send right's connection fd, the number then reused by
    an unrelated file or by another port's connection: the send path sees
    that the fd no longer names the connection (its inode) and fails with
    MACH_SEND_INVALID_DEST; nothing goes to the file or the other port, and
    the runtime never closes the new holder's fd later."""
    target = own_port(qlimit=16)
    target2 = own_port(qlimit=16)
    other = alloc_name(R_RECEIVE)
    try:
        fd = cap_of(target).sock.fileno()
        os.close(fd)  # behind the runtime's back
        n = os.open("/dev/null", os.O_WRONLY)
        assert n == fd  # the lowest free number: reused by an unrelated file
        assert send_simple(target) == M.MACH_SEND_INVALID_DEST
        assert receive(target, timeout_ms=0)[0] == M.MACH_RCV_TIMED_OUT
        assert M.mach_port_mod_refs(T(), target, M.MACH_PORT_RIGHT_SEND, -1) == OK
        os.fstat(n)  # still ours: the runtime did not close it
        os.close(n)
        # the same with another port's connection on the number
        fd = cap_of(target2).sock.fileno()
        os.close(fd)
        before = open_fds()
        assert M.mach_port_insert_right(T(), other, other, M.MACH_MSG_TYPE_MAKE_SEND) == OK
        assert fd in open_fds() - before  # the other port's new fds took the number
        assert send_simple(target2) == M.MACH_SEND_INVALID_DEST
        assert receive(other, timeout_ms=0)[0] == M.MACH_RCV_TIMED_OUT
        assert receive(target2, timeout_ms=0)[0] == M.MACH_RCV_TIMED_OUT
        assert M.mach_port_mod_refs(T(), target2, M.MACH_PORT_RIGHT_SEND, -1) == OK
        assert send_simple(other) == OK and receive(other)[0] == OK  # its fds are intact
    finally:
        destroy(target, target2, other)


# -- 5. more rights than one record carries -----------------------------------------------------------------------------

PORT_DESC = struct.Struct("<IIHBB")
OOL_DESC = struct.Struct("<QBBBBI")
BIG = 64 * 1024


def port_desc(name: int, disposition: int) -> bytes:
    return PORT_DESC.pack(name, 0, 0, disposition, M.MACH_MSG_PORT_DESCRIPTOR)


def ool_desc(addr: int, size: int) -> bytes:
    return OOL_DESC.pack(addr, 0, M.MACH_MSG_VIRTUAL_COPY, 0, M.MACH_MSG_OOL_DESCRIPTOR, size)


def send_complex(dest: int, descs: list[bytes], msg_id: int = 500) -> int:
    body = struct.pack("<I", len(descs)) + b"".join(descs)
    size = sizeof(M.mach_msg_header_t) + len(body)
    buf = (ctypes.c_char * size)()
    h = M.mach_msg_header_t.from_buffer(buf)
    h.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0) | M.MACH_MSGH_BITS_COMPLEX
    h.msgh_size = size
    h.msgh_remote_port = dest
    h.msgh_id = msg_id
    ctypes.memmove(ctypes.addressof(buf) + sizeof(h), body, len(body))
    return M.mach_msg(h, M.MACH_SEND_MSG, size, 0, 0, 0, 0)


def parse_complex(msg: bytes) -> list[tuple[int, ...]]:
    """(kind, name or address, disposition or size) per descriptor."""
    off = sizeof(M.mach_msg_header_t)
    (count,) = struct.unpack_from("<I", msg, off)
    off += 4
    out: list[tuple[int, ...]] = []
    for _ in range(count):
        dtype = msg[off + 11]
        if dtype == M.MACH_MSG_PORT_DESCRIPTOR:
            name, _p, _q, disp, _t = PORT_DESC.unpack_from(msg, off)
            out.append((dtype, name, disp))
            off += 12
        else:
            addr, _d, _c, _p, _t, size = OOL_DESC.unpack_from(msg, off)
            out.append((dtype, addr, size))
            off += 16
    return out


def drop_send(name: int) -> None:
    """Release every user reference of a send right."""
    refs = M.mach_port_urefs_t()
    assert M.mach_port_get_refs(T(), name, M.MACH_PORT_RIGHT_SEND, byref(refs)) == OK
    assert M.mach_port_mod_refs(T(), name, M.MACH_PORT_RIGHT_SEND, -refs.value) == OK


def _mix(kind: str) -> list[int]:
    """The dispositions of a case: 254 send rights, 254 send-once rights,
    or 150 send and 104 send-once rights (with three regions)."""
    if kind == "send":
        return [M.MACH_MSG_TYPE_MAKE_SEND] * 254
    if kind == "send_once":
        return [M.MACH_MSG_TYPE_MAKE_SEND_ONCE] * 254
    return [M.MACH_MSG_TYPE_MAKE_SEND] * 150 + [M.MACH_MSG_TYPE_MAKE_SEND_ONCE] * 104


REGIONS = (3, 5000, 100_000)


@pytest.mark.parametrize("kind", ["send", "send_once", "mix"])
def test_254_rights_in_one_message_across_fork(kind: str) -> None:
    before = open_fds()
    mine = own_port()
    assert register(mine) == OK
    disps = _mix(kind)
    nports = 16

    def child(sync: Callable[[], None]) -> tuple[int, int, list[int]]:
        theirs = lookup_registered()[0]
        ports = [own_port(qlimit=64) for _ in range(nports)]
        descs = [port_desc(ports[i % nports], d) for i, d in enumerate(disps)]
        regions = []
        if kind == "mix":
            for n in REGIONS:
                data = (ctypes.c_char * n).from_buffer(bytearray(bytes([n % 251]) * n))
                regions.append(data)
                descs.append(ool_desc(ctypes.addressof(data), n))
        before = len(open_fds())
        kr = send_complex(theirs, descs)
        sync()  # the parent answers on every right
        sync()
        got = []
        for j, p in enumerate(ports):
            while True:
                rkr, msg, _t = receive(p, timeout_ms=0)
                if rkr != OK:
                    break
                got.append(M.mach_msg_header_t.from_buffer_copy(msg).msgh_id)
        # what the message took is closed (its carrier too), and every
        # send-once connection went with its one message
        after = len(open_fds())
        destroy(*ports)
        return kr, after - before, sorted(got)

    try:
        f = forked(child)
        with f as sync:
            sync()
            size = 16384 + BIG
            kr, msg, _t = receive(mine, size=size)
            assert kr == OK, hex(kr)
            descs = parse_complex(msg)
            ports = [d for d in descs if d[0] == M.MACH_MSG_PORT_DESCRIPTOR]
            assert [d[2] for d in ports] == [PORT_SEND if x == M.MACH_MSG_TYPE_MAKE_SEND
                                            else M.MACH_MSG_TYPE_PORT_SEND_ONCE for x in disps]
            sent_to: set[int] = set()
            expect: list[int] = []
            for i, (_k, name, disp) in enumerate(ports):
                want = TY_SEND if disp == PORT_SEND else TY_SEND_ONCE
                assert type_kr(name)[1] & want, (i, hex(name))
                if disp == PORT_SEND:
                    if name not in sent_to:  # (rights to one port may share a name)
                        sent_to.add(name)
                        assert send_simple(name, msg_id=i) == OK
                        expect.append(i)
                else:
                    assert send_simple(name, msg_id=i, disposition=M.MACH_MSG_TYPE_MOVE_SEND_ONCE) == OK
                    expect.append(i)
            regions = [d for d in descs if d[0] == M.MACH_MSG_OOL_DESCRIPTOR]
            assert [d[2] for d in regions] == (list(REGIONS) if kind == "mix" else [])
            for _k, addr, n in regions:
                assert ctypes.string_at(addr, n) == bytes([n % 251]) * n
                assert M.mach_vm_deallocate(T(), addr, n) == OK
            for name in sent_to:
                drop_send(name)
            sync()
        kr, freed, got = f.result
        assert kr == OK and freed == 0
        assert got == sorted(expect)
        assert len(expect) == (16 if kind == "send" else 254 if kind == "send_once" else 16 + 104)
    finally:
        register()
        destroy(mine)
    assert open_fds() == before


def _rights_message(dest: int, ports: list[int], n: int = 254) -> int:
    return send_complex(dest, [port_desc(ports[i % len(ports)], M.MACH_MSG_TYPE_MAKE_SEND) for i in range(n)])


def test_a_message_of_254_rights_destroyed_unreceived_or_refused_leaks_nothing() -> None:
    before = open_fds()
    targets = [own_port() for _ in range(4)]
    q = own_port()
    # destroyed with the port, never received: the carrier and every fd in it go
    assert _rights_message(q, targets) == OK
    destroy(q)
    # too large for the receiver's buffer (no MACH_RCV_LARGE): destroyed
    q = own_port()
    assert _rights_message(q, targets) == OK
    assert receive(q, size=256)[0] == M.MACH_RCV_TOO_LARGE
    assert send_simple(q, msg_id=3) == OK
    kr, msg, _t = receive(q)
    assert kr == OK and M.mach_msg_header_t.from_buffer_copy(msg).msgh_id == 3
    # held back by MACH_RCV_LARGE (its carrier already read), then the
    # receive right travels in a message and the message travels with it
    assert _rights_message(q, targets) == OK
    assert receive(q, option=AUDIT | M.MACH_RCV_LARGE, size=256)[0] == M.MACH_RCV_TOO_LARGE
    carrier_port = own_port()
    assert send_port(carrier_port, q, M.MACH_MSG_TYPE_MOVE_RECEIVE) == OK
    left = q  # (the send right stays under the old name)
    q = _received_port(carrier_port)
    assert q == left  # the receive right joins it, as in XNU
    kr, msg, _t = receive(q, size=16384)
    assert kr == OK and len(parse_complex(msg)) == 254
    names = {d[1] for d in parse_complex(msg)}
    assert all(type_kr(n)[1] & TY_SEND for n in names)
    for n in names:
        drop_send(n)
    destroy(q, carrier_port, *targets)
    assert open_fds() == before


def test_a_carrier_that_lies_is_a_body_error() -> None:
    """A record that says it carries more fds than its carrier holds (or
    whose carrier is no connection) is refused; nothing leaks."""
    port = own_port()
    before = open_fds()
    try:
        for carrier_kind in ("short", "pipe", "open"):
            tx, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            r, w = os.pipe()
            if carrier_kind == "short":
                tx.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", r))])
                tx.close()
                carrier = rx.fileno()
            elif carrier_kind == "pipe":
                carrier = r
            else:
                carrier = rx.fileno()  # its sending end stays open, and empty: never waited on
            body = struct.pack("<I", 0)
            rec = (ipc_kmsg.WIRE.pack(ipc_kmsg.MAGIC, SIMPLE_BITS | M.MACH_MSGH_BITS_COMPLEX, 7, len(body),
                                      1, 300, ipc_port.FLAG_CARRIER, 0)
                   + ipc_kmsg.RIGHT.pack(0, 0, 0, 0) + body)
            cap_of(port).sock.sendmsg([rec], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", carrier))])
            for s in (tx, rx):
                s.close()
            os.close(r)
            os.close(w)
            assert receive(port)[0] == M.MACH_RCV_BODY_ERROR, carrier_kind
            assert send_simple(port) == OK and receive(port)[0] == OK
        assert open_fds() == before
    finally:
        destroy(port)


# -- 6. a receiver at RLIMIT_NOFILE -----------------------------------------------------------------------------------

IPC_SPACE_ERROR = M.MACH_RCV_BODY_ERROR | M.MACH_MSG_IPC_SPACE


def _limit_with_room(room: int) -> int:
    """The RLIMIT_NOFILE under which exactly ``room`` more fds fit (the
    kernel hands out the lowest free numbers below the limit)."""
    used = open_fds()
    limit = 0
    while limit - len([fd for fd in used if fd < limit]) < room:
        limit += 1
    while limit in used:
        limit += 1
    return limit


@pytest.mark.parametrize("rights", [1, 254])
def test_a_receiver_short_of_fds_gets_ipc_space_and_the_next_message(rights: int) -> None:
    """The sender (a fork child) sends ``rights`` send rights (2 fds each)
    to our port, whose queue holds one message. We receive with room for
    fewer fds than that: recvmsg (or the carrier's) sets MSG_CTRUNC and the
    kernel drops the rest. The receive fails with MACH_RCV_BODY_ERROR |
    MACH_MSG_IPC_SPACE, every fd that did arrive is closed, the queue place
    is freed (the next send with a zero timeout gets in) and the next
    message is delivered once the limit is raised."""
    mine = own_port(qlimit=1)
    assert register(mine) == OK
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def child(sync: Callable[[], None]) -> tuple[int, int]:
        theirs = lookup_registered()[0]
        targets = [own_port() for _ in range(4)]
        kr1 = _rights_message(theirs, targets, rights)
        sync()
        sync()  # the parent's receive failed and its limit is back
        kr2 = send_simple(theirs, msg_id=42, option=M.MACH_SEND_TIMEOUT, timeout_ms=0)
        destroy(*targets)
        return kr1, kr2

    try:
        f = forked(child)
        with f as sync:
            sync()
            before = open_fds()
            resource.setrlimit(resource.RLIMIT_NOFILE, (_limit_with_room(1 if rights == 1 else 260), hard))
            try:
                kr = receive(mine, size=16384)[0]
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            assert kr == IPC_SPACE_ERROR, hex(kr)
            assert open_fds() == before
            sync()
        assert f.result == (OK, OK)  # the second send found the queue place free
        kr, msg, _t = receive(mine)
        assert kr == OK and M.mach_msg_header_t.from_buffer_copy(msg).msgh_id == 42
    finally:
        register()
        destroy(mine)


def test_a_cut_record_on_a_send_once_connection_drops_the_connection() -> None:
    """Raw junk with two fds on a send-once right's connection, received
    one fd short: IPC_SPACE, and the connection (whose one message that
    was) is gone from the port, so nothing of it stays open."""
    port = own_port()
    so = M.mach_port_t()
    kind = M.mach_msg_type_name_t()
    before_all = open_fds()
    assert M.mach_port_extract_right(T(), port, M.MACH_MSG_TYPE_MAKE_SEND_ONCE, byref(so), byref(kind)) == OK
    try:
        a, b = os.pipe()
        cap_of(so.value).sock.sendmsg([record()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("2i", a, b))])
        os.close(a)
        os.close(b)
        assert M.mach_port_deallocate(T(), so.value) == OK  # its record is already queued
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (_limit_with_room(1), hard))
        try:
            kr = receive(port)[0]
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert kr == IPC_SPACE_ERROR, hex(kr)
        assert open_fds() == before_all
        assert receive(port, timeout_ms=0)[0] == M.MACH_RCV_TIMED_OUT  # no send-once notification either
    finally:
        destroy(port)


# -- 7. the bootstrap server's limits ------------------------------------------------------------------------------------

def limited_server(sockdir: str, **limits: int) -> Server:
    env = {LIMIT_ENV[k]: str(v) for k, v in limits.items()}
    return Server(os.path.join(sockdir, "bootstrap"), env=env)


LIMIT_ENV = {"names_per_client": "PYMACH_BOOTSTRAP_MAX_NAMES_PER_CLIENT",
             "rights_per_client": "PYMACH_BOOTSTRAP_MAX_RIGHTS_PER_CLIENT",
             "names": "PYMACH_BOOTSTRAP_MAX_NAMES", "rights": "PYMACH_BOOTSTRAP_MAX_RIGHTS"}


def check_in_eventually(name: str, timeout: float = 5.0) -> int:
    """check_in until it succeeds (a dead-name notification, or a sweep,
    is on its way); the right is destroyed. Returns the last code."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        kr, port = check_in(name)
        if kr == OK:
            destroy(port)
            return kr
        if time.monotonic() >= deadline:
            return kr
        time.sleep(0.02)


def test_names_per_client_and_in_all_and_released_when_the_client_dies(sockdir: str) -> None:
    srv = limited_server(sockdir, names_per_client=3, names=5)
    mine: list[int] = []
    try:
        bp()  # children inherit it

        def greedy_check_ins() -> list[int]:
            return [check_in(f"com.example.greedy.{i}")[0] for i in range(4)] + [create("com.example.greedy.c")[0]]

        with Doomed(greedy_check_ins) as greedy:
            assert greedy.ready() == [OK, OK, OK, M.BOOTSTRAP_NO_MEMORY, M.BOOTSTRAP_NO_MEMORY]
            srv.wait_log("refused, 3 names per process")
            # another client is not affected
            for i in range(2):
                kr, port = check_in(f"com.example.mine.{i}")
                assert kr == OK
                mine.append(port)
            assert found("com.example.greedy.0") == OK
            assert check_in("com.example.mine.2")[0] == M.BOOTSTRAP_NO_MEMORY  # 3 + 2: 5 in all
            srv.wait_log("refused, 5 names in all")
        # the greedy client died: its names are free (dead-name notifications)
        assert check_in_eventually("com.example.mine.2") == OK

        def greedy_creates() -> list[int]:
            return [create(f"com.example.made.{i}")[0] for i in range(4)]

        with Doomed(greedy_creates) as maker:
            assert maker.ready() == [OK, OK, OK, M.BOOTSTRAP_NO_MEMORY]
            assert check_in("com.example.mine.3")[0] == M.BOOTSTRAP_NO_MEMORY  # 2 + 3: 5 in all
        # names made by create_service that nobody checked in go with their maker
        assert check_in_eventually("com.example.mine.3") == OK
        srv.wait_log("its maker is gone and nobody checked in")
        assert found("com.example.made.0") == M.BOOTSTRAP_UNKNOWN_SERVICE
    finally:
        destroy(*mine)
        M.bootstrap_port_disconnect()
        assert srv.stop() == 0, srv.read_log()


def test_connections_per_client_and_in_all_and_released_when_the_client_dies(sockdir: str) -> None:
    srv = limited_server(sockdir, rights_per_client=3, rights=8)
    path = srv.path
    try:
        assert found("com.example.none") == M.BOOTSTRAP_UNKNOWN_SERVICE  # ours: 2 (a right and its channel)

        def grab() -> list[str]:
            held, out = [], []
            for _ in range(4):
                try:
                    fds, _pid = rendezvous.connect(path, False)
                    held.append(fds)  # kept for as long as we live
                    out.append("ok")
                except rendezvous.Busy as e:
                    out.append(str(e))
            return out

        # one child after the other: each has grabbed all it could before the next starts
        with Doomed(grab) as first:
            first.ready()
            with Doomed(grab) as second:
                second.ready()
                for g in (first, second):
                    assert g.result[:3] == ["ok"] * 3 and "3 connections per process" in g.result[3]
                # 2 + 3 + 3 = 8: everyone's total
                with Doomed(grab) as third:
                    assert all("8 connections in all" in r for r in third.ready()), third.result
                # and the client that already holds its right is not affected
                kr, port = check_in("com.example.steady")
                assert kr == OK and found("com.example.steady") == OK
                destroy(port)
                first.kill()
                # its connections hung up: the server counts only live ones
                with Doomed(grab) as fourth:
                    assert fourth.ready()[:3] == ["ok"] * 3
        srv.wait_log("refused a connection from pid")
        # a process of its own, with a right of its own, after all that
        code = ("import ctypes, pymach.mach as M; p = M.mach_port_t(); "
                "print(M.bootstrap_look_up(M.bootstrap_port, 'com.example.none', ctypes.byref(p)))")
        out = subprocess.run([sys.executable, "-c", code], env=srv.env, capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == str(M.BOOTSTRAP_UNKNOWN_SERVICE), out.stderr
    finally:
        M.bootstrap_port_disconnect()
        assert srv.stop() == 0, srv.read_log()


def test_a_client_over_its_share_gets_no_memory_from_bootstrap_port_connect(sockdir: str) -> None:
    srv = limited_server(sockdir, rights_per_client=1)
    try:
        kr, why = run_in_child(lambda: _two_or_busy(srv.path))
        assert kr == M.BOOTSTRAP_NO_MEMORY and "1 connections per process" in why
    finally:
        M.bootstrap_port_disconnect()
        assert srv.stop() == 0, srv.read_log()


def _two_or_busy(path: str) -> tuple[int, str]:
    """A right of our own from the rendezvous, then bootstrap_port_connect
    for a second one."""
    fds, _pid = rendezvous.connect(path, False)
    try:
        kr = M.bootstrap_port_connect(byref(M.mach_port_t()))
        return kr, M.bootstrap_port_error()
    finally:
        for fd in fds:
            os.close(fd)


FLOOD = """
import ctypes, sys
import pymach.mach as M
from pymach.mach import bootstrap_defs as D
bp = M.bootstrap_port
reply = M.mach_port_t()
M.mach_port_allocate(M.mach_task_self(), M.MACH_PORT_RIGHT_RECEIVE, ctypes.byref(reply))
req = D.bootstrap_name_request_t()
req.NDR = M.NDR_record_t.from_buffer_copy(D.NDR_RECORD)
req.service_name = b"com.example.flood"
sys.stdout.write("flooding\\n"); sys.stdout.flush()
while True:  # requests whose replies nobody reads
    h = req.Head
    h.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE)
    h.msgh_size = ctypes.sizeof(req)
    h.msgh_remote_port = bp
    h.msgh_local_port = reply
    h.msgh_id = D.BOOTSTRAP_LOOK_UP_ID
    M.mach_msg(h, M.MACH_SEND_MSG, ctypes.sizeof(req), 0, 0, 0, 0)
"""


def test_a_flooding_client_does_not_starve_the_others(server: Server) -> None:
    """One client writes requests as fast as it can on its own connection
    and never reads a reply. The server's port rotates among connections
    with a message ready (level-triggered epoll, one event at a time), so
    another client's requests keep being answered while the flood goes
    on (bounded: the flooder is killed after a minute whatever happens)."""
    flood = subprocess.Popen([sys.executable, "-c", FLOOD], env=server.env, stdout=subprocess.PIPE)
    guard = threading.Timer(60, flood.kill)
    guard.start()
    try:
        assert flood.stdout is not None and flood.stdout.readline() == b"flooding\n"
        for i in range(50):
            kr, port = check_in(f"com.example.steady.{i}")
            assert kr == OK
            assert found(f"com.example.steady.{i}") == OK
            destroy(port)
        assert flood.poll() is None  # all that while the flood went on
    finally:
        guard.cancel()
        flood.kill()
        flood.wait()
        if flood.stdout is not None:
            flood.stdout.close()


def test_a_server_short_of_fds_answers_no_memory(sockdir: str) -> None:
    """A server with few fds derives small limits from RLIMIT_NOFILE and
    keeps a reserve: clients get BOOTSTRAP_NO_MEMORY, the server lives on."""
    def few_fds() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))

    srv = Server(os.path.join(sockdir, "bootstrap"), preexec=few_fds)
    made = []
    try:
        for i in range(50):
            kr, port = create(f"com.example.fd{i}")
            if kr != OK:
                break
            made.append(port)
        assert kr == M.BOOTSTRAP_NO_MEMORY and made
        assert found("com.example.fd0") == OK  # the server lives on
        srv.wait_log("names per process")
    finally:
        destroy(*made)
        M.bootstrap_port_disconnect()
        assert srv.stop() == 0
