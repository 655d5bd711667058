"""pymach bench shm: naming and sharing memory, beside the raw Linux peers.

- bootstrap_look_up of a registered name, against a raw round trip on an
  AF_UNIX SEQPACKET socketpair with a server process (the transport a
  look-up rides on);
- map and first touch of a 1 GiB memory entry (mach_vm_map, then one write
  per page), against mmap of a memfd of the same size and the same writes.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from typing import Callable

from .bench_ipc import _per_op, raw_socket_round

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
            raise RuntimeError(f"bootstrap_register: {M.bootstrap_strerror(kr)}")
        found = M.mach_port_t()
        task = M.mach_task_self()

        def run(k: int) -> None:
            for _ in range(k):
                M.bootstrap_look_up(bp, NAME, ctypes.byref(found))
                M.mach_port_deallocate(task, found)

        return _per_op(run, n, repeat)


def _touch(addr: int, size: int) -> None:
    # one byte per page, the first touch that faults each page in
    view = (ctypes.c_char * size).from_address(addr)
    for off in range(0, size, mmap.PAGESIZE):
        view[off] = b"x"


def map_touch_entry(size: int) -> float:
    """Seconds to mach_vm_map a fresh memory entry of ``size`` bytes and
    write one byte in every page."""
    from pymach import MemoryEntry
    with MemoryEntry.create(size) as entry:
        t0 = time.perf_counter()
        region = entry.map()
        _touch(region.address, size)
        took = time.perf_counter() - t0
        region.close()
    return took


def map_touch_memfd(size: int) -> float:
    """The same with a bare memfd and mmap."""
    fd = os.memfd_create("bench", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        t0 = time.perf_counter()
        m = mmap.mmap(fd, size)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        _touch(addr, size)
        took = time.perf_counter() - t0
        del addr
        m.close()
    finally:
        os.close(fd)
    return took


def best(fn: Callable[[int], float], size: int, rounds: int = 3) -> float:
    return min(fn(size) for _ in range(rounds))
