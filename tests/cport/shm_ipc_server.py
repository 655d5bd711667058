"""shm_ipc_server.c (Mac OS X Internals, Figure 8-19), ported line by line
with ``from pymach.mach import *`` and the standard library.

    $ python shm_ipc_server.py
    memory allocated at 0x7f...
"""

import sys
from ctypes import memmove

from pymach.mach import *
from shm_ipc_common import *


def printf(fmt, *args):
    sys.stdout.write(fmt % args)
    sys.stdout.flush()


def strcpy(ptr, s):
    s = s.encode() + b"\0"
    memmove(ptr, s, len(s))


def main():
    address = mach_vm_address_t(0)
    size = memory_object_size_t(vm_page_size)
    object_handle = mach_port_t(MACH_PORT_NULL)
    recv_msg = msg_format_request_r_t()
    send_msg = msg_format_response_t()
    server_port = mach_port_t()

    kr = mach_vm_allocate(mach_task_self(), byref(address), size, VM_FLAGS_ANYWHERE)
    EXIT_ON_MACH_ERROR("vm_allocate", kr, KERN_SUCCESS)

    printf("memory allocated at %#x\n", address.value)

    # Create a named entry corresponding to the given mapped portion of our
    # address space. We can then share this named entry with other tasks.
    kr = mach_make_memory_entry_64(
        mach_task_self(),               # target address map
        byref(size),                    # so many bytes
        address,                        # at this address
        VM_PROT_READ | VM_PROT_WRITE,   # with these permissions
        byref(object_handle),           # outcoming object handle
        MACH_PORT_NULL)                 # parent handle
    # ideally we should vm_deallocate() before we exit
    EXIT_ON_MACH_ERROR("mach_make_memory_entry", kr, KERN_SUCCESS)

    # put some data into the shared memory
    ptr = address.value
    strcpy(ptr, "Hello, Mach!")

    # become a Mach server
    kr = bootstrap_create_service(bootstrap_port, SERVICE_NAME, byref(server_port))
    EXIT_ON_MACH_ERROR("bootstrap_create_service", kr, BOOTSTRAP_SUCCESS)

    kr = bootstrap_check_in(bootstrap_port, SERVICE_NAME, byref(server_port))
    EXIT_ON_MACH_ERROR("bootstrap_check_in", kr, BOOTSTRAP_SUCCESS)

    while True:  # server loop
        # receive a message
        recv_hdr = recv_msg.header
        recv_hdr.msgh_local_port = server_port.value
        recv_hdr.msgh_size = sizeof(recv_msg)
        kr = mach_msg(recv_hdr,               # message buffer
                      MACH_RCV_MSG,           # option indicating receive
                      0,                      # send size
                      recv_hdr.msgh_size,     # size of header + body
                      server_port,            # receive name
                      MACH_MSG_TIMEOUT_NONE,  # no timeout, wait forever
                      MACH_PORT_NULL)         # no notification port
        EXIT_ON_MACH_ERROR("mach_msg(recv)", kr, KERN_SUCCESS)

        # send a reply
        send_hdr = send_msg.header
        send_hdr.msgh_bits = MACH_MSGH_BITS_LOCAL(recv_hdr.msgh_bits)
        send_hdr.msgh_bits |= MACH_MSGH_BITS_COMPLEX
        send_hdr.msgh_size = sizeof(send_msg)
        send_hdr.msgh_local_port = MACH_PORT_NULL
        send_hdr.msgh_remote_port = recv_hdr.msgh_remote_port
        send_hdr.msgh_id = recv_hdr.msgh_id
        send_msg.body.msgh_descriptor_count = 1
        send_msg.data.name = object_handle.value
        send_msg.data.disposition = MACH_MSG_TYPE_COPY_SEND
        send_msg.data.type = MACH_MSG_PORT_DESCRIPTOR
        kr = mach_msg(send_hdr,               # message buffer
                      MACH_SEND_MSG,          # option indicating send
                      send_hdr.msgh_size,     # size of header + body
                      0,                      # receive limit
                      MACH_PORT_NULL,         # receive name
                      MACH_MSG_TIMEOUT_NONE,  # no timeout, wait forever
                      MACH_PORT_NULL)         # no notification port
        EXIT_ON_MACH_ERROR("mach_msg(send)", kr, KERN_SUCCESS)

    # not reached
    sys.exit(kr)


if __name__ == "__main__":
    main()
