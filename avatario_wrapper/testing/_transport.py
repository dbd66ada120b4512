"""Lets the fake app drop its connection: with a TCP reset (the ``reset`` and ``lost``
faults) or cleanly with a FIN (``idle-close`` and ``lost-close``).

ASGI gives an app no handle on its socket, so the runner serves with `ResettableH11Protocol`,
which puts each connection's transport into the request scope's ``extensions``.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Mapping
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

EXTENSION = "avatario.transport"


class ResettableH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, exposing the connection's transport to the app."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        app = self.app

        async def with_transport(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})[EXTENSION] = transport
            await app(scope, receive, send)

        self.app = with_transport


def _transport(scope: Mapping[str, Any]) -> asyncio.Transport:
    transport: asyncio.Transport | None = scope.get("extensions", {}).get(EXTENSION)
    if transport is None:
        raise RuntimeError(
            "the reset, lost, lost-close and idle-close faults need the fake server's runner "
            "(run_fake_server)"
        )
    return transport


def close_connection(scope: Mapping[str, Any]) -> None:
    """Close the request's connection cleanly: the peer sees a FIN (EOF) and no response.

    This is what uvicorn itself does when a keep-alive connection's idle timer fires. The
    request must have been read whole first: closing a socket with unread bytes in its
    receive buffer makes the kernel send a reset instead.
    """
    _transport(scope).close()


def reset_connection(scope: Mapping[str, Any]) -> None:
    """Abort the request's connection so the peer sees a reset and no response."""
    transport = _transport(scope)
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
