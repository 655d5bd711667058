"""The C library, loaded once, with errno capture.

Every function bound here is called with ``use_errno=True`` semantics: on
failure the caller reads ``ctypes.get_errno()`` and raises ``OSError``. This
package speaks only Linux; it never returns a kern_return_t.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any, NoReturn

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


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


c_void_p = ctypes.c_void_p
c_size_t = ctypes.c_size_t
c_int = ctypes.c_int
c_long = ctypes.c_long
c_ulong = ctypes.c_ulong
c_ssize_t = ctypes.c_ssize_t
