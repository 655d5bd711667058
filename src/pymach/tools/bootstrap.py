"""pymach bootstrap: run the bootstrap server, and ask it what it knows.

    pymach bootstrap serve [--socket PATH] [-v]     the server, in the foreground
        [--max-names-per-client N] [--max-rights-per-client N] [--max-names N] [--max-rights N]
    pymach bootstrap list [--json]                  PID, STATUS and NAME of every service
    pymach bootstrap status NAME                    one service's status

The socket is $PYMACH_BOOTSTRAP_SOCKET, else $XDG_RUNTIME_DIR/pymach/bootstrap,
else /tmp/pymach-<uid>/bootstrap (--socket sets PYMACH_BOOTSTRAP_SOCKET).
Numbers (FD, N) are read as C's strtoul(s, NULL, 0) reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ._cli import INT_MAX, ArgumentParser, number

FD = number("an fd", INT_MAX)
COUNT = number("a limit", INT_MAX)


def main(argv: list[str]) -> int:
    """Entry point of ``pymach bootstrap``."""
    ap = ArgumentParser(prog="pymach bootstrap", description="The per-user bootstrap server.")
    ap.add_argument("--socket", metavar="PATH", help="the server's socket (sets PYMACH_BOOTSTRAP_SOCKET)")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the server (in the foreground unless --daemonize)")
    s.add_argument("--socket", metavar="PATH", dest="socket_sub", help=argparse.SUPPRESS)
    s.add_argument("-v", "--verbose", action="store_true", help="log each request to stderr")
    s.add_argument("--daemonize", action="store_true", help="fork into the background once listening")
    s.add_argument("--ready-fd", type=FD, metavar="FD", help='write "ready" on FD once clients can connect')
    s.add_argument("--max-names-per-client", type=COUNT, metavar="N",
                   help="live names one process may check in, register or create")
    s.add_argument("--max-rights-per-client", type=COUNT, metavar="N",
                   help="live connections (bootstrap port rights) one process may hold")
    s.add_argument("--max-names", type=COUNT, metavar="N", help="live names in all")
    s.add_argument("--max-rights", type=COUNT, metavar="N", help="live connections in all")
    ls = sub.add_parser("list", help="PID, STATUS and NAME of every service, like launchctl list")
    ls.add_argument("--socket", metavar="PATH", dest="socket_sub", help=argparse.SUPPRESS)
    ls.add_argument("--json", action="store_true", help="a JSON array of {name, status, pid}")
    st = sub.add_parser("status", help="the status of one service")
    st.add_argument("--socket", metavar="PATH", dest="socket_sub", help=argparse.SUPPRESS)
    st.add_argument("name")
    a = ap.parse_args(argv)
    sock = getattr(a, "socket_sub", None) or a.socket
    if sock:
        os.environ["PYMACH_BOOTSTRAP_SOCKET"] = os.path.abspath(sock)
    if a.command == "serve":
        from ..servers.bootstrap import serve
        limits = {"names_per_client": a.max_names_per_client, "rights_per_client": a.max_rights_per_client,
                  "names": a.max_names, "rights": a.max_rights}
        return serve(None, daemonize=a.daemonize, ready_fd=a.ready_fd, verbose=a.verbose, limits=limits)
    from .. import bootstrap
    try:
        if a.command == "list":
            rows = bootstrap.services()
            if a.json:
                print(json.dumps([{"name": r.name, "status": r.status_name, "pid": r.pid} for r in rows], indent=2))
            else:
                print("PID\tSTATUS\tNAME")
                for r in rows:
                    print(f"{r.pid if r.pid is not None else '-'}\t{r.status_name}\t{r.name}")
            return 0
        code = bootstrap.status(a.name)
        from ..mach.bootstrap_defs import STATUS_WORDS
        print(f"{a.name}: {STATUS_WORDS.get(code, code)}")
        return 0
    except bootstrap.BootstrapError as e:
        print(f"pymach bootstrap: {e}", file=sys.stderr)
        return 1
