"""The kernel's own objects, exported on purpose: for tools that look
inside a task, for stress harnesses, and for tests that check the runtime
from the inside.

The kernel lives in ``pymach._kern``: its modules change with the
implementation, and no program should import them. What a program may
rely on is in this module (and in ``pymach`` and ``pymach.mach``):

- ``SELF``: this process's task, built on first use: ``SELF.space`` (the
  IPC space: names to rights), ``SELF.map`` (the VM map), ``SELF.task``
  and ``SELF.host`` (the task's and the host's kernel objects);
- ``MachError``, the exception that carries a ``kern_return_t``, and
  ``kern_return``, the codes and their strings;
- ``message_defs`` and ``vm_defs``, the constants of ``<mach/message.h>``
  and ``<mach/vm_*.h>``.

``tests/test_layers.py`` checks that every name here is the kernel's own
object, and that the kernel's declared exports (``pymach._kern.__all__``)
are all here.
"""

from __future__ import annotations

from ._kern import kern_return, message_defs, vm_defs
from ._kern.kern_return import MachError
from ._kern.task import SELF

__all__ = ["SELF", "MachError", "kern_return", "message_defs", "vm_defs"]
