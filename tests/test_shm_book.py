"""The book's shared-memory server and client (Figures 8-17 to 8-19), run as
real processes against a private bootstrap server: the exact output lines,
the C and Pythonic versions against each other, and what a SIGKILL leaves."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import pymach.bootstrap as bootstrap

SERVICE = "com.osxbook.SHMServer"
NAME_LINE = re.compile(r"recv_msg\.data\.name = 0x[0-9a-f]{6}$")


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    """A private bootstrap server; the environment that reaches it."""
    with bootstrap.private_server():
        yield dict(os.environ, PYTHONUNBUFFERED="1")


def _stop(p: subprocess.Popen) -> None:  # type: ignore[type-arg]
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _listed(env: dict[str, str]) -> bool:
    code = "import sys, pymach.bootstrap as b\ntry:\n    b.look_up(sys.argv[1]).close()\nexcept Exception:\n    sys.exit(1)\n"
    return subprocess.run([sys.executable, "-c", code, SERVICE], env=env, capture_output=True).returncode == 0


def start_server(env: dict[str, str], module: str) -> subprocess.Popen:  # type: ignore[type-arg]
    p = subprocess.Popen([sys.executable, "-m", module], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert p.stdout is not None
    first = p.stdout.readline()
    assert re.fullmatch(r"memory allocated at 0x[0-9a-f]+\n", first), first
    deadline = time.monotonic() + 20
    while not _listed(env):
        assert time.monotonic() < deadline, "the server never checked in"
        assert p.poll() is None, p.stdout.read()
        time.sleep(0.05)
    return p


def client(env: dict[str, str], module: str, *args: str) -> list[str]:
    p = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stderr == ""
    return p.stdout.splitlines()


@pytest.mark.parametrize("server_module", ["pymach.examples.shm_ipc_server", "pymach.examples.shm_server_pythonic"])
def test_three_c_clients_share_the_servers_page(env: dict[str, str], server_module: str) -> None:
    server = start_server(env, server_module)
    try:
        c = "pymach.examples.shm_ipc_client"
        first = client(env, c)
        assert NAME_LINE.match(first[0]) and first[1:] == ["Hello, Mach!"]
        second = client(env, c, "Hello, Linux!")
        assert NAME_LINE.match(second[0])
        assert second[1:] == ["Hello, Mach!", 'writing "Hello, Linux!" to shared memory']
        third = client(env, c)
        assert NAME_LINE.match(third[0]) and third[1:] == ["Hello, Linux!"]
    finally:
        _stop(server)
        assert server.stdout is not None
        server.stdout.close()


@pytest.mark.parametrize("server_module", ["pymach.examples.shm_ipc_server", "pymach.examples.shm_server_pythonic"])
def test_pythonic_client_against_both_servers(env: dict[str, str], server_module: str) -> None:
    server = start_server(env, server_module)
    try:
        assert client(env, "pymach.examples.shm_client_pythonic", "from Python") == [
            "Hello, Mach!", 'writing "from Python" to shared memory']
        out = client(env, "pymach.examples.shm_ipc_client")
        assert out[1:] == ["from Python"]
    finally:
        _stop(server)
        assert server.stdout is not None
        server.stdout.close()


def test_a_killed_server_frees_the_name_and_a_new_one_serves(env: dict[str, str]) -> None:
    server = start_server(env, "pymach.examples.shm_ipc_server")
    client(env, "pymach.examples.shm_ipc_client", "written before the kill")
    server.send_signal(signal.SIGKILL)
    server.wait()
    assert server.stdout is not None
    server.stdout.close()
    # the bootstrap server learns of the death from a dead-name notification
    deadline = time.monotonic() + 20
    while _listed(env):
        assert time.monotonic() < deadline, "the dead service is still listed"
        time.sleep(0.05)
    p = subprocess.run([sys.executable, "-m", "pymach.examples.shm_ipc_client"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "bootstrap_look_up" in p.stderr
    # a new server checks in under the same name, with a page of its own
    server = start_server(env, "pymach.examples.shm_ipc_server")
    try:
        assert client(env, "pymach.examples.shm_ipc_client")[1:] == ["Hello, Mach!"]
    finally:
        _stop(server)
        assert server.stdout is not None
        server.stdout.close()


def test_bench_shm_runs(env: dict[str, str]) -> None:
    import json
    p = subprocess.run([sys.executable, "-m", "pymach", "bench", "shm", "-n", "50", "--repeat", "1",
                        "--ool-mib", "8", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    names = [r["benchmark"] for r in out["results"]]
    assert names == ["bootstrap_look_up of a registered name", "map and first touch of 8 MiB (one write per page)"]
    for r in out["results"]:
        assert all(row["ns_per_op"] > 0 for row in r["rows"])
