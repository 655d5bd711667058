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



def test_message_path_objects_keep_shared_keys() -> None:
    """CPython 3.11 shares one keys table among a class's instances for at
    most 30 attribute names (the union over all instances, in the order
    they were first set); an instance that needs more gets a dict of its
    own, and the attribute reads and method loads on it are no longer
    specialized (ports with 31 names between them cost each request about
    5,000 instructions). The ports of a mach_msg exchange and of a request
    (the server's port and the thread's reply port, guarded), the task and
    its space stay under it."""
    import gc
    import threading

    import pymach
    import pymach.mach as M
    from pymach._kern.ipc_port import Port
    from pymach.lowlevel import SELF
    from pymach.mach import byref
    name = M.mach_port_name_t()
    assert M.mach_port_allocate(M.mach_task_self(), M.MACH_PORT_RIGHT_RECEIVE, byref(name)) == M.KERN_SUCCESS
    try:
        assert M.mach_port_insert_right(M.mach_task_self(), name.value, name.value,
                                        M.MACH_MSG_TYPE_MAKE_SEND) == M.KERN_SUCCESS
        with pymach.Port() as port, port.make_send() as right:
            def serve() -> None:
                m = port.receive(timeout=10)
                assert m.reply is not None
                m.reply.send(m.data, id=m.id)
            t = threading.Thread(target=serve)
            t.start()
            assert pymach.request(right, b"x" * 64, id=7, timeout=10).data == b"x" * 64
            t.join(10)
            assert not t.is_alive()
            names: set[str] = set()
            for obj in gc.get_objects():
                if type(obj) is Port:
                    names |= set(vars(obj))
            assert len(names) <= 30, f"ports have {len(names)} attribute names between them: {sorted(names)}"
        for obj in (SELF, SELF.space):
            attrs = vars(obj)
            assert len(attrs) <= 30, f"{type(obj).__name__} has {len(attrs)} attributes: {sorted(attrs)}"
    finally:
        M.mach_port_mod_refs(M.mach_task_self(), name.value, M.MACH_PORT_RIGHT_RECEIVE, -1)
        M.mach_port_deallocate(M.mach_task_self(), name.value)
