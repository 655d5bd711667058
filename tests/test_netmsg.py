"""Ports across hosts, on one machine: one NATS server, two bootstrap
servers and two netmsg proxies, "hostA" (this process's host) and "hostB"
(where tests/netmsg_peer.py serves), brought up once for the module.
Plus the frames' own tests (pymach.netmsg.wire)."""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("nats")

import pymach.mach as M  # noqa: E402
from pymach import Message, MemoryEntry, Port, SendOnceRight, SendRight, bootstrap, net, request  # noqa: E402
from pymach.mach import byref, mach_port_t  # noqa: E402
from pymach.mach import netname as N  # noqa: E402
from pymach.netmsg import netname as NN  # noqa: E402
from pymach.netmsg import wire as W  # noqa: E402

from netmsgutil import HERE, PEER_NAMES, SRC, FakeHost, Proc  # noqa: E402
from procutil import ROOT_ONLY, become_nobody, run_in_child  # noqa: E402


class Hosts:
    def __init__(self, tmp: Path, nats: Any, path_a: str, path_b: str) -> None:
        self.tmp, self.nats, self.path_a, self.path_b = tmp, nats, path_a, path_b
        self.url, self.token = nats.url, nats.token
        self.procs: list[Proc] = []

    def restart_nats(self) -> None:
        """Stop the NATS server and start it again on the same port (the
        proxies reconnect)."""
        from pymach.netmsg import server
        port = int(self.url.rpartition(":")[2])
        self.nats.stop()
        self.nats = server.start(directory=self.tmp / "nats-again", port=port, token=self.token)

    def env(self, path: str) -> dict[str, str]:
        # retries every 0.25 s, 8 times: a home that never acknowledges is dead in about 2 s
        return dict(os.environ, PYMACH_BOOTSTRAP_SOCKET=path, PYMACH_NO_AUTOSTART="1", PYTHONPATH=SRC,
                    PYMACH_NETMSG_TOKEN=self.token, PYMACH_NETMSG_RETRY="0.25,8")

    def peer(self, *names: str, host: str = "b") -> Proc:
        p = Proc([sys.executable, str(HERE / "netmsg_peer.py"), *names],
                 self.env(self.path_b if host == "b" else self.path_a), self.tmp / "peer.log", stdin=True)
        self.procs.append(p)
        return p


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    from machutil import Server
    from pymach.netmsg import server
    tmp = tmp_path_factory.mktemp("netmsg")
    nats = server.start(directory=tmp / "nats")
    started: list[Any] = []
    try:
        with bootstrap.private_server(serve=False) as a:
            bs_a = Server(a.path, log=str(tmp / "bootstrap-a.log"))
            started.append(bs_a)
            path_b = os.path.join(a.directory, "b.sock")
            bs_b = Server(path_b, log=str(tmp / "bootstrap-b.log"))
            started.append(bs_b)
            h = Hosts(tmp, nats, a.path, path_b)
            for name, path in (("hostA", a.path), ("hostB", path_b)):
                started.append(Proc([sys.executable, "-m", "pymach", "netmsg", "serve", "--nats", nats.url,
                                     "--host", name, "-v"], h.env(path), tmp / f"proxy-{name}.log", ready_fd=True))
            started.append(h.peer(*PEER_NAMES))
            # connected before the tests' fd baselines: the name server port,
            # and the reply port of the netname routines with its first exchange
            assert net.version().startswith("pymach netmsg 1 hostA ")
            try:
                yield h
            finally:
                N.name_server_port_disconnect()
                for p in reversed(h.procs):
                    p.stop()
    finally:
        for s in reversed(started):
            s.stop()
        nats.stop()
        if "h" in locals():
            h.nats.stop()


# -- the name service ------------------------------------------------------------------------------------

def test_the_c_layer_looks_up_a_port_of_another_host_and_calls_it(hosts: Hosts) -> None:
    port = mach_port_t()
    assert N.netname_look_up(M.name_server_port, "hostB", "echo.b", byref(port)) == N.NETNAME_SUCCESS
    reply = mach_port_t()
    task = M.mach_task_self()
    assert M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, byref(reply)) == 0
    try:
        msg = M.mach_msg_header_t()
        msg.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE)
        msg.msgh_size = ctypes.sizeof(msg)
        msg.msgh_remote_port = port.value
        msg.msgh_local_port = reply.value
        msg.msgh_id = 7
        assert M.mach_msg(msg, M.MACH_SEND_MSG | M.MACH_SEND_TIMEOUT, msg.msgh_size, 0, 0, 10000, 0) == 0
        buf = (ctypes.c_char * 256)()
        assert M.mach_msg(buf, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, 256, reply, 10000, 0) == 0
        h = M.mach_msg_header_t.from_buffer(buf)
        assert h.msgh_id == 107 and buf.raw[28:33] == b"echo:"
    finally:
        M.mach_port_destroy(task, reply)
        M.mach_port_deallocate(task, port)


def test_the_pythonic_layer_looks_up_any_host_and_requests(hosts: Hosts) -> None:
    with net.look_up("echo.b", host="*") as echo:
        r = request(echo, b"ping", id=3, timeout=10)
        assert (r.id, r.data) == (103, b"echo:ping")
        r.release()
    assert net.version().startswith("pymach netmsg 1 hostA ")


def test_a_name_checked_in_here_is_found_here(hosts: Hosts) -> None:
    with Port() as port, port.make_send() as right:
        net.check_in("local.a", right)
        try:
            with net.look_up("local.a") as found:
                assert found.name == port.name  # the port itself, no proxy in between
        finally:
            net.check_out("local.a")


def test_netname_codes(hosts: Hosts) -> None:
    p = mach_port_t()
    sp = M.name_server_port
    assert N.netname_look_up(sp, "", "no.such.name", byref(p)) == N.NETNAME_NOT_CHECKED_IN
    assert N.netname_look_up(sp, "*", "no.such.name", byref(p)) == N.NETNAME_NOT_CHECKED_IN
    assert N.netname_look_up(sp, "hostB", "no.such.name", byref(p)) == N.NETNAME_NOT_CHECKED_IN
    assert N.netname_look_up(sp, "hostZ", "echo.b", byref(p)) == N.NETNAME_NO_SUCH_HOST
    assert N.netname_look_up(sp, "", "x" * 80, byref(p)) == M.KERN_INVALID_ARGUMENT
    assert N.netname_check_out(sp, "no.such.name", 0) == N.NETNAME_NOT_CHECKED_IN
    with Port() as port, port.make_send() as right, Port() as sig, sig.make_send() as sig_right, \
            Port() as other, other.make_send() as other_right:
        assert N.netname_check_in(sp, "mine.a", sig_right.name, right.name) == N.NETNAME_SUCCESS
        assert N.netname_check_in(sp, "mine.a", other_right.name, right.name) == N.NETNAME_NOT_YOURS
        assert N.netname_check_out(sp, "mine.a", other_right.name) == N.NETNAME_NOT_YOURS
        assert N.netname_check_out(sp, "mine.a", sig_right.name) == N.NETNAME_SUCCESS
    assert N.netname_check_in(sp, "null.a", 0, 0) == N.NETNAME_INVALID_PORT
    with pytest.raises(net.NetnameError) as ei:
        net.look_up("echo.b", host="nohost")
    assert ei.value.kr == N.NETNAME_NO_SUCH_HOST


def test_without_a_proxy_the_name_server_port_is_null_and_look_up_fails_at_once(hosts: Hosts) -> None:
    p = mach_port_t()
    assert N.netname_look_up(M.MACH_PORT_NULL, "", "echo.b", byref(p)) == M.MACH_SEND_INVALID_DEST
    # a process whose bootstrap server has no proxy: status says so
    env = dict(os.environ, PYMACH_BOOTSTRAP_SOCKET=str(hosts.tmp / "nobody.sock"), PYMACH_NO_AUTOSTART="1",
               PYTHONPATH=SRC)
    out = subprocess.run([sys.executable, "-m", "pymach", "netmsg", "status"], env=env, capture_output=True,
                         timeout=60)
    assert out.returncode == 1 and b"no proxy" in out.stderr
    out = subprocess.run([sys.executable, "-m", "pymach", "netmsg", "status"], env=hosts.env(hosts.path_b),
                         capture_output=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith(b"pymach netmsg 1 hostB "), out


# -- rights, memory ----------------------------------------------------------------------------------------

def test_a_send_right_carried_there_and_back_is_the_port_itself(hosts: Hosts) -> None:
    with Port() as port, net.look_up("echo.b", "hostB") as echo:
        with port.make_send() as right:
            r = request(echo, Message(b"carry", rights=[right]), timeout=10)
        try:
            assert r.data == b"echo:carry" and len(r.rights) == 1
            back = r.rights[0]
            assert type(back) is SendRight and back.name == port.name
            back.send(b"home", id=5, timeout=5)
            m = port.receive(5)
            assert (m.id, m.data) == (5, b"home")
        finally:
            r.release()


def test_a_send_once_right_goes_there_and_back_once(hosts: Hosts) -> None:
    with Port() as port, net.look_up("echo.b", "hostB") as echo:
        r = request(echo, Message(b"so", rights=[port.make_send_once()]), timeout=10)
        try:
            so = r.rights[0]
            assert type(so) is SendOnceRight
            so.send(b"once", id=9, timeout=5)
            m = port.receive(5)
            assert (m.id, m.data) == (9, b"once")
        finally:
            r.release()


def test_a_right_to_a_port_here_reaches_there_and_messages_come_back_in_order(hosts: Hosts) -> None:
    n = 200
    with Port() as port, net.look_up("echo.b", "hostB") as echo:
        with port.make_send() as right:
            r = request(echo, Message(b"fifo:%d" % n, rights=[right]), timeout=30)
        r.release()
        got = []
        for _ in range(n):
            m = port.receive(10)
            got.append((m.id, m.data))
        assert got == [(i, b"%d" % i) for i in range(n)]


@pytest.mark.parametrize("size", [1024, 3 << 20])
def test_out_of_line_memory_is_copied_across(hosts: Hosts, size: int) -> None:
    data = os.urandom(size)
    with net.look_up("echo.b", "hostB") as echo:
        r = request(echo, Message(b"ool", ool=[data]), timeout=30)
        try:
            assert len(r.ool) == 1 and bytes(r.ool[0]) == data
        finally:
            r.release()


def test_a_memory_entry_arrives_as_a_copy(hosts: Hosts) -> None:
    with MemoryEntry.create(8192) as entry, net.look_up("echo.b", "hostB") as echo:
        with entry.map() as region:
            region.write(b"shared?")
            with entry.copy() as carried:
                r = request(echo, Message(b"entry", rights=[carried]), timeout=10)
            try:
                back = r.rights[0]
                assert type(back) is MemoryEntry and back.name != entry.name and back.size == 8192
                with back.map() as copy:
                    assert copy.read(0, 7) == b"shared?"
                    copy.write(b"changed")
                assert region.read(0, 7) == b"shared?"
            finally:
                r.release()


@ROOT_ONLY
def test_another_user_gets_nothing_of_the_proxy(hosts: Hosts) -> None:
    """A process that becomes nobody (a child of ours) reaches neither our
    proxy's name service (our bootstrap server does not serve it, so its
    name_server_port is MACH_PORT_NULL and netname_look_up fails with
    MACH_SEND_INVALID_DEST) nor our NATS server without the token (an
    authorization violation): each fails at once."""
    def child() -> list[str]:
        import asyncio
        import nats as nats_client
        from pymach.mach import netname
        become_nobody()
        out = []
        netname.name_server_port_disconnect()
        port = M.mach_port_t()
        out.append(f"{M.name_server_port:#x}")
        out.append(f"{N.netname_look_up(M.name_server_port, 'hostB', 'echo.b', byref(port)):#x}")
        try:
            asyncio.run(asyncio.wait_for(nats_client.connect(hosts.url, allow_reconnect=False, connect_timeout=5),
                                         10))
            out.append("connected")
        except Exception as e:  # noqa: BLE001
            out.append(str(e))
        return out

    got = run_in_child(child)
    assert got[:2] == ["0x0", f"{M.MACH_SEND_INVALID_DEST:#x}"], got  # no name server port: MACH_PORT_NULL
    assert "authorization violation" in got[2].lower(), got


def test_a_receive_right_does_not_cross_hosts(hosts: Hosts) -> None:
    """A message carrying a receive right is refused (its reply right gets
    MACH_SEND_INVALID_RIGHT); refusals take none of the port's credits, so
    more of them than the credit window leave it open to messages."""
    from pymach.netmsg.proxy import WINDOW
    task = M.mach_task_self()
    port, reply = mach_port_t(), mach_port_t()
    dest = mach_port_t()
    assert N.netname_look_up(M.name_server_port, "hostB", "echo.b", byref(dest)) == 0
    assert M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, byref(reply)) == 0
    try:
        for _ in range(WINDOW + 2):
            assert M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, byref(port)) == 0
            raw = struct.pack("<IIIIIiI", M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE)
                              | M.MACH_MSGH_BITS_COMPLEX, 40, dest.value, reply.value, 0, 11, 1)
            raw += struct.pack("<IIBBBB", port.value, 0, 0, 0, M.MACH_MSG_TYPE_MOVE_RECEIVE,
                               M.MACH_MSG_PORT_DESCRIPTOR)
            buf = ctypes.create_string_buffer(raw, 256)
            assert M.mach_msg(buf, M.MACH_SEND_MSG | M.MACH_SEND_TIMEOUT, len(raw), 0, 0, 5000, 0) == 0
            assert M.mach_msg(buf, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, 256, reply, 10000, 0) == 0
            r = M.mig_reply_error_t.from_buffer(buf)
            assert (r.Head.msgh_id, r.RetCode) == (111, M.MACH_SEND_INVALID_RIGHT)
        raw = struct.pack("<IIIIIi", M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE),
                          28, dest.value, reply.value, 0, 12) + b"ping"
        buf = ctypes.create_string_buffer(raw, 256)
        assert M.mach_msg(buf, M.MACH_SEND_MSG | M.MACH_SEND_TIMEOUT, len(raw), 0, 0, 5000, 0) == 0
        assert M.mach_msg(buf, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, 256, reply, 10000, 0) == 0
        assert M.mach_msg_header_t.from_buffer(buf).msgh_id == 112  # the echo answered
    finally:
        M.mach_port_destroy(task, reply)
        M.mach_port_deallocate(task, dest)


def _netmsg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pymach", "netmsg", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_the_books_client_on_hostA_maps_a_copy_of_the_servers_entry_on_hostB(hosts: Hosts) -> None:
    """The unmodified shm_ipc_server runs on hostB (checked in at hostB's
    bootstrap server); ``pymach netmsg export`` checks its name in on the
    network there, ``pymach netmsg import`` registers it at hostA's
    bootstrap server; the unmodified shm_ipc_client runs on hostA. The
    entry arrives as a copy: what a client writes stays in its copy, the
    next client reads the server's page unchanged. When the server stops,
    the name goes on both hosts."""
    service = "com.osxbook.SHMServer"
    env_a, env_b = hosts.env(hosts.path_a), dict(hosts.env(hosts.path_b), PYTHONUNBUFFERED="1")
    server = subprocess.Popen([sys.executable, "-m", "pymach.examples.shm_ipc_server"], env=env_b,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert server.stdout is not None and server.stdout.readline().startswith(b"memory allocated at 0x")
        # the server checks in right after it prints
        assert _wait(lambda: _netmsg(env_b, "export", service).returncode == 0)
        p = _netmsg(env_a, "import", service, "--host", "hostB")
        assert (p.returncode, p.stdout, p.stderr) == (0, f"imported {service} from hostB as {service}\n", ""), p
        out = []
        for args in (["Hello, hostA!"], []):
            p = subprocess.run([sys.executable, "-m", "pymach.examples.shm_ipc_client", *args], env=env_a,
                               capture_output=True, text=True, timeout=60)
            assert p.returncode == 0 and p.stderr == "", p
            out.append(p.stdout.splitlines()[1:])
        assert out == [["Hello, Mach!", 'writing "Hello, hostA!" to shared memory'], ["Hello, Mach!"]]
        # importing it again: the name is taken while the remote port lives
        p = _netmsg(env_a, "import", service, "--host", "hostB")
        assert p.returncode == 1 and "bootstrap_register" in p.stderr, p
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()
    # the server's port is dead: hostB's proxy tells hostA's, whose proxy
    # port dies, and hostA's bootstrap server frees the name
    def gone() -> bool:
        try:
            bootstrap.status(service)
        except bootstrap.BootstrapError as e:
            return e.kr == bootstrap.BOOTSTRAP_UNKNOWN_SERVICE
        return False
    assert _wait(gone)
    p = _netmsg(env_a, "import", service, "--host", "hostB")
    assert p.returncode == 3 and "not checked in" in p.stderr.lower(), p


def test_export_and_import_say_what_is_missing(hosts: Hosts) -> None:
    env_a, env_b = hosts.env(hosts.path_a), hosts.env(hosts.path_b)
    p = _netmsg(env_b, "export", "no.such.service")
    assert p.returncode == 3 and "bootstrap_look_up('no.such.service')" in p.stderr, p
    p = _netmsg(env_a, "import", "echo.b", "--host", "hostZ")
    assert p.returncode == 4 and "hostZ" in p.stderr, p
    p = _netmsg(env_a, "import", "x" * 80)
    assert p.returncode == 2 and "79 bytes" in p.stderr, p
    p = _netmsg(env_a, "import", "echo.b", "--host", "hostB", "--as", "y" * 128)
    assert p.returncode == 2 and "bootstrap_register" in p.stderr, p
    nobody = dict(env_a, PYMACH_BOOTSTRAP_SOCKET=str(hosts.tmp / "nobody.sock"))
    for args in (["export", "echo.b"], ["import", "echo.b", "--host", "hostB"]):
        p = _netmsg(nobody, *args)
        assert p.returncode == 1 and "no proxy" in p.stderr, p


# -- guarantees ---------------------------------------------------------------------------------------------

def test_a_full_remote_queue_blocks_the_sender(hosts: Hosts) -> None:
    """still.b never receives: its queue, the credits in flight and the
    proxy port's queue fill, then a send times out as at a full local
    port."""
    with net.look_up("still.b", "hostB") as still:
        sent = 0
        with pytest.raises(M.MachError) as ei:
            while sent < 200:
                still.send(b"x", timeout=0.5)
                sent += 1
        assert ei.value.kr == M.MACH_SEND_TIMED_OUT
        assert sent < 200


def _wait(pred: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_killed_servers_port_is_a_dead_name_here(hosts: Hosts) -> None:
    peer = hosts.peer("echo.doomed")
    with net.look_up("echo.doomed", "hostB") as doomed:
        r = request(doomed, b"alive", timeout=10)
        r.release()
        peer.stop(kill=True)
        assert _wait(lambda: doomed.dead)
        with pytest.raises(M.MachError) as ei:
            doomed.send(b"x", timeout=1)
        assert ei.value.kr == M.MACH_SEND_INVALID_DEST


def test_the_homes_sequence_state_of_reply_ports_is_forgotten(hosts: Hosts) -> None:
    """Every request's reply right is exported by hostA's proxy as a port
    of its own, which hostB's reply reaches once; hostA keeps that port's
    sequence state only until no copy of the reply can still come (the
    retransmission horizon and a lease), then forgets it: a proxy serving
    requests for days does not grow by one entry per request."""
    import re
    log = hosts.tmp / "proxy-hostA.log"

    def forgotten() -> int:
        return sum(int(n) for n in re.findall(r"forgot the sequences of (\d+) ports", log.read_text()))

    before = forgotten()
    with net.look_up("echo.b", "hostB") as echo:
        for i in range(30):
            request(echo, b"%d" % i, timeout=10).release()
    assert _wait(lambda: forgotten() >= before + 30, 30), forgotten() - before


def test_no_senders_when_the_last_remote_holder_lets_go(hosts: Hosts) -> None:
    task = M.mach_task_self()
    prev = mach_port_t()
    with Port() as port, Port() as notify, net.look_up("echo.b", "hostB") as echo:
        with port.make_send() as right:
            r = request(echo, Message(b"hold", rights=[right]), timeout=10)
        r.release()  # the right that came back (the port's own name)
        assert M.mach_port_request_notification(task, port.name, M.MACH_NOTIFY_NO_SENDERS, 0, notify.name,
                                                M.MACH_MSG_TYPE_MAKE_SEND_ONCE, byref(prev)) == 0
        m = notify.receive(10)  # the peer released its copy: hostB's proxy let go, then hostA's
        assert m.id == M.MACH_NOTIFY_NO_SENDERS
        m.release()


def test_a_restarted_hosts_old_ports_are_dead_names_here(hosts: Hosts) -> None:
    """hostC's proxy is killed and started again: a new incarnation. A
    right got from the old one is a dead name here once a message finds
    the new one refusing it; the new one serves new check-ins. The old
    incarnation held the only send right to a port of ours (in a message
    queued at hostC): once hostA hears the new incarnation, that
    reference is dropped and the port gets its no-senders notification
    (references are counted per incarnation)."""
    from machutil import Server
    path_c = str(hosts.tmp / "c.sock")
    bs_c = Server(path_c, log=str(hosts.tmp / "bootstrap-c.log"))
    proxies: list[Proc] = []

    def proxy() -> Proc:
        p = Proc([sys.executable, "-m", "pymach", "netmsg", "serve", "--nats", hosts.url, "--host", "hostC"],
                 hosts.env(path_c), hosts.tmp / "proxy-hostC.log", ready_fd=True)
        proxies.append(p)
        return p

    try:
        first = proxy()
        peer = Proc([sys.executable, str(HERE / "netmsg_peer.py"), "echo.c", "still.c"], hosts.env(path_c),
                    hosts.tmp / "peer-c.log", stdin=True)
        try:
            with net.look_up("echo.c", "hostC") as old, Port() as mine, Port() as notify:
                request(old, b"hi", timeout=10).release()
                with net.look_up("still.c", "hostC") as still, mine.make_send() as right:
                    still.send(Message(b"hold", rights=[right]), timeout=10)  # (a copy: ours goes at the end)
                    request(old, b"after", timeout=10).release()  # (ordered after it at hostC's proxy)
                prev = mach_port_t()
                assert M.mach_port_request_notification(M.mach_task_self(), mine.name, M.MACH_NOTIFY_NO_SENDERS, 0,
                                                        notify.name, M.MACH_MSG_TYPE_MAKE_SEND_ONCE,
                                                        byref(prev)) == 0
                first.stop(kill=True)
                peer.stop()
                proxy()
                peer = Proc([sys.executable, str(HERE / "netmsg_peer.py"), "echo.c"], hosts.env(path_c),
                            hosts.tmp / "peer-c.log", stdin=True)
                old.send(b"to the old incarnation", timeout=5)
                assert _wait(lambda: old.dead)
                m = notify.receive(10)
                assert m.id == M.MACH_NOTIFY_NO_SENDERS
                m.release()
                with net.look_up("echo.c", "hostC") as new:
                    r = request(new, b"again", timeout=10)
                    assert r.data == b"echo:again"
                    r.release()
        finally:
            peer.stop()
    finally:
        for p in proxies:
            p.stop()
        bs_c.stop()


def test_duplicates_are_dropped_early_frames_wait_and_old_incarnations_are_fenced(hosts: Hosts) -> None:
    """A host of the test's own ("hostX", speaking NATS directly) looks up a
    port of hostA and sends it frames out of order and twice: the port
    gets each message once, in sequence order. Then hostX "restarts" (a
    new incarnation, which looked the port up too): frames of the old one
    are dropped."""
    import asyncio
    import nats as nats_client

    def msg(inc: int, ref: W.Ref, seq: int, msg_id: int) -> bytes:
        payload = W.encode(W.Encoded(msg_id, W.PORT_SEND, inline=b"%4d" % msg_id))
        (frame,) = W.chunks("hostX", inc, ref, seq, payload, 1 << 20)
        return frame

    with Port() as port, port.make_send() as right:
        net.check_in("frames.a", right)
        try:
            async def run() -> None:
                nc = await nats_client.connect(hosts.url, token=hosts.token)
                try:
                    r = await nc.request("pm.hostA.lookup", NN.pack_lookup_request("hostX", 1, "frames.a"),
                                         timeout=5)
                    code, raw = r.data[:4], r.data[4:]
                    assert code == b"\0\0\0\0"
                    ref = W.unpack_ref(raw)
                    assert ref is not None and ref.host == "hostA"
                    # the next incarnation looks it up too (references are
                    # counted per incarnation: the first one's go when it is fenced)
                    r2 = await nc.request("pm.hostA.lookup", NN.pack_lookup_request("hostX", 2, "frames.a"),
                                          timeout=5)
                    assert W.unpack_ref(r2.data[4:]) == ref
                    # (seq 1000: further ahead than credits allow, not kept)
                    for inc, seq, msg_id in ((1, 0, 0), (1, 0, 0), (1, 2, 2), (1, 1000, 1000), (1, 1, 1), (1, 1, 1),
                                             (1, 3, 3),
                                             (2, 0, 10), (1, 4, 4), (2, 1, 11)):
                        await nc.publish("pm.hostA.in", msg(inc, ref, seq, msg_id))
                    # a body that is not whole words is refused (its place in the sequence kept)
                    bad = W.encode(W.Encoded(99, W.PORT_SEND, inline=b"odd"))
                    await nc.publish("pm.hostA.in", W.chunks("hostX", 2, ref, 2, bad, 1 << 20)[0])
                    await nc.publish("pm.hostA.in", msg(2, ref, 3, 13))
                    await nc.flush()
                finally:
                    await nc.close()

            asyncio.run(run())
            got = [port.receive(10).id for _ in range(7)]
            assert got == [0, 1, 2, 3, 10, 11, 13]
            with pytest.raises(M.MachError) as ei:
                port.receive(0)  # nothing more: no duplicate, nothing of the fenced incarnation
            assert ei.value.kr == M.MACH_RCV_TIMED_OUT
        finally:
            net.check_out("frames.a")


def test_a_home_that_does_not_acknowledge_gets_the_message_again_then_its_port_is_dead(hosts: Hosts) -> None:
    """"hostX" (the test's NATS client, on a loop in a thread) answers a
    look-up with a port of its own and never acknowledges: hostA's proxy
    sends the message again and again, then takes the port for dead."""
    seen: list[tuple[str, int, int]] = []

    async def on_frame(nc: Any, f: W.Frame) -> None:
        seen.append((f.src_host, f.kind, f.seq))

    with FakeHost(hosts.url, hosts.token, "hostX", W.Ref("hostX", 77, 5), on_frame):
        with net.look_up("silent", "hostX") as right:
            right.send(b"1234", id=1, timeout=5)
            assert _wait(lambda: right.dead)
        sent = [x for x in seen if x[1] == W.MSG]
        assert sent[0] == ("hostA", W.MSG, 0) and len(sent) >= 3 and set(sent) == {sent[0]}


def test_a_message_of_many_chunks_goes_out_a_window_at_a_time(hosts: Hosts) -> None:
    """"hostX" (the test's NATS client) answers a look-up with a port of its
    own and then holds the chunks of a 40 MiB message back (more than
    two windows of chunks, whatever the server's payload limit): hostA's proxy
    publishes the chunk window and no more, sends the window again from
    where hostX said it was when nothing moves, goes on as hostX reports
    progress (MORE), and takes no MORE or ACK meant for another
    incarnation of it. So no NATS buffer ever holds more than a window."""
    from pymach.netmsg.proxy import CHUNK_WINDOW

    frames: list[W.Frame] = []
    ref = W.Ref("hostX", 77, 6)

    async def on_frame(nc: Any, f: W.Frame) -> None:
        if f.kind == W.MSG:
            f.chunk = len(f.chunk)  # type: ignore[assignment]  # (its length: the bytes are not kept)
            frames.append(f)

    def tell(kind: int, **kw: Any) -> None:
        x.send("pm.hostA.in", W.pack(W.Frame(kind, "hostX", ref.incarnation, ref.incarnation, ref.port_id, **kw)))

    def resent(n: int) -> None:
        """Wait until the proxy has sent the window again ``n`` times more
        (it does so after 0.25 s without progress)."""
        start = len(frames)
        assert _wait(lambda: len(frames) >= start + n * window), (len(frames), start)

    size = 40 << 20
    with FakeHost(hosts.url, hosts.token, "hostX", ref, on_frame) as x:
        window = max(2, CHUNK_WINDOW // x.nc.max_payload)
        with net.look_up("paced", "hostX") as right:
            right.send(Message(b"", ool=[b"\xab" * size]), timeout=5)
            assert _wait(lambda: len(frames) >= window)
            room = frames[0].chunk
            inc = frames[0].src_incarnation
            assert frames[0].total > size and room * window < size  # (many windows' worth)
            resent(1)
            assert {f.offset for f in frames} == {i * room for i in range(window)}
            # hostX holds two chunks: two more go out
            tell(W.MORE, seq=0, have=2 * room, to_incarnation=inc)
            assert _wait(lambda: max(f.offset for f in frames) == (window + 1) * room)
            # progress meant for another incarnation of hostA is not taken
            tell(W.MORE, seq=0, have=frames[0].total - 1, to_incarnation=inc ^ 1)
            tell(W.ACK, seq=0, delivered=1, to_incarnation=inc ^ 1)
            start = len(frames)
            resent(1)
            later = frames[start:]
            assert {f.offset for f in later} == {i * room for i in range(2, window + 2)}, \
                sorted({f.offset // room for f in later})
            tell(W.DEAD)
            assert _wait(lambda: right.dead)


def test_a_sender_keeps_no_more_than_the_byte_window_undelivered(hosts: Hosts) -> None:
    """"hostX" (the test's NATS client) takes every chunk of the messages
    sent to its port (MORE) and acknowledges each message it has whole
    (ACK), but delivers none. hostA's proxy forwards messages of 24 MiB
    while fewer than BYTE_WINDOW bytes are undelivered, however many
    credits it has left: the fourth waits (through a probe of the third)
    until hostX reports one delivered."""
    from pymach.netmsg.proxy import BYTE_WINDOW, WINDOW

    size = 24 << 20
    assert 3 * size >= BYTE_WINDOW > 2 * size and WINDOW > 4
    ref = W.Ref("hostX", 79, 2)
    seen: list[tuple[int, int, bool]] = []  # (seq, offset, whether it is the last) of each chunk
    delivered = [0]

    async def on_frame(nc: Any, f: W.Frame) -> None:
        if f.kind != W.MSG:
            return
        end = f.offset + len(f.chunk)
        seen.append((f.seq, f.offset, end == f.total))
        kind = W.ACK if end == f.total else W.MORE
        await nc.publish("pm.hostA.in", W.pack(W.Frame(
            kind, "hostX", ref.incarnation, ref.incarnation, ref.port_id, seq=f.seq, have=end,
            delivered=delivered[0], to_incarnation=f.src_incarnation)))

    def whole(seq: int) -> bool:
        return any(s == seq and last for s, _o, last in seen)

    with FakeHost(hosts.url, hosts.token, "hostX", ref, on_frame) as x:
        big = b"\xcd" * size
        with net.look_up("bytes.x", "hostX") as right:
            for i in range(4):
                right.send(Message(b"", id=i, ool=[big]), timeout=10)
            assert _wait(lambda: whole(2))
            first = len(seen)
            # the proxy port is out of the set: what it does now is probe
            # the third message (its first chunk again)
            assert _wait(lambda: any(s == 2 and o == 0 for s, o, _t in seen[first:]))
            assert not any(s == 3 for s, _o, _t in seen)
            delivered[0] = 1
            inc = int(net.version().split()[-1], 16)
            x.send("pm.hostA.in", W.pack(W.Frame(W.ACK, "hostX", ref.incarnation, ref.incarnation, ref.port_id,
                                                 seq=2, delivered=1, to_incarnation=inc)))
            assert _wait(lambda: any(s == 3 for s, _o, _t in seen))


def test_a_proxy_told_that_it_is_fenced_takes_a_new_incarnation(hosts: Hosts) -> None:
    """"hostX" (the test's NATS client) gives hostA a port, then says that
    it declared hostA dead (FENCED): first naming another incarnation of
    hostA (nothing happens), then hostA's own. hostA takes a new
    incarnation: its proxy port for hostX's port is a dead name, and a
    look-up made afresh works."""
    ref = W.Ref("hostX", 78, 1)

    def incarnation() -> int:
        return int(net.version().split()[-1], 16)

    with FakeHost(hosts.url, hosts.token, "hostX", ref) as x:
        def fenced(inc: int) -> None:
            x.send("pm.hostA.in", W.pack(W.Frame(W.FENCED, "hostX", ref.incarnation, inc)))

        first = incarnation()
        with net.look_up("fenced.x", "hostX") as right:
            assert x.asked == [("hostA", first, "fenced.x")]
            fenced(first ^ 1)
            assert right.send(b"", id=1, timeout=5) is None and incarnation() == first and not right.dead
            fenced(first)
            assert _wait(lambda: right.dead)
        second = incarnation()
        assert second != first
        with net.look_up("fenced.x", "hostX") as again:
            assert x.asked[-1] == ("hostA", second, "fenced.x") and not again.dead


def test_a_send_once_right_passed_on_twice_follows_its_holders_whatever_order_the_lends_come_in(hosts: Hosts) -> None:
    """hostA's send-once right goes to "hostS" (the test's NATS client),
    which passes it on to "hostY", which passes it on to an incarnation of
    "hostQ" that hostA has declared dead. hostY's LEND (Y → Q) reaches
    hostA before hostS's (S → Y): hostA keeps it until hostY's turn, then
    follows it, finds the right's holder dead, and releases the right: its
    port gets the send-once notification (hostY beats all along: its lease
    does not run out)."""
    import asyncio
    got: list[W.Ref] = []
    beating = [True]

    async def on_frame(nc: Any, f: W.Frame) -> None:
        if f.kind == W.MSG and f.offset == 0 and len(f.chunk) == f.total:
            ref = W.decode(bytes(f.chunk)).descriptors[0][1]
            assert isinstance(ref, W.Ref)
            got.append(ref)

    with FakeHost(hosts.url, hosts.token, "hostS", W.Ref("hostS", 81, 8), on_frame) as x:
        def lend(src: str, inc: int, ref: W.Ref, to: str, to_inc: int) -> None:
            x.send("pm.hostA.in", W.pack(W.Frame(W.LEND, src, inc, ref.incarnation, ref.port_id, ref.generation,
                                                 right=W.PORT_SEND_ONCE, count=1, to_host=to, to_incarnation=to_inc)))

        async def beat() -> None:
            while beating[0]:
                await x.nc.publish("pm.hostA.in", W.pack(W.Frame(W.BEAT, "hostY", 5)))
                await asyncio.sleep(0.3)

        async def start_beating() -> None:
            asyncio.ensure_future(beat())

        for inc in (1, 2):  # hostQ restarted: its incarnation 1 is fenced at hostA
            x.send("pm.hostA.in", W.pack(W.Frame(W.BEAT, "hostQ", inc)))
        x.run(start_beating())
        try:
            with net.look_up("so.s", "hostS") as right, Port() as port:
                with port.make_send_once() as once:
                    right.send(Message(b"", id=1, rights=[once]), timeout=5)
                assert _wait(lambda: bool(got))
                (ref,) = got
                assert ref.host == "hostA" and ref.kind == W.PORT_SEND_ONCE
                lend("hostY", 5, ref, "hostQ", 1)  # out of turn: kept
                with pytest.raises(M.MachError) as ei:
                    port.receive(0.5)
                assert ei.value.kr == M.MACH_RCV_TIMED_OUT
                lend("hostS", 81, ref, "hostY", 5)  # the holder's: then hostY's is followed
                m = port.receive(10)
                assert m.id == M.MACH_NOTIFY_SEND_ONCE
                m.release()
        finally:
            beating[0] = False


def test_a_host_silent_for_the_lease_is_fenced_and_comes_back_as_a_new_incarnation(hosts: Hosts) -> None:
    """Two hosts of the test's own, "hostV" and "hostW" (NATS clients),
    look up a port of hostA; both beat, then hostV falls silent. Once hostA
    stops beating hostV (it took hostV for dead after the lease), a message
    from hostV's same incarnation is dropped, although the port is still
    exported (hostW holds it) and the message is the first of hostV's
    sequence (its state at hostA was dropped with hostV), and hostV is told
    that it is fenced (FENCED, naming its incarnation). A new incarnation
    of hostV looks the port up again and is heard."""
    import asyncio
    from pymach.netmsg.proxy import LEASE

    beats: list[float] = []
    told: list[int] = []
    beating = {"hostV": True, "hostW": True}

    def msg(host: str, inc: int, ref: W.Ref, seq: int, msg_id: int) -> bytes:
        payload = W.encode(W.Encoded(msg_id, W.PORT_SEND, inline=b"%4d" % msg_id))
        (frame,) = W.chunks(host, inc, ref, seq, payload, 1 << 20)
        return frame

    async def on_frame(nc: Any, f: W.Frame) -> None:
        if f.kind == W.BEAT:
            beats.append(time.monotonic())
        elif f.kind == W.FENCED:
            told.append(f.incarnation)

    async def beat() -> None:
        while any(beating.values()):
            for host, inc in (("hostV", 1), ("hostW", 1)):
                if beating[host]:
                    await x.nc.publish("pm.hostA.in", W.pack(W.Frame(W.BEAT, host, inc)))
            await asyncio.sleep(0.3)

    async def start_beating() -> None:
        asyncio.ensure_future(beat())

    async def look_up(host: str, inc: int = 1) -> W.Ref:
        r = await x.nc.request("pm.hostA.lookup", NN.pack_lookup_request(host, inc, "fence.a"), timeout=5)
        ref = W.unpack_ref(r.data[4:])
        assert r.data[:4] == b"\0\0\0\0" and ref is not None
        return ref

    with FakeHost(hosts.url, hosts.token, "hostV", on_frame=on_frame) as x:
        try:
            x.run(start_beating())
            with Port() as port, port.make_send() as right:
                net.check_in("fence.a", right)
                try:
                    ref = x.run(look_up("hostV"))
                    assert x.run(look_up("hostW")) == ref  # one export, held by both
                    assert _wait(lambda: len(beats) >= 2)  # hostA beats hostV: a partner
                    beating["hostV"] = False
                    # hostA stops beating hostV once it is dead there
                    assert _wait(lambda: time.monotonic() - beats[-1] > 1.6 * LEASE / 3, LEASE + 5)
                    x.send("pm.hostA.in", msg("hostV", 1, ref, 0, 2))
                    with pytest.raises(M.MachError) as ei:
                        port.receive(1)
                    assert ei.value.kr == M.MACH_RCV_TIMED_OUT
                    assert _wait(lambda: told == [1])  # (once a lease at most)
                    beating["hostV"] = True
                    ref2 = x.run(look_up("hostV", 2))
                    x.send("pm.hostA.in", msg("hostV", 2, ref2, 0, 3))
                    assert port.receive(10).id == 3
                finally:
                    net.check_out("fence.a")
        finally:
            beating["hostV"] = beating["hostW"] = False


def test_fifo_and_exactly_once_across_a_nats_server_restart(hosts: Hosts) -> None:
    """hostB's peer sends 300 messages to a port here; the NATS server is
    stopped and started again while they flow (credits hold most of them
    back at hostB): every message arrives once, in order."""
    n = 300
    with Port() as port, net.look_up("echo.b", "hostB") as echo:
        with port.make_send() as right:
            r = request(echo, Message(b"fifo:%d" % n, rights=[right]), timeout=30)
        r.release()
        got = [port.receive(10).id for _ in range(50)]
        hosts.restart_nats()
        got += [port.receive(30).id for _ in range(n - 50)]
        assert got == list(range(n))
        with pytest.raises(M.MachError) as ei:
            port.receive(0.5)  # no duplicate behind them
        assert ei.value.kr == M.MACH_RCV_TIMED_OUT


def test_a_message_that_dies_at_its_home_gives_back_the_rights_it_carried(hosts: Hosts) -> None:
    """still.k's queue is full (5 messages), so the next message, which
    carries a send right to a port here, waits at hostB's proxy (or is still
    on its way when still.k dies); SIGKILL ends still.k: the message is
    destroyed there, hostB gives the reference back and the port here gets
    its no-senders notification."""
    task = M.mach_task_self()
    prev = mach_port_t()
    peer = hosts.peer("still.k")
    with Port() as port, Port() as notify, net.look_up("still.k", "hostB") as still:
        for _ in range(M.MACH_PORT_QLIMIT_DEFAULT):
            still.send(b"fill", timeout=5)
        with port.make_send() as right:
            still.send(Message(b"carry", rights=[right]), timeout=5)
        assert M.mach_port_request_notification(task, port.name, M.MACH_NOTIFY_NO_SENDERS, 0, notify.name,
                                                M.MACH_MSG_TYPE_MAKE_SEND_ONCE, byref(prev)) == 0
        peer.stop(kill=True)
        m = notify.receive(10)
        assert m.id == M.MACH_NOTIFY_NO_SENDERS
        m.release()


# -- the frames ---------------------------------------------------------------------------------------------

def test_frames_round_trip_and_chunk() -> None:
    r = W.Ref("hostA", 5, 7, 0, W.PORT_SEND)
    m = W.Encoded(3, W.PORT_SEND, W.Ref("b", 1, 2, 0, W.PORT_SEND_ONCE),
                  [(W.D_PORT, r), (W.D_OOL, (1, b"x" * 10)), (W.D_PORT, None), (W.D_ENTRY, (3, b"e"))], b"abc")
    assert W.decode(W.encode(m)) == m
    viewed = W.decode(bytearray(W.encode(m)))  # (a reassembled message: its bytes are views, equal)
    assert viewed == m and isinstance(viewed.descriptors[1][1][1], memoryview)  # type: ignore[index]
    payload = os.urandom(5000)
    frames = W.chunks("h", 9, r, 4, payload, 300)
    assert all(len(f) <= 300 for f in frames) and len(frames) > 10
    ra = W.Reassembly(len(payload))
    got = [ra.add(W.unpack(f)) for f in frames]
    assert got[-1] == payload and got[:-1] == [None] * (len(frames) - 1)
    for kind in (W.ACK, W.DEAD, W.DROP):
        f = W.Frame(kind, "h", 1, 2, 3, 0, 4, delivered=5, count=6, right=W.PORT_SEND)
        g = W.unpack(W.pack(f))
        assert (g.kind, g.src_host, g.src_incarnation, g.incarnation, g.port_id) == (kind, "h", 1, 2, 3)
    lend = W.Frame(W.LEND, "h", 1, 2, 3, 0, right=W.PORT_SEND, count=1, to_host="host3", to_incarnation=9)
    g = W.unpack(W.pack(lend))
    assert (g.kind, g.incarnation, g.port_id, g.right, g.count, g.to_host, g.to_incarnation) == (
        W.LEND, 2, 3, W.PORT_SEND, 1, "host3", 9)
    for bad in (W.pack(lend)[:-1], W.pack(lend) + b"x",
                W.pack(W.Frame(W.LEND, "h", 1, 2, 3, right=0, count=1, to_host="x"))):
        with pytest.raises(W.WireError):
            W.unpack(bad)
    ack = W.unpack(W.pack(W.Frame(W.ACK, "h", 1, 2, 3, 0, 4, delivered=5, to_incarnation=8)))
    assert (ack.seq, ack.delivered, ack.to_incarnation) == (4, 5, 8)
    more = W.unpack(W.pack(W.Frame(W.MORE, "h", 1, 2, 3, 0, 4, have=1 << 20, gap=1, to_incarnation=8)))
    assert (more.kind, more.seq, more.have, more.gap, more.to_incarnation) == (W.MORE, 4, 1 << 20, 1, 8)
    fenced = W.unpack(W.pack(W.Frame(W.FENCED, "h", 1, 77)))
    assert (fenced.kind, fenced.incarnation) == (W.FENCED, 77)
    beat = W.pack(W.Frame(W.BEAT, "h", 7))
    g = W.unpack(beat)
    assert (g.kind, g.src_host, g.src_incarnation) == (W.BEAT, "h", 7)
    with pytest.raises(W.WireError):
        W.unpack(beat + b"\0")  # a beat has no body


def test_bad_frames_are_refused() -> None:
    good = W.pack(W.Frame(W.ACK, "h", 1, 2, 3, 0, 4, delivered=5))
    for bad in (b"", good[:-1], good + b"x", b"XXXX" + good[4:], good[:5] + b"\x09" + good[6:]):
        with pytest.raises(W.WireError):
            W.unpack(bad)
    with pytest.raises(W.WireError):
        W.decode(b"\x11\0\0\0\0\0\0\0\xff\xff\xff\xff\0")
    with pytest.raises(W.WireError):
        W.chunks("h", 1, W.Ref("h", 1, 1), 0, b"x", 10)
    ra = W.Reassembly(10)
    with pytest.raises(W.WireError):
        ra.add(W.Frame(W.MSG, "h", 1, total=11, offset=0, chunk=b"x"))  # a chunk of another message
    assert W.valid_host("host-B_1") and not W.valid_host("a.b") and not W.valid_host("")


def test_the_embedded_server_is_joined_and_wants_its_token(tmp_path: Path) -> None:
    """join_or_start: the first call starts a server on 127.0.0.1 and
    writes the state file (0600); the next joins it; stop removes it."""
    import asyncio
    import nats as nats_client
    from pymach.netmsg import server
    state = tmp_path / "state.json"
    url, token, srv = server.join_or_start(state)
    assert srv is not None
    try:
        assert url.startswith("nats://127.0.0.1:") and len(token) == 64
        assert state.stat().st_mode & 0o777 == 0o600
        assert (srv.directory / "nats.conf").stat().st_mode & 0o777 == 0o600
        assert server.join_or_start(state) == (url, token, None)

        async def connect(tok: str) -> bool:
            nc = await nats_client.connect(url, token=tok, allow_reconnect=False, connect_timeout=5)
            await nc.close()
            return True

        assert asyncio.run(connect(token))
        # refused (in a child: nats-py leaves the socket of a refused connection open)
        code = ("import asyncio, nats, sys\n"
                "async def main():\n"
                "    try:\n"
                "        await nats.connect(sys.argv[1], token=sys.argv[2] or None, allow_reconnect=False)\n"
                "    except Exception:\n"
                "        sys.exit(3)\n"
                "asyncio.run(main())\n")
        for wrong in ("not-the-token", ""):
            out = subprocess.run([sys.executable, "-c", code, url, wrong], capture_output=True, timeout=60)
            assert out.returncode == 3, out
    finally:
        srv.stop()
    assert not state.exists() and server.read_state(state) is None


def test_serve_without_nats_starts_the_embedded_server_and_stops_it(tmp_path: Path) -> None:
    """``pymach netmsg serve`` alone: the embedded server starts, its state
    file names it, and SIGTERM to the proxy stops both (nothing left)."""
    import json
    from machutil import Server
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    bs = Server(str(tmp_path / "e.sock"), log=str(tmp_path / "bootstrap-e.log"))
    try:
        env = dict(os.environ, PYMACH_BOOTSTRAP_SOCKET=str(tmp_path / "e.sock"), PYMACH_NO_AUTOSTART="1",
                   PYTHONPATH=SRC, XDG_RUNTIME_DIR=str(xdg))
        proxy = Proc([sys.executable, "-m", "pymach", "netmsg", "serve", "--host", "hostE"], env,
                     tmp_path / "proxy-hostE.log", ready_fd=True)
        try:
            state = xdg / "pymach" / "netmsg-nats.json"
            nats_pid = json.loads(state.read_text())["pid"]
            assert Path(f"/proc/{nats_pid}").exists()
            out = subprocess.run([sys.executable, "-m", "pymach", "netmsg", "status"], env=env,
                                 capture_output=True, timeout=60)
            assert out.stdout.startswith(b"pymach netmsg 1 hostE "), out
        finally:
            proxy.stop()
        assert proxy.proc.returncode == 0, (tmp_path / "proxy-hostE.log").read_text()
        assert not Path(f"/proc/{nats_pid}").exists() and not state.exists()
    finally:
        bs.stop()

def test_any_bytes_are_a_frame_or_a_wire_error() -> None:
    """Untrusted input: unpack and decode give a value or WireError, never
    another exception, for any bytes (and for a good frame cut or flipped
    anywhere)."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    good = [W.pack(W.Frame(W.ACK, "h", 1, 2, 3, 0, 4, delivered=5)),
            W.chunks("hostA", 7, W.Ref("hostB", 1, 2), 3, W.encode(W.Encoded(
                5, W.PORT_SEND, W.Ref("hostA", 7, 9, 0, W.PORT_SEND_ONCE),
                [(W.D_PORT, W.Ref("c", 1, 1)), (W.D_OOL, (1, b"abc")), (W.D_ENTRY, (3, b"zz"))], b"data")),
                1 << 20)[0]]

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(st.one_of(st.binary(max_size=200),
                                st.tuples(st.sampled_from(good), st.integers(0, 199), st.integers(0, 255)).map(
                                    lambda t: t[0][:t[1] % len(t[0])] + bytes([t[2]]) + t[0][t[1] % len(t[0]) + 1:]),
                                st.tuples(st.sampled_from(good), st.integers(0, 199)).map(
                                    lambda t: t[0][:t[1] % len(t[0])])))
    def check(data: bytes) -> None:
        try:
            f = W.unpack(data)
        except W.WireError:
            return
        if f.kind == W.MSG and f.offset == 0 and len(f.chunk) == f.total:
            for buf in (f.chunk, bytearray(f.chunk)):  # (read-only: copies; writable: views)
                try:
                    W.decode(buf)
                except W.WireError:
                    pass

    check()
