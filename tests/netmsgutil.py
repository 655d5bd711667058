"""What the netmsg tests on one machine share: where the sources are, and
a process started for a test (a bootstrap server, a proxy, a peer) that
says "ready" before the test goes on."""

from __future__ import annotations

import os
import select
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")
PEER_NAMES = ["echo.b", "echo.b2", "still.b"]


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path, *, ready_fd: bool = False,
                 stdin: bool = False) -> None:
        self.log = log
        r, w = os.pipe()
        argv = args + (["--ready-fd", str(w)] if ready_fd else [])
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, env=env, pass_fds=(w,) if ready_fd else (),
                                         stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                         stdout=subprocess.PIPE if not ready_fd else out, stderr=out)
        os.close(w)
        try:
            src = r if ready_fd else self.proc.stdout.fileno()  # type: ignore[union-attr]
            assert select.select([src], [], [], 30)[0], f"{args} did not start: {log.read_text()}"
            line = os.read(src, 64)
            assert line.startswith(b"ready"), f"{args}: {line!r} {log.read_text()}"
        finally:
            os.close(r)

    def stop(self, kill: bool = False) -> None:
        stop_process(self.proc, kill)


def stop_process(proc: "subprocess.Popen[bytes]", kill: bool = False) -> None:
    """Stop a test's process (SIGTERM, or SIGKILL with ``kill``; SIGKILL
    after 10 s), reap it and close its pipes."""
    if proc.poll() is None:
        if proc.stdin is not None:
            proc.stdin.close()
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f is not None and not f.closed:
            f.close()
