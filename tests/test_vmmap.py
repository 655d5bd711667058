"""pymach vmmap and pymach vm read/write, run as real processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from procutil import start_sleep


def pymach(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pymach", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def sleeper():
    p = start_sleep()
    yield p
    p.kill()
    p.wait()


def maps(pid: int) -> list[tuple[int, int, str, str]]:
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi, parts[1], parts[5].strip() if len(parts) > 5 else ""))
    return out


ROW = re.compile(r"^(.+?)\s+([0-9a-f]+)-([0-9a-f]+) \[\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\] ([r-][w-][x-])/([r-][w-][x-]) "
                 r"SM=(COW|PRV|SHM|ALI|NUL|S/A)(?:  (.*))?$")


def test_vmmap_prints_every_region(sleeper):
    p = pymach("vmmap", str(sleeper.pid))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == f"Process:         sleep [{sleeper.pid}]"
    assert f"==== Non-writable regions for process {sleeper.pid}" in lines
    assert f"==== Writable regions for process {sleeper.pid}" in lines
    assert f"==== Summary for process {sleeper.pid}" in lines
    header = [ln for ln in lines if ln.startswith("REGION TYPE") and "START - END" in ln]
    assert len(header) == 2 and "[ VSIZE  RSDNT  DIRTY   SWAP] PRT/MAX SHRMOD  REGION DETAIL" in header[0]
    rows = [m for m in map(ROW.match, lines) if m]
    got = sorted((int(m.group(2), 16), int(m.group(3), 16), m.group(8), (m.group(11) or "")) for m in rows)
    want = [(lo, hi, perms[:3], path) for lo, hi, perms, path in maps(sleeper.pid)]
    assert got == want
    stack = [m for m in rows if m.group(11) == "[stack]"]
    assert len(stack) == 1 and stack[0].group(1).strip() == "Stack" and stack[0].group(10) == "PRV"
    text = [m for m in rows if m.group(1).strip() == "__TEXT" and m.group(11) == "/usr/bin/sleep"]
    assert text and text[0].group(8) == "r-x" and text[0].group(10) == "COW"
    assert re.search(r"^TOTAL\s+\S+\s+\S+\s+\S+\s+\S+\s+" + str(len(rows)) + "$", p.stdout, re.M)


def test_vmmap_json(sleeper):
    p = pymach("vmmap", str(sleeper.pid), "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["pid"] == sleeper.pid and d["name"] == "sleep"
    regions = d["regions"]
    assert [(r["start"], r["end"]) for r in regions] == [(lo, hi) for lo, hi, _p, _n in maps(sleeper.pid)]
    assert d["summary"]["TOTAL"]["count"] == len(regions)
    assert d["summary"]["TOTAL"]["vsize"] == sum(r["vsize"] for r in regions)
    assert {r["share_mode"] for r in regions} <= {"COW", "PRV", "SHM", "ALI", "NUL", "S/A"}
    (stack,) = [r for r in regions if r["detail"] == "[stack]"]
    assert stack["type"] == "Stack" and stack["protection"] == "rw-" and stack["resident"] > 0


def test_vmmap_of_a_missing_process():
    p = subprocess.Popen(["true"])
    p.wait()
    r = pymach("vmmap", str(p.pid))
    assert r.returncode == 1 and "cannot examine process" in r.stderr


def test_vm_read_and_write(sleeper):
    (lo, hi, _perms, _path) = [m for m in maps(sleeper.pid) if m[3] == "[stack]"][0]
    r = pymach("vm", "write", str(sleeper.pid), hex(lo + 16), "50796d616368")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"wrote 6 bytes at {lo + 16:#x} in process {sleeper.pid}\n"
    r = pymach("vm", "read", str(sleeper.pid), hex(lo), "48")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    assert lines[1] == f"{lo + 16:016x}  50 79 6d 61 63 68 00 00  00 00 00 00 00 00 00 00  |Pymach..........|"
    with open(f"/proc/{sleeper.pid}/mem", "rb") as f:
        f.seek(lo + 16)
        assert f.read(6) == b"Pymach"


def test_vm_errors(sleeper):
    r = pymach("vm", "read", str(sleeper.pid), "1000", "16")
    assert r.returncode == 1 and r.stderr == "pymach vm: mach_vm_read: (os/kern) invalid address\n"
    text = [m for m in maps(sleeper.pid) if m[2].startswith("r-x")][0]
    r = pymach("vm", "write", str(sleeper.pid), hex(text[0]), "00" * 20000)
    assert r.returncode == 1 and r.stderr == "pymach vm: mach_vm_write: (os/kern) protection failure\n"
    r = pymach("vm", "read", "0", "1000", "16")
    assert r.returncode == 1 and "task_for_pid(0): (os/kern) failure" in r.stderr and "ptrace" in r.stderr
