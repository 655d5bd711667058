"""Every test ends with the process's open fds back at their baseline."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from procutil import open_fds, start_sleep


@pytest.fixture(scope="session", autouse=True)
def pymach_in_use() -> None:
    """pymach makes its own fds and threads (the introspection server) on
    first use, not at import: make them before any test's fd baseline, so
    that they do not count as the leak of the test that happens to be first."""
    from pymach.lowlevel import SELF
    SELF.space  # pylint: disable=pointless-statement  # the first use
    from machutil import start_watcher
    start_watcher()  # the notification watcher's epoll and pipe, made on first need


@pytest.fixture(scope="module", autouse=True)
def long_lived_objects_frozen() -> None:
    """Every test collects garbage twice (no_fd_leak), and a full collection
    walks every tracked object: after collection the heap holds every test
    module, pytest, Hypothesis and pymach (~100,000 objects, ~0.1 s a walk,
    2 x 1,900 times), and it grows with what the modules before leave
    behind (caches, modules imported on first use). So what is alive at the
    start of each module (its garbage collected first) is moved out of the
    collector's generations (gc.freeze): a test's collections walk only
    what was made since. Only what outlived a whole module is frozen, never
    what a running test made; a frozen object that becomes unreachable is
    still freed by its reference count (only a cycle of them stays)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def no_fd_leak():
    gc.collect()
    before = open_fds()
    yield
    _release_reply_port()
    gc.collect()
    leaked = open_fds() - before
    # The runtime's own threads (the notification watcher, the introspection
    # server) may be a moment behind the test; a leak is what stays open.
    deadline = time.monotonic() + 2.0
    while leaked and time.monotonic() < deadline:
        time.sleep(0.01)
        gc.collect()
        leaked = open_fds() - before
    assert not leaked, f"leaked fds: {sorted(leaked)} -> " + ", ".join(
        f"{fd}:{_target(fd)}" for fd in sorted(leaked))


def _release_reply_port() -> None:
    """pymach.request() keeps a reply port per thread, as MIG does; the
    test's thread drops its own (mig_dealloc_reply_port) so that the next
    test starts without it."""
    ipc = sys.modules.get("pymach.ipc")
    release = getattr(ipc, "release_reply_port", None)
    if release is not None:
        release()


def _target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


@pytest.fixture
def sleeper() -> Iterator["subprocess.Popen[bytes]"]:
    """A `sleep 100` of our own user: a process any test may look at (one
    it could ptrace, as task_for_pid requires); killed at the end."""
    p = start_sleep()
    try:
        yield p
    finally:
        p.kill()
        p.wait(10)
