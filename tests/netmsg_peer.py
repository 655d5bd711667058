"""A task on another netmsg host, for tests/test_netmsg.py: checks ports in
on its host's proxy and serves them. Run as
``python netmsg_peer.py NAME [NAME...]`` with PYMACH_BOOTSTRAP_SOCKET set
to its host's bootstrap server; prints "ready" once every name is checked
in; exits when stdin closes.

Services by name prefix:
- echo...: replies to each request (id + 100) with b"echo:" + data and
  the rights and out-of-line buffers it got; a request whose data is
  b"fifo:N" replies without the right it carries, then sends N
  messages (ids 0..N-1) to it;
- hash...: replies to each request (id + 100) with, for each out-of-line
  buffer it got, its length (u64) and its SHA-256, and releases them;
- still...: never receives (its queue fills: qlimit across hosts);
- bootstrap:NAME: no port of its own: the send right that NAME has at
  this host's bootstrap server (waited for), checked in on the network as
  NAME (a local service made reachable from other hosts).
"""

from __future__ import annotations

import hashlib
import struct
import sys
import threading

import time

from pymach import Message, Port, SendRight, bootstrap, net


def echo(port: Port) -> None:
    while True:
        try:
            m = port.receive()
        except OSError:
            return
        if m.data.startswith(b"fifo:"):
            target = m.rights.pop()
            assert isinstance(target, SendRight)
        if m.reply is not None:
            m.reply.send(Message(data=b"echo:" + m.data, id=m.id + 100, rights=list(m.rights), ool=list(m.ool)),
                         timeout=10)
            m.reply = None
        if m.data.startswith(b"fifo:"):
            with target:
                for i in range(int(m.data[5:])):
                    target.send(b"%d" % i, id=i, timeout=10)
        m.release()


def hash_ool(port: Port) -> None:
    while True:
        try:
            m = port.receive()
        except OSError:
            return
        out = b"".join(struct.pack("<Q", len(r)) + hashlib.sha256(r).digest() for r in m.ool)
        if m.reply is not None:
            m.reply.send(Message(data=out, id=m.id + 100), timeout=10)
            m.reply = None
        m.release()


def main(names: list[str]) -> None:
    ports = []
    for name in names:
        if name.startswith("bootstrap:"):
            name = name.partition(":")[2]
            deadline = time.monotonic() + 20
            while True:
                try:
                    right = bootstrap.look_up(name)
                    break
                except bootstrap.BootstrapError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            with right:
                net.check_in(name, right)
            continue
        port = Port()
        ports.append(port)
        with port.make_send() as right:
            net.check_in(name, right)
        if name.startswith("echo"):
            threading.Thread(target=echo, args=(port,), daemon=True).start()
        elif name.startswith("hash"):
            threading.Thread(target=hash_ool, args=(port,), daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main(sys.argv[1:])
