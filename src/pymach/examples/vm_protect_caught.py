"""vm_protect.c (Mac OS X Internals, Figure 8-15) with an exception handler.

The same page, the same "Hello, Mach!" 2048 bytes into it, the same
mach_vm_protect(VM_PROT_NONE) of its first 4 bytes, and the printf that
faults. But first the program makes an exception port, serves it with
mach_msg_server and the generated mach_exc_server in a thread of its own,
and sets it as the task's port for EXC_MASK_BAD_ACCESS. The printf is the
C library's, which reads the string in C without Python's lock (a fault
under that lock would stop every Python thread, the handler's too: see
docs/architecture.md). The fault becomes
a mach_exception_raise_state_identity message; the handler lifts the
protection and answers KERN_SUCCESS, the faulting instruction runs again,
and the printf prints:

    $ python -m pymach.examples.vm_protect_caught
    caught EXC_BAD_ACCESS ((os/kern) protection failure) at 0x...: lifting the protection
    Hello, Mach!
"""

import sys
import threading
from ctypes import memmove  # <string.h>

from pymach._linux.libc import printf_string
from pymach.examples._c import printf, snprintf
from pymach.mach import (EXC_BAD_ACCESS, EXC_MASK_BAD_ACCESS, EXCEPTION_STATE_IDENTITY, FALSE, KERN_SUCCESS,
                         MACH_EXCEPTION_CODES, MACH_MSG_TYPE_MAKE_SEND, MACH_PORT_RIGHT_RECEIVE, VM_FLAGS_ANYWHERE,
                         VM_PROT_DEFAULT, VM_PROT_NONE, byref, mach_error, mach_error_string, mach_msg_server,
                         mach_port_allocate, mach_port_deallocate, mach_port_insert_right, mach_port_t,
                         mach_task_self, mach_vm_address_t, mach_vm_allocate, mach_vm_deallocate, mach_vm_protect,
                         mach_vm_size_t, task_set_exception_ports, vm_page_size, x86_THREAD_STATE64)
from pymach.mig.exc import mach_exc_server


class _Out(Exception):
    """goto out"""


def OUT_ON_MACH_ERROR(msg: str, retval: int) -> None:
    if retval != KERN_SUCCESS:
        mach_error(msg + ":", retval)
        raise _Out


a_page = mach_vm_address_t(0)
a_size = mach_vm_size_t(vm_page_size)


def catch_mach_exception_raise_state_identity(exception_port, thread, task, exception, code, codeCnt,  # type: ignore[no-untyped-def]
                                              flavor, old_state, old_stateCnt, new_state, new_stateCnt):
    """The handler (mach_excServer.c calls it by this name): lift the
    protection and let the thread retry with its own state."""
    if exception != EXC_BAD_ACCESS:
        return 5  # KERN_FAILURE: not ours; the fault goes on
    printf("caught EXC_BAD_ACCESS (%s) at 0x%x: lifting the protection\n",
           mach_error_string(code[0]), code[1])
    kr = mach_vm_protect(task, a_page, a_size, FALSE, VM_PROT_DEFAULT)
    memmove(new_state, old_state, old_stateCnt * 4)
    new_stateCnt._obj.value = old_stateCnt
    mach_port_deallocate(mach_task_self(), thread)
    mach_port_deallocate(mach_task_self(), task)
    return kr


def exception_handler(port: int) -> None:
    mach_msg_server(mach_exc_server.mach_exc_server, mach_exc_server.mach_exc_max_size, port, 0)


def main(argv: list[str]) -> int:
    kr = KERN_SUCCESS
    exception_port = mach_port_t(0)
    try:
        kr = mach_port_allocate(mach_task_self(), MACH_PORT_RIGHT_RECEIVE, byref(exception_port))
        OUT_ON_MACH_ERROR("mach_port_allocate", kr)
        kr = mach_port_insert_right(mach_task_self(), exception_port, exception_port, MACH_MSG_TYPE_MAKE_SEND)
        OUT_ON_MACH_ERROR("mach_port_insert_right", kr)

        mach_exc_server.implementation = sys.modules[__name__]
        mach_exc_server.c_layer = True
        threading.Thread(target=exception_handler, args=(exception_port.value,), daemon=True).start()

        kr = task_set_exception_ports(mach_task_self(), EXC_MASK_BAD_ACCESS, exception_port,
                                      EXCEPTION_STATE_IDENTITY | MACH_EXCEPTION_CODES, x86_THREAD_STATE64)
        OUT_ON_MACH_ERROR("task_set_exception_ports", kr)

        kr = mach_vm_allocate(mach_task_self(), byref(a_page), a_size, VM_FLAGS_ANYWHERE)
        OUT_ON_MACH_ERROR("vm_allocate", kr)

        ptr = a_page.value + 2048

        snprintf(ptr, 16, "Hello, Mach!")

        kr = mach_vm_protect(
            mach_task_self(),   # target address space
            a_page,             # starting address of region
            mach_vm_size_t(4),  # length of region in bytes
            FALSE,              # set maximum?
            VM_PROT_NONE)       # deny all access
        OUT_ON_MACH_ERROR("vm_protect", kr)

        sys.stdout.flush()
        # <stdio.h>'s printf, in C: the fault stops this thread alone, in C
        # code, without Python's lock, so the handler's thread runs
        printf_string(b"%s\n", ptr)  # faults, is caught, and runs again
    except _Out:
        pass

    # out:
    if a_page.value:
        mach_vm_deallocate(mach_task_self(), a_page, a_size)

    return kr


if __name__ == "__main__":
    sys.exit(main(sys.argv))
