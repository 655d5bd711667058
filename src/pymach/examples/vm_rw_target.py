"""vm_rw_target.c (Mac OS X Internals, Figure 8-16), line by line.

Allocate a page, fill it with 'A', print our pid and the page's address,
and spin until another task (vm_rw_master) changes the first byte.

    $ python -m pymach.examples.vm_rw_target
    pid=3592, address=0x7f5e3c1f0000
"""

import os
import sys

from pymach.examples._c import char_at, memset, printf
from pymach.mach import (KERN_SUCCESS, VM_FLAGS_ANYWHERE, byref, mach_error, mach_task_self,
                         mach_vm_address_t, mach_vm_allocate, mach_vm_deallocate, mach_vm_size_t,
                         vm_page_size)

SOME_CHAR = b"A"


def main() -> int:
    address = mach_vm_address_t()
    size = mach_vm_size_t(vm_page_size)

    # get a page of memory
    kr = mach_vm_allocate(mach_task_self(), byref(address), size, VM_FLAGS_ANYWHERE)
    if kr != KERN_SUCCESS:
        mach_error("vm_allocate:", kr)
        sys.exit(1)

    # color it with something
    memset(address.value, SOME_CHAR[0], vm_page_size)

    # display the address so the master can read/write to it
    printf("pid=%d, address=%p\n", os.getpid(), address)

    # wait until master writes to us
    while char_at(address.value) == SOME_CHAR:
        pass

    mach_vm_deallocate(mach_task_self(), address, size)
    sys.exit(0)


if __name__ == "__main__":
    main()
