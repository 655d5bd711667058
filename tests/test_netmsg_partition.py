"""A partial partition: three hosts whose nats-servers form a NATS cluster
(tests/nethosts.py, ``topology="cluster"``: a full mesh of routes over TLS
on the bridge, the same accounts and nkeys), a bootstrap server and a proxy
per host (lease 1.5 s), tasks from tests/netmsg_agent.py. ``cut_between``
puts blackhole routes between host 1 and host 2: those two cannot reach
each other while both still reach host 3, and NATS routes do not relay
through a third server.

Without ``ip netns`` there is nothing to cut: the module is skipped (the
fixture says why).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("nkeys", reason="nkeys is in the net extra: pip install 'pymach[net]'")
pytest.importorskip("nats", reason="nats-py is in the net extra: pip install 'pymach[net]'")

import nethosts  # noqa: E402

ME = "pmuser"
LEASE = 1.5
HEAL_WITHIN = 4 * LEASE + 6.0  # a few leases after the routes are back (and a request's own timeout)


class Net(nethosts.Agents):
    def incarnation(self, i: int) -> str:
        version = self[i]("version")
        assert isinstance(version, str) and version.split()[-2] == f"host{i}", version
        return version.split()[-1]

    def cut(self) -> None:
        """Cut host 1 from host 2; returns once their nodes have dropped the
        route between them (the others stay)."""
        h1, h2 = self.hosts[1], self.hosts[2]
        self.hosts.cut_between(h1, h2)
        self.hosts.wait_routes(h1, {"host3"})
        self.hosts.wait_routes(h2, {"host3"})

    def heal(self) -> None:
        """Heal the cut; returns once the full mesh of routes is back."""
        self.hosts.heal_between(self.hosts[1], self.hosts[2])
        for h in self.hosts.hosts:
            self.hosts.wait_routes(h, {o.name for o in self.hosts.hosts if o is not h})


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    for hosts in nethosts.hosts_fixture(3, topology="cluster"):
        sockets = hosts.start_proxies(ME, "--lease", str(LEASE))
        n = Net(hosts, sockets)
        for i in (1, 2, 3):
            n[i]("serve", f"svc.h{i}")
        yield n


def _path_ready(pub_host: nethosts.Host, pub: Any, sub_host: nethosts.Host, sub: Any, subject: str) -> list[bytes]:
    """Probes on ``subject`` until ``sub`` gets one (its interest reached
    the publisher's node), then a mark, read up to: returns what was read."""
    seen: list[bytes] = []
    deadline = time.monotonic() + nethosts.STEP
    while True:
        pub_host.run(pub.publish(subject, b"probe"))
        pub_host.run(pub.flush())
        try:
            seen.append(sub_host.run(sub.next_msg(timeout=0.1)).data)
            break
        except Exception as exc:  # nats.errors.TimeoutError
            if type(exc).__name__ != "TimeoutError" or time.monotonic() > deadline:
                raise
    pub_host.run(pub.publish(subject, b"mark"))
    pub_host.run(pub.flush())
    while seen[-1] != b"mark":
        seen.append(sub_host.run(sub.next_msg(timeout=10)).data)
    return seen


def test_nats_routes_do_not_relay_around_a_cut(net: Net) -> None:
    """At the NATS level: with host 1 cut from host 2, what host 1 publishes
    for host 2 is not delivered (not later either: the route is gone, the
    message with it), while host 1 → host 3 and host 2 → host 3 still flow."""
    hosts = net.hosts
    h1, h2, h3 = hosts[1], hosts[2], hosts[3]
    nc1, nc2, nc3 = (h.run(h.connect(ME)) for h in (h1, h2, h3))
    try:
        to2 = h2.run(nc2.subscribe("pm.host2.in.4242"))
        to3 = h3.run(nc3.subscribe("pm.host3.in.4242"))
        h2.run(nc2.flush())
        h3.run(nc3.flush())
        _path_ready(h1, nc1, h2, to2, "pm.host2.in.4242")
        _path_ready(h1, nc1, h3, to3, "pm.host3.in.4242")
        _path_ready(h2, nc2, h3, to3, "pm.host3.in.4242")
        net.cut()
        try:
            h1.run(nc1.publish("pm.host2.in.4242", b"lost"))
            h1.run(nc1.publish("pm.host3.in.4242", b"1to3"))
            h2.run(nc2.publish("pm.host3.in.4242", b"2to3"))
            h1.run(nc1.flush())
            h2.run(nc2.flush())
            got = {h3.run(to3.next_msg(timeout=10)).data for _ in range(2)}
            assert got == {b"1to3", b"2to3"}
        finally:
            net.heal()
        # host 1's message for host 2 went nowhere: after the heal, host 2
        # reads only what comes now
        seen = _path_ready(h1, nc1, h2, to2, "pm.host2.in.4242")
        assert b"lost" not in seen, seen
    finally:
        for h, nc in ((h1, nc1), (h2, nc2), (h3, nc3)):
            if not nc.is_closed:
                h.run(nc.close())


def _until(what: str, fn: Callable[[], Any], want: Any, within: float) -> Any:
    """fn() until it returns ``want`` (an AgentError counts as not yet), at
    most ``within`` seconds."""
    deadline = time.monotonic() + within
    got: Any = None
    while True:
        try:
            got = fn()
            if got == want:
                return got
        except nethosts.AgentError as e:
            got = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s (last: {got!r})")
        time.sleep(0.1)


def _connected(net: Net, src: int, dst: int, within: float) -> int:
    """Host ``src``'s right to host ``dst``'s service, which a request went
    through: a fresh look-up each try, within ``within`` seconds."""
    a = net[src]

    def attempt() -> str:
        handle = a("look_up", f"svc.h{dst}", f"host{dst}")
        try:
            data = a("request", handle, "ping", [], False, 2)["data"]
        except nethosts.AgentError:
            data = None
        if data != f"echo:host{dst}:ping":
            a("release", handle)
            return f"no answer ({data!r})"
        kept.append(handle)
        return "ok"
    kept: list[int] = []
    _until(f"host {src} → host {dst}", attempt, "ok", within)
    return kept[0]


def _cut_until_dead(net: Net) -> dict[str, int]:
    """Rights between every pair of hosts (handles by "from-to"), then the
    cut; returns once host 1's right to host 2's service and host 2's to
    host 1's are dead names (each declared the other dead by its lease)."""
    h: dict[str, int] = {}
    for src in (1, 2, 3):
        for dst in (1, 2, 3):
            if src != dst:
                h[f"{src}-{dst}"] = _connected(net, src, dst, HEAL_WITHIN)
    net.cut()
    a = {i: net[i] for i in (1, 2, 3)}
    assert a[1]("wait_dead", h["1-2"], LEASE + 5, timeout=LEASE + 10)
    assert a[2]("wait_dead", h["2-1"], LEASE + 5, timeout=LEASE + 10)
    return h


def _release(net: Net, handles: dict[str, int]) -> None:
    for key, handle in handles.items():
        net[int(key[0])]("release", handle)


def test_a_partial_partition_kills_only_the_cut_pair(net: Net) -> None:
    """Host 1 and host 2, cut from each other, each declare the other dead
    after the lease (their rights to each other's services are dead
    names), but both keep working with host 3 (both ways), and neither
    takes a new incarnation: each still hears host 3."""
    incs = {i: net.incarnation(i) for i in (1, 2, 3)}
    h = _cut_until_dead(net)
    try:
        a1, a2, a3 = net[1], net[2], net[3]
        for _ in range(3):  # across a few leases: nothing else dies
            assert a1("request", h["1-3"], "cut!")["data"] == "echo:host3:cut!"
            assert a2("request", h["2-3"], "cut!")["data"] == "echo:host3:cut!"
            assert a3("request", h["3-1"], "cut!")["data"] == "echo:host1:cut!"
            assert a3("request", h["3-2"], "cut!")["data"] == "echo:host2:cut!"
            time.sleep(LEASE / 2)
        for key in ("1-3", "2-3", "3-1", "3-2"):
            assert not net[int(key[0])]("dead", h[key]), key
        assert {i: net.incarnation(i) for i in (1, 2, 3)} == incs
    finally:
        net.heal()
        _release(net, h)


def test_a_partial_partition_heals_through_a_new_incarnation(net: Net) -> None:
    """After the heal, host 1 and host 2 meet again: a frame from a host the
    receiver declared dead is answered with a notice that it is fenced, and
    the host so told takes a new incarnation (both do: each was declared
    dead by the other; its old ports dead names
    everywhere, its names still checked in). Within a few leases a fresh
    look-up from host 1 of host 2's service works and a request goes
    through, and the other way; host 3 reaches both again after a fresh
    look-up. The rights of before stay dead; host 3's incarnation stays."""
    h = _cut_until_dead(net)
    incs = {i: net.incarnation(i) for i in (1, 2, 3)}
    try:
        net.heal()
        a1, a2, a3 = net[1], net[2], net[3]
        _until("host 1 → host 2", lambda: a1("ping", "svc.h2", "host2", "heal", 2), "echo:host2:heal",
               HEAL_WITHIN)
        _until("host 2 → host 1", lambda: a2("ping", "svc.h1", "host1", "heal", 2), "echo:host1:heal",
               HEAL_WITHIN)
        for dst in (1, 2):
            _until(f"host 3 → host {dst}", lambda: a3("ping", f"svc.h{dst}", f"host{dst}", "heal", 2),
                   f"echo:host{dst}:heal", HEAL_WITHIN)
        after = {i: net.incarnation(i) for i in (1, 2, 3)}
        assert after[3] == incs[3], (incs, after)
        assert after[1] != incs[1] and after[2] != incs[2], (incs, after)  # both were declared dead
        assert a1("dead", h["1-2"]) and a2("dead", h["2-1"])
    finally:
        _release(net, h)
