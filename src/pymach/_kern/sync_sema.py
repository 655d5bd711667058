"""Semaphores (XNU's osfmk/kern/sync_sema.c): a count that threads of any
task wait on and signal, held as a send right to a kernel object.

A semaphore here is three fds, which travel together in a message
(KIND_SEMAPHORE) and are shared by every task that holds the right:

- ``count_fd``, an EFD_SEMAPHORE eventfd: the count. semaphore_signal
  writes 1; a wait takes 1 with a nonblocking read, which is atomic: a
  waiter that never read took nothing, so a waiter killed with SIGKILL
  while it waits loses no signal that another waiter could have had.
- ``wake_fd``, an eventfd that is written and never read: every waiter
  watches it edge-triggered, so each write wakes every waiter once. It
  carries what is not a count: semaphore_signal_all, semaphore_destroy
  and semaphore_signal_thread.
- ``state_fd``, a memfd of one page, mapped shared by every holder:

  ======  =========================================================
  word 0  1 once the semaphore is destroyed (KERN_TERMINATED for all)
  word 1  the generation of semaphore_signal_all: a waiter that sees
          it change since it began to wait returns KERN_SUCCESS
  word 2  the owner task's pid (semaphore_destroy by the owner only)
  word 3  the high-water mark of the waiter slots
  4 + 2i  waiter slot i: the thread id of the waiter
  5 + 2i  waiter slot i: 1 when semaphore_signal_thread chose it
  ======  =========================================================

A waiter that blocks holds slot i by an open file description lock on
byte SLOT_LOCK + i of the memfd (each process locks through a description
of its own); the kernel drops the lock when the waiter's process dies.
So the waiters are counted by the kernel, never by a word that a killed
waiter would leave wrong. The slots, the generation and the handoff words
change under the mutex: a lock on byte MUTEX_LOCK, and within a process a
threading lock (threads of one process share its description).

XNU's semaphore count goes negative as threads wait; here the count stays
in the eventfd and the waiters in the slots. semaphore_signal with no
waiter leaves the count raised (XNU's SEMAPHORE_SIGNAL_PREPOST), with
waiters it wakes one, which takes it.
"""

from __future__ import annotations

import threading
import time
import weakref

from .._linux import eventfd, files, sema
from . import kern_return as K
from . import ipc_right as R
from . import task_user as TU
from .ipc_space import MACH_PORT_TYPE_SEND, IpcEntry
from .task import SELF, Task

# <mach/sync_policy.h>
SYNC_POLICY_FIFO = 0x0
SYNC_POLICY_FIXED_PRIORITY = 0x1
SYNC_POLICY_REVERSED = 0x2
SYNC_POLICY_ORDER_MASK = 0x3
SYNC_POLICY_LIFO = SYNC_POLICY_FIFO | SYNC_POLICY_REVERSED
SYNC_POLICY_PREPOST = 0x4
SYNC_POLICY_USER_MASK = SYNC_POLICY_FIFO | SYNC_POLICY_LIFO | SYNC_POLICY_PREPOST

_DESTROYED, _GEN, _OWNER, _HIWATER, _SLOT0 = 0, 1, 2, 3, 4
SLOTS = 256  # waiters that may block on one semaphore at once
MUTEX_LOCK = sema.PAGE  # the lock offsets lie past the page (past EOF)
SLOT_LOCK = sema.PAGE + 1
NSEC_PER_SEC = 1_000_000_000
INT_MAX = 0x7FFFFFFF

# semaphores pickled for pymach.spawn: their fds go down to the program
_PICKLED: "weakref.WeakSet[Semaphore]" = weakref.WeakSet()


def _err(kr: int, what: str) -> K.MachError:
    return K.MachError(kr, what)


class Semaphore:
    """The kernel object: its three fds and this process's view of them."""

    __slots__ = ("count_fd", "wake_fd", "state_fd", "ino", "_page", "_lock_fd", "_mutex", "_mine",
                 "_users", "_closing", "_pool", "__weakref__")

    def __init__(self, count_fd: int, wake_fd: int, state_fd: int) -> None:
        """Take over the three fds (closed on failure). KERN_RESOURCE_SHORTAGE
        when the state page cannot be mapped."""
        self.count_fd, self.wake_fd, self.state_fd = count_fd, wake_fd, state_fd
        self._lock_fd = -1
        self._mutex = threading.Lock()
        self._mine: dict[int, int] = {}  # slots our threads hold: slot -> tid
        # calls under way in this process (use/done): the fds and the page
        # stay until the last ends, when the right goes meanwhile (close)
        self._users = 0
        self._closing = False
        # epoll instances of waits that ended, for the next (Wait): an
        # instance costs four system calls to make and set up
        self._pool: list[sema.Waiting] = []
        try:
            self.ino = files.inode(state_fd)
            self._page = sema.Page(state_fd)
        except OSError as err:
            files.close_all([count_fd, wake_fd, state_fd])
            self.count_fd = self.wake_fd = self.state_fd = -1
            raise _err(K.kr_from_oserror(err), "the semaphore's state") from err

    @classmethod
    def create(cls, value: int, owner_pid: int) -> "Semaphore":
        """A new semaphore holding ``value``, owned by ``owner_pid``."""
        fds: list[int] = []
        try:
            fds.append(eventfd.semaphore(value))
            fds.append(eventfd.counter(0))
            fds.append(sema.state_memfd("mach.semaphore"))
        except OSError as err:
            files.close_all(fds)
            raise _err(K.kr_from_oserror(err), "semaphore_create") from err
        s = cls(*fds)
        s._page.words[_OWNER] = owner_pid
        return s

    # -- as a right in a space and in a message

    def key(self) -> tuple[str, int]:
        """What makes two handles the same semaphore: they coalesce when
        one arrives in a message."""
        return ("semaphore", self.ino)

    def wire_fds(self) -> list[int]:
        return [self.count_fd, self.wake_fd, self.state_fd]

    @classmethod
    def from_wire(cls, fds: list[int]) -> "Semaphore":
        """The semaphore a record carries (check_wire has passed; the fds
        are taken over)."""
        return cls(fds[0], fds[1], fds[2])

    def count(self) -> int | None:
        """The count, read without taking it (None: unreadable)."""
        return eventfd.count(self.count_fd)

    def held_fds(self) -> list[int]:
        """Every fd this handle holds: the three, our lock description,
        the epoll instances of waits that ended."""
        return [*self.wire_fds(), self._lock_fd, *(w.fileno() for w in list(self._pool))]

    def owner(self) -> int:
        return int(self._page.words[_OWNER])

    def destroyed(self) -> bool:
        return bool(self._page.words[_DESTROYED])

    def use(self) -> None:
        """A call begins: close() waits for its done().

        Conditions: the space's lock is held (translate)."""
        self._users += 1

    def done(self) -> None:
        """A call ends; the handle closes now if the right went meanwhile.

        Conditions: takes the space's lock."""
        with SELF.space.lock:
            self._users -= 1
            if not self._closing or self._users:
                return
        self._close()

    def close(self) -> None:
        """Drop this process's handle (not destroy: other holders keep it),
        once the calls under way have ended.

        Conditions: the space's lock is held (the right is dropped under it)."""
        if self._users:
            self._closing = True
            return
        self._close()

    def _close(self) -> None:
        pool, self._pool = self._pool, []
        for waiting in pool:
            waiting.close()
        self._page.close()
        fds = [fd for fd in (self.count_fd, self.wake_fd, self.state_fd, self._lock_fd) if fd >= 0]
        self.count_fd = self.wake_fd = self.state_fd = self._lock_fd = -1
        files.close_all(fds)

    forget = _close  # a fork child drops its copy: nothing else happens

    def __repr__(self) -> str:
        return f"<Semaphore ino={self.ino}{' destroyed' if self.state_fd >= 0 and self.destroyed() else ''}>"

    # -- the mutex and the waiter slots

    def _enter(self) -> int:
        """Take the mutex; returns our lock description.

        Conditions: takes the semaphore's threading lock, then its
        cross-process lock (released by _leave)."""
        self._mutex.acquire()
        try:
            if self._lock_fd < 0:
                self._lock_fd = sema.reopen(self.state_fd)
            sema.lock(self._lock_fd, MUTEX_LOCK, True)
        except BaseException:
            self._mutex.release()
            raise
        return self._lock_fd

    def _leave(self, fd: int) -> None:
        """Conditions: the mutex is held (_enter); releases it."""
        try:
            sema.unlock(fd, MUTEX_LOCK)
        finally:
            self._mutex.release()

    def _live_slots(self, fd: int) -> list[int]:
        """The slots whose waiters are waiting, in slot order.

        Conditions: the mutex is held."""
        hi = min(int(self._page.words[_HIWATER]), SLOTS)
        return [i for i in range(hi) if i in self._mine or sema.locked_from(fd, SLOT_LOCK + i, 1) >= 0]

    def _register(self, tid: int) -> int:
        """Take a waiter slot for thread ``tid``. KERN_RESOURCE_SHORTAGE
        when SLOTS waiters wait already.

        The slot's lock is taken without the mutex (the kernel gives a
        byte's lock to one description); the slot's words are written
        once it is ours, its tid last: a signaller passes over a slot
        whose tid is 0.

        Conditions: nothing locked; takes the semaphore's threading lock,
        and the mutex for a slot never used before (the high-water mark)."""
        with self._mutex:
            if self._lock_fd < 0:
                self._lock_fd = sema.reopen(self.state_fd)
            fd, w = self._lock_fd, self._page.words
            for i in range(SLOTS):
                if i not in self._mine and sema.lock(fd, SLOT_LOCK + i, False):
                    w[_SLOT0 + 2 * i] = 0  # (a waiter that was killed leaves its words)
                    w[_SLOT0 + 2 * i + 1] = 0
                    w[_SLOT0 + 2 * i] = tid
                    self._mine[i] = tid
                    break
            else:
                raise _err(K.KERN_RESOURCE_SHORTAGE, f"more than {SLOTS} waiters on one semaphore")
        if w[_HIWATER] <= i:
            fd = self._enter()
            try:
                if w[_HIWATER] <= i:
                    w[_HIWATER] = i + 1
            finally:
                self._leave(fd)
        return i

    def _unregister(self, slot: int) -> bool:
        """Give the slot back; True if semaphore_signal_thread chose it
        (the waiter was woken, whatever else ended its wait).

        Conditions: nothing locked; takes the mutex."""
        fd = self._enter()
        try:
            w = self._page.words
            handed = bool(w[_SLOT0 + 2 * slot + 1])
            w[_SLOT0 + 2 * slot + 1] = 0
            w[_SLOT0 + 2 * slot] = 0
            del self._mine[slot]
            sema.unlock(fd, SLOT_LOCK + slot)
        finally:
            self._leave(fd)
        return handed

    # -- the routines

    def signal(self) -> None:
        """semaphore_signal: wake one waiter, or raise the count when none
        waits. KERN_TERMINATED once destroyed."""
        if self._page.words[_DESTROYED]:
            raise _err(K.KERN_TERMINATED, "the semaphore is destroyed")
        eventfd.write(self.count_fd, 1)

    def signal_all(self) -> None:
        """semaphore_signal_all: wake every thread waiting now; the count
        is left as it is (XNU: no waiter, no change). KERN_TERMINATED.

        Conditions: nothing locked; takes the mutex."""
        fd = self._enter()
        try:
            w = self._page.words
            if w[_DESTROYED]:
                raise _err(K.KERN_TERMINATED, "the semaphore is destroyed")
            w[_GEN] = (w[_GEN] + 1) & 0xFFFFFFFF
        finally:
            self._leave(fd)
        eventfd.write(self.wake_fd, 1)

    def signal_thread(self, tid: int) -> None:
        """semaphore_signal_thread: wake the waiting thread ``tid`` (0: any
        one waiter, the one that has waited in the lowest slot), without
        raising the count. KERN_NOT_WAITING when it is not waiting here;
        KERN_TERMINATED.

        Conditions: nothing locked; takes the mutex."""
        fd = self._enter()
        try:
            w = self._page.words
            if w[_DESTROYED]:
                raise _err(K.KERN_TERMINATED, "the semaphore is destroyed")
            for i in self._live_slots(fd):
                waiter = w[_SLOT0 + 2 * i]
                if waiter and w[_SLOT0 + 2 * i + 1] == 0 and (tid == 0 or waiter == tid):
                    w[_SLOT0 + 2 * i + 1] = 1
                    break
            else:
                raise _err(K.KERN_NOT_WAITING, "no such thread waits on the semaphore")
        finally:
            self._leave(fd)
        eventfd.write(self.wake_fd, 1)

    def destroy(self) -> None:
        """Mark it destroyed and wake every waiter in every task: they
        return KERN_TERMINATED, and so does every later call.

        Conditions: nothing locked; takes the mutex."""
        fd = self._enter()
        try:
            self._page.words[_DESTROYED] = 1
        finally:
            self._leave(fd)
        eventfd.write(self.wake_fd, 1)

    def give_back(self) -> None:
        """Return a count taken by a wait that did not happen after all (a
        cancelled coroutine's)."""
        eventfd.write(self.count_fd, 1)

    def try_take(self) -> bool:
        """Take 1 from the count if it is not zero."""
        try:
            eventfd.read(self.count_fd)
        except BlockingIOError:
            return False
        return True

    def wait(self, deadline: float | None, signal: "Semaphore | None" = None) -> int:
        """semaphore_wait (``deadline`` None), semaphore_timedwait (a
        time.monotonic() deadline; one already past does not block), and
        with ``signal`` their _signal forms: that semaphore is signalled
        once this thread is a waiter (or has taken the count). Returns
        KERN_SUCCESS, KERN_OPERATION_TIMED_OUT, KERN_ABORTED (a signal
        handler ran: the wait is interrupted, as XNU's is by a signal),
        KERN_TERMINATED (this semaphore, or ``signal``'s, is destroyed),
        KERN_RESOURCE_SHORTAGE (SLOTS waiters already).

        Conditions: nothing locked; takes the mutex to join and leave the
        waiters."""
        if self._page.words[_DESTROYED]:
            return K.KERN_TERMINATED
        if self.try_take():
            if signal is not None and not _signalled(signal):
                eventfd.write(self.count_fd, 1)  # give the count back: nothing happened
                return K.KERN_TERMINATED
            return K.KERN_SUCCESS
        if deadline is not None and deadline <= time.monotonic():
            if signal is not None:
                if not _signalled(signal):
                    return K.KERN_TERMINATED
                if self.try_take():  # (XNU: the signal wakes this thread, which waits already)
                    return K.KERN_SUCCESS
            return K.KERN_OPERATION_TIMED_OUT
        w = Wait(self)
        kr: int | None = K.KERN_SUCCESS
        try:
            if signal is not None and not _signalled(signal):
                kr = K.KERN_TERMINATED
                return kr
            while True:
                kr = w.check()
                if kr is not None:
                    break
                ms = -1
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        kr = K.KERN_OPERATION_TIMED_OUT
                        break
                    ms = min(int(left * 1000) + 1, INT_MAX)
                if not w.block(ms):
                    kr = K.KERN_ABORTED
                    break
        finally:
            kr = w.end(kr)
        return kr


class Wait:
    """One thread's (or one coroutine's) wait on a semaphore, once the
    count was found empty: it holds a waiter slot, and an epoll instance
    over the count (level-triggered) and the wake-up eventfd (EPOLLET)
    that is readable when something may have changed (``fileno``: what an
    event loop watches)."""

    __slots__ = ("sem", "slot", "gen", "took", "_waiting")

    def __init__(self, sem: Semaphore) -> None:
        """KERN_RESOURCE_SHORTAGE (no slot, no fd).

        Conditions: nothing locked; takes the mutex."""
        self.sem = sem
        self.slot = sem._register(threading.get_native_id())
        self.gen = sem._page.words[_GEN]
        self.took = False  # check() took the count
        try:
            # a used instance may report an edge from before: check() sorts it out
            self._waiting = sem._pool.pop()
        except IndexError:
            try:
                self._waiting = _new_waiting(sem)
            except BaseException:
                sem._unregister(self.slot)
                raise

    def fileno(self) -> int:
        return self._waiting.fileno()

    def check(self) -> int | None:
        """KERN_TERMINATED, KERN_SUCCESS (chosen by signal_thread, woken by
        signal_all, or the count taken), or None: wait on."""
        w = self.sem._page.words
        if w[_DESTROYED]:
            return K.KERN_TERMINATED
        if w[_SLOT0 + 2 * self.slot + 1] or w[_GEN] != self.gen:
            return K.KERN_SUCCESS
        if self.sem.try_take():
            self.took = True
            return K.KERN_SUCCESS
        return None

    def block(self, ms: int) -> bool:
        """Wait at most ``ms`` for a change (0: take the changes reported);
        False when a signal handler interrupted it."""
        return self._waiting.wait(ms)

    def end(self, kr: int | None) -> int:
        """Leave the waiters; the wait's code: ``kr``, or KERN_SUCCESS when
        signal_thread chose this waiter before it gave up (None: it gave up
        without a code, as a cancelled coroutine; then KERN_ABORTED).

        Conditions: nothing locked; takes the mutex."""
        self.sem._pool.append(self._waiting)
        if self.sem._unregister(self.slot) and kr in (None, K.KERN_OPERATION_TIMED_OUT, K.KERN_ABORTED):
            return K.KERN_SUCCESS
        return K.KERN_ABORTED if kr is None else kr


def _new_waiting(sem: Semaphore) -> sema.Waiting:
    """KERN_RESOURCE_SHORTAGE (no fd)."""
    try:
        return sema.Waiting(sem.count_fd, sem.wake_fd)
    except OSError as err:
        raise _err(K.kr_from_oserror(err), "a semaphore wait") from err


def _signalled(s: Semaphore) -> bool:
    """Signal ``s`` for a _signal wait; False if it is destroyed."""
    try:
        s.signal()
    except K.MachError:
        return False
    return True


def check_wire(fds: list[int]) -> None:
    """A semaphore that arrived in a message: an EFD_SEMAPHORE eventfd, a
    counter eventfd and a writable one-page memfd sealed against
    resizing (MachError MACH_RCV_BODY_ERROR otherwise)."""
    if (len(fds) != 3 or not sema.is_semaphore_eventfd(fds[0], True)
            or not sema.is_semaphore_eventfd(fds[1], False) or not sema.is_state_memfd(fds[2])):
        raise _err(K.MACH_RCV_BODY_ERROR, "a semaphore that is not a semaphore's fds")


# -- the entry points: names in our space


def translate(name: int) -> Semaphore:
    """The semaphore a name in our space denotes, as XNU's
    port_name_to_semaphore, in use (the caller calls its done()):
    KERN_INVALID_NAME for MACH_PORT_NULL, MACH_PORT_DEAD or a name that
    denotes nothing, KERN_INVALID_RIGHT for a name without a send right,
    KERN_INVALID_CAPABILITY for a send right to something else.

    Conditions: nothing locked; takes the space's lock."""
    if name in (0, 0xFFFFFFFF):
        raise _err(K.KERN_INVALID_NAME, f"{name:#x} is not a semaphore")
    space = SELF.space
    with space.lock:
        e = space.lookup(name)
        if e is None:
            raise _err(K.KERN_INVALID_NAME, f"{name:#x} denotes nothing")
        if not e.type & MACH_PORT_TYPE_SEND:
            raise _err(K.KERN_INVALID_RIGHT, f"{name:#x} holds no send right")
        s = e.cap
        if not isinstance(s, Semaphore):
            raise _err(K.KERN_INVALID_CAPABILITY, f"{name:#x} is not a semaphore")
        s.use()
    return s


def install(s: Semaphore, coalesce: bool) -> int:
    """A send right to ``s`` in our space (see R.copyout_entry); its name."""
    return R.copyout_entry(SELF.space, s, coalesce=coalesce)


def entry_of(e: IpcEntry) -> Semaphore | None:
    cap = e.cap
    return cap if isinstance(cap, Semaphore) else None


def semaphore_create(task: Task, policy: int, value: int) -> int:
    """A new semaphore owned by ``task``; the name of our send right to it.
    KERN_INVALID_ARGUMENT for a policy outside SYNC_POLICY_USER_MASK or a
    negative value, as XNU. Every policy orders waiters the same way here
    (docs/deviations.md)."""
    if value < 0 or policy & ~SYNC_POLICY_USER_MASK:
        raise _err(K.KERN_INVALID_ARGUMENT, f"policy {policy:#x}, value {value}")
    return install(Semaphore.create(value, task.pid), False)


def semaphore_destroy(task: Task, name: int) -> None:
    """Destroy the semaphore if ``task`` owns it (every waiter in every
    task returns KERN_TERMINATED), and release our send right either way,
    as XNU's semaphore_destroy consumes the caller's reference.
    KERN_INVALID_ARGUMENT when ``name`` is not a semaphore (XNU's
    SEMAPHORE_NULL), after releasing a reference the name holds.

    Conditions: nothing locked; takes the mutex, then the space's lock."""
    try:
        s = translate(name)
    except K.MachError as err:
        raise _err(K.KERN_INVALID_ARGUMENT, err.context or "") from None
    try:
        if s.owner() == task.pid and not s.destroyed():
            s.destroy()
    finally:
        s.done()
    R.deallocate(SELF.space, name)


def signal(name: int) -> None:
    """semaphore_signal on a name: the codes of translate, KERN_TERMINATED.

    Conditions: nothing locked; takes the space's lock."""
    s = translate(name)
    try:
        s.signal()
    finally:
        s.done()


def signal_all(name: int) -> None:
    """semaphore_signal_all on a name.

    Conditions: nothing locked; takes the space's lock, then as
    Semaphore.signal_all."""
    s = translate(name)
    try:
        s.signal_all()
    finally:
        s.done()


def signal_thread(name: int, thread_name: int) -> None:
    """semaphore_signal_thread on names; ``thread_name`` MACH_PORT_NULL
    is THREAD_NULL (any one waiter). KERN_INVALID_ARGUMENT when it is not
    a thread port (checked first, as XNU's trap does), then the codes of
    translate and Semaphore.signal_thread.

    Conditions: as Semaphore.signal_thread."""
    tid = 0
    if thread_name:
        try:
            tid = TU.thread_of(thread_name).tid
        except K.MachError as err:
            raise _err(K.KERN_INVALID_ARGUMENT, err.context or "") from None
    s = translate(name)
    try:
        s.signal_thread(tid)
    finally:
        s.done()


def deadline_of(sec: int, nsec: int) -> float | None:
    """The time.monotonic() deadline of a relative mach_timespec_t; None
    for none. KERN_INVALID_VALUE for a bad one (XNU's BAD_MACH_TIMESPEC:
    tv_nsec outside [0, NSEC_PER_SEC))."""
    if not 0 <= nsec < NSEC_PER_SEC:
        raise _err(K.KERN_INVALID_VALUE, f"tv_nsec {nsec}")
    return time.monotonic() + sec + nsec / NSEC_PER_SEC


def wait(name: int, deadline: float | None, signal_name: int | None = None) -> int:
    """semaphore_wait, semaphore_timedwait and their _signal forms on
    names (``signal_name`` translated first, as XNU's trap does); returns
    Semaphore.wait's code. The codes of translate.

    Conditions: as Semaphore.wait."""
    sig = translate(signal_name) if signal_name is not None else None
    try:
        s = translate(name)
        try:
            return s.wait(deadline, sig)
        finally:
            s.done()
    finally:
        if sig is not None:
            sig.done()


def adopt_inherited(fds: list[int]) -> int:
    """A send right to the semaphore whose fds a pickle named: inherited
    by a program pymach.spawn started (the fds are taken: kept by the new
    right, through copies, and closed), or ours already (they stay; one
    more reference). KERN_INVALID_ARGUMENT when they are not a
    semaphore's.

    Conditions: nothing locked; takes the space's lock."""
    try:
        check_wire(fds)
        key = ("semaphore", files.inode(fds[2]))
    except (K.MachError, OSError):
        raise _err(K.KERN_INVALID_ARGUMENT, f"fds {fds} are not a semaphore's") from None
    space = SELF.space
    with space.lock:
        held = space.name_for(key)
        dups: list[int] = []
        try:
            for fd in fds:
                dups.append(files.dup(fd))
        except OSError as err:
            files.close_all(dups)
            raise _err(K.kr_from_oserror(err), "the semaphore's fds") from err
        name = install(Semaphore.from_wire(dups), True)
    if not held:
        files.close_all(list(fds))
    return name


def pickled(s: Semaphore) -> list[int]:
    """Keep ``s``'s fds for the next pymach.spawn; its fds."""
    _PICKLED.add(s)
    return s.wire_fds()


def spawn_fds() -> list[int]:
    """The fds of the semaphores pickled so far that are still open."""
    return [fd for s in list(_PICKLED) for fd in s.wire_fds() if fd >= 0]
