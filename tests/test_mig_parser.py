"""pymach.mig's front end: the preprocessor, the lexer and the grammar of
mig's parser.y, on tests/mig/grammar.defs (every statement, argument kind,
flag and type form) and on small texts that mig refuses, whose errors
name the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pcpp")

from pymach.mig import MigError, Subsystem, compile_defs, compile_text, preprocess  # noqa: E402
from pymach.mig import layout as L  # noqa: E402

HERE = Path(__file__).resolve().parent / "mig"
BASE = preprocess(str(HERE / "include" / "base_types.defs"))


@pytest.fixture(scope="module")
def sub() -> Subsystem:
    return compile_defs(str(HERE / "grammar.defs"), include=[str(HERE / "include")])


def test_statements(sub: Subsystem) -> None:
    assert (sub.name, sub.base, sub.kernel_user, sub.kernel_server) == ("grammar", 1000, False, True)
    assert (sub.user_prefix, sub.server_prefix, sub.server_demux) == ("usr_", "srv_", "grammar_demux")
    assert sub.error_proc == "grammar_error"
    assert sub.rcs_id == '"$Id: grammar.defs 1 $"'
    assert sub.imports == [("import", "<mach/mach_types.h>"), ("uimport", '"user_side.h"'),
                           ("simport", "<server_side.h>"), ("iimport", '"internal.h"'), ("dimport", "<demux.h>")]
    # WaitTime then NoWaitTime, SendTime then NoSendTime, MsgOption then MACH_MSG_OPTION_NONE
    assert (sub.wait_time, sub.send_time, sub.msg_option) == (None, None, None)
    assert sub.use_special_reply_port is False and sub.consume_on_send_error == "Timeout"
    assert (sub.user_type_limit, sub.on_stack_limit) == (64, 2048)
    assert sub.warnings == []


def test_routines_ids_and_prefixes(sub: Subsystem) -> None:
    assert [(rt.name, rt.id, rt.simple) for rt in sub.routines] == [
        ("r_kinds", 1000, False), ("r_trailers", 1002, True), ("r_user_trailers", 1003, False),
        ("r_flags", 1004, False), ("r_retcode", 1005, True), ("r_types", 1006, False), ("r_empty", 1007, False)]
    rt = sub.routine("r_kinds")
    assert (rt.user_name, rt.server_name) == ("usr_r_kinds", "srv_r_kinds")


def test_type_forms(sub: Subsystem) -> None:
    t = sub.types
    assert (t["pair_t"].struct, t["pair_t"].number, t["pair_t"].type_size) == (True, 2, 8)
    assert (t["vec_t"].struct, t["vec_t"].type_size, t["vec_t"].pad_size) == (False, 6, 2)
    b = t["bounded_t"]
    assert (b.var_array, b.in_line, b.number) == (True, True, 10)    # array[*:(2 + 3) * 2]
    for name in ("unbounded_t", "star_t"):                          # array[] and array[*]
        u = t[name]
        assert (u.var_array, u.in_line, u.mig_in_line, u.number) == (True, False, True, 0)
    o = t["ool_t"]
    assert (o.in_line, o.var_array, o.kpd_number) == (False, True, 1)
    f = t["ool_fixed_t"]
    assert (f.in_line, f.var_array, f.number) == (False, False, 64)
    assert (t["name_t"].string, t["name_t"].var_array, t["name_t"].type_size) == (True, False, 32)
    assert (t["path_t"].string, t["path_t"].var_array, t["path_t"].number) == (True, True, 128)
    p = t["ports_t"]
    assert (p.port_type, p.in_line, p.var_array, p.kpd_number) == (True, True, True, 4)
    op = t["ool_ports_t"]
    assert (op.port_type, op.in_line) == (True, False)
    assert (t["in_out_t"].in_name, t["in_out_t"].out_name) == (20, 17)     # MAKE_SEND | PORT_SEND
    assert (t["numbered_t"].in_name, t["numbered_t"].size) == (2, 32)
    poly = t["mach_port_poly_t"]
    assert poly.polymorphic and poly.port_type
    task = t["task_t"]
    assert (task.user_type, task.server_type, task.trans_type) == ("task_user_t", "mach_port_t", "task_t")
    assert (task.in_trans, task.out_trans, task.destructor) == (
        "convert_port_to_task", "convert_task_to_port", "task_deallocate")
    assert (t["both_t"].user_type, t["both_t"].server_type) == ("both_c_t", "both_c_t")
    assert (t["server_side_t"].user_type, t["server_side_t"].server_type) == ("server_side_t", "server_c_t")
    assert t["word_copy_t"].size == 64        # __LP64__, as cc -E -arch x86_64 defines it


def kinds(sub: Subsystem, routine: str) -> dict[str, int]:
    return {a.name: a.kind for a in sub.routine(routine).args}


def test_argument_kinds(sub: Subsystem) -> None:
    k = kinds(sub, "r_kinds")
    assert L.ak_ident(k["target"]) == L.AKE_REQUEST_PORT
    assert k["a"] == L.AK_IN | L.AKB_SEND_NDR and L.ak_check(k["b"], L.AKB_REPLY)
    assert L.ak_check_all(k["c"], L.AKB_REQUEST | L.AKB_REPLY)
    assert L.ak_ident(k["reply"]) == L.AKE_REPLY_PORT and L.ak_check(k["reply"], L.AKB_USER_ARG)
    assert L.ak_ident(k["wait"]) == L.AKE_WAIT_TIME and L.ak_ident(k["option"]) == L.AKE_MSG_OPTION
    assert L.ak_ident(k["impl"]) == L.AKE_IMPLICIT and L.ak_check(k["impl"], L.AKB_SERVER_IMPLICIT)
    assert {"NDR_record", "RetCode"} <= set(k)
    t = kinds(sub, "r_trailers")
    assert L.ak_ident(t["sreply"]) == L.AKE_REPLY_PORT and not L.ak_check(t["sreply"], L.AKB_USER_ARG)
    assert L.ak_ident(t["stime"]) == L.AKE_SEND_TIME
    assert t["seqno"] == L.AK_MSG_SEQNO and t["stok"] == L.AK_SERVER_SEC_TOKEN
    assert t["atok"] == L.AK_SERVER_AUDIT_TOKEN and t["ctx"] == L.AK_SERVER_CONTEXT_TOKEN
    u = kinds(sub, "r_user_trailers")
    assert not L.ak_check(u["ureply"], L.AKB_SERVER_ARG)
    assert u["tok"] == L.AK_SEC_TOKEN and u["utok"] == L.AK_USER_SEC_TOKEN
    assert u["atok"] == L.AK_AUDIT_TOKEN and u["uatok"] == L.AK_USER_AUDIT_TOKEN and u["uimpl"] == L.AK_USER_IMPL


def test_flags(sub: Subsystem) -> None:
    rt = sub.routine("r_flags")
    a = {x.name: x for x in rt.args}
    assert a["data"].deallocate == "maybe" and a["data"].dealloc is a["dataDealloc"]
    assert a["fixed"].flags & 0x01 and a["fixed"].deallocate == "yes"          # PhysicalCopy, Dealloc
    assert a["keep"].flags == 0x08 | 0x200 | 0x100 and a["keep"].deallocate == "no"   # NotDealloc Const Auto
    assert a["over"].flags & 0x02                                               # Overwrite
    assert a["st"].count_in_out and L.ak_ident(a["stCnt"].kind) in (L.AKE_COUNT_IN_OUT, L.AKE_COUNT)
    assert a["s2"].same_count is a["s1"] and a["s2"].count is not None
    assert L.ak_ident(a["s2"].count.kind) == L.AKE_SAME_COUNT
    assert sub.routine("r_retcode").ret_c_arg is not None
    assert sub.routine("r_retcode").ret_c_arg.name == "code"  # type: ignore[union-attr]


def test_inline_named_type_in_an_argument(sub: Subsystem) -> None:
    arg = next(a for a in sub.routine("r_types").args if a.name == "inline_type")
    assert arg.itype.name == "inl_t" and arg.itype.number == 2 and arg.itype.var_array


def test_keywords_are_case_insensitive() -> None:
    s = compile_text(BASE + "\nSUBSYSTEM up 7; ROUTINE r(ReQuEsTpOrT s: mach_port_t; IN x: int, CONST);")
    assert s.name == "up" and s.routine("r").id == 7


def test_line_markers_name_the_file_and_line() -> None:
    text = '# 1 "a.defs"\nsubsystem s 1;\n# 40 "b.defs"\n\n\nroutine r(s: nosuch_t);\n'
    with pytest.raises(MigError) as e:
        compile_text(text)
    assert (e.value.file, e.value.line) == ("b.defs", 42)
    assert str(e.value) == "b.defs:42: type 'nosuch_t' not defined"


ERRORS = [
    ("routine r(s: nosuch_t);", 1, "type 'nosuch_t' not defined"),
    ("\n\nroutine r(s: mach_port_t;;\n", 3, "syntax error"),
    ("routine r();", 1, "Routine r doesn't have a server port argument"),
    ("simpleroutine r(s: mach_port_t; out x: int);", 1, "SimpleRoutine r has OUT argument"),
    ("routine r(s: mach_port_t; x: int, RetCode);", 1, "x: RetCode is allowed only for SimpleRoutines"),
    ("type v = array[*:4] of int;\nroutine r(s: mach_port_t; inout x: v);", 2,
     "x: Inline variable-sized arguments can't be InOut"),
    ("type t = (MACH_MSG_TYPE_INTEGER_32, 32);", 1, "Long form type declarations aren't allowed any longer"),
    ("type t = ^ ^ array[] of char;", 1, "IPC type decl is already defined to be Out-Of-Line"),
    ("type t = array[*:2] of array[*:3] of int;", 1, "IPC type decl is too complicated"),
    ("type t = MACH_MSG_TYPE_UNSTRUCTURED;", 1, "must use full IPC type decl"),
    ("type t = MACH_MSG_TYPE_INTEGER_16 | MACH_MSG_TYPE_INTEGER_32;", 1, "sizes in IPCTypes (16, 32) aren't equal"),
    ("routine r(s: int);", 1, "argument s isn't a proper request port"),
    ("routine r(s: mach_port_t; waittime w: int64_t);", 1, "argument w isn't a proper integer"),
    ("type v = array[*:4] of int intran: v f(v);", 1, "v: can't translate variable-sized arrays"),
    ("routine r(s: mach_port_t; out x: PointerToIfNot(int, NULL));", 1, "PointerToIfNot only valid for in"),
    ("routine r(s: mach_port_t; out x: ValueOf(int));", 1, "ValueOf only valid for in"),
    ("#bogus\nroutine r(s: mach_port_t);", 1, "illegal # directive"),
    ("routine r(s: mach_port_t) @", 1, "syntax error: unexpected character '@'"),
    ("routine dealloc(s: mach_port_t);", 1, "syntax error: expected an identifier, found 'dealloc'"),
    ("type t = array[4 / 0] of int;", 1, "division by zero"),
    ("type t = array[2 - 5] of int;", 1, "negative size (-3)"),
    ("type t = c_string[*:(1 - 2) * 3];", 1, "negative size (-3)"),
]


@pytest.mark.parametrize("source, line, message", ERRORS)
def test_errors_name_file_and_line(source: str, line: int, message: str) -> None:
    text = BASE + '\n# 1 "bad.defs"\nsubsystem bad 100;\n# 1 "bad.defs"\n' + source
    with pytest.raises(MigError) as e:
        compile_text(text, "bad.defs")
    assert (e.value.file, e.value.line) == ("bad.defs", line), str(e.value)
    assert e.value.message.startswith(message), e.value.message
    assert str(e.value).startswith(f"bad.defs:{line}: ")


def test_kernel_user_and_kernel_server() -> None:
    s = compile_text(BASE + "\nsubsystem KernelUser KernelServer ku 1;\nsubsystem KernelUser ku2 2;\n"
                            "routine r(s: mach_port_t; in d: o = ^array[] of char, Dealloc);")
    assert (s.name, s.base, s.kernel_user, s.kernel_server) == ("ku2", 2, True, False)
    assert any("previous Subsystem decl (of ku) will be ignored" in w for w in s.warnings)
    assert s.routine("r").args[-2].deallocate == "yes"   # KernelUser, In, Dealloc
    with pytest.raises(MigError) as e:
        compile_text(BASE + '\n# 1 "ku.defs"\nsubsystem KernelUser ku 1;\n'
                            "routine r(s: mach_port_t; out d: o = ^array[] of char, Overwrite);")
    assert e.value.line == 2
    assert e.value.message == "Overwrite option(s) do not match with the KernelUser personality"


@pytest.mark.skipif(not __import__("os").environ.get("PYMACH_MIGCOM"),
                    reason="no migcom of Apple's to compare with (PYMACH_MIGCOM)")
@pytest.mark.parametrize("source, line, message", ERRORS)
def test_apple_mig_gives_these_errors(source: str, line: int, message: str) -> None:
    import os
    import re
    import subprocess
    if "negative size" in message or "division by zero" in message:
        pytest.skip("mig's unsigned arithmetic wraps a negative size around, and it divides by zero")
    text = BASE + '\n# 1 "bad.defs"\nsubsystem bad 100;\n# 1 "bad.defs"\n' + source + "\n"
    r = subprocess.run([os.environ["PYMACH_MIGCOM"], "-user", "/dev/null", "-header", "/dev/null", "-server",
                        "/dev/null"], input=text, text=True, errors="replace", capture_output=True, cwd="/tmp",
                       timeout=60, check=False)
    assert r.returncode != 0
    first = next(ln for ln in r.stderr.splitlines() if ": warning: " not in ln)
    m = re.match(r'(?:mig: fatal: )?"bad\.defs", line (\d+): (.*)', first)
    assert m, r.stderr
    assert int(m.group(1)) == line
    assert message.startswith(m.group(2).strip())


def test_warnings_as_mig_gives_them() -> None:
    s = compile_text(BASE + "\nsubsystem w 1;\ntype int = int32_t;\nroutine r(s: mach_port_t; x: int, Const, Const; "
                            "y: int, Dealloc);")
    assert any("overriding previous definition of int" in w for w in s.warnings)
    assert any("redundant IPC flag ignored" in w for w in s.warnings)
    assert any("y: Dealloc is ignored" in w for w in s.warnings)


def test_error_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "broken.defs").write_text("\n\ntype t = nosuch;\n")
    (tmp_path / "top.defs").write_text("subsystem top 1;\n#include <broken.defs>\n")
    with pytest.raises(MigError) as e:
        compile_defs(str(tmp_path / "top.defs"), include=[str(tmp_path / "inc")])
    assert e.value.file.endswith("broken.defs") and e.value.line == 3
    assert e.value.message == "type 'nosuch' not defined"


def test_preprocessor_defines_undefines_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "pp.defs"
    p.write_text("#ifndef __MACH30__\n#error not MACH30\n#endif\nsubsystem NAME BASE;\n"
                 "#ifdef GONE\n#error GONE is defined\n#endif\n")
    s = compile_defs(str(p), defines={"NAME": "named", "BASE": "300"})
    assert (s.name, s.base) == ("named", 300)
    with pytest.raises(MigError) as e:
        compile_defs(str(p), defines={"NAME": "n", "BASE": "1", "GONE": None})
    assert e.value.line == 6 and "GONE is defined" in e.value.message
    with pytest.raises(MigError) as e:
        compile_defs(str(p), defines={"NAME": "n", "BASE": "1"}, undefines=["__MACH30__"])
    assert e.value.line == 2 and "not MACH30" in e.value.message
    q = tmp_path / "inc.defs"
    q.write_text("\n#include <nowhere.defs>\n")
    with pytest.raises(MigError) as e:
        compile_defs(str(q))
    assert e.value.line == 2 and "nowhere.defs" in e.value.message
    with pytest.raises(MigError) as e:
        compile_defs(str(tmp_path / "missing.defs"))
    assert e.value.line == 0 and "cannot read" in e.value.message


def test_quoted_include_from_the_files_directory(tmp_path: Path) -> None:
    (tmp_path / "types.defs").write_text("type int = MACH_MSG_TYPE_INTEGER_32;\n"
                                         "type mach_port_t = MACH_MSG_TYPE_COPY_SEND;\n")
    (tmp_path / "q.defs").write_text('subsystem q 5;\n#include "types.defs"\nroutine r(s: mach_port_t; x: int);\n')
    assert compile_defs(str(tmp_path / "q.defs")).routine("r").request.size == 36


@pytest.mark.skipif(__import__("shutil").which("cpp") is None, reason="no system cpp")
def test_system_cpp_gives_the_same() -> None:
    args = (str(HERE / "grammar.defs"),)
    a = compile_defs(*args, include=[str(HERE / "include")], system_cpp=True)
    b = compile_defs(*args, include=[str(HERE / "include")])
    assert a.to_json() == b.to_json() and a.imports == b.imports


def test_pragma_and_line_directives() -> None:
    s = compile_text(BASE + '\n#pragma once\n#line 10 "p.defs"\nsubsystem p 3;\n')
    assert (s.name, s.base) == ("p", 3)
    with pytest.raises(MigError) as e:
        compile_text(BASE + '\n#line 10 "p.defs"\nsubsystem p 3;\ntype t = nosuch;\n')
    assert (e.value.file, e.value.line) == ("p.defs", 11)


WORDS = ["routine", "simpleroutine", "subsystem", "type", "skip", "in", "out", "inout", "requestport",
         "replyport", "sreplyport", "ureplyport", "waittime", "msgoption", "msgseqno", "serveraudittoken",
         "serverimpl", "userimpl", "array", "struct", "of", "c_string", "polymorphic", "Dealloc", "SameCount",
         "CountInOut", "RetCode", "Const", "PointerTo", "ValueOf", "PointerToIfNot", "ctype", "intran",
         "outtran", "destructor", "import", "rcsid", "MsgOption", "WaitTime", "mach_port_t", "int", "char",
         "mach_port_poly_t", "int16_t", "x", "y", "MACH_MSG_TYPE_INTEGER_32", "MACH_MSG_TYPE_MOVE_SEND",
         "0", "1", "4", "64", ":", ";", ",", "(", ")", "[", "]", "*", "^", "=", "|", "+", "-", "/", "<a.h>",
         '"q"', "\n"]


def test_any_token_soup_gives_a_result_or_a_mig_error() -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from(WORDS), max_size=40))
    def check(words: list[str]) -> None:
        text = BASE + '\n# 1 "soup.defs"\nsubsystem soup 10;\n' + " ".join(words)
        try:
            compile_text(text)
        except MigError as e:
            assert e.file == "soup.defs" and e.line >= 1

    check()


def test_routine_mutations_give_a_result_or_a_mig_error() -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    lines = (HERE / "layout.defs").read_text().splitlines()
    body = [ln for ln in lines if ln.startswith(("routine", "simpleroutine", "type"))]

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from(body), max_size=6), st.integers(0, 2000), st.sampled_from(WORDS))
    def check(chosen: list[str], at: int, word: str) -> None:
        text = "\n".join(chosen)
        at = at % (len(text) + 1)
        text = text[:at] + " " + word + " " + text[at:]
        try:
            compile_text(BASE + '\n# 1 "m.defs"\nsubsystem m 10;\n' + text)
        except MigError as e:
            assert e.file == "m.defs"

    check()


# warnings as Apple's mig prints them for these texts (each line: "w.defs", line N: warning: ...)
WARNINGS = [
    ("type int = int32_t;\nroutine r(s: mach_port_t; x: int, Const, Const; y: int, Dealloc);",
     [(1, "overriding previous definition of int"), (2, "redundant IPC flag ignored"),
      (2, "y: Dealloc is ignored: it is meaningless  for that type of argument")]),
    ("WaitTime T;\nroutine r(s: mach_port_t);\nConsumeOnSendError Timeout;\nroutine q(s: mach_port_t);",
     [(2, 'Routine r specifies a SendTime/WaitTime which may leak resources, adopt "ConsumeOnSendError Timeout"')]),
    ("type o = ^array[] of char;\nroutine r(s: mach_port_t; in a: o, Dealloc, NotDealloc; in b: o, Dealloc[], "
     "Dealloc; out c: o, Overwrite; in d: o, Overwrite; x: int, PhysicalCopy; in e: o, CountInOut; "
     "out f: int, CountInOut; out g: int, SameCount);",
     [(2, "a: Dealloc and NotDealloc cancel out"), (2, "b: Dealloc and NotDealloc ignored with Dealloc[]"),
      (2, "d: Overwrite is ignored - it must be Out AND Ool!"),
      (2, "x: PhysicalCopy is ignored, argument copied inline anyway"),
      (2, "e: CountInOut is ignored: argument must be Out"),
      (2, "f: CountInOut is ignored: argument isn't variable or in-line"),
      (2, "g: SameCount is ignored - the argument is not variable"),
      (2, "g: SameCount is ignored - adjacent argument is not variable")]),
    ("simpleroutine r(s: mach_port_t; x: int, RetCode; y: int, RetCode; z: int64_t, RetCode);\n"
     "routine q(requestport s: mach_port_t; requestport t: mach_port_t; replyport u: mach_port_send_once_t; "
     "replyport v: mach_port_send_once_t);",
     [(1, "y: RetCode is ignored - only one argument can be flagged as RetCode"),
      (1, "z: RetCode is ignored - the type doesn't match a MIG RetCode"),
      (2, "multiple RequestPort args in q; s won't be used"), (2, "multiple ReplyPort args in q; u won't be used")]),
    ('subsystem v 2;\nrcsid "a";\nrcsid "b";\ntype t = int ctype: a ctype: b;',
     [(1, "previous Subsystem decl (of w) will be ignored"), (3, "previous RCS decl will be ignored"),
      (4, "conflicting user types (a, b)"), (4, "conflicting server types (a, b)")]),
]


@pytest.mark.parametrize("source, expected", WARNINGS)
def test_warnings_are_migs(source: str, expected: list[tuple[int, str]]) -> None:
    s = compile_text(BASE + '\n# 1 "w.defs"\nsubsystem w 1;\n' + source + "\n")
    assert s.warnings == [f"w.defs:{line + 1}: warning: {msg}" for line, msg in expected]


MIGCOM = __import__("os").environ.get("PYMACH_MIGCOM", "")


@pytest.mark.skipif(not MIGCOM, reason="no migcom of Apple's to compare with (PYMACH_MIGCOM)")
@pytest.mark.parametrize("source, expected", WARNINGS)
def test_apple_mig_gives_these_warnings(source: str, expected: list[tuple[int, str]]) -> None:
    text = BASE + '\n# 1 "w.defs"\nsubsystem w 1;\n' + source + "\n"
    r = __import__("subprocess").run([MIGCOM, "-user", "/dev/null", "-header", "/dev/null", "-server",
                                      "/dev/null"], input=text, text=True, errors="replace",
                                     capture_output=True, cwd="/tmp", timeout=60, check=False)
    got = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 0
    assert got == [f'"w.defs", line {line + 1}: warning: {msg}' for line, msg in expected]
