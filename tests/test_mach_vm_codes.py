"""pymach.mach, the C interface: every VM routine's success path with its real
effect, and every kern_return_t that XNU returns for it.

Each section cites where XNU returns the codes its tests expect, as
file:line in apple-oss-distributions/xnu at tag xnu-11417.101.15 (paths
under osfmk/vm/ unless they say otherwise). Most range checks of that
release are in vm_sanitize.c (vm_sanitize_addr_size: a carry at :539-541
or a range rounding to nothing at :543-546 is KERN_INVALID_ARGUMENT, a
range crossing 2^48 at :576-591 is KERN_INVALID_ADDRESS), and
vm_sanitize_error_compat.c rewrites some of those codes per caller into
the ones the routine gave before.

Effects are checked outside pymach's own record wherever possible: memory
contents with ctypes (only on pages that are readable/writable), mappings and
their permissions with /proc/self/maps and /proc/self/smaps, and faults with
a forked child that touches the page and must die of SIGSEGV.

Documented deviations (docs/deviations.md) are tested as pymach documents
them: map bounds are Linux's vm.mmap_min_addr .. MACH_VM_MAX_ADDRESS,
VM_FLAGS_TPRO is KERN_NOT_SUPPORTED, VM_BEHAVIOR_PAGEOUT is
KERN_INVALID_ARGUMENT.
"""

from __future__ import annotations

import ctypes
import os
import signal

import pytest

from pymach.mach import (
    FALSE,
    KERN_INVALID_ADDRESS,
    KERN_INVALID_ARGUMENT,
    KERN_INVALID_HOST,
    KERN_INVALID_TASK,
    KERN_NO_SPACE,
    KERN_NOT_SUPPORTED,
    KERN_PROTECTION_FAILURE,
    KERN_SUCCESS,
    MACH_PORT_NULL,
    MACH_SEND_INVALID_DEST,
    MACH_SEND_INVALID_MEMORY,
    TRUE,
    VM_BEHAVIOR_CAN_REUSE,
    VM_BEHAVIOR_DEFAULT,
    VM_BEHAVIOR_DONTNEED,
    VM_BEHAVIOR_FREE,
    VM_BEHAVIOR_PAGEOUT,
    VM_BEHAVIOR_RANDOM,
    VM_BEHAVIOR_REUSABLE,
    VM_BEHAVIOR_REUSE,
    VM_BEHAVIOR_RSEQNTL,
    VM_BEHAVIOR_SEQUENTIAL,
    VM_BEHAVIOR_WILLNEED,
    VM_BEHAVIOR_ZERO,
    VM_BEHAVIOR_ZERO_WIRED_PAGES,
    VM_FLAGS_ANYWHERE,
    VM_FLAGS_FIXED,
    VM_FLAGS_OVERWRITE,
    VM_FLAGS_PERMANENT,
    VM_FLAGS_PURGABLE,
    VM_FLAGS_RANDOM_ADDR,
    VM_FLAGS_TPRO,
    VM_INHERIT_COPY,
    VM_INHERIT_DONATE_COPY,
    VM_INHERIT_NONE,
    VM_INHERIT_SHARE,
    VM_PAGE_QUERY_PAGE_DIRTY,
    VM_PAGE_QUERY_PAGE_PRESENT,
    VM_PAGE_QUERY_PAGE_REF,
    VM_PROT_ALL,
    VM_PROT_COPY,
    VM_PROT_DEFAULT,
    VM_PROT_EXECUTE,
    VM_PROT_NONE,
    VM_PROT_READ,
    VM_PROT_WRITE,
    VM_REGION_BASIC_INFO,
    VM_REGION_BASIC_INFO_64,
    VM_REGION_BASIC_INFO_COUNT,
    VM_REGION_BASIC_INFO_COUNT_64,
    VM_SYNC_ASYNCHRONOUS,
    VM_SYNC_CONTIGUOUS,
    VM_SYNC_DEACTIVATE,
    VM_SYNC_INVALIDATE,
    VM_SYNC_KILLPAGES,
    VM_SYNC_REUSABLEPAGES,
    VM_SYNC_SYNCHRONOUS,
    VM_MAKE_TAG,
    byref,
    mach_error_string,
    mach_host_self,
    mach_msg_type_number_t,
    mach_port_t,
    mach_task_self,
    mach_vm_address_t,
    mach_vm_allocate,
    mach_vm_behavior_set,
    mach_vm_copy,
    mach_vm_deallocate,
    mach_vm_inherit,
    mach_vm_msync,
    mach_vm_page_query,
    mach_vm_protect,
    mach_vm_read,
    mach_vm_read_overwrite,
    mach_vm_region,
    mach_vm_size_t,
    mach_vm_wire,
    mach_vm_write,
    vm_offset_t,
    vm_page_size,
    vm_region_basic_info_data_64_t,
    vm_region_basic_info_data_t,
)
import pymach.mach as M

from procutil import (child_exit_code, is_free, maps, peek, perms_at, poke, run_in_child,
                      vmflags_at)

P = vm_page_size
U64 = (1 << 64) - 1
TOP = 1 << 64
# vm_rc.md §0: msg_ool_size_small on x86_64
OOL_SMALL = 16384
# x86_64 MACH_VM_MAX_ADDRESS (vm_rc.md §15), pymach's documented top of the map
MAP_MAX = 0x00007FFFFFE00000
with open("/proc/sys/vm/mmap_min_addr") as _f:
    # docs/deviations.md: the map starts at Linux's vm.mmap_min_addr
    MAP_MIN = max(int(_f.read()), P)

# sentinels for out-parameters that must be left alone on failure
S64 = 0x5A5A5A5A5A5A5A5A
S32 = 0x5A5A5A5A
SI = 0x2A2A2A2A


# -- helpers ---------------------------------------------------------------------

def kr_name(kr: int) -> str:
    return f"{kr:#x} {mach_error_string(kr)}"


def expect(kr: int, want: int, ctx: object = "") -> None:
    assert kr == want, f"{ctx}: got {kr_name(kr)}, want {kr_name(want)}" if ctx else \
        f"got {kr_name(kr)}, want {kr_name(want)}"


def hexes(*v: int) -> str:
    return ", ".join(hex(x) for x in v)


def rnd(n: int) -> int:
    return (n + P - 1) & ~(P - 1)


def filled(fill: bytes, n: int) -> bytes:
    """What Mem.alloc(fill=...) writes: ``fill`` repeated over ``n`` bytes."""
    return (fill * (n // len(fill) + 1))[:n]


def allocate(size: int, flags: int = VM_FLAGS_ANYWHERE, addr: int = 0) -> tuple[int, int]:
    a = mach_vm_address_t(addr)
    kr = mach_vm_allocate(mach_task_self(), byref(a), size, flags)
    return kr, a.value


class Region:
    def __init__(self, kr, address, size, info, count, object_name):
        self.kr, self.address, self.size = kr, address, size
        self.info, self.count, self.object_name = info, count, object_name


def region(addr: int, flavor: int = VM_REGION_BASIC_INFO_64, count: int = VM_REGION_BASIC_INFO_COUNT_64,
           info=None, fn=mach_vm_region, task=None) -> Region:
    a = mach_vm_address_t(addr)
    s = mach_vm_size_t(S64)
    c = mach_msg_type_number_t(count)
    o = mach_port_t(S32)
    if info is None:
        info = vm_region_basic_info_data_64_t()
        ctypes.memset(ctypes.addressof(info), 0x5A, ctypes.sizeof(info))
    kr = fn(mach_task_self() if task is None else task, byref(a), byref(s), flavor, byref(info), byref(c),
            byref(o))
    return Region(kr, a.value, s.value, info, c.value, o.value)


def info_at(addr: int) -> vm_region_basic_info_data_64_t:
    r = region(addr)
    expect(r.kr, KERN_SUCCESS)
    assert r.address <= addr < r.address + r.size, f"region {r.address:#x}+{r.size:#x} misses {addr:#x}"
    return r.info


def read(addr: int, size: int, task=None) -> tuple[int, int, int]:
    d = vm_offset_t(S64)
    n = mach_msg_type_number_t(S32)
    kr = mach_vm_read(mach_task_self() if task is None else task, addr, size, byref(d), byref(n))
    return kr, d.value, n.value


def page_query(addr: int, task=None) -> tuple[int, int, int]:
    d = ctypes.c_int(SI)
    r = ctypes.c_int(SI)
    kr = mach_vm_page_query(mach_task_self() if task is None else task, addr, byref(d), byref(r))
    return kr, d.value, r.value


def protect(addr: int, size: int, prot: int, set_max: int = FALSE) -> int:
    return mach_vm_protect(mach_task_self(), addr, size, set_max, prot)


def wire(addr: int, size: int, prot: int, host=None, task=None) -> int:
    return mach_vm_wire(mach_host_self() if host is None else host,
                        mach_task_self() if task is None else task, addr, size, prot)


def low_free_page() -> int:
    """A free page far from where ANYWHERE mappings go (first fit from 4 GiB)."""
    for cand in range(1 << 40, 1 << 46, 1 << 40):
        if is_free(cand, cand + P):
            return cand
    pytest.skip("no free low page")


def drop_privileges() -> None:
    """In a fork child: become nobody, and stay dumpable so that
    /proc/self/pagemap stays ours to read."""
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE


class Mem:
    """Allocations of one test, all deallocated at teardown."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []

    def alloc(self, npages: int = 1, fill: bytes | None = None, flags: int = VM_FLAGS_ANYWHERE,
              addr: int = 0) -> int:
        kr, a = allocate(npages * P, flags, addr)
        expect(kr, KERN_SUCCESS)
        self.ranges.append((a, npages * P))
        if fill is not None:
            poke(a, filled(fill, npages * P))
        return a

    def track(self, addr: int, size: int) -> None:
        self.ranges.append((addr, size))

    def hole(self, npages: int = 1) -> int:
        """An address with ``npages`` free pages (reserved, then released)."""
        kr, a = allocate(npages * P)
        expect(kr, KERN_SUCCESS)
        expect(mach_vm_deallocate(mach_task_self(), a, npages * P), KERN_SUCCESS)
        return a

    def free(self) -> None:
        t = mach_task_self()
        for a, n in self.ranges:
            expect(mach_vm_deallocate(t, a, n), KERN_SUCCESS)
        self.ranges.clear()


@pytest.fixture
def mem():
    m = Mem()
    yield m
    m.free()


@pytest.fixture
def three(mem):
    """[a, a+P) mapped, a hole, [a+2P, a+3P) mapped, and nothing at a+3P
    (a page hole: [a+4P, a+5P) stays mapped, so that the first-fit
    placement of a later allocation cannot fill it)."""
    a = mem.alloc(5, fill=b"ABCDEFG")
    expect(mach_vm_deallocate(mach_task_self(), a + P, P), KERN_SUCCESS)
    expect(mach_vm_deallocate(mach_task_self(), a + 3 * P, P), KERN_SUCCESS)
    assert perms_at(a + P) is None and perms_at(a + 3 * P) is None
    return a


@pytest.fixture
def bottom_page(mem):
    """A page at the very bottom of the map (MAP_MIN)."""
    if not is_free(MAP_MIN, MAP_MIN + P):
        pytest.skip("the bottom page of the map is in use")
    return mem.alloc(1, fill=b"bottom", flags=VM_FLAGS_FIXED, addr=MAP_MIN)


@pytest.fixture
def top_page(mem):
    """The last page of the map: [MAP_MAX - P, MAP_MAX)."""
    if not is_free(MAP_MAX - P, MAP_MAX):
        pytest.skip("the top page of the map is in use")
    return mem.alloc(1, fill=b"top", flags=VM_FLAGS_FIXED, addr=MAP_MAX - P)


def test_constants_match_the_specification():
    assert vm_page_size == 4096
    assert M.MACH_VM_MAX_ADDRESS == MAP_MAX
    assert M.VM_FLAGS_USER_ALLOCATE == 0xFF07509F
    assert VM_REGION_BASIC_INFO_COUNT_64 == 9 and VM_REGION_BASIC_INFO_COUNT == 8
    assert ctypes.sizeof(vm_region_basic_info_data_64_t) == 36
    assert vm_region_basic_info_data_64_t.offset.offset == 20
    assert vm_region_basic_info_data_64_t.behavior.offset == 28
    assert vm_region_basic_info_data_t.behavior.offset == 24
    assert (KERN_INVALID_HOST, MACH_SEND_INVALID_DEST, MACH_SEND_INVALID_MEMORY) == (22, 0x10000003, 0x1000000C)


# -- invalid task names: the message cannot be sent ---------------------------------
# osfmk/ipc/mach_kernelrpc.c:58-63 (and each trap like it) MACH_SEND_INVALID_DEST when
# the name is no task port; through MIG, osfmk/ipc/ipc_kmsg.c:1779-1780 for
# MACH_PORT_NULL/DEAD and :2016-2019 for a name that holds no send right. Either
# fails before the routine looks at its arguments.

def _call_with_task(name: str, task: int, page: int, scratch: int, bad_args: bool) -> tuple[int, list]:
    """Call routine ``name`` on ``task``; with ``bad_args`` the other arguments
    are invalid too. Returns kr and the out-parameters to check."""
    if name == "allocate":
        a = mach_vm_address_t(S64)
        return mach_vm_allocate(task, byref(a), P, 0x20 if bad_args else VM_FLAGS_ANYWHERE), [(a, S64)]
    if name == "deallocate":
        return mach_vm_deallocate(task, page, U64 if bad_args else P), []
    if name == "protect":
        return mach_vm_protect(task, page, P, FALSE, 0x20 if bad_args else VM_PROT_NONE), []
    if name == "inherit":
        return mach_vm_inherit(task, page, P, 7 if bad_args else VM_INHERIT_NONE), []
    if name == "read":
        d, n = vm_offset_t(S64), mach_msg_type_number_t(S32)
        return mach_vm_read(task, page, 1 << 33 if bad_args else 16, byref(d), byref(n)), [(d, S64), (n, S32)]
    if name == "read_overwrite":
        n = mach_vm_size_t(S64)
        return mach_vm_read_overwrite(task, page, 16, TOP - P if bad_args else scratch, byref(n)), [(n, S64)]
    if name == "write":
        return mach_vm_write(task, page, 0 if bad_args else scratch, 16), []
    if name == "copy":
        return mach_vm_copy(task, scratch, 16, TOP - 8 if bad_args else page), []
    if name == "region":
        a, s = mach_vm_address_t(S64 if bad_args else page), mach_vm_size_t(S64)
        c, o = mach_msg_type_number_t(1 if bad_args else VM_REGION_BASIC_INFO_COUNT_64), mach_port_t(S32)
        info = vm_region_basic_info_data_64_t()
        kr = mach_vm_region(task, byref(a), byref(s), 99 if bad_args else VM_REGION_BASIC_INFO_64,
                            byref(info), byref(c), byref(o))
        return kr, [(a, S64 if bad_args else page), (s, S64), (c, 1 if bad_args else 9), (o, S32)]
    if name == "msync":
        flags = VM_SYNC_SYNCHRONOUS | VM_SYNC_ASYNCHRONOUS if bad_args else VM_SYNC_KILLPAGES
        return mach_vm_msync(task, page, P, flags), []
    if name == "behavior_set":
        return mach_vm_behavior_set(task, page, P, 99 if bad_args else VM_BEHAVIOR_ZERO), []
    if name == "page_query":
        d, r = ctypes.c_int(SI), ctypes.c_int(SI)
        return mach_vm_page_query(task, U64 if bad_args else page, byref(d), byref(r)), [(d, SI), (r, SI)]
    raise AssertionError(name)


ROUTINES = ["allocate", "deallocate", "protect", "inherit", "read", "read_overwrite", "write", "copy",
            "region", "msync", "behavior_set", "page_query"]


@pytest.mark.parametrize("name", ROUTINES)
def test_invalid_task_is_send_invalid_dest(mem, name):
    page = mem.alloc(1, fill=b"keep me")
    scratch = mem.alloc(1, fill=b"scratch")
    for task in (0x12345, MACH_PORT_NULL):
        kr, outs = _call_with_task(name, task, page, scratch, bad_args=False)
        expect(kr, MACH_SEND_INVALID_DEST, hex(task))
        for o, initial in outs:
            assert o.value == initial, f"{type(o).__name__} out-parameter written: {o.value:#x}"
    # nothing happened to our own task
    assert perms_at(page) == "rw-p"
    assert peek(page, 7) == b"keep me" and peek(scratch, 7) == b"scratch"


def test_stale_task_name_is_send_invalid_dest(mem):
    page = mem.alloc(1)
    t = mach_task_self()
    for name in (t ^ 0x04, t ^ 0x80, t | 0xFF000000):  # another generation, an unused index
        expect(mach_vm_protect(name, page, P, FALSE, VM_PROT_NONE), MACH_SEND_INVALID_DEST)
    assert perms_at(page) == "rw-p"


@pytest.mark.parametrize("name", ROUTINES)
def test_invalid_task_is_checked_before_the_arguments(mem, name):
    # the message to a bad name cannot be sent: no argument is looked at
    page = mem.alloc(1, fill=b"keep me")
    scratch = mem.alloc(1)
    kr, outs = _call_with_task(name, 0x12345, page, scratch, bad_args=True)
    expect(kr, MACH_SEND_INVALID_DEST)
    for o, initial in outs:
        assert o.value == initial, f"{type(o).__name__} out-parameter written: {o.value:#x}"
    assert perms_at(page) == "rw-p"


# -- mach_vm_allocate ----------------------------------------------------------------
# vm_user.c:150-157 KERN_INVALID_ARGUMENT for flags outside VM_FLAGS_USER_ALLOCATE;
# vm_kern.c:1267-1285 the range checks: ANYWHERE a size rounding to 0
# (vm_sanitize.c:375-377) is KERN_INVALID_ARGUMENT, FIXED a wrapping range is
# rewritten to KERN_INVALID_ADDRESS (vm_sanitize_error_compat.c:190-192); size 0
# succeeds with address 0 (vm_kern.c:1322-1324). vm_map_enter: vm_map.c:2875-2901
# superpages (KERN_INVALID_ARGUMENT), :3132-3141 a purgable object above
# ANON_MAX_SIZE, :3144-3146 and :2262 KERN_NO_SPACE (too big, no room),
# :2470-2473 KERN_INVALID_ADDRESS outside [min, max), :3169-3172 KERN_NO_SPACE over
# a mapping (FIXED without OVERWRITE). A permanent entry survives deallocation as
# VM_PROT_NONE (vm_map.c:8884-8912). VM_FLAGS_TPRO: KERN_NOT_SUPPORTED, a
# documented deviation (XNU's TPRO is :3027-3037).

def test_allocate_anywhere_gives_zeroed_read_write_memory(mem):
    kr, a = allocate(3 * P)
    expect(kr, KERN_SUCCESS)
    mem.track(a, 3 * P)
    assert a and a % P == 0
    assert MAP_MIN <= a and a + 3 * P <= MAP_MAX
    assert perms_at(a) == perms_at(a + 2 * P) == "rw-p"
    assert peek(a, 3 * P) == bytes(3 * P)
    poke(a + 2 * P + 100, b"written")
    assert peek(a + 2 * P + 100, 7) == b"written"
    info = info_at(a)
    assert (info.protection, info.max_protection, info.inheritance) == (VM_PROT_DEFAULT, VM_PROT_ALL,
                                                                        VM_INHERIT_COPY)
    assert (info.shared, info.behavior, info.user_wired_count) == (0, VM_BEHAVIOR_DEFAULT, 0)


def test_allocate_anywhere_rounds_the_size_up(mem):
    kr, a = allocate(P + 1)
    expect(kr, KERN_SUCCESS)
    mem.track(a, 2 * P)
    assert perms_at(a + P) == "rw-p"
    r = region(a)
    assert (r.address, r.size) == (a, 2 * P)


def test_allocate_anywhere_ignores_the_input_address(mem):
    wanted = low_free_page()
    kr, a = allocate(P, VM_FLAGS_ANYWHERE, wanted)
    expect(kr, KERN_SUCCESS)
    mem.track(a, P)
    assert a != wanted, "ANYWHERE used the input address as a hint"
    # an occupied or unaligned input address is no obstacle either
    for junk in (a, a + 123, U64):
        kr, b = allocate(P, VM_FLAGS_ANYWHERE, junk)
        expect(kr, KERN_SUCCESS)
        mem.track(b, P)
        assert b % P == 0 and b != a


def test_allocate_random_addr(mem):
    kr, a = allocate(P, VM_FLAGS_ANYWHERE | VM_FLAGS_RANDOM_ADDR)
    expect(kr, KERN_SUCCESS)
    mem.track(a, P)
    assert a % P == 0 and MAP_MIN <= a < MAP_MAX and perms_at(a) == "rw-p"


def test_allocate_size_zero_succeeds_and_returns_zero():
    for flags in (VM_FLAGS_ANYWHERE, VM_FLAGS_FIXED, VM_FLAGS_FIXED | VM_FLAGS_OVERWRITE,
                  VM_FLAGS_TPRO | VM_FLAGS_ANYWHERE, VM_MAKE_TAG(7)):
        for addr in (0, 0x1234, U64, S64):
            a = mach_vm_address_t(addr)
            expect(mach_vm_allocate(mach_task_self(), byref(a), 0, flags), KERN_SUCCESS, hexes(flags, addr))
            assert a.value == 0


# any bit outside VM_FLAGS_USER_ALLOCATE (0xFF07509F)
BAD_ALLOC_FLAGS = [0x20, 0x40, 0x100, 0x200, 0x400, 0x800, 0x2000, 0x8000, 0x80000, 0x100000, 0x200000,
                   0x400000, 0x800000]


def test_allocate_invalid_flags():
    for bad in BAD_ALLOC_FLAGS:
        for size in (0, P):  # checked first, even for size 0
            for flags in (bad | VM_FLAGS_ANYWHERE, bad, bad | VM_FLAGS_OVERWRITE):
                a = mach_vm_address_t(S64)
                expect(mach_vm_allocate(mach_task_self(), byref(a), size, flags), KERN_INVALID_ARGUMENT,
                       hexes(flags, size))
                assert a.value == S64


def test_allocate_anywhere_size_rounding_to_zero():
    for size in (U64, TOP - P + 1):
        a = mach_vm_address_t(S64)
        expect(mach_vm_allocate(mach_task_self(), byref(a), size, VM_FLAGS_ANYWHERE), KERN_INVALID_ARGUMENT,
               hex(size))
        assert a.value == S64


def test_allocate_anywhere_too_big_is_no_space():
    for size in (TOP - P, 1 << 63, MAP_MAX):
        a = mach_vm_address_t(S64)
        expect(mach_vm_allocate(mach_task_self(), byref(a), size, VM_FLAGS_ANYWHERE), KERN_NO_SPACE, hex(size))
        assert a.value == S64


def test_allocate_fixed_at_a_free_address(mem):
    f = mem.hole(2)
    kr, a = allocate(2 * P, VM_FLAGS_FIXED, f)
    expect(kr, KERN_SUCCESS)
    mem.track(a, 2 * P)
    assert a == f
    assert perms_at(f) == perms_at(f + P) == "rw-p"
    assert peek(f, 2 * P) == bytes(2 * P)


def test_allocate_fixed_unaligned_uses_trunc_addr_plus_round_size(mem):
    f = mem.hole(3)
    kr, a = allocate(P, VM_FLAGS_FIXED, f + 0x10)
    expect(kr, KERN_SUCCESS)
    mem.track(f, P)
    assert a == f  # *address = trunc_page(addr)
    assert perms_at(f) == "rw-p"
    # [trunc(addr), trunc(addr) + round(size)): one page, not the two that
    # addr + size touches
    assert perms_at(f + P) is None
    kr, b = allocate(P + 1, VM_FLAGS_FIXED, f + P + 0xFFF)
    expect(kr, KERN_SUCCESS)
    mem.track(f + P, 2 * P)
    assert b == f + P and perms_at(f + 2 * P) == "rw-p"


def test_allocate_fixed_wrapping_is_invalid_address():
    for addr, size in ((TOP - P, 2 * P), (U64, 1), (TOP - P, P), (U64 - 0x10, 0x20), (1 << 63, 1 << 63)):
        a = mach_vm_address_t(addr)
        expect(mach_vm_allocate(mach_task_self(), byref(a), size, VM_FLAGS_FIXED), KERN_INVALID_ADDRESS,
               hexes(addr, size))
        assert a.value == addr


def test_allocate_fixed_size_rounding_to_zero_is_invalid_argument(mem):
    f = mem.hole(1)
    for size in (U64, TOP - P + 1):
        a = mach_vm_address_t(f)
        expect(mach_vm_allocate(mach_task_self(), byref(a), size, VM_FLAGS_FIXED), KERN_INVALID_ARGUMENT, hex(size))
        assert a.value == f and perms_at(f) is None


def test_allocate_fixed_outside_the_map_is_invalid_address():
    for addr, size in ((0, P), (MAP_MIN - P, P), (MAP_MIN - P, 2 * P), (MAP_MAX - P, 2 * P), (MAP_MAX, P),
                       (1 << 47, P), (1 << 63, P), (0, MAP_MAX)):
        a = mach_vm_address_t(addr)
        expect(mach_vm_allocate(mach_task_self(), byref(a), size, VM_FLAGS_FIXED), KERN_INVALID_ADDRESS,
               hexes(addr, size))
        assert a.value == addr


def test_allocate_fixed_at_the_bounds_of_the_map(bottom_page, top_page):
    assert bottom_page == MAP_MIN and top_page == MAP_MAX - P
    assert perms_at(MAP_MIN) == perms_at(MAP_MAX - P) == "rw-p"
    assert peek(MAP_MAX - P, 3) == b"top"


def test_allocate_fixed_over_a_mapping_is_no_space(mem):
    a = mem.alloc(2, fill=b"old data")
    for addr, size in ((a, P), (a + P, 2 * P), (a + 0x80, 1), (a - P, 2 * P), (a - P, 4 * P)):
        b = mach_vm_address_t(addr)
        expect(mach_vm_allocate(mach_task_self(), byref(b), size, VM_FLAGS_FIXED), KERN_NO_SPACE)
        assert b.value == addr
    assert peek(a, 2 * P) == filled(b"old data", 2 * P)


def test_allocate_fixed_range_hitting_the_next_entry_maps_nothing(mem):
    a = mem.alloc(3, fill=b"x")
    expect(mach_vm_deallocate(mach_task_self(), a, P), KERN_SUCCESS)
    b = mach_vm_address_t(a)
    expect(mach_vm_allocate(mach_task_self(), byref(b), 2 * P, VM_FLAGS_FIXED), KERN_NO_SPACE)
    assert b.value == a
    assert perms_at(a) is None, "a failed FIXED allocation left a partial mapping"
    assert peek(a + P, 1) == b"x"


def test_allocate_fixed_overwrite_replaces_mappings_and_holes(mem, three):
    a = three
    kr, b = allocate(3 * P, VM_FLAGS_FIXED | VM_FLAGS_OVERWRITE, a + 5)
    expect(kr, KERN_SUCCESS)
    assert b == a
    assert [perms_at(a + i * P) for i in range(3)] == ["rw-p"] * 3
    assert peek(a, 3 * P) == bytes(3 * P), "the old contents survived OVERWRITE"
    r = region(a)
    assert (r.address, r.size) == (a, 3 * P)
    assert (r.info.protection, r.info.max_protection) == (VM_PROT_DEFAULT, VM_PROT_ALL)


def test_allocate_fixed_overwrite_over_a_protected_range(mem):
    a = mem.alloc(2)
    expect(protect(a, 2 * P, VM_PROT_NONE, TRUE), KERN_SUCCESS)
    kr, b = allocate(2 * P, VM_FLAGS_FIXED | VM_FLAGS_OVERWRITE, a)
    expect(kr, KERN_SUCCESS)
    assert b == a and perms_at(a) == "rw-p"
    info = info_at(a)
    assert (info.protection, info.max_protection) == (VM_PROT_DEFAULT, VM_PROT_ALL)


def test_allocate_fixed_overwrite_outside_the_map_is_invalid_address():
    for addr, size in ((0, P), (MAP_MAX - P, 2 * P), (TOP - P, 2 * P)):
        a = mach_vm_address_t(addr)
        expect(mach_vm_allocate(mach_task_self(), byref(a), size, VM_FLAGS_FIXED | VM_FLAGS_OVERWRITE),
               KERN_INVALID_ADDRESS)
        assert a.value == addr


def test_allocate_overwrite_with_anywhere_is_ignored(mem):
    a = mem.alloc(1, fill=b"precious")
    kr, b = allocate(P, VM_FLAGS_ANYWHERE | VM_FLAGS_OVERWRITE, a)
    expect(kr, KERN_SUCCESS)
    mem.track(b, P)
    assert b != a
    assert peek(a, 8) == b"precious"


def test_allocate_superpage_size_any_rounds_to_2mib(mem):
    kr, a = allocate(P, VM_FLAGS_ANYWHERE | M.VM_FLAGS_SUPERPAGE_SIZE_ANY)
    expect(kr, KERN_SUCCESS)
    mem.track(a, 2 << 20)
    assert a % (2 << 20) == 0
    r = region(a)
    assert (r.address, r.size) == (a, 2 << 20)


def test_allocate_superpage_2mb(mem):
    kr, a = allocate(2 << 20, VM_FLAGS_ANYWHERE | M.VM_FLAGS_SUPERPAGE_SIZE_2MB)
    expect(kr, KERN_SUCCESS)
    mem.track(a, 2 << 20)
    assert a % (2 << 20) == 0 and perms_at(a + (2 << 20) - 1) == "rw-p"


def test_allocate_bad_superpage_is_invalid_argument():
    for flags, size in ((0x20000, P), (0x20000, (2 << 20) + P), (0x30000, 2 << 20), (0x70000, 2 << 20)):
        a = mach_vm_address_t(S64)
        expect(mach_vm_allocate(mach_task_self(), byref(a), size, VM_FLAGS_ANYWHERE | flags),
               KERN_INVALID_ARGUMENT, hexes(flags, size))
        assert a.value == S64


def test_allocate_tpro_is_not_supported():
    for flags in (VM_FLAGS_ANYWHERE | VM_FLAGS_TPRO, VM_FLAGS_TPRO):
        a = mach_vm_address_t(S64)
        expect(mach_vm_allocate(mach_task_self(), byref(a), P, flags), KERN_NOT_SUPPORTED)
        assert a.value == S64


def test_allocate_purgable(mem):
    kr, a = allocate(P, VM_FLAGS_ANYWHERE | VM_FLAGS_PURGABLE)
    expect(kr, KERN_SUCCESS)
    mem.track(a, P)
    assert perms_at(a) == "rw-p"


ANON_MAX_SIZE = 0xFFFFFFFF << 12


def test_allocate_purgable_larger_than_anon_max_size(mem):
    a = mach_vm_address_t(S64)
    kr = mach_vm_allocate(mach_task_self(), byref(a), ANON_MAX_SIZE + P, VM_FLAGS_ANYWHERE | VM_FLAGS_PURGABLE)
    if kr == KERN_SUCCESS:
        mem.track(a.value, ANON_MAX_SIZE + P)
    expect(kr, KERN_INVALID_ARGUMENT)
    assert a.value == S64


def test_allocate_with_an_alias_tag(mem):
    # tags of 128 and up set bit 31: flags is an int in C
    for tag in (1, 127, 128, M.VM_MEMORY_APPLICATION_SPECIFIC_1, 255):
        for flags in (VM_FLAGS_ANYWHERE | VM_MAKE_TAG(tag), VM_FLAGS_ANYWHERE | VM_MAKE_TAG(tag) | VM_FLAGS_PURGABLE,
                      ctypes.c_int(VM_FLAGS_ANYWHERE | VM_MAKE_TAG(tag)).value):
            kr, a = allocate(P, flags)
            if kr == KERN_SUCCESS:
                mem.track(a, P)
            expect(kr, KERN_SUCCESS, hexes(tag, flags))
            assert perms_at(a) == "rw-p"


def test_allocate_permanent_survives_deallocate_as_prot_none():
    # a permanent entry cannot be removed: do it in a child, which exits
    def child():
        t = mach_task_self()
        kr, a = allocate(2 * P, VM_FLAGS_ANYWHERE | VM_FLAGS_PERMANENT)
        expect(kr, KERN_SUCCESS)
        poke(a, b"perm")
        expect(mach_vm_deallocate(t, a, 2 * P), KERN_SUCCESS)
        r = region(a)
        expect(r.kr, KERN_SUCCESS)
        out = {"maps": perms_at(a), "region": (r.address == a, r.info.protection, r.info.max_protection)}
        # the maximum is now NONE: it cannot be raised again
        out["protect"] = protect(a, P, VM_PROT_READ)
        # nor can OVERWRITE remove it
        out["overwrite"] = allocate(P, VM_FLAGS_FIXED | VM_FLAGS_OVERWRITE, a)[0]
        out["read"] = read(a, 4)[0]
        return out

    out = run_in_child(child)
    assert out["maps"] == "---p"
    assert out["region"] == (True, VM_PROT_NONE, VM_PROT_NONE)
    expect(out["protect"], KERN_PROTECTION_FAILURE)
    expect(out["overwrite"], KERN_NO_SPACE)
    expect(out["read"], KERN_INVALID_ADDRESS)


def test_classic_vm_allocate_and_deallocate(mem):
    a = M.vm_address_t(0)
    expect(M.vm_allocate(mach_task_self(), byref(a), P, VM_FLAGS_ANYWHERE), KERN_SUCCESS)
    assert perms_at(a.value) == "rw-p"
    expect(M.vm_deallocate(mach_task_self(), a.value, P), KERN_SUCCESS)
    assert perms_at(a.value) is None


def test_classic_vm_aliases_have_real_effects(mem):
    t = mach_task_self()
    a = mem.alloc(2, fill=b"classic!")
    b = mem.alloc(2)
    expect(M.vm_write(t, b, a, 8), KERN_SUCCESS)
    assert peek(b, 8) == b"classic!"
    expect(M.vm_copy(t, a, 8, b + P), KERN_SUCCESS)
    assert peek(b + P, 8) == b"classic!"
    d, n = M.vm_offset_t(), mach_msg_type_number_t()
    expect(M.vm_read(t, a, 8, byref(d), byref(n)), KERN_SUCCESS)
    assert peek(d.value, n.value) == b"classic!"
    expect(M.vm_deallocate(t, d.value, n.value), KERN_SUCCESS)
    out = M.vm_size_t()
    expect(M.vm_read_overwrite(t, a, 4, b + 100, byref(out)), KERN_SUCCESS)
    assert out.value == 4 and peek(b + 100, 4) == b"clas"
    expect(M.vm_inherit(t, a, P, VM_INHERIT_NONE), KERN_SUCCESS)
    assert "dc" in vmflags_at(a)
    expect(M.vm_behavior_set(t, b, P, VM_BEHAVIOR_ZERO), KERN_SUCCESS)
    assert peek(b, P) == bytes(P)
    expect(M.vm_msync(t, b + P, P, VM_SYNC_KILLPAGES), KERN_SUCCESS)
    assert peek(b + P, 8) == bytes(8)
    expect(M.vm_protect(t, a, P, FALSE, VM_PROT_READ), KERN_SUCCESS)
    assert perms_at(a) == "r--p"
    expect(M.vm_protect(t, a, P, TRUE, VM_PROT_NONE), KERN_SUCCESS)
    expect(M.vm_protect(t, a, P, FALSE, VM_PROT_READ), KERN_PROTECTION_FAILURE)
    assert perms_at(a) == "---p"


# -- mach_vm_deallocate --------------------------------------------------------------
# vm_user.c:181-221: size 0 succeeds; a carry or a range rounding to nothing is
# KERN_INVALID_ARGUMENT (vm_sanitize.c:539-546; vm_sanitize_error_compat.c:219-221
# only telemeters it). vm_map.c:8161-8168 and :8180-8187 a range leaving
# [min, max] removes nothing and succeeds; holes are not an error.

def test_deallocate_unmaps(mem):
    a = mem.alloc(2)
    expect(mach_vm_deallocate(mach_task_self(), a, 2 * P), KERN_SUCCESS)
    mem.ranges.clear()
    assert perms_at(a) is None and perms_at(a + P) is None
    expect(read(a, 1)[0], KERN_INVALID_ADDRESS)


def test_deallocate_size_zero_is_a_no_op(mem):
    page = mem.alloc(1)
    for addr in (0, 1, U64, TOP - P, S64, MAP_MAX, page, page + 1):
        expect(mach_vm_deallocate(mach_task_self(), addr, 0), KERN_SUCCESS, hex(addr))
    assert perms_at(page) == "rw-p"


def test_deallocate_unaligned_removes_every_page_touched(mem):
    a = mem.alloc(3, fill=b"z")
    expect(mach_vm_deallocate(mach_task_self(), a + P - 1, 2), KERN_SUCCESS)
    assert perms_at(a) is None and perms_at(a + P) is None
    assert peek(a + 2 * P, 1) == b"z"


def test_deallocate_carrying_range_is_invalid_argument_and_removes_nothing(mem):
    a = mem.alloc(2)
    for off, size in ((0, U64), (P, U64 - 0x10), (0, TOP - P)):
        expect(mach_vm_deallocate(mach_task_self(), a + off, size), KERN_INVALID_ARGUMENT, hexes(off, size))
    assert perms_at(a) == perms_at(a + P) == "rw-p"


def test_deallocate_wrapping_or_rounding_to_zero_is_invalid_argument():
    # carries: {1, ~0}, {~0-pg+1, pg}, {~0, 1}; rounds to 0: {0, ~0}, {~0-pg+1, pg-1}
    for addr, size in ((1, U64), (TOP - P, P), (U64, 1), (0, U64), (TOP - P, P - 1), (TOP - 2 * P + 1, P)):
        expect(mach_vm_deallocate(mach_task_self(), addr, size), KERN_INVALID_ARGUMENT, hexes(addr, size))


def test_deallocate_over_holes_succeeds_and_removes_the_mapped_parts(three):
    a = three
    expect(mach_vm_deallocate(mach_task_self(), a, 3 * P), KERN_SUCCESS)
    assert is_free(a, a + 3 * P)
    r = region(a)
    assert r.kr == KERN_INVALID_ADDRESS or r.address >= a + 3 * P


def test_deallocate_unmapped_range_succeeds(mem):
    h = mem.hole(4)
    expect(mach_vm_deallocate(mach_task_self(), h, 4 * P), KERN_SUCCESS)
    assert is_free(h, h + 4 * P)


def test_deallocate_reaching_past_the_map_removes_nothing(top_page):
    for addr, size in ((MAP_MAX - P, 2 * P), (MAP_MAX - P, 1 << 40), (MAP_MAX - 1, 2)):
        expect(mach_vm_deallocate(mach_task_self(), addr, size), KERN_SUCCESS)
        assert perms_at(top_page) == "rw-p" and peek(top_page, 3) == b"top"


def test_deallocate_starting_below_the_map_removes_nothing(bottom_page):
    expect(mach_vm_deallocate(mach_task_self(), MAP_MIN - P, 2 * P), KERN_SUCCESS)
    expect(mach_vm_deallocate(mach_task_self(), 0, MAP_MIN + P), KERN_SUCCESS)
    assert perms_at(bottom_page) == "rw-p" and peek(bottom_page, 6) == b"bottom"


def test_deallocate_data_of_mach_vm_read(mem):
    a = mem.alloc(6, fill=b"q")
    for addr, size in ((a, 100), (a + 5, 6 * P - 10)):
        kr, d, n = read(addr, size)
        expect(kr, KERN_SUCCESS)
        expect(mach_vm_deallocate(mach_task_self(), d, n), KERN_SUCCESS)  # (data, dataCnt) as returned
        assert is_free(d & ~(P - 1), rnd(d + n))


# -- mach_vm_protect -----------------------------------------------------------------
# vm_user.c:303-304 size 0 succeeds before any check; vm_sanitize.c:636-645
# KERN_INVALID_ARGUMENT for bits outside VM_PROT_ALL | VM_PROT_COPY; a carry is
# KERN_INVALID_ARGUMENT (vm_sanitize_error_compat.c:405-425 rewrites only some
# ranges to KERN_INVALID_ADDRESS). vm_map.c:5750-5752 and :5676-5677 (VM_PROT_COPY)
# KERN_INVALID_ADDRESS at or above the map's max, :5760-5762 an unmapped start,
# :5787-5789 a hole, :5903-5905 a range past the last entry; :5804-5806
# KERN_PROTECTION_FAILURE above the maximum protection, checked on every entry
# before any is changed.

def test_protect_none_really_faults(mem):
    a = mem.alloc(2, fill=b"secret")
    expect(protect(a, P, VM_PROT_NONE), KERN_SUCCESS)
    assert perms_at(a) == "---p" and perms_at(a + P) == "rw-p"
    assert child_exit_code(lambda: peek(a, 1)) == -signal.SIGSEGV
    assert child_exit_code(lambda: poke(a, b"x")) == -signal.SIGSEGV
    assert child_exit_code(lambda: peek(a + P, 1)) == 0
    info = info_at(a)
    assert (info.protection, info.max_protection) == (VM_PROT_NONE, VM_PROT_ALL)
    expect(protect(a, P, VM_PROT_DEFAULT), KERN_SUCCESS)
    assert perms_at(a) == "rw-p" and peek(a, 6) == b"secret"


def test_protect_read_only_really_refuses_writes(mem):
    a = mem.alloc(1, fill=b"ro")
    expect(protect(a, P, VM_PROT_READ), KERN_SUCCESS)
    assert perms_at(a) == "r--p"
    assert child_exit_code(lambda: poke(a, b"x")) == -signal.SIGSEGV
    assert child_exit_code(lambda: peek(a, 1)) == 0
    assert peek(a, 2) == b"ro"


def test_protect_execute(mem):
    a = mem.alloc(1)
    expect(protect(a, P, VM_PROT_READ | VM_PROT_EXECUTE), KERN_SUCCESS)
    assert perms_at(a) == "r-xp"


def test_protect_size_zero_succeeds_without_checks(mem):
    a = mem.alloc(1)
    for prot in (VM_PROT_NONE, 0x20, 0x08, M.VM_PROT_NO_CHANGE, -1):
        for addr in (a, U64, 0, TOP - P):
            for set_max in (FALSE, TRUE):
                expect(mach_vm_protect(mach_task_self(), addr, 0, set_max, prot), KERN_SUCCESS, hexes(addr, prot))
    assert perms_at(a) == "rw-p"


def test_protect_invalid_bits_is_invalid_argument(mem):
    a = mem.alloc(1)
    for prot in (0x08, 0x20, 0x40, 0x80, 0x100, 0x200, M.VM_PROT_NO_CHANGE, 0x84, -1, VM_PROT_READ | 0x1000):
        for set_max in (FALSE, TRUE):
            expect(protect(a, P, prot, set_max), KERN_INVALID_ARGUMENT, hex(prot))
    assert perms_at(a) == "rw-p"
    info = info_at(a)
    assert (info.protection, info.max_protection) == (VM_PROT_DEFAULT, VM_PROT_ALL)


def test_protect_wrapping_range_is_invalid_argument(mem):
    a = mem.alloc(1)
    for off, size in ((0, U64), (0, TOP - P + 1), (P - 1, TOP - P)):
        expect(protect(a + off, size, VM_PROT_NONE), KERN_INVALID_ARGUMENT, hexes(off, size))
    assert perms_at(a) == "rw-p"


def test_protect_wrapping_or_rounding_to_zero_is_invalid_argument():
    for addr, size in ((TOP - P, 2 * P), (U64, 1), (TOP - P, P - 1), (0, U64)):
        expect(protect(addr, size, VM_PROT_READ), KERN_INVALID_ARGUMENT, hexes(addr, size))


def test_protect_at_or_above_the_map_max_is_invalid_address():
    for addr in (MAP_MAX, MAP_MAX + P, 1 << 47, 1 << 63, TOP - 2 * P):
        expect(protect(addr, P, VM_PROT_READ), KERN_INVALID_ADDRESS, hex(addr))
        expect(protect(addr, P, VM_PROT_READ | VM_PROT_COPY), KERN_INVALID_ADDRESS, hex(addr))


def test_protect_unmapped_start_is_invalid_address(mem):
    h = mem.hole(2)
    expect(protect(h, 2 * P, VM_PROT_READ), KERN_INVALID_ADDRESS)
    expect(protect(h + 10, 1, VM_PROT_READ, TRUE), KERN_INVALID_ADDRESS)
    expect(protect(0, P, VM_PROT_READ), KERN_INVALID_ADDRESS)


def test_protect_below_the_map_is_invalid_address(bottom_page):
    expect(protect(MAP_MIN - P, 2 * P, VM_PROT_READ), KERN_INVALID_ADDRESS)
    assert perms_at(bottom_page) == "rw-p"


def test_protect_with_a_hole_is_invalid_address_and_changes_nothing(three):
    a = three
    for set_max in (FALSE, TRUE):
        expect(protect(a, 3 * P, VM_PROT_READ, set_max), KERN_INVALID_ADDRESS)
    assert perms_at(a) == "rw-p" and perms_at(a + 2 * P) == "rw-p"
    for addr in (a, a + 2 * P):
        info = info_at(addr)
        assert (info.protection, info.max_protection) == (VM_PROT_DEFAULT, VM_PROT_ALL)


def test_protect_running_past_the_last_entry_is_invalid_address(mem):
    a = mem.alloc(2)
    expect(mach_vm_deallocate(mach_task_self(), a + P, P), KERN_SUCCESS)
    mem.ranges[-1] = (a, P)
    assert perms_at(a + P) is None
    expect(protect(a, 2 * P, VM_PROT_NONE), KERN_INVALID_ADDRESS)
    assert perms_at(a) == "rw-p"


def test_protect_unaligned_covers_every_page_touched(mem):
    a = mem.alloc(3)
    expect(protect(a + P - 1, 2, VM_PROT_READ), KERN_SUCCESS)
    assert [perms_at(a + i * P) for i in range(3)] == ["r--p", "r--p", "rw-p"]
    r = region(a + 10)
    assert (r.address, r.size, r.info.protection) == (a, 2 * P, VM_PROT_READ)


@pytest.mark.parametrize("set_max", [TRUE, -1])
def test_protect_set_maximum_lowers_max_and_cur(mem, set_max):
    a = mem.alloc(1, fill=b"m")
    expect(protect(a, P, VM_PROT_READ, set_max), KERN_SUCCESS)
    info = info_at(a)
    assert (info.protection, info.max_protection) == (VM_PROT_READ, VM_PROT_READ)
    assert perms_at(a) == "r--p"
    assert child_exit_code(lambda: poke(a, b"x")) == -signal.SIGSEGV
    # the maximum is a ceiling now, for both kinds of call
    expect(protect(a, P, VM_PROT_DEFAULT), KERN_PROTECTION_FAILURE)
    expect(protect(a, P, VM_PROT_DEFAULT, TRUE), KERN_PROTECTION_FAILURE)
    expect(protect(a, P, VM_PROT_READ | VM_PROT_EXECUTE), KERN_PROTECTION_FAILURE)
    assert perms_at(a) == "r--p"
    info = info_at(a)
    assert (info.protection, info.max_protection) == (VM_PROT_READ, VM_PROT_READ)
    # lowering further is fine; cur = new & old cur
    expect(protect(a, P, VM_PROT_NONE), KERN_SUCCESS)
    expect(protect(a, P, VM_PROT_READ), KERN_SUCCESS)
    assert perms_at(a) == "r--p"


def test_protect_set_maximum_does_not_raise_cur(mem):
    a = mem.alloc(1)
    expect(protect(a, P, VM_PROT_READ), KERN_SUCCESS)
    expect(protect(a, P, VM_PROT_DEFAULT, TRUE), KERN_SUCCESS)
    info = info_at(a)
    assert (info.protection, info.max_protection) == (VM_PROT_READ, VM_PROT_DEFAULT)
    assert perms_at(a) == "r--p"
    expect(protect(a, P, VM_PROT_DEFAULT), KERN_SUCCESS)
    assert perms_at(a) == "rw-p"


def test_protect_protection_failure_is_atomic_across_entries(mem):
    a = mem.alloc(2)
    expect(protect(a, P, VM_PROT_READ), KERN_SUCCESS)             # page 0: cur R, max ALL
    expect(protect(a + P, P, VM_PROT_READ, TRUE), KERN_SUCCESS)   # page 1: max R
    expect(protect(a, 2 * P, VM_PROT_DEFAULT), KERN_PROTECTION_FAILURE)
    assert perms_at(a) == "r--p", "page 0 changed although the call failed"
    expect(protect(a, 2 * P, VM_PROT_DEFAULT, TRUE), KERN_PROTECTION_FAILURE)
    assert info_at(a).max_protection == VM_PROT_ALL


def test_protect_copy_gives_a_private_copy_with_write_in_max(mem):
    a = mem.alloc(2, fill=b"copy me ")
    expect(mach_vm_inherit(mach_task_self(), a, 2 * P, VM_INHERIT_NONE), KERN_SUCCESS)
    expect(protect(a, 2 * P, VM_PROT_READ, TRUE), KERN_SUCCESS)
    expect(protect(a, 2 * P, VM_PROT_DEFAULT), KERN_PROTECTION_FAILURE)
    expect(protect(a, 2 * P, VM_PROT_DEFAULT | VM_PROT_COPY), KERN_SUCCESS)
    info = info_at(a)
    assert info.protection == VM_PROT_DEFAULT
    assert info.max_protection & (VM_PROT_READ | VM_PROT_WRITE) == VM_PROT_DEFAULT
    assert info.inheritance == VM_INHERIT_COPY  # remapped with VM_INHERIT_DEFAULT
    assert perms_at(a) == perms_at(a + P) == "rw-p"
    assert peek(a, 8) == b"copy me "
    poke(a + P, b"writable")
    assert peek(a + P, 8) == b"writable"


def test_protect_copy_over_a_hole_is_invalid_address(three):
    a = three
    expect(protect(a, 3 * P, VM_PROT_READ | VM_PROT_COPY), KERN_INVALID_ADDRESS)
    assert perms_at(a) == "rw-p"


# -- mach_vm_inherit -----------------------------------------------------------------
# vm_user.c:260-261 size 0 succeeds before the value is checked; vm_sanitize.c:828-830
# KERN_INVALID_ARGUMENT above VM_INHERIT_LAST_VALID; vm_map.c:6137-6158 the range
# (a carry is KERN_INVALID_ARGUMENT), clamped to the map; holes are skipped.

def test_inherit_none_leaves_the_child_without_the_memory(mem):
    a = mem.alloc(1, fill=b"parent only")
    expect(mach_vm_inherit(mach_task_self(), a, P, VM_INHERIT_NONE), KERN_SUCCESS)
    assert info_at(a).inheritance == VM_INHERIT_NONE
    assert "dc" in vmflags_at(a)
    assert run_in_child(lambda: perms_at(a)) is None
    assert child_exit_code(lambda: peek(a, 1)) == -signal.SIGSEGV
    assert peek(a, 11) == b"parent only"


def test_inherit_share_shares_writes_with_the_child(mem):
    a = mem.alloc(2, fill=b"before--")
    expect(mach_vm_inherit(mach_task_self(), a, 2 * P, VM_INHERIT_SHARE), KERN_SUCCESS)
    assert peek(a, 8) == b"before--"
    assert info_at(a).inheritance == VM_INHERIT_SHARE
    run_in_child(lambda: poke(a + P + 8, b"from the child"))
    assert peek(a + P + 8, 14) == b"from the child"


def test_inherit_copy_keeps_the_child_s_writes_private(mem):
    a = mem.alloc(1, fill=b"original")
    expect(mach_vm_inherit(mach_task_self(), a, P, VM_INHERIT_SHARE), KERN_SUCCESS)
    expect(mach_vm_inherit(mach_task_self(), a, P, VM_INHERIT_COPY), KERN_SUCCESS)
    assert info_at(a).inheritance == VM_INHERIT_COPY

    def child():
        seen = peek(a, 8)
        poke(a, b"CHILD!!!")
        return seen

    assert run_in_child(child) == b"original"
    assert peek(a, 8) == b"original"


def test_inherit_invalid_value_is_invalid_argument(mem):
    a = mem.alloc(1)
    for value in (VM_INHERIT_DONATE_COPY, 4, 0x7FFFFFFF, 0xFFFFFFFF):
        expect(mach_vm_inherit(mach_task_self(), a, P, value), KERN_INVALID_ARGUMENT, hex(value))
    assert info_at(a).inheritance == VM_INHERIT_COPY


def test_inherit_size_zero_succeeds_without_checking_the_value(mem):
    a = mem.alloc(1)
    for value in (VM_INHERIT_DONATE_COPY, 0xFFFFFFFF, VM_INHERIT_NONE):
        for addr in (a, U64, 0):
            expect(mach_vm_inherit(mach_task_self(), addr, 0, value), KERN_SUCCESS, hexes(addr, value))
    assert info_at(a).inheritance == VM_INHERIT_COPY


def test_inherit_wrapping_range_is_invalid_argument(mem):
    a = mem.alloc(1)
    for addr, size in ((a, U64), (a, TOP - P), (TOP - P, 2 * P), (U64, 1), (0, U64)):
        expect(mach_vm_inherit(mach_task_self(), addr, size, VM_INHERIT_NONE), KERN_INVALID_ARGUMENT,
               hexes(addr, size))
    assert info_at(a).inheritance == VM_INHERIT_COPY
    assert "dc" not in vmflags_at(a)


def test_inherit_over_holes_changes_the_mapped_parts(three):
    a = three
    expect(mach_vm_inherit(mach_task_self(), a, 3 * P, VM_INHERIT_NONE), KERN_SUCCESS)
    assert info_at(a).inheritance == info_at(a + 2 * P).inheritance == VM_INHERIT_NONE
    assert "dc" in vmflags_at(a) and "dc" in vmflags_at(a + 2 * P)


def test_inherit_unmapped_or_outside_the_map_succeeds(mem):
    h = mem.hole(2)
    for addr, size in ((h, 2 * P), (0, P), (MAP_MAX, P), (1 << 63, P), (TOP - 2 * P, P)):
        expect(mach_vm_inherit(mach_task_self(), addr, size, VM_INHERIT_NONE), KERN_SUCCESS)


def test_inherit_is_clamped_to_the_map(top_page, bottom_page):
    expect(mach_vm_inherit(mach_task_self(), MAP_MAX - P, 2 * P, VM_INHERIT_NONE), KERN_SUCCESS)
    assert info_at(top_page).inheritance == VM_INHERIT_NONE
    expect(mach_vm_inherit(mach_task_self(), 0, MAP_MIN + P, VM_INHERIT_NONE), KERN_SUCCESS)
    assert info_at(bottom_page).inheritance == VM_INHERIT_NONE


def test_inherit_unaligned_covers_every_page_touched(mem):
    a = mem.alloc(3)
    expect(mach_vm_inherit(mach_task_self(), a + P - 1, 2, VM_INHERIT_NONE), KERN_SUCCESS)
    assert [info_at(a + i * P).inheritance for i in range(3)] == [VM_INHERIT_NONE, VM_INHERIT_NONE,
                                                                  VM_INHERIT_COPY]


# -- mach_vm_read ----------------------------------------------------------------------
# vm_user.c:409-410 KERN_INVALID_ARGUMENT for a size past 32 bits; vm_map.c:12028-12033
# the range (a carry or a crossing of 2^48: KERN_INVALID_ADDRESS, rewritten at
# vm_sanitize_error_compat.c:342-357); vm_map.c:12123-12138 up to msg_ool_size_small
# inside [min, max) the bytes are copied (copyinmap, vm_kern.c:4468-4475:
# KERN_INVALID_ADDRESS for anything unreadable); larger ranges are a virtual copy:
# :12189-12190 and :12266-12268 KERN_INVALID_ADDRESS for a hole, :12317-12320
# KERN_PROTECTION_FAILURE for an unreadable entry.

def test_read_small_copies_into_new_page_aligned_memory(mem):
    a = mem.alloc(1, fill=b"0123456789")
    kr, d, n = read(a + 3, 100)
    expect(kr, KERN_SUCCESS)
    try:
        assert n == 100
        assert d % P == 0 and d != a
        assert peek(d, 100) == peek(a + 3, 100)
        poke(a + 3, b"changed")
        assert peek(d, 7) == b"3456789", "the data is not a copy"
        assert perms_at(d) == "rw-p"
    finally:
        expect(mach_vm_deallocate(mach_task_self(), d, n), KERN_SUCCESS)
    assert perms_at(d) is None or region(d).address > d


def test_read_large_keeps_the_in_page_offset(mem):
    a = mem.alloc(8, fill=bytes(range(251)))
    kr, d, n = read(a + 123, 6 * P)
    expect(kr, KERN_SUCCESS)
    try:
        assert n == 6 * P
        assert d % P == 123
        assert peek(d, n) == peek(a + 123, n)
    finally:
        expect(mach_vm_deallocate(mach_task_self(), d, n), KERN_SUCCESS)


def test_read_of_memory_pymach_did_not_map():
    buf = ctypes.create_string_buffer(b"interpreter heap", 64)
    kr, d, n = read(ctypes.addressof(buf), 16)
    expect(kr, KERN_SUCCESS)
    try:
        assert peek(d, n) == b"interpreter heap"
    finally:
        expect(mach_vm_deallocate(mach_task_self(), d, n), KERN_SUCCESS)


def test_read_size_zero_returns_no_data(mem):
    a = mem.alloc(1)
    for addr in (0, U64, TOP - P, 0x1234, a):
        kr, d, n = read(addr, 0)
        expect(kr, KERN_SUCCESS, hex(addr))
        assert (d, n) == (0, 0)


def test_read_count_past_32_bits_is_invalid_argument(mem):
    a = mem.alloc(1)
    for size in (1 << 32, (1 << 32) + 1, 1 << 40, U64):
        for addr in (a, 0, TOP - P):  # checked before the address
            kr, d, n = read(addr, size)
            expect(kr, KERN_INVALID_ARGUMENT, hexes(addr, size))
            assert (d, n) == (S64, S32)


def test_read_count_of_exactly_32_bits_is_an_address_error(mem):
    h = mem.hole(1)
    kr, d, n = read(h, 0xFFFFFFFF)
    expect(kr, KERN_INVALID_ADDRESS)
    assert (d, n) == (S64, S32)


def test_read_wrapping_or_crossing_2_48_is_invalid_address():
    for addr, size in ((TOP - P, 2 * P), (U64, 1), (TOP - P, P - 1), (TOP - 16, 16), ((1 << 48) - P, 2 * P),
                       ((1 << 48) - 1, 2)):
        kr, d, n = read(addr, size)
        expect(kr, KERN_INVALID_ADDRESS, hexes(addr, size))
        assert (d, n) == (S64, S32)


def test_read_unmapped_hole_or_past_the_end_is_invalid_address(mem, three):
    a = three
    h = mem.hole(2)
    for addr, size in ((h, 16), (h + 100, 6 * P), (a, 3 * P), (a + P - 8, 16), (a + 2 * P, 2 * P),
                       (a + 2 * P + 10, 6 * P), (0, 16), (MAP_MAX, P)):
        kr, d, n = read(addr, size)
        expect(kr, KERN_INVALID_ADDRESS)
        assert (d, n) == (S64, S32)


def test_read_unreadable_small_vs_large(mem):
    a = mem.alloc(6)
    expect(protect(a, 6 * P, VM_PROT_NONE), KERN_SUCCESS)
    for size, want in ((1, KERN_INVALID_ADDRESS), (P, KERN_INVALID_ADDRESS), (OOL_SMALL, KERN_INVALID_ADDRESS),
                       (OOL_SMALL + 1, KERN_PROTECTION_FAILURE), (5 * P, KERN_PROTECTION_FAILURE),
                       (6 * P, KERN_PROTECTION_FAILURE)):
        kr, d, n = read(a, size)
        expect(kr, want, hex(size))
        assert (d, n) == (S64, S32)


def test_read_partly_unreadable_small_vs_large(mem):
    a = mem.alloc(6, fill=b"r")
    expect(protect(a + 5 * P, P, VM_PROT_NONE), KERN_SUCCESS)
    expect(read(a + 4 * P, 2 * P)[0], KERN_INVALID_ADDRESS)
    expect(read(a, 6 * P)[0], KERN_PROTECTION_FAILURE)
    expect(protect(a + 5 * P, P, VM_PROT_NONE, TRUE), KERN_SUCCESS)  # max too
    expect(read(a, 6 * P)[0], KERN_PROTECTION_FAILURE)
    kr, d, n = read(a, 5 * P)
    expect(kr, KERN_SUCCESS)
    expect(mach_vm_deallocate(mach_task_self(), d, n), KERN_SUCCESS)


def _unreadable_vma_above_the_map() -> int:
    """An unreadable mapping above MAP_MAX (x86_64 Linux: [vsyscall], '--xp'),
    the counterpart of XNU's commpage entry beyond the map's max."""
    for lo, _hi, perms, _path in maps():
        if lo >= MAP_MAX and perms[0] != "r":
            return lo
    pytest.skip("no unreadable mapping above the map")


def test_small_copies_outside_the_map_are_protection_failures(mem):
    # the small-copy rule (KERN_INVALID_ADDRESS) holds only inside [min, max)
    v = _unreadable_vma_above_the_map()
    dst = mem.alloc(1, fill=b"d")
    kr, d, n = read(v, 16)
    assert (d, n) == (S64, S32)
    expect(kr, KERN_PROTECTION_FAILURE)
    expect(mach_vm_copy(mach_task_self(), v, 16, dst), KERN_PROTECTION_FAILURE)
    expect(_read_overwrite(v, 16, dst)[0], KERN_PROTECTION_FAILURE)


def test_failed_reads_leave_no_memory_behind(mem):
    a = mem.alloc(6)
    expect(protect(a, 6 * P, VM_PROT_NONE), KERN_SUCCESS)
    before = maps()
    for _ in range(3):
        expect(read(a, 6 * P)[0], KERN_PROTECTION_FAILURE)
        expect(read(a, P)[0], KERN_INVALID_ADDRESS)
    after = maps()
    grown = sum(m.end - m.start for m in after) - sum(m.end - m.start for m in before)
    assert grown < 6 * P, f"{grown} bytes more mapped after failed reads"


# -- mach_vm_read_overwrite ----------------------------------------------------------
# vm_user.c:591-604 the source as mach_vm_read (without its 32-bit limit), then
# vm_map_copy_overwrite into our map (see mach_vm_write).

def test_read_overwrite_copies(mem):
    src = mem.alloc(2, fill=b"source..")
    dst = mem.alloc(2)
    out = mach_vm_size_t(S64)
    expect(mach_vm_read_overwrite(mach_task_self(), src + 8, P + 5, dst + 3, byref(out)), KERN_SUCCESS)
    assert out.value == P + 5
    assert peek(dst + 3, P + 5) == peek(src + 8, P + 5)
    assert peek(dst, 3) == bytes(3) and peek(dst + 3 + P + 5, 1) == b"\0"


def test_read_overwrite_into_memory_pymach_did_not_map(mem):
    src = mem.alloc(1, fill=b"into a ctypes buffer")
    buf = ctypes.create_string_buffer(32)
    out = mach_vm_size_t(S64)
    expect(mach_vm_read_overwrite(mach_task_self(), src, 20, ctypes.addressof(buf), byref(out)), KERN_SUCCESS)
    assert out.value == 20 and buf.raw[:20] == b"into a ctypes buffer"


def test_read_overwrite_size_zero_checks_nothing():
    for src, dst in ((0, 0), (U64, U64), (TOP - P, 0x1234)):
        out = mach_vm_size_t(S64)
        expect(mach_vm_read_overwrite(mach_task_self(), src, 0, dst, byref(out)), KERN_SUCCESS, hexes(src, dst))
        assert out.value == 0


def test_read_overwrite_has_no_32_bit_limit(mem):
    h = mem.hole(1)
    dst = mem.alloc(1)
    out = mach_vm_size_t(S64)
    expect(mach_vm_read_overwrite(mach_task_self(), h, 1 << 32, dst, byref(out)), KERN_INVALID_ADDRESS)
    assert out.value == S64


def _read_overwrite(src, size, dst) -> tuple[int, int]:
    out = mach_vm_size_t(S64)
    kr = mach_vm_read_overwrite(mach_task_self(), src, size, dst, byref(out))
    return kr, out.value


def test_read_overwrite_source_errors(mem, three):
    dst = mem.alloc(8, fill=b"d")
    src = mem.alloc(6, fill=b"s")
    expect(protect(src, 6 * P, VM_PROT_NONE), KERN_SUCCESS)
    h = mem.hole(1)
    for s, size, want in ((h, 16, KERN_INVALID_ADDRESS), (three, 3 * P, KERN_INVALID_ADDRESS),
                          (TOP - P, 2 * P, KERN_INVALID_ADDRESS), (U64, 1, KERN_INVALID_ADDRESS),
                          ((1 << 48) - P, 2 * P, KERN_INVALID_ADDRESS),
                          (src, OOL_SMALL, KERN_INVALID_ADDRESS), (src, OOL_SMALL + 1, KERN_PROTECTION_FAILURE)):
        kr, out = _read_overwrite(s, size, dst)
        expect(kr, want)
        assert out == S64
    assert peek(dst, 8 * P) == b"d" * 8 * P


def test_read_overwrite_destination_errors(mem, three):
    src = mem.alloc(6, fill=b"S")
    ro = mem.alloc(6, fill=b"r")
    expect(protect(ro, 6 * P, VM_PROT_READ), KERN_SUCCESS)
    h = mem.hole(6)
    cases = [(TOP - P, 2 * P, KERN_INVALID_ADDRESS), (U64 - 3, 8, KERN_INVALID_ADDRESS),
             ((1 << 48) - P, 2 * P, KERN_INVALID_ADDRESS),
             (h, 16, KERN_INVALID_ADDRESS), (h, 6 * P, KERN_INVALID_ADDRESS),          # unmapped
             (three, 3 * P, KERN_INVALID_ADDRESS), (three, 6 * P, KERN_INVALID_ADDRESS),  # hole
             (ro, P, KERN_INVALID_ADDRESS), (ro, OOL_SMALL, KERN_INVALID_ADDRESS),       # small, unwritable
             (ro, OOL_SMALL + 1, KERN_PROTECTION_FAILURE), (ro, 6 * P, KERN_PROTECTION_FAILURE)]
    for dst, size, want in cases:
        kr, out = _read_overwrite(src, size, dst)
        expect(kr, want)
        assert out == S64
    assert peek(ro, 6 * P) == b"r" * 6 * P, "a failed copy wrote to a read-only destination"


# -- mach_vm_write -------------------------------------------------------------------
# osfmk/ipc/ipc_kmsg.c:2498-2505 MACH_SEND_INVALID_MEMORY when the data cannot be
# copied in from the sender. The destination: vm_map.c:10165-10174 the range;
# a small copy goes out by copyoutmap (vm_map.c:11342 and :11358,
# vm_kern.c:4504 and :4516: KERN_INVALID_ADDRESS for anything unwritable), a large
# one by vm_map_copy_overwrite_nested: :9553-9561, :9626 and :9669 KERN_INVALID_ADDRESS
# (outside the map, a hole), :9634-9639 KERN_PROTECTION_FAILURE (not writable).

def test_write_copies_from_our_buffer(mem):
    dst = mem.alloc(2)
    src = mem.alloc(2, fill=b"payload!")
    expect(mach_vm_write(mach_task_self(), dst + 100, src, P + 50), KERN_SUCCESS)
    assert peek(dst + 100, P + 50) == peek(src, P + 50)
    assert peek(dst, 100) == bytes(100)
    # from a bytes object, into memory pymach did not map
    buf = ctypes.create_string_buffer(16)
    expect(mach_vm_write(mach_task_self(), ctypes.addressof(buf), b"hello, mach", 11), KERN_SUCCESS)
    assert buf.raw[:12] == b"hello, mach\0"


def test_write_count_zero_checks_nothing():
    for dst, data in ((0, 0), (U64, U64), (TOP - P, 0x1234)):
        expect(mach_vm_write(mach_task_self(), dst, data, 0), KERN_SUCCESS, hexes(dst, data))


def test_write_from_an_unreadable_source_is_send_invalid_memory(mem):
    dst = mem.alloc(2, fill=b"D")
    src = mem.alloc(6)
    expect(protect(src, 6 * P, VM_PROT_NONE), KERN_SUCCESS)
    h = mem.hole(1)
    for s, n in ((src, 16), (src, 6 * P), (h, 16), (0, 16), (U64 - 3, 8)):
        expect(mach_vm_write(mach_task_self(), dst, s, min(n, 2 * P)), MACH_SEND_INVALID_MEMORY)
    # the message fails to send before the destination is looked at
    expect(mach_vm_write(mach_task_self(), h, src, 16), MACH_SEND_INVALID_MEMORY)
    expect(mach_vm_write(mach_task_self(), TOP - 8, h, 16), MACH_SEND_INVALID_MEMORY)
    assert peek(dst, 2 * P) == b"D" * 2 * P


def test_write_destination_errors(mem, three):
    src = mem.alloc(6, fill=b"W")
    ro = mem.alloc(6, fill=b"r")
    expect(protect(ro, 6 * P, VM_PROT_READ), KERN_SUCCESS)
    h = mem.hole(6)
    cases = [(TOP - P, 2 * P, KERN_INVALID_ADDRESS), (U64 - 3, 8, KERN_INVALID_ADDRESS),
             ((1 << 48) - P, 2 * P, KERN_INVALID_ADDRESS),
             (h, 16, KERN_INVALID_ADDRESS), (h, 6 * P, KERN_INVALID_ADDRESS),
             (three, 3 * P, KERN_INVALID_ADDRESS), (three + 2 * P - 8, 16, KERN_INVALID_ADDRESS),
             (three, 6 * P, KERN_INVALID_ADDRESS),
             (ro, 16, KERN_INVALID_ADDRESS), (ro, OOL_SMALL, KERN_INVALID_ADDRESS),
             (ro, OOL_SMALL + 1, KERN_PROTECTION_FAILURE), (ro, 6 * P, KERN_PROTECTION_FAILURE)]
    for dst, size, want in cases:
        expect(mach_vm_write(mach_task_self(), dst, src, size), want)
    assert peek(ro, 6 * P) == b"r" * 6 * P
    assert peek(three, 7) == b"ABCDEFG"


# -- mach_vm_copy --------------------------------------------------------------------
# vm_user.c:699-713 vm_map_copyin of the source (see mach_vm_read) and
# vm_map_copy_overwrite of the destination (see mach_vm_write).

def test_copy_copies(mem):
    a = mem.alloc(2, fill=b"abcdefgh")
    b = mem.alloc(2)
    expect(mach_vm_copy(mach_task_self(), a + 1, P, b + 7), KERN_SUCCESS)
    assert peek(b + 7, P) == peek(a + 1, P)
    assert peek(b, 7) == bytes(7) and peek(b + 7 + P, 1) == b"\0"


@pytest.mark.parametrize("size", [100, 5 * P])
@pytest.mark.parametrize("shift", [10, -10, P + 3, -(P + 3)])
def test_copy_with_overlap_has_memmove_semantics(mem, size, shift):
    a = mem.alloc(8)
    pattern = bytes((i * 7 + i // 251) & 0xFF for i in range(8 * P))
    poke(a, pattern)
    src = a + 2 * P if shift < 0 else a + 50
    dst = src + shift
    expect(mach_vm_copy(mach_task_self(), src, size, dst), KERN_SUCCESS)
    want = bytearray(pattern)
    want[dst - a:dst - a + size] = pattern[src - a:src - a + size]
    assert peek(a, 8 * P) == bytes(want)


def test_copy_size_zero_checks_nothing():
    for src, dst in ((0, 0), (U64, U64), (TOP - P, 0x1234)):
        expect(mach_vm_copy(mach_task_self(), src, 0, dst), KERN_SUCCESS, hexes(src, dst))


def test_copy_source_errors(mem, three):
    dst = mem.alloc(6, fill=b"d")
    src = mem.alloc(6)
    expect(protect(src, 6 * P, VM_PROT_NONE), KERN_SUCCESS)
    h = mem.hole(1)
    for s, size, want in ((TOP - P, 2 * P, KERN_INVALID_ADDRESS), (U64, 1, KERN_INVALID_ADDRESS),
                          (TOP - P, P - 1, KERN_INVALID_ADDRESS), ((1 << 48) - P, 2 * P, KERN_INVALID_ADDRESS),
                          (h, 16, KERN_INVALID_ADDRESS), (three, 3 * P, KERN_INVALID_ADDRESS),
                          (three + 2 * P, 2 * P, KERN_INVALID_ADDRESS),
                          (src, 16, KERN_INVALID_ADDRESS), (src, OOL_SMALL, KERN_INVALID_ADDRESS),
                          (src, OOL_SMALL + 1, KERN_PROTECTION_FAILURE), (src, 6 * P, KERN_PROTECTION_FAILURE)):
        expect(mach_vm_copy(mach_task_self(), s, size, dst), want)
    assert peek(dst, 6 * P) == b"d" * 6 * P


def test_copy_destination_errors(mem, three):
    src = mem.alloc(6, fill=b"C")
    ro = mem.alloc(6, fill=b"r")
    expect(protect(ro, 6 * P, VM_PROT_READ), KERN_SUCCESS)
    h = mem.hole(6)
    for dst, size, want in ((TOP - P, 2 * P, KERN_INVALID_ADDRESS), (U64 - 3, 8, KERN_INVALID_ADDRESS),
                            ((1 << 48) - P, 2 * P, KERN_INVALID_ADDRESS),
                            (h, 16, KERN_INVALID_ADDRESS), (h, 6 * P, KERN_INVALID_ADDRESS),
                            (three, 3 * P, KERN_INVALID_ADDRESS), (three, 6 * P, KERN_INVALID_ADDRESS),
                            (ro, 16, KERN_INVALID_ADDRESS), (ro, OOL_SMALL, KERN_INVALID_ADDRESS),
                            (ro, OOL_SMALL + 1, KERN_PROTECTION_FAILURE), (ro, 6 * P, KERN_PROTECTION_FAILURE)):
        expect(mach_vm_copy(mach_task_self(), src, size, dst), want)
    assert peek(ro, 6 * P) == b"r" * 6 * P
    assert peek(three, 7) == b"ABCDEFG"


# -- mach_vm_region ------------------------------------------------------------------
# vm_user.c:1349-1350 VM_REGION_BASIC_INFO is served as VM_REGION_BASIC_INFO_64;
# vm_map.c:15559-15560 KERN_INVALID_ARGUMENT for a short count, :15571
# KERN_INVALID_ADDRESS past the last region, :15701-15702 KERN_INVALID_ARGUMENT for
# an unknown flavor; the legacy vm_region keeps the 32-bit VM_REGION_BASIC_INFO
# (:15511-15523).

def test_region_describes_an_allocation(mem):
    a = mem.alloc(3)
    r = region(a + P + 17)
    expect(r.kr, KERN_SUCCESS)
    assert (r.address, r.size) == (a, 3 * P)  # the start may be below the input
    assert r.count == VM_REGION_BASIC_INFO_COUNT_64
    assert r.object_name == MACH_PORT_NULL
    i = r.info
    assert (i.protection, i.max_protection, i.inheritance, i.shared, i.reserved) == (
        VM_PROT_DEFAULT, VM_PROT_ALL, VM_INHERIT_COPY, 0, 0)
    assert (i.offset, i.behavior, i.user_wired_count) == (0, VM_BEHAVIOR_DEFAULT, 0)


def test_region_count_out_is_exactly_9(mem):
    a = mem.alloc(1)
    for count in (VM_REGION_BASIC_INFO_COUNT_64, 10, 1024, 5000):
        buf = (ctypes.c_int * 64)()
        r = region(a, count=count, info=buf)
        expect(r.kr, KERN_SUCCESS, count)
        assert r.count == 9
        assert buf[0] == VM_PROT_DEFAULT and buf[1] == VM_PROT_ALL


def test_region_entries_split_by_protect(mem):
    a = mem.alloc(3)
    expect(protect(a + P, P, VM_PROT_READ), KERN_SUCCESS)
    r = region(a + P + 5)
    assert (r.kr, r.address, r.size, r.info.protection) == (KERN_SUCCESS, a + P, P, VM_PROT_READ)
    r = region(a)
    assert (r.address, r.size, r.info.protection) == (a, P, VM_PROT_DEFAULT)
    r = region(a + 2 * P + P - 1)
    assert (r.address, r.size, r.info.protection) == (a + 2 * P, P, VM_PROT_DEFAULT)


def test_region_in_a_hole_returns_the_next_region(three):
    a = three
    r = region(a + P + 123)
    expect(r.kr, KERN_SUCCESS)
    assert (r.address, r.size) == (a + 2 * P, P)
    assert r.count == 9 and r.object_name == MACH_PORT_NULL


def test_region_of_memory_pymach_did_not_map():
    buf = ctypes.create_string_buffer(64)
    r = region(ctypes.addressof(buf))
    expect(r.kr, KERN_SUCCESS)
    assert r.address <= ctypes.addressof(buf) < r.address + r.size
    assert r.info.protection & VM_PROT_DEFAULT == VM_PROT_DEFAULT


def test_region_count_too_small_is_invalid_argument(mem):
    a = mem.alloc(1)
    for count in (0, 1, VM_REGION_BASIC_INFO_COUNT_64 - 1):
        for addr in (a, TOP - P):  # checked before the address lookup
            r = region(addr, count=count)
            expect(r.kr, KERN_INVALID_ARGUMENT, hexes(addr, count))
            assert (r.address, r.size, r.count, r.object_name) == (addr, S64, count, S32)
            assert bytes(r.info) == b"\x5a" * 36


def test_region_unknown_flavor_is_invalid_argument(mem):
    a = mem.alloc(1)
    for flavor in (0, 8, 14, 99, -1):
        r = region(a, flavor=flavor, count=1024)
        expect(r.kr, KERN_INVALID_ARGUMENT, flavor)
        assert (r.address, r.size, r.count, r.object_name) == (a, S64, 1024, S32)


def test_region_past_the_last_region_is_invalid_address():
    for addr in (TOP - P, U64, 0xFFFFFFFFFF601000):
        r = region(addr)
        expect(r.kr, KERN_INVALID_ADDRESS, hex(addr))
        assert (r.address, r.size, r.count, r.object_name) == (addr, S64, 9, S32)
        assert bytes(r.info) == b"\x5a" * 36


@pytest.mark.parametrize("fn", [mach_vm_region, M.vm_region_64], ids=["mach_vm_region", "vm_region_64"])
def test_region_basic_info_flavor_is_served_as_basic_info_64(mem, fn):
    a = mem.alloc(2)
    expect(protect(a + P, P, VM_PROT_READ, TRUE), KERN_SUCCESS)
    # converted to VM_REGION_BASIC_INFO_64, so 8 ints are too few
    r = region(a + P, flavor=VM_REGION_BASIC_INFO, count=VM_REGION_BASIC_INFO_COUNT, fn=fn)
    expect(r.kr, KERN_INVALID_ARGUMENT)
    assert r.count == VM_REGION_BASIC_INFO_COUNT
    r = region(a + P, flavor=VM_REGION_BASIC_INFO, count=VM_REGION_BASIC_INFO_COUNT_64, fn=fn)
    expect(r.kr, KERN_SUCCESS)
    assert r.count == VM_REGION_BASIC_INFO_COUNT_64
    assert (r.address, r.size) == (a + P, P)
    assert (r.info.protection, r.info.max_protection, r.info.behavior) == (VM_PROT_READ, VM_PROT_READ, 0)


def test_legacy_vm_region_keeps_the_32_bit_basic_info(mem):
    a = mem.alloc(1)
    expect(mach_vm_behavior_set(mach_task_self(), a, P, VM_BEHAVIOR_SEQUENTIAL), KERN_SUCCESS)
    info = vm_region_basic_info_data_t()
    r = region(a, flavor=VM_REGION_BASIC_INFO, count=VM_REGION_BASIC_INFO_COUNT, info=info, fn=M.vm_region)
    expect(r.kr, KERN_SUCCESS)
    assert r.count == VM_REGION_BASIC_INFO_COUNT
    assert (info.protection, info.max_protection, info.behavior) == (VM_PROT_DEFAULT, VM_PROT_ALL,
                                                                     VM_BEHAVIOR_SEQUENTIAL)
    r = region(a, flavor=VM_REGION_BASIC_INFO, count=VM_REGION_BASIC_INFO_COUNT - 1, fn=M.vm_region)
    expect(r.kr, KERN_INVALID_ARGUMENT)


# -- mach_vm_msync -------------------------------------------------------------------
# vm_map.c:20867-20869 KERN_INVALID_ARGUMENT for SYNC and ASYNC together; a carry is
# rewritten to KERN_INVALID_ADDRESS (vm_sanitize_error_compat.c:536-541);
# vm_map.c:21112-21113 KERN_INVALID_ADDRESS for a hole with VM_SYNC_CONTIGUOUS;
# :20905-20914 VM_SYNC_KILLPAGES stops at a hole.

def test_msync_sync_and_async_together_is_invalid_argument(mem):
    a = mem.alloc(1, fill=b"k")
    for extra in (0, VM_SYNC_KILLPAGES, VM_SYNC_INVALIDATE):
        expect(mach_vm_msync(mach_task_self(), a, P, VM_SYNC_SYNCHRONOUS | VM_SYNC_ASYNCHRONOUS | extra),
               KERN_INVALID_ARGUMENT)
    assert peek(a, 1) == b"k"
    # size 0 checks nothing
    expect(mach_vm_msync(mach_task_self(), a, 0, VM_SYNC_SYNCHRONOUS | VM_SYNC_ASYNCHRONOUS), KERN_SUCCESS)
    expect(mach_vm_msync(mach_task_self(), U64, 0, VM_SYNC_SYNCHRONOUS | VM_SYNC_ASYNCHRONOUS), KERN_SUCCESS)


def test_msync_anonymous_memory_keeps_its_contents(mem):
    a = mem.alloc(2, fill=b"keep")
    for flags in (VM_SYNC_SYNCHRONOUS, VM_SYNC_ASYNCHRONOUS, VM_SYNC_INVALIDATE,
                  VM_SYNC_SYNCHRONOUS | VM_SYNC_INVALIDATE, VM_SYNC_DEACTIVATE, VM_SYNC_REUSABLEPAGES,
                  VM_SYNC_CONTIGUOUS, 0, 0x80, 0x1000, 0x80000000):  # unknown bits are ignored
        expect(mach_vm_msync(mach_task_self(), a, 2 * P, flags), KERN_SUCCESS, hex(flags))
        assert peek(a, 2 * P) == b"keep" * (2 * P // 4)


def test_msync_wrapping_is_invalid_address():
    for addr, size in ((TOP - P, 2 * P), (U64, 1), (TOP - P, P - 1), (0, U64)):
        expect(mach_vm_msync(mach_task_self(), addr, size, VM_SYNC_SYNCHRONOUS), KERN_INVALID_ADDRESS,
               hexes(addr, size))


def test_msync_holes(mem, three):
    a = three
    h = mem.hole(2)
    for flags in (VM_SYNC_SYNCHRONOUS, VM_SYNC_ASYNCHRONOUS, VM_SYNC_DEACTIVATE):
        expect(mach_vm_msync(mach_task_self(), a, 3 * P, flags), KERN_SUCCESS)
        expect(mach_vm_msync(mach_task_self(), h, 2 * P, flags), KERN_SUCCESS)
        expect(mach_vm_msync(mach_task_self(), a, 3 * P, flags | VM_SYNC_CONTIGUOUS), KERN_INVALID_ADDRESS)
        expect(mach_vm_msync(mach_task_self(), h, 2 * P, flags | VM_SYNC_CONTIGUOUS), KERN_INVALID_ADDRESS)
        expect(mach_vm_msync(mach_task_self(), a + 2 * P, P, flags | VM_SYNC_CONTIGUOUS), KERN_SUCCESS)
    assert peek(a, 7) == b"ABCDEFG" and peek(a + 2 * P, 1) != b"\0"


def test_msync_killpages_zeroes_private_memory(mem):
    a = mem.alloc(3, fill=b"doomed")
    expect(mach_vm_msync(mach_task_self(), a + 10, P, VM_SYNC_KILLPAGES), KERN_SUCCESS)
    assert peek(a, 2 * P) == bytes(2 * P)  # every page touched
    assert peek(a + 2 * P, P) == filled(b"doomed", 3 * P)[2 * P:]
    assert perms_at(a) == "rw-p"


def test_msync_killpages_stops_at_a_hole(three):
    a = three
    expect(mach_vm_msync(mach_task_self(), a, 3 * P, VM_SYNC_KILLPAGES), KERN_SUCCESS)
    assert peek(a, P) == bytes(P)
    assert peek(a + 2 * P, P) != bytes(P), "KILLPAGES went on past the hole"
    expect(mach_vm_msync(mach_task_self(), a, 3 * P, VM_SYNC_KILLPAGES | VM_SYNC_CONTIGUOUS), KERN_INVALID_ADDRESS)


# -- mach_vm_behavior_set ------------------------------------------------------------
# vm_sanitize.c:845-848 KERN_INVALID_ARGUMENT for a value above
# VM_BEHAVIOR_LAST_VALID, even for size 0 (vm_user.c:1222-1224 checks it first);
# vm_sanitize_error_compat.c:505-515 rewrites a range rounding to nothing or
# leaving the map to KERN_NO_SPACE (a carry stays KERN_INVALID_ARGUMENT);
# vm_map.c:16490-16496 the same rule in vm_map_behavior_set; :16520-16525
# KERN_INVALID_ADDRESS for a hole; :16534-16540 and :17229-17233
# KERN_PROTECTION_FAILURE (ZERO_WIRED_PAGES, ZERO on memory that is not writable
# or is executable), :16983 (REUSABLE); :16600-16601 KERN_INVALID_ARGUMENT for
# VM_BEHAVIOR_PAGEOUT, which only MACH_ASSERT kernels handle (:16593).

def test_behavior_invalid_value_is_invalid_argument_even_for_size_zero(mem):
    a = mem.alloc(1)
    for behavior in (-1, 13, 100, 0x7FFFFFFF, -0x80000000):
        for addr, size in ((a, P), (a, 0), (U64, 0), (0, P)):
            expect(mach_vm_behavior_set(mach_task_self(), addr, size, behavior), KERN_INVALID_ARGUMENT,
                   hexes(addr, size, behavior))


def test_behavior_size_zero_succeeds():
    for behavior in range(0, 13):
        for addr in (0, U64, 0x1234):
            expect(mach_vm_behavior_set(mach_task_self(), addr, 0, behavior), KERN_SUCCESS, hexes(addr, behavior))


def test_behavior_range_errors():
    # a carry is KERN_INVALID_ARGUMENT; rounding to 0 or leaving [min, max] is KERN_NO_SPACE
    for addr, size, want in ((TOP - P, 2 * P, KERN_INVALID_ARGUMENT), (U64, 1, KERN_INVALID_ARGUMENT),
                             (1, U64, KERN_INVALID_ARGUMENT), (TOP - P, P - 1, KERN_NO_SPACE),
                             (0, U64, KERN_NO_SPACE), (0, P, KERN_NO_SPACE), (MAP_MIN - P, 2 * P, KERN_NO_SPACE),
                             (MAP_MAX, P, KERN_NO_SPACE), (MAP_MAX - P, 2 * P, KERN_NO_SPACE),
                             (1 << 63, P, KERN_NO_SPACE)):
        for behavior in (VM_BEHAVIOR_DEFAULT, VM_BEHAVIOR_ZERO, VM_BEHAVIOR_REUSABLE, VM_BEHAVIOR_PAGEOUT):
            expect(mach_vm_behavior_set(mach_task_self(), addr, size, behavior), want, hexes(addr, size, behavior))


def test_behavior_outside_the_map_changes_nothing(top_page):
    expect(mach_vm_behavior_set(mach_task_self(), MAP_MAX - P, 2 * P, VM_BEHAVIOR_ZERO), KERN_NO_SPACE)
    assert peek(top_page, 3) == b"top"


HOLE_BEHAVIORS = [VM_BEHAVIOR_DEFAULT, VM_BEHAVIOR_RANDOM, VM_BEHAVIOR_SEQUENTIAL, VM_BEHAVIOR_RSEQNTL,
                  VM_BEHAVIOR_WILLNEED, VM_BEHAVIOR_DONTNEED, VM_BEHAVIOR_FREE, VM_BEHAVIOR_ZERO_WIRED_PAGES,
                  VM_BEHAVIOR_REUSABLE, VM_BEHAVIOR_REUSE, VM_BEHAVIOR_CAN_REUSE, VM_BEHAVIOR_ZERO]


def test_behavior_over_a_hole_is_invalid_address(mem, three):
    h = mem.hole(2)
    for behavior in HOLE_BEHAVIORS:
        expect(mach_vm_behavior_set(mach_task_self(), three, 3 * P, behavior), KERN_INVALID_ADDRESS, behavior)
        expect(mach_vm_behavior_set(mach_task_self(), h, 2 * P, behavior), KERN_INVALID_ADDRESS, behavior)
    assert peek(three, 7) == b"ABCDEFG"


def test_behavior_on_a_mapped_range_succeeds(mem):
    a = mem.alloc(2, fill=b"b")
    for behavior in HOLE_BEHAVIORS:
        expect(mach_vm_behavior_set(mach_task_self(), a, 2 * P, behavior), KERN_SUCCESS, behavior)
        assert perms_at(a) == "rw-p"


@pytest.mark.parametrize("behavior,flag", [(VM_BEHAVIOR_RANDOM, "rr"), (VM_BEHAVIOR_SEQUENTIAL, "sr"),
                                           (VM_BEHAVIOR_RSEQNTL, "sr")])
def test_behavior_persists_on_the_entry(mem, behavior, flag):
    a = mem.alloc(2)
    expect(mach_vm_behavior_set(mach_task_self(), a + P, P, behavior), KERN_SUCCESS)
    assert info_at(a + P).behavior == behavior
    assert info_at(a).behavior == VM_BEHAVIOR_DEFAULT
    assert flag in vmflags_at(a + P) and flag not in vmflags_at(a)
    expect(mach_vm_behavior_set(mach_task_self(), a, 2 * P, VM_BEHAVIOR_DEFAULT), KERN_SUCCESS)
    assert info_at(a + P).behavior == VM_BEHAVIOR_DEFAULT
    assert flag not in vmflags_at(a + P)


def test_behavior_zero_zeroes(mem):
    a = mem.alloc(3, fill=b"nonzero")
    expect(mach_vm_behavior_set(mach_task_self(), a, 2 * P, VM_BEHAVIOR_ZERO), KERN_SUCCESS)
    assert peek(a, 2 * P) == bytes(2 * P)
    assert peek(a + 2 * P, 1) != b"\0"
    assert perms_at(a) == "rw-p"


def test_behavior_zero_on_shared_memory_zeroes(mem):
    a = mem.alloc(1, fill=b"shared")
    expect(mach_vm_inherit(mach_task_self(), a, P, VM_INHERIT_SHARE), KERN_SUCCESS)
    expect(mach_vm_behavior_set(mach_task_self(), a, P, VM_BEHAVIOR_ZERO), KERN_SUCCESS)
    assert peek(a, P) == bytes(P)


def test_behavior_dontneed_keeps_the_data(mem):
    a = mem.alloc(2, fill=b"still here")
    expect(mach_vm_behavior_set(mach_task_self(), a, 2 * P, VM_BEHAVIOR_DONTNEED), KERN_SUCCESS)
    assert peek(a, 10) == b"still here"


@pytest.mark.parametrize("behavior", [VM_BEHAVIOR_ZERO, VM_BEHAVIOR_ZERO_WIRED_PAGES, VM_BEHAVIOR_REUSABLE])
def test_behavior_needing_write_on_read_only_is_protection_failure(mem, behavior):
    a = mem.alloc(2, fill=b"readonly")
    expect(protect(a + P, P, VM_PROT_READ), KERN_SUCCESS)
    expect(mach_vm_behavior_set(mach_task_self(), a, 2 * P, behavior), KERN_PROTECTION_FAILURE)
    assert peek(a, 8) == b"readonly", "data changed although the call failed"


def test_behavior_zero_on_executable_memory_is_protection_failure(mem):
    a = mem.alloc(1, fill=b"code")
    expect(protect(a, P, VM_PROT_ALL), KERN_SUCCESS)
    expect(mach_vm_behavior_set(mach_task_self(), a, P, VM_BEHAVIOR_ZERO), KERN_PROTECTION_FAILURE)
    assert peek(a, 4) == b"code"


def test_behavior_pageout_is_invalid_argument(mem):
    a = mem.alloc(1, fill=b"p")
    expect(mach_vm_behavior_set(mach_task_self(), a, P, VM_BEHAVIOR_PAGEOUT), KERN_INVALID_ARGUMENT)
    assert peek(a, 1) == b"p"


# -- mach_vm_page_query --------------------------------------------------------------
# vm_user.c:1589 vm_map_page_info of one page; vm_map.c:20305-20318 the range of that
# page, which crossing the end of the address space is KERN_INVALID_ADDRESS
# (vm_sanitize_error_compat.c:589-594).

def test_page_query_unmapped_and_untouched_pages(mem):
    h = mem.hole(1)
    a = mem.alloc(1)
    for addr in (h, a, a + P - 1, 0, MAP_MIN - 1, MAP_MAX, 1 << 47, 1 << 63, TOP - 2 * P):
        kr, d, r = page_query(addr)
        expect(kr, KERN_SUCCESS)
        assert (d, r) == (0, 0), f"{addr:#x}"


def _written_page_disposition() -> tuple[int, int, int]:
    kr, a = allocate(2 * P)
    expect(kr, KERN_SUCCESS)
    try:
        poke(a + 5, b"dirty")
        return page_query(a + 7)
    finally:
        expect(mach_vm_deallocate(mach_task_self(), a, 2 * P), KERN_SUCCESS)


def test_page_query_written_page_is_present_dirty_referenced():
    kr, d, r = _written_page_disposition()
    expect(kr, KERN_SUCCESS)
    want = VM_PAGE_QUERY_PAGE_PRESENT | VM_PAGE_QUERY_PAGE_DIRTY | VM_PAGE_QUERY_PAGE_REF
    assert d & want == want, f"disposition {d:#x}"
    assert r == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_page_query_written_page_unprivileged():
    def child():
        drop_privileges()
        return _written_page_disposition()

    kr, d, r = run_in_child(child)
    expect(kr, KERN_SUCCESS)
    want = VM_PAGE_QUERY_PAGE_PRESENT | VM_PAGE_QUERY_PAGE_DIRTY | VM_PAGE_QUERY_PAGE_REF
    assert d & want == want, f"disposition {d:#x}"
    assert r == 1


def test_page_query_present_after_touch_and_gone_after_killpages(mem):
    a = mem.alloc(1)
    poke(a, b"x")
    kr, d, r = page_query(a)
    expect(kr, KERN_SUCCESS)
    assert d & VM_PAGE_QUERY_PAGE_PRESENT and r == 1
    expect(mach_vm_msync(mach_task_self(), a, P, VM_SYNC_KILLPAGES), KERN_SUCCESS)
    assert page_query(a)[1] & VM_PAGE_QUERY_PAGE_PRESENT == 0
    expect(mach_vm_deallocate(mach_task_self(), a, P), KERN_SUCCESS)
    mem.ranges.clear()
    assert page_query(a)[1:] == (0, 0)


def test_page_query_file_backed_page_is_external(tmp_path):
    import mmap

    with open(tmp_path / "f", "w+b") as f:
        f.write(b"file data" * 1000)
        f.flush()
        m = mmap.mmap(f.fileno(), 8192)
        try:
            c = ctypes.c_char.from_buffer(m)
            addr = ctypes.addressof(c)
            assert m[:9] == b"file data"
            kr, d, r = page_query(addr + 3)
            del c
        finally:
            m.close()
    expect(kr, KERN_SUCCESS)
    want = VM_PAGE_QUERY_PAGE_PRESENT | M.VM_PAGE_QUERY_PAGE_EXTERNAL
    assert d & want == want, f"disposition {d:#x}"
    assert r >= 1


def test_page_query_in_the_last_page_of_the_address_space_is_invalid_address():
    for addr in (U64, TOP - 1, TOP - P, TOP - P + 123):
        kr, d, r = page_query(addr)
        expect(kr, KERN_INVALID_ADDRESS, hex(addr))
        assert (d, r) == (SI, SI)


# -- mach_vm_wire --------------------------------------------------------------------
# osfmk/mach/host_priv.defs:287: the request goes to the host privileged port
# (MACH_SEND_INVALID_DEST for a name that is none, osfmk/ipc/ipc_kmsg.c:2016-2019;
# MACH_SEND_INVALID_RIGHT for a task name the body cannot carry, :2599-2614);
# vm_user.c:1041-1042 KERN_INVALID_HOST (not the privileged host port), :1045-1046
# KERN_INVALID_TASK; vm_map.c:7147-7155 the range (KERN_INVALID_ARGUMENT for a
# carry) and the access bits (vm_sanitize.c:636-645); vm_map.c:6434 the range is
# clamped to the map; :6462 and :7002 KERN_INVALID_ADDRESS for an unmapped start
# or a hole, :7005-7007 KERN_PROTECTION_FAILURE; unwiring: :7292
# KERN_INVALID_ADDRESS for an unmapped start.

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mach_host_self() is host_priv only for root")


@root_only
def test_wire_and_unwire(mem):
    a = mem.alloc(2, fill=b"w")
    expect(wire(a, 2 * P, VM_PROT_READ | VM_PROT_WRITE), KERN_SUCCESS)
    assert "lo" in vmflags_at(a) and "lo" in vmflags_at(a + P)
    assert info_at(a).user_wired_count == 1
    expect(wire(a, 2 * P, VM_PROT_NONE), KERN_SUCCESS)
    assert "lo" not in vmflags_at(a) and "lo" not in vmflags_at(a + P)
    assert info_at(a).user_wired_count == 0
    assert peek(a, 1) == b"w"


@root_only
def test_wire_classic_alias(mem):
    a = mem.alloc(1)
    expect(M.vm_wire(mach_host_self(), mach_task_self(), a, P, VM_PROT_READ), KERN_SUCCESS)
    assert "lo" in vmflags_at(a)
    expect(M.vm_wire(mach_host_self(), mach_task_self(), a, P, VM_PROT_NONE), KERN_SUCCESS)
    assert "lo" not in vmflags_at(a)


@root_only
def test_wire_unaligned_covers_every_page_touched(mem):
    a = mem.alloc(3)
    expect(wire(a + P - 1, 2, VM_PROT_READ), KERN_SUCCESS)
    try:
        assert "lo" in vmflags_at(a) and "lo" in vmflags_at(a + P) and "lo" not in vmflags_at(a + 2 * P)
    finally:
        expect(wire(a, 3 * P, VM_PROT_NONE), KERN_SUCCESS)


@root_only
def test_wire_size_zero_succeeds(mem):
    for addr in (0, U64, TOP - P):
        expect(wire(addr, 0, VM_PROT_READ), KERN_SUCCESS)
        expect(wire(addr, 0, 0x10), KERN_SUCCESS)


@root_only
def test_wire_wrapping_is_invalid_argument():
    for addr, size in ((TOP - P, 2 * P), (U64, 1), (1, U64), (TOP - P, P - 1), (0, U64)):
        expect(wire(addr, size, VM_PROT_READ), KERN_INVALID_ARGUMENT, hexes(addr, size))
        expect(wire(addr, size, VM_PROT_NONE), KERN_INVALID_ARGUMENT, hexes(addr, size))


@root_only
def test_wire_invalid_access_is_invalid_argument(mem):
    a = mem.alloc(1)
    h = mem.hole(1)
    for access in (0x10, 0x20, 0x100, -1):
        expect(wire(a, P, access), KERN_INVALID_ARGUMENT, hex(access))
        expect(wire(h, P, access), KERN_INVALID_ARGUMENT, hex(access))  # before the map is looked at
    assert "lo" not in vmflags_at(a)


@root_only
def test_wire_outside_the_map_is_clamped_to_nothing():
    for addr, size in ((0, MAP_MIN), (MAP_MAX, P), (1 << 63, P)):
        expect(wire(addr, size, VM_PROT_READ), KERN_SUCCESS)
        expect(wire(addr, size, VM_PROT_NONE), KERN_SUCCESS)


@root_only
def test_wire_with_a_hole_is_invalid_address_and_wires_nothing(mem, three):
    a = three
    h = mem.hole(1)
    expect(wire(a, 3 * P, VM_PROT_READ), KERN_INVALID_ADDRESS)
    assert "lo" not in vmflags_at(a), "the part before the hole stayed wired"
    expect(wire(h, P, VM_PROT_READ), KERN_INVALID_ADDRESS)


@root_only
def test_wire_more_access_than_the_protection_is_protection_failure(mem):
    a = mem.alloc(2)
    expect(protect(a + P, P, VM_PROT_READ), KERN_SUCCESS)
    expect(wire(a, 2 * P, VM_PROT_READ | VM_PROT_WRITE), KERN_PROTECTION_FAILURE)
    assert "lo" not in vmflags_at(a)
    expect(wire(a, 2 * P, VM_PROT_READ | VM_PROT_EXECUTE), KERN_PROTECTION_FAILURE)
    expect(wire(a, 2 * P, VM_PROT_READ), KERN_SUCCESS)
    expect(wire(a, 2 * P, VM_PROT_NONE), KERN_SUCCESS)


@root_only
def test_unwire_unmapped_start_is_invalid_address_holes_after_are_skipped(mem, three):
    a = three
    h = mem.hole(1)
    expect(wire(h, P, VM_PROT_NONE), KERN_INVALID_ADDRESS)
    expect(wire(a, P, VM_PROT_READ), KERN_SUCCESS)
    expect(wire(a + 2 * P, P, VM_PROT_READ), KERN_SUCCESS)
    expect(wire(a, 3 * P, VM_PROT_NONE), KERN_SUCCESS)
    assert "lo" not in vmflags_at(a) and "lo" not in vmflags_at(a + 2 * P)


def test_wire_with_an_invalid_host_name_is_send_invalid_dest(mem):
    a = mem.alloc(1)
    for host in (0x12345, MACH_PORT_NULL):
        expect(wire(a, P, VM_PROT_READ, host=host), MACH_SEND_INVALID_DEST, hex(host))
        expect(wire(a, P, 0x10, host=host, task=0x12345), MACH_SEND_INVALID_DEST, hex(host))  # before all else
        expect(wire(TOP - P, 2 * P, VM_PROT_READ, host=host), MACH_SEND_INVALID_DEST, hex(host))
    assert "lo" not in vmflags_at(a)


def test_wire_with_a_task_port_as_host_is_invalid_host(mem):
    a = mem.alloc(1)
    expect(wire(a, P, VM_PROT_READ, host=mach_task_self()), KERN_INVALID_HOST)
    assert "lo" not in vmflags_at(a)


@root_only
def test_wire_with_a_null_task_is_invalid_task(mem):
    # the task is a port argument of a message to host_priv, not its destination
    a = mem.alloc(1)
    expect(wire(a, P, VM_PROT_READ, task=MACH_PORT_NULL), KERN_INVALID_TASK)
    expect(wire(a, P, VM_PROT_READ, task=mach_host_self()), KERN_INVALID_TASK)  # a name, but not a task
    # a name that denotes nothing cannot be copied into the message
    expect(wire(a, P, VM_PROT_READ, task=0x12345), M.MACH_SEND_INVALID_RIGHT)
    assert "lo" not in vmflags_at(a)


@root_only
def test_wire_after_dropping_privileges_is_invalid_host():
    def child():
        a = allocate(P)[1]
        before = wire(a, P, VM_PROT_READ)
        wire(a, P, VM_PROT_NONE)
        drop_privileges()
        # XNU re-derives the host port at setuid (set_security_token)
        return before, wire(a, P, VM_PROT_READ), wire(a, P, VM_PROT_NONE), "lo" in vmflags_at(a)

    before, after, unwire_after, locked = run_in_child(child)
    expect(before, KERN_SUCCESS)
    expect(after, KERN_INVALID_HOST)
    expect(unwire_after, KERN_INVALID_HOST)
    assert not locked


@root_only
def test_wire_in_a_process_forked_after_dropping_privileges_is_invalid_host():
    def child():
        drop_privileges()

        def grandchild():
            a = allocate(P)[1]
            return wire(a, P, VM_PROT_READ), "lo" in vmflags_at(a), os.geteuid()

        return run_in_child(grandchild)

    kr, locked, euid = run_in_child(child)
    assert euid == 65534
    expect(kr, KERN_INVALID_HOST)
    assert not locked
