"""vm_protect, Pythonic: the same page and the same protection, but the
read goes through pymach's safe accessor, so the fault comes back as a
MachError (KERN_PROTECTION_FAILURE) that the program catches.

    $ python -m pymach.examples.vm_protect_pythonic
    Hello, Mach!
    $ python -m pymach.examples.vm_protect_pythonic VM_PROT_NONE
    caught ProtectionFailureError (a MachError): 0x... is not readable: (os/kern) protection failure (kr=0x2)
"""

import sys

from pymach import VM_PROT_NONE, ProtectionFailureError, Task, vm_page_size


def main(argv: list[str]) -> int:
    with Task.self().allocate(vm_page_size) as page:
        page.write(b"Hello, Mach!\0", 2048)
        if len(argv) == 2:
            page.protect(VM_PROT_NONE, size=4)  # rounded up to the whole page
        try:
            text = page.read(2048, 16).split(b"\0")[0].decode()
        except ProtectionFailureError as e:
            print(f"caught {type(e).__name__} (a MachError): {e}")
            return e.kr
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
