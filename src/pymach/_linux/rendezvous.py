"""The rendezvous: where a process without a bootstrap port finds the
bootstrap server, and how it gets its first right. The bootstrap server
(pymach.servers.bootstrap) listens with it, and the kernel's bootstrap
port (pymach._kern.bootstrap_port) connects with it.

The server listens on an AF_UNIX SOCK_SEQPACKET socket:

- ``$PYMACH_BOOTSTRAP_SOCKET`` when it is set (tests, several servers);
- else ``$XDG_RUNTIME_DIR/pymach/bootstrap`` when XDG_RUNTIME_DIR names a
  directory;
- else ``/tmp/pymach-<uid>/bootstrap``.

A client connects, the server reads the client's credentials with
SO_PEERCRED, closes the connection at once unless the uid is its own, and
otherwise writes one record: a small fixed header and, with SCM_RIGHTS,
the two fds of a send right to its bootstrap port (the sending end of a
connection of the port, and the port's queue semaphore). The client checks
their kinds and installs them as a send right. Everything after that is a
Mach message on that right.

Kernel facts this relies on:

- connect() to a socket path needs search permission on each directory on
  the way and write permission on the socket file. The directories are the
  gate: the private directory is 0700 and ours, so nobody else reaches the
  socket, and nobody else can put something in its place. An override's
  directory must at least be ours and not writable by group or others.
- SO_PEERCRED gives the pid, uid and gid that the peer had when it called
  connect() (or listen(), for the server). The peer cannot choose them. A
  client checks the server's uid with it too, so a socket someone else
  listens on is refused even if the path checks were raced.
- A socket file outlives its server: after a crash the path still exists
  and connect() fails with ECONNREFUSED. Such a stale file is replaced.
- An flock() lock is released when its holder dies, even by SIGKILL. The
  server holds ``<socket>.lock`` for its whole life, so one server at a
  time serves a path, and a server that holds the lock knows that any
  socket file it finds there is stale (or someone else's).
- lstat() does not follow symbolic links, so a symlink planted at the path
  or at the directory is seen for what it is.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import stat
import struct
import sys
import time
from typing import TYPE_CHECKING

from . import unix
from .atfork import IMPORT_LOCK

if TYPE_CHECKING:
    import subprocess

SOCKET_ENV = "PYMACH_BOOTSTRAP_SOCKET"
NO_AUTOSTART_ENV = "PYMACH_NO_AUTOSTART"
SOCKET_NAME = "bootstrap"
HANDSHAKE = struct.Struct("<4sHHI")  # magic, version, number of fds, server pid
MAGIC = b"PMBS"
VERSION = 1
HANDSHAKE_FDS = 2  # the connection end and the queue eventfd of a send right
TIMEOUT = 10.0  # seconds a client waits for the handshake, or for an autostarted server


class NoServer(Exception):
    """Nobody serves the path: no socket file, or nobody listening on it."""


class Refused(Exception):
    """The rendezvous cannot be trusted: a directory or socket file that is
    not ours or that others may change, a server of another uid, or a
    handshake that is not one."""


class Busy(Exception):
    """The server refused us a right: we (this process), or our uid as a
    whole, hold as many connections to it as its limits allow."""


class AlreadyRunning(Exception):
    """Another server holds the path's lock."""


def socket_path() -> tuple[str, bool]:
    """(path, private): the socket path from the environment, and whether
    it lies in the private directory (made 0700 by the server) rather than
    at an override."""
    override = os.environ.get(SOCKET_ENV)
    if override:
        return os.path.abspath(override), False
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        return os.path.join(xdg, "pymach", SOCKET_NAME), True
    return os.path.join("/tmp", f"pymach-{os.getuid()}", SOCKET_NAME), True


def autostart_enabled() -> bool:
    """False when PYMACH_NO_AUTOSTART is set to anything but '' or '0'."""
    return os.environ.get(NO_AUTOSTART_ENV, "") in ("", "0")


def check_dir(directory: str, private: bool) -> None:
    """Refuse a directory that is not ours, is a symlink, or that others
    may change (group/other write), or for the private directory, that
    others may enter at all. FileNotFoundError when it does not exist."""
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise Refused(f"{directory} is not a directory")
    if st.st_uid != os.getuid():
        raise Refused(f"{directory} belongs to uid {st.st_uid}, not to us (uid {os.getuid()})")
    mask = 0o077 if private else 0o022
    if st.st_mode & mask:
        raise Refused(f"{directory} has mode {stat.S_IMODE(st.st_mode):04o}: others may "
                      + ("enter it" if private else "change it"))


def _check_socket_file(path: str) -> None:
    """Refuse what is at the path unless it is a socket of ours.
    FileNotFoundError when nothing is there."""
    st = os.lstat(path)
    if not stat.S_ISSOCK(st.st_mode):
        raise Refused(f"{path} is not a socket")
    if st.st_uid != os.getuid():
        raise Refused(f"{path} belongs to uid {st.st_uid}, not to us (uid {os.getuid()})")


def _seqpacket() -> socket.socket:
    return socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # close-on-exec, as Python makes sockets


# -- the server's side ------------------------------------------------------------

class Listener:
    """The server's socket at ``path`` (bound; listen() starts it), with
    the path's lock.

    Raises AlreadyRunning (another server holds the lock), Refused (the
    directory, the lock file or the socket path is not ours), OSError."""

    def __init__(self, path: str, private: bool) -> None:
        self.path = path
        directory = os.path.dirname(path)
        if private:
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                pass  # checked next: it must be ours and private
        check_dir(directory, private)
        self.lock_fd = _lock(path + ".lock")
        try:
            self._replace_stale(path)
            self.sock = _seqpacket()
            try:
                self.sock.bind(path)
                # the directory is the gate and SO_PEERCRED the authority:
                # the file itself is connectable, as D-Bus's session socket is
                os.chmod(path, 0o666)
                self.ino = os.lstat(path).st_ino
            except BaseException:
                self.sock.close()
                raise
        except BaseException:
            os.close(self.lock_fd)
            raise

    @staticmethod
    def _replace_stale(path: str) -> None:
        """We hold the lock, so a socket of ours at the path has no server:
        unlink it. Anything else there is refused."""
        try:
            _check_socket_file(path)
        except FileNotFoundError:
            return
        probe = _seqpacket()
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # stale: its server died
            return
        finally:
            probe.close()
        raise Refused(f"something that does not hold {path}.lock listens on {path}")

    def listen(self) -> None:
        """Start accepting. SO_PEERCRED shows clients the process that
        calls this, so a server that forks into the background calls it
        after the fork."""
        self.sock.listen(128)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        """Stop listening; unlink the socket file if it is still ours."""
        if self.lock_fd < 0:
            return
        try:
            if os.lstat(self.path).st_ino == self.ino:
                os.unlink(self.path)
        except OSError:
            pass
        self.sock.close()
        os.close(self.lock_fd)
        self.lock_fd = -1


def _lock(lock_path: str) -> int:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise Refused(f"{lock_path} is a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise Refused(f"{lock_path} is not a file of ours")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(f"another server holds {lock_path}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def accept(listener: Listener) -> tuple[socket.socket, tuple[int, int, int]] | None:
    """Accept one connection: (connection, the peer's (pid, uid, gid)), or
    None when accept failed for want of fds (the caller waits a little)."""
    try:
        conn, _addr = listener.sock.accept()
    except OSError as err:
        if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            return None
        raise
    try:
        return conn, unix.peer_cred(conn)
    except OSError:
        conn.close()
        return None


def send_handshake(conn: socket.socket, fds: list[int]) -> None:
    """Write the handshake with the fds of the send right. Never blocks:
    the connection is new and its buffer empty."""
    unix.send(conn, [HANDSHAKE.pack(MAGIC, VERSION, len(fds), os.getpid())], fds,
              socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)


def send_busy(conn: socket.socket, why: str) -> None:
    """Write a handshake with no fds: the server holds as many of our
    connections as its limits allow; ``why`` follows the header."""
    conn.send(HANDSHAKE.pack(MAGIC, VERSION, 0, os.getpid()) + why.encode()[:40],
              socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)


def wait_connectable(path: str, timeout: float) -> bool:
    """Wait until a server accepts connections at ``path``."""
    deadline = time.monotonic() + timeout
    while True:
        s = _seqpacket()
        try:
            s.connect(path)
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
        finally:
            s.close()
        time.sleep(0.02)


# -- the client's side ----------------------------------------------------------------

def connect(path: str, private: bool, timeout: float = TIMEOUT) -> tuple[list[int], int]:
    """Connect to the server at ``path`` and take the handshake: (the fds
    of a send right to the bootstrap port, checked: a SEQPACKET socket and
    an eventfd; the server's pid).

    Raises NoServer (nothing serves the path), Refused, or Busy (the
    server's limits)."""
    directory = os.path.dirname(path)
    try:
        check_dir(directory, private)
        _check_socket_file(path)
    except FileNotFoundError:
        raise NoServer(f"no server at {path}") from None
    s = _seqpacket()
    try:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            raise NoServer(f"nobody listens on {path}") from None
        except (TimeoutError, BlockingIOError):
            raise NoServer(f"the server at {path} does not accept connections") from None
        except PermissionError:
            raise Refused(f"no permission to connect to {path}") from None
        pid, uid, _gid = unix.peer_cred(s)
        if uid != os.getuid():
            raise Refused(f"the server at {path} runs as uid {uid}, not as us (uid {os.getuid()})")
        buf = bytearray(64)
        try:
            n, fds, _cred = unix.recv(s, buf)
        except TimeoutError:
            raise NoServer(f"the server at {path} did not answer within {timeout:g} s") from None
        except unix.Truncated as err:
            raise Refused(f"a bad handshake from {path}: {err}") from None
        except OSError as err:
            raise NoServer(f"the server at {path} closed the connection: {err}") from None
        if n > HANDSHAKE.size and not fds and HANDSHAKE.unpack_from(buf)[:3] == (MAGIC, VERSION, 0):
            raise Busy(f"the server at {path} refused a right: {bytes(buf[HANDSHAKE.size:n]).decode(errors='replace')}")
        ok = (n == HANDSHAKE.size and len(fds) == HANDSHAKE_FDS
              and HANDSHAKE.unpack_from(buf)[:3] == (MAGIC, VERSION, HANDSHAKE_FDS)
              and unix.is_seqpacket(fds[0]) and unix.is_eventfd(fds[1]))
        if not ok:
            unix.close_all(fds)
            if n == 0 and not fds:
                raise Refused(f"the server at {path} closed the connection without a handshake")
            raise Refused(f"a bad handshake from {path}")
        return fds, pid
    finally:
        s.close()


def autostart(timeout: float = TIMEOUT) -> None:
    """Start a server for socket_path(), as D-Bus autolaunch does: spawned
    detached in a session of its own (setsid), it forks into the
    background and says "ready" on a pipe once it listens ("running" when
    another server already does). Returns once a server accepts; raises
    NoServer when none does within ``timeout``."""
    with IMPORT_LOCK:  # imported on first use, which a fork waits for (see atfork.py)
        import subprocess
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pymach", "bootstrap", "serve", "--daemonize", "--ready-fd", str(w)],
            pass_fds=(w,), start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, cwd="/")  # our environment: the same socket_path()
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    path = socket_path()[0]
    deadline = time.monotonic() + timeout
    said = b""
    try:
        p = select.poll()
        p.register(r, select.POLLIN)
        if p.poll(timeout * 1000):
            said = os.read(r, 64)
    finally:
        os.close(r)
    try:
        _out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    if said not in (b"ready\n", b"running\n"):
        why = (err or b"").decode(errors="replace").strip().splitlines()
        raise NoServer(f"could not start a server for {path}" + (f": {why[-1]}" if why else
                                                                f" (exit status {proc.returncode})"))


def spawn(env: dict[str, str], *args: str, timeout: float = 20.0,
          **popen: object) -> "subprocess.Popen[bytes]":
    """Start ``pymach bootstrap serve ARGS`` as a child of ours, in the
    foreground, for the socket that ``env`` names; return it once it
    listens. Raises NoServer (the child reaped) when it does not say
    "ready" within ``timeout``. The caller stops it (SIGTERM)."""
    with IMPORT_LOCK:
        import subprocess
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "pymach", "bootstrap", "serve", *args, "--ready-fd", str(w)],
                                pass_fds=(w,), env=env, stdin=subprocess.DEVNULL,
                                **popen)  # type: ignore[call-overload]
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    try:
        said = os.read(r, 6) if select.select([r], [], [], timeout)[0] else b""
    finally:
        os.close(r)
    if said != b"ready\n":
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        raise NoServer(f"the bootstrap server for {env.get(SOCKET_ENV, 'the default socket')} did not start "
                       f"(exit status {proc.returncode})")
    return proc  # type: ignore[no-any-return]
