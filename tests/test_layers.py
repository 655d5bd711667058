"""The import directions of docs/architecture.md, read from the source.

Every module under src/pymach is parsed (not imported) and every import
in it, at module level or inside a function, is resolved to the pymach
module it names. Arrows point down only:

    tools  ->  Pythonic (pymach, pymach/*.py)  ->  mach (the C veneer)  ->  kern  ->  _linux
    servers (beside tools)  ->  mach, kern, _linux
    netmsg (the netmsg proxy, a service beside servers, used by tools)  ->  Pythonic, mach, kern, _linux

``ALLOWED_EXCEPTIONS`` lists the imports that break a rule on purpose,
each with its reason; one that no longer happens must leave the list.

The veneer (mach/) translates structs, arguments and return codes only: it
holds no lock and no state, changes no module's or kernel object's state
itself, and turns the kernel's exceptions into codes in one decorator
(mach/_errors.py), except in the routines ``OWN_TRANSLATION`` lists.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "pymach"

# what each layer may import, besides the standard library and other packages
MAY_IMPORT: dict[str, frozenset[str]] = {
    "_linux": frozenset({"_linux"}),
    "_kern": frozenset({"_kern", "_linux"}),
    "mach": frozenset({"mach", "_kern", "_linux"}),
    "servers": frozenset({"servers", "mach", "_kern", "_linux"}),
    "pythonic": frozenset({"pythonic", "mach", "_kern", "_linux"}),
    "netmsg": frozenset({"netmsg", "pythonic", "mach", "_kern", "_linux"}),
    "tools": frozenset({"tools", "servers", "netmsg", "pythonic", "mach", "_kern", "_linux", "examples"}),
    "examples": frozenset({"examples", "pythonic", "mach", "_kern", "_linux"}),
}

# (importing module, imported module): why it stays
ALLOWED_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("pymach._kern.vm_map", "pymach._format"):
        "RegionInfo.__repr__ writes protections and sizes with pymach/_format.py, the reprs' formatter of "
        "the Pythonic layer, which needs nothing but kern.vm_defs (in kern it would be in its place)",
    ("pymach._kern.task_user", "pymach._format"):
        "BasicInfo.__repr__ writes its sizes with the same formatter",
}


def _layer(module: str) -> str | None:
    """The layer of a pymach module; None for a module outside pymach."""
    parts = module.split(".")
    if parts[0] != "pymach":
        return None
    if len(parts) == 1:
        return "pythonic"  # the package itself: pymach/__init__.py
    if parts[1] == "__main__":
        return "tools"  # `python -m pymach`: the command
    return parts[1] if parts[1] in MAY_IMPORT and parts[1] != "pythonic" else "pythonic"


def _module_name(path: Path) -> tuple[str, str]:
    """(module, package its relative imports start from)."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
        name = ".".join(parts)
        return name, name
    name = ".".join(parts)
    return name, name.rpartition(".")[0]


def _is_module(name: str) -> bool:
    p = SRC.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every pymach module ``path`` imports, with its line: ``from X import
    y`` names the module X.y when y is a module, else X."""
    _name, package = _module_name(path)
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[:-(node.level - 1)]
                target = ".".join(base) + (f".{node.module}" if node.module else "")
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.append((sub if _is_module(sub) else target, node.lineno))
    return [(m, line) for m, line in found if m.split(".")[0] == "pymach"]


def _all_imports() -> list[tuple[str, str, int, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name, _package = _module_name(path)
        out += [(name, target, line, path) for target, line in _imports(path)]
    return out


def test_imports_point_down_only() -> None:
    # the test reads the source, whatever copy of pymach is installed
    names = {_module_name(p)[0] for p in PACKAGE.rglob("*.py")}
    assert {"_linux", "_kern", "mach", "servers", "pythonic", "tools"} <= {_layer(n) for n in names}
    imports = _all_imports()
    wrong = []
    for name, target, line, path in imports:
        src, dst = _layer(name), _layer(target)
        assert src is not None and dst is not None
        if dst not in MAY_IMPORT[src] and (name, target) not in ALLOWED_EXCEPTIONS:
            wrong.append(f"{path.relative_to(SRC.parent)}:{line}: {name} ({src}) imports {target} ({dst})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)
    seen = {(name, target) for name, target, _line, _path in imports}
    stale = [f"{a} -> {b}" for (a, b) in ALLOWED_EXCEPTIONS if (a, b) not in seen]
    assert not stale, "no longer imported, take them off ALLOWED_EXCEPTIONS: " + ", ".join(stale)


def test_the_kernel_and_the_veneer_never_reach_up_to_servers_or_tools() -> None:
    # the arrows the layers exist for, with no exception allowed
    bad = [f"{name} -> {target}" for name, target, _line, _path in _all_imports()
           if _layer(name) in ("_kern", "mach", "_linux") and _layer(target) in ("servers", "tools")]
    assert not bad


def test_the_veneer_keeps_no_lock_no_thread_and_no_state() -> None:
    # mach/ translates structs, arguments and return codes: the locks and
    # the state are the kernel's
    for path in sorted((PACKAGE / "mach").glob("*.py")):
        tree = ast.parse(path.read_text())
        stdlib = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | {
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level and n.module}
        assert "threading" not in stdlib, f"{path}: a lock or a thread-local in the veneer"
        rebinds = [n.lineno for n in ast.walk(tree) if isinstance(n, (ast.Global, ast.Nonlocal))]
        assert not rebinds, f"{path}:{rebinds}: module state changed by a routine"
        # names the module binds: its own globals and what it imports (the kernel's SELF, ...)
        module_names = {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                        for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
        module_names |= {a.asname or a.name.split(".")[0] for n in ast.walk(tree)
                         if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        mutated = [f"{n.lineno}: {ast.unparse(n)}" for n in ast.walk(tree)
                   if isinstance(n, (ast.Assign, ast.AugAssign))
                   for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                   if isinstance(t, (ast.Subscript, ast.Attribute))
                   and isinstance(t.value, ast.Name) and t.value.id in module_names]
        assert not mutated, f"{path}: module or kernel state changed by the veneer: {mutated}"


# routines that translate an exception themselves, and why
OWN_TRANSLATION: dict[str, str] = {
    "mach_port.mach_msg_overwrite": "the message path: no wrapper's call on it, and MACH_RCV_TOO_LARGE writes msgh_size",
    "mach_port.mach_port_names": "its out-of-line arrays are made after the code is known; a failure to make them raises",
    "mach_port.mach_ports_lookup": "the same, for the array of registered ports",
    "thread_act.task_threads": "the same, for the array of thread ports",
}


def test_the_veneer_turns_exceptions_into_codes_in_one_place() -> None:
    # ``except ...: return e.kr`` (or kr_from_oserror) is written once, in
    # mach/_errors.py's returns_kr; the routines listed above keep their own
    found = set()
    for path in sorted((PACKAGE / "mach").glob("*.py")):
        if path.name == "_errors.py":
            continue
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for h in ast.walk(fn):
                if isinstance(h, ast.ExceptHandler) and any(
                        isinstance(s, ast.Return) and s.value is not None
                        and ("e.kr" in ast.unparse(s.value) or "kr_from_oserror" in ast.unparse(s.value))
                        for s in h.body):
                    found.add(f"{path.stem}.{fn.name}")
    assert found == set(OWN_TRANSLATION), sorted(found ^ set(OWN_TRANSLATION))


# test files that test the kernel itself, from the inside: only these may
# import pymach._kern; every other test goes through pymach, pymach.mach
# or pymach.lowlevel
CORE_TESTS: dict[str, str] = {
    "machutil.py": "helpers that wait for the notification watcher (ipc_notify) of the core's tests",
    "test_layers.py": "the kernel's import directions and exports",
    "test_hot_path.py": "counts the attribute names of the kernel's ports (ipc_port.Port), which the message path reads",
    "test_host_info.py": "host statistics' fields computed from given /proc/vmstat and /proc/meminfo text (host)",
    "test_ipc_fuzz.py": "feeds records straight to a port's receiving end (ipc_port, ipc_kmsg)",
    "test_ipc_reply_channel.py": "the wire flags and back-channel rights of reply channels",
    "test_ipc_untrusted.py": "hand-made records checked by ipc_kmsg's copyout",
    "test_kill_storm.py": "the storm's checks of rights and notifications inside the space",
    "test_load.py": "the limit of joined channels a port accepts (ipc_port.max_joined)",
    "test_lock_hangs.py": "the kernel's locks, held and renewed at fork",
    "test_memory_entry.py": "the kernel's memory entry objects behind a send right",
    "test_memory_entry_regions.py": "hand-made records carrying a copy entry's table (ipc_kmsg, vm_memory_entry)",
    "test_notify_failure.py": "fault injection into the notification path",
    "test_semaphore.py": "hand-made records carrying a semaphore's fds, checked by ipc_kmsg's copyout (sync_sema)",
    "test_mig_own_defs.py": "the kernel's notification stubs generated from notify.defs (notify_mig) and the records "
                            "ipc_notify makes of them",
    "test_ptrace_inject.py": "fault injection into remote control by ptrace (vm_remote)",
    "test_pythonic_input.py": "the space's rights after bad input to the Pythonic layer (ipc_right)",
    "test_receive_wakeup.py": "a receiver inside the kernel's Port.dequeue when the port goes",
    "test_security.py": "records forged below the runtime (ipc_kmsg, ipc_port)",
    "test_send_once_target.py": "which receive right a send-once right sends to (ipc_right.send_once_target)",
    "test_task_port_messages.py": "hand-made records carrying task and thread ports (ipc_kmsg), and the space's "
                                  "rows of received task ports (introspect)",
    "test_tracer.py": "the fault tracer (_linux.tracer) and the exception each fault is (kern.exc_codes), below "
                      "any exception port",
    "test_vm_remote.py": "the mapping of another task's memory (vm_map_foreign)",
    "test_vm_remote_inject.py": "fault injection into remote VM operations (vm_remote)",
}


def test_only_the_core_tests_import_the_kernel() -> None:
    tests = Path(__file__).resolve().parent
    found = set()
    for path in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "pymach._kern" or n.startswith("pymach._kern.") for n in names):
                found.add(path.name)
    assert found == set(CORE_TESTS), (sorted(found - set(CORE_TESTS)), sorted(set(CORE_TESTS) - found))


def test_lowlevel_exports_exactly_what_the_kernel_offers() -> None:
    import importlib

    import pymach._kern as core
    import pymach.lowlevel as lowlevel
    names = []
    for entry in core.EXPORTS:
        module, _, name = entry.rpartition(".")
        obj = (getattr(importlib.import_module(f"pymach._kern.{module}"), name) if module
               else importlib.import_module(f"pymach._kern.{name}"))
        assert getattr(lowlevel, name) is obj, entry
        names.append(name)
    assert sorted(lowlevel.__all__) == sorted(names)
