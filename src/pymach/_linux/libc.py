"""The C library, loaded once, with errno capture.

Every function bound here is called with ``use_errno=True`` semantics: on
failure the caller reads ``ctypes.get_errno()`` and raises ``OSError``. This
package speaks only Linux; it never returns a kern_return_t.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, NoReturn


def _load() -> ctypes.CDLL:
    # glibc's soname, loaded straight away: ctypes.util.find_library would
    # run ``ldconfig -p`` in a child process to find the same name
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library  # another C library: search for it
        return ctypes.CDLL(find_library("c"), use_errno=True)


libc = _load()


def fn(name: str, restype: Any, *argtypes: Any) -> Any:
    """Bind ``name`` from libc with the given C signature."""
    f = getattr(libc, name)
    f.restype = restype
    f.argtypes = argtypes
    return f


def raise_errno(what: str = "") -> NoReturn:
    """Raise OSError for the errno the last libc call left."""
    e = ctypes.get_errno()
    raise OSError(e, f"{what}: {os.strerror(e)}" if what else os.strerror(e))


def set_errno(e: int) -> None:
    """Set the C errno this thread's next ``ctypes.get_errno()`` reads
    (ctypes keeps a private copy per thread, swapped with the real errno
    around each call of a use_errno function), as a failed system call of
    a C program leaves it."""
    ctypes.set_errno(e)


c_void_p = ctypes.c_void_p
c_size_t = ctypes.c_size_t
c_int = ctypes.c_int
c_long = ctypes.c_long
c_ulong = ctypes.c_ulong
c_ssize_t = ctypes.c_ssize_t


_printf = fn("printf", ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_fflush = fn("fflush", ctypes.c_int, ctypes.c_void_p)


def printf_string(fmt: bytes, ptr: int) -> int:
    """The C library's printf(fmt, ptr) with one ``%s`` argument read from
    the address ``ptr``, then fflush(NULL). The C code reads the string
    itself, without Python's interpreter lock (ctypes releases it around a
    CDLL call), so a fault there stops only the calling thread: another
    thread of the process, an exception handler, can run meanwhile. A read
    by ctypes.string_at would fault holding the lock, and no Python thread
    could run until it is released."""
    n: int = _printf(fmt, ptr)
    _fflush(None)
    return n
