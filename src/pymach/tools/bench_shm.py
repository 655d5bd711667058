"""pymach bench shm: naming and sharing memory, beside the raw Linux peers.

- bootstrap_look_up of a registered name, against a raw round trip on an
  AF_UNIX SEQPACKET socketpair with a server process (the transport a
  look-up rides on);
- map and first touch of a 1 GiB memory entry (MemoryEntry.create, then
  mach_vm_map, then one write per page), against memfd_create and mmap of
  a memfd of the same size and the same writes. The clock runs from the
  creation to the last write; the unmapping is outside it, for both.

Every call's result is checked (see bench_ipc).
"""

from __future__ import annotations

import time
from typing import Callable

from .._linux import files, memfd, mm
from .bench_ipc import _per_op, fail, kr_text, raw_socket_round

NAME = "org.pymach.bench.shm"


def raw_round(n: int, repeat: int) -> float:
    """A 128-byte request and its answer over a socketpair (ns per op)."""
    return raw_socket_round(n, repeat, 128)


def look_up(n: int, repeat: int) -> float:
    """bootstrap_look_up of a registered name, then releasing the right
    it gives (ns per op)."""
    from pymach import mach as M
    from pymach import Port
    bp = M.bootstrap_port
    with Port() as service, service.make_send() as right:
        kr = M.bootstrap_register(bp, NAME, right.name)
        if kr:
            fail("bootstrap_look_up", f"bootstrap_register: {M.bootstrap_strerror(kr)}")
        found = M.mach_port_t()
        task = M.mach_task_self()

        def run(k: int) -> None:
            for _ in range(k):
                kr = M.bootstrap_look_up(bp, NAME, M.byref(found))
                if kr:
                    fail("bootstrap_look_up", M.bootstrap_strerror(kr))
                kr = M.mach_port_deallocate(task, found)
                if kr:
                    fail("mach_port_deallocate", kr_text(kr))

        return _per_op(run, n, repeat)


def _touch(addr: int, size: int) -> None:
    # one byte per page, the first touch that faults each page in
    view = mm.view(addr, size)
    for off in range(0, size, mm.PAGE_SIZE):
        view[off] = 0x78  # "x"
    view.release()


def map_touch_entry(size: int) -> float:
    """Seconds to create a memory entry of ``size`` bytes, mach_vm_map it
    and write one byte in every page."""
    from pymach import MemoryEntry
    t0 = time.perf_counter()
    with MemoryEntry.create(size) as entry:
        region = entry.map()  # raises MachError when it fails
        _touch(region.address, size)
        took = time.perf_counter() - t0
        region.close()
    return took


def map_touch_memfd(size: int) -> float:
    """The same with a bare memfd and mmap."""
    t0 = time.perf_counter()
    fd = memfd.create("bench", size, sealing=False)
    try:
        addr = mm.mmap(0, size, mm.PROT_READ | mm.PROT_WRITE, mm.MAP_SHARED, fd)
        _touch(addr, size)
        took = time.perf_counter() - t0
        mm.munmap(addr, size)
    finally:
        files.close(fd)
    return took


ROUNDS = 3  # map-and-touch rounds; the best is reported


def best(fn: Callable[[int], float], size: int, rounds: int = ROUNDS) -> float:
    return min(fn(size) for _ in range(rounds))
