"""A failure in the notification watcher is seen, and the notification is
not lost.

The watcher thread turns kernel facts (a connection's hang-up) into
dead-name and no-senders notifications. Here the fact is real: a fork
child holding the other end is killed with SIGKILL. The failure is
injected at a seam: the notify right's connection refuses its first send
(a full socket buffer, no kernel memory, too many fds in flight, or an
error that is no OSError at all), or the watcher's handler itself raises.
What the user sees is checked: a record on the "pymach.notify" logger with
the traceback, and the notification, received with mach_msg; or, when the
notify port died meanwhile, a record that says it was not delivered.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pymach.mach as M
from pymach._linux import unix
from pymach._kern import ipc_notify
from pymach._kern import ipc_right
from pymach._kern.task import SELF
from procutil import Doomed
from machutil import (NULL, OK, R_RECEIVE, T, TY_DEAD_NAME, TY_SEND, MAKE_SEND, PORT_SEND, PortMsgRcv, Space,
                      alloc_name, lookup_registered, register, request, send_port, start_watcher, status, type_kr,
                      type_of)

DEAD_NAME, NO_SENDERS = M.MACH_NOTIFY_DEAD_NAME, M.MACH_NOTIFY_NO_SENDERS
WAIT_MS = 5000  # the upper bound on the wait for a notification that is due
LOGGER = "pymach.notify"


@pytest.fixture(scope="module", autouse=True)
def watcher_started() -> None:
    start_watcher()


@pytest.fixture
def space() -> Iterator[Space]:
    s = Space()
    yield s
    s.destroy_all()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


class Notification(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t), ("ndr", ctypes.c_char * 8), ("value", ctypes.c_uint32),
                ("room", ctypes.c_char * 128)]


def recv_notification(notify: int, timeout: int = WAIT_MS) -> tuple[int, Notification]:
    n = Notification()
    kr = M.mach_msg(n.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(n), notify, timeout, 0)
    return kr, n


def expect(notify: int, msg_id: int, value: int) -> None:
    """The notification arrives: a dead-name one for name ``value``, or a
    no-senders one with make-send count ``value``."""
    kr, n = recv_notification(notify)
    assert kr == OK, f"notification {msg_id:#x} not delivered within {WAIT_MS} ms ({kr:#x})"
    assert (n.header.msgh_id, n.value) == (msg_id, value)


def expect_none_queued(notify: int) -> None:
    kr, n = recv_notification(notify, timeout=0)
    assert kr == M.MACH_RCV_TIMED_OUT, f"a second notification {n.header.msgh_id:#x}"


def wait_for_record(logs: pytest.LogCaptureFixture, pred: Callable[[logging.LogRecord], bool],
                    timeout: float = 5.0) -> logging.LogRecord:
    """The first record of the "pymach.notify" logger that ``pred`` accepts
    (it is written on the watcher thread, perhaps after the notification)."""
    deadline = time.monotonic() + timeout
    while True:
        for r in logs.records:
            if r.name == LOGGER and pred(r):
                return r
        assert time.monotonic() < deadline, "no such log record: " + repr(
            [(r.levelname, r.getMessage()) for r in logs.records])
        time.sleep(0.01)


def exc_of(r: logging.LogRecord) -> BaseException | None:
    return r.exc_info[1] if r.exc_info else None


# -- the fault seams ---------------------------------------------------------------------------

class RefusingSocket:
    """Stands for a notify right's socket: its first ``fails`` sendmsg calls
    raise ``error`` (recorded with the thread they ran on), later ones go
    through."""

    def __init__(self, sock: Any, error: BaseException, fails: int = 1) -> None:
        self.sock, self.error, self.fails = sock, error, fails
        self.threads: list[str] = []

    def sendmsg(self, *args: Any) -> int:
        if self.fails:
            self.fails -= 1
            self.threads.append(threading.current_thread().name)
            raise self.error
        return int(self.sock.sendmsg(*args))

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.sock, attr)


def refuse_dead_name_sends(name: int, error: BaseException, fails: int = 1) -> RefusingSocket:
    """The dead-name request's notify right on ``name`` refuses its sends."""
    e = SELF.space.lookup(name)
    assert e is not None and e.dnrequest is not None
    cap: Any = e.dnrequest
    sock = cap.sock = RefusingSocket(cap.sock, error, fails)
    return sock


def refuse_no_senders_sends(port_name: int, error: BaseException) -> RefusingSocket:
    """The no-senders request's notify right on ``port_name`` refuses its
    first send."""
    e = SELF.space.lookup(port_name)
    port: Any = e.object if e is not None else None
    assert port is not None and port.nsrequest is not None
    cap = port.nsrequest[0]
    sock = cap.sock = RefusingSocket(cap.sock, error)
    return sock


def on_the_watcher_raise(fn: Callable[..., Any], error: BaseException, times: int) -> tuple[
        Callable[..., Any], list[str]]:
    """``fn``, except that its first ``times`` calls on the watcher thread
    raise ``error``."""
    hits: list[str] = []

    def wrapper(*args: Any, **kw: Any) -> Any:
        if threading.current_thread().name == "pymach-notify" and len(hits) < times:
            hits.append(threading.current_thread().name)
            raise error
        return fn(*args, **kw)
    return wrapper, hits


# -- the facts: a child killed with SIGKILL ----------------------------------------------------------

@contextlib.contextmanager
def mailbox(space: Space) -> Iterator[int]:
    """A port whose send right is registered: a fork child finds it with
    mach_ports_lookup and sends us a right there."""
    mb = space.alloc()
    assert M.mach_port_insert_right(T(), mb, mb, MAKE_SEND) == OK
    assert register(mb) == OK
    assert M.mach_port_deallocate(T(), mb) == OK
    try:
        yield mb
    finally:
        assert register() == OK


def child_gives_a_port() -> None:
    """In the child: a port of its own; the parent gets a send right to it."""
    mb = lookup_registered()[0]
    assert send_port(mb, alloc_name(R_RECEIVE), MAKE_SEND) == OK


def receive_a_send_right(mb: int) -> int:
    r = PortMsgRcv()
    kr = M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), mb, WAIT_MS, 0)
    assert kr == OK and r.port.disposition == PORT_SEND, f"no right from the child: {kr:#x}"
    return int(r.port.name)


@contextlib.contextmanager
def watched_send_right(space: Space) -> Iterator[tuple[int, int, Doomed]]:
    """(name, notify, child): our send right to a port of a live child,
    with a dead-name request whose notifications go to ``notify``."""
    notify = space.alloc()
    with mailbox(space) as mb, Doomed(child_gives_a_port) as child:
        child.ready()
        name = space.keep(receive_a_send_right(mb))
        assert request(name, DEAD_NAME, 0, notify) == (OK, NULL)
        yield name, notify, child


def only_registered_send_right() -> None:
    s = lookup_registered()[0]
    assert M.MACH_PORT_VALID(s) and type_of(s) == TY_SEND


@contextlib.contextmanager
def watched_receive_right(space: Space) -> Iterator[tuple[int, int, Doomed]]:
    """(port, notify, child): a port of ours whose only sender is a live
    child (the registered send right it inherited), with a no-senders
    request whose notification goes to ``notify``. mscount is 1."""
    p = space.alloc()
    notify = space.alloc()
    assert M.mach_port_insert_right(T(), p, p, MAKE_SEND) == OK
    assert register(p) == OK
    try:
        assert M.mach_port_deallocate(T(), p) == OK
        with Doomed(only_registered_send_right) as child:
            child.ready()
            assert register() == OK  # the child is the only sender now
            assert request(p, NO_SENDERS, 0, notify) == (OK, NULL)
            assert status(p).mps_nsrequest == 1
            yield p, notify, child
    finally:
        assert register() == OK


# -- the send of the notification fails -----------------------------------------------------------------

SEND_ERRORS = [OSError(errno.EAGAIN, "the socket buffer is full"),
               OSError(errno.ENOBUFS, "no buffer space"),
               OSError(errno.ETOOMANYREFS, "too many fds in flight"),
               RuntimeError("not an OSError")]


def _error_id(e: BaseException) -> str:
    return type(e).__name__ + (f"-{errno.errorcode[e.errno]}" if isinstance(e, OSError) and e.errno else "")


@pytest.mark.parametrize("error", SEND_ERRORS, ids=_error_id)
def test_a_dead_name_notification_whose_send_fails_is_logged_and_sent_again(
        space: Space, logs: pytest.LogCaptureFixture, error: BaseException) -> None:
    with watched_send_right(space) as (name, notify, child):
        sock = refuse_dead_name_sends(name, error)
        child.kill()
        expect(notify, DEAD_NAME, name)
        assert sock.threads == ["pymach-notify"]  # it failed on the watcher thread, once
    first = wait_for_record(logs, lambda r: r.levelno == logging.WARNING)
    assert exc_of(first) is error and "dead-name notification could not be sent" in first.getMessage()
    wait_for_record(logs, lambda r: r.levelno == logging.INFO and "delivered at attempt 2" in r.getMessage())
    assert type_of(name) == TY_DEAD_NAME
    expect_none_queued(notify)


@pytest.mark.parametrize("error", SEND_ERRORS[:2] + SEND_ERRORS[3:], ids=lambda e: type(e).__name__)
def test_a_no_senders_notification_whose_send_fails_is_logged_and_sent_again(
        space: Space, logs: pytest.LogCaptureFixture, error: BaseException) -> None:
    with watched_receive_right(space) as (p, notify, child):
        sock = refuse_no_senders_sends(p, error)
        child.kill()
        expect(notify, NO_SENDERS, 1)
        assert sock.threads == ["pymach-notify"]
    first = wait_for_record(logs, lambda r: r.levelno == logging.WARNING)
    assert exc_of(first) is error and "no-senders notification could not be sent" in first.getMessage()
    wait_for_record(logs, lambda r: r.levelno == logging.INFO and "delivered at attempt 2" in r.getMessage())
    assert status(p).mps_nsrequest == 0
    expect_none_queued(notify)


def test_a_notification_for_a_notify_port_that_died_meanwhile_is_reported_lost(
        space: Space, logs: pytest.LogCaptureFixture) -> None:
    """As in XNU, a notification to a dead port is destroyed; the log says
    that this one was not delivered."""
    with watched_send_right(space) as (name, notify, child):
        sock = refuse_dead_name_sends(name, OSError(errno.ENOBUFS, "no buffer space"), fails=1 << 30)
        child.kill()
        wait_for_record(logs, lambda r: r.levelno == logging.WARNING and "could not be sent" in r.getMessage())
        assert M.mach_port_destroy(T(), notify) == OK
        sock.fails = 0  # the next retry reaches the kernel: the notify port has no receiver now
        lost = wait_for_record(logs, lambda r: "was not delivered" in r.getMessage())
        assert lost.levelno == logging.WARNING and "notify port died" in lost.getMessage()
    assert type_of(name) == TY_DEAD_NAME


# -- the watcher's handler fails ------------------------------------------------------------------------

def test_a_dead_name_handler_that_raises_is_logged_and_run_again(
        space: Space, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper, hits = on_the_watcher_raise(ipc_right.check_dead, RuntimeError("injected"), 1)
    monkeypatch.setattr(ipc_right, "check_dead", wrapper)
    with watched_send_right(space) as (name, notify, child):
        child.kill()
        expect(notify, DEAD_NAME, name)
    assert hits == ["pymach-notify"]
    failed = wait_for_record(logs, lambda r: r.levelno == logging.ERROR)
    assert str(exc_of(failed)) == "injected" and "runs again" in failed.getMessage()
    assert failed.exc_text is None or "injected" in failed.exc_text  # the traceback goes with it
    assert type_of(name) == TY_DEAD_NAME
    expect_none_queued(notify)


def test_a_no_senders_handler_that_raises_is_logged_and_run_again(
        space: Space, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler reads what is queued on the closed connection; its read
    raises (as it would with no memory left for the record)."""
    wrapper, hits = on_the_watcher_raise(unix.recv, MemoryError("injected"), 1)
    monkeypatch.setattr(unix, "recv", wrapper)
    with watched_receive_right(space) as (p, notify, child):
        child.kill()
        expect(notify, NO_SENDERS, 1)
    assert hits == ["pymach-notify"]
    failed = wait_for_record(logs, lambda r: r.levelno == logging.ERROR)
    assert isinstance(exc_of(failed), MemoryError) and "runs again" in failed.getMessage()
    assert status(p).mps_nsrequest == 0
    expect_none_queued(notify)


def test_a_handler_that_always_raises_is_given_up_and_the_name_still_dies(
        space: Space, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """After its last run the handler is dropped with an error that says
    so; the dead name is still found (and notified) when the task looks at
    the name, and the watcher thread lives on for the next event."""
    monkeypatch.setattr(ipc_notify.WATCHER, "HANDLER_ATTEMPTS", 3)
    real = ipc_right.check_dead
    wrapper, hits = on_the_watcher_raise(real, RuntimeError("always"), 1 << 30)
    monkeypatch.setattr(ipc_right, "check_dead", wrapper)
    with watched_send_right(space) as (name, notify, child):
        child.kill()
        given_up = wait_for_record(logs, lambda r: "failed 3 times" in r.getMessage())
        assert given_up.levelno == logging.ERROR and str(exc_of(given_up)) == "always"
        assert hits == ["pymach-notify"] * 3
        assert len([r for r in logs.records if r.name == LOGGER and r.levelno == logging.ERROR]) == 3
        assert recv_notification(notify, timeout=0)[0] == M.MACH_RCV_TIMED_OUT
        assert type_kr(name) == (OK, TY_DEAD_NAME)  # looked at on this thread: it dies here
        expect(notify, DEAD_NAME, name)
    monkeypatch.setattr(ipc_right, "check_dead", real)
    with watched_send_right(space) as (name2, notify2, child):
        child.kill()
        expect(notify2, DEAD_NAME, name2)
    assert len(hits) == 3
