"""mach_error_string, mach_error_type and mach_error, as libsyscall has them
(libsyscall/mach/mach_error_string.c, mach_error.c, string.c and the
err_*.sub tables), and pymach's MachError exception tree.

The expected strings below are copied from the err_*.sub tables of XNU. When
those tables are on disk (/tmp/ref), every entry of every table is checked.
"""

from __future__ import annotations

import errno
import os
import pickle
import re

import pytest

import pymach
import pymach.mach as M
from pymach import (
    InvalidAddressError,
    InvalidArgumentError,
    InvalidNameError,
    KernFailureError,
    MachError,
    MachTimeoutError,
    NoAccessError,
    NoSpaceError,
    NotSupportedError,
    ProtectionFailureError,
    ResourceShortageError,
)
from pymach.mach import mach_error, mach_error_string, mach_error_type

UNKNOWN = "unknown error code"


def err(system: int, sub: int, code: int) -> int:
    """err_system(x) | err_sub(y) | code, as <mach/error.h> builds it."""
    return ((system & 0x3F) << 26) | ((sub & 0xFFF) << 14) | (code & 0x3FFF)


def printed(capfd, prefix: str, code: int) -> str:
    mach_error(prefix, code)
    out, errout = capfd.readouterr()
    assert out == ""
    return errout


# -- known codes of each subsystem ------------------------------------------------

KNOWN = [
    # (os/kern)
    (0, "(os/kern) successful"),
    (M.KERN_INVALID_ADDRESS, "(os/kern) invalid address"),
    (M.KERN_PROTECTION_FAILURE, "(os/kern) protection failure"),
    (M.KERN_NO_SPACE, "(os/kern) no space available"),
    (M.KERN_INVALID_ARGUMENT, "(os/kern) invalid argument"),
    (M.KERN_FAILURE, "(os/kern) failure"),
    (M.KERN_INVALID_HOST, "(os/kern) invalid host"),
    (M.KERN_TERMINATED, "(os/kern) object terminated"),
    (M.KERN_NOT_SUPPORTED, "(os/kern) service not supported"),
    (M.KERN_OPERATION_TIMED_OUT, "(os/kern) operation timed out"),
    (M.KERN_NOT_FOUND, "(os/kern) result not found"),
    # (os/unix): err_kern | err_sub(3) | errno
    (err(0, 3, 1), "(os/unix) no rights to object"),
    (err(0, 3, 13), "(os/unix) access denied"),
    (err(0, 3, 42), "(os/unix) protocol type is not availaible"),
    (err(0, 3, 69), "(os/unix) quota on available disk space exceeded"),
    # (server/...)
    (err(2, 0, 0), "(server/netname) name is not yours"),
    (err(2, 0, 3), "(server/netname) host not found"),
    (err(2, 1, 7), "(server/env_mgr) attempting to enter a null port "),
    (err(2, 2, 3), "(server/execd) fork failed"),
    (err(2, 3, 0), "(server/netmemory) successful"),
    (err(2, 5, 5), "(server/task_master) invalid action"),
    (err(2, 6, 17), "(server/ns) entry not reserved"),
    (err(2, 7, 5), "(server/io) operation rejected under current I/O strategy"),
    (err(2, 8, 4), "(server/auth) bad pauthsword"),
    (err(2, 9, 23), "(server/us) internal error"),
    (err(2, 10, 17), "(server/sunrpc) unknown protocol"),
    (err(2, 11, 5), "(server/object system) bad ipc message format"),
    (err(2, 12, 5), "(server/loader) memory region overlap"),
    (err(2, 13, 6), "(server/exception) breakpoint exception"),
    (err(2, 14, 29), "(server/unix-signal) user-defined signal 2"),
    (err(2, 15, 12), "(server/xkernel) bad addr"),
    # old IPC (system 3)
    (err(3, 0, 0), "(ipc/send) unknown error"),
    (err(3, 0, 11), "(ipc/send) message size changed while being copied"),
    (err(3, 1, 8), "(ipc/rcv) port receiver changed or port became enabled"),
    (err(3, 2, 0), "(ipc/mig) type check failure in message interface"),
    (err(3, 2, 7), "(ipc/mig) user specified array not large enough for return info"),
    # Mach IPC (system 4): MACH_SEND_* / MACH_RCV_* / MIG
    (M.MACH_MSG_SUCCESS | 0x10000000, "(ipc/send) no error"),
    (M.MACH_SEND_IN_PROGRESS, "(ipc/send) send in progress"),
    (M.MACH_SEND_INVALID_DATA, "(ipc/send) invalid data"),
    (M.MACH_SEND_INVALID_DEST, "(ipc/send) invalid destination port"),
    (M.MACH_SEND_TIMED_OUT, "(ipc/send) timed out"),
    (M.MACH_SEND_INVALID_VOUCHER, "(ipc/send) invalid voucher"),
    (M.MACH_SEND_INTERRUPTED, "(ipc/send) interrupted"),
    (M.MACH_SEND_MSG_TOO_SMALL, "(ipc/send) msg too small"),
    (M.MACH_SEND_INVALID_REPLY, "(ipc/send) invalid reply port"),
    (M.MACH_SEND_INVALID_RIGHT, "(ipc/send) invalid port right"),
    (M.MACH_SEND_INVALID_NOTIFY, "(ipc/send) invalid notify port"),
    (M.MACH_SEND_INVALID_MEMORY, "(ipc/send) invalid memory"),
    (M.MACH_SEND_NO_BUFFER, "(ipc/send) no msg buffer"),
    (M.MACH_SEND_TOO_LARGE, "(ipc/send) msg too large"),
    (M.MACH_SEND_INVALID_TYPE, "(ipc/send) invalid msg-type"),
    (M.MACH_SEND_INVALID_HEADER, "(ipc/send) invalid msg-header"),
    (M.MACH_SEND_INVALID_TRAILER, "(ipc/send) invalid msg-trailer"),
    (M.MACH_SEND_INVALID_CONTEXT, "(ipc/send) invalid context for reply"),
    (M.MACH_SEND_INVALID_OPTIONS, "(ipc/send) unused error"),
    (M.MACH_SEND_INVALID_RT_OOL_SIZE, "(ipc/send) out-of-line buffer too large"),
    (M.MACH_SEND_NO_GRANT_DEST, "(ipc/send) destination does not accept OOL ports"),
    (M.MACH_RCV_IN_PROGRESS, "(ipc/rcv) receive in progress"),
    (M.MACH_RCV_INVALID_NAME, "(ipc/rcv) invalid name"),
    (M.MACH_RCV_TIMED_OUT, "(ipc/rcv) timed out"),
    (M.MACH_RCV_TOO_LARGE, "(ipc/rcv) msg too large"),
    (M.MACH_RCV_INTERRUPTED, "(ipc/rcv) interrupted"),
    (M.MACH_RCV_PORT_CHANGED, "(ipc/rcv) port changed"),
    (M.MACH_RCV_INVALID_NOTIFY, "(ipc/rcv) invalid notify port"),
    (M.MACH_RCV_INVALID_DATA, "(ipc/rcv) invalid data"),
    (M.MACH_RCV_PORT_DIED, "(ipc/rcv) port died"),
    (M.MACH_RCV_IN_SET, "(ipc/rcv) port in set"),
    (M.MACH_RCV_HEADER_ERROR, "(ipc/rcv) header error"),
    (M.MACH_RCV_BODY_ERROR, "(ipc/rcv) body error"),
    (M.MACH_RCV_INVALID_TYPE, "(ipc/rcv) invalid scatter list entry"),
    (M.MACH_RCV_SCATTER_SMALL, "(ipc/rcv) overwrite region too small"),
    (M.MACH_RCV_INVALID_TRAILER, "(ipc/rcv) invalid msg-trailer"),
    (0x10004010, "(ipc/rcv) DIPC transport error"),
    (err(4, 2, 0), "(ipc/mig) client type check failure"),
    (err(4, 2, 9), "(ipc/mig) unknown trailer format"),
    # (vm/kernel) prints the Mach send table (a libsyscall quirk kept as is)
    (err(7, 0, 0), "(ipc/send) no error"),
    (err(7, 0, 1), "(ipc/send) send in progress"),
    (err(7, 1, 0), "(vm/reclaim) no error"),
    (err(7, 1, 7), "(vm/reclaim) invalid ring"),
    # libkern
    (err(0x37, 0, 1), "(libkern/common) general/unspecified error"),
    (err(0x37, 1, 11), "(libkern/metaclass) no kext for metaclass"),
    (err(0x37, 2, 1), "(libkern/kext) internal error"),
    (err(0x37, 2, 0x1F), "(libkern/kext) loading of both Auxiliary and System KCs failed"),
    # IOKit (sparse maps)
    (0xE0000001, "(iokit/common) invalid - should never be seen"),
    (0xE00002BC, "(iokit/common) general error"),
    (0xE00002C2, "(iokit/common) invalid argument"),
    (0xE00002CB, "(iokit/common) ???"),
    (0xE00002F0, "(iokit/common) data was not found"),
    (0xE0020000, "(iokit/bluetooth) unknown error"),
    (0xE0020004, "(iokit/bluetooth) changing power states is unsupported"),
]


@pytest.mark.parametrize("code,text", KNOWN, ids=lambda v: hex(v) if isinstance(v, int) else None)
def test_known_code(capfd, code, text):
    assert mach_error_string(code) == text
    assert pymach.mach_error_string(code) == text
    # a known code prints without diagnostics
    assert printed(capfd, "vm_protect:", code) == f"vm_protect: {text}\n"


@pytest.mark.parametrize("code", [0xE00002BC, M.MACH_SEND_INVALID_DEST, 0xDC008001, 0xFFFFFF9C])
def test_codes_are_32_bit_ints(code):
    # a kern_return_t is an int: the signed and unsigned spellings are one code
    signed = code - (1 << 32) if code & 0x80000000 else code
    assert mach_error_string(signed) == mach_error_string(code & 0xFFFFFFFF)
    assert mach_error_string(M.kern_return_t(signed)) == mach_error_string(code)


# -- mach_error_type --------------------------------------------------------------

TYPES = [
    (0, "(os/kern)"), (M.KERN_NOT_FOUND, "(os/kern)"), (500, "(os/kern)"),
    (err(0, 1, 0), "(os/?)"), (err(0, 2, 5), "(os/?)"), (err(0, 3, 13), "(os/unix)"),
    (err(2, 0, 0), "(server/netname)"), (err(2, 11, 0), "(server/object system)"),
    (err(2, 14, 1), "(server/unix-signal)"), (err(2, 15, 0), "(server/xkernel)"),
    (err(3, 0, 1), "(ipc/send)"), (err(3, 1, 1), "(ipc/rcv)"), (err(3, 2, 1), "(ipc/mig)"),
    (M.MACH_SEND_INVALID_DEST, "(ipc/send)"), (M.MACH_RCV_TIMED_OUT, "(ipc/rcv)"), (M.MIG_BAD_ID, "(ipc/mig)"),
    (err(7, 0, 0), "(vm/kernel)"), (err(7, 1, 3), "(vm/reclaim)"),
    (err(0x37, 0, 0), "(libkern/common)"), (err(0x37, 1, 0), "(libkern/metaclass)"),
    (err(0x37, 2, 0), "(libkern/kext)"),
    (0xE00002BC, "(iokit/common)"), (err(0x38, 1, 0), "(iokit/usb)"), (err(0x38, 2, 0), "(iokit/firewire)"),
    (err(0x38, 3, 0), "(iokit/?"), (err(0x38, 4, 0), "(iokit/blkstorage)"),
    (err(0x38, 5, 0), "(iokit/graphics)"), (err(0x38, 8, 1), "(iokit/bluetooth)"),
    (err(0x38, 9, 0), "(iokit/pmu)"), (err(0x38, 0xFFE, 0), "(iokit/vendor)"),
    (err(0x38, 0xFFF, 0), "(iokit/reserved)"),
    # no such subsystem, no such system
    (err(0, 4, 0), "(?/?)"), (err(2, 16, 0), "(?/?)"), (err(3, 3, 0), "(?/?)"), (err(4, 3, 0), "(?/?)"),
    (err(7, 2, 0), "(?/?)"), (err(0x37, 3, 0), "(?/?)"), (err(0x38, 10, 0), "(?/?)"),
    (err(0x38, 0xFFD, 0), "(?/?)"), (err(1, 1, 0), "(?/?)"), (err(5, 0, 0), "(?/?)"),
    (err(8, 0, 0), "(?/?)"), (err(0x3F, 0, 0), "(?/?)"),
]


def test_mach_error_type():
    for code, name in TYPES:
        assert mach_error_type(code) == name, hex(code)


def test_mach_error_type_of_the_user_space_system_is_null():
    # err_us has one subsystem whose name is NULL; printf("%s") shows "(null)"
    assert mach_error_type(err(1, 0, 0)) == "(null)"
    assert mach_error_string(err(1, 0, 0)) == UNKNOWN


# -- unknown codes and subsystems --------------------------------------------------

UNKNOWN_CODES = [
    # code past the end of a known subsystem's table: diag with type and hex
    (500, "(os/kern) unknown error code (1f4)"),
    (57, "(os/kern) unknown error code (39)"),
    (0x3FFF, "(os/kern) unknown error code (3fff)"),
    (err(0, 1, 5), "(os/?) unknown error code (4005)"),
    (err(0, 3, 70), "(os/unix) unknown error code (c046)"),
    (err(2, 0, 4), "(server/netname) unknown error code (8000004)"),
    (err(2, 4, 1), "(server/ufs) unknown error code (8010001)"),
    (err(3, 2, 8), "(ipc/mig) unknown error code (c008008)"),
    (M.MACH_SEND_MSG_FILTERED, "(ipc/send) unknown error code (10000017)"),
    (M.MACH_SEND_AUX_TOO_SMALL, "(ipc/send) unknown error code (10000018)"),
    (M.MACH_RCV_IN_PROGRESS_TIMED, "(ipc/rcv) unknown error code (10004011)"),
    (M.MACH_RCV_INVALID_ARGUMENTS, "(ipc/rcv) unknown error code (10004013)"),
    (err(4, 2, 10), "(ipc/mig) unknown error code (1000800a)"),
    (err(7, 0, 2), "(vm/kernel) unknown error code (1c000002)"),
    (err(7, 1, 8), "(vm/reclaim) unknown error code (1c004008)"),
    (err(0x37, 0, 2), "(libkern/common) unknown error code (dc000002)"),
    (err(0x37, 2, 0x20), "(libkern/kext) unknown error code (dc008020)"),
    (0xE0000002, "(iokit/common) unknown error code (e0000002)"),
    (0xE00002BB, "(iokit/common) unknown error code (e00002bb)"),
    (0xE00002F1, "(iokit/common) unknown error code (e00002f1)"),
    (err(0x38, 3, 1), "(iokit/? unknown error code (e000c001)"),
    (err(0x38, 4, 1), "(iokit/blkstorage) unknown error code (e0010001)"),
    (err(0x38, 8, 5), "(iokit/bluetooth) unknown error code (e0020005)"),
    (err(0x38, 0xFFE, 0x2BC), "(iokit/vendor) unknown error code (e3ff82bc)"),
    # no such subsystem: the system's bad_sub text, of type (?/?)
    (err(0, 4, 0), "(?/?) (operating system/?) unknown subsystem error (10000)"),
    (err(0, 0xFFF, 1), "(?/?) (operating system/?) unknown subsystem error (3ffc001)"),
    (err(1, 1, 0), "(?/?) (user space/?) unknown subsystem error (4004000)"),
    (err(2, 16, 0), "(?/?) (server/?) unknown subsystem error (8040000)"),
    (err(3, 3, 0), "(?/?) (ipc/?) unknown subsystem error (c00c000)"),
    (err(4, 3, 1), "(?/?) (ipc/?) unknown subsystem error (1000c001)"),
    (err(7, 2, 0), "(?/?) (vm/?) unknown subsystem error (1c008000)"),
    (err(0x37, 3, 0), "(?/?) (libkern/?) unknown subsystem error (dc00c000)"),
    (err(0x38, 10, 0), "(?/?) (iokit/?) unknown subsystem error (e0028000)"),
    (err(0x38, 0xFFD, 0), "(?/?) (iokit/?) unknown subsystem error (e3ff4000)"),
]


@pytest.mark.parametrize("code,line", UNKNOWN_CODES, ids=lambda v: hex(v) if isinstance(v, int) else None)
def test_unknown_codes(capfd, code, line):
    _type, _, rest = line.partition(" ")
    text = rest.rsplit(" (", 1)[0]
    assert mach_error_string(code) == text
    assert printed(capfd, "call:", code) == f"call: {line}\n"


# Entries of a table that are NO_SUCH_ERROR are known codes: the text without
# diagnostics (mach_error_full_diag is FALSE).
@pytest.mark.parametrize("code", [err(0, 3, 0), err(2, 1, 0), err(2, 2, 0), err(2, 4, 0), err(0x37, 0, 0),
                                  err(0x37, 1, 0), err(0x37, 2, 0), 1600, 27600], ids=hex)
def test_no_such_error_entries_print_without_diagnostics(capfd, code):
    assert mach_error_string(code) == UNKNOWN
    assert printed(capfd, "x", code) == "x unknown error code\n"


# Systems with no table (errorlib_system_null) have a NULL bad_sub: C's
# mach_error_string returns NULL, which printf("%s") shows as "(null)".
NULL_SYSTEMS = [err(5, 0, 0), err(6, 1, 2), err(8, 0, 0), err(0x36, 0, 1), err(0x39, 0, 0), err(0x3F, 0xFFF, 0x3FFF),
                -99, -400, -1]


def test_null_system_string_and_type():
    for code in NULL_SYSTEMS:
        assert mach_error_string(code) == "(null)", hex(code)
        assert mach_error_type(code) == "(?/?)", hex(code)


# libsyscall formats mach_error's line with its own _mach_snprintf /
# _mach_vsnprintf (string.c), whose "%s" of NULL prints nothing
# (_mach_strlen(NULL) is 0), not "(null)".
def test_mach_error_of_a_null_system_prints_an_empty_string(capfd):
    for code in NULL_SYSTEMS:
        assert printed(capfd, "call:", code) == f"call: (?/?)  ({code & 0xFFFFFFFF:x})\n"


def test_mach_error_of_the_user_space_system_prints_an_empty_type(capfd):
    assert printed(capfd, "call:", err(1, 0, 7)) == "call:  unknown error code (4000007)\n"


# -- do_compat: old negative IPC codes and old server codes ----------------------------

COMPAT = [
    (-100, "(ipc/send) unknown error", "(ipc/send)"),
    (-101, "(ipc/send) invalid memory", "(ipc/send)"),
    (-102, "(ipc/send) invalid port", "(ipc/send)"),
    (-111, "(ipc/send) message size changed while being copied", "(ipc/send)"),
    (-200, "(ipc/rcv) unknown error", "(ipc/rcv)"),
    (-203, "(ipc/rcv) receive timed out", "(ipc/rcv)"),
    (-208, "(ipc/rcv) port receiver changed or port became enabled", "(ipc/rcv)"),
    # -300.. become MACH_IPC_MIG_MOD: the new MIG table, not the old one
    (M.MIG_TYPE_ERROR, "(ipc/mig) client type check failure", "(ipc/mig)"),
    (M.MIG_REPLY_MISMATCH, "(ipc/mig) wrong reply message ID", "(ipc/mig)"),
    (M.MIG_REMOTE_ERROR, "(ipc/mig) server detected error", "(ipc/mig)"),
    (M.MIG_BAD_ID, "(ipc/mig) bad request message ID", "(ipc/mig)"),
    (M.MIG_BAD_ARGUMENTS, "(ipc/mig) server type check failure", "(ipc/mig)"),
    (M.MIG_NO_REPLY, "(ipc/mig) no reply should be sent", "(ipc/mig)"),
    (M.MIG_EXCEPTION, "(ipc/mig) server raised exception", "(ipc/mig)"),
    (M.MIG_ARRAY_TOO_LARGE, "(ipc/mig) array not large enough", "(ipc/mig)"),
    (M.MIG_SERVER_DIED, "(ipc/mig) server died", "(ipc/mig)"),
    (M.MIG_TRAILER_ERROR, "(ipc/mig) unknown trailer format", "(ipc/mig)"),
    (1000, "(server/netname) name is not yours", "(server/netname)"),
    (1003, "(server/netname) host not found", "(server/netname)"),
    (1601, "(server/env_mgr) variable not found", "(server/env_mgr)"),
    (1607, "(server/env_mgr) attempting to enter a null port ", "(server/env_mgr)"),
    (27601, "(server/execd) could not find file to run", "(server/execd)"),
    (27603, "(server/execd) fork failed", "(server/execd)"),
]


@pytest.mark.parametrize("code,text,typ", COMPAT, ids=lambda v: str(v) if isinstance(v, int) else None)
def test_old_codes_are_mapped(capfd, code, text, typ):
    assert mach_error_string(code) == text
    assert mach_error_type(code) == typ
    assert printed(capfd, "old:", code) == f"old: {text}\n"


COMPAT_UNKNOWN = [
    # the hex is of the code as passed, not as mapped
    (-112, "(ipc/send) unknown error code (ffffff90)"),
    (-199, "(ipc/send) unknown error code (ffffff39)"),
    (-209, "(ipc/rcv) unknown error code (ffffff2f)"),
    (-299, "(ipc/rcv) unknown error code (fffffed5)"),
    (-310, "(ipc/mig) unknown error code (fffffeca)"),
    (-399, "(ipc/mig) unknown error code (fffffe71)"),
    (1004, "(server/netname) unknown error code (3ec)"),
    (1099, "(server/netname) unknown error code (44b)"),
    (1608, "(server/env_mgr) unknown error code (648)"),
    (27604, "(server/execd) unknown error code (6bd4)"),
    (27699, "(server/execd) unknown error code (6c33)"),
    # just outside the compat ranges: read as they are
    (1100, "(os/kern) unknown error code (44c)"),
    (999, "(os/kern) unknown error code (3e7)"),
    (1599, "(os/kern) unknown error code (63f)"),
    (1700, "(os/kern) unknown error code (6a4)"),
    (27700, "(os/?) unknown error code (6c34)"),
    (27599, "(os/?) unknown error code (6bcf)"),
]


@pytest.mark.parametrize("code,line", COMPAT_UNKNOWN, ids=lambda v: str(v) if isinstance(v, int) else None)
def test_old_codes_past_their_tables(capfd, code, line):
    assert mach_error_string(code) == UNKNOWN
    assert printed(capfd, "old:", code) == f"old: {line}\n"


# -- mach_error's output -----------------------------------------------------------

def test_mach_error_format(capfd):
    assert printed(capfd, "vm_allocate:", M.KERN_NO_SPACE) == "vm_allocate: (os/kern) no space available\n"
    assert printed(capfd, "", M.KERN_FAILURE) == " (os/kern) failure\n"
    assert printed(capfd, "a  b", 1) == "a  b (os/kern) invalid address\n"
    # one write per call, straight to fd 2
    mach_error("one", 1)
    mach_error("two", 500)
    _out, errout = capfd.readouterr()
    assert errout == "one (os/kern) invalid address\ntwo (os/kern) unknown error code (1f4)\n"


def test_mach_error_output_is_at_most_1023_bytes(capfd):
    prefix = "p" * 2000
    assert printed(capfd, prefix, M.KERN_FAILURE) == prefix[:1023]


def test_mach_error_accepts_a_ctypes_code(capfd):
    assert printed(capfd, "c:", M.kern_return_t(M.KERN_PROTECTION_FAILURE)) == "c: (os/kern) protection failure\n"


# -- every entry of the err_*.sub tables (when they are on disk) ------------------------
# XNU's libsyscall/mach/err_*.sub are not shipped with pymach: point
# PYMACH_XNU_ERR_SUB at a folder that holds them to check every entry.

REF = os.environ.get("PYMACH_XNU_ERR_SUB", "/tmp/ref")
# table -> (system, subsystem)
TABLES = {
    "err_codes_kern": (0, 0), "err_codes_unix": (0, 3),
    "err_codes_netname": (2, 0), "err_codes_env_mgr": (2, 1), "err_codes_execd": (2, 2),
    "err_codes_netmemory": (2, 3), "err_codes_ufs": (2, 4), "err_codes_task_master": (2, 5),
    "err_codes_ns": (2, 6), "err_codes_io": (2, 7), "err_codes_auth": (2, 8), "err_codes_us": (2, 9),
    "err_codes_sunrpc": (2, 10), "err_codes_machobj": (2, 11), "err_codes_loader": (2, 12),
    "err_codes_exception": (2, 13), "err_codes_ux_signal": (2, 14), "err_codes_xkernel": (2, 15),
    "err_codes_send": (3, 0), "err_codes_rcv": (3, 1), "err_codes_mig": (3, 2),
    "err_codes_mach_send": (4, 0), "err_codes_mach_rcv": (4, 1), "err_codes_mach_mig": (4, 2),
    "err_codes_vm_reclaim": (7, 1),
    "err_codes_libkern_common": (0x37, 0), "err_codes_libkern_metaclass": (0x37, 1),
    "err_codes_libkern_kext": (0x37, 2),
    "err_codes_iokit_common": (0x38, 0), "err_codes_iokit_bluetooth": (0x38, 8),
}
# err_codes_iokit_common_map: kIOReturnInvalid (0x001), kIOReturnError..kIOReturnNotFound
IOKIT_COMMON_CODES = [0x001, *range(0x2BC, 0x2F1)]


def _parse_tables() -> dict[str, list[str]]:
    tables: dict[str, list[str]] = {}
    for fn in sorted(os.listdir(REF)):
        if not fn.endswith(".sub"):
            continue
        with open(os.path.join(REF, fn)) as f:
            src = f.read()
        src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
        src = re.sub(r"//[^\n]*", "", src)
        for m in re.finditer(r"static const char \* const (\w+)\[\] = \{(.*?)\};", src, re.S):
            items = re.findall(r'"((?:[^"\\]|\\.)*)"|(NO_SUCH_ERROR)', m.group(2))
            tables[m.group(1)] = [UNKNOWN if nse else s for s, nse in items]
    return tables


@pytest.mark.skipif(not os.path.isdir(REF), reason="XNU's err_*.sub tables are not on disk (PYMACH_XNU_ERR_SUB)")
def test_every_table_entry(capfd):
    tables = _parse_tables()
    assert len(tables["err_codes_kern"]) == 57 and len(tables["err_codes_mach_send"]) == 23
    checked = 0
    for name, (system, sub) in TABLES.items():
        entries = tables[name]
        codes = IOKIT_COMMON_CODES if name == "err_codes_iokit_common" else range(len(entries))
        assert len(codes) == len(entries), name
        for code, text in zip(codes, entries):
            e = err(system, sub, code)
            assert mach_error_string(e) == text, f"{name}[{code}] = {e:#x}"
            checked += 1
        # one past the end
        past = err(system, sub, codes[-1] + 1)
        assert mach_error_string(past) == UNKNOWN, f"{name} past the end"
    # (vm/kernel): the length of err_codes_vm_kern, the strings of err_codes_mach_send
    for code in range(len(tables["err_codes_vm_kern"])):
        assert mach_error_string(err(7, 0, code)) == tables["err_codes_mach_send"][code]
    assert mach_error_string(err(7, 0, len(tables["err_codes_vm_kern"]))) == UNKNOWN
    assert checked > 400


# -- the MachError exception tree ---------------------------------------------------

SUBCLASSES = [
    (M.KERN_INVALID_ADDRESS, InvalidAddressError, (), errno.EFAULT),
    (M.KERN_PROTECTION_FAILURE, ProtectionFailureError, (PermissionError,), errno.EACCES),
    (M.KERN_NO_SPACE, NoSpaceError, (), errno.ENOMEM),
    (M.KERN_INVALID_ARGUMENT, InvalidArgumentError, (ValueError,), errno.EINVAL),
    (M.KERN_INVALID_VALUE, InvalidArgumentError, (ValueError,), errno.EINVAL),
    (M.KERN_FAILURE, KernFailureError, (), None),
    (M.KERN_RESOURCE_SHORTAGE, ResourceShortageError, (MemoryError,), errno.ENOMEM),
    (M.KERN_NO_ACCESS, NoAccessError, (PermissionError,), None),
    (M.KERN_INVALID_HOST, NoAccessError, (PermissionError,), None),
    (M.KERN_DENIED, NoAccessError, (PermissionError,), None),
    (M.KERN_INVALID_NAME, InvalidNameError, (), None),
    (M.KERN_INVALID_RIGHT, InvalidNameError, (), None),
    (M.KERN_INVALID_TASK, InvalidNameError, (), None),
    (M.MACH_SEND_INVALID_DEST, InvalidNameError, (), None),
    (M.KERN_NOT_SUPPORTED, NotSupportedError, (), None),
    (M.KERN_OPERATION_TIMED_OUT, MachTimeoutError, (TimeoutError,), errno.ETIMEDOUT),
    (M.MACH_SEND_TIMED_OUT, MachTimeoutError, (TimeoutError,), errno.ETIMEDOUT),
    (M.MACH_RCV_TIMED_OUT, MachTimeoutError, (TimeoutError,), errno.ETIMEDOUT),
]


def test_mach_error_exception_is_one_class_everywhere():
    assert pymach.MachError is M.MachError is MachError
    assert issubclass(MachError, OSError)
    assert MachError.__module__ == "pymach"
    for _kr, cls, _bases, _e in SUBCLASSES:
        assert issubclass(cls, MachError) and cls.__module__ == "pymach"
        assert getattr(pymach, cls.__name__) is cls


@pytest.mark.parametrize("kr,cls,bases,err_no", SUBCLASSES, ids=lambda v: hex(v) if isinstance(v, int) else None)
def test_mach_error_exception_of_a_code_is_its_subclass(kr, cls, bases, err_no):
    e = MachError(kr)
    assert type(e) is cls
    assert e.kr == kr
    assert isinstance(e, OSError) and isinstance(e, MachError)
    for b in bases:
        assert isinstance(e, b)
    assert str(e) == f"{mach_error_string(kr)} (kr={kr:#x})"
    with pytest.raises(cls):
        raise MachError(kr, "ctx")


@pytest.mark.parametrize("kr", [M.MACH_SEND_INVALID_MEMORY, M.KERN_ABORTED, 500, 0x12345678, -1], ids=hex)
def test_mach_error_exception_of_an_unregistered_code_is_machError(kr):
    e = MachError(kr)
    assert type(e) is MachError
    assert e.kr == kr
    assert isinstance(e, OSError)


def test_mach_error_exception_text_and_context():
    e = MachError(500, "vm_allocate")
    assert e.context == "vm_allocate"
    assert str(e) == "vm_allocate: (os/kern) unknown error code (1f4) (kr=0x1f4)"
    e = MachError(M.KERN_PROTECTION_FAILURE, "vm_protect")
    assert str(e) == "vm_protect: (os/kern) protection failure (kr=0x2)"


def test_mach_error_exception_is_a_full_oserror():
    for kr, _cls, _bases, err_no in SUBCLASSES:
        e = MachError(kr, "ctx")
        assert e.args, f"{kr:#x}: empty args"
        if err_no is not None:
            assert e.errno == err_no, f"{kr:#x}: errno {e.errno!r}"
        assert e.strerror == mach_error_string(kr)
    e = MachError(500)
    assert e.strerror == "(os/kern) unknown error code (1f4)"


def test_subclass_constructed_directly():
    e = InvalidAddressError(M.KERN_INVALID_ADDRESS, "here")
    assert type(e) is InvalidAddressError and e.kr == 1 and e.context == "here"


@pytest.mark.parametrize("kr", [M.KERN_INVALID_ADDRESS, M.KERN_INVALID_HOST, 500, M.MACH_SEND_INVALID_DEST], ids=hex)
def test_mach_error_exception_pickles(kr):
    e = MachError(kr, "ctx")
    f = pickle.loads(pickle.dumps(e))
    assert type(f) is type(e) and f.kr == kr and f.context == "ctx" and str(f) == str(e)


def test_the_pythonic_interface_raises_the_subclasses():
    task = pymach.Task.self()
    with pytest.raises(InvalidAddressError) as ei:
        task.region((1 << 64) - 4096)
    assert ei.value.kr == M.KERN_INVALID_ADDRESS
    with pytest.raises(OSError):
        task.region((1 << 64) - 4096)
    with pytest.raises(MachError) as ei:
        task.allocate(4096, address=0)
    assert type(ei.value) is InvalidAddressError
    with pytest.raises(InvalidArgumentError) as ei:
        task.allocate(4096, flags=0x20)
    assert ei.value.kr == M.KERN_INVALID_ARGUMENT and isinstance(ei.value, ValueError)
