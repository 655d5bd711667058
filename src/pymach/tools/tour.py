"""pymach tour: the book's examples, run as real processes and explained."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import textwrap

WIDTH = 78


def _say(text: str) -> None:
    print(textwrap.fill(text, WIDTH))


def _run(module: str, *args: str) -> int:
    cmd = [sys.executable, "-m", module, *args]
    shown = " ".join(["python", "-m", module, *args])
    print(f"  $ {shown}")
    sys.stdout.flush()
    p = subprocess.run(cmd, capture_output=True, text=True)
    for line in (p.stdout + p.stderr).splitlines():
        print(f"  {line}")
    if p.returncode < 0:
        sig = signal.Signals(-p.returncode)
        print(f"  [killed by {sig.name}: {signal.strsignal(sig)}]")
    else:
        print(f"  [exit status {p.returncode}]")
    return p.returncode


def vm_protect() -> bool:
    """Figure 8-15: vm_protect.c, both outcomes, and the Pythonic version."""
    print("=" * WIDTH)
    print("vm_protect.c (Mac OS X Internals, Figure 8-15)")
    print("=" * WIDTH)
    _say("mach_vm_allocate() maps one zero-filled page of real memory. The program "
         "writes \"Hello, Mach!\" 2048 bytes into it and prints it back.")
    ok = _run("pymach.examples.vm_protect") == 0
    print()
    _say("With an argument it first calls mach_vm_protect(VM_PROT_NONE) on just 4 bytes. "
         "Mach rounds the range to the whole page, so the printf that follows touches a "
         "page the MMU now refuses, and the process dies of the fault, as the book's did "
         "(\"bus error\" on PowerPC; SIGSEGV on Linux).")
    rc = _run("pymach.examples.vm_protect", "VM_PROT_NONE")
    ok = ok and rc in (-signal.SIGSEGV, -signal.SIGBUS)
    print()
    _say("The Pythonic version makes the same page and the same protection, but reads "
         "through pymach's safe accessor (the kernel's user-copy routines), so the fault "
         "comes back as a MachError carrying KERN_PROTECTION_FAILURE, which the program "
         "catches and survives.")
    ok = _run("pymach.examples.vm_protect_pythonic") == 0 and ok
    rc = _run("pymach.examples.vm_protect_pythonic", "VM_PROT_NONE")
    ok = ok and rc == 2
    print()
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pymach tour", description=__doc__)
    ap.parse_args(argv)
    _say("pymach tour: the programs of Mac OS X Internals, chapter 8, ported to pymach "
         "and run as real Linux processes.")
    print()
    ok = vm_protect()
    print("tour finished: every step behaved as the book describes." if ok
          else "tour finished: some step did NOT behave as the book describes (see above).")
    return 0 if ok else 1
