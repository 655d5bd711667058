"""Clients and servers that pymach.mig makes at run time from a .defs file
(tests/mig/echo.defs): every argument form across real processes, in the
Pythonic layer and in the C layer (mig's stub signature, the demux and
mach_msg_server), mig's checks of a reply (MIG_REPLY_MISMATCH,
MIG_SERVER_DIED) and of a request (MIG_BAD_ARGUMENTS, MIG_TYPE_ERROR,
MIG_BAD_ID), and malformed requests fuzzed against a server."""

from __future__ import annotations

import ctypes
import os
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pymach.mach as M
from pymach import mig
from pymach.mach import byref
from pymach.mig import rpc
from procutil import run_in_child

pytest.importorskip("pcpp")

HERE = Path(__file__).resolve().parent / "mig"
T = M.mach_task_self
IFACE = mig.load(str(HERE / "echo.defs"), include=[str(HERE / "include")])
BASE = 7100


class Echo:
    """The implementation: each routine answers from its arguments."""

    def __init__(self) -> None:
        self.notes: list[int] = []
        self.stop = False

    def echo_add(self, server: int, a: int) -> int:
        return a + 1

    def echo_scalars(self, server: int, a: int, w: int, c: int) -> tuple[int, int]:
        return w * 2, c + a

    def echo_arrays(self, server: int, fixed: list[int], data: list[int], raw: bytes) -> tuple[Any, ...]:
        return fixed[::-1], data + [len(data)], raw.upper()

    def echo_ool(self, server: int, data: bytes) -> bytes:
        return data[::-1]

    def echo_ports(self, server: int, ports: list[int], pair: list[int]) -> tuple[int, list[int]]:
        alive = 0
        for n in ports + pair:
            t = M.mach_port_type_t()
            alive += M.mach_port_type(T(), n, byref(t)) == 0 and bool(t.value & M.MACH_PORT_TYPE_SEND)
            M.mach_port_deallocate(T(), n)
        return alive, [server]

    def echo_poly(self, server: int, port: tuple[int, int]) -> tuple[int, int]:
        return port  # moved back to the sender

    def echo_port_list(self, server: int, ports: list[int]) -> int:
        return self.echo_ports(server, ports, [])[0]

    def echo_strings(self, server: int, name: str, path: str) -> tuple[str, str]:
        return name.upper(), path + "/x"

    def echo_whoami(self, server: int, seqno: int, stoken: tuple[int, int],
                    atoken: tuple[int, ...]) -> tuple[int, int, int]:
        return atoken[5], seqno, stoken[0]

    def echo_note(self, server: int, a: int) -> None:
        self.notes.append(a)
        self.stop = a < 0

    def echo_fail(self, server: int, code: int) -> int:
        raise M.MachError(code)


def new_port(send: bool = True) -> int:
    name = M.mach_port_t()
    assert M.mach_port_allocate(T(), M.MACH_PORT_RIGHT_RECEIVE, byref(name)) == 0
    if send:
        assert M.mach_port_insert_right(T(), name, name, M.MACH_MSG_TYPE_MAKE_SEND) == 0
    return name.value


@pytest.fixture(autouse=True)
def release_mig_reply_port() -> Iterator[None]:
    """This thread's MIG reply port goes at the end of each test, as
    mig_dealloc_reply_port drops it, so that no test leaves its fds behind."""
    yield
    M.mig_dealloc_reply_port(M.mig_get_reply_port())


@pytest.fixture
def port() -> Iterator[int]:
    p = new_port()
    yield p
    M.mach_port_destroy(T(), p)


def registered_port() -> int:
    ports = M.mach_port_array_t()
    cnt = M.mach_msg_type_number_t()
    assert M.mach_ports_lookup(T(), byref(ports), byref(cnt)) == 0
    return int(ports[0])


def share(port: int) -> Any:
    arr = (M.mach_port_t * 1)(port)
    assert M.mach_ports_register(T(), arr, 1) == 0
    return arr


def served_in_a_thread(port: int, loop: Callable[[], None], client: Callable[[], Any],
                       stop: Callable[[], None] = lambda: None) -> Any:
    """Run ``loop`` (a server on ``port``) in a thread while ``client``
    runs in a fork child, which finds ``port`` registered; then, if the
    loop still runs, ``stop()`` and a last echo_note end it. Returns what
    the client returned."""
    arr = share(port)
    th = threading.Thread(target=loop)
    th.start()
    try:
        return run_in_child(client)
    finally:
        M.mach_ports_register(T(), arr, 0)
        if th.is_alive():
            stop()
            IFACE.echo_note(port, -1)
        th.join(10)
        assert not th.is_alive()


def pythonic_client() -> dict[str, Any]:
    signal.alarm(60)
    server = registered_port()
    tmo = 10000
    r: dict[str, Any] = {}
    r["add"] = IFACE.echo_add(server, 41, timeout=tmo)
    r["scalars"] = IFACE.echo_scalars(server, 3, -(1 << 40), 5, timeout=tmo)
    r["arrays"] = IFACE.echo_arrays(server, [1, 2, 3, 4], [5, -6, 7], b"mig", timeout=tmo)
    r["ool"] = IFACE.echo_ool(server, bytes(range(256)) * 40, timeout=tmo)
    mine = new_port()
    r["ports"] = IFACE.echo_ports(server, [mine, mine, mine], [mine, mine], timeout=tmo)
    back = r["ports"][1][0]
    r["ports_back_is_server"] = back == server
    M.mach_port_deallocate(T(), back)
    r["port_list"] = IFACE.echo_port_list(server, [mine, mine, mine], timeout=tmo)
    r["strings"] = IFACE.echo_strings(server, "name", "/some/path", timeout=tmo)
    r["whoami"] = IFACE.echo_whoami(server, timeout=tmo)
    r["pid"] = os.getpid()
    name, disp = IFACE.echo_poly(server, (mine, M.MACH_MSG_TYPE_MAKE_SEND), timeout=tmo)
    r["poly"] = (name == mine, disp)
    M.mach_port_deallocate(T(), name)
    try:
        IFACE.echo_fail(server, M.KERN_INVALID_ARGUMENT, timeout=tmo)
    except M.MachError as e:
        r["fail"] = e.kr
    refs = M.mach_port_urefs_t()
    assert M.mach_port_get_refs(T(), mine, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0
    r["mine_refs"] = refs.value
    M.mach_port_destroy(T(), mine)
    IFACE.echo_note(server, 5)
    return r


def test_pythonic_client_and_server_across_processes(port: int) -> None:
    impl = Echo()
    arr = share(port)
    try:
        with IFACE.serve(impl, port, poll_ms=50) as s:
            r = run_in_child(pythonic_client)
            # the client's last message is a simpleroutine, with no reply to
            # wait for: the server may not have taken it off the queue yet
            # when the child is gone (stopping the server then would drop it)
            deadline = time.monotonic() + 10
            while not impl.notes and time.monotonic() < deadline:
                time.sleep(0.01)
        assert s.result == 0
    finally:
        M.mach_ports_register(T(), arr, 0)
    assert r["add"] == 42
    assert r["scalars"] == (-(1 << 41), 8)
    assert r["arrays"] == ([4, 3, 2, 1], [5, -6, 7, 3], b"MIG")
    assert r["ool"] == (bytes(range(256)) * 40)[::-1]
    assert r["ports"][0] == 5 and r["ports_back_is_server"]
    assert r["strings"] == ("NAME", "/some/path/x")
    assert r["port_list"] == 3
    pid, seqno, uid = r["whoami"]
    assert pid == r["pid"] and seqno >= 0 and uid == os.geteuid()  # the kernel's word for the sender
    assert r["poly"] == (True, M.MACH_MSG_TYPE_PORT_SEND)
    assert r["fail"] == M.KERN_INVALID_ARGUMENT
    assert r["mine_refs"] == 1  # its own send right, and none of those the routines made
    assert impl.notes == [5]


def c_client() -> dict[str, Any]:
    signal.alarm(60)
    server = registered_port()
    c = IFACE.c
    r: dict[str, Any] = {}
    out = ctypes.c_int()
    r["add"] = (c.echo_add(server, 41, byref(out)), out.value)
    b, inout = ctypes.c_int64(), ctypes.c_int(10)
    r["scalars"] = (c.echo_scalars(server, 3, 7, byref(b), byref(inout)), b.value, inout.value)
    fixed = (ctypes.c_int * 4)(1, 2, 3, 4)
    data = (ctypes.c_int * 16)(9, 8)
    rfixed, rdata, rraw = (ctypes.c_int * 4)(), (ctypes.c_int * 16)(), (ctypes.c_char * 64)()
    rdataCnt, rrawCnt = M.mach_msg_type_number_t(), M.mach_msg_type_number_t()
    kr = c.echo_arrays(server, fixed, data, 2, b"xy", 2, rfixed, rdata, byref(rdataCnt), rraw, byref(rrawCnt))
    r["arrays"] = (kr, list(rfixed), list(rdata)[:rdataCnt.value], rraw.raw[:rrawCnt.value])
    src = ctypes.create_string_buffer(b"out of line", 11)
    addr, cnt = ctypes.c_void_p(), M.mach_msg_type_number_t()
    kr = c.echo_ool(server, src, 11, byref(addr), byref(cnt))
    r["ool"] = (kr, ctypes.string_at(addr.value, cnt.value))
    M.mach_vm_deallocate(T(), addr.value, cnt.value)
    name, path = (ctypes.c_char * 32)(), (ctypes.c_char * 128)()
    r["strings"] = (c.echo_strings(server, b"abc", b"/p", name, path), name.value, path.value)
    pid, seq, uid = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(-1)
    r["whoami"] = (c.echo_whoami(server, byref(pid), byref(seq), byref(uid)), pid.value == os.getpid(),
                   uid.value == os.geteuid())
    mine = new_port()
    pair = (M.mach_port_t * 2)(mine, mine)
    ports = (M.mach_port_t * 1)(mine)
    count, rports, rcnt = ctypes.c_int(), M.mach_port_array_t(), M.mach_msg_type_number_t()
    kr = c.echo_ports(server, ports, 1, pair, byref(count), byref(rports), byref(rcnt))
    r["ports"] = (kr, count.value, rcnt.value, rports[0] == server)
    M.mach_port_deallocate(T(), rports[0])
    M.mach_vm_deallocate(T(), ctypes.addressof(rports.contents), 4)
    rport, rpoly = M.mach_port_t(), M.mach_msg_type_name_t()
    r["poly"] = (c.echo_poly(server, mine, M.MACH_MSG_TYPE_MAKE_SEND, byref(rport), byref(rpoly)),
                 rport.value == mine, rpoly.value)
    M.mach_port_deallocate(T(), rport.value)
    M.mach_port_destroy(T(), mine)
    x = ctypes.c_int(77)
    r["fail"] = (c.echo_fail(server, M.KERN_NO_SPACE, byref(x)), x.value)
    r["note"] = c.echo_note(server, -1)
    return r


def test_c_client_and_mach_msg_server_across_processes(port: int) -> None:
    impl = Echo()
    server = IFACE.server(impl)
    demux = server.demux
    results: list[int] = []

    def loop() -> None:
        while not impl.stop:
            kr = M.mach_msg_server_once(demux, server.max_size, port, server.rcv_options)
            results.append(kr)

    r = served_in_a_thread(port, loop, c_client, lambda: setattr(impl, "stop", True))
    assert set(results) == {0}
    assert r["add"] == (0, 42)
    assert r["scalars"] == (0, 14, 13)
    assert r["arrays"] == (0, [4, 3, 2, 1], [9, 8, 2], b"XY")
    assert r["ool"] == (0, b"enil fo tuo")
    assert r["strings"] == (0, b"ABC", b"/p/x")
    assert r["whoami"] == (0, True, True)
    assert r["ports"] == (0, 3, 1, True)
    assert r["poly"] == (0, True, M.MACH_MSG_TYPE_PORT_SEND)
    assert r["fail"] == (M.KERN_NO_SPACE, 77)  # the out-parameter is left alone
    assert r["note"] == 0


# -- what the checks refuse --------------------------------------------------------------

class Raw(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t), ("body", ctypes.c_char * 512)]


def raw_request(port: int, msg_id: int, body: bytes, complex_: bool = False, reply: int = 0) -> int:
    m = Raw()
    m.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE if reply else 0) | (
        M.MACH_MSGH_BITS_COMPLEX if complex_ else 0)
    m.header.msgh_size = 24 + len(body)
    m.header.msgh_remote_port = port
    m.header.msgh_local_port = reply
    m.header.msgh_id = msg_id
    ctypes.memmove(ctypes.addressof(m) + 24, body, len(body))
    return M.mach_msg(m.header, M.MACH_SEND_MSG | M.MACH_SEND_TIMEOUT, m.header.msgh_size, 0, 0, 1000, 0)


def answer(port: int, reply: int, server: rpc.Server) -> tuple[int, int, int, bytes] | None:
    """Serve one request; the reply's (kr, id, size, bytes), destroyed after
    reading, or None (no reply: the request was larger than the server
    receives, and was destroyed, its reply right with it: the reply port
    then has the right's send-once notification, taken here)."""
    kr = rpc.serve_once(server, port, M.MACH_RCV_TIMEOUT, 1000)
    if kr == M.MACH_RCV_TOO_LARGE:
        n = Raw()
        kr = M.mach_msg(n.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(n), reply, 0, 0)
        assert kr == M.MACH_RCV_TIMED_OUT or (kr == 0 and n.header.msgh_id == M.MACH_NOTIFY_SEND_ONCE), kr
        return None
    assert kr == 0
    r = Raw()
    kr = M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), reply, 0, 0)
    if kr == M.MACH_RCV_TIMED_OUT:
        return None
    assert kr == 0
    data = ctypes.string_at(ctypes.addressof(r), r.header.msgh_size)
    M.mach_msg_destroy(r.header)
    code = struct.unpack_from("<i", data, 32)[0] if len(data) >= 36 else 0
    return code, r.header.msgh_id, r.header.msgh_size, data


@pytest.fixture
def reply_port() -> Iterator[int]:
    p = new_port(send=False)
    yield p
    M.mach_port_destroy(T(), p)


NDR = bytes(8)


@pytest.mark.parametrize("msg_id, body, complex_, code", [
    (BASE + 50, NDR + bytes(4), False, M.MIG_BAD_ID),                   # no such routine
    (BASE + 8, NDR + bytes(4), False, M.MIG_BAD_ID),                    # the skipped id
    (BASE + 0, NDR, False, M.MIG_BAD_ARGUMENTS),                        # too short
    (BASE + 0, NDR + bytes(8), False, M.MIG_BAD_ARGUMENTS),             # too long
    (BASE + 0, struct.pack("<I", 0) + NDR + bytes(4), True, M.MIG_BAD_ARGUMENTS),  # complex bit on a simple request
    (BASE + 3, NDR + bytes(4), False, M.MIG_BAD_ARGUMENTS),             # complex request sent simple
    (BASE + 2, NDR + bytes(16) + struct.pack("<I", 17) + bytes(68) + struct.pack("<I", 0), False,
     M.MIG_BAD_ARGUMENTS),                                              # a count over the maximum
    (BASE + 2, NDR + bytes(16) + struct.pack("<I", 2) + bytes(8) + struct.pack("<I", 0) + bytes(4), False,
     M.MIG_BAD_ARGUMENTS),                                              # a size that disagrees with the counts
    (BASE + 6, NDR + b"x" * 32 + struct.pack("<II", 0, 2) + b"ab\0\0", False,
     M.MIG_BAD_ARGUMENTS),                                              # a c_string with no terminator
    (BASE + 6, NDR + b"x\0" + bytes(30) + struct.pack("<II", 0, 2) + b"ab\0\0", False,
     M.MIG_BAD_ARGUMENTS),                                              # a variable c_string with none
])
def test_bad_requests_get_mig_error_replies(port: int, reply_port: int, msg_id: int, body: bytes, complex_: bool,
                                            code: int) -> None:
    server = IFACE.server(Echo())
    assert raw_request(port, msg_id, body, complex_, reply_port) == 0
    got = answer(port, reply_port, server)
    assert got is not None
    assert got[:3] == (code, msg_id + 100, 36)


def test_a_port_descriptor_of_the_wrong_disposition_is_a_type_error(port: int, reply_port: int) -> None:
    server = IFACE.server(Echo())
    mine = new_port()
    try:
        # echo_ports' pair is two send rights: a send-once right in it is refused
        ools = struct.pack("<QBBBBI", 0, 0, M.MACH_MSG_VIRTUAL_COPY, M.MACH_MSG_TYPE_COPY_SEND,
                           M.MACH_MSG_OOL_PORTS_DESCRIPTOR, 0)
        pair = (struct.pack("<IIHBB", mine, 0, 0, M.MACH_MSG_TYPE_MAKE_SEND, M.MACH_MSG_PORT_DESCRIPTOR)
                + struct.pack("<IIHBB", mine, 0, 0, M.MACH_MSG_TYPE_MAKE_SEND_ONCE, M.MACH_MSG_PORT_DESCRIPTOR))
        body = struct.pack("<I", 3) + ools + pair + NDR + struct.pack("<I", 0)
        assert raw_request(port, BASE + 4, body, True, reply_port) == 0
        got = answer(port, reply_port, server)
        assert got is not None and got[0] == M.MIG_TYPE_ERROR
        # and the right it carried was released, not leaked
        t = M.mach_port_type_t()
        assert M.mach_port_type(T(), mine, byref(t)) == 0 and t.value == M.MACH_PORT_TYPE_SEND_RECEIVE
        refs = M.mach_port_urefs_t()
        assert M.mach_port_get_refs(T(), mine, M.MACH_PORT_RIGHT_SEND_ONCE, byref(refs)) == 0 and refs.value == 0
        assert M.mach_port_get_refs(T(), mine, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0 and refs.value == 1
    finally:
        M.mach_port_destroy(T(), mine)


class Failing(Echo):
    def echo_ports(self, server: int, ports: list[int], pair: list[int]) -> tuple[int, list[int]]:
        raise M.MachError(M.KERN_INVALID_VALUE)

    def echo_ool(self, server: int, data: bytes) -> bytes:
        raise M.MachError(M.KERN_NO_SPACE)

    def echo_add(self, server: int, a: int) -> int:
        raise ZeroDivisionError("a bug of the implementation")


def test_a_failed_routine_consumes_nothing_and_its_request_is_destroyed(port: int, reply_port: int,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    server = IFACE.server(Failing())
    mine = new_port()
    try:
        names = (M.mach_port_t * 2)(mine, mine)
        ools = struct.pack("<QBBBBI", ctypes.addressof(names), 0, M.MACH_MSG_VIRTUAL_COPY, M.MACH_MSG_TYPE_COPY_SEND,
                           M.MACH_MSG_OOL_PORTS_DESCRIPTOR, 2)
        pair = struct.pack("<IIHBB", mine, 0, 0, M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_PORT_DESCRIPTOR) * 2
        body = struct.pack("<I", 3) + ools + pair + NDR + struct.pack("<I", 2)
        assert raw_request(port, BASE + 4, body, True, reply_port) == 0
        got = answer(port, reply_port, server)
        assert got is not None and got[:3] == (M.KERN_INVALID_VALUE, BASE + 104, 36)
        refs = M.mach_port_urefs_t()
        assert M.mach_port_get_refs(T(), mine, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0 and refs.value == 1
        # the out-of-line data of a failed routine is released once, by mach_msg_server
        data = ctypes.create_string_buffer(b"z" * 5000)
        ool = struct.pack("<QBBBBI", ctypes.addressof(data), 0, M.MACH_MSG_VIRTUAL_COPY, 0, M.MACH_MSG_OOL_DESCRIPTOR,
                          5000)
        assert raw_request(port, BASE + 3, struct.pack("<I", 1) + ool + NDR + struct.pack("<I", 5000), True,
                           reply_port) == 0
        got = answer(port, reply_port, server)
        assert got is not None and got[0] == M.KERN_NO_SPACE
        # an exception that is not a MachError is printed, and the routine fails
        assert raw_request(port, BASE, NDR + bytes(4), False, reply_port) == 0
        got = answer(port, reply_port, server)
        assert got is not None and got[0] == M.KERN_FAILURE
        assert "ZeroDivisionError" in capsys.readouterr().err
        # and the server goes on
        server.impl = Echo()
        assert raw_request(port, BASE, NDR + struct.pack("<i", 1), False, reply_port) == 0
        got = answer(port, reply_port, server)
        assert got is not None and got[:3] == (0, BASE + 100, 40) and got[3][36:40] == struct.pack("<i", 2)
    finally:
        M.mach_port_destroy(T(), mine)


def test_a_request_larger_than_any_routine_takes_is_dropped_and_the_server_goes_on(port: int,
                                                                                   reply_port: int) -> None:
    server = IFACE.server(Echo())
    assert raw_request(port, BASE, NDR + bytes(400), False, reply_port) == 0
    kr = rpc.serve_once(server, port, M.MACH_RCV_TIMEOUT, 1000)
    assert kr == M.MACH_RCV_TOO_LARGE
    n = Raw()  # the request was destroyed, and its reply right with it
    assert M.mach_msg(n.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(n), reply_port, 5000, 0) == 0
    assert n.header.msgh_id == M.MACH_NOTIFY_SEND_ONCE
    assert raw_request(port, BASE, NDR + struct.pack("<i", 9), False, reply_port) == 0
    got = answer(port, reply_port, server)
    assert got is not None and got[3][36:40] == struct.pack("<i", 10)


def test_the_client_sees_mig_reply_mismatch_and_server_died(port: int) -> None:
    def bad_server(how: str) -> None:
        r = Raw()
        assert M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), port, 10000, 0) == 0
        if how == "died":
            M.mach_msg_destroy(r.header)  # the send-once right dies unanswered
            return
        reply = M.mig_reply_error_t()
        reply.Head.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_MOVE_SEND_ONCE, 0)
        reply.Head.msgh_size = 40
        reply.Head.msgh_remote_port = r.header.msgh_remote_port
        reply.Head.msgh_id = r.header.msgh_id + 101  # not the reply's id
        buf = (ctypes.c_char * 40).from_buffer_copy(bytes(reply) + bytes(4))
        assert M.mach_msg(buf, M.MACH_SEND_MSG, 40, 0, 0, 0, 0) == 0

    for how, code in (("died", M.MIG_SERVER_DIED), ("mismatch", M.MIG_REPLY_MISMATCH)):
        th = threading.Thread(target=bad_server, args=(how,))
        th.start()
        out = ctypes.c_int(-1)
        assert IFACE.c.echo_add(port, 1, byref(out)) == code
        th.join(10)
        assert out.value == -1
        with pytest.raises(M.MachError) as e:
            th = threading.Thread(target=bad_server, args=(how,))
            th.start()
            IFACE.echo_add(port, 1, timeout=10000)
        th.join(10)
        assert e.value.kr == code


def test_mig_reply_port_is_per_thread_and_renewed_after_dealloc() -> None:
    a = M.mig_get_reply_port()
    assert a and M.mig_get_reply_port() == a
    M.mig_put_reply_port(a)
    assert M.mig_get_reply_port() == a
    other: list[int] = []

    def elsewhere() -> None:
        other.append(M.mig_get_reply_port())
        M.mig_dealloc_reply_port(other[0])

    th = threading.Thread(target=elsewhere)
    th.start()
    th.join(10)
    assert other and other[0] != a
    M.mig_dealloc_reply_port(a)
    t = M.mach_port_type_t()
    assert M.mach_port_type(T(), a, byref(t)) != 0 or t.value == 0
    b = M.mig_get_reply_port()
    assert b and b == M.mig_get_reply_port()


def test_a_fork_child_makes_its_own_mig_reply_port() -> None:
    """The parent's reply port is not the child's: the child's space holds
    none of its parent's rights, so mig_get_reply_port there makes a
    receive right of the child's own."""
    a = M.mig_get_reply_port()
    assert a

    def child() -> tuple[int, int]:
        b = M.mig_get_reply_port()
        t = M.mach_port_type_t()
        kr = M.mach_port_type(T(), b, byref(t))
        return kr, t.value

    try:
        assert run_in_child(child) == (0, M.MACH_PORT_TYPE_RECEIVE)
        assert M.mig_get_reply_port() == a  # the parent's is kept
    finally:
        M.mig_dealloc_reply_port(a)


# -- fuzzing ------------------------------------------------------------------------------

_DESC = st.one_of(
    st.tuples(st.just("port"), st.sampled_from([M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND,
                                                 M.MACH_MSG_TYPE_MAKE_SEND_ONCE]), st.integers(0, 3)),
    st.tuples(st.just("ool"), st.integers(0, 64), st.integers(0, 3)),
    st.tuples(st.just("ports"), st.integers(0, 4), st.integers(0, 3)),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msg_id=st.one_of(st.integers(BASE - 2, BASE + 12), st.integers(-2**31, 2**31 - 1)),
       complex_=st.booleans(), descs=st.lists(_DESC, max_size=4), count=st.one_of(st.none(), st.integers(0, 6)),
       tail=st.binary(max_size=200), words=st.lists(st.integers(0, 2**32 - 1), max_size=8))
def test_fuzzed_requests_never_crash_the_server_nor_leak(port: int, reply_port: int, msg_id: int, complex_: bool,
                                                         descs: list[tuple[str, int, int]], count: int | None,
                                                         tail: bytes, words: list[int]) -> None:
    server = IFACE.server(Echo())
    mine = new_port()
    try:
        body = b""
        ool = ctypes.create_string_buffer(64)
        names = (M.mach_port_t * 4)(mine, mine, mine, mine)
        if complex_:
            body += struct.pack("<I", len(descs) if count is None else count)
            for kind, a, _b in descs:
                if kind == "port":
                    body += struct.pack("<IIHBB", mine, 0, 0, a, M.MACH_MSG_PORT_DESCRIPTOR)
                elif kind == "ool":
                    body += struct.pack("<QBBBBI", ctypes.addressof(ool), 0, M.MACH_MSG_VIRTUAL_COPY, 0,
                                        M.MACH_MSG_OOL_DESCRIPTOR, a)
                else:
                    body += struct.pack("<QBBBBI", ctypes.addressof(names), 0, M.MACH_MSG_VIRTUAL_COPY,
                                        M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_OOL_PORTS_DESCRIPTOR, a)
        body += b"".join(struct.pack("<I", w) for w in words) + tail
        body = body[:480]
        body += bytes(-len(body) % 4)
        kr = raw_request(port, msg_id, body, complex_, reply_port)
        if kr == 0:
            got = answer(port, reply_port, server)
            if got is None:  # only a request larger than any of the subsystem's goes unanswered
                assert 24 + len(body) > server.max_request
                return
            code, rid, size, _data = got
            if msg_id == BASE + 9 and rid == M.MACH_NOTIFY_SEND_ONCE:
                return  # echo_note, a simpleroutine: no reply; the server released the reply right it was given
            assert rid == (msg_id + 100 + 2**31) % 2**32 - 2**31
            if not (BASE <= msg_id <= BASE + 11) or msg_id == BASE + 8:
                assert code == M.MIG_BAD_ID
            elif size == 36 and code:
                assert code in (M.MIG_BAD_ARGUMENTS, M.MIG_TYPE_ERROR, M.MIG_TRAILER_ERROR, M.MIG_BAD_ID) or code > 0
        # nothing the request carried stays behind
        refs = M.mach_port_urefs_t()
        assert M.mach_port_get_refs(T(), mine, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0 and refs.value == 1
        assert M.mach_port_get_refs(T(), mine, M.MACH_PORT_RIGHT_SEND_ONCE, byref(refs)) == 0 and refs.value == 0
    finally:
        M.mach_port_destroy(T(), mine)


def test_bench_mig_smoke() -> None:
    # a smoke test of `pymach bench mig`: every case runs and checks its replies (no timing is asserted)
    from pymach.tools import bench_mig
    (block,) = bench_mig.results(5, 1)
    rows = block["rows"]
    assert isinstance(rows, list) and [r["case"] for r in rows] == [c for c, _ in bench_mig.CASES]
    assert all(r["ns_per_op"] > 0 for r in rows)
    M.mig_dealloc_reply_port(M.mig_get_reply_port())


def _import(path: Path) -> Any:
    import importlib.util
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_modules_serve_a_client_in_another_process(tmp_path: Path, port: int) -> None:
    from pymach.tools import main
    user, srv, hdr = tmp_path / "echo_user.py", tmp_path / "echo_server.py", tmp_path / "echo_types.py"
    assert main(["mig", "-I", str(HERE / "include"), "-user", str(user), "-server", str(srv), "-header", str(hdr),
                 str(HERE / "echo.defs")]) == 0
    types = _import(hdr)
    for rt in IFACE.subsystem.routines:
        assert getattr(types, f"{rt.name}_id") == rt.id
        req = getattr(types, f"__Request__{rt.name}_t")
        assert ctypes.sizeof(req) == rt.request.size
        assert [(f.name, getattr(req, f.name).offset) for f in rt.request.fields] == \
            [(f.name, f.offset) for f in rt.request.fields]
        if not rt.simple:
            assert ctypes.sizeof(getattr(types, f"__Reply__{rt.name}_t")) == rt.reply.size
    assert types.echo_MSG_COUNT == 12
    server = _import(srv)
    client = _import(user)
    impl = Echo()
    server.implementation = impl

    def loop() -> None:
        while not impl.stop:
            assert M.mach_msg_server_once(server.echo_server, server.echo_max_size, port, 0) == 0

    def child() -> tuple[Any, ...]:
        signal.alarm(60)
        dest = registered_port()
        out = ctypes.c_int()
        kr = client.echo_add(dest, 1, byref(out))
        strings = client.echo.echo_strings(dest, "generated", "/a", timeout=10000)
        assert client.echo_note(dest, -1) == 0
        return kr, out.value, strings

    assert served_in_a_thread(port, loop, child) == (0, 2, ("GENERATED", "/a/x"))


def test_a_routine_whose_trailer_was_not_asked_for_gets_mig_trailer_error(port: int) -> None:
    server = IFACE.server(Echo())
    got: list[int] = []
    # options 0: the minimal trailer, without the seqno and tokens echo_whoami takes
    th = threading.Thread(target=lambda: got.append(
        M.mach_msg_server_once(server.demux, server.max_size, port, 0)))
    th.start()
    with pytest.raises(M.MachError) as e:
        IFACE.echo_whoami(port, timeout=10000)
    th.join(10)
    assert e.value.kr == M.MIG_TRAILER_ERROR and got == [0]
    assert server.rcv_options == M.MACH_RCV_TRAILER_TYPE(M.MACH_MSG_TRAILER_FORMAT_0) | \
        M.MACH_RCV_TRAILER_ELEMENTS(M.MACH_RCV_TRAILER_AUDIT)


def test_values_wrap_as_c_converts_them(port: int) -> None:
    with IFACE.serve(Echo(), port, poll_ms=50):
        out = ctypes.c_int()
        assert IFACE.c.echo_add(port, 0xFFFFFFFF, byref(out)) == 0 and out.value == 0   # (int)0xffffffff is -1
        assert IFACE.echo_add(port, 0xFFFFFFFF, timeout=10000) == 0
        assert IFACE.echo_add(port, ctypes.c_int(-5), timeout=10000) == -4
        with pytest.raises(TypeError):
            IFACE.echo_add(port, 1, 2)


class BadReply(Echo):
    def echo_poly(self, server: int, port: tuple[int, int]) -> tuple[int, int]:
        M.mach_port_deallocate(T(), port[0])
        return 0x7770B, M.MACH_MSG_TYPE_MOVE_SEND  # a name this task does not hold


def test_a_reply_the_kernel_refuses_gives_the_client_mig_server_died_and_the_server_goes_on(port: int) -> None:
    mine = new_port()
    try:
        with IFACE.serve(BadReply(), port, poll_ms=50) as s:
            with pytest.raises(M.MachError) as e:
                IFACE.echo_poly(port, (mine, M.MACH_MSG_TYPE_MAKE_SEND), timeout=10000)
            assert e.value.kr == M.MIG_SERVER_DIED
            assert IFACE.echo_add(port, 1, timeout=10000) == 2
        assert s.result == 0 and not s.thread.is_alive()
    finally:
        M.mach_port_destroy(T(), mine)


def test_the_demux_reads_no_further_than_the_buffer_it_is_given() -> None:
    server = IFACE.server(Echo())
    # a request whose msgh_size claims more than its buffer holds
    req = ctypes.create_string_buffer(struct.pack("<IIIIIi", 0x1513, 120, 0, 0, 0, BASE + 2) + NDR + bytes(8), 48)
    rep = M.mig_reply_error_t()
    assert server.demux(M.mach_msg_header_t.from_buffer(req), rep.Head)
    assert (rep.Head.msgh_id, rep.Head.msgh_size, rep.RetCode) == (BASE + 102, 36, M.MIG_BAD_ARGUMENTS)
    with pytest.raises(ValueError):
        server.demux(M.mach_msg_header_t.from_buffer(req), (ctypes.c_char * 20)())   # no room for the reply
    with pytest.raises(ValueError):
        server.demux((ctypes.c_char * 16)(), rep.Head)                               # no room for a header


class EchoC:
    """The implementation in the C layer: mig's server signatures, out
    arguments through references, a kern_return_t."""

    def __init__(self) -> None:
        self.stop = False

    def echo_add(self, server: int, a: int, sum_: Any) -> int:
        sum_._obj.value = a + 1
        return 0

    def echo_scalars(self, server: int, a: int, w: int, b: Any, c: Any) -> int:
        b._obj.value = w * 2
        c._obj.value += a
        return 0

    def echo_arrays(self, server: int, fixed: Any, data: Any, dataCnt: int, raw: Any, rawCnt: int, rfixed: Any,
                    rdata: Any, rdataCnt: Any, rraw: Any, rrawCnt: Any) -> int:
        ints = (ctypes.c_int * 4).from_buffer_copy(fixed)
        ctypes.memmove(rfixed, (ctypes.c_int * 4)(*list(ints)[::-1]), 16)
        assert rdataCnt._obj.value == 16      # the room mig's server code gives
        ctypes.memmove(rdata, data, 4 * dataCnt)
        rdataCnt._obj.value = dataCnt
        ctypes.memmove(rraw, bytes(raw)[:rawCnt].upper(), rawCnt)
        rrawCnt._obj.value = rawCnt
        return 0

    def echo_ool(self, server: int, data: int, dataCnt: int, rdata: Any, rdataCnt: Any) -> int:
        # the request's region is the routine's: it answers with it reversed in place
        buf = (ctypes.c_char * dataCnt).from_address(data)
        buf[:] = bytes(buf)[::-1]
        self.keep = ctypes.create_string_buffer(bytes(buf), dataCnt)
        M.mach_vm_deallocate(T(), data, dataCnt)
        rdata._obj.value = ctypes.addressof(self.keep)
        rdataCnt._obj.value = dataCnt
        return 0

    def echo_strings(self, server: int, name: Any, path: Any, rname: Any, rpath: Any) -> int:
        rname.value = name.value.upper()
        rpath.value = path.value + b"/c"
        return 0

    def echo_fail(self, server: int, code: int, x: Any) -> int:
        return code

    def echo_note(self, server: int, a: int) -> int:
        self.stop = True
        return 0


def c_layer_server_client() -> dict[str, Any]:
    signal.alarm(60)
    server = registered_port()
    tmo = 10000
    r = {"add": IFACE.echo_add(server, 1, timeout=tmo),
         "scalars": IFACE.echo_scalars(server, 2, 3, 4, timeout=tmo),
         "arrays": IFACE.echo_arrays(server, [1, 2, 3, 4], [7, 8, 9], b"abc", timeout=tmo),
         "ool": IFACE.echo_ool(server, b"0123456789" * 500, timeout=tmo),
         "strings": IFACE.echo_strings(server, "c", "/layer", timeout=tmo)}
    try:
        IFACE.echo_fail(server, M.KERN_NOT_SUPPORTED, timeout=tmo)
    except M.MachError as e:
        r["fail"] = e.kr
    IFACE.echo_note(server, 0)
    return r


def test_a_c_layer_implementation_serves_a_client_in_another_process(port: int) -> None:
    impl = EchoC()
    server = IFACE.server(impl, c_layer=True)

    def loop() -> None:
        while not impl.stop:
            assert M.mach_msg_server_once(server.demux, server.max_size, port, 0) == 0

    r = served_in_a_thread(port, loop, c_layer_server_client, lambda: setattr(impl, "stop", True))
    assert r == {"add": 2, "scalars": (6, 6), "arrays": ([4, 3, 2, 1], [7, 8, 9], b"ABC"),
                 "ool": (b"0123456789" * 500)[::-1], "strings": ("C", "/layer/c"), "fail": M.KERN_NOT_SUPPORTED}
