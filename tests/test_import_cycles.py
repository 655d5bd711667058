"""No import cycle among pymach's modules, function-level imports included.

Every module under src/pymach (and stress/, when the checkout has it) is
parsed, never imported. Every import of a project module is an edge of the
module graph, wherever it happens: at module level, in a class body, or
inside a function (an import deferred into a function still makes the
module depend on the other one; deferring it only hides a cycle until the
function runs). ``importlib.import_module`` of a project module is an edge
too. Imports under ``if TYPE_CHECKING:`` never run and are not edges.

A cycle means two modules each need the other, so neither has a place in
the layers of docs/architecture.md. Cycles are broken by the direction of
ownership (the module that owns an object is below the modules that use it),
not by moving an import into a function. ``ALLOWED`` lists the edges that
may close a cycle all the same, each with its reason; every one must stay
inside a function (a module-level edge of a cycle fails at import time) and
must still be needed (an entry that closes no cycle any more must go).

The modules of the message path and of the task (``DEFERRING_CHECKED``) go
further: an import there stays inside a function only for a reason listed
in ``DEFERRED`` (what importing it at module level would cost), so that a
cycle is never dodged there again by moving an import into a function.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = [(ROOT / "src", "pymach"), (ROOT, "stress")]  # (where the package sits, its name)

# (importing module, imported module, function): why the cycle stays
ALLOWED: dict[tuple[str, str, str], str] = {
    ("pymach.ipc", "pymach.task", "MemoryEntry.map"):
        "The Pythonic handles are mutually recursive through the public API: Region.memory_entry() "
        "returns a MemoryEntry, MemoryEntry.map() returns a Region of Task.self(), MemoryEntry is a "
        "SendRight, and a received message wraps memory entries as MemoryEntry. With Task and Region in "
        "pymach/task.py and the rights in pymach/ipc.py, one of these references has to point up; task.py "
        "sits above ipc.py (as _kern/vm_user.py, which makes and maps memory entries, sits above the IPC "
        "modules), and MemoryEntry.map() is one of the two places ipc.py reaches up, to build the Region it "
        "returns.",
    ("pymach.ipc", "pymach.semaphore", "_semaphore_class"):
        "A received semaphore comes out of a Message as the pymach.Semaphore the user holds, as a task "
        "port comes out as a Task; Semaphore is a SendRight of ipc.py, so ipc.py reaches up to wrap it.",
    ("pymach.ipc", "pymach.task", "_task_class"):
        "The other one: a task port travels in a Message's rights as the pymach.Task the user holds (Mach's "
        "task port is a send right), and a received task port comes out as a Task, as a received memory "
        "entry comes out as a MemoryEntry. Task is built on the rights of ipc.py (Region.memory_entry, "
        "vm_remap), so it stays above them, and the message code reaches up for the class, in this one "
        "function.",
}


# the modules whose function-level imports need a listed reason
DEFERRING_CHECKED = frozenset({
    "pymach._kern.ipc_space", "pymach._kern.ipc_notify", "pymach._kern.ipc_port", "pymach._kern.ipc_pset",
    "pymach._kern.task", "pymach._kern.ipc_right", "pymach._kern.ipc_kmsg", "pymach._kern.mach_msg",
    "pymach.mach.mach_port", "pymach.mach.mig", "pymach.ipc", "pymach.task",
})

# (importing module, imported module, function): why the import waits for the call (no cycle)
DEFERRED: dict[tuple[str, str, str], str] = {
    ("pymach._kern.task", "pymach._kern.ipc_port", "_adopt"):
        "import pymach loads kern.task for SELF and must stay within its time budget: ipc_port (with "
        "ipc_notify and _linux.unix, epoll and eventfd) is loaded on SELF's first use, when the inherited "
        "ports become send capabilities, not at import. kern.task is above ipc_port: no cycle.",
    ("pymach.ipc", "pymach.aio", "_aio"):
        "pymach.aio imports asyncio (some 20 modules, tens of ms): only a program that awaits a port loads "
        "it, on its first asynchronous call. aio imports nothing of ipc (it is below it): no cycle.",
}


@dataclass(frozen=True)
class Edge:
    importer: str
    target: str
    kind: str  # "module", "function", "typing" or "dynamic"
    function: str  # qualified name of the enclosing function; "" at module level
    where: str  # path:line


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for base, name in TREES:
        if not (base / name).is_dir():
            continue
        for path in sorted((base / name).rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()
TOPS = {m.split(".")[0] for m in MODULES}


def _package(module: str) -> str:
    """The package relative imports of ``module`` start from."""
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _absolute(module: str, level: int, name: str | None) -> str:
    if not level:
        return name or ""
    base = _package(module).split(".")
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


def _known(name: str) -> str | None:
    """The project module ``name`` reaches (its longest prefix that is one)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def scan(module: str, source: str, path: str) -> list[Edge]:
    """Every edge from ``module``, whose text is ``source``."""
    tree = ast.parse(source, path)
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    edges: list[Edge] = []

    def add(target: str, node: ast.stmt | ast.expr, kind: str, function: str) -> None:
        found = _known(target)
        if found is not None and found != module:
            edges.append(Edge(module, found, kind, function, f"{path}:{node.lineno}"))

    def visit(node: ast.AST, function: list[str] | None, scope: list[str], typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for c in child.body:
                    visit_one(c, function, scope, True)
                for c in child.orelse:
                    visit_one(c, function, scope, typing_only)
            else:
                visit_one(child, function, scope, typing_only)

    def visit_one(node: ast.AST, function: list[str] | None, scope: list[str], typing_only: bool) -> None:
        kind = "typing" if typing_only else ("module" if function is None else "function")
        fn = ".".join(function or [])
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in TOPS:
                    add(a.name, node, kind, fn)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node.level, node.module)
            if base.split(".")[0] in TOPS:
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    add(sub if sub in MODULES else base, node, kind, fn)
        elif isinstance(node, ast.Call) and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))):
            arg = node.args[0] if node.args else None
            names = [arg.value] if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else [
                s for s in strings if re.fullmatch(r"\.*[A-Za-z_][\w.]*", s)]  # a name from a table
            for s in names:
                level = len(s) - len(s.lstrip("."))
                target = _absolute(module, level, s.lstrip(".") or None) if level else s
                if target in MODULES:
                    add(target, node, "dynamic", fn)
            visit(node, function, scope, typing_only)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            name = getattr(node, "name", "<lambda>")
            for d in getattr(node, "decorator_list", []):
                visit_one(d, function, scope, typing_only)
            visit(node, scope + [name], scope + [name], typing_only)
        elif isinstance(node, ast.ClassDef):
            visit(node, function, scope + [node.name], typing_only)
        else:
            visit(node, function, scope, typing_only)

    visit(tree, None, [], False)
    return edges


def _edges() -> list[Edge]:
    out: list[Edge] = []
    for module, path in MODULES.items():
        out += scan(module, path.read_text(), str(path.relative_to(ROOT)))
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with a cycle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _graph(edges: list[Edge]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in edges:
        if e.kind != "typing":
            graph[e.importer].add(e.target)
    return graph


def _allowed(e: Edge) -> bool:
    return (e.importer, e.target, e.function) in ALLOWED


def test_the_source_tree_is_there() -> None:
    # the test reads the source, whatever copy of pymach is installed
    assert "pymach._kern.ipc_kmsg" in MODULES and "pymach._kern.task" in MODULES


def test_the_scan_sees_imports_wherever_they_are(tmp_path: Path) -> None:
    # a scan that missed function-level imports would pass for the wrong reason
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import ipc_space\n"
        "if TYPE_CHECKING:\n"
        "    from .ipc_port import Port\n"
        "class Holder:\n"
        "    def method(self):\n"
        "        def inner():\n"
        "            from .task import SELF\n"
        "            return SELF\n"
        "        return inner\n"
        "def lazy(name):\n"
        "    import importlib\n"
        "    return importlib.import_module('.vm_map', __name__)\n")
    edges = {(e.target, e.kind, e.function) for e in scan("pymach._kern.ipc_kmsg", source, "x.py")}
    assert edges == {
        ("pymach._kern.ipc_space", "module", ""),
        ("pymach._kern.ipc_port", "typing", ""),
        ("pymach._kern.task", "function", "Holder.method.inner"),
        ("pymach._kern.vm_map", "dynamic", "lazy"),
    }


def test_no_import_cycle() -> None:
    edges = _edges()
    graph = _graph([e for e in edges if not _allowed(e)])
    report = []
    for component in _cycles(graph):
        members = set(component)
        inside = sorted({(e.where, e.importer, e.target, e.kind, e.function) for e in edges
                         if e.importer in members and e.target in members and e.kind != "typing"
                         and not _allowed(e)})
        report.append("cycle among " + ", ".join(component) + ":\n" + "\n".join(
            f"    {where}: {a} -> {b} ({kind}{' in ' + fn if fn else ''})" for where, a, b, kind, fn in inside))
    assert not report, "import cycles (function-level imports count):\n" + "\n".join(report)


def test_every_allowed_edge_is_still_needed_and_stays_in_its_function() -> None:
    edges = _edges()
    graph = _graph([e for e in edges if not _allowed(e)])
    for (importer, target, function), _why in ALLOWED.items():
        mine = [e for e in edges if (e.importer, e.target, e.function) == (importer, target, function)]
        assert mine, f"{importer} no longer imports {target} in {function}: take it off ALLOWED"
        assert all(e.kind == "function" for e in mine), f"{importer} -> {target} must stay inside {function}"
        # it closes a cycle: the target still reaches the importer without it
        seen, todo = {target}, [target]
        while todo:
            for w in graph[todo.pop()]:
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        assert importer in seen, f"{importer} -> {target} closes no cycle any more: take it off ALLOWED"


def test_the_message_path_and_the_task_defer_an_import_only_for_a_listed_reason() -> None:
    edges = _edges()
    listed = set(DEFERRED) | set(ALLOWED)
    unlisted = sorted({f"{e.where}: {e.importer} -> {e.target} (in {e.function})" for e in edges
                      if e.importer in DEFERRING_CHECKED and e.kind in ("function", "dynamic")
                      and (e.importer, e.target, e.function) not in listed})
    assert not unlisted, "imports moved into a function without a listed reason:\n" + "\n".join(unlisted)
    seen = {(e.importer, e.target, e.function) for e in edges if e.kind == "function"}
    stale = [f"{a} -> {b} in {fn}" for (a, b, fn) in DEFERRED if (a, b, fn) not in seen]
    assert not stale, "no longer deferred, take them off DEFERRED: " + ", ".join(stale)
