"""Every test ends with the process's open fds back at their baseline."""

from __future__ import annotations

import gc
import os
import time

import pytest

from procutil import open_fds


@pytest.fixture(autouse=True)
def no_fd_leak():
    gc.collect()
    before = open_fds()
    yield
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


def _target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"
