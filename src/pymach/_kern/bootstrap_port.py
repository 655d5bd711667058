"""This task's bootstrap port: what the name BOOTSTRAP_PORT_NAME (0x303,
``bootstrap_port`` in pymach.mach) stands for, how it gets connected, and
how it reconnects when its server dies.

The task's IPC space (kern.task.TaskSpace) keeps the name for it, and a
lookup of the name while it holds no right calls ``Connection.fill``:

- from TASK_BOOTSTRAP_PORT when the task has one (inherited across fork
  and by pymach.spawn) and its port lives;
- else through the rendezvous socket (pymach._linux.rendezvous), starting
  the server first if nobody serves it, unless PYMACH_NO_AUTOSTART=1. A
  port got this way becomes the task's TASK_BOOTSTRAP_PORT, as launchd
  gives every process one, so that children inherit it.

When no server can be reached the name holds nothing: its uses fail as a
name that denotes nothing does, each use tries again, and ``error()`` says
why. ``connect()`` gives the code: MACH_SEND_INVALID_DEST when no server
can be reached, BOOTSTRAP_NOT_PRIVILEGED when the rendezvous is not
trustworthy, BOOTSTRAP_NO_MEMORY when the server's limits refuse us.

When the bootstrap port turns out dead (its server was killed, perhaps
restarted), ``call`` reconnects once and runs the routine again; so does
task_get_special_port(TASK_BOOTSTRAP_PORT). The new connection gets a fresh
name; the old one stays ours as a dead name (a port never comes back to
life), and is still routed to the bootstrap port.

It also keeps the reply port each thread uses for the bootstrap routines,
as MIG's mig_get_reply_port does (libsyscall/mach/mig_reply_port.c).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Final

from .._linux import files, rendezvous
from . import ipc_right as R
from . import kern_return as K
from .ipc_port import LOCAL_SENDS, SendCap
from .ipc_space import MACH_PORT_RIGHT_RECEIVE, MACH_PORT_TYPE_DEAD_NAME, MACH_PORT_TYPE_SEND, IpcEntry
from . import task as KT
from .task import BOOTSTRAP_PORT_NAME, TASK_BOOTSTRAP_PORT

# <servers/bootstrap.h>: the codes a connection of the bootstrap port gives
# besides those of the kernel
BOOTSTRAP_NOT_PRIVILEGED: Final = 1100
BOOTSTRAP_NO_MEMORY: Final = 1105


def _type(name: int) -> int:
    """mach_port_type of ``name`` in our space; 0 when it names nothing."""
    try:
        return R.type_of(KT.SELF.space, name)
    except OSError:
        return 0


class Connection:
    """This process's bootstrap port.

    ``name`` is its name while connected (one user reference is ours):
    bootstrap_port, or after a reconnect a fresh name. ``stale`` holds the
    names it had before: dead names we keep, so that they are not reused and
    still route to the bootstrap port. ``set_special``: we set
    TASK_BOOTSTRAP_PORT to it ourselves. ``changed``: the program set
    TASK_BOOTSTRAP_PORT, which then is no longer what bootstrap_port
    connects from. ``error`` says why the last connection failed.

    The space's lock guards all of it, so that a lookup of bootstrap_port
    (made under that lock or not) and the routines agree on one connection;
    ``busy`` marks this thread's work inside, during which a lookup of
    bootstrap_port does not connect again."""

    def __init__(self) -> None:
        self.name = 0
        self.stale: set[int] = set()
        self.set_special = False
        self.changed = False
        self.busy = False
        self.error = ""

    def forked(self) -> None:
        # the names were the parent's; TASK_BOOTSTRAP_PORT is inherited and
        # is what the child's bootstrap_port connects from
        """Conditions: a fork child, in the forking thread."""
        self.name = 0
        self.stale = set()
        self.set_special = False
        self.changed = False
        self.busy = False

    @contextlib.contextmanager
    def _locked(self) -> Iterator[bool]:
        """Hold the space's lock; True unless this thread is inside already.

        Conditions: the space's lock may be held by this thread (it is
        reentrant); held on return until the block ends. The block may wait
        under it for the rendezvous, the handshake and an autostarted
        server (_connect: about 50 s at most)."""
        with KT.SELF.space.lock:
            outer = not self.busy
            self.busy = True
            try:
                yield outer
            finally:
                if outer:
                    self.busy = False

    def fill(self, name: int) -> IpcEntry | None:
        """A lookup of bootstrap_port found no right under it: connect (see
        the module's docstring). Its entry, or None.

        Conditions: called by TaskSpace.lookup, with or without the space's
        lock, and no other; takes it, and may wait under it as _connect
        does."""
        with self._locked() as outer:
            if not outer:
                return None
            space = KT.SELF.space
            e = space.peek(name)
            if e is None:  # (else another thread connected it meanwhile)
                kr, current = self._get()
                if kr or current != name:
                    return None
                e = space.peek(name)
            return e

    def get(self) -> tuple[int, int]:
        """(kr, name): the bootstrap port, connected if need be.

        Conditions: no lock but the space's may be held; takes the space's
        lock, and may wait under it as fill does."""
        with self._locked():
            return self._get()

    def _get(self) -> tuple[int, int]:
        """Conditions: the space's lock is held (_locked); may wait as fill
        does."""
        if self.name and KT.SELF.space.peek(self.name) is None:
            self.name = 0  # the program released every reference to it
        if not self.name:
            kr = self._connect()
            if kr:
                return kr, 0
        return K.KERN_SUCCESS, self.name

    def _connect(self) -> int:
        """Conditions: the space's lock is held (_locked); waits for the
        rendezvous, the handshake and an autostarted server, up to about 50
        s."""
        fds: list[int] | None = None
        special = None if self.changed else KT.SELF.special.get(TASK_BOOTSTRAP_PORT)
        if isinstance(special, SendCap) and not special.dead():
            try:
                fds = special.dup().detach_fds()
            except OSError as err:
                self.error = f"cannot copy TASK_BOOTSTRAP_PORT: {err}"
                return K.kr_from_oserror(err)
        inherited = fds is not None
        if fds is None:
            path, private = rendezvous.socket_path()
            try:
                try:
                    fds, _pid = rendezvous.connect(path, private)
                except rendezvous.NoServer:
                    if not rendezvous.autostart_enabled():
                        raise
                    rendezvous.autostart()
                    fds, _pid = rendezvous.connect(path, private)
            except rendezvous.NoServer as err:
                self.error = str(err) + ("" if rendezvous.autostart_enabled()
                                         else f" (autostart is off: {rendezvous.NO_AUTOSTART_ENV} is set)")
                return K.MACH_SEND_INVALID_DEST
            except rendezvous.Refused as err:
                self.error = f"refusing the bootstrap rendezvous: {err}"
                return BOOTSTRAP_NOT_PRIVILEGED
            except rendezvous.Busy as err:
                self.error = str(err)
                return BOOTSTRAP_NO_MEMORY
            except OSError as err:
                self.error = f"cannot reach the bootstrap server at {path}: {err}"
                return K.MACH_SEND_INVALID_DEST
        try:
            self.name = self._install(fds)
        except OSError as err:
            self.error = f"cannot install the bootstrap port: {err}"
            return K.kr_from_oserror(err)
        self.error = ""
        if not inherited and not self.changed:
            # as launchd gives every process its bootstrap port: children inherit it
            e = KT.SELF.space.peek(self.name)
            if e is not None and isinstance(e.cap, SendCap):
                try:
                    KT.SELF.set_special(TASK_BOOTSTRAP_PORT, e.cap.dup())
                    self.set_special = True
                except OSError:
                    pass  # no fd for the copy: children connect on their own
        return K.KERN_SUCCESS

    @staticmethod
    def _install(fds: list[int]) -> int:
        """Install a send right to the bootstrap port under bootstrap_port
        while that name is free, else as any send right arrives.

        Conditions: nothing locked, or the space's lock held by this thread;
        takes it."""
        space = KT.SELF.space
        with space.lock:
            ino = files.inode(fds[0])
            if space.peek(BOOTSTRAP_PORT_NAME) is None and not space.name_for(("ino", ino)) \
                    and ino not in LOCAL_SENDS:
                cap = SendCap.adopt(fds)
                space.install_reserved(cap, MACH_PORT_TYPE_SEND, 1, ("ino", cap.ino)).cap = cap
                return BOOTSTRAP_PORT_NAME
            return R.copyout_send(space, fds, False)

    def ours(self, name: int) -> bool:
        """Conditions: nothing locked; reads ``name`` and ``stale`` without the
        space's lock."""
        return name != 0 and (name == self.name or name in self.stale)

    def route(self, name: int) -> int:
        """The name to send to for ``name``: a stale bootstrap name goes to
        the current bootstrap port.

        Conditions: nothing locked; for a stale name takes the space's lock
        (and may connect, as fill)."""
        if not name or name not in self.stale:
            return name
        with self._locked():
            return self._get()[1] if name in self.stale else name

    def reconnect(self, dead: int) -> int:
        """The bootstrap port ``dead`` turned out dead: connect afresh
        (once per call of a routine). Returns the new name, or 0.

        Conditions: no lock but the space's may be held; takes the space's
        lock; may wait under it as fill does."""
        with self._locked():
            if self.name and self.name != dead:
                return self.name  # another thread has reconnected already
            if self.name:
                self.stale.add(self.name)
                self.name = 0
            if self.set_special:
                KT.SELF.set_special(TASK_BOOTSTRAP_PORT, None)
                self.set_special = False
            return self.name if self._connect() == K.KERN_SUCCESS else 0

    def special_name(self) -> int:
        """task_get_special_port(TASK_BOOTSTRAP_PORT): a send right to the
        task's bootstrap port under the name the space has for it, one more
        user reference. While it is the port bootstrap_port connects from
        (the program has not set it), it is connected first, or reconnected
        if its server died. MACH_PORT_NULL when the task has none.

        Conditions: no lock but the space's may be held; takes the space's
        lock; may wait under it as fill does."""
        with self._locked():
            if not self.changed:
                kr, name = self._get()
                if kr == K.KERN_SUCCESS and _type(name) & MACH_PORT_TYPE_DEAD_NAME:
                    self.reconnect(name)
            cap = KT.SELF.special.get(TASK_BOOTSTRAP_PORT)
            if not isinstance(cap, SendCap):
                return 0
            return R.copyout_send(KT.SELF.space, cap.dup().detach_fds(), False)

    def special_changing(self) -> None:
        """The program is about to set TASK_BOOTSTRAP_PORT: bootstrap_port
        keeps standing for the port it was given (an inherited one is taken
        now); later connections of it go through the socket and leave the
        special port alone.

        Conditions: nothing locked, or the space's lock; takes it."""
        with self._locked():
            if not self.changed and not self.name:
                special = KT.SELF.special.get(TASK_BOOTSTRAP_PORT)
                if isinstance(special, SendCap) and not special.dead():
                    try:
                        self.name = self._install(special.dup().detach_fds())
                    except OSError:
                        pass  # then it connects through the socket on first use
            self.changed = True
            self.set_special = False

    def disconnect(self) -> None:
        """Release the bootstrap port and the dead names it left; clear
        TASK_BOOTSTRAP_PORT if we set it; forget that the program set it.

        Conditions: nothing locked, or the space's lock; takes it."""
        with self._locked():
            for name in [self.name, *self.stale]:
                if name:
                    try:
                        R.deallocate(KT.SELF.space, name)
                    except OSError:
                        pass  # released by the program already
            if self.set_special:
                KT.SELF.set_special(TASK_BOOTSTRAP_PORT, None)
            self.name, self.stale, self.set_special, self.changed = 0, set(), False, False


CONNECTION: Final = Connection()
KT.SELF.bootstrap = CONNECTION
os.register_at_fork(after_in_child=CONNECTION.forked)


def connect() -> tuple[int, int]:
    """(kr, name): connect the bootstrap port if need be. KERN_SUCCESS,
    MACH_SEND_INVALID_DEST (no server: none listens and autostart is off or
    failed), BOOTSTRAP_NOT_PRIVILEGED (the rendezvous belongs to someone
    else), BOOTSTRAP_NO_MEMORY (the server's limits); the name is 0 on
    failure.

    Conditions: nothing locked; takes the space's lock; may wait under it as
    Connection.fill does."""
    return CONNECTION.get()


def error() -> str:
    """Why the last connection of the bootstrap port failed ('' if it did
    not): the path, and what was wrong with it.

    Conditions: nothing locked; reads without a lock."""
    return CONNECTION.error


def call(bp: int, exchange: Callable[[int], int]) -> int:
    """``exchange(dest)`` (a routine's request and reply) with the bootstrap
    port ``bp``; its code. A stale name of ours goes to the current
    bootstrap port. When ``bp`` is this process's bootstrap port and turns
    out dead (the send fails with MACH_SEND_INVALID_DEST, or the reply right
    dies with the port: MIG_SERVER_DIED on a name that is now dead),
    connect afresh once and run the exchange again.

    Conditions: nothing locked; takes the space's lock (route, reconnect)
    and runs ``exchange`` with nothing locked."""
    dest = CONNECTION.route(bp)
    kr = exchange(dest)
    if CONNECTION.ours(dest) and (kr == K.MACH_SEND_INVALID_DEST or (
            kr == K.MIG_SERVER_DIED and _type(dest) & MACH_PORT_TYPE_DEAD_NAME)):
        fresh = CONNECTION.reconnect(dest)
        if fresh:
            kr = exchange(fresh)
    return kr


# -- the routines' reply ports ------------------------------------------------------------

_REPLY = threading.local()  # .port: this thread's reply port


def _forget_reply_port() -> None:
    # a fork child: only the forking thread lives on, and the reply port it
    # held was its parent's (forgetting it here spares every call a getpid)
    _REPLY.port = 0


os.register_at_fork(after_in_child=_forget_reply_port)
# (pid, name) of every thread's, for disconnect; guarded by the space's
# lock (a fork child has a space of its own, hence a lock of its own)
_REPLIES: list[tuple[int, int]] = []


def reply_port() -> int:
    """This thread's reply port, made once (MIG's mig_get_reply_port); a
    fork child makes its own. 0 when none can be made.

    Conditions: nothing locked; takes the space's lock."""
    cached: int = getattr(_REPLY, "port", 0)
    if cached:
        return cached
    try:
        name = R.allocate(KT.SELF.space, MACH_PORT_RIGHT_RECEIVE)
    except OSError:
        return 0
    _REPLY.port = name
    with KT.SELF.space.lock:
        _REPLIES.append((os.getpid(), name))
    return name


def reply_port_name() -> int:
    """The name of the reply port this thread last made, or 0."""
    return getattr(_REPLY, "port", 0)


def discard_reply_port(name: int) -> None:
    """An exchange on this thread's reply port failed: a reply may still
    come to it, so it is destroyed and the next call makes another.

    Conditions: nothing locked; takes the space's lock."""
    _REPLY.port = 0
    pid = os.getpid()
    with KT.SELF.space.lock:
        _REPLIES[:] = [(p, r) for p, r in _REPLIES if (p, r) != (pid, name)]
    _destroy(name)


def _destroy(name: int) -> None:
    try:
        R.destroy(KT.SELF.space, name)
    except OSError:
        pass  # destroyed by the program already


def disconnect() -> None:
    """Release the bootstrap port (and TASK_BOOTSTRAP_PORT if connecting
    set it), the dead names it left and every thread's reply port; the next
    use of bootstrap_port connects afresh.

    Conditions: nothing locked; takes the space's lock."""
    CONNECTION.disconnect()
    with KT.SELF.space.lock:
        ports, _REPLIES[:] = list(_REPLIES), []
    for pid, name in ports:
        if pid == os.getpid():
            _destroy(name)
    _REPLY.port = 0
