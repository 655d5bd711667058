"""shm_ipc_server.c (Mac OS X Internals, Figure 8-19), line by line.

Allocate a page, name it with a read-write memory entry, put "Hello, Mach!"
in it, check in as com.osxbook.SHMServer, and answer every request with
the entry, in a port descriptor.

    $ python -m pymach.examples.shm_ipc_server
    memory allocated at 0x7f...
"""

import sys

from pymach.examples._c import printf, strcpy
from pymach.examples.shm_ipc_common import (EXIT_ON_MACH_ERROR, SERVICE_NAME, msg_format_request_r_t,
                                            msg_format_response_t)
from pymach.mach import (
                         BOOTSTRAP_SUCCESS, KERN_SUCCESS, MACH_MSG_PORT_DESCRIPTOR, MACH_MSG_TIMEOUT_NONE,
                         MACH_MSG_TYPE_COPY_SEND, MACH_MSGH_BITS_COMPLEX, MACH_MSGH_BITS_LOCAL, MACH_PORT_NULL,
                         MACH_RCV_MSG, MACH_SEND_MSG, VM_FLAGS_ANYWHERE, VM_PROT_READ, VM_PROT_WRITE,
                         bootstrap_check_in, bootstrap_create_service, bootstrap_port, byref, mach_make_memory_entry_64,
                         mach_msg, mach_port_t, mach_task_self, mach_vm_address_t, mach_vm_allocate,
                         memory_object_size_t, sizeof, vm_page_size)


def main() -> int:
    address = mach_vm_address_t(0)
    size = memory_object_size_t(vm_page_size)
    object_handle = mach_port_t(MACH_PORT_NULL)
    recv_msg = msg_format_request_r_t()
    send_msg = msg_format_response_t()
    server_port = mach_port_t()

    kr = mach_vm_allocate(mach_task_self(), byref(address), size, VM_FLAGS_ANYWHERE)
    EXIT_ON_MACH_ERROR("vm_allocate", kr, KERN_SUCCESS)

    printf("memory allocated at %#x\n", address.value)

    # create a named entry for this memory
    kr = mach_make_memory_entry_64(mach_task_self(),
                                   byref(size),
                                   address,
                                   VM_PROT_READ | VM_PROT_WRITE,
                                   byref(object_handle),
                                   MACH_PORT_NULL)
    EXIT_ON_MACH_ERROR("mach_make_memory_entry", kr, KERN_SUCCESS)

    # put a string in the shared memory
    ptr = address.value
    strcpy(ptr, "Hello, Mach!")

    kr = bootstrap_create_service(bootstrap_port, SERVICE_NAME, byref(server_port))
    EXIT_ON_MACH_ERROR("bootstrap_create_service", kr, BOOTSTRAP_SUCCESS)

    kr = bootstrap_check_in(bootstrap_port, SERVICE_NAME, byref(server_port))
    EXIT_ON_MACH_ERROR("bootstrap_check_in", kr, BOOTSTRAP_SUCCESS)

    for _ in iter(int, 1):  # for (;;)
        # receive a request
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
        EXIT_ON_MACH_ERROR("mach_msg(rcv)", kr, KERN_SUCCESS)

        # send the named entry in the reply
        send_hdr = send_msg.header
        send_hdr.msgh_bits = MACH_MSGH_BITS_LOCAL(recv_hdr.msgh_bits) | MACH_MSGH_BITS_COMPLEX
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
