"""Senders: the only code that touches a transport. Each sends a prepared call once.

A sender turns one attempt into a `Reply` (status, headers, a bounded body) or raises the
call's connection error; everything else is decided in `_core`. httpx serves the sync client
and, when an `httpx.AsyncClient` is given or aiohttp is not installed, the async one;
`_aiohttp.AiohttpSender` is the async default when aiohttp is installed.
"""

from __future__ import annotations

import httpx

from ._core import BodyReader, PreparedCall, Reply


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
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            timed_out = isinstance(exc, httpx.TimeoutException)
            raise call.connection_error(exc, attempts, timed_out=timed_out) from exc
        body = BodyReader(response.status_code)
        try:
            async for chunk in response.aiter_bytes():
                if body.feed(chunk):
                    break
        except httpx.HTTPError as exc:
            body.fail(exc)
        finally:
            await response.aclose()
        return Reply(response.status_code, response.reason_phrase, response.headers, body)

    async def aclose(self) -> None:
        if self.owns:
            await self.http.aclose()
