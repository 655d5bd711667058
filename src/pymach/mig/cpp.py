"""The C preprocessor that runs before the parser, as ``mig.sh`` runs
``cc -E``: with ``-D__MACH30__``, the caller's ``-I``/``-D``/``-U`` and
the directory of the ``.defs`` file last on the include path.

It is pcpp (a C preprocessor written in Python, from PyPI: the ``mig``
extra), so that it works where no C compiler is installed. The macros
that ``cc -E -arch x86_64`` defines and ``.defs`` files test are defined
too: ``__LP64__``, ``__x86_64__``, ``__APPLE__`` and ``__MACH__`` (so
that ``<mach/machine/thread_state.h>`` gives ``THREAD_STATE_MAX`` and the
machine types are the 64-bit ones). The system's ``cpp`` can be asked
for instead (``system_cpp=True``), with the same definitions.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping

from .errors import MigError

# what mig.sh adds, and what cc -E -arch x86_64 defines that .defs files test
BUILTIN_DEFINES: dict[str, str] = {
    "__MACH30__": "1",
    "__LP64__": "1",
    "__x86_64__": "1",
    "__APPLE__": "1",
    "__MACH__": "1",
}


def _defines(defines: Mapping[str, str | None], undefines: Iterable[str]) -> dict[str, str]:
    out = dict(BUILTIN_DEFINES)
    for name, value in defines.items():
        out[name] = "1" if value is None else value
    for name in undefines:
        out.pop(name, None)
    return out


def preprocess(path: str, include: Iterable[str] = (), defines: Mapping[str, str | None] | None = None,
               undefines: Iterable[str] = (), system_cpp: bool = False) -> str:
    """The text of ``path`` preprocessed, with line markers (``# N "file"``).

    ``include`` are the ``-I`` directories in order, ``defines`` the
    ``-D`` names (a None value is ``-DNAME``, i.e. 1), ``undefines`` the
    ``-U`` names. MigError for a file that cannot be read, an
    ``#include`` not found, an ``#error``, or a preprocessor error."""
    include = list(include)
    undefines = list(undefines)
    macros = _defines(defines or {}, undefines)
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise MigError(path, 0, f"cannot read file {path}")
    search = include + [os.path.dirname(os.path.abspath(path))]
    if system_cpp:
        return _system_cpp(path, search, macros, undefines)
    return _pcpp(path, search, macros, undefines)


def _pcpp(path: str, search: list[str], macros: dict[str, str], undefines: list[str]) -> str:
    try:
        from pcpp import Preprocessor  # type: ignore[import-untyped]
    except ImportError:
        raise MigError(path, 0, "the preprocessor pcpp is not installed (pip install 'pymach[mig]'), "
                                "or ask for the system's cpp") from None

    errors: list[tuple[str, int, str]] = []

    class _Pre(Preprocessor):  # type: ignore[misc]
        def on_error(self, file: str, line: int, msg: str) -> None:
            errors.append((file, line, msg))

        def on_include_not_found(self, is_malformed: bool, is_system_include: bool, curdir: str,
                                 includepath: str) -> None:
            src = self.lastdirective.source if self.lastdirective is not None else path
            line = self.lastdirective.lineno if self.lastdirective is not None else 0
            raise MigError(_as_given(src, path), line, f"#include {includepath}: file not found")

        def on_directive_unknown(self, directive: object, toks: list[object], ifpassthru: bool,
                                 precedingtoks: list[object]) -> bool | None:
            name = getattr(directive, "value", "")
            if name == "error":
                text = "".join(getattr(t, "value", "") for t in toks).strip()
                errors.append((getattr(directive, "source", path), getattr(directive, "lineno", 0),
                               f"#error {text}"))
                return True
            if name == "warning":
                return True
            return None

    p = _Pre()
    p.line_directive = "#"
    for d in search:
        p.add_path(d)
    for name, value in macros.items():
        p.define(f"{name} {value}")
    for name in undefines:
        p.undef(name)
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    # the first line marker names the file as it was given
    p.parse(text, path)
    out = io.StringIO()
    p.write(out)
    if errors:
        file, line, msg = errors[0]
        raise MigError(_as_given(file, path), line, msg)
    # pcpp names files relative to the working directory: the .defs file
    # keeps the name it was given, as cc -E keeps it
    text = _MARKER.sub(lambda m: f'{m.group(1)}"{_as_given(m.group(2), path)}"', out.getvalue())
    return f'# 1 "{path}"\n' + text


_MARKER = re.compile(r'^(#[ \t]*[0-9]+[ \t]*)"([^"\n]*)"', re.MULTILINE)


def _as_given(name: str, path: str) -> str:
    """``path`` where ``name`` is the same file, else ``name``."""
    try:
        return path if os.path.abspath(name) == os.path.abspath(path) else name
    except (OSError, ValueError):
        return name


def _system_cpp(path: str, search: list[str], macros: dict[str, str], undefines: list[str]) -> str:
    cpp = shutil.which("cpp")
    if cpp is None:
        raise MigError(path, 0, "no cpp on PATH")
    argv = [cpp, "-E", "-undef"]
    argv += [f"-D{name}={value}" for name, value in macros.items()]
    argv += [f"-U{name}" for name in undefines]
    for d in search:
        argv += ["-I", d]
    argv.append(path)
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise MigError(path, 0, f"cpp failed: {r.stderr.strip()}")
    return r.stdout
