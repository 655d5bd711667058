"""Copy entries keep the map entries they were made over (their bounds and
user tags), in our task and in another one that receives the entry in a
message; mach_memory_object_memory_entry_64; purgeable memory
(vm_purgable_control): its states, its codes, and emptying that is real,
for private memory and for a memory entry's object shared with another
process."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator

import pytest

import pymach
import pymach.mach as M
from pymach.mach import byref
from procutil import forked, peek, poke

T = M.mach_task_self
P = M.vm_page_size
RW = M.VM_PROT_READ | M.VM_PROT_WRITE
CHUNK = 16 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


class _EntryMsg(ctypes.Structure):
    _fields_ = [("header", M.mach_msg_header_t), ("body", M.mach_msg_body_t),
                ("entry", M.mach_msg_port_descriptor_t)]


class _RequestRcv(ctypes.Structure):
    _fields_ = [("header", M.mach_msg_header_t), ("body", ctypes.c_char * 256)]


@pytest.fixture
def server() -> Iterator[int]:
    """A port of ours whose send right fork children inherit (registered)."""
    p = M.mach_port_t()
    assert M.mach_port_allocate(T(), M.MACH_PORT_RIGHT_RECEIVE, byref(p)) == 0
    assert M.mach_port_insert_right(T(), p, p, M.MACH_MSG_TYPE_MAKE_SEND) == 0
    arr = (M.mach_port_t * 1)(p.value)
    assert M.mach_ports_register(T(), arr, 1) == 0
    try:
        yield p.value
    finally:
        M.mach_ports_register(T(), arr, 0)
        M.mach_port_destroy(T(), p.value)


def serve_entry(port: int, handle: int) -> None:
    """Receive one request on ``port`` and answer it with a copy of the
    send right ``handle`` in a port descriptor."""
    r = _RequestRcv()
    assert M.mach_msg(r.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), port, 5000, 0) == 0
    m = _EntryMsg()
    m.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_MOVE_SEND_ONCE, 0) | M.MACH_MSGH_BITS_COMPLEX
    m.header.msgh_size = ctypes.sizeof(m)
    m.header.msgh_remote_port = r.header.msgh_remote_port
    m.body.msgh_descriptor_count = 1
    m.entry.name, m.entry.disposition, m.entry.type = handle, M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_PORT_DESCRIPTOR
    assert M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0) == 0


def fetch_entry() -> int:
    """In a fork child: ask the registered server for its entry; its name."""
    srv = pymach.registered_ports()[0]
    assert srv is not None
    m = pymach.request(srv, b"entry please", timeout=5)
    (ent,) = m.rights
    assert isinstance(ent, pymach.MemoryEntry)
    return ent.name


def regions(addr: int, n: int) -> list[tuple[int, int, int]]:
    """(offset from addr, size, user tag) of the regions from addr, n of them."""
    out = []
    at = addr
    for _ in range(n):
        a, s, d = M.mach_vm_address_t(at), M.mach_vm_size_t(0), M.natural_t(1)
        ri = M.vm_region_submap_short_info_data_64_t()
        cnt = M.mach_msg_type_number_t(M.VM_REGION_SUBMAP_SHORT_INFO_COUNT_64)
        assert M.mach_vm_region_recurse(T(), byref(a), byref(s), byref(d), byref(ri), byref(cnt)) == 0
        out.append((a.value - addr, s.value, ri.user_tag))
        at = a.value + s.value
    return out


def tagged_chunks() -> int:
    """Three 16 KiB regions tagged 100, 101 and 102, holding "a", "b", "c"."""
    a = M.mach_vm_address_t(0)
    assert M.mach_vm_allocate(T(), byref(a), 3 * CHUNK, M.VM_FLAGS_ANYWHERE) == 0
    for i in range(3):
        c = M.mach_vm_address_t(a.value + i * CHUNK)
        assert M.mach_vm_allocate(T(), byref(c), CHUNK,
                                  M.VM_FLAGS_FIXED | M.VM_FLAGS_OVERWRITE | M.VM_MAKE_TAG(100 + i)) == 0
        poke(c.value, b"abc"[i:i + 1])
    return a.value


def make_entry(addr: int, size: int, flags: int) -> int:
    h, sz = M.mach_port_t(), M.memory_object_size_t(size)
    assert M.mach_make_memory_entry_64(T(), byref(sz), addr, flags | RW, byref(h), 0) == 0
    assert sz.value == size
    return h.value


def map_entry(h: int, size: int, flags: int = 0, copy: bool = False) -> int:
    m = M.mach_vm_address_t(0)
    kr = M.mach_vm_map(T(), byref(m), size, 0, flags | M.VM_FLAGS_ANYWHERE, h, 0, copy, RW, RW,
                       M.VM_INHERIT_DEFAULT)
    assert kr == 0, M.mach_error_string(kr)
    return m.value


EXPECTED = [(0, CHUNK, 100), (CHUNK, CHUNK, 101), (2 * CHUNK, CHUNK, 102)]


@pytest.mark.parametrize("how", [M.MAP_MEM_VM_SHARE, M.MAP_MEM_VM_COPY])
@pytest.mark.parametrize("copy", [False, True])
def test_a_copy_entry_maps_back_as_its_regions(how: int, copy: bool) -> None:
    a = tagged_chunks()
    h = make_entry(a, 3 * CHUNK, how)
    try:
        m = map_entry(h, 3 * CHUNK, copy=copy)
        try:
            assert regions(m, 3) == EXPECTED
            assert [peek(m + i * CHUNK, 1) for i in range(3)] == [b"a", b"b", b"c"]
            poke(a, b"A")
            assert peek(m, 1) == (b"A" if how == M.MAP_MEM_VM_SHARE and not copy else b"a")
        finally:
            M.mach_vm_deallocate(T(), m, 3 * CHUNK)
        m = map_entry(h, 3 * CHUNK, M.VM_MAKE_TAG(200))
        try:
            assert regions(m, 3) == [(o, s, 200) for o, s, _t in EXPECTED]
        finally:
            M.mach_vm_deallocate(T(), m, 3 * CHUNK)
    finally:
        M.mach_port_deallocate(T(), h)
        M.mach_vm_deallocate(T(), a, 3 * CHUNK)


@pytest.mark.parametrize("how", [M.MAP_MEM_VM_SHARE, M.MAP_MEM_VM_COPY])
def test_a_copy_entry_keeps_its_regions_in_another_task(server: int, how: int) -> None:
    a = tagged_chunks()
    h = make_entry(a, 3 * CHUNK, how)

    def child(sync: Callable[[], None]) -> object:
        name = fetch_entry()
        m = map_entry(name, 3 * CHUNK)
        return regions(m, 3), [peek(m + i * CHUNK, 1) for i in range(3)]

    try:
        run = forked(child)
        with run:
            serve_entry(server, h)
        assert run.result == (EXPECTED, [b"a", b"b", b"c"])
    finally:
        M.mach_port_deallocate(T(), h)
        M.mach_vm_deallocate(T(), a, 3 * CHUNK)


def test_an_entry_over_one_region_is_unchanged() -> None:
    a = M.mach_vm_address_t(0)
    assert M.mach_vm_allocate(T(), byref(a), 2 * CHUNK, M.VM_FLAGS_ANYWHERE | M.VM_MAKE_TAG(77)) == 0
    h = make_entry(a.value, 2 * CHUNK, M.MAP_MEM_VM_SHARE)
    try:
        m = map_entry(h, 2 * CHUNK)
        assert regions(m, 1) == [(0, 2 * CHUNK, 77)]
        M.mach_vm_deallocate(T(), m, 2 * CHUNK)
    finally:
        M.mach_port_deallocate(T(), h)
        M.mach_vm_deallocate(T(), a.value, 2 * CHUNK)


# -- mach_memory_object_memory_entry_64 --------------------------------------

def test_memory_object_memory_entry_codes() -> None:
    h = M.mach_port_t(0xDEAD)
    host = M.mach_host_self()
    assert M.mach_memory_object_memory_entry_64(host, 0, P, RW, 0, byref(h)) == M.KERN_INVALID_ARGUMENT
    assert M.mach_memory_object_memory_entry_64(host, 1, 0, RW, 0, byref(h)) == M.KERN_INVALID_ARGUMENT
    assert M.mach_memory_object_memory_entry_64(host, 1, (1 << 64) - 1, RW, 0, byref(h)) == M.KERN_INVALID_ARGUMENT
    assert M.mach_memory_object_memory_entry_64(T(), 1, P, RW, 0, byref(h)) == M.KERN_INVALID_HOST
    assert M.mach_memory_object_memory_entry_64(0x7777, 1, P, RW, 0, byref(h)) == M.MACH_SEND_INVALID_DEST
    assert M.mach_memory_object_memory_entry_64(host, 1, P, RW, 0x7777, byref(h)) == M.MACH_SEND_INVALID_RIGHT
    assert h.value == 0xDEAD
    assert M.mach_memory_object_memory_entry(host, 1, P + 1, RW, 0, byref(h)) == 0
    try:
        m = map_entry(h.value, 2 * P)
        assert peek(m, 2 * P) == bytes(2 * P)  # zero-filled, rounded to pages
        poke(m, b"hi")
        m2 = map_entry(h.value, 2 * P)
        assert peek(m2, 2) == b"hi"  # one object
        for x in (m, m2):
            M.mach_vm_deallocate(T(), x, 2 * P)
    finally:
        M.mach_port_deallocate(T(), h.value)


# -- purgeable memory -----------------------------------------------------------

def control(addr: int, ctl: int, state: int = 0) -> tuple[int, int]:
    st = M.vm_purgable_t(state)
    kr = M.mach_vm_purgable_control(T(), addr, ctl, byref(st))
    return kr, st.value


def test_purgable_control_codes() -> None:
    a, b = M.mach_vm_address_t(0), M.mach_vm_address_t(0)
    assert M.mach_vm_allocate(T(), byref(a), 2 * P, M.VM_FLAGS_ANYWHERE | M.VM_FLAGS_PURGABLE) == 0
    assert M.mach_vm_allocate(T(), byref(b), P, M.VM_FLAGS_ANYWHERE) == 0
    try:
        assert control(a.value, M.VM_PURGABLE_GET_STATE) == (0, M.VM_PURGABLE_NONVOLATILE)
        assert control(a.value, M.VM_PURGABLE_SET_STATE_FROM_KERNEL, 1) == (M.KERN_INVALID_ARGUMENT, 1)
        assert control(a.value, 7, 1)[0] == M.KERN_INVALID_ARGUMENT
        assert control(a.value, M.VM_PURGABLE_SET_STATE, 1 << 20)[0] == M.KERN_INVALID_ARGUMENT
        assert control(b.value, M.VM_PURGABLE_SET_STATE, 1)[0] == M.KERN_INVALID_ARGUMENT  # not purgeable
        assert control(b.value, M.VM_PURGABLE_GET_STATE)[0] == M.KERN_INVALID_ARGUMENT
        M.mach_vm_deallocate(T(), b.value, P)
        assert control(b.value, M.VM_PURGABLE_GET_STATE)[0] == M.KERN_INVALID_ADDRESS
        assert M.mach_vm_protect(T(), a.value, 2 * P, 0, M.VM_PROT_READ) == 0
        assert control(a.value, M.VM_PURGABLE_SET_STATE, 1)[0] == M.KERN_PROTECTION_FAILURE
        assert control(a.value, M.VM_PURGABLE_GET_STATE) == (0, M.VM_PURGABLE_NONVOLATILE)
        # a bad address is no error for PURGE_ALL, which takes none
        assert control(0, M.VM_PURGABLE_PURGE_ALL, 5) == (0, 5)
    finally:
        M.mach_vm_deallocate(T(), a.value, 2 * P)


def test_emptying_is_real_and_purge_all_empties_only_volatile_memory() -> None:
    a, b = M.mach_vm_address_t(0), M.mach_vm_address_t(0)
    assert M.mach_vm_allocate(T(), byref(a), 4 * P, M.VM_FLAGS_ANYWHERE | M.VM_FLAGS_PURGABLE) == 0
    assert M.mach_vm_allocate(T(), byref(b), P, M.VM_FLAGS_ANYWHERE | M.VM_FLAGS_PURGABLE) == 0
    try:
        ctypes.memset(a.value, ord("x"), 4 * P)
        poke(b.value, b"kept")
        # the pieces of a split entry are one object
        assert M.mach_vm_protect(T(), a.value + P, P, 0, M.VM_PROT_READ) == 0
        assert control(a.value, M.VM_PURGABLE_SET_STATE, M.VM_PURGABLE_VOLATILE) == (0, M.VM_PURGABLE_NONVOLATILE)
        assert control(a.value + 3 * P, M.VM_PURGABLE_GET_STATE) == (0, M.VM_PURGABLE_VOLATILE)
        assert peek(a.value, 4 * P) == b"x" * 4 * P  # volatile, not emptied yet
        assert control(0, M.VM_PURGABLE_PURGE_ALL) == (0, 0)
        assert peek(a.value, 4 * P) == bytes(4 * P)
        assert peek(b.value, 4) == b"kept"
        assert control(a.value, M.VM_PURGABLE_GET_STATE) == (0, M.VM_PURGABLE_EMPTY)
        assert control(b.value, M.VM_PURGABLE_GET_STATE) == (0, M.VM_PURGABLE_NONVOLATILE)
        assert control(a.value, M.VM_PURGABLE_SET_STATE, M.VM_PURGABLE_VOLATILE) == (0, M.VM_PURGABLE_EMPTY)
        assert control(a.value, M.VM_PURGABLE_SET_STATE, M.VM_PURGABLE_NONVOLATILE) == (0, M.VM_PURGABLE_EMPTY)
        poke(a.value, b"new")
        assert control(a.value, M.VM_PURGABLE_SET_STATE, M.VM_PURGABLE_EMPTY) == (0, M.VM_PURGABLE_NONVOLATILE)
        assert peek(a.value, 3) == bytes(3)
        # VM_PURGABLE_DEBUG_EMPTY: volatile means empty from then on
        assert control(b.value, M.VM_PURGABLE_SET_STATE,
                       M.VM_PURGABLE_VOLATILE | M.VM_PURGABLE_DEBUG_EMPTY) == (0, M.VM_PURGABLE_NONVOLATILE)
        assert control(b.value, M.VM_PURGABLE_GET_STATE) == (0, M.VM_PURGABLE_EMPTY)
    finally:
        M.mach_vm_deallocate(T(), a.value, 4 * P)
        M.mach_vm_deallocate(T(), b.value, P)


def test_a_purgeable_entry_has_one_state_in_every_task(server: int) -> None:
    h, sz = M.mach_port_t(), M.memory_object_size_t(2 * P)
    assert M.mach_make_memory_entry_64(T(), byref(sz), 0, M.MAP_MEM_NAMED_CREATE | M.MAP_MEM_PURGABLE | RW,
                                       byref(h), 0) == 0
    m = map_entry(h.value, 2 * P)
    poke(m, b"data")

    def child(sync: Callable[[], None]) -> object:
        name = fetch_entry()
        cm = map_entry(name, 2 * P)
        sync()  # the parent made it volatile
        seen = control(cm, M.VM_PURGABLE_GET_STATE), peek(cm, 4)
        assert control(cm, M.VM_PURGABLE_SET_STATE, M.VM_PURGABLE_EMPTY) == (0, M.VM_PURGABLE_VOLATILE)
        return seen

    try:
        with forked(child) as sync:
            serve_entry(server, h.value)
            assert control(m, M.VM_PURGABLE_SET_STATE, M.VM_PURGABLE_VOLATILE) == (0, M.VM_PURGABLE_NONVOLATILE)
            sync()
        assert control(m, M.VM_PURGABLE_GET_STATE) == (0, M.VM_PURGABLE_EMPTY)
        assert peek(m, 4) == bytes(4)  # the child emptied the object
    finally:
        M.mach_vm_deallocate(T(), m, 2 * P)
        M.mach_port_deallocate(T(), h.value)


# -- a copy entry's table in a record is untrusted -------------------------------

def _record(size_field: int) -> bytes:
    import struct
    from pymach._kern import ipc_kmsg as KM
    body = struct.pack("<I", 1) + KM.PORT_DESC.pack(1, 0, 0, 0, M.MACH_MSG_TYPE_PORT_SEND,
                                                    M.MACH_MSG_PORT_DESCRIPTOR) + struct.pack("<I", 0)
    rights = KM.RIGHT.pack(KM.KIND_NONE, 0, 0, 0) + KM.RIGHT.pack(KM.KIND_ENTRY, 2, size_field, 0)
    bits = M.MACH_MSGH_BITS_SET(0, M.MACH_MSG_TYPE_PORT_SEND, 0, M.MACH_MSGH_BITS_COMPLEX)
    return KM.WIRE.pack(KM.MAGIC, bits, 7, len(body), 2, 2, 0, 0) + rights + body


@pytest.mark.parametrize("case", ["good", "unsealed", "short_sum", "unaligned", "not_copy", "empty"])
def test_forged_copy_entry_tables_are_refused(case: str) -> None:
    import fcntl
    import os
    import socket
    import struct
    from pymach._kern.ipc_port import SendCap
    from pymach._kern.task import SELF
    from pymach._kern.vm_memory_entry import PART

    obj = os.memfd_create("forged", os.MFD_ALLOW_SEALING)
    os.ftruncate(obj, 2 * P)
    fcntl.fcntl(obj, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    parts = {"short_sum": [(P, 1)], "unaligned": [(P + 8, 1), (P - 8, 2)], "empty": []}.get(case, [(P, 1), (P, 2)])
    table = os.memfd_create("forged.table", os.MFD_ALLOW_SEALING)
    os.write(table, b"".join(PART.pack(n, t) for n, t in parts))
    if case != "unsealed":
        fcntl.fcntl(table, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    size_field = 2 * P | RW | (0 if case == "not_copy" else 0x8)
    with pymach.Port() as port, port.make_send() as send:
        try:
            ie = SELF.space.lookup(port.name)
            assert ie is not None and isinstance(ie.cap, SendCap)
            ie.cap.sock.sendmsg([_record(size_field)],
                               [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("ii", obj, table))])
        finally:
            os.close(obj)
            os.close(table)
        if case == "good":
            m = port.receive(timeout=2)
            (ent,) = m.rights
            assert isinstance(ent, pymach.MemoryEntry)
            a = map_entry(ent.name, 2 * P)
            assert regions(a, 2) == [(0, P, 1), (P, P, 2)]
            M.mach_vm_deallocate(T(), a, 2 * P)
            m.release()
        else:
            with pytest.raises(pymach.MachError) as e:
                port.receive(timeout=2)
            assert e.value.kr == M.MACH_RCV_BODY_ERROR
        send.send(b"next")
        assert port.receive(timeout=2).data == b"next"
