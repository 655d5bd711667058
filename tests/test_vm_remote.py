"""mach_vm_read, read_overwrite, read_list, write, region and
region_recurse on another process: a Python target with a known layout,
and `sleep`, which is not Python."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from procutil import start_sleep

from pymach import mach as M
from pymach.mach import byref
from pymach.task import Task

PAGE = M.vm_page_size

# The target maps 32 pages and shapes them:
#   0-7 read/write, filled with (offset % 251); 8 unmapped (a hole);
#   9-16 read/write, filled with 0x11; 17-24 PROT_NONE; 25-31 read-only (0x22).
TARGET = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
P = 4096
base = libc.mmap(None, 32 * P, 3, 0x22, -1, 0)
ctypes.memmove(base, bytes(i % 251 for i in range(8 * P)), 8 * P)
ctypes.memset(base + 9 * P, 0x11, 8 * P)
ctypes.memset(base + 25 * P, 0x22, 7 * P)
libc.munmap(base + 8 * P, P)
libc.mprotect(base + 17 * P, 8 * P, 0)
libc.mprotect(base + 25 * P, 7 * P, 1)
print(hex(base), flush=True)
cmd = sys.stdin.readline()
if cmd.startswith("dump"):
    sys.stdout.write(ctypes.string_at(base, 8 * P).hex() + ctypes.string_at(base + 9 * P, 8 * P).hex() + "\n")
"""

PATTERN = bytes(i % 251 for i in range(8 * PAGE))


@pytest.fixture
def target():
    if PAGE != 4096:
        pytest.skip("the layout assumes 4 KiB pages")
    p = subprocess.Popen([sys.executable, "-c", TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdin is not None
    base = int(p.stdout.readline(), 16)
    t = M.mach_port_t()
    assert M.task_for_pid(M.mach_task_self(), p.pid, byref(t)) == 0
    yield p, t.value, base
    M.mach_port_deallocate(M.mach_task_self(), t)
    if p.poll() is None:
        p.kill()
    p.wait()
    p.stdin.close()
    p.stdout.close()


def dump(p: subprocess.Popen[str]) -> tuple[bytes, bytes]:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write("dump\n")
    p.stdin.flush()
    h = bytes.fromhex(p.stdout.readline().strip())
    return h[:8 * PAGE], h[8 * PAGE:]


def read(t: int, addr: int, size: int) -> tuple[int, bytes]:
    data, cnt = M.pointer_t(), M.mach_msg_type_number_t()
    kr = M.mach_vm_read(t, addr, size, byref(data), byref(cnt))
    if kr:
        return kr, b""
    out = ctypes.string_at(data.value, cnt.value)
    assert M.mach_vm_deallocate(M.mach_task_self(), data.value, cnt.value) == 0
    return kr, out


def test_read_whole_and_parts(target):
    _p, t, base = target
    assert read(t, base, 8 * PAGE) == (0, PATTERN)
    assert read(t, base + 100, 5000) == (0, PATTERN[100:5100])
    assert read(t, base + 9 * PAGE + 7, 3) == (0, b"\x11" * 3)
    assert read(t, base + 25 * PAGE, 7 * PAGE) == (0, b"\x22" * 7 * PAGE)


def test_reads_fail_as_a_whole(target):
    _p, t, base = target
    # across the hole: large and small
    assert read(t, base + 4 * PAGE, 8 * PAGE)[0] == M.KERN_INVALID_ADDRESS
    assert read(t, base + 7 * PAGE, 2 * PAGE)[0] == M.KERN_INVALID_ADDRESS
    assert read(t, base + 8 * PAGE, 16)[0] == M.KERN_INVALID_ADDRESS
    # into PROT_NONE: large copies give the protection failure, small ones
    # (through XNU's kernel buffer) an invalid address
    assert read(t, base + 12 * PAGE, 8 * PAGE)[0] == M.KERN_PROTECTION_FAILURE
    assert read(t, base + 16 * PAGE, 2 * PAGE)[0] == M.KERN_INVALID_ADDRESS
    # the first problem in address order decides
    assert read(t, base + 17 * PAGE, 20 * PAGE)[0] == M.KERN_PROTECTION_FAILURE
    # read_overwrite fails as a whole: the code, and no count (the bytes before
    # the hole may have reached our buffer: docs/deviations.md)
    buf = ctypes.create_string_buffer(b"\x77" * 8 * PAGE, 8 * PAGE)
    n = M.mach_vm_size_t(123)
    assert M.mach_vm_read_overwrite(t, base + 4 * PAGE, 8 * PAGE, ctypes.addressof(buf), byref(n)) == \
        M.KERN_INVALID_ADDRESS
    assert n.value == 123
    assert M.mach_vm_read_overwrite(t, base, 8 * PAGE, ctypes.addressof(buf), byref(n)) == 0
    assert buf.raw == PATTERN and n.value == 8 * PAGE


def test_write_and_whole_failures(target):
    p, t, base = target
    src = ctypes.create_string_buffer(b"\x5a" * 8 * PAGE, 8 * PAGE)
    a = ctypes.addressof(src)
    assert M.mach_vm_write(t, base + 10, a, 100) == 0
    # across the hole: nothing of pages 6-7 changes
    assert M.mach_vm_write(t, base + 6 * PAGE, a, 5 * PAGE) == M.KERN_INVALID_ADDRESS
    # into PROT_NONE (large) and read-only (small)
    assert M.mach_vm_write(t, base + 12 * PAGE, a, 6 * PAGE) == M.KERN_PROTECTION_FAILURE
    assert M.mach_vm_write(t, base + 25 * PAGE, a, 16) == M.KERN_INVALID_ADDRESS
    first, second = dump(p)
    assert first == PATTERN[:10] + b"\x5a" * 100 + PATTERN[110:]
    assert second == b"\x11" * 8 * PAGE


def test_read_list(target):
    _p, t, base = target
    entries = (M.mach_vm_read_entry * 4)()
    for i, (a, s) in enumerate([(base + 5, 10), (base + 8 * PAGE, PAGE), (base + 9 * PAGE, 2 * PAGE), (base, 0)]):
        entries[i].address, entries[i].size = a, s
    assert M.mach_vm_read_list(t, entries, 4) == 0  # the last entry with a size succeeded
    assert ctypes.string_at(entries[0].address, 10) == PATTERN[5:15]
    assert entries[0].address % PAGE == 5
    assert (entries[1].address, entries[1].size) == (0, 0)
    assert ctypes.string_at(entries[2].address, 2 * PAGE) == b"\x11" * 2 * PAGE
    assert (entries[3].address, entries[3].size) == (0, 0)
    for e in (entries[0], entries[2]):
        assert M.mach_vm_deallocate(M.mach_task_self(), e.address, e.size) == 0
    entries[0].address, entries[0].size = base + 8 * PAGE, 8
    assert M.mach_vm_read_list(t, entries, 1) == M.KERN_INVALID_ADDRESS
    assert M.mach_vm_read_list(t, entries, 257) == M.KERN_INVALID_ARGUMENT


def regions(t: int) -> list[tuple[int, int, int, int]]:
    out = []
    addr, size = M.mach_vm_address_t(0), M.mach_vm_size_t()
    info = M.vm_region_basic_info_data_64_t()
    while True:
        cnt = M.mach_msg_type_number_t(M.VM_REGION_BASIC_INFO_COUNT_64)
        kr = M.mach_vm_region(t, byref(addr), byref(size), M.VM_REGION_BASIC_INFO_64, byref(info), byref(cnt),
                              byref(M.mach_port_t()))
        if kr == M.KERN_INVALID_ADDRESS:
            return out
        assert kr == 0
        out.append((addr.value, addr.value + size.value, info.protection, info.shared))
        addr.value += size.value


def test_region_walk_matches_the_maps(target):
    p, t, base = target
    got = regions(t)
    with open(f"/proc/{p.pid}/maps") as f:
        want = []
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            perms = line.split()[1]
            prot = (1 if perms[0] == "r" else 0) | (2 if perms[1] == "w" else 0) | (4 if perms[2] == "x" else 0)
            want.append((lo, hi, prot, int(perms[3] == "s")))
    assert got == want
    assert (base, base + 8 * PAGE, 3, 0) in got
    assert (base + 17 * PAGE, base + 25 * PAGE, 0, 0) in got


def test_region_recurse_flavors(target):
    _p, t, base = target
    addr, size, depth = M.mach_vm_address_t(base + 8 * PAGE), M.mach_vm_size_t(), M.natural_t(5)
    info = M.vm_region_submap_info_data_64_t()
    cnt = M.mach_msg_type_number_t(M.VM_REGION_SUBMAP_INFO_COUNT_64)
    assert M.mach_vm_region_recurse(t, byref(addr), byref(size), byref(depth), byref(info), byref(cnt)) == 0
    assert (addr.value, size.value, depth.value) == (base + 9 * PAGE, 8 * PAGE, 0)
    assert cnt.value == M.VM_REGION_SUBMAP_INFO_COUNT_64 == 19
    assert info.protection == 3 and info.share_mode == M.SM_PRIVATE and info.is_submap == 0
    assert info.pages_resident == 8 and info.pages_dirtied == 8 and info.ref_count == 1
    cnt = M.mach_msg_type_number_t(M.VM_REGION_SUBMAP_INFO_V1_COUNT_64)
    assert M.mach_vm_region_recurse(t, byref(addr), byref(size), byref(depth), byref(info), byref(cnt)) == 0
    assert cnt.value == 17
    short = M.vm_region_submap_short_info_data_64_t()
    cnt = M.mach_msg_type_number_t(M.VM_REGION_SUBMAP_SHORT_INFO_COUNT_64)
    addr.value = base
    assert M.mach_vm_region_recurse(t, byref(addr), byref(size), byref(depth), byref(short), byref(cnt)) == 0
    assert cnt.value == 12 and short.protection == 3 and (addr.value, size.value) == (base, 8 * PAGE)
    cnt.value = 11
    assert M.mach_vm_region_recurse(t, byref(addr), byref(size), byref(depth), byref(short), byref(cnt)) == \
        M.KERN_INVALID_ARGUMENT
    own = M.mach_vm_address_t(0)
    cnt.value = M.VM_REGION_SUBMAP_INFO_COUNT_64
    assert M.mach_vm_region_recurse(M.mach_task_self(), byref(own), byref(size), byref(depth), byref(info),
                                    byref(cnt)) == 0


def test_a_program_that_is_not_python():
    p = start_sleep()
    try:
        with Task.for_pid(p.pid) as task:
            stack = [r for r in task.regions() if r.path == "[stack]"]
            assert len(stack) == 1
            s = stack[0]
            n = min(s.size, 64 * PAGE)
            top = task.read(s.end - n, n)
            with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                assert f.read().rstrip(b"\0") in top  # argv lives near the top of the stack
            kr, data = read(task.port, s.end - n, n)
            assert kr == 0 and data == top
            task.write(s.end - 16, b"pymach")
            assert task.read(s.end - 16, 6) == b"pymach"
    finally:
        p.kill()
        p.wait()


def test_target_exiting_mid_call_is_not_answered(target, monkeypatch):
    from pymach._linux import mm
    from pymach._kern import vm_map_foreign
    p, t, base = target
    real = mm.process_vm_readv

    def dying(pid: int, local: int, remote: int, length: int) -> int:
        p.kill()
        p.wait()
        return real(pid, local, remote, length)
    monkeypatch.setattr(vm_map_foreign.mm, "process_vm_readv", dying)
    assert read(t, base, PAGE)[0] == M.MACH_SEND_INVALID_DEST


def test_bytes_read_from_a_process_that_took_the_pid_are_thrown_away(target, monkeypatch):
    """The target dies during the copy and a new process gets its pid; the
    kernel copies from the newcomer (here: its stack), and the pidfd check
    after the copy throws the bytes away."""
    from procutil import spawn_with_pid
    from pymach._linux import mm
    from pymach._kern import vm_map_foreign
    p, t, base = target
    real = mm.process_vm_readv
    newcomer: list[subprocess.Popen[bytes]] = []

    def reused(pid: int, local: int, remote: int, length: int) -> int:
        p.kill()
        p.wait()
        q = spawn_with_pid(pid, ["sleep", "100"])
        if q is None:
            pytest.skip("cannot choose the next pid here (ns_last_pid)")
        newcomer.append(q)
        with open(f"/proc/{pid}/maps") as f:
            stack = [ln for ln in f if "[stack]" in ln][0]
        top = int(stack.split("-")[1].split()[0], 16)
        return real(pid, local, top - length, length)  # succeeds, from the wrong process
    monkeypatch.setattr(vm_map_foreign.mm, "process_vm_readv", reused)
    try:
        assert read(t, base, PAGE)[0] == M.MACH_SEND_INVALID_DEST
    finally:
        for q in newcomer:
            q.kill()
            q.wait()
