"""The rendezvous, under the name the bootstrap server, the tools and
programs that start a private server know it by. The mechanism (the socket
path and its checks, the lock, the handshake, autostart) is
pymach._linux.rendezvous: the kernel's bootstrap port connects with it too,
and the kernel imports nothing from pymach.servers."""

from __future__ import annotations

from .._linux.rendezvous import (HANDSHAKE, HANDSHAKE_FDS, MAGIC, NO_AUTOSTART_ENV, SOCKET_ENV, SOCKET_NAME,
                                 TIMEOUT, VERSION, AlreadyRunning, Busy, Listener, NoServer, Refused, accept,
                                 autostart, autostart_enabled, check_dir, connect, send_busy, send_handshake,
                                 socket_path, spawn, wait_connectable)

__all__ = [
    "HANDSHAKE", "HANDSHAKE_FDS", "MAGIC", "NO_AUTOSTART_ENV", "SOCKET_ENV", "SOCKET_NAME", "TIMEOUT", "VERSION",
    "AlreadyRunning", "Busy", "Listener", "NoServer", "Refused", "accept", "autostart", "autostart_enabled",
    "check_dir", "connect", "send_busy", "send_handshake", "socket_path", "spawn", "wait_connectable",
]
