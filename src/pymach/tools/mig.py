"""pymach mig: the Mach Interface Generator, as Apple's ``mig`` is called:
``pymach mig [-I DIR]... [-D NAME[=VALUE]]... [-U NAME]... [-novouchers]
--layout FILE.defs`` prints, as JSON on stdout, the request and reply
layouts of every routine of FILE.defs (in id order, fields as mig names
the struct members, sizes as the LP64 C structs give them). Errors in the
file are reported as ``file:line: message`` (exit status 1). Generating
Python modules (``-user``, ``-server``, ``-header``) is not implemented
yet (exit status 2)."""

from __future__ import annotations

import json
import sys

from ._cli import ArgumentParser


def _define(text: str) -> tuple[str, str | None]:
    name, eq, value = text.partition("=")
    return name, (value if eq else None)


def layout_json(sub: object) -> str:
    """The subsystem's layouts as JSON text: one routine a line."""
    from ..mig import Subsystem
    assert isinstance(sub, Subsystem)
    d = sub.to_json()
    routines = d.pop("routines")
    assert isinstance(routines, list)
    head = json.dumps(d)[:-1]
    if not routines:
        return head + ', "routines": []}'
    body = ",\n  ".join(json.dumps(r) for r in routines)
    return head + ', "routines": [\n  ' + body + "\n]}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pymach mig``: 0, 1 for a .defs file that mig
    refuses (or that cannot be read or preprocessed), 2 for bad arguments
    and for what is not implemented yet."""
    ap = ArgumentParser(prog="pymach mig", description=__doc__, allow_abbrev=False)
    ap.add_argument("-I", dest="include", action="append", default=[], metavar="DIR",
                    help="add DIR to the preprocessor's include path")
    ap.add_argument("-D", dest="define", action="append", default=[], metavar="NAME[=VALUE]",
                    help="define a preprocessor macro")
    ap.add_argument("-U", dest="undefine", action="append", default=[], metavar="NAME",
                    help="undefine a preprocessor macro")
    ap.add_argument("-novouchers", action="store_true",
                    help="as mig's: no voucher code in the stubs (the layouts are the same)")
    ap.add_argument("-q", dest="quiet", action="store_true", help="no warnings")
    ap.add_argument("-user", metavar="FILE.py", help="write the client module (not implemented yet)")
    ap.add_argument("-server", metavar="FILE.py", help="write the server module (not implemented yet)")
    ap.add_argument("-header", metavar="FILE.py", help="write the types module (not implemented yet)")
    ap.add_argument("--layout", action="store_true", help="print the layouts as JSON")
    ap.add_argument("--system-cpp", action="store_true",
                    help="run the system's cpp instead of pcpp, the preprocessor written in Python")
    ap.add_argument("defs", metavar="FILE.defs", help="the interface definition")
    a = ap.parse_args(argv)
    if not a.layout:
        print("pymach mig: generating Python modules (-user, -server, -header) is not implemented yet; "
              "--layout prints the layouts", file=sys.stderr)
        return 2
    from ..mig import MigError, compile_defs
    try:
        sub = compile_defs(a.defs, include=a.include, defines=dict(_define(d) for d in a.define),
                           undefines=a.undefine, system_cpp=a.system_cpp)
    except MigError as e:
        print(e, file=sys.stderr)
        return 1
    if not a.quiet:
        for w in sub.warnings:
            print(w, file=sys.stderr)
    print(layout_json(sub))
    return 0
