"""netmsg proxies on the secured deployment: three hosts, each a network
namespace (tests/nethosts.py) with a leaf NATS server joined to a hub over
TLS, a private bootstrap server and a proxy authenticated by its host's
nkey; tasks on each host are tests/netmsg_agent.py, run in the host's
namespace with its bootstrap server. Brought up once for the module.

Without ``ip netns`` the hosts are nats-servers on 127.0.0.1 ports (a
warning says so) and the partition test is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("nkeys", reason="nkeys is in the net extra: pip install 'pymach[net]'")
pytest.importorskip("nats", reason="nats-py is in the net extra: pip install 'pymach[net]'")

import nethosts  # noqa: E402
from pymach.mach import MACH_SEND_INVALID_DEST  # noqa: E402
from pymach.mach.netname import NETNAME_NO_SUCH_HOST  # noqa: E402

ME = "pmuser"
OTHER = "pmother"
LEASE = 1.5


class Net(nethosts.Agents):
    """The agents of the module's hosts."""


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    for hosts in nethosts.hosts_fixture(3):
        sockets = hosts.start_proxies(ME, "--lease", str(LEASE))
        n = Net(hosts, sockets)
        n[1]("serve", "svc.h1")
        n[2]("serve", "svc.h2")
        n[3]("serve", "svc.h3")
        yield n


def test_look_up_and_request_across_the_hub(net: Net) -> None:
    """From host 1: a name of host 3 by host name and by "*", a name of
    host 1 by "" (this host); each answers a request (the Pythonic layer:
    net.look_up and pymach.request, MIG-shaped messages on the C layer's
    mach_msg underneath)."""
    a1 = net[1]
    h3 = a1("look_up", "svc.h3", "host3")
    assert a1("request", h3, "ping")["data"] == "echo:host3:ping"
    any3 = a1("look_up", "svc.h3", "*")
    assert a1("request", any3, "any")["data"] == "echo:host3:any"
    here = a1("look_up", "svc.h1", "")
    assert a1("request", here, "local")["data"] == "echo:host1:local"
    h2 = net[3]("look_up", "svc.h2", "*")
    assert net[3]("request", h2, "from3")["data"] == "echo:host2:from3"
    for h in (h3, any3, here):
        a1("release", h)
    net[3]("release", h2)


def test_c_layer_look_up_across_the_hub(net: Net) -> None:
    """The C layer (netname_look_up on name_server_port, then mach_msg
    request and reply) on host 2, in its namespace, calls host 1."""
    code = (
        "from pymach.mach import *\n"
        "from pymach.mach import netname\n"
        "port = mach_port_t()\n"
        "kr = netname_look_up(netname.get_name_server_port(), b'host1', b'svc.h1', byref(port))\n"
        "assert kr == 0, netname_strerror(kr)\n"
        "import pymach\n"
        "from pymach import SendRight\n"
        "r = pymach.request(SendRight(port.value), b'c-layer', timeout=10)\n"
        "print(r.data.decode())\n"
    )
    h2 = net.hosts[2]
    r = subprocess.run(h2.ns_argv([sys.executable, "-c", code]), env=h2.env(net.sockets["host2"]),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "echo:host1:c-layer"


def test_a_right_goes_from_host1_to_host3_through_host2(net: Net) -> None:
    """Host 1 sends host 2's service a send right to its own port; host 2
    gives it back in the reply (the port itself at home)."""
    a1 = net[1]
    h2 = a1("look_up", "svc.h2", "host2")
    mine = a1("serve", "mine.h1")
    out = a1("request", h2, "carry", [mine])
    assert out["data"] == "echo:host2:carry" and len(out["rights"]) == 1
    back = out["rights"][0]
    assert a1("request", back, "home")["data"] == "echo:host1:home"
    for h in (back, h2):
        a1("release", h)


def _held(out: dict[str, object], host: str) -> int:
    """The handle a "hold" request's answer names."""
    data = out["data"]
    assert isinstance(data, str) and data.startswith(f"echo:{host}:hold"), data
    return int(data[len(f"echo:{host}:hold"):])


def test_a_send_right_passed_on_to_a_third_host_is_lent_by_its_home(net: Net) -> None:
    """Host 1's port right goes host 1 → host 2 → host 3; host 2 lets go of
    its right (and of every right it had of host 1's port): host 3 still
    sends to the port and host 1 receives (host 1 counted host 3 when host
    2 passed the right on). Once host 3 lets go too, the port gets its
    no-senders notification, once."""
    a1, a2, a3 = net[1], net[2], net[3]
    svc2 = a1("look_up", "svc.h2", "host2")
    svc3 = a2("look_up", "svc.h3", "host3")
    mine = a1("port")
    on2 = _held(a1("request", svc2, "hold", [mine]), "host2")
    a1("arm_no_senders", mine)  # (now: host 1's proxy holds a send right)
    on3 = _held(a2("request", svc3, "hold", [on2]), "host3")
    a2("release", on2)
    a2("release", svc3)
    # host 2's proxy gives its references back after its no-senders (and a
    # short delay); a request of host 2's to host 1 after that comes behind
    # the DROP (one subject per host, in order)
    import time
    time.sleep(0.3)
    svc1 = a2("look_up", "svc.h1", "host1")
    assert a2("request", svc1, "after-drop")["data"] == "echo:host1:after-drop"
    a2("release", svc1)
    a3("send", on3, "from3", 4321)
    assert a1("receive", mine, 5) == 4321
    assert not a3("dead", on3)
    a3("release", on3)
    assert a1("receive", mine, 5) == 70  # MACH_NOTIFY_NO_SENDERS
    with pytest.raises(nethosts.AgentError):
        a1("receive", mine, 0.5)  # once
    for h in (mine, svc2):
        a1("release", h)


def test_a_right_checked_in_on_a_third_host_is_lent_by_its_home(net: Net) -> None:
    """Host 2 checks in its right to a port of host 1; host 3 looks it up
    (host 3's right names the port at host 1); host 2 checks it out and
    lets go: host 3 still reaches the port. Once host 3 lets go too, the
    port gets its no-senders notification, once."""
    a1, a2, a3 = net[1], net[2], net[3]
    svc2 = a1("look_up", "svc.h2", "host2")
    mine = a1("port")
    on2 = _held(a1("request", svc2, "hold", [mine]), "host2")
    a1("arm_no_senders", mine)
    a2("check_in", "lent.h2", on2)
    on3 = a3("look_up", "lent.h2", "host2")
    a2("check_out", "lent.h2")
    a2("release", on2)
    import time
    time.sleep(0.3)  # (as above: host 2's DROP goes before its next request to host 1)
    svc1 = a2("look_up", "svc.h1", "host1")
    assert a2("request", svc1, "after-drop")["data"] == "echo:host1:after-drop"
    a2("release", svc1)
    a3("send", on3, "looked-up", 4322)
    assert a1("receive", mine, 5) == 4322
    a3("release", on3)
    assert a1("receive", mine, 5) == 70  # MACH_NOTIFY_NO_SENDERS
    with pytest.raises(nethosts.AgentError):
        a1("receive", mine, 0.5)
    for h in (mine, svc2):
        a1("release", h)


def _send_once_to_host3(net: Net) -> tuple[int, int, int, int]:
    """A send-once right to a port of host 1 passed host 1 → host 2 → host
    3 (moved each time): handles of host 1's right to host 2's service,
    host 2's to host 3's, host 1's port, and host 3's send-once right."""
    a1, a2 = net[1], net[2]
    svc2 = a1("look_up", "svc.h2", "host2")
    svc3 = a2("look_up", "svc.h3", "host3")
    port = a1("port")
    on2 = _held(a1("request", svc2, "hold", [port], True), "host2")
    on3 = _held(a2("request", svc3, "hold", [on2]), "host3")
    return svc2, svc3, port, on3


def test_a_send_once_right_passed_on_to_a_third_host_is_answered_once(net: Net) -> None:
    """Host 1's send-once right goes host 1 → host 2 → host 3 (moved each
    time); host 3 answers on it: host 1 gets that message, once, and no
    send-once notification after it."""
    a1, a2, a3 = net[1], net[2], net[3]
    svc2, svc3, port, on3 = _send_once_to_host3(net)
    a3("send", on3, "answer", 1234)
    assert a1("receive", port, 5) == 1234
    with pytest.raises(nethosts.AgentError):
        a1("receive", port, 0.5)  # once: no second message, no send-once notification
    a2("release", svc3)
    for h in (port, svc2):
        a1("release", h)


def test_a_send_once_right_passed_on_to_a_third_host_is_named_at_its_home(net: Net) -> None:
    """Host 1's send-once right goes host 1 → host 2 → host 3; then host 2
    is cut off. Host 3 answers on the right all the same: it names the
    port at its home, host 1 (host 2 told host 1 it passed the right on),
    so the answer does not go through host 2."""
    a1, a2, a3 = net[1], net[2], net[3]
    svc2, svc3, port, on3 = _send_once_to_host3(net)
    net.hosts.cut(net.hosts[2])
    try:
        a3("send", on3, "answer", 4321)
        assert a1("receive", port, 5) == 4321
        with pytest.raises(nethosts.AgentError):
            a1("receive", port, 0.5)  # once: no second message, no send-once notification
    finally:
        net.hosts.heal(net.hosts[2])
    net.hosts.wait_leaf_up(net.hosts[2])
    # (host 2 and the others take each other for dead meanwhile: they meet
    # again as new incarnations before the next test)
    _reach(a1, "svc.h2", "host2")
    _reach(a2, "svc.h3", "host3")
    a2("release", svc3)
    for h in (port, svc2):
        a1("release", h)


def _reach(a: nethosts.Agent, name: str, host: str, timeout: float = 20) -> None:
    """A fresh look-up of ``name`` at ``host`` and a request on it, until
    both work (after a heal the hosts may still be renewing)."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        h = None
        try:
            h = a("look_up", name, host)
            a("request", h, "back", [], False, 2)
            return
        except nethosts.AgentError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        finally:
            if h is not None:
                a("release", h)


def test_a_killed_remote_task_s_port_is_a_dead_name_at_once_not_after_a_lease(net: Net) -> None:
    """A second task on host 3 serves a name; host 1 looks it up and calls
    it; the task is killed (SIGKILL). Host 3's proxy sees its port die (the
    local EOF: a dead-name notification) and tells host 1, whose right is a
    dead name then, while host 3 itself stays alive and heard (host 1's
    right to host 3's other service still works: no lease ran out)."""
    a1 = net[1]
    h3 = net.hosts[3]
    doomed = h3.agent(net.sockets["host3"])
    doomed("serve", "doomed.h3")
    other = a1("look_up", "svc.h3", "host3")
    right = a1("look_up", "doomed.h3", "host3")
    assert a1("request", right, "alive")["data"] == "echo:host3:alive"
    doomed.stop(kill=True)
    assert a1("wait_dead", right, LEASE + 5, timeout=LEASE + 10)
    with pytest.raises(nethosts.AgentError) as ei:
        a1("send", right, "late", 1)
    assert ei.value.kr == MACH_SEND_INVALID_DEST
    assert not a1("dead", other) and a1("request", other, "still")["data"] == "echo:host3:still"
    for h in (right, other):
        a1("release", h)


def test_no_senders_when_the_last_remote_holder_is_killed(net: Net) -> None:
    """A task on host 3 holds the only send right to a port of host 1 and
    is killed (SIGKILL): host 3's proxy port for it loses its last sender,
    host 3's proxy gives the reference back, and the port on host 1 gets
    its no-senders notification (host 3 itself stays alive: no lease)."""
    a1 = net[1]
    holder = net.hosts[3].agent(net.sockets["host3"])
    holder("serve", "holder.h3")
    svc = a1("look_up", "holder.h3", "host3")
    port = a1("port")
    assert a1("request", svc, "hold", [port])["data"].startswith("echo:host3:hold")
    a1("arm_no_senders", port)
    holder.stop(kill=True)
    assert a1("receive", port, 10, timeout=20) == 70  # MACH_NOTIFY_NO_SENDERS
    for h in (svc, port):
        a1("release", h)


def test_another_users_proxy_cannot_reach_our_names(net: Net) -> None:
    """Another account's proxy on host 2 (its own bootstrap server and
    nkey): our names on host 1 and 3 do not exist for it."""
    h2 = net.hosts[2]
    sock = h2.start_bootstrap(OTHER)
    h2.start_proxy(sock, net.hosts.seed_file(h2, OTHER), OTHER)
    other = h2.agent(sock)
    for host in ("host1", "host3", "*"):
        with pytest.raises(nethosts.AgentError) as ei:
            other("look_up", "svc.h1" if host != "host3" else "svc.h3", host)
        assert ei.value.kr in (NETNAME_NO_SUCH_HOST, 1001), ei.value
    other.stop()


def test_a_proxy_without_credentials_is_refused(net: Net) -> None:
    """A proxy with no nkey, or with a seed file others could read, does not
    get in."""
    h1 = net.hosts[1]
    sock = net.sockets["host1"]
    r = subprocess.run(h1.ns_argv([sys.executable, "-m", "pymach", "netmsg", "serve", "--nats", h1.url,
                                   "--host", "host1"]), env=h1.env(sock), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and "authorization" in r.stderr.lower(), r.stderr
    loose = net.hosts.write("loose.seed", h1.users[ME].seed + "\n")
    os.chmod(loose, 0o644)
    r = subprocess.run(h1.ns_argv([sys.executable, "-m", "pymach", "netmsg", "serve", "--nats", h1.url,
                                   "--host", "host1", "--nkey-seed", loose]), env=h1.env(sock),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "mode 0644" in r.stderr, r.stderr


def _retry(fn: object, what: str, timeout: float) -> object:
    """fn() until it does not raise AgentError (the leaf link coming back
    after a heal takes a few NATS pings), at most ``timeout`` seconds."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()  # type: ignore[operator]
        except nethosts.AgentError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_cut_off_host_is_dead_after_the_lease_and_fenced_when_it_heals(net: Net) -> None:
    """Host 1's link to the hub is cut. Within the lease (plus NATS's own
    detection) host 2's right to host 1's service is a dead name, and so is
    host 1's right to host 3's (host 1 declares the others dead by its own
    lease, then, having heard nobody, takes a new incarnation). After the heal the old names stay dead, and
    fresh look-ups work both ways."""
    a1, a2, a3 = net[1], net[2], net[3]
    to1 = a2("look_up", "svc.h1", "host1")
    to3 = a1("look_up", "svc.h3", "host3")
    assert a2("request", to1, "before")["data"] == "echo:host1:before"
    assert a1("request", to3, "before")["data"] == "echo:host3:before"
    net.hosts.cut(net.hosts[1])
    try:
        assert a2("wait_dead", to1, LEASE + 5, timeout=LEASE + 10)
        assert a1("wait_dead", to3, LEASE + 5, timeout=LEASE + 10)
    finally:
        net.hosts.heal(net.hosts[1])
    net.hosts.wait_leaf_up(net.hosts[1])
    # the old names stay dead: nothing of host 1's old incarnation is taken
    assert a2("dead", to1) and a1("dead", to3)
    fresh1 = _retry(lambda: a2("look_up", "svc.h1", "host1"), "look-up of host 1", 20)
    assert a2("request", fresh1, "after")["data"] == "echo:host1:after"
    fresh3 = _retry(lambda: a1("look_up", "svc.h3", "host3"), "look-up of host 3", 20)
    assert a1("request", fresh3, "after")["data"] == "echo:host3:after"
    assert not a2("dead", fresh1) and not a1("dead", fresh3)
    for a, h in ((a2, to1), (a1, to3), (a2, fresh1), (a1, fresh3)):
        a("release", h)


def test_a_lost_holder_host_gives_no_senders_and_send_once_notifications(net: Net) -> None:
    """Host 3 holds the only send right to a port of host 1, and a
    send-once right to another; host 3's link is cut: after the lease host
    1's proxy drops host 3's references, so the first port gets its
    no-senders notification and the second its send-once notification.
    Host 1 still hears host 2 (it holds a right of host 2's), so it is host
    3 alone that is dead for it (no new incarnation of host 1)."""
    a1 = net[1]
    svc2 = a1("look_up", "svc.h2", "host2")
    svc3 = _retry(lambda: a1("look_up", "svc.h3", "host3"), "look-up of host 3", 20)
    held = a1("port")
    once = a1("port")
    assert a1("request", svc3, "hold", [held])["data"].startswith("echo:host3:hold")
    assert a1("request", svc3, "hold", [once], True)["data"].startswith("echo:host3:hold")
    a1("arm_no_senders", held)
    net.hosts.cut(net.hosts[3])
    try:
        assert a1("receive", held, LEASE + 5, timeout=LEASE + 10) == 70  # MACH_NOTIFY_NO_SENDERS
        assert a1("receive", once, LEASE + 5, timeout=LEASE + 10) == 71  # MACH_NOTIFY_SEND_ONCE
        assert a1("wait_dead", svc3, LEASE + 5, timeout=LEASE + 10)
    finally:
        net.hosts.heal(net.hosts[3])
    net.hosts.wait_leaf_up(net.hosts[3])
    fresh = _retry(lambda: a1("look_up", "svc.h3", "host3"), "look-up of host 3", 20)
    assert a1("request", fresh, "again")["data"] == "echo:host3:again"
    assert not a1("dead", svc2) and a1("request", svc2, "still")["data"] == "echo:host2:still"
    for h in (svc3, held, once, fresh, svc2):
        a1("release", h)


def test_the_proxies_stay_within_their_hosts_permissions(net: Net) -> None:
    """Everything above ran under natsconf.host_permissions on each leaf
    server (and leaf_permissions at the hub): no proxy was refused a
    subject (the proxies log what the server reports)."""
    for h in net.hosts.hosts:
        for p in h.procs:
            text = p.log_text().lower()
            assert "violation" not in text, text


def test_serve_checks_its_seed_file_and_lease(tmp_path: Path) -> None:
    """The seed file must be ours, 0600 or narrower, and hold a user seed;
    --nkey-seed wants --nats; a lease out of range is refused (each a
    clear message, exit status 2), before anything is connected."""
    from pymach.netmsg import natsconf
    from pymach.netmsg.proxy import read_seed
    seed = natsconf.new_user("host1").seed
    good = os.path.join(tmp_path, "good.seed")
    with open(good, "w") as f:
        f.write(seed + "\n")
    os.chmod(good, 0o600)
    assert read_seed(good) == seed
    os.chmod(good, 0o640)
    with pytest.raises(ValueError, match="mode 0640"):
        read_seed(good)
    os.chmod(good, 0o600)
    bad = os.path.join(tmp_path, "bad.seed")
    with open(bad, "w") as f:
        f.write("not a seed\n")
    os.chmod(bad, 0o600)
    with pytest.raises(ValueError, match="nkey seed"):
        read_seed(bad)
    with pytest.raises(ValueError, match="No such file"):
        read_seed(os.path.join(tmp_path, "missing.seed"))
    env = dict(os.environ, PYTHONPATH=nethosts.SRC, PYMACH_NO_AUTOSTART="1")
    for args, text in ((["--nkey-seed", good], "--nkey-seed needs --nats"),
                       (["--nats", "nats://127.0.0.1:1", "--lease", "0"], "a lease of 0.0 s")):
        r = subprocess.run([sys.executable, "-m", "pymach", "netmsg", "serve", *args], env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and text in r.stderr, r.stderr
