"""mig's type model (migcom's ``type.c``): what a ``type`` statement or an
argument's type spec makes, with mig's rules for sizes, padding,
in-line and out-of-line data, port dispositions, polymorphic names,
variable arrays, count types and c_strings.

Sizes are in bits (``size``, as mig's ``itSize``) and bytes
(``type_size``, ``pad_size``, ``min_type_size``); a ``natural_t`` is 32
bits, as on every Mach (``sizeof(natural_t) == 4`` on LP64 too).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import MigError
from .lexer import (PORT_SIZE, TYPE_BOOLEAN, TYPE_BYTE, TYPE_COPY_SEND, TYPE_INTEGER_32, TYPE_MAKE_SEND_ONCE,
                    TYPE_POLYMORPHIC, TYPE_PORT_SEND, TYPE_PORT_SEND_ONCE, TYPE_STRING_C, port_any)

MACHINE_INTEGER_SIZE = TYPE_INTEGER_32      # natural_t is 32 bits
MACHINE_INTEGER_NAME = "MACH_MSG_TYPE_INTEGER_32"
MACHINE_INTEGER_BITS = 32
DESCRIPTOR_SIZE = 12                        # mig's own count: sizeof(mach_msg_descriptor_t)


@dataclass
class IpcType:
    """ipc_type_t: one MIG type. ``number`` is the element count (0 for an
    unbounded array), ``size`` the element's size in bits; ``in_line``
    False means out-of-line (a descriptor); ``port_type`` a port right;
    ``kpd_number`` how many descriptors it takes; ``element`` the type it
    was made from."""
    name: str | None = None
    type_size: int = 0
    pad_size: int = 0
    min_type_size: int = 0
    in_name: int = 0
    out_name: int = 0
    size: int = 0
    number: int = 1
    kpd_number: int = 0
    in_line: bool = True
    mig_in_line: bool = False
    port_type: bool = False
    in_name_str: str | None = None
    out_name_str: str | None = None
    struct: bool = True
    string: bool = False
    var_array: bool = False
    no_opt_array: bool = False
    native: bool = False
    native_pointer: bool = False
    element: IpcType | None = None
    user_type: str | None = None
    server_type: str | None = None
    trans_type: str | None = None
    kpd_type: str | None = None
    in_trans: str | None = None
    out_trans: str | None = None
    destructor: str | None = None
    bad_value: str | None = None
    ool_number: int = 0

    @property
    def variable_sized_untyped(self) -> bool:
        """IS_VARIABLE_SIZED_UNTYPED: a bounded variable array of plain
        data, carried in-line at its actual length after its count."""
        return self.var_array and self.in_line and not self.port_type

    @property
    def kern_proc_data(self) -> bool:
        """IS_KERN_PROC_DATA: carried in a descriptor (ports, out-of-line data)."""
        return not self.in_line or self.port_type

    @property
    def multiple_kpd(self) -> bool:
        """IS_MULTIPLE_KPD: an array of descriptors."""
        return self.kpd_number > 1

    @property
    def optional_native(self) -> bool:
        """IS_OPTIONAL_NATIVE: a PointerToIfNot type."""
        return self.native and self.native_pointer and self.bad_value is not None

    @property
    def polymorphic(self) -> bool:
        """Either disposition is chosen at run time."""
        return self.in_name == TYPE_POLYMORPHIC or self.out_name == TYPE_POLYMORPHIC


def machine_padding(nbytes: int) -> int:
    """Bytes of padding after ``nbytes`` to reach a multiple of 4."""
    return (4 - (nbytes & 3)) if nbytes & 3 else 0


def calculate_size_info(it: IpcType) -> None:
    """itCalculateSizeInfo: type_size, pad_size and min_type_size."""
    if not it.kern_proc_data:
        nbytes = (it.number * it.size + 7) // 8
        it.type_size = nbytes
        it.pad_size = machine_padding(nbytes)
        if it.variable_sized_untyped:
            # the count lives beside the array; a string has an offset too
            it.min_type_size = 4 + (4 if it.string else 0)
        else:
            it.min_type_size = nbytes + it.pad_size
    else:
        nbytes = it.kpd_number * DESCRIPTOR_SIZE if it.multiple_kpd else DESCRIPTOR_SIZE
        it.type_size = nbytes
        it.pad_size = 0
        it.min_type_size = nbytes


def calculate_name_info(it: IpcType) -> None:
    """itCalculateNameInfo: default spellings and C types."""
    if it.in_name_str is None:
        it.in_name_str = str(it.in_name)
    if it.out_name_str is None:
        it.out_name_str = str(it.out_name)
    if it.user_type is None:
        it.user_type = it.name
    if it.server_type is None:
        it.server_type = it.name
    if it.trans_type is None:
        it.trans_type = it.server_type


def check_decl(name: str, it: IpcType, file: str, line: int) -> None:
    """itCheckDecl: name the type, fill its C types, refuse translations
    of variable-sized arrays."""
    it.name = name
    calculate_name_info(it)
    if it.var_array:
        if it.in_trans is not None or it.out_trans is not None:
            raise MigError(file, line, f"{name}: can't translate variable-sized arrays")
        if it.destructor is not None:
            raise MigError(file, line, f"{name}: can't destroy variable-sized array")


def short_decl(inname: int, instr: str | None, outname: int, outstr: str | None, size: int,
               file: str, line: int) -> IpcType:
    """itShortDecl: ``type t = MACH_MSG_TYPE_X`` or ``in|out`` or a number."""
    if size == 0:
        raise MigError(file, line, "must use full IPC type decl")
    it = IpcType(in_name=inname, in_name_str=instr, out_name=outname, out_name_str=outstr, size=size)
    if inname == TYPE_STRING_C:
        it.struct = False
        it.string = True
    if port_any(inname) or inname == TYPE_POLYMORPHIC:
        it.port_type = True
        it.kpd_number = 1
    calculate_size_info(it)
    return it


def copy_type(old: IpcType) -> IpcType:
    """itCopyType: a new type made from ``old`` (its element)."""
    return dataclasses.replace(old, name=None, element=old)


def reset_type(it: IpcType) -> IpcType:
    """itResetType: forget translations and C types."""
    it.in_trans = it.out_trans = it.destructor = None
    it.user_type = it.server_type = it.trans_type = None
    return it


def var_array_decl(number: int, old: IpcType, file: str, line: int) -> IpcType:
    """itVarArrayDecl: ``array[] of``, ``array[*] of`` (number 0) and
    ``array[*:number] of``."""
    it = reset_type(copy_type(old))
    if not it.in_line:
        if it.kpd_number != 1 or not number:
            raise MigError(file, line, "IPC type decl is too complicated for Kernel Processed Data")
        it.kpd_number *= number
        it.number = 1
        it.in_line = False
        it.struct = False
        it.ool_number = number
    elif it.var_array:
        raise MigError(file, line, "IPC type decl is too complicated")
    elif number:
        # bounded: in-line
        it.number *= number
        it.in_line = True
        it.struct = False
        if it.port_type:
            it.kpd_number *= number
        it.ool_number = number
    else:
        # unbounded: presented in-line, sent out-of-line
        it.number = 0
        it.mig_in_line = True
        it.in_line = False
        it.struct = True
        it.kpd_number = 1
        it.ool_number = 0
    it.var_array = True
    it.string = False
    calculate_size_info(it)
    return it


def array_decl(number: int, old: IpcType, file: str, line: int) -> IpcType:
    """itArrayDecl: ``array[number] of``."""
    it = reset_type(copy_type(old))
    if not it.in_line:
        if it.kpd_number != 1:
            raise MigError(file, line, "IPC type decl is too complicated for Kernel Processed Data")
        it.kpd_number *= number
        it.number = 1
        it.struct = False
        it.string = False
        it.var_array = False
    elif it.var_array:
        raise MigError(file, line, "IPC type decl is too complicated")
    else:
        it.number *= number
        it.struct = False
        it.string = False
        if it.port_type:
            it.kpd_number *= number
    calculate_size_info(it)
    return it


def ptr_decl(it: IpcType, file: str, line: int) -> IpcType:
    """itPtrDecl: ``^ type``, out-of-line."""
    if not it.in_line and not it.mig_in_line:
        raise MigError(file, line, "IPC type decl is already defined to be Out-Of-Line")
    it.in_line = False
    it.struct = True
    it.string = False
    it.mig_in_line = False
    it.kpd_number = 1
    calculate_size_info(it)
    return it


def struct_decl(number: int, old: IpcType, file: str, line: int) -> IpcType:
    """itStructDecl: ``struct[number] of``."""
    it = reset_type(copy_type(old))
    if not it.in_line or it.var_array:
        raise MigError(file, line, "IPC type decl is too complicated")
    it.number *= number
    it.struct = True
    it.string = False
    calculate_size_info(it)
    return it


def cstring_decl(count: int, varying: bool, file: str, line: int) -> IpcType:
    """itCStringDecl: ``c_string[n]`` and ``c_string[*:n]``, arrays of chars."""
    element = short_decl(TYPE_STRING_C, "MACH_MSG_TYPE_STRING_C", TYPE_STRING_C, "MACH_MSG_TYPE_STRING_C", 8,
                         file, line)
    check_decl("char", element, file, line)
    it = reset_type(copy_type(element))
    it.number = count
    it.var_array = varying
    it.struct = False
    it.string = True
    calculate_size_info(it)
    return it


def native_type(ctype: str, pointer: bool, bad_value: str | None) -> IpcType:
    """itNativeType: ``PointerTo(T)``, ``PointerToIfNot(T, V)``, ``ValueOf(T)``."""
    it = IpcType(in_name=TYPE_BYTE, in_name_str="MACH_MSG_TYPE_BYTE", out_name=TYPE_BYTE,
                 out_name_str="MACH_MSG_TYPE_BYTE", in_line=True, native=True, native_pointer=pointer,
                 server_type=ctype, user_type=ctype, trans_type=ctype, bad_value=bad_value)
    calculate_size_info(it)
    calculate_name_info(it)
    return it


def _integer(name: str) -> IpcType:
    it = IpcType(name=name, in_name=MACHINE_INTEGER_SIZE, in_name_str=MACHINE_INTEGER_NAME,
                 out_name=MACHINE_INTEGER_SIZE, out_name_str=MACHINE_INTEGER_NAME, size=MACHINE_INTEGER_BITS)
    calculate_size_info(it)
    calculate_name_info(it)
    return it


def make_count_type() -> IpcType:
    """itMakeCountType: mach_msg_type_number_t."""
    return _integer("mach_msg_type_number_t")


def make_poly_type() -> IpcType:
    """itMakePolyType: mach_msg_type_name_t."""
    return _integer("mach_msg_type_name_t")


def make_dealloc_type() -> IpcType:
    """itMakeDeallocType: boolean_t."""
    it = IpcType(name="boolean_t", in_name=TYPE_BOOLEAN, in_name_str="MACH_MSG_TYPE_BOOLEAN",
                 out_name=TYPE_BOOLEAN, out_name_str="MACH_MSG_TYPE_BOOLEAN", size=MACHINE_INTEGER_BITS)
    calculate_size_info(it)
    calculate_name_info(it)
    return it


def make_sub_count_type(count: int, varying: bool) -> IpcType:
    """itMakeSubCountType: the counts of an array of variable out-of-line arrays."""
    element = _integer("mach_msg_type_number_t")
    it = reset_type(copy_type(element))
    it.number = count
    it.var_array = varying
    it.struct = False
    it.string = False
    it.in_line = True
    it.name = "mach_msg_type_number_t *"
    it.no_opt_array = not varying
    calculate_size_info(it)
    calculate_name_info(it)
    return it


def ret_code_type() -> IpcType:
    """kern_return_t, the reply's return code."""
    return _integer("kern_return_t")


def ndr_code_type() -> IpcType:
    """NDR_record_t, the 8-byte format label."""
    it = IpcType(name="NDR_record_t", in_name=0, in_name_str="NDR_record_t", out_name=0,
                 out_name_str="NDR_record_t", size=64)
    calculate_size_info(it)
    calculate_name_info(it)
    return it


def _port(in_name: int, in_str: str, out_name: int, out_str: str) -> IpcType:
    it = IpcType(name="mach_port_t", in_name=in_name, in_name_str=in_str, out_name=out_name,
                 out_name_str=out_str, size=PORT_SIZE)
    calculate_size_info(it)
    calculate_name_info(it)
    return it


def zero_reply_port_type() -> IpcType:
    """The reply port of a simpleroutine: none."""
    return _port(0, "0", 0, "0")


def real_reply_port_type() -> IpcType:
    """The default reply port: a send-once right made from the caller's receive right."""
    return _port(TYPE_MAKE_SEND_ONCE, "MACH_MSG_TYPE_MAKE_SEND_ONCE", TYPE_PORT_SEND_ONCE,
                 "MACH_MSG_TYPE_PORT_SEND_ONCE")


def request_port_type() -> IpcType:
    """The default request port: a copied send right."""
    return _port(TYPE_COPY_SEND, "MACH_MSG_TYPE_COPY_SEND", TYPE_PORT_SEND, "MACH_MSG_TYPE_PORT_SEND")


def check_return_type(name: str, it: IpcType, file: str, line: int) -> None:
    """itCheckReturnType."""
    if not it.struct:
        raise MigError(file, line, f"type of {name} is too complicated")
    if it.polymorphic:
        raise MigError(file, line, f"type of {name} can't be polymorphic")


def check_request_port_type(name: str, it: IpcType, file: str, line: int) -> None:
    """itCheckRequestPortType: a single send or send-once right."""
    if (it.out_name not in (TYPE_PORT_SEND, TYPE_PORT_SEND_ONCE, TYPE_POLYMORPHIC) or it.number != 1
            or it.size != PORT_SIZE or not it.in_line or not it.struct or it.var_array):
        raise MigError(file, line, f"argument {name} isn't a proper request port")


def check_reply_port_type(name: str, it: IpcType, file: str, line: int) -> None:
    """itCheckReplyPortType: a single send or send-once right, or none."""
    if (it.out_name not in (TYPE_PORT_SEND, TYPE_PORT_SEND_ONCE, TYPE_POLYMORPHIC, 0) or it.number != 1
            or it.size != PORT_SIZE or not it.in_line or not it.struct or it.var_array):
        raise MigError(file, line, f"argument {name} isn't a proper reply port")


def check_int_type(name: str, it: IpcType, file: str, line: int) -> None:
    """itCheckIntType: a natural_t (WaitTime, MsgOption, MsgSeqno)."""
    if (it.in_name != MACHINE_INTEGER_SIZE or it.out_name != MACHINE_INTEGER_SIZE or it.number != 1
            or it.size != MACHINE_INTEGER_BITS or not it.in_line or not it.struct or it.var_array):
        raise MigError(file, line, f"argument {name} isn't a proper integer")

