"""ipc_right.send_once_target: which of our receive rights a send-once
right sends to, proven by the kernel (sockdiag), as the netmsg proxy asks
when a send-once right to one of its proxy ports is passed on."""

from __future__ import annotations

from pymach._kern import ipc_right as R
from pymach._kern import mach_msg as KM
from pymach._kern import message_defs as MD
from pymach._kern.ipc_space import MACH_PORT_RIGHT_RECEIVE
from pymach._kern.task import SELF


def _right_to(dest: int, port: int, disposition: int) -> int:
    """A right to ``port`` made with ``disposition`` and received in a
    message on ``dest``: its name."""
    space = SELF.space
    KM.send(space, MD.HDR.pack(MD.MACH_MSGH_BITS(MD.MACH_MSG_TYPE_MAKE_SEND, disposition), 24, dest, port, 0, 7),
            MD.MACH_SEND_MSG, 0)
    got = KM.receive(space, dest, 1024, MD.MACH_RCV_MSG | MD.MACH_RCV_TIMEOUT, 5000)
    return int(MD.HDR.unpack_from(got)[2])


def test_a_send_once_right_is_matched_to_its_port_only() -> None:
    space = SELF.space
    q, other, dest = (R.allocate(space, MACH_PORT_RIGHT_RECEIVE) for _ in range(3))
    try:
        to_q = _right_to(dest, q, MD.MACH_MSG_TYPE_MAKE_SEND_ONCE)
        to_other = _right_to(dest, other, MD.MACH_MSG_TYPE_MAKE_SEND_ONCE)
        assert R.send_once_target(space, to_q, [other, q]) == q
        assert R.send_once_target(space, to_other, [other, q]) == other
        assert R.send_once_target(space, to_q, [other]) == 0
        assert R.send_once_target(space, to_q, []) == 0
        assert R.send_once_target(space, q, [q]) == 0          # a receive right is no send-once right
        assert R.send_once_target(space, 0x7FFF03, [q]) == 0   # nor is a name that is not there
        R.deallocate(space, to_other)
        R.deallocate(space, to_q)
    finally:
        for name in (q, other, dest):
            R.destroy(space, name)
