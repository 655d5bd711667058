"""Task port flavors (control, read, inspect, name) and the task_info
flavors that report credentials, across real processes.

Each routine converts its task argument with the flavor it needs (XNU's
MIG conversions: osfmk/kern/ipc_tt.c), so a weaker port never does what a
stronger one does, and never leads to a stronger one."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

from machutil import PortMsgRcv, alloc_name, send_port
from procutil import NOBODY, forked, sleep_process, stop_process
from pymach import mach as M
from pymach.mach import byref, cast

T = M.mach_task_self


def _flavor_for_pid(fn, pid: int) -> tuple[int, int, int]:
    t = M.mach_port_t(0x1234)
    ctypes.set_errno(0)
    r = fn(T(), pid, byref(t))
    return r, ctypes.get_errno(), t.value


def _info(task: int, flavor: int, st: type, count: int) -> tuple[int, object, int]:
    rec = st()
    cnt = M.mach_msg_type_number_t(count)
    kr = M.task_info(task, flavor, cast(byref(rec), M.task_info_t), byref(cnt))
    return kr, rec, cnt.value


def _status_ids(pid: int | str) -> tuple[list[int], list[int]]:
    with open(f"/proc/{pid}/status") as f:
        lines = f.read().splitlines()
    uids = next(line for line in lines if line.startswith("Uid:")).split()[1:]
    gids = next(line for line in lines if line.startswith("Gid:")).split()[1:]
    return [int(x) for x in uids], [int(x) for x in gids]


# -- task_info: TASK_SECURITY_TOKEN and TASK_AUDIT_TOKEN ------------------------------

def _trailer_audit_token() -> list[int]:
    """The audit token of a message we send ourselves, from its trailer."""
    port = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
    try:
        hdr = M.mach_msg_header_t()
        hdr.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_MAKE_SEND, 0)
        hdr.msgh_size = ctypes.sizeof(hdr)
        hdr.msgh_remote_port = port
        assert M.mach_msg(hdr, M.MACH_SEND_MSG, hdr.msgh_size, 0, 0, 0, 0) == 0

        class Rcv(ctypes.Structure):
            _fields_ = [("hdr", M.mach_msg_header_t), ("trailer", M.mach_msg_audit_trailer_t)]
        r = Rcv()
        opts = M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT | M.MACH_RCV_TRAILER_TYPE(M.MACH_MSG_TRAILER_FORMAT_0) \
            | M.MACH_RCV_TRAILER_ELEMENTS(M.MACH_RCV_TRAILER_AUDIT)
        assert M.mach_msg(r.hdr, opts, 0, ctypes.sizeof(r), port, 5000, 0) == 0
        return list(r.trailer.msgh_audit.val)
    finally:
        M.mach_port_mod_refs(T(), port, M.MACH_PORT_RIGHT_RECEIVE, -1)


def test_the_audit_token_is_the_one_messages_carry():
    """XNU's trailer carries the task's audit token; task_info gives the
    same one (xnu's ipc/mach_msg_transport.c mach_msg_trailer compares
    them)."""
    kr, at, _ = _info(T(), M.TASK_AUDIT_TOKEN, M.audit_token_t, M.TASK_AUDIT_TOKEN_COUNT)
    assert kr == 0 and list(at.val) == _trailer_audit_token()


def test_security_and_audit_tokens_of_our_task_are_its_credentials():
    kr, st, cnt = _info(T(), M.TASK_SECURITY_TOKEN, M.security_token_t, M.TASK_SECURITY_TOKEN_COUNT)
    assert (kr, cnt) == (M.KERN_SUCCESS, 2)
    assert list(st.val) == [os.geteuid(), os.getegid()]
    kr, at, cnt = _info(T(), M.TASK_AUDIT_TOKEN, M.audit_token_t, M.TASK_AUDIT_TOKEN_COUNT)
    assert (kr, cnt) == (M.KERN_SUCCESS, 8)
    assert list(at.val) == [os.getuid(), os.geteuid(), os.getegid(), os.getuid(), os.getgid(), os.getpid(), 0, 0]
    # a count too small is KERN_INVALID_ARGUMENT (XNU's check), and nothing is written
    kr, at, cnt = _info(T(), M.TASK_AUDIT_TOKEN, M.audit_token_t, M.TASK_AUDIT_TOKEN_COUNT - 1)
    assert (kr, list(at.val)) == (M.KERN_INVALID_ARGUMENT, [0] * 8)
    kr, st, cnt = _info(T(), M.TASK_SECURITY_TOKEN, M.security_token_t, 1)
    assert kr == M.KERN_INVALID_ARGUMENT


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a process of another user needs root")
def test_tokens_of_another_users_process_through_every_flavor():
    p = sleep_process(user=NOBODY)
    names = []
    try:
        for fn in (M.task_for_pid, M.task_read_for_pid, M.task_inspect_for_pid, M.task_name_for_pid):
            r, _e, t = _flavor_for_pid(fn, p.pid)
            assert r == 0, fn.__name__
            names.append(t)
        assert len(set(names)) == 4  # a port (a name) for each flavor
        for t in names:
            kr, st, _ = _info(t, M.TASK_SECURITY_TOKEN, M.security_token_t, M.TASK_SECURITY_TOKEN_COUNT)
            assert kr == 0 and list(st.val) == [NOBODY, NOBODY]
            kr, at, _ = _info(t, M.TASK_AUDIT_TOKEN, M.audit_token_t, M.TASK_AUDIT_TOKEN_COUNT)
            assert kr == 0 and list(at.val) == [NOBODY, NOBODY, NOBODY, NOBODY, NOBODY, p.pid, 0, 0]
    finally:
        for t in names:
            M.mach_port_deallocate(T(), t)
        stop_process(p)


def test_tokens_follow_a_change_of_credentials():
    """The tokens are read when asked: a child that drops its effective ids
    (keeping its real ones) reports them as they are now."""
    if os.geteuid() != 0:
        pytest.skip("changing ids needs root")

    def child(sync):
        os.setegid(NOBODY)
        os.seteuid(NOBODY)
        sync()
        sync()

    c = forked(child)
    with c as sync:
        sync()
        t = M.mach_port_t()
        assert M.task_for_pid(T(), c.pid, byref(t)) == 0
        try:
            kr, st, _ = _info(t.value, M.TASK_SECURITY_TOKEN, M.security_token_t, 2)
            assert kr == 0 and list(st.val) == [NOBODY, NOBODY]
            kr, at, _ = _info(t.value, M.TASK_AUDIT_TOKEN, M.audit_token_t, 8)
            uids, gids = _status_ids(c.pid)
            assert kr == 0 and list(at.val) == [0, NOBODY, NOBODY, 0, 0, c.pid, 0, 0]
            assert (uids[:2], gids[:2]) == ([0, NOBODY], [0, NOBODY])
        finally:
            M.mach_port_deallocate(T(), t.value)
        sync()


def test_dyld_info_needs_a_read_port():
    for which, kr_want in ((M.TASK_READ_PORT, 0), (M.TASK_INSPECT_PORT, M.KERN_INVALID_ARGUMENT),
                           (M.TASK_NAME_PORT, M.KERN_INVALID_ARGUMENT)):
        t = M.mach_port_t()
        assert M.task_get_special_port(T(), which, byref(t)) == 0
        try:
            kr, di, cnt = _info(t.value, M.TASK_DYLD_INFO, M.task_dyld_info_data_t, M.TASK_DYLD_INFO_COUNT)
            assert kr == kr_want
            if kr == 0:
                assert cnt == M.TASK_DYLD_INFO_COUNT
                assert di.all_image_info_format == M.TASK_DYLD_ALL_IMAGE_INFO_64
        finally:
            M.mach_port_deallocate(T(), t.value)
    # the legacy count (no format field) is accepted, a shorter one is not
    assert _info(T(), M.TASK_DYLD_INFO, M.task_dyld_info_data_t, M.TASK_DYLD_INFO_COUNT - 1)[::2] == (0, 4)
    assert _info(T(), M.TASK_DYLD_INFO, M.task_dyld_info_data_t, 3)[0] == M.KERN_INVALID_ARGUMENT


# -- task_read_for_pid, task_inspect_for_pid ------------------------------------------

def test_flavor_for_pid_failures_set_errno_and_store_null():
    for fn in (M.task_read_for_pid, M.task_inspect_for_pid):
        assert _flavor_for_pid(fn, 0) == (-1, errno.EPERM, 0)
        r, e, t = _flavor_for_pid(fn, 0x7FFFFFF0)
        assert (r, e, t) == (-1, errno.ESRCH, 0)
        t = M.mach_port_t(7)
        ctypes.set_errno(0)
        assert fn(0x4242, os.getpid(), byref(t)) == -1 and ctypes.get_errno() == errno.EINVAL and t.value == 0


def test_a_weaker_port_is_no_target_tport():
    """task_*_for_pid take a control port as target_tport
    (port_name_to_task): a read port cannot be turned into a control port
    that way."""
    r = M.mach_port_t()
    assert M.task_get_special_port(T(), M.TASK_READ_PORT, byref(r)) == 0
    try:
        t = M.mach_port_t(7)
        assert M.task_for_pid(r.value, os.getpid(), byref(t)) == M.KERN_FAILURE and t.value == 0
        assert M.task_name_for_pid(r.value, os.getpid(), byref(t)) == M.KERN_FAILURE
        ctypes.set_errno(0)
        assert M.task_read_for_pid(r.value, os.getpid(), byref(t)) == -1 and ctypes.get_errno() == errno.EINVAL
    finally:
        M.mach_port_deallocate(T(), r.value)


# -- what each flavor may do on another process ---------------------------------------------

def _child_with_page(sync):
    page = M.mach_vm_address_t()
    assert M.mach_vm_allocate(T(), byref(page), M.vm_page_size, M.VM_FLAGS_ANYWHERE) == 0
    ctypes.memmove(page.value, b"child's page", 12)
    sync()  # hand the address over
    sync()  # wait until the parent is done
    return page.value


def test_read_inspect_and_name_ports_of_another_process():
    c = forked(_child_with_page)
    names: dict[str, int] = {}
    with c as sync:
        sync()
        try:
            for key, fn in (("control", M.task_for_pid), ("read", M.task_read_for_pid),
                            ("inspect", M.task_inspect_for_pid), ("name", M.task_name_for_pid)):
                r, _e, t = _flavor_for_pid(fn, c.pid)
                assert r == 0
                names[key] = t
            # find the child's page from the region list, through the read port
            a = M.mach_vm_address_t(0)
            size = M.mach_vm_size_t()
            info = M.vm_region_basic_info_data_64_t()
            cnt = M.mach_msg_type_number_t(M.VM_REGION_BASIC_INFO_COUNT_64)
            obj = M.mach_port_t()
            assert M.mach_vm_region(names["read"], byref(a), byref(size), M.VM_REGION_BASIC_INFO_64, byref(info),
                                    byref(cnt), byref(obj)) == 0
            for key in ("inspect", "name"):
                cnt.value = M.VM_REGION_BASIC_INFO_COUNT_64
                assert M.mach_vm_region(names[key], byref(a), byref(size), M.VM_REGION_BASIC_INFO_64, byref(info),
                                        byref(cnt), byref(obj)) == M.KERN_INVALID_ARGUMENT
            # reads: control and read ports; writes and control: the control port only
            page = M.mach_vm_address_t()
            for key, read_kr, write_kr in (("read", 0, M.KERN_INVALID_ARGUMENT),
                                           ("inspect", M.KERN_INVALID_ARGUMENT, M.KERN_INVALID_ARGUMENT),
                                           ("name", M.KERN_INVALID_ARGUMENT, M.KERN_INVALID_ARGUMENT)):
                data = M.vm_offset_t()
                dcnt = M.mach_msg_type_number_t()
                assert M.mach_vm_read(names[key], a.value, 16, byref(data), byref(dcnt)) == read_kr, key
                if read_kr == 0:
                    M.mach_vm_deallocate(T(), data.value, dcnt.value)
                buf = ctypes.create_string_buffer(16)
                assert M.mach_vm_write(names[key], a.value, ctypes.addressof(buf), 16) == write_kr, key
                assert M.mach_vm_allocate(names[key], byref(page), M.vm_page_size,
                                          M.VM_FLAGS_ANYWHERE) == M.KERN_INVALID_ARGUMENT, key
                assert M.mach_vm_protect(names[key], a.value, M.vm_page_size, 0,
                                         M.VM_PROT_READ) == M.KERN_INVALID_ARGUMENT, key
                # no special port stronger than the port asked through
                sp = M.mach_port_t()
                want = M.KERN_INVALID_ARGUMENT if key == "name" else M.KERN_INVALID_CAPABILITY
                assert M.task_get_special_port(names[key], M.TASK_KERNEL_PORT, byref(sp)) == want, key
                # every flavor answers pid_for_task and task_info
                pid = ctypes.c_int()
                assert M.pid_for_task(names[key], byref(pid)) == 0 and pid.value == c.pid
            # a weaker special port of another task is that task's port of that flavor
            sp = M.mach_port_t()
            assert M.task_get_special_port(names["read"], M.TASK_INSPECT_PORT, byref(sp)) == 0
            assert sp.value == names["inspect"]
            M.mach_port_deallocate(T(), sp.value)
        finally:
            for t in names.values():
                M.mach_port_deallocate(T(), t)
            sync()


def _remap(src_task: int, src: int, copy: bool, cur: int, mx: int) -> tuple[int, int, int, int]:
    a = M.mach_vm_address_t(0)
    c, m = M.vm_prot_t(cur), M.vm_prot_t(mx)
    kr = M.mach_vm_remap_new(T(), byref(a), M.vm_page_size, 0, M.VM_FLAGS_ANYWHERE, src_task, src, copy,
                             byref(c), byref(m), M.VM_INHERIT_DEFAULT)
    return kr, a.value, c.value, m.value


def _region(addr: int) -> M.vm_region_submap_info_data_64_t:
    a = M.mach_vm_address_t(addr)
    size = M.mach_vm_size_t()
    depth = M.natural_t(9999)
    info = M.vm_region_submap_info_data_64_t()
    cnt = M.mach_msg_type_number_t(M.VM_REGION_SUBMAP_INFO_COUNT_64)
    assert M.mach_vm_region_recurse(T(), byref(a), byref(size), byref(depth), byref(info), byref(cnt)) == 0
    assert a.value == addr
    return info


def test_remap_new_from_another_process_through_a_read_port():
    """xnu-11417's vm_test_mach_map.c mach_vm_remap_new_task_read_port: a
    shared mapping through a read port gets VM_PROT_NONE for both
    protections; a copy through it gets the bytes; an inspect port is
    refused (KERN_INVALID_ARGUMENT: convert_port_to_map_read gives
    VM_MAP_NULL)."""
    c = forked(_child_with_page)
    with c as sync:
        sync()
        names = []
        try:
            for fn in (M.task_read_for_pid, M.task_inspect_for_pid):
                r, _e, t = _flavor_for_pid(fn, c.pid)
                assert r == 0
                names.append(t)
            read_port, inspect_port = names
            # the child's page: the region whose first bytes are its text
            a = M.mach_vm_address_t(0)
            size = M.mach_vm_size_t()
            info = M.vm_region_basic_info_data_64_t()
            obj = M.mach_port_t()
            src = 0
            while not src:
                cnt = M.mach_msg_type_number_t(M.VM_REGION_BASIC_INFO_COUNT_64)
                assert M.mach_vm_region(read_port, byref(a), byref(size), M.VM_REGION_BASIC_INFO_64, byref(info),
                                        byref(cnt), byref(obj)) == 0
                if info.protection & M.VM_PROT_READ:
                    for off in range(0, size.value, M.vm_page_size):
                        buf = ctypes.create_string_buffer(12)
                        n = M.mach_vm_size_t()
                        if (M.mach_vm_read_overwrite(read_port, a.value + off, 12, ctypes.addressof(buf),
                                                     byref(n)) == 0 and buf.raw == b"child's page"):
                            src = a.value + off
                            break
                a.value += size.value
            kr, addr, cur, mx = _remap(read_port, src, False, M.VM_PROT_NONE, M.VM_PROT_NONE)
            assert kr == M.KERN_SUCCESS
            info2 = _region(addr)
            assert (info2.protection, info2.max_protection) == (M.VM_PROT_NONE, M.VM_PROT_NONE)
            # max NONE is for good: it cannot be raised
            assert M.mach_vm_protect(T(), addr, M.vm_page_size, 0, M.VM_PROT_READ) == M.KERN_PROTECTION_FAILURE
            M.mach_vm_deallocate(T(), addr, M.vm_page_size)
            # a copy gets the bytes, with the protections asked for
            kr, addr, cur, mx = _remap(read_port, src, True, M.VM_PROT_DEFAULT, M.VM_PROT_DEFAULT)
            assert (kr, cur, mx) == (0, M.VM_PROT_DEFAULT, M.VM_PROT_DEFAULT)
            assert ctypes.string_at(addr, 12) == b"child's page"
            M.mach_vm_deallocate(T(), addr, M.vm_page_size)
            # sharing with write access needs a control port
            assert _remap(read_port, src, False, M.VM_PROT_DEFAULT, M.VM_PROT_DEFAULT)[0] == M.KERN_INVALID_ARGUMENT
            assert _remap(inspect_port, src, False, M.VM_PROT_NONE, M.VM_PROT_NONE)[0] == M.KERN_INVALID_ARGUMENT
            assert _remap(inspect_port, src, True, M.VM_PROT_READ, M.VM_PROT_READ)[0] == M.KERN_INVALID_ARGUMENT
        finally:
            for t in names:
                M.mach_port_deallocate(T(), t)
            sync()


def test_a_read_port_travels_as_a_read_port():
    """A task port travels in a message as the port it is: our read port
    sent to a port of ours comes back under the read port's name (not
    mach_task_self()'s), and MAKE_SEND on it is refused. Across processes:
    tests/test_task_port_messages.py."""
    r = M.mach_port_t()
    assert M.task_get_special_port(T(), M.TASK_READ_PORT, byref(r)) == 0
    dest = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
    try:
        assert M.mach_port_insert_right(T(), dest, dest, M.MACH_MSG_TYPE_MAKE_SEND) == 0
        assert send_port(dest, r.value, M.MACH_MSG_TYPE_MAKE_SEND) == M.MACH_SEND_INVALID_RIGHT
        before, after = M.mach_port_urefs_t(), M.mach_port_urefs_t()
        assert M.mach_port_get_refs(T(), r.value, M.MACH_PORT_RIGHT_SEND, byref(before)) == 0
        assert send_port(dest, r.value, M.MACH_MSG_TYPE_COPY_SEND) == 0
        got = PortMsgRcv()
        assert M.mach_msg(got.header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(got), dest, 5000, 0) == 0
        assert got.port.name == r.value and got.port.name != T()
        assert M.mach_port_get_refs(T(), r.value, M.MACH_PORT_RIGHT_SEND, byref(after)) == 0
        assert after.value == before.value + 1
        buf = ctypes.create_string_buffer(8)
        assert M.mach_vm_write(r.value, ctypes.addressof(buf), ctypes.addressof(buf), 8) == M.KERN_INVALID_ARGUMENT
    finally:
        M.mach_port_mod_refs(T(), r.value, M.MACH_PORT_RIGHT_SEND, -2)
        M.mach_port_mod_refs(T(), dest, M.MACH_PORT_RIGHT_SEND, -1)
        M.mach_port_mod_refs(T(), dest, M.MACH_PORT_RIGHT_RECEIVE, -1)


def test_thread_ports_keep_the_task_ports_flavor(sleeper):
    """task_threads takes an inspect port or stronger and gives thread
    ports of its flavor: through a read port thread_get_state works and
    thread_set_state (a thread_act_t) is refused, through an inspect port
    both are; a name port gets no threads."""
    names = {}
    threads: list[int] = []
    try:
        for key, fn in (("read", M.task_read_for_pid), ("inspect", M.task_inspect_for_pid),
                        ("name", M.task_name_for_pid)):
            r, _e, t = _flavor_for_pid(fn, sleeper.pid)
            assert r == 0
            names[key] = t
        lst = M.vm_offset_t()
        cnt = M.mach_msg_type_number_t()
        assert M.task_threads(names["name"], byref(lst), byref(cnt)) == M.KERN_INVALID_ARGUMENT
        st = M.x86_thread_state64_t()
        for key, get_kr in (("read", M.KERN_SUCCESS), ("inspect", M.KERN_INVALID_ARGUMENT)):
            assert M.task_threads(names[key], byref(lst), byref(cnt)) == M.KERN_SUCCESS
            (thread,) = (ctypes.c_uint32 * cnt.value).from_address(lst.value)
            M.vm_deallocate(T(), lst.value, 4 * cnt.value)
            threads.append(thread)
            n = M.mach_msg_type_number_t(M.x86_THREAD_STATE64_COUNT)
            assert M.thread_get_state(thread, M.x86_THREAD_STATE64, byref(st), byref(n)) == get_kr, key
            assert M.thread_set_state(thread, M.x86_THREAD_STATE64, byref(st),
                                      M.x86_THREAD_STATE64_COUNT) == M.KERN_INVALID_ARGUMENT, key
        assert threads[0] != threads[1]  # a port of each flavor
        assert sleeper.poll() is None
    finally:
        for t in threads + list(names.values()):
            M.mach_port_deallocate(T(), t)


def test_port_routines_on_our_space_through_weaker_ports():
    """mach_port_get_attributes takes an ipc_space_read_t: our read port
    will do; the routines that change the space take our control port."""
    ports = {}
    recv = alloc_name(M.MACH_PORT_RIGHT_RECEIVE)
    try:
        for which in (M.TASK_READ_PORT, M.TASK_INSPECT_PORT):
            t = M.mach_port_t()
            assert M.task_get_special_port(T(), which, byref(t)) == 0
            ports[which] = t.value
        info = M.mach_port_limits_t()
        for which, kr in ((M.TASK_READ_PORT, 0), (M.TASK_INSPECT_PORT, M.KERN_INVALID_TASK)):
            cnt = M.mach_msg_type_number_t(M.MACH_PORT_LIMITS_INFO_COUNT)
            assert M.mach_port_get_attributes(ports[which], recv, M.MACH_PORT_LIMITS_INFO, byref(info),
                                              byref(cnt)) == kr
            name = M.mach_port_name_t()
            assert M.mach_port_allocate(ports[which], M.MACH_PORT_RIGHT_RECEIVE, byref(name)) == M.KERN_INVALID_TASK
        assert info.mpl_qlimit == M.MACH_PORT_QLIMIT_DEFAULT
    finally:
        for t in ports.values():
            M.mach_port_deallocate(T(), t)
        M.mach_port_mod_refs(T(), recv, M.MACH_PORT_RIGHT_RECEIVE, -1)
