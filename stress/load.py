"""pymach load: load and soak runs that print figures.

    python -m stress.load clients [--clients 1000] [--rounds 20] [--target service|bootstrap|both]
    python -m stress.load churn [--cycles 100000] [--no-senders 10000]
    python -m stress.load ports [--ports 10000] [--send]
    python -m stress.load qlimit [--senders 6] [--messages 40] [--qlimit 4]
    python -m stress.load soak [--minutes 10] [--interval 10]

Every process is a real one: clients are os.fork children of this process
(which imported pymach first, and freezes its objects with gc.freeze so
that the children share its pages), servers are forked, or for the
bootstrap server started by pymach.bootstrap.private_server()
(``pymach bootstrap serve`` on a socket in a private directory).
Each command checks what it measures (every reply's content, every fd
count) and exits 1 when a check fails. ``tests/test_load.py`` runs the
same routines at a scale that fits the test run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import resource
import select
import signal
import struct
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pymach
import pymach.bootstrap as bootstrap
import pymach.mach as M
from pymach.lowlevel import SELF

REQ_ID = 7100  # a request: the reply's data is answer(request data)
OOL_ID = 7101  # a request with one out-of-line buffer
ENTRY_ID = 7102  # a request with a memory entry: the server writes answer() into it
STOP_ID = 7199  # stop the echo server
REQ = struct.Struct("<IIQ")  # client index, sequence, nonce
RESULT = struct.Struct("<IIII")  # client index, round trips, bad replies, pid
SERVICE = "org.pymach.load.echo"


class CheckFailed(AssertionError):
    """A load run found something wrong (a bad reply, a leak)."""


# -- what the kernel says about a process ------------------------------------------------

def fd_count(pid: int | str = "self") -> int:
    """Open fds of ``pid`` (from /proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fd_count(pid: int, quiet: float = 0.2, timeout: float = 10.0) -> int:
    """``pid``'s open fds once the count has not changed for ``quiet``
    seconds (a server may still be closing the last run's connections)."""
    deadline = time.monotonic() + timeout
    n, since = fd_count(pid), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.02)
        m = fd_count(pid)
        if m != n:
            n, since = m, time.monotonic()
    return n


def mem_kib(pid: int | str = "self") -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB: resident now and at its peak."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


class Peaks:
    """A thread that samples the fds and RSS of some processes every
    ``interval`` seconds and keeps the highest of each."""

    def __init__(self, pids: dict[str, int], interval: float = 0.05) -> None:
        self.pids = pids
        self.interval = interval
        self.fds: dict[str, int] = {k: 0 for k in pids}
        self.rss: dict[str, int] = {k: 0 for k in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        """Take one sample now."""
        for k, pid in self.pids.items():
            with contextlib.suppress(OSError):
                self.fds[k] = max(self.fds[k], fd_count(pid))
                self.rss[k] = max(self.rss[k], mem_kib(pid)[0])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "Peaks":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def wait_until(cond: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


# -- processes ----------------------------------------------------------------------

def fork(fn: Callable[[], object], close: tuple[int, ...] = ()) -> int:
    """Run ``fn()`` in an os.fork child, which first closes ``close`` (the
    ends of pipes it must not hold: a write end held by a child would keep
    EOF from coming): exit 0 if it returns, 1 (with the traceback on
    stderr) if it raises."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            for fd in close:
                if fd >= 0:
                    os.close(fd)
            fn()
            code = 0
        except BaseException:  # noqa: BLE001 - reported by the exit code
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os._exit(code)
    return pid


def reap(pids: list[int], timeout: float = 60.0) -> list[int]:
    """Wait for ``pids`` (SIGKILL after ``timeout``); the pids that did not
    exit 0."""
    deadline = time.monotonic() + timeout
    bad = []
    for pid in pids:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.01)
        if os.waitstatus_to_exitcode(status) != 0:
            bad.append(pid)
    return bad


def read_exact(fd: int, n: int, timeout: float) -> bytes:
    """``n`` bytes from ``fd`` within ``timeout`` seconds (fewer on EOF)."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


@contextlib.contextmanager
def private_bootstrap() -> Iterator[int]:
    """bootstrap.private_server(): a bootstrap server of our own on a
    private socket, which this process and its children use until the end
    of the block; its pid. CheckFailed when it does not start."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(bootstrap.private_server())
        except bootstrap.BootstrapError as err:
            raise CheckFailed(str(err)) from None
        assert server.pid is not None
        yield server.pid


# -- the echo service ---------------------------------------------------------------------

def answer(data: bytes) -> bytes:
    """What the echo server answers to ``data``: its CRC-32, then the bytes
    reversed (a reply that only the right request produces)."""
    return struct.pack("<I", zlib.crc32(data)) + data[::-1]


def _serve(port: pymach.Port, stop_fd: int = -1) -> int:
    """Answer requests on ``port`` until STOP_ID (or ``stop_fd`` reads
    EOF); the number answered."""
    n = 0
    while True:
        try:
            msg = port.receive(timeout=0.5)
        except pymach.MachTimeoutError:
            if stop_fd >= 0 and select.select([stop_fd], [], [], 0)[0]:
                return n
            continue
        try:
            if msg.id == STOP_ID:
                return n
            if msg.id == OOL_ID and len(msg.ool) == 1:
                out = answer(bytes(msg.ool[0]))
            elif msg.id == ENTRY_ID and len(msg.rights) == 1 and isinstance(msg.rights[0], pymach.MemoryEntry):
                with msg.rights[0].map() as region:
                    region.write(answer(region.read(0, len(msg.data))))
                out = b"done"
            elif msg.id == REQ_ID:
                out = answer(msg.data)
            else:
                out = b"?"
            if msg.reply is not None:
                with contextlib.suppress(pymach.MachError):  # the client may be gone
                    msg.reply.send(out, id=msg.id + 100)
                    msg.reply = None
            n += 1
        finally:
            msg.release()


def echo_server(name: str, ready_w: int, stop_fd: int = -1) -> None:
    """Check in ``name``, say so on ``ready_w``, and serve; the count
    answered goes to ``ready_w`` (8 bytes) at the end."""
    with bootstrap.check_in(name) as port:
        os.write(ready_w, b"r")
        n = _serve(port, stop_fd)
    os.write(ready_w, struct.pack("<Q", n))


def round_trip(srv: pymach.SendRight, reply: pymach.Port, idx: int, seq: int, size: int = 64) -> bool:
    """One request and its reply; True when the reply is the right one."""
    data = REQ.pack(idx, seq, (idx << 32) ^ seq ^ 0x5DEECE66D) + bytes((idx + seq + i) & 0xFF for i in range(size))
    srv.send(data, id=REQ_ID, reply=reply, timeout=60)
    msg = reply.receive(timeout=60)
    ok = msg.id == REQ_ID + 100 and msg.data == answer(data)
    msg.release()
    return ok


def ool_trip(srv: pymach.SendRight, reply: pymach.Port, seq: int, size: int) -> bool:
    """A request with ``size`` out-of-line bytes; True on the right reply."""
    data = bytes((seq * 7 + i) & 0xFF for i in range(256)) * (size // 256)
    srv.send(pymach.Message(b"", OOL_ID, ool=[data]), reply=reply, timeout=60)
    msg = reply.receive(timeout=60)
    ok = msg.id == OOL_ID + 100 and msg.data == answer(data)
    msg.release()
    return ok


def entry_trip(srv: pymach.SendRight, reply: pymach.Port, seq: int) -> bool:
    """Share a fresh memory entry with the server, which writes its answer
    into it; True when the memory holds the right answer."""
    data = struct.pack("<Q", seq) * 64
    with pymach.MemoryEntry.create(16384) as entry, entry.map() as region:
        region.write(data)
        srv.send(pymach.Message(data, ENTRY_ID, rights=[entry]), reply=reply, timeout=60)
        msg = reply.receive(timeout=60)
        want = answer(data)
        ok = msg.id == ENTRY_ID + 100 and msg.data == b"done" and region.read(0, len(want)) == want
        msg.release()
        return ok


# -- clients ---------------------------------------------------------------------------

@dataclass
class ClientRun:
    """The figures of one ``clients`` run."""

    target: str
    clients: int
    rounds: int
    seconds: float = 0.0
    requests: int = 0
    bad: int = 0
    failed: int = 0
    server_fds_baseline: int = 0
    server_fds_connected: int = 0
    server_fds_peak: int = 0
    server_fds_after: int = 0
    server_rss_before: int = 0
    server_rss_peak: int = 0
    served: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def check(self) -> None:
        """Raise CheckFailed unless every reply was right and the server's
        fds came back to (at most) their baseline."""
        want = self.clients * self.rounds
        if self.failed or self.bad or self.requests != want:
            raise CheckFailed(f"{self.target}: {self.failed} clients failed, {self.bad} bad replies, "
                              f"{self.requests} of {want} round trips")
        if self.server_fds_after > self.server_fds_baseline:
            raise CheckFailed(f"{self.target}: server fds {self.server_fds_baseline} before, "
                              f"{self.server_fds_after} after the clients exited")

    def report(self) -> str:
        return (f"{self.target}: {self.clients} clients x {self.rounds} round trips = {self.requests} in "
                f"{self.seconds:.2f} s: {self.rate:.0f} requests/s, {self.bad} bad replies, "
                f"{self.failed} clients failed\n"
                f"  server fds: {self.server_fds_baseline} before, {self.server_fds_connected} with every client "
                f"connected, {self.server_fds_peak} at the peak, {self.server_fds_after} after the clients exited\n"
                f"  server RSS: {self.server_rss_before} KiB before, {self.server_rss_peak} KiB at the peak (VmHWM)")


def _service_client(idx: int, rounds: int, ready_w: int, go_r: int, res_w: int) -> None:
    srv = bootstrap.look_up(SERVICE)
    with pymach.Port() as reply:
        good = round_trip(srv, reply, idx, 0)  # opens this client's channel to the port
        os.write(ready_w, b"r")
        os.read(go_r, 1)  # EOF: every client starts at once
        bad = 0 if good else 1
        for seq in range(1, rounds + 1):
            bad += not round_trip(srv, reply, idx, seq)
    srv.close()
    os.write(res_w, RESULT.pack(idx, rounds, bad, os.getpid()))


def _bootstrap_client(idx: int, rounds: int, names: list[str], inos: list[int],
                      ready_w: int, go_r: int, res_w: int) -> None:

    def look(seq: int) -> bool:
        k = (idx + seq) % (len(names) + 1)
        if k == len(names):  # a name nobody holds
            try:
                bootstrap.look_up("org.pymach.load.nobody").close()
            except pymach.BootstrapError as e:
                return e.kr == bootstrap.BOOTSTRAP_UNKNOWN_SERVICE
            return False
        right = bootstrap.look_up(names[k])
        try:
            # the right is the server's own connection to that service
            ent = SELF.space.lookup(right.name)
            return ent is not None and getattr(ent.cap, "ino", None) == inos[k]
        finally:
            right.close()

    bad = 0 if look(0) else 1  # opens this client's channel to the bootstrap port
    os.write(ready_w, b"r")
    os.read(go_r, 1)
    for seq in range(1, rounds + 1):
        bad += not look(seq)
    os.write(res_w, RESULT.pack(idx, rounds, bad, os.getpid()))


def _run_clients(run: ClientRun, server_pid: int, client: Callable[[int, int, int, int], None],
                 timeout: float) -> None:
    """Fork ``run.clients`` clients, wait until all are connected, release
    them together and collect their results."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    pids: list[int] = []
    try:
        run.server_fds_baseline = settled_fd_count(server_pid)
        run.server_rss_before = mem_kib(server_pid)[0]
        gc.collect()
        gc.freeze()  # the children share this process's objects instead of copying them
        with Peaks({"server": server_pid}) as peaks:
            def body(i: int) -> None:
                try:
                    client(i, ready_w, go_r, res_w)
                except BaseException:
                    os.write(ready_w, b"x")  # (after "r" it is never read)
                    raise

            for i in range(run.clients):
                pids.append(fork(lambda i=i: body(i), (ready_r, go_w, res_r)))  # type: ignore[misc]
            os.close(ready_w)
            ready_w = -1
            got = read_exact(ready_r, run.clients, timeout)
            if got.count(b"r") != run.clients:
                raise CheckFailed(f"{run.target}: {got.count(b'r')} of {run.clients} clients connected, "
                                  f"{got.count(b'x')} failed")
            peaks.sample()
            run.server_fds_connected = fd_count(server_pid)
            t0 = time.perf_counter()
            os.close(go_w)
            go_w = -1
            os.close(res_w)
            res_w = -1
            raw = read_exact(res_r, RESULT.size * run.clients, timeout)
            run.seconds = time.perf_counter() - t0
        gc.unfreeze()
        for off in range(0, len(raw) - RESULT.size + 1, RESULT.size):
            _idx, n, bad, _pid = RESULT.unpack_from(raw, off)
            run.requests += n
            run.bad += bad
        run.failed = len(reap(pids, timeout))
        pids = []
        run.server_fds_peak = peaks.fds["server"]
        # the server reads each client's hang-up as it comes: a bounded wait
        wait_until(lambda: fd_count(server_pid) <= run.server_fds_baseline, 30)
        run.server_fds_after = fd_count(server_pid)
        run.server_rss_peak = mem_kib(server_pid)[1]
    finally:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        reap(pids)
        for fd in (ready_r, ready_w, go_r, go_w, res_r, res_w):
            if fd >= 0:
                os.close(fd)


def raise_nofile(need: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit now.
    CheckFailed if that is below ``need``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < need:
        raise CheckFailed(f"RLIMIT_NOFILE hard limit {soft} is below the {need} fds this run needs")
    return soft


def clients(n: int = 1000, rounds: int = 20, targets: tuple[str, ...] = ("service", "bootstrap"),
            timeout: float = 300.0) -> list[ClientRun]:
    """``n`` client processes against one echo service and against the
    bootstrap server (bootstrap_look_up), all connected at once, each with
    its own reply port, doing ``rounds`` checked round trips each."""
    raise_nofile(4 * n + 100)
    out = []
    with private_bootstrap() as server_pid:
        if "service" in targets:
            ready_r, ready_w = os.pipe()
            try:
                spid = fork(lambda: echo_server(SERVICE, ready_w), (ready_r,))
                if read_exact(ready_r, 1, 20) != b"r":
                    raise CheckFailed("the echo server did not start")
                run = ClientRun("service", n, rounds)
                try:
                    _run_clients(run, spid, lambda i, rw, gr, ow: _service_client(i, rounds, rw, gr, ow), timeout)
                finally:
                    with contextlib.suppress(pymach.MachError), bootstrap.look_up(SERVICE) as srv:
                        srv.send(b"", id=STOP_ID, timeout=10)
                    run.served = struct.unpack("<Q", read_exact(ready_r, 8, 30).ljust(8, b"\0"))[0]
                    if reap([spid], 30):
                        run.notes.append("the echo server failed")
            finally:
                os.close(ready_r)
                os.close(ready_w)
            if run.served != n * (rounds + 1):
                run.notes.append(f"the server answered {run.served} requests, not {n * (rounds + 1)}")
            out.append(run)
        if "bootstrap" in targets:
            names = [f"org.pymach.load.svc{k}" for k in range(4)]
            rights = [bootstrap.create_service(nm) for nm in names]
            try:
                inos = [SELF.space.lookup(r.name).cap.ino for r in rights]  # type: ignore[union-attr]
                run = ClientRun("bootstrap_look_up", n, rounds)
                _run_clients(run, server_pid,
                             lambda i, rw, gr, ow: _bootstrap_client(i, rounds, names, inos, rw, gr, ow), timeout)
                out.append(run)
            finally:
                for r in rights:
                    r.close()
    return out


# -- send right churn ----------------------------------------------------------------------

@dataclass
class ChurnRun:
    """The figures of one ``churn`` run."""

    mode: str
    cycles: int
    seconds: float
    fds: tuple[int, int]
    rss: tuple[int, int]

    def check(self, rss_slack_kib: int = 256) -> None:
        """CheckFailed if fds grew, or RSS by more than ``rss_slack_kib``."""
        if self.fds[1] != self.fds[0] or self.rss[1] > self.rss[0] + rss_slack_kib:
            raise CheckFailed(f"churn {self.mode}: fds {self.fds[0]} -> {self.fds[1]}, "
                              f"RSS {self.rss[0]} -> {self.rss[1]} KiB")

    def report(self) -> str:
        return (f"churn {self.mode}: {self.cycles} cycles in {self.seconds:.2f} s "
                f"({self.cycles / self.seconds:.0f} cycles/s);\n  fds {self.fds[0]} at the start, {self.fds[1]} at the end;"
                f"\n  RSS {self.rss[0]} KiB at the start, {self.rss[1]} KiB at the end")


def _kr(kr: int, what: str) -> None:
    if kr != M.KERN_SUCCESS:
        raise CheckFailed(f"{what}: {M.mach_error_string(kr)} ({kr:#x})")


def churn(cycles: int = 100_000) -> ChurnRun:
    """mach_port_insert_right(MAKE_SEND) then mach_port_deallocate,
    ``cycles`` times, on one port; the fds and RSS before and after."""
    task = M.mach_task_self()
    name = M.mach_port_t()
    _kr(M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, ctypes.byref(name)), "mach_port_allocate")
    t = M.mach_port_type_t()
    try:
        def cycle(k: int) -> None:
            for _ in range(k):
                _kr(M.mach_port_insert_right(task, name, name, M.MACH_MSG_TYPE_MAKE_SEND), "insert_right")
                _kr(M.mach_port_deallocate(task, name), "mach_port_deallocate")
        cycle(1000)  # warm: the port's cached connection exists from here on
        gc.collect()
        fds0, rss0 = fd_count(), mem_kib()[0]
        t0 = time.perf_counter()
        cycle(cycles)
        secs = time.perf_counter() - t0
        gc.collect()
        _kr(M.mach_port_type(task, name, ctypes.byref(t)), "mach_port_type")
        if t.value != M.MACH_PORT_TYPE_RECEIVE:
            raise CheckFailed(f"after the churn the name is {t.value:#x}, not a bare receive right")
        return ChurnRun("insert_right/deallocate", cycles, secs, (fds0, fd_count()), (rss0, mem_kib()[0]))
    finally:
        M.mach_port_mod_refs(task, name, M.MACH_PORT_RIGHT_RECEIVE, -1)


def churn_no_senders(cycles: int = 10_000) -> ChurnRun:
    """Each cycle: arm a no-senders request, MAKE_SEND (which then opens a
    connection of its own), deallocate, and receive the notification;
    the fds and RSS before and after."""
    task = M.mach_task_self()
    port, notify = pymach.Port(), pymach.Port()
    prev = M.mach_port_t()
    try:
        def cycle(k: int) -> None:
            for i in range(k):
                _kr(M.mach_port_request_notification(task, port.name, M.MACH_NOTIFY_NO_SENDERS, 0, notify.name,
                                                     M.MACH_MSG_TYPE_MAKE_SEND_ONCE, ctypes.byref(prev)),
                    "request no-senders")
                _kr(M.mach_port_insert_right(task, port.name, port.name, M.MACH_MSG_TYPE_MAKE_SEND), "insert_right")
                _kr(M.mach_port_deallocate(task, port.name), "mach_port_deallocate")
                msg = notify.receive(timeout=30)
                msg.release()
                if msg.id != M.MACH_NOTIFY_NO_SENDERS:
                    raise CheckFailed(f"cycle {i}: notification {msg.id}, not no-senders")
        cycle(200)
        gc.collect()
        fds0, rss0 = fd_count(), mem_kib()[0]
        t0 = time.perf_counter()
        cycle(cycles)
        secs = time.perf_counter() - t0
        gc.collect()
        return ChurnRun("no-senders armed", cycles, secs, (fds0, fd_count()), (rss0, mem_kib()[0]))
    finally:
        port.close()
        notify.close()


# -- many ports ------------------------------------------------------------------------------

@dataclass
class PortsRun:
    """The figures of one ``ports`` run."""

    ports: int
    send: bool
    fds_baseline: int
    fds_full: int
    fds_after: int
    alloc_seconds: float
    destroy_seconds: float
    rss: tuple[int, int]

    def report(self) -> str:
        per = (self.fds_full - self.fds_baseline) / self.ports
        return (f"ports: {self.ports} receive rights{' with a send right each' if self.send else ''} in "
                f"{self.alloc_seconds:.2f} s ({self.ports / self.alloc_seconds:.0f}/s), fds per port: {per:g};\n  "
                f"fds {self.fds_baseline} -> {self.fds_full} -> {self.fds_after} after destroying all in "
                f"{self.destroy_seconds:.2f} s;\n  RSS {self.rss[0]} -> {self.rss[1]} KiB")


def names_and_types() -> dict[int, int]:
    """mach_port_names of our task, as {name: type}."""
    task = M.mach_task_self()
    names, types = M.mach_port_array_t(), M.mach_port_type_array_t()
    ncnt, tcnt = M.mach_msg_type_number_t(), M.mach_msg_type_number_t()
    _kr(M.mach_port_names(task, ctypes.byref(names), ctypes.byref(ncnt), ctypes.byref(types), ctypes.byref(tcnt)),
        "mach_port_names")
    try:
        return {names[i]: types[i] for i in range(ncnt.value)}
    finally:
        for arr, cnt in ((names, ncnt), (types, tcnt)):
            if cnt.value:
                M.mach_vm_deallocate(task, ctypes.cast(arr, ctypes.c_void_p).value, cnt.value * 4)


def ports(n: int = 10_000, send: bool = False) -> PortsRun:
    """Allocate ``n`` receive rights (with ``send``, a send right each),
    check mach_port_names and the fds, destroy them all, check the fds are
    back. Raises the soft RLIMIT_NOFILE to the hard limit first."""
    task = M.mach_task_self()
    gc.collect()
    base = fd_count()
    rss0 = mem_kib()[0]
    raise_nofile(base + n * (5 if send else 1) + 64)
    before = set(names_and_types())
    made: list[int] = []
    name = M.mach_port_t()
    try:
        t0 = time.perf_counter()
        for i in range(n):
            kr = M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, ctypes.byref(name))
            if kr != M.KERN_SUCCESS:
                _kr(kr, f"mach_port_allocate #{i} (fds {fd_count()}, limit "
                        f"{resource.getrlimit(resource.RLIMIT_NOFILE)[0]})")
            made.append(name.value)
            if send:
                _kr(M.mach_port_insert_right(task, name, name, M.MACH_MSG_TYPE_MAKE_SEND), f"insert_right #{i}")
        alloc = time.perf_counter() - t0
        full = fd_count()
        rss1 = mem_kib()[0]
        want = M.MACH_PORT_TYPE_RECEIVE | (M.MACH_PORT_TYPE_SEND if send else 0)
        seen = names_and_types()
        if len(set(made)) != n or set(seen) - before != set(made):
            raise CheckFailed(f"mach_port_names: {len(set(seen) - before)} new names, {n} made")
        wrong = [nm for nm in made if seen[nm] != want]
        if wrong:
            raise CheckFailed(f"{len(wrong)} names of the wrong type, e.g. {wrong[0]:#x}: {seen[wrong[0]]:#x}")
        t0 = time.perf_counter()
        while made:
            _kr(M.mach_port_destroy(task, made.pop()), "mach_port_destroy")
        destroy = time.perf_counter() - t0
        gc.collect()
        after = fd_count()
        if after != base or set(names_and_types()) != before:
            raise CheckFailed(f"after destroying every port: fds {base} -> {after}")
        return PortsRun(n, send, base, full, after, alloc, destroy, (rss0, rss1))
    finally:
        for nm in made:
            M.mach_port_destroy(task, nm)


def exhaust(headroom: int = 40) -> tuple[int, int, int, int]:
    """With RLIMIT_NOFILE lowered to ``headroom`` fds above what is open,
    allocate receive rights until mach_port_allocate fails; then try a send
    right, mach_port_construct and a Port on the full space. Returns
    (mach_port_allocate's code, insert_right's code, ports made, fds
    leaked: the fds open after destroying everything minus those before).
    Meant for a child process (it lowers its own limit)."""
    task = M.mach_task_self()
    gc.collect()
    base = fd_count()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1 + headroom, hard))
    made: list[int] = []
    name = M.mach_port_t()
    try:
        while True:
            kr = M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, ctypes.byref(name))
            if kr != M.KERN_SUCCESS:
                break
            made.append(name.value)
            if len(made) > highest + headroom:
                raise CheckFailed("RLIMIT_NOFILE was not reached")
        # the space is full: a send right needs fds too, and so does a port
        # made any other way
        kr_send = M.mach_port_insert_right(task, made[0], made[0], M.MACH_MSG_TYPE_MAKE_SEND)
        if kr_send == M.KERN_SUCCESS:
            M.mach_port_deallocate(task, made[0])
        opts = M.mach_port_options_t(flags=M.MPO_INSERT_SEND_RIGHT)
        kr_construct = M.mach_port_construct(task, ctypes.byref(opts), 0, ctypes.byref(name))
        if kr_construct != kr:
            raise CheckFailed(f"mach_port_construct on a full space: {kr_construct:#x}, allocate gave {kr:#x}")
        try:
            pymach.Port().close()
            raise CheckFailed("Port() on a full space succeeded")
        except pymach.MachError as e:
            if e.kr != kr:
                raise CheckFailed(f"Port() on a full space: {e.kr:#x}, mach_port_allocate gave {kr:#x}") from e
        # one port fewer: there is room again
        _kr(M.mach_port_destroy(task, made.pop()), "mach_port_destroy")
        _kr(M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, ctypes.byref(name)), "mach_port_allocate")
        made.append(name.value)
        for nm in made:
            _kr(M.mach_port_destroy(task, nm), "mach_port_destroy")
        n = len(made)
        made = []
        gc.collect()
        return kr, kr_send, n, fd_count() - base
    finally:
        for nm in made:
            M.mach_port_destroy(task, nm)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- queues at their limit ------------------------------------------------------------------

QMSG = struct.Struct("<II")  # sender, sequence


@dataclass
class QlimitRun:
    """The figures of one ``qlimit`` run."""

    senders: int
    messages: int
    qlimit: int
    raised_to: int
    blocked_at_full: int = 0
    queued_at_full: int = 0
    queued_after_raise: int = 0
    timed_out: int = 0
    received: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        return (f"qlimit: {self.senders} senders x {self.messages} messages, qlimit {self.qlimit}: "
                f"{self.blocked_at_full} senders blocked with {self.queued_at_full} queued;\n  "
                f"MACH_SEND_TIMEOUT sender got MACH_SEND_TIMED_OUT {self.timed_out} times;\n  "
                f"qlimit raised to {self.raised_to}: {self.queued_after_raise} queued;\n  "
                f"{self.received} received exactly once, in order per sender, in {self.seconds:.2f} s")


def _msgcount(name: int) -> int:
    st = M.mach_port_status_t()
    cnt = M.mach_msg_type_number_t(M.MACH_PORT_RECEIVE_STATUS_COUNT)
    _kr(M.mach_port_get_attributes(M.mach_task_self(), name, M.MACH_PORT_RECEIVE_STATUS, ctypes.byref(st),
                                   ctypes.byref(cnt)), "mach_port_get_attributes")
    return int(st.mps_msgcount)


def _set_qlimit(name: int, q: int) -> None:
    info = M.mach_port_limits_t(q)
    _kr(M.mach_port_set_attributes(M.mach_task_self(), name, M.MACH_PORT_LIMITS_INFO, ctypes.byref(info),
                                   M.MACH_PORT_LIMITS_INFO_COUNT), "mach_port_set_attributes")


def _blocked(pid: int) -> bool:
    """The process sleeps in poll or epoll_wait (waiting for a place in the
    queue)."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            nr = f.read().split()[0]
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state == "S" and nr in ("7", "271", "232", "281", "441")  # poll, ppoll, epoll_wait, _pwait, _pwait2


def qlimit(senders: int = 6, messages: int = 40, limit: int = 4, timeout: float = 60.0) -> QlimitRun:
    """``senders`` processes each send ``messages`` messages (no timeout)
    to a port whose qlimit is ``limit``, so they block; a sender with
    MACH_SEND_TIMEOUT gets MACH_SEND_TIMED_OUT; the qlimit is raised,
    which wakes blocked senders; then everything is received and checked:
    each message exactly once, in order per sender."""
    run = QlimitRun(senders, messages, limit, limit + senders)
    port = pymach.Port()
    pids: list[int] = []
    try:
        _set_qlimit(port.name, limit)
        with port.make_send() as right:
            pymach.register_ports(right)

            def sender(idx: int) -> None:
                (dest,) = [r for r in pymach.registered_ports() if r]
                for seq in range(messages):
                    dest.send(QMSG.pack(idx, seq), id=idx)

            def timed_sender() -> int:
                (dest,) = [r for r in pymach.registered_ports() if r]
                try:
                    dest.send(QMSG.pack(senders, 0), id=senders, timeout=0.05)
                except pymach.MachError as e:
                    return e.kr
                return 0

            pids = [fork(lambda i=i: sender(i)) for i in range(senders)]  # type: ignore[misc]
            pymach.register_ports()
        t0 = time.perf_counter()
        if not wait_until(lambda: _msgcount(port.name) >= limit and sum(map(_blocked, pids)) == senders, timeout):
            raise CheckFailed(f"the senders did not all block: {_msgcount(port.name)} queued, "
                              f"{sum(map(_blocked, pids))} of {senders} blocked")
        run.blocked_at_full = sum(map(_blocked, pids))
        run.queued_at_full = _msgcount(port.name)
        # while full, a sender with a timeout times out (several tries, each must)
        for _ in range(3):
            with port.make_send() as right:
                pymach.register_ports(right)
                r, w = os.pipe()
                pid = fork(lambda: os.write(w, struct.pack("<i", timed_sender())), (r,))
                pymach.register_ports()
            os.close(w)
            kr = struct.unpack("<i", read_exact(r, 4, timeout) or b"\0\0\0\0")[0]
            os.close(r)
            reap([pid])
            if kr != M.MACH_SEND_TIMED_OUT:
                raise CheckFailed(f"a send with MACH_SEND_TIMEOUT on a full queue gave {kr:#x}")
            run.timed_out += 1
        # XNU wakes blocked senders when the qlimit grows
        _set_qlimit(port.name, run.raised_to)
        if not wait_until(lambda: _msgcount(port.name) >= run.raised_to, timeout):
            raise CheckFailed(f"raising the qlimit to {run.raised_to} woke no sender: {_msgcount(port.name)} queued")
        run.queued_after_raise = _msgcount(port.name)
        nxt = [0] * senders
        for _ in range(senders * messages):
            msg = port.receive(timeout=timeout)
            idx, seq = QMSG.unpack(msg.data)
            msg.release()
            if idx >= senders or msg.id != idx or seq != nxt[idx]:
                raise CheckFailed(f"sender {idx}: message {seq}, expected {nxt[idx] if idx < senders else '-'}")
            nxt[idx] += 1
            run.received += 1
        run.seconds = time.perf_counter() - t0
        with contextlib.suppress(pymach.MachTimeoutError):
            port.receive(timeout=0.2)
            raise CheckFailed("a message more than was sent")
        bad = reap(pids)
        pids = []
        if bad:
            raise CheckFailed(f"{len(bad)} senders failed")
        return run
    finally:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        reap(pids)
        port.close()


# -- soak ----------------------------------------------------------------------------------

def _stopped(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _steady_client(stop_fd: int, res_w: int) -> None:
    """Round trips of every kind, re-looking-up the service now and then,
    until ``stop_fd`` reads EOF."""
    done = bad = 0
    with pymach.Port() as reply:
        while not _stopped(stop_fd):
            with bootstrap.look_up(SERVICE) as srv:
                for seq in range(50):
                    kind = seq % 10
                    if kind == 0:
                        ok = ool_trip(srv, reply, seq, 64 * 1024)
                    elif kind == 5:
                        ok = entry_trip(srv, reply, seq)
                    else:
                        ok = round_trip(srv, reply, 1, seq)
                    done += 1
                    bad += not ok
    os.write(res_w, RESULT.pack(1, done, bad, os.getpid()))


def _churn_worker(stop_fd: int, res_w: int) -> None:
    """Send right churn and no-senders churn until ``stop_fd`` reads EOF."""
    done = 0
    while not _stopped(stop_fd):
        churn(2000)
        churn_no_senders(100)
        with pymach.Port() as p:  # ports made and destroyed
            for _ in range(50):
                pymach.Port().close()
            p.make_send().close()
        done += 2100
    os.write(res_w, RESULT.pack(2, done, 0, os.getpid()))


def _wave_client(idx: int, res_w: int) -> None:
    """A short-lived client: look up, a few round trips of every kind, exit."""
    bad = 0
    with bootstrap.look_up(SERVICE) as srv, pymach.Port() as reply:
        bad += not round_trip(srv, reply, idx, 0)
        bad += not ool_trip(srv, reply, idx, 8192)
        bad += not entry_trip(srv, reply, idx)
        for seq in range(1, 8):
            bad += not round_trip(srv, reply, idx, seq)
    os.write(res_w, RESULT.pack(3, 10, bad, os.getpid()))


@dataclass
class SoakRun:
    """The samples of a soak: per process, (seconds, RSS KiB, fds)."""

    samples: dict[str, list[tuple[float, int, int]]]
    requests: int = 0  # round trips of the steady and short-lived clients
    churn: int = 0  # the churn worker's cycles
    bad: int = 0
    failed: int = 0
    waves: int = 0
    seconds: float = 0.0

    def verdicts(self, rss_slack: float = 0.05, rss_floor_kib: int = 2048, fd_slack: int = 4) -> dict[str, str]:
        """Per process: '' when the last quarter's maxima are within the
        bounds of the first quarter's, else what grew."""
        out = {}
        for k, rows in self.samples.items():
            q = max(1, len(rows) // 4)
            first, last = rows[:q], rows[-q:]
            r0, r1 = max(r for _t, r, _f in first), max(r for _t, r, _f in last)
            f0, f1 = max(f for _t, _r, f in first), max(f for _t, _r, f in last)
            why = []
            if r1 > r0 + max(int(r0 * rss_slack), rss_floor_kib):
                why.append(f"RSS {r0} -> {r1} KiB")
            if f1 > f0 + fd_slack:
                why.append(f"fds {f0} -> {f1}")
            out[k] = ", ".join(why)
        return out

    def table(self) -> str:
        keys = list(self.samples)
        head = "   time  " + "  ".join(f"{k:>22}" for k in keys)
        lines = [head, "         " + "  ".join(f"{'RSS KiB':>14} {'fds':>7}" for _ in keys)]
        n = max(len(v) for v in self.samples.values())
        for i in range(n):
            cells = []
            t = 0.0
            for k in keys:
                rows = self.samples[k]
                if i < len(rows):
                    t, r, f = rows[i]
                    cells.append(f"{r:>14} {f:>7}")
                else:
                    cells.append(f"{'-':>14} {'-':>7}")
            lines.append(f"{t:>6.0f}s  " + "  ".join(cells))
        return "\n".join(lines)


def _settle(pids: list[int], timeout: float = 2.0) -> None:
    """Wait (boundedly) until the fd counts of ``pids`` are the same in two
    looks 50 ms apart: the servers have read the hang-ups of clients that
    just exited."""
    last: list[int] = []

    def same() -> bool:
        nonlocal last
        now = [fd_count(p) for p in pids]
        ok, last = now == last, now
        return ok

    wait_until(same, timeout, 0.05)


def soak(minutes: float = 10.0, interval: float = 10.0, wave: int = 8, out: Any = None) -> SoakRun:
    """Run the mix for ``minutes``: an echo service; a steady client
    (requests, out-of-line memory, memory entries, re-look-ups); a churn
    worker (send rights, no-senders, ports); waves of short-lived clients
    that look the service up and exit. Every ``interval`` seconds the RSS
    and fds of every long-lived process (and the bootstrap server and this
    process) are sampled and printed."""
    raise_nofile(1024)
    stop_r, stop_w = os.pipe()
    ready_r, ready_w = os.pipe()
    res_r, res_w = os.pipe()
    os.set_blocking(res_r, False)
    procs: dict[str, int] = {}
    run = SoakRun({})
    waves: list[int] = []
    raw = bytearray()

    def drain() -> None:
        """Count the results written so far (and keep only a partial one)."""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(res_r, 65536):
                raw.extend(chunk)
        whole = len(raw) - len(raw) % RESULT.size
        for off in range(0, whole, RESULT.size):
            kind, n, bad, _pid = RESULT.unpack_from(raw, off)
            if kind == 2:
                run.churn += n
            else:
                run.requests += n
            run.bad += bad
        del raw[:whole]

    try:
        with private_bootstrap() as server_pid:
            procs["bootstrap server"] = server_pid
            keep_out = (stop_w, ready_r, res_r)
            procs["echo server"] = fork(lambda: echo_server(SERVICE, ready_w, stop_r), keep_out)
            if read_exact(ready_r, 1, 20) != b"r":
                raise CheckFailed("the echo server did not start")
            gc.collect()
            gc.freeze()
            procs["steady client"] = fork(lambda: _steady_client(stop_r, res_w), keep_out)
            procs["churn worker"] = fork(lambda: _churn_worker(stop_r, res_w), keep_out)
            procs["load (this)"] = os.getpid()
            run.samples = {k: [] for k in procs}
            t0 = time.monotonic()
            end = t0 + minutes * 60
            next_sample = t0
            idx = 0
            while True:
                # the last wave is reaped first: samples are taken with no
                # short-lived client alive, once the servers have seen them go
                run.failed += len(reap(waves))
                waves = []
                drain()
                now = time.monotonic()
                if now >= next_sample:
                    _settle(list(procs.values()))
                    for k, pid in procs.items():
                        try:
                            run.samples[k].append((now - t0, mem_kib(pid)[0], fd_count(pid)))
                        except OSError as e:
                            raise CheckFailed(f"{k} ({pid}) is gone") from e
                    if out is not None:
                        row = "  ".join(f"{k}: {run.samples[k][-1][1]} KiB {run.samples[k][-1][2]} fds"
                                        for k in procs)
                        print(f"{now - t0:>6.0f}s  {row}", file=out, flush=True)
                    next_sample += interval
                    if now >= end:
                        break
                waves = [fork(lambda i=i: _wave_client(i, res_w), keep_out)  # type: ignore[misc]
                         for i in range(idx, idx + wave)]
                idx += wave
                run.waves += 1
                time.sleep(min(0.2, max(0.0, next_sample - time.monotonic())))
            os.close(stop_w)
            stop_w = -1
            for k in ("steady client", "churn worker", "echo server"):
                run.failed += len(reap([procs[k]], 120))
            drain()
            run.seconds = time.monotonic() - t0
            gc.unfreeze()
    finally:
        for pid in waves + [p for k, p in procs.items() if k not in ("load (this)", "bootstrap server")]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for fd in (stop_r, stop_w, ready_r, ready_w, res_r, res_w):
            if fd >= 0:
                os.close(fd)
    return run


# -- the command ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m stress.load COMMAND``; 0 when every check passed."""
    ap = argparse.ArgumentParser(prog="python -m stress.load", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("clients", help="many client processes against a service and the bootstrap server")
    c.add_argument("--clients", type=int, default=1000)
    c.add_argument("--rounds", type=int, default=20)
    c.add_argument("--target", choices=["service", "bootstrap", "both"], default="both")
    c = sub.add_parser("churn", help="MAKE_SEND / deallocate cycles")
    c.add_argument("--cycles", type=int, default=100_000)
    c.add_argument("--no-senders", type=int, default=10_000, help="cycles with a no-senders request armed")
    c = sub.add_parser("ports", help="many ports in one task")
    c.add_argument("--ports", type=int, default=10_000)
    c.add_argument("--send", action="store_true", help="a send right for each port too")
    c = sub.add_parser("qlimit", help="senders blocked on a full queue")
    c.add_argument("--senders", type=int, default=6)
    c.add_argument("--messages", type=int, default=40)
    c.add_argument("--qlimit", type=int, default=4)
    c = sub.add_parser("soak", help="a mix of everything, sampled")
    c.add_argument("--minutes", type=float, default=10.0)
    c.add_argument("--interval", type=float, default=10.0)
    c.add_argument("--wave", type=int, default=8, help="short-lived clients per wave")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "clients":
            targets = ("service", "bootstrap") if a.target == "both" else (a.target,)
            for run in clients(a.clients, a.rounds, targets):
                print(run.report())
                for note in run.notes:
                    print("  " + note)
                run.check()
                if run.notes:
                    raise CheckFailed("; ".join(run.notes))
        elif a.cmd == "churn":
            for r in (churn(a.cycles), churn_no_senders(a.no_senders)):
                print(r.report())
                r.check()
        elif a.cmd == "ports":
            print(ports(a.ports, a.send).report())
        elif a.cmd == "qlimit":
            print(qlimit(a.senders, a.messages, a.qlimit).report())
        else:
            print(f"soak: {a.minutes:g} minutes, a sample every {a.interval:g} s")
            s = soak(a.minutes, a.interval, a.wave, out=sys.stdout)
            print(s.table())
            print(f"{s.requests} round trips ({s.bad} bad), {s.churn} churn cycles, {s.waves} waves of "
                  f"{a.wave} short-lived clients, {s.failed} processes failed, in {s.seconds:.0f} s")
            verdicts = s.verdicts()
            for k, why in verdicts.items():
                print(f"  {k:<18} {'bounded' if not why else 'GREW: ' + why}")
            ok = not any(verdicts.values()) and not s.bad and not s.failed
            print("verdict: " + ("no unbounded growth" if ok else "FAILED"))
            return 0 if ok else 1
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
