"""pymach.mach: the C interface of <mach/mach.h>, <mach/mach_vm.h>,
<mach/mach_error.h> and <servers/bootstrap.h>.

C names, C argument order, ctypes types and kern_return_t results. A C
program ports line by line with this one import::

    from pymach.mach import *

    a_page = mach_vm_address_t(0)
    kr = mach_vm_allocate(mach_task_self(), byref(a_page), vm_page_size, VM_FLAGS_ANYWHERE)
    if kr != KERN_SUCCESS:
        mach_error("vm_allocate:", kr)

    server_port = mach_port_t()
    kr = bootstrap_look_up(bootstrap_port, "com.osxbook.SHMServer", byref(server_port))

``bootstrap_port`` is a constant, as the name a C program finds in libc's
global is: the name this task's IPC space keeps for its bootstrap port. The
import connects nothing; the first use of the name connects it, from
TASK_BOOTSTRAP_PORT or through the bootstrap server's socket (see
pymach.mach.bootstrap).

What C itself gives a program comes along too, from ctypes: ``sizeof``,
``&`` (``byref``, ``pointer``, ``addressof``), casts and pointer types
(``cast``, ``POINTER``), ``struct`` and ``union`` (``Structure``,
``Union``), the built-in scalar types (``c_char``, ``c_int``, ...) and
those of <stdint.h>, which <mach/mach.h> includes. The rest of libc
(<stdio.h>, <string.h>, <stdlib.h>) is the program's own business.
"""

import ctypes as _ctypes
from ctypes import (POINTER as POINTER, Structure as Structure, Union as Union, addressof as addressof,
                    byref as byref, c_bool as c_bool, c_byte as c_byte, c_char as c_char, c_char_p as c_char_p,
                    c_double as c_double, c_float as c_float, c_int as c_int, c_long as c_long,
                    c_longlong as c_longlong, c_short as c_short, c_size_t as c_size_t, c_ssize_t as c_ssize_t,
                    c_ubyte as c_ubyte, c_uint as c_uint, c_ulong as c_ulong, c_ulonglong as c_ulonglong,
                    c_ushort as c_ushort, c_void_p as c_void_p, cast as cast, pointer as pointer,
                    sizeof as sizeof)

from .._kern.ipc_space import *  # noqa: F401,F403
from .._kern.kern_return import *  # noqa: F401,F403
from .._kern.kern_return import MachError  # noqa: F401
from .._kern.message_defs import *  # noqa: F401,F403
from .._kern.vm_defs import *  # noqa: F401,F403
from .message import *  # noqa: F401,F403
from .notify import *  # noqa: F401,F403
from .mach_port import *  # noqa: F401,F403
from .mach_vm import *  # noqa: F401,F403
from .thread_act import *  # noqa: F401,F403
from .._kern.exception import *  # noqa: F401,F403
from .exc import *  # noqa: F401,F403
from .clock import *  # noqa: F401,F403
from .host import *  # noqa: F401,F403
from .mig import *  # noqa: F401,F403
from .bootstrap import *  # noqa: F401,F403
from .bootstrap import bootstrap_port as bootstrap_port
from .types import *  # noqa: F401,F403
from .semaphore import *  # noqa: F401,F403
from .netname import *  # noqa: F401,F403


def __getattr__(attr: str) -> int:
    # name_server_port: the netmsg proxy's port, looked up on first read
    if attr == "name_server_port":
        from .netname import get_name_server_port
        return get_name_server_port()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


# <stdint.h>
int8_t = _ctypes.c_int8
int16_t = _ctypes.c_int16
int32_t = _ctypes.c_int32
int64_t = _ctypes.c_int64
uint8_t = _ctypes.c_uint8
uint16_t = _ctypes.c_uint16
uint32_t = _ctypes.c_uint32
uint64_t = _ctypes.c_uint64
intptr_t = _ctypes.c_ssize_t
uintptr_t = _ctypes.c_size_t
size_t = _ctypes.c_size_t
