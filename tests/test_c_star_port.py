"""The book's three C programs (Mac OS X Internals, Figures 8-15 to 8-19),
ported naively, line by line, with nothing of pymach but
``from pymach.mach import *`` (tests/cport/), run against each other as
real processes, against a private bootstrap server, printing the book's
output."""

from __future__ import annotations

import ast
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import pymach.bootstrap as bootstrap

CPORT = pathlib.Path(__file__).parent / "cport"
PROGRAMS = ["vm_protect", "vm_rw_target", "vm_rw_master", "shm_ipc_common", "shm_ipc_server", "shm_ipc_client"]
TIMEOUT = 60
NAME_LINE = re.compile(r"recv_msg\.data\.name = 0x[0-9a-f]{6}$")
TARGET_LINE = re.compile(r"pid=(\d+), address=(0x[0-9a-f]+)$")


def _env(**more: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **more)
    env.pop("PYMACH_INHERIT_PORTS", None)
    return env


def start(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(CPORT / f"{name}.py"), *args], env=env or _env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CPORT / f"{name}.py"), *args], env=env or _env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT)


def stop(p: subprocess.Popen[str]) -> tuple[str, str]:
    if p.poll() is None:
        p.kill()
    return p.communicate(timeout=TIMEOUT)


@pytest.mark.parametrize("name", PROGRAMS)
def test_a_port_uses_nothing_of_pymach_but_the_star_import(name: str) -> None:
    """Only the standard library, the program's own header, and
    ``from pymach.mach import *``."""
    tree = ast.parse((CPORT / f"{name}.py").read_text())
    stars = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(a.name in ("sys", "os", "ctypes") for a in node.names), ast.unparse(node)
        elif isinstance(node, ast.ImportFrom):
            if node.module == "pymach.mach":
                assert [a.name for a in node.names] == ["*"], ast.unparse(node)
                stars += 1
            else:
                assert node.module in ("ctypes", "shm_ipc_common"), ast.unparse(node)
    assert stars == 1


# -- Figure 8-15: vm_protect ------------------------------------------------------------------

def test_vm_protect_prints_hello() -> None:
    p = run("vm_protect")
    assert (p.returncode, p.stdout, p.stderr) == (0, "Hello, Mach!\n", "")


def test_vm_protect_with_an_argument_dies_of_the_fault() -> None:
    p = run("vm_protect", "VM_PROT_NONE")
    # the book's "bus error": the MMU refuses the read and the kernel sends a signal
    assert p.returncode in (-signal.SIGSEGV, -signal.SIGBUS), (p.returncode, p.stdout, p.stderr)
    assert "Hello" not in p.stdout


# -- Figure 8-16: vm_rw_target and vm_rw_master --------------------------------------------------

def test_vm_rw_master_reads_A_and_writes_B_and_the_target_exits() -> None:
    t = start("vm_rw_target")
    try:
        assert t.stdout is not None
        line = t.stdout.readline().rstrip("\n")
        m = TARGET_LINE.match(line)
        assert m, (line, stop(t))
        assert int(m.group(1)) == t.pid
        addr = m.group(2)
        assert t.poll() is None  # spinning on its page
        p = run("vm_rw_master", m.group(1), addr)
        assert (p.returncode, p.stderr) == (0, "")
        assert p.stdout.splitlines() == [
            f"reading address {addr} in target task",
            f"read 4096 bytes from address {addr} in target task, first byte=A",
        ]
        out, err = t.communicate(timeout=TIMEOUT)  # it saw the B and left its loop
        assert (t.returncode, out, err) == (0, "", "")
    finally:
        stop(t)


# -- Figures 8-17 to 8-19: shm_ipc_server and shm_ipc_client ----------------------------------------

@pytest.fixture
def boot_env() -> Iterator[dict[str, str]]:
    """A private bootstrap server; the environment that reaches it."""
    with bootstrap.private_server():
        yield _env()


LISTED = ("import sys\nfrom pymach.mach import *\np = mach_port_t()\n"
          "sys.exit(bootstrap_look_up(bootstrap_port, 'com.osxbook.SHMServer', byref(p)))\n")


def _checked_in(env: dict[str, str]) -> bool:
    return subprocess.run([sys.executable, "-c", LISTED], env=env, capture_output=True,
                          timeout=TIMEOUT).returncode == 0


def test_the_shm_client_and_server_share_a_page(boot_env: dict[str, str]) -> None:
    server = start("shm_ipc_server", env=boot_env)
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        assert re.fullmatch(r"memory allocated at 0x[0-9a-f]+\n", first), (first, stop(server))
        deadline = time.monotonic() + 20
        while not _checked_in(boot_env):
            assert server.poll() is None, stop(server)
            assert time.monotonic() < deadline, "the server never checked in"
            time.sleep(0.05)

        def client(*args: str) -> list[str]:
            p = run("shm_ipc_client", *args, env=boot_env)
            assert (p.returncode, p.stderr) == (0, ""), (p.returncode, p.stdout, p.stderr)
            lines = p.stdout.splitlines()
            assert NAME_LINE.match(lines[0]), lines
            return lines[1:]

        assert client() == ["Hello, Mach!"]
        assert client("abcdefghijklmnopqrstuvwxyz") == [
            "Hello, Mach!", 'writing "abcdefghijklmnopqrstuvwxyz" to shared memory']
        assert client() == ["abcdefghijklmnopqrstuvwxyz"]
        assert server.poll() is None  # for (;;)
    finally:
        stop(server)


def test_the_shm_client_without_its_server_fails_as_on_macos(boot_env: dict[str, str]) -> None:
    """mach_error has no text for BOOTSTRAP_UNKNOWN_SERVICE (1102), and
    exit(kr) keeps its low byte."""
    p = run("shm_ipc_client", env=boot_env)
    assert (p.returncode, p.stdout) == (1102 & 0xFF, "")
    assert p.stderr == "bootstrap_look_up: (os/kern) unknown error code (44e)\n"
