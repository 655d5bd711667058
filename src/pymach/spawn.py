"""pymach.spawn: start a program that inherits this task's special ports
(TASK_BOOTSTRAP_PORT and the others) and its mach_ports_register array, as
a Mach child task does. The send rights travel as inherited fds; the new
program's pymach claims them at import and adopts them on first use."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Sequence

from ._linux.atfork import IMPORT_LOCK
from ._kern import task as KT

if TYPE_CHECKING:
    import subprocess


def spawn(args: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:  # type: ignore[type-arg]
    """subprocess.Popen(args, ...) with our special and registered ports
    passed down, and our task's exception ports (the program's faults go to
    them from its first instruction), and the fds of every pymach.Semaphore
    pickled so far (the program unpickles them). Other Popen arguments (env,
    pass_fds, ...) are honoured."""
    with IMPORT_LOCK:  # imported on first use, which a fork waits for (see _linux/atfork.py)
        import subprocess
    env_add, fds = KT.SELF.inheritance()
    env = dict(popen_kwargs.pop("env", None) or os.environ)
    env.update(env_add)
    pass_fds = tuple(popen_kwargs.pop("pass_fds", ())) + tuple(fds)
    sema = sys.modules.get("pymach._kern.sync_sema")  # loaded if any Semaphore was pickled
    if sema is not None:
        pass_fds += tuple(sema.spawn_fds())  # pickled Semaphores: the program unpickles them
    if any(cap is not None for cap, _b, _f in KT.SELF.exc_actions):
        # the task's exception ports are the program's too: its faults are
        # caught from its first instruction (pymach.exc_tracer)
        from .exc_tracer import spawn_traced
        proc: subprocess.Popen = spawn_traced(  # type: ignore[type-arg]
            list(args), lambda a, **kw: subprocess.Popen(a, **kw, **popen_kwargs), pass_fds, env)
        return proc
    return subprocess.Popen(list(args), env=env, pass_fds=pass_fds, **popen_kwargs)
