"""The few libc calls the book's programs make on raw memory, for ports
that keep the C's shape. They touch memory directly: a protection fault
here is a real signal, exactly as in C."""

from __future__ import annotations

import ctypes
import sys


def snprintf(ptr: int, size: int, fmt: str, *args: object) -> int:
    """snprintf(3) into raw memory at ``ptr``: at most size-1 bytes, then NUL."""
    data = (fmt % args if args else fmt).encode()
    n = min(len(data), size - 1)
    ctypes.memmove(ptr, data, n)
    ctypes.memset(ptr + n, 0, 1)
    return len(data)


def strcpy(ptr: int, s: str) -> None:
    """strcpy(3) into raw memory."""
    b = s.encode() + b"\0"
    ctypes.memmove(ptr, b, len(b))


def cstr(ptr: int) -> str:
    """The NUL-terminated string at ``ptr`` (printf's %s)."""
    return ctypes.string_at(ptr).decode(errors="replace")


def printf(fmt: str, *args: object) -> None:
    """printf(3), through Python's stdout, flushed so that output written
    just before a crash is not lost."""
    sys.stdout.write(fmt % args if args else fmt)
    sys.stdout.flush()


def strncpy(ptr: int, s: str, n: int) -> None:
    """strncpy(3) into raw memory: at most ``n`` bytes, NUL-padded."""
    b = s.encode()[:n]
    ctypes.memmove(ptr, b + b"\0" * (n - len(b)), n)
