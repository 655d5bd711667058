"""The book's vm_protect program and the tools, run as real processes."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


def test_vm_protect_prints_hello() -> None:
    p = run("-m", "pymach.examples.vm_protect")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "Hello, Mach!\n"
    assert p.stderr == ""


def test_vm_protect_with_argument_dies_of_the_fault() -> None:
    p = run("-m", "pymach.examples.vm_protect", "VM_PROT_NONE")
    # the book's "bus error": the MMU refuses the read, the kernel sends a signal
    assert p.returncode in (-signal.SIGSEGV, -signal.SIGBUS), (p.returncode, p.stdout, p.stderr)
    assert "Hello" not in p.stdout


def test_vm_protect_reports_mach_errors_like_the_c() -> None:
    # an allocation that must fail: the C's OUT_ON_MACH_ERROR path prints
    # mach_error()'s line on stderr and exits with the kern_return_t
    code = (
        "import sys\n"
        "import pymach.examples.vm_protect as m\n"
        "m.vm_page_size = 0\n"
        "m.mach_vm_size_t = lambda v: (1 << 64) - 1\n"
        "sys.exit(m.main(['x']))\n"
    )
    p = run("-c", code)
    assert p.returncode == 4, (p.returncode, p.stderr)
    assert p.stderr == "vm_allocate: (os/kern) invalid argument\n"


def test_pythonic_vm_protect_catches_the_fault() -> None:
    p = run("-m", "pymach.examples.vm_protect_pythonic")
    assert (p.returncode, p.stdout) == (0, "Hello, Mach!\n")
    p = run("-m", "pymach.examples.vm_protect_pythonic", "VM_PROT_NONE")
    assert p.returncode == 2
    assert p.stdout.startswith("caught ProtectionFailureError (a MachError): ")
    assert "(os/kern) protection failure (kr=0x2)" in p.stdout


def test_vm_protect_caught_prints_hello_after_its_handler_lifts_the_protection() -> None:
    p = run("-m", "pymach.examples.vm_protect_caught")
    assert p.returncode == 0, (p.stdout, p.stderr)
    caught, hello = p.stdout.splitlines()
    assert caught.startswith("caught EXC_BAD_ACCESS ((os/kern) protection failure) at 0x")
    assert caught.endswith("800: lifting the protection")  # the string's first byte: the page + 2048
    assert hello == "Hello, Mach!"
    assert p.stderr == ""


def _processes_mentioning(text: str) -> list[int]:
    """The pids whose environment holds ``text``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_tour_runs_and_explains(tmp_path: pathlib.Path) -> None:
    # the tour's private bootstrap socket lives under TMPDIR: nothing that
    # names it may outlive the tour (no autostarted server, say)
    p = subprocess.run([sys.executable, "-m", "pymach", "tour"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert _processes_mentioning(f"PYMACH_BOOTSTRAP_SOCKET={tmp_path}") == []
    assert p.returncode == 0, p.stdout + p.stderr
    assert "  Hello, Mach!\n  [exit status 0]" in p.stdout
    assert "[killed by SIGSEGV" in p.stdout or "[killed by SIGBUS" in p.stdout
    assert "caught ProtectionFailureError" in p.stdout
    assert "in target task, first byte=A\n  [exit status 0]" in p.stdout
    assert "  [vm_rw_target: exit status 0]" in p.stdout
    assert p.stdout.rstrip().endswith("every step behaved as the book describes.")


def test_bench_vm_prints_ratios() -> None:
    p = run("-m", "pymach", "bench", "vm", "-n", "200", "--repeat", "1", "--ool-mib", "8", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    names = [r["benchmark"] for r in doc["results"]]
    assert names == ["allocate + deallocate one page", "protect one page", "remote read of 4 KiB",
                     "remote read of 8 MiB (GB/s; ratio of bandwidth)"]
    for r in doc["results"]:
        assert r["rows"][0]["ratio"] == 1.0
        assert all(row["ns_per_op"] > 0 for row in r["rows"])


def test_command_without_arguments_prints_usage() -> None:
    p = run("-m", "pymach")
    assert p.returncode == 2
    assert "tour" in p.stdout and "bench" in p.stdout


def test_bench_ipc_runs_its_peers_and_prints_ratios() -> None:
    p = run("-m", "pymach", "bench", "ipc", "-n", "50", "--repeat", "1", "--ool-mib", "4", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    names = [r["benchmark"] for r in doc["results"]]
    assert names[0].startswith("request/reply round trip") and names[1].startswith("request/reply round trip")
    assert names[2].startswith("one-way messages") and names[3].startswith("one-way messages")
    assert names[4].startswith("send rights in one message")
    assert names[5].startswith("out-of-line handoff")
    rights = doc["results"][4]["rows"]
    assert [r["case"].split()[0] for r in rights] == ["100", "254", "1000"]
    assert all(r["ns_per_op"] > 0 for r in rights)
    round_trip = {row["case"]: row for row in doc["results"][0]["rows"]}
    assert round_trip["raw SEQPACKET socketpair (baseline)"]["ratio"] == 1.0
    assert round_trip["pymach.mach mach_msg, send-once reply"]["ns_per_op"] > 0
