"""pymach's own protocols in .defs: the notifications (defs/notify.defs,
XNU's ids and layouts) and the bootstrap protocol (defs/bootstrap.defs),
compiled by ``pymach mig -static`` into modules the package ships; and
the ``-static`` output kind itself."""

from __future__ import annotations

import ast
import ctypes
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import pymach.mach as M
from machutil import start_watcher
from pymach._kern import ipc_notify
from pymach._kern import notify_mig as NM
from pymach.mach import _layouts
from pymach.mach import bootstrap_defs as D
from pymach.mach import bootstrap_mig as BMIG
from pymach.mach import notify as N
from pymach.mach import byref

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "src" / "pymach"
DEFS = PKG / "defs"
HERE = Path(__file__).resolve().parent / "mig"
APPLE = json.loads((Path(__file__).resolve().parent / "data" / "mig_apple_layouts.json").read_text())

# each shipped module, and how `pymach mig` makes it
GENERATED = [
    (PKG / "_kern" / "notify_mig.py", ["-DKERNEL_USER", "notify.defs"]),
    (PKG / "mach" / "bootstrap_mig.py", ["bootstrap.defs"]),
    (PKG / "mach" / "netname_mig.py", ["netname.defs"]),
]


@pytest.fixture(scope="module", autouse=True)
def watcher_started() -> None:
    start_watcher()  # the runtime's process-wide fds, before the fd baseline


def T() -> int:
    return int(M.mach_task_self())


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _messages(mod: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(mod).items() if isinstance(v, mod.Message)}


# -- the shipped modules are what the shipped .defs give -------------------------------------------

@pytest.mark.parametrize("module,args", GENERATED, ids=[p.name for p, _ in GENERATED])
def test_the_shipped_modules_are_regenerated_byte_for_byte(tmp_path: Path, module: Path, args: list[str]) -> None:
    """Nobody edits them by hand: `pymach mig -static` on the shipped .defs
    writes them again, the same bytes."""
    pytest.importorskip("pcpp")
    from pymach.tools import main
    out = tmp_path / module.name
    assert main(["mig", "-q", "-I", str(DEFS), *args[:-1], "-static", str(out), str(DEFS / args[-1])]) == 0
    assert out.read_bytes() == module.read_bytes(), (
        f"{module.relative_to(ROOT)} is not what `pymach mig -static` makes of defs/{args[-1]}: regenerate it "
        f"(docs/mig.md, \"pymach's own .defs\")")


@pytest.mark.parametrize("module", [p for p, _ in GENERATED], ids=[p.name for p, _ in GENERATED])
def test_the_static_modules_import_the_standard_library_only(module: Path) -> None:
    """They live in the kernel's and the C layer's packages: no pymach
    import (the compiler least of all), nothing outside the standard
    library."""
    tree = ast.parse(module.read_text())
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert all(not isinstance(n, ast.ImportFrom) or n.level == 0 for n in ast.walk(tree))
    assert mods <= {"__future__", "struct", "typing"}, mods


# -- notify.defs is XNU's -------------------------------------------------------------------------------

def test_notify_defs_has_apples_layouts_routine_by_routine() -> None:
    """Each notification of Apple's mig output (XNU's notify.defs compiled
    as the SDK's headers are) has the same id, kind and request layout in
    pymach's notify.defs, and in the module generated from it."""
    pytest.importorskip("pcpp")
    from pymach.mig import compile_defs
    want = APPLE["notify"]
    for defines in ({}, {"KERNEL_USER": "1"}):
        sub = compile_defs(str(DEFS / "notify.defs"), include=[str(DEFS)], defines=defines)
        assert (sub.name, sub.base) == (want["subsystem"], want["base"])
        for r in want["routines"]:
            assert sub.routine(r["routine"]).to_json() == r, r["routine"]
    for r in want["routines"]:
        msg = getattr(NM, r["routine"] + "_request")
        assert getattr(NM, r["routine"] + "_id") == msg.id == r["id"]
        assert {"size": msg.size, "fields": [list(f[:3]) for f in msg.fields]} == r["request"], r["routine"]
        assert not hasattr(NM, r["routine"] + "_reply")  # simpleroutines
    # send-possible (which the SDK's notify.defs leaves out but the kernel
    # sends) is laid out as port-deleted, at 0102
    sp, pd = NM.mach_notify_send_possible_request, NM.mach_notify_port_deleted_request
    assert (sp.id, sp.size, sp.fields, sp.struct.format) == (0o102, pd.size, pd.fields, pd.struct.format)


def test_the_notification_ids_are_notify_defs() -> None:
    assert (M.MACH_NOTIFY_FIRST, M.MACH_NOTIFY_PORT_DELETED, M.MACH_NOTIFY_SEND_POSSIBLE,
            M.MACH_NOTIFY_PORT_DESTROYED, M.MACH_NOTIFY_NO_SENDERS, M.MACH_NOTIFY_SEND_ONCE,
            M.MACH_NOTIFY_DEAD_NAME, M.MACH_NOTIFY_LAST) == (0o100, 0o101, 0o102, 0o105, 0o106, 0o107, 0o110, 0o115)


@pytest.mark.parametrize("cls,msg", [
    (N.mach_port_deleted_notification_t, NM.mach_notify_port_deleted_request),
    (N.mach_send_possible_notification_t, NM.mach_notify_send_possible_request),
    (N.mach_dead_name_notification_t, NM.mach_notify_dead_name_request),
    (N.mach_no_senders_notification_t, NM.mach_notify_no_senders_request),
    (N.mach_send_once_notification_t, NM.mach_notify_send_once_request),
    (N.mach_port_destroyed_notification_t, NM.mach_notify_port_destroyed_request),
], ids=lambda x: getattr(x, "__name__", "msg"))
def test_notify_h_structs_are_the_generated_layouts(cls: type[ctypes.Structure], msg: Any) -> None:
    """<mach/notify.h>'s names (not_header, not_port, not_count, not_body)
    over the generated fields, then the trailer."""
    _layouts.check_struct(cls, msg, N.NOTIFY_NAMES)
    names = [f[0] for f in cls._fields_]  # type: ignore[misc]
    assert names == [N.NOTIFY_NAMES.get(f[0], f[0]) for f in msg.fields] + ["trailer"]
    assert names[0] == "not_header" and names[-1] == "trailer"
    assert cls.trailer.offset == msg.size  # type: ignore[attr-defined]
    assert ctypes.sizeof(cls) == msg.size + ctypes.sizeof(M.mach_msg_format_0_trailer_t)


def test_the_kernel_sends_what_the_generated_stubs_build() -> None:
    """The record of each notification holds the stub's message after its
    header, the notify port's send-once right in the local bits."""
    for build, rights in ((lambda: NM.mach_notify_no_senders(0, 7), None),
                          (lambda: NM.mach_notify_dead_name(0, 0x1203), None),
                          (lambda: NM.mach_notify_port_deleted(0, 0x1303), None),
                          (lambda: NM.mach_notify_port_destroyed(0, 1), [(0, 0, 0, 0), (16, 1, 0, 0)]),
                          (lambda: NM.mach_notify_send_once(0), None)):
        msg = build()
        head, _rights, body = ipc_notify.record(msg, rights)
        magic, bits, msg_id, size, *_ = ipc_notify.WIRE.unpack_from(head)
        assert (msg_id, size, body) == (M.mach_msg_header_t.from_buffer_copy(msg).msgh_id, len(msg) - 24, msg[24:])
        assert M.MACH_MSGH_BITS_LOCAL(bits) == M.MACH_MSG_TYPE_PORT_SEND_ONCE and M.MACH_MSGH_BITS_REMOTE(bits) == 0
        assert bool(bits & M.MACH_MSGH_BITS_COMPLEX) == (msg_id == M.MACH_NOTIFY_PORT_DESTROYED)


def test_a_no_senders_notification_decodes_with_the_generated_layout() -> None:
    """A real notification, received: the generated Message reads it."""
    task = T()
    port, notify, prev = M.mach_port_t(), M.mach_port_t(), M.mach_port_t()
    assert M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, byref(port)) == 0
    assert M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, byref(notify)) == 0
    try:
        assert M.mach_port_insert_right(task, port, port, M.MACH_MSG_TYPE_MAKE_SEND) == 0
        assert M.mach_port_request_notification(task, port, M.MACH_NOTIFY_NO_SENDERS, 0, notify,
                                                M.MACH_MSG_TYPE_MAKE_SEND_ONCE, byref(prev)) == 0
        assert M.mach_port_deallocate(task, port) == 0
        n = N.mach_no_senders_notification_t()
        assert M.mach_msg(n.not_header, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, ctypes.sizeof(n), notify, 10000,
                          0) == 0
        v = NM.mach_notify_no_senders_request.unpack(n)
        assert (v["msgh_id"], v["msgh_size"], v["NDR"], v["mscount"]) == (
            M.MACH_NOTIFY_NO_SENDERS, NM.mach_notify_no_senders_request.size, NM.NDR_RECORD, 1)
        assert (n.not_header.msgh_id, n.not_count) == (M.MACH_NOTIFY_NO_SENDERS, 1)
    finally:
        M.mach_port_destroy(task, port)
        M.mach_port_destroy(task, notify)


# -- bootstrap.defs --------------------------------------------------------------------------------------

def test_bootstrap_defs_keeps_the_wire_layouts() -> None:
    """The ids of the classic subsystem 400 and the layouts that the
    bootstrap messages had, now from bootstrap.defs."""
    assert (BMIG.BASE, BMIG.bootstrap_check_in_id, BMIG.bootstrap_register_id, BMIG.bootstrap_look_up_id,
            BMIG.bootstrap_status_id, BMIG.bootstrap_create_service_id, BMIG.bootstrap_list_id) == (
        400, 402, 403, 404, 407, 410, 420)
    lay = {k: (m.size, [f[:3] for f in m.fields]) for k, m in _messages(BMIG).items()}
    name_req = (160, [("Head", 0, 24), ("NDR", 24, 8), ("service_name", 32, 128)])
    port_reply = (40, [("Head", 0, 24), ("msgh_body", 24, 4), ("service_port", 28, 12)])
    for rt in ("check_in", "look_up", "status", "create_service"):
        assert lay[f"bootstrap_{rt}_request"] == name_req
    for rt in ("check_in", "look_up", "create_service"):
        assert lay[f"bootstrap_{rt}_reply"] == port_reply
    assert lay["bootstrap_register_request"] == (176, [("Head", 0, 24), ("msgh_body", 24, 4),
                                                       ("service_port", 28, 12), ("NDR", 40, 8),
                                                       ("service_name", 48, 128)])
    assert lay["bootstrap_register_reply"] == (36, [("Head", 0, 24), ("NDR", 24, 8), ("RetCode", 32, 4)])
    assert lay["bootstrap_status_reply"] == (40, [("Head", 0, 24), ("NDR", 24, 8), ("RetCode", 32, 4),
                                                  ("service_active", 36, 4)])
    assert lay["bootstrap_list_request"] == (24, [("Head", 0, 24)])
    assert lay["bootstrap_list_reply"] == (56, [("Head", 0, 24), ("msgh_body", 24, 4), ("services", 28, 16),
                                                ("NDR", 44, 8), ("servicesCnt", 52, 4)])
    # an element of the list is the C struct the .defs declares (34 words)
    assert ctypes.sizeof(D.bootstrap_service_info_t) == 34 * 4
    for cls, msg in ((D.bootstrap_name_request_t, BMIG.bootstrap_look_up_request),
                     (D.bootstrap_register_request_t, BMIG.bootstrap_register_request),
                     (D.bootstrap_list_request_t, BMIG.bootstrap_list_request),
                     (D.bootstrap_port_reply_t, BMIG.bootstrap_check_in_reply),
                     (D.bootstrap_status_reply_t, BMIG.bootstrap_status_reply),
                     (D.bootstrap_list_reply_t, BMIG.bootstrap_list_reply)):
        _layouts.check_struct(cls, msg)
        assert ctypes.sizeof(cls) == msg.size


def test_the_bootstrap_stubs_build_mig_requests() -> None:
    msg = BMIG.bootstrap_register(0x103, b"com.example.x", 0x207, reply_port=0x30b)
    h = M.mach_msg_header_t.from_buffer_copy(msg)
    assert (h.msgh_bits, h.msgh_size, h.msgh_remote_port, h.msgh_local_port, h.msgh_id) == (
        M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND_ONCE) | M.MACH_MSGH_BITS_COMPLEX,
        176, 0x103, 0x30b, 403)
    r = D.bootstrap_register_request_t.from_buffer_copy(msg)
    assert (r.msgh_body.msgh_descriptor_count, r.service_port.name, r.service_port.disposition,
            r.service_port.type) == (1, 0x207, M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_PORT_DESCRIPTOR)
    assert bytes(r.NDR) == D.NDR_RECORD and r.service_name == b"com.example.x"
    with pytest.raises(ValueError):
        BMIG.bootstrap_look_up(1, b"x" * 129)
    with pytest.raises(TypeError):
        BMIG.bootstrap_look_up_request.pack(no_such_field=1)


# -- netname.defs -----------------------------------------------------------------------------------------

def test_netname_defs_is_mach_3s_subsystem_1040() -> None:
    """netname_check_in 1040, netname_look_up 1041, netname_check_out 1042,
    netname_version 1043 (Mach 3's netmsgserver), names in 80 bytes."""
    from pymach.mach import netname_mig as NMIG
    assert (NMIG.BASE, NMIG.netname_check_in_id, NMIG.netname_look_up_id, NMIG.netname_check_out_id,
            NMIG.netname_version_id) == (1040, 1040, 1041, 1042, 1043)
    lay = {k: (m.size, [f[:3] for f in m.fields]) for k, m in _messages(NMIG).items()}
    assert lay["netname_look_up_request"] == (192, [("Head", 0, 24), ("NDR", 24, 8), ("host_name", 32, 80),
                                                    ("port_name", 112, 80)])
    assert lay["netname_check_in_request"] == (140, [("Head", 0, 24), ("msgh_body", 24, 4), ("signature", 28, 12),
                                                     ("port_id", 40, 12), ("NDR", 52, 8), ("port_name", 60, 80)])
    assert lay["netname_look_up_reply"] == (40, [("Head", 0, 24), ("msgh_body", 24, 4), ("port_id", 28, 12)])
    assert lay["netname_version_reply"][0] == 116


# -- the -static output kind ---------------------------------------------------------------------------

class Echo:
    def echo_add(self, server: int, a: int) -> int:
        return a + 1

    def echo_scalars(self, server: int, a: int, w: int, c: int) -> tuple[int, int]:
        return w * 2, c + a

    def echo_poly(self, server: int, port: tuple[int, int]) -> tuple[int, int]:
        return port

    def echo_note(self, server: int, a: int) -> None:
        pass

    def echo_fail(self, server: int, code: int) -> int:
        raise M.MachError(code)


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, Any]:
    pytest.importorskip("pcpp")
    from pymach import mig
    from pymach.tools import main
    out = tmp_path_factory.mktemp("static") / "echo_static.py"
    assert main(["mig", "-I", str(HERE / "include"), "-static", str(out), str(HERE / "echo.defs")]) == 0
    return _import(out), mig.load(str(HERE / "echo.defs"), include=[str(HERE / "include")])


def test_static_messages_are_the_compilers_layouts(echo: tuple[ModuleType, Any]) -> None:
    mod, iface = echo
    sub = iface.subsystem
    assert (mod.SUBSYSTEM, mod.BASE, mod.MSG_COUNT, mod.REPLY_ID_DELTA) == (sub.name, sub.base, sub.count, 100)
    for rt in sub.routines:
        assert getattr(mod, f"{rt.name}_id") == rt.id
        for lay, what in ((rt.request, "request"), (rt.reply, "reply")):
            if what == "reply" and rt.simple:
                assert not hasattr(mod, f"{rt.name}_reply")
                continue
            msg = getattr(mod, f"{rt.name}_{what}")
            assert (msg.size, msg.min_size, msg.complex, msg.descriptors) == (
                lay.size, lay.min_size, lay.complex, lay.descriptors)
            assert [f[:4] for f in msg.fields] == [(f.name, f.offset, f.size, f.kind) for f in lay.fields]
            variable = any(f.kind == "variable" for f in lay.fields)
            assert (msg.struct is None) == variable, rt.name
            if msg.struct is not None:
                assert msg.struct.size == lay.size
    # a message with a variable array has no struct: pack says so
    with pytest.raises(TypeError):
        mod.echo_arrays_request.pack()
    # descriptors are split into their parts, with mig's defaults
    ool = mod.echo_ool_request
    v = ool.unpack(ool.pack(data=0x1000, data_size=12, dataCnt=12))
    assert (v["data"], v["data_size"], v["data_type"], v["data_copy"], v["dataCnt"], v["msgh_body"]) == (
        0x1000, 12, M.MACH_MSG_OOL_DESCRIPTOR, M.MACH_MSG_VIRTUAL_COPY, 12, 1)
    assert v["msgh_bits"] == M.MACH_MSGH_BITS(M.MACH_MSG_TYPE_COPY_SEND,
                                              M.MACH_MSG_TYPE_MAKE_SEND_ONCE) | M.MACH_MSGH_BITS_COMPLEX
    # stubs only where the request is built from the arguments alone
    for name in ("echo_add", "echo_scalars", "echo_poly", "echo_whoami", "echo_note", "echo_fail"):
        assert callable(getattr(mod, name)), name
    for name in ("echo_arrays", "echo_ool", "echo_ports", "echo_port_list", "echo_strings"):
        assert not hasattr(mod, name), name


def _exchange(msg: bytes, reply_msg: Any, reply_port: int) -> dict[str, Any]:
    buf = ctypes.create_string_buffer(msg, len(msg))
    assert M.mach_msg(buf, M.MACH_SEND_MSG | M.MACH_SEND_TIMEOUT, len(msg), 0, 0, 10000, 0) == 0
    rcv = (ctypes.c_char * 512)()
    assert M.mach_msg(rcv, M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, 0, 512, reply_port, 10000, 0) == 0
    h = M.mach_msg_header_t.from_buffer(rcv)
    if h.msgh_size == 36 and not h.msgh_bits & M.MACH_MSGH_BITS_COMPLEX and reply_msg.size != 36:
        return {"RetCode": M.mig_reply_error_t.from_buffer(rcv).RetCode, "msgh_id": h.msgh_id}
    assert h.msgh_size == reply_msg.size
    return dict(reply_msg.unpack(rcv))


def test_a_right_moved_back_while_its_sender_finishes_keeps_its_count(echo: tuple[ModuleType, Any]) -> None:
    """The server thread's reply moves a send right (MOVE_SEND) that the
    client thread, in the same task, receives under the same name while
    the send is still consuming the moved reference: the two counts must
    not cross (a lost update left the name with no send right, about once
    in a thousand round trips)."""
    _mod, iface = echo
    task = T()
    port, other = M.mach_port_t(), M.mach_port_t()
    for p in (port, other):
        assert M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, byref(p)) == 0
    assert M.mach_port_insert_right(task, port, port, M.MACH_MSG_TYPE_MAKE_SEND) == 0
    lost = 0
    try:
        with iface.serve(Echo(), port.value):
            for _ in range(3000):
                name, _disp = iface.echo_poly(port.value, (other.value, M.MACH_MSG_TYPE_MAKE_SEND))
                assert name == other.value
                lost += M.mach_port_deallocate(task, other) != 0
    finally:
        M.mach_port_destroy(task, other)
        M.mach_port_destroy(task, port)
        M.mig_dealloc_reply_port(M.mig_get_reply_port())  # the client's, made by its first request
    assert lost == 0


def test_static_stubs_talk_to_a_generated_server(echo: tuple[ModuleType, Any]) -> None:
    """Requests that the -static stubs build are served by the run-time
    server of the same .defs, and the replies read back with the -static
    layouts."""
    mod, iface = echo
    task = T()
    port, reply, other = M.mach_port_t(), M.mach_port_t(), M.mach_port_t()
    for p in (port, reply, other):
        assert M.mach_port_allocate(task, M.MACH_PORT_RIGHT_RECEIVE, byref(p)) == 0
    assert M.mach_port_insert_right(task, port, port, M.MACH_MSG_TYPE_MAKE_SEND) == 0
    try:
        with iface.serve(Echo(), port.value):
            r = _exchange(mod.echo_add(port.value, 41, reply_port=reply.value), mod.echo_add_reply, reply.value)
            assert (r["msgh_id"], r["RetCode"], r["sum"]) == (7200, 0, 42)
            r = _exchange(mod.echo_scalars(port.value, 3, -(1 << 40), 5, reply_port=reply.value),
                          mod.echo_scalars_reply, reply.value)
            assert (r["b"], r["c"]) == (-(1 << 41), 8)
            r = _exchange(mod.echo_fail(port.value, M.KERN_INVALID_ARGUMENT, reply_port=reply.value),
                          mod.echo_fail_reply, reply.value)
            assert (r["msgh_id"], r["RetCode"]) == (mod.echo_fail_id + 100, M.KERN_INVALID_ARGUMENT)
            r = _exchange(mod.echo_poly(port.value, other.value, M.MACH_MSG_TYPE_MAKE_SEND, reply_port=reply.value),
                          mod.echo_poly_reply, reply.value)
            assert (r["rport"], r["rport_disposition"], r["rport_type"]) == (
                other.value, M.MACH_MSG_TYPE_PORT_SEND, M.MACH_MSG_PORT_DESCRIPTOR)
            assert M.mach_port_deallocate(task, other) == 0
    finally:
        for p in (port, reply, other):
            M.mach_port_destroy(task, p)


def test_the_command_writes_a_static_module(tmp_path: Path) -> None:
    pytest.importorskip("pcpp")
    from pymach.tools import main
    out = tmp_path / "layout_static.py"
    assert main(["mig", "-q", "-I", str(HERE / "include"), "-static", str(out), str(HERE / "layout.defs")]) == 0
    mod = _import(out)
    assert mod.SUBSYSTEM == "layout" and mod.scalars_id == 2000
    assert os.path.basename(str(HERE / "layout.defs")) in out.read_text().splitlines()[0]
