"""The tokens of a preprocessed ``.defs`` file, as mig's ``lexxer.l`` reads them.

Keywords are case-insensitive (``Routine``, ``ROUTINE``), except
``PointerTo``, ``PointerToIfNot``, ``ValueOf``, ``UserTypeLimit``,
``OnStackLimit`` and the ``MACH_MSG_TYPE_*`` names. An identifier that
spells a keyword is that keyword (a type cannot be called ``in`` or
``error``). Numbers are decimal. Line markers ``# N "file"`` (and
``#line N "file"``) set the place that errors name; ``#pragma`` lines are
skipped; any other ``#`` line is an error, as in mig.

Three statements read their next word in a mode of its own (mig's
``LookString``, ``LookFileName``, ``LookQString``): ``MsgOption``,
``WaitTime``, ``SendTime`` and ``ConsumeOnSendError`` a word made of
``-/._$`` letters and digits; the ``import`` family a ``"file"`` or
``<file>``; ``RCSId`` a ``"quoted string"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import MigError

# mig's own numbers for the MACH_MSG_TYPE_* names (migcom's type.h; the port
# dispositions are <mach/message.h>'s)
TYPE_UNSTRUCTURED = 0
TYPE_BIT = 0
TYPE_BOOLEAN = 0
TYPE_INTEGER_8 = 9
TYPE_INTEGER_16 = 1
TYPE_INTEGER_32 = 2
TYPE_INTEGER_64 = 3
TYPE_CHAR = 8
TYPE_BYTE = 9
TYPE_REAL_32 = 10
TYPE_REAL_64 = 11
TYPE_STRING_C = 12
TYPE_PORT_NAME = 15
TYPE_MOVE_RECEIVE = 16
TYPE_MOVE_SEND = 17
TYPE_MOVE_SEND_ONCE = 18
TYPE_COPY_SEND = 19
TYPE_MAKE_SEND = 20
TYPE_MAKE_SEND_ONCE = 21
TYPE_PORT_RECEIVE = TYPE_MOVE_RECEIVE
TYPE_PORT_SEND = TYPE_MOVE_SEND
TYPE_PORT_SEND_ONCE = TYPE_MOVE_SEND_ONCE
TYPE_POLYMORPHIC = 0xFFFFFFFF   # (mach_msg_type_name_t) -1

PORT_SIZE = 32                  # bits of a mach_port_t (natural_t)


def port_any(name: int) -> bool:
    """MACH_MSG_TYPE_PORT_ANY: a disposition that moves, copies or makes a right."""
    return TYPE_MOVE_RECEIVE <= name <= TYPE_MAKE_SEND_ONCE


@dataclass(frozen=True)
class SymType:
    """A MACH_MSG_TYPE_* name: the number sent, the number received, their
    spellings, and the default size in bits (0: none)."""
    innumber: int
    instr: str | None
    outnumber: int
    outstr: str | None
    size: int


def _sym(inname: str, innumber: int, size: int, outname: str | None = None, outnumber: int | None = None) -> SymType:
    return SymType(innumber, inname, innumber if outnumber is None else outnumber,
                   outname or inname, size)


# lexxer.l's TRETURN / TPRETURN rules
SYMBOLIC_TYPES: dict[str, SymType] = {
    "MACH_MSG_TYPE_UNSTRUCTURED": _sym("MACH_MSG_TYPE_UNSTRUCTURED", TYPE_UNSTRUCTURED, 0),
    "MACH_MSG_TYPE_BIT": _sym("MACH_MSG_TYPE_BIT", TYPE_BIT, 1),
    "MACH_MSG_TYPE_BOOLEAN": _sym("MACH_MSG_TYPE_BOOLEAN", TYPE_BOOLEAN, 32),
    "MACH_MSG_TYPE_INTEGER_8": _sym("MACH_MSG_TYPE_INTEGER_8", TYPE_INTEGER_8, 8),
    "MACH_MSG_TYPE_INTEGER_16": _sym("MACH_MSG_TYPE_INTEGER_16", TYPE_INTEGER_16, 16),
    "MACH_MSG_TYPE_INTEGER_32": _sym("MACH_MSG_TYPE_INTEGER_32", TYPE_INTEGER_32, 32),
    "MACH_MSG_TYPE_INTEGER_64": _sym("MACH_MSG_TYPE_INTEGER_64", TYPE_INTEGER_64, 64),
    "MACH_MSG_TYPE_REAL_32": _sym("MACH_MSG_TYPE_REAL_32", TYPE_REAL_32, 32),
    "MACH_MSG_TYPE_REAL_64": _sym("MACH_MSG_TYPE_REAL_64", TYPE_REAL_64, 64),
    "MACH_MSG_TYPE_CHAR": _sym("MACH_MSG_TYPE_CHAR", TYPE_CHAR, 8),
    "MACH_MSG_TYPE_BYTE": _sym("MACH_MSG_TYPE_BYTE", TYPE_BYTE, 8),
    "MACH_MSG_TYPE_MOVE_RECEIVE": _sym("MACH_MSG_TYPE_MOVE_RECEIVE", TYPE_MOVE_RECEIVE, PORT_SIZE,
                                       "MACH_MSG_TYPE_PORT_RECEIVE", TYPE_PORT_RECEIVE),
    "MACH_MSG_TYPE_COPY_SEND": _sym("MACH_MSG_TYPE_COPY_SEND", TYPE_COPY_SEND, PORT_SIZE,
                                    "MACH_MSG_TYPE_PORT_SEND", TYPE_PORT_SEND),
    "MACH_MSG_TYPE_MAKE_SEND": _sym("MACH_MSG_TYPE_MAKE_SEND", TYPE_MAKE_SEND, PORT_SIZE,
                                    "MACH_MSG_TYPE_PORT_SEND", TYPE_PORT_SEND),
    "MACH_MSG_TYPE_MOVE_SEND": _sym("MACH_MSG_TYPE_MOVE_SEND", TYPE_MOVE_SEND, PORT_SIZE,
                                    "MACH_MSG_TYPE_PORT_SEND", TYPE_PORT_SEND),
    "MACH_MSG_TYPE_MAKE_SEND_ONCE": _sym("MACH_MSG_TYPE_MAKE_SEND_ONCE", TYPE_MAKE_SEND_ONCE, PORT_SIZE,
                                         "MACH_MSG_TYPE_PORT_SEND_ONCE", TYPE_PORT_SEND_ONCE),
    "MACH_MSG_TYPE_MOVE_SEND_ONCE": _sym("MACH_MSG_TYPE_MOVE_SEND_ONCE", TYPE_MOVE_SEND_ONCE, PORT_SIZE,
                                         "MACH_MSG_TYPE_PORT_SEND_ONCE", TYPE_PORT_SEND_ONCE),
    "MACH_MSG_TYPE_PORT_NAME": _sym("MACH_MSG_TYPE_PORT_NAME", TYPE_PORT_NAME, PORT_SIZE),
    "MACH_MSG_TYPE_PORT_RECEIVE": _sym("MACH_MSG_TYPE_POLYMORPHIC", TYPE_POLYMORPHIC, PORT_SIZE,
                                       "MACH_MSG_TYPE_PORT_RECEIVE", TYPE_PORT_RECEIVE),
    "MACH_MSG_TYPE_PORT_SEND": _sym("MACH_MSG_TYPE_POLYMORPHIC", TYPE_POLYMORPHIC, PORT_SIZE,
                                    "MACH_MSG_TYPE_PORT_SEND", TYPE_PORT_SEND),
    "MACH_MSG_TYPE_PORT_SEND_ONCE": _sym("MACH_MSG_TYPE_POLYMORPHIC", TYPE_POLYMORPHIC, PORT_SIZE,
                                         "MACH_MSG_TYPE_PORT_SEND_ONCE", TYPE_PORT_SEND_ONCE),
    "MACH_MSG_TYPE_POLYMORPHIC": _sym("MACH_MSG_TYPE_POLYMORPHIC", TYPE_POLYMORPHIC, PORT_SIZE),
}
POLYMORPHIC = SYMBOLIC_TYPES["MACH_MSG_TYPE_POLYMORPHIC"]

# IPC flags (migcom's type.h)
FL_NONE = 0x00
FL_PHYSICAL_COPY = 0x01
FL_OVERWRITE = 0x02
FL_DEALLOC = 0x04
FL_NOT_DEALLOC = 0x08
FL_MAYBE_DEALLOC = 0x10
FL_SAME_COUNT = 0x20
FL_COUNT_IN_OUT = 0x40
FL_RET_CODE = 0x80
FL_AUTO = 0x100
FL_CONST = 0x200

FLAGS = {
    "samecount": FL_SAME_COUNT, "retcode": FL_RET_CODE, "physicalcopy": FL_PHYSICAL_COPY,
    "overwrite": FL_OVERWRITE, "dealloc": FL_DEALLOC, "notdealloc": FL_NOT_DEALLOC,
    "countinout": FL_COUNT_IN_OUT, "auto": FL_AUTO, "const": FL_CONST,
}

# case-insensitive keywords: the token kind is the lower-case spelling
KEYWORDS = frozenset({
    "routine", "simpleroutine", "subsystem", "msgoption", "usespecialreplyport", "consumeonsenderror",
    "msgseqno", "waittime", "sendtime", "nowaittime", "nosendtime", "in", "out", "userimpl", "serverimpl",
    "sectoken", "serversectoken", "usersectoken", "audittoken", "serveraudittoken", "useraudittoken",
    "servercontexttoken", "inout", "requestport", "replyport", "ureplyport", "sreplyport", "array", "of",
    "error", "serverprefix", "userprefix", "serverdemux", "rcsid", "import", "uimport", "simport", "dimport",
    "iimport", "type", "kernelserver", "kerneluser", "skip", "struct", "intran", "outtran", "destructor",
    "ctype", "cusertype", "cservertype", "c_string",
})
# case-sensitive keywords
EXACT_KEYWORDS = frozenset({"PointerTo", "PointerToIfNot", "ValueOf", "UserTypeLimit", "OnStackLimit"})

PUNCTUATION = frozenset(":;,+-*/()=^~<>[]|")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_NUMBER = re.compile(r"[0-9]+")
_STRING = re.compile(r"[-/._$A-Za-z0-9]+")
_QSTRING = re.compile(r'"[^"\n]*"')
_FILENAME = re.compile(r'"[^"\n]*"|<[^>\n]*>')
_MARKER = re.compile(r'#[ \t]*(?:line[ \t]+)?([0-9]+)(?:[ \t]*"([^"\n]*)")?[^\n]*')
_PRAGMA = re.compile(r"#pragma\b[^\n]*")


@dataclass(frozen=True)
class Token:
    """One token: ``kind`` is a keyword's lower-case spelling (or the exact
    one for the case-sensitive keywords), a punctuation character, or one
    of ``ident``, ``number``, ``flag``, ``symtype``, ``string``,
    ``filename``, ``qstring``, ``eof``; ``value`` is the text, the number,
    the flag's bit or the SymType."""
    kind: str
    value: object
    file: str
    line: int
    word: str = ""              # the source's spelling, where value is not it

    @property
    def text(self) -> str:
        """The token as the source spells it (for messages)."""
        if self.kind == "eof":
            return "end of file"
        return self.word or str(self.value)


class Lexer:
    """The tokens of ``text``, one at a time (``next``), in the mode the
    parser asks for."""

    def __init__(self, text: str, file: str) -> None:
        self.text = text
        self.pos = 0
        self.file = file
        self.line = 1
        self.at_line_start = True

    def error(self, message: str) -> MigError:
        """A MigError at the current place."""
        return MigError(self.file, self.line, message)

    def _skip(self) -> None:
        """Skip white space, newlines and directive lines."""
        text = self.text
        n = len(text)
        while self.pos < n:
            c = text[self.pos]
            if c == "\n":
                self.line += 1
                self.pos += 1
                self.at_line_start = True
            elif c in " \t\r\f\v":
                self.pos += 1
            elif c == "#" and self.at_line_start:
                m = _MARKER.match(text, self.pos)
                if m:
                    # the line after the marker is line N of the file
                    self.line = int(m.group(1)) - 1
                    if m.group(2) is not None:
                        self.file = m.group(2)
                    self.pos = m.end()
                    continue
                m = _PRAGMA.match(text, self.pos)
                if m:
                    self.pos = m.end()
                    continue
                raise self.error("illegal # directive")
            else:
                return

    def next(self, mode: str = "normal") -> Token:
        """The next token. ``mode`` is ``normal``, or ``string``,
        ``filename`` or ``qstring`` for the word that follows the
        statements that read one (MigError when it is not there)."""
        self._skip()
        text, pos = self.text, self.pos
        if pos >= len(text):
            return Token("eof", "", self.file, self.line)
        self.at_line_start = False
        if mode != "normal":
            pattern = {"string": _STRING, "filename": _FILENAME, "qstring": _QSTRING}[mode]
            m = pattern.match(text, pos)
            if not m:
                what = {"string": "a word", "filename": 'a "file" or <file>', "qstring": 'a "quoted string"'}[mode]
                raise self.error(f"syntax error: expected {what}, found {text[pos]!r}")
            self.pos = m.end()
            return Token(mode, m.group(0), self.file, self.line)
        c = text[pos]
        m = _IDENT.match(text, pos)
        if m:
            word = m.group(0)
            self.pos = m.end()
            low = word.lower()
            if word in EXACT_KEYWORDS:
                return Token(word, word, self.file, self.line)
            if word in SYMBOLIC_TYPES:
                return Token("symtype", SYMBOLIC_TYPES[word], self.file, self.line, word)
            if low == "polymorphic":
                return Token("symtype", POLYMORPHIC, self.file, self.line, word)
            if low in FLAGS:
                return Token("flag", FLAGS[low], self.file, self.line, word)
            if low in KEYWORDS:
                return Token(low, word, self.file, self.line)
            return Token("ident", word, self.file, self.line)
        m = _NUMBER.match(text, pos)
        if m:
            self.pos = m.end()
            return Token("number", int(m.group(0)), self.file, self.line)
        if c in PUNCTUATION:
            self.pos = pos + 1
            return Token(c, c, self.file, self.line)
        raise self.error(f"syntax error: unexpected character {c!r}")
