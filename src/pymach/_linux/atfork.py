"""Imports made after pymach's own import, safe across os.fork.

Importing pymach imports only what it needs at once; the rest (the
Pythonic layer, subprocess for spawning, logging for a notification that
fails, json for introspection) is imported on first use, from whatever
thread uses it first.

Kernel and runtime facts this relies on:

- fork copies the calling thread only. A lock another thread held at that
  moment stays held for ever in the child: nobody is left to release it.
- Python's import system holds a lock per module while it runs the module's
  code for the first time. CPython takes its global import lock around a
  fork, but not these: a fork while another thread runs a module's first
  import leaves that module's lock held in the child, and the child's own
  import of it (or of any module that imports it) never returns.

So such an import is made ``with IMPORT_LOCK``, a lock that os.fork takes
before it forks (and releases after, in parent and child): a fork waits
for the import under way to finish. Rules that keep it free of deadlocks:
the code of a module imported this way does not first-use the task's state
(kern.task.SELF) nor take IMPORT_LOCK at its top level, and a callback of
SELF.on_first_use does not take IMPORT_LOCK (both locks are taken by a
fork, in either order).
"""

from __future__ import annotations

import os
import threading

IMPORT_LOCK = threading.RLock()

os.register_at_fork(before=IMPORT_LOCK.acquire, after_in_parent=IMPORT_LOCK.release,
                    after_in_child=IMPORT_LOCK.release)
