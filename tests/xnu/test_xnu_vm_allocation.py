"""Port of the allocate and deallocate suites of xnu-11417.101.15
tests/vm/vm_allocation.c (T_DECLs vm_test_allocate and vm_test_deallocate).

The C file runs suites of unit tests over tables: five allocators
(mach_vm_allocate, mach_vm_map with a zero, 4 KiB or 2 MiB mask, and
mach_vm_map of a named entry), six sizes, and unspecified or fixed (aligned
or unaligned) addresses. Each test here is one suite over one row of its
table, named after the suite, and runs the suite's unit tests in order,
each with its own set-up and tear-down as run_test does. The C harness
forks for each unit test; here a unit test runs in this process (the
memory it leaves is freed afterwards), except those that must die of a
fault, which run in a forked child as there.

Where xnu-11417's own source gives another code than the C test expects,
the case is checked as far as the source agrees and then skipped with the
reason (see docs/deviations.md)."""

from __future__ import annotations

import ctypes
import signal
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

import pymach.mach as M
from pymach.mach import byref, mach_task_self, mach_vm_address_t

from procutil import child_exit_code

vm_page_size = 4096
vm_address_size = 8
U64 = (1 << 64) - 1
UINT_MAX = (1 << 32) - 1
INT_MAX = (1 << 31) - 1
DEFAULT_VM_SIZE = 1024 * 4096
VM_MAP_NULL = 0
_2MB_MASK = 0x1FFFFF


def round_page(x: int) -> int:
    return (x + vm_page_size - 1) & ~(vm_page_size - 1) & U64


def trunc_page(x: int) -> int:
    return x & ~(vm_page_size - 1)


def kr_name(kr: int) -> str:
    return f"{kr:#x} {M.mach_error_string(kr)}"


def assert_mach_return(kr: int, expected_kr: int, routine: str) -> None:
    assert kr == expected_kr, f"{routine} unexpectedly returned: {kr_name(kr)}. Should have returned: " \
        f"{kr_name(expected_kr)}."


def unit(fn: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    """A unit test of the C file: run by run_suite, not collected by pytest."""
    fn.__test__ = False  # type: ignore[attr-defined]
    return fn


class Skip(Exception):
    """A part of a unit test that xnu-11417's source contradicts."""


# -- the harness's global state, one per unit test run --------------------------

@dataclass
class Ctx:
    allocator: int = 0
    size: int = DEFAULT_VM_SIZE
    flag: int = M.VM_FLAGS_ANYWHERE
    aligned: bool = True
    address: int = 0
    fixed_vm_address: int = 0
    fixed_vm_size: int = 0
    # ranges this process must free after the unit test (the C child exits)
    leftovers: list[tuple[int, int]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    # check_fixed_address: the range set aside by get_fixed_address is
    # freed just before an allocator uses an address inside it
    def check_fixed_address(self, address: int, size: int) -> None:
        if self.fixed_vm_address != 0 and self.fixed_vm_address <= address and \
                address + size <= self.fixed_vm_address + self.fixed_vm_size:
            assert_deallocate_success(self.fixed_vm_address, self.fixed_vm_size)
            self.fixed_vm_address = 0
            self.fixed_vm_size = 0

    def allocate_fn(self, map_: int, address: mach_vm_address_t, size: int, flags: int) -> int:
        return ALLOCATORS[self.allocator][0](self, map_, address, size, flags)

    def get_mask(self) -> int:
        return _2MB_MASK if self.allocator == MACH_VM_MAP_2MB else vm_page_size - 1

    def cleanup(self) -> None:
        if self.fixed_vm_address or self.fixed_vm_size:
            M.mach_vm_deallocate(mach_task_self(), self.fixed_vm_address, self.fixed_vm_size)
        for a, n in self.leftovers:
            M.mach_vm_deallocate(mach_task_self(), a, n)
        for p in self.ports:
            M.mach_port_deallocate(mach_task_self(), p)


def wrapper_mach_vm_allocate(ctx: Ctx, map_: int, address: mach_vm_address_t, size: int, flags: int) -> int:
    ctx.check_fixed_address(address.value, size)
    return M.mach_vm_allocate(map_, byref(address), size, flags)


def _map(mask: int) -> Callable[[Ctx, int, mach_vm_address_t, int, int], int]:
    def wrapper_mach_vm_map(ctx: Ctx, map_: int, address: mach_vm_address_t, size: int, flags: int) -> int:
        ctx.check_fixed_address(address.value, size)
        return M.mach_vm_map(map_, byref(address), size, mask, flags, M.MACH_PORT_NULL, 0, False,
                             M.VM_PROT_DEFAULT, M.VM_PROT_ALL, M.VM_INHERIT_DEFAULT)
    return wrapper_mach_vm_map


def memory_entry(size: int) -> tuple[int, int, int]:
    """(kr, size, handle) of a named entry of ``size`` bytes."""
    sz = M.memory_object_size_t(size)
    handle = M.mach_port_t(0)
    kr = M.mach_make_memory_entry_64(mach_task_self(), byref(sz), 0, M.MAP_MEM_NAMED_CREATE | M.VM_PROT_ALL,
                                     byref(handle), 0)
    if kr != M.KERN_SUCCESS:
        return kr, sz.value, handle.value
    assert sz.value == round_page(size), \
        f"mach_make_memory_entry_64() unexpectedly returned a named entry of size {sz.value:#x}"
    return kr, sz.value, handle.value


def wrapper_mach_vm_map_named_entry(ctx: Ctx, map_: int, address: mach_vm_address_t, size: int,
                                    flags: int) -> int:
    kr, size, object_handle = memory_entry(size)
    if kr != M.KERN_SUCCESS:
        return kr
    ctx.check_fixed_address(address.value, size)
    kr = M.mach_vm_map(map_, byref(address), size, 0, flags, object_handle, 0, False, M.VM_PROT_DEFAULT,
                       M.VM_PROT_ALL, M.VM_INHERIT_DEFAULT)
    assert M.mach_port_deallocate(mach_task_self(), object_handle) == M.KERN_SUCCESS, "mach_port_deallocate()"
    return kr


MACH_VM_ALLOCATE, MACH_VM_MAP, MACH_VM_MAP_4kB, MACH_VM_MAP_2MB, MACH_VM_MAP_NAMED_ENTRY = range(5)
ALLOCATORS: list[tuple[Callable[[Ctx, int, mach_vm_address_t, int, int], int], str]] = [
    (wrapper_mach_vm_allocate, "mach_vm_allocate()"),
    (_map(0), "mach_vm_map() (zero mask)"),
    (_map(0xFFF), "mach_vm_map() (4 kB address alignment)"),
    (_map(_2MB_MASK), "mach_vm_map() (2 MB address alignment)"),
    (wrapper_mach_vm_map_named_entry, "mach_vm_map() (named entry, zero mask)"),
]
VM_SIZES = [(DEFAULT_VM_SIZE, "default/input"), (0, "zero"), (4096, "aligned"), (1, "unaligned"),
            (4095, "unaligned"), (4097, "unaligned")]
DEFAULT_INPUT, ZERO_BYTES, ONE_PAGE, ONE_BYTE, ONE_PAGE_MINUS_ONE_BYTE, ONE_PAGE_AND_ONE_BYTE = range(6)
ANYWHERE, FIXED = 0, 1
ADDRESS_FLAGS = [(M.VM_FLAGS_ANYWHERE, "unspecified"), (M.VM_FLAGS_FIXED, "fixed")]
ALIGNED, UNALIGNED = 0, 1
ADDRESS_ALIGNMENTS = [(True, " aligned"), (False, " unaligned")]


def assert_deallocate_success(address: int, size: int) -> None:
    assert_mach_return(M.mach_vm_deallocate(mach_task_self(), address, size), M.KERN_SUCCESS,
                       "mach_vm_deallocate()")


def assert_allocate_return(ctx: Ctx, address: mach_vm_address_t, size: int, flag: int, expected_kr: int) -> None:
    assert_mach_return(ctx.allocate_fn(mach_task_self(), address, size, flag), expected_kr, "Allocator")


def assert_allocate_success(ctx: Ctx, address: mach_vm_address_t, size: int, flag: int) -> None:
    assert_allocate_return(ctx, address, size, flag, M.KERN_SUCCESS)


def assert_aligned_address(ctx: Ctx, address: int) -> None:
    assert address & ctx.get_mask() == 0, f"Address {address:#x} is unexpectedly unaligned."


def assert_trunc_address(ctx: Ctx, address: int, trunc_address: int) -> None:
    assert trunc_address == address & ~ctx.get_mask(), \
        f"Address {address:#x} is unexpectedly not truncated to address {trunc_address:#x}."


def aligned_size(address: int, size: int) -> int:
    return round_page(address - trunc_page(address) + size)


# -- memory patterns (filter_addresses_do_else, over whole runs of words) ------------

def _selected(pattern: str, reversed_: bool, address: int, n: int) -> list[range]:
    """The indices k in [0, n) of the words at address + 8k where
    filter(address + 8k) != reversed, as ranges."""
    assert address % vm_address_size == 0
    if pattern == "empty":
        return [range(0, n)] if reversed_ else []
    if pattern == "checkerboard":  # !((i / 8) & 1)
        first = (address // 8) & 1
        return [range(first ^ 1 if reversed_ else first, n, 2)]
    assert pattern == "page_ends"  # residue 0 or vm_page_size - 8
    per = vm_page_size // 8
    k0 = ((-address) % vm_page_size) // 8
    k1 = ((vm_page_size - 8 - address) % vm_page_size) // 8
    if not reversed_:
        return [range(k0, n, per), range(k1, n, per)]
    out = []
    start = 0
    for end in sorted(set(range(k0, n, per)) | set(range(k1, n, per))):
        if end > start:
            out.append(range(start, end))
        start = end + 1
    if start < n:
        out.append(range(start, n))
    return out


def _words(size: int) -> int:
    # for (i = 0; i + vm_address_size < size; i += vm_address_size)
    return max(0, (size - 1) // vm_address_size)


def write_pattern(pattern: str, reversed_: bool, address: int, size: int) -> None:
    n = _words(size)
    if not n:
        return
    words = (ctypes.c_uint64 * n).from_address(address)
    for r in _selected(pattern, reversed_, address, n):
        values = range(address + 8 * r.start, address + 8 * r.stop, 8 * r.step) if len(r) else range(0)
        if r.step == 1:
            buf = array("Q", values)
            ctypes.memmove(address + 8 * r.start, buf.buffer_info()[0], 8 * len(buf))
        else:
            words[r.start:r.stop:r.step] = list(values)


def verify_pattern(pattern: str, reversed_: bool, address: int, size: int, name: str) -> None:
    n = _words(size)
    if not n:
        return
    got = array("Q")
    got.frombytes(ctypes.string_at(address, 8 * n))
    want = array("Q", bytes(8 * n))
    for r in _selected(pattern, reversed_, address, n):
        if len(r):
            want[r.start:r.stop:r.step] = array("Q", range(address + 8 * r.start, address + 8 * r.stop,
                                                           8 * r.step))[:len(r)]
    if got != want:
        k = next(i for i in range(n) if got[i] != want[i])
        pytest.fail(f"{name}: address {address + 8 * k:#x} unexpectedly has value {got[k]:#x}, "
                    f"instead of {want[k]:#x}.")


def write_and_verify_pattern(pattern: str, reversed_: bool, address: int, size: int, name: str) -> None:
    write_pattern(pattern, reversed_, address, size)
    verify_pattern(pattern, reversed_, address, size, name)


# -- set-up and tear-down -------------------------------------------------------

def get_fixed_address(ctx: Ctx, size: int) -> int:
    """An address where ``size`` bytes can go, found by an ANYWHERE
    allocation that is kept (freed by check_fixed_address)."""
    address = mach_vm_address_t(0)
    if size != 0:
        size = round_page(size + 2 * vm_page_size)
    assert_allocate_success(ctx, address, size, M.VM_FLAGS_ANYWHERE)
    assert ctx.fixed_vm_address == 0 and ctx.fixed_vm_size == 0, "previous fixed address not used"
    ctx.fixed_vm_address = address.value
    ctx.fixed_vm_size = size
    assert_aligned_address(ctx, address.value)
    return address.value


def set_up_vm_address(ctx: Ctx, size: int, flags_idx: int, alignments_idx: int) -> None:
    ctx.flag = ADDRESS_FLAGS[flags_idx][0]
    ctx.aligned = ADDRESS_ALIGNMENTS[alignments_idx][0]
    if not ctx.flag & M.VM_FLAGS_ANYWHERE:
        address = get_fixed_address(ctx, size)
        if not ctx.aligned:
            address += 1
        ctx.address = address
    else:
        # mach_vm_map() with VM_FLAGS_ANYWHERE starts looking for an address
        # at the one supplied and goes up, without wrapping around.
        ctx.address = 0


def allocate(ctx: Ctx, size: int) -> None:
    address = mach_vm_address_t(ctx.address)
    assert_allocate_success(ctx, address, size, ctx.flag)
    ctx.leftovers.append((address.value, size))
    if not ctx.flag & M.VM_FLAGS_ANYWHERE:
        assert_trunc_address(ctx, ctx.address, address.value)
    ctx.address = address.value


def deallocate(ctx: Ctx) -> None:
    assert_deallocate_success(ctx.address, ctx.size)


@dataclass(frozen=True)
class Row:
    """One row of the tables: the indices run_*_test_suites loops over."""
    allocator: int = MACH_VM_ALLOCATE
    size: int = DEFAULT_INPUT
    flag: int = ANYWHERE
    alignment: int = ALIGNED

    def ctx(self) -> Ctx:
        return Ctx(allocator=self.allocator, size=VM_SIZES[self.size][0])


def set_up_allocator_and_vm_variables(row: Row) -> Ctx:
    ctx = row.ctx()
    set_up_vm_address(ctx, ctx.size, row.flag, row.alignment)
    return ctx


def set_up_allocator_and_vm_variables_and_allocate(row: Row) -> Ctx:
    ctx = set_up_allocator_and_vm_variables(row)
    allocate(ctx, ctx.size)
    return ctx


def set_up_allocator_and_vm_size(row: Row) -> Ctx:
    return row.ctx()


def do_nothing(ctx: Ctx) -> None:
    pass


UnitTest = tuple[str, Callable[[Ctx], None]]


def run_suite(row: Row, set_up: Callable[[Row], Ctx], tests: list[UnitTest], tear_down: Callable[[Ctx], None]
              ) -> None:
    skips = []
    for name, test in tests:
        ctx = set_up(row)
        try:
            try:
                test(ctx)
            except Skip as s:
                skips.append(f"{name}: {s}")
                continue
            except AssertionError as err:
                raise AssertionError(f"[{name}] {err}") from None
            tear_down(ctx)
            ctx.leftovers.clear()
        finally:
            ctx.cleanup()
    if skips:
        pytest.skip("; ".join(skips))


# -- address tests ----------------------------------------------------------------

@unit
def test_nonzero_address_iff_nonzero_size(ctx: Ctx) -> None:
    address, size = ctx.address, ctx.size
    assert (address and size) or (not address and not size), \
        f"Address {address:#x} is unexpectedly {'non' if address else ''}zero."


@unit
def test_aligned_address(ctx: Ctx) -> None:
    assert_aligned_address(ctx, ctx.address)


# -- read and write tests -----------------------------------------------------------

@unit
def test_zero_filled(ctx: Ctx) -> None:
    verify_pattern("empty", False, trunc_page(ctx.address), aligned_size(ctx.address, ctx.size), "zero-filled")


@unit
def test_write_address_filled(ctx: Ctx) -> None:
    write_and_verify_pattern("empty", True, ctx.address, round_page(ctx.size), "address-filled")


@unit
def test_write_checkerboard(ctx: Ctx) -> None:
    write_and_verify_pattern("checkerboard", False, ctx.address, round_page(ctx.size), "checkerboard")


@unit
def test_write_reverse_checkerboard(ctx: Ctx) -> None:
    write_and_verify_pattern("checkerboard", True, ctx.address, round_page(ctx.size), "reverse checkerboard")


@unit
def test_write_page_ends(ctx: Ctx) -> None:
    write_and_verify_pattern("page_ends", False, ctx.address, round_page(ctx.size), "page ends")


@unit
def test_write_page_interiors(ctx: Ctx) -> None:
    write_and_verify_pattern("page_ends", True, ctx.address, round_page(ctx.size), "page interiors")


# -- allocation error return tests ------------------------------------------------------

@unit
def test_reallocate_pages(ctx: Ctx) -> None:
    address = trunc_page(ctx.address)
    size = aligned_size(ctx.address, ctx.size)
    for i in range(address, address + size, vm_page_size):
        a = mach_vm_address_t(i)
        kr = ctx.allocate_fn(mach_task_self(), a, vm_page_size, M.VM_FLAGS_FIXED)
        if kr == M.KERN_SUCCESS:
            ctx.leftovers.append((a.value, vm_page_size))
        assert kr == M.KERN_NO_SPACE, f"Allocator at address {i:#x} unexpectedly returned: {kr_name(kr)}."


@unit
def test_allocate_in_null_map(ctx: Ctx) -> None:
    address = mach_vm_address_t(ctx.address)
    assert_mach_return(ctx.allocate_fn(VM_MAP_NULL, address, ctx.size, ctx.flag), M.MACH_SEND_INVALID_DEST,
                       "Allocator")


def _c_int(x: int) -> int:
    return x - (1 << 32) if x & 0x80000000 else x


@unit
def test_allocate_with_kernel_flags(ctx: Ctx) -> None:
    valid_flags = M.VM_FLAGS_USER_ALLOCATE | M.VM_FLAGS_USER_MAP | M.VM_FLAGS_USER_REMAP | M.VM_FLAGS_ALIAS_MASK
    for i in range(32):
        test_flag = 1 << i
        if valid_flags & test_flag:
            continue
        bad_flag = _c_int(test_flag | ctx.flag)
        address = mach_vm_address_t(ctx.address)
        kr = ctx.allocate_fn(mach_task_self(), address, ctx.size, bad_flag)
        if kr == M.KERN_SUCCESS:
            ctx.leftovers.append((address.value, ctx.size))
        assert kr == M.KERN_INVALID_ARGUMENT, f"Allocator with flag {bad_flag:#x} unexpectedly returned: " \
            f"{kr_name(kr)}."


@unit
def test_allocate_superpage_with_incompatible_flags(ctx: Ctx) -> None:
    contradicted = []
    incompatible_flags = M.VM_FLAGS_PURGABLE | M.VM_FLAGS_TPRO
    for i in range(32):
        test_flag = 1 << i
        if not incompatible_flags & test_flag:
            continue
        bad_flag = test_flag | ctx.flag | M.VM_FLAGS_SUPERPAGE_SIZE_ANY
        # Where xnu-11417 returns something else first, by its own source:
        # mach_vm_allocate of size 0 succeeds at once (vm_sanitize's
        # SIZE_ZERO_SUCCEEDS), and vm_map_enter's placement runs before its
        # check of these flags: vm_map_locate_space_fixed refuses a FIXED
        # address off the 2 MiB superpage mask with KERN_NO_SPACE.
        if ctx.allocator == MACH_VM_ALLOCATE and ctx.size == 0:
            contradicted.append(f"{bad_flag:#x}: size 0 gives KERN_SUCCESS in mach_vm_allocate_kernel")
            continue
        if ctx.allocator != MACH_VM_MAP_NAMED_ENTRY and ctx.size and not ctx.flag & M.VM_FLAGS_ANYWHERE \
                and trunc_page(ctx.address) & _2MB_MASK:
            contradicted.append(f"{bad_flag:#x} at {ctx.address:#x}: KERN_NO_SPACE from "
                                "vm_map_locate_space_fixed (the superpage mask)")
            continue
        address = mach_vm_address_t(ctx.address)
        kr = ctx.allocate_fn(mach_task_self(), address, ctx.size, bad_flag)
        if kr == M.KERN_SUCCESS:
            ctx.leftovers.append((address.value, ctx.size))
        assert kr == M.KERN_INVALID_ARGUMENT, f"Allocator with flag {bad_flag:#x} unexpectedly returned: " \
            f"{kr_name(kr)}."
    if contradicted:
        raise Skip("xnu-11417's source contradicts the expected KERN_INVALID_ARGUMENT: " + ", ".join(contradicted))


# -- mach_vm_map() error tests ------------------------------------------------------

@unit
def test_mach_vm_map_protection_inheritance_error(ctx: Ctx) -> None:
    address = mach_vm_address_t(ctx.address)
    size = ctx.size
    mask = 0 if ctx.allocator in (MACH_VM_MAP, MACH_VM_MAP_NAMED_ENTRY) else ctx.get_mask()
    object_handle = M.MACH_PORT_NULL
    cur_protections = [M.VM_PROT_DEFAULT, M.VM_PROT_ALL + 1, ~M.VM_PROT_IS_MASK, INT_MAX]
    max_protections = [M.VM_PROT_ALL, M.VM_PROT_ALL + 1, ~M.VM_PROT_IS_MASK, INT_MAX]
    inheritances = [M.VM_INHERIT_DEFAULT, M.VM_INHERIT_LAST_VALID + 1, UINT_MAX]
    if ctx.allocator == MACH_VM_MAP_NAMED_ENTRY:
        kr, size, object_handle = memory_entry(size)
        assert kr == M.KERN_SUCCESS, "mach_make_memory_entry_64()"
        if object_handle:
            ctx.ports.append(object_handle)
    for i in range(4):
        for j in range(4):
            for k in range(3):
                # Skip the case with all valid arguments.
                if i == int(j == int(k == 0)):
                    continue
                kr = M.mach_vm_map(mach_task_self(), byref(address), size, mask, ctx.flag, object_handle, 0,
                                   False, cur_protections[i], max_protections[j], inheritances[k])
                if kr == M.KERN_SUCCESS:
                    ctx.leftovers.append((address.value, size))
                assert kr == M.KERN_INVALID_ARGUMENT, \
                    f"mach_vm_map() with cur_protection {cur_protections[i]:#x}, max_protection " \
                    f"{max_protections[j]:#x}, inheritance {inheritances[k]:#x} unexpectedly returned: " \
                    f"{kr_name(kr)}."


@unit
def test_mach_vm_map_large_mask_overflow_error(ctx: Ctx) -> None:
    address = mach_vm_address_t(0x1)
    size = ctx.size
    mask = U64
    # mach_vm_map() cannot allocate 0 bytes at an unspecified address
    kr_expected = M.KERN_NO_SPACE if size else M.KERN_INVALID_ARGUMENT
    kr = M.mach_vm_map(mach_task_self(), byref(address), size, mask, M.VM_FLAGS_ANYWHERE, M.MACH_PORT_NULL, 0,
                       False, M.VM_PROT_DEFAULT, M.VM_PROT_ALL, M.VM_INHERIT_DEFAULT)
    if kr == M.KERN_SUCCESS:
        ctx.leftovers.append((address.value, size))
    assert_mach_return(kr, kr_expected, "mach_vm_map()")


# -- size edge case tests -------------------------------------------------------------

def allocate_edge_size(ctx: Ctx, address: mach_vm_address_t, size: int, expected_kr: int) -> None:
    kr = ctx.allocate_fn(mach_task_self(), address, size, M.VM_FLAGS_ANYWHERE)
    if kr == M.KERN_SUCCESS and size and expected_kr != M.KERN_SUCCESS:
        ctx.leftovers.append((address.value, size))
    assert_mach_return(kr, expected_kr, "Allocator")


@unit
def test_allocate_zero_size(ctx: Ctx) -> None:
    address = mach_vm_address_t(0)
    kr_expected = M.KERN_INVALID_ARGUMENT if ctx.allocator != MACH_VM_ALLOCATE else M.KERN_SUCCESS
    allocate_edge_size(ctx, address, 0, kr_expected)
    if kr_expected == M.KERN_SUCCESS:
        assert_deallocate_success(address.value, 0)


@unit
def test_allocate_invalid_large_size(ctx: Ctx) -> None:
    size = U64 - vm_page_size + 1
    if ctx.allocator != MACH_VM_MAP_NAMED_ENTRY:
        allocate_edge_size(ctx, mach_vm_address_t(0), size, M.KERN_NO_SPACE)
    else:
        # Named entries cannot currently be bigger than 4 GB - 4 kb.
        kr, _size, handle = memory_entry(size)
        if handle:
            ctx.ports.append(handle)
        assert_mach_return(kr, M.KERN_FAILURE, "mach_make_memory_entry_64()")


@unit
def test_allocate_overflowing_size(ctx: Ctx) -> None:
    allocate_edge_size(ctx, mach_vm_address_t(0), U64, M.KERN_INVALID_ARGUMENT)


# -- address allocation tests --------------------------------------------------------

@unit
def test_allocate_at_zero(ctx: Ctx) -> None:
    address = mach_vm_address_t(0)
    size = ctx.size
    kr_expected = M.KERN_INVALID_ADDRESS if size else (
        M.KERN_INVALID_ARGUMENT if ctx.allocator != MACH_VM_ALLOCATE else M.KERN_SUCCESS)
    kr = ctx.allocate_fn(mach_task_self(), address, size, M.VM_FLAGS_FIXED)
    if kr == M.KERN_SUCCESS and size:
        ctx.leftovers.append((address.value, size))
    assert_mach_return(kr, kr_expected, "Allocator")
    if kr_expected == M.KERN_SUCCESS:
        assert address.value == 0, f"Address {address.value:#x} is unexpectedly nonzero."
        assert_deallocate_success(address.value, size)


@unit
def test_allocate_2MB_boundary_unaligned_page_aligned_address(ctx: Ctx) -> None:
    size = ctx.size
    address = mach_vm_address_t(get_fixed_address(ctx, size + vm_page_size) + vm_page_size)
    # mach_vm_allocate() cannot allocate 0 bytes, and fails with a fixed
    # boundary-unaligned truncated address.
    if not size and ctx.allocator != MACH_VM_ALLOCATE:
        kr_expected = M.KERN_INVALID_ARGUMENT
    elif ctx.allocator == MACH_VM_MAP_2MB:
        kr_expected = M.KERN_NO_SPACE
    else:
        kr_expected = M.KERN_SUCCESS
    kr = ctx.allocate_fn(mach_task_self(), address, size, M.VM_FLAGS_FIXED)
    if kr == M.KERN_SUCCESS and size:
        ctx.leftovers.append((address.value, size))
    assert_mach_return(kr, kr_expected, "Allocator")
    if kr_expected == M.KERN_SUCCESS:
        assert_deallocate_success(address.value, size)


@unit
def test_allocate_page_with_highest_address_hint(ctx: Ctx) -> None:
    # Highest valid page-aligned address.
    address = mach_vm_address_t(U64 - vm_page_size + 1)
    if ctx.allocator == MACH_VM_ALLOCATE:
        # mach_vm_allocate() starts from 0x0 and succeeds.
        assert_allocate_success(ctx, address, vm_page_size, M.VM_FLAGS_ANYWHERE)
        ctx.leftovers.append((address.value, vm_page_size))
        assert_aligned_address(ctx, address.value)
        assert_deallocate_success(address.value, vm_page_size)
    else:
        # mach_vm_map() starts from the supplied address, and fails with
        # KERN_NO_SPACE, see 8016663.
        kr = ctx.allocate_fn(mach_task_self(), address, vm_page_size, M.VM_FLAGS_ANYWHERE)
        if kr == M.KERN_SUCCESS:
            ctx.leftovers.append((address.value, vm_page_size))
        assert_mach_return(kr, M.KERN_NO_SPACE, "Allocator")


@unit
def test_allocate_first_fit_pages(ctx: Ctx) -> None:
    address1 = mach_vm_address_t(0)
    assert_allocate_success(ctx, address1, vm_page_size, M.VM_FLAGS_ANYWHERE)
    ctx.leftovers.append((address1.value, vm_page_size))
    assert_aligned_address(ctx, address1.value)
    address2 = mach_vm_address_t(address1.value)
    assert_allocate_success(ctx, address2, vm_page_size, M.VM_FLAGS_ANYWHERE)
    ctx.leftovers.append((address2.value, vm_page_size))
    assert_aligned_address(ctx, address2.value)
    assert address2.value > address1.value, \
        f"Second address {address2.value:#x} is unexpectedly not higher than first address {address1.value:#x}."
    for i in range(address1.value, address2.value + 1, vm_page_size):
        a = mach_vm_address_t(i)
        kr = ctx.allocate_fn(mach_task_self(), a, vm_page_size, M.VM_FLAGS_FIXED)
        if kr == M.KERN_SUCCESS:
            ctx.leftovers.append((a.value, vm_page_size))
        assert kr != M.KERN_SUCCESS, f"Allocator at address {i:#x} unexpectedly succeeded."
    assert_deallocate_success(address1.value, vm_page_size)
    assert_deallocate_success(address2.value, vm_page_size)


# -- deallocation segfault tests ------------------------------------------------------

def access_deallocated_range_address(ctx: Ctx, address: int) -> None:
    deallocate(ctx)
    bad_value = ctypes.c_uint64.from_address(address).value
    pytest.fail(f"Unexpectedly read value {bad_value:#x} at address {address:#x}.")


@unit
def test_access_deallocated_range_start(ctx: Ctx) -> None:
    access_deallocated_range_address(ctx, ctx.address)


@unit
def test_access_deallocated_range_middle(ctx: Ctx) -> None:
    access_deallocated_range_address(ctx, ctx.address + (round_page(ctx.size) >> 1))


@unit
def test_access_deallocated_range_end(ctx: Ctx) -> None:
    access_deallocated_range_address(ctx, round_page(ctx.size) - vm_address_size + ctx.address)


# -- deallocation and reallocation tests -----------------------------------------------

@unit
def test_deallocate_twice(ctx: Ctx) -> None:
    deallocate(ctx)
    deallocate(ctx)


@unit
def test_write_pattern_deallocate_reallocate_zero_filled(ctx: Ctx) -> None:
    address = mach_vm_address_t(ctx.address)
    size = ctx.size
    write_pattern("page_ends", False, address.value, size)
    deallocate(ctx)
    assert_allocate_success(ctx, address, size, M.VM_FLAGS_FIXED)
    verify_pattern("empty", False, address.value, size, "zero-filled")
    deallocate(ctx)


# -- deallocation edge case tests ----------------------------------------------------------

@unit
def test_deallocate_zero_size_ranges(ctx: Ctx) -> None:
    addresses = [0x0, 0x1, vm_page_size - 1, vm_page_size, vm_page_size + 1, UINT_MAX - vm_page_size + 1,
                 UINT_MAX, U64 - vm_page_size + 1, U64]
    for a in addresses:
        kr = M.mach_vm_deallocate(mach_task_self(), a, 0)
        assert kr == M.KERN_SUCCESS, f"mach_vm_deallocate() at address {a:#x}: {kr_name(kr)}"


@unit
def test_deallocate_rounded_zero_end_ranges(ctx: Ctx) -> None:
    # Every range here ends in the last page of the 64-bit space, so its end
    # rounds to 0: vm_sanitize_addr_size refuses it with KERN_INVALID_ARGUMENT,
    # and xnu-11417's compatibility hook for vm_deallocate only reports it
    # ("telemeter_dont_rewrite_err"): the success expected here is history.
    raise Skip("xnu-11417's source contradicts it: vm_sanitize_err_compat_addr_size_vm_deallocate keeps "
               "KERN_INVALID_ARGUMENT for ranges whose end rounds to 0 (pymach does the same)")
    ranges = [(0x0, U64), (0x0, U64 - vm_page_size + 2), (0x1, U64 - 1), (0x1, U64 - vm_page_size + 1),
              (0x2, U64 - 2), (0x2, U64 - vm_page_size), (U64 - vm_page_size + 1, vm_page_size - 1),
              (U64 - vm_page_size + 1, 1), (U64 - 1, 1)]
    for a, s in ranges:
        kr = M.mach_vm_deallocate(mach_task_self(), a, s)
        assert kr == M.KERN_SUCCESS, f"mach_vm_deallocate() at address {a:#x} size {s:#x}: {kr_name(kr)}"


@unit
def test_deallocate_wrapped_around_ranges(ctx: Ctx) -> None:
    ranges = [(0x1, U64), (vm_page_size, U64 - vm_page_size + 1), (U64 - vm_page_size + 1, vm_page_size),
              (U64, 1)]
    for a, s in ranges:
        kr = M.mach_vm_deallocate(mach_task_self(), a, s)
        assert kr == M.KERN_INVALID_ARGUMENT, \
            f"mach_vm_deallocate() at address {a:#x} size {s:#x}: {kr_name(kr)}"


@unit
def test_deallocate_in_null_map(ctx: Ctx) -> None:
    assert_mach_return(M.mach_vm_deallocate(VM_MAP_NULL, ctx.address, ctx.size), M.MACH_SEND_INVALID_DEST,
                       "mach_vm_deallocate()")


# -- the suites ---------------------------------------------------------------------------

allocate_main_tests: list[UnitTest] = [
    ("Allocated address is nonzero iff size is nonzero", test_nonzero_address_iff_nonzero_size),
    ("Allocated address is page-aligned", test_aligned_address),
    ("Allocated memory is zero-filled", test_zero_filled),
    ("Write and verify address-filled pattern", test_write_address_filled),
    ("Write and verify checkerboard pattern", test_write_checkerboard),
    ("Write and verify reverse checkerboard pattern", test_write_reverse_checkerboard),
    ("Write and verify page ends pattern", test_write_page_ends),
    ("Write and verify page interiors pattern", test_write_page_interiors),
    ("Reallocate allocated pages", test_reallocate_pages),
]
allocate_address_error_tests: list[UnitTest] = [
    ("Allocate at address zero", test_allocate_at_zero),
    ("Allocate at a 2 MB boundary-unaligned, page-aligned address",
     test_allocate_2MB_boundary_unaligned_page_aligned_address),
]
allocate_argument_error_tests: list[UnitTest] = [
    ("Allocate in NULL VM map", test_allocate_in_null_map),
    ("Allocate with kernel flags", test_allocate_with_kernel_flags),
    ("Allocate super-page with incompatible flags", test_allocate_superpage_with_incompatible_flags),
]
allocate_fixed_size_tests: list[UnitTest] = [
    ("Allocate zero size", test_allocate_zero_size),
    ("Allocate overflowing size", test_allocate_overflowing_size),
    ("Allocate a page with highest address hint", test_allocate_page_with_highest_address_hint),
    ("Allocate two pages and verify first fit strategy", test_allocate_first_fit_pages),
]
allocate_invalid_large_size_test: list[UnitTest] = [
    ("Allocate invalid large size", test_allocate_invalid_large_size),
]
mach_vm_map_protection_inheritance_error_test: list[UnitTest] = [
    ("mach_vm_map() with invalid protection/inheritance arguments", test_mach_vm_map_protection_inheritance_error),
]
mach_vm_map_large_mask_overflow_error_test: list[UnitTest] = [
    ("mach_vm_map() with large address mask", test_mach_vm_map_large_mask_overflow_error),
]
access_deallocated_memory_tests: list[UnitTest] = [
    ("Read start of deallocated range", test_access_deallocated_range_start),
    ("Read middle of deallocated range", test_access_deallocated_range_middle),
    ("Read end of deallocated range", test_access_deallocated_range_end),
]
deallocate_reallocate_tests: list[UnitTest] = [
    ("Deallocate twice", test_deallocate_twice),
    ("Write pattern, deallocate, reallocate (deallocated memory is inaccessible), and verify memory is "
     "zero-filled", test_write_pattern_deallocate_reallocate_zero_filled),
]
deallocate_null_map_test: list[UnitTest] = [
    ("Deallocate in NULL VM map", test_deallocate_in_null_map),
]
deallocate_edge_case_tests: list[UnitTest] = [
    ("Deallocate zero size ranges", test_deallocate_zero_size_ranges),
    ("Deallocate memory ranges whose end rounds to 0x0", test_deallocate_rounded_zero_end_ranges),
    ("Deallocate wrapped around memory ranges", test_deallocate_wrapped_around_ranges),
]


# -- the tables of run_allocate_test_suites and run_deallocate_test_suites ---------------------

def _row_id(row: Row, with_allocator: bool = True, with_address: bool = True) -> str:
    parts = []
    if with_allocator:
        parts.append(ALLOCATORS[row.allocator][1])
    if with_address:
        parts.append(ADDRESS_FLAGS[row.flag][1] + ("" if row.flag == ANYWHERE else
                                                  ADDRESS_ALIGNMENTS[row.alignment][1]))
    parts.append(f"{VM_SIZES[row.size][1]} size {VM_SIZES[row.size][0]:#x}")
    return ", ".join(parts)


def _address_rows(allocators: range) -> list[Row]:
    rows = []
    for allocator in allocators:
        for size in range(len(VM_SIZES)):
            for flag in range(len(ADDRESS_FLAGS)):
                for alignment in range(len(ADDRESS_ALIGNMENTS)):
                    # An allocated address will be page-aligned.
                    if flag == ANYWHERE and alignment == UNALIGNED:
                        continue
                    rows.append(Row(allocator, size, flag, alignment))
    return rows


# run_allocate_test_suites skips the zero size mach_vm_map() rows at a fixed address
ALLOCATE_ROWS = [r for r in _address_rows(range(len(ALLOCATORS)))
                 if not (r.allocator != MACH_VM_ALLOCATE and r.size == ZERO_BYTES and r.flag == FIXED)]
SIZE_ROWS = [Row(a, s) for a in range(len(ALLOCATORS)) for s in range(len(VM_SIZES))]
DEALLOCATE_ROWS = _address_rows(range(1))


def _ids(rows: list[Row], **kw: bool) -> list[str]:
    return [_row_id(r, **kw) for r in rows]


class TestVmTestAllocate:
    """T_DECL vm_test_allocate: run_allocate_test_suites."""

    @pytest.mark.parametrize("row", ALLOCATE_ROWS, ids=_ids(ALLOCATE_ROWS))
    def test_argument_error_tests(self, row: Row) -> None:
        run_suite(row, set_up_allocator_and_vm_variables, allocate_argument_error_tests, do_nothing)

    @pytest.mark.parametrize("row", [r for r in ALLOCATE_ROWS if r.allocator != MACH_VM_ALLOCATE],
                             ids=_ids([r for r in ALLOCATE_ROWS if r.allocator != MACH_VM_ALLOCATE]))
    def test_protection_and_inheritance_error_test(self, row: Row) -> None:
        run_suite(row, set_up_allocator_and_vm_variables, mach_vm_map_protection_inheritance_error_test,
                  do_nothing)

    # mach_vm_map() cannot allocate 0 bytes, see 8003930.
    MAIN_ROWS = [r for r in ALLOCATE_ROWS if r.allocator == MACH_VM_ALLOCATE or r.size != ZERO_BYTES]

    @pytest.mark.parametrize("row", MAIN_ROWS, ids=_ids(MAIN_ROWS))
    def test_main_allocation_tests(self, row: Row) -> None:
        run_suite(row, set_up_allocator_and_vm_variables_and_allocate, allocate_main_tests, deallocate)

    @pytest.mark.parametrize("row", SIZE_ROWS, ids=_ids(SIZE_ROWS, with_address=False))
    def test_address_error_allocation_tests(self, row: Row) -> None:
        run_suite(row, set_up_allocator_and_vm_size, allocate_address_error_tests, do_nothing)

    @pytest.mark.parametrize("allocator", range(len(ALLOCATORS)), ids=[d for _f, d in ALLOCATORS])
    def test_fixed_size_allocation_tests(self, allocator: int) -> None:
        run_suite(Row(allocator), set_up_allocator_and_vm_size, allocate_fixed_size_tests, do_nothing)

    # mach_vm_map() with a named entry is left out, as in the C suite (8048580)
    @pytest.mark.parametrize("allocator", range(MACH_VM_MAP_NAMED_ENTRY),
                             ids=[d for _f, d in ALLOCATORS[:MACH_VM_MAP_NAMED_ENTRY]])
    def test_invalid_large_size_allocation_test(self, allocator: int) -> None:
        run_suite(Row(allocator), set_up_allocator_and_vm_size, allocate_invalid_large_size_test, do_nothing)

    @pytest.mark.parametrize("size", range(len(VM_SIZES)), ids=[f"size {s:#x}" for s, _d in VM_SIZES])
    def test_large_mask_overflow_error_test(self, size: int) -> None:
        run_suite(Row(MACH_VM_ALLOCATE, size), set_up_allocator_and_vm_size,
                  mach_vm_map_large_mask_overflow_error_test, do_nothing)


def _in_child_expecting_sigsegv(row: Row, tests: list[UnitTest]) -> None:
    """Each unit test in a fork child that must die of SIGSEGV
    (set_expected_signal(SIGSEGV) and child_test_passed)."""
    for name, test in tests:
        def run(test: Callable[[Ctx], None] = test) -> None:
            test(set_up_allocator_and_vm_variables_and_allocate(row))
        code = child_exit_code(run)
        assert code == -signal.SIGSEGV, f"[{name}] the child ended with {code}, not SIGSEGV"


class TestVmTestDeallocate:
    """T_DECL vm_test_deallocate: run_deallocate_test_suites (all
    allocations with mach_vm_allocate())."""

    # Nothing gets deallocated if size is zero.
    ACCESS_ROWS = [r for r in DEALLOCATE_ROWS if r.size != ZERO_BYTES]

    @pytest.mark.parametrize("row", ACCESS_ROWS, ids=_ids(ACCESS_ROWS, with_allocator=False))
    def test_deallocated_memory_access_tests(self, row: Row) -> None:
        _in_child_expecting_sigsegv(row, access_deallocated_memory_tests)

    @pytest.mark.parametrize("row", DEALLOCATE_ROWS, ids=_ids(DEALLOCATE_ROWS, with_allocator=False))
    def test_deallocation_and_reallocation_tests(self, row: Row) -> None:
        run_suite(row, set_up_allocator_and_vm_variables_and_allocate, deallocate_reallocate_tests, do_nothing)

    @pytest.mark.parametrize("row", DEALLOCATE_ROWS, ids=_ids(DEALLOCATE_ROWS, with_allocator=False))
    def test_deallocate_null_map_test(self, row: Row) -> None:
        run_suite(row, set_up_allocator_and_vm_variables, deallocate_null_map_test, do_nothing)

    def test_edge_case_deallocation_tests(self) -> None:
        run_suite(Row(), set_up_allocator_and_vm_size, deallocate_edge_case_tests, do_nothing)

    def test_whole_address_space_deallocation_test(self) -> None:
        # test_deallocate_suicide: mach_vm_deallocate(0, UINTMAX_MAX - page + 1)
        # must kill the process (SIGSEGV or SIGBUS).
        pytest.skip("xnu-11417's source contradicts it: vm_map_delete returns at once, removing nothing and "
                    "with KERN_SUCCESS, for a range that ends past vm_map_max(map), so the process lives on "
                    "(pymach does the same)")
