"""The shared-memory client of Mac OS X Internals (Figure 8-18), with
pymach's Pythonic layer: look the service up, ask for its memory entry, map
it, print the string and, with an argument, write the argument into it.

    $ python -m pymach.examples.shm_client_pythonic
    Hello, Mach!

With no server it says so in one line, and how to start one (exit status 1):

    $ python -m pymach.examples.shm_client_pythonic
    shm_client_pythonic: com.osxbook.SHMServer is not running; start it with: python -m pymach.examples.shm_server_pythonic &
"""

import sys

import pymach
import pymach.bootstrap
from pymach.examples.shm_ipc_common import SERVICE_NAME, SHM_MSG_ID


PROG = "shm_client_pythonic"
START_SERVER = "python -m pymach.examples.shm_server_pythonic &"


def look_up() -> pymach.SendRight | None:
    """The server's send right, or None once it is said in one line why
    there is none: nobody has checked the name in
    (BOOTSTRAP_UNKNOWN_SERVICE), or no bootstrap server answers (a
    MACH_SEND_* code: PYMACH_NO_AUTOSTART is set and none runs)."""
    try:
        return pymach.bootstrap.look_up(SERVICE_NAME)
    except pymach.BootstrapError as e:
        if e.kr == pymach.bootstrap.BOOTSTRAP_UNKNOWN_SERVICE:
            print(f"{PROG}: {SERVICE_NAME} is not running; start it with: {START_SERVER}", file=sys.stderr)
        elif e.kr not in pymach.BootstrapError.codes:
            print(f"{PROG}: {SERVICE_NAME} is not running, nor is a bootstrap server ({e}); "
                  f"start both with: pymach bootstrap serve & {START_SERVER}", file=sys.stderr)
        else:
            print(f"{PROG}: {e}", file=sys.stderr)
        return None


def main(argv: list[str]) -> int:
    server = look_up()
    if server is None:
        return 1
    with server, pymach.Port() as port:
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
