"""vm_rw_master.c (Mac OS X Internals, Figure 8-16), ported line by line
with ``from pymach.mach import *`` and the standard library.

    $ python vm_rw_master.py 3592 0x7f5e3c1f0000
    reading address 0x7f5e3c1f0000 in target task
    read 4096 bytes from address 0x7f5e3c1f0000 in target task, first byte=A
"""

import sys

from pymach.mach import *

PROGNAME = "vm_rw_master"


def printf(fmt, *args):
    sys.stdout.write(fmt % args)
    sys.stdout.flush()


def EXIT_ON_MACH_ERROR(msg, retval):
    if kr != KERN_SUCCESS:
        mach_error(msg + ":", kr)
        sys.exit(retval)


def main(argc, argv):
    global kr
    target_task = mach_port_t()
    size = mach_vm_size_t(vm_page_size)
    local_address = vm_offset_t()
    local_size = mach_msg_type_number_t(vm_page_size)

    if argc != 3:
        sys.stderr.write("usage: %s <pid> <address in hex>\n" % PROGNAME)
        sys.exit(1)

    pid = int(argv[1])
    address = mach_vm_address_t(int(argv[2], 16))

    kr = task_for_pid(mach_task_self(), pid, byref(target_task))
    EXIT_ON_MACH_ERROR("task_for_pid", kr)

    printf("reading address %#x in target task\n", address.value)

    kr = mach_vm_read(target_task, address, size, byref(local_address), byref(local_size))
    EXIT_ON_MACH_ERROR("vm_read", kr)

    # display some of the memory we read from the target task
    printf("read %u bytes from address %#x in target task, first byte=%c\n",
           local_size.value, address.value, c_char.from_address(local_address.value).value.decode())

    # change some of the memory
    c_char.from_address(local_address.value).value = b"B"

    # write it back to the target task
    kr = mach_vm_write(target_task, address, local_address, local_size)
    EXIT_ON_MACH_ERROR("vm_write", kr)

    sys.exit(0)


kr = KERN_SUCCESS

if __name__ == "__main__":
    main(len(sys.argv), sys.argv)
