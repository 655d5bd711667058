"""A routine's arguments and its messages' layouts, by mig's rules
(migcom's ``routine.c``, and ``utils.c``'s ``WriteStructDecl``).

``check_routine`` does what ``rtCheckRoutine`` does to a parsed routine:
it adds the hidden arguments (the NDR record and the return code, the
counts of variable arrays, the dispositions of polymorphic ports, the
dealloc flags of ``Dealloc[]``, the CountInOut counts, the default reply
port), gives every argument its kind bits, decides whether each message
is simple or complex, drops the NDR record from a message with no plain
data left and the return code from a complex reply. ``Routine.request``
and ``Routine.reply`` are then the ``__Request__<routine>_t`` and
``__Reply__<routine>_t`` structs that mig declares: a header, for a
complex message the body's descriptor count and the descriptors, then
the plain data, packed to 4 bytes (``#pragma pack(4)``, which
``<mach/mig.h>``'s ``__MigPackStructs`` turns on), with variable in-line
arrays at their maximum size, as C structs of the LP64 ABI lay them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import MigError
from .lexer import FL_COUNT_IN_OUT, FL_DEALLOC, FL_MAYBE_DEALLOC, FL_NOT_DEALLOC, FL_OVERWRITE
from .lexer import FL_PHYSICAL_COPY, FL_RET_CODE, FL_SAME_COUNT, TYPE_POLYMORPHIC
from .types import (IpcType, check_int_type, check_reply_port_type, check_request_port_type, make_count_type,
                    make_dealloc_type, make_poly_type, make_sub_count_type, ndr_code_type, real_reply_port_type,
                    ret_code_type, zero_reply_port_type)

# argument kinds (migcom's routine.h): an identity in the low bits ...
AKE_NONE = 0
AKE_NORMAL = 1
AKE_REQUEST_PORT = 2
AKE_WAIT_TIME = 3
AKE_REPLY_PORT = 4
AKE_MSG_OPTION = 5
AKE_MSG_SEQNO = 6
AKE_RET_CODE = 7
AKE_NDR_CODE = 8
AKE_COUNT = 9
AKE_POLY = 10
AKE_DEALLOC = 11
AKE_COUNT_IN_OUT = 12
AKE_SAME_COUNT = 13
AKE_SUB_COUNT = 14
AKE_IMPLICIT = 15
AKE_SEC_TOKEN = 16
AKE_AUDIT_TOKEN = 17
AKE_CONTEXT_TOKEN = 18
AKE_SEND_TIME = 19
AKE_BITS = 0x3F
# ... and features
AKB_REQUEST = 0x40              # a field in the request
AKB_REPLY = 0x80                # a field in the reply
AKB_USER_ARG = 0x100
AKB_SERVER_ARG = 0x200
AKB_SEND = 0x400
AKB_SEND_BODY = 0x800
AKB_SEND_SND = 0x1000
AKB_SEND_RCV = 0x2000
AKB_RETURN = 0x4000
AKB_RETURN_BODY = 0x8000
AKB_RETURN_SND = 0x10000
AKB_RETURN_RCV = 0x20000
AKB_RETURN_NDR = 0x40000
AKB_REPLY_INIT = 0x80000
AKB_REPLY_COPY = 0x200000
AKB_VAR_NEEDED = 0x400000
AKB_DESTROY = 0x800000
AKB_VARIABLE = 0x1000000
AKB_SEND_NDR = 0x4000000
AKB_SEND_KPD = 0x8000000
AKB_RETURN_KPD = 0x10000000
AKB_USER_IMPLICIT = 0x20000000
AKB_SERVER_IMPLICIT = 0x40000000
AKB_OVERWRITE = 0x80000000

AKB_SEND_BITS = AKB_SEND | AKB_SEND_BODY | AKB_SEND_SND | AKB_SEND_RCV
AKB_RETURN_BITS = AKB_RETURN | AKB_RETURN_BODY | AKB_RETURN_SND | AKB_RETURN_RCV

AK_IN = AKE_NORMAL | AKB_USER_ARG | AKB_SERVER_ARG | AKB_REQUEST | AKB_SEND_BITS
AK_OUT = AKE_NORMAL | AKB_USER_ARG | AKB_SERVER_ARG | AKB_REPLY | AKB_RETURN_BITS
AK_INOUT = (AKE_NORMAL | AKB_USER_ARG | AKB_SERVER_ARG | AKB_REQUEST | AKB_REPLY | AKB_SEND_BITS
            | AKB_RETURN_BITS | AKB_REPLY_COPY)
AK_SERVER_IMPL = AKE_IMPLICIT | AKB_SERVER_ARG | AKB_SERVER_IMPLICIT | AKB_SEND | AKB_SEND_RCV
AK_USER_IMPL = AKE_IMPLICIT | AKB_USER_ARG | AKB_USER_IMPLICIT | AKB_RETURN | AKB_RETURN_RCV
_SERVER_TRAILER = AKB_SERVER_ARG | AKB_SERVER_IMPLICIT | AKB_SEND | AKB_SEND_RCV
_USER_TRAILER = AKB_USER_ARG | AKB_USER_IMPLICIT | AKB_RETURN | AKB_RETURN_RCV
AK_SERVER_SEC_TOKEN = AKE_SEC_TOKEN | _SERVER_TRAILER
AK_USER_SEC_TOKEN = AKE_SEC_TOKEN | _USER_TRAILER
AK_SEC_TOKEN = AKE_SEC_TOKEN | _SERVER_TRAILER | _USER_TRAILER
AK_SERVER_AUDIT_TOKEN = AKE_AUDIT_TOKEN | _SERVER_TRAILER
AK_USER_AUDIT_TOKEN = AKE_AUDIT_TOKEN | _USER_TRAILER
AK_AUDIT_TOKEN = AKE_AUDIT_TOKEN | _SERVER_TRAILER | _USER_TRAILER
AK_SERVER_CONTEXT_TOKEN = AKE_CONTEXT_TOKEN | _SERVER_TRAILER
AK_MSG_SEQNO = AKE_MSG_SEQNO | _SERVER_TRAILER
AK_REQUEST_PORT = AKE_REQUEST_PORT | AKB_USER_ARG | AKB_SERVER_ARG | AKB_SEND | AKB_SEND_SND | AKB_SEND_RCV
AK_WAIT_TIME = AKE_WAIT_TIME | AKB_USER_ARG
AK_SEND_TIME = AKE_SEND_TIME | AKB_USER_ARG
AK_MSG_OPTION = AKE_MSG_OPTION | AKB_USER_ARG
AK_REPLY_PORT = AKE_REPLY_PORT | AKB_USER_ARG | AKB_SERVER_ARG | AKB_SEND | AKB_SEND_SND | AKB_SEND_RCV
AK_UREPLY_PORT = AKE_REPLY_PORT | AKB_USER_ARG | AKB_SEND | AKB_SEND_SND | AKB_SEND_RCV
AK_SREPLY_PORT = AKE_REPLY_PORT | AKB_SERVER_ARG | AKB_SEND | AKB_SEND_SND | AKB_SEND_RCV
AK_RET_CODE = AKE_RET_CODE | AKB_REPLY | AKB_RETURN_BODY
AK_COUNT_IN_OUT = AKE_COUNT_IN_OUT | AKB_REQUEST | AKB_SEND_BITS

# C sizes of the LP64 ABI
HEADER_SIZE = 24                # mach_msg_header_t
BODY_SIZE = 4                   # mach_msg_body_t
NDR_SIZE = 8                    # NDR_record_t
PORT_DESCRIPTOR = "mach_msg_port_descriptor_t"
OOL_DESCRIPTOR = "mach_msg_ool_descriptor_t"
OOL_PORTS_DESCRIPTOR = "mach_msg_ool_ports_descriptor_t"
DESCRIPTOR_C_SIZE = {PORT_DESCRIPTOR: 12, OOL_DESCRIPTOR: 16, OOL_PORTS_DESCRIPTOR: 16}
REPLY_ID_DELTA = 100

# A struct member is declared with its C type (the type's server type),
# so its size is the C compiler's. For every type of XNU's .defs it is the
# size that mig declares, but for these, whose C structs (LP64) are larger
# than their .defs declarations say:
C_TYPE_SIZES: dict[str, int] = {
    # <mach/dyld_kernel.h>: struct dyld_kernel_process_info (an image info
    # of 40, a uint64_t, two uint32_t, a uint8_t and two boolean_t, aligned
    # to 8), which mach_types.defs declares as struct[64] of bytes
    "dyld_kernel_process_info_t": 72,
    # <mach/doubleagent_types.h>: struct list_xattrs_result, seven uint64_t
    # and 34860 bytes of data, padded to a multiple of 8; doubleagent_mig.defs
    # declares struct[34916] of uint8_t
    "listxattrs_result_t": 34920,
}


def ak_check(kind: int, bits: int) -> bool:
    """Any of ``bits``."""
    return bool(kind & bits)


def ak_check_all(kind: int, bits: int) -> bool:
    """All of ``bits``."""
    return kind & bits == bits


def ak_ident(kind: int) -> int:
    """The argument's identity (AKE_*)."""
    return kind & AKE_BITS


@dataclass(eq=False)
class Argument:
    """argument_t: one argument, written in the .defs or added by mig."""
    name: str
    kind: int
    type: IpcType | None
    flags: int = 0
    var_name: str | None = None
    msg_field: str | None = None
    pad_name: str | None = None
    deallocate: str = "no"          # "no", "yes", "maybe"
    count_in_out: bool = False
    kpd_type: str | None = None     # the descriptor's C type
    count: Argument | None = None
    sub_count: Argument | None = None
    c_in_out: Argument | None = None
    poly: Argument | None = None
    dealloc: Argument | None = None
    same_count: Argument | None = None
    parent: Argument | None = None
    multiplier: int = 1

    @property
    def itype(self) -> IpcType:
        """The type (every checked argument has one)."""
        assert self.type is not None
        return self.type


@dataclass(frozen=True)
class Field:
    """One member of a message struct: mig's name for it, its offset and
    size in bytes, what it is (``kind``: ``header``, ``body`` (the
    descriptor count), ``descriptor`` (one or an array), ``ndr``,
    ``retcode``, ``count``, ``offset`` (a variable c_string's), ``data``,
    ``variable`` (a variable in-line array, at its maximum) or ``pad``),
    and the name of the argument it carries (None for the header, the body
    and padding)."""
    name: str
    offset: int
    size: int
    arg: str | None = None
    kind: str = "data"


@dataclass(frozen=True)
class Layout:
    """A message struct: its size (maximum, with variable arrays full),
    its fields, whether it is complex and how many descriptors it has.
    ``min_size`` is the size with every variable in-line array empty (as
    mig's rtMinRequestSize / rtMinReplySize give it)."""
    size: int
    fields: tuple[Field, ...]
    complex: bool
    descriptors: int
    min_size: int = -1

    def to_json(self) -> dict[str, object]:
        """``{"size": ..., "fields": [[name, offset, size], ...]}``."""
        return {"size": self.size, "fields": [[f.name, f.offset, f.size] for f in self.fields]}


# mig_reply_error_t: what a server answers when a routine fails
REPLY_ERROR = Layout(36, (Field("Head", 0, 24, None, "header"), Field("NDR", 24, 8, None, "ndr"),
                           Field("RetCode", 32, 4, "RetCode", "retcode")), False, 0, 36)


@dataclass(eq=False)
class Routine:
    """routine_t: a routine or simpleroutine, checked."""
    name: str
    simple: bool                    # a simpleroutine: one way, no reply awaited
    args: list[Argument]
    number: int                     # index in the subsystem (id = base + number)
    file: str = ""
    line: int = 0
    base: int = 0
    user_name: str = ""
    server_name: str = ""
    simple_request: bool = True
    simple_reply: bool = True
    request_kpds: int = 0
    reply_kpds: int = 0
    request_port: Argument | None = None
    reply_port: Argument | None = None
    wait_time: Argument | None = None
    msg_option: Argument | None = None
    ret_code: Argument | None = None
    ndr_code: Argument | None = None
    ret_c_arg: Argument | None = None
    request: Layout = field(default_factory=lambda: Layout(0, (), False, 0))
    reply: Layout = field(default_factory=lambda: Layout(0, (), False, 0))
    warnings: list[str] = field(default_factory=list)

    @property
    def id(self) -> int:
        """The request's msgh_id."""
        return self.base + self.number

    @property
    def reply_id(self) -> int:
        """The reply's msgh_id: the request's plus 100."""
        return self.base + self.number + REPLY_ID_DELTA

    def to_json(self) -> dict[str, object]:
        """The routine as ``pymach mig --layout`` prints it. A
        simpleroutine's reply is null: no reply is sent (mig declares its
        ``__Reply__`` struct all the same, a mig_reply_error_t's fields,
        which ``reply`` holds)."""
        return {"routine": self.name, "id": self.id, "simple": self.simple,
                "request": self.request.to_json(), "reply": None if self.simple else self.reply.to_json()}


@dataclass
class Options:
    """The statements that apply to the routines that follow them."""
    kernel_user: bool = False
    kernel_server: bool = False
    user_prefix: str = ""
    server_prefix: str = ""
    wait_time: str | None = None
    send_time: str | None = None
    msg_option: str | None = None
    use_special_reply_port: bool = False
    consume_on_send_error: str = "None"
    c_sizes: dict[str, int] = field(default_factory=lambda: dict(C_TYPE_SIZES))
    last_arg: Argument | None = None    # rtProcessSameCountFlag's adjacent argument


class _Checker:
    """rtCheckRoutine for one routine."""

    def __init__(self, rt: Routine, opts: Options) -> None:
        self.rt = rt
        self.opts = opts

    def error(self, message: str) -> MigError:
        return MigError(self.rt.file, self.rt.line, message)

    def warn(self, message: str) -> None:
        self.rt.warnings.append(f"{self.rt.file}:{self.rt.line}: warning: {message}")

    def insert_after(self, arg: Argument, new: Argument) -> None:
        args = self.rt.args
        args.insert(args.index(arg) + 1, new)

    # -- rtCheckRoutineArgs and its helpers

    def default_kind(self, arg: Argument) -> None:
        if arg.kind == AKE_NONE and self.rt.request_port is None:
            arg.kind = AK_REQUEST_PORT
        if arg.kind == AKE_NONE:
            arg.kind = AK_IN

    def check_arg(self, arg: Argument) -> None:
        rt = self.rt
        ident = ak_ident(arg.kind)
        if ident == AKE_REQUEST_PORT:
            if rt.request_port is not None:
                self.warn(f"multiple RequestPort args in {rt.name}; {rt.request_port.name} won't be used")
            rt.request_port = arg
        elif ident == AKE_REPLY_PORT:
            if rt.reply_port is not None:
                self.warn(f"multiple ReplyPort args in {rt.name}; {rt.reply_port.name} won't be used")
            rt.reply_port = arg
        elif ident == AKE_WAIT_TIME:
            if rt.wait_time is not None:
                self.warn(f"multiple WaitTime/SendTime type args in {rt.name}; {rt.wait_time.name} won't be used")
            rt.wait_time = arg
        elif ident == AKE_SEND_TIME:
            if rt.wait_time is not None and ak_ident(rt.wait_time.kind) == AKE_WAIT_TIME:
                self.warn(f"SendTime type argument after a WaitTime in {rt.name}; SendTime {arg.name} won't be used")
                return
            rt.wait_time = arg
        elif ident == AKE_MSG_OPTION:
            if rt.msg_option is not None:
                self.warn(f"multiple MsgOption args in {rt.name}; {rt.msg_option.name} won't be used")
            rt.msg_option = arg

    def set_defaults(self, arg: Argument) -> None:
        if arg.var_name is None:
            arg.var_name = arg.name
        if arg.msg_field is None:
            arg.msg_field = {
                AKE_REQUEST_PORT: "Head.msgh_request_port", AKE_REPLY_PORT: "Head.msgh_reply_port",
                AKE_NDR_CODE: "NDR", AKE_SEC_TOKEN: "msgh_sender", AKE_AUDIT_TOKEN: "msgh_audit",
                AKE_CONTEXT_TOKEN: "msgh_context", AKE_MSG_SEQNO: "msgh_seqno",
            }.get(ak_ident(arg.kind), None if ak_ident(arg.kind) == AKE_IMPLICIT else arg.name)
        if arg.pad_name is None:
            arg.pad_name = arg.name + "Pad"
        rt = self.rt
        if arg.type is not None and ((rt.request_port is not None and rt.request_port.poly is arg)
                                     or (rt.reply_port is not None and rt.reply_port.poly is arg)):
            arg.msg_field = "Head.msgh_bits"

    def dealloc_flag(self, arg: Argument) -> None:
        it, flags, name = arg.itype, arg.flags, arg.var_name
        if flags & FL_MAYBE_DEALLOC and flags & (FL_DEALLOC | FL_NOT_DEALLOC):
            self.warn(f"{name}: Dealloc and NotDealloc ignored with Dealloc[]")
            flags &= ~(FL_DEALLOC | FL_NOT_DEALLOC)
        if flags & (FL_DEALLOC | FL_NOT_DEALLOC) == FL_DEALLOC | FL_NOT_DEALLOC:
            self.warn(f"{name}: Dealloc and NotDealloc cancel out")
            flags &= ~(FL_DEALLOC | FL_NOT_DEALLOC)
        if (((self.opts.kernel_server and ak_check(arg.kind, AKB_RETURN))
             or (self.opts.kernel_user and ak_check(arg.kind, AKB_SEND))) and flags & FL_DEALLOC):
            arg.deallocate = "yes"
        elif flags & (FL_MAYBE_DEALLOC | FL_DEALLOC):
            if it.in_line and not it.port_type:
                self.warn(f"{name}: Dealloc is ignored: it is meaningless  for that type of argument")
                flags &= ~(FL_MAYBE_DEALLOC | FL_DEALLOC)
            else:
                arg.deallocate = "maybe" if flags & FL_MAYBE_DEALLOC else "yes"
        arg.flags = flags

    def count_in_out_flag(self, arg: Argument) -> None:
        it = arg.itype
        if arg.flags & FL_COUNT_IN_OUT:
            if not ak_check(arg.kind, AKB_REPLY):
                self.warn(f"{arg.var_name}: CountInOut is ignored: argument must be Out")
                arg.flags &= ~FL_COUNT_IN_OUT
            elif not it.var_array or not it.in_line:
                self.warn(f"{arg.var_name}: CountInOut is ignored: argument isn't variable or in-line")
                arg.flags &= ~FL_COUNT_IN_OUT
            else:
                arg.count_in_out = True

    def same_count_flag(self, arg: Argument) -> None:
        it, flags, name = arg.itype, arg.flags, arg.var_name
        if flags & FL_SAME_COUNT:
            if not it.var_array:
                self.warn(f"{name}: SameCount is ignored - the argument is not variable")
                flags &= ~FL_SAME_COUNT
            old = self.opts.last_arg
            if old is not None:
                if old.parent is not None:
                    old = old.parent
                if old.same_count is not None:
                    old = old.same_count
                if not old.itype.var_array:
                    self.warn(f"{name}: SameCount is ignored - adjacent argument is not variable")
                    flags &= ~FL_SAME_COUNT
                mask = (AKE_BITS | AKB_SEND | AKB_RETURN | AKB_REQUEST | AKB_REPLY | AKB_USER_ARG
                        | AKB_SERVER_ARG)
                if old.kind & mask != arg.kind & mask or old.count_in_out != arg.count_in_out:
                    self.warn(f"{name}: SameCount is ignored - inconsistencies with the adjacent argument")
                    flags &= ~FL_SAME_COUNT
                arg.same_count = old
            arg.flags = flags
        self.opts.last_arg = arg

    def physical_copy_flag(self, arg: Argument) -> None:
        it = arg.itype
        if arg.flags & FL_PHYSICAL_COPY:
            if it.in_line:
                self.warn(f"{arg.var_name}: PhysicalCopy is ignored, argument copied inline anyway")
                arg.flags &= ~FL_PHYSICAL_COPY
            if it.port_type:
                self.warn(f"{arg.var_name}: PhysicalCopy is ignored, it does not apply to ports and array of ports")
                arg.flags &= ~FL_PHYSICAL_COPY

    def ret_code_flag(self, arg: Argument) -> None:
        it, rt = arg.itype, self.rt
        if arg.flags & FL_RET_CODE:
            if not it.in_line or not it.struct or it.size != 32 or it.number != 1:
                self.warn(f"{arg.var_name}: RetCode is ignored - the type doesn't match a MIG RetCode")
                arg.flags &= ~FL_RET_CODE
            elif not rt.simple:
                raise self.error(f"{arg.var_name}: RetCode is allowed only for SimpleRoutines")
            elif rt.ret_c_arg is not None:
                self.warn(f"{arg.var_name}: RetCode is ignored - only one argument can be flagged as RetCode")
                arg.flags &= ~FL_RET_CODE
            else:
                rt.ret_c_arg = arg

    def overwrite_flag(self, arg: Argument) -> None:
        it = arg.itype
        if arg.flags & FL_OVERWRITE and (it.in_line or it.mig_in_line or not ak_check(arg.kind, AKB_RETURN)
                                         or ak_check(arg.kind, AKB_SEND)):
            self.warn(f"{arg.var_name}: Overwrite is ignored - it must be Out AND Ool!")
            arg.flags &= ~FL_OVERWRITE

    def augment_kind(self, arg: Argument) -> None:
        it = arg.itype
        if it.variable_sized_untyped:
            if ak_check_all(arg.kind, AKB_REQUEST | AKB_REPLY):
                raise self.error(f"{arg.name}: Inline variable-sized arguments can't be InOut")
            arg.kind |= AKB_VARIABLE
        if it.optional_native:
            arg.kind |= AKB_VARIABLE
        ident = ak_ident(arg.kind)
        if ((it.out_trans is not None and ak_check(arg.kind, AKB_RETURN_SND))
                or (it.in_trans is not None and ak_check_all(arg.kind, AKB_SEND_RCV | AKB_RETURN_SND))
                or (it.destructor is not None and ak_check(arg.kind, AKB_SEND_RCV)
                    and not ak_check(arg.kind, AKB_RETURN_SND) and it.in_trans is not None)
                or it.multiple_kpd
                or (ident in (AKE_POLY, AKE_DEALLOC) and ak_check(arg.kind, AKB_RETURN_SND))):
            arg.kind = (arg.kind & ~AKB_REPLY_COPY) | AKB_VAR_NEEDED

    def add_count(self, arg: Argument) -> None:
        it = arg.itype
        if it.multiple_kpd and it.element is not None and it.element.var_array:
            count = Argument(arg.name + "Subs", AKE_SUB_COUNT, make_sub_count_type(it.kpd_number, it.var_array))
            arg.sub_count = count
        else:
            count = Argument(arg.name + "Cnt", AKE_COUNT, make_count_type())
            arg.count = count
            if arg.parent is not None:
                arg.parent.count = count
        master = arg.parent if arg.parent is not None else arg
        count.multiplier = 1 if master.itype.multiple_kpd else (it.element.number if it.element else 1)
        count.parent = arg
        self.insert_after(arg, count)
        if it.string:
            # a c_string's count is in the message, but no argument on either side
            count.kind |= AKB_SEND_RCV if ak_check(arg.kind, AKB_SEND) else AKB_RETURN_RCV
        else:
            count.kind |= AKB_USER_ARG | AKB_SERVER_ARG | (arg.kind & ~AKE_BITS)
            count.kind &= ~(AKB_VARIABLE | AKB_VAR_NEEDED)
            if it.variable_sized_untyped:
                # the array's own declaration writes its count
                count.kind &= ~(AKB_REQUEST | AKB_REPLY)

    def add_count_in_out(self, arg: Argument) -> None:
        count = Argument(arg.name + "Cnt", AK_COUNT_IN_OUT, make_count_type())
        self.insert_after(arg, count)
        count.c_in_out = arg.count
        if arg.count is not None:
            arg.count.c_in_out = count

    def add_poly(self, arg: Argument) -> None:
        it = arg.itype
        poly = Argument(arg.name + "Poly", AKE_POLY, make_poly_type(), parent=arg)
        self.insert_after(arg, poly)
        arg.poly = poly
        send, ret = AKB_SEND, AKB_RETURN
        if it.in_name == TYPE_POLYMORPHIC:
            send |= AKB_USER_ARG | AKB_SEND_SND
            if not self.opts.kernel_server:
                ret |= AKB_SERVER_ARG | AKB_RETURN_SND
        if it.out_name == TYPE_POLYMORPHIC:
            send |= AKB_SERVER_ARG | AKB_SEND_RCV
            ret |= AKB_USER_ARG | AKB_RETURN_RCV
            if self.opts.kernel_server:
                ret |= AKB_SERVER_ARG | AKB_RETURN_SND
        if ak_check(arg.kind, AKB_SEND):
            poly.kind |= arg.kind & send
        if ak_check(arg.kind, AKB_RETURN):
            poly.kind |= arg.kind & ret

    def add_dealloc(self, arg: Argument) -> None:
        dealloc = Argument(arg.name + "Dealloc", AKE_DEALLOC, make_dealloc_type(), parent=arg)
        self.insert_after(arg, dealloc)
        arg.dealloc = dealloc
        if ak_check(arg.kind, AKB_SEND):
            dealloc.kind |= arg.kind & (AKB_USER_ARG | AKB_SEND | AKB_SEND_SND)
        if ak_check(arg.kind, AKB_RETURN):
            dealloc.kind |= arg.kind & (AKB_SERVER_ARG | AKB_RETURN | AKB_RETURN_SND)

    @staticmethod
    def detect_kpd(arg: Argument) -> None:
        it = arg.itype
        if it.kern_proc_data:
            if ak_check(arg.kind, AKB_SEND_BODY):
                arg.kind = (arg.kind & ~AKB_SEND_BODY) | AKB_SEND_KPD
            if ak_check(arg.kind, AKB_RETURN_BODY):
                arg.kind = (arg.kind & ~AKB_RETURN_BODY) | AKB_RETURN_KPD
            if it.in_line:
                arg.kpd_type = PORT_DESCRIPTOR
            elif it.port_type:
                arg.kpd_type = OOL_PORTS_DESCRIPTOR
            else:
                arg.kpd_type = OOL_DESCRIPTOR
            it.kpd_type = arg.kpd_type

    def check_args(self) -> None:
        i = 0
        while i < len(self.rt.args):     # the arguments added here are checked in turn
            arg = self.rt.args[i]
            i += 1
            self.default_kind(arg)
            self.check_arg(arg)
            self.set_defaults(arg)
            if arg.type is None:
                continue
            it = arg.type
            self.dealloc_flag(arg)
            self.count_in_out_flag(arg)
            self.same_count_flag(arg)
            self.physical_copy_flag(arg)
            self.ret_code_flag(arg)
            self.overwrite_flag(arg)
            self.augment_kind(arg)
            # the order of the added arguments: arg poly countinout count dealloc
            if arg.deallocate == "maybe":
                self.add_dealloc(arg)
            if it.var_array or (it.multiple_kpd and it.element is not None and it.element.var_array):
                self.add_count(arg)
            if arg.count_in_out:
                self.add_count_in_out(arg)
            if it.polymorphic:
                self.add_poly(arg)
            self.detect_kpd(arg)

    # -- the rest of rtCheckRoutine

    def add_front(self, arg: Argument) -> None:
        self.rt.args.insert(0, arg)

    def check_arg_types(self) -> None:
        rt = self.rt
        kind = "SimpleRoutine" if rt.simple else "Routine"
        if rt.request_port is None:
            raise self.error(f"{kind} {rt.name} doesn't have a server port argument")
        f, ln = rt.file, rt.line
        if rt.request_port.type is not None:
            check_request_port_type(rt.request_port.name, rt.request_port.type, f, ln)
        if rt.reply_port is not None and rt.reply_port.type is not None:
            check_reply_port_type(rt.reply_port.name, rt.reply_port.type, f, ln)
        if rt.wait_time is not None and rt.wait_time.type is not None:
            check_int_type(rt.wait_time.name, rt.wait_time.type, f, ln)
        if rt.msg_option is not None and rt.msg_option.type is not None:
            check_int_type(rt.msg_option.name, rt.msg_option.type, f, ln)
        # (mig checks the trailer's types, and that a KernelUser or
        # KernelServer subsystem takes none, only when it has counted the
        # trailer's arguments, which it does after this check: in effect,
        # never, and so neither does this)

    def check_simple(self, mask: int) -> bool:
        return not any(ak_check(a.kind, mask) and a.itype.kern_proc_data for a in self.rt.args)

    def add_same_count(self) -> None:
        args = self.rt.args
        for arg in list(args):
            if arg.flags & FL_SAME_COUNT and arg.same_count is not None:
                my_count, ref_count = arg.count, arg.same_count.count
                if my_count is None or ref_count is None:
                    continue
                tmp = Argument(ref_count.name, AKE_SAME_COUNT | (my_count.kind & AKB_VAR_NEEDED),
                               my_count.type, msg_field=ref_count.msg_field, var_name=ref_count.var_name,
                               parent=arg, multiplier=my_count.multiplier)
                ref_count.kind |= my_count.kind & AKB_VAR_NEEDED
                # the arg's own count leaves the list: the messages carry one count for both
                args[args.index(my_count)] = tmp
                arg.count = tmp

    def process_ret_code(self) -> None:
        rt = self.rt
        if not rt.simple and not rt.simple_reply and rt.ret_code is not None:
            # a complex reply carries no return code: errors go in a mig_reply_error_t
            rt.ret_code.kind = (rt.ret_code.kind & ~AKB_REPLY) | AKB_VAR_NEEDED
        if rt.ret_c_arg is not None and not rt.simple_request:
            rt.ret_c_arg.kind = AKE_RET_CODE | AKB_USER_ARG | AKB_SERVER_ARG | AKB_SEND_RCV

    def process_ndr(self) -> None:
        rt = self.rt
        ndr = rt.ndr_code
        assert ndr is not None and rt.ret_code is not None
        send = AKB_REQUEST | AKB_SEND | AKB_SEND_SND | AKB_SEND_BODY
        rcv = AKB_REPLY | AKB_REPLY_INIT | AKB_RETURN | AKB_RETURN_BODY
        ndr.kind |= send | rcv
        after = rt.args[rt.args.index(ndr) + 1:]
        found = False
        for arg in after:
            if (ak_check(arg.kind, AKB_SEND_RCV | AKB_SEND_BODY) and not ak_check(arg.kind, AKB_SERVER_IMPLICIT)
                    and not arg.itype.port_type
                    and (arg.parent is None or ak_ident(arg.kind) in (AKE_COUNT, AKE_COUNT_IN_OUT))):
                arg.kind |= AKB_SEND_NDR
                found = True
        if not found:
            ndr.kind &= ~send
        found = False
        if not rt.simple:
            for arg in after:
                if ((arg is rt.ret_code and ak_check(arg.kind, AKB_REPLY))
                        or (arg is not rt.ret_code and ak_check(arg.kind, AKB_RETURN_RCV | AKB_RETURN_BODY)
                            and not ak_check(arg.kind, AKB_USER_IMPLICIT) and not arg.itype.port_type
                            and (arg.parent is None or ak_ident(arg.kind) in (AKE_COUNT, AKE_COUNT_IN_OUT)))):
                    arg.kind |= AKB_RETURN_NDR
                    found = True
        if not found and not ak_check(rt.ret_code.kind, AKB_REPLY):
            ndr.kind &= ~rcv

    def run(self) -> None:
        rt, opts = self.rt, self.opts
        rt.server_name = opts.server_prefix + rt.name
        rt.user_name = opts.user_prefix + rt.name
        rt.ret_code = Argument("RetCode", AK_RET_CODE, ret_code_type())
        self.add_front(rt.ret_code)
        rt.ndr_code = Argument("NDR_record", AKE_NDR_CODE, ndr_code_type())
        self.add_front(rt.ndr_code)
        self.check_args()
        if rt.reply_port is None:
            dummy = Argument("dummy ReplyPort arg", AKE_REPLY_PORT,
                             zero_reply_port_type() if rt.simple else real_reply_port_type(),
                             var_name="dummy ReplyPort arg")
            rt.reply_port = dummy
            if rt.request_port is not None:
                self.insert_after(rt.request_port, dummy)
            else:
                self.add_front(dummy)
            self.set_defaults(dummy)
        if rt.msg_option is None:
            rt.msg_option = Argument("dummy MsgOption arg", AKE_MSG_OPTION, make_count_type(),
                                     var_name=opts.msg_option or "MACH_MSG_OPTION_NONE")
            self.add_front(rt.msg_option)
            self.set_defaults(rt.msg_option)
        if rt.wait_time is None and (opts.wait_time is not None or opts.send_time is not None):
            wait = opts.wait_time is not None
            rt.wait_time = Argument("dummy WaitTime arg", AKE_WAIT_TIME if wait else AKE_SEND_TIME,
                                    make_count_type(), var_name=opts.wait_time if wait else opts.send_time)
            self.insert_after(rt.msg_option, rt.wait_time)
            self.set_defaults(rt.wait_time)
        if rt.wait_time is not None and opts.consume_on_send_error == "None":
            kind = "SimpleRoutine" if rt.simple else "Routine"
            self.warn(f"{kind} {rt.name} specifies a SendTime/WaitTime which may leak resources, "
                      'adopt "ConsumeOnSendError Timeout"')
        self.check_arg_types()
        if rt.simple and any(ak_check_all(a.kind, AKB_RETURN) for a in rt.args):
            raise self.error(f"SimpleRoutine {rt.name} has OUT argument")
        rt.simple_request = self.check_simple(AKB_REQUEST)
        rt.simple_reply = self.check_simple(AKB_REPLY)
        rt.request_kpds = sum(a.itype.kpd_number for a in rt.args if ak_check_all(a.kind, AKB_SEND_KPD))
        rt.reply_kpds = sum(a.itype.kpd_number for a in rt.args if ak_check_all(a.kind, AKB_RETURN_KPD))
        if any(a.flags & FL_OVERWRITE for a in rt.args) and opts.kernel_user:
            raise self.error("Overwrite option(s) do not match with the KernelUser personality")
        if opts.use_special_reply_port and not rt.simple and not (
                rt.reply_port is not None and ak_check(rt.reply_port.kind, AKB_USER_ARG)) and (
                opts.kernel_user or opts.kernel_server):
            raise self.error("UseSpecialReplyPort option cannot be used with KernelUser / KernelServer")
        self.add_same_count()
        self.process_ret_code()
        self.process_ndr()
        rt.request = struct_layout(rt, request=True, c_sizes=opts.c_sizes)
        rt.reply = struct_layout(rt, request=False, c_sizes=opts.c_sizes)


def check_routine(rt: Routine, opts: Options) -> None:
    """rtCheckRoutine: complete ``rt``'s arguments and lay out its messages
    (MigError for a routine that mig refuses)."""
    _Checker(rt, opts).run()


_Member = tuple[str, int, "str | None", str]


def _arg_fields(arg: Argument, kpd: bool, c_sizes: dict[str, int]) -> list[_Member]:
    """WriteFieldDeclPrim: the members that ``arg`` puts in a struct (the
    sizes mig declares, or ``c_sizes``' for the C types it names), as
    (name, size, argument, kind)."""
    it = arg.itype
    name = arg.msg_field or arg.name
    if kpd:
        assert arg.kpd_type is not None
        n = it.kpd_number if it.multiple_kpd else 1
        return [(name, DESCRIPTOR_C_SIZE[arg.kpd_type] * n, arg.name, "descriptor")]
    ident = ak_ident(arg.kind)
    kind = {AKE_NDR_CODE: "ndr", AKE_RET_CODE: "retcode", AKE_COUNT: "count", AKE_COUNT_IN_OUT: "count",
            AKE_SUB_COUNT: "count"}.get(ident, "data")
    out: list[_Member] = []
    if it.variable_sized_untyped or it.no_opt_array:
        element = it.element
        assert element is not None
        if it.string:
            out.append((arg.name + "Offset", 4, arg.name, "offset"))
        if not arg.flags & FL_SAME_COUNT and not it.no_opt_array:
            count = arg.count
            assert count is not None
            out.append((count.msg_field or count.name, 4, count.name, "count"))
        per = max(element.number, 1)
        size = c_sizes.get(element.server_type or "", element.type_size)
        out.append((name, it.number // per * size, arg.name, "count" if it.no_opt_array else "variable"))
    elif it.native:
        raise MigError("", 0, f"{arg.name}: a native C type ({it.server_type}) has the size the C compiler "
                              "gives it, which mig's layouts cannot know")
    else:
        out.append((name, c_sizes.get(it.server_type or "", it.type_size), arg.name, kind))
    if it.pad_size:
        out.append((arg.pad_name or arg.name + "Pad", it.pad_size, None, "pad"))
    return out


def struct_layout(rt: Routine, request: bool, c_sizes: dict[str, int] | None = None) -> Layout:
    """WriteStructDecl: the ``__Request__`` or ``__Reply__`` struct of ``rt``."""
    mask = AKB_REQUEST if request else AKB_REPLY
    kpd_bit = AKB_SEND_KPD if request else AKB_RETURN_KPD
    body_bit = AKB_SEND_BODY if request else AKB_RETURN_BODY
    simple = rt.simple_request if request else rt.simple_reply
    sizes = C_TYPE_SIZES if c_sizes is None else c_sizes
    members: list[_Member] = [("Head", HEADER_SIZE, None, "header")]
    descriptors = 0
    variable = 0
    if not simple:
        members.append(("msgh_body", BODY_SIZE, None, "body"))
        for arg in rt.args:
            if ak_check_all(arg.kind, mask | kpd_bit):
                members += _arg_fields(arg, True, sizes)
                descriptors += arg.itype.kpd_number
    for arg in rt.args:
        if ak_check_all(arg.kind, mask | body_bit):
            try:
                fields_ = _arg_fields(arg, False, sizes)
            except MigError as e:
                raise MigError(rt.file, rt.line, f"{rt.name}: {e.message}") from None
            members += fields_
            if arg.itype.variable_sized_untyped:
                # rtSizeDelta: the array and its padding may be absent
                variable += sum(size for _, size, _, kind in fields_ if kind in ("variable", "pad"))
    fields = []
    offset = 0
    for name, size, argname, kind in members:
        fields.append(Field(name, offset, size, argname, kind))
        offset += size
    size = (offset + 3) & ~3
    return Layout(size, tuple(fields), not simple, descriptors, size - variable)
