"""Kill storms: ten pymach processes (a bootstrap server, two services,
seven clients) under random SIGKILLs, and the checks of every survivor's
own view afterwards (stress.storm). Also the defects the storm found,
each reproduced on its own.
"""

from __future__ import annotations

import io
import os
import re

import pytest

from pymach import ipc
from pymach.ipc import Message, Port
from pymach._kern import ipc_notify as N
from pymach._kern import ipc_port as IP
from pymach._kern import ipc_right as R
from pymach._kern import kern_return as K
from pymach._kern import message_defs as MD
from pymach._kern.ipc_space import MACH_PORT_RIGHT_DEAD_NAME, MACH_PORT_TYPE_DEAD_NAME
from pymach._kern.task import SELF
from stress import storm
from procutil import Doomed
from machutil import start_watcher


@pytest.fixture(scope="module", autouse=True)
def watcher_started() -> None:
    start_watcher()


def _figures(text: str) -> dict[str, int]:
    out = {}
    for key in ("kills survived", "members started", "messages checked", "notifications checked", "fds leaked",
                "memfds leaked", "memfds seen"):
        m = re.search(rf"^  {key}\s+(\d+)", text, re.M)
        assert m, f"no {key!r} in:\n{text}"
        out[key] = int(m.group(1))
    roles = re.search(r"^  kills survived\s+\d+ \((.*)\)$", text, re.M)
    assert roles, text
    out["kills by role"] = sum(int(n) for n in re.findall(r"\w+ (\d+)", roles.group(1)))
    return out


# The fixed seed's storm is the long one: 100 kills, the same schedule on
# every run, in which every one of the ten roles is killed (6 to 14 times;
# checked below). A random seed adds a schedule no run has seen before, whose checks
# are the same; over runs its 30 kills add up, so one run keeps it short
# (about 6 s instead of 16 s).
@pytest.mark.parametrize("seed, kills", [(20261125, 100), (None, 30)], ids=["20261125", "None"])
def test_kill_storm(seed: int | None, kills: int) -> None:
    """SIGKILLs of random members (the bootstrap server and the services
    included); every check of stress.storm passes: notifications,
    fds and names, messages, memfds."""
    fixed = seed is not None
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    out = io.StringIO()
    rc = storm.run(kills, seed, out)
    text = out.getvalue()
    assert rc == 0, text
    f = _figures(text)
    # members that waitpid saw end by the driver's SIGKILL, each restarted
    assert f["kills survived"] == f["kills by role"] == kills, text
    assert f["members started"] == 10 + kills, text
    assert f["fds leaked"] == 0 and f["memfds leaked"] == 0, text
    assert f["messages checked"] > 0 and f["notifications checked"] > 0 and f["memfds seen"] > 0, text
    if fixed:  # the long storm kills every role, the bootstrap server and both services included
        roles = re.search(r"^  kills survived\s+\d+ \((.*)\)$", text, re.M)
        assert roles is not None and set(re.findall(r"(\w+) \d+", roles.group(1))) == set(storm.ROLES), text


def test_a_storm_whose_check_fails_does_not_say_survived(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short storm with one check made to fail: exit 1, the failure
    printed, and the kills not reported as survived."""
    check_messages = storm.Checker.check_messages

    def failing(self: storm.Checker, reports: dict[str, dict[str, object]]) -> None:
        check_messages(self, reports)
        self.fail("a check made to fail")
    monkeypatch.setattr(storm.Checker, "check_messages", failing)
    out = io.StringIO()
    rc = storm.run(3, 20261125, out, interval=(0.01, 0.02))
    text = out.getvalue()
    assert rc == 1, text
    assert "FAIL a check made to fail" in text and "kills survived" not in text
    assert re.search(r"^  kills +3 \(.*\); not survived: 1 failed check$", text, re.M), text


def test_a_member_that_ended_before_its_kill_is_no_kill(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kill count is what waitpid reports: a member that exited by
    itself before the SIGKILL is a crash, not a kill."""
    import socket
    import subprocess
    import sys
    d = storm.Driver(1, io.StringIO())
    try:
        for role, code in (("cli0", "pass"), ("cli1", "import time; time.sleep(60)")):
            p = subprocess.Popen([sys.executable, "-c", code])
            p.returncode = 0  # reaped by the driver, not by Popen
            a, b = socket.socketpair()
            b.close()
            d.procs[role] = (p.pid, a)
            if role == "cli0":
                os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
        assert d.kill("cli0") is False
        assert d.kill("cli1") is True
        assert d.sigkilled == {"cli1": 1}
        assert len(d.crashed) == 1 and d.crashed[0].startswith("cli0")
    finally:
        d.stop_all()


storm_keep: list[Port] = []


def _hand_over_a_send_right() -> None:
    """In the child: a port of its own, a send right to it for us (on the
    registered port, inherited at fork), and one request answered: with a
    send-once notification (its reply right destroyed)."""
    q = Port()
    (inbox_send,) = [r for r in ipc.registered_ports() if r]
    with q.make_send() as s:
        inbox_send.send(Message(b"q", rights=[s]))
    storm_keep.append(q)
    req = q.receive(timeout=10)
    assert req.reply is not None
    req.reply.close()


@pytest.mark.parametrize("where", ["take_slot", "bind"])
def test_send_while_the_watcher_makes_the_destination_dead(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """The notification watcher turns a right whose port died into a dead
    name and closes its fds (and its channel's reply connection), on its own
    thread, at any moment. A send on that right already past copyin must
    keep them until it is done, and fail with MACH_SEND_INVALID_DEST (the
    storm saw a ValueError for fd -1 escape mach_msg instead, at the wait
    for a queue place and when the channel's reply connection was bound to
    a new reply port; a reused fd number could even have taken the message)."""
    with Port() as inbox, inbox.make_send() as to_inbox, Port() as notify, Port() as first, Port() as second:
        ipc.register_ports(to_inbox)
        with Doomed(_hand_over_a_send_right) as child:
            msg = inbox.receive(timeout=10)
            (right,) = msg.rights
            name = right.name
            right.send(b"first", reply=first)  # the channel, its reply connection bound to ``first``
            child.ready()
            assert first.receive(timeout=10).id == N.MACH_NOTIFY_SEND_ONCE  # nothing outstanding now
            prev = R.request_notification(SELF.space, name, N.MACH_NOTIFY_DEAD_NAME, 0, notify.name,
                                          MD.MACH_MSG_TYPE_MAKE_SEND_ONCE)
            assert prev == 0
            entry = SELF.space.lookup(name)
            cls = IP.SendCap if where == "take_slot" else IP.Port
            real = getattr(cls, where)

            def racing(obj: object, arg: object) -> object:
                # the port dies now, and the watcher's handler runs, as it may
                # on its own thread between copyin and the write
                monkeypatch.setattr(cls, where, real)
                child.kill()
                R._port_died(SELF.space, name, entry)  # pylint: disable=protected-access
                return real(obj, arg)

            monkeypatch.setattr(cls, where, racing)
            with pytest.raises(K.MachError) as err:
                right.send(b"too late", timeout=1.0, reply=second)  # the channel moves to ``second``
            assert getattr(cls, where) is real, "the race was not run"
            assert err.value.kr == K.MACH_SEND_INVALID_DEST
            assert R.type_of(SELF.space, name) == MACH_PORT_TYPE_DEAD_NAME
            raw = notify.receive(timeout=10)
            assert raw.id == N.MACH_NOTIFY_DEAD_NAME
            with pytest.raises(K.MachError) as none:
                notify.receive(timeout=0)
            assert none.value.kr == K.MACH_RCV_TIMED_OUT
            # the dead name: the right's reference and the notification's
            R.mod_refs(SELF.space, name, MACH_PORT_RIGHT_DEAD_NAME, -2)
        ipc.register_ports()


def test_reply_connection_closed_under_the_receiver() -> None:
    """A channel's reply connection is closed by its send right's close,
    which the watcher thread runs when the destination dies, while the
    receiver of the reply port may be about to read it. The receiver must
    pass it over (the storm saw a ValueError for fd -1 escape mach_msg)."""
    with Port() as service, service.make_send() as to_service, Port() as reply:
        to_service.send(b"request", reply=reply)  # opens the channel, bound to ``reply``
        port = R.receive_port(SELF.space, reply.name)
        ((fd, rc),) = list(port.replies.items())
        req = service.receive(timeout=5)
        req.reply.close()  # answered with a send-once notification, so nothing is outstanding
        assert reply.receive(timeout=5).id == N.MACH_NOTIFY_SEND_ONCE
        rc.close()  # what the watcher's SendCap.close does meanwhile
        assert port._reply(fd, rc) is None  # pylint: disable=protected-access
        with pytest.raises(K.MachError) as none:
            reply.receive(timeout=0)
        assert none.value.kr == K.MACH_RCV_TIMED_OUT


def _report(pid: int, **kw: object) -> dict[str, object]:
    rep: dict[str, object] = {"pid": pid, "dn": [], "reqs": [], "handouts": [], "held": [], "streams": {},
                              "recv": {}}
    rep.update(kw)
    return rep


def test_the_checks_can_fail() -> None:
    """Each check of the storm's driver flags what it is there to catch."""
    d = storm.Driver(0, io.StringIO())
    d.killed = {66}

    def failures(reports: dict[str, dict[str, object]], final: bool = False) -> list[str]:
        chk = storm.Checker.__new__(storm.Checker)
        chk.d, chk.failures, chk.notifications, chk.messages, chk.verified = d, [], 0, 0, 0
        chk.received = storm.Counter()
        chk.check_notifications(reports, final)  # type: ignore[arg-type]
        chk.check_messages(reports)  # type: ignore[arg-type]
        return chk.failures

    sent = {"cli0@1/1": {"to": "cli1", "inc": 2, "ok": [1, 2, 3], "fail": [[4, 0x10000003]]}}
    good = {"cli0": _report(1, streams=sent), "cli1": _report(2, recv={"cli0@1/1": [1, 2, 3]})}
    assert failures(good) == []
    for recv, what in (([1, 3], "lost"), ([1, 2, 2, 3], "twice"), ([2, 1, 3], "out of order"),
                       ([1, 2, 3, 4], "were not sent")):
        bad = {"cli0": good["cli0"], "cli1": _report(2, recv={"cli0@1/1": recv})}
        assert any(what in f for f in failures(bad)), what
    dn = [{"name": 0x103, "svc": "svc0", "inc": 66, "count": 1}, {"name": 0x203, "svc": "svc1", "inc": 5,
                                                                   "count": 0}]
    assert failures({"cli0": _report(1, dn=dn)}) == []
    for i, count in ((0, 0), (0, 2), (1, 1)):
        bad_dn = [dict(r) for r in dn]
        bad_dn[i]["count"] = count
        assert any("dead-name" in f for f in failures({"cli0": _report(1, dn=bad_dn)}))
    st = {"cli0@1/2": {"to": "svc0", "inc": 5, "ok": [1], "fail": []}}
    for out, dup, kind in ((None, 0, storm.ECHO), ("reply", 1, storm.ECHO), ("reply", 0, storm.DROP),
                           ("so", 0, storm.ECHO)):
        req = [{"kind": kind, "st": "cli0@1/2", "q": 1, "out": out, "dup": dup}]
        assert failures({"cli0": _report(1, reqs=req, streams=st),
                         "svc0": _report(5, recv={"cli0@1/2": [1]})}), (out, dup, kind)
    ho = [{"h": 1, "to": "cli1", "to_inc": 2, "ns": 1, "sent": True}]
    assert any("no-senders" in f for f in failures({"cli0": _report(1, handouts=ho),
                                                    "cli1": _report(2, held=[[1, 1]])}))
    assert failures({"cli0": _report(1, handouts=ho), "cli1": _report(2)}) == []


def test_the_fd_name_and_memfd_checks_can_fail() -> None:
    """An fd nobody accounts for, a name nobody expects, a right to a
    killed member that still looks alive, and a pymach memfd held outside
    the members are each flagged."""
    d = storm.Driver(0, io.StringIO())
    d.killed = {66}
    chk = storm.Checker(d)
    with Port() as p, p.make_send():
        stray = os.open(os.devnull, os.O_RDONLY)
        try:
            own = {int(n) for n in os.listdir("/proc/self/fd")} - {stray}
            leaked, _acc = chk.check_fds("me", {"pid": os.getpid(), "own_fds": sorted(own)})
        finally:
            os.close(stray)
        assert leaked >= 1 and any(f"{stray}" in f for f in chk.failures)
        chk.failures.clear()
        names = {str(n): R.type_of(SELF.space, n) for n, _e in SELF.space.names()}
        expected = {str(n): "runtime" for n, _e in SELF.space.names() if n != p.name}
        chk.check_names("me", {"names": names, "expected": expected})
        assert any("not expected" in f for f in chk.failures)
        chk.failures.clear()
        expected[str(p.name)] = "peer:cli1:66"  # a send right to a member that was killed
        chk.check_names("me", {"names": names, "expected": expected})
        assert any("peer:cli1:66" in f for f in chk.failures)
    with ipc.MemoryEntry.create(4096):
        chk.failures.clear()
        assert chk.check_memfds({}, {}, final=False) >= 1
        assert any("not a live member" in f for f in chk.failures), chk.failures
