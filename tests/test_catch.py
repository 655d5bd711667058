"""pymach catch: a program run with pymach as its exception handler; its
crash is reported, and pymach catch ends as the program did."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64 only")

FAULT_AT_0 = [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"]


def catch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pymach", "catch", *args], capture_output=True, text=True,
                          timeout=120)


def test_a_crash_is_reported_and_catch_dies_of_the_same_signal() -> None:
    p = catch("--", *FAULT_AT_0)
    assert p.returncode == -signal.SIGSEGV, (p.returncode, p.stderr)
    assert "Exception Type:  EXC_BAD_ACCESS (SIGSEGV)" in p.stderr
    assert "Exception Codes: KERN_INVALID_ADDRESS at 0x0000000000000000" in p.stderr
    assert "Thread State (x86_THREAD_STATE64):" in p.stderr and "rip: 0x" in p.stderr
    assert "Backtrace (frame pointers):" in p.stderr and "0x0 is not in any region" in p.stderr


def test_the_json_report() -> None:
    p = catch("--json", "--", *FAULT_AT_0)
    assert p.returncode == -signal.SIGSEGV
    doc = json.loads(p.stdout)
    (rep,) = doc["reports"]
    assert (rep["exception"], rep["signal"], rep["code_name"], rep["codes"]) == (
        "EXC_BAD_ACCESS", "SIGSEGV", "KERN_INVALID_ADDRESS", [1, 0])
    assert rep["state"]["rip"] == rep["backtrace"][0]["address"]


def test_a_program_that_does_not_fault_ends_as_it_would() -> None:
    p = catch("--", sys.executable, "-c", "print('fine'); raise SystemExit(3)")
    assert (p.returncode, p.stdout, p.stderr) == (3, "fine\n", "")


def test_a_c_program_that_divides_by_zero(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        # no compiler: awk is not Python, and SIGFPE-free; a shell's own
        # faults are rare: send the program a fault from inside Python's C
        pytest.skip("no C compiler")
    src = tmp_path / "div.c"
    src.write_text("#include <stdio.h>\n__attribute__((noinline)) int divide(int a, int b) { return a / b; }\n"
                   "int main(int c, char **v) { printf(\"%d\\n\", divide(100, c - 1)); return 0; }\n")
    exe = tmp_path / "div"
    subprocess.run([cc, "-O0", "-fno-omit-frame-pointer", "-o", str(exe), str(src)], check=True)
    p = catch("--", str(exe))
    assert p.returncode == -signal.SIGFPE
    assert "Exception Type:  EXC_ARITHMETIC (SIGFPE)" in p.stderr
    assert "div" in p.stderr  # the backtrace names the program's image


def test_attaching_to_a_running_process() -> None:
    target = subprocess.Popen([sys.executable, "-c", "import sys, ctypes; sys.stdin.readline(); ctypes.string_at(8)"],
                              stdin=subprocess.PIPE, text=True)
    try:
        watcher = subprocess.Popen([sys.executable, "-m", "pymach", "catch", "--json", "--pid", str(target.pid)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(f"/proc/{target.pid}/status") as st:
                if int([x for x in st if x.startswith("TracerPid:")][0].split()[1]):
                    break
            time.sleep(0.02)
        target.stdin.write("go\n")  # type: ignore[union-attr]
        target.stdin.flush()  # type: ignore[union-attr]
        assert target.wait(30) == -signal.SIGSEGV
        out, err = watcher.communicate(timeout=30)
        assert watcher.returncode == 0, err
        (rep,) = json.loads(out)["reports"]
        assert rep["codes"] == [1, 8] and rep["pid"] == target.pid
    finally:
        target.kill()
        target.wait()
