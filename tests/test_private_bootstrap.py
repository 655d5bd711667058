"""pymach.bootstrap.private_server(): a bootstrap server of the process's
own for the length of a ``with`` block, reached by the process, by a fork
child and by a program it starts; afterwards the environment and the
task's bootstrap port are as they were, and no process, thread, fd or
directory of the block is left.

Outside the blocks, every test points the process at a socket where nobody
listens, with autostart off: no test can reach or start the user's own
server, and a look-up that leaks out of a block fails with
MACH_SEND_INVALID_DEST.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator

import pytest

import pymach.bootstrap as bootstrap
import pymach.mach as M
from procutil import forked

NOWHERE = "/nonexistent/pymach-test/bootstrap"
TIMEOUT = 30


@pytest.fixture(autouse=True)
def nowhere(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Outside the blocks: a socket nobody serves, autostart off; this
    process's bootstrap port released before and after."""
    monkeypatch.setenv("PYMACH_BOOTSTRAP_SOCKET", NOWHERE)
    monkeypatch.setenv("PYMACH_NO_AUTOSTART", "1")
    M.bootstrap_port_disconnect()
    yield
    M.bootstrap_port_disconnect()


@pytest.fixture(scope="module", autouse=True)
def warmed_up() -> None:
    """One block before the tests' fd and thread baselines: what the
    runtime starts once per process on first use (the notification
    watcher, introspection) is not the block's."""
    saved = {k: os.environ.get(k) for k in ("PYMACH_BOOTSTRAP_SOCKET", "PYMACH_NO_AUTOSTART")}
    with bootstrap.private_server(), bootstrap.check_in("com.example.warm-up"):
        with bootstrap.look_up("com.example.warm-up") as right:
            right.send(b"", timeout=TIMEOUT)
    M.bootstrap_port_disconnect()
    assert {k: os.environ.get(k) for k in saved} == saved


def found(name: str) -> int:
    """bootstrap_look_up's code for ``name`` on our bootstrap port; the
    right it gives is released."""
    p = M.mach_port_t()
    kr = M.bootstrap_look_up(M.bootstrap_port, name, M.byref(p))
    if kr == M.KERN_SUCCESS:
        M.mach_port_deallocate(M.mach_task_self(), p.value)
    return kr


def test_a_service_checked_in_is_found_by_a_fork_child_and_a_program() -> None:
    with bootstrap.private_server() as server, bootstrap.check_in("com.example.private") as port:
        assert os.environ["PYMACH_BOOTSTRAP_SOCKET"] == server.path
        assert os.path.dirname(server.path) == server.directory
        assert [s.pid for s in bootstrap.services() if s.name == "com.example.private"] == [os.getpid()]

        def child(_sync: Callable[[], None]) -> int:
            with bootstrap.look_up("com.example.private") as right:
                right.send(b"from a fork child", timeout=TIMEOUT)
            return found("com.example.none")

        f = forked(child)
        with f:
            pass
        assert f.result == M.BOOTSTRAP_UNKNOWN_SERVICE
        assert port.receive(timeout=TIMEOUT).data == b"from a fork child"
        # a program started now finds the server through the environment
        code = ("import pymach.bootstrap as b\n"
                "with b.look_up('com.example.private') as r:\n"
                "    r.send(b'from a program', timeout=30)\n")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
        assert p.returncode == 0, p.stderr
        assert port.receive(timeout=TIMEOUT).data == b"from a program"
    # back to the socket of before, where nobody listens
    assert found("com.example.private") == M.MACH_SEND_INVALID_DEST
    assert NOWHERE in M.bootstrap_port_error()


def test_the_environment_is_put_back_unset_or_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYMACH_NO_AUTOSTART")
    with bootstrap.private_server() as server:
        assert os.environ["PYMACH_BOOTSTRAP_SOCKET"] == server.path
        assert os.environ["PYMACH_NO_AUTOSTART"] == "1"
        assert found("com.example.none") == M.BOOTSTRAP_UNKNOWN_SERVICE
    assert os.environ["PYMACH_BOOTSTRAP_SOCKET"] == NOWHERE
    assert "PYMACH_NO_AUTOSTART" not in os.environ


def test_the_server_is_stopped_and_reaped_and_nothing_is_left() -> None:
    threads = threading.active_count()
    with bootstrap.private_server() as server:
        assert server.pid is not None and os.path.isdir(server.directory)
        pidfd = os.pidfd_open(server.pid)
        try:
            assert found("com.example.none") == M.BOOTSTRAP_UNKNOWN_SERVICE
            assert select.select([pidfd], [], [], 0)[0] == []  # it runs
        except BaseException:
            os.close(pidfd)
            raise
    try:
        assert select.select([pidfd], [], [], 0)[0] == [pidfd]  # it has exited
        with pytest.raises(ChildProcessError):
            os.waitpid(server.pid, os.WNOHANG)  # and was reaped: no zombie of ours
    finally:
        os.close(pidfd)
    assert not os.path.exists(server.directory)
    assert threading.active_count() == threads
    # (the fd baseline is conftest's)


def test_blocks_nest_and_a_connected_bootstrap_port_is_released() -> None:
    with bootstrap.private_server() as outer, bootstrap.check_in("com.example.outer"):
        assert found("com.example.outer") == M.KERN_SUCCESS  # connected to the outer server
        with bootstrap.private_server() as inner:
            assert inner.path != outer.path
            assert found("com.example.outer") == M.BOOTSTRAP_UNKNOWN_SERVICE
        assert os.environ["PYMACH_BOOTSTRAP_SOCKET"] == outer.path
        assert found("com.example.outer") == M.KERN_SUCCESS


def test_blocks_nest_and_an_inherited_bootstrap_port_is_set_aside() -> None:
    """A fork child inherits the parent's TASK_BOOTSTRAP_PORT, which its
    bootstrap port would connect from; inside the child's own block the
    port goes to the child's server, and after it to the parent's again."""
    with bootstrap.private_server(), bootstrap.check_in("com.example.outer"):

        def child(_sync: Callable[[], None]) -> list[int]:
            codes = [found("com.example.outer")]  # through the inherited port
            with bootstrap.private_server(), bootstrap.check_in("com.example.inner"):
                codes += [found("com.example.outer"), found("com.example.inner")]
            codes += [found("com.example.outer"), found("com.example.inner")]
            return codes

        f = forked(child)
        with f:
            pass
        ok, unknown = M.KERN_SUCCESS, M.BOOTSTRAP_UNKNOWN_SERVICE
        assert f.result == [ok, unknown, ok, ok, unknown]
        assert found("com.example.inner") == unknown


def test_serve_false_starts_nothing() -> None:
    """The caller runs the server: until it does, nobody serves the path
    and nothing is started on the first use."""
    with bootstrap.private_server(serve=False) as private:
        assert private.pid is None and os.listdir(private.directory) == []
        assert os.environ["PYMACH_BOOTSTRAP_SOCKET"] == private.path
        assert found("com.example.none") == M.MACH_SEND_INVALID_DEST
        assert os.listdir(private.directory) == []
    assert not os.path.exists(private.directory)


def test_a_server_that_does_not_start_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    base = tempfile.mkdtemp(prefix="pmt-", dir="/tmp")
    try:
        monkeypatch.setattr(tempfile, "tempdir", base)
        monkeypatch.setattr(sys, "executable", "/bin/false")  # the server's interpreter exits at once
        with pytest.raises(bootstrap.BootstrapError) as ei:
            with bootstrap.private_server():
                pass
        assert ei.value.kr == M.MACH_SEND_INVALID_DEST and "did not start" in str(ei.value)
        assert os.listdir(base) == []
        assert os.environ["PYMACH_BOOTSTRAP_SOCKET"] == NOWHERE and os.environ["PYMACH_NO_AUTOSTART"] == "1"
    finally:
        os.rmdir(base)
