"""The pymach command: ``pymach tour``, ``bench``, ``bootstrap``, ``lsmp``, ``vmmap``, ``vm``, ``mig``,
``catch``, ``vm_stat`` and ``netmsg``.

Every number on the command line is read as C's ``strtoul(s, NULL, 0)``
reads it (``strtoul``): ``0x10``, ``020`` and ``16`` are the same number,
and an error names the argument it is about.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

# the commands' shared helpers, under the names they always had here
from ._cli import (ADDRESS as ADDRESS, INT_MAX as INT_MAX, PID as PID, SIZE as SIZE, ULONG_MAX as ULONG_MAX,
                   ArgumentParser as ArgumentParser, no_user_memory as no_user_memory, number as number,
                   strtoul as strtoul)


def version() -> str:
    """What ``pymach --version`` prints: pymach's version and where it runs
    from, Python's version and the kernel's release and machine. The
    version is the metadata of the installed distribution that holds the
    running package; run from a source tree (no metadata), pyproject.toml's."""
    import pymach
    here = Path(pymach.__file__).resolve().parent
    ver, how = _dist_version(here), ""
    if ver is None:
        ver, how = _source_version(here), " (source tree: the version of pyproject.toml)"
    if ver is None:
        ver, how = pymach.__version__, " (no metadata found)"
    return (f"pymach {ver} from {here}{how}\n"
            f"Python {platform.python_version()} ({platform.python_implementation()}, {sys.executable})\n"
            f"{platform.system()} {platform.release()} {platform.machine()}")


def _dist_version(here: Path) -> str | None:
    """The version in the metadata of the installed distribution, if the
    pymach that runs is that distribution's."""
    from importlib import metadata
    try:
        dist = metadata.distribution("pymach")
    except metadata.PackageNotFoundError:
        return None
    installed = Path(str(dist.locate_file("pymach/__init__.py"))).resolve().parent
    return dist.version if installed == here else None


def _source_version(here: Path) -> str | None:
    """The version of pyproject.toml when pymach runs from a source tree
    (src/pymach beside it)."""
    import tomllib
    try:
        with open(here.parent.parent / "pyproject.toml", "rb") as f:
            project = tomllib.load(f).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    v = project.get("version") if project.get("name") == "pymach" else None
    return v if isinstance(v, str) else None


class _Version(argparse.Action):
    """``--version``: print version() and exit (worked out only when asked)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(version())
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pymach`` console script and ``python -m pymach``."""
    argv = sys.argv[1:] if argv is None else argv
    ap = ArgumentParser(
        prog="pymach",
        description="Mach VM and IPC on Linux. Commands: tour (the book's examples, run and "
                    "explained), bench (benchmarks against bare Linux peers), bootstrap (the "
                    "bootstrap server: serve, list, status), lsmp PID (the ports of a pymach process), "
                    "vmmap PID (a process's regions), vm read|write PID ADDR (another process's memory), "
                    "mig (the Mach Interface Generator: .defs files in, layouts out), catch (run a "
                    "program with pymach as its exception handler and report its crash), vm_stat [INTERVAL] "
                    "(the machine's virtual memory statistics, as macOS's vm_stat prints them), netmsg (ports "
                    "across hosts: serve, status, export, import). "
                    "Numbers are read as C's strtoul(s, NULL, 0) reads them: 0x10, 020 and 16 are equal.")
    ap.add_argument("--version", action=_Version, help="pymach's version, Python's and the kernel's")
    ap.add_argument("command", help="what to run",
                    choices=["tour", "bench", "bootstrap", "lsmp", "vmmap", "vm", "mig", "catch", "vm_stat", "netmsg"])
    ap.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the command")
    if not argv:
        ap.print_help()
        return 2
    a = ap.parse_args(argv[:1])
    rest = argv[1:]
    if a.command == "tour":
        from .tour import main as tour
        return tour(rest)
    if a.command == "lsmp":
        from .lsmp import main as lsmp
        return lsmp(rest)
    if a.command == "bootstrap":
        from .bootstrap import main as bootstrap
        return bootstrap(rest)
    if a.command == "vmmap":
        from .vmmap import main as vmmap
        return vmmap(rest)
    if a.command == "vm":
        from .vm import main as vm
        return vm(rest)
    if a.command == "mig":
        from .mig import main as mig
        return mig(rest)
    if a.command == "catch":
        from .catch import main as catch
        return catch(rest)
    if a.command == "netmsg":
        from .netmsg import main as netmsg
        return netmsg(rest)
    if a.command == "vm_stat":
        from .vm_stat import main as vm_stat
        return vm_stat(rest)
    from .bench import main as bench
    return bench(rest)
