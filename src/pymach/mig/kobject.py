"""The kernel objects' MIG servers, as XNU's ipc_kobject_server.

A message whose destination is a send right to a kernel object (a task
port of any flavor, a thread port, the host port, a clock, a memory entry) is not
queued anywhere: the kernel answers it, in the sending thread, before
mach_msg's send returns. Its id chooses the routine among the subsystems
pymach serves (mach_vm 4800, vm_map 3800, mach_port 3200, task 3400,
thread_act 3600, memory_entry 4900, mach_host 200, clock 1000: the
``.defs`` files in pymach/defs,
with XNU's ids and layouts); any other id is answered MIG_BAD_ID, as XNU
answers an id no subsystem has.

How one message is served:

1. The kernel takes the message (kern.mach_msg.deliver_to_kernel): it is
   copied in as for any port (the same checks and MACH_SEND_* codes, moved
   rights consumed, out-of-line memory copied) and copied out at once
   into the sender's own space: the rights it carried get names there and
   its memory is mapped. That is what the kernel holds while the routine
   runs.
2. The routine's C-layer function (pymach.mach: mach_vm_allocate and the
   others) runs on it through the subsystem's generated server, with the
   kernel object's name as its request port. So a routine served by
   message does exactly what the call does.
3. What the routine did not take is released, as the kernel releases it:
   the whole request when the routine fails (mach_msg_server does the
   same), its port and memory arguments when it succeeds, except a
   polymorphic right that the routine moved (XNU's message took it: on
   failure too, when the routine had moved it already).
4. The reply goes to the request's reply right, its rights moved (the
   kernel keeps no reference), without waiting for room in the queue: a
   reply that cannot be delivered is destroyed.

A moved destination right (MOVE_SEND of the kernel object's port) is
consumed once the message has been served.
"""

from __future__ import annotations

import ctypes
import struct
import threading
from collections.abc import Iterator
from typing import Final

from .. import mach as M
from .._kern import kern_return as K
from .._kern import mach_msg as KM
from .._kern.task import SELF
from .kernel import (clock_server, mach_host_server, mach_port_server, mach_vm_server, memory_entry_server,
                     task_server, thread_act_server, vm_map_server)
from .layout import PORT_DESCRIPTOR
from .rpc import NDR, Server, _reply_header

_MODULES: Final = (mach_vm_server, vm_map_server, mach_port_server, task_server, thread_act_server,
                   memory_entry_server, mach_host_server, clock_server)
SUBSYSTEMS: Final = tuple(m._IFACE.subsystem for m in _MODULES)
# id -> the subsystem that has it
_BY_ID: Final = {rt.id: i for i, sub in enumerate(SUBSYSTEMS) for rt in sub.routines}
_MAX_REPLY: Final = max(rt.reply.size for sub in SUBSYSTEMS for rt in sub.routines)

_HEAD = struct.Struct("<IIIIIi")
_MOVED: Final = {M.MACH_MSG_TYPE_COPY_SEND: M.MACH_MSG_TYPE_MOVE_SEND,
                 M.MACH_MSG_TYPE_MAKE_SEND: M.MACH_MSG_TYPE_MOVE_SEND,
                 M.MACH_MSG_TYPE_MAKE_SEND_ONCE: M.MACH_MSG_TYPE_MOVE_SEND_ONCE}

_local = threading.local()


def served() -> dict[str, list[str]]:
    """The routines served, by subsystem, in id order."""
    return {sub.name: [rt.name for rt in sorted(sub.routines, key=lambda r: r.id)] for sub in SUBSYSTEMS}


def _servers() -> list[Server]:
    # one set per thread: a server keeps its last reply's memory until its next request
    s: list[Server] | None = getattr(_local, "servers", None)
    if s is None:
        s = _local.servers = [Server(sub, M, kernel=True) for sub in SUBSYSTEMS]
    return s


def _descriptors(buf: ctypes.Array[ctypes.c_char]) -> Iterator[tuple[int, int]]:
    """(offset, type) of each descriptor of a complex message."""
    count = struct.unpack_from("<I", buf, 24)[0]
    off = 28
    for _ in range(count):
        dtype = buf[off + 11][0]
        yield off, dtype
        off += 12 if dtype == M.MACH_MSG_PORT_DESCRIPTOR else 16


def serve(msg: bytes, option: int, timeout_ms: int) -> None:
    """Answer one message sent to a kernel object (see the module's
    docstring). Raises MachError with the send's code when the message
    cannot be taken, as a send to any port would fail
    (MACH_SEND_INVALID_RIGHT, MACH_SEND_INVALID_MEMORY,
    MACH_SEND_INVALID_REPLY, ...). ``option`` and ``timeout_ms`` do not
    matter: the kernel takes a message at once and never waits to reply.

    Conditions: nothing locked; runs in the sending thread, and calls the
    routine and sends the reply as the thread itself would."""
    bits, _size, dest, _reply, _voucher, msg_id = _HEAD.unpack_from(msg)
    data = KM.deliver_to_kernel(SELF.space, msg)
    try:
        _run(data, dest, msg_id)
    finally:
        if bits & 0x1F == M.MACH_MSG_TYPE_MOVE_SEND:
            M.mach_port_deallocate(SELF.task_name, dest)
    del option, timeout_ms


def _run(data: bytes, dest: int, msg_id: int) -> None:
    """Steps 3 to 5 for the received request ``data``."""
    request = ctypes.create_string_buffer(data, max(len(data), 36))
    head = M.mach_msg_header_t.from_buffer(request)
    head.msgh_local_port = dest
    in_bits = head.msgh_bits
    reply = ctypes.create_string_buffer(_MAX_REPLY + M.MAX_TRAILER_SIZE)
    which = _BY_ID.get(msg_id)
    server = _servers()[which] if which is not None else None
    moved = _moved_rights(request, server, msg_id) if server is not None else []
    held = [_held(name) for _off, name in moved]
    if server is not None:
        server.demux(head, M.mach_msg_header_t.from_buffer(reply))
    else:
        _bad_id(head, reply)
    rhead = M.mach_msg_header_t.from_buffer(reply)
    complex_reply = bool(rhead.msgh_bits & M.MACH_MSGH_BITS_COMPLEX)
    code = 0 if complex_reply else struct.unpack_from("<i", reply, 32)[0]
    # release what the routine did not take; the reply right goes with the reply
    head.msgh_bits = in_bits
    head.msgh_local_port = 0
    reply_right = head.msgh_remote_port
    head.msgh_remote_port = 0
    for (off, name), before in zip(moved, held):
        # the routine took a right it was given to move when it succeeded,
        # or when the right is no longer as it was (it fails after moving it,
        # as XNU's traps do); else the right goes with the request
        if code == 0 or _held(name) != before:
            struct.pack_into("<I", request, off, 0)
    M.mach_msg_destroy(head)
    if code == M.MIG_NO_REPLY or not reply_right:
        _drop_rights(reply, complex_reply)
        if reply_right not in (0, 0xFFFFFFFF):
            M.mach_port_deallocate(SELF.task_name, reply_right)  # nobody answers on it
        return
    if complex_reply:
        for off, dtype in _descriptors(reply):
            if dtype in (M.MACH_MSG_PORT_DESCRIPTOR, M.MACH_MSG_OOL_PORTS_DESCRIPTOR):
                disp = reply[off + 10][0]
                reply[off + 10] = bytes([_MOVED.get(disp, disp)])
    try:
        KM.send(SELF.space, ctypes.string_at(reply, rhead.msgh_size), M.MACH_SEND_TIMEOUT, 0)
    except K.MachError:
        # the reply's rights go, and the reply right with them: its
        # send-once notification tells the client (MIG_SERVER_DIED)
        _drop_rights(reply, complex_reply)
        M.mach_port_deallocate(SELF.task_name, reply_right)


def _drop_rights(reply: ctypes.Array[ctypes.c_char], complex_reply: bool) -> None:
    """Release the rights an unsent reply moves. Its out-of-line memory is
    the server's buffer, not a region: it is left alone."""
    if not complex_reply:
        return
    task = SELF.task_name
    for off, dtype in _descriptors(reply):
        if dtype == M.MACH_MSG_PORT_DESCRIPTOR:
            name = struct.unpack_from("<I", reply, off)[0]
            if name not in (0, 0xFFFFFFFF):
                M.mach_port_deallocate(task, name)
        elif dtype == M.MACH_MSG_OOL_PORTS_DESCRIPTOR:
            addr, count = struct.unpack_from("<Q", reply, off)[0], struct.unpack_from("<I", reply, off + 12)[0]
            for name in (ctypes.c_uint32 * count).from_address(addr) if addr and count else ():
                if name not in (0, 0xFFFFFFFF):
                    M.mach_port_deallocate(task, name)


def _moved_rights(request: ctypes.Array[ctypes.c_char], server: Server, msg_id: int) -> list[tuple[int, int]]:
    """(offset, name) of each right of the request that its routine is given
    with a disposition to move: a polymorphic port argument."""
    if not M.mach_msg_header_t.from_buffer(request).msgh_bits & M.MACH_MSGH_BITS_COMPLEX:
        return []
    codec = server.codecs.get(msg_id)
    if codec is None:
        return []
    args = [arg for f, arg in codec.req.fields if f.kind == "descriptor"]
    out = []
    for (off, dtype), arg in zip(_descriptors(request), args):
        if arg is not None and arg.poly is not None and dtype == M.MACH_MSG_PORT_DESCRIPTOR \
                and arg.kpd_type == PORT_DESCRIPTOR:
            name = struct.unpack_from("<I", request, off)[0]
            if name not in (0, 0xFFFFFFFF):
                out.append((off, name))
    return out


def _held(name: int) -> tuple[int, int]:
    """What ``name`` holds: (its type, its send right's user references)."""
    kind, refs = M.mach_port_type_t(), M.mach_port_urefs_t()
    if M.mach_port_type(SELF.task_name, name, ctypes.byref(kind)):
        return 0, 0
    M.mach_port_get_refs(SELF.task_name, name, M.MACH_PORT_RIGHT_SEND, ctypes.byref(refs))
    return kind.value, refs.value


def _bad_id(head: M.mach_msg_header_t, reply: ctypes.Array[ctypes.c_char]) -> None:
    """The mig_reply_error_t of an id no subsystem has: MIG_BAD_ID."""
    ctypes.memmove(reply, _reply_header(head.msgh_bits, head.msgh_remote_port, head.msgh_id) + NDR
                   + struct.pack("<i", M.MIG_BAD_ID), 36)


__all__ = ["SUBSYSTEMS", "serve", "served"]
