"""The host's information and statistics (<mach/mach_host.h>) and its
clock services (<mach/clock.h>), checked against the kernel's own
counters read around each call, and `pymach vm_stat` against /proc/vmstat."""

from __future__ import annotations

import ctypes
import mmap
import os
import resource
import subprocess
import sys
import threading
import time

import pytest

import pymach.host as H
import pymach.mach as M
from pymach.mach import byref
from machutil import PortMsg, send_port, send_text
from procutil import ROOT_ONLY, become_nobody, forked, run_in_child

HOST = M.mach_host_self()
Count = M.mach_msg_type_number_t


@pytest.fixture(autouse=True, scope="module")
def _reply_port_made() -> None:
    """This thread's MIG reply port, which lives as long as the thread, is
    made before the tests' fd baselines."""
    M.mig_get_reply_port()


class PortRcv(ctypes.Structure):
    _pack_ = 4
    _fields_ = PortMsg._fields_ + [("trailer", M.mach_msg_trailer_t)]


def vmstat() -> dict[str, int]:
    with open("/proc/vmstat") as f:
        return {k: int(v) for k, v in (line.split() for line in f)}


def stat_ticks() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def vm64(count: int = M.HOST_VM_INFO64_COUNT) -> tuple[int, int, M.vm_statistics64_data_t]:
    st = M.vm_statistics64_data_t()
    n = Count(count)
    kr = M.host_statistics64(HOST, M.HOST_VM_INFO64, byref(st), byref(n))
    return kr, n.value, st


def test_the_structures_have_xnus_sizes_and_counts() -> None:
    # the counts of <mach/host_info.h>, <mach/vm_statistics.h> and <mach/processor_info.h>
    assert (ctypes.sizeof(M.host_basic_info), M.HOST_BASIC_INFO_COUNT) == (48, 12)
    assert (ctypes.sizeof(M.vm_statistics64), M.HOST_VM_INFO64_COUNT, M.HOST_VM_INFO64_REV0_COUNT) == (152, 38, 24)
    assert (ctypes.sizeof(M.vm_statistics), M.HOST_VM_INFO_COUNT, M.HOST_VM_INFO_REV1_COUNT,
            M.HOST_VM_INFO_REV0_COUNT) == (60, 15, 14, 12)
    assert (M.HOST_CPU_LOAD_INFO_COUNT, M.HOST_LOAD_INFO_COUNT) == (4, 6)
    assert (M.PROCESSOR_BASIC_INFO_COUNT, M.PROCESSOR_CPU_LOAD_INFO_COUNT) == (5, 4)
    assert M.vm_statistics64.compressions.offset == 104 and M.vm_statistics64.total_uncompressed_pages_in_compressor.offset == 144
    assert ctypes.sizeof(M.mach_timespec_t) == 8


def test_page_size_and_the_codes_of_a_name_that_is_not_the_host() -> None:
    size = ctypes.c_size_t()
    assert M.host_page_size(HOST, byref(size)) == M.KERN_SUCCESS
    assert size.value == mmap.PAGESIZE
    assert M.host_page_size(M.MACH_PORT_NULL, byref(size)) == M.MACH_SEND_INVALID_DEST
    assert M.host_page_size(0x7777_0303, byref(size)) == M.MACH_SEND_INVALID_DEST
    assert M.host_page_size(M.mach_task_self(), byref(size)) == M.KERN_INVALID_ARGUMENT
    st = M.vm_statistics_data_t()
    n = Count(M.HOST_VM_INFO_COUNT)
    # host_statistics refuses a port that is not the host with KERN_INVALID_HOST (host.c)
    assert M.host_statistics(M.mach_task_self(), M.HOST_VM_INFO, byref(st), byref(n)) == M.KERN_INVALID_HOST


def test_basic_info_by_count() -> None:
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    info = M.host_basic_info()
    n = Count(M.HOST_BASIC_INFO_COUNT)
    assert M.host_info(HOST, M.HOST_BASIC_INFO, byref(info), byref(n)) == M.KERN_SUCCESS
    assert n.value == M.HOST_BASIC_INFO_COUNT
    assert info.max_mem == total and info.memory_size == min(total, 1 << 31)
    assert info.avail_cpus == info.logical_cpu == os.sysconf("SC_NPROCESSORS_ONLN")
    assert info.max_cpus == info.logical_cpu_max == os.cpu_count()
    assert 1 <= info.physical_cpu <= info.logical_cpu
    if os.uname().machine == "x86_64":
        assert (info.cpu_type, info.cpu_subtype) == (0x01000007, 3)  # CPU_TYPE_X86_64, CPU_SUBTYPE_X86_64_ALL
    # a count between the old structure's and the whole one's gets the old five words
    old = (ctypes.c_int * 12)(*([-1] * 12))
    n = Count(7)
    assert M.host_info(HOST, M.HOST_BASIC_INFO, old, byref(n)) == M.KERN_SUCCESS
    assert n.value == 5 and old[5] == -1 and old[0] == info.max_cpus
    n = Count(4)
    assert M.host_info(HOST, M.HOST_BASIC_INFO, old, byref(n)) == M.KERN_FAILURE
    n = Count(0)
    assert M.host_info(HOST, M.HOST_MACH_MSG_TRAP, old, byref(n)) == M.KERN_SUCCESS and n.value == 0
    n = Count(12)
    assert M.host_info(HOST, 99, old, byref(n)) == M.KERN_INVALID_ARGUMENT
    assert M.host_info(HOST, M.HOST_RESOURCE_SIZES, old, byref(n)) == M.KERN_INVALID_ARGUMENT
    assert M.host_info(HOST, M.HOST_SCHED_INFO, old, byref(n)) == M.KERN_NOT_SUPPORTED
    assert H.basic_info() == tuple(getattr(info, f[0]) for f in M.host_basic_info._fields_)


def test_vm_statistics64_event_counters_lie_between_procs_readings() -> None:
    before = vmstat()
    kr, n, st = vm64()
    after = vmstat()
    assert (kr, n) == (M.KERN_SUCCESS, M.HOST_VM_INFO64_COUNT)
    for field, key in (("faults", "pgfault"), ("pageins", "pgmajfault"), ("reactivations", "pgactivate"),
                       ("swapins", "pswpin"), ("swapouts", "pswpout")):
        assert before[key] <= getattr(st, field) <= after[key], field
    assert st.free_count > 0 and st.active_count + st.inactive_count > 0
    assert st.external_page_count + st.internal_page_count == st.active_count + st.inactive_count
    assert (st.cow_faults, st.lookups, st.hits, st.speculative_count) == (0, 0, 0, 0)  # no Linux counter


def test_a_child_processs_faults_show_in_the_hosts_count() -> None:
    pages = 2000

    def touch() -> None:
        m = mmap.mmap(-1, pages * mmap.PAGESIZE)
        for i in range(pages):
            m[i * mmap.PAGESIZE] = 1

    first = vm64()[2].faults
    run_in_child(touch)
    assert vm64()[2].faults - first >= pages


def test_vm_statistics_revisions_by_count() -> None:
    kr, n, st = vm64(M.HOST_VM_INFO64_REV0_COUNT + 3)
    assert (kr, n) == (M.KERN_SUCCESS, M.HOST_VM_INFO64_REV0_COUNT)
    assert vm64(M.HOST_VM_INFO64_REV0_COUNT - 1)[0] == M.KERN_FAILURE
    st32 = M.vm_statistics_data_t()
    for count, filled in ((15, 15), (14, 14), (13, 12), (12, 12)):
        n32 = Count(count)
        assert M.host_statistics(HOST, M.HOST_VM_INFO, byref(st32), byref(n32)) == M.KERN_SUCCESS
        assert n32.value == filled
    n32 = Count(11)
    assert M.host_statistics(HOST, M.HOST_VM_INFO, byref(st32), byref(n32)) == M.KERN_FAILURE
    # HOST_VM_INFO64 is host_statistics64's alone; host_statistics64 takes the 32-bit flavors too
    n32 = Count(40)
    assert M.host_statistics(HOST, M.HOST_VM_INFO64, byref(st), byref(n32)) == M.KERN_INVALID_ARGUMENT
    n32 = Count(15)
    assert M.host_statistics64(HOST, M.HOST_VM_INFO, byref(st32), byref(n32)) == M.KERN_SUCCESS
    assert M.host_statistics64(HOST, M.HOST_EXTMOD_INFO64, byref(st), byref(n32)) == M.KERN_NOT_SUPPORTED
    assert M.host_statistics64(HOST, 77, byref(st), byref(n32)) == M.KERN_INVALID_ARGUMENT


def test_cpu_load_counts_a_busy_childs_ticks() -> None:
    def load() -> list[int]:
        info = M.host_cpu_load_info_data_t()
        n = Count(M.HOST_CPU_LOAD_INFO_COUNT)
        assert M.host_statistics(HOST, M.HOST_CPU_LOAD_INFO, byref(info), byref(n)) == M.KERN_SUCCESS
        return list(info.cpu_ticks)

    before_proc = stat_ticks()
    first = load()
    after_proc = stat_ticks()
    assert before_proc[0] <= first[M.CPU_STATE_USER] <= after_proc[0]
    assert before_proc[3] + before_proc[4] <= first[M.CPU_STATE_IDLE] <= after_proc[3] + after_proc[4]

    def spin() -> float:
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_utime

    used = run_in_child(spin)
    # the child's own user time, in 10 ms ticks, is in the machine's count (less a tick of rounding)
    assert load()[M.CPU_STATE_USER] - first[M.CPU_STATE_USER] >= int(used * 100) - 1
    assert H.cpu_load().user >= first[M.CPU_STATE_USER]


def test_processor_info_gives_each_cpu_in_new_memory() -> None:
    pcount, cnt = M.natural_t(), Count()
    arr = M.processor_info_array_t()
    assert M.host_processor_info(HOST, M.PROCESSOR_CPU_LOAD_INFO, byref(pcount), byref(arr), byref(cnt)) == 0
    ncpu = os.cpu_count()
    assert pcount.value == ncpu and cnt.value == ncpu * M.PROCESSOR_CPU_LOAD_INFO_COUNT
    users = [arr[i * 4 + M.CPU_STATE_USER] & 0xFFFFFFFF for i in range(ncpu)]
    total = stat_ticks()[0]
    assert sum(users) <= total + ncpu  # each line rounds down on its own
    addr = ctypes.cast(arr, ctypes.c_void_p).value
    assert M.mach_vm_deallocate(M.mach_task_self(), addr, cnt.value * 4) == M.KERN_SUCCESS
    assert M.host_processor_info(HOST, M.PROCESSOR_BASIC_INFO, byref(pcount), byref(arr), byref(cnt)) == 0
    basic = ctypes.cast(arr, ctypes.POINTER(M.processor_basic_info * ncpu)).contents
    assert [b.slot_num for b in basic] == list(range(ncpu)) and [b.is_master for b in basic][:1] == [1]
    assert sum(b.is_master for b in basic) == 1 and all(b.running for b in basic[:1])
    M.mach_vm_deallocate(M.mach_task_self(), ctypes.cast(arr, ctypes.c_void_p).value, cnt.value * 4)
    assert M.host_processor_info(HOST, 3, byref(pcount), byref(arr), byref(cnt)) == M.KERN_FAILURE
    assert M.host_processor_info(M.mach_task_self(), 2, byref(pcount), byref(arr), byref(cnt)) == M.KERN_INVALID_ARGUMENT
    assert len(H.processor_load()) == ncpu


def test_load_info_is_the_load_average_scaled() -> None:
    before = os.getloadavg()
    info = M.host_load_info_data_t()
    n = Count(M.HOST_LOAD_INFO_COUNT)
    assert M.host_statistics(HOST, M.HOST_LOAD_INFO, byref(info), byref(n)) == M.KERN_SUCCESS
    after = os.getloadavg()
    got = tuple(x / M.LOAD_SCALE for x in info.avenrun)
    assert got in (tuple(round(x, 3) for x in before), tuple(round(x, 3) for x in after))
    assert all(f >= 0 for f in info.mach_factor)


def test_clock_services_read_the_system_and_calendar_clocks() -> None:
    sysclk, calclk = M.clock_serv_t(), M.clock_serv_t()
    assert M.host_get_clock_service(HOST, M.SYSTEM_CLOCK, byref(sysclk)) == M.KERN_SUCCESS
    assert M.host_get_clock_service(HOST, M.CALENDAR_CLOCK, byref(calclk)) == M.KERN_SUCCESS
    try:
        assert sysclk.value != calclk.value
        ts = M.mach_timespec_t()
        for clk, read in ((sysclk, time.monotonic_ns), (calclk, time.time_ns)):
            a = read()
            assert M.clock_get_time(clk, byref(ts)) == M.KERN_SUCCESS
            b = read()
            assert a <= ts.tv_sec * 1_000_000_000 + ts.tv_nsec <= b
        # the same clock is the same right: a second reference under the same name
        again = M.clock_serv_t()
        assert M.host_get_clock_service(HOST, M.REALTIME_CLOCK, byref(again)) == M.KERN_SUCCESS
        assert again.value == sysclk.value
        refs = M.mach_port_urefs_t()
        assert M.mach_port_get_refs(M.mach_task_self(), sysclk, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0
        assert refs.value == 2
        assert M.mach_port_deallocate(M.mach_task_self(), again) == M.KERN_SUCCESS
        res, cnt = M.clock_res_t(), Count(1)
        assert M.clock_get_attributes(sysclk, M.CLOCK_GET_TIME_RES, byref(res), byref(cnt)) == 0
        assert res.value == max(1, round(time.clock_getres(time.CLOCK_MONOTONIC) * 1e9))
        assert M.clock_get_attributes(calclk, M.CLOCK_ALARM_MAXRES, byref(res), byref(cnt)) == 0 and res.value == 0
        assert M.clock_get_attributes(sysclk, 9, byref(res), byref(cnt)) == M.KERN_INVALID_VALUE
        cnt.value = 2
        assert M.clock_get_attributes(sysclk, M.CLOCK_GET_TIME_RES, byref(res), byref(cnt)) == M.KERN_FAILURE
    finally:
        assert M.mach_port_deallocate(M.mach_task_self(), sysclk) == M.KERN_SUCCESS
        assert M.mach_port_deallocate(M.mach_task_self(), calclk) == M.KERN_SUCCESS
    ts = M.mach_timespec_t()
    assert M.clock_get_time(sysclk, byref(ts)) == M.MACH_SEND_INVALID_DEST  # released: the name is gone
    assert M.clock_get_time(M.mach_task_self(), byref(ts)) == M.KERN_INVALID_ARGUMENT
    bad = M.clock_serv_t(5)
    for clock_id in (2, -1):
        assert M.host_get_clock_service(HOST, clock_id, byref(bad)) == M.KERN_INVALID_ARGUMENT
        assert bad.value == 0
    assert M.host_get_clock_service(M.mach_task_self(), 0, byref(bad)) == M.KERN_INVALID_ARGUMENT


def test_clock_time_in_threads_never_goes_back() -> None:
    errors: list[str] = []

    def reader() -> None:
        last = 0
        for _ in range(2000):
            sec, nsec = H.clock_time(H.SYSTEM_CLOCK)
            now = sec * 1_000_000_000 + nsec
            if now < last:
                errors.append(f"{now} < {last}")
            last = now

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and not any(t.is_alive() for t in threads)
    with pytest.raises(M.MachError) as e:
        H.clock_time(7)
    assert e.value.kr == M.KERN_INVALID_ARGUMENT


@ROOT_ONLY
def test_an_unprivileged_task_reads_the_statistics() -> None:
    # host_info and host_statistics take the host port, not host_priv
    def read() -> tuple[int, int]:
        become_nobody()
        kr, n, _st = vm64()
        return kr, n

    assert run_in_child(read) == (M.KERN_SUCCESS, M.HOST_VM_INFO64_COUNT)


def _vm_stat(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "pymach", "vm_stat", *args], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_vm_stat_prints_what_proc_vmstat_counts() -> None:
    before = vmstat()
    out = _vm_stat()
    after = vmstat()
    lines = out.splitlines()
    assert lines[0] == f"Mach Virtual Memory Statistics: (page size of {mmap.PAGESIZE} bytes)"
    rows = {}
    for line in lines[1:]:
        label, value = line[:30].rstrip(), line[30:]
        assert value.endswith(".") and len(value) == 18, line  # "%-30s %16llu."
        rows[label] = int(value[:-1])
    assert len(rows) == 22
    for label, key in (('"Translation faults":', "pgfault"), ("Pageins:", "pgmajfault"),
                       ("Pages reactivated:", "pgactivate"), ("Swapins:", "pswpin"), ("Swapouts:", "pswpout")):
        assert before[key] <= rows[label] <= after[key], label
    assert rows["Pages speculative:"] == 0 and rows["Pages free:"] > 0


def test_vm_stat_with_an_interval_prints_changes_after_the_first_line() -> None:
    before = vmstat()["pgfault"]
    lines = _vm_stat("-c", "2", "0.05").splitlines()
    assert lines[0].startswith("Mach Virtual Memory Statistics: (page size of")
    heads = lines[1].split()
    assert heads[:8] == ["free", "active", "specul", "inactive", "throttle", "wired", "prgable", "faults"]
    assert len(heads) == 22 and len(lines) == 4
    first, second = lines[2].split(), lines[3].split()
    assert len(first) == len(second) == 22

    def number(cell: str) -> int:
        mult = {"K": 1000, "M": 1000000, "G": 1000000000}.get(cell[-1], 1)
        return int(cell.rstrip("KMG")) * mult

    assert number(first[7]) >= before // 1000 * 1000  # the total (its low digits dropped for width)
    assert 0 <= number(second[7]) < number(first[7])  # the faults of 50 ms: a change, not a total
    r = subprocess.run([sys.executable, "-m", "pymach", "vm_stat", "-c", "0", "1"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 2 and "count must be positive" in r.stderr


def test_the_fields_come_from_the_counters_they_are_documented_to() -> None:
    from pymach._kern import host as KH
    vm = {"nr_free_pages": 100, "nr_active_anon": 1, "nr_active_file": 2, "nr_inactive_anon": 4,
          "nr_inactive_file": 8, "nr_unevictable": 16, "nr_slab_unreclaimable": 32, "nr_page_table_pages": 64,
          "nr_kernel_stack": 128 * (mmap.PAGESIZE // 1024), "pgactivate": 5, "pgmajfault": 6, "nr_vmscan_write": 7,
          "pgfault": 9, "zswpin": 10, "zswpout": 11, "pswpin": 12, "pswpout": 13}
    mem = {"Zswap": 3 * (mmap.PAGESIZE // 1024), "Zswapped": 30 * (mmap.PAGESIZE // 1024)}
    got = dict(zip(KH.VM64_FIELDS, KH.vm_statistics64(vm, mem)))
    assert got == {
        "free_count": 100, "active_count": 3, "inactive_count": 12, "wire_count": 16 + 32 + 64 + 128,
        "zero_fill_count": 0, "reactivations": 5, "pageins": 6, "pageouts": 7, "faults": 9, "cow_faults": 0,
        "lookups": 0, "hits": 0, "purges": 0, "purgeable_count": 0, "speculative_count": 0, "decompressions": 10,
        "compressions": 11, "swapins": 12, "swapouts": 13, "compressor_page_count": 3, "throttled_count": 0,
        "external_page_count": 10, "internal_page_count": 5, "total_uncompressed_pages_in_compressor": 30}


def test_a_clock_sent_to_another_task_reads_there() -> None:
    """A clock right travels in a port descriptor: a fork child asks for
    ours and gets its own host's clock of the same id, and reads the
    calendar with it."""
    task = M.mach_task_self()
    server = M.mach_port_t()
    assert M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, byref(server)) == 0
    assert M.mach_port_insert_right(task, server, server, M.MACH_MSG_TYPE_MAKE_SEND) == 0
    registered = (M.mach_port_t * 1)(server.value)
    assert M.mach_ports_register(task, registered, 1) == 0
    cal = M.clock_serv_t()
    assert M.host_get_clock_service(HOST, M.CALENDAR_CLOCK, byref(cal)) == 0

    def child() -> tuple[int, int, int, int]:
        me = M.mach_task_self()
        ports, cnt = M.mach_port_array_t(), Count()
        assert M.mach_ports_lookup(me, byref(ports), byref(cnt)) == 0
        reply = M.mach_port_t()
        assert M.mach_port_allocate(me, M.MACH_PORT_RIGHT_RECEIVE, byref(reply)) == 0
        assert send_text(ports[0], b"clock?", reply=reply.value, reply_disp=M.MACH_MSG_TYPE_MAKE_SEND_ONCE) == 0
        r = PortRcv()
        kr = M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), reply, 10000, 0)
        assert kr == 0, hex(kr)
        ts = M.mach_timespec_t()
        before = time.time_ns()
        got = M.clock_get_time(r.port.name, byref(ts))
        mine = M.clock_serv_t()
        assert M.host_get_clock_service(M.mach_host_self(), M.CALENDAR_CLOCK, byref(mine)) == 0
        return got, before, ts.tv_sec * 1_000_000_000 + ts.tv_nsec, int(mine.value == r.port.name)

    def answer(dest_disp: int) -> int:
        q = PortRcv()  # (room enough for the question's text)
        assert M.mach_msg(q.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(q), server, 10000, 0) == 0
        m = PortMsg()
        m.header.msgh_bits = M.MACH_MSGH_BITS(dest_disp, 0) | M.MACH_MSGH_BITS_COMPLEX
        m.header.msgh_size = ctypes.sizeof(PortMsg)
        m.header.msgh_remote_port = q.header.msgh_remote_port
        m.body.msgh_descriptor_count = 1
        m.port.name, m.port.disposition, m.port.type = cal.value, M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_PORT_DESCRIPTOR
        return M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0)

    try:
        c = forked(lambda _sync: child())
        with c:
            assert answer(M.MACH_MSG_TYPE_MOVE_SEND_ONCE) == 0
        kr, before, read, same = c.result
        assert kr == M.KERN_SUCCESS and read >= before and same == 1
        # and our own clock sent to us comes back under its name
        assert send_port(server.value, cal.value, M.MACH_MSG_TYPE_COPY_SEND) == 0
        r = PortRcv()
        assert M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), server, 5000, 0) == 0
        assert r.port.name == cal.value
        refs = M.mach_port_urefs_t()
        assert M.mach_port_get_refs(task, cal, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0 and refs.value == 2
        M.mach_port_deallocate(task, cal)
    finally:
        M.mach_ports_register(task, registered, 0)
        M.mach_port_destroy(task, server)
        M.mach_port_deallocate(task, cal)


@pytest.mark.parametrize("source", ["pymach", "xnu"])
def test_the_host_and_its_clocks_answer_mig_requests(source: str) -> None:
    """A client generated from mach_host.defs and clock.defs (pymach's, or
    XNU's own when PYMACH_XNU names a checkout) asks the host port and a
    clock by message, as a program built on macOS does."""
    pytest.importorskip("pcpp")
    from pathlib import Path

    from pymach.mig import compile_defs
    from pymach.mig.rpc import Interface
    if source == "xnu":
        osfmk = os.path.join(os.environ.get("PYMACH_XNU", ""), "osfmk")
        if not os.path.isdir(os.path.join(osfmk, "mach")):
            pytest.skip("no xnu checkout (set PYMACH_XNU)")
        host_if = Interface(compile_defs(os.path.join(osfmk, "mach", "mach_host.defs"), include=[osfmk]))
        clock_if = Interface(compile_defs(os.path.join(osfmk, "mach", "clock.defs"), include=[osfmk]))
    else:
        defs = Path(__file__).resolve().parent.parent / "src" / "pymach" / "defs"
        host_if = Interface(compile_defs(str(defs / "mach_host.defs")))
        clock_if = Interface(compile_defs(str(defs / "clock.defs")))
    h, c = host_if.c, clock_if.c
    info = M.host_basic_info()
    n = Count(M.HOST_BASIC_INFO_COUNT)
    assert h.host_info(HOST, M.HOST_BASIC_INFO, ctypes.cast(byref(info), ctypes.POINTER(ctypes.c_int)), byref(n)) == 0
    assert n.value == M.HOST_BASIC_INFO_COUNT and info.max_cpus == os.cpu_count()
    before = vmstat()["pgfault"]
    st = M.vm_statistics64_data_t()
    n = Count(M.HOST_VM_INFO64_COUNT)
    assert h.host_statistics64(HOST, M.HOST_VM_INFO64, ctypes.cast(byref(st), ctypes.POINTER(ctypes.c_int)),
                               byref(n)) == 0
    assert n.value == M.HOST_VM_INFO64_COUNT and before <= st.faults <= vmstat()["pgfault"]
    pcount, cnt, arr = M.natural_t(), Count(), M.processor_info_array_t()
    assert h.host_processor_info(HOST, M.PROCESSOR_CPU_LOAD_INFO, byref(pcount), byref(arr), byref(cnt)) == 0
    assert (pcount.value, cnt.value) == (os.cpu_count(), 4 * (os.cpu_count() or 1))
    M.mach_vm_deallocate(M.mach_task_self(), ctypes.cast(arr, ctypes.c_void_p).value, cnt.value * 4)
    clk = M.clock_serv_t()
    assert h.host_get_clock_service(HOST, M.SYSTEM_CLOCK, byref(clk)) == 0
    try:
        ts = M.mach_timespec_t()
        a = time.monotonic_ns()
        assert c.clock_get_time(clk, byref(ts)) == 0
        assert a <= ts.tv_sec * 1_000_000_000 + ts.tv_nsec <= time.monotonic_ns()
        res, one = (ctypes.c_int * 1)(), Count(1)
        assert c.clock_get_attributes(clk, M.CLOCK_GET_TIME_RES, res, byref(one)) == 0 and res[0] >= 1
        # XNU's conversions: a clock is no host, the host no clock; ids past the subsystem are MIG_BAD_ID
        assert h.host_info(clk, M.HOST_BASIC_INFO, ctypes.cast(byref(info), ctypes.POINTER(ctypes.c_int)),
                           byref(n)) == M.KERN_INVALID_ARGUMENT
        assert c.clock_get_time(HOST, byref(ts)) == M.KERN_INVALID_ARGUMENT
        if hasattr(c, "clock_alarm"):
            assert c.clock_alarm(clk, 1, ts, M.MACH_PORT_NULL) == M.MIG_BAD_ID
    finally:
        M.mach_port_deallocate(M.mach_task_self(), clk)
