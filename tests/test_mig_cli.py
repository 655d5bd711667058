"""``pymach mig``: the command's options as Apple's mig takes them, and
``--layout``'s JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pcpp")

from pymach.mig import compile_defs  # noqa: E402
from pymach.tools import main  # noqa: E402

HERE = Path(__file__).resolve().parent / "mig"
LAYOUT = str(HERE / "layout.defs")
INCLUDE = str(HERE / "include")


def test_layout_prints_the_subsystem_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mig", "-I", INCLUDE, "-novouchers", "--layout", LAYOUT]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == compile_defs(LAYOUT, include=[INCLUDE]).to_json()
    assert list(out) == ["subsystem", "base", "routines"]
    assert out["routines"][0] == {
        "routine": "scalars", "id": 2000, "simple": False,
        "request": {"size": 40, "fields": [["Head", 0, 24], ["NDR", 24, 8], ["a", 32, 4], ["c", 36, 2],
                                           ["cPad", 38, 2]]},
        "reply": {"size": 48, "fields": [["Head", 0, 24], ["NDR", 24, 8], ["RetCode", 32, 4], ["b", 36, 8],
                                         ["c", 44, 2], ["cPad", 46, 2]]}}
    one_way = next(r for r in out["routines"] if r["routine"] == "one_way")
    assert one_way["simple"] is True and one_way["reply"] is None
    assert [r["id"] for r in out["routines"]] == sorted(r["id"] for r in out["routines"])


def test_defines_and_undefines_as_cc_takes_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "d.defs"
    p.write_text("subsystem NAME BASE;\n#ifdef __LP64__\nskip;\n#endif\n#include <base_types.defs>\n"
                 "routine r(s: mach_port_t);\n")
    assert main(["mig", f"-I{INCLUDE}", "-DNAME=named", "-D", "BASE=70", "--layout", str(p)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["subsystem"], out["base"], out["routines"][0]["id"]) == ("named", 70, 71)
    assert main(["mig", f"-I{INCLUDE}", "-DNAME=named", "-DBASE=70", "-U", "__LP64__", "--layout", str(p)]) == 0
    assert json.loads(capsys.readouterr().out)["routines"][0]["id"] == 70


def test_errors_are_file_line_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "bad.defs"
    p.write_text("subsystem bad 1;\n\nroutine r(s: nosuch_t);\n")
    assert main(["mig", "--layout", str(p)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"{p}:3: type 'nosuch_t' not defined"


def test_nothing_to_do_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    # (what -user, -server and -header write: tests/test_mig_rpc.py)
    assert main(["mig", "-I", INCLUDE, LAYOUT]) == 2
    assert "nothing to do" in capsys.readouterr().err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["mig", "--layout"])
    assert e.value.code == 2
    assert "pymach mig:" in capsys.readouterr().err


def test_python_m_pymach_mig() -> None:
    r = subprocess.run([sys.executable, "-m", "pymach", "mig", "-I", INCLUDE, "--layout", LAYOUT],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["subsystem"] == "layout"
