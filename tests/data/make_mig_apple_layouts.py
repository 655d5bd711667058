#!/usr/bin/env python3
"""Regenerate mig_apple_layouts.json: the message layouts of Apple's mig.

Builds Apple's migcom (bootstrap_cmds, migcom.tproj) on Linux with the
shims in applemig_shims/build/, runs it on XNU's osfmk/mach .defs files as
mig.sh does (the C preprocessor with -D__MACH30__, then migcom), and has
gcc lay out the generated ``__Request__<routine>_t`` / ``__Reply__<routine>_t``
structs for x86_64 against XNU's own headers (applemig_shims/layout/ fills
the gaps of a Linux host).  Only sizes and offsets are written out.

Environment:
  BOOTSTRAP_CMDS      a bootstrap_cmds source tree (holding migcom.tproj/)
                      or a git directory of it
  BOOTSTRAP_CMDS_REF  the commit or tag when BOOTSTRAP_CMDS is a git
                      directory (default HEAD)
  PYMACH_XNU          an xnu source tree (holding osfmk/) or a git
                      directory of it
  PYMACH_XNU_REF      the commit or tag when PYMACH_XNU is a git directory
                      (default xnu-11417.101.15)
  CC                  the C compiler (default gcc); must target x86_64

Usage: make_mig_apple_layouts.py [-o OUT.json] [--keep DIR] [STEM ...]
Tools needed: gcc (x86_64), bison, flex, git (for git directories).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHIMS = HERE / "applemig_shims"

# The .defs files (osfmk/mach/<stem>.defs) whose layouts are recorded.
DEFS = [
    "mach_vm", "mach_port", "task", "thread_act", "exc", "mach_exc",
    "notify", "clock", "mach_host", "host_priv", "processor",
    "processor_set", "semaphore", "memory_entry", "vm_map",
    "mach_voucher", "clock_priv", "clock_reply", "host_security",
    "mach_eventlink",
]

# Headers the layout program includes before a generated header because
# the generated header uses their types without including them (libsyscall
# supplies them when it builds the stubs).
PRE_INCLUDES = {
    "mach_eventlink": ["mach/mach_eventlink_types.h"],
}

# As libsyscall's mach_install_mig.sh: MIG_DEFINES and -novouchers.
MIG_DEFINES = ["-DLIBSYSCALL_INTERFACE"]
MIGCOM_FLAGS = ["-novouchers"]

# Message constants the migcom shim defines; checked against XNU's header.
CHECKED_CONSTANTS = [
    "MACH_MSG_TYPE_MOVE_RECEIVE", "MACH_MSG_TYPE_MOVE_SEND",
    "MACH_MSG_TYPE_MOVE_SEND_ONCE", "MACH_MSG_TYPE_COPY_SEND",
    "MACH_MSG_TYPE_MAKE_SEND", "MACH_MSG_TYPE_MAKE_SEND_ONCE",
    "MACH_MSG_TYPE_COPY_RECEIVE", "MACH_MSG_TYPE_DISPOSE_RECEIVE",
    "MACH_MSG_TYPE_DISPOSE_SEND", "MACH_MSG_TYPE_DISPOSE_SEND_ONCE",
    "MACH_MSG_TYPE_PORT_NONE", "MACH_MSG_TYPE_PORT_NAME",
    "MACH_MSG_TYPE_LAST", "MACH_MSG_PHYSICAL_COPY", "MACH_MSG_VIRTUAL_COPY",
    "MACH_MSG_ALLOCATE", "MACH_MSG_OVERWRITE", "MACH_MSG_PORT_DESCRIPTOR",
    "MACH_MSG_OOL_DESCRIPTOR", "MACH_MSG_OOL_PORTS_DESCRIPTOR",
    "MACH_MSG_OOL_VOLATILE_DESCRIPTOR", "MACH_MSG_GUARDED_PORT_DESCRIPTOR",
    "MACH_MSG_TRAILER_FORMAT_0", "MACH_MSGH_BITS_ZERO",
    "MACH_MSGH_BITS_COMPLEX", "MACH_MSG_OPTION_NONE",
]


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return res


def export_tree(src: str, ref: str, paths: list[str], dest: Path,
                marker: str) -> Path:
    """Return a directory holding `paths` of the source tree `src`."""
    if (Path(src) / marker).exists():
        return Path(src)
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "--git-dir", src, "archive", ref, *paths],
                             capture_output=True, check=True)
    subprocess.run(["tar", "x", "-C", str(dest)], input=archive.stdout,
                   check=True)
    return dest


def git_describe(src: str, ref: str) -> str:
    res = subprocess.run(["git", "--git-dir", src, "rev-parse", ref + "^{commit}"],
                         text=True, capture_output=True)
    return res.stdout.strip() if res.returncode == 0 else "(tree)"


def check_shim_constants(xnu: Path) -> None:
    """The migcom shim's message constants are XNU's."""
    text = (xnu / "osfmk/mach/message.h").read_text()
    shim = (SHIMS / "build/mach/message.h").read_text()
    pat = r"^#define\s+{}\s+(\S+)"
    for name in CHECKED_CONSTANTS:
        a = re.search(pat.format(name), text, re.M)
        b = re.search(pat.format(name), shim, re.M)
        if not a or not b or a.group(1) != b.group(1):
            raise SystemExit(f"shim constant {name} differs from xnu's")


def build_migcom(tree: Path, work: Path, cc: str) -> Path:
    src = tree / "migcom.tproj"
    build = work / "migcom-build"
    build.mkdir(parents=True, exist_ok=True)
    run(["bison", "-y", "-d", str(src / "parser.y"), "-o",
         str(build / "y.tab.c")])
    run(["flex", "-o", str(build / "lexxer.c"), str(src / "lexxer.l")])
    sources = [p for p in sorted(src.glob("*.c")) if p.name != "handler.c"]
    sources += [build / "y.tab.c", build / "lexxer.c"]
    objs = []
    for c in sources:
        o = build / (c.stem + ".o")
        run([cc, "-c", "-w", "-O1",
             "-include", str(SHIMS / "build/darwin_compat.h"),
             "-I", str(build), "-I", str(src), "-I", str(SHIMS / "build"),
             str(c), "-o", str(o)])
        objs.append(str(o))
    exe = build / "migcom"
    run([cc, "-o", str(exe), *objs])
    return exe


def run_mig(migcom: Path, xnu: Path, stem: str, out: Path, cc: str) -> None:
    """mig.sh: `cc -E -D__MACH30__ <flags> -I<sourcedir>` piped to migcom."""
    defs = xnu / "osfmk/mach" / f"{stem}.defs"
    out.mkdir(parents=True, exist_ok=True)
    temp = out / f"{stem}.defs.c"
    temp.write_text(f'#line 1 "{defs}"\n' + defs.read_text())
    pre = run([cc, "-E", "-x", "c", "-D__MACH30__", *MIG_DEFINES,
               "-I", str(xnu / "osfmk"), "-I", str(defs.parent), str(temp)])
    run([str(migcom), *MIGCOM_FLAGS,
         "-user", str(out / f"{stem}User.c"),
         "-header", str(out / f"{stem}.h"),
         "-server", str(out / f"{stem}Server.c"),
         "-sheader", str(out / f"{stem}Server.h")],
        input=pre.stdout, cwd=str(out))


STRUCT_RE = re.compile(
    r"typedef\s+struct\s*\{(?P<body>[^{}]*)\}\s*"
    r"(?P<name>__(?:Request|Reply)__\w+_t)\s*(?:__attribute__\(\(unused\)\))?;")
MEMBER_RE = re.compile(r"^(?P<type>.+?)\s+(?P<name>\w+)\s*(?:\[[^\]]*\])?\s*;$")


def parse_structs(header: str) -> dict[str, list[str]]:
    """Struct name -> member names, in order, from a mig user header."""
    structs: dict[str, list[str]] = {}
    for m in STRUCT_RE.finditer(header):
        members = []
        body = re.sub(r"/\*.*?\*/", "", m.group("body"), flags=re.S)
        for line in body.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                raise SystemExit(f"conditional inside {m.group('name')}")
            mm = MEMBER_RE.match(line)
            if not mm:
                raise SystemExit(f"cannot parse member {line!r}")
            members.append(mm.group("name"))
        if m.group("name") in structs:
            raise SystemExit(f"{m.group('name')} defined twice")
        structs[m.group("name")] = members
    return structs


def check_server_header(stem: str, out: Path) -> None:
    """The server header declares the same structs as the user header."""
    def bodies(path: Path) -> dict[str, str]:
        return {m.group("name"): " ".join(m.group("body").split())
                for m in STRUCT_RE.finditer(path.read_text())}
    user = bodies(out / f"{stem}.h")
    server = bodies(out / f"{stem}Server.h")
    assert user == server, stem


def layout_program(stem: str, structs: dict[str, list[str]]) -> str:
    lines = [f"#include <{h}>" for h in PRE_INCLUDES.get(stem, [])]
    lines += [
        f'#include "{stem}.h"',
        "#include <stddef.h>",
        "#ifndef __MigPackStructs",
        "#error __MigPackStructs is not defined",
        "#endif",
        "extern int printf(const char *, ...);",
        "int main(void) {",
    ]
    for name, members in structs.items():
        lines.append(f'  printf("S {name} %lu\\n", (unsigned long)sizeof({name}));')
        for mem in members:
            lines.append(
                f'  printf("F {mem} %lu %lu\\n", '
                f"(unsigned long)offsetof({name}, {mem}), "
                f"(unsigned long)sizeof((({name} *)0)->{mem}));")
    lines += [
        '  printf("S mig_reply_error_t %lu\\n", (unsigned long)sizeof(mig_reply_error_t));',
    ]
    for mem in ("Head", "NDR", "RetCode"):
        lines.append(
            f'  printf("F {mem} %lu %lu\\n", '
            f"(unsigned long)offsetof(mig_reply_error_t, {mem}), "
            f"(unsigned long)sizeof(((mig_reply_error_t *)0)->{mem}));")
    lines += ["  return 0;", "}", ""]
    return "\n".join(lines)


def layout_flags(xnu: Path, work: Path, cc: str) -> list[str]:
    """Include flags that let gcc read XNU's user headers on Linux."""
    inc = work / "layout-include"
    if not inc.exists():
        shutil.copytree(SHIMS / "layout", inc)
        # Generated at xnu build time by xnu's own script.
        run(["bash", str(xnu / "bsd/sys/make_posix_availability.sh"),
             str(inc / "sys/_posix_availability.h")])
    gcc_inc = run([cc, "-print-file-name=include"]).stdout.strip()
    return ["-m64", "-nostdinc", "-isystem", gcc_inc,
            "-include", str(inc / "clang_compat.h"),
            "-I", str(inc),
            "-I", str(xnu / "osfmk"), "-I", str(xnu / "bsd"),
            "-I", str(xnu / "EXTERNAL_HEADERS"), "-I", str(xnu / "libkern"),
            "-I", str(xnu / "libsyscall/mach")]


def measure(stem: str, out: Path, flags: list[str], cc: str
            ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    header = (out / f"{stem}.h").read_text()
    structs = parse_structs(header)
    prog = out / f"layout_{stem}.c"
    prog.write_text(layout_program(stem, structs))
    exe = out / f"layout_{stem}"
    run([cc, "-w", *flags, "-I", str(out), str(prog), "-o", str(exe)])
    layouts: dict[str, dict[str, Any]] = {}
    cur: dict[str, Any] | None = None
    for line in run([str(exe)]).stdout.splitlines():
        kind, name, *nums = line.split()
        if kind == "S":
            cur = {"size": int(nums[0]), "fields": []}
            layouts[name] = cur
        else:
            assert cur is not None
            cur["fields"].append([name, int(nums[0]), int(nums[1])])
    err = layouts.pop("mig_reply_error_t")
    for name, members in structs.items():
        got = [f[0] for f in layouts[name]["fields"]]
        assert got == members, (name, got, members)
    return layouts, err


def routines_of(stem: str, out: Path) -> tuple[str, int, list[dict[str, Any]]]:
    header = (out / f"{stem}.h").read_text()
    user = (out / f"{stem}User.c").read_text()
    server = (out / f"{stem}Server.c").read_text()
    mod = re.search(r"^/\* Module (\w+) \*/", header, re.M)
    assert mod, stem
    subsystem = mod.group(1)
    base_m = re.search(
        r"^const struct \w+ \w+ = \{\n\t\w+,\n\t(\d+),\n\t(\d+),", server,
        re.M)
    assert base_m, stem
    base, end = int(base_m.group(1)), int(base_m.group(2))
    # /* Routine X */ or /* SimpleRoutine X */ before each user stub.
    routines: list[dict[str, Any]] = []
    for m in re.finditer(r"^/\* (Routine|SimpleRoutine) (\w+) \*/\n"
                         r"mig_external kern_return_t (\w+)\n", user, re.M):
        kind, name = m.group(1), m.group(2)
        body = user[m.end():]
        nxt = re.search(r"^/\* (?:Simple)?Routine \w+ \*/$", body, re.M)
        body = body[:nxt.start()] if nxt else body
        idm = re.findall(r"InP->Head\.msgh_id = (\d+);", body)
        assert len(idm) == 1, (name, idm)
        rid = int(idm[0])
        simple = kind == "SimpleRoutine"
        reply_id = None
        if not simple:
            chk = re.search(
                r"__MIG_check__Reply__%s_t\(.*?msgh_id != (\d+)\)" % name,
                user, re.S)
            assert chk, name
            reply_id = int(chk.group(1))
        routines.append({"routine": name, "id": rid, "simple": simple,
                         "reply_id": reply_id})
    routines.sort(key=lambda r: r["id"])
    assert all(base <= r["id"] < end for r in routines), stem
    # The header's id map agrees.
    mp = dict(re.findall(r'\{ "(\w+)", (\d+) \}', header))
    assert {r["routine"]: str(r["id"]) for r in routines} == mp, stem
    return subsystem, base, routines


def dump(obj: Any) -> str:
    text = json.dumps(obj, indent=1)
    # One number per line is long; keep [name, offset, size] on one line.
    text = re.sub(r'\[\n\s+("\w+"),\n\s+(\d+),\n\s+(\d+)\n\s+\]',
                  r"[\1, \2, \3]", text)
    return text + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=str(HERE / "mig_apple_layouts.json"))
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    ap.add_argument("stems", nargs="*", default=DEFS)
    args = ap.parse_args()
    cc = os.environ.get("CC", "gcc")
    bc_src = os.environ.get("BOOTSTRAP_CMDS")
    xnu_src = os.environ.get("PYMACH_XNU")
    if not bc_src or not xnu_src:
        raise SystemExit("set BOOTSTRAP_CMDS and PYMACH_XNU")
    bc_ref = os.environ.get("BOOTSTRAP_CMDS_REF", "HEAD")
    xnu_ref = os.environ.get("PYMACH_XNU_REF", "xnu-11417.101.15")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="applemig."))
    work.mkdir(parents=True, exist_ok=True)
    try:
        bc = export_tree(bc_src, bc_ref, ["migcom.tproj"], work / "bootstrap_cmds",
                         "migcom.tproj")
        xnu = export_tree(xnu_src, xnu_ref,
                          ["osfmk", "bsd", "libkern", "libsyscall", "EXTERNAL_HEADERS"],
                          work / "xnu", "osfmk")
        check_shim_constants(xnu)
        migcom = build_migcom(bc, work, cc)
        flags = layout_flags(xnu, work, cc)
        result: dict[str, Any] = {}
        reply_error = None
        simple_replies: dict[str, dict[str, Any]] = {}
        reply_ids: dict[str, dict[str, Any]] = {}
        for stem in args.stems:
            out = work / "out" / stem
            run_mig(migcom, xnu, stem, out, cc)
            check_server_header(stem, out)
            layouts, err = measure(stem, out, flags, cc)
            if reply_error is None:
                reply_error = err
            assert err == reply_error
            subsystem, base, routines = routines_of(stem, out)
            for r in routines:
                # The id the user stub checks in the reply.
                reply_ids.setdefault(stem, {})[r["routine"]] = r.pop("reply_id")
                r["request"] = layouts.pop(f"__Request__{r['routine']}_t")
                reply = layouts.pop(f"__Reply__{r['routine']}_t")
                if r["simple"]:
                    # mig declares one (Head, NDR, RetCode) for the server's
                    # error reply; no reply is sent otherwise.
                    simple_replies.setdefault(stem, {})[r["routine"]] = reply
                    r["reply"] = None
                else:
                    r["reply"] = reply
            assert not layouts, (stem, sorted(layouts))
            result[stem] = {"subsystem": subsystem, "base": base,
                            "routines": routines}
            print(f"{stem}: {subsystem} {base} {len(routines)} routines",
                  file=sys.stderr)
        Path(args.output).write_text(dump(result))
        extras = Path(args.output).with_name("mig_apple_extras.json")
        extras.write_text(dump(
            {"mig_reply_error_t": reply_error,
             "simpleroutine_reply_structs": simple_replies,
             "reply_ids": reply_ids,
             "defines": MIG_DEFINES, "migcom_flags": MIGCOM_FLAGS,
             "sources": {"bootstrap_cmds": git_describe(bc_src, bc_ref)
                         if bc != Path(bc_src) else "(tree)",
                         "xnu": git_describe(xnu_src, xnu_ref)
                         if xnu != Path(xnu_src) else "(tree)"}},
            ))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
