"""The code blocks of README.md and docs/*.md, for the test that runs them
(test_doc_snippets.py) and for a type check over them::

    python tests/snippets.py OUTDIR     # each Python snippet as OUTDIR/<file>_<line>.py
    mypy --strict OUTDIR

What a block is, by its fence:

- ```` ```python ````: Python, run as written in a fresh interpreter.
- ```` ```sh ````: shell commands, run as written by bash.
- a fence with no language: a transcript of a session, or a diagram; text,
  not run.
- a block whose fence follows the line ``<!-- snippet: not run: REASON -->``
  (blank lines between allowed) is not run, for the REASON given.

A snippet may use ``pid`` without setting it (``$pid`` in shell): a
process that the reader may look at (one they could ptrace, as
task_for_pid requires). Whoever runs the snippet provides it: a Python
snippet that reads ``pid`` and never binds it gets ``pid: int = N`` put
before it (``Snippet.source``); a shell snippet gets ``pid`` in its
environment.
"""

from __future__ import annotations

import re
import symtable
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,})\s*(?P<lang>[^`\s]*)[^`]*$")
_MARK = re.compile(r"^\s*<!--\s*snippet:\s*not run:\s*(?P<why>.+?)\s*-->\s*$")


@dataclass(frozen=True)
class Snippet:
    """One fenced block: where it is, its language ("" for none), its
    text, and the reason given when it is marked not to be run."""

    path: Path
    line: int          # of the opening fence, from 1
    lang: str
    code: str
    not_run: str | None

    @property
    def id(self) -> str:
        """``README.md:147``: where the block opens."""
        return f"{self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path}:{self.line}"

    @property
    def runs(self) -> bool:
        """Whether the block is code to run: Python or shell, not marked."""
        return self.lang in ("python", "sh") and self.not_run is None

    def needs_pid(self) -> bool:
        """Whether the snippet reads ``pid`` that it does not set itself."""
        if self.lang == "sh":
            return re.search(r"\$\{?pid\b", self.code) is not None
        if self.lang != "python":
            return False
        top = symtable.symtable(self.code, self.id, "exec")
        try:
            sym = top.lookup("pid")
        except KeyError:
            return any(_reads_pid(child) for child in top.get_children())
        return not (sym.is_assigned() or sym.is_imported())

    def source(self, pid: int | None = None) -> str:
        """The snippet's text, with ``pid: int = PID`` before it when it
        needs a pid (``pid`` must then be given)."""
        if self.lang == "python" and self.needs_pid():
            if pid is None:
                raise ValueError(f"{self.id} needs a pid")
            return f"pid: int = {pid}\n{self.code}"
        return self.code


def _reads_pid(table: symtable.SymbolTable) -> bool:
    """Whether a nested scope reads a global ``pid``."""
    try:
        sym = table.lookup("pid")
        if sym.is_global() and sym.is_referenced():
            return True
    except KeyError:
        pass
    return any(_reads_pid(child) for child in table.get_children())


def extract(path: Path) -> list[Snippet]:
    """The fenced blocks of one Markdown file, in order."""
    lines = path.read_text().splitlines()
    out: list[Snippet] = []
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m.group("fence"), len(m.group("indent"))
        close = re.compile(r"^ {0,3}" + fence + r"`*\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        body = [ln[indent:] if ln[:indent].strip() == "" else ln for ln in lines[i + 1:j]]
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mark = _MARK.match(lines[k]) if k >= 0 else None
        out.append(Snippet(path, i + 1, m.group("lang").lower(), "\n".join(body) + "\n",
                           mark.group("why") if mark else None))
        i = j + 1
    return out


def documents(root: Path = ROOT) -> list[Path]:
    """README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def snippets(root: Path = ROOT) -> list[Snippet]:
    """Every fenced block of the documents."""
    return [s for doc in documents(root) for s in extract(doc)]


def write_python(out_dir: Path, root: Path = ROOT, pid: int = 1) -> list[Path]:
    """Write each Python snippet that runs to ``out_dir/<file>_<line>.py``
    (a needed ``pid`` set to ``pid``); the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for s in snippets(root):
        if s.runs and s.lang == "python":
            name = s.path.relative_to(root).with_suffix("").as_posix().replace("/", "_").replace(".", "_")
            p = out_dir / f"{name}_{s.line}.py"
            p.write_text(s.source(pid))
            written.append(p)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/snippets.py OUTDIR")
    for p in write_python(Path(sys.argv[1])):
        print(p)
