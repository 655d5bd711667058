"""shm_ipc_client.c (Mac OS X Internals, Figure 8-18), line by line.

Look up the server, ask it for its memory entry, map the entry, print the
shared string and, with an argument, write the argument into it (the next
client prints it).

    $ python -m pymach.examples.shm_ipc_client
    recv_msg.data.name = 0x000703
    Hello, Mach!

With no server it prints what the book's C prints, exactly as macOS would:
mach_error has no text for bootstrap_look_up's BOOTSTRAP_UNKNOWN_SERVICE
(1102, 0x44e), so it says

    bootstrap_look_up: (os/kern) unknown error code (44e)

(shm_client_pythonic says instead that the server is not running and how
to start it).
"""

import sys

from pymach.examples._c import cstr, printf, strncpy
from pymach.examples.shm_ipc_common import (EXIT_ON_MACH_ERROR, SERVICE_NAME, SHM_MSG_ID, msg_format_request_t,
                                            msg_format_response_r_t)
from pymach.mach import (
                         BOOTSTRAP_SUCCESS, FALSE, KERN_SUCCESS, MACH_MSG_SUCCESS, MACH_MSG_TIMEOUT_NONE,
                         MACH_MSG_TYPE_COPY_SEND, MACH_MSG_TYPE_MAKE_SEND, MACH_MSGH_BITS, MACH_PORT_NULL,
                         MACH_PORT_RIGHT_RECEIVE, MACH_RCV_MSG, MACH_SEND_MSG, TRUE, VM_INHERIT_NONE,
                         VM_PROT_READ, VM_PROT_WRITE, bootstrap_look_up, bootstrap_port, byref, mach_error, mach_msg,
                         mach_port_allocate, mach_port_t, mach_task_self, mach_vm_address_t, mach_vm_deallocate,
                         mach_vm_map, mach_vm_size_t, sizeof, vm_page_size)


def main(argv: list[str]) -> int:
    send_msg = msg_format_request_t()
    recv_msg = msg_format_response_r_t()
    client_port, server_port = mach_port_t(), mach_port_t()

    # find the server
    kr = bootstrap_look_up(bootstrap_port, SERVICE_NAME, byref(server_port))
    EXIT_ON_MACH_ERROR("bootstrap_look_up", kr, BOOTSTRAP_SUCCESS)

    # allocate a port for receiving the server's reply
    kr = mach_port_allocate(mach_task_self(),        # our task is acquiring
                            MACH_PORT_RIGHT_RECEIVE,  # a new receive right
                            byref(client_port))       # with this name
    EXIT_ON_MACH_ERROR("mach_port_allocate", kr, KERN_SUCCESS)

    # prepare and send a request message to the server
    send_hdr = send_msg.header
    send_hdr.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, MACH_MSG_TYPE_MAKE_SEND)
    send_hdr.msgh_size = sizeof(send_msg)
    send_hdr.msgh_remote_port = server_port.value
    send_hdr.msgh_local_port = client_port.value
    send_hdr.msgh_reserved = 0
    send_hdr.msgh_id = SHM_MSG_ID
    kr = mach_msg(send_hdr,                # message buffer
                  MACH_SEND_MSG,           # option indicating send
                  send_hdr.msgh_size,      # size of header + body
                  0,                       # receive limit
                  MACH_PORT_NULL,          # receive name
                  MACH_MSG_TIMEOUT_NONE,   # no timeout, wait forever
                  MACH_PORT_NULL)          # no notification port
    EXIT_ON_MACH_ERROR("mach_msg(send)", kr, MACH_MSG_SUCCESS)

    while True:  # do { ... } while (recv_hdr->msgh_id != SHM_MSG_ID);
        recv_hdr = recv_msg.header
        recv_hdr.msgh_remote_port = server_port.value
        recv_hdr.msgh_local_port = client_port.value
        recv_hdr.msgh_size = sizeof(recv_msg)
        recv_msg.data.name = 0
        kr = mach_msg(recv_hdr,               # message buffer
                      MACH_RCV_MSG,           # option indicating receive
                      0,                      # send size
                      recv_hdr.msgh_size,     # size of header + body
                      client_port,            # receive name
                      MACH_MSG_TIMEOUT_NONE,  # no timeout, wait forever
                      MACH_PORT_NULL)         # no notification port
        EXIT_ON_MACH_ERROR("mach_msg(rcv)", kr, MACH_MSG_SUCCESS)

        printf("recv_msg.data.name = %#08x\n", recv_msg.data.name)
        object_handle = recv_msg.data.name

        # map the specified memory object to a region of our address space
        size = mach_vm_size_t(vm_page_size)
        address = mach_vm_address_t(0)
        kr = mach_vm_map(
            mach_task_self(),               # target address space (us)
            byref(address),                 # map it and tell us where
            size,                           # number of bytes to allocate
            0,                              # address mask for alignment
            TRUE,                           # map it anywhere
            object_handle,                  # the memory object
            0,                              # offset within memory object
            FALSE,                          # don't copy -- directly map
            VM_PROT_READ | VM_PROT_WRITE,   # current protection
            VM_PROT_READ | VM_PROT_WRITE,   # maximum protection
            VM_INHERIT_NONE)                # inheritance properties
        if kr != KERN_SUCCESS:
            mach_error("vm_map", kr)
        else:
            # display the current contents of the memory
            printf("%s\n", cstr(address.value))
            if len(argv) == 2:  # write specified string to the memory
                printf('writing "%s" to shared memory\n', argv[1])
                strncpy(address.value, argv[1], size.value)
                strncpy(address.value + size.value - 1, "", 1)  # ((char *)address)[size - 1] = '\0'
            mach_vm_deallocate(mach_task_self(), address, size)
        if recv_hdr.msgh_id == SHM_MSG_ID:
            break

    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
