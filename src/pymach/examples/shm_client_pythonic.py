"""The shared-memory client of Mac OS X Internals (Figure 8-18), with
pymach's Pythonic layer: look the service up, ask for its memory entry, map
it, print the string and, with an argument, write the argument into it.

    $ python -m pymach.examples.shm_client_pythonic
    Hello, Mach!
"""

import sys

import pymach
import pymach.bootstrap
from pymach.examples.shm_ipc_common import SERVICE_NAME, SHM_MSG_ID


def main(argv: list[str]) -> int:
    with pymach.bootstrap.look_up(SERVICE_NAME) as server, pymach.Port() as port:
        # a send right for the answer, as the book's client asks (its server
        # answers with MACH_MSGH_BITS_LOCAL of the request: MOVE_SEND)
        server.send(pymach.Message(id=SHM_MSG_ID), reply=port, reply_once=False)
        reply = port.receive(timeout=30)
    try:
        (entry,) = reply.rights
        assert isinstance(entry, pymach.MemoryEntry)
        with entry.map(size=pymach.vm_page_size) as page:
            text = page.read(0, page.size).split(b"\0", 1)[0].decode()
            print(text)
            if len(argv) == 2:
                print(f'writing "{argv[1]}" to shared memory')
                data = argv[1].encode()[:page.size - 1]
                page.write(data + b"\0" * (page.size - len(data)))
    finally:
        reply.release()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
