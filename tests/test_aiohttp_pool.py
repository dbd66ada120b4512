"""The aiohttp transport's connector: each pooled connection idles only as long as its own
expiry allows, wherever it stands in aiohttp's queue.

A unit test of `_Connector._get` with stand-in protocols (aiohttp's own `_get` then picks the
connection it would reuse); the idle race itself is tested on real sockets elsewhere
(tests/test_in_process.py, tests/test_fake_server.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import pytest

pytest.importorskip("aiohttp")

from avatario_wrapper._transports.aiohttp import _Connector
from avatario_wrapper._transports.base import KEEPALIVE_EXPIRY


class Key:
    is_ssl = False


class Protocol:
    """What aiohttp's pool asks of a pooled connection's protocol."""

    def __init__(self, name: str, *, connected: bool = True) -> None:
        self.name = name
        self.connected = connected
        self.closed = False
        self.transport = None
        self.should_close = True  # closed, not pooled again, when the test releases it

    def is_connected(self) -> bool:
        return self.connected and not self.closed

    def close(self) -> None:
        self.closed = True


def test_a_stale_connection_in_the_middle_of_the_pool_is_never_reused() -> None:
    async def main() -> tuple[str, list[str]]:
        connector = _Connector()
        try:
            key = Key()
            now = time.monotonic()
            dead = Protocol("dead", connected=False)  # the server closed it: aiohttp skips it
            stale = Protocol("stale")  # idle past its own expiry (no Keep-Alive header)
            fresh = Protocol("fresh")
            connector.expiry[dead] = 60.0  # a server that said Keep-Alive: timeout=...
            connector._conns[key] = deque(  # type: ignore[index]
                [
                    (dead, now - 1.0),
                    (stale, now - KEEPALIVE_EXPIRY - 0.5),
                    (fresh, now),
                ]
            )
            connection = await connector._get(key, [])  # type: ignore[arg-type]
            assert connection is not None
            chosen = connection.protocol
            closed = [p.name for p in (dead, stale, fresh) if p.closed]
            connection.release()
            return chosen.name, closed  # type: ignore[union-attr]
        finally:
            await connector.close()

    chosen, closed = asyncio.run(main())
    assert chosen == "fresh"
    assert "stale" in closed
