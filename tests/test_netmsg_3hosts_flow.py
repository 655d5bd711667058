"""Flow across the hub: out-of-line memory, qlimit and FIFO / exactly-once
through NATS server restarts, on three hosts (tests/nethosts.py: a
namespace per host, a leaf nats-server per host joined to a hub over TLS,
a bootstrap server and a proxy per host; tasks are tests/netmsg_agent.py).
Brought up once for the module.

The proxies' lease here (5 s) outlasts a server restart (about 1 s: the
leaves reconnect to the hub every second), and a message unacknowledged
for 1 s is sent again, 20 times: what a restart loses is sent again, and
a 256 MiB message has time to arrive. Without ``ip netns`` the hosts are
nats-servers on 127.0.0.1 ports (a warning says so).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("nkeys", reason="nkeys is in the net extra: pip install 'pymach[net]'")
pytest.importorskip("nats", reason="nats-py is in the net extra: pip install 'pymach[net]'")

import nethosts  # noqa: E402
from netmsgutil import rss_kib, settled_rss  # noqa: E402
from pymach.mach import MACH_PORT_QLIMIT_DEFAULT  # noqa: E402
from pymach.netmsg.proxy import WINDOW  # noqa: E402

ME = "pmuser"
LEASE = 5.0
BIG = 256 << 20
N = 400  # messages streamed through a restart


class Net(nethosts.Agents):
    def proxy_pid(self, i: int) -> int:
        return self.hosts.proxies[ME][f"host{i}"].proc.pid


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    for hosts in nethosts.hosts_fixture(3):
        sockets = hosts.start_proxies(ME, "--lease", str(LEASE), retry="1.0,20")
        n = Net(hosts, sockets)
        n[3]("hash_serve", "hash.h3")
        yield n






def _slow_consumers(hosts: nethosts.Hosts) -> dict[str, int]:
    """Each server's count of slow consumers it cut off (varz)."""
    out = {h.name: int(hosts.monitor(h, "varz").get("slow_consumers", 0)) for h in hosts.hosts}
    if hosts.hub is not None:
        out["hub"] = int(hosts.monitor(None, "varz").get("slow_consumers", 0))
    return out


def _leaf_links(hosts: nethosts.Hosts) -> set[tuple[str, str, int]]:
    """The hub's leaf connections (name, address, port): a link that drops
    and comes back has a new port."""
    if hosts.hub is None:
        return set()
    return {(str(lf.get("name")), str(lf.get("ip")), int(lf.get("port", 0)))
            for lf in hosts.monitor(None, "leafz").get("leafs") or []}


def test_out_of_line_memory_of_1_kib_crosses_the_hub_and_comes_back(net: Net) -> None:
    """Host 1 sends host 3's service 1 KiB out of line; host 3's task
    hashes what it received and its reply carries 1 KiB made from that
    hash back: both ways the bytes are checked by the task receiving them."""
    a1 = net[1]
    svc = a1("look_up", "hash.h3", "host3")
    try:
        small = a1("ool_request", svc, 1024, 1024)
        assert small == {"id": 100, "hash_ok": True, "reply_ok": True, "reply_sizes": [1024]}
    finally:
        a1("release", svc)


def test_out_of_line_memory_of_256_mib_crosses_the_hub_and_comes_back(net: Net) -> None:
    """Host 1 sends host 3's service 256 MiB out of line (made by the agent
    on host 1); host 3's task hashes it, and its reply carries 3 MiB made
    from that hash back (several chunks); both are checked by the task
    receiving them. Once delivered, neither proxy on the path keeps a
    copy: their RSS comes back to within 64 MiB of before (a copy would be
    256 MiB). NATS's own limits are never reached on the way: no server
    cut a slow consumer off and no leaf link to the hub dropped."""
    a1 = net[1]
    svc = a1("look_up", "hash.h3", "host3")
    try:
        assert a1("ool_request", svc, 1024, 1024)["reply_ok"]  # both proxies warm
        pids = {"host1": net.proxy_pid(1), "host3": net.proxy_pid(3)}
        before = {h: rss_kib(pid) for h, pid in pids.items()}
        links, slow = _leaf_links(net.hosts), _slow_consumers(net.hosts)
        big = a1("ool_request", svc, BIG, 3 << 20, timeout=150)
        assert big == {"id": 100, "hash_ok": True, "reply_ok": True, "reply_sizes": [3 << 20]}
        after = settled_rss(pids, before, 64 << 10)
        assert all(after[h] <= before[h] + (64 << 10) for h in pids), (before, after)
        assert _slow_consumers(net.hosts) == slow
        assert _leaf_links(net.hosts) == links
    finally:
        a1("release", svc)
        # what follows starts from hosts that reach each other again (a
        # fresh look-up: host 1 may have taken host 3 for dead)
        deadline = time.monotonic() + 30
        while True:
            try:
                if a1("ping", "hash.h3", "host3", "0", 2) is not None:
                    break
            except nethosts.AgentError:
                assert time.monotonic() < deadline, "host 1 does not reach host 3 again"
                time.sleep(0.2)


def test_qlimit_blocks_a_sender_on_another_host(net: Net) -> None:
    """A port of host 3 with qlimit 2 that nobody receives from: host 1's
    sends (each with a 1 s send timeout) go in until one gets
    MACH_SEND_TIMED_OUT, after a finite, small number (at most the qlimit,
    the credits the proxies keep in flight and the proxy port's own queue).
    Host 3 then drains them: each arrives once, in order; and host 1 can
    send again."""
    a1, a3 = net[1], net[3]
    qlimit = 2
    port = a3("qport", qlimit)
    a3("check_in", "q.h3", port)
    to3 = a1("look_up", "q.h3", "host3")
    went = a1("fill", to3, 1, 1.0, 200, timeout=60)
    bound = qlimit + WINDOW + MACH_PORT_QLIMIT_DEFAULT + 1
    assert qlimit < went <= bound, (went, bound)
    assert a3("drain", port, went + 1, 2) == list(range(1, went + 1))  # and nothing more came
    assert a1("fill", to3, went + 1, 5.0, 1) == 1
    assert a3("drain", port, 2, 2) == [went + 1]
    a3("check_out", "q.h3")
    a1("release", to3)
    a3("release", port)


def _stream_through(net: Net, name: str, restart: Any) -> None:
    """Host 1 streams N numbered messages to a port of host 3 (received by a
    thread there); ``restart()`` runs once a quarter went in, while the
    stream goes on; host 3 must get 1..N, each once, in order."""
    a1, a3 = net[1], net[3]
    port = a3("port")
    a3("check_in", name, port)
    to3 = a1("look_up", name, "host3")
    a3("collect", port, N, 40)
    a1("stream", to3, 1, N, 40)
    deadline = time.monotonic() + 30
    while len((st := a1("stream_state"))["ids"]) < N // 4:
        assert not st["done"], st
        assert time.monotonic() < deadline, st
        time.sleep(0.005)
    restart()
    sent = a1("stream_wait", 60, timeout=70)
    got = a3("collect_wait", 60, timeout=70)
    assert sent["error"] is None and sent["ids"] == list(range(1, N + 1)), sent
    assert got["error"] is None, got
    assert got["ids"] == list(range(1, N + 1))
    with pytest.raises(nethosts.AgentError):
        a3("receive", port, 0.5)  # exactly once: no duplicate after the last
    a3("check_out", name)
    a1("release", to3)
    a3("release", port)


def _stopped_mid_stream(net: Net, server: nethosts.Server) -> None:
    """Stop ``server``, checking that host 1's stream was still going on
    (a stream over before the restart would test nothing)."""
    server.stop()
    st = net[1]("stream_state")
    assert not st["done"] and len(st["ids"]) < N, f"the stream ended before the restart: raise N ({st})"


def test_fifo_and_exactly_once_through_a_hub_restart(net: Net) -> None:
    hosts = net.hosts
    if hosts.hub is None:
        pytest.skip("no hub")

    def restart() -> None:
        assert hosts.hub is not None
        _stopped_mid_stream(net, hosts.hub)
        hosts.restart_hub()

    _stream_through(net, "fifo.hub", restart)


def test_fifo_and_exactly_once_through_the_senders_leaf_restart(net: Net) -> None:
    hosts = net.hosts

    def restart() -> None:
        _stopped_mid_stream(net, hosts[1].server)
        hosts.restart(hosts[1])

    _stream_through(net, "fifo.leaf1", restart)


def test_an_empty_message_of_id_0_crosses(net: Net) -> None:
    """A message with msgh_id 0 and nothing else is a message like any
    other: it is delivered, between its neighbours."""
    a1, a3 = net[1], net[3]
    port = a3("port")
    a3("check_in", "zero.h3", port)
    to3 = a1("look_up", "zero.h3", "host3")
    try:
        for i in (5, 0, 6):
            assert a1("fill", to3, i, 5.0, 1) == 1
        assert a3("drain", port, 4, 2) == [5, 0, 6]
    finally:
        a3("check_out", "zero.h3")
        a1("release", to3)
        a3("release", port)
