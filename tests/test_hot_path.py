"""No method is called on an object a module got by ``from X import NAME``.

CPython compiles ``NAME.method(...)`` for a NAME bound by an import as a
plain attribute load followed by a call (it takes NAME for a module, whose
attributes are functions): no LOAD_METHOD. On 3.11 an attribute load that
finds a method cannot be specialized, so every such call looks the
attribute up the slow way, makes a bound method and frees it. On the
message path that was 500 to 1,500 instructions per mach_msg send and
receive (``HDR.unpack_from`` once HDR moved to message_defs). Objects
whose methods a module calls are therefore bound by assignment
(``HDR = MD.HDR``) or reached through their module (``KT.SELF.method()``).
"""

from __future__ import annotations

import ast
import importlib
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
PACKAGE = ROOT / "pymach"


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue  # runs the command line when imported
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


def _imported_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
    return names


def test_no_method_call_on_an_imported_object() -> None:
    found = []
    for modname, path in _modules():
        tree = ast.parse(path.read_text(), str(path))
        imported = _imported_names(tree)
        if not imported:
            continue
        module = importlib.import_module(modname)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in imported):
                obj = getattr(module, node.func.value.id, None)
                if obj is not None and not isinstance(obj, (types.ModuleType, type)):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.func.value.id}.{node.func.attr}() "
                                 f"on a {type(obj).__name__}")
    assert not found, "\n".join(found)

