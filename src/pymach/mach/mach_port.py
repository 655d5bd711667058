"""<mach/mach_port.h> and mach_msg: the port routines with C names and
kern_return_t results, over pymach._kern.ipc_right and kern.mach_msg."""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Mapping
from typing import Any, Final

from .._kern import ipc_right as R
from .._kern import ipc_tt as TT
from .._kern import kern_return as K
from .._kern import mach_msg as KM
from .._kern import message_defs as MD
from .._kern import task as KT
from .._kern.ipc_space import MACH_PORT_RIGHT_RECEIVE, MPG_STRICT, IpcSpace
from .._kern.task import SELF
from . import types as T
from ._args import NaturalArray, address_of, counted, i32, out, out_address, set_out, store, u32, u64, val
from ._errors import returns_kr
from .mach_vm import mach_vm_deallocate
from .message import mach_msg_header_t

MachError = K.MachError


def _space(task: Any) -> IpcSpace:
    """The space of the task that ``task`` (a mach_port_t) names."""
    return _space_of(task if type(task) is int and 0 <= task <= 0xFFFFFFFF else u32(task))


_space_of = TT.space_of


@returns_kr(K.ERRNO_SPACE)
def mach_port_allocate(task: Any, right: Any, name: Any) -> int:
    """Allocate a receive right, port set or dead name; ``name`` is out.

    KERN_SUCCESS, KERN_INVALID_VALUE, KERN_INVALID_TASK, MACH_SEND_INVALID_DEST."""
    name_out = out(name)  # a bad out-parameter fails before anything is made
    store(name_out, R.allocate(_space(task), u32(right)))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_allocate_name(task: Any, right: Any, name: Any) -> int:
    """Allocate a right under a name the caller picks.

    KERN_SUCCESS, KERN_INVALID_VALUE, KERN_NAME_EXISTS, KERN_FAILURE (index
    0, another generation of a held name), KERN_NO_SPACE (an index past the
    table's limit), KERN_INVALID_TASK."""
    R.allocate_name(_space(task), u32(right), u32(name))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_deallocate(task: Any, name: Any) -> int:
    """Release one user reference of a send, send-once or dead-name right.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT, KERN_INVALID_TASK."""
    R.deallocate(_space(task), u32(name))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_destroy(task: Any, name: Any) -> int:
    """Release every right the name holds.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_TASK."""
    R.destroy(_space(task), u32(name))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_mod_refs(task: Any, name: Any, right: Any, delta: Any) -> int:
    """Add ``delta`` user references of ``right`` to ``name``.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT, KERN_INVALID_VALUE,
    KERN_UREFS_OVERFLOW, KERN_INVALID_TASK."""
    R.mod_refs(_space(task), u32(name), u32(right), i32(delta))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_get_refs(task: Any, name: Any, right: Any, refs: Any) -> int:
    """The user references of ``right`` under ``name``; ``refs`` is out.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_VALUE, KERN_INVALID_TASK."""
    set_out(refs, R.get_refs(_space(task), u32(name), u32(right)))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_type(task: Any, name: Any, ptype: Any) -> int:
    """The MACH_PORT_TYPE_* bits of ``name``; ``ptype`` is out.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_TASK."""
    set_out(ptype, R.type_of(_space(task), u32(name)))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_insert_right(task: Any, name: Any, poly: Any, polyPoly: Any) -> int:
    """Give ``name`` a right to the port named ``poly``, made from it with
    ``polyPoly``: a send right under the port's own name, a send-once right
    under a free name, or a moved right under its new name.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT, KERN_INVALID_VALUE
    (a null or dead name, generation bits), KERN_FAILURE (index 0, another
    generation of a held name), KERN_NO_SPACE, KERN_INVALID_CAPABILITY (a
    dead name), KERN_NAME_EXISTS, KERN_RIGHT_EXISTS, KERN_INVALID_TASK."""
    R.insert_right(_space(task), u32(name), u32(poly), u32(polyPoly))
    return 0


def mach_port_names(task: Any, names: Any, namesCnt: Any, types: Any, typesCnt: Any) -> int:
    """Every name and its type. ``names`` and ``types`` are out-parameters
    (byref of a mach_port_array_t / mach_port_type_array_t) that receive
    arrays in new memory, to be released with vm_deallocate as in C; an
    out-parameter too narrow for an address is a TypeError.

    KERN_SUCCESS, KERN_INVALID_TASK."""
    names_out, types_out = out_address(names), out_address(types)
    # (not returns_kr: the arrays are made after the code is known, and a
    # failure to make them raises)
    try:
        ns, ts = R.names(_space(task))
    except OSError as e:  # a MachError keeps its code
        return K.kr_from_oserror(e, K.ERRNO_SPACE)
    if names_out is not None:
        store(names_out, _ool_array(ns))
    set_out(namesCnt, len(ns))
    if types_out is not None:
        store(types_out, _ool_array(ts))
    set_out(typesCnt, len(ts))
    return 0


def _ool_array(values: list[int]) -> int:
    """An array of 32-bit values in fresh VM memory, as MIG returns
    out-of-line arrays: the caller releases it with vm_deallocate."""
    data = struct.pack(f"<{len(values)}I", *values)
    if not data:
        return 0
    addr = SELF.map.allocate(0, (len(data) + 0xFFF) & ~0xFFF, True, False, 20)
    SELF.map.copy_in(addr, data)
    return addr


@returns_kr(K.ERRNO_SPACE)
def mach_port_request_notification(task: Any, name: Any, msgid: Any, sync: Any, notify: Any,
                                   notifyPoly: Any, previous: Any) -> int:
    """Ask for a notification (MACH_NOTIFY_NO_SENDERS, _DEAD_NAME,
    _PORT_DESTROYED) to be sent to the send-once right ``notify``;
    ``previous`` receives the notify right it replaces.

    KERN_SUCCESS, KERN_INVALID_VALUE, KERN_INVALID_CAPABILITY,
    KERN_INVALID_NAME, KERN_INVALID_RIGHT, KERN_INVALID_ARGUMENT,
    KERN_FAILURE, MIG_TYPE_ERROR."""
    prev = R.request_notification(_space(task), u32(name), i32(msgid), u32(sync), u32(notify), u32(notifyPoly))
    set_out(previous, prev)
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_insert_member(task: Any, name: Any, pset: Any) -> int:
    """Add a receive right to a port set.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT, KERN_ALREADY_IN_SET."""
    R.insert_member(_space(task), u32(name), u32(pset))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_extract_member(task: Any, name: Any, pset: Any) -> int:
    """Remove a receive right from a port set.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT, KERN_NOT_IN_SET."""
    R.extract_member(_space(task), u32(name), u32(pset))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_move_member(task: Any, member: Any, after: Any) -> int:
    """Move a receive right into ``after`` (out of every other set), or out
    of all sets when ``after`` is MACH_PORT_NULL.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT, KERN_NOT_IN_SET."""
    R.move_member(_space(task), u32(member), u32(after))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_set_mscount(task: Any, name: Any, mscount: Any) -> int:
    """Set a receive right's make-send count.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT."""
    R.set_mscount(_space(task), u32(name), u32(mscount))
    return 0


# natural_t words of each flavor's struct (MACH_PORT_*_COUNT)
_GET_COUNTS: Final[Mapping[int, int]] = {T.MACH_PORT_LIMITS_INFO: T.MACH_PORT_LIMITS_INFO_COUNT,
                                         T.MACH_PORT_RECEIVE_STATUS: T.MACH_PORT_RECEIVE_STATUS_COUNT,
                                         T.MACH_PORT_DNREQUESTS_SIZE: T.MACH_PORT_DNREQUESTS_SIZE_COUNT}
# the words read of the flavors that can be set (the qlimit word of a mach_port_limits_t)
_SET_COUNTS: Final[Mapping[int, int]] = {T.MACH_PORT_LIMITS_INFO: 1, T.MACH_PORT_DNREQUESTS_SIZE: 1}


@returns_kr(K.ERRNO_SPACE)
def mach_port_get_attributes(task: Any, name: Any, flavor: Any, port_info_out: Any,
                             port_info_outCnt: Any) -> int:
    """MACH_PORT_LIMITS_INFO (qlimit) or MACH_PORT_RECEIVE_STATUS
    (mach_port_status_t) of a receive right. ``port_info_outCnt`` is in/out;
    a count larger than ``port_info_out`` holds counts as what it holds.
    ``task`` may be a read port of our task (ipc_space_read_t).

    KERN_SUCCESS, KERN_FAILURE (count too small), KERN_INVALID_ARGUMENT
    (unknown flavor), KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_INVALID_TASK."""
    fl = i32(flavor)
    cnt = out(port_info_outCnt)
    need = _GET_COUNTS.get(fl)
    if need is None:
        return K.KERN_INVALID_ARGUMENT
    where, room = counted(port_info_out, cnt.value)
    if room < need:
        return K.KERN_FAILURE
    n = u32(name)
    values = R.get_attributes(_space_of(u32(task), KT.TASK_FLAVOR_READ), n, fl)  # ipc_space_read_t
    ctypes.memmove(where, struct.pack(f"<{len(values)}I", *values), 4 * len(values))
    cnt.value = len(values)
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_set_attributes(task: Any, name: Any, flavor: Any, port_info: Any, port_infoCnt: Any) -> int:
    """Set MACH_PORT_LIMITS_INFO (qlimit, at most MACH_PORT_QLIMIT_MAX).
    A count larger than ``port_info`` holds counts as what it holds.

    KERN_SUCCESS, KERN_FAILURE (count too small), KERN_INVALID_VALUE
    (qlimit too large), KERN_INVALID_ARGUMENT (other flavors),
    KERN_INVALID_NAME, KERN_INVALID_RIGHT."""
    fl = i32(flavor)
    need = _SET_COUNTS.get(fl)
    if need is None:
        return K.KERN_INVALID_ARGUMENT
    where, n = counted(port_info, u32(port_infoCnt), writable=False)
    if n < need:
        return K.KERN_FAILURE
    value = ctypes.c_uint32.from_address(where).value
    R.check_attributes(fl, value)
    R.set_attributes(_space(task), u32(name), fl, value)
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_construct(task: Any, options: Any, context: Any, name: Any) -> int:
    """A receive right made with mach_port_options_t (MPO_QLIMIT,
    MPO_INSERT_SEND_RIGHT, MPO_CONTEXT_AS_GUARD with MPO_STRICT and
    MPO_IMMOVABLE_RECEIVE, MPO_TEMPOWNER, MPO_IMPORTANCE_RECEIVER, ...).

    KERN_SUCCESS, KERN_INVALID_VALUE, KERN_INVALID_ARGUMENT, KERN_DENIED,
    KERN_INVALID_NAME, KERN_NOT_SUPPORTED, KERN_NO_SPACE, KERN_INVALID_TASK,
    KERN_MEMORY_ERROR (``options`` is smaller than a mach_port_options_t)."""
    where, room = address_of(options, writable=False)
    if room is not None and room < ctypes.sizeof(T.mach_port_options_t):
        # XNU's copyin of the options fails with KERN_MEMORY_ERROR
        # (osfmk/ipc/mach_kernelrpc.c: _kernelrpc_mach_port_construct_trap,
        # bsd/libkern/copyio.h: mach_copyin)
        return K.KERN_MEMORY_ERROR
    opts = T.mach_port_options_t.from_buffer_copy(ctypes.string_at(where, ctypes.sizeof(T.mach_port_options_t)))
    name_out = out(name)
    store(name_out, R.construct(_space(task), opts.flags, opts.mpl.mpl_qlimit, u64(context),
                                opts.reserved[0] & 0xFFFFFFFF))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_destruct(task: Any, name: Any, srdelta: Any, guard: Any) -> int:
    """Destroy a receive right made by mach_port_construct, dropping
    ``-srdelta`` send references first.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT, KERN_INVALID_VALUE,
    KERN_INVALID_ARGUMENT (wrong guard)."""
    R.destruct(_space(task), u32(name), i32(srdelta), u64(guard))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_guard(task: Any, name: Any, guard: Any, strict: Any) -> int:
    """Guard a receive right with ``guard`` as its context (strictly when
    ``strict``).

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_INVALID_ARGUMENT (the port already has a context or guard),
    KERN_INVALID_TASK."""
    R.guard(_space(task), u32(name), u64(guard), MPG_STRICT if i32(strict) else 0)
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_guard_with_flags(task: Any, name: Any, guard: Any, flags: Any) -> int:
    """mach_port_guard with MPG_STRICT and MPG_IMMOVABLE_RECEIVE.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_INVALID_ARGUMENT, KERN_INVALID_TASK."""
    R.guard(_space(task), u32(name), u64(guard), u64(flags))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_unguard(task: Any, name: Any, guard: Any) -> int:
    """Remove a receive right's guard.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_INVALID_ARGUMENT (not guarded, or another guard), KERN_INVALID_TASK."""
    R.unguard(_space(task), u32(name), u64(guard))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_swap_guard(task: Any, name: Any, old_guard: Any, new_guard: Any) -> int:
    """Replace a (not strict) guard.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_INVALID_ARGUMENT, KERN_INVALID_TASK."""
    R.swap_guard(_space(task), u32(name), u64(old_guard), u64(new_guard))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_get_context(task: Any, name: Any, context: Any) -> int:
    """A receive right's context (0 for a strictly guarded port).

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT, KERN_INVALID_TASK."""
    o = out(context)
    store(o, R.get_context(_space(task), u32(name)))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_set_context(task: Any, name: Any, context: Any) -> int:
    """Set a receive right's context.

    KERN_SUCCESS, KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_INVALID_ARGUMENT (strictly guarded), KERN_INVALID_TASK."""
    R.set_context(_space(task), u32(name), u64(context))
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_is_connection_for_service(task: Any, connection_port: Any, service_port: Any,
                                        filter_policy_id: Any) -> int:
    """Whether a connection port was derived from a service port. Without
    a message filter (the sandbox's) XNU answers KERN_NOT_SUPPORTED, and so
    does pymach, which has none.

    KERN_INVALID_NAME, KERN_INVALID_ARGUMENT, KERN_NOT_SUPPORTED,
    KERN_INVALID_TASK."""
    space = _space(task)
    R.is_connection_for_service(space, u32(connection_port), u32(service_port), filter_policy_id is not None)
    return 0


@returns_kr(K.ERRNO_SPACE)
def mach_port_extract_right(task: Any, name: Any, msgt_name: Any, poly: Any, polyPoly: Any) -> int:
    """Take a right out of the space as a message would carry it; within
    our own task it comes back under the same rules (coalescing).

    KERN_SUCCESS, KERN_INVALID_VALUE, KERN_INVALID_NAME, KERN_INVALID_RIGHT."""
    n, t = R.extract_right(_space(task), u32(name), u32(msgt_name))
    set_out(poly, n)
    set_out(polyPoly, t)
    return 0


@returns_kr(K.ERRNO_SPACE)
def task_get_special_port(task: Any, which_port: Any, special_port: Any) -> int:
    """A task's special port (TASK_BOOTSTRAP_PORT, TASK_KERNEL_PORT,
    TASK_READ_PORT, TASK_INSPECT_PORT, TASK_NAME_PORT, TASK_HOST_PORT, ...)
    as a send right in our space, one more user reference under the name
    the space already has for the port (XNU's copyout); MACH_PORT_NULL
    when none is set. TASK_BOOTSTRAP_PORT is connected first (see
    pymach.mach.bootstrap): unless the program set it, it gives
    bootstrap_port. A read or inspect ``task`` gets only ports of its own
    flavor or weaker.

    KERN_SUCCESS, KERN_INVALID_ARGUMENT (unknown port, not a task, a name
    port), KERN_INVALID_CAPABILITY (a port too weak for ``which_port``),
    KERN_NOT_SUPPORTED (another process's bootstrap and settable ports),
    MACH_SEND_INVALID_DEST."""
    which = i32(which_port)
    set_out(special_port, TT.get_special_port(u32(task), which))
    return 0


@returns_kr(K.ERRNO_SPACE)
def task_set_special_port(task: Any, which_port: Any, special_port: Any) -> int:
    """Set a task's special port (a send right we hold, copied; or
    MACH_PORT_NULL to clear it). Fork children and programs started with
    pymach.spawn inherit it. TASK_BOOTSTRAP_PORT changes what
    task_get_bootstrap_port and children get, not what bootstrap_port
    stands for (in C, libc's global).

    KERN_SUCCESS, KERN_INVALID_ARGUMENT (unknown port), KERN_NO_ACCESS (the
    task's own and the host ports cannot be replaced), KERN_INVALID_RIGHT
    (not a send right), KERN_INVALID_TASK."""
    which = i32(which_port)
    TT.set_special_port(_space(task), which, u32(special_port))
    return 0


def task_get_bootstrap_port(task: Any, port: Any) -> int:
    """task_get_special_port(task, TASK_BOOTSTRAP_PORT, port)."""
    return task_get_special_port(task, KT.TASK_BOOTSTRAP_PORT, port)


def task_set_bootstrap_port(task: Any, port: Any) -> int:
    """task_set_special_port(task, TASK_BOOTSTRAP_PORT, port)."""
    return task_set_special_port(task, KT.TASK_BOOTSTRAP_PORT, port)


TASK_PORT_REGISTER_MAX = KT.TASK_PORT_REGISTER_MAX


@returns_kr(K.ERRNO_SPACE)
def mach_ports_register(target_task: Any, init_port_set: Any, init_port_setCnt: Any) -> int:
    """Register up to TASK_PORT_REGISTER_MAX send rights with the task;
    fork children inherit them (mach_ports_lookup gives them back).

    KERN_SUCCESS, KERN_INVALID_ARGUMENT (more than 3), KERN_INVALID_RIGHT
    (a name that is not a send right), KERN_INVALID_TASK,
    MACH_SEND_INVALID_MEMORY (a count larger than the array holds)."""
    space = _space(target_task)
    TT.ports_register(space, NaturalArray(init_port_set, u32(init_port_setCnt)))
    return 0


def mach_ports_lookup(target_task: Any, init_port_set: Any, init_port_setCnt: Any) -> int:
    """The registered send rights, as an array in new memory (release it
    with vm_deallocate); each becomes a name in our space. An out-parameter
    too narrow for an address is a TypeError.

    KERN_SUCCESS, KERN_INVALID_TASK."""
    array_out = out_address(init_port_set)
    # (not returns_kr: the array is made after the code is known, and a
    # failure to make it raises)
    try:
        names = TT.ports_lookup(_space(target_task))
    except OSError as e:  # a MachError keeps its code
        return K.kr_from_oserror(e, K.ERRNO_SPACE)
    if array_out is not None:
        store(array_out, _ool_array(names))
    set_out(init_port_setCnt, len(names))
    return 0


_Struct = (ctypes.Structure, ctypes.Union, ctypes.Array)


def mach_msg(msg: Any, option: Any, send_size: Any, rcv_size: Any, rcv_name: Any, timeout: Any,
             notify: Any) -> int:
    """Send and/or receive a message. ``msg`` is the header that starts the
    message buffer (or byref/pointer to it, or an address).

    The call never reads or writes past the memory of the ctypes object it
    is given (the object at the root of a view such as ``send_msg.header``,
    from the header on): a send whose ``send_size`` reaches past it fails
    with MACH_SEND_INVALID_DATA, and a received message that does not fit
    in it, though ``rcv_size`` says it does, is destroyed (its rights and
    out-of-line memory released) and the call returns
    MACH_RCV_INVALID_DATA, as XNU does when it cannot copy a message out to
    the receive buffer. An address given as an int is the caller's promise.

    MACH_MSG_SUCCESS and the MACH_SEND_* / MACH_RCV_* codes."""
    return mach_msg_overwrite(msg, option, send_size, rcv_size, rcv_name, timeout, notify, None, 0)


def mach_msg_overwrite(msg: Any, option: Any, send_size: Any, rcv_size: Any, rcv_name: Any, timeout: Any,
                       notify: Any, rcv_msg: Any, rcv_limit: Any) -> int:
    """mach_msg, receiving into ``rcv_msg`` when it is given; the same
    bounds hold for both buffers."""
    opt = option if type(option) is int and 0 <= option <= 0x7FFFFFFF else i32(option) & 0xFFFFFFFF
    if isinstance(msg, _Struct) and msg._b_base_ is None and msg._b_needsfree_:
        addr, room = _addressof(msg), _sizeof(msg)  # the common case: an object that owns its memory
    else:
        addr, room = address_of(msg, rcv_msg is None and opt & 2 != 0)
    space = SELF.space
    if type(timeout) is not int or not 0 <= timeout <= 0xFFFFFFFF:
        timeout = u32(timeout)
    if opt & 1:  # MACH_SEND_MSG
        size = send_size if type(send_size) is int and 0 <= send_size <= 0xFFFFFFFF else u32(send_size)
        if size < 24 or size % 4:
            return K.MACH_SEND_MSG_TOO_SMALL
        if room is not None and size > room:
            # what XNU gives when its copyin of the message cannot read the
            # caller's memory (osfmk/ipc/mach_msg.c:
            # mach_msg_copyin_user_header, osfmk/ipc/ipc_kmsg.c:
            # ipc_kmsg_get_and_inflate_from_user)
            return K.MACH_SEND_INVALID_DATA
        try:  # (caught here, not by returns_kr: this is the message path)
            _send(space, _string_at(addr, size), opt, timeout, addr)
        except KM.PseudoReceived as e:
            _memmove(addr, e.msg, len(e.msg))  # XNU's pseudo-receive: the message back in received form
            return e.kr
        except MachError as e:
            return e.kr
    if opt & 2:  # MACH_RCV_MSG
        if rcv_msg is not None:
            addr, room = address_of(rcv_msg, True)
        limit = u32(rcv_size)
        try:
            data = _receive(space, u32(rcv_name), limit, opt, timeout, addr)
        except KM.TooLarge as e:
            if e.msg:
                _destroy_received(e.msg)  # dequeued without MACH_RCV_LARGE: XNU destroys it
            # the needed size goes in msgh_size when the buffer reaches it
            # (osfmk/ipc/mach_msg.c: mach_msg_receive_too_large)
            if limit >= 8:
                if room is not None and room < 8:
                    return K.MACH_RCV_INVALID_DATA
                ctypes.c_uint32.from_address(addr + 4).value = e.needed
            return e.kr
        except MachError as e:
            return e.kr
        if room is not None and len(data) > room:
            # XNU copies the rights out to the space, then fails to copy
            # the message out to the buffer: the message is freed and the
            # call returns MACH_RCV_INVALID_DATA (osfmk/ipc/ipc_kmsg.c:
            # ipc_kmsg_put_to_user). Its rights and regions are released
            # here too, so that none is left under a name nobody knows.
            _destroy_received(data)
            return K.MACH_RCV_INVALID_DATA
        _memmove(addr, data, len(data))
    return 0


def _destroy_received(data: bytes) -> None:
    mach_msg_destroy(ctypes.create_string_buffer(data, len(data)))


def _destroy_port(name: int, disposition: int) -> None:
    if name in (0, 0xFFFFFFFF):
        return
    if disposition in (MD.MACH_MSG_TYPE_MOVE_SEND, MD.MACH_MSG_TYPE_MOVE_SEND_ONCE):
        mach_port_deallocate(SELF.task_name, name)
    elif disposition == MD.MACH_MSG_TYPE_MOVE_RECEIVE:
        mach_port_mod_refs(SELF.task_name, name, MACH_PORT_RIGHT_RECEIVE, -1)


def mach_msg_destroy(msg: Any) -> None:
    """Release what a received message holds: its reply right, the rights
    in its port and port-array descriptors, and its out-of-line regions
    (libsyscall's mach_msg_destroy, for received messages: the MAKE_*
    dispositions of an unsent message are not rights yet and are left
    alone). Descriptors are read only as far as ``msgh_size`` reaches, and
    never past the memory of the object ``msg`` lives in."""
    base, room = address_of(msg)
    if room is not None and room < ctypes.sizeof(mach_msg_header_t):
        return
    hdr = mach_msg_header_t.from_address(base)
    bits, size = hdr.msgh_bits, hdr.msgh_size
    if room is not None:
        size = min(size, room)
    _destroy_port(hdr.msgh_remote_port, MD.MACH_MSGH_BITS_REMOTE(bits))
    _destroy_port(hdr.msgh_voucher_port, MD.MACH_MSGH_BITS_VOUCHER(bits))
    if not bits & MD.MACH_MSGH_BITS_COMPLEX or size < 28:
        return
    end = base + size
    count = ctypes.c_uint32.from_address(base + 24).value
    off = base + 28
    for _ in range(count):
        if off + 12 > end:
            return
        dtype = ctypes.c_uint8.from_address(off + 11).value
        if dtype == MD.MACH_MSG_PORT_DESCRIPTOR:
            _destroy_port(ctypes.c_uint32.from_address(off).value, ctypes.c_uint8.from_address(off + 10).value)
            off += 12
            continue
        if off + 16 > end:
            return
        addr = ctypes.c_uint64.from_address(off).value
        n = ctypes.c_uint32.from_address(off + 12).value
        if dtype in (MD.MACH_MSG_OOL_DESCRIPTOR, MD.MACH_MSG_OOL_VOLATILE_DESCRIPTOR):
            if addr and n:
                mach_vm_deallocate(SELF.task_name, addr, n)
        elif dtype == MD.MACH_MSG_OOL_PORTS_DESCRIPTOR:
            disposition = ctypes.c_uint8.from_address(off + 10).value
            if addr and n:
                for i in range(n):
                    _destroy_port(ctypes.c_uint32.from_address(addr + 4 * i).value, disposition)
                mach_vm_deallocate(SELF.task_name, addr, 4 * n)
        elif dtype == MD.MACH_MSG_GUARDED_PORT_DESCRIPTOR:
            gname = ctypes.c_uint32.from_address(off + 12).value
            if not ctypes.c_uint16.from_address(off + 8).value & MD.MACH_MSG_GUARD_FLAGS_UNGUARDED_ON_SEND:
                # unguarded before it is destroyed, as libsyscall does
                mach_port_unguard(SELF.task_name, gname, addr)
            _destroy_port(gname, ctypes.c_uint8.from_address(off + 10).value)
        off += 16


_send, _receive = KM.send, KM.receive
_string_at, _memmove, _addressof, _sizeof = ctypes.string_at, ctypes.memmove, ctypes.addressof, ctypes.sizeof


__all__ = [
    "mach_port_request_notification",
    "task_get_special_port", "task_set_special_port", "task_get_bootstrap_port",
    "task_set_bootstrap_port", "TASK_KERNEL_PORT", "TASK_HOST_PORT", "TASK_NAME_PORT",
    "TASK_BOOTSTRAP_PORT", "TASK_INSPECT_PORT", "TASK_READ_PORT", "TASK_ACCESS_PORT",
    "TASK_DEBUG_CONTROL_PORT", "TASK_RESOURCE_NOTIFY_PORT", "TASK_MAX_SPECIAL_PORT",
    "mach_port_insert_member", "mach_port_extract_member", "mach_port_move_member",
    "mach_port_set_mscount", "mach_port_get_attributes", "mach_port_set_attributes",
    "mach_port_construct", "mach_port_destruct", "mach_port_extract_right",
    "mach_port_guard", "mach_port_guard_with_flags", "mach_port_unguard", "mach_port_swap_guard",
    "mach_port_get_context", "mach_port_set_context", "mach_port_is_connection_for_service",
    "mach_ports_register", "mach_ports_lookup", "TASK_PORT_REGISTER_MAX", "mach_port_allocate", "mach_port_allocate_name", "mach_port_deallocate",
    "mach_port_destroy", "mach_port_mod_refs", "mach_port_get_refs", "mach_port_type",
    "mach_port_insert_right", "mach_port_names", "mach_msg", "mach_msg_overwrite", "mach_msg_destroy",
]

TASK_KERNEL_PORT = KT.TASK_KERNEL_PORT
TASK_HOST_PORT = KT.TASK_HOST_PORT
TASK_NAME_PORT = KT.TASK_NAME_PORT
TASK_BOOTSTRAP_PORT = KT.TASK_BOOTSTRAP_PORT
TASK_INSPECT_PORT = KT.TASK_INSPECT_PORT
TASK_READ_PORT = KT.TASK_READ_PORT
TASK_ACCESS_PORT = KT.TASK_ACCESS_PORT
TASK_DEBUG_CONTROL_PORT = KT.TASK_DEBUG_CONTROL_PORT
TASK_RESOURCE_NOTIFY_PORT = KT.TASK_RESOURCE_NOTIFY_PORT
TASK_MAX_SPECIAL_PORT = KT.TASK_MAX_SPECIAL_PORT
