"""/proc/PID/maps and /proc/PID/smaps.

Each maps line is one VMA: ``start-end perms offset dev inode path``. perms
is rwx plus ``p`` (private, copy-on-write) or ``s`` (shared). smaps adds
sizes and ``VmFlags``, whose ``mr``/``mw``/``me`` (may read/write/exec) are
the most mprotect can ever grant: the Linux counterpart of Mach's maximum
protection. A file opened read-only and mapped MAP_SHARED has no ``mw``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Vma:
    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str
    fields: dict[str, int] = field(default_factory=dict)
    vmflags: frozenset[str] = frozenset()

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


@dataclass(slots=True)
class Stat:
    """The fields of /proc/PID/stat and statm that task_info reports."""

    utime_ticks: int
    stime_ticks: int
    vsize: int          # bytes
    rss_pages: int
    nice: int
    threads: int


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
