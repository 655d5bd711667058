"""Port of xnu-11417.101.15 tests/ipc/mach_msg_transport.c: the trailer
and every kind of descriptor, each received normally and pseudo-received
(a send to a full queue with MACH_SEND_TIMEOUT returns
MACH_SEND_TIMED_OUT and rewrites the sender's buffer in received form).

The C test calls mach_msg2 with MACH64_ options; pymach.mach has mach_msg,
whose 32-bit options say the same (MACH64_SEND_MQ_CALL only selects the
trap, MACH64_RCV_GUARDED_DESC is MACH_RCV_GUARDED_DESC). Its receives
block; here they wait at most RCV_WAIT_MS for a message that is already
queued, so that a failure cannot hang the run.
"""

from __future__ import annotations

import ctypes

import pymach.mach as M
from pymach.mach import byref, sizeof

DEFAULT_CONTEXT = 0x42424242
RCV_WAIT_MS = 10000
TASK = M.mach_task_self()
NOT_FOUND = (1 << 64) - 1  # ~0ul


# -- helpers (the C file's, step for step) ------------------------------------------

def t_port_construct_full(mpo_flags: int, qlimit: int) -> int:
    opts = M.mach_port_options_t()
    opts.flags = mpo_flags | M.MPO_QLIMIT
    opts.mpl.mpl_qlimit = qlimit
    name = M.mach_port_name_t()
    kr = M.mach_port_construct(TASK, byref(opts), DEFAULT_CONTEXT, byref(name))
    assert kr == M.KERN_SUCCESS, "mach_port_construct"
    return name.value


def t_port_construct() -> int:
    return t_port_construct_full(M.MPO_INSERT_SEND_RIGHT, 1)


def t_port_destruct_full(name: int, srights: int, ctx: int) -> None:
    kr = M.mach_port_destruct(TASK, name, -srights, ctx)
    assert kr == M.KERN_SUCCESS, "mach_port_destruct"


def t_port_destruct(name: int) -> None:
    t_port_destruct_full(name, 1, 0)


def t_make_sonce(port: int) -> int:
    name = M.mach_port_name_t()
    disp = M.mach_msg_type_name_t()
    kr = M.mach_port_extract_right(TASK, port, M.MACH_MSG_TYPE_MAKE_SEND_ONCE, byref(name), byref(disp))
    assert kr == M.KERN_SUCCESS, "make-send-once"
    assert disp.value == M.MACH_MSG_TYPE_PORT_SEND_ONCE, "check make-sonce"
    return name.value


def t_deallocate_sonce(port: int) -> None:
    kr = M.mach_port_deallocate(TASK, port)
    assert kr == M.KERN_SUCCESS, "dealloc-send-once"


def t_vm_deallocate(addr: int, size: int) -> None:
    kr = M.vm_deallocate(TASK, addr, size)
    assert kr == M.KERN_SUCCESS, "vm_deallocate"


def t_receive(name: int, msg: ctypes.Structure, size: int, opts: int) -> int:
    opts |= M.MACH_RCV_GUARDED_DESC | M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT
    return M.mach_msg(msg, opts, 0, size, name, RCV_WAIT_MS, 0)


def t_send(dest: int, msg: ctypes.Structure, upto: int, opts: int, complex_: bool) -> int:
    """``upto``: the offset in ``msg`` where the message ends."""
    hdr = M.mach_msg_header_t.from_buffer(msg)
    opts |= M.MACH_SEND_MSG
    hdr.msgh_bits = M.MACH_MSGH_BITS_SET(M.MACH_MSG_TYPE_COPY_SEND, 0, 0,
                                         M.MACH_MSGH_BITS_COMPLEX if complex_ else 0)
    hdr.msgh_size = upto
    hdr.msgh_remote_port = dest
    hdr.msgh_local_port = M.MACH_PORT_NULL
    hdr.msgh_voucher_port = M.MACH_PORT_NULL
    hdr.msgh_id = 42
    return M.mach_msg(msg, opts, upto, 0, 0, 0, 0)


def t_fill_port(dest: int, n: int) -> None:
    for _ in range(n):
        hdr = M.mach_msg_header_t()
        kr = t_send(dest, hdr, sizeof(hdr), M.MACH_SEND_TIMEOUT, False)
        assert kr == M.KERN_SUCCESS, "send to fill"


def t_check_0xff(addr: int, size: int) -> int:
    """The offset of the first byte that is not 0xff, or ~0ul."""
    data = ctypes.string_at(addr, size)
    rest = data.lstrip(b"\xff")
    return NOT_FOUND if not rest else size - len(rest)




# -- trailer checks -----------------------------------------------------------------

class TrailerBuf(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("hdr", M.mach_msg_header_t), ("trailer", M.mach_msg_max_trailer_t), ("sentinel", ctypes.c_uint32)]


_TRAILER_SIZE = {0: 8, 1: 12, 2: 20, 3: 52, 4: 60, 7: 68}  # REQUESTED_TRAILER_SIZE on LP64


def test_mach_msg_trailer() -> None:
    """check trailer generation"""
    rcv_name = t_port_construct()
    try:
        sec_token = M.security_token_t()
        audit_token = M.audit_token_t()
        count = M.mach_msg_type_number_t(M.TASK_SECURITY_TOKEN_COUNT)
        kr = M.task_info(TASK, M.TASK_SECURITY_TOKEN, byref(sec_token), byref(count))
        assert kr == M.KERN_SUCCESS, "task_info(TASK_SECURITY_TOKEN)"
        count = M.mach_msg_type_number_t(M.TASK_AUDIT_TOKEN_COUNT)
        kr = M.task_info(TASK, M.TASK_AUDIT_TOKEN, byref(audit_token), byref(count))
        assert kr == M.KERN_SUCCESS, "task_info(TASK_AUDIT_TOKEN)"

        tr = M.mach_msg_max_trailer_t
        for i in range(M.MACH_RCV_TRAILER_LABELS + 1):
            if i not in (M.MACH_RCV_TRAILER_NULL, M.MACH_RCV_TRAILER_SEQNO, M.MACH_RCV_TRAILER_SENDER,
                         M.MACH_RCV_TRAILER_AUDIT, M.MACH_RCV_TRAILER_CTX, M.MACH_RCV_TRAILER_AV):
                continue
            topts = M.MACH_RCV_TRAILER_ELEMENTS(i)
            tsize = _TRAILER_SIZE[i]
            buf = TrailerBuf()
            ctypes.memset(byref(buf), 0xFF, sizeof(buf))
            kr = t_send(rcv_name, buf, TrailerBuf.trailer.offset, M.MACH_MSG_OPTION_NONE, False)
            assert kr == M.KERN_SUCCESS, f"sending message with trailer {i}"
            kr = t_receive(rcv_name, buf, sizeof(buf), topts)
            assert kr == M.KERN_SUCCESS, f"receiving message with trailer {i}"

            assert buf.hdr.msgh_size == sizeof(buf.hdr), "msgh_size"
            assert buf.trailer.msgh_trailer_type == M.MACH_MSG_TRAILER_FORMAT_0, "msgh_trailer_type"
            assert buf.trailer.msgh_trailer_size == tsize, "msgh_trailer_size"
            if tsize > tr.msgh_sender.offset:
                assert bytes(buf.trailer.msgh_sender) == bytes(sec_token), "msgh_sender"
            if tsize > tr.msgh_audit.offset:
                assert bytes(buf.trailer.msgh_audit) == bytes(audit_token), "msgh_audit"
            if tsize > tr.msgh_context.offset:
                assert buf.trailer.msgh_context == DEFAULT_CONTEXT, "msgh_context"
            if tsize > tr.msgh_ad.offset:
                assert buf.trailer.msgh_ad == 0, "msgh_ad"
            if tsize > tr.msgh_labels.offset:
                assert buf.trailer.msgh_labels.sender == 0, "msgh_labels"
            rest = ctypes.addressof(buf.trailer) + tsize
            assert t_check_0xff(rest, sizeof(buf.trailer) + 4 - tsize) == NOT_FOUND, "should be unmodified"
    finally:
        t_port_destruct(rcv_name)


# -- descriptor checks --------------------------------------------------------------

PORT_DISPOSITIONS = [
    M.MACH_MSG_TYPE_MOVE_RECEIVE,
    M.MACH_MSG_TYPE_MOVE_SEND,
    M.MACH_MSG_TYPE_MOVE_SEND_ONCE,
    M.MACH_MSG_TYPE_COPY_SEND,
    M.MACH_MSG_TYPE_MAKE_SEND,
    M.MACH_MSG_TYPE_MAKE_SEND_ONCE,
]


class MsgComplexPort(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("base", M.mach_msg_base_t), ("dsc", M.mach_msg_port_descriptor_t),
                ("trailer", M.mach_msg_max_trailer_t)]


class MsgComplexGuardedPort(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("base", M.mach_msg_base_t), ("dsc", M.mach_msg_guarded_port_descriptor_t),
                ("trailer", M.mach_msg_max_trailer_t)]


class MsgComplexPortArray(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("base", M.mach_msg_base_t), ("dsc", M.mach_msg_ool_ports_descriptor_t),
                ("trailer", M.mach_msg_max_trailer_t), ("array", M.mach_port_name_t * 2)]


class MsgComplexMemory(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("base", M.mach_msg_base_t), ("dsc", M.mach_msg_ool_descriptor_t),
                ("trailer", M.mach_msg_max_trailer_t)]


def test_layouts_are_the_c_structs() -> None:
    """The message structs above have the C test's sizes and offsets on LP64."""
    assert sizeof(MsgComplexPort) == 28 + 12 + 68
    assert sizeof(MsgComplexGuardedPort) == 28 + 16 + 68
    assert (sizeof(MsgComplexPortArray), MsgComplexPortArray.array.offset) == (28 + 16 + 68 + 8, 112)
    assert sizeof(MsgComplexMemory) == 28 + 16 + 68


def t_fill_complex_port_msg(msg: MsgComplexPort, disp: int, name: int) -> None:
    ctypes.memset(byref(msg), 0, sizeof(msg))
    msg.base.body.msgh_descriptor_count = 1
    msg.dsc.type = M.MACH_MSG_PORT_DESCRIPTOR
    msg.dsc.disposition = disp
    msg.dsc.name = name


def t_fill_complex_port_guarded_msg(msg: MsgComplexGuardedPort, disp: int, name: int, flags: int) -> None:
    ctypes.memset(byref(msg), 0, sizeof(msg))
    msg.base.body.msgh_descriptor_count = 1
    msg.dsc.type = M.MACH_MSG_GUARDED_PORT_DESCRIPTOR
    msg.dsc.disposition = disp
    msg.dsc.name = name
    msg.dsc.context = DEFAULT_CONTEXT
    msg.dsc.flags = flags
    if flags & M.MACH_MSG_GUARD_FLAGS_UNGUARDED_ON_SEND:
        msg.dsc.context = 0


def t_fill_complex_memory_msg(msg: MsgComplexMemory, memory: int, size: int, move: bool) -> None:
    ctypes.memset(byref(msg), 0, sizeof(msg))
    msg.base.body.msgh_descriptor_count = 1
    msg.dsc.type = M.MACH_MSG_OOL_DESCRIPTOR
    msg.dsc.address = memory
    msg.dsc.size = size
    msg.dsc.deallocate = move


def t_fill_complex_port_array_msg(msg: MsgComplexPortArray, disp: int, name1: int, name2: int) -> None:
    ctypes.memset(byref(msg), 0, sizeof(msg))
    msg.base.body.msgh_descriptor_count = 1
    msg.dsc.type = M.MACH_MSG_OOL_PORTS_DESCRIPTOR
    msg.dsc.disposition = disp
    msg.dsc.address = ctypes.addressof(msg.array)
    msg.dsc.count = 2
    msg.dsc.deallocate = False
    msg.array[0] = name1
    msg.array[1] = name2


def _result_disp(disp: int) -> int:
    if disp == M.MACH_MSG_TYPE_MOVE_RECEIVE:
        return M.MACH_MSG_TYPE_PORT_RECEIVE
    if disp in (M.MACH_MSG_TYPE_MOVE_SEND, M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND):
        return M.MACH_MSG_TYPE_PORT_SEND
    return M.MACH_MSG_TYPE_PORT_SEND_ONCE


def _release_dead(name: int) -> None:
    """Cleanup the C test leaves to the end of its process: the send
    references a pseudo-receive handed back under ``name`` outlive the
    port's destruction as a dead name."""
    refs = M.mach_port_urefs_t()
    if M.mach_port_get_refs(TASK, name, M.MACH_PORT_RIGHT_DEAD_NAME, byref(refs)) == M.KERN_SUCCESS and refs.value:
        M.mach_port_mod_refs(TASK, name, M.MACH_PORT_RIGHT_DEAD_NAME, -refs.value)


def t_mach_msg_descriptor_port(pseudo_receive: bool) -> None:
    rcv_name = t_port_construct()
    port = t_port_construct()

    if pseudo_receive:
        t_fill_port(rcv_name, 1)

    for disp in PORT_DISPOSITIONS:
        name = port
        msg = MsgComplexPort()
        if disp == M.MACH_MSG_TYPE_MOVE_SEND_ONCE:
            name = t_make_sonce(port)

        t_fill_complex_port_msg(msg, disp, name)

        kr = t_send(rcv_name, msg, MsgComplexPort.trailer.offset, M.MACH_SEND_TIMEOUT, True)
        if pseudo_receive:
            assert kr == M.MACH_SEND_TIMED_OUT, f"pseudo-rcv(disposition:{disp})"
        else:
            assert kr == M.KERN_SUCCESS, f"send(disposition:{disp})"
            kr = t_receive(rcv_name, msg, sizeof(msg), M.MACH_MSG_OPTION_NONE)
            assert kr == M.KERN_SUCCESS, f"recv(disposition:{disp})"

        disp = _result_disp(disp)

        assert msg.base.header.msgh_bits & M.MACH_MSGH_BITS_COMPLEX == M.MACH_MSGH_BITS_COMPLEX, "verify complex"
        assert msg.base.body.msgh_descriptor_count == 1, "verify dsc count"
        assert msg.dsc.type == M.MACH_MSG_PORT_DESCRIPTOR, "verify type"
        assert msg.dsc.disposition == disp, "verify disposition"
        if disp in (M.MACH_MSG_TYPE_PORT_RECEIVE, M.MACH_PORT_TYPE_SEND):
            assert msg.dsc.name == name, "verify name"

        if disp == M.MACH_MSG_TYPE_PORT_SEND_ONCE:
            t_deallocate_sonce(msg.dsc.name)

    t_port_destruct_full(port, 3, 0)  # did a COPY_SEND and a MAKE_SEND
    t_port_destruct(rcv_name)
    _release_dead(rcv_name)


def test_mach_msg_descriptor_port() -> None:
    """check port descriptors"""
    t_mach_msg_descriptor_port(False)  # regular receive
    t_mach_msg_descriptor_port(True)  # pseudo receive


def t_mach_msg_descriptor_guarded_port(pseudo_receive: bool) -> None:
    rcv_name = t_port_construct()

    if pseudo_receive:
        t_fill_port(rcv_name, 1)

    test_flags = [
        M.MACH_MSG_GUARD_FLAGS_IMMOVABLE_RECEIVE,
        M.MACH_MSG_GUARD_FLAGS_IMMOVABLE_RECEIVE | M.MACH_MSG_GUARD_FLAGS_UNGUARDED_ON_SEND,
    ]  # (the C array ends with 0, which ends its loop)

    for flags in test_flags:
        msg = MsgComplexGuardedPort()
        if flags & M.MACH_MSG_GUARD_FLAGS_UNGUARDED_ON_SEND:
            port = t_port_construct()
        else:
            port = t_port_construct_full(M.MPO_INSERT_SEND_RIGHT | M.MPO_CONTEXT_AS_GUARD, 1)

        t_fill_complex_port_guarded_msg(msg, M.MACH_MSG_TYPE_MOVE_RECEIVE, port, flags)

        kr = t_send(rcv_name, msg, MsgComplexGuardedPort.trailer.offset, M.MACH_SEND_TIMEOUT, True)
        if pseudo_receive:
            assert kr == M.MACH_SEND_TIMED_OUT, "pseudo-rcv"
        else:
            assert kr == M.KERN_SUCCESS, "send"
            kr = t_receive(rcv_name, msg, sizeof(msg), M.MACH_MSG_OPTION_NONE)
            assert kr == M.KERN_SUCCESS, "recv"

        assert msg.base.header.msgh_bits & M.MACH_MSGH_BITS_COMPLEX == M.MACH_MSGH_BITS_COMPLEX, "verify complex"
        assert msg.base.body.msgh_descriptor_count == 1, "verify dsc count"
        assert msg.dsc.type == M.MACH_MSG_GUARDED_PORT_DESCRIPTOR, "verify type"
        assert msg.dsc.disposition == M.MACH_MSG_TYPE_PORT_RECEIVE, "verify disposition"
        assert msg.dsc.name == port, "verify name"
        ctx = ctypes.addressof(msg.base)
        assert msg.dsc.context == ctx, "verify context"
        t_port_destruct_full(port, 1, ctx)

    t_port_destruct(rcv_name)
    _release_dead(rcv_name)


def test_mach_msg_descriptor_guarded_port() -> None:
    """check guarded port descriptors"""
    t_mach_msg_descriptor_guarded_port(False)  # regular receive
    t_mach_msg_descriptor_guarded_port(True)  # pseudo receive


def t_mach_msg_descriptor_port_array(pseudo_receive: bool) -> None:
    rcv_name = t_port_construct()
    port1 = t_port_construct()
    port2 = t_port_construct()

    if pseudo_receive:
        t_fill_port(rcv_name, 1)

    for disp in PORT_DISPOSITIONS:
        name1, name2 = port1, port2
        msg = MsgComplexPortArray()
        if disp == M.MACH_MSG_TYPE_MOVE_SEND_ONCE:
            name1 = t_make_sonce(port1)
            name2 = t_make_sonce(port2)

        t_fill_complex_port_array_msg(msg, disp, name1, name2)

        kr = t_send(rcv_name, msg, MsgComplexPortArray.trailer.offset, M.MACH_SEND_TIMEOUT, True)
        if pseudo_receive:
            assert kr == M.MACH_SEND_TIMED_OUT, f"pseudo-rcv(disposition:{disp})"
        else:
            assert kr == M.KERN_SUCCESS, f"send(disposition:{disp})"
            kr = t_receive(rcv_name, msg, sizeof(msg), M.MACH_MSG_OPTION_NONE)
            assert kr == M.KERN_SUCCESS, f"recv(disposition:{disp})"

        disp = _result_disp(disp)
        array = (M.mach_port_name_t * 2).from_address(msg.dsc.address)

        assert msg.base.header.msgh_bits & M.MACH_MSGH_BITS_COMPLEX == M.MACH_MSGH_BITS_COMPLEX, "verify complex"
        assert msg.base.body.msgh_descriptor_count == 1, "verify dsc count"
        assert msg.dsc.type == M.MACH_MSG_OOL_PORTS_DESCRIPTOR, "verify type"
        assert msg.dsc.disposition == disp, "verify disposition"
        assert msg.dsc.count == 2, "verify count"
        assert bool(msg.dsc.deallocate) is True, "verify deallocate"

        if disp in (M.MACH_MSG_TYPE_PORT_RECEIVE, M.MACH_PORT_TYPE_SEND):
            assert array[0] == name1, "verify name"
            assert array[1] == name2, "verify name"

        if disp == M.MACH_MSG_TYPE_PORT_SEND_ONCE:
            t_deallocate_sonce(array[0])
            t_deallocate_sonce(array[1])

        t_vm_deallocate(msg.dsc.address, sizeof(M.mach_port_name_t) * msg.dsc.count)

    t_port_destruct_full(port1, 3, 0)  # did a COPY_SEND and a MAKE_SEND
    t_port_destruct_full(port2, 3, 0)  # did a COPY_SEND and a MAKE_SEND
    t_port_destruct(rcv_name)
    _release_dead(rcv_name)


def test_mach_msg_descriptor_port_array() -> None:
    """check port array descriptors"""
    t_mach_msg_descriptor_port_array(False)  # regular receive
    t_mach_msg_descriptor_port_array(True)  # pseudo receive


def t_mach_msg_descriptor_memory(pseudo_receive: bool) -> None:
    size = 1 << 20
    rcv_name = t_port_construct()

    if pseudo_receive:
        t_fill_port(rcv_name, 1)

    addr = M.vm_address_t()
    kr = M.vm_allocate(TASK, byref(addr), size, M.VM_FLAGS_ANYWHERE)
    assert kr == M.KERN_SUCCESS, "vm_allocate(1M)"
    ctypes.memset(addr.value, 0xFF, size)

    a = addr.value
    msg = MsgComplexMemory()
    for n in range(2):
        t_fill_complex_memory_msg(msg, a, size, n > 0)

        kr = t_send(rcv_name, msg, MsgComplexMemory.trailer.offset, M.MACH_SEND_TIMEOUT, True)
        if pseudo_receive:
            assert kr == M.MACH_SEND_TIMED_OUT, "pseudo-rcv"
        else:
            assert kr == M.KERN_SUCCESS, "send"
            kr = t_receive(rcv_name, msg, sizeof(msg), M.MACH_MSG_OPTION_NONE)
            assert kr == M.KERN_SUCCESS, "recv"

        assert msg.base.header.msgh_bits & M.MACH_MSGH_BITS_COMPLEX == M.MACH_MSGH_BITS_COMPLEX, "verify complex"
        assert msg.base.body.msgh_descriptor_count == 1, "verify dsc count"
        assert msg.dsc.type == M.MACH_MSG_OOL_DESCRIPTOR, "verify type"
        assert msg.dsc.size == size, "verify dsc count"
        assert t_check_0xff(msg.dsc.address, size) == NOT_FOUND, "check content"

        if n == 0:
            t_vm_deallocate(msg.dsc.address, size)
        else:
            a = msg.dsc.address

    t_vm_deallocate(a, size)
    t_port_destruct(rcv_name)
    _release_dead(rcv_name)


def test_mach_msg_descriptor_memory() -> None:
    """check memory descriptors"""
    t_mach_msg_descriptor_memory(False)  # regular receive
    t_mach_msg_descriptor_memory(True)  # pseudo receive
