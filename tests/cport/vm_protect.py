"""vm_protect.c (Mac OS X Internals, Figure 8-15), ported line by line with
``from pymach.mach import *`` and the standard library, as a C programmer
would port it: <mach/mach.h> is the star import, <stdio.h> and <string.h>
are sys and ctypes.

    $ python vm_protect.py
    Hello, Mach!
    $ python vm_protect.py VM_PROT_NONE
    (killed by the fault, as the book's "bus error")
"""

import sys
from ctypes import memmove

from pymach.mach import *


def printf(fmt, *args):
    sys.stdout.write(fmt % args)
    sys.stdout.flush()


def snprintf(ptr, size, s):
    s = s.encode()[:size - 1] + b"\0"
    memmove(ptr, s, len(s))


class out(Exception):
    """goto out"""


def OUT_ON_MACH_ERROR(msg, retval):
    if kr != KERN_SUCCESS:
        mach_error(msg + ":", kr)
        raise out


def main(argc, argv):
    global kr
    ptr = c_char_p()
    a_page = mach_vm_address_t(0)
    a_size = mach_vm_size_t(vm_page_size)

    try:
        kr = mach_vm_allocate(mach_task_self(), byref(a_page), a_size, VM_FLAGS_ANYWHERE)
        OUT_ON_MACH_ERROR("vm_allocate", kr)

        ptr = cast(a_page.value + 2048, c_char_p)

        snprintf(ptr, 16, "Hello, Mach!")

        if argc == 2:  # deny read access to a_page
            kr = mach_vm_protect(
                mach_task_self(),   # target address space
                a_page,             # starting address of region
                mach_vm_size_t(4),  # length of region in bytes
                FALSE,              # set maximum?
                VM_PROT_NONE)       # deny all access
            OUT_ON_MACH_ERROR("vm_protect", kr)

        printf("%s\n", ptr.value.decode())
    except out:
        pass

    # out:
    if a_page.value:
        mach_vm_deallocate(mach_task_self(), a_page, a_size)

    sys.exit(kr)


kr = KERN_SUCCESS

if __name__ == "__main__":
    main(len(sys.argv), sys.argv)
