"""Faults become exception messages that a handler answers (pymach.exc_tracer):
the reply decides whether the faulting thread retries (KERN_SUCCESS, with
the new state of a STATE reply) or the fault goes on to the next level and
finally to the signal, and nothing is left stopped when a handler or a
target dies. Every case runs in a fork child: the target task."""

from __future__ import annotations

import ctypes
import mmap
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

import pymach.mach as M
from pymach.mach import byref
from pymach.mig.exc import exc_server, mach_exc_server
from procutil import child_exit_code, run_in_child

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64 only")

T = M.mach_task_self
PAGE = mmap.PAGESIZE
STORE = b"\x48\x89\x37\xc3"  # mov [rdi], rsi ; ret
BREAK = b"\xcc\xc3"  # int3 ; ret
DIV0 = b"\x31\xc9\xb8\x01\x00\x00\x00\x99\xf7\xf9\xc3"  # xor ecx,ecx; mov eax,1; cdq; idiv ecx; ret
RIP = 16 * 2  # x86_THREAD_STATE64: rip is the 17th 64-bit field, at natural_t index 32
_keep: list[Any] = []


def _code(blob: bytes) -> Callable[..., int]:
    m = mmap.mmap(-1, PAGE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    m.write(blob)
    _keep.append(m)
    fn = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p, ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(m)))
    _keep.append(fn)
    return fn


def _page(prot: int) -> int:
    a = M.mach_vm_address_t(0)
    assert M.mach_vm_allocate(T(), byref(a), PAGE, M.VM_FLAGS_ANYWHERE) == 0
    assert M.mach_vm_protect(T(), a.value, PAGE, 0, prot) == 0
    return a.value


def _port() -> int:
    p = M.mach_port_t()
    assert M.mach_port_allocate(T(), M.MACH_PORT_RIGHT_RECEIVE, byref(p)) == 0
    assert M.mach_port_insert_right(T(), p.value, p.value, M.MACH_MSG_TYPE_MAKE_SEND) == 0
    return p.value


def _skip(state: list[int], n: int) -> list[int]:
    new = list(state)
    rip = (state[RIP] | state[RIP + 1] << 32) + n
    new[RIP], new[RIP + 1] = rip & 0xFFFFFFFF, rip >> 32
    return new


class Handler:
    """Answers mach_exc messages: lifts a page's protection, or skips the
    faulting instruction, or fails; records what it saw."""

    def __init__(self, lift: int = 0, skip: int = 0, kr: int = 0) -> None:
        self.lift, self.skip, self.kr = lift, skip, kr
        self.seen: list[tuple[Any, ...]] = []

    def _done(self, *ports: int) -> None:
        if self.kr:
            # a routine that fails has taken nothing: the server destroys the request
            raise M.MachError(self.kr, "the handler declines")
        for p in ports:
            if p:
                M.mach_port_deallocate(T(), p)
        if self.lift:
            assert M.mach_vm_protect(T(), self.lift, PAGE, 0, M.VM_PROT_READ | M.VM_PROT_WRITE) == 0

    def catch_mach_exception_raise(self, port: int, thread: int, task: int, exception: int,
                                   code: list[int]) -> None:
        self.seen.append(("default", exception, list(code), task == T(), bool(thread)))
        self._done(thread, task)

    def catch_mach_exception_raise_state(self, port: int, exception: int, code: list[int], flavor: int,
                                         old_state: list[int]) -> tuple[int, list[int]]:
        self.seen.append(("state", exception, list(code), flavor))
        self._done()
        return flavor, _skip(old_state, self.skip) if self.skip else old_state

    def catch_mach_exception_raise_state_identity(self, port: int, thread: int, task: int, exception: int,
                                                  code: list[int], flavor: int,
                                                  old_state: list[int]) -> tuple[int, list[int]]:
        self.seen.append(("identity", exception, list(code), task == T(), flavor))
        self._done(thread, task)
        return flavor, _skip(old_state, self.skip) if self.skip else old_state


def _catching(mask: int, behavior: int, handler: Handler, level: str = "task") -> Callable[[], None]:
    """Serve ``handler`` on a new port in a thread and set it for ``mask``;
    the returned function clears the setting and stops the thread."""
    port = _port()
    serving = mach_exc_server.serve(handler, port)
    flavor = M.x86_THREAD_STATE64 if behavior & 0xFF != M.EXCEPTION_DEFAULT else M.THREAD_STATE_NONE
    if level == "task":
        assert M.task_set_exception_ports(T(), mask, port, behavior, flavor) == 0
    else:
        assert M.thread_set_exception_ports(M.mach_thread_self(), mask, port, behavior, flavor) == 0

    def stop() -> None:
        if level == "task":
            M.task_set_exception_ports(T(), mask, 0, M.EXCEPTION_DEFAULT, M.THREAD_STATE_NONE)
        serving.stop()
        M.mach_port_destroy(T(), port)
    return stop


def test_a_handler_lifts_the_protection_and_the_write_retries() -> None:
    def child() -> tuple[bytes, list[Any]]:
        page = _page(M.VM_PROT_NONE)
        h = Handler(lift=page)
        stop = _catching(M.EXC_MASK_BAD_ACCESS, M.EXCEPTION_STATE_IDENTITY | M.MACH_EXCEPTION_CODES, h)
        ctypes.memmove(page, b"Hello, Mach!", 12)
        stop()
        return ctypes.string_at(page, 12), h.seen

    text, seen = run_in_child(child)
    assert text == b"Hello, Mach!"
    ((kind, exc, code, own_task, flavor),) = seen
    assert (kind, exc, code[0], own_task, flavor) == ("identity", M.EXC_BAD_ACCESS, M.KERN_PROTECTION_FAILURE,
                                                      True, M.x86_THREAD_STATE64)
    assert code[1] != 0


def test_exception_default_carries_the_thread_and_task_ports() -> None:
    def child() -> list[Any]:
        page = _page(M.VM_PROT_READ)
        h = Handler(lift=page)
        stop = _catching(M.EXC_MASK_BAD_ACCESS, M.EXCEPTION_DEFAULT | M.MACH_EXCEPTION_CODES, h)
        _code(STORE)(page, 7)
        stop()
        return h.seen + [ctypes.c_long.from_address(page).value]

    *seen, value = run_in_child(child)
    assert value == 7
    assert seen[0][:2] == ("default", M.EXC_BAD_ACCESS) and seen[0][3:] == (True, True)


def test_new_state_skips_the_faulting_instructions() -> None:
    def child() -> list[Any]:
        h = Handler(skip=2)  # past idiv ecx (f7 f9)
        stop = _catching(M.EXC_MASK_ARITHMETIC | M.EXC_MASK_BREAKPOINT,
                         M.EXCEPTION_STATE | M.MACH_EXCEPTION_CODES, h)
        _code(DIV0)(0, 0)
        h.skip = 0  # int3 already points past itself
        _code(BREAK)(0, 0)
        stop()
        return h.seen

    seen = run_in_child(child)
    assert [(s[1], s[2][0]) for s in seen] == [(M.EXC_ARITHMETIC, M.EXC_I386_DIV), (M.EXC_BREAKPOINT, M.EXC_I386_BPT)]


def test_a_declined_fault_ends_as_the_signal() -> None:
    def child() -> None:
        page = _page(M.VM_PROT_NONE)
        _catching(M.EXC_MASK_BAD_ACCESS, M.EXCEPTION_STATE_IDENTITY | M.MACH_EXCEPTION_CODES,
                  Handler(kr=M.KERN_FAILURE))
        ctypes.memmove(page, b"x", 1)

    assert child_exit_code(child) == -signal.SIGSEGV


def test_a_fault_no_mask_covers_ends_as_the_signal() -> None:
    def child() -> None:
        page = _page(M.VM_PROT_NONE)
        _catching(M.EXC_MASK_ARITHMETIC, M.EXCEPTION_DEFAULT | M.MACH_EXCEPTION_CODES, Handler())
        ctypes.memmove(page, b"x", 1)

    assert child_exit_code(child) == -signal.SIGSEGV


def test_the_thread_declines_and_the_task_handles() -> None:
    def child() -> tuple[bytes, list[Any], list[Any]]:
        page = _page(M.VM_PROT_NONE)
        task_h, thread_h = Handler(lift=page), Handler(kr=M.KERN_FAILURE)
        stop_task = _catching(M.EXC_MASK_BAD_ACCESS, M.EXCEPTION_STATE_IDENTITY | M.MACH_EXCEPTION_CODES, task_h)
        stop_thread = _catching(M.EXC_MASK_BAD_ACCESS, M.EXCEPTION_DEFAULT | M.MACH_EXCEPTION_CODES, thread_h,
                                level="thread")
        ctypes.memmove(page, b"ok", 2)
        stop_thread()
        stop_task()
        return ctypes.string_at(page, 2), thread_h.seen, task_h.seen

    text, thread_seen, task_seen = run_in_child(child)
    assert text == b"ok" and len(thread_seen) == 1 and len(task_seen) == 1


def test_a_handler_that_dies_passes_the_fault_on() -> None:
    def child() -> None:
        page = _page(M.VM_PROT_NONE)
        port = _port()
        helper = os.fork()
        if helper == 0:  # pragma: no cover - the handler: takes the message and dies
            buf = ctypes.create_string_buffer(8192)
            M.mach_msg(buf, M.MACH_RCV_MSG, 0, 8192, port, 0, 0)
            os.kill(os.getpid(), signal.SIGKILL)
        M.mach_port_mod_refs(T(), port, M.MACH_PORT_RIGHT_RECEIVE, -1)  # the helper holds it now
        assert M.task_set_exception_ports(T(), M.EXC_MASK_BAD_ACCESS, port, M.EXCEPTION_DEFAULT, 0) == 0
        ctypes.memmove(page, b"x", 1)

    assert child_exit_code(child) == -signal.SIGSEGV


def test_a_target_killed_mid_exception_leaves_no_tracer() -> None:
    r, w = os.pipe()

    def child() -> None:
        os.close(r)
        page = _page(M.VM_PROT_NONE)
        port = _port()  # nobody answers
        assert M.task_set_exception_ports(T(), M.EXC_MASK_BAD_ACCESS, port, M.EXCEPTION_DEFAULT, 0) == 0
        os.write(w, b"%d\n" % os.getpid())
        ctypes.memmove(page, b"x", 1)

    pid = os.fork()
    if pid == 0:  # pragma: no cover
        child()
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        assert int(f.readline()) == pid
    deadline = time.monotonic() + 10
    tracer = 0
    while time.monotonic() < deadline and not tracer:
        with open(f"/proc/{pid}/status") as st:
            tracer = int([x for x in st if x.startswith("TracerPid:")][0].split()[1])
        time.sleep(0.01)
    assert tracer
    time.sleep(0.2)  # the fault is waiting for an answer
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{tracer}") and \
            open(f"/proc/{tracer}/stat").read().split()[2] != "Z":
        time.sleep(0.01)
    assert not os.path.exists(f"/proc/{tracer}") or open(f"/proc/{tracer}/stat").read().split()[2] == "Z"


def test_clearing_the_last_port_stops_the_tracer() -> None:
    def child() -> tuple[int, int]:
        stop = _catching(M.EXC_MASK_BAD_ACCESS, M.EXCEPTION_DEFAULT, Handler())
        with open("/proc/self/status") as st:
            traced = int([x for x in st if x.startswith("TracerPid:")][0].split()[1])
        stop()
        with open("/proc/self/status") as st:
            after = int([x for x in st if x.startswith("TracerPid:")][0].split()[1])
        return traced, after

    traced, after = run_in_child(child)
    assert traced and after == 0


def test_a_fork_child_inherits_the_ports_and_its_faults_are_caught() -> None:
    def child() -> list[Any]:
        h = Handler(skip=3)  # past mov [rdi], rsi
        stop = _catching(M.EXC_MASK_BAD_ACCESS, M.EXCEPTION_STATE | M.MACH_EXCEPTION_CODES, h)
        grandchild = os.fork()
        if grandchild == 0:  # pragma: no cover - inherits the task's exception ports
            _code(STORE)(_page(M.VM_PROT_READ), 1)
            os._exit(11)
        _, status = os.waitpid(grandchild, 0)
        stop()
        return [os.waitstatus_to_exitcode(status)] + h.seen

    code, *seen = run_in_child(child)
    assert code == 11
    assert len(seen) == 1 and seen[0][1] == M.EXC_BAD_ACCESS


def test_a_program_that_is_not_python_is_caught(tmp_path: Any) -> None:
    # the target is a shell running a program that faults on request: its
    # task port is taken with task_for_pid, and its tracer is this process's
    prog = subprocess.Popen(["python3", "-c", "import sys, ctypes; sys.stdin.readline(); ctypes.string_at(16)"],
                            stdin=subprocess.PIPE, text=True)
    try:
        task = M.mach_port_t()
        assert M.task_for_pid(T(), prog.pid, byref(task)) == 0
        h = Handler(skip=0)
        port = _port()
        serving = exc_server.serve(_Plain(h), port)
        assert M.task_set_exception_ports(task.value, M.EXC_MASK_BAD_ACCESS, port, M.EXCEPTION_DEFAULT, 0) == 0
        prog.stdin.write("go\n")  # type: ignore[union-attr]
        prog.stdin.flush()  # type: ignore[union-attr]
        deadline = time.monotonic() + 15
        while not h.seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert h.seen and h.seen[0][:2] == ("default", M.EXC_BAD_ACCESS)
        assert h.seen[0][2] == [M.KERN_INVALID_ADDRESS, 16]
        assert prog.wait(15) == -signal.SIGSEGV
        M.task_set_exception_ports(task.value, M.EXC_MASK_BAD_ACCESS, 0, M.EXCEPTION_DEFAULT, 0)
        serving.stop()
        M.mach_port_destroy(T(), port)
        M.mach_port_deallocate(T(), task.value)
    finally:
        prog.kill()
        prog.wait()


class _Plain:
    """exc.defs' EXCEPTION_DEFAULT (32-bit codes): records and declines."""

    def __init__(self, h: Handler) -> None:
        self.h = h

    def catch_exception_raise(self, port: int, thread: int, task: int, exception: int, code: list[int]) -> None:
        self.h.seen.append(("default", exception, list(code), False, bool(thread)))
        raise M.MachError(M.KERN_FAILURE, "recorded")  # (the server destroys the request)


# -- the Pythonic layer -------------------------------------------------------------------

def test_catch_exceptions_calls_a_python_handler_whose_answer_is_the_reply() -> None:
    import pymach

    def child() -> tuple[bytes, list[str], int]:
        page = _page(M.VM_PROT_NONE)
        seen: list[str] = []

        def handler(exc: pymach.MachException) -> Any:
            seen.append(f"{exc.name}:{exc.address == page + 8}:{exc.code == M.KERN_PROTECTION_FAILURE}")
            assert M.mach_vm_protect(exc.task, page, PAGE, 0, M.VM_PROT_DEFAULT) == 0
            return True

        with pymach.catch_exceptions(None, pymach.EXC_MASK_BAD_ACCESS, handler):
            ctypes.memmove(page + 8, b"caught", 6)
        # the setting is gone with the catcher: a fault now ends as the signal would
        status = child_exit_code(lambda: ctypes.memmove(_page(M.VM_PROT_NONE), b"x", 1))
        return ctypes.string_at(page + 8, 6), seen, status

    text, seen, status = run_in_child(child)
    assert text == b"caught" and seen == ["EXC_BAD_ACCESS:True:True"] and status == -signal.SIGSEGV


def test_a_python_handler_can_change_the_registers_or_decline() -> None:
    import pymach

    def child() -> tuple[int, int]:
        def skip(exc: pymach.MachException) -> Any:
            return {"rip": exc.state["rip"] + 2}  # past idiv ecx

        with pymach.catch_exceptions(pymach.Task.self(), pymach.EXC_MASK_ARITHMETIC, skip):
            _code(DIV0)(0, 0)

        def declines() -> None:
            with pymach.catch_exceptions(None, pymach.EXC_MASK_ARITHMETIC, lambda exc: None):
                _code(DIV0)(0, 0)
        return 1, child_exit_code(declines)

    assert run_in_child(child) == (1, -signal.SIGFPE)


# -- every behavior, with and without MACH_EXCEPTION_CODES; every type; threads; the host --

class _Narrow:
    """exc.defs' messages (32-bit codes): skip the faulting instruction."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.seen: list[tuple[str, int, list[int]]] = []

    def catch_exception_raise(self, port: int, thread: int, task: int, exception: int, code: list[int]) -> None:
        self.seen.append(("default", exception, list(code)))
        raise M.MachError(M.KERN_FAILURE, "declined")

    def catch_exception_raise_state(self, port: int, exception: int, code: list[int], flavor: int,
                                    old_state: list[int]) -> tuple[int, list[int]]:
        self.seen.append(("state", exception, list(code)))
        return flavor, _skip(old_state, self.skip)

    def catch_exception_raise_state_identity(self, port: int, thread: int, task: int, exception: int,
                                             code: list[int], flavor: int,
                                             old_state: list[int]) -> tuple[int, list[int]]:
        self.seen.append(("identity", exception, list(code)))
        M.mach_port_deallocate(T(), thread)
        M.mach_port_deallocate(T(), task)
        return flavor, _skip(old_state, self.skip)


UD2_SKIP = 2


@pytest.mark.parametrize("behavior", [M.EXCEPTION_STATE, M.EXCEPTION_STATE_IDENTITY])
def test_the_32_bit_messages(behavior: int) -> None:
    def child() -> list[Any]:
        h = _Narrow(UD2_SKIP)
        port = _port()
        serving = exc_server.serve(h, port)
        assert M.task_set_exception_ports(T(), M.EXC_MASK_BAD_INSTRUCTION, port, behavior,
                                          M.x86_THREAD_STATE64) == 0
        _code(UD2)(0, 0)  # ud2 is skipped: the function returns
        M.task_set_exception_ports(T(), M.EXC_MASK_BAD_INSTRUCTION, 0, M.EXCEPTION_DEFAULT, 0)
        serving.stop()
        M.mach_port_destroy(T(), port)
        return h.seen

    (seen,) = run_in_child(child)
    assert seen[1:] == (M.EXC_BAD_INSTRUCTION, [M.EXC_I386_INVOP, 0])


UD2 = b"\x0f\x0b\xc3"


def test_a_thread_made_after_the_set_is_caught() -> None:
    import threading

    def child() -> tuple[bytes, int]:
        page = _page(M.VM_PROT_NONE)
        h = Handler(lift=page)
        stop = _catching(M.EXC_MASK_BAD_ACCESS, M.EXCEPTION_STATE_IDENTITY | M.MACH_EXCEPTION_CODES, h)
        t = threading.Thread(target=lambda: ctypes.memmove(page, b"late", 4))
        t.start()
        t.join(30)
        stop()
        return ctypes.string_at(page, 4), len(h.seen)

    assert run_in_child(child) == (b"late", 1)


@pytest.mark.skipif(os.geteuid() != 0, reason="host_set_exception_ports needs host_priv")
def test_the_host_level_catches_what_the_task_does_not() -> None:
    def child() -> tuple[bytes, int]:
        page = _page(M.VM_PROT_NONE)
        h = Handler(lift=page)
        port = _port()
        serving = mach_exc_server.serve(h, port)
        assert M.host_set_exception_ports(M.mach_host_self(), M.EXC_MASK_BAD_ACCESS, port,
                                          M.EXCEPTION_DEFAULT | M.MACH_EXCEPTION_CODES, 0) == 0
        ctypes.memmove(page, b"host", 4)
        M.host_set_exception_ports(M.mach_host_self(), M.EXC_MASK_BAD_ACCESS, 0, M.EXCEPTION_DEFAULT, 0)
        serving.stop()
        M.mach_port_destroy(T(), port)
        return ctypes.string_at(page, 4), len(h.seen)

    assert run_in_child(child) == (b"host", 1)


def test_a_faults_signal_a_process_sends_is_exc_software_for_a_task_that_asks() -> None:
    h = Handler()
    declines = Handler(kr=M.KERN_FAILURE)
    port, port2 = _port(), _port()
    serving, serving2 = mach_exc_server.serve(h, port), mach_exc_server.serve(declines, port2)
    assert M.mach_ports_register(T(), (M.mach_port_t * 2)(port, port2), 2) == 0
    try:
        def child(which: int) -> Callable[[], None]:
            def run() -> None:
                ports, n = M.mach_port_array_t(), M.mach_msg_type_number_t()
                assert M.mach_ports_lookup(T(), byref(ports), byref(n)) == 0
                assert M.task_set_exception_ports(T(), M.EXC_MASK_SOFTWARE, ports[which],
                                                  M.EXCEPTION_DEFAULT | M.MACH_EXCEPTION_CODES, 0) == 0
                os.kill(os.getpid(), signal.SIGSEGV)  # a fault's signal with no fault: its default ends us
            return run

        assert child_exit_code(child(0)) == 0  # the handler answered KERN_SUCCESS: the signal is discarded
        assert child_exit_code(child(1)) == -signal.SIGSEGV  # declined: delivered
        assert [(s[1], s[2]) for s in h.seen] == [(M.EXC_SOFTWARE, [M.EXC_SOFT_SIGNAL, signal.SIGSEGV])]
        assert len(declines.seen) == 1
    finally:
        M.mach_ports_register(T(), (M.mach_port_t * 1)(), 0)
        serving.stop()
        serving2.stop()
        M.mach_port_destroy(T(), port)
        M.mach_port_destroy(T(), port2)


# -- pymach.spawn: the program's faults go to the task's ports from its first instruction --

SPAWNED_SETS_ITS_OWN = """
import ctypes, mmap, pymach
page = mmap.mmap(-1, 4096)
addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
task = pymach.Task.self()
task.protect(addr, 4096, pymach.VM_PROT_READ)
def handler(exc):
    task.protect(addr, 4096, pymach.VM_PROT_DEFAULT)
    return True
with pymach.catch_exceptions(task, pymach.EXC_MASK_BAD_ACCESS, handler):
    ctypes.memmove(addr, b"own", 3)
print(page[:3].decode())
"""


def test_a_spawned_program_inherits_the_ports_and_its_faults_are_caught() -> None:
    import sys

    import pymach

    def child() -> tuple[int, list[Any], int, str]:
        h = Handler(kr=M.KERN_FAILURE)  # records, declines: the program dies of its fault
        stop = _catching(M.EXC_MASK_BAD_ACCESS, M.EXCEPTION_DEFAULT | M.MACH_EXCEPTION_CODES, h)
        p = pymach.spawn([sys.executable, "-c", "import ctypes; ctypes.string_at(16)"])
        faulted = p.wait(60)
        # a pymach program adopts the tracer its parent started, and sets ports of its own
        q = pymach.spawn([sys.executable, "-c", SPAWNED_SETS_ITS_OWN], stdout=subprocess.PIPE, text=True)
        out, _err = q.communicate(timeout=60)
        stop()
        return faulted, h.seen, q.returncode, out

    faulted, seen, rc, out = run_in_child(child)
    assert faulted == -signal.SIGSEGV
    assert [(s[1], s[2]) for s in seen] == [(M.EXC_BAD_ACCESS, [M.KERN_INVALID_ADDRESS, 16])]
    assert (rc, out) == (0, "own\n")
