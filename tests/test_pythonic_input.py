"""Wrong input at the Pythonic layer, and what its objects say they are.

The Pythonic layer is where Python values become Mach's C types. A value
of the wrong type is a TypeError that names the call, the parameter and
the type expected; a number outside the C type it becomes is a ValueError
that names the type and its range; a number inside goes on to the kernel,
which answers with XNU's kern_return_t. The same fault gets the same
class whatever the value, and no refused call leaves a name, an fd, a
mapping or a message behind.

XNU references for the codes asserted here (xnu-11417.101.15):
osfmk/vm/vm_sanitize.c:368-377 (vm_sanitize_size: a size whose rounding
wraps is KERN_INVALID_ARGUMENT), osfmk/vm/vm_map.c:3964 and 4114
(vm_map_enter_mem_object: size 0, and offset + size past the named entry,
are KERN_INVALID_ARGUMENT), osfmk/mach/message.h:100 (mach_msg_timeout_t is
a natural_t of milliseconds), osfmk/ipc/mach_msg.c:266 (MACH_RCV_INVALID_NAME
for a name that denotes no receive right).
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from ctypes import byref

import pytest

import pymach
import pymach.bootstrap as bootstrap
import pymach.mach as M
from pymach import (VM_PROT_READ, InvalidArgumentError, InvalidNameError, MachError, MemoryEntry, Message, Port,
                    PortSet, SendOnceRight, SendRight, Task, vm_page_size)
from pymach._kern import ipc_right as R
from pymach._kern.task import SELF

from machutil import Server, server, sockdir, start_watcher, wait_blocked
from procutil import forked, open_fds, perms_at

__all__ = ["server", "sockdir"]  # fixtures, used by name

P = vm_page_size
C_TIMEOUT_MAX = 0xFFFFFFFF / 1000  # mach_msg_timeout_t's largest, in seconds
HEX = r"0x[0-9a-f]+"


def names() -> set[int]:
    return set(R.names(SELF.space)[0])


def pymach_mappings() -> list[tuple[int, int]]:
    return [(e.start, e.end) for e in SELF.map.entries()]


def assert_refused(exc: type[BaseException], fn: Callable[[], object], *words: str) -> BaseException:
    """``fn()`` raises exactly ``exc`` (not a subclass: a ValueError must not
    be a MachError), and its message holds every word."""
    with pytest.raises(BaseException) as ei:
        fn()
    assert type(ei.value) is exc, f"{type(ei.value).__name__}: {ei.value}"
    for w in words:
        assert w in str(ei.value), f"{w!r} not in {str(ei.value)!r}"
    return ei.value


def assert_empty(port: Port) -> None:
    """Nothing was queued on ``port``: a receive that waits for a message
    already queued (timeout 0) times out."""
    with pytest.raises(pymach.MachTimeoutError):
        port.receive(timeout=0)


@pytest.fixture(scope="module", autouse=True)
def watcher_started() -> None:
    start_watcher()  # the runtime's process-wide fds, made before the fd baselines


@pytest.fixture
def port() -> Iterator[tuple[Port, SendRight]]:
    with Port() as p, p.make_send() as s:
        yield p, s


# -- one test per bad input -----------------------------------------------------------------------------

def test_for_pid_of_a_str_is_a_type_error() -> None:
    assert_refused(TypeError, lambda: Task.for_pid("123"), "Task.for_pid()", "'pid'", "int", "str")


def test_for_pid_outside_pid_t_is_a_value_error() -> None:
    for pid in (2**70, 2**31, -(2**31) - 1):
        assert_refused(ValueError, lambda: Task.for_pid(pid), "Task.for_pid()", "'pid'", "pid_t",
                       "-2147483648 to 2147483647")
    # inside pid_t, a process that does not exist is what task_for_pid says
    e = assert_refused(pymach.KernFailureError, lambda: Task.for_pid(-5), "Task.for_pid()", "no process -5")
    assert isinstance(e, MachError) and e.kr == M.KERN_FAILURE


def test_allocate_of_a_str_is_a_type_error() -> None:
    assert_refused(TypeError, lambda: Task.self().allocate("4096"), "Task.allocate()", "'size'", "int", "str")
    for kw in ({"address": "0x1000"}, {"tag": "1"}, {"flags": 1.0}):
        (param,) = kw
        assert_refused(TypeError, lambda: Task.self().allocate(P, **kw), "Task.allocate()", f"'{param}'")


def test_region_protect_of_a_str_is_a_type_error_and_changes_nothing() -> None:
    with Task.self().allocate(P) as r:
        assert_refused(TypeError, lambda: r.protect("r"), "Region.protect()", "'protection'", "int", "str")
        assert perms_at(r.address) == "rw-p"
        assert_refused(ValueError, lambda: r.protect(1 << 40), "Region.protect()", "vm_prot_t")
        r.protect(VM_PROT_READ)
        assert perms_at(r.address) == "r--p"


def test_port_of_a_str_is_a_type_error() -> None:
    assert_refused(TypeError, lambda: Port("abc"), "Port()", "'name'", "int", "str")
    assert_refused(ValueError, lambda: Port(2**32), "Port()", "mach_port_name_t")


def test_port_of_a_name_without_a_receive_right_is_refused(port: tuple[Port, SendRight]) -> None:
    p, _s = port
    assert Port(p.name).name == p.name  # the receive right we hold under that name
    so = p.make_send_once()
    try:
        e = assert_refused(InvalidNameError, lambda: Port(so.name), "Port()", "no receive right")
        assert e.kr == M.KERN_INVALID_RIGHT
    finally:
        so.close()
    e = assert_refused(InvalidNameError, lambda: Port(0x7FFFFF03), "Port()")
    assert e.kr == M.KERN_INVALID_NAME


def test_receive_with_a_str_timeout_is_a_type_error(port: tuple[Port, SendRight]) -> None:
    p, s = port
    assert_refused(TypeError, lambda: p.receive(timeout="1"), "Port.receive()", "'timeout'", "str")
    assert_refused(TypeError, lambda: p.receive(max_size="1"), "Port.receive()", "'max_size'")
    s.send(b"still there")
    assert_refused(TypeError, lambda: p.receive(timeout=b"1"), "Port.receive()")
    assert p.receive(timeout=1).data == b"still there"  # the refused receive took nothing


def test_receive_with_a_timeout_outside_mach_msg_timeout_t_is_a_value_error(port: tuple[Port, SendRight]) -> None:
    p, s = port
    for t in (1e30, math.inf, -1, -0.001, math.nan, 2**32 / 1000):
        assert_refused(ValueError, lambda: p.receive(timeout=t), "Port.receive()", "'timeout'", "mach_msg_timeout_t",
                       "4294967.295")
        assert_refused(ValueError, lambda: s.send(b"x", timeout=t), "SendRight.send()", "'timeout'")
    assert_empty(p)
    # the largest timeout Mach can count is accepted (a message is queued:
    # nothing is waited for)
    s.send(b"now", timeout=4294967.295)
    assert p.receive(timeout=4294967.295).data == b"now"


def test_the_longest_timeouts_wait_and_wake(port: tuple[Port, SendRight]) -> None:
    """Timeouts up to 2**32 - 1 ms are what Mach counts: a receive that
    waits that long on a port, or on a port set, sleeps (in parts: a Linux
    wait counts an int of ms) and wakes when a message comes."""
    p, s = port
    with PortSet() as ps, Port() as q, q.make_send() as to_q:
        ps.add(q)
        for receiver, sender in ((p, s), (ps, to_q)):
            got: list[object] = []
            th = threading.Thread(target=lambda: got.append(receiver.receive(timeout=C_TIMEOUT_MAX).data))
            th.start()
            try:
                wait_blocked(th)
                sender.send(b"woken", timeout=C_TIMEOUT_MAX)
            finally:
                th.join(10)
            assert not th.is_alive() and got == [b"woken"]


def test_send_with_an_id_outside_int32_is_a_value_error(port: tuple[Port, SendRight]) -> None:
    p, s = port
    for bad in (2**40, 2**31, -(2**31) - 1):
        assert_refused(ValueError, lambda: s.send(b"hi", id=bad), "SendRight.send()", "'id'", "mach_msg_id_t")
        assert_refused(ValueError, lambda: Message(b"hi", id=bad), "Message()", "'id'")
    assert_empty(p)
    s.send(b"hi", id=-(2**31))
    assert p.receive(timeout=1).id == -(2**31)


def test_send_with_an_int_reply_is_a_type_error(port: tuple[Port, SendRight]) -> None:
    p, s = port
    assert_refused(TypeError, lambda: s.send(b"hi", reply=123), "SendRight.send()", "'reply'", "Port", "int")
    so = p.make_send_once()
    assert_refused(TypeError, lambda: s.send(b"hi", reply=so), "'reply'", "SendOnceRight")
    assert_empty(p)
    so.send(b"unused")  # the refused send did not take it
    assert p.receive(timeout=1).data == b"unused"


def test_bootstrap_register_of_a_str_right_is_a_type_error(server: Server) -> None:
    assert_refused(TypeError, lambda: bootstrap.register("a.c", "str"), "bootstrap.register()", "'right'",
                   "SendRight", "str")
    for fn in (bootstrap.look_up, bootstrap.check_in, bootstrap.status, bootstrap.create_service):
        assert_refused(TypeError, lambda: fn(123), f"bootstrap.{fn.__name__}()", "'name'", "str or bytes")
    # nothing reached the server: the name is still unknown there
    with pytest.raises(bootstrap.BootstrapError) as ei:
        bootstrap.status("a.c")
    assert ei.value.kr == bootstrap.BOOTSTRAP_UNKNOWN_SERVICE
    with Port() as p, p.make_send() as s:
        bootstrap.register("a.c", s)
        assert bootstrap.status("a.c") == bootstrap.BOOTSTRAP_STATUS_ACTIVE


def test_message_with_str_data_is_a_type_error(port: tuple[Port, SendRight]) -> None:
    p, s = port
    assert_refused(TypeError, lambda: s.send(Message("str")), "Message()", "'data'", "bytes-like", "str")
    m = Message(b"ok")
    m.data = "str"
    assert_refused(TypeError, lambda: s.send(m), "SendRight.send()", "'msg.data'", "bytes-like", "str")
    m.data, m.id = b"ok", 2**40
    assert_refused(ValueError, lambda: s.send(m), "SendRight.send()", "'msg.id'")
    assert_refused(TypeError, lambda: Message(b"x", rights=[p]), "Message()", "'rights[0]'", "make_send")
    assert_refused(TypeError, lambda: Message(b"x", rights=s), "Message()", "'rights'")
    assert_refused(TypeError, lambda: Message(b"x", ool=[5]), "Message()", "'ool[0]'", "bytes-like", "int")
    assert_refused(TypeError, lambda: s.send(Message(b"x"), id=5), "SendRight.send()", "'id'")
    assert_empty(p)
    # bytes-like data of any kind is taken as its bytes
    s.send(Message(bytearray(b"ab") + memoryview(b"cd").tobytes(), id=3))
    s.send(memoryview(b"efgh")[1:3])
    assert p.receive(timeout=1).data == b"abcd"
    assert p.receive(timeout=1).data == b"fg"


def test_send_of_an_int_is_refused_not_nul_bytes(port: tuple[Port, SendRight]) -> None:
    p, s = port
    assert_refused(TypeError, lambda: s.send(123), "SendRight.send()", "'msg'", "bytes-like", "int")
    assert_refused(TypeError, lambda: s.send("text"), "SendRight.send()", "'msg'", "str")
    with p.make_send_once() as so:
        assert_refused(TypeError, lambda: so.send(123), "SendOnceRight.send()", "'msg'")
        so.send(b"once")  # the refused send did not use the right up
    assert p.receive(timeout=1).data == b"once"
    assert_empty(p)


def test_bool_is_not_a_number(port: tuple[Port, SendRight]) -> None:
    p, s = port
    assert_refused(TypeError, lambda: Task.for_pid(True), "'pid'", "bool")
    assert_refused(TypeError, lambda: Task.self().allocate(True), "'size'", "bool")
    assert_refused(TypeError, lambda: Port(True), "'name'", "bool")
    assert_refused(TypeError, lambda: s.send(b"", id=True), "'id'", "bool")
    assert_refused(TypeError, lambda: p.receive(timeout=True), "'timeout'", "bool")
    assert_refused(TypeError, lambda: MemoryEntry.create(True), "'size'", "bool")
    assert_empty(p)


# -- one fault, one class -------------------------------------------------------------------------------

def test_negative_sizes_are_one_value_error_and_the_c_layer_keeps_xnus_codes() -> None:
    for size in (-1, -4096, -(2**63), 2**64):
        e = assert_refused(ValueError, lambda: Task.self().allocate(size), "Task.allocate()", "'size'",
                           "mach_vm_size_t")
        assert not isinstance(e, MachError)
    assert_refused(ValueError, lambda: MemoryEntry.create(-4096), "MemoryEntry.create()", "'size'")
    # the same bits as a mach_vm_size_t: what XNU's mach_vm_allocate gives
    a = M.mach_vm_address_t()
    assert M.mach_vm_allocate(M.mach_task_self(), byref(a), (1 << 64) - 1, M.VM_FLAGS_ANYWHERE) == \
        M.KERN_INVALID_ARGUMENT
    assert M.mach_vm_allocate(M.mach_task_self(), byref(a), (1 << 64) - 4096, M.VM_FLAGS_ANYWHERE) == \
        M.KERN_NO_SPACE


def test_map_past_a_memory_entry_is_invalid_argument_naming_the_call() -> None:
    with MemoryEntry.create(P) as ent:
        for kw in ({"offset": 2 * P}, {"offset": P}, {"offset": 2 * P, "size": P}, {"offset": 0, "size": 2 * P}):
            e = assert_refused(InvalidArgumentError, lambda: ent.map(**kw), "MemoryEntry.map()")
            assert e.kr == M.KERN_INVALID_ARGUMENT
            assert "mmap" not in str(e)
        assert_refused(ValueError, lambda: ent.map(offset=-1), "MemoryEntry.map()", "'offset'")
        with ent.map(offset=0) as whole:
            assert whole.size == P


def test_a_closed_port_gives_invalid_name_for_every_call() -> None:
    p = Port()
    p.close()
    got = {}
    for verb, fn in (("receive", lambda: p.receive(timeout=0)), ("make_send", p.make_send),
                     ("make_send_once", p.make_send_once), ("fileno", p.fileno)):
        got[verb] = assert_refused(InvalidNameError, fn, f"Port.{verb}()", f"{p.name:#x}", "closed")
    assert got["receive"].kr == M.MACH_RCV_INVALID_NAME  # as mach_msg gives for the name
    assert got["make_send"].kr == M.KERN_INVALID_NAME
    with Port() as q:
        s = q.make_send()
        s.close()
        e = assert_refused(InvalidNameError, lambda: s.send(b"x"), "SendRight.send()", "closed")
        assert e.kr == M.MACH_SEND_INVALID_DEST


def test_a_port_destroyed_behind_the_objects_back_is_invalid_name_too() -> None:
    p = Port()
    assert M.mach_port_destroy(M.mach_task_self(), p.name) == M.KERN_SUCCESS
    e = assert_refused(InvalidNameError, lambda: p.receive(timeout=0), "Port.receive()")
    assert e.kr == M.MACH_RCV_INVALID_NAME
    e = assert_refused(InvalidNameError, p.make_send, "Port.make_send()")
    assert e.kr == M.KERN_INVALID_NAME
    p.close()


def test_too_large_is_exported_and_leaves_the_message_queued(port: tuple[Port, SendRight]) -> None:
    p, s = port
    assert "TooLarge" in pymach.__all__ and pymach.TooLarge.__module__ == "pymach"
    assert issubclass(pymach.TooLarge, MachError)
    s.send(b"x" * 1000)
    with pytest.raises(pymach.TooLarge) as ei:
        p.receive(timeout=1, max_size=64)
    assert ei.value.kr == M.MACH_RCV_TOO_LARGE and ei.value.needed >= 1000
    assert "Port.receive()" in str(ei.value)
    assert p.receive(timeout=1).data == b"x" * 1000


def test_dead_is_true_once_this_process_closed_the_port() -> None:
    p = Port()
    s = p.make_send()
    copy = s.copy()
    assert s.dead is False
    p.close()
    assert s.dead is True and copy.dead is True
    assert re.fullmatch(rf"<SendRight {HEX} dead>", repr(s))
    s.close()
    copy.close()
    e = assert_refused(InvalidNameError, lambda: s.dead, "SendRight.dead", "closed")
    assert e.kr == M.KERN_INVALID_NAME


def test_dead_is_true_here_and_in_a_fork_child_once_the_parent_closed_the_port() -> None:
    p = Port()
    s = p.make_send()
    pymach.register_ports(s)

    def child(sync: Callable[[], None]) -> bool:
        (r,) = [x for x in pymach.registered_ports() if x]
        assert r.dead is False
        sync()  # the parent closes its Port now
        sync()
        deadline = time.monotonic() + 10
        while not r.dead:
            assert time.monotonic() < deadline, "the child's right did not become dead"
            time.sleep(0.005)
        r.close()
        return True

    try:
        with forked(child) as sync:
            sync()
            pymach.register_ports()
            p.close()
            assert s.dead is True
            sync()
    finally:
        pymach.register_ports()
        s.close()
        p.close()


def test_a_send_once_right_travels_in_a_message(port: tuple[Port, SendRight]) -> None:
    p, s = port
    with Port() as b:
        so = b.make_send_once()
        s.send(Message(b"take it", rights=[so]))
        assert "closed" in repr(so)  # moved into the message
        m = p.receive(timeout=1)
        (got,) = m.rights
        assert isinstance(got, SendOnceRight)
        got.send(b"through it")
        assert b.receive(timeout=1).data == b"through it"


# -- nothing is left behind -----------------------------------------------------------------------------

def test_no_refused_input_leaves_a_name_an_fd_a_mapping_or_a_message() -> None:
    with Port() as p, p.make_send() as s, Task.self().allocate(P) as r, MemoryEntry.create(P) as ent:
        bad: list[Callable[[], object]] = [
            lambda: Task.for_pid("123"), lambda: Task.for_pid(2**70), lambda: Task.for_pid(True),
            lambda: Task.self().allocate("4096"), lambda: Task.self().allocate(-1),
            lambda: Task.self().allocate(-4096), lambda: Task.self().allocate(True),
            lambda: Task.self().allocate(P, tag=256), lambda: r.protect("r"), lambda: r.read("0"),
            lambda: r.write("text"), lambda: Port("abc"), lambda: Port(True),
            lambda: p.receive(timeout="1"), lambda: p.receive(timeout=1e30), lambda: s.send(b"hi", id=2**40),
            lambda: s.send(b"hi", reply=123), lambda: s.send(Message("str")), lambda: s.send(123),
            lambda: s.send(Message(b"x", rights=["r"])), lambda: s.send(b"x", timeout=-1),
            lambda: pymach.request(s, 123, timeout=1), lambda: pymach.request(123, b"x"),
            lambda: PortSet([p, "junk"]), lambda: PortSet([p, p]), lambda: PortSet(5),
            lambda: MemoryEntry.create(-4096), lambda: MemoryEntry.create(P, protection="rw"),
            lambda: ent.map(offset=2 * P), lambda: ent.sub(0, "x"), lambda: pymach.register_ports("x"),
        ]
        base = (names(), open_fds(), pymach_mappings())
        for i, fn in enumerate(bad):
            with pytest.raises((TypeError, ValueError, MachError)):
                fn()
            assert (names(), open_fds(), pymach_mappings()) == base, f"bad input #{i} left something behind"
        assert_empty(p)


# -- what objects say they are --------------------------------------------------------------------------

def test_task_and_its_info_say_what_they_are() -> None:
    t = Task.self()
    assert re.fullmatch(rf"<Task pid={os.getpid()} port={HEX} self>", repr(t))
    size = r"\d+[KMG]?"
    assert re.fullmatch(rf"<BasicInfo virtual_size={size} resident_size={size} resident_size_max={size} "
                        r"user_time=\d+\.\d\ds system_time=\d+\.\d\ds policy=TIMESHARE suspend_count=0>",
                        repr(t.info()))
    with Task.for_pid(os.getpid()) as other:
        assert re.fullmatch(rf"<Task pid={os.getpid()} port={HEX}( self)?>", repr(other))
    assert re.fullmatch(rf"<Task port={HEX} closed>", repr(other))


def test_regions_say_their_range_size_and_protections() -> None:
    task = Task.self()
    with task.allocate(2 * P) as r:
        assert re.fullmatch(rf"<Region {r.address:#x}-{r.end:#x} size=8K rw-/rwx>", repr(r))
        r.protect(VM_PROT_READ, size=P)
        assert re.fullmatch(rf"<Region {r.address:#x}-{r.end:#x} size=8K r--/rwx,rw-/rwx>", repr(r))
        info = r.info()
        assert re.fullmatch(rf"<RegionInfo {r.address:#x}-{r.address + P:#x} size=4K r--/rwx inherit=copy "
                            r"share=\w+>", repr(info))
    assert re.fullmatch(rf"<Region {r.address:#x}-{r.end:#x} size=8K deallocated>", repr(r))
    first = next(iter(task.regions()))
    assert re.match(rf"<RegionInfo {HEX}-{HEX} size=\d+[KMG]? [r-][w-][x-]/[r-][w-][x-] inherit=\w+ share=",
                    repr(first))


def test_ports_and_rights_say_their_name_and_rights() -> None:
    p = Port()
    assert re.fullmatch(rf"<Port {p.name:#x} receive>", repr(p))
    s = p.make_send()
    assert re.fullmatch(rf"<Port {p.name:#x} receive,send>", repr(p))
    so = p.make_send_once()
    assert re.fullmatch(rf"<SendOnceRight {so.name:#x} send-once>", repr(so))
    with PortSet([p]) as ps:
        assert re.fullmatch(rf"<PortSet {ps.name:#x} port-set members=\[{p.name:#x}\]>", repr(ps))
    assert re.fullmatch(rf"<PortSet {ps.name:#x} closed>", repr(ps))
    so.close()
    p.close()
    assert re.fullmatch(rf"<Port {p.name:#x} closed>", repr(p))
    assert re.fullmatch(rf"<SendRight {s.name:#x} dead>", repr(s))
    s.close()
    assert re.fullmatch(rf"<SendRight {s.name:#x} closed>", repr(s))


def test_memory_entries_and_their_mappings_say_their_size_and_protection() -> None:
    with MemoryEntry.create(2 * P) as ent:
        assert re.fullmatch(rf"<MemoryEntry {ent.name:#x} size=8K rw->", repr(ent))
        with ent.sub(0, P, VM_PROT_READ) as part:
            assert re.fullmatch(rf"<MemoryEntry {part.name:#x} size=4K r-->", repr(part))
        with ent.map() as m:
            assert re.fullmatch(rf"<Region {m.address:#x}-{m.end:#x} size=8K rw-/rw->", repr(m))


def test_messages_say_their_id_size_rights_and_sender(port: tuple[Port, SendRight]) -> None:
    p, s = port
    assert repr(Message(b"hi", id=7)) == "<Message id=7 data=b'hi' (2 bytes)>"
    s.send(Message(b"y" * 40, id=9, rights=[s], ool=[b"z" * (2 * P)]), reply=p)
    m = p.receive(timeout=1)
    try:
        assert re.fullmatch(
            rf"<Message id=9 data=b'y{{32}}'\.\.\. \(40 bytes\) rights=\[<SendRight {p.name:#x} receive,send>\] "
            rf"ool=\[8K\] reply=<SendOnceRight {HEX} send-once> seqno=0 from pid={os.getpid()} uid=\d+ gid=\d+>",
            repr(m))
    finally:
        m.release()


def test_service_info_says_its_name_status_and_pid() -> None:
    info = bootstrap.ServiceInfo("com.example.echo", bootstrap.BOOTSTRAP_STATUS_ACTIVE, 1234)
    assert repr(info) == "<ServiceInfo 'com.example.echo' active pid=1234>"
    assert repr(bootstrap.ServiceInfo("x", bootstrap.BOOTSTRAP_STATUS_INACTIVE, None)) == "<ServiceInfo 'x' inactive>"
