"""An async client that closes its pool on its own event loop, just before that loop closes.

The pytest plugin's `async_avatario_client` is a *sync* fixture, so that pytest-asyncio (strict
or auto) and anyio can each run the test on a loop of their own. Its teardown runs after the
test's loop is gone: pytest-asyncio and anyio both close a per-test loop before the fixtures
that the test named are torn down, and a pool's connections can no longer be closed once
their loop is (their transports need it; left alone, their sockets raise ResourceWarning when
collected, an error under ``-W error``).

So, when the client first sends, the transport starts an asynchronous generator on that loop
and keeps it suspended. A loop run by `asyncio.run` or `asyncio.Runner` (which pytest-asyncio
and anyio use) calls ``loop.shutdown_asyncgens()`` before it closes, which closes every
suspended generator on the loop (Python docs, "Event Loop": ``loop.shutdown_asyncgens``), and
the generator's ``finally`` closes the pool there. A loop that outlives the test (a module- or
session-scoped loop) is idle at teardown: the pool is closed by running that loop once.

After its loop has shut down the client behaves as any client whose loop is gone: it raises
`WrongEventLoopError` before sending (it is not reported as closed, since its owner did not
close it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from .._clients import AsyncAvatarioClient
from .._flow import Attempt
from .._reply import Reply
from .._request import PreparedRequest
from .._transports._loop import wrong_loop_message
from .._transports.base import AsyncTransport
from ..errors import WrongEventLoopError

#: How long a teardown waits for a loop running in another thread to close the pool.
_OTHER_THREAD_WAIT = 5.0


class LoopBoundTransport:
    """`inner`, closed on its own event loop when that loop shuts down (see the module)."""

    def __init__(self, inner: AsyncTransport) -> None:
        self._inner = inner
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch: AsyncGenerator[None, None] | None = None
        self._closed = False  # closed by its owner
        self._ended = False  # its loop shut down and the pool was closed there
        self._abandoned = False  # the watch is ended without closing anything
        self._watch_over = False  # the watch has ended

    @property
    def closed(self) -> bool:
        return self._closed or (self._inner.closed and not self._ended)

    async def send(self, request: PreparedRequest[Any], attempt: Attempt) -> Reply:
        if self._ended and not self._closed:
            raise WrongEventLoopError(wrong_loop_message("AsyncAvatarioClient", self._loop))
        if self._watch is None:
            self._loop = asyncio.get_running_loop()
            # Its first step runs to the `yield` at once; the loop now tracks the generator.
            self._watch = self._watching()
            await self._watch.__anext__()
        return await self._inner.send(request, attempt)

    async def _watching(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            self._watch_over = True
            if not self._abandoned and not self._inner.closed:
                self._ended = not self._closed
                await self._inner.aclose()

    def _watching_still(self) -> bool:
        return self._watch is not None and not self._watch_over

    async def aclose(self) -> None:
        self._closed = True
        await self._inner.aclose()
        watch = self._watch
        if self._watching_still() and asyncio.get_running_loop() is self._loop:
            assert watch is not None
            await watch.aclose()  # nothing left to close: it just ends

    def close_from_sync(self) -> None:
        """`aclose` from synchronous code (the fixture's teardown): no loop runs here."""
        self._closed = True
        loop, watch = self._loop, self._watch
        if self._watching_still() and loop is not None and watch is not None:
            if loop.is_closed() or _running_loop() is loop:
                # Closed without shutting its generators down (nothing can run there any
                # more), or busy running the caller: the pool is left to `inner`.
                self._abandon(watch)
            elif loop.is_running():  # in another thread: it closes the pool itself
                future = asyncio.run_coroutine_threadsafe(watch.aclose(), loop)
                with contextlib.suppress(Exception):
                    future.result(_OTHER_THREAD_WAIT)
            else:  # idle, as a loop that outlives the test is between tests
                loop.run_until_complete(watch.aclose())
        self._inner.close_from_sync()

    def _abandon(self, watch: AsyncGenerator[None, None]) -> None:
        """End the suspended generator without its loop (its `finally` then does nothing), so
        it is not handed to a closed loop's finalizer when collected."""
        self._abandoned = True
        closing = watch.aclose().__await__()
        with contextlib.suppress(StopIteration):
            closing.send(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def close_with_its_loop(client: AsyncAvatarioClient) -> AsyncAvatarioClient:
    """`client`, made to close its pool on its own loop when that loop shuts down."""
    client._transport = LoopBoundTransport(client._transport)
    return client
