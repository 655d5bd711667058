"""This task's send right to the network name server (Mach's
``name_server_port``): the port that the local netmsg proxy checks in at
the bootstrap server as ``com.pymach.netmsg``.

Looked up on first use and kept; looked up again when the kept right is
gone or dead (a proxy that was restarted). MACH_PORT_NULL (0) when no
proxy is checked in: a netname routine on it fails at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

from . import ipc_right as R
from .ipc_space import MACH_PORT_TYPE_SEND
from . import task as KT

SERVICE_NAME: Final = "com.pymach.netmsg"

_LOCK = threading.Lock()
_KEPT: list[int] = [0]


def _alive(name: int) -> bool:
    try:
        return bool(R.type_of(KT.SELF.space, name) & MACH_PORT_TYPE_SEND)
    except OSError:
        return False


def get(look_up: Callable[[], int]) -> int:
    """The kept send right's name, or the one ``look_up()`` gives (0 when
    no proxy runs), kept for the next call. A dead kept right is released
    first.

    Conditions: nothing locked; takes this module's lock around the
    look-up (one look-up at a time), and under it the space's lock."""
    with _LOCK:
        name = _KEPT[0]
        if name and _alive(name):
            return name
        if name:
            _KEPT[0] = 0
            try:
                R.deallocate(KT.SELF.space, name)
            except OSError:
                pass
        name = look_up()
        _KEPT[0] = name
        return name


def forget() -> None:
    """Release the kept right (a process that changes bootstrap servers).

    Conditions: nothing locked; takes this module's lock and the space's."""
    with _LOCK:
        name, _KEPT[0] = _KEPT[0], 0
        if name:
            try:
                R.deallocate(KT.SELF.space, name)
            except OSError:
                pass
