"""What ``pip install .`` installs, and how the test files depend on each
other.

The installed package is pymach alone: the tests (tests/) and the stress
harnesses (stress/: the kill storm, the load runs, the fuzzer) run from a
checkout. The files a wheel would hold are what setuptools' build_py copies
from the checkout (the package's modules and its package data), with the
configuration of pyproject.toml, into a directory of the test's own.

A test file imports helpers from helper modules (machutil, procutil,
ptraceutil, snippets) or gets fixtures from conftest, never from another
test file.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
TESTS = CHECKOUT / "tests"
HARNESSES = {"storm.py", "load.py", "fuzz_ipc.py"}


def built_files(tmp_path: Path) -> list[str]:
    """The files setuptools builds for the wheel (build_py), relative to
    the wheel's root."""
    pytest.importorskip("setuptools", reason="building the package's file list needs setuptools")
    lib = tmp_path / "lib"
    p = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q",
                        "egg_info", "--egg-base", str(tmp_path), "build_py", "--build-lib", str(lib)],
                       cwd=CHECKOUT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert p.returncode == 0, p.stdout + p.stderr
    return sorted(str(f.relative_to(lib)) for f in lib.rglob("*") if f.is_file())


def test_the_installed_package_holds_no_test_code(tmp_path: Path) -> None:
    files = built_files(tmp_path)
    # what it should hold, so that an empty build cannot pass
    assert {"pymach/__init__.py", "pymach/py.typed", "pymach/tools/__init__.py", "pymach/tools/tour.py"} <= set(files)
    assert {f.split("/")[0] for f in files} == {"pymach"}, files
    test_code = [f for f in files
                 if {"tests", "stress"} & set(f.split("/")[:-1])
                 or f.rsplit("/", 1)[-1] in HARNESSES
                 or f.rsplit("/", 1)[-1].startswith("test_")
                 or f.endswith("/conftest.py")]
    assert test_code == []


def _imported_modules(tree: ast.Module) -> set[str]:
    """The modules a file imports, as written (the first component of a
    relative import's target included)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.module:
                out.add(node.module)
            if node.level or node.module in (None, "tests"):
                out.update(a.name for a in node.names)  # from . import test_x, from tests import test_x
    return out


def test_no_test_file_imports_another() -> None:
    found = {}
    for f in sorted(TESTS.glob("test_*.py")):
        mods = _imported_modules(ast.parse(f.read_text(), str(f)))
        bad = sorted(m for m in mods if any(part.startswith("test_") for part in m.split(".")))
        if bad:
            found[f.name] = bad
    assert found == {}, f"test files that import other test files (move the helpers to a helper module): {found}"
