"""pymach.mig: the Mach Interface Generator's front end, in Python.

It reads ``.defs`` files as Apple's ``mig`` does (bootstrap_cmds'
migcom): the C preprocessor first (``cpp``), then the grammar of
``parser.y`` (``lexer``, ``parser``), mig's type model (``types``) and its
message layouts (``layout``): for every routine, the
``__Request__<routine>_t`` and ``__Reply__<routine>_t`` structs that mig
declares, field by field, as the LP64 C ABI lays them out.

    sub = compile_defs("mine.defs", include=["include"], defines={"DEBUG": "1"})
    rt = sub.routine("my_routine")
    rt.id, rt.request.size, [(f.name, f.offset, f.size) for f in rt.reply.fields]

``pymach mig --layout FILE.defs`` prints the same as JSON. ``load(path)``
makes the subsystem's clients and servers at run time (``rpc``), and
``pymach mig -user/-server/-header`` writes them as modules (``codegen``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .cpp import preprocess
from .errors import MigError
from .layout import C_TYPE_SIZES, REPLY_ERROR, Argument, Field, Layout, Routine
from .parser import Subsystem, parse
from .types import IpcType

if TYPE_CHECKING:
    from .rpc import Interface

__all__ = ["Argument", "C_TYPE_SIZES", "Field", "IpcType", "Layout", "MigError", "REPLY_ERROR", "Routine", "Subsystem",
           "compile_defs", "compile_text", "load", "preprocess"]


def compile_defs(path: str, include: Iterable[str] = (), defines: Mapping[str, str | None] | None = None,
                 undefines: Iterable[str] = (), system_cpp: bool = False,
                 c_sizes: Mapping[str, int] | None = None) -> Subsystem:
    """The subsystem that the ``.defs`` file ``path`` declares, with its
    routines laid out. ``include``, ``defines`` and ``undefines`` are the
    preprocessor's ``-I``, ``-D`` (a None value defines the name as 1) and
    ``-U``; ``system_cpp`` runs the system's ``cpp`` instead of pcpp;
    ``c_sizes`` gives the C size of a type whose C declaration is larger
    than its MIG declaration (layout.C_TYPE_SIZES has XNU's).
    Raises MigError (``file:line: message``) for a file that mig refuses."""
    text = preprocess(path, include, defines, undefines, system_cpp=system_cpp)
    return parse(text, path, c_sizes)


def compile_text(text: str, file: str = "<defs>", c_sizes: Mapping[str, int] | None = None) -> Subsystem:
    """The subsystem that an already preprocessed text declares."""
    return parse(text, file, c_sizes)


def load(path: str, include: Iterable[str] = (), defines: Mapping[str, str | None] | None = None,
         undefines: Iterable[str] = (), system_cpp: bool = False) -> Interface:
    """The client and server of the ``.defs`` file ``path``, made at run
    time (see pymach.mig.rpc.Interface). Raises MigError."""
    from .rpc import Interface
    return Interface(compile_defs(path, include, defines, undefines, system_cpp))
