"""The address space of another task, as far as pymach reads and writes it.

Another process's memory is reached with process_vm_readv/writev (the
kernel's ptrace access check applies at every call) and described by its
/proc/PID/maps and smaps, read through a /proc/PID directory fd confirmed
with the task's pidfd (see _linux/pidfd.py). Every operation asks the
pidfd before and after it acts: if the process exited in between, the
result is thrown away and the call fails with MACH_SEND_INVALID_DEST, so an
answer about a new process that inherited the pid is never given.

A copy is checked as a whole against the target's maps before a byte
moves: a hole is KERN_INVALID_ADDRESS, a page without the access is
KERN_PROTECTION_FAILURE (XNU's vm_map_copyin and vm_map_copy_overwrite
codes). If the kernel still stops short (the target changed its mappings
meanwhile), the maps are read again to name the cause; a transfer never
succeeds partly.

The Mach attributes that a pymach runtime inside the target keeps
(maximum protection set by mach_vm_protect, inheritance, user tags) are
not merged in: regions are what the kernel reports (docs/deviations.md).
"""

from __future__ import annotations

import errno

from .._linux import files, introspect, mm, pidfd, procfs
from . import kern_return as K
from . import vm_defs as V
from .task import Task
from .vm_map import RegionInfo, VmMap, _vma_info


def _dead(task: Task) -> K.MachError:
    return K.MachError(K.MACH_SEND_INVALID_DEST, f"task of pid {task.pid} has exited")


def _prot_of(v: procfs.Vma) -> int:
    p = v.perms
    return ((V.VM_PROT_READ if p[0] == "r" else 0) | (V.VM_PROT_WRITE if p[1] == "w" else 0)
            | (V.VM_PROT_EXECUTE if p[2] == "x" else 0))


class ForeignMap:
    """Another task's VM map: read, write and describe."""

    __slots__ = ("task",)

    def __init__(self, task: Task) -> None:
        self.task = task

    # -- changes, run inside the target by ptrace (_kern/vm_remote.py) -------------

    def allocate(self, addr: int, size: int, anywhere: bool, overwrite: bool, tag: int,
                 align_mask: int = 0, permanent: bool = False) -> int:
        """mach_vm_allocate in the target. Tags, alignment masks and
        VM_FLAGS_PERMANENT are not kept for another process:
        KERN_NOT_SUPPORTED for a mask or PERMANENT; a tag is dropped."""
        from . import vm_remote
        if align_mask or permanent:
            raise K.MachError(K.KERN_NOT_SUPPORTED, "superpages and permanent memory in another task")
        return vm_remote.allocate(self.task.pid, self.task.pidfd, addr, size, anywhere, overwrite)

    def behavior_hugepage(self, start: int, end: int) -> None:
        raise K.MachError(K.KERN_NOT_SUPPORTED, "superpages in another task")

    def deallocate(self, start: int, end: int) -> None:
        from . import vm_remote
        vm_remote.deallocate(self.task.pid, self.task.pidfd, start, end - start)

    def protect(self, start: int, end: int, set_max: bool, prot: int) -> None:
        from . import vm_remote
        vm_remote.protect(self.task.pid, self.task.pidfd, start, end - start, set_max, prot)

    def inherit(self, start: int, end: int, inheritance: int) -> None:
        from . import vm_remote
        vm_remote.inherit(self.task.pid, self.task.pidfd, start, end - start, inheritance)

    def map_object(self, addr: int, size: int, mask: int, anywhere: bool, overwrite: bool, fd: int,
                   offset: int, copy: bool, cur: int, max_prot: int, inherit: int, tag: int = 0,
                   permanent: bool = False) -> int:
        """mach_vm_map of a memory entry into the target: shared, or with
        ``copy`` a snapshot taken now (a fresh memfd, mapped private)."""
        from .._linux import mm
        from . import vm_defs as V
        from . import vm_remote
        if mask or permanent:
            raise K.MachError(K.KERN_NOT_SUPPORTED, "an alignment mask or permanent memory in another task")
        flags = V.VM_FLAGS_ANYWHERE if anywhere else (V.VM_FLAGS_OVERWRITE if overwrite else V.VM_FLAGS_FIXED)
        src = fd
        if copy:
            src = mm.memfd("mach.copy", size)
            try:
                mm.copy_range(fd, src, size, offset, 0)
            except BaseException:
                files.close(src)
                raise
            offset = 0
        try:
            a = vm_remote.map_fd(self.task.pid, self.task.pidfd, src, offset, size, cur, flags, addr,
                                 shared=not copy)
        finally:
            if copy:
                files.close(src)
        if inherit == V.VM_INHERIT_NONE:
            vm_remote.inherit(self.task.pid, self.task.pidfd, a, size, inherit)
        return a

    # -- the pidfd-checked path -------------------------------------------------

    def check_alive(self) -> None:
        """MACH_SEND_INVALID_DEST once the process has exited."""
        if not self.task.alive():
            raise _dead(self.task)

    def proc_text(self, *names: str) -> list[str]:
        """The texts of /proc/PID/<name>, read through a directory fd bound
        to the task's process. MACH_SEND_INVALID_DEST if it exited;
        KERN_FAILURE if the kernel refuses the read (lost access)."""
        t = self.task
        try:
            dfd = pidfd.open_proc_dir(t.pid, t.pidfd)
        except OSError as err:
            if err.errno in (errno.ESRCH, errno.ENOENT):
                raise _dead(t) from None
            raise K.MachError(K.KERN_FAILURE, f"/proc/{t.pid}: {err.strerror}") from None
        try:
            texts = [pidfd.read_proc_file(dfd, n) for n in names]
        except OSError as err:
            if err.errno in (errno.ESRCH, errno.ENOENT) or not t.alive():
                raise _dead(t) from None
            raise K.MachError(K.KERN_FAILURE, f"/proc/{t.pid}: {err.strerror}") from None
        finally:
            files.close(dfd)
        self.check_alive()
        return texts

    def vmas(self, sizes: bool = False) -> list[procfs.Vma]:
        """The target's VMAs (with smaps sizes and VmFlags if ``sizes``)."""
        (text,) = self.proc_text("smaps" if sizes else "maps")
        return procfs.parse_smaps(text.splitlines())

    # -- checks -------------------------------------------------------------------

    @staticmethod
    def check_range(vmas: list[procfs.Vma], start: int, end: int, need: int) -> None:
        """Walk [start, end) in address order, as vm_map_copyin does, and
        fail at the first problem: KERN_INVALID_ADDRESS for a hole,
        KERN_PROTECTION_FAILURE for a page lacking ``need``."""
        cur = start
        for v in vmas:
            if v.end <= cur:
                continue
            if v.start > cur:
                break
            if _prot_of(v) & need != need:
                raise K.MachError(K.KERN_PROTECTION_FAILURE, f"{cur:#x} refuses the access")
            cur = v.end
            if cur >= end:
                return
        raise K.MachError(K.KERN_INVALID_ADDRESS, f"{cur:#x} is not mapped")

    # -- copying ---------------------------------------------------------------

    def read_into(self, src: int, dst: int, size: int) -> None:
        """Copy [src, src+size) of the target to our memory at ``dst``."""
        self._transfer(src, dst, size, V.VM_PROT_READ, mm.process_vm_readv)

    def write_from(self, src: int, dst: int, size: int) -> None:
        """Copy ``size`` bytes of our memory at ``src`` to ``dst`` in the target."""
        self._transfer(dst, src, size, V.VM_PROT_WRITE, mm.process_vm_writev)

    def _transfer(self, remote: int, local: int, size: int, need: int, call: object) -> None:
        start, end = remote & ~mm.PAGE_MASK, (remote + size + mm.PAGE_MASK) & ~mm.PAGE_MASK
        if need != V.VM_PROT_READ:
            # a write must fail as a whole: check the target's maps first (a
            # read may start at once: if it comes up short, nothing is lost
            # and the maps name the cause below)
            self.check_range(self.vmas(), start, end, need)
        done = 0
        while done < size:
            try:
                n = call(self.task.pid, local + done, remote + done, size - done)  # type: ignore[operator]
            except OSError as err:
                n = -(err.errno or errno.EIO)
            if n <= 0:
                break
            done += n
        self.check_alive()  # the pid named our process for the whole copy
        if done < size:
            if n == -errno.ESRCH:
                raise _dead(self.task)
            if n == -errno.EPERM:
                raise K.MachError(K.MACH_SEND_INVALID_DEST, "access to the process was lost (it changed credentials)")
            # the target changed meanwhile: name the cause from its maps now
            self.check_range(self.vmas(), start, end, need)
            raise K.MachError(K.KERN_INVALID_ADDRESS, f"fault at {remote + done:#x}")

    def copy_out(self, src: int, size: int) -> bytes:
        """The bytes of [src, src+size) in the target, checked as a whole."""
        buf = bytearray(size)
        if size:
            self.read_into(src, mm.buffer_address(buf), size)
        return bytes(buf)

    def copy_in(self, dst: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``dst`` in the target, checked as a whole first."""
        src = bytearray(data)
        if src:
            self.write_from(mm.buffer_address(src), dst, len(src))

    # -- remapping into our map ---------------------------------------------------

    def remap_into(self, vm_map: VmMap, target: int, start: int, end: int, mask: int, anywhere: bool,
                   overwrite: bool, copy: bool, cur: int, max_prot: int, inheritance: int) -> int:
        """mach_vm_remap_new of [start, end) of the target into our map
        (``mask`` as vm_map.allocate takes it); returns the new mapping's
        address. A copy is the source's bytes read now
        (process_vm_readv), which is what a copy-on-write snapshot shows.
        A mapping without copy whose maximum protection is VM_PROT_NONE can
        never be read or written, through itself or a later remap, so a
        reservation of the same extent with no access is all of it that can
        be observed; any other sharing is KERN_NOT_SUPPORTED.

        KERN_INVALID_ADDRESS (a hole in the source), KERN_PROTECTION_FAILURE
        (a copy of unreadable memory), MACH_SEND_INVALID_DEST (the task
        exited), and the codes of the allocation.

        Conditions: nothing locked; takes our map's lock (allocate,
        protect, inherit)."""
        if not copy and max_prot != V.VM_PROT_NONE:
            raise K.MachError(K.KERN_NOT_SUPPORTED, "sharing memory of another task")
        length = end - start
        self.check_range(self.vmas(), start, end, V.VM_PROT_READ if copy else V.VM_PROT_NONE)
        a = vm_map.allocate(target, length, anywhere, overwrite, 0, mask)
        try:
            if copy:
                self.read_into(start, a, length)
            vm_map.protect(a, a + length, True, max_prot)
            vm_map.protect(a, a + length, False, cur)
            if inheritance != V.VM_INHERIT_DEFAULT:
                vm_map.inherit(a, a + length, inheritance)
        except BaseException:
            vm_map.deallocate(a, a + length)
            raise
        return a

    # -- regions -----------------------------------------------------------------

    def regions(self) -> list[RegionInfo]:
        """Every region of the target, in address order. When the target
        runs pymach, the Mach attributes its runtime keeps (maximum
        protection, inheritance, behavior, tag, wiring) are merged in from
        its introspection socket; the kernel's view (current protection,
        extent, sharing) stays the kernel's."""
        out = [_vma_info(v, v.start, v.end) for v in self.vmas(sizes=True)]
        return _merge_runtime(self, out)

    def region(self, addr: int) -> RegionInfo | None:
        """The region containing ``addr``, or the first one above it."""
        for r in self.regions():
            if r.end > addr:
                return r
        return None


def _merge_runtime(fm: ForeignMap, regions: list[RegionInfo]) -> list[RegionInfo]:
    import dataclasses

    try:
        answer = introspect.query(fm.task.pid, "regions", timeout=2.0)
    except (OSError, ValueError):
        return regions
    if not answer or answer.get("pid") != fm.task.pid or not fm.task.alive():
        return regions  # not pymach, or not the same process any more
    entries = sorted(answer.get("regions", []), key=lambda e: e["start"])
    out = []
    for r in regions:
        e = next((e for e in entries if e["start"] <= r.start and r.end <= e["end"]), None)
        if e is not None:
            r = dataclasses.replace(r, max_protection=e["max_protection"], inheritance=e["inheritance"],
                                    behavior=e["behavior"], user_tag=e["user_tag"],
                                    user_wired_count=e["wired"], pymach=True)
        out.append(r)
    return out

