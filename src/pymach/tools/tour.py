"""pymach tour: the book's examples, run as real processes and explained."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

from .. import bootstrap
from ._cli import ArgumentParser

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
    _say("On Mach the fault is not a signal first: it is a message to the task's exception port. "
         "vm_protect_caught is the same program with a handler: a thread serving an exception port "
         "with mach_msg_server and the generated mach_exc_server, set with task_set_exception_ports "
         "for EXC_MASK_BAD_ACCESS. pymach's exception tracer (a process that ptrace-seizes the task) "
         "turns the fault into mach_exception_raise_state_identity; the handler lifts the protection "
         "and answers KERN_SUCCESS, and the faulting instruction runs again.")
    ok = _run("pymach.examples.vm_protect_caught") == 0 and ok
    print()
    return ok


SERVICE = "com.osxbook.SHMServer"


def _wait_for_service(env: dict[str, str], timeout: float = 20.0) -> bool:
    """Ask the tour's bootstrap server until the book's server has checked in."""
    code = ("import sys, pymach.bootstrap as b\n"
            "try:\n    b.look_up(sys.argv[1]).close()\nexcept Exception:\n    sys.exit(1)\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run([sys.executable, "-c", code, SERVICE], env=env, capture_output=True).returncode == 0:
            return True
        time.sleep(0.1)
    return False


def shm_ipc() -> bool:
    """Figures 8-17 to 8-19: the shared-memory server and three clients."""
    print("=" * WIDTH)
    print("shm_ipc_server.c and shm_ipc_client.c (Mac OS X Internals, Figures 8-17 to 8-19)")
    print("=" * WIDTH)
    _say("First the tour starts a bootstrap server of its own (pymach bootstrap serve, on a private "
         "socket), so that it leaves the user's services alone. Every program below finds it through "
         "bootstrap_port.")
    with contextlib.ExitStack() as stack:
        try:
            # autostart off as well: nothing below may start a server the tour would not stop
            stack.enter_context(bootstrap.private_server())
        except bootstrap.BootstrapError as err:
            print(f"  {err}")
            return False
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        server = None
        try:
            print()
            _say("The server allocates a page with mach_vm_allocate, names it with "
                 "mach_make_memory_entry_64 (read and write), copies \"Hello, Mach!\" into it, and "
                 "checks in as com.osxbook.SHMServer. It then answers every request with the entry, "
                 "in a port descriptor: the entry is a send right whose fd is the page's memfd.")
            print("  $ python -m pymach.examples.shm_ipc_server &")
            server = subprocess.Popen([sys.executable, "-m", "pymach.examples.shm_ipc_server"], env=env,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
            assert server.stdout is not None
            first = server.stdout.readline().rstrip()
            print(f"  {first}")
            ok = first.startswith("memory allocated at 0x") and _wait_for_service(env)
            print()
            _say("A client looks the service up, sends a request with a reply port, receives the "
                 "entry's name in the reply, maps the entry with mach_vm_map (copy FALSE: the same "
                 "pages, not a copy) and prints what is there.")
            out1 = _capture("pymach.examples.shm_ipc_client", env=env)
            print()
            _say("A second client writes its argument into the page it mapped. The page is the "
                 "server's, so the third client, a new process, reads the second one's words.")
            out2 = _capture("pymach.examples.shm_ipc_client", "Hello, Linux!", env=env)
            out3 = _capture("pymach.examples.shm_ipc_client", env=env)
            ok = (ok and out1[1:] == ["Hello, Mach!"] and out2[1:] == ["Hello, Mach!",
                  'writing "Hello, Linux!" to shared memory'] and out3[1:] == ["Hello, Linux!"]
                  and all(o and o[0].startswith("recv_msg.data.name = 0x") for o in (out1, out2, out3)))
        finally:
            if server is not None and server.poll() is None:
                server.terminate()
                try:
                    server.wait(10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            if server is not None and server.stdout is not None:
                server.stdout.close()
    print()
    _say("The tour then stops the server and its bootstrap server.")
    print()
    return ok


def vm_rw() -> bool:
    """Figure 8-16: vm_rw_target and vm_rw_master, then the master against sleep."""
    print("=" * WIDTH)
    print("vm_rw_target.c and vm_rw_master.c (Mac OS X Internals, Figure 8-16)")
    print("=" * WIDTH)
    _say("The target allocates a page with mach_vm_allocate, fills it with 'A', prints its pid and "
         "the page's address, and spins until the page's first byte changes.")
    print("  $ python -m pymach.examples.vm_rw_target &")
    target = subprocess.Popen([sys.executable, "-m", "pymach.examples.vm_rw_target"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sleeper = None
    try:
        assert target.stdout is not None
        first = target.stdout.readline().rstrip()
        print(f"  {first}")
        m = re.match(r"pid=(\d+), address=(0x[0-9a-f]+)$", first)
        ok = m is not None
        print()
        _say("The master gets the target's task port with task_for_pid: a send right over a pidfd, "
             "granted because Linux would let it ptrace the target (the same user here; macOS asks "
             "for root). mach_vm_read copies the page into the master (process_vm_readv), the master "
             "changes the first byte of its copy to 'B', and mach_vm_write copies the page back "
             "(process_vm_writev).")
        if m is not None:
            out = _capture("pymach.examples.vm_rw_master", m.group(1), m.group(2), env=dict(os.environ))
            ok = ok and out == [f"reading address {m.group(2)} in target task",
                                f"read 4096 bytes from address {m.group(2)} in target task, first byte=A"]
        try:
            rc = target.wait(20)
        except subprocess.TimeoutExpired:
            rc = None
        print()
        _say("The target sees 'B' and leaves its loop:")
        print(f"  [vm_rw_target: exit status {rc}]" if rc is not None else "  [vm_rw_target: still spinning]")
        ok = ok and rc == 0
        print()
        _say("The master needs nothing from its target: here it reads the stack of sleep, a C program. "
             "pymach vmmap walks sleep's regions with mach_vm_region_recurse; the [stack] line gives "
             "the address.")
        print("  $ sleep 100 &")
        sleeper = subprocess.Popen(["sleep", "100"], stdin=subprocess.DEVNULL)
        print(f"  $ python -m pymach vmmap {sleeper.pid} | grep Stack")
        p = subprocess.run([sys.executable, "-m", "pymach", "vmmap", str(sleeper.pid)], capture_output=True,
                           text=True, timeout=60)
        stack = [ln for ln in p.stdout.splitlines() if ln.startswith("Stack ")]
        for ln in stack:
            print(f"  {ln}")
        sm = re.match(r"Stack\s+([0-9a-f]+)-", stack[0]) if stack else None
        ok = ok and sm is not None
        if sm is not None:
            addr = f"{int(sm.group(1), 16):#x}"
            out = _capture("pymach.examples.vm_rw_master", str(sleeper.pid), addr, env=dict(os.environ))
            ok = ok and len(out) == 2 and out[1].startswith(f"read 4096 bytes from address {addr}")
            print()
            _say("The deepest page of sleep's stack is still zero-filled, so the first byte is NUL (shown "
                 "^@, as cat -v shows it); the master wrote 'B' into a page sleep never touches, and sleep "
                 "sleeps on.")
            ok = ok and sleeper.poll() is None
    finally:
        for proc in (target, sleeper):
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.wait()
        if target.stdout is not None:
            target.stdout.close()
    print()
    return ok


def _visible(line: str) -> str:
    """Control characters shown as cat -v shows them (NUL is ^@)."""
    return "".join(f"^{chr(ord(c) + 64)}" if ord(c) < 32 and c != "\t" else c for c in line)


def _capture(module: str, *args: str, env: dict[str, str]) -> list[str]:
    """Run a program like _run, and return its output lines."""
    cmd = [sys.executable, "-m", module, *args]
    print("  $ " + " ".join(["python", "-m", module, *(f'"{a}"' if " " in a else a for a in args)]))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    lines = (p.stdout + p.stderr).splitlines()
    for line in lines:
        print(f"  {_visible(line)}")
    print(f"  [exit status {p.returncode}]")
    return lines if p.returncode == 0 else []


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="pymach tour", description=__doc__)
    ap.parse_args(argv)
    _say("pymach tour: the programs of Mac OS X Internals, chapter 8, ported to pymach "
         "and run as real Linux processes.")
    print()
    ok = vm_protect()
    ok = shm_ipc() and ok
    ok = vm_rw() and ok
    print("tour finished: every step behaved as the book describes." if ok
          else "tour finished: some step did NOT behave as the book describes (see above).")
    return 0 if ok else 1
