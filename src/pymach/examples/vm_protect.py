"""vm_protect.c (Mac OS X Internals, Figure 8-15), line by line.

Allocate a page, write "Hello, Mach!" 2048 bytes into it, and with an
argument deny all access to its first 4 bytes, which Mach rounds up to the
whole page; the printf then faults and the process dies of the signal.

    $ python -m pymach.examples.vm_protect
    Hello, Mach!
    $ python -m pymach.examples.vm_protect VM_PROT_NONE
    (killed by SIGSEGV)
"""

import sys

from pymach.examples._c import cstr, printf, snprintf
from pymach.mach import (FALSE, KERN_SUCCESS, VM_FLAGS_ANYWHERE, VM_PROT_NONE, byref,
                         mach_error, mach_task_self, mach_vm_address_t, mach_vm_allocate,
                         mach_vm_deallocate, mach_vm_protect, mach_vm_size_t, vm_page_size)


class _Out(Exception):
    """goto out"""


def OUT_ON_MACH_ERROR(msg: str, retval: int) -> None:
    if kr != KERN_SUCCESS:
        mach_error(msg + ":", kr)
        raise _Out


def main(argv: list[str]) -> int:
    global kr
    kr = KERN_SUCCESS
    a_page = mach_vm_address_t(0)
    a_size = mach_vm_size_t(vm_page_size)

    try:
        kr = mach_vm_allocate(mach_task_self(), byref(a_page), a_size, VM_FLAGS_ANYWHERE)
        OUT_ON_MACH_ERROR("vm_allocate", kr)

        ptr = a_page.value + 2048

        snprintf(ptr, 16, "Hello, Mach!")

        if len(argv) == 2:  # deny read access to a_page
            kr = mach_vm_protect(
                mach_task_self(),  # target address space
                a_page,            # starting address of region
                mach_vm_size_t(4),  # length of region in bytes
                FALSE,             # set maximum?
                VM_PROT_NONE)      # deny all access
            OUT_ON_MACH_ERROR("vm_protect", kr)

        printf("%s\n", cstr(ptr))
    except _Out:
        pass

    # out:
    if a_page.value:
        mach_vm_deallocate(mach_task_self(), a_page, a_size)

    return kr


kr = KERN_SUCCESS

if __name__ == "__main__":
    sys.exit(main(sys.argv))
