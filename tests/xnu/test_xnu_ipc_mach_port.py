"""Port of xnu-11417.101.15 tests/ipc_mach_port.c.

The C test runs its server as a launchd helper that checks in
SERVICE_NAME and its client as a fork helper that looks it up. Here the
test's own process is the server, checked in with a private bootstrap
server, and a fork child is the client; receives wait at most 10 s
instead of for ever. ``bootstrap_port`` is the connected bootstrap port
(machutil.bp: bootstrap_port_connect)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import pytest

import pymach.mach as M
from machutil import bp, private_bootstrap, start_watcher
from procutil import forked
from pymach.mach import byref

SERVICE_NAME = b"com.apple.xnu.test.mach_port"
WAIT_MS = 10_000


class one_port_msg(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t), ("body", M.mach_msg_body_t),
                ("port_descriptor", M.mach_msg_port_descriptor_t),
                ("trailer", M.mach_msg_trailer_t)]  # subtract this when sending


def server_checkin() -> int:
    mp = M.mach_port_t()
    kr = M.bootstrap_check_in(bp(), SERVICE_NAME, byref(mp))
    assert kr == M.KERN_SUCCESS, "bootstrap_check_in"
    return mp.value


def server_lookup() -> int:
    mp = M.mach_port_t()
    kr = M.bootstrap_look_up(bp(), SERVICE_NAME, byref(mp))
    assert kr == M.KERN_SUCCESS, "bootstrap_look_up"
    return mp.value


def make_sr_port() -> int:
    opts = M.mach_port_options_t()
    opts.flags = M.MPO_INSERT_SEND_RIGHT
    port = M.mach_port_t()
    kr = M.mach_port_construct(M.mach_task_self(), byref(opts), 0, byref(port))
    assert kr == M.KERN_SUCCESS, "mach_port_construct"
    return port.value


def destroy_port(port: int, receive: bool, srights: int) -> None:
    if srights:
        kr = M.mach_port_mod_refs(M.mach_task_self(), port, M.MACH_PORT_RIGHT_SEND, -srights)
        assert kr == M.KERN_SUCCESS, f"srights -= {srights}"
    if receive:
        kr = M.mach_port_mod_refs(M.mach_task_self(), port, M.MACH_PORT_RIGHT_RECEIVE, -1)
        assert kr == M.KERN_SUCCESS, "receive -= 1"


def send_port(id_: int, dest: int, right: int, disp: int) -> None:
    msg = one_port_msg()
    msg.header.msgh_remote_port = dest
    msg.header.msgh_bits = M.MACH_MSGH_BITS_SET(M.MACH_MSG_TYPE_COPY_SEND, 0, M.MACH_MSG_TYPE_MOVE_SEND,
                                                M.MACH_MSGH_BITS_COMPLEX)
    msg.header.msgh_id = id_
    msg.header.msgh_size = one_port_msg.trailer.offset
    msg.body.msgh_descriptor_count = 1
    msg.port_descriptor.name = right
    msg.port_descriptor.disposition = disp
    msg.port_descriptor.type = M.MACH_MSG_PORT_DESCRIPTOR
    kr = M.mach_msg(msg.header, M.MACH_SEND_MSG | M.MACH_SEND_TIMEOUT, msg.header.msgh_size, 0,
                    M.MACH_PORT_NULL, 10000, 0)
    assert kr == M.KERN_SUCCESS, f"send({id_})"


# -- basic test about right deduplication

def receive_port(expected_id: int, rcv_port: int, expected_disp: int) -> int:
    msg = one_port_msg()
    kr = M.mach_msg(msg.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(msg), rcv_port,
                    WAIT_MS, 0)
    assert kr == M.KERN_SUCCESS, f"receive({expected_id}): {M.mach_error_string(kr)}"
    assert msg.header.msgh_id == expected_id, "message id matches"
    assert msg.header.msgh_bits & M.MACH_MSGH_BITS_COMPLEX != 0, "message is complex"
    assert msg.body.msgh_descriptor_count == 1, "message has one right"
    assert msg.port_descriptor.disposition == expected_disp, "port has right disposition"
    return int(msg.port_descriptor.name)


def right_dedup_server(svc_port: int) -> None:
    ports = [0, 0, 0]

    ports[0] = receive_port(1, svc_port, M.MACH_MSG_TYPE_MOVE_RECEIVE)
    ports[1] = receive_port(2, svc_port, M.MACH_MSG_TYPE_MOVE_SEND)
    ports[2] = receive_port(3, svc_port, M.MACH_MSG_TYPE_MOVE_SEND)
    assert ports[0] == ports[1], "receive, send, send"
    assert ports[0] == ports[2], "receive, send, send"
    destroy_port(ports[0], True, 2)

    ports[0] = receive_port(4, svc_port, M.MACH_MSG_TYPE_MOVE_SEND)
    ports[1] = receive_port(5, svc_port, M.MACH_MSG_TYPE_MOVE_RECEIVE)
    ports[2] = receive_port(6, svc_port, M.MACH_MSG_TYPE_MOVE_SEND)
    assert ports[0] == ports[1], "send, receive, send"
    assert ports[0] == ports[2], "send, receive, send"
    destroy_port(ports[0], True, 2)

    ports[0] = receive_port(7, svc_port, M.MACH_MSG_TYPE_MOVE_SEND)
    ports[1] = receive_port(8, svc_port, M.MACH_MSG_TYPE_MOVE_SEND)
    ports[2] = receive_port(9, svc_port, M.MACH_MSG_TYPE_MOVE_RECEIVE)
    assert ports[0] == ports[1], "send, send, receive"
    assert ports[0] == ports[2], "send, send, receive"
    destroy_port(ports[0], True, 2)


def right_dedup_client(sync: Callable[[], None]) -> None:
    svc_port = server_lookup()

    port = make_sr_port()
    send_port(1, svc_port, port, M.MACH_MSG_TYPE_MOVE_RECEIVE)
    send_port(2, svc_port, port, M.MACH_MSG_TYPE_COPY_SEND)
    send_port(3, svc_port, port, M.MACH_MSG_TYPE_MOVE_SEND)

    port = make_sr_port()
    send_port(4, svc_port, port, M.MACH_MSG_TYPE_COPY_SEND)
    send_port(5, svc_port, port, M.MACH_MSG_TYPE_MOVE_RECEIVE)
    send_port(6, svc_port, port, M.MACH_MSG_TYPE_MOVE_SEND)

    port = make_sr_port()
    send_port(7, svc_port, port, M.MACH_MSG_TYPE_COPY_SEND)
    send_port(8, svc_port, port, M.MACH_MSG_TYPE_MOVE_SEND)
    send_port(9, svc_port, port, M.MACH_MSG_TYPE_MOVE_RECEIVE)
    sync()  # the server has received all nine


@pytest.fixture(scope="module", autouse=True)
def watcher_started() -> None:
    start_watcher()  # a process-wide thread: made before the test's fd baseline


def test_right_dedup() -> None:
    """make sure right deduplication works"""
    with private_bootstrap():
        svc_port = server_checkin()
        try:
            with forked(right_dedup_client) as sync:
                right_dedup_server(svc_port)
                sync()
        finally:
            M.mach_port_mod_refs(M.mach_task_self(), svc_port, M.MACH_PORT_RIGHT_RECEIVE, -1)
