"""Hedged connects (`_transports/_hedge`): a slow connect gets a second attempt beside it,
at most three, none while the recent connects to the peer all failed, none on a caller's
pool, and every loser's socket closed.

A connect that never completes is made on loopback with a listener whose accept queue is full
(Linux drops the SYN and would resend it only after 1 s). Delays are real but short (≤ 0.3 s)
and nothing here asserts timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import anyio
import httpcore
import httpx
import pytest

from avatario_wrapper._environment import Environment, Proxy
from avatario_wrapper._transports import _hedge, _httpcore
from avatario_wrapper._transports.aiohttp import AiohttpTransport, _Connector, _HedgingResolver
from avatario_wrapper._transports.httpx import AsyncHttpxTransport, HttpxTransport

from .loopback import LoopbackServer, http_response

NO_PROXY = Environment(None, None, None)


def _listener(backlog: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


@pytest.fixture(autouse=True)
def _fresh_health() -> Iterator[None]:
    """Each test starts with no connect recorded (a port may be reused by a later test)."""
    _hedge.HEALTH._failures.clear()
    yield
    _hedge.HEALTH._failures.clear()


@pytest.fixture
def good() -> Iterator[int]:
    """A port on which connects complete (the kernel accepts them into the queue)."""
    with _listener(16) as sock:
        yield sock.getsockname()[1]


@pytest.fixture
def hole() -> Iterator[int]:
    """A port on which connects never complete: the accept queue is full, SYNs are dropped."""
    with _listener(0) as sock, socket.create_connection(sock.getsockname()) as filler:
        assert filler.fileno() >= 0
        yield sock.getsockname()[1]


def _address(port: int) -> tuple[Any, ...]:
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))


def _recording() -> tuple[list[socket.socket], Callable[[int, int, int], socket.socket]]:
    made: list[socket.socket] = []

    def make(family: int, kind: int, proto: int) -> socket.socket:
        made.append(socket.socket(family, kind, proto))
        return made[-1]

    return made, make


def _open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


# -- sync ---------------------------------------------------------------------------------------


def test_a_slow_first_connect_gets_a_second_attempt_which_wins_and_the_first_is_closed(
    hole: int, good: int
) -> None:
    made, make = _recording()
    addresses = [_address(hole), _address(good), _address(good)]
    ends = time.monotonic() + 30
    with _hedge.race_sync(addresses, ends, delay=0.1, make=make) as winner:
        assert winner.getpeername() == ("127.0.0.1", good)
        assert winner is made[1] or winner is made[2]
        assert made[0].fileno() == -1  # the attempt that was still connecting
        assert all(s.fileno() == -1 for s in made if s is not winner)


def test_at_most_three_attempts_and_all_closed_when_none_completes(hole: int) -> None:
    made, make = _recording()
    ends = time.monotonic() + 0.5
    with pytest.raises(TimeoutError):
        _hedge.race_sync(_hedge.spread([_address(hole)]), ends, delay=0.1, make=make)
    assert len(made) == _hedge.MAX_CONNECTS == 3
    assert all(s.fileno() == -1 for s in made)


def test_a_refused_attempt_starts_the_next_at_once_and_the_first_error_is_raised() -> None:
    with _listener(1) as sock:
        port = sock.getsockname()[1]
    made, make = _recording()  # nothing listens there now: refused
    ends = time.monotonic() + 30  # well beyond 3 delays of 10 s
    with pytest.raises(ConnectionRefusedError):
        _hedge.race_sync(_hedge.spread([_address(port)]), ends, delay=10, make=make)
    assert len(made) == 3
    assert all(s.fileno() == -1 for s in made)


def test_spread_repeats_one_address_and_takes_three_of_many() -> None:
    assert _hedge.spread(["a"]) == ["a", "a", "a"]
    assert _hedge.spread(["a", "b"]) == ["a", "b", "a"]
    assert _hedge.spread(["a", "b", "c", "d"]) == ["a", "b", "c"]
    assert _hedge.spread([]) == []


def test_health_turns_hedging_off_after_three_failed_connects_and_on_at_a_success() -> None:
    health = _hedge.ConnectHealth()
    for _ in range(2):
        health.record("h", 1, ok=False)
    assert health.hedging("h", 1)
    health.record("h", 1, ok=False)
    assert not health.hedging("h", 1)
    assert health.hedging("h", 2)  # per (host, port)
    health.record("h", 1, ok=True)
    assert health.hedging("h", 1)


class _CountingBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, counting the connects it is asked for."""

    def __init__(self) -> None:
        self.inner = httpcore.SyncBackend()
        self.connects = 0

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        self.connects += 1
        return self.inner.connect_tcp(*args, **kwargs)


def test_a_blackholed_peer_gets_one_attempt_per_connect_after_three_failed_connects(
    hole: int,
) -> None:
    inner = _CountingBackend()
    backend = _httpcore.Backend(inner, hedge=True)
    for _ in range(_hedge.UNHEALTHY_AFTER):  # hedged (not through httpcore's own connect)
        with pytest.raises(httpcore.ConnectTimeout):
            backend.connect_tcp("127.0.0.1", hole, timeout=0.3)
    assert inner.connects == 0
    assert not _hedge.HEALTH.hedging("127.0.0.1", hole)
    with pytest.raises(httpcore.ConnectTimeout):
        backend.connect_tcp("127.0.0.1", hole, timeout=0.2)
    assert inner.connects == 1  # one attempt, as without hedging


def test_a_success_turns_hedging_back_on(good: int) -> None:
    for _ in range(_hedge.UNHEALTHY_AFTER):
        _hedge.HEALTH.record("127.0.0.1", good, ok=False)
    inner = _CountingBackend()
    backend = _httpcore.Backend(inner, hedge=True)
    backend.connect_tcp("127.0.0.1", good, timeout=5).close()
    assert inner.connects == 1
    assert _hedge.HEALTH.hedging("127.0.0.1", good)
    stream = backend.connect_tcp("127.0.0.1", good, timeout=5)
    assert inner.connects == 1  # hedged again: our own connect
    assert stream.get_extra_info("server_addr") == ("127.0.0.1", good)
    stream.close()


def test_a_hedged_connection_carries_a_request() -> None:
    server = LoopbackServer([http_response(200, b"ok")])
    with server:
        transport = HttpxTransport(None, environment=NO_PROXY)
        try:
            reply = transport.http.get(server.url)
            assert reply.status_code == 200
            assert reply.extensions["network_stream"]._inner.__class__ is _hedge.SocketStream
        finally:
            transport.close()


# -- which pools hedge --------------------------------------------------------------------------


def test_only_a_pool_of_ours_connecting_directly_hedges() -> None:
    ours = HttpxTransport(None, environment=NO_PROXY)
    theirs = HttpxTransport(httpx.Client(), environment=NO_PROXY)
    proxied = HttpxTransport(
        None,
        environment=Environment(Proxy("HTTPS_PROXY", "http://proxy:3128", None, None), None, None),
    )
    try:
        assert [b.hedge for b in ours._backends] == [True]
        assert [b.hedge for b in theirs._backends] == [False]
        assert all(not b.hedge for b in proxied._backends)
    finally:
        for transport in (ours, theirs, proxied):
            transport.close()
        theirs.http.close()

    async def main() -> tuple[list[bool], list[bool]]:
        own = AsyncHttpxTransport(None, environment=NO_PROXY)
        caller = httpx.AsyncClient()
        given = AsyncHttpxTransport(caller, environment=NO_PROXY)
        hedges = [b.hedge for b in own._backends], [b.hedge for b in given._backends]
        await own.aclose()
        await caller.aclose()
        return hedges

    assert asyncio.run(main()) == ([True], [False])


def test_an_aiohttp_session_of_ours_hedges_and_a_callers_is_left_as_built() -> None:
    async def main() -> None:
        ours = AiohttpTransport(environment=NO_PROXY)
        session = ours._open()
        assert isinstance(session.connector, _Connector)
        assert isinstance(session.connector._hedging, _HedgingResolver)
        await ours.aclose()
        async with aiohttp.ClientSession() as caller:
            AiohttpTransport(caller, environment=NO_PROXY)
            assert type(caller.connector) is aiohttp.TCPConnector  # untouched

    asyncio.run(main())


# -- async --------------------------------------------------------------------------------------


def test_the_async_race_takes_the_first_to_complete_and_cancels_the_rest() -> None:
    ended: list[str] = []

    def attempt(name: str, seconds: float) -> Callable[[], Any]:
        async def run() -> str:
            try:
                await anyio.sleep(seconds)
            finally:
                ended.append(name)
            return name

        return run

    async def close(stream: str) -> None:
        ended.append(f"closed {stream}")

    attempts = [attempt("slow", 60), attempt("second", 0), attempt("third", 60)]
    won = anyio.run(lambda: _hedge.race_async(attempts, close, delay=0.05))
    assert won == "second"
    assert sorted(ended) == ["second", "slow"]  # the first was cancelled, the third never ran


def test_the_async_race_starts_at_most_three_and_raises_the_first_error() -> None:
    started: list[int] = []

    def failing(n: int) -> Callable[[], Any]:
        async def run() -> str:
            started.append(n)
            raise httpcore.ConnectError(f"attempt {n}")

        return run

    async def close(stream: str) -> None:
        raise AssertionError("nothing to close")

    with pytest.raises(httpcore.ConnectError, match="attempt 0"):
        anyio.run(lambda: _hedge.race_async([failing(n) for n in range(3)], close, delay=60))
    assert started == [0, 1, 2]  # each failure started the next at once


def test_cancelling_a_hedged_async_connect_closes_every_socket(hole: int) -> None:
    async def main() -> None:
        backend = _httpcore.AsyncBackend(httpcore.AnyIOBackend(), hedge=True)
        before = _open_sockets()
        with anyio.move_on_after(0.3) as scope:  # after the second attempt started
            await backend.connect_tcp("127.0.0.1", hole, timeout=30)
        assert scope.cancelled_caught
        assert _open_sockets() == before

    asyncio.run(main())
    assert _hedge.HEALTH.hedging("127.0.0.1", hole)  # a cancellation is no failed connect


def test_a_hedged_async_connect_returns_a_working_stream(good: int) -> None:
    async def main() -> None:
        backend = _httpcore.AsyncBackend(httpcore.AnyIOBackend(), hedge=True)
        stream = await backend.connect_tcp("127.0.0.1", good, timeout=5)
        assert stream.get_extra_info("server_addr") == ("127.0.0.1", good)
        await stream.aclose()

    asyncio.run(main())


def test_the_aiohttp_resolver_gives_three_addresses_only_while_the_peer_is_healthy() -> None:
    async def main() -> tuple[int, int]:
        resolver = _HedgingResolver()
        port = 1
        healthy = await resolver.resolve("localhost", port)
        for _ in range(_hedge.UNHEALTHY_AFTER):
            _hedge.HEALTH.record("localhost", port, ok=False)
        unhealthy = await resolver.resolve("localhost", port)
        await resolver.close()
        return len(healthy), len(unhealthy)

    healthy, unhealthy = asyncio.run(main())
    assert healthy == 3
    assert unhealthy < 3  # as found: localhost's one or two addresses


def test_failed_aiohttp_connects_are_recorded_and_turn_hedging_off() -> None:
    with _listener(1) as sock:
        port = sock.getsockname()[1]  # nothing listens there now: refused

    async def main() -> None:
        async with aiohttp.ClientSession(connector=_Connector(hedge=True)) as session:
            for _ in range(_hedge.UNHEALTHY_AFTER):
                with pytest.raises(aiohttp.ClientConnectorError):
                    await session.get(f"http://localhost:{port}/")

    asyncio.run(main())
    assert not _hedge.HEALTH.hedging("localhost", port)


def test_a_race_with_no_bound_waits_for_its_last_attempt(hole: int, good: int) -> None:
    made, make = _recording()
    addresses = [_address(hole), _address(good)]
    with _hedge.race_sync(addresses, float("inf"), delay=0.05, make=make) as winner:
        assert winner.getpeername() == ("127.0.0.1", good)
        assert made[0].fileno() == -1


def test_an_asyncio_timeout_around_a_hedged_connect_ends_it_and_closes_every_socket(
    hole: int,
) -> None:
    async def main() -> None:
        backend = _httpcore.AsyncBackend(httpcore.AnyIOBackend(), hedge=True)
        before = _open_sockets()
        task = asyncio.ensure_future(backend.connect_tcp("127.0.0.1", hole, timeout=30))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), 0.3)
        task.cancel()  # the caller's cancellation, as the client's attempt timer delivers it
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _open_sockets() == before

    asyncio.run(main())


def test_ctrl_c_during_a_sync_race_closes_the_sockets_already_connecting(hole: int) -> None:
    made, make = _recording()

    def interrupted(family: int, kind: int, proto: int) -> socket.socket:
        if len(made) == 2:
            raise KeyboardInterrupt  # as a signal arriving while the third attempt starts
        return make(family, kind, proto)

    ends = time.monotonic() + 30
    with pytest.raises(KeyboardInterrupt):
        _hedge.race_sync(_hedge.spread([_address(hole)]), ends, delay=0.05, make=interrupted)
    assert len(made) == 2
    assert all(s.fileno() == -1 for s in made)
