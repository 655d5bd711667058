"""The pymach command: ``pymach tour``, ``bench``, ``bootstrap``, ``lsmp``, ``vmmap`` and ``vm``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pymach`` console script and ``python -m pymach``."""
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(
        prog="pymach",
        description="Mach VM and IPC on Linux. Commands: tour (the book's examples, run and "
                    "explained), bench (benchmarks against bare Linux peers), bootstrap (the "
                    "bootstrap server: serve, list, status), lsmp PID (the ports of a pymach process), "
                    "vmmap PID (a process's regions), vm read|write PID ADDR (another process's memory).")
    ap.add_argument("command", choices=["tour", "bench", "bootstrap", "lsmp", "vmmap", "vm"],
                    help="what to run")
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
    from .bench import main as bench
    return bench(rest)
