"""pymach vm: read and write another process's memory.

    pymach vm read PID ADDR LEN     a hexdump of LEN bytes at ADDR
    pymach vm write PID ADDR HEX    write the bytes spelled by HEX at ADDR

PID, ADDR and LEN are read as C's strtoul(s, NULL, 0) reads them: 0x7ffd0000
is hex, 0777 octal, 4096 decimal. HEX is data: pairs of hex digits
(48656c6c6f, or "48 65 6c 6c 6f").

Both go through task_for_pid and mach_vm_read / mach_vm_write, so the
ptrace rule and Mach's codes apply: a range with a hole fails whole with
KERN_INVALID_ADDRESS, an unreadable or read-only one with
KERN_PROTECTION_FAILURE (or KERN_INVALID_ADDRESS for copies of 16 KiB or
less, as in XNU). A process that does not exist, a zombie or a kernel
thread (neither has user memory) is said to be one; every failure exits
with status 1.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from ctypes import byref

from .._kern import kern_return as K
from ._cli import ADDRESS, PID, SIZE, ArgumentParser, no_user_memory


def hexdump(data: bytes, base: int) -> str:
    """hexdump -C, with the addresses of the target."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk[:8]) + "  " + " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{base + off:016x}  {hexes:<48}  |{text}|")
    return "\n".join(lines) + ("\n" if lines else "")


def hex_bytes(text: str) -> bytes:
    """The HEX argument: the bytes spelled by pairs of hex digits."""
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not pairs of hex digits: {text!r}") from None


def _fail(pid: int, call: str, kr: int) -> int:
    """Say why ``call`` failed with ``kr``: the process is gone or has no
    user memory when that is so, else the code. Returns the exit status."""
    why = no_user_memory(pid) if kr == K.MACH_SEND_INVALID_DEST else None
    tail = f" (process {pid}: {why})" if why else ""
    print(f"pymach vm: {call}: {K.mach_error_string(kr)}{tail}", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    """Entry point of ``pymach vm``. Exit status 0, 1 when a call fails
    (task_for_pid's KERN_FAILURE, mach_vm_read's or mach_vm_write's
    KERN_INVALID_ADDRESS, KERN_PROTECTION_FAILURE, MACH_SEND_INVALID_DEST
    when the process exits meanwhile) or the process does not exist or is
    a zombie or a kernel thread, 2 for a bad argument."""
    ap = ArgumentParser(prog="pymach vm", description="Read and write another task's memory.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{read,write}")
    r = sub.add_parser("read", help="hexdump LEN bytes at ADDR")
    r.add_argument("pid", metavar="PID", type=PID)
    r.add_argument("addr", metavar="ADDR", type=ADDRESS)
    r.add_argument("len", metavar="LEN", type=SIZE)
    w = sub.add_parser("write", help="write the bytes of HEX at ADDR")
    w.add_argument("pid", metavar="PID", type=PID)
    w.add_argument("addr", metavar="ADDR", type=ADDRESS)
    w.add_argument("hex", metavar="HEX", type=hex_bytes, help="the bytes, as pairs of hex digits")
    a = ap.parse_args(argv)
    # pid 0 names the kernel (kernel_task on macOS): task_for_pid refuses it with KERN_FAILURE
    why = no_user_memory(a.pid) if a.pid else None
    if why:
        print(f"pymach vm: process {a.pid}: {why}", file=sys.stderr)
        return 1
    from ..mach import (mach_msg_type_number_t, mach_port_deallocate, mach_port_t, mach_task_self,
                        mach_vm_deallocate, mach_vm_read, mach_vm_write, pointer_t, task_for_pid)
    from .._kern.task_user import PTRACE_RULE
    task = mach_port_t()
    kr = task_for_pid(mach_task_self(), a.pid, byref(task))
    if kr:
        why = no_user_memory(a.pid) if a.pid else None  # gone meanwhile?
        print(f"pymach vm: task_for_pid({a.pid}): {K.mach_error_string(kr)}; "
              + (f"process {a.pid}: {why}" if why else PTRACE_RULE), file=sys.stderr)
        return 1
    try:
        if a.command == "read":
            data, cnt = pointer_t(), mach_msg_type_number_t()
            kr = mach_vm_read(task, a.addr, a.len, byref(data), byref(cnt))
            if kr:
                return _fail(a.pid, "mach_vm_read", kr)
            sys.stdout.write(hexdump(ctypes.string_at(data.value, cnt.value), a.addr))
            mach_vm_deallocate(mach_task_self(), data, cnt.value)
        else:
            payload: bytes = a.hex
            buf = ctypes.create_string_buffer(payload, max(len(payload), 1))
            kr = mach_vm_write(task, a.addr, ctypes.addressof(buf), len(payload))
            if kr:
                return _fail(a.pid, "mach_vm_write", kr)
            print(f"wrote {len(payload)} bytes at {a.addr:#x} in process {a.pid}")
    finally:
        if task.value != mach_task_self():
            mach_port_deallocate(mach_task_self(), task)
    return 0
