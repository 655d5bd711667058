"""What ``pip install .`` installs, and how the test files depend on each
other.

The installed package is pymach alone: the tests (tests/) and the stress
harnesses (stress/: the kill storm, the load runs, the fuzzer) run from a
checkout. The files a wheel would hold are what setuptools' build_py copies
from the checkout (the package's modules and its package data), with the
configuration of pyproject.toml, into a directory of the test's own.

A test file imports helpers from helper modules (machutil, procutil,
ptraceutil, snippets) or gets fixtures from conftest, never from another
test file. A test that needs a bootstrap server of its own runs one with
pymach.bootstrap.private_server() (or machutil's fixtures built on it); it
does not point PYMACH_BOOTSTRAP_SOCKET at a socket itself.
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


# -- one way to run a private bootstrap server ----------------------------------------------------------

SOCKET_ENV = "PYMACH_BOOTSTRAP_SOCKET"
NOWHERE = "/nonexistent/"  # no socket can be made there: a child pointed at it reaches no server
# The files that may set the variable themselves, and why.
SETS_THE_SOCKET = {
    "machutil.py": "Server runs `pymach bootstrap serve -v` itself, for the tests of the server (its log, "
                   "its environment, kill and restart), on the socket of a private_server(serve=False) block",
    "test_bootstrap.py": "a spawned child's socket points into the test's private directory where nobody "
                         "listens, to prove that it reaches the server by the port it inherited",
    "nethosts.py": "each host namespace runs a bootstrap server of its own (its socket in the host's "
                   "directory, started with ip netns exec), and the proxy and tasks of that host get its socket "
                   "in their environment",
    "test_netmsg.py": "two netmsg hosts on one machine are two bootstrap servers: the proxies and the peer of "
                      "hostB get their host's socket in their environment (hostA's is a private_server block)",
    "test_netmsg_ool.py": "the same two hosts as test_netmsg.py, at the proxies' default retry pace: the "
                          "proxies and the peer of hostB get their host's socket in their environment",
    "test_security.py": "where the socket lives without an override (PYMACH_BOOTSTRAP_SOCKET empty, "
                        "XDG_RUNTIME_DIR) is what those tests check",
}
ENV_SETTERS = {"setenv", "putenv", "setdefault", "__setitem__"}


def _module_strings(tree: ast.Module) -> dict[str, str]:
    """The module's NAME = "text" constants."""
    return {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
            and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
            for t in n.targets if isinstance(t, ast.Name)}


def socket_settings(source: str, first_line: int = 1) -> list[int]:
    """The lines of ``source`` that set PYMACH_BOOTSTRAP_SOCKET (a keyword
    argument, a dict key, an item assigned, setenv and the like), in the
    code and in the programs its string constants hold for a child to run.
    Setting it to a path under /nonexistent/ is left out: that points a
    child away from every server, to show what it inherited."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    strings = _module_strings(tree)

    def text(node: ast.AST | None) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return strings.get(node.id)
        return None

    def names_it(node: ast.AST | None) -> bool:
        """The variable's name, or rendezvous.SOCKET_ENV (which holds it)."""
        if isinstance(node, ast.Attribute):
            return node.attr == "SOCKET_ENV"
        return text(node) == SOCKET_ENV or (isinstance(node, ast.Name) and node.id == "SOCKET_ENV")

    found: list[int] = []

    def setting(at: ast.AST, value: ast.AST | None) -> None:
        if not (text(value) or "").startswith(NOWHERE):
            found.append(first_line + getattr(at, "lineno", 1) - 1)

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == SOCKET_ENV:
                    setting(kw, kw.value)
            if (isinstance(node.func, ast.Attribute) and node.func.attr in ENV_SETTERS and node.args
                    and names_it(node.args[0])):
                setting(node, node.args[1] if len(node.args) > 1 else None)
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if names_it(k):
                    setting(node, v)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Subscript) and names_it(t.slice):
                    setting(node, node.value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SOCKET_ENV in node.value:
            found.extend(socket_settings(node.value, first_line + node.lineno - 1))  # a child's program
    return found


def test_the_scan_sees_each_way_of_setting_the_socket() -> None:
    # each sets it on the line given (the last two in a program a child runs)
    cases = [
        ('env = dict(os.environ, PYMACH_BOOTSTRAP_SOCKET=path)', 1),
        ('env = {"PYMACH_BOOTSTRAP_SOCKET": path, **os.environ}', 1),
        ('os.environ["PYMACH_BOOTSTRAP_SOCKET"] = path', 1),
        ('monkeypatch.setenv("PYMACH_BOOTSTRAP_SOCKET", path)', 1),
        ('env.setdefault(rendezvous.SOCKET_ENV, path)', 1),
        ('env[SOCKET_ENV] = path', 1),
        ('V = "PYMACH_BOOTSTRAP_SOCKET"\nos.putenv(V, path)', 2),
        ('CODE = """\nimport os\nos.environ["PYMACH_BOOTSTRAP_SOCKET"] = sys.argv[1]\n"""', 3),
        ("x = 1\nCODE = r'''import os\nenv = dict(os.environ, PYMACH_BOOTSTRAP_SOCKET=p)\n'''", 3),
    ]
    for code, line in cases:
        assert socket_settings(code) == [line], code
    nowhere = [
        'env = dict(os.environ, PYMACH_BOOTSTRAP_SOCKET="/nonexistent/bootstrap")',
        'NOWHERE = "/nonexistent/x"\nmonkeypatch.setenv("PYMACH_BOOTSTRAP_SOCKET", NOWHERE)',
        'CODE = """\nos.environ["PYMACH_BOOTSTRAP_SOCKET"] = "/nonexistent/bootstrap"\n"""',
        'assert f"PYMACH_BOOTSTRAP_SOCKET={path}".encode() in env',  # reads it
        'path = os.environ["PYMACH_BOOTSTRAP_SOCKET"]',
        'monkeypatch.delenv("PYMACH_BOOTSTRAP_SOCKET")',
        '"""Docs: PYMACH_BOOTSTRAP_SOCKET names the socket."""',
    ]
    for code in nowhere:
        assert socket_settings(code) == [], code


def test_tests_run_private_bootstrap_servers_one_way() -> None:
    """private_server() (pymach.bootstrap) is the one way; the files of
    SETS_THE_SOCKET are the exceptions, each with its reason."""
    found = {}
    for f in sorted(TESTS.rglob("*.py")):
        rel = f.relative_to(TESTS)
        if any(part.startswith((".", "__")) for part in rel.parts[:-1]) or str(rel) in SETS_THE_SOCKET:
            continue
        if f == Path(__file__).resolve():
            continue  # the scan's own samples, above
        lines = socket_settings(f.read_text())
        if lines:
            found[str(rel)] = lines
    assert found == {}, ("test files that set PYMACH_BOOTSTRAP_SOCKET themselves (run the server with "
                         f"pymach.bootstrap.private_server(), or machutil's fixtures): {found}")
    for name in SETS_THE_SOCKET:  # each exception is still needed
        assert socket_settings((TESTS / name).read_text()), f"{name} no longer sets the socket: drop it from the list"
