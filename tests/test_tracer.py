"""The fault tracer (pymach._linux.tracer), the engine under exception
ports: a tracer process seizes every thread of a target process and sees
its faults before the target's signal handlers do; resuming without the
signal retries the instruction (with new registers if given), resuming
with it ends as if untraced, and a tracer that dies leaves nothing
stopped."""

from __future__ import annotations

import ctypes
import faulthandler
import mmap
import os
import signal
import threading
from collections.abc import Callable

import pytest

from pymach._linux import ptrace
from pymach._linux.tracer import Stop, Tracer

pytestmark = pytest.mark.skipif(not ptrace.ARCH_SUPPORTED, reason="x86_64 only")

# mov [rdi], rsi ; ret  -- a store through the first argument, 3 bytes then ret
STORE = b"\x48\x89\x37\xc3"
# int3 ; ret
BREAK = b"\xcc\xc3"


def _code(blob: bytes) -> Callable[..., int]:
    m = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    m.write(blob)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    fn = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p, ctypes.c_long)(addr)
    fn._keep = m  # type: ignore[attr-defined]
    return fn


_PAGES: list[mmap.mmap] = []
_libc = ctypes.CDLL(None, use_errno=True)


def _none_page() -> int:
    """A page of ours that nobody may touch (PROT_NONE)."""
    m = mmap.mmap(-1, mmap.PAGESIZE)
    _PAGES.append(m)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    assert _libc.mprotect(ctypes.c_void_p(addr), mmap.PAGESIZE, 0) == 0
    return addr


def _run(target: Callable[[], int], decide: Callable[[Tracer, Stop], int | None],
         die_on_fault: bool = False) -> tuple[int, list[Stop]]:
    """Fork a target running ``target()`` (its return is its exit code)
    in a thread of its own, trace it from a forked tracer process, and
    let ``decide`` answer each fault (the signal to resume with, or None:
    0). The target's wait status, and the stops the tracer saw."""
    go_r, go_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the target
        os.close(go_w)
        os.close(rep_r)
        os.read(go_r, 1)  # until the tracer has seized us
        faulthandler.disable()  # the faults end as the kernel ends them
        for sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE):
            signal.signal(sig, signal.SIG_DFL)
        box: list[int] = []
        t = threading.Thread(target=lambda: box.append(target()))
        t.start()
        t.join()
        os._exit(box[0] if box else 99)
    os.close(go_r)
    tracer = os.fork()
    if tracer == 0:  # pragma: no cover - the tracer
        seen: list[str] = []
        try:
            tr = Tracer(pid)
            tr.attach()
            os.write(go_w, b"g")
            while True:
                st = tr.wait()
                assert st is not None
                if st.kind == "exit" and st.tid == pid:
                    break
                if st.kind == "exit":
                    continue
                seen.append(f"{st.kind}:{st.signo}:{st.code}:{st.addr:#x}")
                if st.fault:
                    if die_on_fault:
                        os.kill(os.getpid(), signal.SIGKILL)
                    sig = decide(tr, st)
                    tr.resume(st, st.signo if sig is None else sig)
                else:
                    tr.resume(st, st.signo if st.kind == "signal" else 0)
        finally:
            os.write(rep_w, "\n".join(seen).encode())
            os._exit(0)
    os.close(go_w)
    os.close(rep_w)
    _, status = os.waitpid(pid, 0)
    os.waitpid(tracer, 0)
    with os.fdopen(rep_r, "rb") as f:
        seen = [line.split(":") for line in f.read().decode().splitlines() if line]
    stops = [Stop(0, k, int(s), int(c), int(a, 16)) for k, s, c, a in seen]
    return status, stops


def test_a_breakpoint_is_seen_and_resumed() -> None:
    def target() -> int:
        return 7 if _code(BREAK)(0, 0) is not None else 1

    status, stops = _run(target, lambda tr, st: 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7
    faults = [s for s in stops if s.kind == "signal" and s.signo == signal.SIGTRAP]
    assert len(faults) == 1 and faults[0].code == 0x80  # SI_KERNEL: int3


def test_new_registers_skip_the_faulting_store() -> None:
    def target() -> int:
        page = _none_page()
        _code(STORE)(page, 42)
        return 5

    def skip(tr: Tracer, st: Stop) -> int:
        regs = tr.get_regs(st.tid)
        regs.rip += 3  # past mov [rdi], rsi
        tr.set_regs(st.tid, regs)
        return 0

    status, stops = _run(target, skip)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 5
    (fault,) = [s for s in stops if s.kind == "signal"]
    assert fault.signo == signal.SIGSEGV and fault.code == 2 and fault.addr  # SEGV_ACCERR, the page


def test_a_fault_passed_on_ends_as_untraced() -> None:
    def target() -> int:
        _code(STORE)(_none_page(), 1)
        return 0

    status, stops = _run(target, lambda tr, st: None)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV
    assert [s.signo for s in stops if s.kind == "signal"] == [signal.SIGSEGV]


def test_a_tracer_that_dies_mid_fault_leaves_nothing_stopped() -> None:
    def target() -> int:
        _code(STORE)(_none_page(), 1)
        return 0

    status, _stops = _run(target, lambda tr, st: 0, die_on_fault=True)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV


def test_detach_lets_every_thread_go() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the target
        os.close(w)
        threading.Thread(target=lambda: os.read(r, 1), daemon=True).start()
        os.read(r, 1)
        os._exit(3)
    os.close(r)
    tracer = os.fork()
    if tracer == 0:  # pragma: no cover - the tracer
        code = 1
        try:
            tr = Tracer(pid)
            tr.attach()
            code = 0 if len(tr.tids) >= 2 else 2
            tr.detach()
            state, traced_by = ptrace.proc_state(pid)
            code = code or (0 if traced_by == 0 else 4)
        finally:
            os._exit(code)
    _, st = os.waitpid(tracer, 0)
    os.write(w, b"xx")
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(st) == 0
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3


# -- each fault as the Mach exception XNU gives ----------------------------------------------

from pymach._kern import exc_codes as X  # noqa: E402
from pymach._kern import kern_return as K  # noqa: E402

UD2 = b"\x0f\x0b\xc3"
DIV0 = b"\x31\xc9\xb8\x01\x00\x00\x00\x99\xf7\xf9\xc3"  # xor ecx,ecx; mov eax,1; cdq; idiv ecx; ret


def _bus_page() -> int:
    """A shared mapping of an empty file: its page is past the file's end."""
    import tempfile
    f = tempfile.TemporaryFile()
    _libc.mmap.restype = ctypes.c_void_p
    addr = _libc.mmap(None, mmap.PAGESIZE, 3, 1, f.fileno(), 0)  # PROT_READ|WRITE, MAP_SHARED
    assert addr not in (None, ctypes.c_void_p(-1).value)
    _FILES.append(f)
    return int(addr)


_FILES: list[object] = []

CASES = {
    "unmapped": (lambda: _code(STORE)(0x10, 1), signal.SIGSEGV, (X.EXC_BAD_ACCESS, K.KERN_INVALID_ADDRESS, 0x10)),
    "protected": (lambda: _code(STORE)(_none_page(), 1), signal.SIGSEGV,
                  (X.EXC_BAD_ACCESS, K.KERN_PROTECTION_FAILURE, None)),
    "non-canonical": (lambda: _code(STORE)(0x8000_0000_0000_0000, 1), signal.SIGSEGV,
                      (X.EXC_BAD_ACCESS, X.EXC_I386_GPFLT, 0)),
    "past the file": (lambda: _code(STORE)(_bus_page(), 1), signal.SIGBUS,
                      (X.EXC_BAD_ACCESS, K.KERN_MEMORY_ERROR, None)),
    "ud2": (lambda: _code(UD2)(0, 0), signal.SIGILL, (X.EXC_BAD_INSTRUCTION, X.EXC_I386_INVOP, 0)),
    "division": (lambda: _code(DIV0)(0, 0), signal.SIGFPE, (X.EXC_ARITHMETIC, X.EXC_I386_DIV, 0)),
    "int3": (lambda: _code(BREAK)(0, 0), signal.SIGTRAP, (X.EXC_BREAKPOINT, X.EXC_I386_BPT, 0)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_fault_is_the_exception_xnu_raises(case: str) -> None:
    fault, signo, want = CASES[case]

    def target() -> int:
        fault()
        return 0

    status, stops = _run(target, lambda tr, st: None)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signo
    (st,) = [s for s in stops if s.kind == "signal"]
    exc, code, sub = X.exception_of(st.signo, st.code, st.addr)
    assert (exc, code) == want[:2]
    assert sub == (st.addr if want[2] is None else want[2]) and (want[2] is not None or sub)


def test_a_signal_a_process_sends_is_exc_software() -> None:
    assert X.exception_of(signal.SIGUSR1, 0, 0) == (X.EXC_SOFTWARE, X.EXC_SOFT_SIGNAL, signal.SIGUSR1)
    assert X.exception_of(signal.SIGSEGV, -6, 0) == (X.EXC_SOFTWARE, X.EXC_SOFT_SIGNAL, signal.SIGSEGV)
