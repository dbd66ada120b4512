"""A minimal, fast HTTP/1.1 loopback server for the benchmarks (so it is never the bottleneck).

    python benchmarks/server.py            # prints "PORT <n>" on stdout, serves until killed
    python benchmarks/server.py --tls CERT KEY   # the same over TLS (PEM certificate and key)

Any ``POST .../start-session`` gets ``200 {"session_id": ...}`` on a keep-alive connection.
A path that starts with ``/s/<name>/`` plays the script set for <name> first: ``POST
/script/<name>`` with a body such as ``503,503,200`` or ``429:1,200`` (status, then an optional
Retry-After in seconds), one step per request, then plain 200s. An ``Idempotency-Key`` of the
form ``s-503.200-<anything>`` scripts the requests carrying that key the same way (steps
separated by dots), so one client can mix faults into a run. A ``HEAD`` gets the headers of
a 200 without its body (``warm_up()``). A path that starts with ``/trickle/<phase>/`` (phase
``status``, ``headers`` or ``body``) answers a byte every 10 ms from that phase on, for the
deadline-overshoot benchmark. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import sys

_ids = itertools.count(1)
_scripts: dict[str, list[tuple[int, str | None]]] = {}
_REASONS = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Unavailable"}


def _response(status: int, body: bytes, retry_after: str | None = None) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        # A 36-character id as a real server sends (a UUID), sharing no start with the key.
        f"x-request-id: {status:03d}e4a7c-1b2f-4d3e-9a8b-7c6d5e4f3a21\r\n"
    )
    if retry_after is not None:
        head += f"retry-after: {retry_after}\r\n"
    return head.encode() + b"\r\n" + body


def _steps(text: str, separator: str) -> list[tuple[int, str | None]]:
    steps = []
    for step in text.split(separator):
        status, _, after = step.strip().partition(":")
        steps.append((int(status), after or None))
    return steps


def _answer(path: str, body: bytes, key: str | None) -> bytes:
    if path.startswith("/script/"):
        _scripts[path.split("/")[2]] = _steps(body.decode(), ",")
        return _response(200, b"{}")
    name = path.split("/")[2] if path.startswith("/s/") else None
    if key is not None and key.startswith("s-"):
        name = key
        if key not in _scripts:
            _scripts[key] = _steps(key.split("-")[1], ".")
    if name is not None:
        steps = _scripts.get(name)
        if steps:
            status, after = steps.pop(0)
            if status != 200:
                return _response(status, b'{"error":"unavailable","message":"scripted"}', after)
    return _response(200, b'{"session_id":"s-%d","status":"starting"}' % next(_ids))


#: A 200 whose every phase is long enough to outlast any deadline when sent a byte at a time.
_TRICKLED = {
    "status": b"HTTP/1.1 200 OK" + b"K" * 600 + b"\r\n",
    "headers": b"x-slow: " + b"a" * 600 + b"\r\n",
    "body": b'{"session_id":"s-trickle"' + b" " * 600 + b"}",
}
TRICKLE_EVERY = 0.01


def _trickle(transport: asyncio.Transport, phase: str) -> None:
    head = _TRICKLED["status"] + _TRICKLED["headers"]
    body = _TRICKLED["body"]
    whole = head + f"content-length: {len(body)}\r\n\r\n".encode() + body
    start = {"status": 0, "headers": len(_TRICKLED["status"]), "body": len(whole) - len(body)}
    at = start[phase]
    transport.write(whole[:at])
    loop = asyncio.get_running_loop()

    def step(i: int) -> None:
        if transport.is_closing() or i >= len(whole):
            return
        transport.write(whole[i : i + 1])
        loop.call_later(TRICKLE_EVERY, step, i + 1)

    step(at)


class _Protocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            key = None
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "idempotency-key":
                    key = value.strip()
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path = head.split(" ", 2)[:2]
            if path.startswith("/trickle/"):
                _trickle(self.transport, path.split("/")[2])  # type: ignore[arg-type]
                continue
            reply = _answer(path, body, key)
            if method == "HEAD":
                reply = reply[: reply.find(b"\r\n\r\n") + 4]
            self.transport.write(reply)  # type: ignore[attr-defined]


async def _main(tls: ssl.SSLContext | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Protocol, "127.0.0.1", 0, backlog=1024, ssl=tls)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    context = None
    if sys.argv[1:2] == ["--tls"]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
    try:
        asyncio.run(_main(context))
    except KeyboardInterrupt:
        sys.exit(0)
