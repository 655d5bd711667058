"""What a Linux fault is as a Mach exception: the exception type and the
two codes that XNU's user_trap (osfmk/i386/trap.c) gives the same
hardware event on x86_64, from the signal and siginfo Linux gives it.

| hardware event | Linux | Mach (exception, code, subcode) |
|---|---|---|
| page fault, nothing mapped | SIGSEGV SEGV_MAPERR | EXC_BAD_ACCESS, KERN_INVALID_ADDRESS, address |
| page fault, protection | SIGSEGV SEGV_ACCERR | EXC_BAD_ACCESS, KERN_PROTECTION_FAILURE, address |
| general protection (non-canonical address...) | SIGSEGV SI_KERNEL | EXC_BAD_ACCESS, EXC_I386_GPFLT, 0 |
| a mapped file's page past its end | SIGBUS BUS_ADRERR | EXC_BAD_ACCESS, KERN_MEMORY_ERROR, address |
| misaligned access (AC flag) | SIGBUS BUS_ADRALN | EXC_BAD_ACCESS, EXC_I386_ALIGNFLT, address |
| invalid opcode (ud2...) | SIGILL | EXC_BAD_INSTRUCTION, EXC_I386_INVOP, 0 |
| integer division by zero | SIGFPE FPE_INTDIV | EXC_ARITHMETIC, EXC_I386_DIV, 0 |
| into overflow | SIGFPE FPE_INTOVF | EXC_ARITHMETIC, EXC_I386_INTO, 0 |
| SSE/x87 floating point error | SIGFPE FPE_FLT* | EXC_ARITHMETIC, EXC_I386_SSEEXTERR, 0 |
| int3 | SIGTRAP SI_KERNEL or TRAP_BRKPT | EXC_BREAKPOINT, EXC_I386_BPT, 0 |
| single step, hardware breakpoint | SIGTRAP TRAP_TRACE, TRAP_HWBKPT | EXC_BREAKPOINT, EXC_I386_SGL, 0 |
| a signal sent by a process | si_code <= 0 | EXC_SOFTWARE, EXC_SOFT_SIGNAL, the signal |

XNU's subcode for a general protection fault is the CPU's error code and
for an SSE error the MXCSR; Linux's siginfo has neither, so they are 0
here (docs/deviations.md).
"""

from __future__ import annotations

from typing import Final

from .._linux.tracer import SIGBUS, SIGFPE, SIGILL, SIGSEGV, SIGTRAP
from . import kern_return as K
from .exception import (EXC_ARITHMETIC, EXC_BAD_ACCESS, EXC_BAD_INSTRUCTION, EXC_BREAKPOINT, EXC_I386_ALIGNFLT,
                        EXC_I386_BPT, EXC_I386_DIV, EXC_I386_GPFLT, EXC_I386_INTO, EXC_I386_INVOP, EXC_I386_SGL,
                        EXC_I386_SSEEXTERR, EXC_SOFT_SIGNAL, EXC_SOFTWARE)

# <asm-generic/siginfo.h>
SI_KERNEL: Final = 0x80
SEGV_MAPERR: Final = 1
SEGV_ACCERR: Final = 2
BUS_ADRALN: Final = 1
FPE_INTDIV: Final = 1
FPE_INTOVF: Final = 2
TRAP_BRKPT: Final = 1
TRAP_TRACE: Final = 2
TRAP_HWBKPT: Final = 4

_FAULTS: Final = frozenset({SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP})


def exception_of(signo: int, code: int, addr: int) -> tuple[int, int, int]:
    """(exception, code, subcode) of a signal a thread stopped for, from
    its siginfo's si_signo, si_code and si_addr (see the module's table)."""
    if code <= 0 or signo not in _FAULTS:
        return EXC_SOFTWARE, EXC_SOFT_SIGNAL, signo
    if signo == SIGSEGV:
        if code == SEGV_MAPERR:
            return EXC_BAD_ACCESS, K.KERN_INVALID_ADDRESS, addr
        if code == SI_KERNEL:
            return EXC_BAD_ACCESS, EXC_I386_GPFLT, 0
        return EXC_BAD_ACCESS, K.KERN_PROTECTION_FAILURE, addr
    if signo == SIGBUS:
        if code == BUS_ADRALN:
            return EXC_BAD_ACCESS, EXC_I386_ALIGNFLT, addr
        return EXC_BAD_ACCESS, K.KERN_MEMORY_ERROR, addr
    if signo == SIGILL:
        return EXC_BAD_INSTRUCTION, EXC_I386_INVOP, 0
    if signo == SIGFPE:
        if code == FPE_INTDIV:
            return EXC_ARITHMETIC, EXC_I386_DIV, 0
        if code == FPE_INTOVF:
            return EXC_ARITHMETIC, EXC_I386_INTO, 0
        return EXC_ARITHMETIC, EXC_I386_SSEEXTERR, 0
    # SIGTRAP
    if code in (SI_KERNEL, TRAP_BRKPT):
        return EXC_BREAKPOINT, EXC_I386_BPT, 0
    return EXC_BREAKPOINT, EXC_I386_SGL, 0
