"""A task on one netmsg host, driven by a test: run as
``python netmsg_agent.py`` (inside the host's namespace, with
PYMACH_BOOTSTRAP_SOCKET set to the host's bootstrap server). It prints
"ready", then reads one JSON command a line from stdin and answers each
with one JSON line: {"ok": value} or {"error": text, "kr": code}. Exits
when stdin closes.

Commands ([name, args...]); rights are kept in a table under handles (ints):
- ["serve", NAME]: a port checked in as NAME, served by a thread: each
  request is answered (id + 100) with b"echo:<host>:" + data and the
  rights it carried; a request "hold" keeps the rights it carried (in the
  agent's table: answered with their handles);
- ["check_in", NAME, H] / ["check_out", NAME]: net.check_in of the send
  right of handle H (copied) / net.check_out;
- ["look_up", NAME, HOST]: net.look_up: the handle of the send right;
- ["request", H, DATA, [H...], ONCE]: request on handle H carrying copies of
  the send rights of handles [H...] (send rights made from ports; send-once
  rights with ONCE true; a send-once right held moves, its handle goes):
  the reply's data, and the handles of the rights it carried;
- ["send", H, DATA, ID]: a one-way message on handle H (the right stays
  ours, a send-once right excepted);
- ["port"]: a new port (received by nobody but "receive");
- ["arm_no_senders", H]: port H asks for its no-senders notification (on
  itself);
- ["receive", H, SECONDS]: the id of the next message on port H;
- ["dead", H]: whether handle H is a dead name now;
- ["wait_dead", H, SECONDS]: poll until it is (True) or SECONDS pass (False);
- ["release", H]: drop handle H.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from pymach import MachError, Message, Port, SendOnceRight, SendRight, net, request

HOST = os.environ.get("PYMACH_AGENT_HOST", "?")
rights: dict[int, Any] = {}
lock = threading.Lock()
counter = [0]


def keep(right: Any) -> int:
    with lock:
        counter[0] += 1
        rights[counter[0]] = right
        return counter[0]


def serve_loop(port: Port) -> None:
    while True:
        try:
            m = port.receive()
        except OSError:
            return
        carried = list(m.rights)
        handles: list[int] = []
        if m.data == b"hold":
            handles = [keep(r) for r in carried]
            carried = []
        if m.reply is not None:
            try:
                m.reply.send(Message(data=b"echo:" + HOST.encode() + b":" + m.data
                                     + (" ".join(map(str, handles))).encode(), id=m.id + 100,
                                     rights=carried), timeout=10)
            except MachError:
                pass
            m.reply = None
            m.rights = []
        m.release()


def command(cmd: list[Any]) -> Any:
    op = cmd[0]
    if op == "serve":
        port = Port()
        with port.make_send() as right:
            net.check_in(cmd[1], right)
        threading.Thread(target=serve_loop, args=(port,), daemon=True).start()
        return keep(port)
    if op == "check_in":
        net.check_in(cmd[1], rights[cmd[2]])
        return None
    if op == "check_out":
        net.check_out(cmd[1])
        return None
    if op == "look_up":
        return keep(net.look_up(cmd[1], host=cmd[2]))
    if op == "request":
        target = rights[cmd[1]]
        once = len(cmd) > 4 and cmd[4]
        carried = [rights.pop(h) if isinstance(rights[h], SendOnceRight)
                   else rights[h].copy() if isinstance(rights[h], SendRight)
                   else rights[h].make_send_once() if once else rights[h].make_send()
                   for h in (cmd[3] if len(cmd) > 3 else [])]
        try:
            r = request(target, Message(data=cmd[2].encode(), rights=carried), timeout=10)
        finally:
            for c in carried:
                c.close()  # a send right travels as a copy: ours goes (no-op for a moved one)
        out = {"data": r.data.decode(), "rights": [keep(x) for x in r.rights]}
        r.rights = []
        r.release()
        return out
    if op == "send":
        right = rights[cmd[1]]
        right.send(Message(data=cmd[2].encode(), id=int(cmd[3])), timeout=10)
        if isinstance(right, SendOnceRight):
            del rights[cmd[1]]
        return None
    if op == "port":
        return keep(Port())
    if op == "arm_no_senders":
        import pymach.mach as M
        prev = M.mach_port_t()
        port = rights[cmd[1]]
        kr = M.mach_port_request_notification(M.mach_task_self(), port.name, M.MACH_NOTIFY_NO_SENDERS, 0,
                                              port.name, M.MACH_MSG_TYPE_MAKE_SEND_ONCE, M.byref(prev))
        if kr:
            raise MachError(kr, "mach_port_request_notification")
        return None
    if op == "receive":
        m = rights[cmd[1]].receive(float(cmd[2]))
        msg_id = m.id
        m.release()
        return msg_id
    if op == "dead":
        return bool(rights[cmd[1]].dead)
    if op == "wait_dead":
        deadline = time.monotonic() + float(cmd[2])
        while not rights[cmd[1]].dead:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True
    if op == "release":
        rights.pop(cmd[1]).close()
        return None
    raise ValueError(f"no such command: {op}")


def main() -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            out: dict[str, Any] = {"ok": command(json.loads(line))}
        except MachError as e:
            out = {"error": str(e), "kr": e.kr}
        except Exception as e:  # noqa: BLE001 - reported to the test
            out = {"error": f"{type(e).__name__}: {e}", "kr": None}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
