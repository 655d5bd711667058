"""Rights in a space: the mach_port_* operations and the copyin/copyout of
rights that messages carry, as XNU's ipc_right.c does them.

Every send capability owns its fd: making, copying in or copying out a
right either takes ownership of an fd or closes the duplicate, so the fds
of the process always match the rights its space holds.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final, Protocol, runtime_checkable

from .._linux import epoll, files, pidfd, sockdiag
from . import ipc_notify
from . import kern_return as K
from . import message_defs as MD
from . import ipc_port
from .ipc_port import Port, ReplyCap, SendCap, SendOnceCap, Shared
from .ipc_space import (MACH_PORT_RIGHT_DEAD_NAME, MACH_PORT_RIGHT_LABELH, MACH_PORT_RIGHT_PORT_SET,
                        MACH_PORT_RIGHT_RECEIVE,
                        MACH_PORT_RIGHT_SEND, MACH_PORT_RIGHT_SEND_ONCE, MACH_PORT_TYPE_DEAD_NAME,
                        MACH_PORT_TYPE_PORT_SET, MACH_PORT_TYPE_RECEIVE, MACH_PORT_TYPE_SEND,
                        MACH_PORT_TYPE_DNREQUEST, MACH_PORT_TYPE_SEND_ONCE, MACH_PORT_UREFS_MAX, IpcEntry,
                        IpcSpace)
from .ipc_pset import PortSet
from .task import SELF, Task, Thread
from .vm_memory_entry import MemoryEntry
from . import ipc_space
from .ipc_space import (MACH_PORT_QLIMIT_MAX, MPO_CONTEXT_AS_GUARD, MPO_INSERT_SEND_RIGHT, MPO_QLIMIT)

_fstat = files.fstat  # bound once: copyout_send runs for every right a message carries
_close = files.close

_RIGHT_TYPE = {
    MACH_PORT_RIGHT_SEND: MACH_PORT_TYPE_SEND,
    MACH_PORT_RIGHT_RECEIVE: MACH_PORT_TYPE_RECEIVE,
    MACH_PORT_RIGHT_SEND_ONCE: MACH_PORT_TYPE_SEND_ONCE,
    MACH_PORT_RIGHT_PORT_SET: MACH_PORT_TYPE_PORT_SET,
    MACH_PORT_RIGHT_DEAD_NAME: MACH_PORT_TYPE_DEAD_NAME,
}


@runtime_checkable
class _Keyed(Protocol):
    """A kernel object held as a send right that coalesces by its key and
    travels as fds: a semaphore (kern.sync_sema)."""

    def key(self) -> Hashable: ...

    def wire_fds(self) -> list[int]: ...

    def close(self) -> None: ...


def _err(kr: int, what: str) -> K.MachError:
    return K.MachError(kr, what)


def _no_space(err: OSError, what: str) -> K.MachError:
    """A right could not get its fds: KERN_NO_SPACE at RLIMIT_NOFILE (the
    space is full), KERN_RESOURCE_SHORTAGE when the system runs out."""
    return K.MachError(K.kr_from_oserror(err, K.ERRNO_SPACE), f"{what}: {err.strerror}")


def dealloc_name(space: IpcSpace, name: int) -> IpcEntry:
    """Free ``name`` in ``space`` (XNU's ipc_entry_dealloc). A dead-name
    request it held fires as a port-deleted notification: the name loses
    its right without the port dying. KERN_INVALID_NAME.

    Conditions: the space's lock may be held by this thread (it is
    reentrant); takes it."""
    with space.lock:
        e = space.remove(name)
        req, e.dnrequest = e.dnrequest, None
        if req is not None:
            ipc_notify.port_deleted(req, name)  # type: ignore[arg-type]
        return e


# -- allocation --------------------------------------------------------------

def allocate(space: IpcSpace, right: int) -> int:
    """mach_port_allocate: a new receive right, port set or dead name.
    KERN_INVALID_VALUE for other rights; KERN_NO_SPACE when the task is
    out of fds, KERN_RESOURCE_SHORTAGE when the system is.

    Conditions: nothing locked, or the space's lock; takes it (alloc)."""
    try:
        if right == MACH_PORT_RIGHT_RECEIVE:
            port = Port()
        elif right == MACH_PORT_RIGHT_PORT_SET:
            pset = PortSet()
    except OSError as err:
        raise _no_space(err, "mach_port_allocate") from err
    if right == MACH_PORT_RIGHT_RECEIVE:
        return space.alloc(port, MACH_PORT_TYPE_RECEIVE, 0, key=id(port))[0]
    if right == MACH_PORT_RIGHT_PORT_SET:
        return space.alloc(pset, MACH_PORT_TYPE_PORT_SET, 0, key=id(pset))[0]
    if right == MACH_PORT_RIGHT_DEAD_NAME:
        return space.alloc(None, MACH_PORT_TYPE_DEAD_NAME, 1)[0]
    raise _err(K.KERN_INVALID_VALUE, f"cannot allocate right {right}")


def allocate_name(space: IpcSpace, right: int, name: int) -> None:
    """mach_port_allocate_name: as allocate, under a chosen name, whose
    checks are IpcSpace.check_name's. KERN_INVALID_VALUE (bad right, a null
    or dead name, generation bits), KERN_FAILURE, KERN_NAME_EXISTS,
    KERN_NO_SPACE, KERN_RESOURCE_SHORTAGE.

    Conditions: nothing locked; takes the space's lock for the name
    (alloc_name), then sets the entry's port and key without it."""
    if name in (0, 0xFFFFFFFF):
        raise _err(K.KERN_INVALID_VALUE, f"{name:#x} is not a valid name")
    if right == MACH_PORT_RIGHT_DEAD_NAME:
        allocate(space, right)  # XNU ignores the name for dead names
        return
    if right not in (MACH_PORT_RIGHT_RECEIVE, MACH_PORT_RIGHT_PORT_SET):
        raise _err(K.KERN_INVALID_VALUE, f"cannot allocate right {right}")
    if right == MACH_PORT_RIGHT_RECEIVE:
        e = space.alloc_name(name, None, MACH_PORT_TYPE_RECEIVE, 0)  # the name first: no port to undo
        try:
            port = Port()
        except OSError as err:
            dealloc_name(space, name)
            raise _no_space(err, "mach_port_allocate_name") from err
        e.object = port
        space.add_key(name, e, id(port))
    else:
        try:
            pset = PortSet()
        except OSError as err:
            raise _no_space(err, "mach_port_allocate_name") from err
        try:
            e = space.alloc_name(name, pset, MACH_PORT_TYPE_PORT_SET, 0)
        except K.MachError:
            pset.destroy()  # nothing half made is left behind
            raise
        space.add_key(name, e, id(pset))


# -- state -------------------------------------------------------------------

def check_dead(space: IpcSpace, name: int, e: IpcEntry) -> None:
    """Turn a send or send-once right whose port died into a dead name.

    Conditions: the space's lock is held, except on the message path
    (_kern/ipc_kmsg.py _take_send, _kern/mach_msg.py _transmit) and in
    _kern/ipc_tt.py set_special_port, which call it without; never waits; may
    close the right (the watcher's and the use lock) and send a dead-name
    notification (never waits: the use lock, or the watcher's lock if the
    send fails)."""
    if e.type & (MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_SEND_ONCE) and not e.type & MACH_PORT_TYPE_RECEIVE:
        cap = e.cap
        if (isinstance(cap, SendCap) and cap.dead()) or (isinstance(cap, Task) and not cap.alive()):
            # a task port dies with its process, as XNU destroys it when the
            # task terminates
            urefs = e.urefs if e.type & MACH_PORT_TYPE_SEND else 1
            _drop_cap(space, name, e)
            e.object = None
            e.type = MACH_PORT_TYPE_DEAD_NAME
            e.urefs = urefs
            if e.dnrequest is not None:
                # the port died: the request fires and holds a reference
                e.urefs = min(e.urefs + 1, MACH_PORT_UREFS_MAX)
                req, e.dnrequest = e.dnrequest, None
                ipc_notify.dead_name(req, name)  # type: ignore[arg-type]


def _drop_cap(space: IpcSpace, name: int, e: IpcEntry) -> None:
    """Conditions: the space's lock is held, except where check_dead and
    consume_sent run without it (the message path); takes the watcher's lock
    and the use lock."""
    cap = e.cap
    if isinstance(cap, SendCap):
        if cap.sock.fileno() >= 0:
            ipc_notify.WATCHER.unwatch(cap.sock.fileno())
        for k in list(e.keys):
            if k == ("ino", cap.ino):
                space._by_key.pop(k, None)
                e.keys.remove(k)
        cap.close()
    elif isinstance(cap, MemoryEntry):
        key = cap.key()
        if key in e.keys:
            space._by_key.pop(key, None)
            e.keys.remove(key)
        cap.close()
    elif isinstance(cap, Task):
        for k in list(e.keys):
            if isinstance(k, tuple) and k[:1] in (("task",), ("thread",)):
                space._by_key.pop(k, None)
                e.keys.remove(k)
        cap.close()  # another process's task: its pidfd
    elif isinstance(cap, _Keyed):  # a semaphore (kern.sync_sema, which is above this module)
        skey = cap.key()
        if skey in e.keys:
            space._by_key.pop(skey, None)
            e.keys.remove(skey)
        cap.close()
    e.cap = None


def type_of(space: IpcSpace, name: int) -> int:
    """mach_port_type. KERN_INVALID_NAME; MACH_PORT_DEAD is a dead name.

    Conditions: nothing locked, or the space's lock held by this thread;
    takes it."""
    if name == 0xFFFFFFFF:
        return MACH_PORT_TYPE_DEAD_NAME
    with space.lock:
        e = space.lookup(name)
        if e is None:
            raise _err(K.KERN_INVALID_NAME, f"{name:#x}")
        check_dead(space, name, e)
        return e.type | (MACH_PORT_TYPE_DNREQUEST if e.dnrequest is not None else 0)


def get_refs(space: IpcSpace, name: int, right: int) -> int:
    """mach_port_get_refs. KERN_INVALID_NAME, KERN_INVALID_VALUE.

    Conditions: nothing locked, or the space's lock held by this thread;
    takes it."""
    if right == MACH_PORT_RIGHT_LABELH and name not in (0, 0xFFFFFFFF):
        with space.lock:
            if space.lookup(name) is None:
                raise _err(K.KERN_INVALID_NAME, f"{name:#x}")
        return 0
    if right not in _RIGHT_TYPE:
        raise _err(K.KERN_INVALID_VALUE, f"right {right}")
    if name in (0, 0xFFFFFFFF):
        if right in (MACH_PORT_RIGHT_SEND, MACH_PORT_RIGHT_SEND_ONCE):
            return 1
        raise _err(K.KERN_INVALID_NAME, f"{name:#x}")
    with space.lock:
        e = space.lookup(name)
        if e is None:
            raise _err(K.KERN_INVALID_NAME, f"{name:#x}")
        check_dead(space, name, e)
        bit = _RIGHT_TYPE[right]
        if not e.type & bit:
            return 0
        if right in (MACH_PORT_RIGHT_SEND, MACH_PORT_RIGHT_DEAD_NAME):
            return e.urefs
        return 1


# -- releasing ---------------------------------------------------------------

def _release_send(space: IpcSpace, name: int, e: IpcEntry, n: int = 1) -> None:
    """Conditions: the space's lock is held; may close the right (the
    watcher's and the use lock)."""
    if e.urefs >= MACH_PORT_UREFS_MAX and n < MACH_PORT_UREFS_MAX:
        return  # pegged: only a delta of -MACH_PORT_UREFS_MAX releases it
    e.urefs -= n
    if e.urefs > 0:
        return
    e.urefs = 0
    if e.type & MACH_PORT_TYPE_SEND:
        _drop_cap(space, name, e)
        e.type &= ~MACH_PORT_TYPE_SEND
    if e.type & MACH_PORT_TYPE_DEAD_NAME:
        e.type &= ~MACH_PORT_TYPE_DEAD_NAME
    if not e.type:
        dealloc_name(space, name)


def _destroy_receive(space: IpcSpace, name: int, e: IpcEntry) -> None:
    """Conditions: the space's lock is held; takes the sets' locks, the port's
    lock (for a port-destroyed request, pack_for_move's, which never waits),
    the watcher's and the use lock; sends notifications without waiting."""
    port = e.object
    assert isinstance(port, Port)
    if port.pdrequest is not None and _send_port_destroyed(space, name, e, port):
        return
    for pset in list(port.sets):
        assert isinstance(pset, PortSet)
        pset.remove(port)
    port.destroy()
    e.type &= ~MACH_PORT_TYPE_RECEIVE
    for k in list(e.keys):
        if k == id(port):
            space._by_key.pop(k, None)
            e.keys.remove(k)
    if e.type & MACH_PORT_TYPE_SEND:
        # our own send rights to the port we just destroyed: a dead name
        _drop_cap(space, name, e)
        e.type = MACH_PORT_TYPE_DEAD_NAME
        e.object = None
    else:
        dealloc_name(space, name)


def deallocate(space: IpcSpace, name: int) -> None:
    """mach_port_deallocate: release one user reference of a send, send-once
    or dead-name right; a port set name destroys the set. MACH_PORT_NULL
    and MACH_PORT_DEAD are no-ops. KERN_INVALID_NAME, KERN_INVALID_RIGHT.

    Conditions: nothing locked, or the space's lock held by this thread;
    takes it; under it the set's lock, the watcher's and the use lock."""
    if name in (0, 0xFFFFFFFF):
        return
    with space.lock:
        e = space.lookup(name)
        if e is None:
            raise _err(K.KERN_INVALID_NAME, f"{name:#x}")
        check_dead(space, name, e)
        if e.type & MACH_PORT_TYPE_SEND_ONCE:
            _drop_cap(space, name, e)
            dealloc_name(space, name)
        elif e.type & (MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_DEAD_NAME):
            _release_send(space, name, e)
        elif e.type & MACH_PORT_TYPE_PORT_SET:
            pset = e.object
            assert isinstance(pset, PortSet)
            pset.destroy()
            dealloc_name(space, name)
        else:
            raise _err(K.KERN_INVALID_RIGHT, f"{name:#x} holds no send right")


def destroy(space: IpcSpace, name: int) -> None:
    """mach_port_destroy: release every right the name holds.
    KERN_INVALID_NAME.

    Conditions: nothing locked, or the space's lock held by this thread;
    takes it; under it as _destroy_receive."""
    if name in (0, 0xFFFFFFFF):
        return
    with space.lock:
        e = space.lookup(name)
        if e is None:
            raise _err(K.KERN_INVALID_NAME, f"{name:#x}")
        if e.type & MACH_PORT_TYPE_RECEIVE:
            if getattr(e.object, "guarded", False) and getattr(e.object, "context", 0) != 0:
                # ipc_right_destroy checks the guard against 0
                raise _err(K.KERN_INVALID_RIGHT, "a guarded port is destroyed only by mach_port_destruct")
            e.urefs = 0
            cap = None
            if e.type & MACH_PORT_TYPE_SEND:
                # closed after the port is destroyed, not before (see
                # _destroy_receive_keep_sends: no no-senders notification)
                cap, e.cap = e.cap, None
                e.type &= ~MACH_PORT_TYPE_SEND
            _destroy_receive(space, name, e)
            if cap is not None:
                e.cap = cap
                _drop_cap(space, name, e)
            e = space.lookup(name)
            if e is None:
                return
        if e.type & MACH_PORT_TYPE_PORT_SET:
            pset = e.object
            assert isinstance(pset, PortSet)
            pset.destroy()
        _drop_cap(space, name, e)
        dealloc_name(space, name)


def mod_refs(space: IpcSpace, name: int, right: int, delta: int) -> None:
    """mach_port_mod_refs. KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_INVALID_VALUE (a delta the right cannot take, or one that would
    go below zero). Send and dead-name references saturate at
    MACH_PORT_UREFS_MAX, as in XNU (no KERN_UREFS_OVERFLOW).

    Conditions: nothing locked, or the space's lock held by this thread;
    takes it; under it as _destroy_receive."""
    if not 0 <= right <= MACH_PORT_RIGHT_LABELH:
        raise _err(K.KERN_INVALID_VALUE, f"right {right}")
    if name in (0, 0xFFFFFFFF):
        if right in (MACH_PORT_RIGHT_SEND, MACH_PORT_RIGHT_SEND_ONCE):
            return
        raise _err(K.KERN_INVALID_NAME, f"{name:#x}")
    with space.lock:
        e = space.lookup(name)
        if e is None:
            raise _err(K.KERN_INVALID_NAME, f"{name:#x}")
        if right == MACH_PORT_RIGHT_LABELH:
            raise _err(K.KERN_INVALID_RIGHT, "LABELH is an obsolete right")
        was_live = bool(e.type & (MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_SEND_ONCE))
        check_dead(space, name, e)
        if was_live and e.type & MACH_PORT_TYPE_DEAD_NAME and right in (
                MACH_PORT_RIGHT_SEND, MACH_PORT_RIGHT_SEND_ONCE):
            raise _err(K.KERN_INVALID_RIGHT, f"{name:#x}: the port died")
        bit = _RIGHT_TYPE[right]
        if not e.type & bit:
            raise _err(K.KERN_INVALID_RIGHT, f"{name:#x} holds no such right")
        if right in (MACH_PORT_RIGHT_RECEIVE, MACH_PORT_RIGHT_PORT_SET, MACH_PORT_RIGHT_SEND_ONCE):
            if delta == 0:
                return
            if delta != -1:
                raise _err(K.KERN_INVALID_VALUE, f"delta {delta} for a right without user references")
            if right == MACH_PORT_RIGHT_RECEIVE:
                if getattr(e.object, "guarded", False):
                    raise _err(K.KERN_INVALID_RIGHT, "a guarded port is destroyed only by mach_port_destruct")
                _destroy_receive_keep_sends(space, name, e)
            elif right == MACH_PORT_RIGHT_PORT_SET:
                pset = e.object
                assert isinstance(pset, PortSet)
                pset.destroy()
                dealloc_name(space, name)
            else:
                _drop_cap(space, name, e)
                dealloc_name(space, name)
            return
        # SEND and DEAD_NAME carry user references
        if abs(delta) > MACH_PORT_UREFS_MAX:
            raise _err(K.KERN_INVALID_VALUE, f"delta {delta}")
        if e.urefs >= MACH_PORT_UREFS_MAX:
            if delta == -MACH_PORT_UREFS_MAX:
                _release_send(space, name, e, MACH_PORT_UREFS_MAX)
            return
        if e.urefs + delta < 0:
            raise _err(K.KERN_INVALID_VALUE, f"delta {delta} below zero")
        if delta > 0:
            e.urefs = min(e.urefs + delta, MACH_PORT_UREFS_MAX)
        elif delta < 0:
            _release_send(space, name, e, -delta)


def _destroy_receive_keep_sends(space: IpcSpace, name: int, e: IpcEntry) -> None:
    """Destroy the receive part of an entry; send references under the same
    name survive as a dead name.

    Conditions: the space's lock is held; as _destroy_receive."""
    if e.type & MACH_PORT_TYPE_SEND:
        # our send right is closed only once the port is destroyed: closed
        # first, it could be the last sender going, and an armed no-senders
        # request would fire, where XNU destroys the port and the request's
        # right with it (a send-once notification)
        cap, e.cap = e.cap, None
        e.type &= ~MACH_PORT_TYPE_SEND
        urefs = e.urefs
        # the name is dead to us now: a dead-name request fires as a
        # dead-name notification (not port-deleted) and holds a reference
        req, e.dnrequest = e.dnrequest, None
        _destroy_receive(space, name, e)
        e.cap = cap
        _drop_cap(space, name, e)
        dn = space.lookup(name)
        if req is not None:
            urefs = min(urefs + 1, MACH_PORT_UREFS_MAX)
        if dn is None:
            space.alloc_name(name, None, MACH_PORT_TYPE_DEAD_NAME, urefs)
        else:
            dn.type, dn.urefs, dn.object = MACH_PORT_TYPE_DEAD_NAME, urefs, None
        if req is not None:
            ipc_notify.dead_name(req, name)  # type: ignore[arg-type]
    else:
        _destroy_receive(space, name, e)


def names(space: IpcSpace) -> tuple[list[int], list[int]]:
    """mach_port_names: every name and its type.

    Conditions: nothing locked, or the space's lock held by this thread;
    takes it."""
    with space.lock:
        out = space.names()
        for n, e in out:
            check_dead(space, n, e)
        return [n for n, _e in out], [e.type for _n, e in out]


# -- copyin / copyout of rights ------------------------------------------------

def copyin_send(space: IpcSpace, name: int, disposition: int, check: bool = True) -> tuple[SendCap, int, bool]:
    """Take the right a message names with ``disposition`` out of the space.

    Returns (capability, received kind, owned): ``owned`` means the caller
    must close the capability once sent. Raises MachError with
    KERN_INVALID_NAME / KERN_INVALID_RIGHT / KERN_INVALID_CAPABILITY; the
    caller maps them to its MACH_SEND_* code. With ``check`` False a port
    that died is not looked for (a message's destination: the send finds
    out).

    Conditions: the space's lock is held, or nothing locked on the message
    path (_kern/ipc_kmsg.py reads the entry without it and, with ``check``,
    turns a dead right into a dead name without it); takes the port's lock
    for MAKE_SEND and MAKE_SEND_ONCE (and under it the watcher's)."""
    e = space.lookup(name)
    if e is None:
        raise _err(K.KERN_INVALID_NAME, f"{name:#x}")
    if check:
        check_dead(space, name, e)
    if disposition in (MD.MACH_MSG_TYPE_COPY_SEND, MD.MACH_MSG_TYPE_MOVE_SEND):
        if not e.type & MACH_PORT_TYPE_SEND:
            raise _err(K.KERN_INVALID_RIGHT if not e.type & MACH_PORT_TYPE_DEAD_NAME
                       else K.KERN_INVALID_CAPABILITY, f"{name:#x} holds no send right")
        cap = e.cap
        if not isinstance(cap, SendCap):
            # a kernel object's port (a memory entry): no message goes to it
            raise _err(K.KERN_INVALID_CAPABILITY, f"{name:#x} names a kernel object")
        return cap, MD.MACH_MSG_TYPE_PORT_SEND, False
    if disposition == MD.MACH_MSG_TYPE_MAKE_SEND:
        port = _receive_of(e, name)
        return port.make_send(), MD.MACH_MSG_TYPE_PORT_SEND, True
    if disposition == MD.MACH_MSG_TYPE_MAKE_SEND_ONCE:
        port = _receive_of(e, name)
        return port.make_send_once(), MD.MACH_MSG_TYPE_PORT_SEND_ONCE, True
    if disposition == MD.MACH_MSG_TYPE_MOVE_SEND_ONCE:
        if not e.type & MACH_PORT_TYPE_SEND_ONCE:
            raise _err(K.KERN_INVALID_RIGHT, f"{name:#x} holds no send-once right")
        cap = e.cap
        assert isinstance(cap, SendOnceCap)
        return cap, MD.MACH_MSG_TYPE_PORT_SEND_ONCE, False
    raise _err(K.KERN_INVALID_VALUE, f"disposition {disposition}")


def _receive_of(e: IpcEntry, name: int) -> Port:
    """Conditions: nothing required; the port stays this name's only while the
    caller holds the space's lock."""
    if not e.type & MACH_PORT_TYPE_RECEIVE:
        raise _err(K.KERN_INVALID_RIGHT, f"{name:#x} holds no receive right")
    port = e.object
    assert isinstance(port, Port)
    return port


def consume_sent(space: IpcSpace, name: int, disposition: int) -> None:
    """After a successful send: MOVE_SEND drops a user reference and
    MOVE_SEND_ONCE the whole right.

    Conditions: nothing locked (the message path). MOVE_SEND takes the
    space's lock: another thread may be copying out a send right to the
    same port under the same name (a reply that brings the right back) and
    adding a reference, and the two counts must not cross. MOVE_SEND_ONCE
    changes the entry without it (space.remove and dealloc_name take it
    for the name alone: a send-once right is never coalesced). Either may
    close the right (the watcher's and the use lock) and send a
    port-deleted notification (never waits: the use lock, or the watcher's
    lock if the send fails)."""
    if disposition == MD.MACH_MSG_TYPE_MOVE_SEND:
        with space.lock:
            e = space.lookup(name)
            if e is not None:
                _release_send(space, name, e)
        return
    e = space.lookup(name)
    if e is None:
        return
    if disposition == MD.MACH_MSG_TYPE_MOVE_SEND_ONCE:
        _drop_cap(space, name, e)
        space.remove(name)  # (dealloc_name inlined: every reply comes here)
        if e.dnrequest is not None:
            req, e.dnrequest = e.dnrequest, None
            ipc_notify.port_deleted(req, name)  # type: ignore[arg-type]


def copyout_send(space: IpcSpace, fds: list[int], send_once: bool) -> int:
    """Install a send (or send-once) right that arrived as ``fds``; returns
    its name. A send right for a connection we already hold, or for a port
    whose receive right we hold, coalesces and its fds are closed.

    Conditions: nothing locked, or the space's lock held by this thread;
    takes it."""
    with space.lock:
        cap_cls = SendOnceCap if send_once else SendCap
        ino = _fstat(fds[0]).st_ino
        if not send_once:
            name = space.name_for(("ino", ino))
            if not name:
                port = ipc_port.LOCAL_SENDS.get(ino)
                if port is not None:
                    name = space.name_for(id(port))
            if name:
                e = space.lookup(name)
                assert e is not None
                if e.type & MACH_PORT_TYPE_SEND:
                    for fd in fds:
                        _close(fd)
                    e.urefs = min(e.urefs + 1, MACH_PORT_UREFS_MAX)
                else:
                    cap = cap_cls.adopt(fds)
                    e.cap = cap
                    e.type |= MACH_PORT_TYPE_SEND
                    e.urefs = 1
                    space.add_key(name, e, ("ino", ino))
                return name
        cap = cap_cls.adopt(fds)
        name, e = space.alloc(cap, MACH_PORT_TYPE_SEND_ONCE if send_once else MACH_PORT_TYPE_SEND,
                              0 if send_once else 1, key=None if send_once else ("ino", ino))
        e.cap = cap
        return name


def copyout_entry(space: IpcSpace, ent: "MemoryEntry | _Keyed", coalesce: bool = False) -> int:
    """Install a send right to a memory entry (or a semaphore: the same
    rules); returns its name.

    A new entry (``coalesce`` False) always gets a fresh name, as each
    mach_make_memory_entry_64 makes a new port. An entry received in a
    message (``coalesce``) joins the name of an entry we hold for the same
    object, range and protection, and ``ent`` is closed: Linux cannot tell
    two such entries apart, so they coalesce on receipt.

    Conditions: nothing locked, or the space's lock held by this thread;
    takes it."""
    with space.lock:
        key = ent.key()
        name = space.name_for(key)
        if name and coalesce:
            e = space.lookup(name)
            assert e is not None
            e.urefs = min(e.urefs + 1, MACH_PORT_UREFS_MAX)
            ent.close()
            return name
        name, e = space.alloc(ent, MACH_PORT_TYPE_SEND, 1, key=None if name else key)
        e.cap = ent
        return name


def copyout_task(space: IpcSpace, fd: int, pid: int, flavor: int, tid: int = 0) -> int:
    """Install a send right to the task port of ``flavor`` (with ``tid``,
    to that thread's port) whose process arrived in a message as the
    pidfd ``fd``, bound to ``pid`` when the record was checked
    (_linux/pidfd.py pid_of). ``fd`` is taken: kept by the new right, or
    closed. Returns the name, or MACH_PORT_DEAD.

    Our own process gives our own task's port of that flavor, under the
    name mach_task_self() (or the flavored port) already has, with one
    more user reference. Another process's task coalesces, as XNU's
    copyout of a send right does, with the one we hold for the same
    process and flavor (the key task_for_pid installs it under). The key
    is the pid, which is only safe because of the order of the checks:
    ``pid`` was read from the received pidfd first, then the task we hold
    under that pid is asked (through its own pidfd) whether its process
    still lives. If it does, it was alive when ``pid`` was read, and a pid
    names one process at a time until that process is reaped: the two
    pidfds are bound to the same process, whatever pids were reused
    before. If it does not, check_dead makes it a dead name (its key
    goes) and the received task gets a name of its own.

    A process that has exited (reaped, a zombie, or in a pid namespace
    we cannot see) or a thread that has exited is a port that died in
    flight: MACH_PORT_DEAD, as XNU's ipc_kmsg_copyout_object gives for a
    dead port.

    Conditions: nothing locked; asks the pidfd and /proc with nothing
    locked, then takes the space's lock (check_dead under it)."""
    try:
        dead = pid <= 0 or pidfd.exited(fd) or (tid > 0 and not pidfd.has_thread(pid, fd, tid))
    except BaseException:
        _close(fd)
        raise
    if dead or (not tid and pid == SELF.task.pid):
        _close(fd)
        return 0xFFFFFFFF if dead else space.insert(SELF.task.flavored(flavor), MACH_PORT_TYPE_SEND)
    key: tuple[object, ...] = ("thread", pid, tid, flavor) if tid else ("task", pid, flavor)
    kept = False  # the new right holds fd
    try:
        with space.lock:
            name = space.name_for(key)
            e = space.lookup(name) if name else None
            if e is not None:
                check_dead(space, name, e)
                if isinstance(e.cap, Task) and e.type & MACH_PORT_TYPE_SEND:
                    e.urefs = min(e.urefs + 1, MACH_PORT_UREFS_MAX)
                    return name
            obj = Thread(pid, tid, fd, flavor) if tid else Task(pid, None, fd, flavor)
            name, e = space.alloc(obj, MACH_PORT_TYPE_SEND, 1, key=key)
            e.cap = obj
            kept = True
            return name
    finally:
        if not kept:  # coalesced, or an error
            _close(fd)


def copyout_reply(space: IpcSpace, rconn: Shared, token: int) -> int:
    """Install a back-channel send-once right (our copy of the sender's
    reply connection, and the request's token); returns its fresh name.

    Conditions: nothing locked; takes the space's lock (alloc), then sets
    the entry's capability without it."""
    cap = ReplyCap(rconn, token)
    name, e = space.alloc(cap, MACH_PORT_TYPE_SEND_ONCE, 0)
    e.cap = cap
    return name


def upgrade_reply(space: IpcSpace, name: int, disposition: int) -> None:
    """Before a back-channel send-once right leaves our space (in a message
    or a notification request), give it a connection of its own.

    Conditions: nothing locked (the message path), or the space's lock
    (request_notification); replaces the entry's capability without taking
    the space's lock; sends without waiting; takes the use lock."""
    if disposition == MD.MACH_MSG_TYPE_MOVE_SEND_ONCE:
        e = space.lookup(name)
        if e is not None and isinstance(e.cap, ReplyCap):
            e.cap = e.cap.upgrade()


def insert_send_of_own_port(space: IpcSpace, name: int, e: IpcEntry) -> None:
    """mach_port_insert_right(name, name, MAKE_SEND) on our own port: the
    name gains a send right (a connection of the port's). KERN_NO_SPACE or
    KERN_RESOURCE_SHORTAGE when its fds cannot be made.

    Conditions: the space's lock is held; takes the port's lock and, under
    it, the watcher's lock."""
    port = _receive_of(e, name)
    if e.type & MACH_PORT_TYPE_SEND:
        e.urefs = min(e.urefs + 1, MACH_PORT_UREFS_MAX)  # saturates, as in XNU
        port.count_make_send()
        return
    try:
        cap = port.make_send()
    except OSError as err:
        raise _no_space(err, "MAKE_SEND") from err
    e.cap = cap
    e.type |= MACH_PORT_TYPE_SEND
    e.urefs = 1
    space.add_key(name, e, ("ino", cap.ino))


def insert_right(space: IpcSpace, name: int, poly: int, disposition: int) -> None:
    """mach_port_insert_right: give ``name`` a right to the port named
    ``poly``, made from it with ``disposition``, in XNU's order
    (osfmk/ipc/mach_kernelrpc.c _kernelrpc_mach_port_insert_right_trap).

    MAKE_SEND and COPY_SEND with ``name == poly`` add a send reference to
    the name (ipc_object_insert_send_right). Any other call first copies
    the right in from ``poly`` as a message would (ipc_right_copyin), then
    copies it out under ``name`` (mach_port_insert_right,
    ipc_object_copyout_name): the name is checked as
    ipc_entry_alloc_name checks it, a port already named here under
    another name is KERN_RIGHT_EXISTS, a name holding other rights
    KERN_NAME_EXISTS, and a free name gets the right (a send-once right, or
    a right moved from ``poly`` under its new name). When the copyout
    fails, the right copied in is destroyed, as XNU destroys it: a moved
    reference is lost, a moved receive right is destroyed, a made send-once
    right fires its send-once notification.

    KERN_INVALID_NAME, KERN_INVALID_RIGHT, KERN_INVALID_VALUE,
    KERN_INVALID_CAPABILITY (a dead name), KERN_NO_SPACE, KERN_FAILURE,
    KERN_NAME_EXISTS, KERN_RIGHT_EXISTS; KERN_NO_SPACE or
    KERN_RESOURCE_SHORTAGE when a right's fds cannot be made.

    Conditions: nothing locked; takes the space's lock and, under it, the
    port's lock (and the watcher's under that), the sets' locks for a moved
    receive right; may send a notification without waiting."""
    with space.lock:
        e = space.lookup(poly)
        if e is None:
            raise _err(K.KERN_INVALID_NAME, f"{poly:#x}")
        if not MD.MACH_MSG_TYPE_MOVE_RECEIVE <= disposition <= MD.MACH_MSG_TYPE_MAKE_SEND_ONCE:
            raise _err(K.KERN_INVALID_RIGHT, f"disposition {disposition}")
        check_dead(space, poly, e)
        if name == poly and disposition in (MD.MACH_MSG_TYPE_MAKE_SEND, MD.MACH_MSG_TYPE_COPY_SEND):
            if e.type & MACH_PORT_TYPE_DEAD_NAME:
                raise _err(K.KERN_INVALID_CAPABILITY, f"{poly:#x} is a dead name")
            if disposition == MD.MACH_MSG_TYPE_MAKE_SEND:
                insert_send_of_own_port(space, name, e)
            elif not e.type & MACH_PORT_TYPE_SEND:
                raise _err(K.KERN_INVALID_RIGHT, f"{poly:#x} holds no send right")
            else:
                e.urefs = min(e.urefs + 1, MACH_PORT_UREFS_MAX)
            return
        _insert_copied_in(space, name, poly, e, disposition)


_NEEDS: Final = {
    MD.MACH_MSG_TYPE_MOVE_RECEIVE: MACH_PORT_TYPE_RECEIVE,
    MD.MACH_MSG_TYPE_MAKE_SEND: MACH_PORT_TYPE_RECEIVE,
    MD.MACH_MSG_TYPE_MAKE_SEND_ONCE: MACH_PORT_TYPE_RECEIVE,
    MD.MACH_MSG_TYPE_COPY_SEND: MACH_PORT_TYPE_SEND,
    MD.MACH_MSG_TYPE_MOVE_SEND: MACH_PORT_TYPE_SEND,
    MD.MACH_MSG_TYPE_MOVE_SEND_ONCE: MACH_PORT_TYPE_SEND_ONCE,
}


def _insert_copied_in(space: IpcSpace, name: int, poly: int, e: IpcEntry, disposition: int) -> None:
    """insert_right past the fast path: ipc_right_copyin's checks, then
    mach_port_insert_right's and ipc_object_copyout_name's.

    Conditions: the space's lock is held; as insert_right."""
    dead_ok = disposition in (MD.MACH_MSG_TYPE_COPY_SEND, MD.MACH_MSG_TYPE_MOVE_SEND,
                              MD.MACH_MSG_TYPE_MOVE_SEND_ONCE)
    if e.type & MACH_PORT_TYPE_DEAD_NAME and dead_ok:
        # ipc_right_copyin gives MACH_PORT_DEAD (a move takes a reference
        # of the dead name), and the copyout refuses it
        if disposition != MD.MACH_MSG_TYPE_COPY_SEND:
            _release_send(space, poly, e)
        if name in (0, 0xFFFFFFFF):
            raise _err(K.KERN_INVALID_VALUE, "the name must be valid")
        raise _err(K.KERN_INVALID_CAPABILITY, f"{poly:#x} is a dead name")
    if not e.type & _NEEDS[disposition]:
        raise _err(K.KERN_INVALID_RIGHT, f"{poly:#x} lacks the right disposition {disposition} needs")
    # after the copyin, does the space still name the port (ipc_right_reverse)?
    if disposition == MD.MACH_MSG_TYPE_MOVE_SEND:
        stays = e.urefs > 1 or bool(e.type & MACH_PORT_TYPE_RECEIVE)
    elif disposition == MD.MACH_MSG_TYPE_MOVE_RECEIVE:
        stays = bool(e.type & MACH_PORT_TYPE_SEND)
    else:
        stays = disposition in (MD.MACH_MSG_TYPE_MAKE_SEND, MD.MACH_MSG_TYPE_COPY_SEND)
    try:
        if name in (0, 0xFFFFFFFF):
            raise _err(K.KERN_INVALID_VALUE, "the name must be valid")
        held = space.check_name(name)
        if stays and held is not e:
            raise _err(K.KERN_RIGHT_EXISTS, f"{poly:#x} already names this port")
        if not stays and held is not None and (held is not e or disposition == MD.MACH_MSG_TYPE_MAKE_SEND_ONCE):
            raise _err(K.KERN_NAME_EXISTS, f"{name:#x} holds other rights")
    except K.MachError:
        _destroy_copied_in(space, poly, e, disposition)
        raise
    if disposition == MD.MACH_MSG_TYPE_MAKE_SEND_ONCE:
        try:
            cap = _receive_of(e, poly).make_send_once()
        except OSError as err:
            raise _no_space(err, "MAKE_SEND_ONCE") from err
        try:
            so = space.alloc_name(name, cap, MACH_PORT_TYPE_SEND_ONCE, 0)
        except K.MachError:
            cap.close()  # released unused: the send-once notification
            raise
        so.cap = cap
        return
    if disposition == MD.MACH_MSG_TYPE_MOVE_RECEIVE:
        _clear_receiver(_receive_of(e, poly))
    if held is not e:
        # MOVE_SEND of the last reference, MOVE_SEND_ONCE, or MOVE_RECEIVE
        # of a receive-only name: the right leaves ``poly`` and comes back
        # as ``name``
        try:
            _rename(space, poly, e, name)
        except K.MachError:
            _destroy_copied_in(space, poly, e, disposition)  # a name kept for the bootstrap port
            raise
    # else it leaves and comes back under the same name


def _clear_receiver(port: Port) -> None:
    """A receive right copied in: ipc_port_clear_receiver resets its
    make-send count and sequence number and takes it out of its sets.

    Conditions: the space's lock is held; takes the sets' locks; resets the
    counts under the space's lock only."""
    port.mscount = port.seqno = 0
    for pset in list(port.sets):
        assert isinstance(pset, PortSet)
        pset.remove(port)


def _destroy_copied_in(space: IpcSpace, poly: int, e: IpcEntry, disposition: int) -> None:
    """The copyout of insert_right failed: the right copied in from ``poly``
    is destroyed (the trap's ipc_object_destroy).

    Conditions: the space's lock is held; as _destroy_receive_keep_sends; may
    send a notification without waiting."""
    if disposition == MD.MACH_MSG_TYPE_MAKE_SEND:
        port = _receive_of(e, poly)
        try:
            port.make_send().close()  # made (mscount) and released (no-senders)
        except (OSError, K.MachError):
            port.count_make_send()
    elif disposition == MD.MACH_MSG_TYPE_MAKE_SEND_ONCE:
        try:
            _receive_of(e, poly).make_send_once().close()  # a send-once notification
        except (OSError, K.MachError):
            pass
    elif disposition == MD.MACH_MSG_TYPE_MOVE_SEND:
        _release_send(space, poly, e)
    elif disposition == MD.MACH_MSG_TYPE_MOVE_SEND_ONCE:
        _drop_cap(space, poly, e)
        dealloc_name(space, poly)
    elif disposition == MD.MACH_MSG_TYPE_MOVE_RECEIVE:
        _destroy_receive_keep_sends(space, poly, e)


# -- port sets -------------------------------------------------------------------

def _member_and_set(space: IpcSpace, member: int, pset_name: int) -> tuple[Port, PortSet]:
    """Conditions: the space's lock is held."""
    if member in (0, 0xFFFFFFFF) or pset_name in (0, 0xFFFFFFFF):
        raise _err(K.KERN_INVALID_RIGHT, "null or dead name")
    port = _receive_of(space.lookup_right(member, MACH_PORT_TYPE_RECEIVE), member)
    se = space.lookup_right(pset_name, MACH_PORT_TYPE_PORT_SET)
    assert isinstance(se.object, PortSet)
    return port, se.object


def insert_member(space: IpcSpace, member: int, pset_name: int) -> None:
    """mach_port_insert_member. KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_ALREADY_IN_SET. A port may be a member of several sets.

    Conditions: nothing locked; takes the space's lock and, under it, the
    set's lock."""
    with space.lock:
        port, pset = _member_and_set(space, member, pset_name)
        pset.add(port)


def extract_member(space: IpcSpace, member: int, pset_name: int) -> None:
    """mach_port_extract_member. KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_NOT_IN_SET.

    Conditions: nothing locked; takes the space's lock and, under it, the
    set's lock."""
    with space.lock:
        port, pset = _member_and_set(space, member, pset_name)
        pset.remove(port)


def move_member(space: IpcSpace, member: int, after: int) -> None:
    """mach_port_move_member: into ``after`` and out of every other set;
    ``after`` MACH_PORT_NULL leaves all sets. KERN_INVALID_NAME,
    KERN_INVALID_RIGHT, KERN_NOT_IN_SET.

    Conditions: nothing locked; takes the space's lock and, under it, the
    sets' locks."""
    with space.lock:
        if member in (0, 0xFFFFFFFF) or after == 0xFFFFFFFF:
            raise _err(K.KERN_INVALID_RIGHT, "null or dead name")
        port = _receive_of(space.lookup_right(member, MACH_PORT_TYPE_RECEIVE), member)
        target: PortSet | None = None
        if after:
            se = space.lookup_right(after, MACH_PORT_TYPE_PORT_SET)
            assert isinstance(se.object, PortSet)
            target = se.object
        elif not port.sets:
            raise _err(K.KERN_NOT_IN_SET, f"{member:#x} is in no set")
        if target is not None and target not in port.sets:
            target.add(port)
        for other in list(port.sets):
            if other is not target:
                assert isinstance(other, PortSet)
                other.remove(port)


# -- attributes ------------------------------------------------------------------

def receive_port(space: IpcSpace, name: int) -> Port:
    """The Port behind a name that holds the receive right.
    KERN_INVALID_RIGHT for null/dead names or other rights, KERN_INVALID_NAME.

    Conditions: nothing required; the port stays this name's only while the
    caller holds the space's lock."""
    if name in (0, 0xFFFFFFFF):
        raise _err(K.KERN_INVALID_RIGHT, "null or dead name")
    return _receive_of(space.lookup_right(name, MACH_PORT_TYPE_RECEIVE), name)


# <mach/port.h>: the flavors of mach_port_get_attributes / set_attributes
MACH_PORT_LIMITS_INFO: Final = 1
MACH_PORT_RECEIVE_STATUS: Final = 2
MACH_PORT_DNREQUESTS_SIZE: Final = 3


def get_attributes(space: IpcSpace, name: int, flavor: int) -> list[int]:
    """mach_port_get_attributes: the natural_t words of ``flavor`` for the
    receive right ``name``: [qlimit] (MACH_PORT_LIMITS_INFO), the ten of a
    mach_port_status_t (MACH_PORT_RECEIVE_STATUS), [0]
    (MACH_PORT_DNREQUESTS_SIZE: no table to size). None at all for
    MACH_PORT_NULL and MACH_PORT_DEAD, except with MACH_PORT_RECEIVE_STATUS
    (osfmk/ipc/mach_port.c: mach_port_get_attributes).

    KERN_INVALID_ARGUMENT (another flavor), KERN_INVALID_NAME,
    KERN_INVALID_RIGHT.

    Conditions: nothing locked; takes the port's lock (live_rights,
    msgcount: under it it tries the port's receive lock without waiting,
    and takes the use and the watcher's lock); reads the other fields
    without a lock."""
    if flavor not in (MACH_PORT_LIMITS_INFO, MACH_PORT_RECEIVE_STATUS, MACH_PORT_DNREQUESTS_SIZE):
        raise _err(K.KERN_INVALID_ARGUMENT, f"flavor {flavor}")
    if name in (0, 0xFFFFFFFF) and flavor != MACH_PORT_RECEIVE_STATUS:
        return []
    port = receive_port(space, name)
    if flavor == MACH_PORT_LIMITS_INFO:
        return [port.qlimit]
    if flavor == MACH_PORT_DNREQUESTS_SIZE:
        return [0]
    srights, sorights = port.live_rights()
    return [1 if port.sets else 0, port.seqno, port.mscount, port.qlimit, port.msgcount(),
            sorights, 1 if srights else 0, 1 if port.pdrequest else 0,
            1 if port.nsrequest else 0, status_flags(port)]


def check_attributes(flavor: int, value: int) -> None:
    """The value mach_port_set_attributes would set: a qlimit
    (MACH_PORT_LIMITS_INFO) at most MACH_PORT_QLIMIT_MAX.

    KERN_INVALID_ARGUMENT (a flavor that cannot be set),
    KERN_INVALID_VALUE."""
    if flavor not in (MACH_PORT_LIMITS_INFO, MACH_PORT_DNREQUESTS_SIZE):
        raise _err(K.KERN_INVALID_ARGUMENT, f"flavor {flavor}")
    if flavor == MACH_PORT_LIMITS_INFO and value > MACH_PORT_QLIMIT_MAX:
        raise _err(K.KERN_INVALID_VALUE, f"qlimit {value}")


def set_attributes(space: IpcSpace, name: int, flavor: int, value: int) -> None:
    """mach_port_set_attributes: set the qlimit of the receive right
    ``name`` (MACH_PORT_LIMITS_INFO; raising it wakes blocked senders);
    MACH_PORT_DNREQUESTS_SIZE only checks the right.

    KERN_INVALID_ARGUMENT, KERN_INVALID_VALUE (see check_attributes),
    KERN_INVALID_NAME, KERN_INVALID_RIGHT.

    Conditions: nothing locked; takes the port's lock (set_qlimit)."""
    check_attributes(flavor, value)
    port = receive_port(space, name)
    if flavor == MACH_PORT_LIMITS_INFO:
        port.set_qlimit(value)


def set_mscount(space: IpcSpace, name: int, mscount: int) -> None:
    """mach_port_set_mscount. KERN_INVALID_NAME, KERN_INVALID_RIGHT.

    Conditions: nothing locked; takes the space's lock and sets the port's
    make-send count under it (not under the port's lock)."""
    with space.lock:
        receive_port(space, name).mscount = mscount & 0xFFFFFFFF


def construct(space: IpcSpace, flags: int, qlimit: int, context: int, service_name: int = 0) -> int:
    """mach_port_construct: a receive right with options, checked in the
    order of XNU's mach_port_construct. ``service_name`` is the options'
    service_port_name (MPO_CONNECTION_PORT).

    KERN_INVALID_ARGUMENT (two flags of a kind that allows one, or
    MPO_CONNECTION_PORT without a service name), KERN_DENIED
    (MPO_TG_BLOCK_TRACKING, MPO_SERVICE_PORT: launchd's and the graphics
    server's), KERN_INVALID_NAME (MPO_CONNECTION_PORT with MACH_PORT_DEAD),
    KERN_NOT_SUPPORTED (the reply-port and exception-port kinds),
    KERN_INVALID_VALUE (qlimit above MACH_PORT_QLIMIT_MAX), KERN_NO_SPACE.

    Conditions: nothing locked; takes the space's lock and, under it, the
    port's lock (and, if inserting the send right fails, as
    _destroy_receive)."""
    one = flags & (ipc_space.MPO_SERVICE_PORT | ipc_space.MPO_CONNECTION_PORT | ipc_space.MPO_TG_BLOCK_TRACKING)
    if one & (one - 1):
        raise _err(K.KERN_INVALID_ARGUMENT, "at most one of SERVICE_PORT, CONNECTION_PORT, TG_BLOCK_TRACKING")
    one = flags & (ipc_space.MPO_REPLY_PORT | ipc_space.MPO_ENFORCE_REPLY_PORT_SEMANTICS | ipc_space.MPO_EXCEPTION_PORT
                   | ipc_space.MPO_PROVISIONAL_REPLY_PORT)
    if one & (one - 1):
        raise _err(K.KERN_INVALID_ARGUMENT, "at most one of the reply and exception port kinds")
    if one:
        # reply-port semantics (a receive right that never moves, answered
        # only through MAKE_SEND_ONCE) and hardened exception ports are not
        # provided (docs/deviations.md)
        raise _err(K.KERN_NOT_SUPPORTED, f"port kind {one:#x}")
    if flags & (ipc_space.MPO_TG_BLOCK_TRACKING | ipc_space.MPO_SERVICE_PORT):
        # XNU allows them to the graphics server's role and to launchd
        raise _err(K.KERN_DENIED, "only the graphics server or launchd may make such a port")
    if flags & ipc_space.MPO_CONNECTION_PORT:
        if not service_name:
            raise _err(K.KERN_INVALID_ARGUMENT, "a connection port without a service port")
        if service_name == 0xFFFFFFFF:
            raise _err(K.KERN_INVALID_NAME, f"{service_name:#x}")
        # without a message filter (the sandbox's) XNU derives no label:
        # the port is an ordinary one (ipc_service_port_derive_sblabel)
    if flags & MPO_QLIMIT and qlimit > MACH_PORT_QLIMIT_MAX:
        raise _err(K.KERN_INVALID_VALUE, f"qlimit {qlimit}")
    with space.lock:
        try:
            port = Port()
        except OSError as err:
            raise _no_space(err, "mach_port_construct") from err
        if flags & MPO_QLIMIT:
            port.set_qlimit(qlimit)
        if flags & (ipc_space.MPO_IMPORTANCE_RECEIVER | ipc_space.MPO_DENAP_RECEIVER | ipc_space.MPO_TEMPOWNER):
            port.impdonation = True
            if flags & ipc_space.MPO_TEMPOWNER:
                port.tempowner = True
        port.context = context
        # (a flag left False is the class's: a port keeps few attributes of its own)
        if flags & MPO_CONTEXT_AS_GUARD:
            port.guarded = True
            if flags & ipc_space.MPO_STRICT:
                port.strict_guard = True
            if flags & ipc_space.MPO_IMMOVABLE_RECEIVE:
                port.immovable = True
        name, e = space.alloc(port, MACH_PORT_TYPE_RECEIVE, 0, key=id(port))
        if flags & MPO_INSERT_SEND_RIGHT:
            try:
                insert_send_of_own_port(space, name, e)
            except K.MachError:
                _destroy_receive(space, name, e)  # nothing half made is left behind
                dealloc_name(space, name)
                raise
        return name


def destruct(space: IpcSpace, name: int, srdelta: int, guard: int) -> None:
    """mach_port_destruct: drop ``-srdelta`` send references, then the
    receive right. KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_INVALID_VALUE, KERN_INVALID_ARGUMENT (wrong guard).

    Conditions: nothing locked, or the space's lock held by this thread;
    takes it; under it as _destroy_receive."""
    if name in (0, 0xFFFFFFFF):
        raise _err(K.KERN_INVALID_NAME, f"{name:#x}")
    with space.lock:
        e = space.lookup_right(name, MACH_PORT_TYPE_RECEIVE)
        port = _receive_of(e, name)
        if srdelta and not e.type & MACH_PORT_TYPE_SEND:
            raise _err(K.KERN_INVALID_RIGHT, f"{name:#x} holds no send right")
        if srdelta > 0:
            raise _err(K.KERN_INVALID_VALUE, f"srdelta {srdelta}")
        if port.guarded and guard != port.context:
            raise _err(K.KERN_INVALID_ARGUMENT, "the guard does not match")
        if -srdelta > e.urefs:
            raise _err(K.KERN_INVALID_VALUE, f"srdelta {srdelta}")
        if srdelta:
            _release_send(space, name, e, -srdelta)
            e = space.lookup(name)  # type: ignore[assignment]
            assert e is not None
        _destroy_receive_keep_sends(space, name, e)


def extract_right(space: IpcSpace, name: int, msgt_name: int) -> tuple[int, int]:
    """mach_port_extract_right within our own space: the right is taken out
    and given back, coalescing as a message would. Returns (name, type).
    KERN_INVALID_VALUE, KERN_INVALID_RIGHT, KERN_INVALID_NAME.

    Conditions: nothing locked; takes the space's lock and, under it, the
    sets' and the port's locks; resets the port's counts under the space's
    lock only."""
    if not MD.MACH_MSG_TYPE_MOVE_RECEIVE <= msgt_name <= MD.MACH_MSG_TYPE_MAKE_SEND_ONCE:
        raise _err(K.KERN_INVALID_VALUE, f"disposition {msgt_name}")
    if name in (0, 0xFFFFFFFF):
        raise _err(K.KERN_INVALID_RIGHT, f"{name:#x}")
    with space.lock:
        e = space.lookup(name)
        if e is None:
            raise _err(K.KERN_INVALID_NAME, f"{name:#x}")
        check_dead(space, name, e)
        if e.type & MACH_PORT_TYPE_DEAD_NAME and msgt_name in (
                MD.MACH_MSG_TYPE_COPY_SEND, MD.MACH_MSG_TYPE_MOVE_SEND, MD.MACH_MSG_TYPE_MOVE_SEND_ONCE):
            if msgt_name != MD.MACH_MSG_TYPE_COPY_SEND:
                _release_send(space, name, e)
            kind = (MD.MACH_MSG_TYPE_PORT_SEND_ONCE if msgt_name == MD.MACH_MSG_TYPE_MOVE_SEND_ONCE
                    else MD.MACH_MSG_TYPE_PORT_SEND)
            return 0xFFFFFFFF, kind
        if msgt_name == MD.MACH_MSG_TYPE_MOVE_RECEIVE:
            port = _receive_of(e, name)
            if port.immovable:
                raise _err(K.KERN_INVALID_CAPABILITY, f"{name:#x}: an immovable receive right")
            # the right leaves and comes back: ipc_port_clear_receiver resets
            # it, and a receive-only entry is freed and named anew
            port.mscount = port.seqno = 0
            clear_guard(port)
            for pset in list(port.sets):
                assert isinstance(pset, PortSet)
                pset.remove(port)
            if e.type & MACH_PORT_TYPE_SEND:
                return name, MD.MACH_MSG_TYPE_PORT_RECEIVE
            return _rename(space, name, e), MD.MACH_MSG_TYPE_PORT_RECEIVE
        if msgt_name == MD.MACH_MSG_TYPE_MAKE_SEND:
            insert_send_of_own_port(space, name, e)
            return name, MD.MACH_MSG_TYPE_PORT_SEND
        if msgt_name in (MD.MACH_MSG_TYPE_COPY_SEND, MD.MACH_MSG_TYPE_MOVE_SEND):
            if not e.type & MACH_PORT_TYPE_SEND:
                raise _err(K.KERN_INVALID_RIGHT, f"{name:#x} holds no send right")
            if msgt_name == MD.MACH_MSG_TYPE_COPY_SEND:
                e.urefs = min(e.urefs + 1, MACH_PORT_UREFS_MAX)
            return name, MD.MACH_MSG_TYPE_PORT_SEND
        if msgt_name == MD.MACH_MSG_TYPE_MAKE_SEND_ONCE:
            try:
                cap = _receive_of(e, name).make_send_once()
            except OSError as err:
                raise _no_space(err, "MAKE_SEND_ONCE") from err
            so_name, so = space.alloc(cap, MACH_PORT_TYPE_SEND_ONCE, 0)
            so.cap = cap
            return so_name, MD.MACH_MSG_TYPE_PORT_SEND_ONCE
        if not e.type & MACH_PORT_TYPE_SEND_ONCE:
            raise _err(K.KERN_INVALID_RIGHT, f"{name:#x} holds no send-once right")
        return _rename(space, name, e), MD.MACH_MSG_TYPE_PORT_SEND_ONCE


def _rename(space: IpcSpace, name: int, e: IpcEntry, new: int = 0) -> int:
    """Free ``name`` and install its rights under ``new`` (a free name, taken
    first: if it cannot be had, nothing has changed), or under a fresh name
    (the freed index comes back first, at the next generation). A dead-name
    request goes with the rights.

    Conditions: the space's lock is held."""
    obj, typ, urefs, cap, keys, dn = e.object, e.type, e.urefs, e.cap, list(e.keys), e.dnrequest
    ne = space.alloc_name(new, obj, typ, urefs) if new else None
    e.dnrequest = None
    dealloc_name(space, name)
    if ne is None:
        new, ne = space.alloc(obj, typ, urefs)
    ne.cap, ne.dnrequest = cap, dn
    for k in keys:
        space.add_key(new, ne, k)
    return new


# -- notification requests ---------------------------------------------------------

def request_notification(space: IpcSpace, name: int, msgid: int, sync: int, notify: int,
                         notify_disp: int) -> int:
    """mach_port_request_notification; returns the name of the previous
    notify right (a send-once right) or MACH_PORT_NULL.

    KERN_INVALID_VALUE (unknown id; sync for PORT_DESTROYED),
    KERN_INVALID_CAPABILITY (notify is MACH_PORT_DEAD), KERN_INVALID_NAME,
    KERN_INVALID_RIGHT, KERN_INVALID_ARGUMENT (dead-name request on a name
    that is already dead), KERN_FAILURE (port-destroyed already armed),
    MIG_TYPE_ERROR (notify not given as a send-once right).

    Conditions: nothing locked; takes the space's lock and, under it, the
    port's lock (trying its receive lock without waiting), the watcher's and
    the use lock; may send a notification at once (never waits: the use
    lock, or the watcher's lock if the send fails)."""
    with space.lock:
        if notify == 0xFFFFFFFF:
            raise _err(K.KERN_INVALID_CAPABILITY, "the notify port is dead")
        cap: SendOnceCap | None = None
        if notify:
            if notify_disp not in (MD.MACH_MSG_TYPE_MAKE_SEND_ONCE, MD.MACH_MSG_TYPE_MOVE_SEND_ONCE):
                raise _err(K.MIG_TYPE_ERROR, "the notify right must be a send-once right")
            upgrade_reply(space, notify, notify_disp)
            c, _kind, owned = copyin_send(space, notify, notify_disp)
            assert isinstance(c, SendOnceCap)
            if notify_disp == MD.MACH_MSG_TYPE_MOVE_SEND_ONCE:
                e = space.lookup(notify)
                assert e is not None
                e.cap = None  # the right moves into the request
                dealloc_name(space, notify)
            cap = c
        try:
            prev = _request(space, name, msgid, sync, cap)
        except BaseException:
            if cap is not None:
                cap.close()  # released unused: a send-once notification
            raise
        if prev is None:
            return 0
        pname, pe = space.alloc(prev, MACH_PORT_TYPE_SEND_ONCE, 0)
        pe.cap = prev
        return pname


def _request(space: IpcSpace, name: int, msgid: int, sync: int, cap: "SendOnceCap | None") -> "SendOnceCap | None":
    """Conditions: the space's lock is held; takes the port's lock (no-senders)
    or the watcher's lock (dead-name); may send a notification at once (never
    waits: the use lock, or the watcher's lock if the send fails)."""
    if msgid == ipc_notify.MACH_NOTIFY_PORT_DESTROYED:
        if sync:
            raise _err(K.KERN_INVALID_VALUE, "sync must be 0 for port-destroyed")
        port = receive_port(space, name)
        if port.pdrequest is not None:
            raise _err(K.KERN_FAILURE, "a port-destroyed request is already armed")
        port.pdrequest = cap
        return None
    if msgid == ipc_notify.MACH_NOTIFY_NO_SENDERS:
        return receive_port(space, name).request_no_senders(cap, sync)
    if msgid == ipc_notify.MACH_NOTIFY_DEAD_NAME:
        if name in (0, 0xFFFFFFFF):
            raise _err(K.KERN_INVALID_ARGUMENT, "null or dead name")
        e = space.lookup(name)
        if e is None:
            raise _err(K.KERN_INVALID_NAME, f"{name:#x}")
        if cap is None and e.dnrequest is None:
            return None
        check_dead(space, name, e)
        if e.type & MACH_PORT_TYPE_DEAD_NAME:
            if sync and cap is not None:
                # the man page's rule: with sync the notification fires at
                # once, and holds a reference of the dead name
                e.urefs = min(e.urefs + 1, MACH_PORT_UREFS_MAX)
                ipc_notify.dead_name(cap, name)
                return e.dnrequest  # type: ignore[return-value]
            raise _err(K.KERN_INVALID_ARGUMENT, f"{name:#x} is already dead")
        if not e.type & (MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_SEND_ONCE | MACH_PORT_TYPE_RECEIVE):
            raise _err(K.KERN_INVALID_RIGHT, f"{name:#x} holds no port right")
        prev = e.dnrequest
        e.dnrequest = cap
        send = e.cap
        if cap is not None and isinstance(send, SendCap) and not e.type & MACH_PORT_TYPE_RECEIVE:
            ipc_notify.WATCHER.watch(send.sock.fileno(), epoll.EPOLLHUP | epoll.EPOLLERR,
                          lambda: _port_died(space, name, e))
        return prev  # type: ignore[return-value]
    raise _err(K.KERN_INVALID_VALUE, f"notification id {msgid}")


def _port_died(space: IpcSpace, name: int, e: IpcEntry) -> None:
    """Watcher thread: a send right with a dead-name request lost its port.

    Conditions: the watcher thread, nothing locked; takes the space's lock."""
    with space.lock:
        if space.lookup(name) is e:
            check_dead(space, name, e)


# -- moving receive rights ------------------------------------------------------------

def copyin_receive(space: IpcSpace, name: int, dest: object) -> Port:
    """The Port a MOVE_RECEIVE descriptor names. MACH_SEND_INVALID_RIGHT when
    the name holds no receive right, or when the message is addressed to
    that very port (a receive right must not travel inside its own port).

    Conditions: nothing locked (the message path); reads the entry without
    the space's lock."""
    e = space.lookup(name)
    if e is None or not e.type & MACH_PORT_TYPE_RECEIVE:
        raise _err(K.MACH_SEND_INVALID_RIGHT, f"{name:#x} holds no receive right")
    port = e.object
    assert isinstance(port, Port)
    if isinstance(dest, SendCap) and (ipc_port.LOCAL_SENDS.get(dest.ino) is port or dest is e.cap):
        raise _err(K.MACH_SEND_INVALID_RIGHT, "a receive right cannot be sent to its own port")
    if port.immovable:
        # ipc_right_copyin: KERN_INVALID_CAPABILITY (and EXC_GUARD kGUARD_EXC_IMMOVABLE)
        raise _err(K.MACH_SEND_INVALID_RIGHT, f"{name:#x}: an immovable receive right")
    return port


def consume_receive(space: IpcSpace, name: int, port: Port) -> None:
    """After the send: the receive right is gone from our space. Send
    rights under the same name stay (the port lives on elsewhere).

    Conditions: nothing locked, or the space's lock held by this thread;
    takes it and, under it, the sets' and the port's locks (moved_away)."""
    with space.lock:
        e = space.lookup(name)
        if e is None or e.object is not port:
            return
        for pset in list(port.sets):
            assert isinstance(pset, PortSet)
            pset.remove(port)
        for k in list(e.keys):
            if k == id(port):
                space._by_key.pop(k, None)
                e.keys.remove(k)
        port.moved_away()
        e.type &= ~MACH_PORT_TYPE_RECEIVE
        if e.type & MACH_PORT_TYPE_SEND:
            e.object = e.cap
        else:
            dealloc_name(space, name)


def destroy_carried_receive(space: IpcSpace, name: int, port: Port) -> None:
    """A receive right carried in a message to a kernel object that keeps
    nothing: it is destroyed with the message, as mach_port_mod_refs(RECEIVE,
    -1) destroys it (send rights under the name become a dead name).

    Conditions: nothing locked; takes the space's lock; under it as
    _destroy_receive_keep_sends."""
    with space.lock:
        e = space.lookup(name)
        if e is not None and e.object is port:
            _destroy_receive_keep_sends(space, name, e)


def copyout_receive(space: IpcSpace, port: Port) -> int:
    """Install a receive right that arrived in a message. As XNU's
    ipc_right_copyout does for MACH_MSG_TYPE_PORT_RECEIVE, it joins the
    name under which we hold send rights to the same port (the entry gets
    the receive right too, its user references kept), or takes a new name.

    Sameness is proven by the kernel (sockdiag): a send right of ours is to
    this port when its sending end is the peer of one of the port's
    receiving ends. Every sending end so proven is entered in LOCAL_SENDS,
    so that a send right over one of those connections that arrives later
    joins the receive right's name (copyout_send).

    Conditions: nothing locked, or the space's lock; the port is new and
    not yet shared with another thread (but for the watcher); takes the
    port's lock, then the space's lock and, under it, the port's lock."""
    with port.lock:  # (the watcher drops an end that reads EOF under it)
        ends = {files.inode(fd): fd for fd, (_sock, once) in port.ends.items() if not once}
    senders = sockdiag.peers(ends)  # our end's inode -> the sending end's
    with space.lock:
        joined = 0
        for rx_ino, tx_ino in senders.items():
            with port.lock:
                if ends[rx_ino] in port.ends:  # (not read EOF meanwhile)
                    ipc_port.LOCAL_SENDS[tx_ino] = port
                    port.local_inos[ends[rx_ino]] = tx_ino
            name = space.name_for(("ino", tx_ino))
            if name and not joined:
                e = space.lookup(name)
                if e is not None and e.type & MACH_PORT_TYPE_SEND and not e.type & MACH_PORT_TYPE_RECEIVE:
                    e.object = port
                    e.type |= MACH_PORT_TYPE_RECEIVE
                    space.add_key(name, e, id(port))
                    joined = name
        if joined:
            return joined
        return space.alloc(port, MACH_PORT_TYPE_RECEIVE, 0, key=id(port))[0]


def send_once_target(space: IpcSpace, name: int, receivers: list[int]) -> int:
    """Which of the receive rights ``receivers`` (names in ``space``) the
    send-once right ``name`` sends to: its name, or 0 for none of them
    (or when ``name`` is not a send-once right).

    Sameness is proven by the kernel (sockdiag), as copyout_receive does:
    a send-once right is a connection of its own, whose receiving end the
    port keeps; the right goes to the port when its sending end is the
    peer of one of those ends. (A send-once right that travels over a
    reply connection is matched by none: 0.)

    Conditions: nothing locked; takes the space's lock, then under it
    each port's lock in turn."""
    ends: dict[int, int] = {}
    with space.lock:
        e = space.lookup(name)
        if e is None or not e.type & MACH_PORT_TYPE_SEND_ONCE or not isinstance(e.object, SendOnceCap) \
                or isinstance(e.object, ReplyCap):
            return 0
        tx = e.object.ino
        for r in receivers:
            re = space.lookup(r)
            if re is None or not isinstance(re.object, Port):
                continue
            port = re.object
            with port.lock:
                for fd, (_sock, once) in port.ends.items():
                    if once:
                        ends[files.inode(fd)] = r
    if not ends:
        return 0
    for rx, peer in sockdiag.peers(ends).items():
        if peer == tx:
            return ends[rx]
    return 0


def _send_port_destroyed(space: IpcSpace, name: int, e: IpcEntry, port: Port) -> bool:
    """A receive right with a port-destroyed request is not destroyed: it
    travels to the request's port, with its queue, its make-send count and
    sequence number reset (as ipc_port_clear_receiver does). Returns False
    when the notify port is gone, and the right is destroyed after all.

    Conditions: the space's lock is held; takes the port's lock
    (pack_for_move, which never waits), sends the notification without
    waiting, then as consume_receive. Resets the port's counts under the
    space's lock only."""
    cap = port.pdrequest
    assert cap is not None
    port.pdrequest = None
    port.mscount = port.seqno = 0
    fds, packing, aux = port.pack_for_move()
    if not ipc_notify.port_destroyed(cap, fds, packing, aux):
        return False
    consume_receive(space, name, port)
    return True


# -- guards (osfmk/ipc/mach_port.c: mach_port_guard_locked and its callers) -------
#
# XNU raises EXC_GUARD (mach_port_guard_exception) on each violation below
# and returns the code; pymach returns the code only (docs/deviations.md).

def status_flags(port: Port) -> int:
    """mps_flags of mach_port_status_t, as XNU's mach_port_get_attributes."""
    flags = 0
    if port.impdonation:
        flags |= ipc_space.MACH_PORT_STATUS_FLAG_IMP_DONATION
        if port.tempowner:
            flags |= ipc_space.MACH_PORT_STATUS_FLAG_TEMPOWNER
    if port.guarded:
        flags |= ipc_space.MACH_PORT_STATUS_FLAG_GUARDED
        if port.strict_guard:
            flags |= ipc_space.MACH_PORT_STATUS_FLAG_STRICT_GUARD
        if port.immovable:
            flags |= ipc_space.MACH_PORT_STATUS_FLAG_GUARD_IMMOVABLE_RECEIVE
    return flags


def clear_guard(port: Port) -> None:
    """The receive right leaves its space: ipc_port_clear_receiver clears
    the context, the guard and the immovable bit.

    Conditions: the space's lock is held, or the port is not in a space."""
    port.context = 0
    if port.guarded or port.strict_guard or port.immovable:  # (a port never guarded keeps the class's values)
        port.guarded = port.strict_guard = port.immovable = False


def set_guard(port: Port, guard: int, strict: bool, immovable: bool) -> None:
    """Guard a port as a received guarded descriptor does
    (ipc_right_copyout with MACH_MSG_GUARD_FLAGS_IMMOVABLE_RECEIVE).

    Conditions: the port is not yet anyone else's, or the space's lock is
    held."""
    port.context = guard
    port.guarded, port.strict_guard = True, strict
    if immovable:
        port.immovable = True


def _guard_port(space: IpcSpace, name: int) -> Port:
    """ipc_port_translate_receive for the guard routines: KERN_INVALID_NAME
    for MACH_PORT_NULL and MACH_PORT_DEAD (MACH_PORT_VALID), then as
    receive_port.

    Conditions: the space's lock is held."""
    if name in (0, 0xFFFFFFFF):
        raise _err(K.KERN_INVALID_NAME, f"{name:#x}")
    return receive_port(space, name)


def guard(space: IpcSpace, name: int, value: int, flags: int) -> None:
    """mach_port_guard (flags MPG_STRICT when strict) and
    mach_port_guard_with_flags. KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_INVALID_ARGUMENT (the port already has a context or guard).

    Conditions: nothing locked; takes the space's lock."""
    with space.lock:
        port = _guard_port(space, name)
        if port.context:
            raise _err(K.KERN_INVALID_ARGUMENT, f"{name:#x} already has a context or guard")
        port.context = value
        port.guarded, port.strict_guard = True, bool(flags & ipc_space.MPG_STRICT)
        if flags & ipc_space.MPG_IMMOVABLE_RECEIVE:
            port.immovable = True  # sticky: unguarding keeps it


def unguard(space: IpcSpace, name: int, value: int) -> None:
    """mach_port_unguard. KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_INVALID_ARGUMENT (not guarded, or another guard).

    Conditions: nothing locked; takes the space's lock."""
    with space.lock:
        port = _guard_port(space, name)
        if not port.guarded:
            raise _err(K.KERN_INVALID_ARGUMENT, f"{name:#x} is not guarded")
        if port.context != value:
            raise _err(K.KERN_INVALID_ARGUMENT, f"{name:#x}: the guard does not match")
        port.context = 0
        port.guarded = port.strict_guard = False  # (the immovable bit stays)


def swap_guard(space: IpcSpace, name: int, old: int, new: int) -> None:
    """mach_port_swap_guard. KERN_INVALID_NAME, KERN_INVALID_RIGHT,
    KERN_INVALID_ARGUMENT (not guarded, strictly guarded, or ``old`` is not
    the guard).

    Conditions: nothing locked; takes the space's lock."""
    with space.lock:
        port = _guard_port(space, name)
        if not port.guarded:
            raise _err(K.KERN_INVALID_ARGUMENT, f"{name:#x} is not guarded")
        if port.strict_guard:
            raise _err(K.KERN_INVALID_ARGUMENT, f"{name:#x} is strictly guarded")
        if port.context != old:
            raise _err(K.KERN_INVALID_ARGUMENT, f"{name:#x}: the guard does not match")
        port.context = new


def get_context(space: IpcSpace, name: int) -> int:
    """mach_port_get_context: 0 for a strictly guarded port.
    KERN_INVALID_RIGHT (also for MACH_PORT_NULL and MACH_PORT_DEAD),
    KERN_INVALID_NAME.

    Conditions: nothing locked; takes the space's lock."""
    with space.lock:
        port = receive_port(space, name)
        return 0 if port.strict_guard else port.context


def set_context(space: IpcSpace, name: int, context: int) -> None:
    """mach_port_set_context. KERN_INVALID_RIGHT, KERN_INVALID_NAME,
    KERN_INVALID_ARGUMENT (a strictly guarded port).

    Conditions: nothing locked; takes the space's lock."""
    with space.lock:
        port = receive_port(space, name)
        if port.strict_guard:
            raise _err(K.KERN_INVALID_ARGUMENT, f"{name:#x} is strictly guarded")
        port.context = context


def is_connection_for_service(space: IpcSpace, connection: int, service: int, have_out: bool) -> int:
    """mach_port_is_connection_for_service. XNU answers it only with a
    message filter installed (the sandbox's callbacks); pymach has none, so
    after the argument checks it is KERN_NOT_SUPPORTED, XNU's code without
    one. KERN_INVALID_NAME, KERN_INVALID_ARGUMENT (no out-parameter).

    Conditions: nothing locked."""
    if connection in (0, 0xFFFFFFFF) or service in (0, 0xFFFFFFFF):
        raise _err(K.KERN_INVALID_NAME, "null or dead name")
    if not have_out:
        raise _err(K.KERN_INVALID_ARGUMENT, "no filter_policy_id")
    raise _err(K.KERN_NOT_SUPPORTED, "no message filter is installed")
