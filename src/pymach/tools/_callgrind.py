"""pymach bench ipc --instructions and --syscalls: what one in-process
64-byte send + receive costs, counted rather than timed.

Each case runs in an interpreter of its own, twice, with two loop lengths
N1 < N2: under ``valgrind --tool=callgrind`` for the user-space
instructions it executes (Ir, every thread counted), or under ``strace -f
-c`` for the system calls it makes. The figure per operation is
(count(N2) - count(N1)) / (N2 - N1): start-up, imports and teardown are
the same in both runs and cancel. Instruction counts repeat from run to
run (the interpreter runs with PYTHONHASHSEED=0 and writes no bytecode
during a counted run), unlike time on a shared machine: to the instruction
for the cases that do not import pymach, within a few instructions per
operation for those that do.

Every case checks every result (a kern_return_t, a byte count, the
record's content, the credentials, a reply's id), as the timed benchmark
does: a case that fails exits non-zero, and BenchError names it.

The counted interpreter runs this file as a script (``python -P
_callgrind.py CASE N``): at module level it imports only the standard
library. The baseline cases take their sockets from pymach._linux.unix
(the bare socketpair, as the runtime makes it); the rest of pymach is
imported only by the cases that use it.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable

ROUND = 64  # bytes per message (bench_ipc's)
REQUEST_ID = 0x1C0  # msgh_id (bench_ipc's)
MSG = b"x" * ROUND
LENGTHS = {"instructions": (200, 1200), "syscalls": (2000, 12000)}  # the two loop lengths
TIMEOUT = 900  # seconds one counted run may take before it is called failed

# (name, label); the baseline first, multiprocessing.Pipe third
CASES: list[tuple[str, str]] = [
    ("raw", "raw SEQPACKET socketpair send + recv (baseline)"),
    ("passcred", "the same, receiver with SO_PASSCRED and recvmsg"),
    ("pipe", "multiprocessing.Pipe send_bytes + recv_bytes"),
    ("bare", "floor: copy in, send, recvmsg + creds, copy out"),
    ("mach", "pymach.mach mach_msg send + receive, own port"),
    ("pythonic", "pymach SendRight.send + Port.receive"),
    ("request", "pymach request() + a thread's receive + reply.send"),
    ("mig_hand", "MIG round trip by hand: mach_msg, a thread serves"),
    ("mig", "MIG round trip generated: C stub, demux in a thread"),
]
PIPE = "pipe"


class CaseError(RuntimeError):
    """A result in a counted case is not what it must be."""


# -- the cases, run in the counted interpreter -------------------------------------------

def _raw(n: int) -> None:
    from pymach._linux import unix
    a, b = unix.plain_pair()
    with a, b:
        send, recv = a.send, b.recv
        for _ in range(n):
            if send(MSG) != ROUND or recv(256) != MSG:
                raise CaseError("send + recv: a short count, or another record")


def _passcred(n: int) -> None:
    from pymach._linux import unix
    a, b = unix.plain_pair()
    with a, b:
        unix.set_passcred(b, True)
        room = unix.CRED_SPACE  # struct ucred
        me = os.getpid().to_bytes(4, sys.byteorder)
        send, recvmsg = a.send, b.recvmsg
        creds = unix.SOL_SOCKET, unix.SCM_CREDENTIALS
        for _ in range(n):
            if send(MSG) != ROUND:
                raise CaseError("send: a short count")
            data, anc, _flags, _addr = recvmsg(256, room)
            if data != MSG or len(anc) != 1 or anc[0][:2] != creds or anc[0][2][:4] != me:
                raise CaseError("recvmsg: another record, or not our credentials")


def _pipe(n: int) -> None:
    import multiprocessing
    a, b = multiprocessing.Pipe()
    with a, b:
        send, recv = a.send_bytes, b.recv_bytes
        for _ in range(n):
            send(MSG)
            if recv() != MSG:
                raise CaseError("recv_bytes: another message")


def _bare(n: int) -> None:
    """What every mach_msg written in Python must do at the least, and
    nothing more: the call with mach_msg's seven arguments, the message
    copied out of the caller's ctypes buffer, one send, one recvmsg with
    the sender's credentials (the trailer's audit token needs them), and
    the record copied into the receiver's ctypes buffer. No name lookup,
    no right checked, no header rewritten, no trailer, no queue limit."""
    import ctypes

    from pymach._linux import unix

    class Msg(ctypes.Structure):
        _fields_ = [("h", ctypes.c_char * 24), ("data", ctypes.c_char * (ROUND + 64))]

    a, b = unix.plain_pair()
    with a, b:
        unix.set_passcred(b, True)
        room = unix.CRED_SPACE
        buf = bytearray(1 << 16)
        cbuf = (ctypes.c_char * len(buf)).from_buffer(buf)
        addressof, string_at, memmove = ctypes.addressof, ctypes.string_at, ctypes.memmove

        def mach_msg(msg: Any, option: int, send_size: int, rcv_size: int, rcv_name: int, timeout: int,
                     notify: int) -> int:
            addr = addressof(msg)
            if option & 1:
                a.send(string_at(addr, send_size))
            if option & 2:
                got, anc, _flags, _addr = b.recvmsg_into((buf,), room)
                if got > rcv_size or not anc:
                    return 0x10004004  # MACH_RCV_TOO_LARGE, or no credentials
                memmove(addr, cbuf, got)
            return 0

        m, r = Msg(), Msg()
        m.data = MSG
        size = 24 + ROUND
        rsize = ctypes.sizeof(r)
        for _ in range(n):
            if mach_msg(m, 1, size, 0, 0, 0, 0) or mach_msg(r, 2, 0, rsize, 0, 0, 0) or r.data != MSG:
                raise CaseError("the floor's send + receive: another record")


def _kr_text(kr: int) -> str:
    from pymach.mach import mach_error_string
    return f"{mach_error_string(kr)} ({kr:#x})"


def _mach(n: int) -> None:
    import ctypes

    import pymach
    from pymach import mach as M

    class Msg(ctypes.Structure):
        _pack_ = 4
        _fields_ = [("h", M.mach_msg_header_t), ("data", ctypes.c_char * (ROUND + 64)), ("t", M.mach_msg_trailer_t)]

    hdr = ctypes.sizeof(M.mach_msg_header_t)
    with pymach.Port() as port, port.make_send() as right:
        m, r = Msg(), Msg()
        m.data = MSG
        body = (ctypes.c_char * ROUND).from_buffer(r, hdr)
        h, rh = m.h, r.h
        bits, dest, pname, rsize = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0), right.name, port.name, \
            ctypes.sizeof(r)
        mach_msg, snd, rcv = M.mach_msg, M.MACH_SEND_MSG, M.MACH_RCV_MSG
        size = hdr + ROUND
        for _ in range(n):
            h.msgh_bits = bits
            h.msgh_size = size
            h.msgh_remote_port = dest
            h.msgh_local_port = 0
            h.msgh_id = REQUEST_ID
            kr = mach_msg(h, snd, size, 0, 0, 0, 0)
            if kr:
                raise CaseError(f"mach_msg send: {_kr_text(kr)}")
            kr = mach_msg(rh, rcv, 0, rsize, pname, 0, 0)
            if kr or rh.msgh_id != REQUEST_ID or rh.msgh_size != size or body.raw != MSG:
                raise CaseError(f"mach_msg receive: {_kr_text(kr)}, msgh_id {rh.msgh_id:#x}, "
                                f"msgh_size {rh.msgh_size}")


def _pythonic(n: int) -> None:
    import pymach
    with pymach.Port() as port, port.make_send() as right:
        send, receive = right.send, port.receive
        for _ in range(n):
            send(MSG, id=REQUEST_ID)  # raises MachError when it fails
            m = receive()
            if m.data != MSG or m.id != REQUEST_ID:
                raise CaseError("Port.receive: another message")


def _request(n: int) -> None:
    import threading

    import pymach
    errors: list[BaseException] = []
    with pymach.Port() as port, port.make_send() as right:
        def serve() -> None:
            m = None
            try:
                for _ in range(n):
                    m = port.receive()
                    if m.data != MSG or m.reply is None:
                        raise CaseError("the server's Port.receive: another message")
                    m.reply.send(m.data, id=m.id)
                    m = None
            except BaseException as e:  # pylint: disable=broad-exception-caught
                errors.append(e)
                if m is not None:
                    m.release()  # the client's reply port gets the send-once notification
                port.close()

        t = threading.Thread(target=serve, name="bench-server", daemon=True)
        t.start()
        request = pymach.request
        for _ in range(n):
            r = request(right, MSG, id=REQUEST_ID)  # raises MachError when it fails
            if r.data != MSG or r.id != REQUEST_ID:
                raise CaseError(f"request(): not the reply {errors[:1]}")
        t.join(60)
        if t.is_alive() or errors:
            raise CaseError(f"the server thread: {errors[:1] or 'still running'}")


def _mig_case(n: int, generated: bool) -> None:
    """A MIG routine with one int in and one out (pymach bench mig's),
    called n times by hand or through the generated stub, answered by
    a thread with a hand-written server or the generated demux."""
    import threading

    import pymach
    from pymach.tools import bench_mig
    errors: list[BaseException] = []
    case = "mig" if generated else "mig_hand"
    with pymach.Port() as port, port.make_send() as right:
        serve = (bench_mig._generated_server if generated else bench_mig._hand_server)(n)

        def server() -> None:
            try:
                serve(port)
            except BaseException as e:  # pylint: disable=broad-exception-caught
                errors.append(e)
                port.close()  # the client's reply port gets the send-once notification

        t = threading.Thread(target=server, name="bench-server", daemon=True)
        t.start()
        (bench_mig.generated_client if generated else bench_mig.hand_client)(right.name, case)(n)
        t.join(60)
        if t.is_alive() or errors:
            raise CaseError(f"the server thread: {errors[:1] or 'still running'}")


_RUN: dict[str, Callable[[int], None]] = {
    "raw": _raw, "passcred": _passcred, "pipe": _pipe, "bare": _bare, "mach": _mach, "pythonic": _pythonic,
    "request": _request, "mig_hand": lambda n: _mig_case(n, False), "mig": lambda n: _mig_case(n, True)}


def child(argv: list[str]) -> None:
    """The counted interpreter's entry: ``CASE N``."""
    case, n = argv
    _RUN[case](int(n))


def _prog(case: str, n: int) -> list[str]:
    """The counted interpreter's command line: this file as a script (-P:
    its directory is not put on sys.path)."""
    return [sys.executable, "-P", os.path.realpath(__file__), case, str(n)]


# -- counting ------------------------------------------------------------------------------

def tool_missing(mode: str) -> str | None:
    """What is missing for ``mode`` ("instructions" or "syscalls"), or None."""
    import shutil
    tool = "valgrind" if mode == "instructions" else "strace"
    if shutil.which(tool) is None:
        return f"{tool} is not installed (on Debian: apt-get install {tool})"
    return None


def tool_version(mode: str) -> str:
    import subprocess
    tool = ["valgrind", "--version"] if mode == "instructions" else ["strace", "-V"]
    out = subprocess.run(tool, capture_output=True, text=True, timeout=60, check=False).stdout
    return out.strip().splitlines()[0] if out.strip() else tool[0]


def _env() -> dict[str, str]:
    """This interpreter's environment, with this pymach first on the path,
    a fixed hash seed, and no bytecode written."""
    import pymach
    root = os.path.dirname(os.path.dirname(os.path.realpath(pymach.__file__)))
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _run(cmd: list[str], env: dict[str, str], label: str) -> None:
    import subprocess

    from .bench_ipc import fail
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        fail(label, f"no end after {TIMEOUT} s")
    if p.returncode:
        lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("==")]
        fail(label, f"the case exited with {p.returncode}: {lines[-1] if lines else '(nothing on stderr)'}")


def _ir(path: Path, label: str) -> int:
    """The total instructions of a callgrind output file."""
    from .bench_ipc import fail
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    fail(label, f"no instruction total in {path.name}")


# a row of strace -c: % time, seconds, usecs/call, calls, [errors,] syscall
_ROW = r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$"


def _calls(path: Path, label: str) -> dict[str, int]:
    """{system call: calls} from ``strace -c`` output."""
    import re

    from .bench_ipc import fail
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        m = re.match(_ROW, line)
        if m and m.group(2) != "total":
            out[m.group(2)] = int(m.group(1))
    if not out:
        fail(label, f"no system call counts in {path.name}")
    return out


def _count(mode: str, case: str, label: str, n: int, work: Path, env: dict[str, str]) -> Any:
    out = work / f"{case}.{n}.out"
    prog = _prog(case, n)
    if mode == "instructions":
        _run(["valgrind", "-q", "--tool=callgrind", f"--callgrind-out-file={out}", *prog], env, label)
        return _ir(out, label)
    _run(["strace", "-f", "-c", "-o", str(out), *prog], env, label)
    return _calls(out, label)


def count(mode: str, lengths: tuple[int, int], cases: list[str] | None = None,
          jobs: int | None = None) -> list[dict[str, Any]]:
    """The ``cases`` (names from CASES, all by default, in CASES' order)
    counted at both ``lengths``: rows of {"case" (its label), "name",
    "per_op" (instructions or system calls per operation), "counts" (the
    two totals, for instructions), "calls" ({system call: calls per
    operation}, for syscalls)}. Each case first runs once uncounted, with
    the shorter length, as a check (and to write its bytecode). Raises
    BenchError when a case fails or its count does not grow with the
    loop."""
    import concurrent.futures
    import tempfile
    from pathlib import Path

    from .bench_ipc import MSG as BENCH_MSG, REQUEST_ID as BENCH_ID, fail
    assert (MSG, REQUEST_ID) == (BENCH_MSG, BENCH_ID)
    n1, n2 = lengths
    if not 0 < n1 < n2:
        raise ValueError(f"lengths {lengths}: need 0 < N1 < N2")
    chosen = [(c, label) for c, label in CASES if cases is None or c in cases]
    env = _env()
    check = dict(env)
    del check["PYTHONDONTWRITEBYTECODE"]
    labels = dict(chosen)
    for case, label in chosen:
        _run(_prog(case, n1), check, label)
    runs = [(case, n) for case, _ in chosen for n in (n1, n2)]
    with tempfile.TemporaryDirectory(prefix="pymach-bench-count-") as d:
        work = Path(d)
        with concurrent.futures.ThreadPoolExecutor(jobs or min(2, os.cpu_count() or 1)) as pool:
            futures = {run: pool.submit(_count, mode, run[0], labels[run[0]], run[1], work, env) for run in runs}
            try:
                results = {run: f.result() for run, f in futures.items()}
            except BaseException:
                pool.shutdown(cancel_futures=True)  # the runs not yet started
                raise
    rows: list[dict[str, Any]] = []
    for case, label in chosen:
        a, b = results[(case, n1)], results[(case, n2)]
        if mode == "instructions":
            per = (b - a) / (n2 - n1)
            rows.append({"case": label, "name": case, "per_op": per, "counts": [a, b]})
        else:
            calls = {k: (b.get(k, 0) - a.get(k, 0)) / (n2 - n1) for k in set(a) | set(b)}
            per = sum(calls.values())
            rows.append({"case": label, "name": case, "per_op": per,
                         "calls": {k: v for k, v in sorted(calls.items(), key=lambda kv: (-round(kv[1], 2), kv[0]))
                                   if abs(v) >= 0.005}})
        if per <= 0:
            fail(label, f"the count did not grow with the loop ({a} at N={n1}, {b} at N={n2})")
    return rows


if __name__ == "__main__":
    child(sys.argv[1:])
