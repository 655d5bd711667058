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
  right of handle H (copied; for a port, a send right made from it) /
  net.check_out;
- ["look_up", NAME, HOST]: net.look_up: the handle of the send right;
- ["request", H, DATA, [H...], ONCE, SECONDS]: request on handle H (within
  SECONDS, 10 if not given) carrying copies of
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
- ["release", H]: drop handle H;
- ["version"]: net.version() ("VERSION HOST INCARNATION");
- ["ping", NAME, HOST, DATA, SECONDS]: a fresh look-up of NAME on HOST and
  one request on it (within SECONDS): the reply's data;
- ["hash_serve", NAME]: a port checked in as NAME, served by a thread: each
  request is answered (id + 100) with, per out-of-line region it carried,
  its length (u64) and SHA-256, and one out-of-line region of SIZE bytes
  (the request's data is "SIZE"; none for 0) made by ool_bytes from those
  digests;
- ["ool_request", H, SIZE, REPLY_SIZE]: a request on handle H carrying
  SIZE random bytes out of line (made here, and gone once sent); answers
  whether the reply named their length and hash and carried the
  REPLY_SIZE bytes ool_bytes makes of that answer;
- ["qport", QLIMIT]: a new port whose qlimit is QLIMIT;
- ["fill", H, FIRST, SECONDS, MAX]: messages with ids FIRST, FIRST + 1...
  on handle H, each with a send timeout of SECONDS, until one times out
  (MACH_SEND_TIMED_OUT) or MAX went: how many went in;
- ["drain", H, N, SECONDS]: the ids of the next N messages on port H
  (fewer if none comes for SECONDS);
- ["stream", H, FIRST, N, SECONDS] / ["stream_state"] / ["stream_wait",
  SECONDS]: a thread sends ids FIRST..FIRST+N-1 on handle H (each with a
  send timeout of SECONDS); how far it got ({"sent", "error"}); its end;
- ["collect", H, N, SECONDS] / ["collect_wait", SECONDS]: a thread
  receives N messages on port H (each within SECONDS); their ids (and the
  error that stopped it, if one did).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import threading
import time
from typing import Any

from pymach.mach import MACH_RCV_TIMED_OUT
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


def ool_bytes(digests: bytes, size: int) -> bytes:
    """``size`` bytes that only ``digests`` gives (a reply's region)."""
    return hashlib.shake_256(digests).digest(size) if size else b""


def hash_loop(port: Port) -> None:
    while True:
        try:
            m = port.receive()
        except OSError:
            return
        out = b"".join(struct.pack("<Q", len(r)) + hashlib.sha256(r).digest() for r in m.ool)
        size = int(bytes(m.data).rstrip(b"\0") or b"0")
        if m.reply is not None:
            try:
                m.reply.send(Message(data=out, id=m.id + 100, ool=[ool_bytes(out, size)] if size else []),
                             timeout=10)
            except MachError:
                pass
            m.reply = None
        m.release()


def pad(text: str) -> bytes:
    """``text`` as a message body (whole words)."""
    raw = text.encode()
    return raw + b"\0" * (-len(raw) % 4)


class Background:
    """What a command's thread did: the ids it got or sent, how it ended."""

    def __init__(self, target: Any, *args: Any) -> None:
        self.ids: list[int] = []
        self.error: str | None = None
        self.kr: int | None = None
        self.thread = threading.Thread(target=self._run, args=(target, *args), daemon=True)
        self.thread.start()

    def _run(self, target: Any, *args: Any) -> None:
        try:
            target(self, *args)
        except MachError as e:
            self.error, self.kr = str(e), e.kr
        except Exception as e:  # noqa: BLE001 - reported to the test
            self.error = f"{type(e).__name__}: {e}"

    def state(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "error": self.error, "kr": self.kr, "done": not self.thread.is_alive()}

    def wait(self, seconds: float) -> dict[str, Any]:
        self.thread.join(seconds)
        return self.state()


background: dict[str, Background] = {}


def _stream(bg: Background, right: Any, first: int, n: int, seconds: float) -> None:
    for i in range(first, first + n):
        right.send(Message(id=i), timeout=seconds)
        bg.ids.append(i)


def _collect(bg: Background, port: Port, n: int, seconds: float) -> None:
    for _ in range(n):
        m = port.receive(seconds)
        bg.ids.append(m.id)
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
        right = rights[cmd[2]]
        if isinstance(right, Port):
            with right.make_send() as made:
                net.check_in(cmd[1], made)
        else:
            net.check_in(cmd[1], right)
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
            r = request(target, Message(data=cmd[2].encode(), rights=carried),
                        timeout=float(cmd[5]) if len(cmd) > 5 else 10)
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
    if op == "version":
        return net.version()
    if op == "ping":
        with net.look_up(cmd[1], host=cmd[2]) as right:
            r = request(right, Message(data=pad(cmd[3])), timeout=float(cmd[4]))
        data = bytes(r.data).rstrip(b"\0").decode()
        r.release()
        return data
    if op == "hash_serve":
        port = Port()
        with port.make_send() as right:
            net.check_in(cmd[1], right)
        threading.Thread(target=hash_loop, args=(port,), daemon=True).start()
        return keep(port)
    if op == "ool_request":
        size, reply_size = int(cmd[2]), int(cmd[3])
        data = os.urandom(size)
        want = struct.pack("<Q", size) + hashlib.sha256(data).digest()
        msg = Message(data=pad(str(reply_size)), ool=[data])
        del data
        r = request(rights[cmd[1]], msg, timeout=120)
        del msg
        try:
            back = [bytes(b) for b in r.ool]
            return {"id": r.id, "hash_ok": bytes(r.data) == want,
                    "reply_ok": len(back) == 1 and back[0] == ool_bytes(want, reply_size),
                    "reply_sizes": [len(b) for b in back]}
        finally:
            r.release()
    if op == "qport":
        import pymach.mach as M
        port = Port()
        lim = M.mach_port_limits_t()
        lim.mpl_qlimit = int(cmd[1])
        kr = M.mach_port_set_attributes(M.mach_task_self(), port.name, M.MACH_PORT_LIMITS_INFO, M.byref(lim),
                                        M.MACH_PORT_LIMITS_INFO_COUNT)
        if kr:
            port.close()
            raise MachError(kr, "mach_port_set_attributes")
        return keep(port)
    if op == "fill":
        import pymach.mach as M
        right, first, seconds, most = rights[cmd[1]], int(cmd[2]), float(cmd[3]), int(cmd[4])
        for i in range(most):
            try:
                right.send(Message(id=first + i), timeout=seconds)
            except MachError as e:
                if e.kr != M.MACH_SEND_TIMED_OUT:
                    raise
                return i
        return most
    if op == "drain":
        out = []
        for _ in range(int(cmd[2])):
            try:
                m = rights[cmd[1]].receive(float(cmd[3]))
            except MachError as e:
                if e.kr != MACH_RCV_TIMED_OUT:
                    raise
                break
            out.append(m.id)
            m.release()
        return out
    if op == "stream":
        background["stream"] = Background(_stream, rights[cmd[1]], int(cmd[2]), int(cmd[3]), float(cmd[4]))
        return None
    if op == "stream_state":
        return background["stream"].state()
    if op == "stream_wait":
        return background.pop("stream").wait(float(cmd[1]))
    if op == "collect":
        background["collect"] = Background(_collect, rights[cmd[1]], int(cmd[2]), float(cmd[3]))
        return None
    if op == "collect_wait":
        return background.pop("collect").wait(float(cmd[1]))
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
