"""Thousands of calls in flight on one async client: every call ends within its deadline, a
complete answer is never reported as cut off, and nothing is left behind (sockets, tasks).

A slow keep-alive server on 127.0.0.1 (an asyncio server in a thread of its own) answers each
request after a pause, so the pool of 100 connections is the bottleneck: most calls wait for
a connection, and those whose deadline comes first end as "not sent" without a byte written.
The bounds hold on a loaded machine: the deadline plus a wide margin; speed itself is
measured by scripts/bench.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from avatario_wrapper import (
    APIError,
    APIResponseValidationError,
    AsyncAvatarioClient,
    AvatarioClient,
    Outcome,
    RetryPolicy,
    StartSessionResult,
)
from avatario_wrapper._transports._hedge import MAX_CONNECTS

from .conftest import API_KEY, CALL

CALLS = 5000
DEADLINE = 4.0
#: What a loaded machine may add to a call's deadline: the event loop is busy with 5,000
#: calls, and on 2 cores shared with other work it ran 5.7 s late (httpx, CI, 2026-12-07).
#: The bug this guards against left calls unfinished after 20 s.
MARGIN = 8.0
PAUSE = 0.05
BODY = b'{"session_id":"s"}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


class _Connection(asyncio.Protocol):
    """One connection of `SlowServer`: answers each request `PAUSE` seconds after it came.

    Counted by the loop's own callbacks, not by a handler that may be pausing: a connection
    the client closed is no longer counted as soon as the server's loop sees its end, and a
    connection is counted as the pool's only from its first request (a hedged connect that
    lost its race is closed without ever carrying one)."""

    def __init__(self, server: SlowServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._carrying = False
        self._open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._open = True
        self._server.count(opened=+1)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self._buffer[:end].split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(self._buffer) < end + 4 + length:
                return  # the body is still coming
            self._buffer = self._buffer[end + 4 + length :]
            if not self._carrying:
                self._carrying = True
                self._server.count(carrying=+1)
            self._server.requests += 1
            asyncio.get_running_loop().call_later(PAUSE, self._answer)

    def _answer(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(ANSWER)

    def eof_received(self) -> bool:
        self._ended()  # counted at once: the loss itself comes a loop turn later
        return False  # the client is done: close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._ended()  # a reset: no EOF came first

    def _ended(self) -> None:
        if self._open:
            self._open = False
            self._server.count(opened=-1, carrying=-1 if self._carrying else 0)


class SlowServer:
    """Answers every request `PAUSE` seconds after it arrived; keeps connections open.

    `peak_connections` is the most connections that carried a request and were open at once,
    as the server's loop saw them; `peak_open` the most open at all (hedged connects too).
    Each peak is taken two loop turns after a connection came or carried its first request:
    by then the ends the same poll of the loop brought (a FIN, or a reset, whose
    `connection_lost` comes a turn later) are counted, however the poll ordered them."""

    def __init__(self) -> None:
        self.requests = 0
        self.peak_connections = 0
        self.peak_open = 0
        self._carrying = 0
        self._open = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.url = ""

    def count(self, *, opened: int = 0, carrying: int = 0) -> None:
        self._open += opened
        self._carrying += carrying
        if opened > 0 or carrying > 0:
            self._loop.call_soon(self._loop.call_soon, self._sample)

    def _sample(self) -> None:
        self.peak_connections = max(self.peak_connections, self._carrying)
        self.peak_open = max(self.peak_open, self._open)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            self._loop.create_server(lambda: _Connection(self), "127.0.0.1", 0, backlog=4096)
        )
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._server = server
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    def __enter__(self) -> SlowServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def server() -> Iterator[SlowServer]:
    with SlowServer() as running:
        yield running


def _judge(outcomes: list[tuple[Any, float]], server: SlowServer, calls: int) -> None:
    took = [seconds for _, seconds in outcomes]
    results = [result for result, _ in outcomes]
    assert max(took) <= DEADLINE + MARGIN, sorted(took)[-5:]
    successes = [r for r in results if isinstance(r, StartSessionResult)]
    failures = [r for r in results if isinstance(r, APIError)]
    assert len(successes) + len(failures) == calls
    # The pool did serve calls (hundreds on an idle machine; tens under a heavy load).
    assert len(successes) >= 10
    # A complete 200 is never reported as cut off; "may have started" only where a request
    # went out and the deadline cut its answer (never for the wait for a connection).
    assert not [f for f in failures if isinstance(f, APIResponseValidationError)]
    assert server.requests >= len(successes)
    unknown = [f for f in failures if f.outcome is Outcome.UNKNOWN]
    assert len(unknown) <= server.requests - len(successes)
    assert server.peak_connections <= 100  # the pool's cap
    assert server.peak_open <= 100 * MAX_CONNECTS  # with hedged connects not yet closed


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_five_thousand_calls_in_flight_end_within_their_deadline(
    server: SlowServer, transport: str
) -> None:
    policy = RetryPolicy(max_elapsed=DEADLINE, retry_budget=None)

    async def one(client: AsyncAvatarioClient) -> tuple[Any, float]:
        began = time.monotonic()
        try:
            result: Any = await client.start_session(**CALL)
        except APIError as error:
            result = error
        return result, time.monotonic() - began

    async def main() -> list[tuple[Any, float]]:
        http = httpx.AsyncClient() if transport == "httpx" else None
        try:
            async with AsyncAvatarioClient(
                API_KEY, base_url=server.url, retry=policy, http_client=http
            ) as client:
                return await asyncio.gather(*(one(client) for _ in range(CALLS)))
        finally:
            if http is not None:
                await http.aclose()
            await asyncio.sleep(0)
            assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    before = _open_descriptors()
    tracemalloc.start()
    try:
        outcomes = asyncio.run(main())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _judge(outcomes, server, CALLS)
    assert peak < 400 * 1024 * 1024  # bounded: no per-call leak grows with the queue
    time.sleep(0.2)  # the server thread closes its ends
    assert _open_descriptors() <= before + 2  # no socket left open by the client


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_a_thousand_threads_on_one_sync_client_end_within_their_deadline(
    server: SlowServer,
) -> None:
    # The sync client's calls are as many as the caller's threads: a thousand here.
    threads = 1000
    policy = RetryPolicy(max_elapsed=DEADLINE, retry_budget=None)
    outcomes: list[tuple[Any, float]] = []
    lock = threading.Lock()
    before = _open_descriptors()
    with AvatarioClient(API_KEY, base_url=server.url, retry=policy) as client:

        def one() -> None:
            began = time.monotonic()
            try:
                result: Any = client.start_session(**CALL)
            except APIError as error:
                result = error
            with lock:
                outcomes.append((result, time.monotonic() - began))

        workers = [threading.Thread(target=one) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(DEADLINE + MARGIN + 10)
    _judge(outcomes, server, threads)
    time.sleep(0.2)
    assert _open_descriptors() <= before + 2
