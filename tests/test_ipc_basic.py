"""Mach IPC between real processes: ports, rights and mach_msg with the C
structs of <mach/message.h>."""

from __future__ import annotations

import ctypes
import os
import socket

import pytest

import pymach.mach as M
from pymach.mach import byref

T = M.mach_task_self


class Request(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t), ("text", ctypes.c_char * 16)]


class RequestRcv(ctypes.Structure):
    _pack_ = 4
    _fields_ = Request._fields_ + [("trailer", M.mach_msg_audit_trailer_t)]


class Complex(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t), ("body", M.mach_msg_body_t),
                ("port", M.mach_msg_port_descriptor_t), ("ool", M.mach_msg_ool_descriptor_t)]


class ComplexRcv(ctypes.Structure):
    _pack_ = 4
    _fields_ = Complex._fields_ + [("trailer", M.mach_msg_trailer_t)]


def new_port() -> int:
    name = M.mach_port_t()
    assert M.mach_port_allocate(T(), M.MACH_PORT_RIGHT_RECEIVE, byref(name)) == 0
    return name.value


def send_text(dest: int, text: bytes, disposition: int = M.MACH_MSG_TYPE_COPY_SEND, reply: int = 0,
              reply_disp: int = 0, msg_id: int = 7) -> int:
    m = Request()
    m.header.msgh_bits = M.MACH_MSGH_BITS(disposition, reply_disp)
    m.header.msgh_size = ctypes.sizeof(Request)
    m.header.msgh_remote_port = dest
    m.header.msgh_local_port = reply
    m.header.msgh_id = msg_id
    m.text = text
    return M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0)


def receive(port: int, timeout: int = 5000) -> tuple[int, RequestRcv]:
    r = RequestRcv()
    opt = M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT | M.MACH_RCV_TRAILER_ELEMENTS(M.MACH_RCV_TRAILER_AUDIT)
    kr = M.mach_msg(r.header, opt, 0, ctypes.sizeof(r), port, timeout, 0)
    return kr, r


def test_send_to_self_and_receive() -> None:
    port = new_port()
    try:
        assert M.mach_port_insert_right(T(), port, port, M.MACH_MSG_TYPE_MAKE_SEND) == 0
        t = M.mach_port_type_t()
        assert M.mach_port_type(T(), port, byref(t)) == 0
        assert t.value == M.MACH_PORT_TYPE_SEND_RECEIVE
        assert send_text(port, b"hello", msg_id=400) == 0
        kr, r = receive(port)
        assert kr == 0
        assert (r.text, r.header.msgh_id, r.header.msgh_local_port) == (b"hello", 400, port)
        assert M.MACH_MSGH_BITS_LOCAL(r.header.msgh_bits) == M.MACH_MSG_TYPE_PORT_SEND
        assert r.header.msgh_size == ctypes.sizeof(Request)
        assert r.trailer.msgh_trailer_size == 52
        assert r.trailer.msgh_audit.val[5] == os.getpid()
    finally:
        assert M.mach_port_destroy(T(), port) == 0


def test_receive_times_out_and_invalid_names() -> None:
    port = new_port()
    try:
        kr, _r = receive(port, timeout=10)
        assert kr == M.MACH_RCV_TIMED_OUT
        assert receive(0x12345)[0] == M.MACH_RCV_INVALID_NAME
        assert send_text(0x12345, b"x") == M.MACH_SEND_INVALID_DEST
        assert send_text(port, b"x") == M.MACH_SEND_INVALID_DEST  # receive right only: no COPY_SEND
    finally:
        M.mach_port_destroy(T(), port)


def test_request_and_send_once_reply_across_fork() -> None:
    port = new_port()
    assert M.mach_port_insert_right(T(), port, port, M.MACH_MSG_TYPE_MAKE_SEND) == 0
    arr = (M.mach_port_t * 1)(port)
    assert M.mach_ports_register(T(), arr, 1) == 0
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ports = M.mach_port_array_t()
            cnt = M.mach_msg_type_number_t()
            assert M.mach_ports_lookup(T(), byref(ports), byref(cnt)) == 0
            server = ports[0]
            reply = new_port()
            assert send_text(server, b"ping", reply=reply, reply_disp=M.MACH_MSG_TYPE_MAKE_SEND_ONCE) == 0
            kr, r = receive(reply)
            assert kr == 0 and r.text == b"pong"
            code = 0
        finally:
            os._exit(code)
    try:
        kr, r = receive(port)
        assert kr == 0 and r.text == b"ping"
        assert r.trailer.msgh_audit.val[5] == pid  # the kernel-verified sender
        assert M.MACH_MSGH_BITS_REMOTE(r.header.msgh_bits) == M.MACH_MSG_TYPE_PORT_SEND_ONCE
        reply = r.header.msgh_remote_port
        t = M.mach_port_type_t()
        assert M.mach_port_type(T(), reply, byref(t)) == 0 and t.value == M.MACH_PORT_TYPE_SEND_ONCE
        assert send_text(reply, b"pong", disposition=M.MACH_MSG_TYPE_MOVE_SEND_ONCE) == 0
        assert M.mach_port_type(T(), reply, byref(t)) == M.KERN_INVALID_NAME  # consumed
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    finally:
        M.mach_ports_register(T(), arr, 0)
        M.mach_port_destroy(T(), port)


def test_port_and_ool_descriptors() -> None:
    port = new_port()
    other = new_port()
    page = M.mach_vm_address_t()
    assert M.mach_vm_allocate(T(), byref(page), M.vm_page_size, M.VM_FLAGS_ANYWHERE) == 0
    try:
        ctypes.memmove(page.value, b"out of line", 11)
        assert M.mach_port_insert_right(T(), port, port, M.MACH_MSG_TYPE_MAKE_SEND) == 0
        m = Complex()
        m.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0) | M.MACH_MSGH_BITS_COMPLEX
        m.header.msgh_size = ctypes.sizeof(Complex)
        m.header.msgh_remote_port = port
        m.body.msgh_descriptor_count = 2
        m.port.name, m.port.disposition, m.port.type = other, M.MACH_MSG_TYPE_MAKE_SEND, \
            M.MACH_MSG_PORT_DESCRIPTOR
        m.ool.address, m.ool.size, m.ool.copy, m.ool.type = page.value, 11, M.MACH_MSG_VIRTUAL_COPY, \
            M.MACH_MSG_OOL_DESCRIPTOR
        assert M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0) == 0
        r = ComplexRcv()
        assert M.mach_msg(r.header, M.MACH_RCV_MSG, 0, ctypes.sizeof(r), port, 0, 0) == 0
        # the send right made from `other` coalesces with our receive right
        assert r.port.name == other and r.port.disposition == M.MACH_MSG_TYPE_PORT_SEND
        t = M.mach_port_type_t()
        M.mach_port_type(T(), other, byref(t))
        assert t.value == M.MACH_PORT_TYPE_SEND_RECEIVE
        # out-of-line data is a copy-on-write copy
        assert ctypes.string_at(r.ool.address, 11) == b"out of line"
        ctypes.memmove(r.ool.address, b"changed", 7)
        assert ctypes.string_at(page.value, 11) == b"out of line"
        assert M.mach_vm_deallocate(T(), r.ool.address, r.ool.size) == 0
    finally:
        M.mach_vm_deallocate(T(), page, M.vm_page_size)
        M.mach_port_destroy(T(), port)
        M.mach_port_destroy(T(), other)


def test_malformed_record_is_refused_and_the_next_message_arrives() -> None:
    port = new_port()
    try:
        assert M.mach_port_insert_right(T(), port, port, M.MACH_MSG_TYPE_MAKE_SEND) == 0
        from pymach.lowlevel import SELF
        cap = SELF.space.lookup(port).cap
        r_fd, w_fd = os.pipe()
        socket.send_fds(cap.sock, [b"garbage!" * 4], [r_fd, w_fd])  # type: ignore[attr-defined]
        os.close(r_fd)
        os.close(w_fd)
        assert receive(port)[0] == M.MACH_RCV_HEADER_ERROR
        assert send_text(port, b"good") == 0
        kr, r = receive(port)
        assert kr == 0 and r.text == b"good"
    finally:
        M.mach_port_destroy(T(), port)


def test_too_large_with_and_without_rcv_large() -> None:
    port = new_port()
    try:
        assert M.mach_port_insert_right(T(), port, port, M.MACH_MSG_TYPE_MAKE_SEND) == 0
        assert send_text(port, b"big") == 0
        small = M.mach_msg_empty_rcv_t()
        kr = M.mach_msg(small.header, M.MACH_RCV_MSG | M.MACH_RCV_LARGE, 0, ctypes.sizeof(small), port, 0, 0)
        assert kr == M.MACH_RCV_TOO_LARGE and small.header.msgh_size == ctypes.sizeof(Request)
        kr, r = receive(port)  # still queued
        assert kr == 0 and r.text == b"big"
        assert send_text(port, b"gone") == 0
        kr = M.mach_msg(small.header, M.MACH_RCV_MSG, 0, ctypes.sizeof(small), port, 0, 0)
        assert kr == M.MACH_RCV_TOO_LARGE
        assert receive(port, timeout=10)[0] == M.MACH_RCV_TIMED_OUT  # destroyed
    finally:
        M.mach_port_destroy(T(), port)


def test_too_large_without_rcv_large_destroys_the_reply_right_across_fork() -> None:
    """A message dequeued by a receive too small for it, without
    MACH_RCV_LARGE, is destroyed with its rights (XNU's
    mach_msg_receive_results calls ipc_kmsg_destroy): the sender's reply
    port gets the send-once notification of the reply right it made,
    instead of waiting for an answer that cannot come."""
    port = new_port()
    assert M.mach_port_insert_right(T(), port, port, M.MACH_MSG_TYPE_MAKE_SEND) == 0
    arr = (M.mach_port_t * 1)(port)
    assert M.mach_ports_register(T(), arr, 1) == 0
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ports = M.mach_port_array_t()
            cnt = M.mach_msg_type_number_t()
            assert M.mach_ports_lookup(T(), byref(ports), byref(cnt)) == 0
            reply = new_port()
            assert send_text(ports[0], b"ping", reply=reply, reply_disp=M.MACH_MSG_TYPE_MAKE_SEND_ONCE) == 0
            kr, r = receive(reply, timeout=10000)
            code = 0 if kr == 0 and r.header.msgh_id == M.MACH_NOTIFY_SEND_ONCE else 2
        finally:
            os._exit(code)
    try:
        small = M.mach_msg_empty_rcv_t()
        kr = M.mach_msg(small.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(small), port, 10000, 0)
        assert kr == M.MACH_RCV_TOO_LARGE
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0  # the child got the notification
        assert receive(port, timeout=10)[0] == M.MACH_RCV_TIMED_OUT  # destroyed, not queued
    finally:
        M.mach_ports_register(T(), arr, 0)
        M.mach_port_destroy(T(), port)


@pytest.mark.parametrize("right", [M.MACH_PORT_RIGHT_SEND, M.MACH_PORT_RIGHT_SEND_ONCE, 99])
def test_allocate_refuses_rights_it_cannot_make(right: int) -> None:
    name = M.mach_port_t(0xABC)
    assert M.mach_port_allocate(T(), right, byref(name)) == M.KERN_INVALID_VALUE
    assert name.value == 0xABC
