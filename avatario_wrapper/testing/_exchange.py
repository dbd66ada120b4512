"""One ASGI exchange of the fake: reading the request, sending the reply, or dropping the
connection instead; and the lifespan messages it acknowledges."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ._handlers import OperationResponse, error_body
from ._spec import JSON_MEDIA_TYPE
from ._transport import close_connection, reset_connection

if TYPE_CHECKING:
    from ._router import Match
    from .faults import Fault

MAX_BODY_BYTES = 1024 * 1024


@attrs.frozen
class Outgoing:
    """Bytes to send: what every path through the app ends in."""

    status: int
    content: bytes = b""
    media_type: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)


def json_reply(response: OperationResponse) -> Outgoing:
    """An answer as bytes: its body as compact JSON (no body when it is None)."""
    if response.body is None:
        return Outgoing(response.status, headers=response.headers)
    content = json.dumps(response.body, separators=(",", ":")).encode()
    return Outgoing(response.status, content, JSON_MEDIA_TYPE, response.headers)


def error_reply(status: int, code: str, message: str, request_id: str, **headers: str) -> Outgoing:
    """An error in the spec's Error shape."""
    return json_reply(OperationResponse(status, error_body(code, message, request_id), headers))


class AsgiExchange:
    """One request and its response, over ASGI."""

    def __init__(self, scope: Mapping[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self.receive = receive
        self._send = send
        self.request_id = f"req_{uuid.uuid4().hex[:16]}"
        self.started = False
        self.method: str = scope["method"]
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", []):
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers = headers
        client = scope.get("client")
        self.client_host: str | None = client[0] if client else None
        self.client = f"{client[0]}:{client[1]}" if client else None
        # What the fake learns as it serves, for the record.
        self.body = b""
        self.match: Match | None = None
        self.fault: Fault | None = None

    async def read_body(self) -> bytes | None:
        """The body, or None if the client left before it was all sent.

        It is read to its end (so that closing the connection later sends a FIN, not a reset)
        but at most MAX_BODY_BYTES + 1 bytes are kept: a longer one is refused (413).
        """
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return None
            chunk: bytes = message.get("body", b"")
            if size <= MAX_BODY_BYTES:
                chunks.append(chunk[: MAX_BODY_BYTES + 1 - size])
            size += len(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def respond(self, answer: Outgoing) -> None:
        headers = [(b"content-length", str(len(answer.content)).encode())]
        if answer.media_type is not None:
            headers.append((b"content-type", answer.media_type.encode()))
        headers.append((b"x-request-id", self.request_id.encode()))
        headers.extend((k.lower().encode(), v.encode("latin-1")) for k, v in answer.headers.items())
        self.started = True
        await self._send(
            {"type": "http.response.start", "status": answer.status, "headers": headers}
        )
        await self._send({"type": "http.response.body", "body": answer.content})

    async def wait_for_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass


async def drop(exchange: AsgiExchange, *, clean: bool) -> None:
    """End the connection without a response: a FIN when `clean`, else a reset."""
    if clean:
        close_connection(exchange.scope)
    else:
        reset_connection(exchange.scope)
    # Let the server see the connection go, so it does not try to answer on it.
    await asyncio.sleep(0)


async def lifespan(receive: Any, send: Any) -> None:
    """Nothing to start or stop: acknowledge both."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
