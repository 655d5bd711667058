"""The few libc calls the book's programs make on raw memory, for ports
that keep the C's shape. They touch memory directly: a protection fault
here is a real signal, exactly as in C."""

from __future__ import annotations

import ctypes
import re
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


_SPEC = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?(?:[hlqjzt]*)([a-zA-Z%])")


def format_c(fmt: str, *args: object) -> str:
    """Format as C's printf does for the conversions the book uses:
    %d %u %x %s %c, and %p (a pointer as 0x followed by lowercase hex).
    ctypes scalars are taken by value, and %c takes an int or a byte."""
    out: list[object] = []
    it = iter(args)
    pieces = []
    pos = 0
    for m in _SPEC.finditer(fmt):
        pieces.append(fmt[pos:m.start()])
        pos = m.end()
        conv = m.group(1)
        if conv == "%":
            pieces.append("%%")
            continue
        a = next(it)
        v = getattr(a, "value", a)
        if conv == "p":
            pieces.append("%s")
            out.append(f"{v:#x}" if isinstance(v, int) and v else "0x0")
        elif conv == "c":
            pieces.append("%s")
            out.append(chr(v) if isinstance(v, int) else v.decode("latin-1") if isinstance(v, bytes) else v)
        else:
            pieces.append(re.sub(r"[hlqjzt]+(?=[a-zA-Z]$)", "", m.group(0)))
            out.append(v)
    pieces.append(fmt[pos:])
    return "".join(pieces) % tuple(out)


def printf(fmt: str, *args: object) -> None:
    """printf(3), through Python's stdout, flushed so that output written
    just before a crash is not lost. %p and %c behave as in C (format_c)."""
    sys.stdout.write(format_c(fmt, *args) if args else fmt)
    sys.stdout.flush()


def fprintf_stderr(fmt: str, *args: object) -> None:
    """fprintf(stderr, ...)."""
    sys.stderr.write(format_c(fmt, *args) if args else fmt)
    sys.stderr.flush()


def memset(ptr: int, c: str | int, n: int) -> None:
    """memset(3) on raw memory (a fault is a real signal)."""
    ctypes.memset(ptr, ord(c) if isinstance(c, str) else c, n)


def char_at(ptr: int) -> bytes:
    """*(char *)ptr: the byte at ``ptr``, read directly (a real load)."""
    return ctypes.c_char.from_address(ptr).value


def set_char_at(ptr: int, c: str) -> None:
    """*(char *)ptr = c."""
    ctypes.c_char.from_address(ptr).value = c.encode("latin-1")


def strncpy(ptr: int, s: str, n: int) -> None:
    """strncpy(3) into raw memory: at most ``n`` bytes, NUL-padded."""
    b = s.encode()[:n]
    ctypes.memmove(ptr, b + b"\0" * (n - len(b)), n)
