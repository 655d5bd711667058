"""How reprs show Mach values: protections as vmmap writes them ('rw-'),
sizes in the largest unit that keeps them exact ('4K', '2M', '4100'),
inheritance, share modes and behaviors by name."""

from __future__ import annotations

from ._kern import vm_defs as V

__all__ = ["prot", "prots", "size", "inheritance", "share_mode", "behavior"]


def prot(p: int) -> str:
    """'rwx' with '-' for each missing right."""
    return (("r" if p & V.VM_PROT_READ else "-") + ("w" if p & V.VM_PROT_WRITE else "-")
            + ("x" if p & V.VM_PROT_EXECUTE else "-"))


def prots(cur: int, mx: int) -> str:
    """Current and maximum protection, as vmmap shows them: 'rw-/rwx'."""
    return f"{prot(cur)}/{prot(mx)}"


def size(n: int) -> str:
    """A size in bytes, exact: in G, M or K when it is a multiple of one."""
    for unit, suffix in ((1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")):
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


_INHERIT = {V.VM_INHERIT_SHARE: "share", V.VM_INHERIT_COPY: "copy", V.VM_INHERIT_NONE: "none",
            V.VM_INHERIT_DONATE_COPY: "donate_copy"}
# as vmmap's SHRMOD column
_SHARE = {V.SM_COW: "COW", V.SM_PRIVATE: "PRV", V.SM_EMPTY: "NUL", V.SM_SHARED: "SHM",
          V.SM_TRUESHARED: "SHM", V.SM_PRIVATE_ALIASED: "ALI", V.SM_SHARED_ALIASED: "S/A",
          V.SM_LARGE_PAGE: "LPG"}
_BEHAVIOR = {V.VM_BEHAVIOR_DEFAULT: "default", V.VM_BEHAVIOR_RANDOM: "random",
             V.VM_BEHAVIOR_SEQUENTIAL: "sequential", V.VM_BEHAVIOR_RSEQNTL: "rsqntl"}


def inheritance(i: int) -> str:
    """'share', 'copy', 'none' (VM_INHERIT_*)."""
    return _INHERIT.get(i, str(i))


def share_mode(m: int) -> str:
    """vmmap's share mode abbreviations: COW, PRV, NUL, ALI, SHM, S/A."""
    return _SHARE.get(m, str(m))


def behavior(b: int) -> str:
    """'default', 'random', 'sequential', 'rsqntl' (VM_BEHAVIOR_*)."""
    return _BEHAVIOR.get(b, str(b))
