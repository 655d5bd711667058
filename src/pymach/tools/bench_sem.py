"""pymach bench sem: a semaphore ping-pong between two processes, pymach's
Mach semaphore against multiprocessing.Semaphore and posix_ipc.Semaphore
(when it is installed), in the same run.

Each case runs a child process and two semaphores A and B: the parent
signals A and waits on B, the child waits on A and signals B, ``n`` times
(after one round that tells both sides are ready). A figure is the time of
one such round trip (two signals, two waits, two wake-ups):

- **pymach.Semaphore**: the Pythonic object, in a program started with
  pymach.spawn that unpickles both semaphores;
- **semaphore_signal / semaphore_wait**: the C layer on the same objects;
- **multiprocessing.Semaphore**: a POSIX semaphore in shared memory, in a
  fork child (multiprocessing's own sharing);
- **posix_ipc.Semaphore**: a named POSIX semaphore, in a fork child
  (when the posix_ipc package is installed: the `bench` extra).

Each round runs every case once, in an order rotated from round to round;
each figure is the median of the rounds, with its ratio to
multiprocessing.Semaphore and the round trips per second."""

from __future__ import annotations

import importlib
import os
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

_CHILD = """\
import pickle, sys
import pymach
from pymach.mach import semaphore_signal, semaphore_wait
a, b = pickle.loads(bytes.fromhex(sys.argv[1]))
n, c_layer = int(sys.argv[2]), sys.argv[3] == "c"
if c_layer:
    an, bn = a.name, b.name
    for _ in range(n):
        semaphore_wait(an)
        semaphore_signal(bn)
else:
    wait, signal = a.wait, b.signal
    for _ in range(n):
        wait()
        signal()
"""


def _pymach_case(n: int, c_layer: bool) -> float:
    import pymach
    from pymach.mach import semaphore_signal, semaphore_wait
    a, b = pymach.Semaphore(), pymach.Semaphore()
    proc = pymach.spawn([sys.executable, "-c", _CHILD, pickle.dumps((a, b)).hex(), str(n + 1),
                         "c" if c_layer else "py"])
    try:
        a.signal()
        if not b.wait(60):
            raise RuntimeError("the child never answered")
        if c_layer:
            an, bn = a.name, b.name
            t0 = time.perf_counter()
            for _ in range(n):
                semaphore_signal(an)
                semaphore_wait(bn)
        else:
            signal, wait = a.signal, b.wait
            t0 = time.perf_counter()
            for _ in range(n):
                signal()
                wait()
        took = time.perf_counter() - t0
        if proc.wait(60) != 0:
            raise RuntimeError(f"the child exited {proc.returncode}")
        return took / n
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        a.destroy()
        b.destroy()


def _peer(a: object, b: object, n: int) -> None:  # pragma: no cover - the child
    acquire, release = a.acquire, b.release  # type: ignore[attr-defined]
    for _ in range(n):
        acquire()
        release()


def _posix_peer(names: list[str], n: int) -> None:  # pragma: no cover - the child
    posix_ipc = _posix_ipc()
    a, b = (posix_ipc.Semaphore(nm) for nm in names)
    _peer(a, b, n)


def _fork_case(n: int, posix: bool) -> float:
    """A fork child (multiprocessing) and two semaphores with
    release()/acquire()."""
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if posix:
        posix_ipc = _posix_ipc()
        names = [f"/pymach-bench-{os.getpid()}-{x}" for x in "ab"]
        a, b = (posix_ipc.Semaphore(nm, posix_ipc.O_CREX, initial_value=0) for nm in names)

        def cleanup() -> None:
            for s in (a, b):
                s.unlink()
                s.close()
        proc = ctx.Process(target=_posix_peer, args=(names, n + 1))
    else:
        a, b = ctx.Semaphore(0), ctx.Semaphore(0)
        proc = ctx.Process(target=_peer, args=(a, b, n + 1))
    try:
        proc.start()
        release, acquire = a.release, b.acquire
        release()
        acquire()
        t0 = time.perf_counter()
        for _ in range(n):
            release()
            acquire()
        took = time.perf_counter() - t0
        proc.join(60)
        if proc.exitcode != 0:
            raise RuntimeError(f"the child exited {proc.exitcode}")
        return took / n
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        cleanup()


def _posix_ipc() -> Any:
    """The posix_ipc module, or None when it is not installed."""
    try:
        return importlib.import_module("posix_ipc")
    except ImportError:
        return None


def _posix_ipc_installed() -> bool:
    return _posix_ipc() is not None


def cases() -> list[tuple[str, Callable[[int], float]]]:
    out: list[tuple[str, Callable[[int], float]]] = [
        ("pymach.Semaphore signal + wait", lambda n: _pymach_case(n, False)),
        ("semaphore_signal + semaphore_wait (C layer)", lambda n: _pymach_case(n, True)),
        ("multiprocessing.Semaphore release + acquire", lambda n: _fork_case(n, False)),
    ]
    if _posix_ipc_installed():
        out.append(("posix_ipc.Semaphore release + acquire", lambda n: _fork_case(n, True)))
    return out


def results(n: int, rounds: int) -> list[dict[str, object]]:
    """One block: each case's median ns per round trip over ``rounds``
    rounds, its ratio to multiprocessing.Semaphore, round trips per
    second."""
    cs = cases()
    samples: dict[str, list[float]] = {c: [] for c, _ in cs}
    for r in range(rounds):
        for label, case in cs[r % len(cs):] + cs[:r % len(cs)]:
            samples[label].append(case(n))
    med = {c: statistics.median(s) for c, s in samples.items()}
    base = med[cs[2][0]]
    rows: list[dict[str, object]] = [{"case": c, "ns_per_op": med[c] * 1e9, "ratio": med[c] / base,
                                      "per_s": int(1 / med[c])} for c, _ in cs]
    if not _posix_ipc_installed():
        rows.append({"case": "posix_ipc.Semaphore (not installed)", "ns_per_op": None, "ratio": None})
    return [{"benchmark": "a signal + wait round trip between two processes (ratio: to multiprocessing.Semaphore)",
             "stat": "median", "repeat": rounds, "ops": n, "rows": rows}]


if __name__ == "__main__":  # pragma: no cover
    print(results(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, 3))
