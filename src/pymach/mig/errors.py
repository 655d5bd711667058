"""The error of a ``.defs`` file, reported as mig reports it: the file and
the line (as the preprocessor's line markers give them) and the message."""

from __future__ import annotations


class MigError(Exception):
    """A ``.defs`` file that mig refuses: ``str(e)`` is ``file:line: message``.

    ``file`` and ``line`` are the place in the source that the preprocessor's
    line markers name (the included file's, for an error in an included
    ``.defs``); ``line`` is 0 when the error has no place (a file that cannot
    be read, a preprocessor that cannot be run)."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message
