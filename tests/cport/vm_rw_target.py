"""vm_rw_target.c (Mac OS X Internals, Figure 8-16), ported line by line
with ``from pymach.mach import *`` and the standard library.

    $ python vm_rw_target.py
    pid=3592, address=0x7f5e3c1f0000
"""

import os
import sys
from ctypes import memset

from pymach.mach import *

SOME_CHAR = b"A"


def printf(fmt, *args):
    sys.stdout.write(fmt % args)
    sys.stdout.flush()


def main():
    address = mach_vm_address_t()
    size = mach_vm_size_t(vm_page_size)

    # get a page of memory
    kr = mach_vm_allocate(mach_task_self(), byref(address), size, VM_FLAGS_ANYWHERE)
    if kr != KERN_SUCCESS:
        mach_error("vm_allocate:", kr)
        sys.exit(1)

    # color it with something
    memset(address.value, ord(SOME_CHAR), vm_page_size)

    # display the address so the master can read/write to it
    printf("pid=%d, address=%#x\n", os.getpid(), address.value)

    # wait until master writes to us
    while c_char.from_address(address.value).value == SOME_CHAR:
        pass

    mach_vm_deallocate(mach_task_self(), address, size)
    sys.exit(0)


if __name__ == "__main__":
    main()
