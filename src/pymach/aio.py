"""asyncio on ports: how an event loop waits for a message or for room in
a queue, with no thread per call.

The Pythonic methods (Port.receive_async, PortSet.receive_async,
SendRight.send_async, pymach.request_async, ``async for`` on a port) first
try the operation without waiting (a timeout of 0). Only when it says
MACH_RCV_TIMED_OUT or MACH_SEND_TIMED_OUT do they wait here, and then
they try again: nothing is taken off a queue until the operation
succeeds, in the waiting task's own step, so a cancelled wait loses no
message and takes no place.

What the loop watches (``loop.add_reader``), per object and loop:

- a port: its epoll set (Port.fileno()), through a dup of its fd, so that
  the number the loop holds stays ours if the port closes its own. A port
  that leaves the task, and messages that wait where the epoll set does
  not show them (drained by the watcher thread, put back), are told
  through ipc_port.ASYNC_WAKE;
- a port set: its epoll set, entered as a receiver is (PortSet.enter), so
  that a destroyed set keeps its epoll set, signalled, until the loop
  leaves;
- a send right's full queue: the queue semaphore, the eventfd that counts
  the port's free places for every sender (a read takes a place, a
  receive gives one back); it polls readable when a place is free. The
  port dying does not signal it: the sending end's hang-up does, watched
  beside it. A sender killed after a place woke it would leave the place
  to nobody, so a waiting sender also looks again every second (as a
  blocked sync sender does).

Fairness: one reader per object and loop, and a FIFO queue of waiters.
A readable fd wakes the first waiter only; it tries, and on success the
next waiter tries at once (there may be more); a waiter whose try finds
nothing goes back to the front of the queue. A sync receiver in a thread
can share the port: it and the loop race for each message as two
receivers do, and each message goes to exactly one of them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable, TypeVar

from ._kern import ipc_port
from ._kern import kern_return as K
from ._linux import files, unix

_T = TypeVar("_T")

# a send right that waits for a place also looks again this often (s): the
# port's death does not signal the queue semaphore, and a sender killed
# after a place woke it would leave the place to no one
_LOOK_AGAIN = 1.0
# after a wake that found no place (the connection itself was full), the
# next wait starts this much later (s), so a readable semaphore does not spin
_BACKOFF = 0.002


class _Watch:
    """One loop's waiters on one object's fd: a reader while someone waits,
    and the FIFO queue of waiting futures (each set when its waiter is to
    try: by its turn, its deadline or its next look)."""

    __slots__ = ("loop", "key", "fd", "_done", "waiters", "reading", "woken")

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[object, object], fd: int,
                 done: Callable[[], None]) -> None:
        self.loop = loop
        self.key = key
        self.fd = fd
        self._done = done  # releases what watching took (the fd, the hook, the set's count)
        self.waiters: deque[asyncio.Future[bool]] = deque()
        self.reading = False
        self.woken: asyncio.Future[bool] | None = None  # told to try, not yet done trying

    def arm(self) -> None:
        """Watch the fd while someone waits (a watch with no fd, -1, only
        looks again: its waiters' timers wake them)."""
        if self.fd >= 0 and not self.reading and self.woken is None and self.waiters:
            self.loop.add_reader(self.fd, self.ready)
            self.reading = True

    def disarm(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd)

    def ready(self) -> None:
        """The fd is readable (or the object changed): the first waiter tries."""
        self.disarm()
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(True)
                self.woken = fut
                return

    def wake(self) -> None:
        """As ready(), unless a waiter is trying already (it wakes the next)."""
        if self.woken is None:
            self.ready()

    def finish(self, fut: asyncio.Future[bool]) -> None:
        """``fut``'s waiter is done (it succeeded, failed, timed out or was
        cancelled): if it held the turn, the next waiter tries now; the
        watch ends with its last waiter."""
        if self.woken is fut:
            self.woken = None
            self.ready()
        else:
            try:
                self.waiters.remove(fut)
            except ValueError:
                pass
        if not self.waiters and self.woken is None:
            self.close()

    def close(self) -> None:
        self.disarm()
        if _WATCHES.get(self.key) is self:
            del _WATCHES[self.key]
            self._done()


_WATCHES: dict[tuple[object, object], _Watch] = {}


def _port_watch(loop: asyncio.AbstractEventLoop, kport: Any) -> _Watch:
    """The watch of a kernel Port on ``loop``, made on first use. Raises
    MachError (MACH_RCV_PORT_CHANGED: the port left the task)."""
    key = (loop, kport)
    w = _WATCHES.get(key)
    if w is not None:
        return w
    try:
        fd = files.dup(kport.fileno())
    except OSError:  # its epoll set closed: the port was destroyed or sent away meanwhile
        raise K.MachError(K.MACH_RCV_PORT_CHANGED, "the port left the task") from None
    hooks = ipc_port.ASYNC_WAKE.setdefault(kport, [])

    def hook() -> None:  # any thread, the port's lock perhaps held: only schedules
        try:
            loop.call_soon_threadsafe(watch.wake)
        except RuntimeError:
            pass  # the loop is closed

    def done() -> None:
        hooks.remove(hook)
        if not hooks and ipc_port.ASYNC_WAKE.get(kport) is hooks:
            del ipc_port.ASYNC_WAKE[kport]
        files.close(fd)

    watch = _WATCHES[key] = _Watch(loop, key, fd, done)
    hooks.append(hook)
    if kport.destroyed or kport.held:
        # changed between the caller's try and the hook (another thread):
        # what the epoll set may not show, looked at once more
        loop.call_soon(watch.wake)
    return watch


def _set_watch(loop: asyncio.AbstractEventLoop, kset: Any) -> _Watch:
    """The watch of a kernel PortSet on ``loop``, made on first use. Raises
    MachError (MACH_RCV_PORT_CHANGED: the set was destroyed)."""
    key = (loop, kset)
    w = _WATCHES.get(key)
    if w is not None:
        return w
    kset.enter()  # (its epoll set stays open, signalled once destroyed, until leave)
    w = _WATCHES[key] = _Watch(loop, key, kset.fileno(), kset.leave)
    return w


def _sem_watch(loop: asyncio.AbstractEventLoop, cap: Any) -> _Watch:
    """The watch of a send right's queue semaphore on ``loop``, and of its
    connection's hang-up (the port died): a dup of the sending end, which
    polls readable only when its peer, the port's receiving end, is gone
    (nothing is ever written back on it)."""
    key = (loop, cap)
    w = _WATCHES.get(key)
    if w is not None:
        return w
    fd = files.dup(cap.efd)
    try:
        end = files.dup(cap.tx.fileno())
    except OSError:
        end = -1  # closed meanwhile: the next try says so

    def hung() -> None:
        loop.remove_reader(end)  # once: the waiters see the dead port in turn
        if unix.send_end_dead(end):
            watch.wake()

    def done() -> None:
        files.close(fd)
        if end >= 0:
            loop.remove_reader(end)
            files.close(end)

    watch = _WATCHES[key] = _Watch(loop, key, fd, done)
    if end >= 0:
        loop.add_reader(end, hung)
    return watch


async def _wait(watch: _Watch, attempt: Callable[[], _T], timeout: float | None, timed_out: int,
                look_again: float | None = None) -> _T:
    """Run ``attempt`` (which raises MachError ``timed_out`` when it would
    have to wait) each time ``watch`` says to, until it succeeds, fails
    otherwise, or ``timeout`` seconds pass (then MachError ``timed_out``).
    ``look_again``: also try that often without a wake."""
    loop = watch.loop
    deadline = None if timeout is None else loop.time() + timeout
    front = False
    delay = 0.0
    while True:
        fut: asyncio.Future[bool] = loop.create_future()
        if front:
            watch.waiters.appendleft(fut)
        else:
            watch.waiters.append(fut)
        if delay:
            loop.call_later(delay, watch.arm)
        else:
            watch.arm()
        timers = []
        if deadline is not None:
            timers.append(loop.call_at(deadline, _expire, fut))
        if look_again is not None:
            timers.append(loop.call_later(look_again, _expire, fut, True))
        try:
            await fut
        except BaseException:  # cancelled: the turn, if we had it, goes on
            watch.finish(fut)
            raise
        finally:
            for t in timers:
                t.cancel()
        turn = watch.woken is fut
        if not turn:  # the deadline, or a look again: a try out of turn
            try:
                watch.waiters.remove(fut)
            except ValueError:
                pass
        try:
            result = attempt()
        except K.MachError as e:
            if e.kr != timed_out or deadline is not None and loop.time() >= deadline:
                watch.finish(fut)
                raise
            # nothing for us after all (another receiver took it): first again
            if turn:
                watch.woken = None
            front = True
            delay = _BACKOFF if look_again is not None else 0.0
            continue
        except BaseException:
            watch.finish(fut)
            raise
        watch.finish(fut)
        return result


def _expire(fut: asyncio.Future[bool], again: bool = False) -> None:
    """A waiter's deadline or its look again: it tries out of turn (once
    more, at its deadline)."""
    if not fut.done():
        fut.set_result(again)


async def receive_port(kport: Any, attempt: Callable[[], _T], timeout: float | None) -> _T:
    """Wait on the loop for ``attempt`` (a receive with a timeout of 0) to
    find a message on the kernel Port ``kport``. Raises MachError
    (MACH_RCV_TIMED_OUT after ``timeout`` seconds; what ``attempt`` raises)."""
    watch = _port_watch(asyncio.get_running_loop(), kport)
    return await _wait(watch, attempt, timeout, K.MACH_RCV_TIMED_OUT)


async def receive_set(kset: Any, attempt: Callable[[], _T], timeout: float | None) -> _T:
    """As receive_port, on the kernel PortSet ``kset``. Raises MachError
    (MACH_RCV_TIMED_OUT; MACH_RCV_PORT_CHANGED for a destroyed set)."""
    watch = _set_watch(asyncio.get_running_loop(), kset)
    return await _wait(watch, attempt, timeout, K.MACH_RCV_TIMED_OUT)


async def send(cap: Any, attempt: Callable[[], _T], timeout: float | None) -> _T:
    """Wait on the loop for ``attempt`` (a send with a timeout of 0) to find
    a place in the queue of the port that the send capability ``cap``
    reaches. Raises MachError (MACH_SEND_TIMED_OUT after ``timeout``
    seconds; what ``attempt`` raises: MACH_SEND_INVALID_DEST once the port
    dies)."""
    loop = asyncio.get_running_loop()
    if cap is None or cap.efd < 0:
        # no queue semaphore (a send-once right, a kernel object): only
        # the connection can be full; look again every few milliseconds
        watch = _Watch(loop, (loop, object()), -1, lambda: None)
        return await _wait(watch, attempt, timeout, K.MACH_SEND_TIMED_OUT, look_again=_BACKOFF * 5)
    watch = _sem_watch(loop, cap)

    def attempt_or_dead() -> _T:
        try:
            return attempt()
        except K.MachError as e:
            # a try finds no place before it would find the port dead
            # (take_slot): as a blocked sync sender, say so
            if e.kr == K.MACH_SEND_TIMED_OUT and cap.dead():
                raise K.MachError(K.MACH_SEND_INVALID_DEST, "the port died while we waited") from None
            raise

    return await _wait(watch, attempt_or_dead, timeout, K.MACH_SEND_TIMED_OUT, look_again=_LOOK_AGAIN)
