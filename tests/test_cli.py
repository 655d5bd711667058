"""The pymach command line, run as real processes: numbers read as C's
strtoul(s, NULL, 0) reads them, errors that name the argument, what is said
of a process that does not exist or is a kernel thread, ``--version``, and
the Pythonic shared-memory client and server when the other side is
missing (on a private bootstrap socket, so nothing of the user's is
touched)."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pymach
import pymach.bootstrap as bootstrap
from machutil import private_bootstrap

SRC = Path(pymach.__file__).resolve().parent.parent
ULONG_MAX = (1 << 64) - 1
PF_KTHREAD = 0x00200000  # include/linux/sched.h
SERVICE = "com.osxbook.SHMServer"
NOT_RUNNING = (f"shm_client_pythonic: {SERVICE} is not running; start it with: "
               "python -m pymach.examples.shm_server_pythonic &\n")


def env_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60,
                          env=env or env_with(), stdin=subprocess.DEVNULL)


def pymach_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return run("-m", "pymach", *args)


def stack_of(pid: int) -> int:
    with open(f"/proc/{pid}/maps") as f:
        (line,) = [ln for ln in f if ln.rstrip().endswith("[stack]")]
    return int(line.split("-")[0], 16)


def gone_pid() -> int:
    """A pid that names no process: that of a child that has been reaped."""
    p = subprocess.Popen(["true"])
    p.wait(10)
    assert not os.path.exists(f"/proc/{p.pid}")
    return p.pid


def kernel_thread() -> tuple[int, str]:
    """A kernel thread's pid and name (pid 2, kthreadd, when it is one)."""
    pids = sorted(int(d) for d in os.listdir("/proc") if d.isdigit())
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[6]) & PF_KTHREAD:
            return pid, stat[stat.index("(") + 1:stat.rindex(")")]
    pytest.skip("no kernel thread is visible here (a pid namespace)")


# -- numbers: strtoul(s, NULL, 0) --------------------------------------------------------------------

GOOD = [("0x10", 16), ("0X1f", 31), ("010", 8), ("10", 10), ("0", 0), ("00", 0), ("0x0", 0), (" 12", 12),
        ("\t\n+0x10", 16), ("+5", 5), ("0777", 511), ("0xFFFFFFFFFFFFFFFF", ULONG_MAX),
        ("18446744073709551615", ULONG_MAX), ("0" * 40 + "1", 1), ("0x" + "0" * 40 + "1f", 31)]
BAD = ["1e3", "7f00", "08", "0x", "0x-1", "0x 1", "", " ", "+", "++1", "10 ", "1_0", "0b101", "1.0", "0o17",
       "\u0661\u0662", "ten"]


def libc_strtoul(text: str) -> tuple[int, int, int]:
    """glibc's strtoul(text, &end, 0): (value, characters read, errno)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.strtoul.restype = ctypes.c_ulong
    libc.strtoul.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]
    raw = ctypes.create_string_buffer(text.encode())
    end = ctypes.c_char_p()
    ctypes.set_errno(0)
    value = libc.strtoul(ctypes.cast(raw, ctypes.c_char_p), ctypes.byref(end), 0)
    used = ctypes.cast(end, ctypes.c_void_p).value - ctypes.addressof(raw)  # type: ignore[operator]
    return value, used, ctypes.get_errno()


@pytest.mark.parametrize("text,value", GOOD)
def test_strtoul_reads_what_c_reads(text: str, value: int) -> None:
    from pymach.tools import strtoul
    assert libc_strtoul(text) == (value, len(text.encode()), 0)  # the table is C's
    assert strtoul(text) == value


@pytest.mark.parametrize("text", BAD)
def test_strtoul_refuses_what_c_stops_short_of(text: str) -> None:
    from pymach.tools import strtoul
    _value, used, _err = libc_strtoul(text)
    assert used < len(text.encode()) or text == ""  # C stops before the end
    with pytest.raises(ValueError, match=re.escape(f"invalid number {text!r}")):
        strtoul(text)


def test_strtoul_refuses_a_sign_and_a_value_above_ulong_max() -> None:
    from pymach.tools import strtoul
    # C takes "-1" as ULONG_MAX: a command line says no
    assert libc_strtoul("-1") == (ULONG_MAX, 2, 0)
    with pytest.raises(ValueError, match="negative"):
        strtoul("-1")
    for big in ("18446744073709551616", "0x10000000000000000", "02" + "0" * 21, "9" * 5000):
        assert libc_strtoul(big) == (ULONG_MAX, len(big), errno.ERANGE)
        with pytest.raises(OverflowError):
            strtoul(big)


def test_vm_read_takes_every_base(sleeper: subprocess.Popen[bytes]) -> None:
    lo = stack_of(sleeper.pid)
    for addr in (hex(lo), str(lo), "0" + oct(lo)[2:]):
        for length in ("0x20", "32", "040"):
            r = pymach_cmd("vm", "read", str(sleeper.pid), addr, length)
            assert r.returncode == 0, (addr, length, r.stderr)
            assert [ln[:16] for ln in r.stdout.splitlines()] == [f"{lo:016x}", f"{lo + 16:016x}"], (addr, length)


@pytest.mark.parametrize("args,message", [
    (["vm", "read", "PID", "0x1000", "1e3"], "pymach vm read: argument LEN: invalid number '1e3'"),
    (["vm", "read", "PID", "7f00", "16"], "pymach vm read: argument ADDR: invalid number '7f00'"),
    (["vm", "read", "12ab", "0x1000", "16"], "pymach vm read: argument PID: invalid number '12ab'"),
    (["vm", "read", "PID", "0x1000", "-1"], "pymach vm read: argument LEN: invalid number '-1': negative"),
    (["vm", "write", "PID", "0x", "00"], "pymach vm write: argument ADDR: invalid number '0x'"),
    (["vm", "write", "PID", "0x1000", "zz"], "pymach vm write: argument HEX: not pairs of hex digits: 'zz'"),
    (["vmmap", "1e3"], "pymach vmmap: argument PID: invalid number '1e3'"),
    (["lsmp", "0x"], "pymach lsmp: argument PID: invalid number '0x'"),
    (["bootstrap", "serve", "--ready-fd", "three"], "pymach bootstrap serve: argument --ready-fd: invalid number 'three'"),
    (["bootstrap", "serve", "--max-names", "1k"], "pymach bootstrap serve: argument --max-names: invalid number '1k'"),
])
def test_a_bad_number_names_its_argument(sleeper: subprocess.Popen[bytes], args: list[str], message: str) -> None:
    r = pymach_cmd(*[str(sleeper.pid) if a == "PID" else a for a in args])
    assert r.returncode == 2 and r.stdout == ""
    usage, said = r.stderr.splitlines()[0], r.stderr.splitlines()[-1]
    assert usage.startswith("usage: ") and said == message, r.stderr


@pytest.mark.parametrize("args,message", [
    (["vmmap", "99999999999999999999"],
     "pymach vmmap: argument PID: 99999999999999999999 is too large for a pid (at most 2147483647)"),
    (["vmmap", "2147483648"], "pymach vmmap: argument PID: 2147483648 is too large for a pid (at most 2147483647)"),
    (["vmmap", "9" * 5000], f"pymach vmmap: argument PID: {'9' * 24}... is too large for a pid (at most 2147483647)"),
    (["lsmp", "0x80000000"], "pymach lsmp: argument PID: 0x80000000 is too large for a pid (at most 2147483647)"),
    (["vm", "read", "99999999999999999999", "0", "1"],
     "pymach vm read: argument PID: 99999999999999999999 is too large for a pid (at most 2147483647)"),
    (["vm", "read", "1", "0x10000000000000000", "1"],
     "pymach vm read: argument ADDR: 0x10000000000000000 is too large for an address (at most 0xffffffffffffffff)"),
    (["vm", "read", "1", "0", "18446744073709551616"],
     "pymach vm read: argument LEN: 18446744073709551616 is too large for a size (at most 0xffffffffffffffff)"),
])
def test_a_number_too_large_is_said_without_a_traceback(args: list[str], message: str) -> None:
    r = pymach_cmd(*args)
    assert r.returncode == 2 and r.stdout == ""
    assert "Traceback" not in r.stderr and r.stderr.splitlines()[-1] == message, r.stderr


# -- what is said of the process ---------------------------------------------------------------------

@pytest.mark.parametrize("args,prefix", [
    (["vm", "read", "PID", "0x1000", "16"], "pymach vm: process PID: "),
    (["vm", "write", "PID", "0x1000", "00"], "pymach vm: process PID: "),
    (["vmmap", "PID"], "pymach vmmap: cannot examine process PID: "),
    (["lsmp", "PID"], "pymach lsmp: process PID: "),
])
def test_a_process_that_does_not_exist(args: list[str], prefix: str) -> None:
    pid = str(gone_pid())
    r = pymach_cmd(*[pid if a == "PID" else a for a in args])
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == prefix.replace("PID", pid) + "no such process\n"


@pytest.mark.parametrize("args,prefix", [
    (["vm", "read", "PID", "0x1000", "16"], "pymach vm: process PID: "),
    (["vm", "write", "PID", "0x1000", "00"], "pymach vm: process PID: "),
    (["vmmap", "PID"], "pymach vmmap: cannot examine process PID: "),
    (["lsmp", "PID"], "pymach lsmp: process PID: "),
])
def test_a_kernel_thread_has_no_user_memory(args: list[str], prefix: str) -> None:
    pid, name = kernel_thread()
    r = pymach_cmd(*[str(pid) if a == "PID" else a for a in args])
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == prefix.replace("PID", str(pid)) + f"{name} is a kernel thread, with no user memory\n"


@pytest.mark.parametrize("args,prefix", [
    (["vm", "read", "PID", "0x1000", "16"], "pymach vm: process PID: "),
    (["vm", "write", "PID", "0x1000", "00"], "pymach vm: process PID: "),
    (["vmmap", "PID"], "pymach vmmap: cannot examine process PID: "),
    (["lsmp", "PID"], "pymach lsmp: process PID: "),
])
def test_a_zombie_has_exited(args: list[str], prefix: str) -> None:
    p = subprocess.Popen(["true"])  # not waited for: a zombie once it exits
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "true never exited"
            time.sleep(0.01)
        r = pymach_cmd(*[str(p.pid) if a == "PID" else a for a in args])
    finally:
        p.wait(10)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (prefix.replace("PID", str(p.pid))
                        + "true has exited (a zombie that its parent has not reaped), with no memory left\n")


# -- --version ---------------------------------------------------------------------------------------

def _project_version(root: Path) -> str:
    import tomllib
    with open(root / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def test_version_says_pymach_python_and_the_kernel() -> None:
    r = pymach_cmd("--version")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3, r.stdout
    # the checkout's pyproject.toml: installed or run from src/, the version is the same
    assert lines[0].startswith(f"pymach {_project_version(Path(__file__).resolve().parent.parent)} from {SRC / 'pymach'}")
    assert lines[1] == f"Python {platform.python_version()} ({platform.python_implementation()}, {sys.executable})"
    u = os.uname()
    assert lines[2] == f"{u.sysname} {u.release} {u.machine}"


def test_version_of_a_source_tree_without_metadata(tmp_path: Path) -> None:
    # a copy of the source tree whose pyproject.toml says 9.8.7, run with
    # no site-packages (-S): no installed metadata can be found
    shutil.copytree(SRC / "pymach", tmp_path / "src" / "pymach", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "pymach"\nversion = "9.8.7"\n')
    r = run("-S", "-m", "pymach", "--version", env=env_with(PYTHONPATH=str(tmp_path / "src")))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == (f"pymach 9.8.7 from {tmp_path / 'src' / 'pymach'} "
                                        "(source tree: the version of pyproject.toml)")


# -- the Pythonic shared-memory client and server without their peer --------------------------------

def _peer_pid(path: Path) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(str(path))
        return int(struct.unpack("iII", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0])


def _stop(pid: int) -> None:
    """Stop a process that is not our child, and wait until it is gone."""
    fd = os.pidfd_open(pid)
    try:
        os.kill(pid, 15)
        assert select.select([fd], [], [], 20)[0], f"process {pid} did not exit"
    finally:
        os.close(fd)


def test_client_with_no_bootstrap_server_and_no_autostart() -> None:
    with bootstrap.private_server(serve=False) as private:
        r = run("-m", "pymach.examples.shm_client_pythonic", env=env_with())
        assert (r.returncode, r.stdout) == (1, "")
        (line,) = r.stderr.splitlines()
        assert line.startswith(f"shm_client_pythonic: {SERVICE} is not running, nor is a bootstrap server (")
        assert private.path in line and "PYMACH_NO_AUTOSTART" in line
        assert line.endswith("start both with: pymach bootstrap serve & python -m pymach.examples.shm_server_pythonic &")
        assert not os.path.exists(private.path)  # nothing was started


def test_client_with_a_bootstrap_server_and_no_service() -> None:
    with private_bootstrap(PYTHONPATH=str(SRC)):
        r = run("-m", "pymach.examples.shm_client_pythonic", env=env_with())
    assert (r.returncode, r.stdout, r.stderr) == (1, "", NOT_RUNNING)


def test_client_when_the_bootstrap_server_is_autostarted() -> None:
    with bootstrap.private_server(serve=False) as private:
        path = Path(private.path)
        env = env_with()
        env.pop("PYMACH_NO_AUTOSTART", None)
        try:
            r = run("-m", "pymach.examples.shm_client_pythonic", env=env)
            assert path.exists()  # a server was started, and knows no such service
        finally:
            if path.exists():
                _stop(_peer_pid(path))
    assert (r.returncode, r.stdout, r.stderr) == (1, "", NOT_RUNNING)


def test_a_second_server_says_the_name_is_taken() -> None:
    with private_bootstrap(PYTHONPATH=str(SRC)):
        env = env_with()
        first = subprocess.Popen([sys.executable, "-m", "pymach.examples.shm_server_pythonic"], env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        try:
            assert first.stdout is not None
            assert first.stdout.readline().startswith("memory allocated at 0x")
            deadline = time.monotonic() + 20
            while run("-m", "pymach", "bootstrap", "status", SERVICE, env=env).stdout != f"{SERVICE}: active\n":
                assert first.poll() is None and time.monotonic() < deadline, "the first server never checked in"
                time.sleep(0.05)
            r = run("-m", "pymach.examples.shm_server_pythonic", env=env)
        finally:
            first.terminate()
            first.wait(20)
            assert first.stdout is not None
            first.stdout.close()
    assert r.returncode == 1 and r.stdout.startswith("memory allocated at 0x")
    (line,) = r.stderr.splitlines()
    assert line.startswith(f"shm_server_pythonic: cannot serve {SERVICE}: bootstrap_create_service(")
    assert "Traceback" not in r.stderr
