"""pymach.mig's layouts, rule by rule (migcom's routine.c and utils.c's
WriteStructDecl), on tests/mig/layout.defs: every expected number here is
worked out by hand from those rules and the LP64 sizes of the C structs
(mach_msg_header_t 24, mach_msg_body_t 4, NDR_record_t 8, a port
descriptor 12, an out-of-line descriptor 16), packed to 4 bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pcpp")

from pymach.mig import REPLY_ERROR, Routine, Subsystem, compile_defs  # noqa: E402

HERE = Path(__file__).resolve().parent / "mig"

H = ["Head", 0, 24]
NDR = ["NDR", 24, 8]
RC = ["RetCode", 32, 4]
BODY = ["msgh_body", 24, 4]


@pytest.fixture(scope="module")
def sub() -> Subsystem:
    return compile_defs(str(HERE / "layout.defs"), include=[str(HERE / "include")])


def lay(sub: Subsystem, name: str) -> tuple[Routine, dict[str, object], dict[str, object]]:
    rt = sub.routine(name)
    return rt, rt.request.to_json(), rt.reply.to_json()


def test_ids_base_plus_index_skip_advances(sub: Subsystem) -> None:
    ids = {rt.name: rt.id for rt in sub.routines}
    assert sub.name == "layout" and sub.base == 2000
    assert ids["scalars"] == 2000
    assert ids["one_way"] == 2002          # skip took 2001
    assert ids["no_data"] == 2003
    assert ids["lp64"] == 2017
    assert sub.routine("scalars").reply_id == 2100
    assert [r["id"] for r in sub.to_json()["routines"]] == sorted(ids.values())  # type: ignore[index]


def test_scalars_ndr_retcode_and_padding(sub: Subsystem) -> None:
    rt, req, rep = lay(sub, "scalars")
    assert req == {"size": 40, "fields": [H, NDR, ["a", 32, 4], ["c", 36, 2], ["cPad", 38, 2]]}
    assert rep == {"size": 48, "fields": [H, NDR, RC, ["b", 36, 8], ["c", 44, 2], ["cPad", 46, 2]]}
    assert not rt.request.complex and not rt.simple


def test_simpleroutine_keeps_ndr_and_retcode_in_its_reply(sub: Subsystem) -> None:
    rt, req, rep = lay(sub, "one_way")
    assert rt.simple
    assert req == {"size": 36, "fields": [H, NDR, ["x", 32, 4]]}
    assert rep == {"size": 36, "fields": [H, NDR, RC]}


def test_no_plain_data_no_ndr(sub: Subsystem) -> None:
    _, req, rep = lay(sub, "no_data")
    assert req == {"size": 24, "fields": [H]}
    assert rep == {"size": 36, "fields": [H, NDR, RC]}


def test_ports_make_complex_messages_without_ndr_or_retcode(sub: Subsystem) -> None:
    rt, req, rep = lay(sub, "ports")
    assert req == {"size": 40, "fields": [H, BODY, ["p", 28, 12]]}
    assert rep == {"size": 40, "fields": [H, BODY, ["q", 28, 12]]}
    assert rt.request.complex and rt.reply.complex
    assert rt.request.descriptors == rt.reply.descriptors == 1


def test_out_of_line_descriptors_first_then_counts(sub: Subsystem) -> None:
    _, req, rep = lay(sub, "ool")
    assert req == {"size": 56, "fields": [H, BODY, ["data", 28, 16], ["NDR", 44, 8], ["dataCnt", 52, 4]]}
    assert rep == {"size": 56, "fields": [H, BODY, ["back", 28, 16], ["NDR", 44, 8], ["backCnt", 52, 4]]}


def test_variable_inline_array_at_its_maximum_after_its_count(sub: Subsystem) -> None:
    _, req, rep = lay(sub, "var_inline")
    assert req == {"size": 48, "fields": [H, NDR, ["nCnt", 32, 4], ["n", 36, 10], ["nPad", 46, 2]]}
    assert rep == {"size": 52, "fields": [H, NDR, RC, ["mCnt", 36, 4], ["m", 40, 10], ["mPad", 50, 2]]}


def test_c_strings_variable_with_offset_and_count_fixed_without(sub: Subsystem) -> None:
    _, req, rep = lay(sub, "strings")
    assert req == {"size": 120, "fields": [H, NDR, ["sOffset", 32, 4], ["sCnt", 36, 4], ["s", 40, 64],
                                           ["f", 104, 16]]}
    assert rep == {"size": 108, "fields": [H, NDR, RC, ["rOffset", 36, 4], ["rCnt", 40, 4], ["r", 44, 64]]}


def test_fixed_array_padded_to_four(sub: Subsystem) -> None:
    _, req, rep = lay(sub, "fixed")
    assert req == {"size": 40, "fields": [H, NDR, ["v", 32, 6], ["vPad", 38, 2]]}
    assert rep == {"size": 44, "fields": [H, NDR, RC, ["w", 36, 6], ["wPad", 42, 2]]}


def test_port_arrays_in_line_out_of_line_and_fixed(sub: Subsystem) -> None:
    rt, req, rep = lay(sub, "port_arrays")
    assert req == {"size": 132, "fields": [H, BODY, ["pa", 28, 48], ["op", 76, 16], ["fp", 92, 24],
                                           ["NDR", 116, 8], ["paCnt", 124, 4], ["opCnt", 128, 4]]}
    assert rt.request.descriptors == 4 + 1 + 2
    assert rep == {"size": 36, "fields": [H, NDR, RC]}


def test_polymorphic_ports_carry_their_disposition_in_the_descriptor(sub: Subsystem) -> None:
    rt, req, rep = lay(sub, "poly")
    assert req == {"size": 40, "fields": [H, BODY, ["p", 28, 12]]}
    assert rep == {"size": 40, "fields": [H, BODY, ["q", 28, 12]]}
    names = [a.name for a in rt.args]
    assert names.index("pPoly") == names.index("p") + 1 and "qPoly" in names


def test_count_in_out_sends_the_count_in_the_request(sub: Subsystem) -> None:
    _, req, rep = lay(sub, "count_in_out")
    assert req == {"size": 40, "fields": [H, NDR, ["flavor", 32, 4], ["stCnt", 36, 4]]}
    assert rep == {"size": 72, "fields": [H, NDR, RC, ["stCnt", 36, 4], ["st", 40, 32]]}


def test_same_count_shares_one_count(sub: Subsystem) -> None:
    _, req, rep = lay(sub, "same_count")
    assert req == {"size": 24, "fields": [H]}
    assert rep == {"size": 72, "fields": [H, NDR, RC, ["a1Cnt", 36, 4], ["a1", 40, 16], ["a2", 56, 16]]}


def test_retcode_flag_in_a_simple_request(sub: Subsystem) -> None:
    _, req, _ = lay(sub, "retcode_simple")
    assert req == {"size": 36, "fields": [H, NDR, ["code", 32, 4]]}


def test_retcode_flag_leaves_a_complex_request_but_keeps_its_ndr(sub: Subsystem) -> None:
    # rtProcessRetCode drops the RetCode argument from a complex request;
    # rtProcessNdrCode, which runs after, still counts it as plain data
    _, req, _ = lay(sub, "retcode_complex")
    assert req == {"size": 48, "fields": [H, BODY, ["p", 28, 12], ["NDR", 40, 8]]}


def test_trailer_and_server_reply_port_are_not_in_the_body(sub: Subsystem) -> None:
    _, req, rep = lay(sub, "trailer")
    assert req == {"size": 36, "fields": [H, NDR, ["x", 32, 4]]}
    assert rep == {"size": 36, "fields": [H, NDR, RC]}


def test_dealloc_variable_is_not_in_the_message(sub: Subsystem) -> None:
    rt, req, _ = lay(sub, "maybe_dealloc")
    assert req == {"size": 56, "fields": [H, BODY, ["data", 28, 16], ["NDR", 44, 8], ["dataCnt", 52, 4]]}
    assert "dataDealloc" in [a.name for a in rt.args]


def test_lp64_from_the_preprocessor(sub: Subsystem) -> None:
    _, req, _ = lay(sub, "lp64")
    assert req == {"size": 40, "fields": [H, NDR, ["w", 32, 8]]}


def test_lp64_undefined_gives_the_32_bit_word() -> None:
    sub = compile_defs(str(HERE / "layout.defs"), include=[str(HERE / "include")], undefines=["__LP64__"])
    assert sub.routine("lp64").request.to_json() == {"size": 36, "fields": [H, NDR, ["w", 32, 4]]}


def test_mig_reply_error_t_is_36_bytes() -> None:
    assert REPLY_ERROR.to_json() == {"size": 36, "fields": [H, NDR, RC]}


def test_offsets_are_contiguous_and_sizes_add_up(sub: Subsystem) -> None:
    for rt in sub.routines:
        for lay_ in (rt.request, rt.reply):
            end = 0
            for f in lay_.fields:
                assert f.offset == end and f.offset % 2 == 0
                end = f.offset + f.size
            assert lay_.size == end and end % 4 == 0


def test_native_types_have_no_layout() -> None:
    from pymach.mig import MigError, compile_text
    with pytest.raises(MigError) as e:
        compile_text('# 1 "n.defs"\nsubsystem n 1;\ntype mach_port_t = MACH_MSG_TYPE_COPY_SEND;\n'
                     "routine r(s: mach_port_t; in x: PointerTo(unsigned stat_t));\n")
    assert (e.value.file, e.value.line) == ("n.defs", 3)
    assert "unsigned stat_t" in e.value.message and "C compiler" in e.value.message


def test_ids_use_the_base_the_file_ends_with() -> None:
    from pymach.mig import compile_text
    s = compile_text("type p = MACH_MSG_TYPE_COPY_SEND; routine a(s: p); skip; routine b(s: p); "
                     "subsystem late 500;")
    assert [(r.name, r.id, r.reply_id) for r in s.routines] == [("a", 500, 600), ("b", 502, 602)]


def test_minimum_sizes_leave_out_variable_arrays(sub: Subsystem) -> None:
    # what mig's stubs check msgh_size against: sizeof(Request) - the
    # variable in-line arrays and their padding
    mins = {name: (sub.routine(name).request.min_size, sub.routine(name).reply.min_size)
            for name in ("var_inline", "strings", "count_in_out", "same_count", "scalars", "ool")}
    assert mins == {"var_inline": (48 - 12, 52 - 12), "strings": (120 - 64, 108 - 64),
                    "count_in_out": (40, 72 - 32), "same_count": (24, 72 - 32), "scalars": (40, 48),
                    "ool": (56, 56)}


def test_field_kinds(sub: Subsystem) -> None:
    kinds = [(f.name, f.kind, f.arg) for f in sub.routine("strings").request.fields]
    assert kinds == [("Head", "header", None), ("NDR", "ndr", "NDR_record"), ("sOffset", "offset", "s"),
                     ("sCnt", "count", "sCnt"), ("s", "variable", "s"), ("f", "data", "f")]
    kinds = [(f.name, f.kind) for f in sub.routine("ool").reply.fields]
    assert kinds == [("Head", "header"), ("msgh_body", "body"), ("back", "descriptor"), ("NDR", "ndr"),
                     ("backCnt", "count")]
    assert [(f.name, f.kind) for f in sub.routine("scalars").reply.fields][2:] == [
        ("RetCode", "retcode"), ("b", "data"), ("c", "data"), ("cPad", "pad")]
