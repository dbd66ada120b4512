"""The hooks the transports use inside httpx/httpcore, aiohttp, OpenTelemetry and livekit: the
documented ones do what the transports expect, and each private reach (docs/design.md lists
them) still finds what it reaches for in the locked versions. A library upgrade that moves one
fails here, by name, instead of quietly turning a safeguard off.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import aiohttp
import h11
import httpx
import pytest

from avatario_wrapper import AsyncAvatarioClient, AvatarioClient
from avatario_wrapper._environment import Environment
from avatario_wrapper._request import warm_up_request
from avatario_wrapper._settings import Settings
from avatario_wrapper._steps import Attempt
from avatario_wrapper._transports import _httpcore
from avatario_wrapper._transports.aiohttp import AiohttpTransport
from avatario_wrapper._transports.base import WIRE_IN_PROGRESS, Wire
from avatario_wrapper.testing import FakeClock

from .conftest import API_KEY
from .loopback import KeepAliveServer

HEAD_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


# -- 1. our network backend in httpx's pools ------------------------------------------------


def test_the_backend_goes_into_every_httpcore_pool_of_a_client() -> None:
    with httpx.Client(mounts={"http://proxied.test": httpx.HTTPTransport()}) as http:
        backends = _httpcore.install(http)
        assert len(backends) == 2  # the default transport's pool and the mount's
        assert all(isinstance(b, _httpcore.Backend) for b in backends)
        assert _httpcore.install(http) == backends  # installed once, found again


def test_a_client_without_an_httpcore_pool_gets_no_backend() -> None:
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200))) as http:
        assert _httpcore.install(http) == []


def test_an_async_client_gets_the_async_backend() -> None:
    async def main() -> list[Any]:
        async with httpx.AsyncClient() as http:
            return _httpcore.install(http)

    [backend] = asyncio.run(main())
    assert isinstance(backend, _httpcore.AsyncBackend)


# -- 2. h11's state behind a streamed response ----------------------------------------------


def test_a_streamed_response_leads_to_its_connections_h11_state() -> None:
    with KeepAliveServer(lambda n, conn, head: HEAD_OK) as server, httpx.Client() as http:
        with http.stream("HEAD", server.url) as response:
            response.read()
            assert isinstance(_httpcore.h11_connection(response), h11.Connection)
            assert _httpcore.has_stray_bytes(response) is False


# -- the trace extension: how far an attempt got --------------------------------------------


def _wire_of_head(http: httpx.Client, url: str) -> Wire:
    request = warm_up_request(
        Settings.build(
            API_KEY,
            base_url=url,
            timeout=5.0,
            connect_timeout=1.0,
            retry=None,
            allow_insecure_http=False,
            clock=FakeClock(),
        )
    )
    wire = Wire(Attempt(1, 5.0, 1.0, 0.5))
    token = WIRE_IN_PROGRESS.set(wire)
    try:
        http.request(request.method, request.url, extensions={"trace": _httpcore.on_event})
    finally:
        WIRE_IN_PROGRESS.reset(token)
    return wire


def test_the_trace_extension_tells_a_new_connection_from_a_reused_one() -> None:
    with KeepAliveServer(lambda n, conn, head: HEAD_OK) as server, httpx.Client() as http:
        _httpcore.install(http)
        first, second = _wire_of_head(http, server.url), _wire_of_head(http, server.url)
    assert (first.fresh, first.wrote, first.observed) == (True, True, True)
    assert (second.fresh, second.wrote, second.observed) == (False, True, True)


# -- 3 and 4. a caller's aiohttp session: its loop and its middlewares ----------------------


def test_an_aiohttp_session_keeps_its_loop_and_middlewares_where_the_transport_looks() -> None:
    async def middleware(request: Any, handler: Any) -> Any:
        return await handler(request)

    async def main() -> None:
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            assert session._loop is asyncio.get_running_loop()
            assert tuple(session._middlewares) == (middleware,)
            transport = AiohttpTransport(session, environment=Environment(None, None, None))
            assert transport._loop.loop is asyncio.get_running_loop()
            assert transport._middlewares(session, "HEAD")[0] is middleware  # theirs first
            assert transport._middlewares(session, "POST") is None  # never resent by aiohttp

    asyncio.run(main())


def test_a_caller_session_of_another_loop_is_refused_before_sending() -> None:
    from avatario_wrapper import WrongEventLoopError

    async def make() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    loop = asyncio.new_event_loop()
    session = loop.run_until_complete(make())
    try:

        async def use() -> None:
            client = AsyncAvatarioClient(
                API_KEY, base_url="http://127.0.0.1:9", http_client=session
            )
            with pytest.raises(WrongEventLoopError):
                await client.warm_up()

        asyncio.run(use())
    finally:
        loop.run_until_complete(session.close())
        loop.close()


# -- 5. OpenTelemetry's stand-in meter provider ---------------------------------------------


def test_the_api_stand_in_meter_provider_is_recognised_as_recording_nothing() -> None:
    # In a fresh interpreter: no test's provider is set there.
    code = (
        "from opentelemetry import metrics, trace\n"
        "from avatario_wrapper import _telemetry\n"
        "assert type(metrics.get_meter_provider()) is _telemetry._proxy_meter_provider(metrics)\n"
        "assert _telemetry._meter_key() is None and _telemetry._tracer_key() is None\n"
        "from avatario_wrapper._telemetry import NO_TRACE, start_call\n"
        "assert start_call(None) is NO_TRACE\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- 6. livekit-agents' tracer provider -----------------------------------------------------


def test_livekit_agents_tracer_still_holds_its_provider_where_we_read_it() -> None:
    pytest.importorskip("livekit.agents")
    from livekit.agents.telemetry import tracer
    from opentelemetry import trace

    assert isinstance(tracer._tracer_provider, trace.TracerProvider)


# -- 7. the base avatar session's room and its handler -------------------------------------------


def test_the_base_avatar_session_still_keeps_its_room_and_handler_where_we_take_them() -> None:
    pytest.importorskip("livekit.agents")
    import inspect

    from livekit.agents.voice.avatar import AvatarSession as Base

    init = inspect.getsource(Base.__init__)
    assert "self._room: rtc.Room | None = None" in init
    start = inspect.getsource(Base.start)
    assert 'self._room.on("connection_state_changed", self._on_connection_state_changed)' in start
    close = inspect.getsource(Base.aclose)
    # its removal runs only while it holds a connected room: ours takes the room away first
    assert "if self._room is not None and self._room.isconnected():" in close


# -- 8. a job context's primary session and shutdown callbacks -------------------------------------


def test_a_job_context_still_keeps_its_session_and_shutdown_callbacks_where_we_read_them() -> None:
    pytest.importorskip("livekit.agents")
    import inspect

    from livekit.agents import JobContext

    init = inspect.getsource(JobContext.__init__)
    assert "self._primary_agent_session: AgentSession | None = None" in init
    assert "self._shutdown_callbacks: list[" in init


def test_a_sync_client_sends_its_requests_through_the_backend() -> None:
    with KeepAliveServer(lambda n, conn, head: HEAD_OK) as server:
        with AvatarioClient(API_KEY, base_url=server.url) as client:
            client.warm_up()
            [backend] = client._transport._backends  # type: ignore[attr-defined]
            assert len(backend.opened) == 1  # the one connection, opened through it
