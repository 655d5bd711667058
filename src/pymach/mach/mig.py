"""The pieces of MIG's runtime that stubs and servers use:
mig_reply_error_t (<mach/mig_errors.h>), mach_msg_destroy (<mach/message.h>,
defined beside mach_msg in mach_port.py), which releases every right and
region a received message holds, the per-thread reply port of MIG's
stubs (libsyscall/mach/mig_reply_port.c) and the generic servers
mach_msg_server and mach_msg_server_once (libsyscall/mach/mach_msg.c)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from .._kern import bootstrap_port as BP
from .._kern import kern_return as K
from .._kern import message_defs as MD
from .._kern.task import SELF
from ._args import u32
from .._kern.ipc_notify import MACH_NOTIFY_SEND_ONCE
from .._kern.ipc_space import MACH_PORT_TYPE_SEND_ONCE
from .mach_port import mach_msg, mach_msg_destroy, mach_port_deallocate, mach_port_type
from .message import MAX_TRAILER_SIZE, mach_msg_header_t
from .notify import NDR_record_t
from .types import kern_return_t


class mig_reply_error_t(ctypes.Structure):
    """The reply of a routine that failed (and of a routine whose only
    result is its return code)."""

    _pack_ = 4
    _fields_ = [("Head", mach_msg_header_t), ("NDR", NDR_record_t), ("RetCode", kern_return_t)]


def mig_get_reply_port() -> int:
    """This thread's reply port for MIG's stubs: made on first use, then the
    same one (a fork child makes its own). MACH_PORT_NULL when none can be
    made. (The bootstrap routines use the same port, as libsyscall's do.)

    Conditions: nothing locked; takes the space's lock when it makes one."""
    return BP.reply_port()


def mig_dealloc_reply_port(reply_port: Any) -> None:
    """A stub's exchange on the reply port failed (a reply may still come):
    destroy it; the next mig_get_reply_port makes another.

    Conditions: nothing locked; takes the space's lock."""
    name = u32(reply_port)
    if name and name == BP.reply_port_name():
        BP.discard_reply_port(name)


def mig_put_reply_port(reply_port: Any) -> None:
    """The stub is done with the reply port; it stays this thread's (as in
    libsyscall, where this does nothing)."""


def _requested_trailer_size(options: int) -> int:
    """REQUESTED_TRAILER_SIZE: the trailer that ``options`` ask for."""
    elements = (options >> 24) & 0xF
    return (8, 12, 20, 52, 60, 60, 60, 68)[elements] if elements <= 7 else MAX_TRAILER_SIZE


def _return_code(reply: mig_reply_error_t) -> int:
    # a complex reply succeeded: its RetCode's place holds descriptors
    if reply.Head.msgh_bits & MD.MACH_MSGH_BITS_COMPLEX:
        return 0
    return int(reply.RetCode)


def _consume_unsent(hdr: mach_msg_header_t) -> None:
    port = hdr.msgh_local_port
    if port not in (0, 0xFFFFFFFF) and MD.MACH_MSGH_BITS_LOCAL(hdr.msgh_bits) in (
            MD.MACH_MSG_TYPE_MOVE_SEND, MD.MACH_MSG_TYPE_MOVE_SEND_ONCE):
        mach_port_deallocate(SELF.task_name, port)
        hdr.msgh_local_port = 0
    mach_msg_destroy(hdr)


_RECOVERABLE = (K.MACH_SEND_INVALID_DEST, K.MACH_SEND_TIMED_OUT, K.MACH_SEND_INTERRUPTED)
Demux = Callable[[mach_msg_header_t, mach_msg_header_t], Any]


def _serve(demux: Demux, request: Any, reply: Any, options: int) -> int:
    """One received request: demux, destroy what a failed one holds, send
    the reply (libsyscall's loop body). The send's code."""
    rq = mig_reply_error_t.from_buffer(request)
    rp = mig_reply_error_t.from_buffer(reply)
    ctypes.memset(ctypes.addressof(rp), 0, ctypes.sizeof(mach_msg_header_t))
    demux(rq.Head, rp.Head)
    code = _return_code(rp)
    if code == K.MIG_NO_REPLY:
        rp.Head.msgh_remote_port = 0
        if rq.Head.msgh_remote_port not in (0, 0xFFFFFFFF):
            # a simpleroutine sent with a reply right: nobody answers on it
            # (libsyscall's loop would keep it in the space for ever)
            mach_port_deallocate(SELF.task_name, rq.Head.msgh_remote_port)
            rq.Head.msgh_remote_port = 0
    elif code != 0:
        # destroy the request, but not its reply right: the reply took it
        rq.Head.msgh_remote_port = 0
        mach_msg_destroy(rq.Head)
    if rp.Head.msgh_remote_port == 0:
        if rp.Head.msgh_bits & MD.MACH_MSGH_BITS_COMPLEX:
            mach_msg_destroy(rp.Head)
        return 0
    send_opt = MD.MACH_SEND_MSG | options
    if MD.MACH_MSGH_BITS_REMOTE(rp.Head.msgh_bits) != MD.MACH_MSG_TYPE_MOVE_SEND_ONCE:
        send_opt |= MD.MACH_SEND_TIMEOUT
    mr = mach_msg(rp.Head, send_opt, rp.Head.msgh_size, 0, 0, 0, 0)
    if mr in _RECOVERABLE:
        _consume_unsent(rp.Head)
        mr = 0
    elif mr:
        # a reply the kernel refused (a bad right in it): its reply right,
        # still ours, goes, so that the client learns of it (MIG_SERVER_DIED)
        # rather than waiting for ever
        _release_send_once(rp.Head.msgh_remote_port)
    return mr


REPLY_ID_DELTA = 100  # MIG: a reply's id is the request's plus 100


def exchange(dest: int, build: Callable[[int, int], bytes], msg_id: int, rcv: Any) -> int:
    """What a MIG client stub does: send the request that ``build(dest,
    reply_port)`` makes to ``dest`` with this thread's MAKE_SEND_ONCE reply
    port, and receive the reply into ``rcv`` (a reply buffer structure
    starting with its ``Head``). mach_msg's codes; MIG_SERVER_DIED when
    the reply right died unanswered, MIG_REPLY_MISMATCH for a stray reply;
    KERN_RESOURCE_SHORTAGE when no reply port can be had. After a failure
    the reply port is replaced (a reply may still come to it)."""
    reply = BP.reply_port()
    if not reply:
        return K.KERN_RESOURCE_SHORTAGE
    ok = False
    try:
        msg = build(dest, reply)
        req = ctypes.create_string_buffer(msg, len(msg))
        kr = mach_msg(req, MD.MACH_SEND_MSG, len(msg), 0, 0, MD.MACH_MSG_TIMEOUT_NONE, 0)
        if kr:
            return kr
        kr = mach_msg(rcv.Head, MD.MACH_RCV_MSG, 0, ctypes.sizeof(rcv), reply, MD.MACH_MSG_TIMEOUT_NONE, 0)
        if kr:
            return kr
        got = rcv.Head.msgh_id
        if got == MACH_NOTIFY_SEND_ONCE:
            return K.MIG_SERVER_DIED
        if got != msg_id + REPLY_ID_DELTA:
            mach_msg_destroy(rcv)
            return K.MIG_REPLY_MISMATCH
        ok = True
        return K.KERN_SUCCESS
    finally:
        if not ok:
            BP.discard_reply_port(reply)


def _release_send_once(name: int) -> None:
    kind = ctypes.c_uint32()
    if mach_port_type(SELF.task_name, name, ctypes.byref(kind)) == 0 and kind.value & MACH_PORT_TYPE_SEND_ONCE:
        mach_port_deallocate(SELF.task_name, name)


def _buffers(max_size: int, options: int) -> tuple[Any, Any, int]:
    size = u32(max_size)
    rcv = size + _requested_trailer_size(options)
    send = size + (MAX_TRAILER_SIZE if options & MD.MACH_SEND_TRAILER else 0)
    return ctypes.create_string_buffer(max(rcv, 36)), ctypes.create_string_buffer(max(send, 36)), rcv


def mach_msg_server_once(demux: Demux, max_size: Any, rcv_name: Any, options: Any) -> int:
    """Receive one request on ``rcv_name`` (a port or port set), give it to
    ``demux(InHeadP, OutHeadP)`` and send the reply it made; a request whose
    routine failed is destroyed (its rights and regions released), and a
    reply that cannot be delivered is destroyed too. ``options`` are
    mach_msg's (trailer elements, MACH_RCV_TIMEOUT, MACH_RCV_LARGE...).

    MACH_MSG_SUCCESS, or the code of the receive or of the reply's send
    (MACH_RCV_TOO_LARGE, MACH_RCV_INVALID_NAME, ...)."""
    opt = u32(options) & ~(MD.MACH_SEND_MSG | MD.MACH_RCV_MSG)
    request, reply, rcv_size = _buffers(max_size, opt)
    while True:
        mr = mach_msg(request, MD.MACH_RCV_MSG | opt, 0, rcv_size, rcv_name, MD.MACH_MSG_TIMEOUT_NONE, 0)
        if not (mr == K.MACH_RCV_TOO_LARGE and opt & MD.MACH_RCV_LARGE):
            break
        need = mach_msg_header_t.from_buffer(request).msgh_size + _requested_trailer_size(opt)
        request, rcv_size = ctypes.create_string_buffer(need), need
    if mr:
        return int(mr)
    return _serve(demux, request, reply, opt)


def mach_msg_server(demux: Demux, max_size: Any, rcv_name: Any, options: Any) -> int:
    """mach_msg_server_once over and over: returns only when a receive or
    a reply's send fails with a code that is not recoverable (the port was
    destroyed: MACH_RCV_PORT_DIED, MACH_RCV_INVALID_NAME, ...), which it
    returns."""
    while True:
        mr = mach_msg_server_once(demux, max_size, rcv_name, options)
        if mr:
            return mr


__all__ = ["mig_reply_error_t", "mach_msg_destroy", "mig_get_reply_port", "mig_dealloc_reply_port",
           "mig_put_reply_port", "mach_msg_server", "mach_msg_server_once"]
