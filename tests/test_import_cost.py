"""Importing pymach does no work a program could notice: no thread, no fd.

Each test runs a fresh interpreter (importing is once per process) on the
source tree these tests import, and reads the process's threads and fds
from /proc/self before and after the import, inside that process. What
pymach needs (its task's IPC space, the introspection server, the ports a
spawned program inherits) starts on first use; the tests check that a first
use after the import works, in the process itself, in a fork child and in a
program started by pymach.spawn.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

import pymach

SRC = str(pathlib.Path(pymach.__file__).resolve().parent.parent)

# Run in the child first: what the process holds, from the kernel's side.
PROBE = """\
import json, os, sys, threading

def state():
    # a native thread counts too (/proc/self/task), not only Python's;
    # listing /proc/self/fd opens one fd, the same number each time
    return {"threads": threading.active_count(), "tasks": len(os.listdir("/proc/self/task")),
            "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd"))}

def targets(fds):
    out = {}
    for fd in fds:
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            out[fd] = "?"
    return out

def report(before, after, **more):
    print(json.dumps({"before": before, "after": after,
                      "new": targets(sorted(set(after["fds"]) - set(before["fds"]))), **more}))
"""


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYMACH_INHERIT_PORTS"}
    env["PYTHONPATH"] = SRC
    return env


def run(code: str) -> dict[str, object]:
    """Run PROBE + ``code`` in a fresh interpreter; its last line of output, as JSON."""
    p = subprocess.run([sys.executable, "-c", PROBE + code], env=child_env(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def assert_free(out: dict[str, object]) -> None:
    before, after = out["before"], out["after"]
    assert isinstance(before, dict) and isinstance(after, dict)
    assert (after["threads"], after["tasks"]) == (1, 1), f"the import started a thread: {out}"
    assert after["fds"] == before["fds"], f"the import left fds open: {out['new']}"


@pytest.mark.parametrize("statement", [
    "import pymach",
    "import pymach.mach",
    "from pymach.mach import *",
    "from pymach import *",
])
def test_the_import_starts_no_thread_and_opens_no_fd(statement: str) -> None:
    out = run("before = state()\n"
              f"{statement}\n"
              "report(before, state(), module=sys.modules['pymach'].__file__)\n")
    assert out["module"] == os.path.join(SRC, "pymach", "__init__.py")
    assert_free(out)


def test_a_first_use_after_the_import_sends_and_receives_and_starts_the_introspection_server() -> None:
    out = run("before = state()\n"
              "import pymach, subprocess\n"
              "after = state()\n"
              "with pymach.Port() as p, p.make_send() as s:\n"
              "    s.send(b'hello', id=7)\n"
              "    m = p.receive(timeout=5)\n"
              "    lsmp = subprocess.run([sys.executable, '-m', 'pymach', 'lsmp', str(os.getpid()), '--json'],\n"
              "                          capture_output=True, text=True, timeout=60)\n"
              "    names = [row['name'] for row in json.loads(lsmp.stdout)['ports']] if lsmp.returncode == 0 else []\n"
              "    report(before, after, got=[m.data.decode(), m.id, m.pid == os.getpid()], port=p.name,\n"
              "           names=names, lsmp=lsmp.stderr, used=[t.name for t in threading.enumerate()],\n"
              "           asyncio='asyncio' in sys.modules)\n")
    assert_free(out)
    assert out["asyncio"] is False  # a program that never awaits does not pay for asyncio's import
    assert out["got"] == ["hello", 7, True]
    assert "pymach-introspect" in out["used"]  # type: ignore[operator]
    assert out["port"] in out["names"], out["lsmp"]  # type: ignore[operator]


FORK = """\
import traceback

def child_uses_the_task():
    try:
        with pymach.Port() as p, p.make_send() as s:
            s.send(b'from the child')
            assert p.receive(timeout=5).data == b'from the child'
        assert pymach.Task.self().pid == os.getpid()
        assert 'pymach-introspect' in [t.name for t in threading.enumerate()]
        os._exit(0)
    except BaseException:
        traceback.print_exc()
        os._exit(1)

def fork_and_wait():
    pid = os.fork()
    if pid == 0:
        child_uses_the_task()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
"""


def test_a_fork_child_uses_the_task_when_the_parent_had_not() -> None:
    out = run(FORK + "before = state()\n"
                     "import pymach\n"
                     "status = fork_and_wait()\n"
                     "report(before, state(), status=status)\n")
    assert out["status"] == 0
    assert_free(out)  # and the parent still has nothing started


def test_a_fork_child_uses_the_task_when_the_parent_had() -> None:
    out = run(FORK + "before = state()\n"
                     "import pymach\n"
                     "after = state()\n"
                     "with pymach.Port() as mine:\n"
                     "    status = fork_and_wait()\n"
                     "    mine.make_send().send(b'still ours')\n"
                     "    still = mine.receive(timeout=5).data.decode()\n"
                     "report(before, after, status=status, still=still)\n")
    assert_free(out)
    assert (out["status"], out["still"]) == (0, "still ours")


SPAWNED = """\
before = state()
spec = os.environ.get('PYMACH_INHERIT_PORTS', '')
inherited = [int(fd) for item in spec.split(',') if item for fd in item.split('=')[1].split('/')]
# the registered port's fds first (the task may pass special ports too: its bootstrap port)
ours = [int(fd) for item in spec.split(',') if item.startswith('registered:1=') for fd in item.split('=')[1].split('/')]
inherited = ours + [fd for fd in inherited if fd not in ours]
import pymach
after = state()
claimed = ['PYMACH_INHERIT_PORTS' not in os.environ, all(not os.get_inheritable(fd) for fd in inherited)]
reused = []
if sys.argv[1] == 'reuse':
    # the program closes an inherited fd before its first use of pymach and
    # the number goes to a connection of its own, of the same kind: that fd
    # is no right of ours any more
    import socket
    mine, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    os.dup2(mine.fileno(), inherited[0])
    mine.close()
    reused = [os.fstat(inherited[0]).st_ino]
rights = pymach.registered_ports()
sent = False
if rights[1] is not None:
    rights[1].send(b'from a new program', id=77)
    sent = True
if reused:
    peer.setblocking(False)
    try:
        peer.recv(1 << 16)
        reused.append('a message reached the connection of the program')
    except BlockingIOError:
        pass
    reused.append(os.fstat(inherited[0]).st_ino)
report(before, after, inherited=inherited, claimed=claimed, sent=sent, reused=reused)
"""


def spawn_with_a_registered_port(how: str) -> tuple[dict[str, object], bytes | None]:
    env = child_env()
    with pymach.Port() as p, p.make_send() as s:
        pymach.register_ports(None, s)
        try:
            proc = pymach.spawn([sys.executable, "-c", PROBE + SPAWNED, how], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            pymach.register_ports()
        assert proc.returncode == 0, (stdout, stderr)
        out = json.loads(stdout.splitlines()[-1])
        got = p.receive(timeout=5).data if out["sent"] and how == "use" else None
    return out, got


def test_a_spawned_program_adopts_its_inherited_ports_on_first_use() -> None:
    out, got = spawn_with_a_registered_port("use")
    assert out["inherited"], "pymach.spawn passed no fd"
    assert_free(out)  # the inherited fds were there before the import
    assert out["claimed"] == [True, True]  # out of the environment and not inheritable, from the import on
    assert got == b"from a new program"


def test_an_inherited_fd_reused_before_the_first_use_is_not_adopted() -> None:
    out, got = spawn_with_a_registered_port("reuse")
    assert out["sent"] is False and got is None
    reused = out["reused"]
    assert isinstance(reused, list) and len(reused) == 2 and reused[0] == reused[1], reused  # left as it was


FORK_DURING_FIRST_ACCESS = """\
import select, signal, threading
import pymach
assert 'pymach.ipc' not in sys.modules, 'importing pymach imported the Pythonic layer'

entered, resume = threading.Event(), threading.Event()

def pause_in_ipc(frame, event, arg):
    # stop the loading thread as it starts running pymach/ipc.py's code,
    # holding that module's import lock, until a fork is on its way
    if event == 'call' and frame.f_code.co_name == '<module>' and frame.f_code.co_filename.endswith(
            os.path.join('pymach', 'ipc.py')):
        entered.set()
        resume.wait(60)
    return None

def first_access():
    sys.settrace(pause_in_ipc)
    pymach.Port  # the first access imports the Pythonic layer
    sys.settrace(None)

loader = threading.Thread(target=first_access)
loader.start()
assert entered.wait(60)
# run first by the fork (registered last): the loader may go on from here,
# but it gets the interpreter only if the fork lets it go
os.register_at_fork(before=resume.set)
pid = os.fork()
if pid == 0:
    with pymach.Port() as p, p.make_send() as s:  # imports what the loader was importing
        s.send(b'child')
        os._exit(0 if p.receive(timeout=5).data == b'child' else 1)
fd = os.pidfd_open(pid)
waiter = select.poll()
waiter.register(fd, select.POLLIN)
finished = bool(waiter.poll(30_000))
if not finished:
    os.kill(pid, signal.SIGKILL)
status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
os.close(fd)
loader.join(60)
report(state(), state(), finished=finished, status=status, loader_done=not loader.is_alive())
"""


def test_a_fork_while_another_thread_first_uses_pymach_waits_for_that_import() -> None:
    out = run(FORK_DURING_FIRST_ACCESS)
    assert out["loader_done"] is True
    assert out["finished"] is True, "the fork child hung on an import lock the loading thread held at the fork"
    assert out["status"] == 0
