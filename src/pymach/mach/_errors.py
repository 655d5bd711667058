"""Where the kernel's exceptions become kern_return_t: one decorator for
the C routines, as psutil's wrap_exceptions translates OS errors at one
boundary.

The kernel (pymach._kern) raises MachError, which carries its code, and
lets an OSError of a system call through when its meaning depends on the
call. A routine of this veneer returns the code instead of raising.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, cast

from .._kern import kern_return as K
from .._linux import libc

_P = ParamSpec("_P")

# a plain signature (no defaults, no *args, **kwargs or keyword-only
# parameters): the routine gets a wrapper of the same parameters, which
# costs a third of what a *args/**kwargs wrapper does on every call
_SIMPLE = """\
def {name}({params}):
    try:
        return fn({params})
    except catch as e:
        {on_error}return kr_from_oserror(e, table)
"""


def returns_kr(errnos: Mapping[int, int] | None = None, *,
               on_error: Callable[..., object] | None = None) -> Callable[[Callable[_P, int]], Callable[_P, int]]:
    """A decorator for a C routine that returns a kern_return_t: a
    MachError raised inside it is returned as its code (``e.kr``).

    With ``errnos``, any OSError is: a MachError keeps its code and the
    errno of another goes through that table (kern_return's ERRNO_*: the
    port routines give ERRNO_SPACE, where running out of fds is
    KERN_NO_SPACE). Without it, an OSError that is not a MachError goes
    through to the caller.

    ``on_error``, when given, is called with the routine's arguments before
    the code is returned (an out-parameter that C fills on failure too)."""
    catch: type[OSError] = K.MachError if errnos is None else OSError
    table = K.ERRNO_DEFAULT if errnos is None else errnos

    def wrap(fn: Callable[_P, int]) -> Callable[_P, int]:
        code = getattr(fn, "__code__", None)
        routine: Any
        if (code is not None and not getattr(fn, "__defaults__", None) and not code.co_kwonlyargcount
                and not code.co_flags & 0x0C):  # CO_VARARGS | CO_VARKEYWORDS
            params = ", ".join(code.co_varnames[:code.co_argcount])
            ns: dict[str, Any] = {"fn": fn, "catch": catch, "table": table, "on_error": on_error,
                                  "kr_from_oserror": K.kr_from_oserror}
            src = _SIMPLE.format(name=fn.__name__, params=params,
                                 on_error="" if on_error is None else f"on_error({params})\n        ")
            exec(compile(src, f"<returns_kr of {fn.__qualname__}>", "exec"), ns)  # pylint: disable=exec-used
            routine = ns[fn.__name__]
        else:
            def routine(*args: Any, **kwargs: Any) -> int:
                try:
                    return fn(*args, **kwargs)
                except catch as e:
                    if on_error is not None:
                        on_error(*args, **kwargs)
                    return K.kr_from_oserror(e, table)
        return cast(Callable[_P, int], functools.wraps(fn)(routine))
    return wrap


def returns_errno(*, on_error: Callable[..., object] | None = None) -> Callable[[Callable[_P, int]], Callable[_P, int]]:
    """A decorator for a C routine that is a BSD system call in XNU
    (task_read_for_pid, task_inspect_for_pid): an OSError raised inside it
    (a MachError included) returns -1 with the C errno set to its errno
    (ctypes.get_errno reads it), as libc's system call stubs do.
    ``on_error`` as for returns_kr."""

    def wrap(fn: Callable[_P, int]) -> Callable[_P, int]:
        def routine(*args: Any, **kwargs: Any) -> int:
            try:
                return fn(*args, **kwargs)
            except OSError as e:
                if on_error is not None:
                    on_error(*args, **kwargs)
                libc.set_errno(e.errno or errno.EINVAL)
                return -1
        return cast(Callable[_P, int], functools.wraps(fn)(routine))
    return wrap
