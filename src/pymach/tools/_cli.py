"""What the pymach commands share: numbers read as C's ``strtoul(s, NULL, 0)``
reads them, argparse types built on it, an ArgumentParser whose errors look
like the commands' other messages, and why a pid has no memory to look at."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable
from typing import NoReturn

ULONG_MAX = (1 << 64) - 1   # unsigned long (LP64): strtoul's range, mach_vm_address_t and mach_vm_size_t
INT_MAX = (1 << 31) - 1     # int: pid_t, a file descriptor

_SPACE = " \t\n\v\f\r"      # isspace() in the C locale
_DIGITS = {8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}


def strtoul(text: str) -> int:
    """``text`` read as C's ``strtoul(text, &end, 0)`` reads it, when the
    whole of ``text`` must be the number (``*end == '\\0'``): leading white
    space, an optional ``+``, then ``0x`` or ``0X`` and hex digits, ``0``
    and octal digits, or decimal digits. Raises ValueError when there are
    no digits, when anything follows them (``1e3``, ``08``, ``0x``, ``1_0``,
    a trailing space), and for a ``-`` sign (strtoul would wrap ``-1``
    around to ULONG_MAX); OverflowError above ULONG_MAX (strtoul's ERANGE)."""
    s = text.lstrip(_SPACE)
    if s[:1] == "-":
        raise ValueError(f"invalid number {text!r}: negative")
    if s[:1] == "+":
        s = s[1:]
    if s[:2] in ("0x", "0X") and s[2:3] != "" and s[2] in _DIGITS[16]:
        base, digits = 16, s[2:]
    elif s[:1] == "0":
        base, digits = 8, s
    else:
        base, digits = 10, s
    if not digits or any(c not in _DIGITS[base] for c in digits):
        raise ValueError(f"invalid number {text!r}")
    # ULONG_MAX has 22 octal digits, fewer in the other bases: no need to
    # convert a longer string (Python refuses decimals of 4300 digits and more)
    value = int(digits, base) if len(digits.lstrip("0")) <= 22 else ULONG_MAX + 1
    if value > ULONG_MAX:
        raise OverflowError(f"{text!r} is out of range (strtoul: ERANGE)")
    return value


def number(what: str, maximum: int = ULONG_MAX, *, hex_max: bool = False) -> Callable[[str], int]:
    """An argparse ``type`` that reads a number with ``strtoul`` and
    refuses one above ``maximum``; ``what`` says what the number is ("a
    pid") in the message."""
    def parse(text: str) -> int:
        try:
            value = strtoul(text)
        except OverflowError:
            value = ULONG_MAX + 1
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if value > maximum:
            most = f"{maximum:#x}" if hex_max else str(maximum)
            shown = text.strip(_SPACE)
            shown = shown if len(shown) <= 40 else shown[:24] + "..."
            raise argparse.ArgumentTypeError(f"{shown} is too large for {what} (at most {most})")
        return value
    return parse


PID = number("a pid", INT_MAX)
ADDRESS = number("an address", hex_max=True)
SIZE = number("a size", hex_max=True)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with errors in the form of the command's other messages:
    ``pymach vm read: argument ADDR: invalid number '1e3'`` (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: {message}\n")


def no_user_memory(pid: int) -> str | None:
    """Why process ``pid`` has no memory to look at, or None when it may
    have some: "no such process", that it has exited (a zombie), or that
    it is a kernel thread."""
    from .._linux import procfs
    try:
        name, state, flags = procfs.task_state(pid)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ESRCH):
            return "no such process"
        return None  # not ours to judge: the Mach call that follows says what is wrong
    if flags & procfs.PF_KTHREAD:
        return f"{name} is a kernel thread, with no user memory"
    if state == "Z":
        return f"{name} has exited (a zombie that its parent has not reaped), with no memory left"
    return None
