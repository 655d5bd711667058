"""pymach vm_stat [-c COUNT] [INTERVAL]: the machine's virtual memory
statistics, as macOS's vm_stat prints them (system_cmds' vm_stat.c), read
with host_statistics64(HOST_VM_INFO64) through pymach.mach. With no
INTERVAL, one snapshot of every counter; with one, a line every INTERVAL
seconds (the first gives totals, each later one the change since the
line before for the event counters), COUNT lines or until interrupted.
The counters are Linux's: docs/deviations.md says which counter stands
behind each field and which fields have none (they print 0)."""

from __future__ import annotations

import argparse
import sys
import time

from .. import mach as M
from ._cli import ArgumentParser

# (label, field) of the snapshot, in vm_stat's order
_SNAPSHOT = (
    ("Pages free:", "free_less_speculative"), ("Pages active:", "active_count"),
    ("Pages inactive:", "inactive_count"), ("Pages speculative:", "speculative_count"),
    ("Pages throttled:", "throttled_count"), ("Pages wired down:", "wire_count"),
    ("Pages purgeable:", "purgeable_count"), ('"Translation faults":', "faults"),
    ("Pages copy-on-write:", "cow_faults"), ("Pages zero filled:", "zero_fill_count"),
    ("Pages reactivated:", "reactivations"), ("Pages purged:", "purges"),
    ("File-backed pages:", "external_page_count"), ("Anonymous pages:", "internal_page_count"),
    ("Pages stored in compressor:", "total_uncompressed_pages_in_compressor"),
    ("Pages occupied by compressor:", "compressor_page_count"), ("Decompressions:", "decompressions"),
    ("Compressions:", "compressions"), ("Pageins:", "pageins"), ("Pageouts:", "pageouts"),
    ("Swapins:", "swapins"), ("Swapouts:", "swapouts"),
)
# (heading, field, width, an event counter: printed as the change since the last line)
_COLUMNS = (
    ("free", "free_less_speculative", 8, False), ("active", "active_count", 8, False),
    ("specul", "speculative_count", 8, False), ("inactive", "inactive_count", 8, False),
    ("throttle", "throttled_count", 8, False), ("wired", "wire_count", 8, False),
    ("prgable", "purgeable_count", 8, False), ("faults", "faults", 8, True), ("copy", "cow_faults", 8, True),
    ("0fill", "zero_fill_count", 8, True), ("reactive", "reactivations", 8, True), ("purged", "purges", 8, True),
    ("file-backed", "external_page_count", 11, False), ("anonymous", "internal_page_count", 9, False),
    ("cmprssed", "total_uncompressed_pages_in_compressor", 8, False),
    ("cmprssor", "compressor_page_count", 8, False), ("dcomprs", "decompressions", 8, True),
    ("comprs", "compressions", 8, True), ("pageins", "pageins", 8, True), ("pageout", "pageouts", 8, True),
    ("swapins", "swapins", 8, True), ("swapouts", "swapouts", 8, True),
)


def get_stats() -> dict[str, int]:
    """host_statistics64(mach_host_self(), HOST_VM_INFO64): the fields by
    name, with vm_stat's "free" (free_count less speculative_count).
    Raises MachError when the call fails."""
    stat = M.vm_statistics64_data_t()
    count = M.mach_msg_type_number_t(M.HOST_VM_INFO64_COUNT)
    kr = M.host_statistics64(M.mach_host_self(), M.HOST_VM_INFO64, M.byref(stat), M.byref(count))
    if kr != M.KERN_SUCCESS:
        raise M.MachError(kr, "host_statistics64")
    out = {f[0]: int(getattr(stat, f[0])) for f in M.vm_statistics64._fields_}
    out["free_less_speculative"] = out["free_count"] - out["speculative_count"]
    return out


def page_size() -> int:
    """host_page_size(mach_host_self())."""
    size = M.c_size_t()
    kr = M.host_page_size(M.mach_host_self(), M.byref(size))
    if kr != M.KERN_SUCCESS:
        raise M.MachError(kr, "host_page_size")
    return size.value


def snapshot(stats: dict[str, int], page: int) -> str:
    """vm_stat's one-shot report."""
    lines = [f"Mach Virtual Memory Statistics: (page size of {page} bytes)"]
    lines += [f"{label:<30} {stats[field]:>16}." for label, field in _SNAPSHOT]
    return "\n".join(lines)


def banner(page: int) -> str:
    """The heading of the interval report."""
    return (f"Mach Virtual Memory Statistics: (page size of {page} bytes)\n"
            + " ".join(f"{h:>{w}}" for h, _f, w, _e in _COLUMNS))


def pstat(n: int, width: int) -> str:
    """A number in ``width`` columns, its insignificant digits dropped for
    a K, M or G suffix when it would overflow them (vm_stat's pstat)."""
    s = f"{n:>{width}}"
    for div, suffix in ((1000, "K"), (1000000, "M"), (1000000000, "G")):
        if len(s) <= width:
            break
        s = f"{n // div:>{width - 1}}{suffix}"
    return s


def line(stats: dict[str, int], last: dict[str, int] | None) -> str:
    """One line of the interval report: event counters as the change since
    ``last`` (their totals when it is None)."""
    cells = []
    for _h, field, width, event in _COLUMNS:
        n = stats[field] - (last[field] if event and last is not None else 0)
        cells.append(pstat(n, width))
    return " ".join(cells) + " "


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pymach vm_stat``: exit status 0; 1 when the
    statistics cannot be read; 2 for a bad argument."""
    ap = ArgumentParser(prog="pymach vm_stat", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", dest="count", type=int, default=None, help="print COUNT lines, then stop")
    ap.add_argument("interval", nargs="?", type=float, default=0.0, help="seconds between lines")
    a = ap.parse_args(argv)
    if a.count is not None and a.count < 1:
        ap.error("count must be positive")
    if a.interval < 0:
        ap.error("INTERVAL must not be negative")
    try:
        page = page_size()
        if not a.interval:
            print(snapshot(get_stats(), page))
            return 0
        last: dict[str, int] | None = None
        n = 0
        while True:
            if n % 21 == 0:  # the heading again every 21 lines, as vm_stat's
                print(banner(page))
                last = None
            stats = get_stats()
            print(line(stats, last), flush=True)
            last, n = stats, n + 1
            if a.count and n >= a.count:
                return 0
            time.sleep(a.interval)
    except M.MachError as e:
        print(f"pymach vm_stat: failed to get statistics: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
