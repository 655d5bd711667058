"""pymach.mach never reads or writes past the ctypes object it is handed.

The memory an argument lives in is known: a view shares its ``_b_base_``
root's, an object made with from_buffer lives in that buffer, byref(x, off)
and pointer(x) point into x. A message that does not fit in it is destroyed
and mach_msg returns MACH_RCV_INVALID_DATA, as XNU does when its copyout to
the receive buffer fails (osfmk/ipc/ipc_kmsg.c: ipc_kmsg_put_to_user); a
send that reaches past it is MACH_SEND_INVALID_DATA (osfmk/ipc/mach_msg.c:
mach_msg_copyin_user_header). Out-buffers with a count hold what the object
holds, and a count cut short is treated as XNU treats a short count.

Most objects here are carved from the front of a larger arena with
``from_buffer(memoryview(arena)[:n])``: their memory ends where canary
bytes begin, so a write past them stays inside the arena, where it shows,
instead of corrupting the interpreter."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
from ctypes import byref, pointer, sizeof
from typing import Any

import pymach.mach as M
from pymach.mach._args import address_of
from machutil import OK, T, alloc_name, register
from procutil import start_sleep

CANARY = 0xA5
TIMEOUT_MS = 10000
SEND = M.MACH_SEND_MSG | M.MACH_SEND_TIMEOUT
RCV = M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT


class Arena:
    """A ctypes buffer filled with canary bytes; carve() makes an object on
    its first bytes (zeroed unless ``keep``) whose memory ends there."""

    def __init__(self, size: int = 8192) -> None:
        self.buf = (ctypes.c_char * size)()
        ctypes.memset(self.buf, CANARY, size)
        self.n = 0

    def carve(self, typ: Any, keep: bool = False) -> Any:
        self.n = sizeof(typ)
        if not keep:
            ctypes.memset(self.buf, 0, self.n)
        return typ.from_buffer(memoryview(self.buf)[:self.n])

    def canary_intact(self) -> bool:
        rest = self.buf.raw[self.n:]
        return rest == bytes([CANARY]) * len(rest)


class Small(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t), ("body", ctypes.c_char * 40), ("trailer", M.mach_msg_trailer_t)]


def _port() -> int:
    p = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
    assert M.mach_port_insert_right(T(), p, p, M.MACH_MSG_TYPE_MAKE_SEND) == OK
    return p


def _send(dest: int, nbytes: int, reply: int = 0, msg_id: int = 77) -> None:
    """Queue a simple message of ``nbytes`` (a MAKE_SEND_ONCE reply right
    to ``reply`` when given)."""
    buf = (ctypes.c_char * nbytes)(*([b"m"] * nbytes))
    h = M.mach_msg_header_t.from_buffer(buf)
    h.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE if reply else 0)
    h.msgh_size, h.msgh_remote_port, h.msgh_local_port, h.msgh_voucher_port, h.msgh_id = \
        nbytes, dest, reply, 0, msg_id
    assert M.mach_msg(h, M.MACH_SEND_MSG | M.MACH_SEND_TIMEOUT, nbytes, 0, 0, TIMEOUT_MS, 0) == OK


def _receive(port: int, timeout_ms: int = TIMEOUT_MS) -> tuple[int, Any]:
    r = (ctypes.c_char * 1024)()
    h = M.mach_msg_header_t.from_buffer(r)
    kr = M.mach_msg(h, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, sizeof(r), port, timeout_ms, 0)
    return kr, h


def _refs(name: int, right: int) -> int:
    n = M.mach_port_urefs_t()
    assert M.mach_port_get_refs(T(), name, right, byref(n)) == OK
    return n.value


# -- mach_msg: receive ---------------------------------------------------------------------------

_BARE_HEADER = textwrap.dedent("""
    import ctypes, os
    from ctypes import byref, sizeof
    from pymach.mach import *

    def new_port():
        p = mach_port_t()
        assert mach_port_allocate(mach_task_self(), MACH_PORT_RIGHT_RECEIVE, byref(p)) == 0
        return p.value

    def names():
        n, t = mach_port_name_array_t(), mach_port_type_array_t()
        nc, tc = mach_msg_type_number_t(), mach_msg_type_number_t()
        assert mach_port_names(mach_task_self(), byref(n), byref(nc), byref(t), byref(tc)) == 0
        out = sorted(n[i] for i in range(nc.value))
        for a in (n, t):
            mach_vm_deallocate(mach_task_self(), ctypes.cast(a, ctypes.c_void_p).value, 4 * nc.value)
        return out

    def ool_maps():
        with open("/proc/self/maps") as f:
            return sum("mach.ool" in line for line in f)

    def fds():
        d = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
        try:
            return len(os.listdir(d)) - 1
        finally:
            os.close(d)

    class Big(ctypes.Structure):
        _pack_ = 4
        _fields_ = [("header", mach_msg_header_t), ("body", mach_msg_body_t),
                    ("port", mach_msg_port_descriptor_t), ("ool", mach_msg_ool_descriptor_t),
                    ("data", ctypes.c_char * (60024 - 56))]

    # the runtime's own fds (the introspection socket) open on first use
    mach_port_destroy(mach_task_self(), new_port())
    fds_at_start = fds()
    port = new_port()
    assert mach_port_insert_right(mach_task_self(), port, port, MACH_MSG_TYPE_MAKE_SEND) == 0
    assert mach_ports_register(mach_task_self(), (mach_port_t * 1)(port), 1) == 0
    pid = os.fork()
    if pid == 0:
        # the sender: its message carries a send right made from its port q,
        # a send-once reply right and a 64 KiB out-of-line region
        code = 1
        try:
            lst, cnt = mach_port_array_t(), mach_msg_type_number_t()
            assert mach_ports_lookup(mach_task_self(), byref(lst), byref(cnt)) == 0
            dest = lst[0]
            q, notify, reply = new_port(), new_port(), new_port()
            prev = mach_port_t()
            assert mach_port_request_notification(mach_task_self(), q, MACH_NOTIFY_NO_SENDERS, 0, notify,
                                                  MACH_MSG_TYPE_MAKE_SEND_ONCE, byref(prev)) == 0
            region = mach_vm_address_t()
            assert mach_vm_allocate(mach_task_self(), byref(region), 65536, VM_FLAGS_ANYWHERE) == 0
            m = Big()
            m.header.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, MACH_MSG_TYPE_MAKE_SEND_ONCE) \\
                | MACH_MSGH_BITS_COMPLEX
            m.header.msgh_size = sizeof(m)
            m.header.msgh_remote_port, m.header.msgh_local_port = dest, reply
            m.body.msgh_descriptor_count = 2
            m.port.name, m.port.disposition, m.port.type = q, MACH_MSG_TYPE_MAKE_SEND, MACH_MSG_PORT_DESCRIPTOR
            m.ool.address, m.ool.size = region.value, 65536
            m.ool.copy, m.ool.type = MACH_MSG_VIRTUAL_COPY, MACH_MSG_OOL_DESCRIPTOR
            assert sizeof(m) == 60024
            assert mach_msg(m.header, MACH_SEND_MSG, sizeof(m), 0, 0, MACH_MSG_TIMEOUT_NONE, 0) == 0
            # what the receiver's failed receive must give back: no senders
            # of q, and the reply right destroyed unused
            r = (ctypes.c_char * 256)()
            h = mach_msg_header_t.from_buffer(r)
            assert mach_msg(h, MACH_RCV_MSG | MACH_RCV_TIMEOUT, 0, 256, notify, 20000, 0) == 0
            assert h.msgh_id == MACH_NOTIFY_NO_SENDERS, h.msgh_id
            assert mach_msg(h, MACH_RCV_MSG | MACH_RCV_TIMEOUT, 0, 256, reply, 20000, 0) == 0
            assert h.msgh_id == MACH_NOTIFY_SEND_ONCE, h.msgh_id
            code = 0
        finally:
            os._exit(code)
    before = (names(), ool_maps())
    h = mach_msg_header_t()
    kr = mach_msg(h, MACH_RCV_MSG | MACH_RCV_TIMEOUT, 0, 65536, port, 20000, 0)
    print("rcv", hex(kr), flush=True)
    print("space", names() == before[0], flush=True)
    print("ool", ool_maps() == before[1], flush=True)
    print("header", h.msgh_size, flush=True)
    _, status = os.waitpid(pid, 0)
    print("sender", os.waitstatus_to_exitcode(status), flush=True)
    # with the port gone, every fd the message brought is gone too
    assert mach_ports_register(mach_task_self(), None, 0) == 0
    assert mach_port_destroy(mach_task_self(), port) == 0
    # the runtime's threads (the notification watcher) may be a moment
    # behind: a leak is an fd that stays
    import time
    deadline = time.monotonic() + 10
    while fds() != fds_at_start and time.monotonic() < deadline:
        time.sleep(0.01)
    print("fds", fds() == fds_at_start, flush=True)
""")


def test_a_message_larger_than_a_bare_header_is_destroyed_not_written() -> None:
    # receiving 60,024 bytes into a 24-byte mach_msg_header_t() with
    # rcv_size 65536 wrote past it and killed the interpreter with SIGSEGV
    p = subprocess.run([sys.executable, "-c", _BARE_HEADER], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    lines = dict(line.split(" ", 1) for line in p.stdout.splitlines())
    assert lines == {"rcv": hex(M.MACH_RCV_INVALID_DATA), "space": "True", "fds": "True", "ool": "True",
                     "header": "0", "sender": "0"}, (p.stdout, p.stderr)


def test_a_view_in_a_struct_receives_into_the_struct_and_never_past_it() -> None:
    port, reply = _port(), alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
    arena = Arena()
    msg = arena.carve(Small)
    try:
        # what fits in the struct lands there, header first, through the view
        _send(port, 64)
        assert M.mach_msg(msg.header, RCV, 0, sizeof(Small), port, TIMEOUT_MS, 0) == OK
        assert msg.header.msgh_size == 64 and msg.body == b"m" * 40 and arena.canary_intact()
        # rcv_size says 4096 fits; the struct's memory ends after 72 bytes
        _send(port, 400, reply=reply)
        kr = M.mach_msg(msg.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, 4096, port, TIMEOUT_MS, 0)
        assert kr == M.MACH_RCV_INVALID_DATA
        assert arena.canary_intact()
        # the message is gone, and its send-once reply right was destroyed
        assert _receive(port, 0)[0] == M.MACH_RCV_TIMED_OUT
        kr, h = _receive(reply)
        assert kr == OK and h.msgh_id == M.MACH_NOTIFY_SEND_ONCE
    finally:
        M.mach_port_destroy(T(), port)
        M.mach_port_destroy(T(), reply)


def test_the_needed_size_is_written_only_inside_the_buffer() -> None:
    port = _port()
    arena = Arena()
    buf = arena.carve(ctypes.c_char * 256)
    try:
        _send(port, 200)
        # MACH_RCV_LARGE writes msgh_size, at offset 4: 4 bytes before the
        # end of the buffer there is no room for it
        kr = M.mach_msg(byref(buf, 252), RCV | M.MACH_RCV_LARGE, 0, 16, port, TIMEOUT_MS, 0)
        assert kr == M.MACH_RCV_INVALID_DATA
        assert arena.canary_intact() and buf.raw == b"\0" * 256
        # MACH_RCV_LARGE leaves the message queued
        kr = M.mach_msg(byref(buf, 8), RCV | M.MACH_RCV_LARGE, 0, 16, port, TIMEOUT_MS, 0)
        assert kr == M.MACH_RCV_TOO_LARGE
        assert M.mach_msg_header_t.from_buffer(buf, 8).msgh_size == 200
        kr = M.mach_msg(byref(buf, 8), RCV, 0, 248, port, TIMEOUT_MS, 0)
        assert kr == OK and buf.raw[:8] == b"\0" * 8 and buf.raw[32:208] == b"m" * 176
    finally:
        M.mach_port_destroy(T(), port)


def test_a_byref_offset_is_where_the_message_goes_and_what_bounds_it() -> None:
    port = _port()
    arena = Arena()
    buf = arena.carve(ctypes.c_char * 256)
    src = (ctypes.c_char * 128)()
    try:
        # a send from byref(src, 64) reads the message at offset 64
        h = M.mach_msg_header_t.from_buffer(src, 64)
        h.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0)
        h.msgh_size, h.msgh_remote_port, h.msgh_id = 32, port, 4242
        ctypes.memmove(ctypes.addressof(src) + 88, b"at64....", 8)
        assert M.mach_msg(byref(src, 64), SEND, 32, 0, 0, TIMEOUT_MS, 0) == OK
        assert M.mach_msg(byref(src, 100), SEND, 32, 0, 0, TIMEOUT_MS, 0) == M.MACH_SEND_INVALID_DATA
        # and a receive into byref(buf, 8) writes from offset 8
        assert M.mach_msg(byref(buf, 8), RCV, 0, 248, port, TIMEOUT_MS, 0) == OK
        got = M.mach_msg_header_t.from_buffer(buf, 8)
        assert got.msgh_id == 4242 and buf.raw[:8] == b"\0" * 8 and buf.raw[32:40] == b"at64...."
        # 56 bytes from offset 200: a 64-byte message and its trailer do not fit
        _send(port, 64)
        assert M.mach_msg(byref(buf, 200), RCV, 0, 4096, port, TIMEOUT_MS, 0) == M.MACH_RCV_INVALID_DATA
        assert arena.canary_intact() and buf.raw[200:] == b"\0" * 56
    finally:
        M.mach_port_destroy(T(), port)


def test_a_pointer_is_bounded_by_the_object_it_points_at() -> None:
    port = _port()
    arena = Arena()
    msg = arena.carve(Small)
    try:
        _send(port, 64)
        assert M.mach_msg(pointer(msg), RCV, 0, sizeof(Small), port, TIMEOUT_MS, 0) == OK
        assert msg.body == b"m" * 40
        for p in (pointer(msg), ctypes.cast(pointer(msg), ctypes.POINTER(M.mach_msg_header_t))):
            _send(port, 400)
            assert M.mach_msg(p, RCV, 0, 4096, port, TIMEOUT_MS, 0) == M.MACH_RCV_INVALID_DATA
            assert arena.canary_intact()
    finally:
        M.mach_port_destroy(T(), port)


def test_mach_msg_overwrite_bounds_its_receive_buffer() -> None:
    port = _port()
    arena = Arena()
    rcv = arena.carve(Small)
    send = (ctypes.c_char * 400)(*([b"m"] * 400))
    h = M.mach_msg_header_t.from_buffer(send)
    h.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0)
    h.msgh_size, h.msgh_remote_port, h.msgh_local_port, h.msgh_voucher_port = 400, port, 0, 0
    try:
        kr = M.mach_msg_overwrite(h, SEND | RCV, 400, 4096, port, TIMEOUT_MS, 0, rcv.header, 0)
        assert kr == M.MACH_RCV_INVALID_DATA
        assert arena.canary_intact()
    finally:
        M.mach_port_destroy(T(), port)


# -- mach_msg: send ------------------------------------------------------------------------------

def test_a_send_never_reads_past_the_object() -> None:
    port = _port()
    arena = Arena()
    carved = arena.carve(Small)
    owned = Small()
    try:
        for msg in (owned, owned.header, carved.header, byref(carved), pointer(carved)):
            for h in (owned.header, carved.header):
                h.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_MOVE_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE)
                h.msgh_size, h.msgh_remote_port, h.msgh_local_port = 96, port, port
            assert M.mach_msg(msg, SEND, 96, 0, 0, TIMEOUT_MS, 0) == M.MACH_SEND_INVALID_DATA, msg
        # nothing was sent, and the header's rights were not touched
        assert _receive(port, 0)[0] == M.MACH_RCV_TIMED_OUT
        assert _refs(port, M.MACH_PORT_RIGHT_SEND) == 1
    finally:
        M.mach_port_destroy(T(), port)


def test_mach_msg_destroy_reads_no_descriptor_past_the_object() -> None:
    port = _port()
    arena = Arena()
    base = arena.carve(M.mach_msg_base_t)
    base.header.msgh_bits = M.MACH_MSGH_BITS_COMPLEX
    base.header.msgh_size = sizeof(M.mach_msg_base_t) + 12
    base.body.msgh_descriptor_count = 1
    # a port descriptor naming our send right, just past the object
    desc = M.mach_msg_port_descriptor_t(name=port, disposition=M.MACH_MSG_TYPE_MOVE_SEND,
                                        type=M.MACH_MSG_PORT_DESCRIPTOR)
    ctypes.memmove(ctypes.addressof(arena.buf) + sizeof(M.mach_msg_base_t), ctypes.addressof(desc), 12)
    try:
        M.mach_msg_destroy(base)
        assert _refs(port, M.MACH_PORT_RIGHT_SEND) == 1
    finally:
        M.mach_port_destroy(T(), port)


# -- the helper ----------------------------------------------------------------------------------

def test_every_argument_form_gives_the_room_of_its_memory() -> None:
    arena = Arena(512)
    carved = arena.carve(Small)
    owned = Small()
    whole = sizeof(Small)
    a = ctypes.addressof(carved)
    assert address_of(owned) == (ctypes.addressof(owned), whole)
    assert address_of(carved) == (a, whole)
    assert address_of(carved.trailer) == (a + 64, whole - 64)  # a view: the rest of its root
    assert address_of(byref(carved)) == (a, whole)
    assert address_of(byref(carved, 16)) == (a + 16, whole - 16)
    assert address_of(byref(carved, whole + 8)) == (a + whole + 8, 0)  # past the object
    assert address_of(pointer(carved)) == (a, whole)
    assert address_of(pointer(carved.trailer)) == (a + 64, whole - 64)
    assert address_of(ctypes.cast(pointer(carved), ctypes.POINTER(ctypes.c_char))) == (a, whole)
    # the view that p.contents gives lives where p points
    assert address_of(pointer(carved).contents.trailer) == (a + 64, whole - 64)
    ba = bytearray(100)
    assert address_of(Small.from_buffer(ba, 20))[1] == 80
    # raw addresses: the caller's promise
    assert address_of(a) == (a, None)
    assert address_of(M.mach_vm_address_t(a)) == (a, None)
    assert address_of(Small.from_address(a)) == (a, None)
    assert address_of(ctypes.cast(a, ctypes.POINTER(Small))) == (a, None)
    assert address_of(None) == (0, 0)


def test_an_out_parameter_at_a_byref_offset_is_that_element() -> None:
    names = (M.mach_port_t * 2)()
    try:
        assert M.mach_port_allocate(T(), M.MACH_PORT_RIGHT_RECEIVE, byref(names, 4)) == OK
        assert names[0] == 0 and names[1] != 0
        try:
            M.mach_port_allocate(T(), M.MACH_PORT_RIGHT_RECEIVE, byref(names, 8))
            raise AssertionError("an out-parameter past the array was written")
        except ValueError:
            pass
        assert names[0] == 0
    finally:
        M.mach_port_destroy(T(), names[1])


# -- out-buffers with a count --------------------------------------------------------------------

def test_region_info_is_never_written_past_the_object() -> None:
    page = M.mach_vm_address_t()
    assert M.mach_vm_allocate(T(), byref(page), 4096, M.VM_FLAGS_ANYWHERE) == OK
    try:
        addr, size, obj = M.mach_vm_address_t(page.value), M.mach_vm_size_t(), M.mach_port_t()
        # the count claims VM_REGION_BASIC_INFO_COUNT_64 (9) ints; the object holds 4
        arena = Arena()
        info = arena.carve(ctypes.c_int * 4)
        cnt = M.mach_msg_type_number_t(M.VM_REGION_BASIC_INFO_COUNT_64)
        kr = M.mach_vm_region(T(), byref(addr), byref(size), M.VM_REGION_BASIC_INFO_64, pointer(info),
                              byref(cnt), byref(obj))
        assert kr == M.KERN_INVALID_ARGUMENT and cnt.value == 9 and arena.canary_intact()
        # 12 ints, from the fifth on: 8 of them
        arena = Arena()
        info12 = arena.carve(ctypes.c_int * 12)
        kr = M.mach_vm_region(T(), byref(addr), byref(size), M.VM_REGION_BASIC_INFO_64, byref(info12, 16),
                              byref(cnt), byref(obj))
        assert kr == M.KERN_INVALID_ARGUMENT and arena.canary_intact() and list(info12) == [0] * 12
        kr = M.mach_vm_region(T(), byref(addr), byref(size), M.VM_REGION_BASIC_INFO_64, byref(info12, 12),
                              byref(cnt), byref(obj))
        assert kr == OK and arena.canary_intact() and list(info12)[:3] == [0] * 3
        assert info12[3] == M.VM_PROT_READ | M.VM_PROT_WRITE  # protection, at the offset given
        # recurse: the count chooses the struct; what the object holds is
        # the short struct, and that is what comes back
        arena = Arena()
        sub = arena.carve(M.vm_region_submap_short_info_64)
        addr.value = page.value
        depth = M.natural_t(0)
        cnt = M.mach_msg_type_number_t(M.VM_REGION_SUBMAP_INFO_COUNT_64)
        kr = M.mach_vm_region_recurse(T(), byref(addr), byref(size), byref(depth), pointer(sub), byref(cnt))
        assert kr == OK and cnt.value == M.VM_REGION_SUBMAP_SHORT_INFO_COUNT_64 and arena.canary_intact()
        assert addr.value == page.value and sub.protection == M.VM_PROT_READ | M.VM_PROT_WRITE
    finally:
        M.mach_vm_deallocate(T(), page, 4096)


def test_task_info_is_never_written_past_the_object() -> None:
    arena = Arena()
    info = arena.carve(M.task_basic_info_32)  # smaller than mach_task_basic_info
    cnt = M.mach_msg_type_number_t(M.MACH_TASK_BASIC_INFO_COUNT)
    assert M.task_info(T(), M.MACH_TASK_BASIC_INFO, pointer(info), byref(cnt)) == M.KERN_INVALID_ARGUMENT
    assert cnt.value == M.MACH_TASK_BASIC_INFO_COUNT and arena.canary_intact()
    full = arena.carve(M.mach_task_basic_info)
    assert M.task_info(T(), M.MACH_TASK_BASIC_INFO, pointer(full), byref(cnt)) == OK
    assert full.resident_size > 0 and arena.canary_intact()


def test_port_attributes_are_never_written_or_read_past_the_object() -> None:
    port = _port()
    try:
        arena = Arena()
        st = arena.carve(ctypes.c_int * 4)
        cnt = M.mach_msg_type_number_t(M.MACH_PORT_RECEIVE_STATUS_COUNT)
        kr = M.mach_port_get_attributes(T(), port, M.MACH_PORT_RECEIVE_STATUS, st, byref(cnt))
        assert kr == M.KERN_FAILURE and cnt.value == M.MACH_PORT_RECEIVE_STATUS_COUNT and arena.canary_intact()
        # set: one natural_t claimed, two bytes held
        arena = Arena()
        half = arena.carve(ctypes.c_uint16 * 1)
        assert M.mach_port_set_attributes(T(), port, M.MACH_PORT_LIMITS_INFO, half, 1) == M.KERN_FAILURE
        lim = M.mach_port_limits_t(3)
        assert M.mach_port_set_attributes(T(), port, M.MACH_PORT_LIMITS_INFO, byref(lim), 1) == OK
        one = M.mach_msg_type_number_t(1)
        got = M.mach_port_limits_t()
        assert M.mach_port_get_attributes(T(), port, M.MACH_PORT_LIMITS_INFO, byref(got), byref(one)) == OK
        assert got.mpl_qlimit == 3
    finally:
        M.mach_port_destroy(T(), port)


def test_construct_options_are_never_read_past_the_object() -> None:
    arena = Arena()
    opts = arena.carve(ctypes.c_char * 8)  # a mach_port_options_t is 24 bytes
    name = M.mach_port_t(0)
    kr = M.mach_port_construct(T(), pointer(opts), 0, byref(name))
    # what XNU's trap gives when its copyin of the options fails
    assert kr == M.KERN_MEMORY_ERROR and name.value == 0


def test_mach_ports_register_never_reads_past_the_array() -> None:
    port = _port()
    try:
        arena = Arena()
        arr = arena.carve(M.mach_port_t * 1)
        arr[0] = port
        assert M.mach_ports_register(T(), arr, 3) == M.MACH_SEND_INVALID_MEMORY
        assert M.mach_ports_register(T(), arr, 1) == OK
    finally:
        assert register() == OK
        M.mach_port_destroy(T(), port)


def test_array_out_parameters_must_hold_an_address() -> None:
    def names_count() -> int:
        n, t = M.mach_port_name_array_t(), M.mach_port_type_array_t()
        nc, tc = M.mach_msg_type_number_t(), M.mach_msg_type_number_t()
        assert M.mach_port_names(T(), byref(n), byref(nc), byref(t), byref(tc)) == OK
        for arr in (n, t):
            M.mach_vm_deallocate(T(), ctypes.cast(arr, ctypes.c_void_p).value, 4 * nc.value)
        return nc.value

    before = names_count()
    nc, tc = M.mach_msg_type_number_t(0xBAD), M.mach_msg_type_number_t(0xBAD)
    narrow = M.mach_port_t(0xBAD)
    arr = (M.mach_port_name_t * 64)()
    for names in (arr, byref(narrow)):
        try:
            M.mach_port_names(T(), names, byref(nc), byref(M.mach_port_type_array_t()), byref(tc))
            raise AssertionError("an array out-parameter too narrow for its address was accepted")
        except TypeError:
            pass
    assert narrow.value == 0xBAD and list(arr) == [0] * 64 and nc.value == 0xBAD
    data = ctypes.c_uint32(0xBAD)
    cnt = M.mach_msg_type_number_t()
    try:
        M.mach_vm_read(T(), ctypes.addressof(arr), 16, byref(data), byref(cnt))
        raise AssertionError("mach_vm_read stored an address in 32 bits")
    except TypeError:
        pass
    assert data.value == 0xBAD and names_count() == before


# -- the VM routines that copy into or out of our buffers ----------------------------------------

def test_read_overwrite_never_writes_past_the_buffer() -> None:
    source = (ctypes.c_char * 64)(*([b"s"] * 64))
    arena = Arena()
    dest = arena.carve(ctypes.c_char * 16)
    n = M.mach_vm_size_t(0xBAD)
    kr = M.mach_vm_read_overwrite(T(), ctypes.addressof(source), 64, dest, byref(n))
    assert kr == M.KERN_INVALID_ADDRESS and n.value == 0xBAD and arena.canary_intact() and dest.raw == b"\0" * 16
    # a bad task is named first, as it is for a destination that is not mapped
    assert M.mach_vm_read_overwrite(0x12345, ctypes.addressof(source), 64, dest, byref(n)) != OK
    assert M.mach_vm_read_overwrite(T(), ctypes.addressof(source), 16, dest, byref(n)) == OK
    assert n.value == 16 and dest.raw == b"s" * 16 and arena.canary_intact()


def test_vm_write_never_reads_past_the_buffer() -> None:
    target = (ctypes.c_char * 64)()
    arena = Arena()
    data = arena.carve(ctypes.c_char * 16)
    data.raw = b"d" * 16
    kr = M.mach_vm_write(T(), ctypes.addressof(target), data, 64)
    assert kr == M.MACH_SEND_INVALID_MEMORY and target.raw == b"\0" * 64
    assert M.mach_vm_write(T(), ctypes.addressof(target), data, 16) == OK
    assert target.raw == b"d" * 16 + b"\0" * 48


def test_read_list_never_reads_or_writes_past_the_array() -> None:
    source = (ctypes.c_char * 4096)()
    arena = Arena()
    lst = arena.carve(M.mach_vm_read_entry * 1)
    lst[0].address, lst[0].size = ctypes.addressof(source), 16
    assert M.mach_vm_read_list(T(), lst, 2) == M.KERN_INVALID_ARGUMENT
    assert arena.canary_intact() and lst[0].address == ctypes.addressof(source)
    assert M.mach_vm_read_list(T(), lst, 1) == OK
    assert lst[0].address != ctypes.addressof(source) and arena.canary_intact()
    M.mach_vm_deallocate(T(), lst[0].address, lst[0].size)


def test_thread_state_is_never_copied_past_the_object() -> None:
    p = start_sleep()
    t = M.mach_port_t()
    assert M.task_for_pid(T(), p.pid, byref(t)) == OK
    thread = 0
    try:
        lst, cnt = M.vm_offset_t(), M.mach_msg_type_number_t()
        assert M.task_threads(t, byref(lst), byref(cnt)) == OK and cnt.value == 1
        (thread,) = (ctypes.c_uint32 * 1).from_address(lst.value)
        M.mach_vm_deallocate(T(), lst, 4096)
        n = M.mach_msg_type_number_t(M.x86_THREAD_STATE64_COUNT)
        arena = Arena()
        small = arena.carve(ctypes.c_uint32 * 10)
        kr = M.thread_get_state(thread, M.x86_THREAD_STATE64, pointer(small), byref(n))
        assert kr == M.KERN_INVALID_ARGUMENT and n.value == M.x86_THREAD_STATE64_COUNT and arena.canary_intact()
        st = M.x86_thread_state64_t()
        assert M.thread_get_state(thread, M.x86_THREAD_STATE64, byref(st), byref(n)) == OK
        # the arena holds a whole valid state; the object only its first 10 ints
        ctypes.memmove(arena.buf, ctypes.addressof(st), sizeof(st))
        small = arena.carve(ctypes.c_uint32 * 10, keep=True)
        kr = M.thread_set_state(thread, M.x86_THREAD_STATE64, pointer(small), M.x86_THREAD_STATE64_COUNT)
        assert kr == M.KERN_INVALID_ARGUMENT
        assert M.thread_set_state(thread, M.x86_THREAD_STATE64, byref(st), M.x86_THREAD_STATE64_COUNT) == OK
    finally:
        if thread:
            M.mach_port_deallocate(T(), thread)
        M.mach_port_deallocate(T(), t.value)
        p.kill()
        p.wait(10)
