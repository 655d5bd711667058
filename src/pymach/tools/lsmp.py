"""pymach lsmp PID: the ports of a pymach process, as macOS lsmp lists
them: each name, its rights and user references, and for receive rights
the queue limit, the messages queued, the sequence number and the
make-send count; for a task, thread or memory entry, what it names. It
asks the process itself (servers/introspect.py).
PID is read as C's strtoul(s, NULL, 0) reads it."""

from __future__ import annotations

import json
import sys

from ..servers import introspect
from ._cli import PID, ArgumentParser, no_user_memory


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pymach lsmp``: exit status 0, 1 when the process
    does not exist, is a kernel thread or a zombie, does not run pymach or
    refuses us, 2 for a bad argument."""
    ap = ArgumentParser(prog="pymach lsmp", description=__doc__)
    ap.add_argument("pid", metavar="PID", type=PID, help="a process that runs pymach")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    a = ap.parse_args(argv)
    why = no_user_memory(a.pid)
    if why:
        print(f"pymach lsmp: process {a.pid}: {why}", file=sys.stderr)
        return 1
    try:
        answer = introspect.query(a.pid, "ports")
    except PermissionError as e:
        print(f"pymach lsmp: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"pymach lsmp: process {a.pid}: {e}", file=sys.stderr)
        return 1
    if answer is None:
        why = no_user_memory(a.pid) or "does not run pymach"  # or is gone by now
        print(f"pymach lsmp: process {a.pid}: {why}", file=sys.stderr)
        return 1
    if a.json:
        json.dump(answer, sys.stdout, indent=2)
        print()
        return 0
    rows = answer["ports"]
    print(f"Process ({a.pid}) : {len(rows)} names")
    print(f"  {'name':<10} {'rights':<16} {'urefs':>5} {'qlimit':>6} {'msgcount':>8} {'seqno':>6} "
          f"{'mscount':>7}  object")
    for r in rows:
        port = r.get("object") == "port"
        rights = "+".join(r["rights"]) + (" (dnreq)" if r["dnrequest"] else "")
        detail = r["object"]
        if "pid" in r:
            what = [f"pid {r['pid']}"] + ([f"tid {r['tid']}"] if "tid" in r else [])
            if r.get("flavor", "control") != "control":
                what.append(r["flavor"])  # a read, inspect or name port
            detail += f" ({', '.join(what)})"
        if "size" in r:
            detail += f" ({r['size']} bytes at offset {r['offset']:#x})"
        if r.get("object") == "semaphore":
            detail += " (destroyed)" if r["destroyed"] else f" (count {r['count']})"
        print(f"  {r['name']:#010x} {rights:<16} {r['urefs']:>5} "
              f"{(r['qlimit'] if port else '-'):>6} {(r['msgcount'] if port else '-'):>8} "
              f"{(r['seqno'] if port else '-'):>6} {(r['mscount'] if port else '-'):>7}  {detail}")
    return 0
