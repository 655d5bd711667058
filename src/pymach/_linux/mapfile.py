"""The file behind a mapping, to map the same pages a second time.

Kernel facts this module relies on:

- /proc/self/map_files/<start>-<end> (the VMA's exact range in lowercase
  hex) opens the very file a VMA maps, even renamed or deleted, a shmem
  object included. Opening it needs CAP_SYS_ADMIN (or, since Linux 5.9,
  CAP_CHECKPOINT_RESTORE) in the initial user namespace; without it the
  open fails with EPERM.
- The device that maps prints can differ from fstat's for a file of a
  stacking filesystem (overlayfs): only the inode is checked on a
  map_files open.
- Without that privilege the path that /proc/self/maps shows is opened, and
  kept only if fstat gives the device and inode that the VMA maps (maps
  prints the device as major:minor in hex). A deleted file ("(deleted)")
  or one replaced since is not found this way.
- A MAP_SHARED mapping of a file maps the page cache's pages: two of them
  at the same offset see each other's writes at once. A MAP_PRIVATE
  mapping maps the same pages until a page is written: the write gives
  the process an anonymous copy of that page. Bit 61 of a pagemap word
  (a file page or shared anonymous page) tells them apart per page, and
  needs no privilege: in a private file mapping, a present page without
  it, or a swapped page (file pages are never swapped), is such a copy.
"""

from __future__ import annotations

import os

from . import mm


def open_vma_file(start: int, end: int, path: str, dev: str, inode: int, writable: bool) -> int | None:
    """An fd (close-on-exec, the caller's to close) of the file that the
    VMA [start, end) maps, opened read-write or read-only; None when the
    VMA maps no file that can be found (anonymous memory, a deleted or
    replaced file without the privilege for map_files). OSError for a
    refused open of the right file (EACCES: no write permission)."""
    if not inode:
        return None
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
    want_dev = _dev_of(dev)
    try:
        fd = os.open(f"/proc/self/map_files/{start:x}-{end:x}", flags)
        want_dev = None  # the VMA's own file (its device may be a stacked one's)
    except OSError:
        # no privilege for map_files (or the VMA changed): the path
        if not path.startswith("/") or path.endswith(" (deleted)"):
            return None
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if st.st_ino != inode or (want_dev is not None and st.st_dev != want_dev):
        os.close(fd)
        return None
    return fd


def _dev_of(dev: str) -> int | None:
    """maps' "major:minor" (hex) as a dev_t; None when unparsable."""
    try:
        major, minor = dev.split(":")
        return os.makedev(int(major, 16), int(minor, 16))
    except ValueError:
        return None


def private_copies(start: int, end: int) -> bool:
    """Whether any page of the private file mapping [start, end) is an
    anonymous copy (written since it was mapped)."""
    n = (end - start) // mm.PAGE_SIZE
    for w in mm.pagemap(start, n):
        if w & mm.PM_SWAPPED or (w & mm.PM_PRESENT and not w & mm.PM_FILE_OR_SHARED):
            return True
    return False
