"""pymach.Semaphore: a Mach semaphore (semaphore_create) as a Python object.

It is a send right: it travels in a Message's ``rights`` to another task,
which then waits on and signals the same count, and it pickles for a
program started with pymach.spawn. ``wait()`` returns a bool as
threading.Semaphore.acquire does: True when it took the count (or was
woken by ``signal_all()``), False when ``timeout`` ran out. A destroyed
semaphore raises MachError (KERN_TERMINATED) in every waiter, in every
task.

::

    with pymach.Semaphore(1) as sem:      # acquire ... release
        ...
    sem.signal(); sem.wait(timeout=1.0)
    await sem.wait_async(timeout=1.0)     # on an asyncio loop, no thread
"""

from __future__ import annotations

import time
from typing import Any

from ._kern import kern_return as K
from ._kern import sync_sema as SEMA
from ._kern.task import SELF
from .ipc import SendRight

__all__ = ["Semaphore"]


class Semaphore(SendRight):
    """A counting semaphore shared by every task that holds it.

    ``Semaphore(value=0)`` creates one owned by this task (semaphore_create
    with SYNC_POLICY_FIFO). ``with sem:`` waits on entry and signals on
    exit. ``close()`` releases our right; ``destroy()`` ends the
    semaphore for every holder (the owner's task only: another task's
    destroy() just releases its right, as XNU's semaphore_destroy)."""

    __slots__ = ()

    def __init__(self, value: int = 0) -> None:
        if type(value) is not int or not 0 <= value <= 0x7FFFFFFF:
            raise ValueError(f"Semaphore(): value must be an int in [0, 2**31), not {value!r}")
        super().__init__(SEMA.semaphore_create(SELF.task, SEMA.SYNC_POLICY_FIFO, value))

    @classmethod
    def _of_name(cls, name: int) -> "Semaphore":
        """The Semaphore for a name we hold already (one user reference)."""
        self = cls.__new__(cls)
        SendRight.__init__(self, name)
        return self

    def _sem(self, verb: str) -> SEMA.Semaphore:
        if not self._live:
            raise self._closed(verb)
        try:
            return SEMA.translate(self.name)
        except K.MachError as e:
            raise K.MachError(e.kr, f"{self._call(verb)}: {e.context}") from None

    def _kr(self, kr: int, verb: str) -> None:
        if kr:
            raise K.MachError(kr, self._call(verb))

    def signal(self) -> None:
        """semaphore_signal: wake one waiter, or raise the count."""
        s = self._sem("signal")
        try:
            s.signal()
        except K.MachError as e:
            raise K.MachError(e.kr, self._call("signal")) from None
        finally:
            s.done()

    release = signal

    def signal_all(self) -> None:
        """semaphore_signal_all: wake every task's threads waiting now; the
        count does not change."""
        s = self._sem("signal_all")
        try:
            s.signal_all()
        except K.MachError as e:
            raise K.MachError(e.kr, self._call("signal_all")) from None
        finally:
            s.done()

    def wait(self, timeout: float | None = None) -> bool:
        """Take one from the count, waiting at most ``timeout`` seconds
        (None: as long as it takes; 0: not at all). True when taken or
        woken by signal_all; False when the time ran out. A signal handler
        that returns does not end the wait (as PEP 475's calls retry).
        MachError KERN_TERMINATED when the semaphore is destroyed."""
        if timeout is not None and (timeout != timeout or timeout < 0):
            raise ValueError(f"{self._call('wait')}: timeout must be None or >= 0, not {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        s = self._sem("wait")
        try:
            while True:
                kr = s.wait(deadline)
                if kr != K.KERN_ABORTED:
                    break
        finally:
            s.done()
        if kr == K.KERN_OPERATION_TIMED_OUT:
            return False
        self._kr(kr, "wait")
        return True

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """threading.Semaphore.acquire: wait(timeout), or wait(0) when not
        ``blocking``."""
        return self.wait(timeout if blocking else 0)

    def __enter__(self) -> "Semaphore":
        self.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self.signal()

    async def wait_async(self, timeout: float | None = None) -> bool:
        """wait() on the running asyncio loop, with no thread: the loop
        watches the semaphore (loop.add_reader). True or False as wait();
        a cancelled wait takes nothing (a count it took at the moment of
        cancellation is given back)."""
        if timeout is not None and (timeout != timeout or timeout < 0):
            raise ValueError(f"{self._call('wait_async')}: timeout must be None or >= 0, not {timeout!r}")
        s = self._sem("wait_async")
        try:
            if s.destroyed():
                self._kr(K.KERN_TERMINATED, "wait_async")
            if s.try_take():
                return True
            if timeout == 0:
                return False
            return await _wait_on_loop(s, timeout, self._call("wait_async"))
        finally:
            s.done()

    def destroy(self) -> None:
        """semaphore_destroy with our task, and close(): every waiter of
        every task returns KERN_TERMINATED. Calling it again does nothing."""
        if self._live:
            self._live = False
            try:
                SEMA.semaphore_destroy(SELF.task, self.name)
            except K.MachError as e:
                if e.kr != K.KERN_INVALID_ARGUMENT:
                    raise

    def __reduce__(self) -> tuple[Any, tuple[int, int, int]]:
        """Pickled for pymach.spawn: the spawned program inherits the
        semaphore's fds (under the same numbers) and unpickles the same
        semaphore."""
        s = self._sem("__reduce__")
        try:
            a, b, c = SEMA.pickled(s)
        finally:
            s.done()
        return (_unpickle, (a, b, c))


def _unpickle(count_fd: int, wake_fd: int, state_fd: int) -> Semaphore:
    return Semaphore._of_name(SEMA.adopt_inherited([count_fd, wake_fd, state_fd]))


async def _wait_on_loop(s: SEMA.Semaphore, timeout: float | None, call: str) -> bool:
    """Wait for ``s`` on the running loop: the Wait's epoll fd is watched
    with add_reader; each time it is readable its changes are taken and
    the wait is checked again."""
    import asyncio  # (here: a program that never awaits does not load asyncio)
    loop = asyncio.get_running_loop()
    w = SEMA.Wait(s)
    kr: int | None = None
    fut: asyncio.Future[int] = loop.create_future()

    def ready() -> None:
        w.block(0)
        if fut.done():
            return
        code = w.check()
        if code is not None:
            fut.set_result(code)

    timer = None
    if timeout is not None:
        def expire() -> None:
            if not fut.done():
                fut.set_result(K.KERN_OPERATION_TIMED_OUT)
        timer = loop.call_later(timeout, expire)
    loop.add_reader(w.fileno(), ready)
    try:
        ready()  # a change before the reader was added
        kr = await fut
    except asyncio.CancelledError:
        if w.took:
            s.give_back()
        raise
    finally:
        loop.remove_reader(w.fileno())
        if timer is not None:
            timer.cancel()
        kr = w.end(kr)
    if kr == K.KERN_OPERATION_TIMED_OUT:
        return False
    if kr:
        raise K.MachError(kr, call)
    return True
