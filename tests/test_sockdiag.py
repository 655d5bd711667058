"""_linux/sockdiag.py: the peer inodes the kernel reports for AF_UNIX
sockets (NETLINK_SOCK_DIAG, UDIAG_SHOW_PEER), across processes, with no fd
kept."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from procutil import forked, open_fds
from pymach._linux import sockdiag


def ino(s: socket.socket) -> int:
    return os.fstat(s.fileno()).st_ino


def test_the_two_ends_of_a_pair_are_each_others_peer() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        before = open_fds()
        assert sockdiag.peers([ino(a), ino(b), ino(c)]) == {ino(a): ino(b), ino(b): ino(a), ino(c): ino(d)}
        assert open_fds() == before  # the netlink socket was closed
        dup = a.dup()
        assert ino(dup) == ino(a) and sockdiag.peers([ino(dup)]) == {ino(a): ino(b)}
        dup.close()
        d.close()  # a closed peer is no peer
        assert sockdiag.peers([ino(c)]) == {}
    finally:
        for s in (a, b, c, d):
            s.close()


def test_unknown_inodes_and_other_files_have_no_peer() -> None:
    r, w = os.pipe()
    try:
        assert sockdiag.peers([os.fstat(r).st_ino, 0, 1 << 40]) == {}
        assert sockdiag.peers([]) == {}
    finally:
        os.close(r)
        os.close(w)


def test_the_peer_is_reported_for_an_end_another_process_holds() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a_ino = ino(a)

    def child(sync: Callable[[], None]) -> None:
        b.close()  # the child keeps only a
        sync()
        sync()  # the parent has asked

    try:
        with forked(child) as sync:
            sync()
            a.close()  # a is open in the child only
            assert sockdiag.peers([ino(b)]) == {ino(b): a_ino}
            sync()
        assert sockdiag.peers([ino(b)]) == {}  # the child exited: its end closed with it
    finally:
        a.close()
        b.close()

