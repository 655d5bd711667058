"""Message layouts and small helpers that the IPC tests share: C-style
names, a text message and a port-descriptor message, and the calls that
fill them; the names a test makes (Space); the notification watcher
started before a test's fd baseline; a bootstrap server of the test's own
(private_bootstrap, and for tests of the server itself Server on the
socket of ``sockdir``) and the bootstrap routines' codes; task_for_pid's."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pymach.bootstrap as bootstrap
import pymach.mach as M
from pymach._kern import ipc_notify
from pymach.mach import byref

T = M.mach_task_self
OK = M.KERN_SUCCESS
NULL = M.MACH_PORT_NULL
R_RECEIVE = M.MACH_PORT_RIGHT_RECEIVE
TY_SEND = M.MACH_PORT_TYPE_SEND
TY_RECEIVE = M.MACH_PORT_TYPE_RECEIVE
TY_SEND_ONCE = M.MACH_PORT_TYPE_SEND_ONCE
TY_DEAD_NAME = M.MACH_PORT_TYPE_DEAD_NAME
COPY_SEND = M.MACH_MSG_TYPE_COPY_SEND
MAKE_SEND = M.MACH_MSG_TYPE_MAKE_SEND
MAKE_SEND_ONCE = M.MACH_MSG_TYPE_MAKE_SEND_ONCE
PORT_RECEIVE = M.MACH_MSG_TYPE_PORT_RECEIVE
PORT_SEND = M.MACH_MSG_TYPE_PORT_SEND
PORT_SEND_ONCE = M.MACH_MSG_TYPE_PORT_SEND_ONCE


# x86_64 system calls a receive blocks in: poll, select, epoll_wait,
# pselect6, ppoll, epoll_pwait, epoll_pwait2
_WAITS = {7, 23, 232, 270, 271, 281, 441}


def wait_blocked(th: threading.Thread, timeout: float = 10.0) -> None:
    """Return once thread ``th`` sleeps in a wait for I/O (its
    /proc/self/task/TID/syscall), as a receive does."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/self/task/{th.native_id}/syscall") as f:
                nr = f.read().split()[0]
        except (OSError, IndexError):
            nr = ""
        if nr.isdigit() and int(nr) in _WAITS:
            return
        assert time.monotonic() < deadline, f"thread {th.name} never blocked (syscall {nr!r})"
        time.sleep(0.005)


def start_watcher() -> None:
    """pymach notices closes that no receiver polls for with one thread per
    process, whose epoll fd and wake-up pipe are made the first time they
    are needed and then live as long as the process. Make them now, before
    conftest takes a test's fd baseline, so that those process-wide fds do
    not count as one test's leak."""
    r, w = os.pipe()
    ipc_notify.WATCHER.watch(r, select.EPOLLIN, lambda: None)
    ipc_notify.WATCHER.unwatch(r)
    os.close(r)
    os.close(w)


def watcher_fence(timeout: float = 10.0) -> None:
    """Return once the notification watcher has handled every event that
    was ready before the call: epoll reports ready fds in the order they
    became ready, so a pipe made ready now comes after them."""
    r, w = os.pipe()
    done = threading.Event()
    try:
        ipc_notify.WATCHER.watch(r, select.EPOLLIN, done.set)
        os.write(w, b".")
        assert done.wait(timeout), "the notification watcher never reached the fence"
    finally:
        ipc_notify.WATCHER.unwatch(r)
        os.close(r)
        os.close(w)


MARKER_ID = 0x4D41524B


class _AnyRcv(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t), ("room", ctypes.c_char * 1024)]


def expect_nothing_more(port: int, marker_to: int | None = None) -> None:
    """Nothing more is on its way to ``port`` (whose receive right we hold),
    a late duplicate included. The watcher's fence first: whatever it is due
    to send for a fact already true is sent by then. Then a marker goes to
    the port (to ``marker_to``, a member, when ``port`` is a port set) and
    must be the first message received, and nothing may be left after it."""
    watcher_fence()
    dest = port if marker_to is None else marker_to
    assert send_text(dest, b"marker", disposition=MAKE_SEND_ONCE, msg_id=MARKER_ID) == OK
    r = _AnyRcv()
    kr = M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), port, 5000, 0)
    assert kr == OK, f"the marker sent to {port:#x} did not arrive: {kr:#x}"
    assert r.header.msgh_id == MARKER_ID, f"unexpected message {r.header.msgh_id:#x} on {port:#x}"
    kr = M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), port, 0, 0)
    assert kr == M.MACH_RCV_TIMED_OUT, f"unexpected message {r.header.msgh_id:#x} on {port:#x} ({kr:#x})"


class Space:
    """Names a test made; all destroyed when it ends."""

    def __init__(self) -> None:
        self.names: list[int] = []

    def keep(self, name: int) -> int:
        assert M.MACH_PORT_VALID(name), f"{name:#x} is not a valid name"
        self.names.append(name)
        return name

    def alloc(self, right: int = R_RECEIVE) -> int:
        return self.keep(alloc_name(right))

    def destroy_all(self) -> None:
        for name in reversed(self.names):
            M.mach_port_destroy(T(), name)  # names moved away or already gone: KERN_INVALID_NAME


def alloc_name(right: int) -> int:
    n = M.mach_port_t()
    assert M.mach_port_allocate(T(), right, byref(n)) == OK
    return n.value


def type_kr(name: int) -> tuple[int, int]:
    t = M.mach_port_type_t(0xBAD)
    kr = M.mach_port_type(T(), name, byref(t))
    return kr, t.value


def type_of(name: int) -> int:
    kr, t = type_kr(name)
    assert kr == OK, f"mach_port_type({name:#x}) = {kr:#x}"
    return t


def status(name: int) -> M.mach_port_status_t:
    st = M.mach_port_status_t()
    cnt = M.mach_msg_type_number_t(M.MACH_PORT_RECEIVE_STATUS_COUNT)
    assert M.mach_port_get_attributes(T(), name, M.MACH_PORT_RECEIVE_STATUS, byref(st), byref(cnt)) == OK
    return st


def request(name: int, msgid: int, sync: int, notify: int, disp: int = MAKE_SEND_ONCE) -> tuple[int, int]:
    """mach_port_request_notification: (kr, previous)."""
    prev = M.mach_port_t(0xABCD)
    kr = M.mach_port_request_notification(T(), name, msgid, sync, notify, disp, byref(prev))
    return kr, prev.value


def register(*names: int) -> int:
    arr = (M.mach_port_t * max(1, len(names)))(*names)
    return M.mach_ports_register(T(), arr, len(names))


def lookup_registered() -> list[int]:
    """mach_ports_lookup, releasing the out-of-line array."""
    ports, cnt = M.mach_port_array_t(), M.mach_msg_type_number_t()
    assert M.mach_ports_lookup(T(), byref(ports), byref(cnt)) == OK
    out = [ports[i] for i in range(cnt.value)]
    assert M.mach_vm_deallocate(T(), ctypes.cast(ports, ctypes.c_void_p).value, cnt.value * 4) == OK
    return out


class Text(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t), ("text", ctypes.c_char * 8)]


class TextRcv(ctypes.Structure):
    _pack_ = 4
    _fields_ = Text._fields_ + [("trailer", M.mach_msg_context_trailer_t)]


class PortMsg(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t), ("body", M.mach_msg_body_t),
                ("port", M.mach_msg_port_descriptor_t)]


class PortMsgRcv(ctypes.Structure):
    _pack_ = 4
    _fields_ = PortMsg._fields_ + [("trailer", M.mach_msg_trailer_t)]


def send_text(dest: int, text: bytes, disposition: int = COPY_SEND, reply: int = 0, reply_disp: int = 0,
              msg_id: int = 1000) -> int:
    m = Text()
    m.header.msgh_bits = M.MACH_MSGH_BITS(disposition, reply_disp)
    m.header.msgh_size = ctypes.sizeof(Text)
    m.header.msgh_remote_port = dest
    m.header.msgh_local_port = reply
    m.header.msgh_id = msg_id
    m.text = text
    return M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0)


def send_port(dest: int, name: int, disposition: int) -> int:
    m = PortMsg()
    m.header.msgh_bits = M.MACH_MSGH_BITS(COPY_SEND, 0) | M.MACH_MSGH_BITS_COMPLEX
    m.header.msgh_size = ctypes.sizeof(PortMsg)
    m.header.msgh_remote_port = dest
    m.body.msgh_descriptor_count = 1
    m.port.name = name
    m.port.disposition = disposition
    m.port.type = M.MACH_MSG_PORT_DESCRIPTOR
    return M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0)


# -- a bootstrap server of the test's own -----------------------------------------------------------

@contextlib.contextmanager
def private_bootstrap(**env: str) -> Iterator[bootstrap.PrivateServer]:
    """bootstrap.private_server(), with ``env`` set in this process's
    environment for the block too (and put back after it), so that the
    server it starts and every child see them: PYTHONPATH, say, for a
    server of the source tree under test."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        with bootstrap.private_server() as private:
            yield private


class Server:
    """``pymach bootstrap serve -v`` on ``path``, its log in ``log``; ``env``
    (added to ours) is the server's environment and reaches it."""

    def __init__(self, path: str, *, preexec: Callable[[], None] | None = None,
                 env: dict[str, str] | None = None, log: str | None = None) -> None:
        self.path = path
        self.log = log or path + ".log"
        self.env = dict(os.environ, PYMACH_BOOTSTRAP_SOCKET=path, PYMACH_NO_AUTOSTART="1")
        self.env.update(env or {})
        self.preexec = preexec
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with open(self.log, "ab") as log:
            r, w = os.pipe()
            self.proc = subprocess.Popen([sys.executable, "-m", "pymach", "bootstrap", "serve", "-v",
                                          "--ready-fd", str(w)], pass_fds=(w,), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, env=self.env, preexec_fn=self.preexec)
        os.close(w)
        try:
            assert select.select([r], [], [], 20)[0], "the server did not start"
            assert os.read(r, 64) == b"ready\n", self.read_log()
        finally:
            os.close(r)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the server did not stop on SIGTERM:\n" + self.read_log()) from None

    def read_log(self) -> str:
        with open(self.log) as f:
            return f.read()

    def wait_log(self, text: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.read_log():
            assert time.monotonic() < deadline, f"{text!r} not in the server's log:\n{self.read_log()}"
            time.sleep(0.01)


@pytest.fixture
def sockdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private directory (bootstrap.private_server(serve=False)):
    PYMACH_BOOTSTRAP_SOCKET in it, autostart off, XDG_RUNTIME_DIR unset; the
    test process's bootstrap port is released at the start and at the end.
    The test starts the server it wants there."""
    # recorded first, so that what the test changes with monkeypatch is put
    # back after the block has put back its own
    for k in ("PYMACH_BOOTSTRAP_SOCKET", "PYMACH_NO_AUTOSTART", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(k, raising=False)
    with bootstrap.private_server(serve=False) as private:
        yield private.directory


@pytest.fixture
def server(sockdir: str) -> Iterator[Server]:
    """A Server on ``sockdir``'s socket; it must stop cleanly and remove
    its socket."""
    s = Server(os.path.join(sockdir, "bootstrap"))
    try:
        yield s
    finally:
        M.bootstrap_port_disconnect()
        assert s.stop() == 0, s.read_log()
        assert not os.path.exists(s.path), "the server left its socket behind"


def serve_exit(env: dict[str, str]) -> tuple[int, str]:
    """A second ``pymach bootstrap serve`` (``env`` added to ours), which
    is to exit at once: its exit status and stderr."""
    p = subprocess.run([sys.executable, "-m", "pymach", "bootstrap", "serve"], env=dict(os.environ, **env),
                       capture_output=True, timeout=30, text=True)
    return p.returncode, p.stderr


def bp() -> int:
    """This process's bootstrap port, connected."""
    port = M.mach_port_t()
    kr = M.bootstrap_port_connect(byref(port))
    assert kr == OK, f"{M.bootstrap_strerror(kr)}: {M.bootstrap_port_error()}"
    return port.value


def look_up(name: Any, bport: int | None = None) -> tuple[int, int]:
    p = M.mach_port_t()
    kr = M.bootstrap_look_up(bp() if bport is None else bport, name, byref(p))
    return kr, p.value


def found(name: Any, bport: int | None = None) -> int:
    """bootstrap_look_up's code; the right it gives is released."""
    kr, right = look_up(name, bport)
    if kr == OK:
        # one send reference: the name may also hold the service's receive
        # right, when the caller checked it in (XNU gives that name)
        assert M.mach_port_deallocate(T(), right) == OK
    return kr


def check_in(name: Any) -> tuple[int, int]:
    p = M.mach_port_t()
    kr = M.bootstrap_check_in(bp(), name, byref(p))
    return kr, p.value


def create(name: Any) -> tuple[int, int]:
    p = M.mach_port_t()
    kr = M.bootstrap_create_service(bp(), name, byref(p))
    return kr, p.value


def destroy(*names: int) -> None:
    for n in names:
        if M.MACH_PORT_VALID(n):
            M.mach_port_destroy(T(), n)


def tfp(pid: int) -> tuple[int, int]:
    """task_for_pid(mach_task_self(), pid): (kr, the name)."""
    t = M.mach_port_t(0x1234)
    kr = M.task_for_pid(T(), pid, byref(t))
    return kr, t.value
