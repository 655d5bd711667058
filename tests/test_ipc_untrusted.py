"""Every record is untrusted: random and malformed records on a real port
connection get a clear MACH_RCV_* code, close every fd that came with them,
and never cost the next good message."""

from __future__ import annotations

import array
import os
import socket
import struct

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import pymach
import pymach.mach as M
from pymach._kern import ipc_kmsg
from pymach._kern.task import SELF

BAD = {M.MACH_RCV_HEADER_ERROR, M.MACH_RCV_BODY_ERROR}


def _cap(port: pymach.Port):  # type: ignore[no-untyped-def]
    e = SELF.space.lookup(port.name)
    assert e is not None and e.cap is not None
    return e.cap


def _raw(port: pymach.Port, data: bytes, fds: list[int]) -> None:
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    _cap(port).sock.sendmsg([data], anc)


def _junk_fds(kind: str) -> list[int]:
    if kind == "pipe":
        r, w = os.pipe()
        return [r, w]
    if kind == "file":
        return [os.open("/proc/self/status", os.O_RDONLY)]
    if kind == "dgram":
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        return [a.detach(), b.detach()]
    if kind == "unsealed":
        fd = os.memfd_create("x")
        os.ftruncate(fd, 4096)
        return [fd]
    return []


def _expect_refused_then_good(port: pymach.Port, send: pymach.SendRight) -> None:
    with_err = None
    try:
        port.receive(timeout=2)
    except pymach.MachError as e:
        with_err = e.kr
    assert with_err in BAD
    send.send(b"good")
    assert port.receive(timeout=2).data == b"good"


def _wire(bits: int, nrights: int, nfds: int, blen: int, rights: bytes, body: bytes, flags: int = 0,
          alen: int = 0) -> bytes:
    return ipc_kmsg.WIRE.pack(ipc_kmsg.MAGIC, bits, 7, blen, nrights, nfds, flags, alen) + rights + body


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200), kind=st.sampled_from(["none", "pipe", "file", "dgram", "unsealed"]))
def test_random_records_are_refused(data: bytes, kind: str) -> None:
    before = len(os.listdir("/proc/self/fd"))
    with pymach.Port() as port, port.make_send() as send:
        fds = _junk_fds(kind)
        try:
            _raw(port, data, fds)
        finally:
            for fd in fds:
                os.close(fd)
        _expect_refused_then_good(port, send)
    assert len(os.listdir("/proc/self/fd")) == before


@settings(max_examples=80, deadline=None)
@given(nrights=st.integers(0, 300), nfds_claim=st.integers(0, 300), blen=st.integers(0, (1 << 32) - 1),
       alen=st.integers(0, 64), kind=st.integers(0, 40), count=st.integers(0, 1 << 20),
       size=st.integers(0, (1 << 64) - 1), fdkind=st.sampled_from(["none", "pipe", "file", "dgram", "unsealed"]))
@example(nrights=1, nfds_claim=0, blen=(1 << 32) - 16, alen=0, kind=0, count=0, size=0, fdkind="none")  # wraps
def test_wrong_counts_sizes_and_fd_kinds_are_refused(nrights: int, nfds_claim: int, blen: int, alen: int,
                                                      kind: int, count: int, size: int, fdkind: str) -> None:
    rights = b"".join(ipc_kmsg.RIGHT.pack(kind, count % 4, size, 0) for _ in range(min(nrights, 8)))
    body = struct.pack("<I", count) + b"\0" * 12
    # at least one claim of the header must be wrong (a header that tells
    # the truth about everything can describe a good message)
    nfds = {"none": 0, "pipe": 2, "file": 1, "dgram": 2, "unsealed": 1}[fdkind]
    assume(not (blen == len(body) and nrights <= 8 and nfds_claim == nfds == min(nrights, 8) * (count % 4)
                and alen == 0))
    record = _wire(0x80001100, nrights, nfds_claim, blen, rights, body, alen=alen)
    with pymach.Port() as port, port.make_send() as send:
        fds = _junk_fds(fdkind)
        assert len(fds) == nfds
        try:
            _raw(port, record, fds)
        finally:
            for fd in fds:
                os.close(fd)
        _expect_refused_then_good(port, send)


def test_a_shrunk_or_unsealed_memfd_is_refused_without_sigbus() -> None:
    with pymach.Port() as port, port.make_send() as send:
        fd = os.memfd_create("x", os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, 10)  # declared 1 MiB, holds 10 bytes, and is not sealed
        rights = ipc_kmsg.RIGHT.pack(0, 0, 0, 0) + ipc_kmsg.RIGHT.pack(ipc_kmsg.KIND_OOL, 1, 1 << 20, 0)
        body = struct.pack("<I", 1) + ipc_kmsg.OOL_DESC.pack(1, 0, 1, 0, M.MACH_MSG_OOL_DESCRIPTOR, 1 << 20)
        _raw(port, _wire(0x80001100, 2, 1, len(body), rights, body), [fd])
        os.close(fd)
        _expect_refused_then_good(port, send)


