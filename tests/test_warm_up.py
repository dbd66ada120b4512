"""`warm_up()` opens a pooled connection that the next call reuses, and sends no API key.

A keep-alive HTTP/1.1 server on 127.0.0.1 counts the connections it accepted and keeps every
request head it read, for the sync client, the async client over aiohttp and over httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from avatario_wrapper import (
    APIConnectionError,
    AsyncAvatarioClient,
    AvatarioClient,
    ClientClosedError,
)

KEY = "warm-up-key-0123456789"
CALL: dict[str, Any] = {
    "avatar_id": "face_1",
    "agent_identity": "agent-1",
    "livekit_url": "wss://rooms.example.com",
    "livekit_token": "lk.token.value",
}
SESSION = b'{"session_id":"s-1","status":"starting"}'


class KeepAliveServer:
    """Answers HEAD with an empty 200 and POST with a session, keeping connections open."""

    def __init__(self) -> None:
        self.accepted = 0
        self.heads: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        buffer = b""
        conn.settimeout(5)
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                text = head.decode("latin-1")
                length = 0
                for line in text.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                while len(buffer) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                buffer = buffer[length:]
                with self._lock:
                    self.heads.append(text)
                if text.startswith("HEAD "):
                    # A HEAD reply's content-length describes the body a GET would have.
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\n")
                else:
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(SESSION), SESSION)
                    )
        except OSError:
            return
        finally:
            conn.close()

    def __enter__(self) -> KeepAliveServer:
        thread = threading.Thread(target=self._serve, daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._sock.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def server() -> Iterator[KeepAliveServer]:
    with KeepAliveServer() as running:
        yield running


def _check(server: KeepAliveServer) -> None:
    assert server.accepted == 1, "warm_up and the call should share one connection"
    assert len(server.heads) == 2
    warm, call = server.heads
    assert warm.startswith("HEAD / HTTP/1.1\r\n")
    assert "x-api-key" not in warm.lower()
    assert KEY not in warm
    assert "idempotency-key" not in warm.lower()
    assert call.startswith("POST /start-session HTTP/1.1\r\n")
    assert f"x-api-key: {KEY}".lower() in call.lower()


def test_sync_warm_up_opens_the_connection_the_call_reuses(server: KeepAliveServer) -> None:
    with AvatarioClient(KEY, base_url=server.url) as client:
        client.warm_up()
        assert server.accepted == 1
        client.start_session(**CALL)
    _check(server)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_async_warm_up_opens_the_connection_the_call_reuses(
    server: KeepAliveServer, transport: str
) -> None:
    async def main() -> None:
        http = httpx.AsyncClient() if transport == "httpx" else None
        async with AsyncAvatarioClient(KEY, base_url=server.url, http_client=http) as client:
            expected = "AiohttpTransport" if transport == "aiohttp" else "AsyncHttpxTransport"
            assert type(client._transport).__name__ == expected
            await client.warm_up()
            assert server.accepted == 1
            await client.start_session(**CALL)
        if http is not None:
            await http.aclose()

    asyncio.run(main())
    _check(server)


def _refused_url() -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}"


def test_sync_warm_up_raises_when_the_origin_is_unreachable() -> None:
    with AvatarioClient(KEY, base_url=_refused_url()) as client:
        with pytest.raises(APIConnectionError) as caught:
            client.warm_up()
        assert KEY not in str(caught.value)
    with pytest.raises(ClientClosedError):
        client.warm_up()


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_async_warm_up_raises_when_the_origin_is_unreachable(transport: str) -> None:
    async def main() -> None:
        http = httpx.AsyncClient() if transport == "httpx" else None
        client = AsyncAvatarioClient(KEY, base_url=_refused_url(), http_client=http)
        with pytest.raises(APIConnectionError) as caught:
            await client.warm_up()
        assert KEY not in str(caught.value)
        await client.aclose()
        with pytest.raises(ClientClosedError):
            await client.warm_up()
        if http is not None:
            await http.aclose()

    asyncio.run(main())


def test_a_warm_up_failure_after_sending_does_not_say_a_session_may_have_started() -> None:
    from avatario_wrapper._transports.base import connection_error
    from avatario_wrapper.errors import Outcome

    with AvatarioClient(KEY, base_url="http://127.0.0.1:9") as client:
        request = client._begin(None, {}).request
    error = connection_error(request, TimeoutError(), timed_out=True, outcome=Outcome.UNKNOWN)
    assert "may have started" not in str(error)
    assert request.headers.keys() == {"accept-encoding", "user-agent"}
    assert request.content is None
