"""Inheritance across a real os.fork: VM_INHERIT_COPY, SHARE and NONE.

Memory is read and written with ctypes (peek/poke) so the semantics of the
pages are tested independently of pymach's own accessors; where the test is
about the accessors (Task.read in a child), they are used.

Children always leave with os._exit. An exception in a child is pickled to
the parent and raised there, so an assertion in the child fails the test
with its own message; a child that dies by a signal fails it too.
"""

from __future__ import annotations

import os
import signal

import pytest

from pymach import (
    VM_INHERIT_COPY,
    VM_INHERIT_NONE,
    VM_INHERIT_SHARE,
    VM_PROT_DEFAULT,
    VM_PROT_READ,
    InvalidAddressError,
    Task,
    vm_page_size,
)
from pymach.lowlevel import SELF

from procutil import forked, mapped_in, peek, perms_at, poke, run_in_child

P = vm_page_size


# -- helpers -------------------------------------------------------------------

def entries_in(start: int, end: int):
    return [e for e in SELF.map.entries() if e.start < end and e.end > start]


@pytest.fixture
def task() -> Task:
    return Task.self()


# -- the harness itself must be able to fail ----------------------------------------

def test_harness_reports_child_assertions():
    def child(_sync):
        assert 1 == 2, "from the child"

    with pytest.raises(AssertionError, match="from the child"):
        with forked(child):
            pass


def test_harness_reports_a_child_killed_by_a_signal():
    with pytest.raises(AssertionError, match="SIGKILL"):
        run_in_child(lambda: os.kill(os.getpid(), signal.SIGKILL))


# -- VM_INHERIT_COPY ---------------------------------------------------------------

def test_copy_is_the_default(task):
    with task.allocate(P) as r:
        assert r.info().inheritance == VM_INHERIT_COPY
        (e,) = entries_in(r.address, r.end)
        assert e.inherit == VM_INHERIT_COPY and not e.shared


def test_copy_child_and_parent_writes_are_private(task):
    with task.allocate(2 * P) as r:
        poke(r.address, b"original")
        poke(r.address + P, b"second-page")

        def child(sync):
            assert peek(r.address, 8) == b"original"  # inherited contents
            assert peek(r.address + P, 11) == b"second-page"
            poke(r.address, b"child!!!")
            sync()  # 1: the child has written
            sync()  # 2: the parent has written
            assert peek(r.address, 8) == b"child!!!"
            assert peek(r.address + P, 11) == b"second-page"
            assert perms_at(r.address) == "rw-p"

        with forked(child) as sync:
            sync()
            assert peek(r.address, 8) == b"original"
            poke(r.address + P, b"PARENT-PAGE")
            sync()
        assert peek(r.address, 8) == b"original"
        assert peek(r.address + P, 11) == b"PARENT-PAGE"


def test_copy_keeps_protection_in_the_child(task):
    with task.allocate(P) as r:
        poke(r.address, b"ro")
        r.protect(VM_PROT_READ)

        def child():
            assert perms_at(r.address) == "r--p"
            (e,) = entries_in(r.address, r.end)
            assert e.prot == VM_PROT_READ and e.inherit == VM_INHERIT_COPY
            assert peek(r.address, 2) == b"ro"

        run_in_child(child)


# -- VM_INHERIT_SHARE -------------------------------------------------------------

def test_share_writes_are_seen_both_ways(task):
    with task.allocate(2 * P) as r:
        poke(r.address, b"before-share")
        r.inherit(VM_INHERIT_SHARE)
        assert peek(r.address, 12) == b"before-share"  # moving to the memfd kept it

        def child(sync):
            assert peek(r.address, 12) == b"before-share"
            assert perms_at(r.address) == "rw-s"
            poke(r.address, b"from-child")
            sync()  # 1: the child has written
            sync()  # 2: the parent has written
            assert peek(r.address + P, 11) == b"from-parent"
            poke(r.address + P + 100, b"last")

        with forked(child) as sync:
            sync()
            assert peek(r.address, 10) == b"from-child"
            poke(r.address + P, b"from-parent")
            sync()
        assert peek(r.address + P + 100, 4) == b"last"


def test_share_with_read_only_protection(task):
    with task.allocate(P) as r:
        poke(r.address, b"data")
        r.protect(VM_PROT_READ)
        r.inherit(VM_INHERIT_SHARE)
        assert perms_at(r.address) == "r--s"

        def child(sync):
            assert perms_at(r.address) == "r--s"
            sync()
            assert peek(r.address, 4) == b"DATA"

        with forked(child) as sync:
            r.protect(VM_PROT_DEFAULT)
            poke(r.address, b"DATA")
            sync()


def test_share_child_record_shows_shared(task):
    with task.allocate(P) as r:
        r.inherit(VM_INHERIT_SHARE)

        def child():
            info = Task.self().region(r.address)
            assert info.shared and info.inheritance == VM_INHERIT_SHARE
            (e,) = entries_in(r.address, r.end)
            assert e.shared and e.obj is not None
            assert os.readlink(f"/proc/self/fd/{e.obj.fd}").startswith("/memfd:")

        run_in_child(child)


# -- VM_INHERIT_NONE --------------------------------------------------------------

def test_none_child_read_raises_invalid_address(task):
    with task.allocate(2 * P) as r:
        poke(r.address, b"hidden")
        r.inherit(VM_INHERIT_NONE)

        def child():
            me = Task.self()
            with pytest.raises(InvalidAddressError) as ei:
                me.read(r.address, 6)
            assert ei.value.kr == 1
            with pytest.raises(InvalidAddressError):
                me.read(r.address + P, 1)
            with pytest.raises(InvalidAddressError):
                me.write(r.address, b"x")

        run_in_child(child)
        assert peek(r.address, 6) == b"hidden"  # the parent keeps it


def test_none_is_unmapped_in_the_child(task):
    with task.allocate(3 * P) as r:
        poke(r.address, b"parent")
        r.inherit(VM_INHERIT_NONE)
        assert mapped_in(r.address, r.end)

        def child():
            # the hole is the first place the child's next mmap goes (the
            # introspection thread it starts allocates at once): a mapping
            # of its own may be there, but none of the parent's pages
            m = mapped_in(r.address, r.end)
            assert m == [] or peek(r.address, 6) == bytes(6), "VM_INHERIT_NONE memory is mapped in the child"

        run_in_child(child)
        assert all(m[2] == "rw-p" for m in mapped_in(r.address, r.end))


def test_none_shared_region_is_unmapped_in_the_child(task):
    with task.allocate(P) as r:
        r.inherit(VM_INHERIT_SHARE)
        r.inherit(VM_INHERIT_NONE)
        assert perms_at(r.address) == "rw-s"

        def child():
            assert mapped_in(r.address, r.end) == []
            assert entries_in(r.address, r.end) == []

        run_in_child(child)


def test_none_then_copy_is_inherited_again(task):
    with task.allocate(P) as r:
        poke(r.address, b"back")
        r.inherit(VM_INHERIT_NONE)
        r.inherit(VM_INHERIT_COPY)

        def child():
            assert peek(r.address, 4) == b"back"
            assert entries_in(r.address, r.end)[0].inherit == VM_INHERIT_COPY

        run_in_child(child)


def test_share_then_none_then_share_is_shared_again(task):
    with task.allocate(P) as r:
        r.inherit(VM_INHERIT_SHARE)
        r.inherit(VM_INHERIT_NONE)
        r.inherit(VM_INHERIT_SHARE)

        def child():
            poke(r.address, b"again")

        run_in_child(child)
        assert peek(r.address, 5) == b"again"


def test_none_then_share_is_shared_with_the_child(task):
    with task.allocate(P) as r:
        r.inherit(VM_INHERIT_NONE)
        r.inherit(VM_INHERIT_SHARE)
        assert r.info().inheritance == VM_INHERIT_SHARE and r.info().shared

        def child():
            assert mapped_in(r.address, r.end), "the VM_INHERIT_SHARE region is not mapped in the child"
            poke(r.address, b"shared")

        run_in_child(child)
        assert peek(r.address, 6) == b"shared"


def test_child_record_has_no_none_entries(task):
    with task.allocate(P) as gone, task.allocate(P) as kept:
        gone.inherit(VM_INHERIT_NONE)
        parent_view = [(e.start, e.end, e.prot, e.max_prot, e.inherit, e.shared)
                       for e in SELF.map.entries() if e.inherit != VM_INHERIT_NONE]

        def child():
            entries = SELF.map.entries()
            assert not [e for e in entries if e.inherit == VM_INHERIT_NONE]
            assert entries_in(gone.address, gone.end) == []
            view = [(e.start, e.end, e.prot, e.max_prot, e.inherit, e.shared) for e in entries]
            assert view == parent_view
            assert Task.self().region(kept.address).start == kept.address

        run_in_child(child)
        # the parent keeps its entry
        (e,) = entries_in(gone.address, gone.end)
        assert e.inherit == VM_INHERIT_NONE


# -- SHARE, then back to COPY ---------------------------------------------------------

def test_share_then_copy_gives_a_snapshot_at_fork_time(task):
    with task.allocate(2 * P) as r:
        poke(r.address, b"v1")
        r.inherit(VM_INHERIT_SHARE)
        r.inherit(VM_INHERIT_COPY)
        (e,) = entries_in(r.address, r.end)
        assert e.shared and e.inherit == VM_INHERIT_COPY
        poke(r.address, b"v2")  # the state at fork time

        def child(sync):
            sync()  # 1: the parent has written after the fork
            assert peek(r.address, 2) == b"v2"
            poke(r.address + P, b"child")
            sync()  # 2: the child has written
            assert peek(r.address + 1000, 4) == bytes(4)
            assert perms_at(r.address) == "rw-s"  # still a memfd, but its own

        with forked(child) as sync:
            poke(r.address, b"v3")
            sync()
            sync()
            assert peek(r.address + P, 5) == bytes(5)
            poke(r.address + 1000, b"late")
        assert peek(r.address, 2) == b"v3"
        assert peek(r.address + P, 5) == bytes(5)


def test_share_then_copy_snapshot_keeps_protection(task):
    with task.allocate(P) as r:
        poke(r.address, b"snap")
        r.inherit(VM_INHERIT_SHARE)
        r.inherit(VM_INHERIT_COPY)
        r.protect(VM_PROT_READ)

        def child():
            assert perms_at(r.address) == "r--s"
            (e,) = entries_in(r.address, r.end)
            assert e.prot == VM_PROT_READ
            assert peek(r.address, 4) == b"snap"

        run_in_child(child)


def test_share_then_copy_snapshot_of_a_split_entry(task):
    # two entries sharing one memfd at different offsets
    with task.allocate(3 * P) as r:
        for i in range(3):
            poke(r.address + i * P, b"page%d" % i)
        r.inherit(VM_INHERIT_SHARE)
        task.inherit(r.address + P, 2 * P, VM_INHERIT_COPY)

        def child(sync):
            sync()
            assert peek(r.address, 5) == b"PAGE0"    # shared: the parent's write
            assert peek(r.address + P, 5) == b"page1"  # snapshots
            assert peek(r.address + 2 * P, 5) == b"page2"
            poke(r.address + 2 * P, b"CHILD")

        with forked(child) as sync:
            poke(r.address, b"PAGE0")
            poke(r.address + P, b"PAGE1")
            sync()
        assert peek(r.address + 2 * P, 5) == b"page2"


# -- mixed ---------------------------------------------------------------------------

def test_mixed_inheritance_page_by_page(task):
    with task.allocate(4 * P) as r:
        for i in range(4):
            poke(r.address + i * P, b"p%d" % i)
        a = r.address
        task.inherit(a, P, VM_INHERIT_SHARE)
        task.inherit(a + P, P, VM_INHERIT_NONE)
        task.inherit(a + 3 * P, P, VM_INHERIT_SHARE)
        # page 2 stays COPY
        assert [e.inherit for e in entries_in(a, r.end)] == [
            VM_INHERIT_SHARE, VM_INHERIT_NONE, VM_INHERIT_COPY, VM_INHERIT_SHARE]

        def child(sync):
            assert mapped_in(a + P, a + 2 * P) == []
            assert [perms_at(a), perms_at(a + 2 * P), perms_at(a + 3 * P)] == ["rw-s", "rw-p", "rw-s"]
            assert [e.inherit for e in entries_in(a, r.end)] == [
                VM_INHERIT_SHARE, VM_INHERIT_COPY, VM_INHERIT_SHARE]
            poke(a, b"C0")
            poke(a + 2 * P, b"C2")
            poke(a + 3 * P, b"C3")
            sync()  # 1: the child has written
            sync()  # 2: the parent has written
            assert peek(a, 2) == b"P0"
            assert peek(a + 2 * P, 2) == b"C2"
            assert peek(a + 3 * P, 2) == b"P3"

        with forked(child) as sync:
            sync()
            assert [peek(a + i * P, 2) for i in range(4)] == [b"C0", b"p1", b"p2", b"C3"]
            poke(a, b"P0")
            poke(a + 2 * P, b"P2")
            poke(a + 3 * P, b"P3")
            sync()
        assert [peek(a + i * P, 2) for i in range(4)] == [b"P0", b"p1", b"P2", b"P3"]


# -- grandchildren ----------------------------------------------------------------------

def test_grandchild_inherits_correctly(task):
    with task.allocate(P) as shared, task.allocate(P) as copied, \
            task.allocate(P) as none, task.allocate(P) as late_none:
        shared.inherit(VM_INHERIT_SHARE)
        none.inherit(VM_INHERIT_NONE)
        poke(copied.address, b"c0")
        poke(late_none.address, b"ln")

        def grandchild():
            assert mapped_in(none.address, none.end) == []
            assert mapped_in(late_none.address, late_none.end) == []  # NONE set by the child
            assert peek(copied.address, 2) == b"c1"  # the child's copy, at its fork
            poke(copied.address, b"g!")
            poke(shared.address, b"grandchild")  # goes all the way up
            entries = SELF.map.entries()
            assert not [e for e in entries if e.inherit == VM_INHERIT_NONE]
            assert entries_in(shared.address, shared.end)[0].shared

        def child():
            assert mapped_in(none.address, none.end) == []
            poke(copied.address, b"c1")
            Task.self().inherit(late_none.address, P, VM_INHERIT_NONE)
            run_in_child(grandchild)
            assert peek(copied.address, 2) == b"c1"
            assert peek(shared.address, 10) == b"grandchild"
            assert peek(late_none.address, 2) == b"ln"  # the child still has it

        run_in_child(child)
        assert peek(shared.address, 10) == b"grandchild"
        assert peek(copied.address, 2) == b"c0"
        assert entries_in(late_none.address, late_none.end)[0].inherit == VM_INHERIT_COPY


def test_grandchild_of_share_then_copy_snapshot(task):
    with task.allocate(P) as r:
        poke(r.address, b"gen0")
        r.inherit(VM_INHERIT_SHARE)
        r.inherit(VM_INHERIT_COPY)

        def grandchild():
            assert peek(r.address, 4) == b"gen1"
            poke(r.address, b"gen2")

        def child():
            assert peek(r.address, 4) == b"gen0"
            poke(r.address, b"gen1")
            run_in_child(grandchild)
            assert peek(r.address, 4) == b"gen1"

        run_in_child(child)
        assert peek(r.address, 4) == b"gen0"
