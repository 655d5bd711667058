"""vm_rw_master.c (Mac OS X Internals, Figure 8-16), line by line.

Get the task port of another process with task_for_pid, read a page of it
with mach_vm_read, change the first byte of our copy to 'B' and write the
page back with mach_vm_write.

    $ python -m pymach.examples.vm_rw_master 3592 0x7f5e3c1f0000
    reading address 0x7f5e3c1f0000 in target task
    read 4096 bytes from address 0x7f5e3c1f0000 in target task, first byte=A

task_for_pid is granted when Linux would let this process ptrace the
target (the same user, subject to Yama's ptrace_scope, or CAP_SYS_PTRACE);
the book's note that it "requires superuser privileges" is the macOS rule.
"""

import sys

from pymach.examples._c import char_at, fprintf_stderr, printf, set_char_at
from pymach.mach import (KERN_SUCCESS, byref, mach_error, mach_msg_type_number_t, mach_port_t,
                         mach_task_self, mach_vm_address_t, mach_vm_read, mach_vm_size_t, mach_vm_write,
                         task_for_pid, vm_offset_t, vm_page_size)

PROGNAME = "vm_rw_master"


def EXIT_ON_MACH_ERROR(msg: str, retval: int) -> None:
    if kr != KERN_SUCCESS:
        mach_error(msg + ":", kr)
        sys.exit(retval)


def main(argc: int, argv: list[str]) -> None:
    global kr
    target_task = mach_port_t()
    size = mach_vm_size_t(vm_page_size)
    local_address = vm_offset_t()
    local_size = mach_msg_type_number_t(vm_page_size)

    if argc != 3:
        fprintf_stderr("usage: %s <pid> <address in hex>\n", PROGNAME)
        sys.exit(1)

    pid = int(argv[1])
    address = mach_vm_address_t(int(argv[2], 16))

    kr = task_for_pid(mach_task_self(), pid, byref(target_task))
    EXIT_ON_MACH_ERROR("task_for_pid", kr)

    printf("reading address %p in target task\n", address)

    kr = mach_vm_read(target_task, address, size, byref(local_address), byref(local_size))
    EXIT_ON_MACH_ERROR("vm_read", kr)

    # display some of the memory we read from the target task
    printf("read %u bytes from address %p in target task, first byte=%c\n",
           local_size, address, char_at(local_address.value))

    # change some of the memory
    set_char_at(local_address.value, "B")

    # write it back to the target task
    kr = mach_vm_write(target_task, address, local_address, local_size)
    EXIT_ON_MACH_ERROR("vm_write", kr)

    sys.exit(0)


kr = KERN_SUCCESS

if __name__ == "__main__":
    main(len(sys.argv), sys.argv)
