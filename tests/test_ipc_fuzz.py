"""The wire format, fuzzed: records built from real ones (captured from
pymach's own sends) and control records, with their fields set to boundary
values, cut short, grown, and sent with fds that do not match (too few, too
many, of the wrong kind: pipes, files, datagram and stream sockets,
eventfds, epoll, unsealed, write-sealed-only and shrunk memfds).

Each case gets a clear outcome (MACH_RCV_HEADER_ERROR or
MACH_RCV_BODY_ERROR; dropped, for control junk; delivered, when a mutation
is still well formed), then the receiver delivers the next good message,
and the open fds are back at their baseline. Out-of-line memory that is
delivered is read to its end: a memfd the peer shrank would be SIGBUS.

The stress run of the same generator is ``python -m stress.fuzz_ipc``
(README, "Fuzzing").
"""

from __future__ import annotations

import errno
import gc
import os
import random
import re
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymach._kern import ipc_kmsg as KM
from pymach._kern import ipc_port as IP
from pymach._kern.task import SELF
from stress import fuzz_ipc as F

CHECKOUT = Path(__file__).resolve().parent.parent
OUTCOMES = {"MACH_RCV_HEADER_ERROR", "MACH_RCV_BODY_ERROR", "delivered", "dropped"}
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


class Rig:
    def __init__(self) -> None:
        self.templates = F.Templates()
        self.target = F.Target()
        self.replies = F.ReplyTarget()
        self.replies.run(random.Random(0))  # the channel lives from here on
        self.target.settle()

    def close(self) -> None:
        self.replies.close()
        self.target.close()
        self.templates.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def check(rig: Rig, case: F.Case) -> str:
    gc.collect()  # (what an earlier example left to the collector is not this case's)
    mine = {str(fd) for fd in case.fds}  # closed by run(), once sent
    before = {t for t in F._targets() if t.split(":")[0] not in mine}
    outcome = rig.target.run(case, timeout=5.0)
    assert set(outcome.split("+")) <= OUTCOMES, f"{case.what}: {outcome}"
    after = set(F._targets())
    assert after == before, f"{case.what}: fds closed {before - after}, opened {after - before}"
    return outcome


def fds_of(kinds: list[str]) -> tuple[list[int], list[int]]:
    fds: list[int] = []
    shrink: list[int] = []
    for k in kinds:
        got, s = F.make_fds(k)
        fds += got
        if s >= 0:
            shrink.append(s)
    return fds, shrink


fd_kind = st.sampled_from(F.FD_KINDS)
u32 = st.one_of(st.sampled_from(F._BOUNDARY32), st.integers(0, 0xFFFFFFFF))


@FAST
@given(data=st.binary(max_size=300), kinds=st.lists(fd_kind, max_size=3))
def test_random_bytes(rig: Rig, data: bytes, kinds: list[str]) -> None:
    fds, shrink = fds_of(kinds)
    check(rig, F.Case(data, fds, shrink, "random"))


@FAST
@given(which=st.integers(0, 6), fields=st.lists(st.tuples(st.integers(0, 127), u32), max_size=3),
       sizes=st.lists(st.tuples(st.integers(0, 31), st.sampled_from(F._BOUNDARY64)), max_size=2),
       cut=st.one_of(st.none(), st.integers(0, 200)),
       fdplan=st.sampled_from(["keep", "drop", "wrong", "extra", "none"]), kind=fd_kind)
def test_mutated_records(rig: Rig, which: int, fields: list[tuple[int, int]], sizes: list[tuple[int, int]],
                         cut: int | None, fdplan: str, kind: str) -> None:
    data, tfds = rig.templates.items[which % len(rig.templates.items)]
    b = bytearray(data)
    for word, v in fields:  # counts, sizes, kinds, flags: a 32-bit word anywhere in the first 512 bytes
        if 4 * word + 4 <= len(b):
            struct.pack_into("<I", b, 4 * word, v)
    for right, v in sizes:  # a right's 64-bit size (or a receive right's packing)
        off = KM.WIRE.size + right * KM.RIGHT.size + 8
        if off + 8 <= len(b):
            struct.pack_into("<Q", b, off, v)
    if cut is not None:
        del b[cut:]
    fds = [os.dup(fd) for fd in tfds]
    shrink: list[int] = []
    if fdplan == "drop" and fds:
        os.close(fds.pop())
    elif fdplan == "none":
        for fd in fds:
            os.close(fd)
        fds = []
    elif fdplan in ("wrong", "extra"):
        bad, shrink = fds_of([kind])
        if fdplan == "wrong" and fds:
            os.close(fds.pop(0))
            fds = bad + fds
        else:
            fds += bad
    check(rig, F.Case(bytes(b), fds, shrink, f"template {which} {fdplan}"))


@FAST
@given(flag=st.sampled_from(F._CONTROL_FLAGS), token=st.integers(0, (1 << 24) - 1), nfds=st.one_of(st.none(), u32),
       kinds=st.lists(st.sampled_from(F.FD_KINDS + ("seqpacket", "seqpacket")), max_size=3),
       tail=st.binary(max_size=8))
def test_control_records(rig: Rig, flag: int, token: int, nfds: int | None, kinds: list[str], tail: bytes) -> None:
    fds, shrink = fds_of(kinds)
    data = F.control((flag | token << 8) & 0xFFFFFFFF, len(fds) if nfds is None else nfds) + tail
    outcome = check(rig, F.Case(data, fds, shrink, "control"))
    if not tail and nfds is None and flag in (IP.FLAG_JOIN, IP.FLAG_REPLYCONN) and not token \
            and all(k == "seqpacket" for k in kinds) and len(kinds) == (2 if flag == IP.FLAG_JOIN else 1):
        assert outcome == "dropped"  # a well-formed control record is acted on, never delivered


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 1 << 32))
def test_reply_connection_junk_is_dropped(rig: Rig, seed: int) -> None:
    before = F.open_fds()
    assert rig.replies.run(random.Random(seed)) == "reply-junk-dropped"
    assert F.open_fds() == before


@pytest.mark.parametrize("kind", ["unsealed", "write_sealed", "shrunk", "memfd", "pipe", "eventfd"])
def test_out_of_line_memory_a_peer_can_shrink_is_refused_without_sigbus(rig: Rig, kind: str) -> None:
    data, tfds = rig.templates.items[3]  # a message with out-of-line memory
    fds, shrink = fds_of([kind])
    outcome = check(rig, F.Case(data, fds, shrink, f"ool {kind}"))
    assert outcome in ("MACH_RCV_BODY_ERROR", "delivered")
    if kind != "memfd":
        assert outcome == "MACH_RCV_BODY_ERROR"


def test_coverage_guided_run_with_atheris(tmp_path: Path) -> None:
    """The stress command's --atheris mode: libFuzzer picks 3,000 inputs,
    guided by coverage of the runtime. It exits 0 only if every input got an
    outcome, the next good message always arrived, and the fds ended where
    they started."""
    pytest.importorskip("atheris")
    # the harness of this checkout (stress/, beside tests/), on the pymach this test runs
    path = os.pathsep.join([str(CHECKOUT), str(Path(IP.__file__).resolve().parents[2])])
    p = subprocess.run([sys.executable, "-m", "stress.fuzz_ipc", "--atheris", "--records", "3000",
                        "--check-every", "100"], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=path),
                       cwd=tmp_path)  # where libFuzzer leaves a crash-* input
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert "instrumented" in p.stderr and " cov: " in p.stderr  # libFuzzer saw the runtime's edges
    m = re.search(r"^pymach fuzz ipc \(atheris\): 3000 records", p.stdout, re.M)
    assert m, p.stdout
    counts = {k: int(v) for v, k in re.findall(r"^\s+(\d+)\s+(\S+)$", p.stdout, re.M)}
    assert sum(counts.values()) == 3000 and {o for k in counts for o in k.split("+")} <= OUTCOMES, counts
    start, end = map(int, re.search(r"^fds: (\d+) at the start, (\d+) at the end", p.stdout, re.M).groups())
    assert start == end


# -- the command's exit status ---------------------------------------------------------------------

@pytest.mark.parametrize("outcome, clear", [
    ("MACH_RCV_BODY_ERROR", True), ("MACH_RCV_HEADER_ERROR+delivered", True), ("dropped", True),
    ("reply-junk-dropped", True), ("0x10004008", False), ("MACH_RCV_BODY_ERROR+0x1000400c", False),
    ("not-sent:105", False), ("no-channel", False)])
def test_which_outcomes_are_clear(outcome: str, clear: bool) -> None:
    assert F.unclear({outcome: 3}) == ({} if clear else {outcome: 3})


class _RefusingSocket:
    """A Target's socket whose first sendmsg fails as the kernel's would."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.refused = sock, False

    def sendmsg(self, *args: object) -> int:
        if not self.refused:
            self.refused = True
            raise OSError(errno.ENOBUFS, "no buffer space")
        return self.sock.sendmsg(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize("inject", ["unnamed-code", "not-sent"])
def test_the_command_fails_and_names_an_outcome_that_is_not_clear(
        inject: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A short run exits 0; the same run with one record that gets no clear
    outcome exits 1 and prints which."""
    assert F.main(["--records", "40", "--seed", "7"]) == 0
    assert "FAIL" not in capsys.readouterr().out
    if inject == "unnamed-code":  # a refusal with a code the fuzzer does not know
        monkeypatch.setattr(F, "_code_name", lambda kr: f"{kr:#x}")
        want = r"0x1000400[bc] \(\d+\)"
    else:  # the kernel refuses to send one record
        init = F.Target.__init__

        def refusing(self: F.Target) -> None:
            init(self)
            self.sock = _RefusingSocket(self.sock)  # type: ignore[assignment]
        monkeypatch.setattr(F.Target, "__init__", refusing)
        want = r"not-sent:105 \(1\)"
    assert F.main(["--records", "40", "--seed", "7"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^FAIL \d+ records got no clear outcome: .*" + want, out, re.M), out


# -- defects the fuzzer found ----------------------------------------------------------------------

def test_a_right_no_descriptor_names_is_refused_not_installed(rig: Rig) -> None:
    """A receive right in the record's table that the body's descriptor does
    not name was installed under a name the receiver never learnt."""
    data, tfds = rig.templates.items[6]  # a moved receive right
    names = {n for n, _e in SELF.space.names()}
    b = bytearray(data)
    off = len(b) - 12  # the port descriptor: its slot becomes MACH_PORT_NULL
    struct.pack_into("<I", b, off, 0)
    outcome = check(rig, F.Case(bytes(b), [os.dup(fd) for fd in tfds], [], "unnamed receive right"))
    assert outcome == "MACH_RCV_BODY_ERROR"
    assert {n for n, _e in SELF.space.names()} == names


def test_rights_in_a_simple_message_are_refused(rig: Rig) -> None:
    data, tfds = rig.templates.items[2]  # a send right in a complex message
    b = bytearray(data)
    struct.pack_into("<I", b, 4, struct.unpack_from("<I", b, 4)[0] & ~0x80000000)  # not complex
    assert check(rig, F.Case(bytes(b), [os.dup(fd) for fd in tfds], [], "simple with a right")) \
        == "MACH_RCV_BODY_ERROR"


def test_a_receive_right_without_fds_is_a_body_error(rig: Rig) -> None:
    """It raised IndexError out of mach_msg."""
    data, tfds = rig.templates.items[6]
    b = bytearray(data)
    nrights = struct.unpack_from("<I", b, 16)[0]
    for i in range(nrights):
        off = KM.WIRE.size + i * KM.RIGHT.size
        if struct.unpack_from("<I", b, off)[0] == 16:  # MACH_MSG_TYPE_PORT_RECEIVE
            struct.pack_into("<IIQ", b, off, 16, 0, 0)
    struct.pack_into("<I", b, 20, 0)
    assert check(rig, F.Case(bytes(b), [], [], "receive right without fds")) == "MACH_RCV_BODY_ERROR"


def test_a_reply_connection_whose_sender_is_gone_is_not_kept(rig: Rig) -> None:
    """A REPLYCONN (or JOIN) whose reply connection was already closed at
    the far end was kept for the life of the connection: one fd each."""
    for flag, n in ((IP.FLAG_REPLYCONN, 1), (IP.FLAG_JOIN, 2)):
        fds, _s = fds_of(["seqpacket"] * n)
        assert check(rig, F.Case(F.control(flag, n), fds, [], "dead reply connection")) == "dropped"


def test_an_empty_record_on_a_reply_connection_is_not_its_end(rig: Rig) -> None:
    """A zero-length record read like EOF: the client turned every right
    outstanding on the connection into a send-once notification and closed
    it, though the holders were alive (found by the stress run)."""
    import pymach
    rt = rig.replies
    rt.to_server.send(b"req", id=11, reply=rt.client)
    req = rt.server.receive(timeout=5)
    cap = SELF.space.lookup(req.reply.name).cap  # type: ignore[union-attr]
    cap.sock.sendmsg([b""])
    with pytest.raises(pymach.MachError):
        rt.client.receive(timeout=0)  # nothing: the junk is dropped
    req.reply.send(b"ans", id=12)  # type: ignore[union-attr]
    req.release()
    got = rt.client.receive(timeout=5)
    assert (got.id, got.data) == (12, b"ans")
    got.release()
