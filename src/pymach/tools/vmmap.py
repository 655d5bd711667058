"""pymach vmmap: a process's regions, as macOS's vmmap prints them.

    pymach vmmap PID [--json]

PID is read as C's strtoul(s, NULL, 0) reads it (0x1f40 and 8000 are the
same process).

The regions come from mach_vm_region_recurse on the task that
task_for_pid gives (so the same ptrace rule applies): each line shows the
region type, START - END, [ VSIZE RSDNT DIRTY SWAP ], PRT/MAX, the sharing
mode and a detail (the mapped file or the kernel's name for the region).
A summary table per region type follows. A process that does not exist,
a zombie or a kernel thread (neither has user memory) is said to be one,
with exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

from .._kern import kern_return as K
from .._kern import vm_defs as V
from ._cli import PID, ArgumentParser, no_user_memory

SHRMOD = {V.SM_COW: "COW", V.SM_PRIVATE: "PRV", V.SM_EMPTY: "NUL", V.SM_SHARED: "SHM",
          V.SM_TRUESHARED: "SHM", V.SM_PRIVATE_ALIASED: "ALI", V.SM_SHARED_ALIASED: "S/A",
          V.SM_LARGE_PAGE: "LPG"}

_TAGS = {V.VM_MEMORY_MALLOC: "MALLOC", V.VM_MEMORY_MALLOC_SMALL: "MALLOC_SMALL",
         V.VM_MEMORY_MALLOC_LARGE: "MALLOC_LARGE", V.VM_MEMORY_MALLOC_TINY: "MALLOC_TINY",
         V.VM_MEMORY_MACH_MSG: "Mach message", V.VM_MEMORY_STACK: "Stack", V.VM_MEMORY_GUARD: "STACK GUARD",
         V.VM_MEMORY_DYLIB: "dylib", V.VM_MEMORY_SQLITE: "SQLite page cache"}


@dataclass
class Row:
    type: str
    start: int
    end: int
    vsize: int
    resident: int
    dirty: int
    swapped: int
    prot: str
    max_prot: str
    shrmod: str
    detail: str

    def as_json(self) -> dict[str, object]:
        return {"type": self.type, "start": self.start, "end": self.end, "vsize": self.vsize,
                "resident": self.resident, "dirty": self.dirty, "swapped": self.swapped,
                "protection": self.prot, "max_protection": self.max_prot, "share_mode": self.shrmod,
                "detail": self.detail}


def _prot(p: int) -> str:
    return ("r" if p & V.VM_PROT_READ else "-") + ("w" if p & V.VM_PROT_WRITE else "-") + (
        "x" if p & V.VM_PROT_EXECUTE else "-")


def region_type(path: str, prot: int, tag: int, exe: str) -> str:
    """The REGION TYPE column: what the region is, in vmmap's words where
    Linux has the same thing."""
    if tag in _TAGS:
        return _TAGS[tag]
    if path == "[stack]":
        return "Stack"
    if path == "[heap]":
        return "MALLOC (heap)"
    if path in ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]"):
        return path.strip("[]")
    if path.startswith("[anon:mach.tag."):
        return f"VM_ALLOCATE (tag {path[len('[anon:mach.tag.'):-1]})"
    if path.startswith("/memfd:mach.") or path.startswith("/memfd:"):
        return "shared memory"
    if path.startswith("/dev/shm/") or path.startswith("/SYSV"):
        return "shared memory"
    if path.startswith("/"):
        image = path == exe or ".so" in os.path.basename(path)
        if not image:
            return "mapped file"
        if prot & V.VM_PROT_EXECUTE:
            return "__TEXT"
        if prot & V.VM_PROT_WRITE:
            return "__DATA"
        return "__DATA_CONST" if prot else "__LINKEDIT"
    if prot == V.VM_PROT_NONE:
        return "VM_ALLOCATE (reserved)"
    return "VM_ALLOCATE"


def rows_for(pid: int) -> tuple[list[Row], str, str]:
    """The rows of ``pid`` and its name and path. Raises MachError."""
    from .._kern import task_user as TU
    from .._kern import vm_user as U
    from .._kern.task import SELF
    from .._kern.ipc_right import deallocate
    name = TU.task_for_pid(SELF.task_name, pid)
    try:
        walk = U.vm_region_walk(name)
        t = TU.task_of(name)
        if t.map is None:
            from .._kern.vm_map_foreign import ForeignMap
            (comm,) = ForeignMap(t).proc_text("comm")
        else:
            comm = open("/proc/self/comm").read()
    finally:
        if name != SELF.task_name:
            deallocate(SELF.space, name)
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    page = os.sysconf("SC_PAGE_SIZE")
    rows = []
    for r, (res, dirty, swap, _priv) in walk:
        mode = r.share_mode
        if mode == V.SM_PRIVATE and res == 0 and swap == 0 and not r.path:
            mode = V.SM_EMPTY
        rows.append(Row(region_type(r.path, r.protection, r.user_tag, exe), r.start, r.end, r.end - r.start,
                        res * page, dirty * page, swap * page, _prot(r.protection), _prot(r.max_protection),
                        SHRMOD.get(mode, "???"), r.path))
    return rows, comm.strip(), exe


def human(n: int) -> str:
    """vmmap's sizes: K below a megabyte, then M and G with one decimal
    where it matters."""
    k = n / 1024
    if k < 1024:
        return f"{int(k)}K"
    m = k / 1024
    if m < 1024:
        return f"{m:.1f}M" if m < 10 and m != int(m) else f"{int(round(m))}M"
    g = m / 1024
    return f"{g:.1f}G"


def render(pid: int, rows: list[Row], comm: str, exe: str) -> str:
    out = [f"Process:         {comm} [{pid}]", f"Path:            {exe or '?'}", ""]
    width = max([len(r.type) for r in rows] + [len("REGION TYPE")]) + 2
    addr_w = max([len(f"{r.end:x}") for r in rows] + [12])
    header = (f"{'REGION TYPE':<{width}}{'START - END':^{2 * addr_w + 1}} [ VSIZE  RSDNT  DIRTY   SWAP] "
              f"PRT/MAX SHRMOD  REGION DETAIL")

    def line(r: Row) -> str:
        return (f"{r.type:<{width}}{r.start:0{addr_w}x}-{r.end:0{addr_w}x} [{human(r.vsize):>6} "
                f"{human(r.resident):>6} {human(r.dirty):>6} {human(r.swapped):>6}] {r.prot}/{r.max_prot} "
                f"SM={r.shrmod}  {r.detail}").rstrip()

    for title, writable in (("Non-writable", False), ("Writable", True)):
        out.append(f"==== {title} regions for process {pid}")
        out.append(header)
        out.extend(line(r) for r in rows if ("w" in r.prot) == writable)
        out.append("")
    out += ["==== Legend", "SM=sharing mode:",
            "\tCOW=copy_on_write PRV=private NUL=empty ALI=aliased", "\tSHM=shared S/A=shared_alias", ""]
    out.append(f"==== Summary for process {pid}")
    out.append(f"{'':<{width}}{'VIRTUAL':>9}{'RESIDENT':>9}{'DIRTY':>9}{'SWAPPED':>9}{'REGION':>8}")
    out.append(f"{'REGION TYPE':<{width}}{'SIZE':>9}{'SIZE':>9}{'SIZE':>9}{'SIZE':>9}{'COUNT':>8}")
    out.append(f"{'=' * 11:<{width}}{'=' * 7:>9}{'=' * 8:>9}{'=' * 5:>9}{'=' * 7:>9}{'=' * 6:>8}")
    for t, s in summary(rows).items():
        out.append(f"{t:<{width}}{human(s['vsize']):>9}{human(s['resident']):>9}{human(s['dirty']):>9}"
                   f"{human(s['swapped']):>9}{s['count']:>8}")
    return "\n".join(out) + "\n"


def summary(rows: list[Row]) -> dict[str, dict[str, int]]:
    """Totals per region type, sorted by name, and TOTAL last."""
    acc: dict[str, dict[str, int]] = {}
    for r in rows:
        for key in (r.type, "TOTAL"):
            s = acc.setdefault(key, {"vsize": 0, "resident": 0, "dirty": 0, "swapped": 0, "count": 0})
            s["vsize"] += r.vsize
            s["resident"] += r.resident
            s["dirty"] += r.dirty
            s["swapped"] += r.swapped
            s["count"] += 1
    total = acc.pop("TOTAL", {"vsize": 0, "resident": 0, "dirty": 0, "swapped": 0, "count": 0})
    return {**dict(sorted(acc.items())), "TOTAL": total}


def main(argv: list[str]) -> int:
    """Entry point of ``pymach vmmap``: exit status 0, 1 when the process
    cannot be examined (task_for_pid's KERN_FAILURE, no such process, a
    zombie, a kernel thread), 2 for a bad argument."""
    ap = ArgumentParser(prog="pymach vmmap", description="A process's virtual memory regions.")
    ap.add_argument("pid", metavar="PID", type=PID)
    ap.add_argument("--json", action="store_true", help="regions and summary as JSON")
    a = ap.parse_args(argv)
    # pid 0 names the kernel (kernel_task on macOS): task_for_pid refuses it with KERN_FAILURE
    why = no_user_memory(a.pid) if a.pid else None
    if why:
        print(f"pymach vmmap: cannot examine process {a.pid}: {why}", file=sys.stderr)
        return 1
    try:
        rows, comm, exe = rows_for(a.pid)
    except K.MachError as e:
        why = no_user_memory(a.pid) if a.pid else None  # gone meanwhile?
        print(f"pymach vmmap: cannot examine process {a.pid}: {why or e}", file=sys.stderr)
        return 1
    if a.json:
        json.dump({"pid": a.pid, "name": comm, "path": exe, "regions": [r.as_json() for r in rows],
                   "summary": summary(rows)}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(a.pid, rows, comm, exe))
    return 0
