"""pymach's kernel objects are MIG servers, as XNU's ipc_kobject_server
makes them: a message sent to a task port, a thread port, a memory entry
or the host port with an id of mach_vm.defs, vm_map.defs, mach_port.defs,
task.defs, thread_act.defs or memory_entry.defs is answered by the runtime
in XNU's reply layout; other ids get MIG_BAD_ID.

The clients are generated from the .defs files pymach ships (always) and
from XNU's own (when PYMACH_XNU names an xnu checkout, as in
test_mig_xnu.py), and they work on another process through its task port.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pymach
import pymach.mach as M
from pymach.mach import byref
from pymach.mig import compile_defs, kobject
from pymach.mig.rpc import Interface
from machutil import start_watcher
from procutil import Doomed, run_in_child

pytest.importorskip("pcpp")

ROOT = Path(__file__).resolve().parent.parent
DEFS = ROOT / "src" / "pymach" / "defs"
KERNEL = ROOT / "src" / "pymach" / "mig" / "kernel"
XNU = os.environ.get("PYMACH_XNU", "")
T = M.mach_task_self
PAGE = M.vm_page_size


def _xnu(name: str) -> Interface:
    osfmk = os.path.join(XNU, "osfmk")
    return Interface(compile_defs(os.path.join(osfmk, "mach", name + ".defs"), include=[osfmk]))


def _ours(name: str) -> Interface:
    return Interface(compile_defs(str(DEFS / f"{name}.defs")))


SOURCES = [pytest.param(_ours, id="pymach-defs"),
           pytest.param(_xnu, id="xnu-defs", marks=pytest.mark.skipif(
               not os.path.isdir(os.path.join(XNU, "osfmk", "mach")), reason="no xnu checkout (set PYMACH_XNU)"))]


@pytest.fixture(autouse=True, scope="module")
def _runtime_made() -> None:
    """What lives as long as the process is made before a test's fd and
    name baselines: the notification watcher, this thread's MIG reply port,
    the bootstrap port's name."""
    start_watcher()
    M.mig_get_reply_port()
    boot = M.mach_port_t()
    if M.task_get_special_port(T(), M.TASK_BOOTSTRAP_PORT, byref(boot)) == 0 and boot.value:
        M.mach_port_deallocate(T(), boot.value)


def _c(iface: Interface, name: str) -> Any:
    """The C stub of ``name``: XNU's libsyscall .defs name some _kernelrpc_<name>."""
    return getattr(iface.c, name, None) or getattr(iface.c, "_kernelrpc_" + name)


@pytest.fixture
def target() -> Iterator[tuple[int, int, int]]:
    """Another process, its task port, and a page it allocated and filled."""
    def child() -> int:
        a = M.mach_vm_address_t(0)
        assert M.mach_vm_allocate(T(), byref(a), PAGE, M.VM_FLAGS_ANYWHERE) == 0
        ctypes.memmove(a.value, b"child's page", 12)
        return a.value

    with Doomed(child) as d:
        page = d.ready()
        kr, task = M.mach_port_t(), M.mach_port_t()
        assert M.task_for_pid(T(), d.pid, byref(task)) == 0
        try:
            yield d.pid, task.value, page
        finally:
            M.mach_port_deallocate(T(), task.value)
        del kr


def _perms(pid: int, addr: int) -> str | None:
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return line.split()[1]
    return None


def _names() -> list[tuple[int, int]]:
    names, types = M.mach_port_name_array_t(), M.mach_port_type_array_t()
    n, m = M.mach_msg_type_number_t(), M.mach_msg_type_number_t()
    assert M.mach_port_names(T(), byref(names), byref(n), byref(types), byref(m)) == 0
    out = [(names[i], types[i]) for i in range(n.value)]
    M.mach_vm_deallocate(T(), ctypes.cast(names, ctypes.c_void_p).value, 4 * n.value)
    M.mach_vm_deallocate(T(), ctypes.cast(types, ctypes.c_void_p).value, 4 * m.value)
    return out


# -- the interface: pymach's defs are XNU's layouts ---------------------------------------

def test_the_served_routines_have_apples_layouts() -> None:
    ref = json.loads((ROOT / "tests" / "data" / "mig_apple_layouts.json").read_text())
    checked = 0
    for sub in kobject.SUBSYSTEMS:
        apple = {r["id"]: r for r in ref[sub.name]["routines"]}
        assert ref[sub.name]["base"] == sub.base
        for rt in sub.routines:
            want = apple[rt.id]
            assert want["simple"] == rt.simple
            assert [rt.request.size, [[f.name, f.offset, f.size] for f in rt.request.fields]] == \
                [want["request"]["size"], want["request"]["fields"]], rt.name
            assert [rt.reply.size, [[f.name, f.offset, f.size] for f in rt.reply.fields]] == \
                [want["reply"]["size"], want["reply"]["fields"]], rt.name
            checked += 1
    assert checked == sum(len(v) for v in kobject.served().values()) > 70


@pytest.mark.parametrize("sub", [p.stem for p in sorted(DEFS.glob("*.defs")) if p.stem != "mach_types"
                                 and (KERNEL / f"{p.stem}_server.py").exists()])
def test_the_committed_servers_are_what_pymach_mig_makes(sub: str, tmp_path: Path) -> None:
    out = tmp_path / f"{sub}_server.py"
    env = {**os.environ, "PYTHONPATH": str(Path(pymach.__file__).resolve().parent.parent)}
    r = subprocess.run([sys.executable, "-m", "pymach", "mig", "-server", str(out), f"{sub}.defs"], cwd=DEFS,
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == (KERNEL / f"{sub}_server.py").read_text(), (
        f"regenerate: cd src/pymach/defs && pymach mig -server ../mig/kernel/{sub}_server.py {sub}.defs")


def test_the_docs_list_the_served_routines() -> None:
    text = (ROOT / "docs" / "mig.md").read_text()
    listed = {m.group(1): re.findall(r"`(\w+)`", m.group(3))
              for m in re.finditer(r"^- \*\*(\w+)\*\* \((\d+)\): (.*)$", text, re.M)}
    assert listed == kobject.served()


# -- mach_vm.defs on another process ---------------------------------------------------------

@pytest.mark.parametrize("make", SOURCES)
def test_a_generated_mach_vm_client_works_on_another_process(make: Any, target: tuple[int, int, int]) -> None:
    pid, task, page = target
    vm = make("mach_vm")
    addr = M.mach_vm_address_t(0)
    assert _c(vm, "mach_vm_allocate")(task, byref(addr), 2 * PAGE, M.VM_FLAGS_ANYWHERE) == 0
    assert addr.value and _perms(pid, addr.value) == "rw-p"
    data = ctypes.create_string_buffer(b"written by message", 18)
    assert _c(vm, "mach_vm_write")(task, addr.value, ctypes.addressof(data), 18) == 0
    got, cnt = M.vm_offset_t(), M.mach_msg_type_number_t()
    assert _c(vm, "mach_vm_read")(task, addr.value, PAGE, byref(got), byref(cnt)) == 0
    assert cnt.value == PAGE and ctypes.string_at(got.value, 18) == b"written by message"
    assert M.mach_vm_deallocate(T(), got.value, cnt.value) == 0
    assert _c(vm, "mach_vm_read")(task, page, 12, byref(got), byref(cnt)) == 0
    assert ctypes.string_at(got.value, 12) == b"child's page"
    M.mach_vm_deallocate(T(), got.value, cnt.value)
    assert _c(vm, "mach_vm_protect")(task, addr.value, PAGE, 0, M.VM_PROT_READ) == 0
    assert _perms(pid, addr.value) == "r--p"
    refused = _c(vm, "mach_vm_write")(task, addr.value, ctypes.addressof(data), 18)
    assert refused != 0 and refused == M.mach_vm_write(task, addr.value, ctypes.addressof(data), 18)
    assert _c(vm, "mach_vm_deallocate")(task, addr.value, 2 * PAGE) == 0
    assert _perms(pid, addr.value) is None
    assert _c(vm, "mach_vm_read")(task, addr.value, PAGE, byref(got), byref(cnt)) == M.KERN_INVALID_ADDRESS


def test_the_pythonic_client_raises_the_routines_code(target: tuple[int, int, int]) -> None:
    pid, task, _page = target
    vm = _ours("mach_vm")
    addr = vm.mach_vm_allocate(task, 0, PAGE, M.VM_FLAGS_ANYWHERE)
    assert _perms(pid, addr) == "rw-p"
    with pytest.raises(M.MachError) as e:
        vm.mach_vm_allocate(task, addr, PAGE, M.VM_FLAGS_FIXED)
    assert e.value.kr == M.KERN_NO_SPACE
    vm.mach_vm_deallocate(task, addr, PAGE)


def test_region_info_and_remote_threads_come_back_by_message(target: tuple[int, int, int]) -> None:
    pid, task, page = target
    vm, tk, th = _ours("mach_vm"), _ours("task"), _ours("thread_act")
    addr, size = M.mach_vm_address_t(page), M.mach_vm_size_t()
    info = M.vm_region_basic_info_data_64_t()
    cnt = M.mach_msg_type_number_t(M.VM_REGION_BASIC_INFO_COUNT_64)
    obj = M.mach_port_t(7)
    assert vm.c.mach_vm_region(task, byref(addr), byref(size), M.VM_REGION_BASIC_INFO_64, byref(info), byref(cnt),
                               byref(obj)) == 0
    assert addr.value <= page < addr.value + size.value and info.protection == M.VM_PROT_DEFAULT
    assert obj.value == 0
    before = _names()
    acts, n = M.thread_act_array_t(), M.mach_msg_type_number_t()
    assert tk.c.task_threads(task, byref(acts), byref(n)) == 0
    assert n.value >= 1  # the leader first, and the runtime's threads
    threads = [acts[i] for i in range(n.value)]
    assert len(set(threads)) == n.value
    state = (ctypes.c_uint32 * M.x86_THREAD_STATE64_COUNT)()
    scnt = M.mach_msg_type_number_t(M.x86_THREAD_STATE64_COUNT)
    assert th.c.thread_get_state(threads[0], M.x86_THREAD_STATE64, state, byref(scnt)) == 0
    assert scnt.value == M.x86_THREAD_STATE64_COUNT and any(state)
    for thread in threads:
        M.mach_port_deallocate(T(), thread)
    M.mach_vm_deallocate(T(), ctypes.cast(acts, ctypes.c_void_p).value, 4 * n.value)
    assert _names() == before
    del pid


# -- mach_port.defs: rights made by message, used across processes --------------------------

@pytest.mark.parametrize("make", SOURCES)
def test_a_generated_mach_port_client_allocates_and_inserts_rights(make: Any) -> None:
    mp = make("mach_port")
    parent = M.mach_port_t()
    assert M.mach_port_allocate(T(), M.MACH_PORT_RIGHT_RECEIVE, byref(parent)) == 0
    assert M.mach_port_insert_right(T(), parent.value, parent.value, M.MACH_MSG_TYPE_MAKE_SEND) == 0
    assert M.mach_ports_register(T(), (M.mach_port_t * 1)(parent.value), 1) == 0

    def child() -> bytes:
        ports, n = M.mach_port_array_t(), M.mach_msg_type_number_t()
        assert M.mach_ports_lookup(T(), byref(ports), byref(n)) == 0
        to_parent = ports[0]
        mine = M.mach_port_name_t()
        assert _c(mp, "mach_port_allocate")(T(), M.MACH_PORT_RIGHT_RECEIVE, byref(mine)) == 0
        assert _c(mp, "mach_port_insert_right")(T(), mine.value, mine.value, M.MACH_MSG_TYPE_MAKE_SEND) == 0
        refs = M.mach_port_urefs_t()
        assert _c(mp, "mach_port_get_refs")(T(), mine.value, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0
        assert refs.value == 1
        # the send right goes to the parent, which answers on it
        assert _send_right(to_parent, mine.value, M.MACH_MSG_TYPE_MOVE_SEND) == 0
        buf = ctypes.create_string_buffer(256)
        assert M.mach_msg(buf, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, 256, mine.value, 10_000, 0) == 0
        size = M.mach_msg_header_t.from_buffer(buf).msgh_size
        return buf.raw[24:size]

    import threading
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(_answer(parent.value)), daemon=True)
    t.start()
    try:
        assert run_in_child(child) == b"hello, child"
    finally:
        t.join(15)
        M.mach_ports_register(T(), (M.mach_port_t * 1)(), 0)
        M.mach_port_mod_refs(T(), parent.value, M.MACH_PORT_RIGHT_RECEIVE, -1)
        M.mach_port_deallocate(T(), parent.value)
    assert got == [b"sent"]


class _PortMsg(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t), ("body", M.mach_msg_body_t),
                ("port", M.mach_msg_port_descriptor_t), ("trailer", ctypes.c_char * 128)]


def _send_right(dest: int, name: int, disp: int) -> int:
    m = _PortMsg()
    m.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0) | M.MACH_MSGH_BITS_COMPLEX
    m.header.msgh_size = 40
    m.header.msgh_remote_port = dest
    m.body.msgh_descriptor_count = 1
    m.port.name, m.port.disposition, m.port.type = name, disp, M.MACH_MSG_PORT_DESCRIPTOR
    return int(M.mach_msg(m.header, M.MACH_SEND_MSG, 40, 0, 0, 0, 0))


def _answer(port: int) -> bytes:
    """Receive a right on ``port`` and send "hello, child" on it."""
    m = _PortMsg()
    if M.mach_msg(m.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(m), port, 15_000, 0):
        return b"nothing"
    right = m.port.name
    text = b"hello, child"

    class Text(ctypes.Structure):
        _fields_ = [("header", M.mach_msg_header_t), ("text", ctypes.c_char * 12)]
    r = Text()
    r.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_MOVE_SEND, 0)
    r.header.msgh_size = 36
    r.header.msgh_remote_port = right
    r.text = text
    return b"sent" if M.mach_msg(r.header, M.MACH_SEND_MSG, 36, 0, 0, 0, 0) == 0 else b"failed"


def test_rights_a_routine_returns_arrive_once() -> None:
    mp, tk = _ours("mach_port"), _ours("task")
    before = _names()
    port = M.mach_port_name_t()
    assert mp.c.mach_port_allocate(T(), M.MACH_PORT_RIGHT_RECEIVE, byref(port)) == 0
    poly, disp = M.mach_port_t(), M.mach_msg_type_name_t()
    assert mp.c.mach_port_extract_right(T(), port.value, M.MACH_MSG_TYPE_MAKE_SEND, byref(poly), byref(disp)) == 0
    assert poly.value == port.value and disp.value == M.MACH_MSG_TYPE_PORT_SEND
    refs = M.mach_port_urefs_t()
    assert M.mach_port_get_refs(T(), port.value, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0 and refs.value == 1
    # a send-once right for a notification moves into the request; the one it replaces comes back
    prev = M.mach_port_t(9)
    assert mp.c.mach_port_request_notification(T(), port.value, M.MACH_NOTIFY_NO_SENDERS, 0, port.value,
                                               M.MACH_MSG_TYPE_MAKE_SEND_ONCE, byref(prev)) == 0
    assert prev.value == 0
    assert mp.c.mach_port_request_notification(T(), port.value, M.MACH_NOTIFY_NO_SENDERS, 0, port.value,
                                               M.MACH_MSG_TYPE_MAKE_SEND_ONCE, byref(prev)) == 0
    kind = M.mach_port_type_t()
    assert M.mach_port_type(T(), prev.value, byref(kind)) == 0 and kind.value == M.MACH_PORT_TYPE_SEND_ONCE
    assert M.mach_port_deallocate(T(), prev.value) == 0
    boot = M.mach_port_t()
    assert tk.c.task_get_special_port(T(), M.TASK_BOOTSTRAP_PORT, byref(boot)) == 0
    direct = M.mach_port_t()
    assert M.task_get_special_port(T(), M.TASK_BOOTSTRAP_PORT, byref(direct)) == 0
    assert boot.value == direct.value
    M.mach_port_deallocate(T(), boot.value)
    M.mach_port_deallocate(T(), direct.value)
    assert mp.c.mach_port_mod_refs(T(), port.value, M.MACH_PORT_RIGHT_SEND, -1) == 0
    assert mp.c.mach_port_mod_refs(T(), port.value, M.MACH_PORT_RIGHT_RECEIVE, -1) == 0
    assert _names() == before


def test_a_right_made_for_the_request_is_made_once() -> None:
    mp = _ours("mach_port")
    before = _names()
    port = M.mach_port_name_t()
    assert mp.c.mach_port_allocate(T(), M.MACH_PORT_RIGHT_RECEIVE, byref(port)) == 0
    for _ in range(2):
        assert mp.c.mach_port_insert_right(T(), port.value, port.value, M.MACH_MSG_TYPE_MAKE_SEND) == 0
    status = M.mach_port_status_t()
    cnt = M.mach_msg_type_number_t(M.MACH_PORT_RECEIVE_STATUS_COUNT)
    assert M.mach_port_get_attributes(T(), port.value, M.MACH_PORT_RECEIVE_STATUS, byref(status), byref(cnt)) == 0
    refs = M.mach_port_urefs_t()
    assert M.mach_port_get_refs(T(), port.value, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0
    assert (status.mps_mscount, status.mps_srights, refs.value) == (2, 1, 2)
    # inserting under another name: KERN_RIGHT_EXISTS, and the right made for the request is released
    other = M.mach_port_name_t()
    assert mp.c.mach_port_allocate(T(), M.MACH_PORT_RIGHT_DEAD_NAME, byref(other)) == 0
    assert mp.c.mach_port_deallocate(T(), other.value) == 0
    assert mp.c.mach_port_insert_right(T(), other.value, port.value, M.MACH_MSG_TYPE_MAKE_SEND) \
        == M.mach_port_insert_right(T(), other.value, port.value, M.MACH_MSG_TYPE_MAKE_SEND) != 0
    assert M.mach_port_get_refs(T(), port.value, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0 and refs.value == 2
    assert M.mach_port_destroy(T(), port.value) == 0
    assert _names() == before


def test_memory_a_routine_returns_is_given_away() -> None:
    vm = _ours("mach_vm")
    a = M.mach_vm_address_t(0)
    assert M.mach_vm_allocate(T(), byref(a), 4 * PAGE, M.VM_FLAGS_ANYWHERE) == 0
    ctypes.memset(a.value, 0x5A, 4 * PAGE)
    got, cnt = M.vm_offset_t(), M.mach_msg_type_number_t()

    def mapped() -> int:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    assert vm.c.mach_vm_read(T(), a.value, 4 * PAGE, byref(got), byref(cnt)) == 0
    M.mach_vm_deallocate(T(), got.value, cnt.value)
    regions = mapped()
    for _ in range(10):
        assert vm.c.mach_vm_read(T(), a.value, 4 * PAGE, byref(got), byref(cnt)) == 0
        assert cnt.value == 4 * PAGE and ctypes.string_at(got.value, 4 * PAGE) == b"\x5a" * (4 * PAGE)
        M.mach_vm_deallocate(T(), got.value, cnt.value)
    assert mapped() == regions
    M.mach_vm_deallocate(T(), a.value, 4 * PAGE)


# -- ids, destinations and bad requests --------------------------------------------------------

class _Raw(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t), ("body", ctypes.c_char * 256)]


def _call(dest: int, msg_id: int, body: bytes = b"", dest_disp: int = M.MACH_MSG_TYPE_COPY_SEND,
          complex_: bool = False) -> tuple[int, int, int, int]:
    """Send a request and receive its reply: (kr, reply id, reply size, RetCode)."""
    reply = M.mig_get_reply_port()
    m = _Raw()
    m.header.msgh_bits = M.MACH_MSGH_BITS(dest_disp, M.MACH_MSG_TYPE_MAKE_SEND_ONCE) | (
        M.MACH_MSGH_BITS_COMPLEX if complex_ else 0)
    m.header.msgh_size = 24 + len(body)
    m.header.msgh_remote_port = dest
    m.header.msgh_local_port = reply
    m.header.msgh_id = msg_id
    ctypes.memmove(ctypes.addressof(m) + 24, body, len(body))
    kr = M.mach_msg(m.header, M.MACH_SEND_MSG | M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 24 + len(body),
                    ctypes.sizeof(m), reply, 10_000, 0)
    if kr & 0x10000000:
        # the send-once right made for the reply died unused: the reply
        # port has its notification, or finds it gone at the next receive
        n = _Raw()
        got = M.mach_msg(n.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(n), reply, 0, 0)
        assert got == M.MACH_RCV_TIMED_OUT or (got == 0 and n.header.msgh_id == M.MACH_NOTIFY_SEND_ONCE)
    code = struct.unpack_from("<i", bytes(m)[24:], 8)[0]
    if kr == 0:
        M.mach_msg_destroy(m.header)  # what the reply carried (task_threads' thread ports...)
    return int(kr), m.header.msgh_id, m.header.msgh_size, code


def _entry() -> int:
    size, h = M.memory_object_size_t(4 * PAGE), M.mach_port_t()
    assert M.mach_make_memory_entry_64(T(), byref(size), 0, M.VM_PROT_DEFAULT | M.MAP_MEM_NAMED_CREATE
                                       | M.MAP_MEM_PURGABLE, byref(h), 0) == 0
    return h.value


@pytest.mark.parametrize("which", ["task", "host", "entry"])
def test_ids_no_subsystem_has_get_mig_bad_id(which: str) -> None:
    dest = {"task": T(), "host": M.mach_host_self()}.get(which) or _entry()
    try:
        for msg_id in (0, 4830, 3299, 3499, 3699, 4901, 201, 1002, -1, 0x7FFFFFFF):
            kr, rid, size, code = _call(dest, msg_id)
            assert (kr, rid, size, code) == (0, (msg_id + 100 + 2**31) % 2**32 - 2**31, 36, M.MIG_BAD_ID), msg_id
    finally:
        if which == "entry":
            M.mach_port_deallocate(T(), dest)


def test_a_routine_on_the_wrong_kind_of_object_fails_as_xnu_says() -> None:
    ent = _entry()
    try:
        vm, me = _ours("mach_vm"), _ours("memory_entry")
        a = M.mach_vm_address_t(0)
        assert vm.c.mach_vm_allocate(ent, byref(a), PAGE, M.VM_FLAGS_ANYWHERE) == M.KERN_INVALID_ARGUMENT
        st = ctypes.c_int(0)
        assert me.c.mach_memory_entry_purgable_control(T(), M.VM_PURGABLE_GET_STATE, byref(st)) \
            == M.KERN_INVALID_ARGUMENT
        st.value = M.VM_PURGABLE_VOLATILE
        assert me.c.mach_memory_entry_purgable_control(ent, M.VM_PURGABLE_SET_STATE, byref(st)) == 0
        assert st.value == M.VM_PURGABLE_NONVOLATILE
        assert me.c.mach_memory_entry_purgable_control(ent, M.VM_PURGABLE_GET_STATE, byref(st)) == 0
        assert st.value == M.VM_PURGABLE_VOLATILE
    finally:
        M.mach_port_deallocate(T(), ent)


def test_a_moved_destination_right_is_consumed(target: tuple[int, int, int]) -> None:
    _pid, task, _page = target
    assert M.mach_port_mod_refs(T(), task, M.MACH_PORT_RIGHT_SEND, 1) == 0
    refs = M.mach_port_urefs_t()
    assert M.mach_port_get_refs(T(), task, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0 and refs.value == 2
    kr, _rid, _size, code = _call(task, 4999, dest_disp=M.MACH_MSG_TYPE_MOVE_SEND)
    assert (kr, code) == (0, M.MIG_BAD_ID)
    assert M.mach_port_get_refs(T(), task, M.MACH_PORT_RIGHT_SEND, byref(refs)) == 0 and refs.value == 1


def test_a_bad_right_in_the_request_fails_the_send_and_consumes_nothing() -> None:
    body = struct.pack("<I", 1) + struct.pack("<IIHBB", 0x9903, 0, 0, M.MACH_MSG_TYPE_COPY_SEND,
                                              M.MACH_MSG_PORT_DESCRIPTOR)
    before = _names()
    kr, *_rest = _call(T(), 3214, body, complex_=True)
    assert kr == M.MACH_SEND_INVALID_RIGHT
    assert _names() == before


def test_no_reply_right_means_no_reply_and_no_leak() -> None:
    before, maps = _names(), open("/proc/self/maps").read().count("\n")
    m = _Raw()
    m.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0)
    body = bytes(8) + struct.pack("<QQi", 0, PAGE, M.VM_FLAGS_ANYWHERE)  # mach_vm_allocate, nobody told
    m.header.msgh_size = 24 + len(body)
    m.header.msgh_remote_port = T()
    m.header.msgh_id = 4800
    ctypes.memmove(ctypes.addressof(m) + 24, body, len(body))
    assert M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0) == 0
    assert _names() == before
    # the page was allocated (as XNU would), and nobody knows where: that is the caller's doing
    assert open("/proc/self/maps").read().count("\n") >= maps


# -- malformed requests -----------------------------------------------------------------------

_IDS = sorted({rt.id for sub in kobject.SUBSYSTEMS for rt in sub.routines} | {3299, 4999, 0})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msg_id=st.sampled_from(_IDS), body=st.binary(max_size=120), complex_=st.booleans())
def test_malformed_requests_to_a_task_port_break_nothing(msg_id: int, body: bytes, complex_: bool,
                                                         target: tuple[int, int, int]) -> None:
    _pid, task, _page = target
    body = body[:len(body) // 4 * 4]
    before = _names()
    kr, rid, size, _code = _call(task, msg_id, body, complex_=complex_)
    if kr == 0:
        assert rid == msg_id + 100 and size >= 36
    else:
        assert kr & 0x10000000 or kr == M.MACH_RCV_TIMED_OUT, hex(kr)
    assert _names() == before
