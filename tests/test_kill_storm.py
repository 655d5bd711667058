"""Kill storms: ten pymach processes (a bootstrap server, two services,
seven clients) under random SIGKILLs, and the checks of every survivor's
own view afterwards (pymach.tools.storm). Also the defects the storm found,
each reproduced on its own.
"""

from __future__ import annotations

import io
import os
import re
import select

import pytest

from pymach import ipc
from pymach.ipc import Message, Port
from pymach.kern import ipc_notify as N
from pymach.kern import ipc_port as IP
from pymach.kern import ipc_right as R
from pymach.kern import kern_return as K
from pymach.kern import message_defs as MD
from pymach.kern.ipc_space import MACH_PORT_RIGHT_DEAD_NAME, MACH_PORT_TYPE_DEAD_NAME
from pymach.kern.task import SELF
from pymach.tools import storm
from procutil import Doomed


@pytest.fixture(scope="module", autouse=True)
def watcher_started() -> None:
    """The notification watcher's process-wide fds are made on first use:
    make them before the fd baseline (see test_ipc_notify)."""
    r, w = os.pipe()
    N.WATCHER.watch(r, select.EPOLLIN, lambda: None)
    N.WATCHER.unwatch(r)
    os.close(r)
    os.close(w)


def _figures(text: str) -> dict[str, int]:
    out = {}
    for key in ("kills survived", "messages checked", "notifications checked", "fds leaked", "memfds leaked",
                "memfds seen"):
        m = re.search(rf"^  {key}\s+(\d+)", text, re.M)
        assert m, f"no {key!r} in:\n{text}"
        out[key] = int(m.group(1))
    return out


@pytest.mark.parametrize("seed", [20261125, None])
def test_kill_storm(seed: int | None) -> None:
    """100 SIGKILLs of random members (the bootstrap server and the services
    included); every check of pymach.tools.storm passes: notifications,
    fds and names, messages, memfds."""
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    out = io.StringIO()
    rc = storm.run(100, seed, out)
    text = out.getvalue()
    assert rc == 0, text
    f = _figures(text)
    assert f["kills survived"] == 100, text
    assert f["fds leaked"] == 0 and f["memfds leaked"] == 0, text
    assert f["messages checked"] > 0 and f["notifications checked"] > 0 and f["memfds seen"] > 0, text


storm_keep: list[Port] = []


def _hand_over_a_send_right() -> None:
    """In the child: a port of its own, and a send right to it for us (on
    the registered port, inherited at fork)."""
    q = Port()
    (inbox_send,) = [r for r in ipc.registered_ports() if r]
    with q.make_send() as s:
        inbox_send.send(Message(b"q", rights=[s]))
    storm_keep.append(q)


def test_send_while_the_watcher_makes_the_destination_dead(monkeypatch: pytest.MonkeyPatch) -> None:
    """The notification watcher turns a right whose port died into a dead
    name and closes its fds, on its own thread, at any moment. A send on
    that right already past copyin must keep its fds until it is done, and
    fail with MACH_SEND_INVALID_DEST (the storm saw a ValueError for fd -1
    escape mach_msg instead; a reused fd number could even have taken the
    message)."""
    with Port() as inbox, inbox.make_send() as to_inbox, Port() as notify:
        ipc.register_ports(to_inbox)
        with Doomed(_hand_over_a_send_right) as child:
            child.ready()
            msg = inbox.receive(timeout=10)
            (right,) = msg.rights
            name = right.name
            prev = R.request_notification(SELF.space, name, N.MACH_NOTIFY_DEAD_NAME, 0, notify.name,
                                          MD.MACH_MSG_TYPE_MAKE_SEND_ONCE)
            assert prev == 0
            entry = SELF.space.lookup(name)
            real = IP.SendCap.take_slot

            def racing_take_slot(cap: IP.SendCap, timeout_ms: int | None) -> bool:
                # the port dies now, and the watcher's handler runs, as it may
                # on its own thread between copyin and the write
                monkeypatch.setattr(IP.SendCap, "take_slot", real)
                child.kill()
                R._port_died(SELF.space, name, entry)  # pylint: disable=protected-access
                return real(cap, timeout_ms)

            monkeypatch.setattr(IP.SendCap, "take_slot", racing_take_slot)
            with pytest.raises(K.MachError) as err:
                right.send(b"too late", timeout=1.0)
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
