"""pymach catch: run a program with pymach as its exception handler, and
report its crash as macOS's crash reports do.

    $ pymach catch -- python3 -c "import ctypes; ctypes.string_at(0)"
    Process:         python3 [4242]
    Exception Type:  EXC_BAD_ACCESS (SIGSEGV)
    Exception Codes: KERN_INVALID_ADDRESS at 0x0000000000000000
    ...

The program starts held (a shell waits on a pipe before it execs the
program), pymach sets its task's exception ports (catch_exceptions: the
program's exception tracer starts), and then lets it go. A fault is caught
before the program's signal handlers run; the handler records the report
(exception, codes, the faulting thread's registers, the region around the
fault address as vmmap shows it, a backtrace by frame pointers) and
declines, so the fault goes on to the signal: the program ends exactly as
it would have, and ``pymach catch`` ends the same way (a SIGSEGV death is
status 139 in a shell). ``--pid PID`` attaches to a running process and
reports until it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

import pymach
from .._kern import exception as E
from .._kern import kern_return as K
from .._kern import task_user as TU
from .._linux import files, pidfd, process
from .._linux.tracer import SIGBUS, SIGFPE, SIGILL, SIGSEGV, SIGTRAP
from ._cli import PID, ArgumentParser
from .vmmap import rows_for

MASK = E.EXC_MASK_BAD_ACCESS | E.EXC_MASK_BAD_INSTRUCTION | E.EXC_MASK_ARITHMETIC | E.EXC_MASK_BREAKPOINT
_KR_NAMES = {v: k for k, v in vars(K).items() if k.startswith("KERN_") and isinstance(v, int)}
_REGS = ("rax", "rbx", "rcx", "rdx", "rdi", "rsi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
         "r15", "rip", "rflags", "cs", "fs", "gs")


def _signal_of(exc: pymach.MachException) -> int:
    """The signal the fault becomes when nobody handles it."""
    if exc.type == E.EXC_BAD_ACCESS:
        return SIGBUS if exc.code == K.KERN_MEMORY_ERROR else SIGSEGV
    return {E.EXC_BAD_INSTRUCTION: SIGILL, E.EXC_ARITHMETIC: SIGFPE, E.EXC_BREAKPOINT: SIGTRAP}.get(exc.type, SIGSEGV)


def _region(pid: int, addr: int) -> dict[str, Any]:
    """The region that holds ``addr`` (or the ones around it), as vmmap shows them."""
    try:
        rows, _comm, _exe = rows_for(pid)
    except (K.MachError, OSError) as e:
        return {"error": str(e)}
    below = [r for r in rows if r.start <= addr]
    above = [r for r in rows if r.start > addr]
    here = below[-1] if below and addr < below[-1].end else None
    out: dict[str, Any] = {"address": addr}
    if here is not None:
        out["region"] = here.as_json()
    else:
        if below:
            out["before"] = below[-1].as_json()
        if above:
            out["after"] = above[0].as_json()
    return out


def _backtrace(task: pymach.Task, pid: int, rip: int, rbp: int) -> list[dict[str, Any]]:
    """The return addresses along the frame-pointer chain (as far as the
    frames keep one), each with the file it lies in."""
    maps: list[tuple[int, int, int, str]] = []
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                maps.append((lo, hi, int(parts[2], 16), parts[5].strip() if len(parts) > 5 else ""))
    except OSError:
        pass

    def where(a: int) -> dict[str, Any]:
        for lo, hi, off, path in maps:
            if lo <= a < hi:
                name = os.path.basename(path) if path else "?"
                return {"address": a, "image": name, "offset": a - lo + off}
        return {"address": a, "image": "?", "offset": 0}

    frames = [where(rip)]
    fp = rbp
    for _ in range(64):
        if not fp or fp & 7:
            break
        try:
            raw = task.read(fp, 16)
        except (pymach.MachError, OSError):
            break
        nxt, ret = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")
        if not ret:
            break
        frames.append(where(ret))
        if nxt <= fp:
            break
        fp = nxt
    return frames


def _report(pid: int, task: pymach.Task, exc: pymach.MachException) -> dict[str, Any]:
    try:
        tid = TU.thread_of(exc.thread).tid
    except (K.MachError, OSError):
        tid = 0
    try:
        comm = open(f"/proc/{pid}/comm").read().strip()
        path = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        comm, path = "?", "?"
    sig = _signal_of(exc)
    return {
        "process": comm, "pid": pid, "path": path,
        "exception": exc.name, "signal": process.signal_name(sig),
        "codes": [exc.code, exc.subcode],
        "code_name": _KR_NAMES.get(exc.code, "") if exc.type == E.EXC_BAD_ACCESS else "",
        "thread": tid,
        "state": exc.state,
        "region": _region(pid, exc.address) if exc.type == E.EXC_BAD_ACCESS else None,
        "backtrace": _backtrace(task, pid, exc.state.get("rip", 0), exc.state.get("rbp", 0)),
    }


def _row(r: dict[str, Any]) -> str:
    """A region as vmmap prints it."""
    from .vmmap import human
    return (f"{r.get('type', '?'):<20} {r.get('start', 0):016x}-{r.get('end', 0):016x} "
            f"[{human(int(r.get('vsize', 0))):>6}] {r.get('protection', '')}/{r.get('max_protection', '')} "
            f"SM={r.get('share_mode', '')} {r.get('detail', '')}").rstrip()


def render(rep: dict[str, Any]) -> str:
    """The report as text, in the spirit of macOS's crash reports."""
    lines = [f"Process:         {rep['process']} [{rep['pid']}]", f"Path:            {rep['path']}", "",
             f"Exception Type:  {rep['exception']} ({rep['signal']})"]
    code, sub = rep["codes"]
    if rep["code_name"]:
        lines.append(f"Exception Codes: {rep['code_name']} at 0x{sub:016x}")
    else:
        lines.append(f"Exception Codes: 0x{code & (1 << 64) - 1:016x}, 0x{sub & (1 << 64) - 1:016x}")
    lines += [f"Crashed Thread:  tid {rep['thread']}", "", "Thread State (x86_THREAD_STATE64):"]
    regs = [f"{n:>6}: 0x{rep['state'].get(n, 0):016x}" for n in _REGS]
    for i in range(0, len(regs), 4):
        lines.append("  ".join(regs[i:i + 4]))
    lines += ["", "Backtrace (frame pointers):"]
    for i, fr in enumerate(rep["backtrace"]):
        lines.append(f"{i:<3} {fr['image']:<30} 0x{fr['address']:016x} {fr['image']} + {fr['offset']:#x}")
    reg = rep.get("region")
    if reg is not None:
        lines += ["", f"VM Region at 0x{reg.get('address', 0):016x}:"]
        if "region" in reg:
            lines.append("--> " + _row(reg["region"]))
        else:
            lines.append(f"    0x{reg.get('address', 0):x} is not in any region")
            if "before" in reg:
                lines.append("    before: " + _row(reg["before"]))
            if "after" in reg:
                lines.append("    after:  " + _row(reg["after"]))
    return "\n".join(lines)


def _end_as(status: int) -> int:
    """Exit as the program did: the same code, or the same signal."""
    if status >= 0:
        return status
    process.die_of(-status)
    return 128 - status  # (a signal whose default is not to end the process)


def main(argv: list[str]) -> int:
    """Entry point of ``pymach catch``: the program's own exit status (or
    its death by the same signal); 1 when the program cannot be started or
    caught, 2 for a bad argument."""
    ap = ArgumentParser(prog="pymach catch",
                        description="Run a program (or attach to a process) with pymach as its exception "
                                    "handler, and report its crash.")
    ap.add_argument("--json", action="store_true", help="the reports as JSON, on stdout")
    ap.add_argument("--pid", type=PID, help="attach to this running process until it exits")
    ap.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM ARGS...")
    a = ap.parse_args(argv)
    prog = a.program[1:] if a.program[:1] == ["--"] else a.program
    if bool(prog) == bool(a.pid):
        ap.error("give a program to run (after --) or --pid PID")
    reports: list[dict[str, Any]] = []
    child = None
    if prog:
        r, w = files.pipe()
        try:
            child = subprocess.Popen(["/bin/sh", "-c", f'read _ < /dev/fd/{r}; exec "$@"', "sh", *prog],
                                     pass_fds=[r])
        except OSError as e:
            print(f"pymach catch: {e}", file=sys.stderr)
            return 1
        finally:
            files.close(r)
        pid = child.pid
    else:
        pid = a.pid
    try:
        task = pymach.Task.for_pid(pid)
    except pymach.MachError as e:
        print(f"pymach catch: cannot catch process {pid}: {e}", file=sys.stderr)
        if child is not None:
            files.close(w)
            child.wait()
        return 1

    def handler(exc: pymach.MachException) -> None:
        rep = _report(pid, task, exc)
        reports.append(rep)
        if not a.json:
            print(render(rep), file=sys.stderr, flush=True)
        return None  # declined: the fault goes on to the signal, as it would have

    try:
        with task, pymach.catch_exceptions(task, MASK, handler):
            if child is not None:
                files.write(w, b"go\n")
                files.close(w)
                status = child.wait()
            else:
                pidfd.wait_exit(pid)
                status = 0
    except pymach.MachError as e:
        print(f"pymach catch: cannot catch process {pid}: {e}", file=sys.stderr)
        if child is not None:
            child.kill()
            child.wait()
        return 1
    if a.json:
        json.dump({"pid": pid, "status": status, "reports": reports}, sys.stdout, indent=1)
        print()
    sys.stdout.flush()
    sys.stderr.flush()
    return _end_as(status) if child is not None else 0
