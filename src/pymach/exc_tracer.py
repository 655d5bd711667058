"""The exception tracer: the process that makes a task's faults Mach
exception messages.

Linux gives a fault to the faulting thread as a signal; Mach gives it to
an exception port as a message, with the thread stopped until the answer.
A task with exception ports set for a fault gets a tracer: a process of
its own (``python -m pymach.exc_tracer PID FD``) that ptrace-seizes every
thread of the task (pymach._linux.tracer) and, for each fault,

1. finds the action for the fault's exception type: the thread's, then
   the task's, then the host's (XNU's exception_triage); a fault's signal
   that a process sent (kill -SEGV) is EXC_SOFTWARE with EXC_SOFT_SIGNAL,
   for a task that set a port for it; other signals pass untouched;
2. sends the message of the action's behavior (exc.defs, or mach_exc.defs
   with MACH_EXCEPTION_CODES) to its port, through the generated client,
   with the thread and task ports and/or the thread's state;
3. on KERN_SUCCESS resumes the thread without the signal, so that it
   retries the faulting instruction, with the reply's new state for the
   STATE behaviors; on any other answer (MIG_SERVER_DIED when the handler
   died or destroyed its port) tries the next level, and after the last
   lets the signal go on: the default action, as if untraced.

Why a process: a thread cannot trace a thread of its own thread group,
and a task's handler may be one of its own threads. The task that sets
the ports starts the tracer and allows it (PR_SET_PTRACER), and tells it
every change of the actions over a socket (``FD``): each action with its
send right's fds (SCM_RIGHTS), which the tracer installs in its own space.
When the socket closes (the task clears its last action, or dies) the
tracer exits, and the kernel detaches its tracees: a thread it had not
answered gets its signal, so nothing is ever left stopped.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any, Final

from ._kern import exc_codes as X
from ._kern import exception as E
from ._kern import kern_return as K
from ._kern import ipc_notify as N
from ._kern import ipc_right as R
from ._kern import task_user as TU
from ._kern.task import SELF
from ._kern.vm_remote import STATE_FIELDS, linux_name, x86_THREAD_STATE64, x86_THREAD_STATE64_COUNT
from ._linux import epoll as EP
from ._linux import files
from ._linux import tracer as TR

UPDATE: Final = TR.UPDATE
LEVEL_TASK: Final = 0
LEVEL_THREAD: Final = 1
LEVEL_HOST: Final = 2
EXCEPTION_DEFAULT: Final = 1
EXCEPTION_STATE: Final = 2
EXCEPTION_STATE_IDENTITY: Final = 3
MACH_EXCEPTION_CODES: Final = 0x80000000


class Actions:
    """The tracer's copy of the actions: (level, tid) -> exception type ->
    (name of the send right in the tracer's space, behavior, flavor).

    Conditions: ``lock`` guards the table (the socket's thread writes it,
    the tracing thread reads it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.table: dict[tuple[int, int], dict[int, tuple[int, int, int]]] = {}

    def set(self, level: int, tid: int, exc: int, fds: list[int], behavior: int, flavor: int) -> None:
        import pymach.mach as M
        name = R.copyout_send(SELF.space, fds, False) if fds else 0
        with self.lock:
            old = self.table.setdefault((level, tid), {}).pop(exc, None)
            if name:
                self.table[(level, tid)][exc] = (name, behavior, flavor)
        if old is not None:
            M.mach_port_deallocate(SELF.task_name, old[0])

    def chain(self, tid: int, exc: int) -> list[tuple[int, int, int]]:
        """The actions a fault of type ``exc`` in thread ``tid`` tries, in order."""
        with self.lock:
            out = []
            for key in ((LEVEL_THREAD, tid), (LEVEL_TASK, 0), (LEVEL_HOST, 0)):
                a = self.table.get(key, {}).get(exc)
                if a is not None:
                    out.append(a)
            return out


def _read_updates(chan: TR.Channel, actions: Actions) -> None:
    """The channel's thread: apply each update; end the tracer when the
    task closes the channel."""
    while True:
        data, fds = chan.recv()
        if len(data) != UPDATE.size:
            TR.exit_now(0)
        lvl, tid, exc, behavior, flavor, has_right = UPDATE.unpack(data)
        actions.set(lvl, tid, exc, fds if has_right else [], behavior, flavor)
        chan.send(b"k")  # applied


def _state(regs: Any) -> list[int]:
    """x86_THREAD_STATE64 of the registers, as natural_t words."""
    words: list[int] = []
    for n in STATE_FIELDS:
        v = getattr(regs, linux_name(n))
        words += [v & 0xFFFFFFFF, v >> 32]
    return words


def _apply(regs: Any, words: list[int]) -> Any:
    """The registers with a new x86_THREAD_STATE64 (cs, fs, gs kept)."""
    new = regs.copy()
    for i, n in enumerate(STATE_FIELDS):
        if n not in ("cs", "fs", "gs"):
            setattr(new, linux_name(n), words[2 * i] | words[2 * i + 1] << 32)
    new.orig_rax = (1 << 64) - 1  # resume at rip, not in a system call
    return new


class _Ports:
    """The task port and thread ports of the target, in the tracer's space."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.task = TU.task_for_pid(SELF.task_name, pid)
        self.threads: dict[int, int] = {}

    def thread(self, tid: int) -> int:
        if tid not in self.threads:
            for name in TU.task_threads(self.task):
                th = TU.thread_of(name)
                if th.tid in self.threads:
                    R.deallocate(SELF.space, name)
                else:
                    self.threads[th.tid] = name
        return self.threads.get(tid, 0)


def _deliver(tr: TR.Tracer, stop: TR.Stop, actions: Actions, ports: _Ports) -> int:
    """The signal to resume a faulting thread with: 0 when a handler
    answered KERN_SUCCESS (with its new state applied), else the fault's."""
    from .mig.exc import exc_user, mach_exc_user
    exc, code, sub = X.exception_of(stop.signo, stop.code, stop.addr)
    for port, behavior, flavor in actions.chain(stop.tid, exc):
        wide = bool(behavior & MACH_EXCEPTION_CODES)
        kind = behavior & ~MACH_EXCEPTION_CODES & 0xFFFF
        codes = [code, sub] if wide else [code & 0xFFFFFFFF, sub & 0xFFFFFFFF]
        iface = mach_exc_user.mach_exc if wide else exc_user.exc
        prefix = "mach_exception_raise" if wide else "exception_raise"
        try:
            if kind == EXCEPTION_DEFAULT:
                getattr(iface, prefix)(port, ports.thread(stop.tid), ports.task, exc, codes)
                return 0
            regs = tr.get_regs(stop.tid)
            if flavor != x86_THREAD_STATE64:
                continue  # only the x86_64 thread state is kept
            state = _state(regs)
            if kind == EXCEPTION_STATE:
                _flavor, new = getattr(iface, prefix + "_state")(port, exc, codes, flavor, state)
            elif kind == EXCEPTION_STATE_IDENTITY:
                _flavor, new = getattr(iface, prefix + "_state_identity")(
                    port, ports.thread(stop.tid), ports.task, exc, codes, flavor, state)
            else:
                continue
            if len(new) >= x86_THREAD_STATE64_COUNT and list(new) != state:
                tr.set_regs(stop.tid, _apply(regs, list(new)))
            return 0
        except OSError:
            continue  # the handler's code, MIG_SERVER_DIED...: the next level
    return stop.signo


ENV: Final = "PYMACH_EXC_TRACER"  # a spawned program's channel to the tracer its parent started


def _start_tracer(pid: int, theirs: Any) -> Any:
    """``python -m pymach.exc_tracer PID FD``, running this very pymach."""
    import subprocess
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    env.pop(ENV, None)
    try:
        return subprocess.Popen([sys.executable, "-m", "pymach.exc_tracer", str(pid), str(theirs.fileno())],
                                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
    finally:
        theirs.close()


class Link:
    """The task's end of its tracer: starts it, allows it to trace us, and
    sends it each change of the actions.

    Conditions: ``lock`` serializes updates (each waits for the tracer's
    answer, so that a fault right after a set is caught)."""

    def __init__(self, pid: int, chan: TR.Channel | None = None) -> None:
        self.pid = pid
        self.lock = threading.Lock()
        self.active: set[tuple[int, int, int]] = set()  # (level, tid, exception type) with a port
        self.proc: Any = None
        if chan is not None:
            self.chan = chan  # a channel to a tracer that is already tracing us (adopt)
            return
        chan, theirs = TR.Channel.pair()
        self.proc = _start_tracer(pid, theirs)
        self.chan = chan
        if pid == os.getpid():
            TR.allow_tracer(self.proc.pid)
        self.start()

    def start(self) -> None:
        """Let the tracer seize the task and wait until it has."""
        self.chan.send(b"G")
        answer, _fds = self.chan.recv(60)
        if answer != b"R":
            self.close()
            raise PermissionError(answer[1:].decode(errors="replace") or "the exception tracer did not start")

    def update(self, level: int, tid: int, exc: int, fds: list[int], behavior: int, flavor: int) -> None:
        """Send one action (no fds: clear it) and wait until it is applied."""
        with self.lock:
            self.chan.send(UPDATE.pack(level, tid, exc, behavior, flavor, 1 if fds else 0), fds)
            if self.chan.recv(60)[0] != b"k":
                raise OSError("the exception tracer is gone")
            if fds:
                self.active.add((level, tid, exc))
            else:
                self.active.discard((level, tid, exc))

    def close(self) -> None:
        """Stop the tracer: it exits, and every thread is let go.

        Conditions: not on the watcher's thread with its lock held."""
        N.WATCHER.unwatch(self.chan.fileno())
        self.chan.close()
        if self.proc is None:
            return
        try:
            self.proc.wait(30)
        except Exception:  # noqa: BLE001 - a tracer that hangs is killed
            self.proc.kill()
            self.proc.wait()


def spawn_traced(args: list[str], popen: Callable[..., Any], pass_fds: tuple[int, ...],
                 env: dict[str, str]) -> Any:
    """pymach.spawn for a task with exception actions: the program starts
    held (a shell waits on a pipe before it execs it), a tracer of its own
    seizes it with the task's actions, and then it runs; a fault before its
    first instruction is caught as much as one after. The program keeps
    the channel to that tracer (``PYMACH_EXC_TRACER``): a pymach program
    adopts it, so that the actions it sets later go to the same tracer.
    A program its tracer cannot trace runs untraced, and says so.

    Conditions: nothing locked; waits for the tracer to start."""
    r, w = files.pipe()
    chan, theirs = TR.Channel.pair()
    try:
        proc = popen(["/bin/sh", "-c", f'read _ < /dev/fd/{r}; exec "$@"', "sh", *args],
                     pass_fds=pass_fds + (r, chan.fileno()), env=dict(env, **{ENV: str(chan.fileno())}))
    except BaseException:
        files.close_all([r, w])
        chan.close()
        theirs.close()
        raise
    files.close(r)
    try:
        link = Link(proc.pid, chan)
        link.proc = _start_tracer(proc.pid, theirs)
        threading.Thread(target=link.proc.wait, daemon=True).start()  # reaped when it ends
        link.start()
        for i, (cap, behavior, flavor) in enumerate(SELF.exc_actions):
            if cap is not None:
                link.update(LEVEL_TASK, 0, i, cap.wire_fds(), behavior, flavor)  # type: ignore[attr-defined]
    except (OSError, K.MachError) as err:
        print(f"pymach: the spawned program's faults are not caught: {err}", file=sys.stderr)
    finally:
        chan.close()  # the program holds its own copy
        files.write(w, b"\n")
        files.close(w)
    return proc


def _adopt() -> Link | None:
    """The channel to the tracer our parent started for us (pymach.spawn),
    as the link to our own tracer, with the actions we inherited."""
    fd = os.environ.pop(ENV, None)
    if fd is None or not fd.isdigit():
        return None
    link = Link(os.getpid(), TR.Channel.adopt(int(fd)))
    for i, (cap, _b, _f) in enumerate(SELF.exc_actions):
        if cap is not None:
            link.active.add((LEVEL_TASK, 0, i))
    return link


_links: dict[int, Link] = {}
_links_lock = threading.Lock()


def on_change(pid: int, level: int, tid: int, changes: list[tuple[int, list[int], int, int]]) -> None:
    """Actions of process ``pid`` changed (at ``level``; ``tid`` for a
    thread's): (exception type, fds of the new send right or [] to clear,
    behavior, flavor) each. Starts the process's tracer with its first
    action and stops it with its last. PermissionError when the tracer
    cannot trace the process.

    Conditions: nothing locked; takes the links' lock, and waits for the
    tracer (its start, each acknowledgement)."""
    with _links_lock:
        link = _links.get(pid)
        if link is None and pid == os.getpid() and ENV in os.environ:
            adopted = _adopt()
            if adopted is not None:
                link = _links[pid] = adopted
                N.WATCHER.watch(adopted.chan.fileno(), EP.EPOLLHUP | EP.EPOLLRDHUP, lambda: _gone(pid, adopted))
        if link is None:
            if not any(fds for _e, fds, _b, _f in changes):
                return
            link = _links[pid] = Link(pid)
            # a tracer ends with its task (or on its own): its link goes then
            N.WATCHER.watch(link.chan.fileno(), EP.EPOLLHUP | EP.EPOLLRDHUP, lambda: _gone(pid, link))
        try:
            for exc, fds, behavior, flavor in changes:
                link.update(level, tid, exc, fds, behavior, flavor)
        except OSError:
            # the tracer is gone or going (its task exited): wait for it, so
            # that the rights it held are released when this call returns
            link.active.clear()
            raise
        finally:
            if not link.active:
                link.close()
                del _links[pid]


def _gone(pid: int, link: Link) -> None:
    """The watcher saw a tracer's channel close: the task exited (or the
    tracer died). Its link goes.

    Conditions: the watcher's thread, nothing locked; takes the links'
    lock and waits for the tracer under it, so that a change for the same
    task finds the tracer gone, and the rights it held released."""
    with _links_lock:
        if _links.get(pid) is link:
            del _links[pid]
        link.close()


def _forked() -> None:
    """A fork child: the parent's tracers are not ours (their channels'
    copies go, nobody is waited for). The task exception ports the child
    inherited get a tracer of its own, as its faults are its own."""
    for link in list(_links.values()):
        link.chan.close()
    _links.clear()
    global _links_lock
    _links_lock = threading.Lock()
    actions = SELF.exc_actions
    changes = [(i, cap.wire_fds(), b, f) for i, (cap, b, f) in enumerate(actions)  # type: ignore[attr-defined]
               if cap is not None]
    if changes:
        try:
            on_change(os.getpid(), LEVEL_TASK, 0, changes)
        except OSError as err:
            print(f"pymach: no exception tracer for the fork child: {err}", file=sys.stderr)


os.register_at_fork(after_in_child=_forked)


def main(argv: list[str]) -> int:
    """``python -m pymach.exc_tracer PID FD``: trace PID's faults, with the
    actions PID sends on the channel FD, until it closes it or exits."""
    pid, fd = int(argv[0]), int(argv[1])
    chan = TR.Channel.adopt(fd)
    if chan.recv()[0] != b"G":  # the task has allowed us to trace it
        return 1
    actions = Actions()
    tr = TR.Tracer(pid)
    try:
        tr.attach()
        ports = _Ports(pid)
    except OSError as e:
        chan.send(b"E" + str(e).encode()[:200])
        return 1
    chan.send(b"R")  # every thread is traced: the task may go on
    threading.Thread(target=_read_updates, args=(chan, actions), daemon=True).start()
    while True:
        try:
            stop = tr.wait()
        except ChildProcessError:
            return 0
        if stop is None:
            continue
        if stop.kind == "exit":
            if stop.tid == pid:
                return 0
            continue
        if stop.fault or (stop.kind == "signal" and stop.signo in TR.FAULTS
                          and actions.chain(stop.tid, E.EXC_SOFTWARE)):
            # a fault; or a fault's signal that a process sent, which has no
            # hardware meaning: EXC_SOFTWARE (EXC_SOFT_SIGNAL, the signal) for
            # a task that asked for it; KERN_SUCCESS discards it
            tr.resume(stop, _deliver(tr, stop, actions, ports))
        else:
            tr.resume(stop, stop.signo if stop.kind == "signal" else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
