"""Guarded ports, received out-of-line descriptors and pseudo-receive,
against XNU xnu-11417.101.15: osfmk/ipc/mach_port.c (mach_port_construct,
mach_port_guard_locked, mach_port_unguard_locked, mach_port_swap_guard,
mach_port_get_context / set_context, mach_port_is_connection_for_service),
osfmk/ipc/ipc_right.c (ipc_right_copyin_check_guard_locked, the immovable
receive check of ipc_right_copyin, ipc_right_copyout's guard), and
osfmk/ipc/ipc_kmsg.c (ipc_kmsg_inflate_guarded_port_descriptor, the
deflate of memory and port-array descriptors, ipc_kmsg_copyout_pseudo).
"""

from __future__ import annotations

import ctypes

import pymach.mach as M
from pymach.mach import byref, sizeof

TASK = M.mach_task_self()


def construct(flags: int, context: int = 0, qlimit: int = 0, reserved: int = 0) -> tuple[int, int]:
    opts = M.mach_port_options_t()
    opts.flags = flags
    opts.mpl.mpl_qlimit = qlimit
    opts.reserved[0] = reserved
    name = M.mach_port_name_t()
    kr = M.mach_port_construct(TASK, byref(opts), context, byref(name))
    return kr, name.value


def mps_flags(name: int) -> int:
    st = M.mach_port_status_t()
    cnt = M.mach_msg_type_number_t(M.MACH_PORT_RECEIVE_STATUS_COUNT)
    assert M.mach_port_get_attributes(TASK, name, M.MACH_PORT_RECEIVE_STATUS, byref(st), byref(cnt)) == 0
    return int(st.mps_flags)


class Guarded(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("base", M.mach_msg_base_t), ("dsc", M.mach_msg_guarded_port_descriptor_t),
                ("trailer", M.mach_msg_max_trailer_t)]


class Ool(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("base", M.mach_msg_base_t), ("dsc", M.mach_msg_ool_descriptor_t),
                ("trailer", M.mach_msg_max_trailer_t)]


class OolPorts(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("base", M.mach_msg_base_t), ("dsc", M.mach_msg_ool_ports_descriptor_t),
                ("trailer", M.mach_msg_max_trailer_t), ("array", M.mach_port_name_t * 1)]


def send(dest: int, msg: ctypes.Structure, size: int, complex_: bool = True, option: int = 0) -> int:
    hdr = M.mach_msg_header_t.from_buffer(msg)
    hdr.msgh_bits = M.MACH_MSGH_BITS_SET(M.MACH_MSG_TYPE_COPY_SEND, 0, 0,
                                         M.MACH_MSGH_BITS_COMPLEX if complex_ else 0)
    hdr.msgh_size, hdr.msgh_remote_port, hdr.msgh_local_port, hdr.msgh_id = size, dest, 0, 7
    if complex_:
        msg.base.body.msgh_descriptor_count = 1  # type: ignore[attr-defined]
    return M.mach_msg(msg, M.MACH_SEND_MSG | option, size, 0, 0, 0, 0)


def receive(name: int, msg: ctypes.Structure, option: int = M.MACH_RCV_GUARDED_DESC) -> int:
    return M.mach_msg(msg, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT | option, 0, sizeof(msg), name, 10000, 0)


def guarded_msg(name: int, context: int, flags: int, disp: int = M.MACH_MSG_TYPE_MOVE_RECEIVE) -> Guarded:
    msg = Guarded()
    msg.dsc.type, msg.dsc.disposition, msg.dsc.name = M.MACH_MSG_GUARDED_PORT_DESCRIPTOR, disp, name
    msg.dsc.context, msg.dsc.flags = context, flags
    return msg


def test_guarded_descriptor_layout() -> None:
    """mach_msg_guarded_port_descriptor64_t: context, flags:16,
    disposition:8, type:8, name; 16 bytes."""
    d = M.mach_msg_guarded_port_descriptor_t(0x1122334455667788, 0x0102, 0x10, 4, 0xAABBCCDD)
    assert sizeof(d) == 16
    assert bytes(d) == bytes.fromhex("8877665544332211" "0201" "10" "04" "ddccbbaa")


def test_construct_guard_flags() -> None:
    kr, p = construct(M.MPO_CONTEXT_AS_GUARD | M.MPO_STRICT | M.MPO_IMMOVABLE_RECEIVE, 0xFEED)
    assert kr == 0
    assert mps_flags(p) == (M.MACH_PORT_STATUS_FLAG_GUARDED | M.MACH_PORT_STATUS_FLAG_STRICT_GUARD
                            | M.MACH_PORT_STATUS_FLAG_GUARD_IMMOVABLE_RECEIVE)
    ctx = M.mach_port_context_t(1)
    assert M.mach_port_get_context(TASK, p, byref(ctx)) == 0 and ctx.value == 0  # strict: reads 0
    assert M.mach_port_set_context(TASK, p, 5) == M.KERN_INVALID_ARGUMENT
    assert M.mach_port_swap_guard(TASK, p, 0xFEED, 1) == M.KERN_INVALID_ARGUMENT
    # immovable: neither a message nor extract_right may take it
    rcv_kr, rcv = construct(M.MPO_INSERT_SEND_RIGHT)
    msg = guarded_msg(p, 0xFEED, M.MACH_MSG_GUARD_FLAGS_IMMOVABLE_RECEIVE)
    assert send(rcv, msg, Guarded.trailer.offset) == M.MACH_SEND_INVALID_RIGHT
    out, disp = M.mach_port_name_t(), M.mach_msg_type_name_t()
    assert M.mach_port_extract_right(TASK, p, M.MACH_MSG_TYPE_MOVE_RECEIVE, byref(out), byref(disp)) == \
        M.KERN_INVALID_CAPABILITY
    assert M.mach_port_destroy(TASK, p) == M.KERN_INVALID_RIGHT
    assert M.mach_port_destruct(TASK, p, 0, 1) == M.KERN_INVALID_ARGUMENT
    assert M.mach_port_destruct(TASK, p, 0, 0xFEED) == 0
    assert M.mach_port_destruct(TASK, rcv, -1, 0) == 0
    kr, p = construct(M.MPO_TEMPOWNER)
    assert mps_flags(p) == M.MACH_PORT_STATUS_FLAG_IMP_DONATION | M.MACH_PORT_STATUS_FLAG_TEMPOWNER
    assert M.mach_port_destruct(TASK, p, 0, 0) == 0


def test_construct_refused_flags() -> None:
    assert construct(M.MPO_SERVICE_PORT | M.MPO_CONNECTION_PORT)[0] == M.KERN_INVALID_ARGUMENT
    assert construct(M.MPO_REPLY_PORT | M.MPO_EXCEPTION_PORT)[0] == M.KERN_INVALID_ARGUMENT
    assert construct(M.MPO_SERVICE_PORT)[0] == M.KERN_DENIED
    assert construct(M.MPO_TG_BLOCK_TRACKING)[0] == M.KERN_DENIED
    assert construct(M.MPO_CONNECTION_PORT)[0] == M.KERN_INVALID_ARGUMENT
    assert construct(M.MPO_CONNECTION_PORT, reserved=0xFFFFFFFF)[0] == M.KERN_INVALID_NAME
    assert construct(M.MPO_REPLY_PORT)[0] == M.KERN_NOT_SUPPORTED


def test_guard_unguard_swap() -> None:
    kr, p = construct(0)
    assert M.mach_port_guard(TASK, 0, 1, 0) == M.KERN_INVALID_NAME
    assert M.mach_port_unguard(TASK, p, 0) == M.KERN_INVALID_ARGUMENT  # not guarded
    assert M.mach_port_guard(TASK, p, 0x55, 0) == 0
    assert M.mach_port_guard(TASK, p, 0x66, 0) == M.KERN_INVALID_ARGUMENT  # has a guard
    assert M.mach_port_swap_guard(TASK, p, 0x1, 0x77) == M.KERN_INVALID_ARGUMENT
    assert M.mach_port_swap_guard(TASK, p, 0x55, 0x77) == 0
    assert M.mach_port_mod_refs(TASK, p, M.MACH_PORT_RIGHT_RECEIVE, -1) == M.KERN_INVALID_RIGHT
    assert M.mach_port_unguard(TASK, p, 0x55) == M.KERN_INVALID_ARGUMENT
    assert M.mach_port_unguard(TASK, p, 0x77) == 0
    assert mps_flags(p) == 0
    assert M.mach_port_guard_with_flags(TASK, p, 0x9, M.MPG_IMMOVABLE_RECEIVE) == 0
    assert M.mach_port_unguard(TASK, p, 0x9) == 0
    assert mps_flags(p) == 0  # the immovable bit stays, shown only while guarded
    out, disp = M.mach_port_name_t(), M.mach_msg_type_name_t()
    assert M.mach_port_extract_right(TASK, p, M.MACH_MSG_TYPE_MOVE_RECEIVE, byref(out), byref(disp)) == \
        M.KERN_INVALID_CAPABILITY
    assert M.mach_port_mod_refs(TASK, p, M.MACH_PORT_RIGHT_RECEIVE, -1) == 0
    assert M.mach_port_is_connection_for_service(TASK, 0, 0, None) == M.KERN_INVALID_NAME


def test_guarded_descriptor_send_checks() -> None:
    kr, rcv = construct(M.MPO_INSERT_SEND_RIGHT)
    kr, p = construct(M.MPO_CONTEXT_AS_GUARD, 0x42)
    size = Guarded.trailer.offset
    imm, uns = M.MACH_MSG_GUARD_FLAGS_IMMOVABLE_RECEIVE, M.MACH_MSG_GUARD_FLAGS_UNGUARDED_ON_SEND
    assert send(rcv, guarded_msg(p, 0x42, imm, M.MACH_MSG_TYPE_COPY_SEND), size) == M.MACH_SEND_INVALID_TYPE
    assert send(rcv, guarded_msg(p, 0x42, 0), size) == M.MACH_SEND_INVALID_TYPE
    assert send(rcv, guarded_msg(p, 0x42, 4), size) == M.MACH_SEND_INVALID_TYPE
    assert send(rcv, guarded_msg(p, 0x42, uns), size) == M.MACH_SEND_INVALID_TYPE
    assert send(rcv, guarded_msg(p, 0x41, imm), size) == M.MACH_SEND_INVALID_RIGHT  # the wrong guard
    assert send(rcv, guarded_msg(p, 0, uns), size) == M.MACH_SEND_INVALID_RIGHT  # guarded, not unguarded
    msg = guarded_msg(p, 0x42, imm)
    assert send(rcv, msg, size) == 0
    assert receive(rcv, msg) == 0
    got, ctx = msg.dsc.name, ctypes.addressof(msg)
    assert (msg.dsc.disposition, msg.dsc.flags, msg.dsc.context) == (M.MACH_MSG_TYPE_PORT_RECEIVE, imm, ctx)
    assert mps_flags(got) == M.MACH_PORT_STATUS_FLAG_GUARDED | M.MACH_PORT_STATUS_FLAG_GUARD_IMMOVABLE_RECEIVE
    assert M.mach_port_destruct(TASK, got, 0, ctx) == 0
    # without MACH_RCV_GUARDED_DESC the right is destroyed
    kr, q = construct(0)
    msg = guarded_msg(q, 0, uns)
    assert send(rcv, msg, size) == 0
    assert receive(rcv, msg, 0) == 0
    assert (msg.dsc.name, msg.dsc.context) == (0, 0)
    for name in (p, q):
        M.mach_port_deallocate(TASK, name)  # what remains is a dead name or nothing
    assert M.mach_port_destruct(TASK, rcv, -1, 0) == 0


def test_received_out_of_line_descriptors() -> None:
    """ipc_kmsg_deflate_port_array_descriptor: deallocate TRUE and
    MACH_MSG_VIRTUAL_COPY; ipc_kmsg_deflate_memory_descriptor: deallocate
    TRUE exactly for a virtual copy, the copy option as sent."""
    kr, rcv = construct(M.MPO_INSERT_SEND_RIGHT)
    msg = OolPorts()
    msg.array[0] = rcv
    msg.dsc.address, msg.dsc.count, msg.dsc.type = ctypes.addressof(msg.array), 1, M.MACH_MSG_OOL_PORTS_DESCRIPTOR
    msg.dsc.disposition, msg.dsc.copy = M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_PHYSICAL_COPY
    assert send(rcv, msg, OolPorts.trailer.offset) == 0
    assert receive(rcv, msg) == 0
    assert (msg.dsc.deallocate, msg.dsc.copy, msg.dsc.disposition) == (1, M.MACH_MSG_VIRTUAL_COPY,
                                                                       M.MACH_MSG_TYPE_PORT_SEND)
    assert M.vm_deallocate(TASK, msg.dsc.address, 4) == 0
    data = ctypes.create_string_buffer(b"x" * 100)
    for copy in (M.MACH_MSG_PHYSICAL_COPY, M.MACH_MSG_VIRTUAL_COPY):
        m = Ool()
        m.dsc.address, m.dsc.size, m.dsc.copy = ctypes.addressof(data), 100, copy
        m.dsc.type = M.MACH_MSG_OOL_DESCRIPTOR
        assert send(rcv, m, Ool.trailer.offset) == 0
        assert receive(rcv, m) == 0
        assert (m.dsc.deallocate, m.dsc.copy) == (int(copy == M.MACH_MSG_VIRTUAL_COPY), copy)
        assert ctypes.string_at(m.dsc.address, 100) == b"x" * 100
        assert M.vm_deallocate(TASK, m.dsc.address, 100) == 0
    assert M.mach_port_deallocate(TASK, rcv) == 0  # the COPY_SEND received back
    assert M.mach_port_destruct(TASK, rcv, -1, 0) == 0


def test_pseudo_receive_of_a_simple_message() -> None:
    """A simple message to a full queue: the header comes back as received,
    the COPY_SEND destination as a send right (MOVE_SEND bits, one more
    reference) and a MAKE_SEND_ONCE reply as a new send-once right."""
    kr, rcv = construct(M.MPO_INSERT_SEND_RIGHT | M.MPO_QLIMIT, qlimit=1)
    kr, reply = construct(0)
    filler = M.mach_msg_header_t()
    assert send(rcv, filler, 24, False, M.MACH_SEND_TIMEOUT) == 0
    hdr = M.mach_msg_header_t()
    hdr.msgh_bits = M.MACH_MSGH_BITS_SET(M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE, 0, 0)
    hdr.msgh_size, hdr.msgh_remote_port, hdr.msgh_local_port, hdr.msgh_id = 24, rcv, reply, 9
    assert M.mach_msg(hdr, M.MACH_SEND_MSG | M.MACH_SEND_TIMEOUT, 24, 0, 0, 0, 0) == M.MACH_SEND_TIMED_OUT
    assert M.MACH_MSGH_BITS_REMOTE(hdr.msgh_bits) == M.MACH_MSG_TYPE_PORT_SEND
    assert M.MACH_MSGH_BITS_LOCAL(hdr.msgh_bits) == M.MACH_MSG_TYPE_PORT_SEND_ONCE
    assert hdr.msgh_remote_port == rcv and hdr.msgh_local_port not in (0, reply)
    refs = M.mach_port_urefs_t()
    assert M.mach_port_get_refs(TASK, rcv, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0 and refs.value == 2
    t = M.mach_port_type_t()
    assert M.mach_port_type(TASK, hdr.msgh_local_port, byref(t)) == 0 and t.value == M.MACH_PORT_TYPE_SEND_ONCE
    assert M.mach_port_deallocate(TASK, hdr.msgh_local_port) == 0
    assert M.mach_port_deallocate(TASK, rcv) == 0
    assert M.mach_port_destruct(TASK, rcv, -1, 0) == 0
    assert M.mach_port_destruct(TASK, reply, 0, 0) == 0
