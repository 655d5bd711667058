"""The host's information and statistics (osfmk/kern/host.c), read from
Linux's own counters.

Each routine answers with the words of XNU's structure (little-endian
natural_t/integer_t words, 64-bit fields as two of them) and the count it
filled, with XNU's rules for the caller's count: too small for the oldest
revision of a flavor is KERN_FAILURE, and a count between two revisions
gets the older one.

Where the numbers come from:

- vm_statistics64 (HOST_VM_INFO64) and vm_statistics (HOST_VM_INFO) from
  /proc/vmstat and /proc/meminfo (``vm_statistics64`` below says field by
  field, and which fields Linux has no counter for: those are 0);
- host_cpu_load_info and processor_cpu_load_info from /proc/stat's
  USER_HZ ticks, which are macOS's 10 ms ticks too (hz = 100);
- host_load_info from /proc/loadavg;
- host_basic_info from the CPU counts, /proc/cpuinfo and MemTotal.
"""

from __future__ import annotations

import os
import struct
from typing import Final

from .._linux import procfs
from .._linux.mm import PAGE_SIZE
from . import kern_return as K
from .task import SELF, Host

# <mach/host_info.h>: host_info flavors
HOST_BASIC_INFO: Final = 1
HOST_SCHED_INFO: Final = 3
HOST_RESOURCE_SIZES: Final = 4
HOST_PRIORITY_INFO: Final = 5
HOST_SEMAPHORE_TRAPS: Final = 7
HOST_MACH_MSG_TRAP: Final = 8
HOST_VM_PURGABLE: Final = 9
HOST_CAN_HAS_DEBUGGER: Final = 11
HOST_PREFERRED_USER_ARCH: Final = 12
# host_statistics flavors
HOST_LOAD_INFO: Final = 1
HOST_VM_INFO: Final = 2
HOST_CPU_LOAD_INFO: Final = 3
HOST_VM_INFO64: Final = 4
HOST_EXTMOD_INFO64: Final = 5
HOST_EXPIRED_TASK_INFO: Final = 6
# <mach/processor_info.h>
PROCESSOR_BASIC_INFO: Final = 1
PROCESSOR_CPU_LOAD_INFO: Final = 2
LOAD_SCALE: Final = 1000
# <mach/machine.h>: CPU_STATE_*, the columns of cpu_ticks
CPU_STATE_USER: Final = 0
CPU_STATE_SYSTEM: Final = 1
CPU_STATE_IDLE: Final = 2
CPU_STATE_NICE: Final = 3
CPU_STATE_MAX: Final = 4
CPU_TYPE_X86_64: Final = 7 | 0x01000000
CPU_SUBTYPE_X86_64_ALL: Final = 3
CPU_TYPE_ARM64: Final = 12 | 0x01000000
CPU_SUBTYPE_ARM64_ALL: Final = 0
CPU_THREADTYPE_NONE: Final = 0
CPU_THREADTYPE_INTEL_HTT: Final = 1

# the structures' layouts, as the words they are
_BASIC: Final = struct.Struct("<iiIiiiiiiiQ")  # host_basic_info, #pragma pack(4)
_VM64: Final = struct.Struct("<4I9Q2I4Q4IQ")  # vm_statistics64, aligned(8)
_VM32: Final = struct.Struct("<15I")  # vm_statistics
_CPU_LOAD: Final = struct.Struct("<4I")  # host_cpu_load_info, processor_cpu_load_info
_LOAD: Final = struct.Struct("<6i")  # host_load_info
_PROC_BASIC: Final = struct.Struct("<iiiii")  # processor_basic_info
_TYPE: Final = struct.Struct("<ii")  # host_preferred_user_arch

HOST_BASIC_INFO_COUNT: Final = _BASIC.size // 4  # 12
HOST_BASIC_INFO_OLD_COUNT: Final = 5  # max_cpus .. cpu_subtype
HOST_VM_INFO64_COUNT: Final = _VM64.size // 4  # 38
HOST_VM_INFO64_REV1_COUNT: Final = HOST_VM_INFO64_COUNT
HOST_VM_INFO64_REV0_COUNT: Final = HOST_VM_INFO64_COUNT - 14  # before the compressor's fields
HOST_VM_INFO_COUNT: Final = _VM32.size // 4  # 15
HOST_VM_INFO_REV2_COUNT: Final = HOST_VM_INFO_COUNT
HOST_VM_INFO_REV1_COUNT: Final = HOST_VM_INFO_COUNT - 1  # before speculative_count
HOST_VM_INFO_REV0_COUNT: Final = HOST_VM_INFO_COUNT - 3  # before the purgeable fields
HOST_CPU_LOAD_INFO_COUNT: Final = _CPU_LOAD.size // 4
HOST_LOAD_INFO_COUNT: Final = _LOAD.size // 4
HOST_CAN_HAS_DEBUGGER_COUNT: Final = 1
HOST_PREFERRED_USER_ARCH_COUNT: Final = _TYPE.size // 4
PROCESSOR_BASIC_INFO_COUNT: Final = _PROC_BASIC.size // 4
PROCESSOR_CPU_LOAD_INFO_COUNT: Final = _CPU_LOAD.size // 4

_U32: Final = 0xFFFFFFFF
_NOT_HERE: Final = {
    HOST_SCHED_INFO: "the scheduler's quantum",
    HOST_PRIORITY_INFO: "Mach's priority bands",
    HOST_VM_PURGABLE: "the machine's purgeable queues",
    HOST_EXTMOD_INFO64: "counts of other tasks' modifications",
    HOST_EXPIRED_TASK_INFO: "the power use of exited tasks",
}


def host_of(name: int, not_host: int = K.KERN_INVALID_ARGUMENT) -> Host:
    """The host behind ``name`` (host or host_priv: every routine here
    takes either). MACH_SEND_INVALID_DEST when the name denotes nothing,
    ``not_host`` when it is not the host port: XNU's conversion gives
    HOST_NULL, which host_info and host_page_size refuse with
    KERN_INVALID_ARGUMENT and host_statistics with KERN_INVALID_HOST.

    Conditions: nothing locked; reads the space without its lock (one
    lookup)."""
    e = SELF.space.lookup(name)
    if e is None or e.object is None:
        raise K.MachError(K.MACH_SEND_INVALID_DEST, f"{name:#x} is not a valid name")
    if not isinstance(e.object, Host):
        raise K.MachError(not_host, f"{name:#x} is not the host port")
    return e.object


def page_size(name: int) -> int:
    """host_page_size: the kernel's page size. KERN_INVALID_ARGUMENT (not
    the host), MACH_SEND_INVALID_DEST."""
    host_of(name)
    return PAGE_SIZE


def cpu_kind() -> tuple[int, int]:
    """(cpu_type, cpu_subtype) of this machine, as <mach/machine.h> names
    them; KERN_NOT_SUPPORTED on an architecture macOS never ran on."""
    m = os.uname().machine
    if m in ("x86_64", "AMD64"):
        return CPU_TYPE_X86_64, CPU_SUBTYPE_X86_64_ALL
    if m in ("aarch64", "arm64"):
        return CPU_TYPE_ARM64, CPU_SUBTYPE_ARM64_ALL
    raise K.MachError(K.KERN_NOT_SUPPORTED, f"no Mach cpu_type for {m}")


def _cpus() -> tuple[int, int]:
    """(possible, online) CPUs."""
    return os.cpu_count() or 1, os.sysconf("SC_NPROCESSORS_ONLN")


def info(name: int, flavor: int, count: int) -> tuple[bytes, int]:
    """host_info: ``flavor``'s structure for a caller whose buffer holds
    ``count`` words, and the count filled.

    KERN_SUCCESS; KERN_FAILURE (``count`` too small for the flavor),
    KERN_INVALID_ARGUMENT (an unknown flavor, HOST_RESOURCE_SIZES as XNU,
    not the host), KERN_NOT_SUPPORTED (a flavor Linux has nothing for:
    HOST_SCHED_INFO, HOST_PRIORITY_INFO, HOST_VM_PURGABLE),
    MACH_SEND_INVALID_DEST."""
    host_of(name)
    if flavor == HOST_BASIC_INFO:
        if count < HOST_BASIC_INFO_OLD_COUNT:
            raise K.MachError(K.KERN_FAILURE, f"HOST_BASIC_INFO needs {HOST_BASIC_INFO_OLD_COUNT} words")
        possible, online = _cpus()
        mem = procfs.read_counters("/proc/meminfo").get("MemTotal", 0) * 1024
        ctype, csub = cpu_kind()
        cores = procfs.physical_cores() or online
        threadtype = CPU_THREADTYPE_INTEL_HTT if ctype == CPU_TYPE_X86_64 and cores < online else CPU_THREADTYPE_NONE
        # memory_size is a natural_t "capped at 2 GB"; max_mem is the whole
        data = _BASIC.pack(possible, online, min(mem, 0x80000000), ctype, csub, threadtype, cores, cores,
                           online, possible, mem)
        n = HOST_BASIC_INFO_COUNT if count >= HOST_BASIC_INFO_COUNT else HOST_BASIC_INFO_OLD_COUNT
        return data[:n * 4], n
    if flavor in (HOST_SEMAPHORE_TRAPS, HOST_MACH_MSG_TRAP):
        return b"", 0  # a gestalt: the traps are there
    if flavor == HOST_CAN_HAS_DEBUGGER:
        _need(count, HOST_CAN_HAS_DEBUGGER_COUNT, "HOST_CAN_HAS_DEBUGGER")
        return struct.pack("<i", 1 if _ptrace_scope() < 3 else 0), HOST_CAN_HAS_DEBUGGER_COUNT
    if flavor == HOST_PREFERRED_USER_ARCH:
        _need(count, HOST_PREFERRED_USER_ARCH_COUNT, "HOST_PREFERRED_USER_ARCH")
        return _TYPE.pack(*cpu_kind()), HOST_PREFERRED_USER_ARCH_COUNT
    if flavor == HOST_RESOURCE_SIZES:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, "HOST_RESOURCE_SIZES: XNU answers no flavor of kernel sizes")
    if flavor in _NOT_HERE:
        raise K.MachError(K.KERN_NOT_SUPPORTED, f"flavor {flavor}: Linux has no {_NOT_HERE[flavor]}")
    raise K.MachError(K.KERN_INVALID_ARGUMENT, f"no host_info flavor {flavor}")


def _need(count: int, needed: int, what: str) -> None:
    if count < needed:
        raise K.MachError(K.KERN_FAILURE, f"{what} needs {needed} words, the buffer holds {count}")


def _ptrace_scope() -> int:
    """Yama's ptrace_scope (3: no process may attach); 0 without Yama."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def statistics(name: int, flavor: int, count: int, is64: bool) -> tuple[bytes, int]:
    """host_statistics (``is64`` False) and host_statistics64: ``flavor``'s
    counters for a buffer of ``count`` words, and the count filled.
    HOST_VM_INFO64 only through host_statistics64; the 64-bit call takes
    the 32-bit flavors too, as XNU's does.

    KERN_SUCCESS; KERN_FAILURE (``count`` too small),
    KERN_INVALID_ARGUMENT (an unknown flavor, HOST_VM_INFO64 or
    HOST_EXTMOD_INFO64 through host_statistics), KERN_INVALID_HOST (not
    the host), KERN_NOT_SUPPORTED (HOST_EXTMOD_INFO64,
    HOST_EXPIRED_TASK_INFO), MACH_SEND_INVALID_DEST."""
    host_of(name, K.KERN_INVALID_HOST)
    if flavor in (HOST_VM_INFO64, HOST_EXTMOD_INFO64) and not is64:
        raise K.MachError(K.KERN_INVALID_ARGUMENT, f"flavor {flavor} is host_statistics64's")
    if flavor == HOST_VM_INFO64:
        _need(count, HOST_VM_INFO64_REV0_COUNT, "HOST_VM_INFO64")
        n = HOST_VM_INFO64_REV1_COUNT if count >= HOST_VM_INFO64_REV1_COUNT else HOST_VM_INFO64_REV0_COUNT
        return _VM64.pack(*vm_statistics64_now())[:n * 4], n
    if flavor == HOST_VM_INFO:
        _need(count, HOST_VM_INFO_REV0_COUNT, "HOST_VM_INFO")
        v = vm_statistics64_now()
        # the 32-bit structure's order, each truncated as XNU's
        # VM_STATISTICS_TRUNCATE_TO_32_BIT does: at UINT32_MAX
        words = [min(x, _U32) for x in (*v[:4], *v[4:12], v[13], v[12], v[14])]
        n = (HOST_VM_INFO_REV2_COUNT if count >= HOST_VM_INFO_REV2_COUNT else
             HOST_VM_INFO_REV1_COUNT if count >= HOST_VM_INFO_REV1_COUNT else HOST_VM_INFO_REV0_COUNT)
        return _VM32.pack(*words)[:n * 4], n
    if flavor == HOST_CPU_LOAD_INFO:
        _need(count, HOST_CPU_LOAD_INFO_COUNT, "HOST_CPU_LOAD_INFO")
        return _CPU_LOAD.pack(*cpu_ticks(procfs.read_cpu_ticks()[0][1])), HOST_CPU_LOAD_INFO_COUNT
    if flavor == HOST_LOAD_INFO:
        _need(count, HOST_LOAD_INFO_COUNT, "HOST_LOAD_INFO")
        loads = procfs.read_loadavg()
        online = _cpus()[1]
        avenrun = [round(x * LOAD_SCALE) for x in loads]
        # Linux keeps no Mach factor (the CPUs left over for one more
        # thread): the CPUs the load average leaves idle stand for it
        factor = [round(max(0.0, online - x) * LOAD_SCALE) for x in loads]
        return _LOAD.pack(*avenrun, *factor), HOST_LOAD_INFO_COUNT
    if flavor in _NOT_HERE:
        raise K.MachError(K.KERN_NOT_SUPPORTED, f"flavor {flavor}: Linux has no {_NOT_HERE[flavor]}")
    raise K.MachError(K.KERN_INVALID_ARGUMENT, f"no host_statistics flavor {flavor}")


def cpu_ticks(cols: list[int]) -> tuple[int, int, int, int]:
    """One /proc/stat cpu line's ticks as cpu_ticks[CPU_STATE_MAX]: user;
    system with the interrupts' time (irq, softirq); idle with the time
    waiting for I/O; nice. Each natural_t wraps as XNU's does."""
    c = cols + [0] * (8 - len(cols))
    user, nice, system, idle, iowait, irq, softirq = c[:7]
    return user & _U32, (system + irq + softirq) & _U32, (idle + iowait) & _U32, nice & _U32


def processor_info(name: int, flavor: int) -> tuple[int, bytes]:
    """host_processor_info: the number of processors and, for each in
    turn, ``flavor``'s structure. The processors are the CPUs the kernel
    can have (os.cpu_count); one offline is not running and has no ticks.

    KERN_SUCCESS; KERN_FAILURE (a flavor no processor answers, as XNU's
    cpu_info_count), KERN_INVALID_ARGUMENT (not the host),
    MACH_SEND_INVALID_DEST."""
    host_of(name)
    if flavor not in (PROCESSOR_BASIC_INFO, PROCESSOR_CPU_LOAD_INFO):
        raise K.MachError(K.KERN_FAILURE, f"no processor_info flavor {flavor}")
    possible = _cpus()[0]
    lines = {label: cols for label, cols in procfs.read_cpu_ticks()[1:]}
    out = bytearray()
    for i in range(possible):
        cols = lines.get(f"cpu{i}")
        if flavor == PROCESSOR_BASIC_INFO:
            ctype, csub = cpu_kind()
            out += _PROC_BASIC.pack(ctype, csub, cols is not None, i, i == 0)
        else:
            out += _CPU_LOAD.pack(*(cpu_ticks(cols) if cols is not None else (0, 0, 0, 0)))
    return possible, bytes(out)


def vm_statistics64_now() -> tuple[int, ...]:
    """vm_statistics64's fields, in order, from this moment's counters.
    KERN_FAILURE when /proc cannot be read."""
    try:
        vmstat = procfs.read_counters("/proc/vmstat")
        meminfo = procfs.read_counters("/proc/meminfo")
    except OSError as e:
        raise K.MachError(K.KERN_FAILURE, f"/proc: {e}") from e
    return vm_statistics64(vmstat, meminfo)


def vm_statistics64(vmstat: dict[str, int], meminfo: dict[str, int]) -> tuple[int, ...]:
    """vm_statistics64's 24 fields from /proc/vmstat (pages and events)
    and /proc/meminfo (KiB):

    - free_count: nr_free_pages. Linux has no speculative pages (read
      ahead and not yet used), so speculative_count is 0;
    - active_count, inactive_count: the anonymous and file LRU lists,
      active and inactive;
    - wire_count: what cannot be paged out: nr_unevictable (mlocked and
      the like) and the kernel's own pages (unreclaimable slab, kernel
      stacks, page tables), as macOS counts the kernel's memory wired;
    - faults: pgfault; pageins: pgmajfault (faults that read a page from
      a file or swap); pageouts: nr_vmscan_write (pages that reclaim
      wrote out); reactivations: pgactivate (inactive pages made active
      again);
    - compressions, decompressions: zswpout, zswpin (zswap is Linux's
      compressor); compressor_page_count: Zswap (the memory it takes);
      total_uncompressed_pages_in_compressor: Zswapped (what it holds);
    - swapins, swapouts: pswpin, pswpout;
    - external_page_count, internal_page_count: the file LRU lists and
      the anonymous ones.

    No Linux counter: zero_fill_count (a zero-filled page is an ordinary
    fault), cow_faults, lookups and hits (Mach's object cache), purges
    and purgeable_count (no kernel purgeable queues), throttled_count.
    They are 0."""
    page_kib = PAGE_SIZE // 1024

    def v(*keys: str) -> int:
        return sum(vmstat.get(k, 0) for k in keys)

    kib = meminfo.get
    active = v("nr_active_anon", "nr_active_file")
    inactive = v("nr_inactive_anon", "nr_inactive_file")
    wired = v("nr_unevictable", "nr_slab_unreclaimable", "nr_page_table_pages") + v("nr_kernel_stack") // page_kib
    return (
        min(v("nr_free_pages"), _U32), min(active, _U32), min(inactive, _U32), min(wired, _U32),
        0,  # zero_fill_count
        v("pgactivate"), v("pgmajfault"), v("nr_vmscan_write"), v("pgfault"),
        0, 0, 0,  # cow_faults, lookups, hits
        0,  # purges
        0, 0,  # purgeable_count, speculative_count
        v("zswpin"), v("zswpout"), v("pswpin"), v("pswpout"),
        min((kib("Zswap") or 0) // page_kib, _U32),
        0,  # throttled_count
        min(v("nr_active_file", "nr_inactive_file"), _U32), min(v("nr_active_anon", "nr_inactive_anon"), _U32),
        (kib("Zswapped") or 0) // page_kib,
    )


VM64_FIELDS: Final = (
    "free_count", "active_count", "inactive_count", "wire_count", "zero_fill_count", "reactivations", "pageins",
    "pageouts", "faults", "cow_faults", "lookups", "hits", "purges", "purgeable_count", "speculative_count",
    "decompressions", "compressions", "swapins", "swapouts", "compressor_page_count", "throttled_count",
    "external_page_count", "internal_page_count", "total_uncompressed_pages_in_compressor",
)
