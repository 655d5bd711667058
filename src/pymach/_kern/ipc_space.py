"""The IPC space of our task: port names -> rights, with user references.

Names are ``index << 8 | generation``, as XNU's MACH_PORT_MAKE makes them:
when an index is freed and reused, its generation advances, so a stale name
never silently denotes a new right.

Rights for the same port coalesce under one name when the kernel proves
they are the same port: a kernel object by identity, a send right by the
inode of its socket (the same connection), and a send right to a port whose
receive right we hold by the inode of its sending end: one we made for it,
or one the kernel reports as the peer of one of the port's receiving ends
(ipc_right.copyout_receive, _linux/sockdiag.py).
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Final, Hashable, Protocol

from . import kern_return as K

MACH_PORT_NULL: Final = 0
MACH_PORT_DEAD: Final = 0xFFFFFFFF

MACH_PORT_RIGHT_SEND: Final = 0
MACH_PORT_RIGHT_RECEIVE: Final = 1
MACH_PORT_RIGHT_SEND_ONCE: Final = 2
MACH_PORT_RIGHT_PORT_SET: Final = 3
MACH_PORT_RIGHT_DEAD_NAME: Final = 4
MACH_PORT_RIGHT_LABELH: Final = 5
MACH_PORT_RIGHT_NUMBER: Final = 6


def MACH_PORT_TYPE(right: int) -> int:
    """The mach_port_type_t bit of a right."""
    return 1 << (right + 16)


MACH_PORT_TYPE_NONE: Final = 0
MACH_PORT_TYPE_SEND: Final = MACH_PORT_TYPE(MACH_PORT_RIGHT_SEND)
MACH_PORT_TYPE_RECEIVE: Final = MACH_PORT_TYPE(MACH_PORT_RIGHT_RECEIVE)
MACH_PORT_TYPE_SEND_ONCE: Final = MACH_PORT_TYPE(MACH_PORT_RIGHT_SEND_ONCE)
MACH_PORT_TYPE_PORT_SET: Final = MACH_PORT_TYPE(MACH_PORT_RIGHT_PORT_SET)
MACH_PORT_TYPE_DEAD_NAME: Final = MACH_PORT_TYPE(MACH_PORT_RIGHT_DEAD_NAME)
MACH_PORT_TYPE_DNREQUEST: Final = 0x80000000
MACH_PORT_TYPE_SPREQUEST: Final = 0x40000000
MACH_PORT_TYPE_SPREQUEST_DELAYED: Final = 0x20000000
MACH_PORT_TYPE_SEND_RECEIVE: Final = MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_RECEIVE
MACH_PORT_TYPE_SEND_RIGHTS: Final = MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_SEND_ONCE
MACH_PORT_TYPE_PORT_RIGHTS: Final = MACH_PORT_TYPE_SEND_RIGHTS | MACH_PORT_TYPE_RECEIVE
MACH_PORT_TYPE_PORT_OR_DEAD: Final = MACH_PORT_TYPE_PORT_RIGHTS | MACH_PORT_TYPE_DEAD_NAME
MACH_PORT_TYPE_ALL_RIGHTS: Final = MACH_PORT_TYPE_PORT_OR_DEAD | MACH_PORT_TYPE_PORT_SET

MACH_PORT_UREFS_MAX: Final = 0xFFFF

MACH_PORT_QLIMIT_ZERO: Final = 0
MACH_PORT_QLIMIT_BASIC: Final = 5
MACH_PORT_QLIMIT_SMALL: Final = 16
MACH_PORT_QLIMIT_LARGE: Final = 1024
MACH_PORT_QLIMIT_KERNEL: Final = 65534
MACH_PORT_QLIMIT_MIN: Final = MACH_PORT_QLIMIT_ZERO
MACH_PORT_QLIMIT_DEFAULT: Final = MACH_PORT_QLIMIT_BASIC
MACH_PORT_QLIMIT_MAX: Final = MACH_PORT_QLIMIT_LARGE

# mach_port_options_t flags (mach_port_construct)
MPO_CONTEXT_AS_GUARD = 0x01
MPO_QLIMIT = 0x02
MPO_TEMPOWNER = 0x04
MPO_IMPORTANCE_RECEIVER = 0x08
MPO_INSERT_SEND_RIGHT = 0x10
MPO_STRICT = 0x20
MPO_DENAP_RECEIVER = 0x40
MPO_IMMOVABLE_RECEIVE = 0x80
MPO_FILTER_MSG = 0x100
MPO_TG_BLOCK_TRACKING = 0x200
MPO_SERVICE_PORT = 0x400
MPO_CONNECTION_PORT = 0x800
MPO_REPLY_PORT = 0x1000
MPO_ENFORCE_REPLY_PORT_SEMANTICS = 0x2000
MPO_PROVISIONAL_REPLY_PORT = 0x4000
MPO_EXCEPTION_PORT = 0x8000
# mach_port_guard_with_flags flags
MPG_STRICT = 0x01
MPG_IMMOVABLE_RECEIVE = 0x02
# mach_port_status_t mps_flags
MACH_PORT_STATUS_FLAG_TEMPOWNER = 0x01
MACH_PORT_STATUS_FLAG_GUARDED = 0x02
MACH_PORT_STATUS_FLAG_STRICT_GUARD = 0x04
MACH_PORT_STATUS_FLAG_IMP_DONATION = 0x08
MACH_PORT_STATUS_FLAG_REVIVE = 0x10
MACH_PORT_STATUS_FLAG_TASKPTR = 0x20
MACH_PORT_STATUS_FLAG_GUARD_IMMOVABLE_RECEIVE = 0x40
MACH_PORT_STATUS_FLAG_NO_GRANT = 0x80

# The largest index a space's table grows to: XNU's
# CONFIG_IPC_TABLE_ENTRIES_SIZE_MAX (7 MiB on macOS's medium and larger
# configurations) over the 24 bytes of an ipc_entry.
ENTRY_TABLE_MAX: Final = 305834

_GEN_FIRST: Final = 0x03
_GEN_STEP: Final = 0x04
_GEN_LAST: Final = 0xFB


def MACH_PORT_VALID(name: int) -> bool:
    """Neither MACH_PORT_NULL nor MACH_PORT_DEAD."""
    return name not in (MACH_PORT_NULL, MACH_PORT_DEAD)


def MACH_PORT_INDEX(name: int) -> int:
    """The table index of a port name."""
    return int(name) >> 8


def MACH_PORT_GEN(name: int) -> int:
    """The generation of a port name, in XNU's entry-bits position."""
    return (int(name) & 0xFF) << 24


def MACH_PORT_MAKE(index: int, gen: int) -> int:
    """A port name from an index and entry-bits generation."""
    return (index << 8) | (gen >> 24)


class _Renewable(Protocol):
    def renew_locks(self) -> None: ...


# Objects whose locks a fork child must renew (spaces, ports, port sets).
# The child has only the thread that forked: a lock that another thread (the
# notification watcher, a receiver) held at the fork stays held for ever in
# the child's copy. Registered here, before kern.task registers the child's
# reset (which takes those locks to close the inherited rights).
_LOCKED: "weakref.WeakSet[_Renewable]" = weakref.WeakSet()


def renew_at_fork(obj: _Renewable) -> None:
    """Give ``obj`` fresh locks in a fork child (``obj.renew_locks()``).

    Conditions: any lock may be held; takes none."""
    _LOCKED.add(obj)


def _renew_locks() -> None:
    """Conditions: a fork child, in the forking thread."""
    for obj in list(_LOCKED):
        obj.renew_locks()


os.register_at_fork(after_in_child=_renew_locks)


class IpcEntry:
    """One name's rights.

    ``object`` is what the name denotes: a Port when we hold its receive
    right, otherwise the capability (SendCap, SendOnceCap), a PortSet, a
    kernel object (Task, Host), or None for a dead name. ``cap`` is the
    send capability when the name holds send rights. ``urefs`` counts user
    references of the send (or dead-name) right."""

    __slots__ = ("object", "type", "urefs", "gen", "cap", "keys", "dnrequest")

    def __init__(self, obj: object, typ: int, urefs: int, gen: int) -> None:
        self.object = obj
        self.type = typ
        self.urefs = urefs
        self.gen = gen
        self.cap: object = None
        self.keys: list[Hashable] = []
        self.dnrequest: object = None  # a send-once right for MACH_NOTIFY_DEAD_NAME


class IpcSpace:
    """A task's name space. Index 0 is never used (MACH_PORT_NULL)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._table: list[IpcEntry | None] = [None]
        self._gens: list[int] = [0]
        self._free: list[int] = []
        self._by_key: dict[Hashable, int] = {}
        renew_at_fork(self)

    def renew_locks(self) -> None:
        """Conditions: a fork child, in the forking thread."""
        self.lock = threading.RLock()

    def lookup(self, name: int) -> IpcEntry | None:
        """The entry a name denotes, or None (wrong index or generation).

        Conditions: nothing required; the entry stays what it is only while
        the caller holds the space's lock."""
        idx = name >> 8
        if 0 < idx < len(self._table):
            e = self._table[idx]
            if e is not None and e.gen == (name & 0xFF):
                return e
        return None

    def lookup_right(self, name: int, need: int, kr: int = K.KERN_INVALID_RIGHT) -> IpcEntry:
        """The entry for ``name`` if it holds one of the rights in ``need``:
        the one place where rights are checked. KERN_INVALID_NAME when the
        name denotes nothing, ``kr`` when it lacks the right.

        Conditions: as lookup."""
        e = self.lookup(name)
        if e is None:
            raise K.MachError(K.KERN_INVALID_NAME, f"{name:#x} denotes no right")
        if not e.type & need:
            raise K.MachError(kr, f"{name:#x} lacks the right")
        return e

    def name_for(self, key: Hashable) -> int:
        """The name under which a coalescing key is held, or MACH_PORT_NULL.

        Conditions: nothing required; the name stays valid only while the
        caller holds the space's lock."""
        return self._by_key.get(key, MACH_PORT_NULL)

    def name_of(self, obj: object) -> int:
        """The name under which we hold rights to a kernel object.

        Conditions: as name_for."""
        return self._by_key.get(id(obj), MACH_PORT_NULL)

    def _new_index(self) -> tuple[int, int]:
        """Conditions: the space's lock is held."""
        if self._free:
            idx = self._free.pop()  # LIFO, as XNU reuses freed entries
            gen = self._gens[idx] + _GEN_STEP
            if gen > _GEN_LAST:
                gen = _GEN_FIRST  # XNU's generations roll over before 0xff
        else:
            idx = len(self._table)
            self._table.append(None)
            self._gens.append(_GEN_FIRST)
            gen = _GEN_FIRST
        self._gens[idx] = gen
        return idx, gen

    def alloc(self, obj: object, typ: int, urefs: int, key: Hashable | None = None) -> tuple[int, IpcEntry]:
        """A fresh name for new rights, optionally findable by ``key``.

        Conditions: nothing locked, or the space's lock held by this thread;
        takes it."""
        with self.lock:
            idx, gen = self._new_index()
            e = IpcEntry(obj, typ, urefs, gen)
            self._table[idx] = e
            name = (idx << 8) | gen
            if key is not None:
                self.add_key(name, e, key)
            return name, e

    def check_name(self, name: int) -> IpcEntry | None:
        """XNU's ipc_entry_alloc_name, before it takes anything: the entry
        that holds ``name`` (the same index and generation), or None when
        the name is free. KERN_NO_SPACE (an index past the largest table
        XNU grows), KERN_INVALID_VALUE (a generation without its low two
        bits set: XNU's ipc_entry_name_mask), KERN_FAILURE (index 0, or the
        index held under another generation: names are never reused with
        another generation while held). The checks come in XNU's order.

        Conditions: nothing locked, or the space's lock held by this thread;
        the answer stays true only while the caller holds it. The reserved
        name of a TaskSpace is not filled."""
        idx, gen = name >> 8, name & 0xFF
        if idx > ENTRY_TABLE_MAX:
            raise K.MachError(K.KERN_NO_SPACE, f"{name:#x}: index past the table's limit")
        if gen & 3 != 3:
            raise K.MachError(K.KERN_INVALID_VALUE, f"{name:#x}: a name's low two bits are set")
        if idx == 0:
            raise K.MachError(K.KERN_FAILURE, f"{name:#x}: index 0 is reserved")
        used = self._table[idx] if idx < len(self._table) else None
        if used is None:
            return None
        if used.gen != gen:
            raise K.MachError(K.KERN_FAILURE, f"{name:#x}: its index is held under another generation")
        return used

    def alloc_name(self, name: int, obj: object, typ: int, urefs: int) -> IpcEntry:
        """Install rights under a name the caller chose (mach_port_allocate_name,
        mach_port_insert_right): the codes of check_name, then
        KERN_NAME_EXISTS when the name holds rights.

        Conditions: nothing locked, or the space's lock held by this thread;
        takes it."""
        with self.lock:
            if self.check_name(name) is not None:
                raise K.MachError(K.KERN_NAME_EXISTS, f"{name:#x}")
            idx, gen = name >> 8, name & 0xFF
            if len(self._table) <= idx:
                first = len(self._table)
                self._table.extend([None] * (idx + 1 - first))
                self._gens.extend([_GEN_FIRST] * (idx + 1 - first))
                self._free.extend(range(first, idx + 1))
            if idx in self._free:
                self._free.remove(idx)
            self._gens[idx] = gen
            e = IpcEntry(obj, typ, urefs, gen)
            self._table[idx] = e
            return e

    def add_key(self, name: int, e: IpcEntry, key: Hashable) -> None:
        """Conditions: the space's lock is held, except in
        ipc_right.allocate_name, which adds the key after alloc_name has
        released it."""
        self._by_key[key] = name
        e.keys.append(key)

    def insert(self, obj: object, typ: int, urefs: int = 1) -> int:
        """Add send rights to a kernel object (task, host): coalesced with an
        existing name for it, or under a fresh name.

        Conditions: nothing locked, or the space's lock held by this thread;
        takes it."""
        with self.lock:
            name = self._by_key.get(id(obj))
            if name is not None:
                e = self.lookup(name)
                assert e is not None
                e.type |= typ
                e.urefs = min(e.urefs + urefs, MACH_PORT_UREFS_MAX)
                return name
            return self.alloc(obj, typ, urefs, key=id(obj))[0]

    def remove(self, name: int) -> IpcEntry:
        """Free a name; its index is reused later under a new generation.
        The entry is returned as it was, its dead-name request included:
        sending the port-deleted notification is the caller's
        (ipc_right.dealloc_name). KERN_INVALID_NAME.

        Conditions: nothing locked, or the space's lock held by this thread;
        takes it."""
        with self.lock:
            e = self.lookup(name)
            if e is None:
                raise K.MachError(K.KERN_INVALID_NAME, f"{name:#x}")
            self._table[name >> 8] = None
            for k in e.keys:
                if self._by_key.get(k) == name:
                    del self._by_key[k]
            e.keys.clear()
            self._free.append(name >> 8)
            return e

    def forget_rights(self) -> None:
        """A fork child's copy of the space: close, in this process only,
        every fd behind its rights, through each object's ``forget()``
        (ports and port sets are torn down; capabilities, memory entries
        and other tasks' pidfds closed; our own task and the host hold
        none). Nothing else happens: the parent still holds them all.

        Conditions: in a fork child, in the forking thread, before the space
        is replaced; takes the space's lock (names), then each port's and
        set's lock (renewed)."""
        for _name, e in self.names():
            for o in (e.cap, e.object, e.dnrequest):
                forget = getattr(o, "forget", None)
                if forget is not None:
                    forget()

    def names(self) -> list[tuple[int, IpcEntry]]:
        """Every live name and its entry.

        Conditions: nothing locked, or the space's lock held by this thread;
        takes it; the entries returned are live, not copies."""
        with self.lock:
            return [((i << 8) | e.gen, e) for i, e in enumerate(self._table) if e is not None]
