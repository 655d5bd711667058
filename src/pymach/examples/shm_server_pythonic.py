"""The shared-memory server of Mac OS X Internals (Figure 8-19), with
pymach's Pythonic layer: a Region, its MemoryEntry, and a Port checked in
with the bootstrap server. It answers the C client (shm_ipc_client) too:
the reply is the same message, an entry in a port descriptor.

    $ python -m pymach.examples.shm_server_pythonic
    memory allocated at 0x7f...
"""

import sys

import pymach
import pymach.bootstrap
from pymach.examples.shm_ipc_common import SERVICE_NAME


def check_in() -> pymach.Port | None:
    """The service's receive right, or None once it is said why there is
    none: another live server holds the name (BOOTSTRAP_NAME_IN_USE or
    BOOTSTRAP_SERVICE_ACTIVE), or no bootstrap server answers."""
    try:
        pymach.bootstrap.create_service(SERVICE_NAME).close()
        return pymach.bootstrap.check_in(SERVICE_NAME)
    except pymach.BootstrapError as e:
        print(f"shm_server_pythonic: cannot serve {SERVICE_NAME}: {e}", file=sys.stderr)
        return None


def main() -> int:
    with pymach.Task.self().allocate(pymach.vm_page_size) as page:
        print(f"memory allocated at {page.address:#x}", flush=True)
        entry = page.memory_entry(pymach.VM_PROT_READ | pymach.VM_PROT_WRITE)
        page.write(b"Hello, Mach!\0")
        service = check_in()
        if service is None:
            return 1
        with service as port:
            while True:
                request = port.receive()
                if request.reply is not None:
                    # the reply carries the entry (a send right, copied)
                    request.reply.send(pymach.Message(id=request.id, rights=[entry]))
                request.release()  # (and our reply right, if it is not used up)


if __name__ == "__main__":
    sys.exit(main())
