"""Cancellation belongs to the caller, on both async transports (aiohttp and httpx).

A task cancelled at any point of a call (opening the connection, waiting for the status, in
the middle of the body, in a backoff wait) ends with `asyncio.CancelledError`, sends nothing
more, and its connection is closed, not pooled. A caller's `asyncio.timeout` (or `wait_for`)
that fires together with the attempt's own timeout is the caller's: never turned into an
`APITimeoutError`, never followed by another request. Real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from avatario_wrapper import AsyncAvatarioClient, RetryPolicy

from .conftest import API_KEY, CALL
from .loopback import KeepAliveServer

ASYNC_KINDS = ["async-aiohttp", "async-httpx"]


@pytest.fixture(params=ASYNC_KINDS)
def async_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _with_client(
    kind: str, url: str, body: Callable[[AsyncAvatarioClient], Awaitable[Any]], **options: Any
) -> Any:
    options = {"base_url": url, **options}
    if kind == "async-httpx":
        async with httpx.AsyncClient(verify=False) as http:
            async with AsyncAvatarioClient(API_KEY, http_client=http, **options) as client:
                return await body(client)
    async with AsyncAvatarioClient(API_KEY, **options) as client:
        return await body(client)


def _wait_until(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _cancel_after(kind: str, url: str, delay: float, **options: Any) -> BaseException:
    """Start one call, cancel its task after `delay` seconds; what the task ended with."""

    async def body(client: AsyncAvatarioClient) -> BaseException:
        task = asyncio.ensure_future(client.start_session(**CALL))
        await asyncio.sleep(delay)
        assert task.cancel()
        try:
            await task
        except BaseException as exc:
            return exc
        raise AssertionError("the cancelled call returned")

    result: BaseException = asyncio.run(_with_client(kind, url, body, **options))
    return result


# -- at every point of a call ----------------------------------------------------------------


def _stall(n: int, conn: int, head: str) -> bytes:
    return b""  # read the request, answer nothing, keep the connection


def _half_a_body(n: int, conn: int, head: str) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b'{"session_id":'


def _unavailable(n: int, conn: int, head: str) -> bytes:
    body = b'{"error":"unavailable","message":"later"}'
    return (b"HTTP/1.1 503 X\r\nRetry-After: 5\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


@pytest.mark.parametrize(
    ("answer", "delay"),
    [
        pytest.param(_stall, 0.3, id="waiting for the status"),
        pytest.param(_half_a_body, 0.3, id="in the middle of the body"),
        pytest.param(_unavailable, 0.3, id="in the backoff wait"),
    ],
)
def test_a_cancelled_call_ends_cancelled_and_sends_nothing_more(
    async_kind: str, answer: Callable[[int, int, str], bytes], delay: float
) -> None:
    policy = RetryPolicy(retry_unknown_outcome=True, max_elapsed=20.0)
    with KeepAliveServer(answer) as server:
        ended = _cancel_after(async_kind, server.url, delay, retry=policy, timeout=10.0)
        assert isinstance(ended, asyncio.CancelledError), repr(ended)
        time.sleep(0.3)
        assert len(server.seen) == 1  # nothing sent after the cancellation
        if answer is not _unavailable:
            # The connection of a cancelled exchange is closed, never pooled.
            assert _wait_until(lambda: server.closed_by_client == [1], 5.0)


def test_a_call_cancelled_while_connecting_ends_cancelled(async_kind: str) -> None:
    # A TCP peer that never speaks TLS: the call is stuck in the handshake when cancelled.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except (TimeoutError, OSError):
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    try:
        ended = _cancel_after(async_kind, url, 0.3, timeout=10.0, connect_timeout=None)
        assert isinstance(ended, asyncio.CancelledError), repr(ended)
        assert len(accepted) == 1  # one connection opened, no other after the cancellation

        def closed() -> bool:  # drain the ClientHello; an EOF (or a reset) means closed
            accepted[0].settimeout(0.01)
            try:
                while accepted[0].recv(65536):
                    pass
            except (TimeoutError, BlockingIOError):
                return False
            except OSError:
                return True
            return True

        assert _wait_until(closed, 5.0)  # the half-open connection was closed
    finally:
        stop.set()
        thread.join(5)
        sock.close()
        for conn in accepted:
            conn.close()


# -- the caller's timeout and the attempt's own, at the same moment ---------------------------


async def _callers_timeout(seconds: float, call: Awaitable[Any]) -> Any:
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await call
    return await asyncio.wait_for(call, seconds)  # pragma: no cover - Python 3.10


def test_a_callers_timeout_is_never_turned_into_ours(async_kind: str) -> None:
    """The caller's timeout T around a client whose own timeout is also T, 15 times: each
    ends in the caller's TimeoutError after one request, never in APITimeoutError nor a
    resend (retry_unknown_outcome would resend a timed-out attempt of ours)."""
    seconds = 0.1
    policy = RetryPolicy(retry_unknown_outcome=True, initial_delay=0.0, max_delay=0.0)
    with KeepAliveServer(_stall) as server:

        async def body(client: AsyncAvatarioClient) -> list[BaseException]:
            ends: list[BaseException] = []
            for _ in range(15):
                try:
                    await _callers_timeout(seconds, client.start_session(**CALL))
                except BaseException as exc:
                    ends.append(exc)
            return ends

        ends = asyncio.run(
            _with_client(async_kind, server.url, body, timeout=seconds, retry=policy)
        )
        time.sleep(0.2)
        requests = len(server.seen)
    names = [type(e).__name__ for e in ends]
    assert all(isinstance(e, asyncio.TimeoutError) for e in ends), names
    assert requests == 15  # one request per call, none resent
