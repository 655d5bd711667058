"""/proc/PID/maps and /proc/PID/smaps; the machine's counters in
/proc/vmstat, /proc/meminfo, /proc/stat and /proc/loadavg.

Each maps line is one VMA: ``start-end perms offset dev inode path``. perms
is rwx plus ``p`` (private, copy-on-write) or ``s`` (shared). smaps adds
sizes and ``VmFlags``, whose ``mr``/``mw``/``me`` (may read/write/exec) are
the most mprotect can ever grant: the Linux counterpart of Mach's maximum
protection. A file opened read-only and mapped MAP_SHARED has no ``mw``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


class _Record:
    """A record of named fields (``__slots__``), compared and shown by
    them. (Written out rather than made by dataclasses, whose import
    costs more than this whole module.)"""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass with eq

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{f}={getattr(self, f)!r}' for f in self.__slots__)})"


class Vma(_Record):
    """One VMA: a line of maps, with the sizes (kB) and VmFlags that smaps adds."""

    __slots__ = ("start", "end", "perms", "offset", "dev", "inode", "path", "fields", "vmflags")

    def __init__(self, start: int, end: int, perms: str, offset: int, dev: str, inode: int, path: str,
                 fields: dict[str, int] | None = None, vmflags: frozenset[str] = frozenset()) -> None:
        self.start = start
        self.end = end
        self.perms = perms
        self.offset = offset
        self.dev = dev
        self.inode = inode
        self.path = path
        self.fields: dict[str, int] = {} if fields is None else fields
        self.vmflags = vmflags

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"


def _parse_head(line: str) -> Vma:
    parts = line.split(None, 5)
    lo, hi = parts[0].split("-")
    return Vma(int(lo, 16), int(hi, 16), parts[1], int(parts[2], 16), parts[3], int(parts[4]),
               parts[5].rstrip("\n") if len(parts) > 5 else "")


def read_maps(pid: int | str = "self") -> list[Vma]:
    """The VMAs of ``pid``, in address order."""
    with open(f"/proc/{pid}/maps") as f:
        return [_parse_head(line) for line in f]


def read_smaps(pid: int | str = "self") -> list[Vma]:
    """The VMAs of ``pid`` with their smaps sizes (kB) and VmFlags."""
    with open(f"/proc/{pid}/smaps") as f:
        return parse_smaps(f)


def parse_smaps(lines: Iterable[str]) -> list[Vma]:
    """The VMAs of a /proc/PID/smaps text, given as lines."""
    out: list[Vma] = []
    for line in lines:
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if sep and " " not in key and "-" not in key:
            if key == "VmFlags":
                out[-1].vmflags = frozenset(rest.split())
            else:
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[-1].fields[key] = int(parts[0])
        else:
            out.append(_parse_head(line))
    return out


class Stat(_Record):
    """The fields of /proc/PID/stat and statm that task_info reports."""

    __slots__ = ("utime_ticks", "stime_ticks", "vsize", "rss_pages", "nice", "threads")

    def __init__(self, utime_ticks: int, stime_ticks: int, vsize: int, rss_pages: int, nice: int,
                 threads: int) -> None:
        self.utime_ticks = utime_ticks
        self.stime_ticks = stime_ticks
        self.vsize = vsize  # bytes
        self.rss_pages = rss_pages
        self.nice = nice
        self.threads = threads


def parse_stat(stat: str, statm: str) -> Stat:
    """Parse /proc/PID/stat (the command name in parentheses may itself
    hold spaces and parentheses: the fields start after the last ')') and
    /proc/PID/statm (sizes in pages: total, resident, ...)."""
    f = stat[stat.rindex(")") + 2:].split()
    # f[0] is field 3 (state): utime is field 14, stime 15, nice 19,
    # num_threads 20, vsize 23, rss 24
    m = statm.split()
    return Stat(int(f[11]), int(f[12]), int(f[20]), int(m[1]) if len(m) > 1 else int(f[21]),
                int(f[16]), int(f[17]))


PF_KTHREAD = 0x00200000  # include/linux/sched.h


def task_state(pid: int) -> tuple[str, str, int]:
    """(name, state, flags) of process ``pid`` from /proc/PID/stat: its comm,
    its state letter (R, S, D, T, Z for a zombie: exited, not yet reaped by
    its parent) and its PF_* flags. A kernel thread has PF_KTHREAD and no
    user address space (no mm); neither has a zombie. Their maps are empty,
    and process_vm_readv on them fails with ESRCH, as for a process that is
    gone. OSError ENOENT (or ESRCH) when there is no process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    f3 = stat[stat.rindex(")") + 2:].split()  # [0] is field 3 (state); flags is field 9
    return comm, f3[0], int(f3[6])


def start_time(pid: int | str, tid: int | None = None) -> int | None:
    """When process ``pid`` (or its thread ``tid``) started, in clock ticks
    since boot: field 22 of /proc/PID/stat (or /proc/PID/task/TID/stat).
    Linux reuses pids and tids, but a reused one starts later, so (id,
    start time) names one process or thread for good. None when there is
    none (it exited, or it was never there)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[19])  # [0] is field 3: field 22 is [19]
    except (OSError, ValueError, IndexError):
        return None


def thread_ids(pid: int | str = "self") -> list[int]:
    """The tids of process ``pid``'s threads (/proc/PID/task), in order;
    empty when it is gone."""
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if t.isdigit())
    except OSError:
        return []


def read_counters(path: str) -> dict[str, int]:
    """A ``name value`` file (/proc/vmstat) or a ``Name: value kB`` one
    (/proc/meminfo) as a dict; the units are the file's own (pages or
    events in /proc/vmstat, KiB in /proc/meminfo). OSError when it cannot
    be read."""
    with open(path) as f:
        return parse_counters(f.read())


def parse_counters(text: str) -> dict[str, int]:
    """The name-value pairs of /proc/vmstat or /proc/meminfo text."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def read_cpu_ticks() -> list[tuple[str, list[int]]]:
    """/proc/stat's cpu lines: ("cpu", the machine's sums) first, then
    ("cpuN", ...) for each online CPU. The columns are user, nice, system,
    idle, iowait, irq, softirq, steal... in USER_HZ ticks (1/100 s on
    every Linux architecture: the kernel converts to it). OSError when
    it cannot be read."""
    with open("/proc/stat") as f:
        return parse_cpu_ticks(f.read())


def parse_cpu_ticks(text: str) -> list[tuple[str, list[int]]]:
    """The cpu lines of /proc/stat text."""
    return [(p[0], [int(x) for x in p[1:]]) for p in (line.split() for line in text.splitlines())
            if p and p[0].startswith("cpu")]


def read_loadavg() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages, as getloadavg(3) reads them
    (sysinfo's, finer than /proc/loadavg's two decimals)."""
    return os.getloadavg()


def physical_cores() -> int:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo: the cores,
    as against the logical CPUs; 0 when the file does not say."""
    cores: set[tuple[str, str]] = set()
    package = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    package = value.strip()
                elif key == "core id":
                    cores.add((package, value.strip()))
    except OSError:
        return 0
    return len(cores)
