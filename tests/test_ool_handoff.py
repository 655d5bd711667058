"""Zero-copy out-of-line handoff across a real os.fork.

A memfd-backed region (VM_INHERIT_SHARE) sent with deallocate=TRUE leaves
the sender's map at once and its memfd changes hands: the receiver maps
that same memfd (the same inode) MAP_PRIVATE. Checked from outside pymach
too: /proc/PID/maps, /proc/PID/fd and /proc/self/pagemap.

- the sender's range is free as soon as mach_msg returns: no VMA, no
  entry, mach_vm_region skips it, and a fixed allocation there succeeds;
- the receiver reads exactly the bytes that were sent;
- copy-on-write isolation both ways: the sender's new memory at the old
  address does not reach the receiver, and the receiver's writes land in
  private pages that neither the memfd nor the sender sees;
- no process holds the memfd (fd or mapping) once both sides released
  it, and neither side leaks an fd;
- a region that another process still maps shared is copied instead.

No timing is asserted here; `pymach bench ipc` measures the handoff.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections.abc import Callable

import pymach
import pymach.mach as M
from pymach import VM_INHERIT_SHARE, Message, Port, Task, vm_page_size
from pymach._linux import mm
from pymach.lowlevel import SELF

from procutil import forked, is_free, peek, poke, read_vmas

P = vm_page_size
SIZE = (16 << 20) + 5 * P  # over 16 MiB, and not a whole number of 2 MiB blocks


class OolMsg(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("h", M.mach_msg_header_t), ("b", M.mach_msg_body_t), ("d", M.mach_msg_ool_descriptor_t),
                ("ino", ctypes.c_uint64), ("digest", ctypes.c_ubyte * 32)]


class OolRcv(ctypes.Structure):
    _pack_ = 4
    _fields_ = OolMsg._fields_ + [("t", M.mach_msg_trailer_t)]


# -- helpers -------------------------------------------------------------------------

def filled_shared_region(size: int) -> tuple[Task, int, int, bytes]:
    """A VM_INHERIT_SHARE region of ``size`` bytes of random data: (task,
    address, memfd inode, sha256 of the bytes)."""
    task = Task.self()
    region = task.allocate(size)
    region.inherit(VM_INHERIT_SHARE)
    data = os.urandom(size)
    poke(region.address, data)
    (vma,) = [v for v in read_vmas() if v.start <= region.address < v.end]
    assert vma.perms == "rw-s" and vma.path.startswith("/memfd:"), vma
    return task, region.address, vma.inode, hashlib.sha256(data).digest()


def send_ool(dest: int, addr: int, size: int, ino: int, digest: bytes) -> int:
    """mach_msg: [addr, addr+size) out-of-line with deallocate=TRUE, and the
    memfd's inode and the bytes' sha256 inline."""
    m = OolMsg()
    m.h.msgh_bits = M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, 0) | M.MACH_MSGH_BITS_COMPLEX
    m.h.msgh_size = ctypes.sizeof(OolMsg)
    m.h.msgh_remote_port = dest
    m.b.msgh_descriptor_count = 1
    m.d.address, m.d.size, m.d.deallocate = addr, size, 1
    m.d.copy, m.d.type = M.MACH_MSG_VIRTUAL_COPY, M.MACH_MSG_OOL_DESCRIPTOR
    m.ino = ino
    m.digest[:] = list(digest)
    return M.mach_msg(m.h, M.MACH_SEND_MSG, m.h.msgh_size, 0, 0, 0, 0)  # type: ignore[no-any-return]


def receive_ool(port: int) -> OolRcv:
    r = OolRcv()
    kr = M.mach_msg(r.h, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(r), port, 10000, 0)
    assert kr == 0, M.mach_error_string(kr)
    assert r.d.size == SIZE and r.d.address
    return r


def sha256_at(addr: int, size: int) -> bytes:
    return hashlib.sha256(mm.view(addr, size)).digest()


def memfd_fds(pid: int | str, ino: int) -> list[int]:
    """The fds of a process that are the memfd with inode ``ino``."""
    out = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
            st = os.stat(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("/memfd:") and st.st_ino == ino:
            out.append(int(name))
    return out


def memfd_maps(pid: int | str, ino: int) -> list[str]:
    """The lines of /proc/PID/maps that map the memfd with inode ``ino``."""
    with open(f"/proc/{pid}/maps") as f:
        return [line for line in f if "/memfd:" in line and int(line.split()[4]) == ino]


def holders(ino: int) -> list[str]:
    """Every readable /proc/*/fd and /proc/*/maps entry of the memfd."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            out += [f"{pid} fd {fd}" for fd in memfd_fds(pid, ino)]
            out += [f"{pid} map {line.strip()}" for line in memfd_maps(pid, ino)]
        except OSError:
            continue  # gone, or not ours to read
    return out


def assert_range_free(task: Task, addr: int, size: int) -> None:
    """Nothing in [addr, addr+size): not in /proc/self/maps, not in
    pymach's record, and mach_vm_region reports the next region above."""
    assert is_free(addr, addr + size)
    assert not [e for e in SELF.map.entries() if e.start < addr + size and e.end > addr]
    info = task.region(addr)
    assert info.start >= addr + size, info


def page_flags(addr: int) -> tuple[bool, bool]:
    """(present, file-backed) of one page, from /proc/self/pagemap."""
    (word,) = mm.pagemap(addr, 1)
    return bool(word & mm.PM_PRESENT), bool(word & mm.PM_FILE_OR_SHARED)


def open_fds() -> set[int]:
    """Our open fds, without the one that lists them."""
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").endswith("/fd"):
                out.add(int(name))
        except OSError:
            pass  # the listing's own fd, already closed
    return out


# -- tests ---------------------------------------------------------------------------

def test_handoff_to_a_fork_child() -> None:
    with Port() as mine, mine.make_send() as to_me:
        pymach.register_ports(to_me)
        try:
            def child(sync: Callable[[], None]) -> None:
                (parent,) = [r for r in pymach.registered_ports() if r]
                with Port() as port, port.make_send() as to_port:
                    parent.send(Message(b"", rights=[to_port]))
                    parent.close()
                    fds = open_fds()
                    r = receive_ool(port.name)
                    addr = r.d.address
                    # the sender's memfd itself, mapped copy-on-write, and no fd for it
                    lines = memfd_maps("self", r.ino)
                    assert len(lines) == 1, "the data was copied, not handed off"
                    assert lines[0].split()[1] == "rw-p"
                    assert memfd_fds("self", r.ino) == []
                    assert open_fds() == fds
                    assert sha256_at(addr, SIZE) == bytes(r.digest)
                    first = peek(addr, 64)
                    sync()  # 1: received; the parent now writes at its old address
                    sync()  # 2
                    assert peek(addr, 64) == first
                    assert page_flags(addr + P) == (True, True)  # read: the memfd's page
                    poke(addr + 100, b"receiver")
                    assert page_flags(addr) == (True, False)  # written: a private copy
                    assert page_flags(addr + P) == (True, True)
                    assert peek(addr + 100, 8) == b"receiver"
                    sync()  # 3: the receiver has written
                    assert M.mach_vm_deallocate(M.mach_task_self(), addr, SIZE) == 0
                    assert memfd_maps("self", r.ino) == []
                    assert open_fds() == fds
                    sync()  # 4: released

            with forked(child) as sync:
                m = mine.receive(timeout=10)
                (to_child,) = m.rights
                try:
                    task, addr, ino, digest = filled_shared_region(SIZE)
                    fds = open_fds()
                    held = set(memfd_fds("self", ino))
                    assert held  # pymach holds it open
                    assert send_ool(to_child.name, addr, SIZE, ino, digest) == 0
                    # gone from the sender the moment mach_msg returns
                    assert_range_free(task, addr, SIZE)
                    assert memfd_fds("self", ino) == [] and memfd_maps("self", ino) == []
                    assert open_fds() == fds - held
                    sync()  # 1
                    mine_again = task.allocate(SIZE, address=addr)  # the range is ours to reuse
                    poke(addr, b"S" * 4096)
                    sync()  # 2: the receiver checks it still has the old bytes
                    sync()  # 3
                    assert peek(addr, 4096) == b"S" * 4096  # the receiver's write stayed there
                    sync()  # 4: the receiver released the memory
                    assert holders(ino) == []
                    mine_again.deallocate()
                finally:
                    to_child.close()
        finally:
            pymach.register_ports()


def test_handoff_from_a_fork_child() -> None:
    with Port() as mine, mine.make_send() as to_me:
        pymach.register_ports(to_me)
        try:
            def child(sync: Callable[[], None]) -> int:
                (parent,) = [r for r in pymach.registered_ports() if r]
                task, addr, ino, digest = filled_shared_region(SIZE)
                fds = open_fds()
                held = set(memfd_fds("self", ino))
                assert send_ool(parent.name, addr, SIZE, ino, digest) == 0
                assert_range_free(task, addr, SIZE)
                assert memfd_fds("self", ino) == [] and memfd_maps("self", ino) == []
                assert open_fds() == fds - held
                parent.close()
                sync()  # 1: the parent has received
                again = task.allocate(SIZE, address=addr)
                poke(addr, b"C" * 64)
                sync()  # 2: the sender wrote at its old address
                sync()  # 3: the receiver wrote its copy
                assert peek(addr, 64) == b"C" * 64
                again.deallocate()
                return ino

            sender = forked(child)
            with sender as sync:
                fds = open_fds()
                r = receive_ool(mine.name)
                addr = r.d.address
                assert memfd_maps("self", r.ino), "the data was copied, not handed off"
                assert memfd_fds("self", r.ino) == []
                assert open_fds() == fds
                assert sha256_at(addr, SIZE) == bytes(r.digest)
                last = peek(addr + SIZE - 64, 64)
                sync()  # 1
                sync()  # 2
                assert peek(addr + SIZE - 64, 64) == last
                assert sha256_at(addr, SIZE) == bytes(r.digest)
                poke(addr + SIZE - 64, b"R" * 64)
                assert page_flags(addr + SIZE - P) == (True, False)
                sync()  # 3
                assert M.mach_vm_deallocate(M.mach_task_self(), addr, SIZE) == 0
            assert sender.result == r.ino  # the sender's memfd itself came over
            assert holders(r.ino) == []
        finally:
            pymach.register_ports()


def test_handoff_to_our_own_port_frees_the_range_before_the_receive() -> None:
    with Port() as port, port.make_send() as to_port:
        task, addr, ino, digest = filled_shared_region(SIZE)
        fds = open_fds() - set(memfd_fds("self", ino))
        assert send_ool(to_port.name, addr, SIZE, ino, digest) == 0
        assert_range_free(task, addr, SIZE)
        assert holders(ino) == []  # in flight: only the socket holds it
        r = receive_ool(port.name)
        assert memfd_maps("self", ino), "the data was copied, not handed off"
        assert sha256_at(r.d.address, SIZE) == digest
        assert M.mach_vm_deallocate(M.mach_task_self(), r.d.address, SIZE) == 0
        assert holders(ino) == []
        assert open_fds() == fds


def test_a_region_a_fork_child_still_maps_is_copied() -> None:
    """The child shares the memfd writable, so it cannot be sealed: the
    bytes go in a fresh memfd, and the child's later writes stay out."""
    with Port() as port, port.make_send() as to_port:
        task, addr, ino, digest = filled_shared_region(SIZE)

        def child(sync: Callable[[], None]) -> None:
            sync()  # 1: the parent has sent
            assert sha256_at(addr, SIZE) == digest  # still shared with the child
            poke(addr, b"child writes after the send")
            sync()  # 2

        with forked(child) as sync:
            assert send_ool(to_port.name, addr, SIZE, ino, digest) == 0
            assert_range_free(task, addr, SIZE)
            sync()  # 1
            sync()  # 2
            r = receive_ool(port.name)
            assert memfd_maps("self", ino) == []  # not the child's memfd
            assert sha256_at(r.d.address, SIZE) == digest
            assert M.mach_vm_deallocate(M.mach_task_self(), r.d.address, SIZE) == 0
