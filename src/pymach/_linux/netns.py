"""Network namespaces and TCP sockets, for ``pymach bench net``.

- setns(2) with CLONE_NEWNET moves only the calling thread into another
  network namespace: sockets that thread makes afterwards belong to it
  (AF_UNIX sockets bound to a path are reached through the file system,
  whatever the namespace). The namespaces themselves are made and deleted
  by ``ip netns`` (a bind mount under /run/netns/NAME), outside this module.
- A TCP socket with TCP_NODELAY: small messages leave at once (a round trip
  is not held back by Nagle's algorithm waiting for the peer's ACK).
"""

from __future__ import annotations

import ctypes
import os
import socket
from typing import Final

from .libc import fn, raise_errno

CLONE_NEWNET: Final = 0x40000000
_setns = fn("setns", ctypes.c_int, ctypes.c_int, ctypes.c_int)


def current() -> int:
    """An fd of the calling thread's network namespace (to come back to it)."""
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def enter_fd(fd: int) -> None:
    """Move the calling thread into the network namespace of ``fd``.
    Raises OSError (EPERM without CAP_SYS_ADMIN)."""
    if _setns(fd, CLONE_NEWNET) != 0:
        raise_errno("setns")


def enter(name: str) -> None:
    """Move the calling thread into the namespace ``ip netns`` calls ``name``."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter_fd(fd)
    finally:
        os.close(fd)


def close(fd: int) -> None:
    os.close(fd)


def tcp_listen(host: str, port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: any free port)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(8)
    return s


def tcp_connect(host: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A connected TCP socket with TCP_NODELAY, blocking, ``timeout`` on each call."""
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def nodelay(s: socket.socket) -> None:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def recv_exactly(s: socket.socket, view: memoryview) -> bool:
    """Fill ``view`` from ``s``; False if the peer closed first."""
    got, n = 0, len(view)
    while got < n:
        k = s.recv_into(view[got:])
        if not k:
            return False
        got += k
    return True
