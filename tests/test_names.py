"""Names say what they are: an alias given to a module on import
(``from . import kern_return as K``) names that one module everywhere in
the project, so that K, KM or P read the same in every file."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = [ROOT / "src" / "pymach", ROOT / "stress"]


def _module_name(path: Path) -> str:
    base = ROOT / "src" if path.is_relative_to(ROOT / "src") else ROOT
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _aliases() -> dict[str, dict[str, list[str]]]:
    """alias -> {module it names: [files]} for every aliased import of a
    project module."""
    seen: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for tree in TREES:
        for path in sorted(tree.rglob("*.py")):
            me = _module_name(path)
            package = me if path.name == "__init__.py" else me.rpartition(".")[0]
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom):
                    if node.level:
                        parts = package.split(".")
                        base = ".".join(parts[:len(parts) - node.level + 1])
                        mod = f"{base}.{node.module}" if node.module else base
                    else:
                        mod = node.module or ""
                    for a in node.names:
                        if a.asname and a.asname != a.name:
                            seen[a.asname][f"{mod}.{a.name}"].append(str(path.relative_to(ROOT)))
                elif isinstance(node, ast.Import):
                    for a in node.names:
                        if a.asname and a.asname != a.name.rpartition(".")[2]:
                            seen[a.asname][a.name].append(str(path.relative_to(ROOT)))
    return seen


def test_an_alias_names_one_module_everywhere() -> None:
    clashes = {alias: {mod: files for mod, files in mods.items()}
               for alias, mods in _aliases().items()
               if len(mods) > 1 and any(m.startswith(("pymach", "stress")) for m in mods)}
    assert not clashes, "\n".join(f"{alias}: " + "; ".join(f"{m} in {', '.join(f)}" for m, f in mods.items())
                                  for alias, mods in clashes.items())
