"""The IPC space of our task: port names -> rights, with user references.

Names are ``index << 8 | generation``, as XNU's MACH_PORT_MAKE makes them:
when an index is freed and reused, its generation advances, so a stale name
never silently denotes a new right.
"""

from __future__ import annotations

import threading
from typing import Final

from . import kern_return as K

MACH_PORT_NULL: Final = 0
MACH_PORT_DEAD: Final = 0xFFFFFFFF

MACH_PORT_RIGHT_SEND: Final = 0
MACH_PORT_RIGHT_RECEIVE: Final = 1
MACH_PORT_RIGHT_SEND_ONCE: Final = 2
MACH_PORT_RIGHT_PORT_SET: Final = 3
MACH_PORT_RIGHT_DEAD_NAME: Final = 4
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

MACH_PORT_UREFS_MAX: Final = 0xFFFF

_GEN_FIRST: Final = 0x03
_GEN_STEP: Final = 0x04


def MACH_PORT_INDEX(name: int) -> int:
    """The table index of a port name."""
    return int(name) >> 8


def MACH_PORT_GEN(name: int) -> int:
    """The generation of a port name, in XNU's entry-bits position."""
    return (int(name) & 0xFF) << 24


def MACH_PORT_MAKE(index: int, gen: int) -> int:
    """A port name from an index and entry-bits generation."""
    return (index << 8) | (gen >> 24)


class IpcEntry:
    """One name's rights: the object they denote, the type bits, and urefs."""

    __slots__ = ("object", "type", "urefs", "gen")

    def __init__(self, obj: object, typ: int, urefs: int, gen: int) -> None:
        self.object = obj
        self.type = typ
        self.urefs = urefs
        self.gen = gen


class IpcSpace:
    """A task's name space. Index 0 is never used (MACH_PORT_NULL)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._table: list[IpcEntry | None] = [None]
        self._gens: list[int] = [0]
        self._free: list[int] = []
        self._by_object: dict[int, int] = {}

    def lookup(self, name: int) -> IpcEntry | None:
        """The entry a name denotes, or None (wrong index or generation)."""
        idx = name >> 8
        if 0 < idx < len(self._table):
            e = self._table[idx]
            if e is not None and e.gen == (name & 0xFF):
                return e
        return None

    def name_of(self, obj: object) -> int:
        """The name under which we hold rights to ``obj``, or MACH_PORT_NULL."""
        return self._by_object.get(id(obj), MACH_PORT_NULL)

    def insert(self, obj: object, typ: int, urefs: int = 1) -> int:
        """Add rights to ``obj``: coalesced with an existing name for the same
        object, otherwise under a fresh name. Returns the name."""
        with self.lock:
            name = self._by_object.get(id(obj))
            if name is not None:
                e = self.lookup(name)
                assert e is not None
                e.type |= typ
                e.urefs = min(e.urefs + urefs, MACH_PORT_UREFS_MAX)
                return name
            if self._free:
                idx = self._free.pop()
                gen = (self._gens[idx] + _GEN_STEP) & 0xFF
            else:
                idx = len(self._table)
                self._table.append(None)
                self._gens.append(_GEN_FIRST)
                gen = _GEN_FIRST
            self._gens[idx] = gen
            self._table[idx] = IpcEntry(obj, typ, urefs, gen)
            name = (idx << 8) | gen
            self._by_object[id(obj)] = name
            return name

    def remove(self, name: int) -> IpcEntry:
        """Free a name; its index is reused later under a new generation."""
        with self.lock:
            e = self.lookup(name)
            if e is None:
                raise K.MachError(K.KERN_INVALID_NAME, f"{name:#x}")
            self._table[name >> 8] = None
            self._by_object.pop(id(e.object), None)
            self._free.append(name >> 8)
            return e

    def names(self) -> list[tuple[int, IpcEntry]]:
        """Every live name and its entry."""
        with self.lock:
            return [((i << 8) | e.gen, e) for i, e in enumerate(self._table) if e is not None]

    def deallocate(self, name: int) -> None:
        """mach_port_deallocate: drop one user reference of a send right.

        KERN_INVALID_NAME for an unknown name; KERN_INVALID_RIGHT when the
        name holds no send or dead-name right."""
        with self.lock:
            e = self.lookup(name)
            if e is None:
                raise K.MachError(K.KERN_INVALID_NAME, f"{name:#x}")
            if not e.type & (MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_DEAD_NAME | MACH_PORT_TYPE_SEND_ONCE):
                raise K.MachError(K.KERN_INVALID_RIGHT, f"{name:#x}")
            e.urefs -= 1
            if e.urefs <= 0:
                self.remove(name)
