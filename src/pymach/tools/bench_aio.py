"""pymach bench aio: asyncio on ports, in two blocks of one run.

- **an async echo server with many concurrent clients**: a server process
  runs one asyncio loop (``async for message in port``, each request
  answered on its reply right); the clients are a few processes, each
  running many asyncio tasks, and each task makes its requests one after
  the other with pymach.request_async. Every client is started before
  any sends, then all go at once. Reported: requests per second (all
  requests over the time from the start to the last reply), and the
  server's peak fds (sampled every 10 ms) and peak RSS (VmHWM).
- **a round trip, async against sync**: one client in this process, a
  sync echo server in another; pymach.request_async on asyncio's loop
  (and on uvloop's when it imports) against pymach.request. Each round
  runs every case once, in an order rotated from round to round; each
  figure is the median of the rounds, with its ratio to the sync call.

Every reply is checked (its data and id): a request that fails or gets
the wrong reply stops the benchmark, and no figure is given.
"""

from __future__ import annotations

import asyncio
import functools
import os
import statistics
import struct
import threading
import time
from typing import Any, Callable

from .._linux import files, process
from .bench_ipc import fail

CLIENTS = 1000
PROCESSES = 4
STOP = 0x53544F50  # the id of the message that stops a server
_RESULT = struct.Struct("<qq")  # (requests answered, failures)
_DEADLINE = 120.0  # s: a request or a wait of the benchmark that takes longer fails it


def _new_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _hand_over(serve: Callable[[Any], None]) -> Callable[[], None]:
    """A server's body: make a port, send its send right in a message to
    the first registered right (the parent's), then ``serve(port)``."""
    def body() -> None:
        import pymach
        (to,) = [r for r in pymach.registered_ports() if r][:1]
        with pymach.Port() as port, port.make_send() as s:
            to.send(pymach.Message(b"server", rights=[s.copy()]))
            serve(port)
    return body


def _serve_async(port: Any) -> None:  # pragma: no cover - a child
    """The async echo server: one loop, ``async for`` on the port."""
    async def serve() -> None:
        async for m in port:
            if m.id == STOP:
                break
            if m.reply is not None:
                _answer(m)
    asyncio.run(serve())


def _answer(m: Any) -> None:
    """Echo ``m`` on its reply right (a send-once right: it never waits for
    a place). A client that went away meanwhile (its reply port destroyed:
    MACH_SEND_INVALID_DEST) is no error of the server's."""
    import pymach
    try:
        m.reply.send(m.data, id=m.id)
    except pymach.MachError as e:
        if e.kr != pymach.mach.MACH_SEND_INVALID_DEST:
            raise


def _serve_sync(port: Any) -> None:  # pragma: no cover - a child
    """The sync echo server."""
    while True:
        m = port.receive()
        if m.id == STOP:
            return
        if m.reply is not None:
            _answer(m)


def _fork(body: Callable[[], None]) -> int:
    pid = process.fork()
    if pid == 0:  # pragma: no cover - a child
        code = 1
        try:
            body()
            code = 0
        except BaseException:  # noqa: BLE001 - the parent sees the exit status
            import traceback
            traceback.print_exc()
        finally:
            process.exit_now(code)
    return pid


class _Server:
    """A forked server and the send right to its port."""

    def __init__(self, serve: Callable[[Any], None]) -> None:
        import pymach
        self.pid = 0
        with pymach.Port() as hello, hello.make_send() as s:
            pymach.register_ports(s)
            try:
                self.pid = _fork(_hand_over(serve))
            finally:
                pymach.register_ports()
            m = hello.receive(timeout=_DEADLINE)
        (right,) = m.rights
        self.right: Any = right

    def stop(self) -> None:
        try:
            self.right.send(b"", id=STOP, timeout=_DEADLINE)
        finally:
            self.right.close()
            status = process.reap(self.pid)
        if status != 0:
            fail("server", f"exited with status {status}")


def _client_process(tasks: int, requests: int, ready_w: int, go_r: int, res_w: int) -> None:  # pragma: no cover
    """A client process (a fork child, which inherits the server's send
    right registered): ``tasks`` asyncio tasks, each making ``requests``
    requests in turn, all started when the parent says go."""
    import pymach
    process.raise_fd_limit()
    (srv,) = [r for r in pymach.registered_ports() if r][:1]

    async def one(i: int, counts: list[int]) -> None:
        for k in range(requests):
            data = b"%d.%d" % (i, k)
            try:
                r = await pymach.request_async(srv, data, id=k, timeout=_DEADLINE)
            except pymach.MachError:
                counts[1] += 1
                continue
            if r.data == data and r.id == k:
                counts[0] += 1
            else:
                counts[1] += 1

    async def main() -> list[int]:
        counts = [0, 0]
        await asyncio.gather(*(one(i, counts) for i in range(tasks)))
        return counts

    files.write(ready_w, b"r")
    files.read(go_r, 1)
    try:
        done, failed = asyncio.run(main())
    except BaseException:
        files.write(res_w, _RESULT.pack(-1, 0))  # the parent stops now; the traceback goes to stderr
        raise
    files.write(res_w, _RESULT.pack(done, failed))


def _fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _peak_rss_kib(pid: int) -> int:
    """VmHWM: the process's peak resident set, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _read_exact(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        if not files.wait_readable(fd, _DEADLINE):
            fail("clients", f"no answer within {_DEADLINE:g} s")
        chunk = files.read(fd, n - len(out))
        if not chunk:
            fail("clients", "a client process died")
        out += chunk
    return out


def echo(clients: int, processes: int, requests: int) -> dict[str, object]:
    """The echo block: ``clients`` tasks in ``processes`` processes, each
    making ``requests`` requests of the async server."""
    import pymach
    process.raise_fd_limit()
    server = _Server(_serve_async)
    pids: list[int] = []
    pipes = [files.pipe() for _ in range(3)]
    (ready_r, ready_w), (go_r, go_w), (res_r, res_w) = pipes
    peak = [_fd_count(server.pid)]
    before = peak[0]
    sampling = threading.Event()
    try:
        per = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
        pymach.register_ports(server.right)
        try:
            for tasks in per:
                pids.append(_fork(functools.partial(_client_process, tasks, requests, ready_w, go_r, res_w)))
        finally:
            pymach.register_ports()
        _read_exact(ready_r, len(per))

        def sample() -> None:
            while not sampling.wait(0.01):
                peak[0] = max(peak[0], _fd_count(server.pid))

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t0 = time.perf_counter()
        files.write(go_w, b"g" * len(per))
        results = []
        for _ in per:
            results.append(_RESULT.unpack(_read_exact(res_r, _RESULT.size)))
            if results[-1][0] < 0:
                fail("clients", "a client process failed (its traceback is on stderr)")
        took = time.perf_counter() - t0
        sampling.set()
        th.join(_DEADLINE)
        peak[0] = max(peak[0], _fd_count(server.pid))
        rss = _peak_rss_kib(server.pid)
    except BaseException:
        sampling.set()
        for pid in pids:
            process.reap(pid)
        files.close_all([fd for pair in pipes for fd in pair])
        try:
            server.stop()
        except (OSError, RuntimeError):
            pass  # what failed first is what the run reports
        raise
    sampling.set()
    for pid in pids:
        process.reap(pid)
    files.close_all([fd for pair in pipes for fd in pair])
    server.stop()
    done = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    if failed or done != clients * requests:
        fail("async echo server", f"{failed} of {clients * requests} requests failed or got a wrong reply")
    return {"case": f"{clients} clients ({processes} processes x {clients // processes} tasks), "
                    f"{requests} requests each",
            "per_s": int(done / took), "requests": done, "seconds": took, "server_fds_before": before,
            "server_fds_peak": peak[0], "server_rss_peak_kib": rss}


def _sync_trips(srv: Any, n: int) -> float:
    import pymach
    t0 = time.perf_counter()
    for k in range(n):
        r = pymach.request(srv, b"ping", id=k, timeout=_DEADLINE)
        if r.id != k or r.data != b"ping":
            fail("sync round trip", f"a wrong reply {r!r}")
    return time.perf_counter() - t0


async def _async_trips(srv: Any, n: int) -> float:
    import pymach
    t0 = time.perf_counter()
    for k in range(n):
        r = await pymach.request_async(srv, b"ping", id=k, timeout=_DEADLINE)
        if r.id != k or r.data != b"ping":
            fail("async round trip", f"a wrong reply {r!r}")
    return time.perf_counter() - t0


def round_trips(n: int, rounds: int) -> dict[str, object]:
    """The round-trip block: median seconds per round trip of each case."""
    import pymach
    server = _Server(_serve_sync)
    runners: dict[str, asyncio.Runner] = {}
    try:
        cases: list[tuple[str, Callable[[], float]]] = [
            ("pymach.request (sync)", lambda: _sync_trips(server.right, n))]
        runners["asyncio"] = asyncio.Runner()
        cases.append(("pymach.request_async, asyncio's loop",
                      lambda: runners["asyncio"].run(_async_trips(server.right, n))))
        uv = _new_loop()
        if uv is not None:
            runners["uvloop"] = asyncio.Runner(loop_factory=uv)
            cases.append(("pymach.request_async, uvloop",
                          lambda: runners["uvloop"].run(_async_trips(server.right, n))))
        for _label, case in cases:  # warm: the channel, the caches
            case()
        samples: dict[str, list[float]] = {c: [] for c, _ in cases}
        for r in range(rounds):
            order = cases[r % len(cases):] + cases[:r % len(cases)]
            for label, case in order:
                samples[label].append(case() / n)
    finally:
        for runner in runners.values():
            runner.close()
        server.stop()
    med = {c: statistics.median(s) for c, s in samples.items()}
    sync = med[cases[0][0]]
    return {"benchmark": "a round trip from one client to a sync echo server in another process: "
                         "async against sync",
            "stat": "median", "repeat": rounds, "ops": n,
            "rows": [{"case": c, "ns_per_op": med[c] * 1e9, "ratio": med[c] / sync, "per_s": int(1 / med[c])}
                     for c, _ in cases]}


def results(n: int, rounds: int, clients: int = CLIENTS, processes: int = PROCESSES) -> list[dict[str, object]]:
    """Both blocks: the echo server (each client makes max(1, n // 100)
    requests) and the round trips (``n`` per sample, ``rounds`` rounds)."""
    requests = max(1, n // 100)
    row = echo(clients, min(processes, clients), requests)
    return [{"benchmark": "an async echo server (one asyncio loop) and its concurrent clients, each an asyncio "
                          "task making requests in turn (pymach.request_async)",
             "stat": "once", "repeat": 1, "ops": row["requests"], "rows": [row]},
            round_trips(n, rounds)]


if __name__ == "__main__":  # pragma: no cover
    print(results(200, 3, 100, 2))
