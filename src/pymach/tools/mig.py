"""pymach mig: the Mach Interface Generator, as Apple's ``mig`` is called:
``pymach mig [-I DIR]... [-D NAME[=VALUE]]... [-U NAME]... [-novouchers]
--layout FILE.defs`` prints, as JSON on stdout, the request and reply
layouts of every routine of FILE.defs (in id order, fields as mig names
the struct members, sizes as the LP64 C structs give them). Errors in the
file are reported as ``file:line: message`` (exit status 1). ``-user
FILE.py``, ``-server FILE.py`` and ``-header FILE.py`` write Python
modules: the client (mig's stubs and the Pythonic client), the server
(the demux over an implementation) and the messages' ctypes structs
(see pymach.mig.codegen); ``-static FILE.py`` a self-contained module
(struct and typing only, no compiler at import): the ids,
the layouts and struct packers of the messages."""

from __future__ import annotations

import json
import os
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
    ap.add_argument("-user", metavar="FILE.py", help="write the client module")
    ap.add_argument("-server", metavar="FILE.py", help="write the server module")
    ap.add_argument("-header", metavar="FILE.py", help="write the messages' structs")
    ap.add_argument("-static", metavar="FILE.py",
                    help="write a self-contained module (the standard library only): ids, layouts, packers")
    ap.add_argument("--layout", action="store_true", help="print the layouts as JSON")
    ap.add_argument("--system-cpp", action="store_true",
                    help="run the system's cpp instead of pcpp, the preprocessor written in Python")
    ap.add_argument("defs", metavar="FILE.defs", help="the interface definition")
    a = ap.parse_args(argv)
    if not (a.layout or a.user or a.server or a.header or a.static):
        print("pymach mig: nothing to do: give --layout, -user FILE.py, -server FILE.py, -header FILE.py "
              "or -static FILE.py",
              file=sys.stderr)
        return 2
    from ..mig import MigError, compile_text, preprocess
    try:
        text = preprocess(a.defs, a.include, dict(_define(d) for d in a.define), a.undefine,
                          system_cpp=a.system_cpp)
        sub = compile_text(text, a.defs)
    except MigError as e:
        print(e, file=sys.stderr)
        return 1
    if not a.quiet:
        for w in sub.warnings:
            print(w, file=sys.stderr)
    if a.layout:
        print(layout_json(sub))
    from ..mig import codegen
    try:
        for path, kind in ((a.user, "user"), (a.server, "server"), (a.header, "header"), (a.static, "static")):
            if path:
                source = (codegen.user_module(sub, text, a.defs) if kind == "user" else
                          codegen.server_module(sub, text, a.defs) if kind == "server" else
                          codegen.header_module(sub, a.defs) if kind == "header" else
                          codegen.static_module(sub, os.path.basename(a.defs)))
                with open(path, "w", encoding="utf-8") as f:
                    f.write(source)
    except OSError as e:
        print(f"pymach mig: {e}", file=sys.stderr)
        return 1
    return 0
