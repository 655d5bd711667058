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
from .types import *  # noqa: F401,F403

