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


class _PhaseDeadline:
    """Keeps a sync httpx attempt within its timeout.

    httpx applies a timeout to each phase (connect, send, wait for headers, each body read),
    so an attempt could take a multiple of it. httpcore announces each phase through the
    request's ``trace`` extension before it reads its timeout; this cuts the request's
    timeouts to the time left at that moment. (A server that trickles bytes inside one phase
    can still stretch it: httpx has no total timeout. The async senders have one.)
    """

    def __init__(self, request: httpx.Request, timeout: float) -> None:
        self.ends = time.monotonic() + timeout
        self.timeouts: dict[str, float | None] = request.extensions["timeout"]
        request.extensions["trace"] = self.trace

    def left(self) -> float:
        return self.ends - time.monotonic()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith(".started"):
            left = max(_MIN_PHASE_TIMEOUT, self.left())
            for phase in self.timeouts:
                self.timeouts[phase] = left


class HttpxSender:
    """Sends with an `httpx.Client`: TLS verified, redirects not followed."""

    def __init__(self, http: httpx.Client | None, timeout: float) -> None:
        self.owns = http is None
        self.http = (
            http if http is not None else httpx.Client(timeout=timeout, follow_redirects=False)
        )

    def send(self, call: PreparedCall, timeout: float, attempts: int) -> Reply:
        request = self.http.build_request(
            call.method, call.url, content=call.content, headers=call.headers, timeout=timeout
        )
        deadline = _PhaseDeadline(request, timeout)
        try:
            response = self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            timed_out = isinstance(exc, httpx.TimeoutException)
            raise call.connection_error(exc, attempts, timed_out=timed_out) from exc
        body = BodyReader(response.status_code)
        try:
            for chunk in response.iter_bytes():
                if body.feed(chunk):
                    break
                if deadline.left() <= 0:
                    body.fail(httpx.ReadTimeout("the attempt's time ran out during the body"))
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
        request = self.http.build_request(
            call.method, call.url, content=call.content, headers=call.headers, timeout=timeout
        )
        ends = time.monotonic() + timeout
        try:
            # httpx times each phase; this bounds the whole exchange up to the headers.
            response = await _within(self.http.send(request, stream=True), timeout)
        except (httpx.HTTPError, asyncio.TimeoutError) as exc:
            timed_out = isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError))
            raise call.connection_error(exc, attempts, timed_out=timed_out) from exc
        body = BodyReader(response.status_code)
        try:
            async for chunk in response.aiter_bytes():
                if body.feed(chunk):
                    break
                if time.monotonic() >= ends:
                    body.fail(httpx.ReadTimeout("the attempt's time ran out during the body"))
                    break
        except httpx.HTTPError as exc:
            body.fail(exc)
        finally:
            await response.aclose()
        return Reply(response.status_code, response.reason_phrase, response.headers, body)

    async def aclose(self) -> None:
        if self.owns:
            await self.http.aclose()
