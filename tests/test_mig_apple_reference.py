"""The reference data of Apple's mig layouts (tests/data/) is self-consistent.

tests/data/mig_apple_layouts.json holds the request and reply layouts that
Apple's mig generates for XNU's .defs files (see tests/data/README.md).
These tests check that the data obeys the rules every mig message follows,
so that a damaged or mis-generated file is caught before it is used as the
reference; with BOOTSTRAP_CMDS and PYMACH_XNU set they also regenerate it
and compare.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

DATA = Path(__file__).resolve().parent / "data"
LAYOUTS = DATA / "mig_apple_layouts.json"
EXTRAS = DATA / "mig_apple_extras.json"

HEAD = ["Head", 0, 24]
PORT_DESCRIPTOR = 12  # mach_msg_port_descriptor_t
OOL_DESCRIPTOR = 16  # mach_msg_ool_descriptor64_t / ool_ports, LP64


def load(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


LAYOUT_DATA: dict[str, Any] = load(LAYOUTS)
EXTRA_DATA: dict[str, Any] = load(EXTRAS)


def all_structs() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(label, "request"/"reply", layout) for every struct in the data."""
    for stem, sub in LAYOUT_DATA.items():
        for r in sub["routines"]:
            yield f"{stem}.{r['routine']}", "request", r["request"]
            if r["reply"] is not None:
                yield f"{stem}.{r['routine']}", "reply", r["reply"]
    for stem, simple in EXTRA_DATA["simpleroutine_reply_structs"].items():
        for name, layout in simple.items():
            yield f"{stem}.{name} (simpleroutine)", "reply", layout
    yield "mig_reply_error_t", "reply", EXTRA_DATA["mig_reply_error_t"]


def round4(n: int) -> int:
    return (n + 3) & ~3


def struct_errors(kind: str, layout: dict[str, Any]) -> list[str]:
    """The ways `layout` breaks the rules of a mig message struct."""
    errs: list[str] = []
    fields = layout["fields"]
    size = layout["size"]
    if not fields or fields[0] != HEAD:
        errs.append(f"first field {fields[:1]} is not {HEAD}")
        return errs
    names = [f[0] for f in fields]
    if len(set(names)) != len(names):
        errs.append(f"duplicate field names {names}")
    end = 0
    for name, off, fsize in fields:
        if not (isinstance(off, int) and isinstance(fsize, int) and fsize > 0):
            errs.append(f"{name}: bad offset/size {off} {fsize}")
            return errs
        # pack(4): a field starts at the end of the previous one or at the
        # next multiple of 4.
        if not end <= off <= round4(end):
            errs.append(f"{name} at {off} after a field ending at {end}")
        end = off + fsize
    # The struct's alignment is 4 (Head), so sizeof rounds the end up to 4.
    if size != round4(end):
        errs.append(f"size {size} != last field end {end} rounded to 4")
    by_name = {f[0]: f for f in fields}
    i = 1
    complex_msg = len(fields) > 1 and fields[1][0] == "msgh_body"
    if complex_msg:
        if fields[1][1:] != [24, 4]:
            errs.append(f"msgh_body is {fields[1]}")
        i = 2
        pos = 28
        while i < len(fields) and fields[i][0] != "NDR":
            name, off, fsize = fields[i]
            # One descriptor, or an inline array of port descriptors.
            if off != pos or not (fsize % PORT_DESCRIPTOR == 0
                                  or fsize % OOL_DESCRIPTOR == 0):
                errs.append(f"descriptor {fields[i]} expected at {pos}")
            pos = off + fsize
            i += 1
        if i == 2:
            errs.append("complex message without descriptors")
    if i < len(fields):
        # Plain data follows: NDR comes first, right after the descriptors.
        ndr = fields[i]
        if ndr[0] != "NDR" or ndr[2] != 8 or ndr[1] != (fields[i - 1][1] + fields[i - 1][2]):
            errs.append(f"{ndr} where NDR was expected")
        if i + 1 == len(fields):
            errs.append("NDR with no data after it")
    elif "NDR" in by_name:
        errs.append("NDR out of place")
    if kind == "reply" and not complex_msg:
        if by_name.get("RetCode") != ["RetCode", 32, 4]:
            errs.append("simple reply without RetCode at 32")
    elif "RetCode" in by_name:
        errs.append(f"RetCode in a {'complex ' if complex_msg else ''}{kind}")
    for name, off, fsize in fields:
        if name.endswith("Cnt") and fsize != 4:
            errs.append(f"count {name} of size {fsize}")
        if name.endswith("Offset") and fsize != 4:
            errs.append(f"offset {name} of size {fsize}")
        if name.endswith("Pad") and not 1 <= fsize <= 3:
            errs.append(f"padding {name} of size {fsize}")
    return errs


def test_files_have_the_layout_shape() -> None:
    assert len(LAYOUT_DATA) >= 15
    for stem, sub in LAYOUT_DATA.items():
        assert set(sub) == {"subsystem", "base", "routines"}, stem
        assert isinstance(sub["subsystem"], str) and sub["subsystem"]
        assert isinstance(sub["base"], int) and sub["base"] >= 0
        assert sub["routines"], stem
        for r in sub["routines"]:
            assert set(r) == {"routine", "id", "simple", "request", "reply"}, r
            assert isinstance(r["simple"], bool)
            assert set(r["request"]) == {"size", "fields"}
            # A simpleroutine has no reply; a routine always has one.
            assert (r["reply"] is None) == r["simple"], r["routine"]


def test_the_subsystems_asked_for_are_present() -> None:
    wanted = {"mach_vm", "mach_port", "task", "thread_act", "exc", "mach_exc",
              "notify", "clock", "mach_host", "host_priv", "processor",
              "processor_set", "semaphore", "memory_entry", "vm_map"}
    assert wanted <= set(LAYOUT_DATA)
    for stem in wanted:
        # mig names the subsystem after the statement, here the file's stem.
        assert LAYOUT_DATA[stem]["subsystem"] == stem


def test_ids_rise_from_the_base_with_skips() -> None:
    seen: dict[int, str] = {}
    for stem, sub in LAYOUT_DATA.items():
        ids = [r["id"] for r in sub["routines"]]
        assert ids == sorted(set(ids)), stem
        for index, rid in enumerate(ids):
            # Routine n has id base + n + (skips before it).
            assert rid - sub["base"] >= index, (stem, rid)
        for r in sub["routines"]:
            assert r["id"] not in seen, (r["routine"], seen.get(r["id"]))
            seen[r["id"]] = r["routine"]
        names = [r["routine"] for r in sub["routines"]]
        assert len(set(names)) == len(names), stem


def test_reply_ids_are_request_ids_plus_100() -> None:
    reply_ids = EXTRA_DATA["reply_ids"]
    assert set(reply_ids) == set(LAYOUT_DATA)
    for stem, sub in LAYOUT_DATA.items():
        assert set(reply_ids[stem]) == {r["routine"] for r in sub["routines"]}
        for r in sub["routines"]:
            want = None if r["simple"] else r["id"] + 100
            assert reply_ids[stem][r["routine"]] == want, r["routine"]


def test_simpleroutine_reply_structs_are_for_simpleroutines() -> None:
    simple = EXTRA_DATA["simpleroutine_reply_structs"]
    for stem, sub in LAYOUT_DATA.items():
        names = {r["routine"] for r in sub["routines"] if r["simple"]}
        assert set(simple.get(stem, {})) == names, stem
        for layout in simple.get(stem, {}).values():
            assert layout == EXTRA_DATA["mig_reply_error_t"]


def test_every_struct_follows_mig_rules() -> None:
    structs = list(all_structs())
    assert len(structs) > 500
    bad = {f"{label} {kind}": errs for label, kind, layout in structs
           if (errs := struct_errors(kind, layout))}
    assert bad == {}


def test_the_rules_catch_broken_layouts() -> None:
    good = {"size": 44, "fields": [["Head", 0, 24], ["NDR", 24, 8],
                                   ["RetCode", 32, 4], ["address", 36, 8]]}
    assert struct_errors("reply", good) == []
    bad_size = {"size": 48, "fields": good["fields"]}
    bad_overlap = {"size": 44, "fields": [["Head", 0, 24], ["NDR", 24, 8],
                                          ["RetCode", 30, 4], ["address", 36, 8]]}
    bad_gap = {"size": 48, "fields": [["Head", 0, 24], ["NDR", 24, 8],
                                      ["RetCode", 32, 4], ["address", 40, 8]]}
    no_retcode = {"size": 40, "fields": [["Head", 0, 24], ["NDR", 24, 8],
                                         ["address", 32, 8]]}
    complex_retcode = {"size": 56, "fields": [
        ["Head", 0, 24], ["msgh_body", 24, 4], ["port", 28, 12],
        ["NDR", 40, 8], ["RetCode", 48, 4], ["x", 52, 4]]}
    bad_descriptor = {"size": 48, "fields": [
        ["Head", 0, 24], ["msgh_body", 24, 4], ["port", 28, 8],
        ["NDR", 36, 8], ["x", 44, 4]]}
    lone_ndr = {"size": 32, "fields": [["Head", 0, 24], ["NDR", 24, 8]]}
    port_array = {"size": 72, "fields": [
        ["Head", 0, 24], ["msgh_body", 24, 4], ["ports", 28, 24],
        ["NDR", 52, 8], ["portsCnt", 60, 4], ["x", 64, 8]]}
    assert struct_errors("request", port_array) == []
    for kind, layout in [("reply", bad_size), ("reply", bad_overlap),
                         ("reply", bad_gap), ("reply", no_retcode),
                         ("reply", complex_retcode),
                         ("request", bad_descriptor), ("request", lone_ndr)]:
        assert struct_errors(kind, layout) != [], layout


def test_mach_vm_allocate_is_the_known_layout() -> None:
    sub = LAYOUT_DATA["mach_vm"]
    assert (sub["subsystem"], sub["base"]) == ("mach_vm", 4800)
    first = sub["routines"][0]
    assert first == {
        "routine": "mach_vm_allocate", "id": 4800, "simple": False,
        "request": {"size": 52, "fields": [
            ["Head", 0, 24], ["NDR", 24, 8], ["address", 32, 8],
            ["size", 40, 8], ["flags", 48, 4]]},
        "reply": {"size": 44, "fields": [
            ["Head", 0, 24], ["NDR", 24, 8], ["RetCode", 32, 4],
            ["address", 36, 8]]},
    }


def test_mig_reply_error_t() -> None:
    assert EXTRA_DATA["mig_reply_error_t"] == {
        "size": 36,
        "fields": [["Head", 0, 24], ["NDR", 24, 8], ["RetCode", 32, 4]],
    }


REGEN_ENV = ("BOOTSTRAP_CMDS", "PYMACH_XNU")


@pytest.mark.skipif(
    not all(os.environ.get(v) for v in REGEN_ENV)
    or not all(shutil.which(t) for t in ("gcc", "bison", "flex", "git")),
    reason="regeneration needs BOOTSTRAP_CMDS and PYMACH_XNU (a bootstrap_cmds "
           "and an xnu checkout) and gcc, bison, flex, git")
def test_regenerating_gives_the_same_data(tmp_path: Path) -> None:
    out = tmp_path / "mig_apple_layouts.json"
    subprocess.run([sys.executable, str(DATA / "make_mig_apple_layouts.py"),
                    "-o", str(out)], check=True, timeout=900,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert out.read_text() == LAYOUTS.read_text()
    extras = load(tmp_path / "mig_apple_extras.json")
    # "sources" names the commits (or "(tree)" for a source tree).
    extras.pop("sources")
    assert extras == {k: v for k, v in EXTRA_DATA.items() if k != "sources"}
