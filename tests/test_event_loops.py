"""An async client belongs to one event loop; used on another it fails before sending.

Both async transports, real sockets on 127.0.0.1: after the loop it was used on ended
(`asyncio.run` twice, as with per-test loops), from another thread's running loop, and with a
given aiohttp session made on another loop. Closing works from anywhere.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from typing import Any

import aiohttp
import httpx
import pytest

from avatario_wrapper import AsyncAvatarioClient, StartSessionResult, WrongEventLoopError

from .conftest import API_KEY, CALL
from .loopback import KeepAliveServer, ok_session

ASYNC_KINDS = ["async-aiohttp", "async-httpx"]


@pytest.fixture(params=ASYNC_KINDS)
def async_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server() -> Any:
    with KeepAliveServer(lambda n, conn, head: ok_session(n)) as running:
        yield running


def _client(kind: str, url: str) -> AsyncAvatarioClient:
    http = httpx.AsyncClient() if kind == "async-httpx" else None
    return AsyncAvatarioClient(API_KEY, base_url=url, http_client=http)


def test_a_client_used_after_its_loop_ended_fails_before_sending(
    async_kind: str, server: KeepAliveServer
) -> None:
    client = _client(async_kind, server.url)  # made outside any loop: bound on first use
    first = asyncio.run(client.start_session(**CALL))
    assert isinstance(first, StartSessionResult)

    with pytest.raises(WrongEventLoopError) as caught:
        asyncio.run(client.start_session(**CALL))
    assert len(server.seen) == 1  # nothing sent on the second loop
    message = str(caught.value)
    assert "another event loop" in message
    assert "now closed" in message
    assert "nothing was sent" in message
    assert isinstance(caught.value, RuntimeError)
    asyncio.run(client.aclose())  # closing from another loop does not fail
    assert client.closed
    # Its pooled connection belongs to the closed loop, which can no longer close it: it is
    # abandoned as aiohttp and httpx abandon theirs (a ResourceWarning when collected).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del client, caught  # the error's traceback holds the client too
        gc.collect()


def test_a_client_used_from_another_threads_loop_fails_before_sending(
    async_kind: str, server: KeepAliveServer
) -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        client = _client(async_kind, server.url)
        done = asyncio.run_coroutine_threadsafe(client.start_session(**CALL), loop)
        assert isinstance(done.result(10), StartSessionResult)

        with pytest.raises(WrongEventLoopError, match="still open"):
            asyncio.run(client.start_session(**CALL))
        assert len(server.seen) == 1
        asyncio.run(client.aclose())  # closed on its own loop, from here
        assert client.closed
        http = client._transport.http if async_kind == "async-httpx" else None  # type: ignore[attr-defined]
        if http is not None:  # a pool passed in is its owner's to close, on its loop
            asyncio.run_coroutine_threadsafe(http.aclose(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_a_given_aiohttp_session_binds_the_client_to_its_loop(server: KeepAliveServer) -> None:
    async def make() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    other = asyncio.new_event_loop()
    try:
        session = other.run_until_complete(make())
        client = AsyncAvatarioClient(API_KEY, base_url=server.url, http_client=session)
        with pytest.raises(WrongEventLoopError):
            asyncio.run(client.start_session(**CALL))  # its first use, on another loop
        assert server.seen == []
        other.run_until_complete(session.close())
    finally:
        other.close()


def test_a_client_closed_from_synchronous_code_closes_its_pool(
    async_kind: str, server: KeepAliveServer
) -> None:
    # As a sync fixture's teardown does (the pytest plugin): the loop is idle, not running.
    loop = asyncio.new_event_loop()
    try:
        client = _client(async_kind, server.url)
        loop.run_until_complete(client.start_session(**CALL))
        client._close_from_sync()
        assert client.closed
        if async_kind == "async-aiohttp":  # a pool of ours: its connection is closed
            assert _eventually(lambda: server.closed_by_client == [1])
        else:  # a pool passed in is its owner's to close
            loop.run_until_complete(client._transport.http.aclose())  # type: ignore[attr-defined]
    finally:
        loop.close()


def _eventually(predicate: Any) -> bool:
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False
