"""What the netmsg tests share: where the sources are, a process started
for a test (a bootstrap server, a proxy, a peer) that says "ready" before
the test goes on, the resident memory of proxies, and a host of the
test's own that speaks NATS directly."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")
PEER_NAMES = ["echo.b", "echo.b2", "still.b"]


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path, *, ready_fd: bool = False,
                 stdin: bool = False) -> None:
        self.log = log
        r, w = os.pipe()
        argv = args + (["--ready-fd", str(w)] if ready_fd else [])
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, env=env, pass_fds=(w,) if ready_fd else (),
                                         stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                         stdout=subprocess.PIPE if not ready_fd else out, stderr=out)
        os.close(w)
        try:
            src = r if ready_fd else self.proc.stdout.fileno()  # type: ignore[union-attr]
            assert select.select([src], [], [], 30)[0], f"{args} did not start: {log.read_text()}"
            line = os.read(src, 64)
            assert line.startswith(b"ready"), f"{args}: {line!r} {log.read_text()}"
        finally:
            os.close(r)

    def stop(self, kill: bool = False) -> None:
        stop_process(self.proc, kill)


def stop_process(proc: "subprocess.Popen[bytes]", kill: bool = False) -> None:
    """Stop a test's process (SIGTERM, or SIGKILL with ``kill``; SIGKILL
    after 10 s), reap it and close its pipes."""
    if proc.poll() is None:
        if proc.stdin is not None:
            proc.stdin.close()
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f is not None and not f.closed:
            f.close()


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid``, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def settled_rss(pids: dict[str, int], before: dict[str, int], slack_kib: int,
                timeout: float = 15.0) -> dict[str, int]:
    """Each process's RSS, once each is within ``slack_kib`` of ``before``
    (or at the timeout: the caller's assertion says how far it stayed)."""
    deadline = time.monotonic() + timeout
    while True:
        now = {h: rss_kib(pid) for h, pid in pids.items()}
        if all(now[h] <= before[h] + slack_kib for h in pids) or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


class FakeHost:
    """A host of the test's own, speaking NATS directly: a nats-py client
    on an asyncio loop in a thread of its own. Look-ups of ``name`` are
    answered with ``ref`` (when given; ``asked`` collects each request as
    (host, incarnation, name)); frames to ``name`` go to ``on_frame``, an
    async function of the client and the Frame. ``run(coro)`` runs a
    coroutine on the loop; ``send(subject, data)`` publishes and flushes.
    A context manager: the client, the loop and the thread end with it."""

    def __init__(self, url: str, token: str, name: str, ref: Any = None,
                 on_frame: Callable[[Any, Any], Awaitable[None]] | None = None) -> None:
        import asyncio
        import threading
        self.url, self.token, self.name, self.ref, self.on_frame = url, token, name, ref, on_frame
        self.asked: list[tuple[str, int, str]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.nc: Any = None

    def __enter__(self) -> "FakeHost":
        self.thread.start()
        try:
            self.nc = self.run(self._start())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.nc.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _start(self) -> Any:
        import struct
        import nats
        from pymach.netmsg import netname, wire
        nc = await nats.connect(self.url, token=self.token)

        async def on_lookup(m: Any) -> None:
            req = netname.unpack_lookup_request(m.data)
            if req is not None:
                self.asked.append(req)
            await nc.publish(m.reply, struct.pack("<i", 0) + wire.pack_ref(self.ref))

        async def on_frame(m: Any) -> None:
            assert self.on_frame is not None
            await self.on_frame(nc, wire.unpack(m.data))

        if self.ref is not None:
            await nc.subscribe(f"pm.{self.name}.lookup", cb=on_lookup)
        if self.on_frame is not None:
            await nc.subscribe(f"pm.{self.name}.in", cb=on_frame)
        await nc.flush()
        return nc

    def run(self, coro: Awaitable[T], timeout: float = 10) -> T:
        import asyncio
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def send(self, subject: str, data: bytes) -> None:
        async def go() -> None:
            await self.nc.publish(subject, data)
            await self.nc.flush()
        self.run(go())
