"""Task, thread and host ports travel in messages, as on Mach, across real
processes.

A task port is an ordinary send right: a child that receives its parent's
task port reads, writes and allocates in the parent through it; a task
port for a third process is passed along; a read port stays a read port;
the same task received twice is one name with two user references; our
own task coming back is mach_task_self(); thread ports of task_threads
and the host port travel too. A message destroyed unreceived closes the
pidfds it carried (the fd-count fixture checks every test), and the port
of a process that exited arrives as MACH_PORT_DEAD.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
from collections.abc import Callable, Iterator
from ctypes import byref

import pytest

import pymach
from machutil import alloc_name, type_kr, type_of
from procutil import ROOT_ONLY, become_nobody, forked, peek, poke, start_sleep, stop_process
from pymach import mach as M
from pymach._kern import ipc_kmsg as KM
from pymach._kern import introspect
from pymach._kern.task import SELF

T = M.mach_task_self
P = M.vm_page_size
COPY_SEND = M.MACH_MSG_TYPE_COPY_SEND
MOVE_SEND = M.MACH_MSG_TYPE_MOVE_SEND
PORT_SEND = M.MACH_MSG_TYPE_PORT_SEND
DEAD = M.MACH_PORT_DEAD
MAX_PORTS = 4


class PortsMsg(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t), ("body", M.mach_msg_body_t),
                ("ports", M.mach_msg_port_descriptor_t * MAX_PORTS)]


class PortsRcv(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("m", PortsMsg), ("trailer", M.mach_msg_trailer_t)]


def send_ports(dest: int, items: list[tuple[int, int]], dest_disp: int = COPY_SEND, reply: int = 0,
               reply_disp: int = 0) -> int:
    """A message to ``dest`` whose port descriptors carry ``items``
    ((name, disposition) each)."""
    m = PortsMsg()
    m.header.msgh_bits = M.MACH_MSGH_BITS(dest_disp, reply_disp) | M.MACH_MSGH_BITS_COMPLEX
    m.header.msgh_size = ctypes.sizeof(m.header) + 4 + 12 * len(items)
    m.header.msgh_remote_port = dest
    m.header.msgh_local_port = reply
    m.body.msgh_descriptor_count = len(items)
    for d, (name, disp) in zip(m.ports, items):
        d.name, d.disposition, d.type = name, disp, M.MACH_MSG_PORT_DESCRIPTOR
    return M.mach_msg(m.header, M.MACH_SEND_MSG | M.MACH_SEND_TIMEOUT, m.header.msgh_size, 0, 0, 5000, 0)


def recv_ports(port: int, timeout_ms: int = 5000) -> tuple[int, list[int], list[int], PortsRcv]:
    """(kr, names, kinds, the message) of the next message on ``port``."""
    r = PortsRcv()
    kr = M.mach_msg(r.m.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), port, timeout_ms, 0)
    n = r.m.body.msgh_descriptor_count if kr == 0 and r.m.header.msgh_bits & M.MACH_MSGH_BITS_COMPLEX else 0
    return kr, [r.m.ports[i].name for i in range(n)], [r.m.ports[i].disposition for i in range(n)], r


def refs(name: int, right: int = M.MACH_PORT_RIGHT_SEND) -> int:
    r = M.mach_port_urefs_t()
    kr = M.mach_port_get_refs(T(), name, right, byref(r))
    assert kr == 0, f"mach_port_get_refs({name:#x}) = {kr:#x}"
    return r.value


def pid_of(task: int) -> int:
    pid = ctypes.c_int()
    kr = M.pid_for_task(task, byref(pid))
    return pid.value if kr == 0 else -kr


def read(task: int, addr: int, n: int) -> tuple[int, bytes]:
    data, cnt = M.vm_offset_t(), M.mach_msg_type_number_t()
    kr = M.mach_vm_read(task, addr, n, byref(data), byref(cnt))
    if kr:
        return kr, b""
    out = ctypes.string_at(data.value, cnt.value)
    assert M.mach_vm_deallocate(T(), data.value, cnt.value) == 0
    return 0, out


def write(task: int, addr: int, data: bytes) -> int:
    buf = ctypes.create_string_buffer(data, len(data))
    return M.mach_vm_write(task, addr, ctypes.addressof(buf), len(data))


def task_for_pid(pid: int) -> int:
    t = M.mach_port_t()
    assert M.task_for_pid(T(), pid, byref(t)) == 0
    return t.value


def special(which: int) -> int:
    t = M.mach_port_t()
    assert M.task_get_special_port(T(), which, byref(t)) == 0
    return t.value


def pidfds() -> int:
    """How many pidfds this process holds."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
        except OSError:
            pass
    return n


@pytest.fixture
def server() -> Iterator[int]:
    """A port of ours whose send right fork children inherit (registered):
    a child asks on it (ask) and we answer with ports (answer)."""
    port = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
    assert M.mach_port_insert_right(T(), port, port, M.MACH_MSG_TYPE_MAKE_SEND) == 0
    arr = (M.mach_port_t * 1)(port)
    assert M.mach_ports_register(T(), arr, 1) == 0
    try:
        yield port
    finally:
        M.mach_ports_register(T(), arr, 0)
        M.mach_port_destroy(T(), port)


def registered_server() -> int:
    """In a fork child: our send right to the parent's server port."""
    ports, cnt = M.mach_port_array_t(), M.mach_msg_type_number_t()
    assert M.mach_ports_lookup(T(), byref(ports), byref(cnt)) == 0
    server = ports[0]
    M.mach_vm_deallocate(T(), ctypes.cast(ports, ctypes.c_void_p).value, cnt.value * 4)
    assert server
    return server


def ask(items: list[tuple[int, int]] | None = None) -> tuple[list[int], list[int]]:
    """In a fork child: send ``items`` to the parent's server with a
    send-once reply right, and return the names and kinds of its answer."""
    server = registered_server()
    reply = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
    try:
        assert send_ports(server, items or [], reply=reply, reply_disp=M.MACH_MSG_TYPE_MAKE_SEND_ONCE) == 0
        kr, names, kinds, _r = recv_ports(reply, 10000)
        assert kr == 0, f"no answer: {kr:#x}"
        return names, kinds
    finally:
        M.mach_port_mod_refs(T(), reply, M.MACH_PORT_RIGHT_RECEIVE, -1)
        M.mach_port_deallocate(T(), server)


def answer(port: int, items: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Receive a request on ``port`` and answer it with ``items`` in port
    descriptors. Returns the names and kinds the request carried."""
    kr, names, kinds, r = recv_ports(port, 10000)
    assert kr == 0, f"no request: {kr:#x}"
    assert send_ports(r.m.header.msgh_remote_port, items, dest_disp=M.MACH_MSG_TYPE_MOVE_SEND_ONCE) == 0
    return names, kinds


# -- our own task port, in a child ------------------------------------------------------------

def test_a_child_reads_writes_and_allocates_in_us_through_our_task_port(server: int) -> None:
    """The child gets our task port in a message and uses it as it would
    use task_for_pid's: pid_for_task, task_info, mach_vm_read, write and
    allocate, mach_vm_remap_new of our page into itself. No permission is
    asked at receipt: holding the port is the capability."""
    region = pymach.Task.self().allocate(2 * P)
    poke(region.address, b"parent's bytes")
    addr = region.address
    me = os.getpid()

    def child(_sync: Callable[[], None]) -> object:
        (t,), (kind,) = ask()
        assert kind == PORT_SEND and t != T()
        assert pid_of(t) == me and type_of(t) == M.MACH_PORT_TYPE_SEND
        info = M.mach_task_basic_info_data_t()
        cnt = M.mach_msg_type_number_t(M.MACH_TASK_BASIC_INFO_COUNT)
        assert M.task_info(t, M.MACH_TASK_BASIC_INFO, ctypes.cast(byref(info), M.task_info_t), byref(cnt)) == 0
        assert info.virtual_size > 0
        kr, got = read(t, addr, 14)
        assert kr == 0
        assert write(t, addr + P, b"child's bytes!") == 0
        a = M.mach_vm_address_t(0)
        assert M.mach_vm_allocate(t, byref(a), P, M.VM_FLAGS_ANYWHERE) == 0
        assert write(t, a.value, b"in new memory") == 0
        # mach_vm_remap_new takes the task as its src_task: a copy of our page
        r, cur, mx = M.mach_vm_address_t(0), M.vm_prot_t(M.VM_PROT_DEFAULT), M.vm_prot_t(M.VM_PROT_DEFAULT)
        assert M.mach_vm_remap_new(T(), byref(r), P, 0, M.VM_FLAGS_ANYWHERE, t, addr, 1, byref(cur), byref(mx),
                                   M.VM_INHERIT_DEFAULT) == 0
        copied = ctypes.string_at(r.value, 14)
        assert M.mach_port_deallocate(T(), t) == 0
        return got, a.value, copied

    run = forked(child)
    with run:
        answer(server, [(T(), COPY_SEND)])
    got, new, copied = run.result
    assert got == b"parent's bytes" and copied == b"parent's bytes"
    assert peek(addr + P, 14) == b"child's bytes!"
    assert peek(new, 13) == b"in new memory"
    assert M.mach_vm_deallocate(T(), new, P) == 0
    region.deallocate()
    assert refs(T()) >= 1  # COPY_SEND kept our reference


@ROOT_ONLY
def test_the_receiver_still_needs_linux_permission_to_use_the_port(server: int) -> None:
    """A pidfd is no capability on Linux: a child that became nobody
    receives our (root's) task port, and the kernel refuses it our
    memory, as it refuses a task_for_pid port whose access was lost
    (docs/deviations.md); pid_for_task, which reads nothing, answers."""
    region = pymach.Task.self().allocate(P)
    poke(region.address, b"root's")
    me = os.getpid()

    def child(_sync: Callable[[], None]) -> object:
        become_nobody()
        (t,), _kinds = ask()
        return pid_of(t), read(t, region.address, 6)[0], write(t, region.address, b"nobody")

    run = forked(child)
    with run:
        answer(server, [(T(), COPY_SEND)])
    pid, read_kr, write_kr = run.result
    assert (pid, read_kr, write_kr) == (me, M.MACH_SEND_INVALID_DEST, M.KERN_FAILURE)
    assert peek(region.address, 6) == b"root's"
    region.deallocate()


def test_a_task_in_a_message_is_a_task_in_the_child() -> None:
    """The Pythonic layer: pymach.Task in Message.rights, a Task on
    receipt, whose Region reads, writes and allocates in the sender."""
    region = pymach.Task.self().allocate(P)
    region.write(b"pythonic parent")
    me = os.getpid()
    with pymach.Port() as port, port.make_send() as to_port:
        pymach.register_ports(to_port)
        try:
            def child(_sync: Callable[[], None]) -> object:
                (srv,) = [r for r in pymach.registered_ports() if r]
                with pymach.Port() as mine:
                    srv.send(pymach.Message(b"task please"), reply=mine)
                    m = mine.receive(timeout=10)
                (t,) = m.rights
                assert isinstance(t, pymach.Task) and t.pid == me
                data = t.read(region.address, 15)
                t.write(region.address, b"PYTHONIC")
                with t.allocate(P) as remote:
                    remote.write(b"remote region")
                    back = t.read(remote.address, 13)
                m.release()  # the Task's reference goes with the message
                return data, back

            run = forked(child)
            with run:
                m = port.receive(timeout=10)
                assert m.reply is not None
                m.reply.send(pymach.Message(b"here", rights=[pymach.Task.self()]))
                m.release()
        finally:
            pymach.register_ports()
    assert run.result == (b"pythonic parent", b"remote region")
    assert region.read(0, 15) == b"PYTHONIC parent"
    region.deallocate()


def test_our_task_coming_back_is_mach_task_self(server: int) -> None:
    """The child sends our task port back (MOVE_SEND): it arrives under
    mach_task_self()'s name with one more user reference; each flavor's
    port under that port's own name."""
    read_port = special(M.TASK_READ_PORT)
    before = refs(T()), refs(read_port)

    def child(_sync: Callable[[], None]) -> object:
        names, _kinds = ask()
        assert send_ports(registered_server(), [(n, MOVE_SEND) for n in names]) == 0
        return [type_kr(n)[0] for n in names]

    run = forked(child)
    with run:
        answer(server, [(T(), COPY_SEND), (read_port, COPY_SEND)])
        kr, names, kinds, _r = recv_ports(server)
    assert kr == 0 and names == [T(), read_port] and kinds == [PORT_SEND, PORT_SEND]
    assert (refs(T()), refs(read_port)) == (before[0] + 1, before[1] + 1)
    assert M.mach_task_is_self(names[0]) and M.mach_task_is_self(names[1])
    assert run.result == [M.KERN_INVALID_NAME] * 2  # MOVE_SEND took the child's only references
    M.mach_port_deallocate(T(), T())
    M.mach_port_mod_refs(T(), read_port, M.MACH_PORT_RIGHT_SEND, -2)


def test_our_own_task_through_our_own_port_is_the_same_name() -> None:
    """In one process: every flavor of our task, sent to a port of ours,
    comes back under its own name with one more reference; a Task comes
    out as a Task of ours."""
    port = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
    try:
        flavored = [T()] + [special(w) for w in (M.TASK_READ_PORT, M.TASK_INSPECT_PORT, M.TASK_NAME_PORT)]
        before = [refs(n) for n in flavored]
        assert send_ports(port, [(n, COPY_SEND) for n in flavored], dest_disp=M.MACH_MSG_TYPE_MAKE_SEND) == 0
        kr, names, _kinds, _r = recv_ports(port)
        assert kr == 0 and names == flavored
        assert [refs(n) for n in flavored] == [b + 1 for b in before]
        for n in flavored:
            M.mach_port_mod_refs(T(), n, M.MACH_PORT_RIGHT_SEND, -1)
        for n in flavored[1:]:
            M.mach_port_deallocate(T(), n)
    finally:
        M.mach_port_mod_refs(T(), port, M.MACH_PORT_RIGHT_RECEIVE, -1)
    with pymach.Port() as p, p.make_send() as s:
        s.send(pymach.Message(rights=[pymach.Task.self()]))
        m = p.receive(timeout=5)
        (t,) = m.rights
        assert isinstance(t, pymach.Task) and t.port == T() and t.pid == os.getpid()
        m.release()


# -- another process's task, passed along -------------------------------------------------------

def test_a_task_port_for_a_third_process_is_passed_along(server: int) -> None:
    """Our task_for_pid of `sleep`, sent to a child: its pid, its memory
    and its regions, as we see them."""
    p = start_sleep()
    try:
        t = task_for_pid(p.pid)
        a, size = M.mach_vm_address_t(0), M.mach_vm_size_t()
        info, cnt, obj = M.vm_region_basic_info_data_64_t(), M.mach_msg_type_number_t(), M.mach_port_t()
        while True:  # its first readable region
            cnt.value = M.VM_REGION_BASIC_INFO_COUNT_64
            assert M.mach_vm_region(t, byref(a), byref(size), M.VM_REGION_BASIC_INFO_64, byref(info), byref(cnt),
                                    byref(obj)) == 0
            if info.protection & M.VM_PROT_READ:
                break
            a.value += size.value
        kr, mine = read(t, a.value, 64)
        assert kr == 0

        def child(_sync: Callable[[], None]) -> object:
            (got,), _kinds = ask()
            out = (pid_of(got), read(got, a.value, 64))
            M.mach_port_deallocate(T(), got)
            return out

        run = forked(child)
        with run:
            answer(server, [(t, COPY_SEND)])
        assert run.result == (p.pid, (0, mine))
        assert refs(t) == 1
        M.mach_port_deallocate(T(), t)
    finally:
        stop_process(p)


@pytest.mark.parametrize("flavor", ["read", "inspect", "name"])
def test_the_flavor_travels_with_the_port(server: int, flavor: str) -> None:
    """A read port stays a read port: mach_vm_read works, mach_vm_write
    and mach_vm_allocate are KERN_INVALID_ARGUMENT (XNU's conversion of a
    weaker port gives TASK_NULL); an inspect port answers task_info but
    reads nothing; a name port answers pid_for_task only."""
    which = {"read": M.TASK_READ_PORT, "inspect": M.TASK_INSPECT_PORT, "name": M.TASK_NAME_PORT}[flavor]
    port = special(which)
    region = pymach.Task.self().allocate(P)
    poke(region.address, b"flavored")
    me = os.getpid()

    def child(_sync: Callable[[], None]) -> object:
        (t,), _kinds = ask()
        out = {
            "pid": pid_of(t),
            "read": read(t, region.address, 8),
            "write": write(t, region.address, b"WRITTEN!"),
            "allocate": M.mach_vm_allocate(t, byref(M.mach_vm_address_t(0)), P, M.VM_FLAGS_ANYWHERE),
            "self": M.mach_task_is_self(t),
            "row": next(r for r in introspect.ports(SELF.space) if r["name"] == t),
        }
        M.mach_port_deallocate(T(), t)
        return out

    run = forked(child)
    with run:
        answer(server, [(port, COPY_SEND)])
    got = run.result
    bad = M.KERN_INVALID_ARGUMENT
    assert got["pid"] == me and not got["self"]
    assert got["read"] == ((0, b"flavored") if flavor == "read" else (bad, b""))
    assert (got["write"], got["allocate"]) == (bad, bad)
    assert peek(region.address, 8) == b"flavored"
    row = got["row"]
    assert (row["object"], row["pid"], row["flavor"], row["own"]) == ("task", me, flavor, False)
    region.deallocate()
    M.mach_port_deallocate(T(), port)


def test_the_same_task_twice_is_one_name_with_two_references(server: int) -> None:
    """XNU coalesces send rights to one port under one name: the child
    receives our task twice in one message and once more in another (one
    name, three user references), and task_for_pid of us adds a fourth
    under the same name. A read port of us is another port: another name."""
    me = os.getpid()
    read_port = special(M.TASK_READ_PORT)

    def child(_sync: Callable[[], None]) -> object:
        names, _k = ask()
        again, _k = ask()
        assert names[0] == names[1] == again[0]
        assert names[2] != names[0]
        t = names[0]
        counts = [refs(t)]
        assert task_for_pid(me) == t
        counts.append(refs(t))
        M.mach_port_mod_refs(T(), t, M.MACH_PORT_RIGHT_SEND, -4)
        M.mach_port_deallocate(T(), names[2])
        return counts, type_kr(t)[0]

    run = forked(child)
    with run:
        answer(server, [(T(), COPY_SEND), (T(), COPY_SEND), (read_port, COPY_SEND)])
        answer(server, [(T(), COPY_SEND)])
    assert run.result == ([3, 4], M.KERN_INVALID_NAME)
    M.mach_port_deallocate(T(), read_port)


def test_a_foreign_task_received_twice_in_one_process_coalesces() -> None:
    """Within one space: the task of `sleep` sent to a port of ours
    arrives under the name task_for_pid gave, one more reference each
    time; MOVE_SEND then gives one back."""
    p = start_sleep()
    port = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
    try:
        t = task_for_pid(p.pid)
        fds = pidfds()
        assert send_ports(port, [(t, COPY_SEND), (t, COPY_SEND)], dest_disp=M.MACH_MSG_TYPE_MAKE_SEND) == 0
        kr, names, _kinds, _r = recv_ports(port)
        assert kr == 0 and names == [t, t] and refs(t) == 3
        assert pidfds() == fds  # the received pidfds were closed: one per task port
        assert send_ports(port, [(t, MOVE_SEND)], dest_disp=M.MACH_MSG_TYPE_MAKE_SEND) == 0
        assert refs(t) == 2
        kr, names, _kinds, _r = recv_ports(port)
        assert names == [t] and refs(t) == 3
        M.mach_port_mod_refs(T(), t, M.MACH_PORT_RIGHT_SEND, -3)
        assert type_kr(t)[0] == M.KERN_INVALID_NAME
    finally:
        M.mach_port_mod_refs(T(), port, M.MACH_PORT_RIGHT_RECEIVE, -1)
        stop_process(p)


class ArrayMsg(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("header", M.mach_msg_header_t), ("body", M.mach_msg_body_t),
                ("ports", M.mach_msg_ool_ports_descriptor_t)]


class ArrayRcv(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("m", ArrayMsg), ("trailer", M.mach_msg_trailer_t)]


def test_task_thread_and_host_ports_in_a_port_array() -> None:
    """An out-of-line ports array carries kernel objects' ports as a port
    descriptor does: each arrives under its name, one more reference."""
    p = start_sleep()
    port = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
    try:
        t = task_for_pid(p.pid)
        lst, cnt = M.thread_act_array_t(), M.mach_msg_type_number_t()
        assert M.task_threads(t, byref(lst), byref(cnt)) == 0
        thread = lst[0]
        M.mach_vm_deallocate(T(), ctypes.cast(lst, ctypes.c_void_p).value, P)
        sent = [t, thread, T(), M.mach_host_self(), M.MACH_PORT_NULL]
        before = [refs(n) for n in sent[:4]]
        arr = (M.mach_port_t * len(sent))(*sent)
        m = ArrayMsg()
        m.header.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_MAKE_SEND, 0) | M.MACH_MSGH_BITS_COMPLEX
        m.header.msgh_size = ctypes.sizeof(m)
        m.header.msgh_remote_port = port
        m.body.msgh_descriptor_count = 1
        m.ports.address, m.ports.count = ctypes.addressof(arr), len(sent)
        m.ports.deallocate, m.ports.copy = 0, M.MACH_MSG_VIRTUAL_COPY
        m.ports.disposition, m.ports.type = COPY_SEND, M.MACH_MSG_OOL_PORTS_DESCRIPTOR
        assert M.mach_msg(m.header, M.MACH_SEND_MSG, m.header.msgh_size, 0, 0, 0, 0) == 0
        r = ArrayRcv()
        assert M.mach_msg(r.m.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), port, 5000, 0) == 0
        got = list((M.mach_port_t * len(sent)).from_address(r.m.ports.address))
        assert got == sent and r.m.ports.disposition == PORT_SEND
        assert [refs(n) for n in sent[:4]] == [b + 1 for b in before]
        M.mach_msg_destroy(r.m.header)  # the references and the array
        assert [refs(n) for n in sent[:4]] == before
        M.mach_port_deallocate(T(), thread)
        M.mach_port_deallocate(T(), t)
    finally:
        M.mach_port_mod_refs(T(), port, M.MACH_PORT_RIGHT_RECEIVE, -1)
        stop_process(p)


# -- dispositions ---------------------------------------------------------------------------------

def test_move_send_consumes_copy_send_keeps_and_make_send_is_refused(server: int) -> None:
    """MOVE_SEND of our last reference to a task takes the name and its
    pidfd away once the message is sent; COPY_SEND keeps it;
    MAKE_SEND, MAKE_SEND_ONCE and MOVE_SEND_ONCE on a kernel object's name
    are MACH_SEND_INVALID_RIGHT, and nothing is consumed."""
    p = start_sleep()
    try:
        port = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
        try:
            t = task_for_pid(p.pid)
            for disp in (M.MACH_MSG_TYPE_MAKE_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE, M.MACH_MSG_TYPE_MOVE_SEND_ONCE):
                for name in (t, T(), M.mach_host_self()):
                    kr = send_ports(port, [(name, disp)], dest_disp=M.MACH_MSG_TYPE_MAKE_SEND)
                    assert kr == M.MACH_SEND_INVALID_RIGHT, (disp, hex(name), hex(kr))
            assert refs(t) == 1
        finally:
            M.mach_port_mod_refs(T(), port, M.MACH_PORT_RIGHT_RECEIVE, -1)

        def child(_sync: Callable[[], None]) -> object:
            names, _kinds = ask()
            out = [pid_of(n) for n in names]
            for n in set(names):
                M.mach_port_mod_refs(T(), n, M.MACH_PORT_RIGHT_SEND, -names.count(n))
            return out

        before = pidfds()
        run = forked(child)
        with run:
            answer(server, [(t, COPY_SEND), (t, MOVE_SEND)])
        assert run.result == [p.pid, p.pid]
        assert type_kr(t)[0] == M.KERN_INVALID_NAME
        assert pidfds() == before - 1  # its pidfd went with the name
    finally:
        stop_process(p)


def test_a_send_that_times_out_consumes_nothing_and_closes_its_pidfds() -> None:
    """A full queue: the send of task ports times out, MOVE_SEND takes
    nothing, and the pidfds made for the message are closed."""
    p = start_sleep()
    port = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
    try:
        assert M.mach_port_insert_right(T(), port, port, M.MACH_MSG_TYPE_MAKE_SEND) == 0
        lim = M.mach_port_limits_t(1)
        assert M.mach_port_set_attributes(T(), port, M.MACH_PORT_LIMITS_INFO, byref(lim), 1) == 0
        assert send_ports(port, []) == 0  # the queue is full
        t = task_for_pid(p.pid)
        before, task_refs = pidfds(), refs(T())
        m = PortsMsg()
        m.header.msgh_bits = M.MACH_MSGH_BITS(COPY_SEND, 0) | M.MACH_MSGH_BITS_COMPLEX
        m.header.msgh_size = ctypes.sizeof(m.header) + 4 + 24
        m.header.msgh_remote_port = port
        m.body.msgh_descriptor_count = 2
        for d, name in zip(m.ports, (t, T())):
            d.name, d.disposition, d.type = name, MOVE_SEND, M.MACH_MSG_PORT_DESCRIPTOR
        kr = M.mach_msg(m.header, M.MACH_SEND_MSG | M.MACH_SEND_TIMEOUT, m.header.msgh_size, 0, 0, 0, 0)
        assert kr == M.MACH_SEND_TIMED_OUT
        assert (refs(t), refs(T()), pidfds()) == (1, task_refs, before)
        M.mach_port_deallocate(T(), t)
    finally:
        M.mach_port_destroy(T(), port)
        stop_process(p)


# -- threads and the host --------------------------------------------------------------------------

def test_thread_ports_travel_and_answer_thread_get_state(server: int) -> None:
    """task_threads of `sleep` gives thread ports; sent to a child, they
    answer thread_get_state there with the registers we read here."""
    p = start_sleep()
    try:
        t = task_for_pid(p.pid)
        lst, cnt = M.thread_act_array_t(), M.mach_msg_type_number_t()
        assert M.task_threads(t, byref(lst), byref(cnt)) == 0
        (thread,) = [lst[i] for i in range(cnt.value)]
        M.mach_vm_deallocate(T(), ctypes.cast(lst, ctypes.c_void_p).value, P)

        def state(th: int) -> tuple[int, int, int]:
            st = M.x86_thread_state64_t()
            n = M.mach_msg_type_number_t(M.x86_THREAD_STATE64_COUNT)
            kr = M.thread_get_state(th, M.x86_THREAD_STATE64, byref(st), byref(n))
            return kr, st.__rip, st.__rsp

        here = state(thread)
        assert here[0] == 0 and here[1] != 0

        def child(_sync: Callable[[], None]) -> object:
            (th, th2), _kinds = ask()
            assert th == th2 and refs(th) == 2
            row = next(r for r in introspect.ports(SELF.space) if r["name"] == th)
            out = state(th), pid_of(th), (row["object"], row["pid"], row["tid"])
            M.mach_port_mod_refs(T(), th, M.MACH_PORT_RIGHT_SEND, -2)
            return out

        run = forked(child)
        with run:
            answer(server, [(thread, COPY_SEND), (thread, COPY_SEND)])
        got, pid, row = run.result
        assert got == here  # `sleep` sits in nanosleep: the same registers
        assert pid == -M.KERN_FAILURE  # a thread port is no task port
        assert row == ("thread", p.pid, p.pid)
        M.mach_port_deallocate(T(), thread)
        M.mach_port_deallocate(T(), t)
    finally:
        stop_process(p)


def test_the_host_port_arrives_as_the_receivers_host(server: int) -> None:
    """The host port travels as itself: the child gets its own
    mach_host_self() name with one more reference, and the routines that
    take a host take it."""
    def child(_sync: Callable[[], None]) -> object:
        (h,), _kinds = ask()
        out = h == M.mach_host_self(), refs(h)
        entry = M.mach_port_t()
        kr = M.mach_memory_object_memory_entry_64(h, 1, P, M.VM_PROT_DEFAULT, 0, byref(entry))
        M.mach_port_deallocate(T(), entry.value)
        M.mach_port_deallocate(T(), h)
        return out + (kr,)

    run = forked(child)
    with run:
        answer(server, [(M.mach_host_self(), COPY_SEND)])
    assert run.result == (True, 2, 0)


# -- destroyed, dead ---------------------------------------------------------------------------------

def test_a_message_with_task_ports_destroyed_unreceived_leaks_nothing() -> None:
    """Task, thread and host ports queued on a port that is destroyed, or
    received and destroyed with mach_msg_destroy, or moved away in a
    message to a receive right that is then destroyed: every pidfd they
    carried is closed (the fd-count fixture checks the whole test)."""
    p = start_sleep()
    try:
        t = task_for_pid(p.pid)
        lst, cnt = M.thread_act_array_t(), M.mach_msg_type_number_t()
        assert M.task_threads(t, byref(lst), byref(cnt)) == 0
        thread = lst[0]
        M.mach_vm_deallocate(T(), ctypes.cast(lst, ctypes.c_void_p).value, P)
        items = [(t, COPY_SEND), (thread, COPY_SEND), (T(), COPY_SEND), (M.mach_host_self(), COPY_SEND)]
        before = pidfds()
        # queued, then the port destroyed
        port = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
        for _ in range(3):
            assert send_ports(port, items, dest_disp=M.MACH_MSG_TYPE_MAKE_SEND) == 0
        assert pidfds() == before  # the sender's duplicates closed after each send
        M.mach_port_mod_refs(T(), port, M.MACH_PORT_RIGHT_RECEIVE, -1)
        assert pidfds() == before
        # received, then mach_msg_destroy
        port = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
        task_refs = refs(T())
        assert send_ports(port, items, dest_disp=M.MACH_MSG_TYPE_MAKE_SEND) == 0
        kr, names, _kinds, r = recv_ports(port)
        assert kr == 0 and names == [t, thread, T(), M.mach_host_self()]
        assert refs(t) == 2 and refs(thread) == 2 and refs(T()) == task_refs + 1
        M.mach_msg_destroy(r.m.header)
        assert refs(t) == 1 and refs(thread) == 1 and refs(T()) == task_refs
        # queued on a port whose receive right travels, then destroyed there
        inner = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
        assert send_ports(inner, items, dest_disp=M.MACH_MSG_TYPE_MAKE_SEND) == 0
        assert send_ports(port, [(inner, M.MACH_MSG_TYPE_MOVE_RECEIVE)], dest_disp=M.MACH_MSG_TYPE_MAKE_SEND) == 0
        kr, (moved,), _kinds, _r = recv_ports(port)
        assert kr == 0
        M.mach_port_mod_refs(T(), moved, M.MACH_PORT_RIGHT_RECEIVE, -1)
        M.mach_port_mod_refs(T(), port, M.MACH_PORT_RIGHT_RECEIVE, -1)
        assert pidfds() == before
        M.mach_port_deallocate(T(), thread)
        M.mach_port_deallocate(T(), t)
        assert pidfds() == before - 2
    finally:
        stop_process(p)


def test_a_message_to_a_child_that_dies_unreceived_leaks_nothing(server: int) -> None:
    """Our task port sent to a child that dies before it receives: the
    kernel drops the message with the child; nothing of ours stays open."""
    before = pidfds()

    def child(sync: Callable[[], None]) -> object:
        mine = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
        assert send_ports(registered_server(), [(mine, M.MACH_MSG_TYPE_MAKE_SEND)]) == 0
        sync()  # the parent has sent to it; exit without receiving
        return None

    with forked(child) as sync:
        kr, (to_child,), _kinds, _r = recv_ports(server)
        assert kr == 0
        assert send_ports(to_child, [(T(), COPY_SEND), (M.mach_host_self(), COPY_SEND)]) == 0
        sync()
    M.mach_port_deallocate(T(), to_child)
    assert pidfds() == before


def test_the_task_port_of_a_process_that_exited_arrives_dead(server: int) -> None:
    """pymach destroys a task port when its process exits (XNU, when the
    task is freed after it is reaped; before that, its disabled port's
    routines fail). So: a task port whose process has exited travels as a
    dead name, MACH_PORT_DEAD in the descriptor, and the sender's name is
    a dead name; one whose process exits while the message is queued
    arrives as MACH_PORT_DEAD too (ipc_kmsg_copyout_object of a dead
    port), and the pidfd it carried is closed."""
    p = start_sleep()
    q = start_sleep()
    port = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
    try:
        t, u = task_for_pid(p.pid), task_for_pid(q.pid)
        stop_process(p)
        assert send_ports(port, [(t, COPY_SEND)], dest_disp=M.MACH_MSG_TYPE_MAKE_SEND) == 0
        assert type_of(t) == M.MACH_PORT_TYPE_DEAD_NAME
        kr, names, kinds, _r = recv_ports(port)
        assert kr == 0 and names == [DEAD] and kinds == [PORT_SEND]
        # died in flight
        before = pidfds()
        assert send_ports(port, [(u, COPY_SEND), (u, COPY_SEND)], dest_disp=M.MACH_MSG_TYPE_MAKE_SEND) == 0
        stop_process(q)
        kr, names, _kinds, _r = recv_ports(port)
        assert kr == 0 and names == [DEAD, DEAD]
        assert pidfds() == before
        assert type_of(u) == M.MACH_PORT_TYPE_DEAD_NAME

        def child(_sync: Callable[[], None]) -> object:
            return ask()[0]

        assert M.mach_port_mod_refs(T(), t, M.MACH_PORT_RIGHT_DEAD_NAME, 1) == 0
        run = forked(child)
        with run:
            answer(server, [(t, COPY_SEND), (t, MOVE_SEND)])
        assert run.result == [DEAD, DEAD]
        assert refs(t, M.MACH_PORT_RIGHT_DEAD_NAME) == 1  # MOVE_SEND took one reference of the dead name
        M.mach_port_deallocate(T(), t)
        M.mach_port_deallocate(T(), u)
    finally:
        M.mach_port_mod_refs(T(), port, M.MACH_PORT_RIGHT_RECEIVE, -1)
        stop_process(p)
        stop_process(q)


# -- records are untrusted --------------------------------------------------------------------------

def _record(kind: int, nfds: int, size: int, aux: int, reply_kind: int = KM.KIND_NONE) -> bytes:
    body = struct.pack("<I", 1) + KM.PORT_DESC.pack(1, 0, 0, 0, PORT_SEND, M.MACH_MSG_PORT_DESCRIPTOR)
    rights = KM.RIGHT.pack(reply_kind, 0, 0, 0) + KM.RIGHT.pack(kind, nfds, size, aux)
    bits = M.MACH_MSGH_BITS_SET(0, PORT_SEND, 0, M.MACH_MSGH_BITS_COMPLEX)
    return KM.WIRE.pack(KM.MAGIC, bits, 7, len(body), 2, nfds, 0, 0) + rights + body


@pytest.mark.parametrize("case", ["eventfd", "no_fd", "flavor", "task_size", "thread_tid", "not_a_thread",
                                  "thread_pidfd", "good_task", "good_thread"])
def test_forged_task_ports_are_refused(case: str) -> None:
    """A task or thread port in a record must be a pidfd of a process,
    with a flavor, and a thread's tid a thread of that process:
    MACH_RCV_BODY_ERROR otherwise (every fd closed); a tid that is no
    thread of the process is a dead port."""
    p = start_sleep()
    fd = -1
    try:
        fd = os.eventfd(0) if case == "eventfd" else os.pidfd_open(p.pid)
        if case == "thread_pidfd":
            os.close(fd)
            fd = os.pidfd_open(p.pid, os.O_EXCL)  # PIDFD_THREAD
        kind = KM.KIND_THREAD if "thread" in case else KM.KIND_TASK
        size = {"task_size": 5, "thread_tid": 0, "not_a_thread": os.getpid()}.get(
            case, p.pid if kind == KM.KIND_THREAD else 0)
        rec = _record(kind, 0 if case == "no_fd" else 1, size, 9 if case == "flavor" else 1)
        with pymach.Port() as port, port.make_send() as send:
            ie = SELF.space.lookup(send.name)
            assert ie is not None
            fds = [] if case == "no_fd" else [fd]
            ie.cap.sock.sendmsg([rec], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
                               if fds else [])
            os.close(fd)
            fd = -1
            if case.startswith("good"):
                m = port.receive(timeout=2)
                (r,) = m.rights
                e = SELF.space.lookup(r.port if isinstance(r, pymach.Task) else r.name)
                assert e is not None and e.object.pid == p.pid and e.object.flavor == 1
                assert isinstance(r, pymach.Task) == (case == "good_task")
                m.release()
            elif case == "not_a_thread":
                kr, names, _k, _r = recv_ports(port.name, 2000)
                assert kr == 0 and names == [DEAD]
            else:
                with pytest.raises(pymach.MachError) as e:
                    port.receive(timeout=2)
                assert e.value.kr == M.MACH_RCV_BODY_ERROR
            send.send(b"next")
            assert port.receive(timeout=2).data == b"next"
    finally:
        if fd >= 0:
            os.close(fd)
        stop_process(p)


def test_a_task_port_as_a_forged_reply_right_is_refused() -> None:
    p = start_sleep()
    try:
        fd = os.pidfd_open(p.pid)
        body = struct.pack("<I", 0)
        rec = KM.WIRE.pack(KM.MAGIC, M.MACH_MSGH_BITS_SET(0, PORT_SEND, 0, M.MACH_MSGH_BITS_COMPLEX), 7,
                           len(body), 1, 1, 0, 0) + KM.RIGHT.pack(KM.KIND_TASK, 1, 0, 0) + body
        with pymach.Port() as port, port.make_send() as send:
            ie = SELF.space.lookup(send.name)
            assert ie is not None
            try:
                ie.cap.sock.sendmsg([rec], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
            finally:
                os.close(fd)
            with pytest.raises(pymach.MachError) as e:
                port.receive(timeout=2)
            assert e.value.kr == M.MACH_RCV_BODY_ERROR
    finally:
        stop_process(p)


# -- lsmp ----------------------------------------------------------------------------------------------

def test_lsmp_shows_received_task_and_thread_ports(server: int) -> None:
    """`pymach lsmp` of a child that received our read port, a thread
    port of `sleep` and the host port: each row says what it is."""
    import subprocess
    import sys

    p = start_sleep()
    read_port = special(M.TASK_READ_PORT)
    try:
        t = task_for_pid(p.pid)
        lst, cnt = M.thread_act_array_t(), M.mach_msg_type_number_t()
        assert M.task_threads(t, byref(lst), byref(cnt)) == 0
        thread = lst[0]
        M.mach_vm_deallocate(T(), ctypes.cast(lst, ctypes.c_void_p).value, P)

        def child(sync: Callable[[], None]) -> object:
            names, _kinds = ask()
            sync()  # the parent looks
            sync()
            return names

        run = forked(child)
        with run as sync:
            answer(server, [(read_port, COPY_SEND), (thread, COPY_SEND), (M.mach_host_self(), COPY_SEND)])
            sync()
            out = subprocess.run([sys.executable, "-m", "pymach", "lsmp", str(run.pid)], capture_output=True,
                                 text=True, timeout=60)
            sync()
        assert out.returncode == 0, out.stderr
        rows = {int(line.split()[0], 16): line for line in out.stdout.splitlines()[2:]}
        task_row, thread_row, host_row = (rows[n] for n in run.result)
        assert task_row.split()[1:3] == ["send", "1"] and task_row.endswith(f"task (pid {os.getpid()}, read)")
        assert thread_row.endswith(f"thread (pid {p.pid}, tid {p.pid})")
        assert host_row.endswith("host")
        M.mach_port_deallocate(T(), thread)
        M.mach_port_deallocate(T(), t)
    finally:
        M.mach_port_deallocate(T(), read_port)
        stop_process(p)
