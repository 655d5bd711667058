"""Exception ports, the Pythonic way: a fault in a task becomes a call of
a Python handler, whose return value is the reply.

    def handler(exc: pymach.Exception) -> bool | dict[str, int] | None:
        print(exc)                     # EXC_BAD_ACCESS (KERN_PROTECTION_FAILURE) at 0x7f...
        task.protect(exc.address & ~0xFFF, 4096, VM_PROT_DEFAULT)
        return True                    # resume: the instruction runs again

    with pymach.catch_exceptions(task, pymach.EXC_MASK_BAD_ACCESS, handler):
        ...

The handler runs in a thread of this process. It returns True to resume
the faulting thread (KERN_SUCCESS), a dict of registers to resume it with
those changed (``{"rip": exc.state["rip"] + 2}``), or None/False to pass
the fault on: to the task's next exception port, and in the end to the
signal. A MachError it raises is its answer's code (the fault goes on).

A handler in the same process as the faulting thread runs only while the
faulting thread does not hold Python's lock: a fault in C code called
through ctypes (a CDLL function) can be handled here; one in code that
holds the lock (ctypes.string_at, the interpreter itself) stops every
Python thread of the process, the handler's too (docs/architecture.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ._kern import exception as E
from ._kern import ipc_right as R
from ._kern import kern_return as K
from ._kern.ipc_space import MACH_PORT_RIGHT_RECEIVE
from ._kern.message_defs import MACH_MSG_TYPE_MAKE_SEND
from ._kern.task import SELF
from ._kern import vm_remote as VR
from ._kern.vm_remote import x86_THREAD_STATE64

_NAMES = {v: k for k, v in vars(E).items() if k.startswith("EXC_") and not k.startswith(("EXC_MASK", "EXC_I386",
                                                                                            "EXC_MACF", "EXC_SOFT",
                                                                                            "EXC_TYPES"))
          and isinstance(v, int) and 0 < v < E.EXC_TYPES_COUNT}


class MachException:
    """One exception: ``type`` (EXC_*), ``name``, ``codes`` (code and
    subcode, 64-bit), ``address`` (EXC_BAD_ACCESS's subcode: the fault
    address), ``state`` (the thread's registers by name: rip, rsp, ...),
    ``thread`` and ``task`` (the names of their ports in our space, valid
    during the call)."""

    def __init__(self, exc_type: int, codes: list[int], state: list[int], thread: int, task: int) -> None:
        self.type = exc_type
        self.name = _NAMES.get(exc_type, f"exception {exc_type}")
        self.codes = tuple(codes)
        self.code = codes[0] if codes else 0
        self.subcode = codes[1] if len(codes) > 1 else 0
        self.address = self.subcode if exc_type == E.EXC_BAD_ACCESS else 0
        self.state = {n: state[2 * i] | state[2 * i + 1] << 32 for i, n in enumerate(VR.STATE_FIELDS)} \
            if len(state) >= 2 * len(VR.STATE_FIELDS) else {}
        self.thread = thread
        self.task = task

    def __repr__(self) -> str:
        what = K.mach_error_string(self.code) if self.type == E.EXC_BAD_ACCESS else f"code {self.code:#x}"
        where = f" at {self.address:#x}" if self.type == E.EXC_BAD_ACCESS else ""
        return f"<{self.name} ({what}){where}, rip {self.state.get('rip', 0):#x}>"


Handler = Callable[[MachException], Any]


class _Serve:
    """The generated mach_exc server's implementation: calls the handler."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def catch_mach_exception_raise_state_identity(self, port: int, thread: int, task: int, exception: int,
                                                  code: list[int], flavor: int,
                                                  old_state: list[int]) -> tuple[int, list[int]]:
        exc = MachException(exception, list(code), list(old_state), thread, task)
        answer = self.handler(exc)
        if answer is None or answer is False:
            # a routine that fails takes nothing: the server destroys the request, its ports with it
            raise K.MachError(K.KERN_FAILURE, "the handler passes the fault on")
        for p in (thread, task):
            R.deallocate(SELF.space, p)
        new = list(old_state)
        if isinstance(answer, dict):
            for n, v in answer.items():
                i = VR.STATE_FIELDS.index(n)
                new[2 * i], new[2 * i + 1] = v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF
        return flavor, new


class Catcher:
    """Exception ports of a task set to a handler of ours, until close():
    then the ports it replaced are set back."""

    def __init__(self, task: Any, mask: int, handler: Handler) -> None:
        from .mig.exc import mach_exc_server
        self.task = getattr(task, "port", task) if task is not None else SELF.task_name
        self.mask = mask
        space = SELF.space
        self._port = R.allocate(space, MACH_PORT_RIGHT_RECEIVE)
        R.insert_right(space, self._port, self._port, MACH_MSG_TYPE_MAKE_SEND)
        self._serving = mach_exc_server.serve(_Serve(handler), self._port)
        try:
            self._old = E.swap_ports("task", self.task, mask, self._port,
                                     E.EXCEPTION_STATE_IDENTITY | E.MACH_EXCEPTION_CODES, x86_THREAD_STATE64,
                                     E.EXC_TYPES_COUNT)
        except BaseException:
            self._serving.stop()
            R.destroy(space, self._port)
            raise
        self._closed = False
        self._lock = threading.Lock()

    def close(self) -> None:
        """Set back the ports we replaced and stop serving (idempotent).

        Conditions: nothing locked; waits for the serving thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        space = SELF.space
        try:
            E.set_ports("task", self.task, self.mask, 0, E.EXCEPTION_DEFAULT, 0)
            for m, h, b, f in self._old:
                if h:
                    E.set_ports("task", self.task, m, h, b, f)
        except K.MachError:
            pass  # the task is gone
        finally:
            for _m, h, _b, _f in self._old:
                if h:
                    R.deallocate(space, h)
            self._serving.stop()
            R.destroy(space, self._port)

    def __enter__(self) -> Catcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def catch_exceptions(task: Any, mask: int, handler: Handler) -> Catcher:
    """Make ``handler`` the task's exception handler for the types in
    ``mask`` (EXC_MASK_*) until the returned Catcher is closed (a context
    manager). ``task`` is a pymach.Task, a task port's name, or None for
    our own. MachError: KERN_INVALID_ARGUMENT (a mask, not a task control
    port), KERN_FAILURE (a task that cannot be traced), and the codes of
    task_swap_exception_ports."""
    return Catcher(task, mask, handler)


__all__ = ["Catcher", "MachException", "catch_exceptions"]
