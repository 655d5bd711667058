"""pymach vm: read and write another process's memory.

    pymach vm read PID ADDR LEN     a hexdump of LEN bytes at ADDR (hex)
    pymach vm write PID ADDR HEX    write the bytes spelled by HEX at ADDR

Both go through task_for_pid and mach_vm_read / mach_vm_write, so the
ptrace rule and Mach's codes apply: a range with a hole fails whole with
KERN_INVALID_ADDRESS, an unreadable or read-only one with
KERN_PROTECTION_FAILURE (or KERN_INVALID_ADDRESS for copies of 16 KiB or
less, as in XNU).
"""

from __future__ import annotations

import argparse
import ctypes
import sys

from ..kern import kern_return as K


def hexdump(data: bytes, base: int) -> str:
    """hexdump -C, with the addresses of the target."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk[:8]) + "  " + " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{base + off:016x}  {hexes:<48}  |{text}|")
    return "\n".join(lines) + ("\n" if lines else "")


def _int(s: str) -> int:
    return int(s, 16) if s.lower().startswith("0x") or any(c in "abcdefABCDEF" for c in s) else int(s, 0)


def main(argv: list[str]) -> int:
    """Entry point of ``pymach vm``."""
    ap = argparse.ArgumentParser(prog="pymach vm", description="Read and write another task's memory.")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("read", help="hexdump LEN bytes at ADDR")
    r.add_argument("pid", type=int)
    r.add_argument("addr", type=lambda s: int(s, 16))
    r.add_argument("len", type=_int)
    w = sub.add_parser("write", help="write the bytes of HEX at ADDR")
    w.add_argument("pid", type=int)
    w.add_argument("addr", type=lambda s: int(s, 16))
    w.add_argument("hex")
    a = ap.parse_args(argv)
    from ..mach import (byref, mach_msg_type_number_t, mach_port_deallocate, mach_port_t, mach_task_self,
                        mach_vm_deallocate, mach_vm_read, mach_vm_write, pointer_t, task_for_pid)
    from ..kern.task_user import PTRACE_RULE
    task = mach_port_t()
    kr = task_for_pid(mach_task_self(), a.pid, byref(task))
    if kr:
        print(f"pymach vm: task_for_pid({a.pid}): {K.mach_error_string(kr)}; {PTRACE_RULE}", file=sys.stderr)
        return 1
    try:
        if a.command == "read":
            data, cnt = pointer_t(), mach_msg_type_number_t()
            kr = mach_vm_read(task, a.addr, a.len, byref(data), byref(cnt))
            if kr:
                print(f"pymach vm: mach_vm_read: {K.mach_error_string(kr)}", file=sys.stderr)
                return 1
            sys.stdout.write(hexdump(ctypes.string_at(data.value, cnt.value), a.addr))
            mach_vm_deallocate(mach_task_self(), data, cnt.value)
        else:
            try:
                payload = bytes.fromhex(a.hex)
            except ValueError:
                print("pymach vm: HEX must be pairs of hex digits", file=sys.stderr)
                return 2
            buf = ctypes.create_string_buffer(payload, max(len(payload), 1))
            kr = mach_vm_write(task, a.addr, ctypes.addressof(buf), len(payload))
            if kr:
                print(f"pymach vm: mach_vm_write: {K.mach_error_string(kr)}", file=sys.stderr)
                return 1
            print(f"wrote {len(payload)} bytes at {a.addr:#x} in process {a.pid}")
    finally:
        if task.value != mach_task_self():
            mach_port_deallocate(mach_task_self(), task)
    return 0
