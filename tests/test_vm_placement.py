"""Where VM_FLAGS_ANYWHERE puts memory (XNU's first fit, from the hint of
mach_vm_map and mach_vm_remap, from the bottom for mach_vm_allocate), and
what an OVERWRITE or VM_PROT_COPY does to the rest of a range that holds a
permanent entry (XNU's vm_map_delete, then vm_map_enter's restore test)."""

from __future__ import annotations

import pymach.mach as M
from pymach.mach import byref, mach_task_self, mach_vm_address_t

from procutil import is_free, peek, perms_at, poke, run_in_child

P = 4096
U64 = (1 << 64) - 1
FLOOR = 1 << 32


def allocate(size: int, flags: int = M.VM_FLAGS_ANYWHERE, addr: int = 0) -> tuple[int, int]:
    a = mach_vm_address_t(addr)
    kr = M.mach_vm_allocate(mach_task_self(), byref(a), size, flags)
    return kr, a.value


def vm_map(size: int, addr: int, flags: int = M.VM_FLAGS_ANYWHERE, mask: int = 0) -> tuple[int, int]:
    a = mach_vm_address_t(addr)
    kr = M.mach_vm_map(mach_task_self(), byref(a), size, mask, flags, M.MACH_PORT_NULL, 0, False,
                       M.VM_PROT_DEFAULT, M.VM_PROT_ALL, M.VM_INHERIT_DEFAULT)
    return kr, a.value


def free(a: int, size: int) -> None:
    assert M.mach_vm_deallocate(mach_task_self(), a, size) == M.KERN_SUCCESS


def far_free(npages: int) -> int:
    """A free range well above where first fit is placing memory now."""
    for cand in range(1 << 40, 1 << 46, 1 << 40):
        if is_free(cand, cand + npages * P):
            return cand
    raise AssertionError("no free range")


def test_allocations_in_a_row_rise_and_a_freed_range_is_reused() -> None:
    kr, a = allocate(P)
    assert kr == M.KERN_SUCCESS
    kr, b = allocate(P)
    assert kr == M.KERN_SUCCESS
    assert FLOOR <= a < b
    free(a, P)
    kr, c = allocate(P)
    assert kr == M.KERN_SUCCESS
    try:
        assert c == a, "first fit takes the lowest free range"
    finally:
        free(b, P)
        free(c, P)


def test_mach_vm_map_starts_at_the_hint() -> None:
    hint = far_free(4)
    kr, a = vm_map(P, hint + 123)  # truncated to its page
    assert kr == M.KERN_SUCCESS
    try:
        assert a == hint
        kr, b = vm_map(P, hint)  # taken: the next free page above it
        assert kr == M.KERN_SUCCESS
        assert b == hint + P
        free(b, P)
    finally:
        free(a, P)


def test_mach_vm_allocate_ignores_the_hint() -> None:
    hint = far_free(1)
    kr, a = allocate(P, addr=hint)
    assert kr == M.KERN_SUCCESS
    free(a, P)
    assert a != hint and a < hint


def test_the_highest_hint_is_no_space() -> None:
    for addr in (U64 - P + 1, M.MACH_VM_MAX_ADDRESS, M.MACH_VM_MAX_ADDRESS - P):
        kr, _a = vm_map(2 * P, addr)
        assert kr == M.KERN_NO_SPACE, hex(addr)
    # one page fits just below the top of the map (unless the stack or the
    # vdso happen to be there)
    top = M.MACH_VM_MAX_ADDRESS
    if is_free(top - P, top):
        kr, a = vm_map(P, top - P)
        assert kr == M.KERN_SUCCESS and a == top - P
        free(a, P)


def test_mach_vm_remap_starts_at_the_hint() -> None:
    kr, src = allocate(P)
    assert kr == M.KERN_SUCCESS
    hint = far_free(2)
    a = mach_vm_address_t(hint)
    cur, mx = M.vm_prot_t(), M.vm_prot_t()
    try:
        kr = M.mach_vm_remap(mach_task_self(), byref(a), P, 0, M.VM_FLAGS_ANYWHERE, mach_task_self(), src, True,
                             byref(cur), byref(mx), M.VM_INHERIT_DEFAULT)
        assert kr == M.KERN_SUCCESS
        assert a.value == hint
        free(a.value, P)
    finally:
        free(src, P)


def test_superpage_fixed_off_2mb_is_no_space_before_the_flag_check() -> None:
    base = far_free(1024)
    for extra in (0, M.VM_FLAGS_PURGABLE):
        kr, _a = allocate(P, M.VM_FLAGS_FIXED | M.VM_FLAGS_SUPERPAGE_SIZE_ANY | extra, base + P)
        assert kr == M.KERN_NO_SPACE
    kr, _a = allocate(P, M.VM_FLAGS_FIXED | M.VM_FLAGS_SUPERPAGE_SIZE_ANY | M.VM_FLAGS_PURGABLE, base)
    assert kr == M.KERN_INVALID_ARGUMENT
    assert is_free(base, base + (2 << 20))
    kr, _a = allocate(P, M.VM_FLAGS_ANYWHERE | M.VM_FLAGS_SUPERPAGE_SIZE_ANY | M.VM_FLAGS_TPRO)
    assert kr == M.KERN_INVALID_ARGUMENT


# Permanent entries cannot be removed: each case runs in a fork child.

def _permanent_then_plain() -> tuple[int, int, int]:
    """[P: permanent page][A: plain page], both written."""
    base = far_free(2)
    kr, p = allocate(P, M.VM_FLAGS_FIXED | M.VM_FLAGS_PERMANENT, base)
    assert kr == M.KERN_SUCCESS
    kr, a = allocate(P, M.VM_FLAGS_FIXED, base + P)
    assert kr == M.KERN_SUCCESS
    poke(p, b"perm")
    poke(a, b"data")
    return base, p, a


def test_overwrite_restores_what_lies_after_the_permanent_entry() -> None:
    def child() -> tuple[int, str | None, bytes]:
        base, _p, a = _permanent_then_plain()
        kr, _x = allocate(2 * P, M.VM_FLAGS_FIXED | M.VM_FLAGS_OVERWRITE, base)
        # nothing mapped from the start of the removed page to its end (the
        # byte after it is free): vm_map_enter puts it back
        return kr, perms_at(base), peek(a, 4)
    kr, perms, data = run_in_child(child)
    assert kr == M.KERN_NO_SPACE
    assert perms == "---p"
    assert data == b"data"


def test_overwrite_drops_what_lies_before_the_permanent_entry() -> None:
    def child() -> tuple[int, str | None, str | None]:
        base = far_free(2)
        kr, a = allocate(P, M.VM_FLAGS_FIXED, base)
        assert kr == M.KERN_SUCCESS
        kr, p = allocate(P, M.VM_FLAGS_FIXED | M.VM_FLAGS_PERMANENT, base + P)
        assert kr == M.KERN_SUCCESS
        kr, _x = allocate(2 * P, M.VM_FLAGS_FIXED | M.VM_FLAGS_OVERWRITE, base)
        # the permanent entry starts where the removed one ended: no restore
        return kr, perms_at(a), perms_at(p)
    kr, before, perm = run_in_child(child)
    assert kr == M.KERN_NO_SPACE
    assert before is None
    assert perm == "---p"


def test_prot_copy_drops_the_rest_of_the_range() -> None:
    def child() -> tuple[int, str | None, str | None]:
        base, p, a = _permanent_then_plain()
        kr = M.mach_vm_protect(mach_task_self(), base, 2 * P, False, M.VM_PROT_COPY | M.VM_PROT_READ)
        return kr, perms_at(p), perms_at(a)
    kr, perm, after = run_in_child(child)
    assert kr == M.KERN_NO_SPACE
    assert perm == "---p"
    assert after is None, "vm_map_remap never restores what its delete removed"


def test_overwrite_remap_drops_the_rest_of_the_range() -> None:
    def child() -> tuple[int, str | None, str | None]:
        base, p, a = _permanent_then_plain()
        kr, src = allocate(2 * P)
        assert kr == M.KERN_SUCCESS
        t = mach_vm_address_t(base)
        cur, mx = M.vm_prot_t(), M.vm_prot_t()
        kr = M.mach_vm_remap(mach_task_self(), byref(t), 2 * P, 0, M.VM_FLAGS_FIXED | M.VM_FLAGS_OVERWRITE,
                             mach_task_self(), src, True, byref(cur), byref(mx), M.VM_INHERIT_DEFAULT)
        return kr, perms_at(p), perms_at(a)
    kr, perm, after = run_in_child(child)
    assert kr == M.KERN_NO_SPACE
    assert perm == "---p"
    assert after is None
