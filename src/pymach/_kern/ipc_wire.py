"""The wire format of a message record: one SEQPACKET record per message,
as every port's connection carries it.

A record is a header (WIRE), a table of the rights past the destination
(RIGHT, one entry each), and the body. Every fd the record carries rides in
its SCM_RIGHTS, in the order of the table. The header's flags word holds
the FLAG_* bits in its low byte and a reply token in its upper 24 bits.

Control records (FLAG_JOIN, FLAG_REPLYCONN, FLAG_SO_DEAD, FLAG_UPGRADE)
are a header alone: they carry connections between runtimes and never
reach a receiver as messages (_kern/ipc_port.py reads them).
"""

from __future__ import annotations

import struct
from typing import Final

MAGIC: Final = 0x3148434D  # "MCH1"
# magic, bits, id, body length, rights, fds, flags, array bytes
WIRE: Final = struct.Struct("<IIiIIIII")
FLAGS_AT: Final = 24  # offset of the flags word in WIRE
# kind, fd count, size (or packing of a receive right), aux
RIGHT: Final = struct.Struct("<IIQI")

# right kinds past MACH_MSG_TYPE_PORT_* (which are kinds too)
KIND_NONE: Final = 0
KIND_OOL: Final = 1
KIND_BLOB: Final = 2  # an inline body too large for a record, in a sealed memfd
KIND_BACK: Final = 3  # a reply right answered on the sender's reply connection (aux: token)
KIND_ENTRY: Final = 4  # a memory entry: its memfd (size and aux: MemoryEntry.wire)
# A send right to a kernel object of a task (ipc_kmsg._copyin_kobject). The
# receiver learns the process from the pidfd itself, never from the record
KIND_TASK: Final = 5  # a task port: a pidfd of its process (aux: TASK_FLAVOR_*)
KIND_THREAD: Final = 6  # a thread port: a pidfd of its process (size: the tid, aux: its flavor)
KIND_HOST: Final = 7  # the host port or a clock: no fd (the receiver's own; size: 0, or 1 + the clock id)
KIND_SEMAPHORE: Final = 8  # a semaphore: its count, wake-up and state fds (_kern/sync_sema.py)

# flags (the low byte of the flags word)
FLAG_NOTIFY: Final = 1  # a notification made by a runtime
FLAG_BLOB: Final = 2  # the body is in a sealed memfd (KIND_BLOB)
FLAG_JOIN: Final = 4  # control: fds [send end, reply end]: a sender's own connection
FLAG_REPLYCONN: Final = 8  # control: fds [reply end] for the connection it came on
FLAG_REPLY: Final = 16  # a message to a back-channel send-once right (token)
FLAG_SO_DEAD: Final = 32  # control: that right (token) was destroyed unused
FLAG_UPGRADE: Final = 64  # control: fds [send-once end]: that right (token) now has a connection of its own
FLAG_CARRIER: Final = 128  # a message whose last fd is a carrier of the rest (unix.carry)
CONTROL: Final = FLAG_JOIN | FLAG_REPLYCONN | FLAG_SO_DEAD | FLAG_UPGRADE
# control, on the connection that a moved receive right's queue travels on
# (_kern/ipc_port.py, _spool): fds [a sealed memfd of records, a carrier of
# their fds if they have any]. Read where the right arrives, never as a message
FLAG_SPOOL: Final = FLAG_JOIN | FLAG_BLOB

# The largest record a port accepts: the header, the body, and the
# descriptors' tables. Larger inline bodies travel in a sealed memfd.
MAX_RECORD: Final = 64 * 1024
