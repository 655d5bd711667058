"""pymach bench net: ports across hosts (pymach.netmsg) against what they
run on, in one run.

Two hosts, A and B, each a network namespace that the benchmark makes
(``ip netns``), joined by a veth pair (10.249.0.1 and 10.249.0.2), with
their loopbacks up; nothing is added to the machine's own namespace. A
NATS server runs in A (on 10.249.0.1; the embedded server's max_payload
and max_pending, a token); each
host has a bootstrap server of its own and a netmsg proxy joined to that
NATS server from its namespace. In B a peer process (``python -m
pymach.tools.bench_net peer``) checks in an echo port and a sink port on
the network, answers NATS requests and publishes, and serves a TCP echo
and sink on 10.249.0.2. The benchmark's main thread moves into A and
measures from there:

- a round trip of 128 B: a raw TCP socket echo (the baseline), NATS
  request/reply alone (nats-py), and pymach.request to the echo port
  looked up with pymach.net.look_up on host B;
- one-way 128 B messages: NATS publish alone (the baseline) against
  SendRight.send through the proxies, each sample ended by a request that
  the sink answers with what it counted (checked);
- out-of-line bandwidth: messages of ``ool`` bytes (16 MiB) through the
  proxies against the same bytes over raw TCP (the baseline).

Each round runs every case once, in an order rotated from round to round;
each figure is the median over the rounds. Where ``ip netns`` is refused
(not root, no CAP_SYS_ADMIN, or PYMACH_BENCH_NO_NETNS=1), everything runs
on 127.0.0.1 in this namespace, and the first block says so. Everything is
torn down at the end, also after a failure or Ctrl-C: processes stopped and
reaped, namespaces deleted, files removed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from .bench_ipc import BenchError, fail

SUBNET = "10.249.0"
NATS_PORT = 4222
TCP_PORT = 7000
SMALL = 128  # bytes of the small messages
OOL = 16 << 20
SYNC = 2  # id of the sink's "what did you count" request
ECHO, SINK = "bench.echo", "bench.sink"  # names on the network, and NATS subjects
STEP = 30.0  # the longest any start-up wait may take
_COUNT = struct.Struct("<QQ")  # messages, out-of-line bytes


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=STEP)
    if r.returncode:
        raise BenchError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def netns_refusal(off_switch: str = "PYMACH_BENCH_NO_NETNS") -> str | None:
    """None if this process may make network namespaces, else why not
    (``off_switch`` set to 1 in the environment: the caller's way to say
    no). Probes with a namespace made and deleted at once."""
    if os.environ.get(off_switch) == "1":
        return f"{off_switch}=1"
    if shutil.which("ip") is None:
        return "no ip command"
    probe = f"pmprobe{os.getpid()}"
    try:
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=STEP)
    except (OSError, subprocess.SubprocessError) as e:
        return f"ip netns add: {e}"
    if r.returncode:
        return f"ip netns add refused: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=STEP)
    return None


class Setup:
    """The two hosts, their servers and proxies, and the peer; torn down by
    close() (idempotent)."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.home_ns: int | None = None
        self.refused = netns_refusal()
        self.token = os.urandom(24).hex()
        if self.refused is None:
            tag = str(os.getpid())
            self.ns_a, self.ns_b = f"pmbA{tag}", f"pmbB{tag}"
            self.ip_a, self.ip_b = f"{SUBNET}.1", f"{SUBNET}.2"
        else:
            self.ns_a = self.ns_b = ""
            self.ip_a = self.ip_b = "127.0.0.1"
        self.nats_url = ""
        self.monitor_url = ""
        self.tcp_port = TCP_PORT

    def describe(self) -> str:
        if self.refused is None:
            return (f"hosts A and B: network namespaces {self.ns_a} and {self.ns_b}, a veth pair "
                    f"({self.ip_a}, {self.ip_b}); the NATS server in A; this process measures from A")
        return (f"hosts A and B: processes on 127.0.0.1 in this namespace (no network namespaces: "
                f"{self.refused}); the figures leave out the veth hop")

    def _netns(self) -> None:
        from pymach._linux import netns
        for ns in (self.ns_a, self.ns_b):
            _ip("netns", "add", ns)
            self.namespaces.append(ns)
        tag = str(os.getpid())
        va, vb = f"pmbva{tag}"[:15], f"pmbvb{tag}"[:15]
        _ip("link", "add", va, "type", "veth", "peer", "name", vb)
        for ns, dev, addr in ((self.ns_a, va, self.ip_a), (self.ns_b, vb, self.ip_b)):
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        self.home_ns = netns.current()
        netns.enter(self.ns_a)

    def _spawn(self, ns: str, argv: list[str], env: dict[str, str], log: str, ready: str = "") -> bytes:
        """Start ``argv`` (in namespace ``ns``). ``ready="fd"``: it is given
        ``--ready-fd FD`` and we wait for the "ready" it writes there;
        ``ready="stdout"``: we wait for a "ready" line on its stdout. The
        line is given back."""
        from pymach._linux import files
        cmd = ["ip", "netns", "exec", ns, *argv] if ns else argv
        r = w = -1
        if ready == "fd":
            r, w = files.pipe()
            cmd += ["--ready-fd", str(w)]
        try:
            with open(os.path.join(self.dir, log), "ab") as out:
                p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, pass_fds=(w,) if w >= 0 else (),
                                     stdout=subprocess.PIPE if ready == "stdout" else out, stderr=out)
            self.procs.append(p)
            if not ready:
                return b""
            timer = threading.Timer(STEP, p.kill)  # a start that hangs ends as a failure
            timer.start()
            try:
                if w >= 0:
                    files.close(w)
                    w = -1
                    line = files.read(r, 64)
                else:
                    assert p.stdout is not None
                    line = p.stdout.readline()
            finally:
                timer.cancel()
        finally:
            for fd in (r, w):
                if fd >= 0:
                    files.close(fd)
        if not line.startswith(b"ready"):
            with open(os.path.join(self.dir, log), "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace")
            fail(f"starting {' '.join(argv[:5])}", f"it did not start: {tail}")
        return line

    def _nats(self, exe: str) -> None:
        from pymach.netmsg import server
        conf = os.path.join(self.dir, "nats.conf")
        port = NATS_PORT if self.refused is None else -1
        with open(conf, "w") as f:
            f.write(f'listen: "{self.ip_a}:{port}"\nhttp: "{self.ip_a}:-1"\nports_file_dir: "{self.dir}"\n'
                    f'max_payload: {server.MAX_PAYLOAD}\n'
                    f'max_pending: {server.MAX_PENDING}\n'
                    f'authorization {{\n  token: "{self.token}"\n}}\n')
        os.chmod(conf, 0o600)
        self._spawn(self.ns_a, [exe, "-c", conf, "-l", os.path.join(self.dir, "nats.log")], dict(os.environ),
                    "nats.out")
        p = self.procs[-1]
        deadline = time.monotonic() + STEP
        while True:
            ports = [n for n in os.listdir(self.dir) if n.endswith(".ports")]
            if ports:
                import json
                with open(os.path.join(self.dir, ports[0])) as f:
                    urls = json.load(f)
                self.nats_url = urls["nats"][0]
                self.monitor_url = urls["monitoring"][0]
                break
            if p.poll() is not None or time.monotonic() > deadline:
                fail("nats-server", f"it did not start (see {self.dir}/nats.log)")
            time.sleep(0.02)

    def start(self, bootstrap_a: str) -> None:
        from pymach.netmsg import server
        try:
            exe = server.binary()
        except server.ServerError as e:
            fail("nats-server", str(e))
        if self.refused is None:
            self._netns()
        self._nats(exe)
        bootstrap_b = os.path.join(os.path.dirname(bootstrap_a), "b.sock")
        base = dict(os.environ, PYMACH_NO_AUTOSTART="1", PYMACH_NETMSG_TOKEN=self.token)
        env_a = dict(base, PYMACH_BOOTSTRAP_SOCKET=bootstrap_a)
        env_b = dict(base, PYMACH_BOOTSTRAP_SOCKET=bootstrap_b)
        self.env_b = env_b
        py = sys.executable
        self._spawn("", [py, "-m", "pymach", "bootstrap", "serve"], env_b, "bootstrap-b.log", "fd")
        for ns, host, env in ((self.ns_a, "benchA", env_a), (self.ns_b, "benchB", env_b)):
            self._spawn(ns, [py, "-m", "pymach", "netmsg", "serve", "--nats", self.nats_url, "--host", host,
                             ], env, f"proxy-{host}.log", "fd")
        line = self._spawn(self.ns_b, [py, "-m", "pymach.tools.bench_net", "peer", self.nats_url, self.ip_b,
                                       str(TCP_PORT if self.refused is None else 0)], env_b, "peer.log", "stdout")
        self.tcp_port = int(line.split()[1])

    def doomed(self, name: str) -> "subprocess.Popen[bytes]":
        """A task on host B that checks ``name`` in on the network and
        waits to be killed: its process (ready once this returns)."""
        self._spawn(self.ns_b, [sys.executable, "-m", "pymach.tools.bench_net", "doomed", name], self.env_b,
                    "doomed.log", "stdout")
        return self.procs[-1]

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                if p.stdin is not None:
                    p.stdin.close()
                p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stdout):
                if f is not None and not f.closed:
                    f.close()
        self.procs.clear()
        if self.home_ns is not None:
            from pymach._linux import netns
            netns.enter_fd(self.home_ns)
            netns.close(self.home_ns)
            self.home_ns = None
        for ns in reversed(self.namespaces):  # (the veth pair goes with them)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=STEP)
        self.namespaces.clear()


@contextmanager
def hosts() -> Iterator[Setup]:
    """Hosts A and B, up; this thread in A (when namespaces are allowed)
    with this process's bootstrap port on A's bootstrap server."""
    from pymach import bootstrap
    try:
        import nats  # noqa: F401
    except ImportError:
        fail("bench net", "nats-py is not installed: pip install 'pymach[net]'")
    with tempfile.TemporaryDirectory(prefix="pymach-bench-net-") as d, bootstrap.private_server() as bs:
        setup = Setup(d)
        try:
            setup.start(bs.path)
            yield setup
        finally:
            from pymach.mach import netname
            netname.name_server_port_disconnect()
            setup.close()


def _median_rounds(cases: list[tuple[str, Callable[[], float]]], repeat: int) -> list[tuple[str, float]]:
    """Each case (a function that runs one sample and gives its figure) once
    per round, in an order rotated from round to round; the medians."""
    got: dict[str, list[float]] = {label: [] for label, _ in cases}
    for r in range(repeat):
        k = r % len(cases)
        for label, fn in cases[k:] + cases[:k]:
            got[label].append(fn())
    return [(label, statistics.median(got[label])) for label, _ in cases]


def results(n: int, repeat: int, ool: int = OOL) -> list[dict[str, Any]]:
    """The three blocks of ``pymach bench net`` (see the module docstring)."""
    with hosts() as setup:
        return _measure(setup, n, repeat, ool)


def _measure(setup: Setup, n: int, repeat: int, ool: int) -> list[dict[str, Any]]:
    import nats

    from pymach import Message, net, request
    from pymach._linux import netns

    loop = asyncio.new_event_loop()
    nc: Any = None
    rights: list[Any] = []
    tcp = netns.tcp_connect(setup.ip_b, setup.tcp_port)
    try:
        nc = loop.run_until_complete(nats.connect(setup.nats_url, token=setup.token, max_reconnect_attempts=0))
        echo = net.look_up(ECHO, host="benchB")
        rights.append(echo)
        sink = net.look_up(SINK, host="benchB")
        rights.append(sink)
        small = bytes(range(SMALL))
        buf = bytearray(SMALL)
        view = memoryview(buf)
        ack = bytearray(1)
        tcp.sendall(b"e")

        def timed(fn: Callable[[], None], ops: int) -> float:
            t0 = time.perf_counter_ns()
            fn()
            return (time.perf_counter_ns() - t0) / ops

        def tcp_rtt() -> None:
            for _ in range(n):
                tcp.sendall(small)
                if not netns.recv_exactly(tcp, view) or buf != small:
                    fail("raw TCP echo", "the echo did not come back whole")

        async def nats_rtt_async() -> None:
            for _ in range(n):
                r = await nc.request(ECHO, small, timeout=10)
                if r.data != small:
                    fail("NATS request/reply", "the reply is not the request")

        def nats_rtt() -> None:
            loop.run_until_complete(nats_rtt_async())

        def mach_rtt() -> None:
            for _ in range(n):
                r = request(echo, small, id=1, timeout=10)
                ok = r.id == 101 and r.data == small
                r.release()
                if not ok:
                    fail("pymach.request through the proxies", f"reply {r.id} is not the echo")

        def sink_count(what: str, want: tuple[int, int]) -> None:
            r = request(sink, b"", id=SYNC, timeout=60)
            got = _COUNT.unpack(r.data)
            r.release()
            if got != want:
                fail(what, f"the sink counted {got}, not {want}")

        async def nats_pub_async() -> None:
            for _ in range(n):
                await nc.publish(SINK, small)
            r = await nc.request(SINK + ".sync", b"", timeout=60)
            if _COUNT.unpack(r.data) != (n, 0):
                fail("NATS publish", f"the sink counted {_COUNT.unpack(r.data)}, not {(n, 0)}")

        def nats_pub() -> None:
            loop.run_until_complete(nats_pub_async())

        def mach_send() -> None:
            for _ in range(n):
                sink.send(small, id=1, timeout=60)
            sink_count("SendRight.send through the proxies", (n, 0))

        big = os.urandom(ool)
        k = max(1, min(4, n // 100))  # out-of-line messages per sample
        head = struct.pack("<Q", ool * k)

        def tcp_bulk() -> None:
            bulk = netns.tcp_connect(setup.ip_b, setup.tcp_port, timeout=60)
            try:
                bulk.sendall(b"s" + head)
                for _ in range(k):
                    bulk.sendall(big)
                if not netns.recv_exactly(bulk, memoryview(ack)) or ack != b"k":
                    fail("raw TCP bulk", "the sink did not take it all")
            finally:
                bulk.close()

        def mach_ool() -> None:
            for _ in range(k):
                sink.send(Message(b"", id=1, ool=[big]), timeout=60)
            sink_count(f"out-of-line {ool >> 20} MiB through the proxies", (k, k * ool))

        # warm up: connections, proxies' imports, the peer's threads
        for fn in (tcp_rtt, nats_rtt, mach_rtt, nats_pub, mach_send):
            fn()
        mach_ool()
        tcp_bulk()

        rtt = _median_rounds([("raw TCP echo (baseline)", lambda: timed(tcp_rtt, n)),
                              ("NATS request/reply alone (nats-py)", lambda: timed(nats_rtt, n)),
                              ("pymach.request through the proxies", lambda: timed(mach_rtt, n))], repeat)
        one = _median_rounds([("NATS publish alone (nats-py, baseline)", lambda: timed(nats_pub, n)),
                              ("SendRight.send through the proxies", lambda: timed(mach_send, n))], repeat)
        bw = _median_rounds([("raw TCP (baseline)", lambda: timed(tcp_bulk, k)),
                             ("out-of-line through the proxies", lambda: timed(mach_ool, k))], repeat)

        def counted(fn: Callable[[], None], ops: int) -> tuple[float, float]:
            """NATS messages and bytes the server took in per operation."""
            before = _varz(setup.monitor_url)
            fn()
            after = _varz(setup.monitor_url)
            return (after["in_msgs"] - before["in_msgs"]) / ops, (after["in_bytes"] - before["in_bytes"]) / ops

        def dead_name_ms() -> float:
            """From a SIGKILL of a task on host B to the dead name of our
            right to its port (polled every millisecond)."""
            name = f"bench.doomed.{len(deaths)}"
            p = setup.doomed(name)
            right = net.look_up(name, host="benchB")
            try:
                t0 = time.perf_counter()
                p.kill()
                deadline = t0 + STEP
                while not right.dead:
                    if time.perf_counter() > deadline:
                        fail("a dead name across hosts", f"not within {STEP:.0f} s of the SIGKILL")
                    time.sleep(0.001)
                return (time.perf_counter() - t0) * 1000
            finally:
                right.close()
                p.wait(10)
                setup.procs.remove(p)

        deaths: list[float] = []
        for _ in range(max(3, repeat)):
            deaths.append(dead_name_ms())

        counts = [(c, counted(fn, ops)) for c, fn, ops in (
            ("NATS request/reply alone (nats-py)", nats_rtt, n),
            ("pymach.request through the proxies", mach_rtt, n),
            ("NATS publish alone (nats-py)", nats_pub, n),
            ("SendRight.send through the proxies", mach_send, n),
            (f"out-of-line {ool >> 20} MiB through the proxies", mach_ool, k))]
    finally:
        for right in rights:
            right.close()
        if nc is not None:
            loop.run_until_complete(nc.close())
        loop.close()
        tcp.close()
    tcp_ns, nats_ns = rtt[0][1], rtt[1][1]
    base_one = one[0][1]
    base_bw = bw[0][1]
    return [
        {"benchmark": f"round trip of {SMALL} B, host A to host B and back", "stat": "median", "net": True, "repeat": repeat,
         "ops": n, "note": setup.describe(),
         "rows": [{"case": c, "ns_per_op": round(ns, 1), "ratio": round(ns / tcp_ns, 2),
                   "ratio_nats": round(ns / nats_ns, 2)} for c, ns in rtt]},
        {"benchmark": f"one-way messages of {SMALL} B, host A to host B", "stat": "median", "net": True, "repeat": repeat,
         "ops": n, "rows": [{"case": c, "ns_per_op": round(ns, 1), "ratio": round(ns / base_one, 2),
                             "per_s": round(1e9 / ns)} for c, ns in one]},
        {"benchmark": f"out-of-line bandwidth, {ool >> 20} MiB messages, host A to host B (GB/s; ratio of "
                      "bandwidth)", "stat": "median", "net": True, "repeat": repeat, "ops": k,
         "rows": [{"case": c, "ns_per_op": round(ns, 1), "gbps": round(ool / ns, 3),
                   "ratio": round(base_bw / ns, 2)} for c, ns in bw]},
        {"benchmark": f"a dead name across hosts: from a SIGKILL of the port's task on host B to the dead name of "
                      f"host A's right (ms; {len(deaths)} tasks killed)", "stat": "once", "net": True,
         "ops": len(deaths), "rows": [{"case": "fastest", "ms": round(min(deaths), 1)},
                                      {"case": "median", "ms": round(statistics.median(deaths), 1)},
                                      {"case": "slowest", "ms": round(max(deaths), 1)}]},
        {"benchmark": "NATS messages per operation (the server's in_msgs and in_bytes, one more run of each case; "
                      "lease beats and a sample's closing sync request included)", "stat": "once", "net": True,
         "ops": n, "rows": [{"case": c, "msgs": round(m, 2), "bytes": round(b)} for c, (m, b) in counts]},
    ]


def _varz(url: str) -> dict[str, int]:
    """The NATS server's counters (its monitoring endpoint)."""
    import json
    import urllib.request
    with urllib.request.urlopen(url + "/varz", timeout=10) as r:
        v = json.load(r)
    return {"in_msgs": int(v["in_msgs"]), "in_bytes": int(v["in_bytes"])}


# -- the peer, on host B ---------------------------------------------------------------------------------------

def _echo_port(port: Any) -> None:
    from pymach import Message
    while True:
        try:
            m = port.receive()
        except OSError:
            return
        if m.reply is not None:
            m.reply.send(Message(m.data, id=m.id + 100), timeout=10)
            m.reply = None
        m.release()


def _sink_port(port: Any) -> None:
    from pymach import Message
    count = nbytes = 0
    while True:
        try:
            m = port.receive()
        except OSError:
            return
        if m.id == SYNC and m.reply is not None:
            m.reply.send(Message(_COUNT.pack(count, nbytes), id=SYNC + 100), timeout=10)
            m.reply = None
            count = nbytes = 0
        else:
            count += 1
            nbytes += sum(len(r) for r in m.ool)
        m.release()


def _tcp_conn(conn: Any) -> None:
    from pymach._linux import netns
    netns.nodelay(conn)
    try:
        mode = bytearray(1)
        if not netns.recv_exactly(conn, memoryview(mode)):
            return
        if mode == b"e":
            buf = bytearray(SMALL)
            view = memoryview(buf)
            while netns.recv_exactly(conn, view):
                conn.sendall(buf)
        else:
            head = bytearray(8)
            if not netns.recv_exactly(conn, memoryview(head)):
                return
            left = struct.unpack("<Q", head)[0]
            chunk = memoryview(bytearray(1 << 20))
            while left:
                k = conn.recv_into(chunk[:min(left, len(chunk))])
                if not k:
                    return
                left -= k
            conn.sendall(b"k")
    finally:
        conn.close()


def _tcp_server(listener: Any) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_tcp_conn, args=(conn,), daemon=True).start()


async def _nats_peer(url: str, token: str, stop: asyncio.Event) -> None:
    import nats
    nc = await nats.connect(url, token=token)
    counted = [0]

    async def on_echo(msg: Any) -> None:
        await msg.respond(msg.data)

    async def on_sink(msg: Any) -> None:
        counted[0] += 1

    async def on_sync(msg: Any) -> None:
        await msg.respond(_COUNT.pack(counted[0], 0))
        counted[0] = 0

    await nc.subscribe(ECHO, cb=on_echo)
    await nc.subscribe(SINK, cb=on_sink, pending_msgs_limit=-1)
    await nc.subscribe(SINK + ".sync", cb=on_sync)
    await nc.flush()
    ready.set()
    await stop.wait()
    await nc.close()


ready = threading.Event()


def peer(argv: list[str]) -> int:
    """Host B's side: ``peer NATS_URL TCP_HOST TCP_PORT`` (the token in
    $PYMACH_NETMSG_TOKEN, the bootstrap server in $PYMACH_BOOTSTRAP_SOCKET).
    Prints "ready" when all is up; exits when stdin closes."""
    from pymach import Port, net
    from pymach._linux import netns
    url, host, tcp_port = argv[0], argv[1], int(argv[2])
    token = os.environ.get("PYMACH_NETMSG_TOKEN", "")
    listener = netns.tcp_listen(host, tcp_port)
    threading.Thread(target=_tcp_server, args=(listener,), daemon=True).start()
    ports = []
    for name, serve in ((ECHO, _echo_port), (SINK, _sink_port)):
        port = Port()
        ports.append(port)
        with port.make_send() as right:
            net.check_in(name, right)
        threading.Thread(target=serve, args=(port,), daemon=True).start()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def wait_stdin(out: IO[str]) -> None:
        ready.wait(STEP)
        print(f"ready {listener.getsockname()[1]}", file=out, flush=True)
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_stdin, args=(sys.stdout,), daemon=True).start()
    try:
        loop.run_until_complete(_nats_peer(url, token, stop))
    finally:
        loop.close()
        listener.close()
    return 0


def doomed(name: str) -> int:
    """A task on host B for the dead-name measure: checks a port in on the
    network as ``name``, prints "ready", and waits (to be killed)."""
    from pymach import Port, net
    port = Port()
    with port.make_send() as right:
        net.check_in(name, right)
    print("ready", flush=True)
    sys.stdin.read()
    port.close()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["peer"]:
        sys.exit(peer(sys.argv[2:]))
    if sys.argv[1:2] == ["doomed"] and len(sys.argv) == 3:
        sys.exit(doomed(sys.argv[2]))
    sys.exit(f"usage: python -m {__spec__.name if __spec__ else 'bench_net'} "
             "peer NATS_URL TCP_HOST TCP_PORT | doomed NAME")
