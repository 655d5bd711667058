"""The bootstrap server: a per-user daemon that binds service names to
ports (``pymach bootstrap serve``).

It is a MIG server written against the C interface, on one thread, so
requests are handled one at a time in the order they are received: of
concurrent registrations of one name exactly one wins. Its messages are
those of pymach's bootstrap.defs: it reads the requests and builds the
replies with the layouts and packers that `pymach mig -static` generated
from it (pymach.mach.bootstrap_mig).

State is the ServiceTable: each name's port, as a right of the server's.
A service made by bootstrap_create_service is a port whose receive right
the server holds until a process checks in. A service that is checked in
or registered is a send right of the server's, with a dead-name
notification armed on it. When the process that holds the receive right
dies, the kernel facts (its receiving ends close) make the name a dead
name, the notification arrives at the server's notify port, and the names
bound to that port are free again. Nothing is polled. Where a request
needs a name, the server also looks at that one right before it decides,
so a notification still in flight does not make it refuse a new owner.

Every request's audit trailer is checked: only our own uid is served,
since a send right to the bootstrap port can be handed to any process.
The rendezvous (pymach._linux.rendezvous) runs on a second thread: it
only accepts, checks SO_PEERCRED, and hands out send rights, each a
connection of its own recorded as its client's.

Limits (Limits, docs/architecture.md): per client process and in all, on
live names and on live connections to the bootstrap port, derived from
RLIMIT_NOFILE with a reserve, so that no client can exhaust the server's
fds or starve the others; over one, BOOTSTRAP_NO_MEMORY.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import threading
import time
from ctypes import byref, sizeof
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from .. import mach as M
from .._kern.task import SELF
from ..mach import bootstrap_defs as D
from ..mach import bootstrap_mig as BMIG
from .._linux import files, process, rendezvous

_AUDIT = M.MACH_RCV_TRAILER_ELEMENTS(M.MACH_RCV_TRAILER_AUDIT)
_RCV_SIZE = 512  # more than the largest request and its trailer: larger messages are dropped
_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)

# the reply that carries a port, by request id
_PORT_REPLIES = {D.BOOTSTRAP_CHECK_IN_ID: BMIG.bootstrap_check_in_reply,
                 D.BOOTSTRAP_LOOK_UP_ID: BMIG.bootstrap_look_up_reply,
                 D.BOOTSTRAP_CREATE_SERVICE_ID: BMIG.bootstrap_create_service_reply}


class NoMemory(Exception):
    """A port could not be made: the server ran out of fds or memory."""


# fds the server keeps for itself whatever its clients do (at most a
# quarter of its limit), and what one name can cost it at most (a receive
# right made by create_service: its epoll, its queue eventfd, the cached
# connection's two ends and that connection's eventfd; a checked-in name
# holds a send right, two fds, and its dead-name request's connection)
FD_RESERVE = 64
FDS_PER_NAME = 6
LIMIT_ENV = {"names_per_client": "PYMACH_BOOTSTRAP_MAX_NAMES_PER_CLIENT",
             "rights_per_client": "PYMACH_BOOTSTRAP_MAX_RIGHTS_PER_CLIENT",
             "names": "PYMACH_BOOTSTRAP_MAX_NAMES",
             "rights": "PYMACH_BOOTSTRAP_MAX_RIGHTS"}


@dataclass
class Limits:
    """What one client process, and the server's uid as a whole, may hold
    of the server. ``names``: live names registered, checked in or created;
    ``rights``: live connections to the bootstrap port (each right the
    rendezvous hands out, and each channel a sender opens on one)."""

    names_per_client: int
    rights_per_client: int
    names: int
    rights: int

    @classmethod
    def derive(cls, **asked: int | None) -> "Limits":
        """The totals from RLIMIT_NOFILE (half the fds past the reserve for
        names, half for connections); a client's share at most 1024 names
        and 1024 connections. A value asked for (a keyword, else its
        environment variable) can only lower them."""
        soft = process.fd_limits()[0]  # (RLIM_INFINITY reads as 1 << 20)
        budget = (soft - min(FD_RESERVE, soft // 4)) // 2
        top = {"names": max(1, budget // FDS_PER_NAME), "rights": max(1, budget)}
        top["names_per_client"] = min(1024, top["names"])
        top["rights_per_client"] = min(1024, top["rights"])
        out = {}
        for key, env in LIMIT_ENV.items():
            want = asked.get(key)
            if want is None and os.environ.get(env, "").strip():
                want = int(os.environ[env])
            out[key] = top[key] if want is None else max(0, min(want, top[key]))
        out["names_per_client"] = min(out["names_per_client"], out["names"])
        out["rights_per_client"] = min(out["rights_per_client"], out["rights"])
        return cls(**out)


def client_key(pid: int) -> tuple[int, int]:
    """A client process: its pid and start time (clock ticks after boot,
    /proc/PID/stat field 22), so that a reused pid is another client. A
    process already gone gets start time -1."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return pid, int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return pid, -1


@dataclass
class Service:
    """A name and the server's name for its port. ``pid`` is the process
    that checked in or registered, from the request's audit trailer (0:
    nobody has)."""

    name: bytes
    port: int
    pid: int = 0
    owner: tuple[int, int] = (0, 0)  # client_key() of the process the name counts against


class ServiceTable:
    """The server's name space.

    ``by_name`` maps a service name to its Service; ``by_port`` maps one of
    our port names to the service names bound to it (one send reference of
    ours per service name: a port registered under two names is one name
    of ours). ``receivers`` are the ports whose receive right we hold
    (made by create_service, not checked in: inactive). ``armed`` are the
    port names with a dead-name request."""

    def __init__(self, notify: int) -> None:
        self.notify = notify
        self.by_name: dict[bytes, Service] = {}
        self.by_port: dict[int, set[bytes]] = {}
        self.receivers: set[int] = set()
        self.armed: set[int] = set()

    @staticmethod
    def _type(port: int) -> int:
        t = M.mach_port_type_t()
        return t.value if M.mach_port_type(M.mach_task_self(), port, byref(t)) == M.KERN_SUCCESS else 0

    def lookup(self, name: bytes) -> Service | None:
        """The service bound to ``name``. A port found dead here (its
        notification not handled yet) frees its names now."""
        svc = self.by_name.get(name)
        if svc is not None and svc.port not in self.receivers and self._type(svc.port) & M.MACH_PORT_TYPE_DEAD_NAME:
            self.port_died(svc.port)
            return None
        return svc

    def peek(self, name: bytes) -> Service | None:
        """The service bound to ``name`` as the notifications left it."""
        return self.by_name.get(name)

    def status(self, svc: Service) -> int:
        return M.BOOTSTRAP_STATUS_INACTIVE if svc.port in self.receivers else M.BOOTSTRAP_STATUS_ACTIVE

    def make_port(self) -> int:
        """A new service port: its receive right and one send right, ours.
        Raises NoMemory."""
        task = M.mach_task_self()
        port = M.mach_port_t()
        try:
            kr = M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, byref(port))
            if kr:
                raise NoMemory(M.mach_error_string(kr))
            kr = M.mach_port_insert_right(task, port, port, M.MACH_MSG_TYPE_MAKE_SEND)
            if kr:
                raise NoMemory(M.mach_error_string(kr))
        except OSError as err:
            if port.value:
                M.mach_port_destroy(task, port)
            raise NoMemory(str(err)) from None
        except NoMemory:
            if port.value:
                M.mach_port_destroy(task, port)
            raise
        self.receivers.add(port.value)
        return port.value

    def bind(self, name: bytes, port: int, pid: int, owner: tuple[int, int] = (0, 0)) -> Service:
        """Bind ``name`` to ``port``, taking over one send reference of ours."""
        svc = Service(name, port, pid, owner)
        self.by_name[name] = svc
        self.by_port.setdefault(port, set()).add(name)
        return svc

    def unbind(self, name: bytes) -> None:
        """Unbind ``name`` and release its send reference. A port whose
        receive right we hold is destroyed with its last name."""
        svc = self.by_name.pop(name)
        names = self.by_port.get(svc.port, set())
        names.discard(name)
        task = M.mach_task_self()
        M.mach_port_deallocate(task, svc.port)
        if not names:
            self.by_port.pop(svc.port, None)
            self.armed.discard(svc.port)
            if svc.port in self.receivers:
                self.receivers.discard(svc.port)
                M.mach_port_mod_refs(task, svc.port, M.MACH_PORT_RIGHT_RECEIVE, -1)

    def arm(self, port: int) -> None:
        """Ask for a dead-name notification on ``port`` (once; not while we
        hold its receive right). With sync 1, a port already dead fires at
        once, so a death is never missed."""
        if port in self.armed or port in self.receivers:
            return
        prev = M.mach_port_t()
        try:
            kr = M.mach_port_request_notification(M.mach_task_self(), port, M.MACH_NOTIFY_DEAD_NAME, 1,
                                                  self.notify, M.MACH_MSG_TYPE_MAKE_SEND_ONCE, byref(prev))
        except OSError:
            return  # out of fds: lookup() still finds the port dead when it matters
        if kr == M.KERN_SUCCESS:
            self.armed.add(port)
            if prev.value:
                M.mach_port_deallocate(M.mach_task_self(), prev)
        else:
            self.port_died(port)

    def held_by(self, owner: tuple[int, int]) -> int:
        """The names that count against one client."""
        return sum(1 for svc in self.by_name.values() if svc.owner == owner)

    def sweep(self) -> list[bytes]:
        """Free the names made by create_service whose maker is gone and
        that nobody checked in (nothing else would ever free them)."""
        gone = [svc.name for svc in self.by_name.values()
                if svc.port in self.receivers and svc.owner != (0, 0) and client_key(svc.owner[0]) != svc.owner]
        for name in gone:
            self.unbind(name)
        return gone

    def port_died(self, port: int) -> list[bytes]:
        """``port`` is a dead name: free every name bound to it and release
        the dead name. Returns the names freed."""
        names = self.by_port.pop(port, None)
        if names is None:
            return []
        for n in names:
            self.by_name.pop(n, None)
        self.armed.discard(port)
        M.mach_port_destroy(M.mach_task_self(), port)
        return sorted(names)


@dataclass
class Reply:
    """What a routine answers: a return code, or a port (``port``, given
    with ``disposition``), a status, or the table. ``sent`` runs once the
    reply has gone, ``failed`` if it could not be sent."""

    kr: int
    port: int = 0
    disposition: int = 0
    value: int | None = None
    table: list[tuple[bytes, int, int]] | None = None
    sent: Callable[[], None] | None = None
    failed: Callable[[], None] | None = None


class BootstrapServer:
    """The server's ports (the bootstrap port, the notify port and the
    control port, in one port set), its table, the request loop on the
    calling thread and the rendezvous on a thread of its own."""

    def __init__(self, listener: rendezvous.Listener, log: TextIO | None = None,
                 limits: Limits | None = None) -> None:
        task = M.mach_task_self()
        self.limits = limits or Limits.derive()
        self.uid = os.getuid()
        self.listener = listener
        self.log_to = log
        names = []
        for right in (M.MACH_PORT_RIGHT_RECEIVE,) * 3 + (M.MACH_PORT_RIGHT_PORT_SET,):
            n = M.mach_port_t()
            M.check(M.mach_port_allocate(task, right, byref(n)), "mach_port_allocate")
            names.append(n.value)
        # the bootstrap port; the port dead-name notifications come to; a
        # port of our own (its send right never leaves this process) on
        # which stop() asks the loop to end; the set of the three
        self.port, self.notify, self.control, self.pset = names
        M.check(M.mach_port_insert_right(task, self.control, self.control, M.MACH_MSG_TYPE_MAKE_SEND),
                  "mach_port_insert_right")
        qlimit = M.mach_port_limits_t(M.MACH_PORT_QLIMIT_LARGE)
        M.mach_port_set_attributes(task, self.port, M.MACH_PORT_LIMITS_INFO, byref(qlimit), 1)
        for member in (self.port, self.notify, self.control):
            M.check(M.mach_port_insert_member(task, member, self.pset), "mach_port_insert_member")
        self.table = ServiceTable(self.notify)
        self.routines: dict[int, Callable[[ctypes.Array[ctypes.c_char], int], Reply]] = {
            D.BOOTSTRAP_CHECK_IN_ID: self._check_in,
            D.BOOTSTRAP_REGISTER_ID: self._register,
            D.BOOTSTRAP_LOOK_UP_ID: self._look_up,
            D.BOOTSTRAP_STATUS_ID: self._status,
            D.BOOTSTRAP_CREATE_SERVICE_ID: self._create_service,
            D.BOOTSTRAP_LIST_ID: self._list,
        }
        # the kernel object behind our bootstrap port: the rendezvous hands
        # out its send rights (a SendCap's fds)
        entry = SELF.space.lookup(self.port)
        assert entry is not None
        self._port_object = entry.object
        self._port_object.admit = self._admit_channel  # type: ignore[attr-defined]
        self._stop = False
        self._acceptor = threading.Thread(target=self._accept_loop, name="bootstrap-rendezvous", daemon=True)

    def log(self, text: str) -> None:
        if self.log_to is not None:
            print(f"pymach bootstrap[{os.getpid()}]: {text}", file=self.log_to, flush=True)

    # -- the rendezvous ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        """Conditions: the rendezvous thread, nothing locked; takes the
        bootstrap port's lock around the limit check and make_send_owned (and
        under it the watcher's lock while a no-senders request is armed); sends
        the handshake with nothing locked."""
        while not self._stop:
            try:
                got = rendezvous.accept(self.listener)
            except OSError:
                return  # the listener was closed
            if got is None:
                time.sleep(0.05)  # out of fds: the connection waits in the backlog
                continue
            conn, (pid, uid, _gid) = got
            with conn:
                if uid != self.uid:
                    self.log(f"refused a connection from pid {pid}: uid {uid}")
                    continue
                key = client_key(pid)
                port = self._port_object
                with port.lock:  # type: ignore[attr-defined]
                    why = self._over_rights(key)
                    try:
                        cap = None if why else port.make_send_owned(key)  # type: ignore[attr-defined]
                    except OSError:
                        continue  # out of fds: the client sees the connection close
                if cap is None:
                    self.log(f"refused a connection from pid {pid}: {why}")
                    try:
                        rendezvous.send_busy(conn, why)
                    except OSError:
                        pass
                    continue
                try:
                    rendezvous.send_handshake(conn, cap.wire_fds())
                except OSError:
                    pass
                finally:
                    cap.close()

    def _over_rights(self, key: tuple[int, int]) -> str:
        """Why client ``key`` may not have one more connection ('' if it
        may): the connections it holds (kernel fact: not hung up) against
        its share, and everyone's against the total.

        Conditions: nothing locked, or the bootstrap port's lock
        (_accept_loop, or Port._control through _admit_channel); takes it
        (owned)."""
        counts = self._port_object.owned()  # type: ignore[attr-defined]
        lim = self.limits
        if counts.get(key, 0) >= lim.rights_per_client:
            return f"{lim.rights_per_client} connections per process"
        if sum(counts.values()) >= lim.rights:
            return f"{lim.rights} connections in all"
        return ""

    def _admit_channel(self, owner: object) -> bool:
        """The port's policy for a sender's channel (a new connection that
        joins on one of a client's): counted as that client's.

        Conditions: called by Port._control, with the port's receive lock
        and the port's lock held, on the thread that receives or the watcher
        thread; takes the port's lock again (owned) and writes the log line
        under it."""
        why = self._over_rights(owner)  # type: ignore[arg-type]
        if why:
            self.log(f"refused a channel of pid {owner[0]}: {why}")  # type: ignore[index]
        return not why

    def _over_names(self, pid: int) -> tuple[tuple[int, int], str]:
        """(client key, why it may not hold one more name or '')."""
        key = client_key(pid)
        t, lim = self.table, self.limits
        if t.held_by(key) >= lim.names_per_client:
            return key, f"{lim.names_per_client} names per process"
        if len(t.by_name) >= lim.names:
            for name in t.sweep():
                self.log(f"{D.text(name)!r} is free: its maker is gone and nobody checked in")
            if len(t.by_name) >= lim.names:
                return key, f"{lim.names} names in all"
        return key, ""

    # -- the request loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until the port set dies or stop() is called."""
        self._acceptor.start()
        buf = (ctypes.c_char * _RCV_SIZE)()
        hdr = M.mach_msg_header_t.from_buffer(buf)
        while not self._stop:
            ctypes.memset(buf, 0, _RCV_SIZE)
            kr = M.mach_msg(hdr, M.MACH_RCV_MSG | _AUDIT, 0, _RCV_SIZE, self.pset, M.MACH_MSG_TIMEOUT_NONE, 0)
            if kr == M.MACH_RCV_PORT_CHANGED or kr == M.MACH_RCV_INVALID_NAME:
                return
            if kr:
                continue  # too large (dropped), malformed (dropped)
            trailer = M.mach_msg_audit_trailer_t.from_buffer(buf, hdr.msgh_size)
            if hdr.msgh_local_port == self.notify:
                self._notification(buf, trailer)
            elif hdr.msgh_local_port == self.control:
                if trailer.msgh_audit.val[5] == os.getpid():
                    self._stop = True
                M.mach_msg_destroy(buf)
            else:
                self._request(buf, trailer)

    def stop(self) -> None:
        """Make run() return (from another thread)."""
        self._stop = True
        m = M.mach_msg_empty_send_t()
        m.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0)
        m.header.msgh_size = sizeof(m)
        m.header.msgh_remote_port = self.control
        if M.mach_msg(m.header, M.MACH_SEND_MSG | M.MACH_SEND_TIMEOUT, sizeof(m), 0, 0, 0, 0) != M.KERN_SUCCESS:
            # given back (pseudo-receive): the copied send right with it
            M.mach_msg_destroy(m.header)

    def _notification(self, buf: ctypes.Array[ctypes.c_char], trailer: M.mach_msg_audit_trailer_t) -> None:
        hdr = M.mach_msg_header_t.from_buffer(buf)
        # KERNEL_SECURITY_TOKEN {0, 1} and KERNEL_AUDIT_TOKEN (all zero):
        # the token alone is also what a root process whose gid is 1 shows,
        # but no process has pid 0
        from_kernel = tuple(trailer.msgh_sender.val) == (0, 1) and not any(trailer.msgh_audit.val)
        if (from_kernel and hdr.msgh_id == M.MACH_NOTIFY_DEAD_NAME
                and hdr.msgh_size == sizeof(M.mach_dead_name_notification_t) - sizeof(M.mach_msg_format_0_trailer_t)):
            port = M.mach_dead_name_notification_t.from_buffer(buf).not_port
            if ServiceTable._type(port) & M.MACH_PORT_TYPE_DEAD_NAME:
                for name in self.table.port_died(port):
                    self.log(f"{D.text(name)!r} is free: its port died (dead-name notification)")
            return
        M.mach_msg_destroy(buf)  # port-deleted, send-once: nothing to do

    def _request(self, buf: ctypes.Array[ctypes.c_char], trailer: M.mach_msg_audit_trailer_t) -> None:
        hdr = M.mach_msg_header_t.from_buffer(buf)
        reply_to, reply_kind = hdr.msgh_remote_port, M.MACH_MSGH_BITS_REMOTE(hdr.msgh_bits)
        uid, pid = trailer.msgh_audit.val[1], trailer.msgh_audit.val[5]
        routine = self.routines.get(hdr.msgh_id)
        if not M.MACH_PORT_VALID(reply_to) or reply_kind not in (M.MACH_MSG_TYPE_PORT_SEND_ONCE,
                                                                 M.MACH_MSG_TYPE_PORT_SEND):
            M.mach_msg_destroy(buf)  # a routine with nobody to answer
            return
        if uid != self.uid:
            self.log(f"refused {D.ROUTINE_NAMES.get(hdr.msgh_id, hdr.msgh_id)} from pid {pid}: uid {uid}")
            reply = Reply(M.BOOTSTRAP_NOT_PRIVILEGED)
        elif routine is None:
            reply = Reply(M.MIG_BAD_ID)
        else:
            try:
                reply = routine(buf, pid)
            except NoMemory as err:
                self.log(f"out of resources: {err}")
                reply = Reply(M.BOOTSTRAP_NO_MEMORY)
            except OSError as err:
                self.log(f"{D.ROUTINE_NAMES[hdr.msgh_id]}: {err}")
                reply = Reply(M.BOOTSTRAP_NO_MEMORY if err.errno in _RESOURCE_ERRNOS else M.KERN_FAILURE)
        if routine is None or uid != self.uid or hdr.msgh_id != D.BOOTSTRAP_REGISTER_ID:
            # only register takes a right from the body (and releases what it
            # does not keep); release whatever else a request carries
            self._release_body(buf)
        self._reply(hdr.msgh_id, reply_to, reply_kind, reply)

    def _reply(self, msg_id: int, reply_to: int, reply_kind: int, r: Reply) -> None:
        """Send the reply (MACH_SEND_TIMEOUT 0: a client that does not read
        never blocks us); release the reply right if it could not go."""
        bits = M.MACH_MSGH_BITS(reply_kind, 0)
        if r.kr:
            err = M.mig_reply_error_t(RetCode=r.kr)
            err.NDR = M.NDR_record_t.from_buffer_copy(D.NDR_RECORD)
            err.Head.msgh_bits, err.Head.msgh_size = bits, sizeof(err)
            err.Head.msgh_remote_port, err.Head.msgh_id = reply_to, msg_id + D.REPLY_ID_OFFSET
            data = bytes(err)
        elif r.value is not None:
            data = BMIG.bootstrap_status_reply.pack(msgh_bits=bits, msgh_remote_port=reply_to, RetCode=0,
                                                    service_active=r.value)
        elif r.table is not None:
            records = (D.bootstrap_service_info_t * max(1, len(r.table)))()
            for i, (name, status, pid) in enumerate(r.table):
                records[i].service_name = name
                records[i].service_active = status
                records[i].pid = pid
            # (``records`` lives until this function returns: the send copies it)
            data = BMIG.bootstrap_list_reply.pack(
                msgh_bits=bits | M.MACH_MSGH_BITS_COMPLEX, msgh_remote_port=reply_to,
                services=ctypes.addressof(records) if r.table else 0,
                services_size=sizeof(D.bootstrap_service_info_t) * len(r.table), servicesCnt=len(r.table))
        elif r.disposition:
            data = _PORT_REPLIES[msg_id].pack(msgh_bits=bits | M.MACH_MSGH_BITS_COMPLEX, msgh_remote_port=reply_to,
                                              service_port=r.port, service_port_disposition=r.disposition)
        else:
            data = BMIG.bootstrap_register_reply.pack(msgh_bits=bits, msgh_remote_port=reply_to, RetCode=0,
                                                   msgh_id=msg_id + D.REPLY_ID_OFFSET)
        msg = ctypes.create_string_buffer(data, len(data))
        kr = M.mach_msg(msg, M.MACH_SEND_MSG | M.MACH_SEND_TIMEOUT, len(data), 0, 0, 0, 0)
        if kr == M.KERN_SUCCESS:
            if r.sent is not None:
                r.sent()
            return
        self.log(f"could not reply to {D.ROUTINE_NAMES.get(msg_id, msg_id)}: {M.mach_error_string(kr)}")
        if r.failed is not None:
            r.failed()
        if msg.raw != data:
            # XNU's pseudo-receive gave the reply back in received form
            # (MACH_SEND_TIMED_OUT: its rights are ours again, the
            # send-once right under a new name): destroy it as such
            M.mach_msg_destroy(msg)
            return
        if kr == M.MACH_SEND_NO_BUFFER and not r.kr:
            # the answer's right could not be made (out of fds): say so
            self._reply(msg_id, reply_to, reply_kind, Reply(M.BOOTSTRAP_NO_MEMORY))
            return
        M.mach_port_deallocate(M.mach_task_self(), reply_to)

    # -- the routines -------------------------------------------------------------------------------------

    @staticmethod
    def _name_of(buf: ctypes.Array[ctypes.c_char], msg: BMIG.Message) -> tuple[int, bytes, dict[str, Any]]:
        """(kr, name, values) of a request that the generated Message
        ``msg`` lays out: MIG's size and shape checks (MIG_BAD_ARGUMENTS),
        then the name rule (a name field with no NUL is MIG_BAD_ARGUMENTS,
        an empty one KERN_INVALID_ARGUMENT)."""
        hdr = M.mach_msg_header_t.from_buffer(buf)
        if hdr.msgh_size != msg.size or bool(hdr.msgh_bits & M.MACH_MSGH_BITS_COMPLEX) != msg.complex:
            return M.MIG_BAD_ARGUMENTS, b"", {}
        values = msg.unpack(buf)
        field = values["service_name"]
        name = D.decode_field(field)
        if name is None:
            return (M.KERN_INVALID_ARGUMENT if field[:1] == b"\0" else M.MIG_BAD_ARGUMENTS), b"", values
        return M.KERN_SUCCESS, name, values

    def _check_in(self, buf: ctypes.Array[ctypes.c_char], pid: int) -> Reply:
        """bootstrap_check_in: the receive right, made now for a new name.

        BOOTSTRAP_SUCCESS, BOOTSTRAP_SERVICE_ACTIVE, BOOTSTRAP_NO_MEMORY,
        KERN_INVALID_ARGUMENT, MIG_BAD_ARGUMENTS."""
        kr, name, _ = self._name_of(buf, BMIG.bootstrap_check_in_request)
        if kr:
            return Reply(kr)
        t = self.table
        key, why = self._over_names(pid)  # (first: it may free names)
        svc = t.lookup(name)
        if svc is not None and svc.port not in t.receivers:
            self.log(f"check_in {D.text(name)!r} by pid {pid}: already active (pid {svc.pid or '-'})")
            return Reply(M.BOOTSTRAP_SERVICE_ACTIVE)
        fresh = svc is None
        if why and (svc is None or svc.owner != key):
            self.log(f"check_in {D.text(name)!r} by pid {pid}: refused, {why}")
            return Reply(M.BOOTSTRAP_NO_MEMORY)
        if svc is None:
            svc = t.bind(name, t.make_port(), 0, key)
        port = svc.port

        def sent() -> None:
            t.receivers.discard(port)
            svc.pid, svc.owner = pid, key
            t.arm(port)
            self.log(f"check_in {D.text(name)!r} by pid {pid}")

        def failed() -> None:
            if fresh:
                t.unbind(name)

        return Reply(M.KERN_SUCCESS, port, M.MACH_MSG_TYPE_MOVE_RECEIVE, sent=sent, failed=failed)

    def _create_service(self, buf: ctypes.Array[ctypes.c_char], pid: int) -> Reply:
        """bootstrap_create_service: reserve the name; a send right.

        BOOTSTRAP_SUCCESS, BOOTSTRAP_NAME_IN_USE, BOOTSTRAP_NO_MEMORY,
        KERN_INVALID_ARGUMENT, MIG_BAD_ARGUMENTS."""
        kr, name, _ = self._name_of(buf, BMIG.bootstrap_create_service_request)
        if kr:
            return Reply(kr)
        t = self.table
        if t.lookup(name) is not None:
            return Reply(M.BOOTSTRAP_NAME_IN_USE)
        key, why = self._over_names(pid)
        if why:
            self.log(f"create_service {D.text(name)!r} by pid {pid}: refused, {why}")
            return Reply(M.BOOTSTRAP_NO_MEMORY)
        svc = t.bind(name, t.make_port(), 0, key)
        self.log(f"create_service {D.text(name)!r} by pid {pid}")
        return Reply(M.KERN_SUCCESS, svc.port, M.MACH_MSG_TYPE_COPY_SEND)

    def _look_up(self, buf: ctypes.Array[ctypes.c_char], pid: int) -> Reply:
        """bootstrap_look_up: a send right.

        BOOTSTRAP_SUCCESS, BOOTSTRAP_UNKNOWN_SERVICE,
        KERN_INVALID_ARGUMENT, MIG_BAD_ARGUMENTS."""
        kr, name, _ = self._name_of(buf, BMIG.bootstrap_look_up_request)
        if kr:
            return Reply(kr)
        svc = self.table.lookup(name)
        if svc is None:
            return Reply(M.BOOTSTRAP_UNKNOWN_SERVICE)
        return Reply(M.KERN_SUCCESS, svc.port, M.MACH_MSG_TYPE_COPY_SEND)

    def _status(self, buf: ctypes.Array[ctypes.c_char], pid: int) -> Reply:
        """bootstrap_status, as the notifications left the table.

        BOOTSTRAP_SUCCESS, BOOTSTRAP_UNKNOWN_SERVICE,
        KERN_INVALID_ARGUMENT, MIG_BAD_ARGUMENTS."""
        kr, name, _ = self._name_of(buf, BMIG.bootstrap_status_request)
        if kr:
            return Reply(kr)
        svc = self.table.peek(name)
        if svc is None:
            return Reply(M.BOOTSTRAP_UNKNOWN_SERVICE)
        return Reply(M.KERN_SUCCESS, value=self.table.status(svc))

    def _register(self, buf: ctypes.Array[ctypes.c_char], pid: int) -> Reply:
        """bootstrap_register: bind the name to the send right carried.

        BOOTSTRAP_SUCCESS, BOOTSTRAP_SERVICE_ACTIVE, BOOTSTRAP_NO_MEMORY (the limits),
        KERN_INVALID_ARGUMENT,
        MIG_BAD_ARGUMENTS, MIG_TYPE_ERROR (the descriptor is not a send
        right)."""
        kr, name, v = self._name_of(buf, BMIG.bootstrap_register_request)
        right = v.get("service_port", 0)
        if not kr and (v["msgh_body"] != 1 or v["service_port_type"] != M.MACH_MSG_PORT_DESCRIPTOR or (
                M.MACH_PORT_VALID(right) and v["service_port_disposition"] != M.MACH_MSG_TYPE_PORT_SEND)):
            kr = M.MIG_TYPE_ERROR
        if kr:
            self._release_body(buf)
            return Reply(kr)
        t = self.table
        key, why = self._over_names(pid)  # (first: it may free names)
        svc = t.lookup(name)
        if svc is not None and svc.port not in t.receivers:
            self._release_body(buf)
            self.log(f"register {D.text(name)!r} by pid {pid}: already active (pid {svc.pid or '-'})")
            return Reply(M.BOOTSTRAP_SERVICE_ACTIVE)
        if why and M.MACH_PORT_VALID(right) and (svc is None or svc.owner != key):
            self._release_body(buf)
            self.log(f"register {D.text(name)!r} by pid {pid}: refused, {why}")
            return Reply(M.BOOTSTRAP_NO_MEMORY)
        if svc is not None:
            t.unbind(name)  # declared, not checked in: the new right replaces it
        if not M.MACH_PORT_VALID(right):
            self.log(f"register {D.text(name)!r} by pid {pid}: " + ("removed" if svc else "nothing to bind"))
            return Reply(M.KERN_SUCCESS)
        t.bind(name, right, pid, key)
        t.arm(right)
        self.log(f"register {D.text(name)!r} by pid {pid}")
        return Reply(M.KERN_SUCCESS)

    @staticmethod
    def _release_body(buf: ctypes.Array[ctypes.c_char]) -> None:
        """Release the rights of a request's body, keeping its reply right."""
        hdr = M.mach_msg_header_t.from_buffer(buf)
        remote = hdr.msgh_remote_port
        hdr.msgh_remote_port = 0
        M.mach_msg_destroy(buf)
        hdr.msgh_remote_port = remote

    def _list(self, buf: ctypes.Array[ctypes.c_char], pid: int) -> Reply:
        """bootstrap_list (pymach's): every name, its status and its pid.

        BOOTSTRAP_SUCCESS, MIG_BAD_ARGUMENTS."""
        hdr = M.mach_msg_header_t.from_buffer(buf)
        if hdr.msgh_size != BMIG.bootstrap_list_request.size or hdr.msgh_bits & M.MACH_MSGH_BITS_COMPLEX:
            return Reply(M.MIG_BAD_ARGUMENTS)
        t = self.table
        rows = [(svc.name, t.status(svc), svc.pid) for svc in sorted(t.by_name.values(), key=lambda s: s.name)]
        return Reply(M.KERN_SUCCESS, table=rows)

    def close(self) -> None:
        """Destroy our ports (clients see the bootstrap port die)."""
        self._stop = True
        task = M.mach_task_self()
        for name in list(self.table.by_name):
            self.table.unbind(name)
        for n in (self.pset, self.notify, self.control, self.port):
            M.mach_port_destroy(task, n)


def _raise_fd_limit() -> None:
    try:
        process.raise_fd_limit()
    except (ValueError, OSError):
        pass


def _stop_on_signals(server: BootstrapServer) -> None:
    """SIGTERM and SIGINT end the loop cleanly. They are blocked in every
    thread (threads made later inherit the mask) and taken by one thread
    with sigwait, which asks the loop to stop with a message: an exception
    raised from a Python signal handler could land anywhere, even in a
    finalizer that swallows it."""
    sigs = {process.SIGTERM, process.SIGINT}
    process.block_signals(sigs)

    def wait() -> None:
        process.take_signal(sigs)
        server.stop()

    threading.Thread(target=wait, name="bootstrap-signals", daemon=True).start()


def serve(path: str | None = None, *, daemonize: bool = False, ready_fd: int | None = None,
          verbose: bool = False, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
          limits: dict[str, int | None] | None = None) -> int:
    """Run the bootstrap server for ``path`` (default: the rendezvous's
    socket_path()) until SIGTERM or SIGINT. With ``daemonize`` it forks
    into the background once it listens (the autostart's way). ``ready_fd``
    gets "ready" once clients can connect, or "running" when another
    server already serves the path. Returns the exit status: 0, 1 (another
    server runs, or an error), 2 (the path is refused)."""
    private = False
    if path is None:
        path, private = rendezvous.socket_path()
    try:
        listener = rendezvous.Listener(path, private)
    except rendezvous.AlreadyRunning:
        up = rendezvous.wait_connectable(path, rendezvous.TIMEOUT)
        if ready_fd is not None:
            if up:
                files.write(ready_fd, b"running\n")
            files.close(ready_fd)
        print(f"pymach bootstrap: a server already serves {path}", file=err)
        return 0 if daemonize and up else 1
    except rendezvous.Refused as e:
        print(f"pymach bootstrap: refusing to serve {path}: {e}", file=err)
        return 2
    except OSError as e:
        print(f"pymach bootstrap: cannot serve {path}: {e}", file=err)
        return 1
    if daemonize:
        if process.fork():
            process.exit_now(0)  # the parent: its copy of the listener goes with it
        os.chdir("/")
        files.stdio_to_devnull()
    _raise_fd_limit()
    lim = Limits.derive(**(limits or {}))
    server = BootstrapServer(listener, err if verbose and not daemonize else None, lim)
    server.log(f"limits: {lim.names_per_client} names and {lim.rights_per_client} connections per process, "
               f"{lim.names} names and {lim.rights} connections in all")
    _stop_on_signals(server)
    try:
        listener.listen()
        if ready_fd is not None:
            files.write(ready_fd, b"ready\n")
            files.close(ready_fd)
        if not daemonize:
            print(f"pymach bootstrap: serving {path} (pid {os.getpid()})", file=out, flush=True)
        server.run()
    finally:
        server.close()
        listener.close()
    return 0
