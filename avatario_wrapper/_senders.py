"""Senders: the only code that touches a transport. Each sends a prepared call once.

A sender turns one attempt into a `Reply` (status, headers, a bounded body) or raises the
call's connection error; everything else is decided in `_core`. httpx serves the sync client
and, when an `httpx.AsyncClient` is given or aiohttp is not installed, the async one;
`_aiohttp.AiohttpSender` is the async default when aiohttp is installed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx

from ._core import BodyReader, PreparedCall, Reply
from .errors import APIConnectionError

T = TypeVar("T")

#: The shortest timeout a phase is given when the attempt's time is nearly used up.
_MIN_PHASE_TIMEOUT = 0.001


async def _within(awaitable: Awaitable[T], seconds: float) -> T:
    """`awaitable`, cancelled with TimeoutError after `seconds` (asyncio.timeout needs no
    extra task; Python 3.10 has only wait_for)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - Python 3.10


class _Exchange:
    """One attempt over httpx: its request, its deadline, and the rules both senders share.

    httpx applies a timeout to each phase (connect, send, wait for headers, each body read),
    so an attempt could take a multiple of it. Body reading stops when the attempt's time is
    up (`keep`). On the sync sender, `cut_phases` also cuts every phase's timeout to the time
    left when httpcore announces the phase through the request's ``trace`` extension (it does
    so before reading the timeout). A server that trickles bytes inside one phase can still
    stretch it there: httpx has no total timeout. The async sender bounds the exchange up to
    the headers with `_within` instead.
    """

    def __init__(self, http: httpx.Client | httpx.AsyncClient, call: PreparedCall, timeout: float):
        self.call = call
        self.ends = time.monotonic() + timeout
        self.request = http.build_request(
            call.method, call.url, content=call.content, headers=call.headers, timeout=timeout
        )

    def cut_phases(self) -> None:
        timeouts: dict[str, float | None] = self.request.extensions["timeout"]

        def trace(event: str, info: dict[str, Any]) -> None:
            if event.endswith(".started"):
                left = max(_MIN_PHASE_TIMEOUT, self.ends - time.monotonic())
                for phase in timeouts:
                    timeouts[phase] = left

        self.request.extensions["trace"] = trace

    def failed(self, exc: Exception, attempts: int) -> APIConnectionError:
        """No response: the call's connection error for `exc` (raise it `from exc`)."""
        timed_out = isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError))
        return self.call.connection_error(exc, attempts, timed_out=timed_out)

    def keep(self, body: BodyReader, chunk: bytes) -> bool:
        """Feed `chunk` to `body`; True when reading should stop (limit passed or time up)."""
        if body.feed(chunk):
            return True
        if time.monotonic() >= self.ends:
            body.fail(httpx.ReadTimeout("the attempt's time ran out during the body"))
            return True
        return False


class HttpxSender:
    """Sends with an `httpx.Client`: TLS verified, redirects not followed."""

    def __init__(self, http: httpx.Client | None, timeout: float) -> None:
        self.owns = http is None
        self.http = (
            http if http is not None else httpx.Client(timeout=timeout, follow_redirects=False)
        )

    def send(self, call: PreparedCall, timeout: float, attempts: int) -> Reply:
        exchange = _Exchange(self.http, call, timeout)
        exchange.cut_phases()
        try:
            response = self.http.send(exchange.request, stream=True)
        except httpx.HTTPError as exc:
            raise exchange.failed(exc, attempts) from exc
        body = BodyReader(response.status_code)
        try:
            for chunk in response.iter_bytes():
                if exchange.keep(body, chunk):
                    break
        except httpx.HTTPError as exc:
            body.fail(exc)
        finally:
            response.close()
        return Reply(response.status_code, response.reason_phrase, response.headers, body)

    def close(self) -> None:
        if self.owns:
            self.http.close()


class AsyncHttpxSender:
    """Sends with an `httpx.AsyncClient`: the same as `HttpxSender`, awaited."""

    def __init__(self, http: httpx.AsyncClient | None, timeout: float) -> None:
        self.owns = http is None
        self.http = (
            http if http is not None else httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        )

    async def send(self, call: PreparedCall, timeout: float, attempts: int) -> Reply:
        exchange = _Exchange(self.http, call, timeout)
        try:
            # httpx times each phase; this bounds the whole exchange up to the headers.
            response = await _within(self.http.send(exchange.request, stream=True), timeout)
        except (httpx.HTTPError, asyncio.TimeoutError) as exc:
            raise exchange.failed(exc, attempts) from exc
        body = BodyReader(response.status_code)
        try:
            async for chunk in response.aiter_bytes():
                if exchange.keep(body, chunk):
                    break
        except httpx.HTTPError as exc:
            body.fail(exc)
        finally:
            await response.aclose()
        return Reply(response.status_code, response.reason_phrase, response.headers, body)

    async def aclose(self) -> None:
        if self.owns:
            await self.http.aclose()
