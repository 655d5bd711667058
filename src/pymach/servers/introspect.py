"""Introspection: what ``pymach lsmp`` (and ``pymach vmmap``) learn from a
pymach process about its IPC space and its Mach map attributes.

Every process that uses pymach answers on an abstract AF_UNIX stream
socket named ``pymach-introspect-<pid>``, served by a daemon thread. A
client connects, writes one request line (``ports`` or ``regions``) and
reads a JSON answer until EOF.

Kernel facts this relies on:

- An abstract socket (a name starting with NUL) has no file: it leaves
  nothing behind when the process dies, and no other process can bind its
  name while we hold it. It also has no permissions, so anyone in the same
  network namespace can connect: the server reads the client's uid with
  SO_PEERCRED and answers only its own uid and root (who may ptrace it
  anyway).
- Threads do not survive fork: a fork child starts its own server, under
  its own pid, and closes the parent's listening socket.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from typing import Any

from .._linux import unix

_PREFIX = "pymach-introspect-"
_lock = threading.Lock()
_listener: socket.socket | None = None
_owner = 0  # the pid that started _listener


def address(pid: int) -> str:
    """The abstract socket name a pymach process answers on."""
    return "\0" + _PREFIX + str(pid)


def start() -> None:
    """Start this process's introspection server (once per process)."""
    global _listener, _owner
    with _lock:
        if _listener is not None and _owner == os.getpid():
            return
        if _listener is not None:  # inherited across fork: the parent's
            _listener.close()
            _listener = None
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.bind(address(os.getpid()))
            s.listen(8)
        except OSError:
            s.close()
            return  # the name is taken (another runtime in this process): no server
        _listener, _owner = s, os.getpid()
        # the thread starts with every signal blocked (a new thread inherits
        # its creator's mask), so signals keep going to the program's own
        # threads, as if this one did not exist
        old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            threading.Thread(target=_serve, args=(s,), name="pymach-introspect", daemon=True).start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _serve(s: socket.socket) -> None:
    while True:
        try:
            conn, _addr = s.accept()
        except OSError:
            return  # closed (a fork child replaced it, or shutdown)
        with conn:
            try:
                _pid, uid, _gid = unix.peer_cred(conn)
                if uid not in (os.getuid(), 0):
                    continue
                conn.settimeout(5)
                what = conn.recv(64).strip().decode(errors="replace")
                conn.sendall(json.dumps(_answer(what, conn.fileno())).encode())
            except Exception:  # an introspection request must never hurt the process
                continue


def _answer(what: str, conn: int = -1) -> dict[str, Any]:
    from ..kern.task import SELF
    if what == "ports":
        return {"pid": os.getpid(), "ports": ports(SELF.space)}
    if what == "regions":
        return {"pid": os.getpid(), "regions": regions(SELF.map)}
    if what == "fds":
        return {"pid": os.getpid(), "connection": conn, **held_fds(SELF.space, SELF.map)}
    return {"pid": os.getpid(), "error": f"unknown request {what!r}"}


def ports(space: Any) -> list[dict[str, Any]]:
    """Every name in ``space``: its rights, user references and object."""
    from ..kern.ipc_port import Port, ReplyCap, SendCap, SendOnceCap
    from ..kern.ipc_pset import PortSet
    from ..kern.ipc_space import (MACH_PORT_TYPE_DEAD_NAME, MACH_PORT_TYPE_DNREQUEST, MACH_PORT_TYPE_PORT_SET,
                                  MACH_PORT_TYPE_RECEIVE, MACH_PORT_TYPE_SEND, MACH_PORT_TYPE_SEND_ONCE)
    from ..kern.task import Host, Task
    from ..kern.vm_memory_entry import MemoryEntry
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
        elif isinstance(obj, Task):
            row.update(object="task", pid=obj.pid)
        elif isinstance(obj, Host):
            row.update(object="host")
        elif isinstance(cap, MemoryEntry):
            row.update(object="memory-entry", size=cap.size, offset=cap.offset, protection=cap.protection)
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
    (``runtime``: the notification watcher, this server's socket). Any
    other open fd of a process is its program's, or a leak."""
    from ..kern.ipc_notify import WATCHER
    from ..kern.ipc_port import Port, ReplyCap, SendCap
    from ..kern.ipc_pset import PortSet
    from ..kern.task import Task
    from ..kern.vm_memory_entry import MemoryEntry
    names: dict[str, list[int]] = {}
    with space.lock:
        for name, e in space.names():
            fds: set[int] = set()
            objs: list[Any] = [e.object, e.cap, e.dnrequest]
            for o in objs:
                if isinstance(o, Port):
                    fds |= {o.ep.fileno(), o.efd} | set(o.ends)
                    fds |= {s.sock.fileno() for s in list(o.rconn.values())} | set(o.replies)
                    held: list[Any] = list(o.held)
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
                    fds.add(o.fd)
                elif isinstance(o, Task):
                    fds.add(o.pidfd)  # another process's task (our own holds none)
            fds.discard(-1)
            names[str(name)] = sorted(fds)
    from ..kern.task import SELF
    ports: set[int] = set()  # the special and registered ports: capabilities outside the space
    for cap in [*SELF.special.values(), *SELF.registered]:
        if isinstance(cap, SendCap):
            ports |= {cap.sock.fileno(), cap.efd}
    ports.discard(-1)
    mapped = sorted({e.obj.fd for e in vm_map.entries() if e.obj is not None and e.obj.fd >= 0})
    runtime = WATCHER.fds() + ([_listener.fileno()] if _listener is not None and _listener.fileno() >= 0 else [])
    return {"names": names, "map": mapped, "task": sorted(ports), "runtime": runtime}


def regions(vm_map: Any) -> list[dict[str, Any]]:
    """The Mach attributes pymach keeps for each entry of its map."""
    return [{"start": e.start, "end": e.end, "protection": e.prot, "max_protection": e.max_prot,
             "inheritance": e.inherit, "behavior": e.behavior, "user_tag": e.tag, "shared": e.shared,
             "wired": e.wired, "permanent": e.permanent} for e in vm_map.entries()]


def query(pid: int, what: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """Ask process ``pid`` (``ports`` or ``regions``). None when it does not
    run pymach (nothing answers on its name). Raises PermissionError when
    it refuses us (another user's process)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        try:
            s.connect(address(pid))
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        chunks = []
        try:
            s.sendall(what.encode() + b"\n")
            while True:
                b = s.recv(1 << 16)
                if not b:
                    break
                chunks.append(b)
        except (BrokenPipeError, ConnectionResetError):
            chunks = []  # closed on us: refused
    finally:
        s.close()
    if not chunks:
        raise PermissionError(f"process {pid} runs pymach but does not answer us (another user's)")
    return json.loads(b"".join(chunks))  # type: ignore[no-any-return]


os.register_at_fork(after_in_child=start)
