"""The aiohttp transport's connector: each pooled connection idles only as long as its own
expiry allows (the server's ``Keep-Alive: timeout=N``, else the client's 1.5 s).

A real keep-alive server on 127.0.0.1 counts connections; instead of sleeping, a test ages the
pooled connection's idle record (the time it went back to the pool), which is what the
connector weighs against its expiry before handing it out.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

pytest.importorskip("aiohttp")

from avatario_wrapper import AsyncAvatarioClient, StartSessionResult
from avatario_wrapper._transports._keepalive import KEEPALIVE_EXPIRY
from avatario_wrapper._transports.aiohttp import AiohttpTransport, _Connector

from .conftest import API_KEY, CALL
from .loopback import KeepAliveServer, ok_session


def test_a_connection_idle_within_its_expiry_is_reused() -> None:
    results, connections = _serve(KEEPALIVE_EXPIRY / 2, None)
    assert all(isinstance(r, StartSessionResult) for r in results)
    assert connections == 1


def test_a_connection_idle_past_its_expiry_is_closed_not_reused() -> None:
    results, connections = _serve(KEEPALIVE_EXPIRY + 0.5, None)
    assert all(isinstance(r, StartSessionResult) for r in results)
    assert connections == 2


@pytest.mark.parametrize(("idle_for", "reused"), [(3.0, True), (4.5, False)])
def test_a_servers_longer_keep_alive_lets_it_idle_longer(idle_for: float, reused: bool) -> None:
    # timeout=5 allows 4 s of idle time (5 - max(1, 5 / 5)).
    results, connections = _serve(idle_for, {"Keep-Alive": "timeout=5"})
    assert all(isinstance(r, StartSessionResult) for r in results)
    assert (connections == 1) is reused


def _serve(idle_for: float, headers: dict[str, str] | None) -> Any:
    with KeepAliveServer(lambda n, conn, head: ok_session(n, headers)) as server:

        async def main() -> list[Any]:
            async with AsyncAvatarioClient(API_KEY, base_url=server.url) as client:
                transport = client._transport
                assert isinstance(transport, AiohttpTransport)
                first = await client.start_session(**CALL)
                connector = transport._session.connector  # type: ignore[union-attr]
                assert isinstance(connector, _Connector)
                ((protocol, (_, expiry)),) = connector.idle.items()
                connector.idle[protocol] = (time.monotonic() - idle_for, expiry)
                second = await client.start_session(**CALL)
                return [first, second]

        results = asyncio.run(main())
        return results, server.connections
