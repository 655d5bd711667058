"""The grammar of ``.defs`` files, as mig's ``parser.y`` has it.

A recursive-descent parser over ``lexer.Lexer``'s tokens. Types are
built and looked up as they are declared (``type`` statements apply to
what follows them), and each routine is checked and laid out when its
declaration ends, as mig does; the first error raises MigError with the
file and line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from . import types as MT
from .errors import MigError
from .layout import (AK_AUDIT_TOKEN, AK_IN, AK_INOUT, AK_MSG_OPTION, AK_MSG_SEQNO, AK_OUT, AK_REPLY_PORT,
                     AK_REQUEST_PORT, AK_SEC_TOKEN, AK_SEND_TIME, AK_SERVER_AUDIT_TOKEN, AK_SERVER_CONTEXT_TOKEN,
                     AK_SERVER_IMPL, AK_SERVER_SEC_TOKEN, AK_SREPLY_PORT, AK_UREPLY_PORT, AK_USER_AUDIT_TOKEN,
                     AK_USER_IMPL, AK_USER_SEC_TOKEN, AK_WAIT_TIME, AKE_NONE, Argument, Options, Routine,
                     check_routine)
from .lexer import FL_DEALLOC, FL_MAYBE_DEALLOC, Lexer, SymType, Token

DIRECTIONS = {
    "in": AK_IN, "out": AK_OUT, "inout": AK_INOUT, "requestport": AK_REQUEST_PORT, "replyport": AK_REPLY_PORT,
    "sreplyport": AK_SREPLY_PORT, "ureplyport": AK_UREPLY_PORT, "waittime": AK_WAIT_TIME,
    "sendtime": AK_SEND_TIME, "msgoption": AK_MSG_OPTION, "sectoken": AK_SEC_TOKEN,
    "serversectoken": AK_SERVER_SEC_TOKEN, "usersectoken": AK_USER_SEC_TOKEN, "audittoken": AK_AUDIT_TOKEN,
    "serveraudittoken": AK_SERVER_AUDIT_TOKEN, "useraudittoken": AK_USER_AUDIT_TOKEN,
    "servercontexttoken": AK_SERVER_CONTEXT_TOKEN, "msgseqno": AK_MSG_SEQNO,
}
TRAILERS = {"serverimpl": AK_SERVER_IMPL, "userimpl": AK_USER_IMPL}
IMPORTS = {"import": "import", "uimport": "uimport", "simport": "simport", "iimport": "iimport",
           "dimport": "dimport"}
TRANSLATIONS = ("intran", "outtran", "destructor", "ctype", "cusertype", "cservertype")


@dataclass
class Subsystem:
    """A compiled ``.defs`` file: the subsystem's name and base, its
    statements' settings, its types and its routines (with their
    layouts) in id order."""
    name: str = ""
    base: int = 0
    kernel_user: bool = False
    kernel_server: bool = False
    user_prefix: str = ""
    server_prefix: str = ""
    server_demux: str | None = None
    error_proc: str | None = None
    rcs_id: str | None = None
    wait_time: str | None = None
    send_time: str | None = None
    msg_option: str | None = None
    use_special_reply_port: bool = False
    consume_on_send_error: str = "None"
    user_type_limit: int | None = None
    on_stack_limit: int | None = None
    imports: list[tuple[str, str]] = field(default_factory=list)
    types: dict[str, MT.IpcType] = field(default_factory=dict)
    routines: list[Routine] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    count: int = 0                  # routines and skips: the next routine's number

    def routine(self, name: str) -> Routine:
        """The routine called ``name`` (KeyError if none)."""
        for rt in self.routines:
            if rt.name == name:
                return rt
        raise KeyError(name)

    def to_json(self) -> dict[str, object]:
        """What ``pymach mig --layout`` prints."""
        return {"subsystem": self.name, "base": self.base,
                "routines": [rt.to_json() for rt in sorted(self.routines, key=lambda r: r.number)]}


class Parser:
    """parser.y's grammar over one preprocessed text."""

    def __init__(self, text: str, file: str, c_sizes: Mapping[str, int] | None = None) -> None:
        self.lexer = Lexer(text, file)
        self.sub = Subsystem()
        self.opts = Options()
        self.opts.c_sizes.update(c_sizes or {})
        self.tok = self.lexer.next()

    # -- tokens

    def error(self, message: str, tok: Token | None = None) -> MigError:
        t = tok or self.tok
        return MigError(t.file, t.line, message)

    def syntax_error(self, expected: str) -> MigError:
        return self.error(f"syntax error: expected {expected}, found {self.tok.text!r}")

    def advance(self, mode: str = "normal") -> Token:
        """Consume the current token; the next is read in ``mode``."""
        t = self.tok
        self.tok = self.lexer.next(mode)
        return t

    def expect(self, kind: str, what: str | None = None) -> Token:
        if self.tok.kind != kind:
            raise self.syntax_error(what or repr(kind))
        return self.advance()

    def ident(self) -> str:
        return str(self.expect("ident", "an identifier").value)

    def number(self) -> int:
        v = self.expect("number", "a number").value
        assert isinstance(v, int)
        return v

    def warn(self, message: str, tok: Token | None = None) -> None:
        t = tok or self.tok
        self.sub.warnings.append(f"{t.file}:{t.line}: warning: {message}")

    # -- statements

    def parse(self) -> Subsystem:
        while self.tok.kind != "eof":
            self.statement()
        # ids are made with the subsystem's base as the file leaves it
        for rt in self.sub.routines:
            rt.base = self.sub.base
        return self.sub

    def statement(self) -> None:
        k = self.tok.kind
        sub, opts = self.sub, self.opts
        if k == ";":
            self.advance()
            return
        if k == "subsystem":
            self.subsystem()
        elif k in ("msgoption", "waittime", "sendtime", "consumeonsenderror"):
            self.advance("string")
            word = str(self.expect("string", "a word").value)
            if k == "msgoption":
                sub.msg_option = opts.msg_option = None if word == "MACH_MSG_OPTION_NONE" else word
            elif k == "waittime":
                sub.wait_time = opts.wait_time = word
            elif k == "sendtime":
                sub.send_time = opts.send_time = word
            elif word.lower() in ("none", "timeout", "any"):
                sub.consume_on_send_error = opts.consume_on_send_error = word.capitalize()
            else:
                raise self.error("syntax error")
        elif k == "nowaittime":
            self.advance()
            sub.wait_time = opts.wait_time = None
        elif k == "nosendtime":
            self.advance()
            sub.send_time = opts.send_time = None
        elif k == "usespecialreplyport":
            self.advance()
            sub.use_special_reply_port = opts.use_special_reply_port = self.number() != 0
        elif k == "UserTypeLimit":
            self.advance()
            sub.user_type_limit = self.number()
        elif k == "OnStackLimit":
            self.advance()
            sub.on_stack_limit = self.number()
        elif k == "error":
            self.advance()
            sub.error_proc = self.ident()
        elif k == "serverprefix":
            self.advance()
            sub.server_prefix = opts.server_prefix = self.ident()
        elif k == "userprefix":
            self.advance()
            sub.user_prefix = opts.user_prefix = self.ident()
        elif k == "serverdemux":
            self.advance()
            sub.server_demux = self.ident()
        elif k == "type":
            self.advance()
            start = self.tok
            name, it = self.named_type_spec()
            if name in sub.types:
                self.warn(f"overriding previous definition of {name}", start)
            sub.types[name] = it
        elif k in ("routine", "simpleroutine"):
            self.routine()
        elif k == "skip":
            self.advance()
            sub.count += 1
        elif k in IMPORTS:
            self.advance("filename")
            sub.imports.append((IMPORTS[k], str(self.expect("filename", 'a "file" or <file>').value)))
        elif k == "rcsid":
            self.advance("qstring")
            if sub.rcs_id is not None:
                self.warn("previous RCS decl will be ignored")
            sub.rcs_id = str(self.expect("qstring", 'a "quoted string"').value)
        else:
            raise self.syntax_error("a statement")
        self.expect(";", "';'")

    def subsystem(self) -> None:
        sub, opts = self.sub, self.opts
        self.advance()
        if sub.name:
            self.warn(f"previous Subsystem decl (of {sub.name}) will be ignored")
            sub.kernel_user = sub.kernel_server = opts.kernel_user = opts.kernel_server = False
        while self.tok.kind in ("kerneluser", "kernelserver"):
            if self.tok.kind == "kerneluser":
                if opts.kernel_user:
                    self.warn("duplicate KernelUser keyword")
                sub.kernel_user = opts.kernel_user = True
            else:
                if opts.kernel_server:
                    self.warn("duplicate KernelServer keyword")
                sub.kernel_server = opts.kernel_server = True
            self.advance()
        sub.name = self.ident()
        sub.base = self.number()

    # -- types

    def named_type_spec(self) -> tuple[str, MT.IpcType]:
        """NamedTypeSpec: ``name = TransTypeSpec``."""
        start = self.tok
        name = self.ident()
        self.expect("=", "'='")
        it = self.trans_type_spec()
        MT.check_decl(name, it, start.file, start.line)
        return name, it

    def _conflict(self, what: str, old: str | None, new: str) -> None:
        if old is not None and old != new:
            self.warn(f"conflicting {what} ({old}, {new})")

    def trans_type_spec(self) -> MT.IpcType:
        """TransTypeSpec: a TypeSpec and its translations and C types."""
        it = MT.reset_type(self.type_spec())
        while self.tok.kind in TRANSLATIONS:
            k = self.advance().kind
            self.expect(":", "':'")
            if k in ("intran", "outtran"):
                a = self.ident()
                fn = self.ident()
                self.expect("(", "'('")
                b = self.ident()
                self.expect(")", "')'")
                if k == "intran":       # intran: TransType InTrans(ServerType)
                    self._conflict("translation types", it.trans_type, a)
                    self._conflict("in-translation functions", it.in_trans, fn)
                    self._conflict("server types", it.server_type, b)
                    it.trans_type, it.in_trans, it.server_type = a, fn, b
                else:                   # outtran: ServerType OutTrans(TransType)
                    self._conflict("server types", it.server_type, a)
                    self._conflict("out-translation functions", it.out_trans, fn)
                    self._conflict("translation types", it.trans_type, b)
                    it.server_type, it.out_trans, it.trans_type = a, fn, b
            elif k == "destructor":     # destructor: Destructor(TransType)
                fn = self.ident()
                self.expect("(", "'('")
                b = self.ident()
                self.expect(")", "')'")
                self._conflict("destructor functions", it.destructor, fn)
                self._conflict("translation types", it.trans_type, b)
                it.destructor, it.trans_type = fn, b
            else:
                name = self.ident()
                if k in ("ctype", "cusertype"):
                    self._conflict("user types", it.user_type, name)
                    it.user_type = name
                if k in ("ctype", "cservertype"):
                    self._conflict("server types", it.server_type, name)
                    it.server_type = name
        return it

    def type_spec(self) -> MT.IpcType:
        """TypeSpec."""
        t = self.tok
        f, ln = t.file, t.line
        k = t.kind
        if k == "ident":
            self.advance()
            old = self.sub.types.get(str(t.value))
            if old is None:
                raise self.error(f"type '{t.value}' not defined", t)
            return MT.copy_type(old)
        if k in ("number", "symtype"):
            return self.basic_type_spec()
        if k == "(":
            self.advance()
            self.ipc_type()
            raise self.error("Long form type declarations aren't allowed any longer", t)
        if k == "array":
            self.advance()
            self.expect("[", "'['")
            if self.tok.kind == "]":
                self.advance()
                self.expect("of", "'of'")
                return MT.var_array_decl(0, self.type_spec(), f, ln)
            if self.tok.kind == "*":
                self.advance()
                number = 0
                if self.tok.kind == ":":
                    self.advance()
                    number = self.size_exp()
                self.expect("]", "']'")
                self.expect("of", "'of'")
                return MT.var_array_decl(number, self.type_spec(), f, ln)
            number = self.size_exp()
            self.expect("]", "']'")
            self.expect("of", "'of'")
            return MT.array_decl(number, self.type_spec(), f, ln)
        if k == "^":
            self.advance()
            return MT.ptr_decl(self.type_spec(), f, ln)
        if k == "struct":
            self.advance()
            self.expect("[", "'['")
            number = self.size_exp()
            self.expect("]", "']'")
            self.expect("of", "'of'")
            return MT.struct_decl(number, self.type_spec(), f, ln)
        if k == "c_string":
            self.advance()
            self.expect("[", "'['")
            varying = False
            if self.tok.kind == "*":
                self.advance()
                self.expect(":", "':'")
                varying = True
            number = self.size_exp()
            self.expect("]", "']'")
            return MT.cstring_decl(number, varying, f, ln)
        if k in ("PointerTo", "PointerToIfNot", "ValueOf"):
            return self.native_type_spec()
        raise self.syntax_error("a type")

    def native_type_spec(self) -> MT.IpcType:
        """NativeTypeSpec: PointerTo(T), PointerToIfNot(T, V), ValueOf(T)."""
        k = self.advance().kind
        self.expect("(", "'('")
        phrase = self.type_phrase()
        bad: str | None = None
        if k == "PointerToIfNot":
            self.expect(",", "','")
            bad = self.type_phrase()
        self.expect(")", "')'")
        return MT.native_type(phrase, k != "ValueOf", bad)

    def type_phrase(self) -> str:
        words = [self.ident()]
        while self.tok.kind == "ident":
            words.append(self.ident())
        return " ".join(words)

    def prim_ipc_type(self) -> SymType:
        t = self.tok
        if t.kind == "number":
            self.advance()
            assert isinstance(t.value, int)
            return SymType(t.value, None, t.value, None, 0)
        if t.kind == "symtype":
            self.advance()
            assert isinstance(t.value, SymType)
            return t.value
        raise self.syntax_error("an IPC type")

    def ipc_type(self) -> SymType:
        """IPCType: ``A`` or ``A|B`` (sent as A, received as B)."""
        t = self.tok
        a = self.prim_ipc_type()
        if self.tok.kind != "|":
            return a
        self.advance()
        b = self.prim_ipc_type()
        size = a.size
        if a.size != b.size:
            if a.size == 0:
                size = b.size
            elif b.size != 0:
                raise self.error(f"sizes in IPCTypes ({a.size}, {b.size}) aren't equal", t)
        return SymType(a.innumber, a.instr, b.outnumber, b.outstr, size)

    def basic_type_spec(self) -> MT.IpcType:
        t = self.tok
        s = self.ipc_type()
        return MT.short_decl(s.innumber, s.instr, s.outnumber, s.outstr, s.size, t.file, t.line)

    def int_exp(self) -> int:
        """IntExp: + - * / over numbers and parentheses, left to right, * and / first."""
        v = self._term()
        while self.tok.kind in ("+", "-"):
            op = self.advance().kind
            r = self._term()
            v = v + r if op == "+" else v - r
        return v

    def size_exp(self) -> int:
        """An IntExp that sizes an array, a struct or a c_string (mig's
        unsigned arithmetic would wrap a negative one around)."""
        t = self.tok
        v = self.int_exp()
        if v < 0:
            raise self.error(f"negative size ({v})", t)
        return v

    def _term(self) -> int:
        v = self._factor()
        while self.tok.kind in ("*", "/"):
            t = self.advance()
            r = self._factor()
            if t.kind == "/" and r == 0:
                raise self.error("division by zero", t)
            v = v * r if t.kind == "*" else int(v / r)
        return v

    def _factor(self) -> int:
        if self.tok.kind == "(":
            self.advance()
            v = self.int_exp()
            self.expect(")", "')'")
            return v
        return self.number()

    # -- routines

    def routine(self) -> None:
        simple = self.advance().kind == "simpleroutine"
        name = self.ident()
        self.expect("(", "'('")
        args: list[Argument] = []
        if self.tok.kind != ")":
            while True:
                args.append(self.argument())
                if self.tok.kind != ";":
                    break
                self.advance()
        end = self.expect(")", "')' or ';'")
        rt = Routine(name, simple, args, self.sub.count, file=end.file, line=end.line, base=self.sub.base)
        self.sub.count += 1
        check_routine(rt, self.opts)
        self.sub.warnings += rt.warnings
        self.sub.routines.append(rt)

    def argument(self) -> Argument:
        t = self.tok
        if t.kind in TRAILERS:
            self.advance()
            name = self.ident()
            return Argument(name, TRAILERS[t.kind], self.argument_type())
        kind = AKE_NONE
        if t.kind in DIRECTIONS:
            kind = DIRECTIONS[t.kind]
            self.advance()
        name = self.ident()
        it = self.argument_type()
        flags = self.ipc_flags()
        if it.native:
            if kind not in (AK_IN, AK_OUT, AK_INOUT):
                raise self.error("Illegal direction specified", t)
            if not it.native_pointer and kind != AK_IN:
                raise self.error("ValueOf only valid for in", t)
            if it.bad_value is not None and kind != AK_IN:
                raise self.error("PointerToIfNot only valid for in", t)
        return Argument(name, kind, it, flags)

    def argument_type(self) -> MT.IpcType:
        """ArgumentType: ``: name``, ``: name = spec`` or ``: native spec``."""
        self.expect(":", "':'")
        t = self.tok
        if t.kind in ("PointerTo", "PointerToIfNot", "ValueOf"):
            return self.native_type_spec()
        if t.kind != "ident":
            raise self.syntax_error("a type name")
        # a look at the token after the name: '=' makes a named type spec
        saved = (self.lexer.pos, self.lexer.line, self.lexer.file, self.lexer.at_line_start)
        self.advance()
        if self.tok.kind == "=":
            self.lexer.pos, self.lexer.line, self.lexer.file, self.lexer.at_line_start = saved
            self.tok = t
            return self.named_type_spec()[1]
        it = self.sub.types.get(str(t.value))
        if it is None:
            raise self.error(f"type '{t.value}' not defined", t)
        return it

    def ipc_flags(self) -> int:
        flags = 0
        while self.tok.kind == ",":
            self.advance()
            t = self.expect("flag", "an IPC flag")
            assert isinstance(t.value, int)
            if self.tok.kind == "[":
                self.advance()
                self.expect("]", "']'")
                if t.value != FL_DEALLOC:
                    self.warn("only Dealloc is variable", t)
                else:
                    flags |= FL_MAYBE_DEALLOC
            elif flags & t.value:
                self.warn("redundant IPC flag ignored", t)
            else:
                flags |= t.value
        return flags


def parse(text: str, file: str, c_sizes: Mapping[str, int] | None = None) -> Subsystem:
    """The subsystem that the preprocessed ``text`` (from ``file``) declares;
    ``c_sizes`` adds to layout.C_TYPE_SIZES (C types whose size is not the
    one their MIG type declares)."""
    return Parser(text, file, c_sizes).parse()
