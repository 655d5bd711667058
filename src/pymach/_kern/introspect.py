"""Introspection: what this task's kernel tells another process about it,
as XNU answers mach_port_space_info and vm_region for a task whose port
another one holds.

``pymach lsmp`` asks for the IPC space (``ports``), ``pymach vmmap`` and
vm_map_foreign for the Mach attributes of the map (``regions``), and the
kill storm for the fds the runtime accounts for (``fds``). The questions
and answers travel over pymach._linux.introspect: a daemon thread that
answers on an abstract socket from the first use of the task on (importing
pymach starts nothing), only to our own uid and root.
"""

from __future__ import annotations

import os
from typing import Any

from .._linux import introspect as _transport
from . import ipc_notify
from .ipc_port import Port, ReplyCap, SendCap, SendOnceCap
from .ipc_pset import PortSet
from .ipc_space import (MACH_PORT_TYPE_DEAD_NAME, MACH_PORT_TYPE_DNREQUEST, MACH_PORT_TYPE_PORT_SET,
                        MACH_PORT_TYPE_RECEIVE, MACH_PORT_TYPE_SEND, MACH_PORT_TYPE_SEND_ONCE)
from .task import SELF, Host, Task, Thread
from .vm_memory_entry import MemoryEntry
from .sync_sema import Semaphore

address = _transport.address
query = _transport.query


def start() -> None:
    """Start answering about this task (once per process; a fork child
    answers about itself).

    Conditions: nothing locked, or the build lock (a first-use callback of
    the task's state); takes the introspection lock."""
    _transport.serve(_answer)


def _answer(what: str, conn: int = -1) -> dict[str, Any]:
    if what == "ports":
        return {"pid": os.getpid(), "ports": ports(SELF.space)}
    if what == "regions":
        return {"pid": os.getpid(), "regions": regions(SELF.map)}
    if what == "fds":
        return {"pid": os.getpid(), "connection": conn, **held_fds(SELF.space, SELF.map)}
    return {"pid": os.getpid(), "error": f"unknown request {what!r}"}


def ports(space: Any) -> list[dict[str, Any]]:
    """Every name in ``space``: its rights, user references and object.

    Conditions: nothing locked; takes the space's lock for the list of
    names, then, released, each port's lock (msgcount); reads the entries
    without the space's lock."""
    out = []
    for name, e in space.names():
        rights = [r for bit, r in ((MACH_PORT_TYPE_RECEIVE, "recv"), (MACH_PORT_TYPE_SEND, "send"),
                                   (MACH_PORT_TYPE_SEND_ONCE, "send-once"), (MACH_PORT_TYPE_PORT_SET, "port-set"),
                                   (MACH_PORT_TYPE_DEAD_NAME, "dead-name")) if e.type & bit]
        row: dict[str, Any] = {"name": name, "rights": rights, "urefs": e.urefs,
                               "dnrequest": bool(e.type & MACH_PORT_TYPE_DNREQUEST or e.dnrequest is not None)}
        obj, cap = e.object, e.cap
        if isinstance(obj, Port):
            row.update(object="port", qlimit=obj.qlimit, msgcount=obj.msgcount(), seqno=obj.seqno,
                       mscount=obj.mscount, connections=len(obj.ends))
        elif isinstance(obj, PortSet):
            row.update(object="port-set", members=len(obj.members))
        elif isinstance(obj, Thread):
            row.update(object="thread", pid=obj.pid, tid=obj.tid, flavor=obj.flavor_name)
        elif isinstance(obj, Task):
            # our own task's ports, or another process's (from task_for_pid
            # or a message), each flavor a port of its own
            row.update(object="task", pid=obj.pid, flavor=obj.flavor_name, own=obj.map is not None)
        elif isinstance(obj, Host):
            row.update(object="host")
        elif isinstance(cap, MemoryEntry):
            row.update(object="memory-entry", size=cap.size, offset=cap.offset, protection=cap.protection)
        elif isinstance(cap, Semaphore):
            row.update(object="semaphore", count=cap.count(), destroyed=cap.destroyed())
        elif isinstance(cap, ReplyCap):
            row.update(object="reply (back-channel send-once)")
        elif isinstance(cap, SendOnceCap):
            row.update(object="send-once connection")
        elif isinstance(cap, SendCap):
            row.update(object="connection", inode=cap.ino)
        else:
            row.update(object="none")
        out.append(row)
    return out


def held_fds(space: Any, vm_map: Any) -> dict[str, Any]:
    """The fds the runtime accounts for: per name of ``space`` (``names``:
    name -> fds of its rights, requests and queued messages), the memfds
    behind the entries of ``vm_map`` (``map``), the task's special and
    registered ports (``task``), and the runtime's own
    (``runtime``: the notification watcher, the introspection socket). Any
    other open fd of a process is its program's, or a leak.

    Conditions: nothing locked; takes the space's lock (reading the ports'
    fields under it, without their locks), then, released, the watcher's
    lock, then the map's lock."""
    names: dict[str, list[int]] = {}
    with space.lock:
        for name, e in space.names():
            fds: set[int] = set()
            objs: list[Any] = [e.object, e.cap, e.dnrequest]
            for o in objs:
                if isinstance(o, Port):
                    fds |= {o.ep.fileno(), o.efd, o.nudge} | set(o.ends)
                    fds |= {s.sock.fileno() for s in list(o.rconn.values())} | set(o.replies)
                    held: list[Any] = list(o.held)
                    moving = o.moving
                    if moving is not None:  # a move being sent: its spool, and what is in it
                        if moving[0] is not None:
                            fds.add(moving[0].fileno())
                        held += moving[1]
                    for rec in held:  # taken off their connections, still queued
                        fds |= set(rec.fds)
                        if rec.rconn is not None:
                            fds.add(rec.rconn.sock.fileno())
                    if o._cached is not None:  # pylint: disable=protected-access
                        objs.append(o._cached)  # pylint: disable=protected-access
                    if o.nsrequest is not None:
                        objs.append(o.nsrequest[0])
                    if o.pdrequest is not None:
                        objs.append(o.pdrequest)
                elif isinstance(o, ReplyCap):
                    if o.conn is not None:
                        fds.add(o.sock.fileno())
                elif isinstance(o, SendCap):
                    fds |= {o.sock.fileno(), o.efd}
                    if o.chan is not None:
                        fds.add(o.chan.tx.fileno())
                        if o.chan.rx is not None:
                            fds.add(o.chan.rx.sock.fileno())
                elif isinstance(o, PortSet):
                    fds |= {o.ep.fileno(), o.wake}
                elif isinstance(o, MemoryEntry):
                    fds.update(o.wire_fds())
                elif isinstance(o, Semaphore):
                    fds.update(o.held_fds())
                elif isinstance(o, Task):
                    fds.add(o.pidfd)  # another process's task (our own holds none)
            fds.discard(-1)
            names[str(name)] = sorted(fds)
    ports: set[int] = set()  # the special and registered ports: capabilities outside the space
    for cap in [*SELF.special.values(), *SELF.registered]:
        if isinstance(cap, SendCap):
            ports |= {cap.sock.fileno(), cap.efd}
    ports.discard(-1)
    mapped = sorted({e.obj.fd for e in vm_map.entries() if e.obj is not None and e.obj.fd >= 0})
    runtime = ipc_notify.WATCHER.fds() + _transport.listener_fds()
    return {"names": names, "map": mapped, "task": sorted(ports), "runtime": runtime}


def regions(vm_map: Any) -> list[dict[str, Any]]:
    """The Mach attributes pymach keeps for each entry of its map.

    Conditions: nothing locked; takes the map's lock (entries)."""
    return [{"start": e.start, "end": e.end, "protection": e.prot, "max_protection": e.max_prot,
             "inheritance": e.inherit, "behavior": e.behavior, "user_tag": e.tag, "shared": e.shared,
             "wired": e.wired, "permanent": e.permanent} for e in vm_map.entries()]
