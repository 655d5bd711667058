"""The peers of AF_UNIX sockets, as the kernel reports them (sock_diag).

Kernel facts this module relies on:

- Every socket is an inode of sockfs. fstat of any fd of it (every dup,
  every copy passed with SCM_RIGHTS, in any process) gives the same
  st_ino, and two live sockets never share one (get_next_ino), so the
  inode names one socket system-wide.
- NETLINK_SOCK_DIAG (netlink protocol 4) answers SOCK_DIAG_BY_FAMILY (20)
  requests. For AF_UNIX (net/unix/diag.c, CONFIG_UNIX_DIAG) a request
  without NLM_F_DUMP is an exact lookup: ``struct unix_diag_req`` names
  the socket by ``udiag_ino``; its cookie may be INET_DIAG_NOCOOKIE (both
  words all ones), which matches any socket. The lookup is limited to the
  caller's network namespace and needs no privilege. It is answered
  synchronously: when sendto returns, the reply is already queued on our
  netlink socket, so the read never needs to wait.
- With UDIAG_SHOW_PEER in ``udiag_show``, the reply (``struct
  unix_diag_msg`` and netlink attributes) carries UNIX_DIAG_PEER (2): a
  u32, the inode of the socket's peer. For a socketpair each end is the
  other's peer; once the peer is closed it reads 0. A socket that does
  not exist is answered with NLMSG_ERROR and -ENOENT.
- So a connection's two ends can be proven to belong together from any
  process that holds one of them: the inode of a sending end that a right
  holds equals the peer inode of one of a port's receiving ends exactly
  when the right's messages go to that port.

The netlink socket is opened for one call and closed before it returns
(no fd is kept: a fork child or a test counting fds sees none).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x01
NLMSG_ERROR = 2
UDIAG_SHOW_PEER = 0x04
UNIX_DIAG_PEER = 2
_NOCOOKIE = 0xFFFFFFFF
_ALL_STATES = 0xFFFFFFFF

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# struct unix_diag_req: family, protocol, pad, states, ino, show, cookie[2]
_REQ = struct.Struct("=BBHIIIII")
_MSG_SIZE = 16  # struct unix_diag_msg: family, type, state, pad, ino, cookie[2]
_RTA = struct.Struct("=HH")  # struct nlattr: len, type
_U32 = struct.Struct("=I")


def _request(ino: int, seq: int) -> bytes:
    body = _REQ.pack(socket.AF_UNIX, 0, 0, _ALL_STATES, ino, UDIAG_SHOW_PEER, _NOCOOKIE, _NOCOOKIE)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0) + body


def _peer_in(reply: bytes) -> int:
    """The UNIX_DIAG_PEER of one reply, 0 when there is none."""
    length, typ = _NLMSGHDR.unpack_from(reply)[:2]
    if typ != SOCK_DIAG_BY_FAMILY:
        return 0  # NLMSG_ERROR: no such socket
    off, end = _NLMSGHDR.size + _MSG_SIZE, min(length, len(reply))
    while off + _RTA.size <= end:
        alen, atype = _RTA.unpack_from(reply, off)
        if alen < _RTA.size:
            break
        if atype == UNIX_DIAG_PEER and alen >= _RTA.size + 4:
            return int(_U32.unpack_from(reply, off + _RTA.size)[0])
        off += (alen + 3) & ~3
    return 0


def peers(inodes: Iterable[int]) -> dict[int, int]:
    """The peer inode of each AF_UNIX socket inode given, for those that
    have a live peer. Empty when the kernel has no sock_diag for AF_UNIX
    (nothing can then be proven). Never waits."""
    inos = [i for i in inodes if 0 < i <= 0xFFFFFFFF]
    if not inos:
        return {}
    try:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    except OSError:
        return {}
    out: dict[int, int] = {}
    try:
        buf = bytearray(8192)
        for seq, ino in enumerate(inos, 1):
            nl.sendto(_request(ino, seq), (0, 0))
            while True:  # the reply to this request (its seq), already queued
                try:
                    n = nl.recv_into(buf, len(buf), socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                if n >= _NLMSGHDR.size and _NLMSGHDR.unpack_from(buf)[3] == seq:
                    peer = _peer_in(bytes(buf[:n]))
                    if peer:
                        out[ino] = peer
                    break
    except OSError:
        return out  # what was proven so far stays proven
    finally:
        nl.close()
    return out
