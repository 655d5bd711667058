"""pymach.mig on XNU's own .defs files (osfmk/mach), preprocessed as the
SDK's headers are (-DLIBSYSCALL_INTERFACE, LP64), compared with the
layouts that Apple's mig gives (tests/data/mig_apple_layouts.json, when
it is there). XNU's files are not shipped: PYMACH_XNU names an xnu
checkout (xnu-11417.101.15), and the tests skip without it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("pcpp")

from pymach.mig import Subsystem, compile_defs  # noqa: E402

XNU = os.environ.get("PYMACH_XNU", "")
DATA = Path(__file__).resolve().parent / "data"
REFERENCE = DATA / "mig_apple_layouts.json"
EXTRAS = DATA / "mig_apple_extras.json"

DEFS = ["mach_vm", "mach_port", "task", "thread_act", "exc", "mach_exc", "notify", "clock", "mach_host",
        "host_priv", "processor", "processor_set", "semaphore", "memory_entry", "vm_map", "mach_voucher"]

pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(XNU, "osfmk", "mach", "mach_vm.defs")),
                                reason="no xnu checkout (set PYMACH_XNU to one)")

_cache: dict[str, Subsystem] = {}


def xnu_defs(name: str) -> Subsystem:
    if name not in _cache:
        osfmk = os.path.join(XNU, "osfmk")
        _cache[name] = compile_defs(os.path.join(osfmk, "mach", name + ".defs"), include=[osfmk],
                                    defines={"LIBSYSCALL_INTERFACE": None})
    return _cache[name]


def reference() -> dict[str, dict[str, object]]:
    with open(REFERENCE, encoding="utf-8") as f:
        ref: dict[str, dict[str, object]] = json.load(f)
    return ref


def test_mach_vm_allocate_is_the_sdk_layout() -> None:
    rt = xnu_defs("mach_vm").routine("mach_vm_allocate")
    assert rt.to_json() == {
        "routine": "mach_vm_allocate", "id": 4800, "simple": False,
        "request": {"size": 52, "fields": [["Head", 0, 24], ["NDR", 24, 8], ["address", 32, 8], ["size", 40, 8],
                                           ["flags", 48, 4]]},
        "reply": {"size": 44, "fields": [["Head", 0, 24], ["NDR", 24, 8], ["RetCode", 32, 4],
                                         ["address", 36, 8]]}}


@pytest.mark.parametrize("name", DEFS)
def test_every_routine_parses_and_lays_out(name: str) -> None:
    sub = xnu_defs(name)
    assert sub.name and sub.routines
    ids = [rt.id for rt in sub.routines]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for rt in sub.routines:
        assert rt.request.size >= 24 and rt.reply.size >= 24


@pytest.mark.skipif(not REFERENCE.is_file(), reason="no reference layouts (tests/data/mig_apple_layouts.json)")
def test_layouts_equal_apple_migs() -> None:
    ref = reference()
    assert set(DEFS) <= set(ref)
    differences = []
    for name, want in ref.items():
        got = xnu_defs(name).to_json()
        if got != want:
            w = {r["routine"]: r for r in want["routines"]}  # type: ignore[attr-defined]
            g = {r["routine"]: r for r in got["routines"]}  # type: ignore[attr-defined]
            differences.append((name, got["subsystem"], got["base"],
                                sorted(k for k in set(w) | set(g) if w.get(k) != g.get(k))))
    assert not differences


@pytest.mark.skipif(not EXTRAS.is_file(), reason="no reference extras (tests/data/mig_apple_extras.json)")
def test_reply_ids_and_simpleroutine_reply_structs_equal_apple_migs() -> None:
    with open(EXTRAS, encoding="utf-8") as f:
        extras = json.load(f)
    for name, replies in extras["simpleroutine_reply_structs"].items():
        for routine, want in replies.items():
            assert xnu_defs(name).routine(routine).reply.to_json() == want, (name, routine)
    for name, ids in extras["reply_ids"].items():
        for routine, want in ids.items():
            rt = xnu_defs(name).routine(routine)
            assert (None if rt.simple else rt.reply_id) == want, (name, routine)
    assert extras["mig_reply_error_t"] == {"size": 36, "fields": [["Head", 0, 24], ["NDR", 24, 8],
                                                                  ["RetCode", 32, 4]]}


def test_c_sizes_of_structs_larger_than_their_declarations() -> None:
    # struct dyld_kernel_process_info: 40 + 8 + 4 + 4 + 1 (+3) + 4 + 4 = 68, padded to 72
    rt = xnu_defs("task").routine("task_register_dyld_get_process_state")
    assert rt.reply.to_json()["fields"][-1] == ["dyld_process_state", 36, 72]
    # struct list_xattrs_result: 7 * 8 + 34860 = 34916, padded to 34920
    osfmk = os.path.join(XNU, "osfmk")
    sub = compile_defs(os.path.join(osfmk, "mach", "doubleagent_mig.defs"), include=[osfmk],
                       defines={"LIBSYSCALL_INTERFACE": None})
    reply = sub.routine("doubleagent_list_xattrs").reply
    assert reply.to_json() == {"size": 34960, "fields": [["Head", 0, 24], ["NDR", 24, 8], ["RetCode", 32, 4],
                                                         ["err", 36, 4], ["result", 40, 34920]]}
