"""Every code block of README.md and docs/*.md runs as written (what a
block is: tests/snippets.py).

A Python snippet runs in a fresh interpreter on the source tree
(PYTHONPATH), against a bootstrap server of the test's own on a private
socket, with autostart off. A shell snippet runs under ``bash -e -o
pipefail``, where ``pymach`` and ``.venv/bin/pymach`` are this source
tree's command. The ``pid`` a snippet may read is a ``sleep`` that the test
starts and kills."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pymach
import snippets
from machutil import private_bootstrap

SRC = Path(pymach.__file__).resolve().parent.parent
ALL = snippets.snippets()
RUN = [s for s in ALL if s.runs]


def test_every_block_is_decided_and_the_readme_has_what_it_shows() -> None:
    # a block in another language would be skipped without anyone deciding
    assert {s.lang for s in ALL} <= {"", "python", "sh"}, sorted({(s.id, s.lang) for s in ALL})
    assert not [s.id for s in ALL if s.not_run is not None and s.lang not in ("python", "sh")]
    # the extraction finds what is there: the README's Python and shell blocks
    readme = [s for s in RUN if s.path.name == "README.md"]
    assert len([s for s in readme if s.lang == "python"]) >= 6
    assert any("pymach --version" in s.code for s in readme if s.lang == "sh")
    assert any("pymach vm read" in s.code for s in readme if s.lang == "sh")
    assert any("Task.for_pid(pid)" in s.code and s.needs_pid() for s in readme)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private bootstrap server, and ``pymach`` commands of this source
    tree (on PATH and as .venv/bin/pymach in the working directory)."""
    shim = f'#!/bin/sh\nexec "{sys.executable}" -m pymach "$@"\n'
    for d in (tmp_path / "bin", tmp_path / ".venv" / "bin"):
        d.mkdir(parents=True)
        (d / "pymach").write_text(shim)
        (d / "pymach").chmod(stat.S_IRWXU)
    path = f"{tmp_path / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    with private_bootstrap(PYTHONPATH=str(SRC)):
        yield dict(os.environ, PATH=path)


@pytest.mark.parametrize("snippet", RUN, ids=[s.id for s in RUN])
def test_snippet_runs_as_written(snippet: snippets.Snippet, env: dict[str, str], tmp_path: Path,
                                 sleeper: subprocess.Popen[bytes]) -> None:
    if snippet.lang == "python":
        f = tmp_path / "snippet.py"
        f.write_text(snippet.source(sleeper.pid))
        cmd = [sys.executable, str(f)]
    else:
        cmd = ["bash", "-e", "-o", "pipefail", "-c", snippet.source()]
        env = dict(env, pid=str(sleeper.pid))
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stderr == "", f"{snippet.id}\n{snippet.code}\n{r.stdout}\n{r.stderr}"
    assert sleeper.poll() is None  # what the snippet did to the process left it running
