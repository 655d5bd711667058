"""``bootstrap_port`` as a C program has it: a name that
``from pymach.mach import *`` gives, that works on first use, and that
task_get_bootstrap_port / task_get_special_port(TASK_BOOTSTRAP_PORT) give
too (osfmk/kern/ipc_tt.c: task_get_special_port_internal copies a send
right of itk_bootstrap out to the caller's space, where it joins the name
the space already has for that port).

The programs run as real processes against a private bootstrap server
(bootstrap.private_server(): PYMACH_BOOTSTRAP_SOCKET in a directory of
the test's own, autostart off; the test that restarts the server runs
machutil's Server on that socket): each starts
with no bootstrap port connected, as a C program's main() does, and uses
nothing but the star import and ctypes. Every blocking call has a timeout,
and so has every process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

import pymach.bootstrap as bootstrap
import pymach.mach
from pymach.lowlevel import SELF

from machutil import Server, server, sockdir

__all__ = ["server", "sockdir"]  # fixtures, used by name

TIMEOUT = 60
UNKNOWN = pymach.mach.BOOTSTRAP_UNKNOWN_SERVICE

# the message the programs exchange, as a C program declares it
MSG = r'''
class msg_t(Structure):
    _pack_ = 4
    _fields_ = [("header", mach_msg_header_t), ("text", c_char * 16)]

class msg_r_t(Structure):
    _pack_ = 4
    _fields_ = [("header", mach_msg_header_t), ("text", c_char * 16), ("trailer", mach_msg_trailer_t)]

def send_text(dest, text):
    m = msg_t()
    m.header.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, 0)
    m.header.msgh_size = sizeof(m)
    m.header.msgh_remote_port = dest
    m.header.msgh_id = 500
    m.text = text
    return mach_msg(m.header, MACH_SEND_MSG | MACH_SEND_TIMEOUT, sizeof(m), 0, MACH_PORT_NULL, 20000, MACH_PORT_NULL)

def receive_text(port):
    m = msg_r_t()
    kr = mach_msg(m.header, MACH_RCV_MSG | MACH_RCV_TIMEOUT, 0, sizeof(m), port, 20000, MACH_PORT_NULL)
    return kr, m.text.decode()

def refs(name):
    r = mach_port_urefs_t()
    kr = mach_port_get_refs(mach_task_self(), name, MACH_PORT_RIGHT_SEND, byref(r))
    return kr, r.value
'''


def _env() -> dict[str, str]:
    """Our environment (inside a private_server() block: the one that
    reaches its server), without the fds we inherited."""
    env = dict(os.environ)
    env.pop("PYMACH_INHERIT_PORTS", None)
    return env


@pytest.fixture
def boot() -> Iterator[dict[str, str]]:
    """A private bootstrap server; the environment that reaches it, with
    autostart off."""
    with bootstrap.private_server():
        yield _env()


def program(body: str) -> str:
    return "from pymach.mach import *\n" + MSG + body


def run(body: str, env: dict[str, str], *args: str) -> Any:
    """Run a program; what it printed last, as JSON."""
    p = subprocess.run([sys.executable, "-c", program(body), *args], env=env, capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout.splitlines()[-1])


# -- the name ---------------------------------------------------------------------------------

def test_the_star_import_gives_bootstrap_port_a_real_name() -> None:
    ns: dict[str, Any] = {}
    exec("from pymach.mach import *", ns)  # pylint: disable=exec-used
    name = ns.get("bootstrap_port")
    assert isinstance(name, int), sorted(k for k in ns if "bootstrap" in k)
    assert name == pymach.mach.bootstrap_port
    # a name as XNU makes them (index << 8 | generation), none of the others
    assert name >> 8 and name & 3 == 3, hex(name)
    assert name not in (pymach.mach.MACH_PORT_NULL, pymach.mach.MACH_PORT_DEAD, SELF.task_name, SELF.host_name)


NO_WORK = r'''
import json, os, sys

def fds():
    d = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        return sorted(int(n) for n in os.listdir(d) if int(n) != d)
    finally:
        os.close(d)

import pymach.mach
before = fds()
exec("from pymach.mach import *")
names = [bootstrap_port, pymach.mach.bootstrap_port]
print(json.dumps({"before": before, "after": fds(), "names": names}), flush=True)
sys.stdin.readline()  # the test looks for a server, then lets us go on
p = mach_port_t()
kr = bootstrap_look_up(bootstrap_port, "com.example.nobody", byref(p))
print(json.dumps({"kr": kr, "used": fds()}), flush=True)
'''


def _servers_for(path: str) -> list[int]:
    """The pids of the bootstrap servers started for ``path``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmd and f"PYMACH_BOOTSTRAP_SOCKET={path}".encode() in env:
            found.append(int(pid))
    return found


def _stop_servers_for(path: str) -> None:
    for pid in _servers_for(path):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while _servers_for(path):
        assert time.monotonic() < deadline, "the autostarted server did not stop"
        time.sleep(0.02)


def test_the_star_import_connects_nothing_and_starts_no_server() -> None:
    """Autostart on, no server: the import and every read of the name
    leave the fds as they were and start nothing; the first use starts
    the server (so the check above could have seen one)."""
    with bootstrap.private_server(serve=False) as private:
        path = private.path
        env = dict(_env(), PYTHONUNBUFFERED="1")
        env.pop("PYMACH_NO_AUTOSTART", None)
        p = subprocess.Popen([sys.executable, "-c", program(NO_WORK)], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert p.stdout is not None and p.stdin is not None
            line = p.stdout.readline()
            assert line, p.communicate(timeout=TIMEOUT)
            first = json.loads(line)
            assert first["names"][0] == first["names"][1] == pymach.mach.bootstrap_port
            assert first["after"] == first["before"]
            assert not os.path.exists(path) and _servers_for(path) == []
            p.stdin.write("go\n")
            p.stdin.flush()
            out, err = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, err
            second = json.loads(out.splitlines()[-1])
            assert second["kr"] == UNKNOWN  # the first use started a server and asked it
            assert len(second["used"]) > len(first["after"])
            assert len(_servers_for(path)) == 1
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
            _stop_servers_for(path)


# -- the routines on it --------------------------------------------------------------------------

SERVE = r'''
import sys
port = mach_port_t()
kr = bootstrap_check_in(bootstrap_port, "com.example.star", byref(port))
if kr != BOOTSTRAP_SUCCESS:
    mach_error("bootstrap_check_in:", kr)
    sys.exit(1)
print("checked in", flush=True)
print(json.dumps(receive_text(port)))
'''

LOOK_UP = r'''
import json
server = mach_port_t()
kr = bootstrap_look_up(bootstrap_port, "com.example.star", byref(server))
print(json.dumps([kr, send_text(server, b"hello")]))
'''


def test_check_in_and_look_up_through_bootstrap_port(boot: dict[str, str]) -> None:
    s = subprocess.Popen([sys.executable, "-c", program("import json\n" + SERVE)], env=boot,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert s.stdout is not None
        assert s.stdout.readline() == "checked in\n", s.communicate(timeout=TIMEOUT)
        assert run(LOOK_UP, boot) == [0, 0]
        out, err = s.communicate(timeout=TIMEOUT)
        assert s.returncode == 0, err
        assert json.loads(out) == [0, "hello"]
    finally:
        if s.poll() is None:
            s.kill()
            s.communicate()


GET = r'''
import json, sys
p, q, s = mach_port_t(), mach_port_t(), mach_port_t()
out = []
if sys.argv[1] == "after":
    out.append(bootstrap_look_up(bootstrap_port, "com.example.nobody", byref(s)))
out.append(task_get_bootstrap_port(mach_task_self(), byref(p)))
out.append(task_get_special_port(mach_task_self(), TASK_BOOTSTRAP_PORT, byref(q)))
out += [p.value == bootstrap_port, q.value == bootstrap_port, refs(bootstrap_port)]
out += [bootstrap_look_up(name, "com.example.nobody", byref(s)) for name in (p.value, q, bootstrap_port)]
out += [mach_port_deallocate(mach_task_self(), p), mach_port_deallocate(mach_task_self(), q), refs(bootstrap_port)]
print(json.dumps(out))
'''


@pytest.mark.parametrize("when", ["before", "after"])
def test_task_get_bootstrap_port_gives_bootstrap_port(boot: dict[str, str], when: str) -> None:
    """Before and after the first use of bootstrap_port: the same name, one
    more user reference each time (XNU's copyout), and it works."""
    out = run(GET, boot, when)
    if when == "after":
        assert out.pop(0) == UNKNOWN
    assert out == [0, 0, True, True, [0, 3], UNKNOWN, UNKNOWN, UNKNOWN, 0, 0, [0, 1]]


THREADS = r'''
import json, threading
names, types = mach_port_array_t(), mach_port_type_array_t()
n, t = mach_msg_type_number_t(), mach_msg_type_number_t()
go = threading.Barrier(8)
codes = []

def first_use():
    s = mach_port_t()
    go.wait(20)
    codes.append(bootstrap_look_up(bootstrap_port, "com.example.nobody", byref(s)))

threads = [threading.Thread(target=first_use) for _ in range(8)]
for th in threads:
    th.start()
for th in threads:
    th.join(30)
assert not any(th.is_alive() for th in threads)
kr = mach_port_names(mach_task_self(), byref(names), byref(n), byref(types), byref(t))
sends = [names[i] for i in range(n.value) if types[i] & MACH_PORT_TYPE_SEND and not types[i] & MACH_PORT_TYPE_RECEIVE]
sends = [x for x in sends if x != mach_task_self() and x != mach_host_self()]
print(json.dumps([codes, kr, sends == [bootstrap_port], refs(bootstrap_port)]))
'''


def test_threads_using_it_first_at_once_share_one_connection(boot: dict[str, str]) -> None:
    assert run(THREADS, boot) == [[UNKNOWN] * 8, 0, True, [0, 1]]


# -- children ---------------------------------------------------------------------------------

FORK = r'''
import json, os, sys
port = mach_port_t()
used = sys.argv[1] == "used"
if used:
    assert bootstrap_check_in(bootstrap_port, "com.example.forked", byref(port)) == 0
pid = os.fork()
if pid == 0:
    code = 1
    try:
        if used:
            # only what the child inherited reaches the server now
            os.environ["PYMACH_BOOTSTRAP_SOCKET"] = "/nonexistent/bootstrap"
            os.environ["PYMACH_NO_AUTOSTART"] = "1"
        p, s = mach_port_t(), mach_port_t()
        got = task_get_bootstrap_port(mach_task_self(), byref(p))
        kr = bootstrap_look_up(bootstrap_port, "com.example.forked" if used else "com.example.nobody", byref(s))
        sent = send_text(s, b"from the child") if used else 0
        print(json.dumps(["child", got, p.value == bootstrap_port, kr, sent]), flush=True)
        code = 0
    finally:
        os._exit(code)
got = receive_text(port) if used else [0, ""]
_pid, status = os.waitpid(pid, 0)
print(json.dumps(["parent", got, os.waitstatus_to_exitcode(status)]))
'''


@pytest.mark.parametrize("parent", ["used", "unused"])
def test_a_fork_child_gets_a_working_bootstrap_port(boot: dict[str, str], parent: str) -> None:
    p = subprocess.run([sys.executable, "-c", program(FORK), parent], env=boot, capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    child, par = (json.loads(line) for line in p.stdout.splitlines())
    if parent == "used":
        assert child == ["child", 0, True, 0, 0]
        assert par == ["parent", [0, "from the child"], 0]
    else:
        assert child == ["child", 0, True, UNKNOWN, 0]
        assert par == ["parent", [0, ""], 0]


SPAWNED = r'''
import json
p, s = mach_port_t(), mach_port_t()
got = task_get_bootstrap_port(mach_task_self(), byref(p))
kr = bootstrap_look_up(bootstrap_port, "com.example.spawned", byref(s))
print(json.dumps([got, p.value == bootstrap_port, kr, send_text(s, b"spawned")]))
'''

SPAWN = r'''
import json, os, subprocess, sys
import pymach
port = mach_port_t()
assert bootstrap_check_in(bootstrap_port, "com.example.spawned", byref(port)) == 0
# the socket is elsewhere and autostart is off: only TASK_BOOTSTRAP_PORT reaches the server
env = dict(os.environ, PYMACH_BOOTSTRAP_SOCKET="/nonexistent/bootstrap", PYMACH_NO_AUTOSTART="1")
child = pymach.spawn([sys.executable, "-c", sys.argv[1]], env=env, stdout=subprocess.PIPE)
out, _ = child.communicate(timeout=30)
print(json.dumps([json.loads(out), child.returncode, receive_text(port)]))
'''


def test_a_spawned_program_gets_a_working_bootstrap_port(boot: dict[str, str]) -> None:
    assert run(SPAWN, boot, program(SPAWNED)) == [[0, True, 0, 0], 0, [0, "spawned"]]


# -- changing the special port ------------------------------------------------------------------

SET = r'''
import json, os
mine, p, s = mach_port_t(), mach_port_t(), mach_port_t()
mach_port_allocate(mach_task_self(), MACH_PORT_RIGHT_RECEIVE, byref(mine))
mach_port_insert_right(mach_task_self(), mine, mine, MACH_MSG_TYPE_MAKE_SEND)
out = [task_set_bootstrap_port(mach_task_self(), mine)]  # before bootstrap_port is ever used
out.append(task_get_bootstrap_port(mach_task_self(), byref(p)))
out.append(p.value == mine.value)
out.append(bootstrap_look_up(bootstrap_port, "com.example.nobody", byref(s)))  # still the server
pid = os.fork()
if pid == 0:
    # the child's bootstrap_port is the special port it inherited: our port
    os._exit(send_text(bootstrap_port, b"to the special"))
out.append(receive_text(mine))
_pid, status = os.waitpid(pid, 0)
out.append(os.waitstatus_to_exitcode(status))
print(json.dumps(out))
'''


def test_task_set_bootstrap_port_changes_the_special_port_not_the_global(boot: dict[str, str]) -> None:
    """As in C, where bootstrap_port is libc's global: setting
    TASK_BOOTSTRAP_PORT changes what task_get_bootstrap_port and children
    get, and bootstrap_port still reaches the server."""
    assert run(SET, boot) == [0, 0, True, UNKNOWN, [0, "to the special"], 0]


# -- the server restarts ----------------------------------------------------------------------

RESTART = r'''
import json, sys
s, p = mach_port_t(), mach_port_t()
t = mach_port_type_t()
out = [bootstrap_look_up(bootstrap_port, "com.example.nobody", byref(s))]
print("ready", flush=True)
sys.stdin.readline()  # the server is killed and started again
out.append(bootstrap_look_up(bootstrap_port, "com.example.nobody", byref(s)))
out.append(task_get_bootstrap_port(mach_task_self(), byref(p)))
out.append(bootstrap_look_up(p, "com.example.nobody", byref(s)))
mach_port_type(mach_task_self(), bootstrap_port, byref(t))
out.append(t.value == MACH_PORT_TYPE_DEAD_NAME)
out.append(mach_port_deallocate(mach_task_self(), bootstrap_port))
out.append(bootstrap_look_up(bootstrap_port, "com.example.nobody", byref(s)))
print(json.dumps(out))
'''


def test_after_the_server_restarts_both_work(server: Server) -> None:
    """The old name is a dead name (a port never comes back to life), yet
    the routines still take bootstrap_port; task_get_bootstrap_port gives
    the new connection."""
    c = subprocess.Popen([sys.executable, "-c", program(RESTART)], env=_env(), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert c.stdout is not None and c.stdin is not None
        assert c.stdout.readline() == "ready\n", c.communicate(timeout=TIMEOUT)
        server.kill()
        server.start()
        c.stdin.write("go\n")
        c.stdin.flush()
        out, err = c.communicate(timeout=TIMEOUT)
        assert c.returncode == 0, err
        assert json.loads(out.splitlines()[-1]) == [UNKNOWN, UNKNOWN, 0, UNKNOWN, True, 0, UNKNOWN]
    finally:
        if c.poll() is None:
            c.kill()
            c.communicate()


# -- the name is the bootstrap port's for good ---------------------------------------------------

RESERVED = r'''
import json
me = mach_task_self()
p = mach_port_t()

def allocate_many():
    names = []
    for _ in range(40):
        mach_port_allocate(me, MACH_PORT_RIGHT_RECEIVE, byref(p))
        names.append(p.value)
    for n in names:
        mach_port_destroy(me, n)  # their indices come back later, each under a new generation
    return names

out = [mach_port_allocate_name(me, MACH_PORT_RIGHT_RECEIVE, bootstrap_port)]
names = allocate_many() + allocate_many()
out.append(any(n >> 8 == bootstrap_port >> 8 for n in names))
out.append(bootstrap_look_up(bootstrap_port, "com.example.nobody", byref(p)))
out.append(mach_port_allocate_name(me, MACH_PORT_RIGHT_RECEIVE, bootstrap_port))
out.append(mach_port_deallocate(me, bootstrap_port))  # its only reference: the name holds nothing now
names = allocate_many() + allocate_many()
out.append(any(n >> 8 == bootstrap_port >> 8 for n in names))
out.append(bootstrap_look_up(bootstrap_port, "com.example.nobody", byref(p)))  # connected again
out.append(refs(bootstrap_port))
print(json.dumps(out))
'''


def test_no_other_right_ever_takes_the_name(boot: dict[str, str]) -> None:
    """Before its first use and after its release, the name (every
    generation of its index) stays the bootstrap port's:
    mach_port_allocate_name on it is KERN_NAME_EXISTS, as for any name in
    use, and new rights are named around it."""
    exists = pymach.mach.KERN_NAME_EXISTS
    assert run(RESERVED, boot) == [exists, False, UNKNOWN, exists, 0, False, UNKNOWN, [0, 1]]
