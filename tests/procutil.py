"""Helpers that check memory from outside pymach: raw access with ctypes,
the kernel's view in /proc/self/maps and /proc/self/smaps, os.fork
children whose failures reach the parent (Doomed, forked, run_in_child),
and processes to look at, ours or nobody's.

Imported by the tests as ``from procutil import ...`` (pytest puts tests/ on
sys.path). Nothing here uses pymach, so a test built on these helpers does
not only trust pymach's own record of itself.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest

__all__ = [
    "Doomed",
    "Mapping",
    "NOBODY",
    "ROOT_ONLY",
    "Vma",
    "become_nobody",
    "child_exit_code",
    "forked",
    "is_free",
    "mapped_in",
    "open_fds",
    "maps",
    "peek",
    "perms_at",
    "poke",
    "read_vmas",
    "run_in_child",
    "sleep_process",
    "spawn_with_pid",
    "start_sleep",
    "stop_process",
    "vmflags_at",
]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.getdents64.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
_libc.getdents64.restype = ctypes.c_ssize_t
_DIRENT64 = struct.Struct("=QqHB")  # d_ino, d_off, d_reclen, d_type; then d_name


def open_fds() -> set[int]:
    """The fds open in this process: the entries of /proc/self/fd, read with
    getdents64 through an fd of our own that is left out.

    Neither os.listdir(path) nor os.listdir(fd) would do: the first lists
    the fd it opens, the second its dup of ours (closed by the time it
    returns). Either takes the lowest free number, which moves whenever
    another fd is opened or closed, or a thread blocks in accept(), which
    takes a number before it has a connection to put there (the
    introspection thread, for one)."""
    d = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        out: set[int] = set()
        buf = ctypes.create_string_buffer(1 << 15)
        while True:
            n = _libc.getdents64(d, buf, len(buf))
            if n < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), "/proc/self/fd")
            if n == 0:
                break
            raw, off = buf.raw[:n], 0
            while off < n:
                reclen = _DIRENT64.unpack_from(raw, off)[2]
                name = raw[off + _DIRENT64.size:off + reclen].split(b"\0", 1)[0]
                if name.isdigit():
                    out.add(int(name))
                off += reclen
        return out - {d}
    finally:
        os.close(d)


# -- raw memory ------------------------------------------------------------------

def peek(addr: int, n: int) -> bytes:
    """Read ``n`` bytes at ``addr`` with ctypes. Only call it on readable
    memory: a fault is a real SIGSEGV and kills the process."""
    return ctypes.string_at(addr, n)


def poke(addr: int, data: bytes) -> None:
    """Write ``data`` at ``addr`` with ctypes. Only call it on writable
    memory: a fault is a real SIGSEGV and kills the process."""
    ctypes.memmove(addr, data, len(data))


# -- /proc/self/maps --------------------------------------------------------------

class Mapping(NamedTuple):
    """One line of /proc/self/maps."""

    start: int
    end: int
    perms: str  # e.g. 'rw-p'
    path: str  # '' for anonymous memory


def maps() -> list[Mapping]:
    """Every line of /proc/self/maps, in address order."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append(Mapping(lo, hi, parts[1], parts[5].strip() if len(parts) > 5 else ""))
    return out


def mapped_in(start: int, end: int) -> list[Mapping]:
    """The mappings that overlap [start, end)."""
    return [m for m in maps() if m.start < end and m.end > start]


def perms_at(addr: int) -> str | None:
    """The maps perms (e.g. 'rw-p') of the VMA holding ``addr``, or None
    where nothing is mapped."""
    for m in maps():
        if m.start <= addr < m.end:
            return m.perms
    return None


def is_free(start: int, end: int) -> bool:
    """Nothing at all is mapped in [start, end)."""
    return not mapped_in(start, end)


# -- /proc/self/smaps -------------------------------------------------------------

@dataclass
class Vma:
    """One VMA of /proc/self/smaps."""

    start: int
    end: int
    perms: str
    inode: int
    path: str
    flags: frozenset[str]  # VmFlags, e.g. {'rd', 'wr', 'dc'}


def read_vmas() -> list[Vma]:
    """Every VMA of /proc/self/smaps, in address order, with its VmFlags."""
    out: list[Vma] = []
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if head == "VmFlags:":
                out[-1].flags = frozenset(line.split()[1:])
            elif not head.endswith(":"):
                parts = line.split(None, 5)
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append(Vma(lo, hi, parts[1], int(parts[4]),
                               parts[5].strip() if len(parts) > 5 else "", frozenset()))
    return out


def vmflags_at(addr: int) -> set[str]:
    """The smaps VmFlags of the VMA holding ``addr`` (AssertionError if
    nothing is mapped there)."""
    for v in read_vmas():
        if v.start <= addr < v.end:
            return set(v.flags)
    raise AssertionError(f"{addr:#x} is not mapped")


# -- fork children ----------------------------------------------------------------

def _send(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _report_failure(e: BaseException) -> bytes:
    """The pickled (False, (exception, traceback)) for the parent; an
    exception that does not survive pickling travels as its repr."""
    tb = traceback.format_exc()
    try:
        payload = pickle.dumps((False, (e, tb)))
        pickle.loads(payload)
    except Exception:  # noqa: BLE001
        payload = pickle.dumps((False, (AssertionError(repr(e)), tb)))
    return payload


class forked:
    """``with forked(child) as sync:`` runs ``child(sync)`` in an os.fork
    child while the block runs in the parent. ``sync()`` on both sides is a
    rendezvous: each returns once the other side has reached its own sync.

    Leaving the block waits for the child, which always leaves with
    os._exit. An exception raised in the child is pickled and re-raised in
    the parent (with the child's traceback as a note); a child killed by a
    signal, exiting non-zero or not reporting fails with AssertionError.
    What ``child`` returned (it must pickle) is then in ``.result``."""

    def __init__(self, child: Callable[[Callable[[], None]], Any]) -> None:
        self.child = child
        self.pid: int | None = None
        self.result: Any = None

    def __enter__(self) -> Callable[[], None]:
        c2p_r, c2p_w = os.pipe()
        p2c_r, p2c_w = os.pipe()
        res_r, res_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                for fd in (c2p_r, p2c_w, res_r):
                    os.close(fd)

                def sync() -> None:
                    os.write(c2p_w, b".")
                    if os.read(p2c_r, 1) != b".":
                        raise RuntimeError("the parent left before this sync")

                try:
                    payload = pickle.dumps((True, self.child(sync)))
                    code = 0
                except BaseException as e:  # noqa: BLE001 - all of it goes to the parent
                    payload = _report_failure(e)
                _send(res_w, payload)
            finally:
                os._exit(code)
        for fd in (c2p_w, p2c_r, res_w):
            os.close(fd)
        self.pid = pid
        self.c2p: int | None = c2p_r
        self.p2c: int | None = p2c_w
        self.res: int | None = res_r
        return self.sync

    def sync(self) -> None:
        """The parent's side of the rendezvous."""
        assert self.c2p is not None and self.p2c is not None
        if os.read(self.c2p, 1) != b".":
            _close(self.p2c)
            self.p2c = None
            self._join()  # raises what the child raised
            raise AssertionError("the child finished before reaching sync()")
        os.write(self.p2c, b".")

    def _join(self) -> None:
        if self.pid is None:
            return
        assert self.res is not None
        chunks = []
        value = None
        while chunk := os.read(self.res, 65536):
            chunks.append(chunk)
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        _close(self.res)
        _close(self.c2p)
        self.res = self.c2p = None
        code = os.waitstatus_to_exitcode(status)
        if chunks:
            ok, value = pickle.loads(b"".join(chunks))
            if not ok:
                exc, tb = value
                exc.add_note("raised in the fork child:\n" + tb)
                raise exc
        if code < 0:
            raise AssertionError(f"the child was killed by {signal.Signals(-code).name}")
        assert code == 0, f"the child exited {code}"
        assert chunks, "the child exited without reporting"
        self.result = value

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        _close(self.p2c)  # a child blocked in sync() now gets EOF
        self.p2c = None
        if exc is None:
            self._join()
        else:
            try:
                self._join()
            except BaseException as child_exc:  # noqa: BLE001
                exc.add_note(f"the child also failed: {child_exc!r}")


def run_in_child(fn: Callable[[], Any]) -> Any:
    """Run ``fn()`` in an os.fork child and return what it returned (it
    must pickle). An exception there is re-raised here; a child killed by a
    signal or exiting non-zero fails with AssertionError."""
    child = forked(lambda _sync: fn())
    with child:
        pass
    return child.result


def child_exit_code(fn: Callable[[], object]) -> int:
    """Fork, run ``fn()`` in the child where a fault is expected to kill it
    (faulthandler off, SIGSEGV and SIGBUS at their defaults, no core dump),
    and return os.waitstatus_to_exitcode: -SIGSEGV for a child killed by
    the fault, 0 if ``fn()`` returned, 3 if it raised."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            faulthandler.disable()
            signal.signal(signal.SIGSEGV, signal.SIG_DFL)
            signal.signal(signal.SIGBUS, signal.SIG_DFL)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            fn()
        except BaseException:  # noqa: BLE001
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


_LENGTH = struct.Struct("<I")  # before Doomed's result: its pickle's size


class Doomed:
    """An os.fork child that runs ``fn()``, hands us what it returned (it
    must pickle), then waits to be killed. ``ready()`` waits for it and
    returns that result (kept in ``.result`` too); ``kill()`` sends
    SIGKILL, reaps it and checks that SIGKILL is what ended it. Leaving the
    ``with`` block kills and reaps it if the test did not."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self.pid = 0
        self.result: Any = None

    def __enter__(self) -> "Doomed":
        ready_r, ready_w = os.pipe()
        hold_r, hold_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(ready_r)
                os.close(hold_w)
                payload = pickle.dumps(self.fn())
                _send(ready_w, _LENGTH.pack(len(payload)) + payload)
                os.read(hold_r, 1)  # until killed (EOF: the parent is gone)
            except BaseException:  # noqa: BLE001 - shown on stderr; the parent sees exit 1
                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(1)
        os.close(ready_w)
        os.close(hold_r)
        self.pid, self._ready, self._hold = pid, ready_r, hold_w
        return self

    def ready(self, timeout: float = 10.0) -> Any:
        """What ``fn()`` returned, once the child has it."""
        head = self._read(_LENGTH.size, timeout)
        if len(head) < _LENGTH.size:
            st = self._reap()
            raise AssertionError(f"the child failed before it was ready (exit {os.waitstatus_to_exitcode(st)})")
        self.result = pickle.loads(self._read(_LENGTH.unpack(head)[0], timeout))
        return self.result

    def _read(self, n: int, timeout: float) -> bytes:
        out = b""
        while len(out) < n:
            r, _w, _x = select.select([self._ready], [], [], timeout)
            assert r, "the child did not get ready in time"
            chunk = os.read(self._ready, n - len(out))
            if not chunk:
                break
            out += chunk
        return out

    def kill(self) -> None:
        assert self.pid, "the child is already gone"
        os.kill(self.pid, signal.SIGKILL)
        st = self._reap()
        assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL, (
            f"the child ended otherwise (exit {os.waitstatus_to_exitcode(st)})")

    def _reap(self) -> int:
        _, st = os.waitpid(self.pid, 0)
        self.pid = 0
        return st

    def __exit__(self, *exc: object) -> None:
        try:
            if self.pid:
                os.kill(self.pid, signal.SIGKILL)
                self._reap()
        finally:
            os.close(self._ready)
            os.close(self._hold)


NOBODY = 65534  # the uid and gid of nobody
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")


def become_nobody() -> None:
    """Become uid and gid nobody, with no supplementary groups (for good:
    call it in a child)."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def sleep_process(*, user: int | None = None) -> "subprocess.Popen[bytes]":
    """``sleep 100``, as ``user`` (uid and gid; ours when None), not waited
    for; stop_process() ends it."""
    if user is None:
        return subprocess.Popen(["sleep", "100"])
    return subprocess.Popen(["sleep", "100"], user=user, group=user, extra_groups=[])


def stop_process(p: "subprocess.Popen[bytes]") -> None:
    """Kill ``p`` if it still runs, and reap it."""
    if p.poll() is None:
        p.kill()
    p.wait()


def start_sleep(seconds: int = 100, timeout: float = 10.0, **popen_args: Any) -> "subprocess.Popen[bytes]":
    """``sleep SECONDS`` started and settled: returned once it sleeps in
    nanosleep, so that its maps and stack no longer change (right after
    exec it is still loading libraries and locales). AssertionError (the
    process killed and reaped) if it is not asleep within ``timeout``
    seconds."""
    import time
    p = subprocess.Popen(["sleep", str(seconds)], **popen_args)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{p.pid}/wchan") as f:
                if "nanosleep" in f.read():
                    return p
            with open(f"/proc/{p.pid}/syscall") as f:
                if f.read().split()[:1] in (["35"], ["230"]):
                    return p
        except OSError:
            pass
        time.sleep(0.005)
    p.kill()
    p.communicate()
    raise AssertionError(f"sleep (pid {p.pid}) was not asleep in nanosleep within {timeout} s")


def spawn_with_pid(pid: int, argv: list[str]) -> "subprocess.Popen[bytes] | None":
    """Start ``argv`` under ``pid`` (pid reuse made on purpose through
    ns_last_pid, which needs privilege); None when that cannot be done."""
    for _ in range(20):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(pid - 1))
        except OSError:
            return None
        p = subprocess.Popen(argv)
        if p.pid == pid:
            return p
        p.kill()
        p.wait()
    return None


# -- threads blocked in the kernel -------------------------------------------------

THREAD_JOIN_S = 10.0  # the bound on every wait for a test's thread
# x86_64 system calls a receive sleeps in: poll, select, epoll_wait, pselect6,
# ppoll, epoll_pwait, epoll_pwait2
POLLS = frozenset({7, 23, 232, 270, 271, 281, 441})


def thread_syscall(th: threading.Thread) -> int:
    """The system call ``th`` sleeps in (/proc/self/task/TID/syscall), or -1."""
    try:
        with open(f"/proc/self/task/{th.native_id}/syscall") as f:
            nr = f.read().split()[0]
    except (OSError, IndexError):
        return -1
    return int(nr) if nr.isdigit() else -1


class InThread:
    """``fn()`` in a daemon thread; ``result()`` joins it with a bound and
    returns what ``fn`` returned (or raised)."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.out: list[object] = []
        self.th = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.th.start()

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            self.out.append(fn())
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            self.out.append(e)

    def result(self) -> object:
        self.th.join(THREAD_JOIN_S)
        assert not self.th.is_alive(), f"the thread was still blocked {THREAD_JOIN_S:g} s later"
        (r,) = self.out
        return r
