"""A client survives ``os.fork()``: the child never shares a pooled connection with its parent.

`os.register_at_fork` bumps a generation in the child; a transport of an older generation
drops the connections it inherited (descriptors only: nothing is sent on them) and opens its
own.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from typing import Any

_generation = [0]


def fork_generation() -> int:
    """Which process generation this is: 0 in the process that imported this, +1 per fork."""
    return _generation[0]


def _after_fork_in_child() -> None:
    _generation[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def close_inherited(sockets: Iterable[Any]) -> None:
    """Close a child's copies of its parent's sockets: only the descriptors, which sends
    nothing (no FIN, no TLS close_notify) while the parent keeps its own copies open.

    Only plain `socket.socket` objects are closed here, after `detach()`, so nothing closes
    the descriptor a second time (a later ``close()`` of a detached socket does nothing).
    """
    for sock in sockets:
        if not isinstance(sock, socket.socket):
            continue
        try:
            fd = sock.detach()
        except OSError:
            continue
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
