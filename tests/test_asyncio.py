"""asyncio on ports (pymach.aio), across real processes: receive_async,
``async for``, request_async, send_async on a full queue, cancellation,
timeouts, fairness among waiters, a sync receiver sharing a port with the
loop, and port sets. Each test runs on asyncio's default loop and on
uvloop (skipped when uvloop does not import).

Every wait on the loop has a timeout, so no test can hang; no duration is
asserted."""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

import pymach
import pymach.aio
import pymach.ipc
import pymach.mach as M
from pymach import Message, Port, PortSet

from procutil import forked, open_fds

_T = TypeVar("_T")
WAIT = 10.0  # the bound on every wait of a test


@pytest.fixture(scope="module")
def uvloop_ready() -> Any:
    """uvloop, or None when it does not import. Its first loop opens a pipe
    that stays for the life of the process: made here, before any test's fd
    baseline."""
    try:
        import uvloop
    except ImportError:
        return None
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        r.run(asyncio.sleep(0))
    return uvloop


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest, uvloop_ready: Any) -> Iterator[Callable[[Callable[[], Awaitable[_T]]], _T]]:
    """run(main) runs the coroutine function on the loop of the parameter."""
    if request.param == "uvloop":
        if uvloop_ready is None:
            pytest.skip("uvloop is not installed")
        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop_ready.new_event_loop
    else:
        factory = None

    def runner(main: Callable[[], Awaitable[_T]]) -> _T:
        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(asyncio.wait_for(main(), WAIT))  # type: ignore[arg-type]

    yield runner
    assert not pymach.aio._WATCHES, "a loop still watches a port"


def names() -> set[int]:
    """The names of our space (mach_port_names)."""
    n, t = M.mach_port_name_array_t(), M.mach_port_type_array_t()
    nc, tc = M.mach_msg_type_number_t(), M.mach_msg_type_number_t()
    assert M.mach_port_names(M.mach_task_self(), ctypes.byref(n), ctypes.byref(nc), ctypes.byref(t),
                             ctypes.byref(tc)) == M.KERN_SUCCESS
    out = {n[i] for i in range(nc.value)}
    for arr in (n, t):
        M.mach_vm_deallocate(M.mach_task_self(), ctypes.cast(arr, ctypes.c_void_p).value, 4 * nc.value)
    return out


def registered(*rights: pymach.SendRight) -> Any:
    """The send rights inherited by a fork child, registered for the block."""
    class Reg:
        def __enter__(self) -> None:
            pymach.register_ports(*rights)

        def __exit__(self, *exc: object) -> None:
            pymach.register_ports()
    return Reg()


def inherited() -> pymach.SendRight:
    """In a fork child: the first registered send right."""
    return [r for r in pymach.registered_ports() if r][0]


def test_receive_async_and_async_for_until_the_port_dies(run: Any) -> None:
    def child(sync: Callable[[], None]) -> None:
        to = inherited()
        sync()  # the parent waits on the loop
        for i in range(3):
            to.send(b"m%d" % i, id=i)

    async def main() -> list[tuple[bytes, int, int]]:
        with Port() as p, p.make_send() as s, registered(s):
            with forked(child) as sync:
                first = asyncio.ensure_future(p.receive_async(timeout=WAIT))
                await asyncio.sleep(0.01)
                assert not first.done()  # waiting on the loop: nothing is queued yet
                sync()
                got = [await first]
                async for m in p:
                    got.append(m)
                    if len(got) == 3:
                        # destroyed while the next receive waits: the loop ends
                        asyncio.get_running_loop().call_later(0.02, p.close)
            return [(m.data, m.id, m.pid) for m in got]

    got = run(main)
    assert [(d, i) for d, i, _ in got] == [(b"m0", 0), (b"m1", 1), (b"m2", 2)]
    assert all(pid != os.getpid() for _, _, pid in got)


def test_a_receive_waiting_when_the_right_goes_gets_port_changed(run: Any) -> None:
    async def main() -> list[int]:
        codes = []
        with Port() as a, Port() as b:
            for right in (a, PortSet([b])):
                waiting = asyncio.ensure_future(right.receive_async(timeout=WAIT))
                await asyncio.sleep(0.005)
                right.close()
                with pytest.raises(pymach.MachError) as e:
                    await waiting
                codes.append(e.value.kr)
        return codes

    assert run(main) == [M.MACH_RCV_PORT_CHANGED, M.MACH_RCV_PORT_CHANGED]  # as a sync receive gets


def _echo_server(count: int) -> Callable[[Callable[[], None]], int]:
    """A child that answers ``count`` requests on a port of its own, whose
    send right it gives the parent (in a message to the registered right)."""
    def child(sync: Callable[[], None]) -> int:
        to = inherited()
        with Port() as srv, srv.make_send() as s:
            to.send(Message(b"server", rights=[s.copy()]))
            for _ in range(count):
                m = srv.receive(timeout=WAIT)
                assert m.reply is not None
                m.reply.send(m.data.upper(), id=m.id + 100)
        return count
    return child


async def _server_right(p: Port) -> pymach.SendRight:
    m = await p.receive_async(timeout=WAIT)
    (right,) = m.rights
    assert isinstance(right, pymach.SendRight)
    return right


def test_request_async_against_a_server_in_another_process(run: Any) -> None:
    async def main() -> list[tuple[bytes, int]]:
        with Port() as p, p.make_send() as s, registered(s):
            with forked(_echo_server(5)):
                with await _server_right(p) as srv:
                    replies = await asyncio.gather(*(pymach.request_async(srv, b"hi%d" % i, id=i, timeout=WAIT)
                                                      for i in range(5)))
        return [(r.data, r.id) for r in replies]

    before = open_fds()
    assert run(main) == [(b"HI%d" % i, i + 100) for i in range(5)]
    pymach.ipc.release_reply_port()  # the free reply ports of the pool
    assert open_fds() == before


def test_requests_that_wait_for_room_get_their_own_replies(run: Any) -> None:
    n = M.MACH_PORT_QLIMIT_DEFAULT + 3  # three wait for room, and try again as places free

    def child(sync: Callable[[], None]) -> int:
        to = inherited()
        with Port() as srv, srv.make_send() as s:
            to.send(Message(b"server", rights=[s.copy()]))
            sync()  # the queue is full and more requests wait
            for _ in range(n):
                m = srv.receive(timeout=WAIT)
                assert m.reply is not None
                m.reply.send(m.data.upper(), id=m.id)
        return n

    async def main() -> list[tuple[bytes, int]]:
        with Port() as p, p.make_send() as s, registered(s):
            with forked(child) as sync:
                with await _server_right(p) as srv:
                    reqs = [asyncio.ensure_future(pymach.request_async(srv, b"r%d" % i, id=i, timeout=WAIT))
                            for i in range(n)]
                    await asyncio.sleep(0.02)
                    assert not any(r.done() for r in reqs)
                    await asyncio.to_thread(sync)
                    replies = await asyncio.gather(*reqs)
        return [(r.data, r.id) for r in replies]

    assert run(main) == [(b"R%d" % i, i) for i in range(n)]


def test_send_async_waits_on_a_full_queue_without_blocking_the_loop(run: Any) -> None:
    def child(sync: Callable[[], None]) -> list[bytes]:
        to = inherited()
        with Port() as mine, mine.make_send() as s:
            to.send(Message(b"here", rights=[s.copy()]))
            sync()  # the parent filled our queue and waits to send one more
            first = mine.receive(timeout=WAIT).data
            sync()  # the parent's send went through
            rest = [mine.receive(timeout=WAIT).data for _ in range(M.MACH_PORT_QLIMIT_DEFAULT)]
        return [first] + rest

    async def main() -> list[bytes]:
        with Port() as p, p.make_send() as s, registered(s):
            with forked(child) as sync:
                with await _server_right(p) as peer:
                    n = M.MACH_PORT_QLIMIT_DEFAULT
                    for i in range(n):
                        await peer.send_async(b"%d" % i)  # room: no wait
                    with pytest.raises(pymach.MachError) as e:
                        await peer.send_async(b"late", timeout=0.02)
                    assert e.value.kr == M.MACH_SEND_TIMED_OUT
                    last = asyncio.ensure_future(peer.send_async(b"%d" % n, timeout=WAIT))
                    ticks = 0
                    while ticks < 5:  # the loop runs on while the send waits
                        await asyncio.sleep(0.005)
                        ticks += 1
                    assert not last.done()
                    await asyncio.to_thread(sync)  # the child takes one message: a place frees
                    await last
                    sync()
                    return [b"%d" % i for i in range(n + 1)]

    want = run(main)
    assert want == [b"%d" % i for i in range(M.MACH_PORT_QLIMIT_DEFAULT + 1)]


def test_send_async_sees_the_port_die_while_it_waits(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pymach.aio, "_LOOK_AGAIN", 3600.0)  # only the hang-up can tell it
    def child(sync: Callable[[], None]) -> None:
        to = inherited()
        with Port() as mine, mine.make_send() as s:
            to.send(Message(b"here", rights=[s.copy()]))
            sync()  # the parent filled our queue and waits to send one more
        # our exit takes the port: its queue is not drained here, so no place frees

    async def main() -> int:
        with Port() as p, p.make_send() as s, registered(s):
            with forked(child) as sync:
                with await _server_right(p) as peer:
                    for _ in range(M.MACH_PORT_QLIMIT_DEFAULT):
                        peer.send(b"fill")
                    waiting = asyncio.ensure_future(peer.send_async(b"more"))
                    await asyncio.sleep(0.01)
                    await asyncio.to_thread(sync)  # the child exits: the port dies
                    # the waiting sender learns it from its connection's hang-up
                    with pytest.raises(pymach.MachError) as e:
                        await waiting
                    return e.value.kr

    assert run(main) == M.MACH_SEND_INVALID_DEST


def test_a_cancelled_receive_loses_no_message(run: Any) -> None:
    async def main() -> list[bytes]:
        out = []
        with Port() as p, p.make_send() as s:
            for yields in range(4):  # cancelled before, as and after the fd polls readable
                waiter = asyncio.ensure_future(p.receive_async(timeout=WAIT))
                await asyncio.sleep(0.005)
                s.send(b"msg%d" % yields)
                for _ in range(yields):
                    await asyncio.sleep(0)
                cancelled = waiter.cancel()
                try:
                    out.append((await waiter).data)  # it had returned already: it is the message
                except asyncio.CancelledError:
                    assert cancelled
                    out.append(p.receive(timeout=0).data)  # still queued
            with pytest.raises(pymach.MachError) as e:
                p.receive(timeout=0)
            assert e.value.kr == M.MACH_RCV_TIMED_OUT
        return out

    assert run(main) == [b"msg%d" % i for i in range(4)]


def test_a_cancelled_request_leaves_nothing_and_its_late_reply_is_dropped(run: Any) -> None:
    def child(sync: Callable[[], None]) -> int:
        to = inherited()
        with Port() as srv, srv.make_send() as s, Port() as extra, extra.make_send() as gift:
            to.send(Message(b"server", rights=[s.copy()]))
            m = srv.receive(timeout=WAIT)
            assert m.reply is not None
            m.reply.send(b"first")
            m = srv.receive(timeout=WAIT)
            assert m.reply is not None
            sync()  # the parent cancels the request
            sync()
            try:  # the late reply carries a send right: it must be released with the reply port
                m.reply.send(Message(b"late", rights=[gift.copy()]))
            except pymach.MachError as e:
                assert e.kr == M.MACH_SEND_INVALID_DEST
            sync()
            return M.KERN_SUCCESS

    async def main() -> None:
        with Port() as p, p.make_send() as s, registered(s):
            with forked(child) as sync:
                with await _server_right(p) as srv:
                    # the first request opens the send right's own channel,
                    # kept for its later messages (as the sync request does)
                    assert (await pymach.request_async(srv, b"first", timeout=WAIT)).data == b"first"
                    fds, before = open_fds(), names()
                    req = asyncio.ensure_future(pymach.request_async(srv, b"slow", timeout=WAIT))
                    await asyncio.to_thread(sync)  # the server has the request
                    req.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await req
                    # no reply port, no fd of its (the send right's reply
                    # connection, whose token was outstanding, may close too;
                    # the request took its reply port from the pool, where
                    # the first request left it)
                    assert names() < before
                    assert open_fds() < fds
                    await asyncio.to_thread(sync)
                    await asyncio.to_thread(sync)  # the late reply was sent, to no port
                    assert names() < before
                    assert open_fds() < fds
                assert not pymach.aio._WATCHES

    run(main)


def test_timeouts_give_the_sync_codes(run: Any) -> None:
    async def main() -> list[int]:
        codes = []
        with Port() as p, p.make_send() as s, Port() as silent, silent.make_send() as to_silent:
            for call in (lambda: p.receive_async(timeout=0.02), lambda: p.receive_async(timeout=0),
                         lambda: pymach.request_async(to_silent, b"?", timeout=0.02)):
                with pytest.raises(pymach.MachError) as e:
                    await call()
                assert isinstance(e.value, pymach.MachTimeoutError)
                codes.append(e.value.kr)
            for _ in range(M.MACH_PORT_QLIMIT_DEFAULT):
                s.send(b"fill")
            with pytest.raises(pymach.MachError) as e:
                await s.send_async(b"more", timeout=0.02)
            codes.append(e.value.kr)
            with pytest.raises(TypeError):
                await p.receive_async(timeout="soon")  # type: ignore[arg-type]
            with pytest.raises(ValueError):
                await s.send_async(b"x", timeout=-1)
        return codes

    assert run(main) == [M.MACH_RCV_TIMED_OUT, M.MACH_RCV_TIMED_OUT, M.MACH_RCV_TIMED_OUT, M.MACH_SEND_TIMED_OUT]


def test_waiters_are_served_in_turn(run: Any) -> None:
    async def main() -> list[bytes]:
        with Port() as p, p.make_send() as s:
            waiters = []
            for _ in range(4):
                waiters.append(asyncio.ensure_future(p.receive_async(timeout=WAIT)))
                await asyncio.sleep(0)  # each is queued before the next
            await asyncio.sleep(0.005)
            for i in range(4):
                s.send(b"%d" % i)
            return [(await w).data for w in waiters]

    assert run(main) == [b"0", b"1", b"2", b"3"]


def test_a_sync_receiver_in_a_thread_shares_the_port_with_the_loop(run: Any) -> None:
    total = 40

    def child(sync: Callable[[], None]) -> None:
        to = inherited()
        sync()
        for i in range(total):
            to.send(b"%d" % i)

    async def main() -> tuple[list[bytes], list[bytes]]:
        with Port() as p, p.make_send() as s, registered(s):
            by_thread: list[bytes] = []
            stop = threading.Event()

            def receiver() -> None:
                while not stop.is_set():
                    try:
                        by_thread.append(p.receive(timeout=0.05).data)
                    except pymach.MachError as e:
                        assert e.kr == M.MACH_RCV_TIMED_OUT

            th = threading.Thread(target=receiver, daemon=True)
            th.start()
            by_loop: list[bytes] = []
            try:
                with forked(child) as sync:
                    await asyncio.to_thread(sync)
                    while len(by_loop) + len(by_thread) < total:
                        try:
                            by_loop.append((await p.receive_async(timeout=0.2)).data)
                        except pymach.MachError as e:
                            assert e.kr == M.MACH_RCV_TIMED_OUT
            finally:
                stop.set()
                th.join(WAIT)
            assert not th.is_alive()
            return by_loop, by_thread

    by_loop, by_thread = run(main)
    assert sorted(by_loop + by_thread, key=int) == [b"%d" % i for i in range(total)]  # each once


def test_port_set_receive_async(run: Any) -> None:
    def child(sync: Callable[[], None]) -> None:
        to = inherited()
        sync()
        to.send(b"to b")

    async def main() -> tuple[bytes, int, list[bytes]]:
        with Port() as a, Port() as b, b.make_send() as to_b, a.make_send() as to_a, registered(to_b):
            with PortSet([a, b]) as ps:
                with forked(child) as sync:
                    got = asyncio.ensure_future(ps.receive_async(timeout=WAIT))
                    await asyncio.sleep(0.005)
                    await asyncio.to_thread(sync)
                    m = await got
                to_a.send(b"to a")
                seen = []
                asyncio.get_running_loop().call_later(0.02, ps.close)
                async for x in ps:  # until the set is destroyed
                    seen.append(x.data)
                return m.data, m.pid, seen

    data, pid, seen = run(main)
    assert (data, seen) == (b"to b", [b"to a"])
    assert pid != os.getpid()
