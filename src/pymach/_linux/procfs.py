"""/proc/PID/maps and /proc/PID/smaps.

Each maps line is one VMA: ``start-end perms offset dev inode path``. perms
is rwx plus ``p`` (private, copy-on-write) or ``s`` (shared). smaps adds
sizes and ``VmFlags``, whose ``mr``/``mw``/``me`` (may read/write/exec) are
the most mprotect can ever grant: the Linux counterpart of Mach's maximum
protection. A file opened read-only and mapped MAP_SHARED has no ``mw``.
"""

from __future__ import annotations

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
    out: list[Vma] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            key, sep, rest = line.partition(":")
            if sep and " " not in key and "-" not in key:
                if key == "VmFlags":
                    out[-1].vmflags = frozenset(rest.split())
                else:
                    out[-1].fields[key] = int(rest.split()[0])
            else:
                out.append(_parse_head(line))
    return out
