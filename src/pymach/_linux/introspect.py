"""Introspection's transport: a question from another process, answered
by this one.

Every process that serves answers on an abstract AF_UNIX stream socket
named ``pymach-introspect-<pid>``, from a daemon thread. A client
connects, writes one request line and reads a JSON answer until EOF. What
the answers say is the caller's (pymach._kern.introspect); this module only
carries them.

Kernel facts this relies on:

- An abstract socket (a name starting with NUL) has no file: it leaves
  nothing behind when the process dies, and no other process can bind its
  name while we hold it. It also has no permissions, so anyone in the same
  network namespace can connect: the server reads the client's uid with
  SO_PEERCRED and answers only its own uid and root (who may ptrace it
  anyway).
- Threads do not survive fork: a fork child of a process that serves
  starts its own server, under its own pid, and closes the parent's
  listening socket.
- A new thread inherits its creator's signal mask: the server's thread is
  started with every signal blocked, so signals keep going to the
  program's own threads, as if this one did not exist.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from typing import Any, Callable

from . import unix
from .atfork import IMPORT_LOCK

_PREFIX = "pymach-introspect-"
_lock = threading.Lock()
_listener: socket.socket | None = None
_owner = 0  # the pid that started _listener
_answer: Callable[[str, int], dict[str, Any]] | None = None  # serve() was called: a fork child serves too


def address(pid: int) -> str:
    """The abstract socket name a process answers on."""
    return "\0" + _PREFIX + str(pid)


def serve(answer: Callable[[str, int], dict[str, Any]]) -> None:
    """Answer on this process's name from now on (once per process; a fork
    child starts its own server). ``answer(request, connection fd)`` gives
    the JSON-serialisable answer to a request line.

    Conditions: nothing locked, or the build lock (a first-use callback of
    the task's state); takes the introspection lock and starts the server's
    thread under it."""
    global _listener, _owner, _answer
    with _lock:
        _answer = answer
        if _listener is not None and _owner == os.getpid():
            return
        if _listener is not None:  # inherited across fork: the parent's
            _listener.close()
            _listener = None
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.bind(address(os.getpid()))
            s.listen(8)
        except OSError:
            s.close()
            return  # the name is taken (another runtime in this process): no server
        _listener, _owner = s, os.getpid()
        # the server thread's one import, made here: an import in that thread
        # would hold a module file open for as long as a fork in another
        # thread keeps it waiting (see atfork.py)
        with IMPORT_LOCK:
            import json  # noqa: F401  # pylint: disable=unused-import,import-outside-toplevel
        old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            threading.Thread(target=_serve, args=(s, answer), name="pymach-introspect", daemon=True).start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _serve(s: socket.socket, answer: Callable[[str, int], dict[str, Any]]) -> None:
    import json  # imported by serve() before this thread started: no file is read here
    while True:
        try:
            conn, _addr = s.accept()
        except OSError:
            return  # closed (a fork child replaced it, or shutdown)
        with conn:
            try:
                _pid, uid, _gid = unix.peer_cred(conn)
                if uid not in (os.getuid(), 0):
                    continue
                conn.settimeout(5)
                what = conn.recv(64).strip().decode(errors="replace")
                conn.sendall(json.dumps(answer(what, conn.fileno())).encode())
            except Exception:  # an introspection request must never hurt the process
                continue


def listener_fds() -> list[int]:
    """The fd of this process's listening socket, if it serves."""
    s = _listener
    return [s.fileno()] if s is not None and s.fileno() >= 0 else []


def query(pid: int, what: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """Ask process ``pid`` the request line ``what``. None when it does not
    serve (nothing answers on its name). Raises PermissionError when it
    refuses us (another user's process)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        try:
            s.connect(address(pid))
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        chunks = []
        try:
            s.sendall(what.encode() + b"\n")
            while True:
                b = s.recv(1 << 16)
                if not b:
                    break
                chunks.append(b)
        except (BrokenPipeError, ConnectionResetError):
            chunks = []  # closed on us: refused
    finally:
        s.close()
    if not chunks:
        raise PermissionError(f"process {pid} runs pymach but does not answer us (another user's)")
    with IMPORT_LOCK:
        import json
    return json.loads(b"".join(chunks))  # type: ignore[no-any-return]


def _forked() -> None:
    # a fork child: a thread that was inside serve() did not follow, so the
    # lock it held is made anew before the child starts its own server
    global _lock  # pylint: disable=global-statement
    _lock = threading.Lock()
    if _answer is not None:
        serve(_answer)


os.register_at_fork(after_in_child=_forked)
