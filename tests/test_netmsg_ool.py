"""A large out-of-line message across hosts: 256 MiB from hostA to a port on
hostB arrives whole and equal (its SHA-256, taken by the receiver), and
neither proxy keeps a copy once it is delivered (their RSS comes back).

The hosts are test_netmsg.py's (one NATS server, two bootstrap servers,
two proxies and tests/netmsg_peer.py on hostB), with the proxies' default
retransmission (a message unacknowledged for 1 s is sent again, 10 times):
256 MiB takes longer than the 2 s that test_netmsg.py's fast setting
gives a home before its port is taken for dead."""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("nats")

from pymach import Message, bootstrap, net, request  # noqa: E402

from netmsgutil import HERE, SRC, Proc, rss_kib, settled_rss  # noqa: E402

BIG = 256 << 20


class Two:
    def __init__(self, proxies: dict[str, Proc]) -> None:
        self.proxies = proxies


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Two]:
    from machutil import Server
    from pymach.mach import netname
    from pymach.netmsg import server
    tmp = tmp_path_factory.mktemp("netmsg-ool")
    nats = server.start(directory=tmp / "nats")
    started: list[Any] = []
    try:
        with bootstrap.private_server(serve=False) as a:
            started.append(Server(a.path, log=str(tmp / "bootstrap-a.log")))
            path_b = os.path.join(a.directory, "b.sock")
            started.append(Server(path_b, log=str(tmp / "bootstrap-b.log")))
            proxies = {}
            for name, path in (("hostA", a.path), ("hostB", path_b)):
                env = dict(os.environ, PYMACH_BOOTSTRAP_SOCKET=path, PYMACH_NO_AUTOSTART="1", PYTHONPATH=SRC,
                           PYMACH_NETMSG_TOKEN=nats.token)
                env.pop("PYMACH_NETMSG_RETRY", None)
                p = Proc([sys.executable, "-m", "pymach", "netmsg", "serve", "--nats", nats.url, "--host", name],
                         env, tmp / f"proxy-{name}.log", ready_fd=True)
                started.append(p)
                proxies[name] = p
            started.append(Proc([sys.executable, str(HERE / "netmsg_peer.py"), "hash.b"], env,
                                tmp / "peer.log", stdin=True))
            assert net.version().startswith("pymach netmsg 1 hostA ")  # connected before the fd baseline
            try:
                yield Two(proxies)
            finally:
                netname.name_server_port_disconnect()
    finally:
        for s in reversed(started):
            s.stop()
        nats.stop()


def test_256_mib_out_of_line_arrives_whole_and_no_proxy_keeps_it(two: Two) -> None:
    data = os.urandom(BIG)
    want = struct.pack("<Q", BIG) + hashlib.sha256(data).digest()
    pids = {h: p.proc.pid for h, p in two.proxies.items()}
    with net.look_up("hash.b", "hostB") as hasher:
        r = request(hasher, Message(b"small", ool=[b"x" * 1024]), timeout=30)  # both proxies warm
        assert r.data == struct.pack("<Q", 1024) + hashlib.sha256(b"x" * 1024).digest()
        r.release()
        before = {h: rss_kib(pid) for h, pid in pids.items()}
        r = request(hasher, Message(b"big", ool=[data]), timeout=120)
        try:
            assert (r.id, r.data) == (100, want)
        finally:
            r.release()
        del data
        # once delivered, nothing of the message is left in either proxy,
        # although the right (and its proxy port) lives on (a copy would be
        # 256 MiB; what the allocators keep is far less)
        after = settled_rss(pids, before, 32 << 10)
        assert all(after[h] <= before[h] + (32 << 10) for h in pids), (before, after)


def test_a_message_sent_again_while_it_arrives_is_assembled_once() -> None:
    # the sender had no acknowledgement in time and sends every frame again
    # while the first sending is still coming in: the chunks it has are
    # skipped, the assembly goes on where it is; a chunk past a gap (one
    # lost) is not taken: the assembly stays at the gap, for the sender to
    # go back to
    from pymach.netmsg import wire as W
    payload = os.urandom(5000)
    frames = [W.unpack(f) for f in W.chunks("h", 9, W.Ref("hostA", 5, 7), 4, payload, 300)]
    ra = W.Reassembly(len(payload))
    got = [ra.add(f) for f in frames[:6]]
    got += [ra.add(f) for f in frames[:3]]  # the second sending's first chunks
    got += [ra.add(f) for f in frames[6:]]
    assert got[-1] == payload and got[:-1] == [None] * (len(got) - 1)
    ra = W.Reassembly(len(payload))
    ra.add(frames[0])
    have = ra.have
    assert ra.add(frames[2]) is None and ra.have == have
    got = [ra.add(f) for f in frames[1:]]
    assert got[-1] == payload
