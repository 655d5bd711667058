"""<mach/message.h> structs: XNU's LP64 layout under #pragma pack(4), byte
for byte, and the MACH_MSGH_BITS macros."""

from __future__ import annotations

import ctypes

import pytest

import pymach.mach as M

SIZES = {
    "mach_msg_header_t": 24, "mach_msg_body_t": 4, "mach_msg_base_t": 28,
    "mach_msg_type_descriptor_t": 12, "mach_msg_port_descriptor_t": 12,
    "mach_msg_ool_descriptor_t": 16, "mach_msg_ool_ports_descriptor_t": 16,
    "mach_msg_guarded_port_descriptor_t": 16, "mach_msg_descriptor_t": 16,
    "mach_msg_trailer_t": 8, "mach_msg_seqno_trailer_t": 12, "mach_msg_security_trailer_t": 20,
    "mach_msg_audit_trailer_t": 52, "mach_msg_context_trailer_t": 60, "mach_msg_mac_trailer_t": 68,
    "mach_msg_empty_rcv_t": 32,
}


@pytest.mark.parametrize("name,size", sorted(SIZES.items()))
def test_struct_sizes(name: str, size: int) -> None:
    assert ctypes.sizeof(getattr(M, name)) == size


def test_trailer_constants() -> None:
    assert M.MAX_TRAILER_SIZE == 68
    assert M.MACH_MSG_TRAILER_MINIMUM_SIZE == 8
    assert M.MACH_MSG_TRAILER_FORMAT_0_SIZE == 20
    assert M.mach_msg_audit_trailer_t.msgh_audit.offset == 20
    assert M.mach_msg_context_trailer_t.msgh_context.offset == 52


def test_header_field_offsets_and_the_reserved_alias() -> None:
    h = M.mach_msg_header_t
    assert [getattr(h, f).offset for f, _ in h._fields_] == [0, 4, 8, 12, 16, 20]
    hdr = M.mach_msg_header_t()
    hdr.msgh_reserved = 0x1234
    assert hdr.msgh_voucher_port == 0x1234
    hdr.msgh_voucher_port = 7
    assert hdr.msgh_reserved == 7


def test_port_descriptor_bytes() -> None:
    d = M.mach_msg_port_descriptor_t()
    d.name, d.disposition, d.type = 0x103, M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_PORT_DESCRIPTOR
    # name, pad1, then pad2:16 disposition:8 type:8 (bit-fields from the low end)
    assert bytes(d) == bytes.fromhex("03010000" "00000000" "00001300")


def test_ool_descriptor_bytes() -> None:
    d = M.mach_msg_ool_descriptor_t()
    d.address, d.deallocate, d.copy, d.type, d.size = 0x1122334455, 1, M.MACH_MSG_VIRTUAL_COPY, \
        M.MACH_MSG_OOL_DESCRIPTOR, 4096
    assert bytes(d) == bytes.fromhex("5544332211000000" "01010001" "00100000")
    p = M.mach_msg_ool_ports_descriptor_t()
    p.address, p.disposition, p.type, p.count = 8, M.MACH_MSG_TYPE_MOVE_SEND, \
        M.MACH_MSG_OOL_PORTS_DESCRIPTOR, 3
    assert bytes(p) == bytes.fromhex("0800000000000000" "00001102" "03000000")


def test_guarded_port_descriptor_bytes() -> None:
    g = M.mach_msg_guarded_port_descriptor_t()
    g.context, g.flags, g.disposition, g.type, g.name = 0xAB, 1, M.MACH_MSG_TYPE_MOVE_RECEIVE, \
        M.MACH_MSG_GUARDED_PORT_DESCRIPTOR, 0x207
    assert bytes(g) == bytes.fromhex("ab00000000000000" "01001004" "07020000")


def test_book_response_layout() -> None:
    class msg_format_response_t(ctypes.Structure):
        _pack_ = 4
        _fields_ = [("header", M.mach_msg_header_t), ("body", M.mach_msg_body_t),
                    ("data", M.mach_msg_port_descriptor_t)]

    class msg_format_response_r_t(ctypes.Structure):
        _pack_ = 4
        _fields_ = msg_format_response_t._fields_ + [("trailer", M.mach_msg_trailer_t)]

    assert ctypes.sizeof(msg_format_response_t) == 40
    assert ctypes.sizeof(msg_format_response_r_t) == 48


def test_msgh_bits_macros() -> None:
    bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND)
    assert bits == 0x1413
    assert M.MACH_MSGH_BITS_REMOTE(bits) == M.MACH_MSG_TYPE_COPY_SEND
    assert M.MACH_MSGH_BITS_LOCAL(bits) == M.MACH_MSG_TYPE_MAKE_SEND
    assert M.MACH_MSGH_BITS_VOUCHER(bits) == 0
    full = M.MACH_MSGH_BITS_SET(17, 21, 19, M.MACH_MSGH_BITS_COMPLEX | 0x1F)
    assert full == 0x80131511
    assert M.MACH_MSGH_BITS_PORTS(full) == 0x131511
    assert M.MACH_MSGH_BITS_OTHER(full) == M.MACH_MSGH_BITS_COMPLEX
    assert M.MACH_MSGH_BITS_IS_COMPLEX(full) and not M.MACH_MSGH_BITS_IS_COMPLEX(bits)
    assert M.MACH_MSGH_BITS_HAS_LOCAL(bits) and not M.MACH_MSGH_BITS_HAS_VOUCHER(bits)
    assert M.MACH_RCV_TRAILER_TYPE(0) | M.MACH_RCV_TRAILER_ELEMENTS(M.MACH_RCV_TRAILER_AUDIT) == 0x03000000
