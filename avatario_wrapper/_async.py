"""AsyncAvatarioClient: the asyncio client. Sending is the sender's; sleeping the clock's."""

from __future__ import annotations

import importlib.util
from types import TracebackType
from typing import Protocol

import httpx

from ._base import ClientBase
from ._core import PreparedCall, Reply
from ._models import StartSessionResult, VideoOptions
from ._retry import run_async
from ._senders import AsyncHttpxSender


class AsyncSender(Protocol):
    async def send(self, call: PreparedCall, timeout: float, attempts: int) -> Reply: ...

    async def aclose(self) -> None: ...


class AsyncAvatarioClient(ClientBase[httpx.AsyncClient, AsyncSender]):
    """An asyncio Avatario client with one connection pool, safe to share across tasks.

    The same constructor as `AvatarioClient`. Without an `http_client` it sends over aiohttp
    when aiohttp is installed (the ``aiohttp`` extra; many times faster with many requests in
    flight, see docs/benchmarks.md), else over an `httpx.AsyncClient`. A pool passed as
    `http_client` is used as is and not closed by `aclose()`.
    """

    def _new_sender(self, http_client: httpx.AsyncClient | None) -> AsyncSender:
        if http_client is None and importlib.util.find_spec("aiohttp") is not None:
            from ._aiohttp import AiohttpSender  # noqa: PLC0415 - aiohttp only when used

            return AiohttpSender()
        return AsyncHttpxSender(http_client, self._settings.timeout)

    async def start_session(
        self,
        *,
        avatar_id: str,
        agent_identity: str,
        livekit_url: str,
        livekit_token: str,
        video: VideoOptions | None = None,
        idempotency_key: str | None = None,
    ) -> StartSessionResult:
        """Send the avatar `avatar_id` into the LiveKit room at `livekit_url`.

        Every input is checked before any I/O; failures are retried by the client's
        `RetryPolicy` with one idempotency key. Raises an `AvatarioError` subclass.
        """
        call, state = self._prepare(
            avatar_id, agent_identity, livekit_url, livekit_token, video, idempotency_key
        )

        async def attempt() -> StartSessionResult:
            reply = await self._sender.send(call, state.begin_attempt(), state.attempts)
            return call.outcome(reply, state.attempts, self._settings.clock)

        return await run_async(attempt, state)

    async def aclose(self) -> None:
        """Close the connection pool, if this client made it."""
        if self._owns_sender:
            await self._sender.aclose()

    async def __aenter__(self) -> AsyncAvatarioClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
