"""The fake's connections: answered at once (``TCP_NODELAY``), never in plain text, and
droppable by the app, with a TCP reset (the ``reset`` and ``lost`` faults) or cleanly with a
FIN (``idle-close`` and ``lost-close``).

``TCP_NODELAY``: uvicorn writes a response's head and its body in two ``transport.write``
calls. With Nagle's algorithm on, the kernel holds the small body until the client ACKs the
head, and the client delays that ACK (about 40 ms on Linux): every call on a kept-alive
connection after the first took ~44 ms. asyncio turns Nagle off on each accepted socket only
when the socket says it is TCP (``base_events._set_nodelay`` checks ``sock.proto ==
IPPROTO_TCP``), and an accepted socket inherits ``proto`` from the listening one, which
``socket.socket(AF_INET, SOCK_STREAM)`` leaves at 0 (as uvicorn's own ``Config.bind_socket``
does: Kludex/uvicorn#3149; on macOS even asyncio's ``create_server`` gets 0 from getaddrinfo:
python/cpython#148783). So `FakeH11Protocol` sets the option itself on every connection, and
the runner also makes its listening socket with ``IPPROTO_TCP``.

ASGI gives an app no handle on its socket, so `FakeH11Protocol` also puts each connection's
transport into the request scope's ``extensions``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import uuid
from collections.abc import Mapping
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

EXTENSION = "avatario.transport"


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Turn Nagle's algorithm off on a TCP connection (nothing for other sockets)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class FakeH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with ``TCP_NODELAY``, JSON for the requests it refuses itself
    (malformed HTTP), and the connection's transport exposed to the app."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        super().connection_made(transport)
        app = self.app

        async def with_transport(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})[EXTENSION] = transport
            await app(scope, receive, send)

        self.app = with_transport

    def send_400_response(self, msg: str) -> None:
        """Refuse a request h11 could not parse, in the spec's JSON Error shape."""
        request_id = f"req_{uuid.uuid4().hex[:16]}"
        body = json.dumps({"error": "bad_request", "message": msg, "request_id": request_id})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body.encode()),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()


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
