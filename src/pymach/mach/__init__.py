"""pymach.mach: the C interface of <mach/mach.h>, <mach/mach_vm.h> and
<mach/mach_error.h>.

C names, C argument order, ctypes types and kern_return_t results. A C
program ports line by line::

    from ctypes import byref
    from pymach.mach import *

    a_page = mach_vm_address_t(0)
    kr = mach_vm_allocate(mach_task_self(), byref(a_page), vm_page_size, VM_FLAGS_ANYWHERE)
    if kr != KERN_SUCCESS:
        mach_error("vm_allocate:", kr)

The routines of <servers/bootstrap.h> are here too. ``bootstrap_port`` is
read as a module attribute (``from pymach.mach import bootstrap_port``, or
``pymach.mach.bootstrap_port``): the first read connects it, from
TASK_BOOTSTRAP_PORT or through the bootstrap server's socket (see
pymach.mach.bootstrap). ``from pymach.mach import *`` leaves it out, so that
a star import never starts a server.
"""

from ctypes import byref, pointer, sizeof  # noqa: F401  (C programs use these)

from ..kern.ipc_space import *  # noqa: F401,F403
from ..kern.kern_return import *  # noqa: F401,F403
from ..kern.kern_return import MachError  # noqa: F401
from ..kern.message_defs import *  # noqa: F401,F403
from ..kern.vm_defs import *  # noqa: F401,F403
from .message import *  # noqa: F401,F403
from .notify import *  # noqa: F401,F403
from .mach_port import *  # noqa: F401,F403
from .mach_vm import *  # noqa: F401,F403
from .thread_act import *  # noqa: F401,F403
from .mig import *  # noqa: F401,F403
from .bootstrap import *  # noqa: F401,F403
from .types import *  # noqa: F401,F403


def __getattr__(name: str) -> int:
    """``bootstrap_port``, connected on first read (MACH_PORT_NULL when no
    server can be reached: bootstrap_port_error() says why)."""
    if name == "bootstrap_port":
        from .bootstrap import get_bootstrap_port
        return get_bootstrap_port()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
